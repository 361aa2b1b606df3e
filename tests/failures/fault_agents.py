"""An agent for the fault tests, run as its own OS process by the stack.

It can be held at named points so a test can kill a process at an exact
moment: with ``CLAIMCHECK_TEST_GATES`` set to a directory, reaching point
``name`` writes ``<dir>/<name>.reached`` and then waits while
``<dir>/<name>.hold`` exists. Every model call appends a line to
``CLAIMCHECK_TEST_MODEL_LOG``, so a test can count calls across processes.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from pydantic import BaseModel

from agents import Agent, Context, ModelRequest, ModelResult, ScriptedModel


class Draft(BaseModel):
    subject: str
    body: str


def log_call(request: ModelRequest) -> None:
    with Path(os.environ["CLAIMCHECK_TEST_MODEL_LOG"]).open("a") as log:
        log.write(f"{os.getpid()} {request.output_type.__name__}\n")


class CountingModel(ScriptedModel):
    async def complete(self, request: ModelRequest) -> ModelResult:
        await asyncio.to_thread(log_call, request)
        return await super().complete(request)


async def gate(name: str) -> None:
    directory = os.environ.get("CLAIMCHECK_TEST_GATES")
    if not directory:
        return
    (Path(directory) / f"{name}.reached").touch()
    while (Path(directory) / f"{name}.hold").exists():  # noqa: ASYNC110 (another process's file)
        await asyncio.sleep(0.05)


mailer = Agent(
    "mailer",
    model=lambda: CountingModel(lambda request: Draft(subject="outage", body="the shop is down")),
)


@mailer.task("mail")
async def mail(ctx: Context) -> None:
    draft = await ctx.reason("Write the email.", {"request": ctx.artifact_json()}, Draft)
    await gate("after-reasoning")
    sent = await ctx.tools.send_email(to="ops@acme.example", subject=draft.subject, body=draft.body)
    await gate("after-email")
    await ctx.checkpoint("email-sent", {"messageId": sent.evidence.refs["messageId"]})
    await ctx.summarize("emailed ops", asserts="succeeded", evidence=[sent.evidence])


@mailer.task("mail_press")
async def mail_press(ctx: Context) -> None:
    """Emails an address no rule allows: the runtime escalates, and a human decides."""
    sent = await ctx.tools.send_email(to="press@pr-agency.example", subject="statement", body="...")
    await ctx.summarize("emailed the press", asserts="succeeded", evidence=[sent.evidence])
