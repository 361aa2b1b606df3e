"""Reading the whole ledger: ``verify --offline`` and ``views rebuild`` on a ledger of N events,
on a SQLite file and, given a PostgreSQL URL, in a fresh schema of it.

Both stream the notification log in pages, so their rate should stay near the bare
recorder's reading the same notifications, and their memory should not grow with N. Each
read, the recorder's too, runs three times and keeps its fastest run. The
ledger is written here directly through the ``Workflow`` aggregate (no runtime, no NATS),
many workflows per commit, with the same events a governed workflow records: a start and
its handoff, intent, context, reasoning, two tool steps each with its permission, run and
signed evidence, a checkpoint and a claim.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from uuid import uuid4

import nkeys

from bus.ledger import Ledger
from bus.ledger.workflow import Workflow
from bus.operations.bench import Measurement, ProgressLine, cpu_bound, fresh_ledger, memory_mb
from bus.settings import Settings
from bus.transport.signing import Signer
from handoff_schemas import ClaimAssertion, ClaimItem

SAVED_TOGETHER = 200
"""Workflows written per ledger commit while building the bench ledger."""

LEDGER_EVENTS = 20_000
"""The default ledger size: enough to see a rate, a few seconds to write."""

READS = ("recorder", "verify --offline", "views rebuild")
"""What a child process measures: the bare recorder's read (the baseline), then ours."""

RUNS = 3
"""Runs of each read, the fastest kept (as ``timeit`` does): a read is one process on one
core, and on a shared 2-core machine the same read varied by half from run to run."""


def governed_workflow(signer: Signer) -> Workflow:
    """One workflow with the events a governed run records (18 of them)."""
    handoff = {"handoffId": f"ho-{uuid4().hex}", "to": "bench", "status": "new"}
    workflow = Workflow("bench_workflow", "bench", "sha256-" + "0" * 64, "bench", "cli", 1000.0)
    workflow.send_handoff({**handoff, "workflowId": str(workflow.id)})
    handling = handoff["handoffId"]
    workflow.resolve_intent("bench", handling, "bench_workflow", f"{handling}/1")
    workflow.assemble_context("bench", [{"artifactId": "sha256-" + "0" * 64}], f"{handling}/2")
    evidence_ids = []
    for step in (3, 4):
        key, resource_name = f"{handling}/{step}", f"ticket:customer-{step}"
        payload = {"customer": f"customer-{step}", "title": "bench", "severity": "low"}
        workflow.record_reasoning(
            "bench", "act", "scripted", {"tool": "create_ticket"}, {"inputTokens": 10}, 0.0, key
        )
        workflow.request_action("bench", "create_ticket", resource_name, payload, key)
        workflow.decide_permission(
            "bench", "create_ticket", resource_name, "allowed", "bench", "allowed", key
        )
        workflow.execute_tool("bench", "create_ticket", "succeeded", 1.5, 1, 0.0, key)
        evidence = workflow.add_evidence(
            sign=signer.sign,
            actor="bench",
            action="create_ticket",
            resource=resource_name,
            permission="allowed",
            rule="bench",
            tool="create_ticket",
            status="succeeded",
            refs={"ticketId": uuid4().hex},
            facts={"severity": "low"},
            step_key=key,
        )
        evidence_ids.append(evidence.audit_id)
        workflow.complete_step(key, "execute", {"evidenceId": evidence.audit_id}, agent="bench")
    workflow.reach_checkpoint("bench", "filed", {"tickets": 2}, f"{handling}/5")
    items = [
        ClaimItem(
            action="create_ticket",
            target=f"ticket:customer-{step}",
            status="succeeded",
            evidence_id=evidence_id,
        )
        for step, evidence_id in zip((3, 4), evidence_ids, strict=True)
    ]
    workflow.make_claim("bench", "filed", ClaimAssertion(items=items), f"{handling}/6")
    return workflow


def write_ledger(ledger: Ledger, events: int, signer: Signer, progress: ProgressLine) -> int:
    """Workflows until the ledger holds at least ``events`` events; return how many it holds."""
    written = 0
    while written < events:
        workflows = [governed_workflow(signer) for _ in range(SAVED_TOGETHER)]
        ledger.save(*workflows)
        written = ledger.recorder.max_notification_id() or 0
        progress(f"ledger scale: wrote {written:,} of {events:,} events")
    return written


