"""``state`` a page at a time: a workflow's recorded steps and checkpoints grow with its
history, and a read of them must not.

A page holds at most ``limit`` steps and ``limit`` checkpoints, taken in the order they were
first recorded (a step or checkpoint recorded again keeps its place, and a step a retry
forgot leaves its place empty, so a cursor never skips one nor repeats one). The cursor is
two offsets into those orders, ``"<steps>.<checkpoints>"``, opaque to callers. Step
replies are read from the events that recorded them (:mod:`bus.ledger.step_replies`), only
for the page's steps.
"""

from __future__ import annotations

from itertools import islice

from bus.ledger import Ledger, Workflow
from handoff_schemas import StateRequest, StepsReply


def offsets(cursor: str) -> tuple[int, int]:
    """Where the page starts in the steps and in the checkpoints (the first page: 0, 0)."""
    if not cursor:
        return 0, 0
    steps, checkpoints = cursor.split(".")
    return int(steps), int(checkpoints)


def state_page(ledger: Ledger, workflow: Workflow, agent: str, request: StateRequest) -> StepsReply:
    """One page of ``workflow``'s state for ``agent``: its own steps only (all of them for who
    started the workflow), since an agent replays what it reads here as its own steps.

    Runs in the ledger thread (it reads the aggregate and the store).
    """
    steps_from, checkpoints_from = offsets(request.cursor)
    keys, steps_to = page_of_steps(workflow, agent, request, steps_from)
    checkpoints = dict(
        islice(workflow.checkpoints.items(), checkpoints_from, checkpoints_from + request.limit)
    )
    checkpoints_to = checkpoints_from + len(checkpoints)
    more = steps_to < len(workflow.step_order()) or checkpoints_to < len(workflow.checkpoints)
    replies = ledger.recorded_replies(workflow, keys)
    return StepsReply(
        workflow_id=request.workflow_id,
        status=workflow.status,
        steps={key: replies[key] for key in keys},
        checkpoints=checkpoints,
        next_cursor=f"{steps_to}.{checkpoints_to}" if more else None,
    )


def page_of_steps(
    workflow: Workflow, agent: str, request: StateRequest, start: int
) -> tuple[list[str], int]:
    """The keys of the page's steps, and the offset the next page starts at.

    Scans step keys (not replies) from ``start`` until the page is full: keys another agent
    owns, outside ``stepPrefix``, or forgotten by a retry are passed over.
    """
    everyone = agent == workflow.started_by
    keys: list[str] = []
    position = start
    for key in islice(workflow.step_order(), start, None):
        position += 1
        if key not in workflow.steps or not key.startswith(request.step_prefix):
            continue
        if everyone or workflow.step_owner(key) in (agent, None):
            keys.append(key)
            if len(keys) == request.limit:
                break
    return keys, position
