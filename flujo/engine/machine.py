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
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from flujo.domain import errors
from flujo.domain.templates import TemplateProblem, evaluate, render_value
from flujo.domain.usage import Usage
from flujo.engine.commands import CancelStep, Command, FinishRun, LaunchStep, Outcome
from flujo.engine.events import (
    DeadlineReached,
    Event,
    RunCancelled,
    RunStarted,
    StepCancelled,
    StepFailed,
    StepSucceeded,
)
from flujo.engine.plan import Plan, child_path, split_scope
from flujo.engine.state import Breach, DeferredLaunch, RunState, StepState
from flujo.spec.limits import UsageLimits
from flujo.spec.pipeline import MapSpec, PipelineSpec, RetrySpec, StepSpec

__all__ = ["advance", "describe_breach", "new_run", "plan_of"]

_EPS = 1e-9
KEEP_ITERATIONS = 100
"""Loop iterations whose step states stay in the run state; older ones are forgotten
(their events — and so the transcript — keep everything), which bounds memory
and the operator's status for loops of any length."""
_NO_RETRY = RetrySpec(max_attempts=1)


def new_run(
    pipeline: PipelineSpec,
    limits: UsageLimits | None = None,
    agent_caps: Mapping[str, float] | None = None,
) -> RunState:
    """A fresh, pending run; the run's limits fall back to the pipeline's.

    ``agent_caps`` (agent → maximum cost of one call) turn on budget
    reservation under ``maxCostUsd``: see :func:`_launch`.
    """
    merged = (limits or UsageLimits()).merged_over(pipeline.usage_limits)
    return RunState(pipeline=pipeline, limits=merged, agent_caps=dict(agent_caps or {}))


def plan_of(state: RunState) -> Plan:
    plan: Plan | None = state._plan
    if plan is None or plan.spec is not state.pipeline:
        plan = Plan(state.pipeline)
        state._plan = plan
    return plan


class _Batch:
    """Commands produced by one ``advance`` call, before ordering."""

    __slots__ = ("cancels", "finish", "launches", "plan", "state")

    def __init__(self, state: RunState) -> None:
        self.state = state
        self.plan = plan_of(state)
        self.cancels: dict[str, CancelStep] = {}
        self.launches: dict[str, LaunchStep] = {}
        self.finish: FinishRun | None = None

    def commands(self) -> list[Command]:
        out: list[Command] = [self.cancels[p] for p in sorted(self.cancels)]
        out.extend(self.launches[p] for p in sorted(self.launches))
        if self.finish is not None:
            out.append(self.finish)
        return out


def advance(state: RunState, event: Event) -> tuple[RunState, list[Command]]:
    """Apply one event; return the updated state and the commands it implies."""
    batch: _Batch | None = None
    try:
        batch = _Batch(state)
        handler = _HANDLERS.get(type(event))
        if handler is None:
            state.ignored_events += 1
        else:
            handler(batch, event)
            if state.deferred:
                _resume_deferred(batch)
        return state, batch.commands()
    except Exception as exc:  # the machine must never raise: a bug fails the run
        return state, _internal_failure(state, batch, exc)


def _internal_failure(state: RunState, batch: _Batch | None, exc: Exception) -> list[Command]:
    message = f"internal error in the run state machine: {type(exc).__name__}: {exc}"
    try:
        if batch is None:
            batch = _Batch(state)
        batch.finish = None
        _fail_run(batch, "InternalError", errors.INTERNAL, message, None)
        return batch.commands()
    except Exception:
        state.phase = "failed"
        outcome = Outcome(
            status="failed", reason="InternalError", error_class=errors.INTERNAL, message=message
        )
        state.outcome = outcome
        return [FinishRun(outcome=outcome)]


# --- event handlers ---------------------------------------------------------


