"""The permission policy: deny by default, first match wins, bad files named precisely."""

from __future__ import annotations

from pathlib import Path

import pytest

from bus.runtime.policy import Policy, PolicyError

POLICY = """
[[rules]]
name = "no-press"
actor = "notifier"
action = "send_email"
resource = "mailto:press@*"
effect = "deny"

[[rules]]
name = "internal-email"
actor = "notifier"
action = "send_email"
resource = "mailto:*@acme.example"
effect = "allow"
"""


@pytest.fixture
def policy(tmp_path: Path) -> Policy:
    path = tmp_path / "policy.toml"
    path.write_text(POLICY)
    return Policy.load(path)


def test_anything_not_allowed_is_denied(policy: Policy) -> None:
    decision = policy.decide("notifier", "send_email", "mailto:someone@elsewhere.example")
    assert not decision.allowed
    assert decision.rule == "default-deny"
    assert not policy.decide("triage", "send_email", "mailto:ops@acme.example").allowed


def test_the_first_matching_rule_decides(policy: Policy) -> None:
    assert (
        policy.decide("notifier", "send_email", "mailto:ops@acme.example").rule == "internal-email"
    )
    press = policy.decide("notifier", "send_email", "mailto:press@acme.example")
    assert (press.allowed, press.rule) == (False, "no-press")


def test_the_default_policy_allows_the_demo_and_nothing_else() -> None:
    policy = Policy.load()
    assert policy.decide("triage", "create_ticket", "ticket:northwind").allowed
    assert policy.decide("notifier", "send_email", "mailto:support-leads@acme.example").allowed
    assert not policy.decide("notifier", "send_email", "mailto:press@pr-agency.example").allowed
    assert not policy.decide("triage", "send_email", "mailto:support-leads@acme.example").allowed


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[[rules]]\nname = "r"\neffect = "maybe"\n', "rule 1 ('r'), field 'effect'"),
        (
            '[[rules]]\nname = "a"\neffect = "allow"\n'
            '[[rules]]\nname = "b"\neffect = "allow"\nactr = "x"\n',
            "rule 2 ('b'), field 'actr'",
        ),
        ('[[rules]]\neffect = "allow"\n', "rule 1, field 'name'"),
        ("rules = [", "policy.toml"),
    ],
)
def test_a_bad_policy_names_file_rule_and_field(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    with pytest.raises(PolicyError) as raised:
        Policy.load(path)
    assert str(path) in str(raised.value)
    assert expected in str(raised.value)


def test_a_missing_policy_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"nope\.toml"):
        Policy.load(tmp_path / "nope.toml")
