"""A JetStream cluster secured with ``claimcheck auth init``'s identities: three real
nats-server processes in operator mode, each including the same ``nats-auth.conf``.

Set-up with the runtime's user JWT creates streams with three replicas; no node lets an
anonymous client in; an agent's user JWT is held to its role on every node, and an agent
added after the cluster started connects to any node with no server change.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats
import pytest

from bus.operations.deployment import initialise, issue_identities
from bus.settings import Settings
from bus.transport.auth import Credentials
from bus.transport.identities import AUTH_CONFIG, Identities
from bus.transport.subjects import Subjects
from tests.conftest import start_nats_cluster

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]


async def connect_as(url: str, creds: Path, violations: list[str]) -> nats.NATS:
    async def on_error(error: Exception) -> None:
        violations.append(str(error))

    options = Credentials.load(creds).connect_options()
    return await nats.connect(url, error_cb=on_error, allow_reconnect=False, **options)


async def test_a_cluster_in_operator_mode(tmp_path: Path) -> None:
    auth = tmp_path / "auth"
    settings = Settings(state_dir=tmp_path / "state", stream_replicas=3)
    creds = issue_identities(settings, auth, ["triage"])
    nodes = await start_nats_cluster(
        tmp_path, (auth / AUTH_CONFIG).read_text(), creds=creds["runtime"]
    )
    try:
        settings.nats_url = ",".join(node.url for node in nodes)
        settings.credentials = creds["runtime"]
        settings.ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
        await initialise(settings)

        violations: list[str] = []
        operator = await connect_as(nodes[2].url, creds["cli"], violations)
        info = await operator.jetstream().stream_info(Subjects().stream("events"))
        assert info.config.num_replicas == 3
        await operator.close()

        for node in nodes:
            with pytest.raises(nats.errors.Error, match="Authorization Violation"):
                await nats.connect(node.url, allow_reconnect=False, max_reconnect_attempts=0)

        added = Identities(auth, Subjects()).add_user("agent-billing")
        clients = []
        for node, role in zip(nodes, (creds["agent-triage"], added, creds["tools"]), strict=True):
            clients.append(client := await connect_as(node.url, role, violations))
            await client.publish("cc.handoff.triage", b"{}")  # only the runtime may
            await client.flush()
        await asyncio.sleep(0.3)  # violations arrive asynchronously
        await asyncio.gather(*(client.close() for client in clients))
        assert len(violations) == 3, violations
        assert all("permissions violation" in v for v in violations)
    finally:
        await asyncio.gather(*(node.stop() for node in nodes))
