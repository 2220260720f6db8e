"""Ending things: cancelling steps in flight, succeeding and failing the run."""

from __future__ import annotations

from typing import Any

from flujo.engine.commands import CancelStep, FinishRun, Outcome
from flujo.engine.reducers.batch import Batch

__all__ = ["cancel", "cancel_under", "fail_run", "succeed_run", "withdraw_approval"]


def cancel_under(b: Batch, prefix: str, reason: str) -> None:
    st = b.state
    marker = prefix + "/"
    st.deferred = [d for d in st.deferred if not d.path.startswith(marker)]
    for path in [p for p in st.running if p.startswith(marker)]:
        cancel(b, path, reason)
    for path in [p for p in st.awaiting if p.startswith(marker)]:
        withdraw_approval(b, path)
    for s in st.steps.values():
        if s.phase == "running" and s.path.startswith(marker):
            s.phase = "cancelled"


def cancel(b: Batch, path: str, reason: str) -> None:
    st = b.state
    st.running.pop(path, None)
    st.reserved.pop(path, None)
    s = st.steps[path]
    s.phase = "cancelled"
    withdrawn = b.launches.pop(path, None)
    if withdrawn is not None:
        # Launched and cancelled in the same batch: it never reached the executor.
        s.settled = s.attempt
        st.launches -= 1
        st.agent_calls[withdrawn.agent] -= 1
    else:
        b.cancels[path] = CancelStep.model_construct(type="CancelStep", path=path, reason=reason)


def withdraw_approval(b: Batch, path: str) -> None:
    """Nobody need answer any more (the run or its scope stopped): no command, no answer."""
    b.state.awaiting.pop(path, None)
    b.approvals.pop(path, None)
    b.state.steps[path].phase = "cancelled"


def succeed_run(b: Batch, output: Any) -> None:
    st = b.state
    st.phase = "succeeded"
    st.outcome = Outcome(status="succeeded", output=output, usage=st.usage)
    b.finish = FinishRun(outcome=st.outcome)


def fail_run(
    b: Batch,
    reason: str,
    error_class: str,
    message: str,
    path: str | None,
    status: str = "failed",
) -> None:
    st = b.state
    if st.finished:
        return
    st.deferred.clear()
    for running in sorted(st.running):
        cancel(b, running, f"run stopped: {reason}")
    for path in sorted(st.awaiting):
        withdraw_approval(b, path)
    for s in st.steps.values():
        if s.phase == "running":
            s.phase = "cancelled"
    st.phase = "cancelled" if status == "cancelled" else "failed"
    st.outcome = Outcome(
        status="cancelled" if status == "cancelled" else "failed",
        reason=reason,
        error_class=error_class,
        message=message,
        path=path,
        usage=st.usage,
    )
    b.finish = FinishRun(outcome=st.outcome)