def _apply_run_started(b: _Batch, ev: RunStarted) -> None:
    st = b.state
    if st.phase != "pending":
        st.ignored_events += 1
        return
    st.phase = "running"
    st.input = ev.input
    st.seed = ev.seed
    _start_seq(b, "", st.pipeline.steps, ev.input)


def _settle(b: _Batch, path: str, attempt: int, usage: Usage) -> StepState | None:
    """Count an attempt's usage once; return the step if the event is not a duplicate."""
    st = b.state
    s = st.steps.get(path)
    if s is None or s.kind != "agent" or attempt > s.attempt or attempt <= s.settled:
        st.ignored_events += 1
        return None
    s.settled = attempt
    if attempt == s.attempt:
        st.reserved.pop(path, None)
    if not usage.is_zero:
        s.usage = s.usage + usage
        st.usage = st.usage + usage
    return s


def _is_current(b: _Batch, s: StepState, attempt: int) -> bool:
    current = s.phase == "running" and s.attempt == attempt and not b.state.finished
    if not current:
        b.state.ignored_events += 1
        if not b.state.finished:
            # A late result of a cancelled attempt: its tokens still count.
            _governor_after(b, s.path)
    return current


def _apply_step_succeeded(b: _Batch, ev: StepSucceeded) -> None:
    s = _settle(b, ev.path, ev.attempt, ev.usage)
    if s is None or not _is_current(b, s, ev.attempt):
        return
    b.state.running.pop(s.path, None)
    if _governor_after(b, s.path, record=(ev.output,)):
        return
    _node_done(b, s, ev.output)


def _apply_step_failed(b: _Batch, ev: StepFailed) -> None:
    s = _settle(b, ev.path, ev.attempt, ev.usage)
    if s is None or not _is_current(b, s, ev.attempt):
        return
    _on_agent_failure(b, s, ev.error_class, ev.message, ev.retry_after)


def _apply_step_cancelled(b: _Batch, ev: StepCancelled) -> None:
    s = _settle(b, ev.path, ev.attempt, ev.usage)
    if s is None or not _is_current(b, s, ev.attempt):
        return
    _on_agent_failure(b, s, errors.CANCELLED, "the step was stopped outside the run", None)


def _apply_deadline(b: _Batch, ev: DeadlineReached) -> None:
    st = b.state
    if st.finished or st.phase == "pending":
        st.ignored_events += 1
        return
    seconds = st.limits.max_seconds or st.pipeline.timeout_seconds
    limit = f" of {seconds:g}s" if seconds else ""
    _fail_run(b, "DeadlineExceeded", errors.TIMEOUT, f"run deadline{limit} reached", None)


def _apply_run_cancelled(b: _Batch, ev: RunCancelled) -> None:
    st = b.state
    if st.finished:
        st.ignored_events += 1
        return
    _fail_run(b, "Cancelled", errors.CANCELLED, ev.reason, None, status="cancelled")


_HANDLERS: dict[type, Callable[[_Batch, Any], None]] = {
    RunStarted: _apply_run_started,
    StepSucceeded: _apply_step_succeeded,
    StepFailed: _apply_step_failed,
    StepCancelled: _apply_step_cancelled,
    DeadlineReached: _apply_deadline,
    RunCancelled: _apply_run_cancelled,
}


# --- starting nodes ---------------------------------------------------------


def _start_seq(b: _Batch, prefix: str, seq: list[StepSpec], data: Any) -> None:
    if seq:
        _start_node(b, prefix, seq[0], data)
    else:
        _seq_done(b, prefix, data)


def _new_state(b: _Batch, path: str, spec: StepSpec, kind: str, data: Any) -> StepState:
    s = StepState(path=path, name=spec.name, kind=kind, input=data)
    b.state.steps[path] = s
    if _ITER in path:
        _index_iterations(b.state, path)
    return s


_ITER = "/iter-"


