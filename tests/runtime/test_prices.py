"""The price table: shipped as data, matched by model family, overridable by file and policy."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bus.runtime.policy import Policy, PolicyError
from bus.runtime.prices import SHIPPED_PRICES, load_prices
from handoff_schemas import Usage

MILLION = Usage(
    input_tokens=1_000_000,
    output_tokens=1_000_000,
    cache_read_tokens=1_000_000,
    cache_write_tokens=1_000_000,
)


@pytest.mark.parametrize(
    ("model", "family"),
    [
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4"),  # dated: its family
        ("claude-sonnet-4-5", "claude-sonnet-4"),
        ("claude-sonnet-5-5", "claude-sonnet-5-5"),  # the longest family wins
        ("claude-sonnet-5-20260301", "claude-sonnet-5"),
        ("claude-opus-4-1-20250805", "claude-opus-4"),
        ("claude-opus-4-5-20251101", "claude-opus-4-5"),
        ("claude-3-7-sonnet-latest", "claude-3-7-sonnet"),
        ("claude-haiku-4-5-20251001", "claude-haiku-4-5"),
        ("scripted", "scripted"),
    ],
)
def test_a_model_is_priced_by_its_family(model: str, family: str) -> None:
    assert load_prices().price(model)[0] == family


def test_a_family_needs_a_whole_name_part() -> None:
    """``claude-opus-45`` is not ``claude-opus-4``: families end at a ``-``."""
    assert load_prices().price("claude-opus-45")[0] == "default"


def test_cache_reads_and_writes_are_priced(caplog: pytest.LogCaptureFixture) -> None:
    sonnet = load_prices().cost("claude-sonnet-4-5-20250929", MILLION)
    assert sonnet == pytest.approx(3.0 + 15.0 + 0.30 + 3.75)
    with caplog.at_level(logging.WARNING):
        unknown = load_prices().cost("gpt-9", MILLION)
    assert unknown == pytest.approx(15.0 + 75.0 + 1.50 + 18.75)  # the dear default
    assert "no price family matches model 'gpt-9'" in caplog.text


def test_a_policy_overrides_one_family_and_a_file_replaces_the_table(tmp_path: Path) -> None:
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text('[prices."claude-sonnet-4"]\ninput = 1.0\noutput = 2.0\n')
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    policy = Policy.load(policy_file)
    assert policy.model_cost("claude-sonnet-4-6", usage) == pytest.approx(3.0)
    assert policy.model_cost("claude-haiku-4-5", usage) == pytest.approx(6.0)  # shipped
    table = tmp_path / "prices.toml"
    table.write_text("[acme-llm]\ninput = 0.5\noutput = 0.5\n[default]\ninput = 9.0\n")
    own = Policy.load(None, table)
    assert own.model_cost("acme-llm-2026-01-01", usage) == pytest.approx(1.0)
    assert own.model_cost("claude-haiku-4-5", usage) == pytest.approx(9.0)


def test_a_bad_price_table_names_the_file_and_the_family(tmp_path: Path) -> None:
    table = tmp_path / "prices.toml"
    table.write_text("[acme-llm]\ninput = -1\n")
    with pytest.raises(PolicyError, match=r"prices.toml: \[acme-llm\]: input: Input should be"):
        Policy.load(None, table)
    table.write_text("[acme-llm]\ninptu = 1\n")
    with pytest.raises(PolicyError, match="inptu: Extra inputs are not permitted"):
        Policy.load(None, table)


def test_the_table_ships_with_the_package() -> None:
    assert SHIPPED_PRICES.name == "prices.toml" and SHIPPED_PRICES.exists()
    assert "default" in load_prices().families
