"""The console's link to the running stack: the operator's NATS connection and the live feed.

Every event the relay publishes on ``<prefix>.events.>`` (JetStream) is fanned out
to the browsers' server-sent-event streams, so an open page updates within a
second. With the stack down the console keeps serving the ledger read-only and
tries again every few seconds; approvals say they need the stack.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from nats.aio.client import Client
from nats.js.api import DeliverPolicy

from bus.settings import Settings
from bus.transport.subjects import OPERATOR, Subjects

log = logging.getLogger(__name__)

RETRY_SECONDS = 3.0


class Live:
    """The operator's connection (None while the stack is down) and the browsers listening."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.subjects = Subjects(settings.prefix)
        self.nc: Client | None = None
        self.down_reason = "not connected yet"
        self.listeners: set[asyncio.Queue[dict[str, Any]]] = set()
        self.closing = False
        self._task: asyncio.Task[None] | None = None
        # an address found in <state>/nats.url is read again on each try: `claimcheck up`
        # started after the console writes a new one
        self._discovered = settings.nats_url in ("", self._written("nats.url"))

    def _written(self, name: str) -> str:
        path = self.settings.state_dir / name
        return path.read_text().strip() if path.exists() else ""

    @property
    def connected(self) -> bool:
        return self.nc is not None and self.nc.is_connected

    @property
    def why_down(self) -> str:
        if self.nc is not None and not self.nc.is_connected:
            return "the connection to the stack's NATS is lost; reconnecting"
        return self.down_reason

    async def start(self) -> None:
        """Connect now (the first page must tell the truth about the stack), then keep trying
        in the background whenever the connection is gone."""
        await self._try_connect()
        self._task = asyncio.get_running_loop().create_task(self._keep_connected())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.close()
            self.nc = None

    def close_streams(self) -> None:
        """Tell every live stream to end: the server is stopping."""
        self.closing = True
        for queue in list(self.listeners):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait({})

    def listen(self) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1000)
        self.listeners.add(queue)
        return queue

    def forget(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self.listeners.discard(queue)

    def publish(self, update: dict[str, Any]) -> None:
        for queue in list(self.listeners):
            with contextlib.suppress(asyncio.QueueFull):  # a stalled browser misses updates
                queue.put_nowait(update)

    async def _keep_connected(self) -> None:
        while True:
            await asyncio.sleep(RETRY_SECONDS)
            await self._try_connect()

    async def _try_connect(self) -> None:
        if self.nc is not None and not self.nc.is_closed:
            return  # connected, or reconnecting by itself
        self.nc = None
        try:
            await self._connect()
        except Exception as error:  # no deployment, refused, a wrong server
            self.nc = None
            self.down_reason = f"{type(error).__name__}: {error}"

    async def _connect(self) -> None:
        from bus.transport.connection import connect

        settings = self.settings.model_copy()
        if self._discovered:
            settings.nats_url = self._written("nats.url")
            settings.nats_server_name = self._written("nats.server")
        discovered = settings.state_dir / "credentials" / f"{OPERATOR}.json"
        if settings.credentials is None and discovered.exists():
            settings.credentials = discovered
        nc = await connect(settings, "claimcheck-console", patient=False)
        await nc.jetstream().subscribe(
            f"{self.subjects.prefix}.events.>",
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.NEW,
            cb=self._on_event,
        )
        self.nc = nc
        self.down_reason = ""
        self.publish({"stack": "up"})

    async def _on_event(self, msg: Any) -> None:
        try:
            envelope = json.loads(msg.data)
            update = {"workflowId": envelope.get("workflowId"), "type": envelope.get("type")}
        except ValueError:
            update = {"workflowId": None, "type": "unknown"}
        self.publish(update)