def _iteration_prefixes(path: str, start: int = 0) -> Iterator[str]:
    """The loop-iteration scopes (``refine/iter-3/``) enclosing ``path``, found from ``start``."""
    at = path.find(_ITER, start)
    while at != -1:
        end = path.find("/", at + len(_ITER))
        if end == -1:
            return
        yield path[: end + 1]
        at = path.find(_ITER, end)


def _index_iterations(st: RunState, path: str) -> None:
    """Note ``path`` under every loop iteration enclosing it, so ``_forget`` need not scan."""
    index: dict[str, list[str]] = st._iterations
    for prefix in _iteration_prefixes(path):
        index.setdefault(prefix, []).append(path)


def _start_node(b: _Batch, prefix: str, spec: StepSpec, data: Any) -> None:
    path = child_path(prefix, spec.name)
    kind = spec.kind
    s = _new_state(b, path, spec, kind, data)
    if kind == "agent":
        if spec.input is not None:
            try:
                s.input = render_value(spec.input, _scope_vars(b, path, data))
            except TemplateProblem as exc:
                _node_failed(b, s, errors.TEMPLATE, str(exc), path)
                return
        _launch(b, s, spec.agent or "", 0.0, spec)
    elif spec.loop is not None:
        s.iteration = 1
        _start_seq(b, f"{path}/iter-1", spec.loop.steps, data)
    elif spec.conditional is not None:
        _start_conditional(b, s, spec, data)
    elif spec.parallel is not None:
        s.scopes = [br.name for br in spec.parallel.branches]
        s.queued = list(s.scopes)
        _fill(b, s, spec)
    elif spec.map is not None:
        _start_map(b, s, spec, data)


def _start_conditional(b: _Batch, s: StepState, spec: StepSpec, data: Any) -> None:
    cond = spec.conditional
    assert cond is not None
    try:
        value = evaluate(cond.condition, _scope_vars(b, s.path, data))
    except TemplateProblem as exc:
        _node_failed(b, s, errors.TEMPLATE, str(exc), s.path)
        return
    chosen = str(value).lower() if isinstance(value, bool) else str(value)
    branches = {br.name: br for br in cond.branches}
    if chosen not in branches:
        if cond.default is None or cond.default not in branches:
            _node_failed(
                b,
                s,
                errors.CONFIG,
                f"condition gave {chosen!r}, which names no branch "
                f"({', '.join(branches)}) and there is no default",
                s.path,
            )
            return
        chosen = cond.default
    s.branch = chosen
    _start_seq(b, f"{s.path}/{chosen}", branches[chosen].steps, data)


