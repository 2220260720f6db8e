"""Agent steps: launching (under the governor and budget reservation), results,
retries with backoff, and the fallback agent."""

from __future__ import annotations

import hashlib
from typing import Any

from flujo.domain import errors
from flujo.domain.templates import TemplateProblem, render_value
from flujo.domain.usage import Usage
from flujo.engine.commands import LaunchStep
from flujo.engine.events import StepCancelled, StepFailed, StepSucceeded
from flujo.engine.reducers.batch import Batch
from flujo.engine.reducers.finish import fail_run
from flujo.engine.reducers.governor import describe_breach, fits, governor_after, governor_before
from flujo.engine.reducers.scope import scope_vars
from flujo.engine.reducers.walk import node_done, node_failed
from flujo.engine.state import Breach, DeferredLaunch, StepState
from flujo.spec.pipeline import RetrySpec, StepSpec

__all__ = [
    "launch",
    "resume_deferred",
    "start",
    "step_cancelled",
    "step_failed",
    "step_succeeded",
]

_NO_RETRY = RetrySpec(max_attempts=1)
_CALLERS = frozenset({"agent", "approval"})


def start(b: Batch, s: StepState, spec: StepSpec, data: Any) -> None:
    if spec.input is not None:
        try:
            s.input = render_value(spec.input, scope_vars(b, s.path, data))
        except TemplateProblem as exc:
            node_failed(b, s, errors.TEMPLATE, str(exc), s.path)
            return
    _launch(b, s, spec.agent or "", 0.0, spec)


def launch(b: Batch, s: StepState, agent: str, delay: float, spec: StepSpec) -> None:
    """Call ``agent`` for step ``s`` (after ``delay``), unless the governor refuses."""
    _launch(b, s, agent, delay, spec)


def _launch(b: Batch, s: StepState, agent: str, delay: float, spec: StepSpec) -> None:
    st = b.state
    refusal = governor_before(st)
    if refusal is not None:
        limit, limit_value, value = refusal
        st.breach = Breach(
            limit=limit, limit_value=limit_value, value=value, path=s.path, when="before"
        )
        fail_run(b, "UsageLimitExceeded", errors.USAGE_LIMIT, describe_breach(st.breach), s.path)
        return
    cap = st.agent_caps.get(agent) if st.limits.max_cost_usd is not None else None
    if cap is not None and st.reserved and not fits(st, cap):
        # Reservation: wait until calls in flight settle and release budget.
        s.agent = agent
        s.phase = "running"
        st.deferred.append(DeferredLaunch(path=s.path, agent=agent, delay_seconds=delay))
        return
    if cap is not None:
        st.reserved[s.path] = cap
    s.attempt += 1
    s.tries_on_agent += 1
    s.agent = agent
    s.phase = "running"
    st.running[s.path] = s.attempt
    st.launches += 1
    index = st.agent_calls.get(agent, 0)
    st.agent_calls[agent] = index + 1
    b.launches[s.path] = LaunchStep.model_construct(
        type="LaunchStep",
        path=s.path,
        step=s.name,
        agent=agent,
        input=s.input,
        attempt=s.attempt,
        delay_seconds=delay,
        timeout_seconds=spec.timeout_seconds,
        call_index=index,
    )


def resume_deferred(b: Batch) -> None:
    """Launch waiting steps, in order, while their reservations fit."""
    st = b.state
    while st.deferred and not st.finished:
        waiting = st.deferred[0]
        s = st.steps[waiting.path]
        if s.phase != "running" or waiting.path in st.running:
            st.deferred.pop(0)
            continue
        cap = st.agent_caps.get(waiting.agent, 0.0)
        if st.reserved and not fits(st, cap):
            return
        st.deferred.pop(0)
        _launch(b, s, waiting.agent, waiting.delay_seconds, b.plan.nodes[s.name].spec)


# --- result events ------------------------------------------------------------


def _settle(b: Batch, path: str, attempt: int, usage: Usage) -> StepState | None:
    """Count an attempt's usage once; return the step if the event is not a duplicate."""
    st = b.state
    s = st.steps.get(path)
    # An approval step calls an agent too: its fallback, after a rejection.
    if s is None or s.kind not in _CALLERS or attempt > s.attempt or attempt <= s.settled:
        st.ignored_events += 1
        return None
    s.settled = attempt
    if attempt == s.attempt:
        st.reserved.pop(path, None)
    if not usage.is_zero:
        s.usage = s.usage + usage
        st.usage = st.usage + usage
    return s


def _is_current(b: Batch, s: StepState, attempt: int) -> bool:
    current = s.phase == "running" and s.attempt == attempt and not b.state.finished
    if not current:
        b.state.ignored_events += 1
        if not b.state.finished:
            # A late result of a cancelled attempt: its tokens still count.
            governor_after(b, s.path)
    return current


def step_succeeded(b: Batch, ev: StepSucceeded) -> None:
    s = _settle(b, ev.path, ev.attempt, ev.usage)
    if s is None or not _is_current(b, s, ev.attempt):
        return
    b.state.running.pop(s.path, None)
    if governor_after(b, s.path, record=(ev.output,)):
        return
    node_done(b, s, ev.output)


def step_failed(b: Batch, ev: StepFailed) -> None:
    s = _settle(b, ev.path, ev.attempt, ev.usage)
    if s is None or not _is_current(b, s, ev.attempt):
        return
    _on_agent_failure(b, s, ev.error_class, ev.message, ev.retry_after)


def step_cancelled(b: Batch, ev: StepCancelled) -> None:
    s = _settle(b, ev.path, ev.attempt, ev.usage)
    if s is None or not _is_current(b, s, ev.attempt):
        return
    _on_agent_failure(b, s, errors.CANCELLED, "the step was stopped outside the run", None)


# --- retries and the fallback ---------------------------------------------------


def _on_agent_failure(
    b: Batch, s: StepState, error_class: str, message: str, retry_after: float | None
) -> None:
    st = b.state
    st.running.pop(s.path, None)
    s.error_class = error_class
    s.message = message
    if governor_after(b, s.path, failed=(error_class, message)):
        return
    spec = b.plan.nodes[s.name].spec
    retry = spec.retry or _NO_RETRY
    if error_class in retry.retry_on and s.tries_on_agent < retry.max_attempts:
        delay = _backoff(retry, s.tries_on_agent, st.seed, s.path, retry_after)
        _launch(b, s, s.agent or "", delay, spec)
    elif (
        spec.fallback
        and not s.fallback_used
        and error_class not in (errors.TEMPLATE, errors.CANCELLED, errors.INTERNAL)
    ):
        s.fallback_used = True
        s.tries_on_agent = 0
        _launch(b, s, spec.fallback, 0.0, spec)
    else:
        node_failed(b, s, error_class, message, s.path)


def _backoff(
    retry: RetrySpec, tries: int, seed: int, path: str, retry_after: float | None
) -> float:
    base = min(
        retry.backoff_seconds * retry.backoff_multiplier ** (tries - 1), retry.max_backoff_seconds
    )
    digest = hashlib.sha256(f"{seed}:{path}:{tries}".encode()).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64
    delay = base * (1 + retry.jitter * (2 * fraction - 1))
    if retry_after is not None:
        delay = max(delay, retry_after)
    return round(max(delay, 0.0), 6)
