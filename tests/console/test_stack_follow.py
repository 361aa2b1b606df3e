"""A console started before the stack finds it when it comes up (approvals become possible),
and says so when it goes down again: it follows ``<state>/nats.url``, never another server."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bus.operations.mailbox import Mailbox
from bus.operations.stack import Stack
from bus.settings import Settings
from tests.conftest import web_console
from tests.console.http import get

PATIENCE_SECONDS = 15


async def stack_up(url: str) -> bool:
    return bool((await get(f"{url}/api/workflows")).json()["stackUp"])


async def wait_for(url: str, up: bool) -> None:
    for _ in range(PATIENCE_SECONDS * 5):
        if await stack_up(url) == up:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"the console never said the stack is {'up' if up else 'down'}")


async def test_the_console_finds_the_stack_started_after_it_and_notices_it_stop(
    tmp_path: Path, mailbox: Mailbox
) -> None:
    state_dir = tmp_path / "state"
    async with web_console(Settings(state_dir=state_dir)) as url:
        assert not await stack_up(url)
        page = await get(f"{url}/")
        assert "The stack is down" in page.body
        async with Stack(Settings(state_dir=state_dir, smtp_port=mailbox.port)):
            await wait_for(url, up=True)
            assert "The stack is down" not in (await get(f"{url}/")).body
        await wait_for(url, up=False)