def _start_map(b: _Batch, s: StepState, spec: StepSpec, data: Any) -> None:
    mp = spec.map
    assert mp is not None
    try:
        items = evaluate(mp.items, _scope_vars(b, s.path, data))
    except TemplateProblem as exc:
        _node_failed(b, s, errors.TEMPLATE, str(exc), s.path)
        return
    if not isinstance(items, list | tuple):
        _node_failed(
            b, s, errors.TEMPLATE, f"map items gave {type(items).__name__}, not a list", s.path
        )
        return
    if len(items) > mp.max_items:
        _node_failed(
            b,
            s,
            errors.CONFIG,
            f"map over {len(items)} items exceeds maxItems={mp.max_items}",
            s.path,
        )
        return
    s.items = list(items)
    if mp.batch_size is None:
        s.scopes = [f"item-{i}" for i in range(len(items))]
    else:
        s.scopes = [f"batch-{k}" for k in range(-(-len(items) // mp.batch_size))]
    s.queued = list(s.scopes)
    if not items:
        _node_done(b, s, [])
        return
    _fill(b, s, spec)


def _launch(b: _Batch, s: StepState, agent: str, delay: float, spec: StepSpec) -> None:
    st = b.state
    refusal = _governor_before(st)
    if refusal is not None:
        limit, limit_value, value = refusal
        st.breach = Breach(
            limit=limit, limit_value=limit_value, value=value, path=s.path, when="before"
        )
        _fail_run(b, "UsageLimitExceeded", errors.USAGE_LIMIT, describe_breach(st.breach), s.path)
        return
    cap = st.agent_caps.get(agent) if st.limits.max_cost_usd is not None else None
    if cap is not None and st.reserved and not _fits(st, cap):
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


def _fits(st: RunState, cap: float) -> bool:
    limit = st.limits.max_cost_usd
    assert limit is not None
    return st.usage.cost_usd + sum(st.reserved.values()) + cap <= limit + _EPS


def _resume_deferred(b: _Batch) -> None:
    """Launch waiting steps, in order, while their reservations fit."""
    st = b.state
    while st.deferred and not st.finished:
        waiting = st.deferred[0]
        s = st.steps[waiting.path]
        if s.phase != "running" or waiting.path in st.running:
            st.deferred.pop(0)
            continue
        cap = st.agent_caps.get(waiting.agent, 0.0)
        if st.reserved and not _fits(st, cap):
            return
        st.deferred.pop(0)
        _launch(b, s, waiting.agent, waiting.delay_seconds, b.plan.nodes[s.name].spec)


# --- completion and failure -------------------------------------------------


def _node_done(b: _Batch, s: StepState, output: Any) -> None:
    s.phase = "succeeded"
    s.output = output
    b.state.latest[s.name] = s.path
    node = b.plan.nodes[s.name]
    prefix = split_scope(s.path)[0]
    if node.index + 1 < len(node.siblings):
        _start_node(b, prefix, node.siblings[node.index + 1], output)
    else:
        _seq_done(b, prefix, output)


def _seq_done(b: _Batch, prefix: str, output: Any) -> None:
    st = b.state
    if not prefix:
        _succeed_run(b, output)
        return
    owner_path, key = split_scope(prefix)
    owner = st.steps[owner_path]
    if owner.phase != "running":
        return
    spec = b.plan.nodes[owner.name].spec
    if spec.loop is not None:
        _loop_iteration_done(b, owner, spec, output)
    elif spec.conditional is not None:
        _node_done(b, owner, output)
    else:
        if spec.map is not None and spec.map.batch_size is not None:
            problem = _batch_problem(owner, spec.map, key, output)
            if problem is not None:
                _scope_failed(b, owner, spec, key, errors.SCHEMA, problem, prefix)
                return
        owner.results[key] = output
        owner.scope_phases[key] = "succeeded"
        owner.active -= 1
        _fill(b, owner, spec)


def _batch_problem(owner: StepState, mp: MapSpec, key: str, output: Any) -> str | None:
    """Why a batch's output cannot be spread over its items, or None if it can."""
    expected = len(_map_input(owner, mp, key)[1])
    last = mp.steps[-1].name
    rule = "a batched map needs a list with one result per item"
    if not isinstance(output, list | tuple):
        return f"the body's last step {last} returned {type(output).__name__}; {rule}"
    if len(output) != expected:
        return (
            f"the body's last step {last} returned {len(output)} results "
            f"for {expected} items; {rule}"
        )
    return None


def _loop_iteration_done(b: _Batch, s: StepState, spec: StepSpec, output: Any) -> None:
    loop = spec.loop
    assert loop is not None
    done = False
    if loop.exit_when:
        scope = _scope_vars(b, s.path, output)
        scope["iteration"] = s.iteration
        try:
            done = bool(evaluate(loop.exit_when, scope))
        except TemplateProblem as exc:
            _node_failed(b, s, errors.TEMPLATE, f"exitWhen: {exc}", s.path)
            return
    if done:
        _node_done(b, s, output)
    elif s.iteration >= loop.max_iterations:
        if loop.on_max_iterations == "succeed":
            _node_done(b, s, output)
        else:
            _node_failed(
                b,
                s,
                errors.LOOP_EXHAUSTED,
                f"loop reached maxIterations={loop.max_iterations} before exitWhen held",
                s.path,
            )
    else:
        s.iteration += 1
        if s.iteration > KEEP_ITERATIONS:
            _forget(b.state, f"{s.path}/iter-{s.iteration - KEEP_ITERATIONS}/")
        _start_seq(b, f"{s.path}/iter-{s.iteration}", loop.steps, output)


def _forget(st: RunState, prefix: str) -> None:
    """Drop the step states of a finished loop iteration, keeping the counts."""
    paths = st._iterations.pop(prefix, None)
    if paths is None:  # a state not built by this machine (deserialised): scan
        paths = [p for p in st.steps if p.startswith(prefix)]
    for path in paths:
        old = st.steps.pop(path, None)
        if old is not None and old.kind == "agent":
            st.forgotten_steps += 1
            st.forgotten_succeeded += old.phase == "succeeded"
        # Iterations of loops nested in this one go with it.
        for nested in _iteration_prefixes(path, len(prefix) - 1):
            st._iterations.pop(nested, None)


def _on_agent_failure(
    b: _Batch, s: StepState, error_class: str, message: str, retry_after: float | None
) -> None:
    st = b.state
    st.running.pop(s.path, None)
    s.error_class = error_class
    s.message = message
    if _governor_after(b, s.path, failed=(error_class, message)):
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
        _node_failed(b, s, error_class, message, s.path)


def _node_failed(b: _Batch, s: StepState, error_class: str, message: str, origin: str) -> None:
    s.phase = "failed"
    s.error_class = error_class
    s.message = message
    prefix = split_scope(s.path)[0]
    if not prefix:
        _fail_run(
            b, "StepFailed", error_class, f"step {origin} failed ({error_class}): {message}", origin
        )
        return
    owner_path, key = split_scope(prefix)
    owner = b.state.steps[owner_path]
    if owner.phase != "running":
        return
    spec = b.plan.nodes[owner.name].spec
    if spec.loop is not None or spec.conditional is not None:
        _node_failed(b, owner, error_class, message, origin)
        return
    _scope_failed(b, owner, spec, key, error_class, message, origin)


def _scope_failed(
    b: _Batch,
    owner: StepState,
    spec: StepSpec,
    key: str,
    error_class: str,
    message: str,
    origin: str,
) -> None:
    """A branch (or map item / batch) of ``owner`` failed: apply the failure policy."""
    owner.scope_phases[key] = "failed"
    owner.active -= 1
    if owner.error_class is None:
        owner.error_class = error_class
        owner.message = f"{origin}: {message}"
    policy = spec.parallel.on_branch_failure if spec.parallel else spec.map.on_item_failure  # type: ignore[union-attr]
    if policy == "failFast":
        owner.queued = []
        _cancel_under(b, owner.path, f"sibling {origin} failed")
        _node_failed(b, owner, error_class, message, origin)
    else:
        _fill(b, owner, spec)


def _fill(b: _Batch, s: StepState, spec: StepSpec) -> None:
    """Start queued scopes of a parallel/map up to its concurrency; finish when all ended."""
    fan = spec.parallel or spec.map
    assert fan is not None
    limit = fan.max_concurrency or len(s.scopes) or 1
    while s.queued and s.phase == "running":
        if s.active >= limit:
            return
        key = s.queued.pop(0)
        s.scope_phases[key] = "running"
        s.active += 1
        if spec.parallel is not None:
            branch = next(br for br in spec.parallel.branches if br.name == key)
            _start_seq(b, f"{s.path}/{key}", branch.steps, s.input)
        else:
            assert spec.map is not None
            _start_seq(b, f"{s.path}/{key}", spec.map.steps, _map_input(s, spec.map, key)[1])
    if s.phase != "running" or s.queued:
        return
    if s.active:
        return
    failed = [k for k in s.scopes if s.scope_phases.get(k) == "failed"]
    policy = spec.parallel.on_branch_failure if spec.parallel else spec.map.on_item_failure  # type: ignore[union-attr]
    if failed and policy != "ignore":
        _node_failed(
            b, s, s.error_class or errors.PERMANENT, s.message or "a branch failed", s.path
        )
        return
    merged = _merge(s, spec)
    if isinstance(merged, _MergeError):
        _node_failed(b, s, errors.CONFIG, merged.message, s.path)
    else:
        _node_done(b, s, merged)


class _MergeError:
    def __init__(self, message: str) -> None:
        self.message = message


def _merge(s: StepState, spec: StepSpec) -> Any:
    if spec.map is not None:
        if spec.map.batch_size is None:
            return [s.results.get(k) for k in s.scopes]
        # Batches are spread back over their items: the same list an unbatched map gives.
        flat: list[Any] = []
        for k in s.scopes:
            if k in s.results:
                flat.extend(s.results[k])
            else:
                flat.extend([None] * len(_map_input(s, spec.map, k)[1]))
        return flat
    ok = [k for k in s.scopes if s.scope_phases.get(k) == "succeeded"]
    assert spec.parallel is not None
    strategy = spec.parallel.merge
    if strategy == "dict":
        return {k: s.results[k] for k in ok}
    if strategy == "list":
        return [s.results[k] for k in ok]
    if strategy == "concat":
        return "\n".join(v if isinstance(v, str) else str(v) for v in (s.results[k] for k in ok))
    if strategy == "first":
        return s.results[ok[0]] if ok else None
    merged: dict[str, Any] = {}
    for k in ok:
        value = s.results[k]
        if not isinstance(value, dict):
            return _MergeError(
                f"merge: branch {k!r} returned {type(value).__name__}, not an object"
            )
        merged.update(value)
    return merged


def _cancel_under(b: _Batch, prefix: str, reason: str) -> None:
    st = b.state
    marker = prefix + "/"
    st.deferred = [d for d in st.deferred if not d.path.startswith(marker)]
    for path in [p for p in st.running if p.startswith(marker)]:
        _cancel(b, path, reason)
    for s in st.steps.values():
        if s.phase == "running" and s.path.startswith(marker):
            s.phase = "cancelled"


def _cancel(b: _Batch, path: str, reason: str) -> None:
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


def _succeed_run(b: _Batch, output: Any) -> None:
    st = b.state
    st.phase = "succeeded"
    st.outcome = Outcome(status="succeeded", output=output, usage=st.usage)
    b.finish = FinishRun(outcome=st.outcome)


def _fail_run(
    b: _Batch,
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
        _cancel(b, running, f"run stopped: {reason}")
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


# --- the governor -----------------------------------------------------------


def _governor_after(
    b: _Batch,
    path: str,
    record: tuple[Any] | None = None,
    failed: tuple[str, str] | None = None,
) -> bool:
    """After usage was added: fail the run if a limit is now exceeded."""
    st = b.state
    if st.breach is not None or st.finished:
        return False
    limits, usage = st.limits, st.usage
    breach: Breach | None = None
    if limits.max_cost_usd is not None and usage.cost_usd > limits.max_cost_usd + _EPS:
        breach = Breach(
            limit="cost",
            limit_value=limits.max_cost_usd,
            value=usage.cost_usd,
            path=path,
            when="after",
        )
    elif limits.max_tokens is not None and usage.total_tokens > limits.max_tokens:
        breach = Breach(
            limit="tokens",
            limit_value=limits.max_tokens,
            value=usage.total_tokens,
            path=path,
            when="after",
        )
    if breach is None:
        return False
    st.breach = breach
    s = st.steps[path]
    if s.phase == "running":
        st.running.pop(path, None)
        if record is not None:
            # Partial results are kept: the output that crossed the limit is recorded.
            s.phase = "succeeded"
            s.output = record[0]
            st.latest[s.name] = path
        elif failed is not None:
            s.phase = "failed"
    _fail_run(b, "UsageLimitExceeded", errors.USAGE_LIMIT, describe_breach(breach), path)
    return True


def _governor_before(st: RunState) -> tuple[Any, float, float] | None:
    """Before a launch: the limit that is already reached, if any."""
    limits, usage = st.limits, st.usage
    if limits.max_cost_usd is not None and usage.cost_usd >= limits.max_cost_usd - _EPS:
        return "cost", limits.max_cost_usd, usage.cost_usd
    if limits.max_tokens is not None and usage.total_tokens >= limits.max_tokens:
        return "tokens", limits.max_tokens, usage.total_tokens
    if limits.max_launches is not None and st.launches >= limits.max_launches:
        return "launches", limits.max_launches, st.launches
    return None


def _usd(value: float) -> str:
    """Dollars with at least cents and as many digits as needed (up to 6), so that
    ``$0.012`` is never shown as ``$0.01`` next to a ``$0.01`` limit."""
    text = f"{value:.6f}".rstrip("0")
    whole, _, cents = text.partition(".")
    return f"${whole}.{cents.ljust(2, '0')}"


def describe_breach(breach: Breach) -> str:
    """E.g. ``cost limit $0.50 exceeded at fanout/b/summarise (iteration 3): $0.53 spent``."""
    iteration = ""
    for segment in reversed(breach.path.split("/")):
        if segment.startswith("iter-"):
            iteration = f" (iteration {segment[5:]})"
            break
    if breach.limit == "cost":
        limit, value = _usd(breach.limit_value), f"{_usd(breach.value)} spent"
        name = "cost limit"
    elif breach.limit == "tokens":
        limit, value = f"{int(breach.limit_value)}", f"{int(breach.value)} tokens used"
        name = "token limit"
    else:
        limit, value = f"{int(breach.limit_value)}", f"{int(breach.value)} launches made"
        name = "launch limit"
    where = "exceeded at" if breach.when == "after" else "reached before launching"
    return f"{name} {limit} {where} {breach.path}{iteration}: {value}"


# --- helpers ----------------------------------------------------------------


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


class _StepsView(Mapping[str, Mapping[str, Any]]):
    """``steps.NAME.output`` in templates: the latest successful instance of NAME."""

    __slots__ = ("_state",)

    def __init__(self, state: RunState) -> None:
        self._state = state

    def __getitem__(self, name: str) -> Mapping[str, Any]:
        path = self._state.latest[name]
        s = self._state.steps[path]
        return {"output": s.output, "path": path, "input": s.input}

    def __iter__(self) -> Iterator[str]:
        return iter(self._state.latest)

    def __len__(self) -> int:
        return len(self._state.latest)


def _map_input(owner: StepState, mp: MapSpec, key: str) -> tuple[int, Any]:
    """A map scope's ``index`` and body input: ``item-N`` → the item, ``batch-K`` → the
    batch's list of items."""
    assert owner.items is not None
    if mp.batch_size is None:
        index = int(key[5:])
        return index, owner.items[index]
    index = int(key[6:])
    start = index * mp.batch_size
    return index, owner.items[start : start + mp.batch_size]


def _scope_vars(b: _Batch, path: str, data: Any) -> dict[str, Any]:
    """Template variables visible at ``path``: run input, previous output, scopes."""
    st = b.state
    scope: dict[str, Any] = {
        "input": st.input,
        "previous_step": data,
        "output": data,
        "steps": _StepsView(st),
    }
    segments = path.split("/")
    # Walk container/scope pairs from the outside in; inner scopes win.
    for i in range(1, len(segments) - 1, 2):
        owner = st.steps.get("/".join(segments[:i]))
        key = segments[i]
        if owner is None:
            continue
        if owner.kind == "loop":
            scope["iteration"] = int(key[5:])
        elif owner.kind == "map" and owner.items is not None:
            mp = b.plan.nodes[owner.name].spec.map
            assert mp is not None
            scope["index"], scope["item"] = _map_input(owner, mp, key)
        else:
            scope["branch"] = key
    return scope
