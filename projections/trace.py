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
from projections.claim_text import claim_lines


def brief(value: Any, limit: int = 160) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def brief_text(text: str, limit: int = 300) -> str:
    """The first line of a message, shortened: the timeline keeps one line per event."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first if len(first) <= limit else first[: limit - 1] + "…"


def cache_use(usage: dict[str, int]) -> str:
    """The prompt cache's part in a model call: tokens read from it (hits) and written to it."""
    read, written = usage.get("cacheReadTokens", 0), usage.get("cacheWriteTokens", 0)
    return f" (cache: {read} read, {written} written)" if read or written else ""


PAST = {"approve": "approved", "deny": "denied"}
PREFIX = 4 + 1 + 15 + 2 + 18 + 1
"""The width of a timeline line's version, time and event type: where its text starts."""


def claim_text(claim: dict[str, Any]) -> str:
    """The claim's verdict, then each claimed item (its verdict and reason) on its own line."""
    first, *rest = claim_lines(claim, indent="")
    return "\n".join([first, *(" " * PREFIX + line for line in rest)])


DESCRIBE: dict[str, Callable[[dict[str, Any]], str]] = {
    "WorkflowStarted": lambda d: (
        f"{d['started_by']} asked {d['agent']} to {d['task']} (budget {d['budget_usd']} USD)"
    ),
    "HandoffSent": lambda d: (
        f"handoff {d['handoff']['from']} -> {d['handoff']['to']}: "
        f"{d['handoff']['task']}, status {d['handoff']['status']}"
        + (f", resting on claim {d['handoff']['claimId']}" if d["handoff"].get("claimId") else "")
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
    "ClaimMade": lambda d: claim_text({**d["claim"], "summary": d["summary"]}),
    "EvidenceChecked": lambda d: (
        f"the world was asked about {d['check']['evidenceId']} ({d['check']['tool']}): "
        f"{d['check']['outcome']}"
        + (f": {'; '.join(d['check']['problems'])}" if d["check"].get("problems") else "")
    ),
    "EscalationRaised": lambda d: (
        f"escalated to a human ({d['escalation']['kind']}): "
        f"{d['escalation']['reason']} [{d['escalation']['escalationId']}]"
    ),
    "EscalationResolved": lambda d: (
        f"{d['resolution']['approver']} {d['resolution']['decision']}d: {d['resolution']['reason']}"
        + (
            f"; with changes: {d['resolution']['correctedAction']['tool']} on "
            f"{d['resolution']['correctedAction']['resource']}"
            if d["resolution"].get("correctedAction")
            else ""
        )
    ),
    "WorkflowResumed": lambda d: f"resumed: handoff {d['handoff']['handoffId']} delivered again",
    "HandoffDeadLettered": lambda d: f"handoff dead-lettered after {d['deliveries']} deliveries",
    "BudgetExceeded": lambda d: f"budget exceeded: {d['reason']}",
    "FaultReported": lambda d: (
        f"{d['agent']} failed handling {d['handoff_id']} (delivery {d['delivery']}), "
        f"{d['kind'].replace('_', ' ')}: {d['error_type']}: {brief_text(d['message'])}"
    ),
    "WorkflowCancelled": lambda d: f"cancelled by {d['by']} ({d['role']}): {d['reason']}",
    "WorkflowTerminated": lambda d: f"terminated by {d['by']} ({d['role']}): {d['reason']}",
    "WorkflowRetried": lambda d: (
        f"retried by {d['by']} ({d['role']}): {d['reason']}; handoff {d['handoff_id']} again, "
        f"failed steps run again: {', '.join(d['cleared_steps']) or 'none'}"
    ),
    "SignalAwaited": lambda d: f"{d['agent']} waits for signal {d['name']!r}",
    "SignalReceived": lambda d: (
        f"signal {d['name']!r} from {d['by']} ({d['role']}): {brief(d['data'])}; {d['reason']}"
        + (f"; handoff {d['woke']} delivered again" if d.get("woke") else "")
    ),
    "BranchStarted": lambda d: (
        f"reset by {d['by']} ({d['role']}): continues workflow {d['source']} from its event "
        f"{d['version']}: {d['reason']}"
    ),
    "WorkflowReset": lambda d: (
        f"reset by {d['by']} ({d['role']}) to event {d['version']}: continues as workflow "
        f"{d['branch']}: {d['reason']}"
    ),
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
