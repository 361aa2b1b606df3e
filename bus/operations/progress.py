"""Progress of a long command (the demo, the bench): what finished, and a heartbeat while nothing
does, so a person never looks at a silent terminal wondering whether it hangs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Protocol, TypeVar

T = TypeVar("T")


class Printer(Protocol):
    def print(self, *objects: object, **options: object) -> None: ...


class Progress(AbstractAsyncContextManager["Progress"]):
    """Counts ``total`` pieces of work: one line per piece done, and one every ``every``
    seconds while the rest runs (``async with`` starts and stops the heartbeat)."""

    def __init__(self, out: Printer, what: str, total: int, every: float = 5.0) -> None:
        self.out = out
        self.what = what
        self.total = total
        self.every = every
        self.done = 0
        self.started = time.monotonic()
        self._beating: asyncio.Task[None] | None = None

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def advance(self, note: str) -> None:
        """One piece is done; ``note`` says which and how it ended."""
        self.done += 1
        self.say(f"[{self.done}/{self.total}] {note} ({self.elapsed:.1f} s)")

    async def track(self, work: Awaitable[T], note: Callable[[T], str]) -> T:
        """Await one piece of work, and count it done with what ``note`` says of its result."""
        result = await work
        self.advance(note(result))
        return result

    def say(self, line: str) -> None:
        self.out.print(line, markup=False, highlight=False, soft_wrap=True)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            self.say(
                f"... {self.done} of {self.total} {self.what} done, {self.elapsed:.0f} s so far"
            )

    async def __aenter__(self) -> Progress:
        self.started = time.monotonic()
        self._beating = asyncio.create_task(self._heartbeat())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._beating is not None:
            self._beating.cancel()
            await asyncio.gather(self._beating, return_exceptions=True)
