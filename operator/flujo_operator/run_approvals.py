"""Approval steps in the cluster: waiting in ``AwaitingApproval``, answers from the spec.

When the machine emits ``AwaitApproval`` the operator notes when the wait
began (kept in the status, ``awaitingApproval.STEP.since``, so a restart
keeps the clock), posts a Kubernetes Event, and arms the step's timeout.  The
run's phase is ``AwaitingApproval`` while it waits on nothing else.

A person answers by adding an entry to the run's ``spec.approvals`` with
``kubectl patch`` (``scripts/kubectl-flujo approve`` does it).  Each entry is
applied once, to a step that waits: the answer is journaled like every event,
so after a restart the replay holds it, the step no longer waits, and the
entry is not applied again.  Who answered is the field manager the API
recorded for the patch (``kubectl-patch``, or ``--field-manager``), in the
event and in the audit log.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from flujo.engine import ApprovalAnswered, AwaitApproval, Event
from flujo.runtime.approvals import answer_problem
from flujo.security.audit import field_manager_of
from flujo.spec.run import PipelineRunSpec
from pydantic import ValidationError

from flujo_operator.builders import RunRef, build_run_event
from flujo_operator.run_session import Session

__all__ = [
    "answers_of",
    "approval_event",
    "awaiting_status",
    "note_wait",
    "seconds_left",
]


def note_wait(session: Session, request: AwaitApproval, now: str) -> bool:
    """Remember a wait (since when: the first time only); ``True`` if it is new."""
    known = session.waits.get(request.path)
    if known is not None:
        known["schema"] = request.schema_  # not in the status: from the replayed request
        return False
    session.waits[request.path] = {
        "since": now,
        "message": request.message[:1000],
        "timeoutSeconds": request.timeout_seconds,
        "schema": request.schema_,
    }
    return True


def awaiting_status(session: Session) -> dict[str, Any] | None:
    """``status.awaitingApproval``: path → what the person sees and since when."""
    waiting = session.state.awaiting
    if not waiting:
        return None
    return {
        path: {k: v for k, v in session.waits.get(path, {}).items() if k != "schema"}
        for path in sorted(waiting)
    }


def seconds_left(wait: Mapping[str, Any], now: datetime) -> float | None:
    timeout = wait.get("timeoutSeconds")
    if not timeout:
        return None
    since = datetime.fromisoformat(str(wait["since"]).replace("Z", "+00:00"))
    return float(timeout) - (now - since).total_seconds()


def _approver(body: Mapping[str, Any]) -> str | None:
    """Who last changed the spec (the ``approvals`` entry), as the API recorded it."""
    return field_manager_of(body)


def answers_of(
    session: Session, body: Mapping[str, Any]
) -> tuple[list[tuple[Event, dict[str, Any]]], list[str]]:
    """The spec's answers to steps that wait now, as journaled events; and refusals."""
    try:
        spec = PipelineRunSpec.model_validate(body.get("spec") or {})
    except ValidationError:
        return [], []
    state = session.state
    by = _approver(body)
    events: list[tuple[Event, dict[str, Any]]] = []
    refused: list[str] = []
    taken: set[str] = set()
    for decision in spec.approvals:
        paths = [
            p
            for p in sorted(state.awaiting)
            if decision.step in (p, state.steps[p].name) and p not in taken
        ]
        if not paths:
            continue  # applied already, or a step that does not wait (yet)
        path = paths[0]
        approved = decision.decision == "approve"
        schema = session.waits.get(path, {}).get("schema")
        problem = answer_problem(schema, decision.input) if approved else None
        if problem is not None:
            refused.append(f"{path}: the answer's input does not fit the schema: {problem}")
            continue
        taken.add(path)
        event = ApprovalAnswered(
            path=path, approved=approved, input=decision.input, reason=decision.reason, by=by
        )
        entry = {"t": "ev", "p": path, "a": 0, "e": event.model_dump(mode="json")}
        events.append((event, entry))
    return events, refused


def approval_event(
    run: RunRef, reason: str, message: str, when: str, warning: bool = False
) -> dict[str, Any]:
    """An Event on the PipelineRun: a wait began, an answer was applied or refused."""
    return build_run_event(run, reason, message, when, warning)


def now_utc() -> datetime:
    return datetime.now(UTC)
