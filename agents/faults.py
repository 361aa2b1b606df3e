"""What an agent tells the runtime when its handler fails: the kind of fault, the message and
the end of the stack trace, so the reason is in the ledger, not only in this process's log.
Secrets are taken out before anything leaves the process: the ledger is read by many."""

from __future__ import annotations

import json
import logging
import os
import re
import traceback

import msgspec
from nats.aio.msg import Msg
from pydantic import ValidationError

from agents.client import RuntimeClient
from agents.context import Context
from handoff_schemas import FaultReport, RetryAdvice
from handoff_schemas.limits import MAX_TEXT

log = logging.getLogger(__name__)


def kind_of(error: BaseException) -> str:
    """Input that is not JSON or not text does not decode; input that decodes but fails a
    model's validation is an invalid payload; anything else is the handler's own fault."""
    if isinstance(error, json.JSONDecodeError | UnicodeDecodeError | msgspec.DecodeError):
        return "undecodable_input"
    if isinstance(error, ValidationError | msgspec.ValidationError):
        return "invalid_payload"
    return "handler_exception"


URL_PASSWORD = re.compile(r"(\w[\w+.-]*://[^:/@\s]*:)[^@\s]+@")
SECRET_NAMES = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD)$", re.IGNORECASE)


def redacted_text(text: str) -> str:
    """``text`` without the secrets an exception may carry: a URL's password, and the value
    of any environment variable named like a secret (``ANTHROPIC_API_KEY``, ``*_TOKEN``)."""
    text = URL_PASSWORD.sub(r"\1***@", text)
    for name, value in os.environ.items():
        if SECRET_NAMES.search(name) and len(value) >= 8:
            text = text.replace(value, f"<{name}>")
    return text


def bounded(text: str, keep: str = "end") -> str:
    """``text`` within the wire bound: a trace keeps its end (where it failed), a message
    its start."""
    if len(text) <= MAX_TEXT:
        return text
    cut = "…"
    return cut + text[-(MAX_TEXT - 1) :] if keep == "end" else text[: MAX_TEXT - 1] + cut


async def report_fault(client: RuntimeClient, ctx: Context, msg: Msg, error: Exception) -> str:
    """Report ``error`` for this delivery; return the runtime's strategy (``retry`` or
    ``fail``), or ``retry`` when the report itself could not be made (logged)."""
    delivery = msg.metadata.num_delivered if msg.metadata else 1
    report = FaultReport(
        workflow_id=ctx.workflow_id,
        step_key=f"{ctx.incoming.handoff_id}/fault-{delivery}",
        kind=kind_of(error),  # type: ignore[arg-type]
        handoff_id=ctx.incoming.handoff_id,
        error_type=type(error).__name__[:256],
        message=bounded(redacted_text(str(error) or type(error).__name__), keep="start"),
        trace=bounded(redacted_text("".join(traceback.format_exception(error)))),
        delivery=delivery,
    )
    try:
        advice = await client.call("fault", report, RetryAdvice)
    except Exception as failed:  # the handoff is still redelivered; the log keeps the reason
        log.warning("could not report the fault to the runtime: %s", failed)
        return "retry"
    return advice.strategy
