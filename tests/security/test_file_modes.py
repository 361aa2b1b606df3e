"""Item 6 of issue 12, below NATS: what ``claimcheck up`` writes is readable by its owner only.

Each role runs as its own OS user (or container) in a deployment; these modes are what
keep an agent's user from reading the runtime's credentials and signing key, or the
ledger and its views.
"""

from __future__ import annotations

import stat
from pathlib import Path

from bus.ledger.setup import init_ledger
from bus.operations.mailbox import Mailbox
from bus.operations.stack import Stack
from bus.settings import Settings


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_up_writes_credentials_and_the_ledger_for_their_owner_only(
    tmp_path: Path, mailbox: Mailbox
) -> None:
    settings = Settings(state_dir=tmp_path / "state", smtp_port=mailbox.port)
    async with Stack(settings) as stack:
        state = settings.state_dir
        credentials = state / "credentials"
        assert mode(credentials) == 0o700
        files = sorted(credentials.iterdir())
        assert {path.name for path in files} >= {"runtime.json", "agent-triage.json", "cli.json"}
        assert {path.name: mode(path) for path in files} == {path.name: 0o600 for path in files}
        assert set(stack.credentials.values()) <= set(files)
        for database in ("ledger.db", "views.db"):
            assert mode(state / database) == 0o600, database
        assert mode(state / "nats-server.conf") == 0o600  # it holds every role's password


def test_init_takes_a_ledger_file_others_could_read_back(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.db"
    ledger.touch(mode=0o644)
    ledger.chmod(0o644)
    init_ledger(f"sqlite:///{ledger}")
    assert mode(ledger) == 0o600
