"""Per-agent model settings: which model an agent reasons with, how long it may answer, how hot.

Agents written by different teams want different models and limits. The
``CLAIMCHECK_MODEL*`` variables give every agent's defaults; the TOML file named by
``CLAIMCHECK_MODELS`` overrides them for all agents (``[default]``) and for one
(``[agents.<name>]``)::

    [default]
    model = "claude-sonnet-5-5"
    max_tokens = 1024

    [agents.notifier]
    model = "claude-haiku-4-5"
    max_tokens = 2048
    max_tokens_ceiling = 8192   # the most a call cut off at max_tokens is given on a retry
    effort = "low"              # low, medium, high, xhigh or max (output_config.effort)
    timeout = 30                # seconds per request

``temperature`` is sent only when set: Claude Sonnet 5 and later models refuse a
non-default sampling temperature (HTTP 400, a ``model_error``: the workflow fails with
the provider's reason), so set it only for a model that takes it.

A misspelt key or a bad value stops the agent at start with the file, table and field.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bus.runtime.prices import problems
from bus.settings import Settings


class ModelSettingsError(ValueError):
    """A model settings file that cannot be used; the message names file, table and field."""


class ModelSettings(BaseModel):
    """How one agent calls its model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(min_length=1)
    max_tokens: int = Field(gt=0)
    max_tokens_ceiling: int = Field(gt=0)
    temperature: float | None = Field(None, ge=0, le=1)
    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None
    timeout: float = Field(gt=0)

    def more_room(self, used: int) -> int:
        """The limit for a retry of a call cut off at ``used`` tokens: double, up to the ceiling."""
        return max(used, min(used * 2, self.max_tokens_ceiling))


def from_environment(settings: Settings) -> dict[str, Any]:
    return {
        "model": settings.model,
        "max_tokens": settings.model_max_tokens,
        "max_tokens_ceiling": settings.model_max_tokens_ceiling,
        "temperature": settings.model_temperature,
        "effort": settings.model_effort or None,
        "timeout": settings.model_timeout,
    }


def read_file(path: Path) -> dict[str, Any]:
    try:
        document = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ModelSettingsError(f"{path}: {error}") from None
    unknown = sorted(set(document) - {"default", "agents"})
    if not isinstance(document.get("agents", {}), dict):
        raise ModelSettingsError(f"{path}: agents must be tables: [agents.<name>]")
    if unknown:
        raise ModelSettingsError(
            f"{path}: unknown tables {unknown}; use [default] and [agents.<name>]"
        )
    return document


def model_settings(agent: str | None = None, settings: Settings | None = None) -> ModelSettings:
    """``agent``'s model settings: environment, then the file's ``[default]``, then its own."""
    settings = settings or Settings()
    values = from_environment(settings)
    document = read_file(settings.models) if settings.models else {}
    tables = [("default", document.get("default", {}))]
    if agent is not None:
        tables.append((f"agents.{agent}", document.get("agents", {}).get(agent, {})))
    for name, table in tables:
        if not isinstance(table, dict):
            raise ModelSettingsError(f"{settings.models}: [{name}] must be a table")
        try:
            values.update(ModelSettings.model_validate({**values, **table}).model_dump())
        except ValidationError as error:
            raise ModelSettingsError(f"{settings.models}: [{name}]: {problems(error)}") from None
    return ModelSettings.model_validate(values)
