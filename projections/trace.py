"""``claimcheck trace``: one workflow as a timeline a person can read.

For each step: what the model believed, what the runtime allowed and why, what
executed, the evidence, checkpoints, verdicts and cost. Built from the events
alone, so it reads the same from the ledger or from the events stream.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from handoff_schemas import EventEnvelope


def brief(value: Any, limit: int = 160) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def cache_use(usage: dict[str, int]) -> str:
    """The prompt cache's part in a model call: tokens read from it (hits) and written to it."""
    read, written = usage.get("cacheReadTokens", 0), usage.get("cacheWriteTokens", 0)
    return f" (cache: {read} read, {written} written)" if read or written else ""


PAST = {"approve": "approved", "deny": "denied"}

DESCRIBE: dict[str, Callable[[dict[str, Any]], str]] = {
    "WorkflowStarted": lambda d: (
        f"{d['started_by']} asked {d['agent']} to {d['task']} (budget {d['budget_usd']} USD)"
    ),
    "HandoffSent": lambda d: (
        f"handoff {d['handoff']['from']} -> {d['handoff']['to']}: "
        f"{d['handoff']['task']}, status {d['handoff']['status']}, "
        f"evidence {d['handoff'].get('evidenceId')}"
    ),
    "HandoffRejected": lambda d: f"handoff refused: {d['reason']}",
    "IntentResolved": lambda d: f"{d['agent']} resolved the request to task {d['task']}",
    "ContextAssembled": lambda d: (
        f"{d['agent']} read "
        + ", ".join(f"{a['artifactId'][:19]}… ({a['size']} B)" for a in d["artifacts"])
    ),
    "ReasoningRecorded": lambda d: (
        f"{d['agent']} ({d['model']}, {d['purpose']}) believed "
        f"{brief(d['output'])}; {d['usage'].get('inputTokens', 0)} in / "
        f"{d['usage'].get('outputTokens', 0)} out tokens"
        + cache_use(d["usage"])
        + f", {d['cost_usd']:.6f} USD"
    ),
    "ActionRequested": lambda d: f"{d['agent']} asked to {d['action']} on {d['resource']}",
    "PermissionDecided": lambda d: f"runtime: {d['permission']} by rule {d['rule']}: {d['reason']}",
    "ToolExecuted": lambda d: (
        f"executed {d['tool']}: {d['status']} "
        f"(attempt {d['attempt']}, {d['duration_ms']:.0f} ms, {d['cost_usd']:.6f} USD)"
    ),
    "ToolUnavailable": lambda d: (
        f"no tool host answered {d['tool']} ({d['kind']}: {d['detail']}), attempt "
        f"{d['attempt']}; retrying in {d['retry_in_seconds']:.2f} s, waiting until "
        f"{d['window_ends_at']}"
    ),
    "ModelUnavailable": lambda d: (
        f"model unavailable ({d['detail']}), attempt {d['attempt']}; retrying in "
        f"{d['retry_in_seconds']:.2f} s"
        + (f" (retry-after {d['retry_after_seconds']:g} s)" if d["retry_after_seconds"] else "")
        + f", waiting until {d['window_ends_at']}"
    ),
    "ToolOutcomeUnknown": lambda d: f"outcome unknown for {d['tool']}: {d['detail']}",
    "EvidenceRecorded": lambda d: (
        f"evidence {d['evidence']['auditId']}: {d['evidence']['action']} "
        f"{d['evidence']['status']} ({d['evidence']['permission']} by {d['evidence']['rule']}) "
        f"refs {brief(d['evidence'].get('refs', {}))}"
    ),
    "CheckpointReached": lambda d: (
        f"checkpoint {d['name']} (declared): {brief(d['data'])}"
        + (
            ""
            if "backed_by" not in d
            else f"; backed by {d['backed_by']}"
            if d["backed_by"]
            else "; no evidence backs it"
        )
    ),
    "AuditNoted": lambda d: f"note by {d['agent']}: {d['note']}",
    "FailureClassified": lambda d: f"failure {d['kind']}: {d['detail']}",
    "RetryDecided": lambda d: (
        f"runtime decided: {d['decision']['strategy']} "
        f"(attempt {d['decision']['attempt']} of {d['decision']['max_attempts']})"
    ),
    "ClaimMade": lambda d: (
        f"claim by {d['claim']['agent']}: {d['claim']['statement']!r} asserts "
        f"{d['claim'].get('asserts')} citing {d['claim']['evidenceIds']} -> "
        f"{d['claim']['verdict']} ({d['claim']['reason']})"
        + (f"; unchecked remark: {d['claim']['remarks']!r}" if d["claim"].get("remarks") else "")
    ),
    "EscalationRaised": lambda d: (
        f"escalated to a human ({d['escalation']['kind']}): "
        f"{d['escalation']['reason']} [{d['escalation']['escalationId']}]"
    ),
    "EscalationResolved": lambda d: (
        f"{d['resolution']['approver']} {d['resolution']['decision']}d: {d['resolution']['reason']}"
    ),
    "WorkflowResumed": lambda d: f"resumed: handoff {d['handoff']['handoffId']} delivered again",
    "HandoffDeadLettered": lambda d: f"handoff dead-lettered after {d['deliveries']} deliveries",
    "BudgetExceeded": lambda d: f"budget exceeded: {d['reason']}",
    "WorkflowCompleted": lambda d: f"completed (claim {d['claim_id']})",
    "WorkflowFailed": lambda d: f"failed: {d['reason']}",
    "WorkflowStopped": lambda d: f"stopped: {d['reason']}",
}


def trace_ids(history: Iterable[EventEnvelope]) -> list[str]:
    """The OpenTelemetry trace ids recorded on a workflow's events, first seen first."""
    found: dict[str, None] = {}
    for event in history:
        if event.data.get("trace_id"):
            found[event.data["trace_id"]] = None
    return list(found)


def timeline(history: Iterable[EventEnvelope]) -> list[str]:
    """A header with the trace id(s), then one line per event (StepCompleted left out)."""
    history = list(history)
    traces = trace_ids(history)
    lines = [f"trace {', '.join(traces)}" if traces else "trace: none recorded (tracing is off)"]
    for event in history:
        describe = DESCRIBE.get(event.type)
        if describe is None:
            continue
        lines.append(
            f"{event.version:>4} {event.timestamp:%H:%M:%S.%f}  {event.type:<18} "
            f"{describe(event.data)}"
        )
    return lines