def bench_signer() -> Signer:
    return Signer(bytes(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)))


async def run_ledger_scale(events: int, postgres: str, progress: ProgressLine) -> list[Measurement]:
    """The reads of a ledger of ``events`` events on a SQLite file and, given a PostgreSQL
    URL, again in a fresh schema of it."""
    results = await on_ledger(events, "", progress)
    if postgres:
        results += await on_ledger(events, postgres, progress)
    return results


async def on_ledger(events: int, postgres: str, progress: ProgressLine) -> list[Measurement]:
    """Write a ledger of ``events`` events, then time each read in its own process (so each
    process's peak memory is that read's alone), against the bare recorder's read."""
    where = ", PostgreSQL" if postgres else ""
    with tempfile.TemporaryDirectory() as directory:
        state = Path(directory)
        async with fresh_ledger(postgres) as url:
            url = url or f"sqlite:///{state / 'ledger.db'}"
            signer = bench_signer()
            (state / "runtime.pub").write_text(signer.public_key + "\n")
            ledger = Ledger.from_url(url)
            try:
                written = await asyncio.to_thread(write_ledger, ledger, events, signer, progress)
            finally:
                ledger.close()
            figures = {}
            for read in READS:
                progress(f"ledger scale{where}: {read} over {written:,} events")
                figures[read] = await fastest(state, url, read)
    base = figures["recorder"]
    return [
        Measurement(
            f"{read} ({written:,} events{where})",
            1,
            figures[read]["rate"],
            "recorder select_notifications",
            base["rate"],
            cpu_bound(
                figures[read]["cpu"],
                "the reading process (decoding, hashing, signatures, SQL)",
                f"the database server: the reading process waited on it "
                f"{1 - figures[read]['cpu']:.0%} of the time",
            ),
            unit="events/s",
            detail={
                "rates": figures[read]["rates"],
                "baseline_rates": base["rates"],
                "peak_mb": figures[read]["peak_mb"],
                "baseline_peak_mb": base["peak_mb"],
                "events": written,
                "cpu": figures[read]["cpu"],
            },
        )
        for read in READS[1:]
    ]


async def fastest(state: Path, url: str, read: str) -> dict[str, Any]:
    """The fastest of :data:`RUNS` runs of ``read``, with the largest peak memory of any and
    every run's rate."""
    runs = [await measured_in_child(state, url, read) for _ in range(RUNS)]
    best = max(runs, key=lambda run: run["rate"])
    peak = max(run["peak_mb"] for run in runs)
    return {**best, "peak_mb": peak, "rates": [round(run["rate"]) for run in runs]}


async def measured_in_child(state: Path, url: str, read: str) -> dict[str, float]:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bus.operations.bench.ledger_scale",
        str(state),
        url,
        read,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await child.communicate()
    if child.returncode != 0:
        raise RuntimeError(f"the {read!r} bench process exited with {child.returncode}")
    return json.loads(out)


def measure(state: Path, url: str, read: str) -> dict[str, float]:
    """One read of the whole ledger in this process: events per second, peak memory, and
    the share of the time this process used a core (the rest it waited on the database)."""
    from bus.ledger.ledger_check import verify_offline
    from bus.ledger.scan import pages
    from bus.ledger.view_runner import rebuild_views
    from bus.operations.services import tune_garbage_collection
    from bus.transport.signing import Verifier

    tune_garbage_collection()  # as the commands do
    ledger = Ledger.from_url(url)
    try:
        started, cpu = time.perf_counter(), time.process_time()
        if read == "recorder":
            count = sum(len(page) for page in pages(ledger))
        elif read == "verify --offline":
            verifier = Verifier((state / "runtime.pub").read_text())
            outcome = verify_offline(ledger, verifier)
            assert outcome.broken is None, outcome.broken
            count = outcome.events
        else:
            count = rebuild_views(Settings(state_dir=state, ledger=url), ledger)
        elapsed = time.perf_counter() - started
        busy = (time.process_time() - cpu) / elapsed
    finally:
        ledger.close()
    return {"rate": count / elapsed, "peak_mb": memory_mb(peak=True), "cpu": round(busy, 2)}


if __name__ == "__main__":
    print(json.dumps(measure(Path(sys.argv[1]), sys.argv[2], sys.argv[3])))
