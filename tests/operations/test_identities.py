"""``claimcheck auth init`` and ``claimcheck agent add`` as a user runs them, against a real
nats-server configured with what they wrote: set-up works with the runtime's credentials, an
agent added later gets in with one command and only its own subjects, bad input is refused."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats

from bus.transport.auth import Credentials
from bus.transport.server import EmbeddedNats
from tests.conftest import claimcheck


def auth_init(directory: Path, *agents: str) -> None:
    flags = [flag for agent in agents for flag in ("--agent", agent)]
    done = claimcheck("auth", "init", "--dir", str(directory), *flags)
    assert done.returncode == 0, done.stdout + done.stderr


async def test_a_deployment_set_up_with_its_own_identities(tmp_path: Path) -> None:
    auth = tmp_path / "auth"
    await asyncio.to_thread(auth_init, auth, "triage")
    before = (auth / "runtime.creds").read_text()
    await asyncio.to_thread(auth_init, auth, "triage", "notifier")  # again, one agent more
    assert (auth / "runtime.creds").read_text() == before  # kept, not reissued
    assert (auth / "agent-notifier.creds").exists()

    server = EmbeddedNats(tmp_path / "nats", authorization=(auth / "nats-auth.conf").read_text())
    await server.start()
    try:
        environment = {
            "CLAIMCHECK_NATS_URL": server.url,
            "CLAIMCHECK_CREDENTIALS": str(auth / "runtime.creds"),
            "CLAIMCHECK_LEDGER": f"sqlite:///{tmp_path / 'ledger.db'}",
        }
        done = await asyncio.to_thread(
            claimcheck, "init", env=environment, state_dir=tmp_path / "state"
        )
        assert done.returncode == 0, done.stdout + done.stderr

        added = await asyncio.to_thread(
            claimcheck, "agent", "add", "billing", "--dir", str(auth),
            "--policies", str(tmp_path / "policies"),
        )  # fmt: skip
        assert added.returncode == 0, added.stdout + added.stderr
        assert 'actor = "billing"' in (tmp_path / "policies" / "billing.toml").read_text()

        violations: list[str] = []

        async def on_error(error: Exception) -> None:
            violations.append(str(error))

        creds = Credentials.load(auth / "agent-billing.creds")
        assert creds.user == "agent-billing"
        nc = await nats.connect(server.url, error_cb=on_error, **creds.connect_options())
        await nc.publish("cc.rt.billing.state", b"{}")  # its own runtime subject: allowed
        await nc.publish("cc.tool.send_email", b"{}")
        await nc.flush()
        await asyncio.sleep(0.2)
        assert violations == ['nats: permissions violation for publish to "cc.tool.send_email"']
        await nc.close()
    finally:
        await server.stop()


async def test_without_credentials_nothing_connects(tmp_path: Path) -> None:
    auth = tmp_path / "auth"
    await asyncio.to_thread(auth_init, auth)
    server = EmbeddedNats(tmp_path / "nats", authorization=(auth / "nats-auth.conf").read_text())
    await server.start()
    try:
        try:
            await nats.connect(server.url, allow_reconnect=False, max_reconnect_attempts=0)
        except nats.errors.Error as error:
            assert "Authorization Violation" in str(error)
        else:
            raise AssertionError("an anonymous client connected")
    finally:
        await server.stop()


def test_bad_input_is_refused_with_a_reason(tmp_path: Path) -> None:
    named = claimcheck("agent", "add", "Bad Name", "--dir", str(tmp_path / "auth"))
    assert named.returncode == 1 and "invalid agent name 'Bad Name'" in named.stdout
    missing = claimcheck("agent", "add", "billing", "--dir", str(tmp_path / "none"))
    assert missing.returncode == 1 and "run `claimcheck auth init` first" in missing.stdout
    assert not (tmp_path / "none" / "agent-billing.creds").exists()
    bad = claimcheck("auth", "init", "--dir", str(tmp_path / "auth"), "--agent", "a.b")
    assert bad.returncode == 1 and "invalid agent name 'a.b'" in bad.stdout

    garbage = tmp_path / "garbage.creds"
    garbage.write_text("not a credentials file\n")
    environment = {
        "CLAIMCHECK_NATS_URL": "nats://127.0.0.1:1",
        "CLAIMCHECK_CREDENTIALS": str(garbage),
    }
    done = claimcheck("init", env=environment, state_dir=tmp_path / "state")
    assert done.returncode == 1
    assert "is not a NATS user credentials file" in done.stdout + done.stderr
