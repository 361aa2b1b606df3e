"""What a model call costs: a price table by model family, shipped as data a user can update.

Providers name models with a date or an alias after the family (``claude-sonnet-4-5-20250929``,
``claude-3-7-sonnet-latest``); the usage a call reports carries that full name. A name is
priced by the longest family it starts with, so a new dated release of a known family is
priced right without editing anything, and an exact match always wins. The table is
``prices.toml`` beside this module unless ``CLAIMCHECK_PRICES`` names another file; a
policy's ``[prices.<family>]`` tables override single families.
"""

from __future__ import annotations

import logging
import tomllib
from collections.abc import Mapping
from functools import cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from handoff_schemas import Usage

log = logging.getLogger(__name__)

SHIPPED_PRICES = Path(__file__).with_name("prices.toml")
DEFAULT = "default"
"""The family that prices a model no other family matches."""


class Price(BaseModel):
    """US dollars per million tokens, and the shortest prefix the provider caches."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: float = Field(0.0, ge=0)
    output: float = Field(0.0, ge=0)
    cache_read: float = Field(0.0, ge=0)
    cache_write: float = Field(0.0, ge=0)
    min_cache_tokens: int = Field(1024, ge=0)

    def cost(self, usage: Usage) -> float:
        """The cost of one call from the provider's own usage, cache reads and writes included."""
        return (
            usage.input_tokens * self.input
            + usage.output_tokens * self.output
            + usage.cache_read_tokens * self.cache_read
            + usage.cache_write_tokens * self.cache_write
        ) / 1_000_000


def family_of(model: str, families: Mapping[str, object]) -> str | None:
    """The longest family ``model`` is, or starts with followed by ``-``; None if there is none."""
    matching = [f for f in families if f != DEFAULT and (model == f or model.startswith(f + "-"))]
    return max(matching, key=len, default=None)


class PriceTable:
    """Families and their prices; :meth:`price` finds a model's."""

    def __init__(self, families: Mapping[str, Price]) -> None:
        self.families = dict(families)

    def overridden(self, overrides: Mapping[str, Price]) -> PriceTable:
        """This table with some families replaced or added (a policy's ``[prices.*]``)."""
        return PriceTable({**self.families, **overrides}) if overrides else self

    def price(self, model: str) -> tuple[str, Price]:
        """The family that prices ``model``, and its price."""
        family = family_of(model, self.families)
        if family is None:
            log.warning("no price family matches model %r; priced as %r", model, DEFAULT)
            return DEFAULT, self.families.get(DEFAULT, Price())
        return family, self.families[family]

    def cost(self, model: str, usage: Usage) -> float:
        return self.price(model)[1].cost(usage)


def problems(error: ValidationError) -> str:
    """A pydantic error as one line: each problem's location and message."""
    return "; ".join(
        f"{'.'.join(map(str, e['loc'])) or '(table)'}: {e['msg']}" for e in error.errors()
    )


class PriceError(ValueError):
    """A price table that cannot be used; the message names the file and the family."""


@cache
def load_prices(path: Path | None = None) -> PriceTable:
    """The table in ``path`` (the shipped one by default), read once per process."""
    path = path or SHIPPED_PRICES
    try:
        document = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise PriceError(f"{path}: {error}") from None
    families = {}
    for family, entry in document.items():
        try:
            families[family] = Price.model_validate(entry)
        except ValidationError as error:
            raise PriceError(f"{path}: [{family}]: {problems(error)}") from None
    return PriceTable(families)
