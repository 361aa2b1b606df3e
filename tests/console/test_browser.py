"""The console in a real browser (headless Chromium) against the demo on a real stack: the list,
the journalist's workflow with its denied email and escalation, an approval through the forms,
and the email's evidence appearing live on another open page without a reload; a live page
that keeps its newest answer when an older one arrives late, and one that keeps the form
field someone is in.

Set ``CLAIMCHECK_CONSOLE_SCREENSHOTS=DIR`` to save the two main pages as PNGs (the README's
screenshots in docs/ come from here)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from bus.settings import Settings
from tests.conftest import CONSOLE_TOKEN, web_console
from tests.console.http import get

LIVE_TIMEOUT_MS = 15_000
SUCCEEDED = "tr.evidence.status-succeeded"
SEEN_AT = """setInterval(() => {
  if (!window.seenAt && [...document.querySelectorAll("%s")].some(
        row => row.textContent.includes("send_email"))) window.seenAt = Date.now();
}, 10)"""


async def test_approve_the_journalists_escalation_and_watch_the_email_arrive_live(
    demo_stack: tuple[Settings, list], browser: Any
) -> None:
    settings, views = demo_stack
    press = views[2].workflow_id
    shots = os.environ.get("CLAIMCHECK_CONSOLE_SCREENSHOTS")
    async with web_console(settings) as url:
        context = await browser.new_context(viewport={"width": 1400, "height": 900})
        listing = await context.new_page()
        await listing.goto(f"{url}/")
        rows = listing.locator("table.workflows tbody tr")
        assert await rows.count() == 3
        journalist = listing.locator("tr", has_text="complaint:fabrikam")
        assert await journalist.locator(".badge").inner_text() == "escalated"
        assert "1 denied" in await journalist.locator(".flags").inner_text()
        assert "1 open escalation" in await journalist.locator(".flags").inner_text()
        if shots:
            await listing.screenshot(path=str(Path(shots) / "console-list.png"))

        operator = await context.new_page()
        await operator.goto(f"{url}/")
        await operator.locator("tr", has_text="complaint:fabrikam").locator("a.wf").click()
        await operator.wait_for_url(f"{url}/workflows/{press}")
        denied = operator.locator("tr.evidence", has_text="send_email")
        assert await denied.count() == 1
        assert "denied" in await denied.inner_text()
        escalation = operator.locator("#escalations .escalation.open")
        assert "held back: send_email" in await escalation.inner_text()
        assert "sign in with the console token" in await escalation.inner_text()
        assert "hash chain intact" in await operator.locator("#chain").inner_text()
        assert await operator.locator("#stack-down").count() == 0  # the stack is up
        if shots:
            await operator.screenshot(
                path=str(Path(shots) / "console-workflow.png"), full_page=True
            )

        watcher = await context.new_page()  # a second person, only looking
        await watcher.goto(f"{url}/workflows/{press}")
        await watcher.evaluate("window.notReloaded = true")
        await watcher.evaluate(SEEN_AT % SUCCEEDED)
        await listing.evaluate("window.notReloaded = true")

        await operator.fill("#login input[name=name]", "dana")
        await operator.fill("#login input[name=token]", CONSOLE_TOKEN)
        await operator.click("#login button")
        await operator.wait_for_selector("#operator")
        await operator.fill("#escalations input[name=reason]", "a statement is fine")
        await operator.click("#escalations button.approve")
        await operator.wait_for_selector(".note:has-text('approved')")

        await watcher.wait_for_function("window.seenAt", timeout=LIVE_TIMEOUT_MS)
        decision = watcher.locator("#escalations .decision")
        await decision.wait_for(timeout=LIVE_TIMEOUT_MS)
        assert await decision.inner_text() == "dana approved: a statement is fine"
        assert await watcher.evaluate("window.notReloaded") is True
        seen_at = await watcher.evaluate("window.seenAt")
        await listing.wait_for_selector(
            "tr:has-text('complaint:fabrikam') .badge.completed", timeout=LIVE_TIMEOUT_MS
        )
        assert await listing.evaluate("window.notReloaded") is True
        await context.close()
        recorded = next(
            e["at"]
            for e in (await get(f"{url}/api/workflows/{press}")).json()["events"]
            if e["type"] == "EvidenceRecorded"
            and e["data"]["evidence"]["status"] == "succeeded"
            and e["data"]["evidence"]["action"] == "send_email"
        )
        lag = seen_at / 1000 - datetime.fromisoformat(recorded).timestamp()
        print(f"the email's evidence was on the open page {lag * 1000:.0f} ms after recording")


class Fragments:
    """A route for the console's page: the page itself as served, and its live part's
    refreshes (``X-Fragment: 1``) answered with ``html(n)`` for the n-th, counted."""

    def __init__(self, html: Callable[[int], Awaitable[str]]) -> None:
        self.html, self.asked = html, 0

    async def __call__(self, route: Any) -> None:
        if route.request.headers.get("x-fragment") != "1":
            await route.continue_()
            return
        self.asked += 1
        body = await self.html(self.asked)
        await route.fulfill(status=200, content_type="text/html", body=body)


@asynccontextmanager
async def routed_page(
    browser: Any, tmp_path: Path, feed: Callable[[Any], Awaitable[None]], fragments: Fragments
) -> AsyncIterator[Any]:
    """The console's list page in a browser whose routes play the live feed (``feed``)
    and the answers to its refreshes, so their order is forced, not hoped for."""
    async with web_console(Settings(state_dir=tmp_path / "state")) as url:
        context = await browser.new_context()
        try:
            page = await context.new_page()
            await page.route(f"{url}/api/live", feed)
            await page.route(f"{url}/", fragments)
            await page.goto(f"{url}/")
            yield page
        finally:
            await context.close()


async def test_a_live_page_keeps_the_newest_answer_when_an_older_one_arrives_late(
    tmp_path: Path, browser: Any
) -> None:
    """Refreshes overlap (the server reads in a thread pool), and their answers may arrive
    in any order: the page keeps the newest. Two updates, the first answer slow."""
    updates = ["retry: 300\ndata: {}\n\n"] * 2

    async def feed(route: Any) -> None:
        body = updates.pop() if updates else "retry: 60000\n: nothing more\n\n"
        await route.fulfill(status=200, content_type="text/event-stream", body=body)

    async def answer(n: int) -> str:
        if n == 1:
            await asyncio.sleep(1.5)
        return f"<p id=answer>{n}</p>"

    fragments = Fragments(answer)
    async with routed_page(browser, tmp_path, feed, fragments) as page:
        await page.wait_for_selector("#answer:text-is('2')", timeout=LIVE_TIMEOUT_MS)
        await asyncio.sleep(2)  # the first answer arrives meanwhile
        assert fragments.asked == 2
        assert await page.locator("#answer").inner_text() == "2"


async def test_a_live_page_keeps_the_field_someone_is_in(tmp_path: Path, browser: Any) -> None:
    """An update arriving after someone clicked into a form field, before they typed, must
    not swap that field out: what they type next would go nowhere (an approval's reason
    was lost that way). The second update comes only once the field has the focus."""
    focused, connections = asyncio.Event(), 0

    async def feed(route: Any) -> None:
        nonlocal connections
        connections += 1
        if connections == 2:
            await focused.wait()
        body = "retry: 100\ndata: {}\n\n" if connections <= 2 else "retry: 60000\n: no more\n\n"
        await route.fulfill(status=200, content_type="text/event-stream", body=body)

    async def form(n: int) -> str:
        return f"<form><input name=reason data-answer={n}></form>"

    async with routed_page(browser, tmp_path, feed, Fragments(form)) as page:
        await page.wait_for_selector("input[data-answer='1']", timeout=LIVE_TIMEOUT_MS)
        await page.focus("input[name=reason]")
        focused.set()
        await asyncio.sleep(1.5)  # the update arrives; a redraw would come 0.1 s after it
        assert connections >= 2
        assert await page.evaluate("document.activeElement.dataset.answer") == "1"
        await page.keyboard.insert_text("a statement is fine")
        assert await page.input_value("input[name=reason]") == "a statement is fine"
