"""What a service's NATS connection logs: a lost server, once, and not its own close, nor
what nats-py's background tasks meet after it (the bench printed such a line after its
stack had stopped)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from nats.errors import ConnectionClosedError

from bus.settings import Settings
from bus.transport.connection import connect
from bus.transport.server import EmbeddedNats

pytestmark = pytest.mark.timeout(60)


async def test_a_lost_server_is_logged_once(
    nats_server: EmbeddedNats, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    nc = await connect(Settings(state_dir=tmp_path, nats_url=nats_server.url), "watched")
    try:
        with caplog.at_level(logging.WARNING, logger="bus.transport.connection"):
            await nats_server.stop()
            async with asyncio.timeout(10):
                while "watched: NATS:" not in caplog.text:  # noqa: ASYNC110 (polls the log)
                    await asyncio.sleep(0.05)
            await asyncio.sleep(1)  # five more reconnect attempts fail meanwhile
        assert caplog.text.count("watched: NATS:") == 1
    finally:
        await nc.close()


async def test_what_is_met_after_the_clients_own_close_is_not_logged(
    nats_server: EmbeddedNats, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    nc = await connect(Settings(state_dir=tmp_path, nats_url=nats_server.url), "closer")
    await nc.close()
    with pytest.raises(ConnectionClosedError) as closed:
        await nc.jetstream().stream_info("ANY")
    with caplog.at_level(logging.WARNING, logger="bus.transport.connection"):
        await nc._error_cb(closed.value)  # as an ordered consumer recreating itself reports it
    assert "closer: NATS:" not in caplog.text
