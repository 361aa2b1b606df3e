"""The console's workflow list: one row per workflow with everything the list shows and filters on.

Paging 100,000 workflows must not fold the ledger per request, so the list is a
projection table (``cc_console_workflows``) fed by the same ``statements`` as the
other views, with indexes for each filter and the newest-first order.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from handoff_schemas import EventEnvelope
from projections.views import Statement, ViewStore
from projections.workflow_state import STATUS_BY_EVENT

VERDICT_FILTERS = {
    "flagged": "(w.unverified_claims + w.contradicted_claims + w.denied_actions "
    "+ w.open_escalations) > 0",
    "unverified": "w.unverified_claims > 0",
    "contradicted": "w.contradicted_claims > 0",
    "denied": "w.denied_actions > 0",
    "escalated": "w.open_escalations > 0",
}


UNVERIFIED_OR_CONTRADICTED = defaultdict(lambda: "unverified", contradicted="contradicted")
"""The list's two claim flags: a contradicted claim, or one not (fully) supported."""


Assignment = tuple[str, tuple[Any, ...]]
"""A column's new value as SQL over the row's current values, and its parameters."""


def console_statements(event: EventEnvelope, at: str | None = None) -> list[Statement]:
    """The list row's change for one event: at most one statement (none for most events),
    so a rebuild writes each row once per event; ``at`` is the event's time in ISO form,
    when the caller has it already (a rebuild formats each time once)."""
    wf, data, at = event.workflow_id, event.data, at or event.timestamp.isoformat()
    if event.type == "WorkflowStarted":
        return [
            (
                "INSERT INTO cc_console_workflows (workflow_id, task, scope, status, agent, "
                "started_at, updated_at, cost_usd, unverified_claims, contradicted_claims, "
                "denied_actions, open_escalations) "
                "VALUES (?, ?, ?, 'running', ?, ?, ?, 0, 0, 0, 0, 0)",
                (wf, data["task"], data.get("scope", ""), data["agent"], at, at),
            )
        ]
    changes = row_changes(event.type, data)
    if not changes:
        return []
    changes["updated_at"] = ("?", (at,))
    assignments = ", ".join(f"{column} = {value}" for column, (value, _) in changes.items())
    params = tuple(param for _, values in changes.values() for param in values)
    return [(f"UPDATE cc_console_workflows SET {assignments} WHERE workflow_id = ?", (*params, wf))]


def row_changes(event_type: str, data: dict[str, Any]) -> dict[str, Assignment]:
    """The columns an event changes, each once: PostgreSQL refuses a column set twice."""
    changes: dict[str, Assignment] = {}
    match event_type:
        case "HandoffSent" | "WorkflowResumed":
            changes["agent"] = ("?", (data["handoff"]["to"],))
        case "ReasoningRecorded" | "ToolExecuted":
            changes["cost_usd"] = ("cost_usd + ?", (data["cost_usd"],))
        case "PermissionDecided" if data["permission"] == "denied":
            changes["denied_actions"] = ("denied_actions + 1", ())
        case "ClaimMade" if data["claim"]["verdict"] != "verified":
            # unsupported and partial (and the older "unverified") count as unverified
            column = f"{UNVERIFIED_OR_CONTRADICTED[data['claim']['verdict']]}_claims"
            changes[column] = (f"{column} + 1", ())
        case "EscalationRaised":
            changes["open_escalations"] = ("open_escalations + 1", ())
        case "EscalationResolved":
            changes["open_escalations"] = ("open_escalations - 1", ())
            if data["resolution"]["decision"] == "approve":
                changes["status"] = ("'running'", ())
    if event_type in STATUS_BY_EVENT:
        changes["status"] = ("?", (STATUS_BY_EVENT[event_type],))
    if event_type == "SignalReceived" and data.get("woke"):
        changes["status"] = ("'running'", ())
    return changes


def workflow_page(
    view: ViewStore,
    *,
    status: str | None = None,
    agent: str | None = None,
    verdict: str | None = None,
    since: str | None = None,
    until: str | None = None,
    search: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[dict[str, Any]], int]:
    """One page of workflows, newest first, and how many match the filters."""
    where: list[str] = []
    params: list[Any] = []
    if status:
        where.append("w.status = ?")
        params.append(status)
    if agent:
        where.append("w.agent = ?")
        params.append(agent)
    if verdict:
        if verdict not in VERDICT_FILTERS:
            raise ValueError(f"no verdict filter {verdict!r}: one of {', '.join(VERDICT_FILTERS)}")
        where.append(VERDICT_FILTERS[verdict])
    if since:
        where.append("w.started_at >= ?")
        params.append(since)
    if until:
        where.append("w.started_at < ?")
        params.append(until)
    if search:
        where.append("w.workflow_id LIKE ?")
        params.append(search.strip().lower().replace("%", "").replace("_", "") + "%")
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    rows = view.query(
        f"SELECT w.* FROM cc_console_workflows w {clause} "
        "ORDER BY w.started_at DESC, w.workflow_id DESC LIMIT ? OFFSET ?",
        (*params, limit, offset),
    )
    total = view.query(f"SELECT COUNT(*) AS n FROM cc_console_workflows w {clause}", params)
    return rows, int(total[0]["n"])


def agents(view: ViewStore) -> list[str]:
    """The agents workflows are with now, for the list's filter."""
    rows = view.query("SELECT DISTINCT agent FROM cc_console_workflows ORDER BY agent")
    return [row["agent"] for row in rows]
