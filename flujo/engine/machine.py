"""The run state machine: ``advance(state, event) -> (state, commands)``.

This is the one place where orchestration semantics live — sequencing,
loops, conditionals, parallel fan-out, map, retries, fallbacks and the usage
governor — so the embedded runtime and the operator behave identically.

Rules the code below keeps:

- **Pure.** No I/O, no clock, no randomness except what events carry (the
  retry jitter is a hash of ``RunStarted.seed``, the path and the attempt).
- **Never raises.** A bug becomes a failed run with reason ``InternalError``.
- **Deterministic.** Commands of one ``advance`` call are ordered: cancels,
  then launches, each sorted by step path, then ``FinishRun``.
- **Usage counts once per attempt.** The first result event of an attempt
  carries its usage; duplicates are ignored, late results of cancelled
  attempts still add the tokens they consumed.
- **A recorded success is never relaunched.**

``advance`` updates ``state`` in place and returns it (a reducer over a
mutable store, like Temporal's workflow instance): copying a state of
thousands of steps per event would make orchestration quadratic.  Callers
that need a snapshot take ``state.model_copy(deep=True)``.

This module is the dispatcher: an event goes to its handler (:data:`_HANDLERS`),
and a step kind's part to its reducer in :mod:`flujo.engine.reducers`
(:data:`REDUCERS`); see that package for which module holds what.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from flujo.domain import errors
from flujo.engine.commands import Command, FinishRun, Outcome
from flujo.engine.events import (
    ApprovalAnswered,
    ApprovalTimedOut,
    DeadlineReached,
    Event,
    RunCancelled,
    RunStarted,
    StepCancelled,
    StepFailed,
    StepSucceeded,
)
from flujo.engine.reducers import agent, approval, conditional, fanout, loop
from flujo.engine.reducers.batch import Batch, Reducers, plan_of
from flujo.engine.reducers.finish import fail_run
from flujo.engine.reducers.governor import describe_breach
from flujo.engine.reducers.iterations import KEEP_ITERATIONS
from flujo.engine.reducers.walk import start_seq
from flujo.engine.state import RunState
from flujo.spec.limits import UsageLimits
from flujo.spec.pipeline import PipelineSpec

__all__ = ["KEEP_ITERATIONS", "REDUCERS", "advance", "describe_breach", "new_run", "plan_of"]

REDUCERS = Reducers(
    start={
        "agent": agent.start,
        "loop": loop.start,
        "conditional": conditional.start,
        "parallel": fanout.start_parallel,
        "map": fanout.start_map,
        "approval": approval.start,
    },
    # A conditional ends with its branch, and a loop or a conditional fails with its
    # body: no entry (the walk does that).
    body_done={"loop": loop.iteration_done, "parallel": fanout.body_done, "map": fanout.body_done},
    body_failed={"parallel": fanout.body_failed, "map": fanout.body_failed},
)
"""What each step kind does when it starts, and when a body inside it succeeds or fails."""


def new_run(
    pipeline: PipelineSpec,
    limits: UsageLimits | None = None,
    agent_caps: Mapping[str, float] | None = None,
) -> RunState:
    """A fresh, pending run; the run's limits fall back to the pipeline's.

    ``agent_caps`` (agent → maximum cost of one call) turn on budget
    reservation under ``maxCostUsd``: see ``flujo.engine.reducers.agent``.
    """
    merged = (limits or UsageLimits()).merged_over(pipeline.usage_limits)
    return RunState(pipeline=pipeline, limits=merged, agent_caps=dict(agent_caps or {}))


def advance(state: RunState, event: Event) -> tuple[RunState, list[Command]]:
    """Apply one event; return the updated state and the commands it implies."""
    batch: Batch | None = None
    try:
        batch = Batch(state, REDUCERS)
        handler = _HANDLERS.get(type(event))
        if handler is None:
            state.ignored_events += 1
        else:
            handler(batch, event)
            if state.deferred:
                agent.resume_deferred(batch)
        return state, batch.commands()
    except Exception as exc:  # the machine must never raise: a bug fails the run
        return state, _internal_failure(state, batch, exc)


def _internal_failure(state: RunState, batch: Batch | None, exc: Exception) -> list[Command]:
    message = f"internal error in the run state machine: {type(exc).__name__}: {exc}"
    try:
        if batch is None:
            batch = Batch(state, REDUCERS)
        batch.finish = None
        fail_run(batch, "InternalError", errors.INTERNAL, message, None)
        return batch.commands()
    except Exception:
        state.phase = "failed"
        outcome = Outcome(
            status="failed", reason="InternalError", error_class=errors.INTERNAL, message=message
        )
        state.outcome = outcome
        return [FinishRun(outcome=outcome)]


# --- run-level events (step results are the agent reducer's) ----------------


def _apply_run_started(b: Batch, ev: RunStarted) -> None:
    st = b.state
    if st.phase != "pending":
        st.ignored_events += 1
        return
    st.phase = "running"
    st.input = ev.input
    st.seed = ev.seed
    start_seq(b, "", st.pipeline.steps, ev.input)


def _apply_deadline(b: Batch, ev: DeadlineReached) -> None:
    st = b.state
    if st.finished or st.phase == "pending":
        st.ignored_events += 1
        return
    seconds = st.limits.max_seconds or st.pipeline.timeout_seconds
    limit = f" of {seconds:g}s" if seconds else ""
    fail_run(b, "DeadlineExceeded", errors.TIMEOUT, f"run deadline{limit} reached", None)


def _apply_run_cancelled(b: Batch, ev: RunCancelled) -> None:
    st = b.state
    if st.finished:
        st.ignored_events += 1
        return
    fail_run(b, "Cancelled", errors.CANCELLED, ev.reason, None, status="cancelled")


_HANDLERS: dict[type, Callable[[Batch, Any], None]] = {
    RunStarted: _apply_run_started,
    StepSucceeded: agent.step_succeeded,
    StepFailed: agent.step_failed,
    StepCancelled: agent.step_cancelled,
    DeadlineReached: _apply_deadline,
    RunCancelled: _apply_run_cancelled,
    ApprovalAnswered: approval.answered,
    ApprovalTimedOut: approval.timed_out,
}
