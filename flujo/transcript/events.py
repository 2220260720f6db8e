"""The transcript's ``events`` section: each event of the log, and what it made the machine do.

:class:`EventRenderer` feeds the events one by one to
:func:`flujo.engine.advance`, as an executor does, and prints for each the
event itself, then every decision it caused: retries and fallbacks, a loop
iteration's exit decision, the branch a conditional took, branches and items
starting and ending, the governor's breach, cancellations, the launches the
machine commands and the run's finish.  What changed is found by comparing
each running step with a snapshot taken after the previous event, and printed
in the machine's own order (results bubble up, inner steps first, then the
next steps start), ties broken by a natural sort of the step paths.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from flujo.domain import errors
from flujo.engine import (
    ApprovalAnswered,
    ApprovalTimedOut,
    CancelStep,
    Command,
    DeadlineReached,
    Event,
    FinishRun,
    LaunchStep,
    Outcome,
    RunCancelled,
    RunStarted,
    RunState,
    StepCancelled,
    StepFailed,
    StepState,
    StepSucceeded,
    advance,
    describe_breach,
)
from flujo.engine.plan import Plan
from flujo.spec.pipeline import PipelineSpec, StepSpec
from flujo.transcript.values import natural_order, preview, seconds_text, total_text, usage_text

__all__ = ["EventRenderer"]

_VERB = 10
_PAD = " " * 4


def _line(verb: str, text: str) -> str:
    return f"{_PAD}{verb:<{_VERB}}{text}".rstrip()


def _detail(label: str, text: str) -> str:
    return f"{_PAD}{' ' * _VERB}{label}: {text}"


@dataclass(frozen=True)
class _Snap:
    phase: str
    attempt: int
    agent: str | None
    iteration: int
    fallback_used: bool
    scope_phases: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def of(s: StepState) -> _Snap:
        return _Snap(
            s.phase, s.attempt, s.agent, s.iteration, s.fallback_used, dict(s.scope_phases)
        )

    @staticmethod
    def initial(s: StepState) -> _Snap:
        """How a step looks the moment it is created, before anything happens to it."""
        return _Snap("running", 0, None, 1 if s.kind == "loop" else 0, False, {})


@dataclass
class _Entry:
    """One line of a decision section, with the key that orders it."""

    depth: int
    path: str
    seq: int
    text: str
    late: bool = False
    """A container that failed or was cancelled: printed after this event's new steps."""


class EventRenderer:
    """Replays events on ``state`` and collects their lines in :attr:`lines`.

    The caller takes the lines after each :meth:`event` and clears the list;
    :attr:`state` is the run's state after the last event.
    """

    def __init__(self, spec: PipelineSpec, state: RunState) -> None:
        self.spec = spec
        self.state = state
        self.plan = Plan(spec)
        self.known = 0
        self.tracked: dict[str, _Snap] = {}
        self.lines: list[str] = []

    def spec_of(self, s: StepState) -> StepSpec | None:
        node = self.plan.nodes.get(s.name)
        return node.spec if node is not None else None

    # --- one event ---------------------------------------------------------

    def event(self, n: int, event: Event) -> None:
        st = self.state
        ignored_before = st.ignored_events
        breach_before = st.breach
        deferred_before = [d.path for d in st.deferred]
        st, commands = advance(st, event)
        self.state = st
        out = self.lines
        out.extend(self._event_head(n, event))
        if st.ignored_events > ignored_before:
            out.append(_line("ignored", _ignored_reason(st, event)))
        breach = st.breach if breach_before is None else None
        if breach is not None and breach.when == "after":
            out.append(_line("governor", describe_breach(breach)))
        cancelled = {c.path for c in commands if isinstance(c, CancelStep)}
        launched = {c.path for c in commands if isinstance(c, LaunchStep)}
        deferred = [d.path for d in st.deferred if d.path not in deferred_before]

        # The machine works depth-first: results bubble up (inner steps first),
        # then the next steps start; a container stopped by a step that started
        # in this same event (a refused launch, a failing condition) ends last.
        entries: list[_Entry] = []
        for path, old in self.tracked.items():
            entries.extend(self._diff(st.steps[path], old, cancelled, fresh=False))
        entries.sort(key=lambda e: (e.late, -e.depth, natural_order(e.path), e.seq))
        out.extend(e.text for e in entries if not e.late)
        if breach is not None and breach.when == "before":
            out.append(_line("governor", describe_breach(breach)))

        total = len(st.steps)
        new = list(islice(st.steps.values(), self.known, None)) if total > self.known else []
        self.known = total
        fresh_paths = {s.path for s in new}
        for s in new:
            out.extend(self._started(s, launched, deferred))
            out.extend(e.text for e in self._diff(s, _Snap.initial(s), cancelled, fresh=True))
        out.extend(
            _line("deferred", f"{path}: waiting for reserved budget")
            for path in deferred
            if path not in fresh_paths
        )
        out.extend(e.text for e in entries if e.late)

        out.extend(self._commands(commands))
        self.tracked = {
            p: _Snap.of(st.steps[p])
            for p in [*self.tracked, *(s.path for s in new)]
            if st.steps[p].phase == "running"
        }

    def _event_head(self, n: int, event: Event) -> list[str]:
        st = self.state
        tag = f"[{n}] {event.type}"
        if isinstance(event, RunStarted):
            return [f"{tag} seed={event.seed}", _detail("input", preview(event.input))]
        if isinstance(event, StepSucceeded):
            return [
                f"{tag} {event.path} attempt={event.attempt}",
                _detail("output", preview(event.output)),
                *_tool_lines(event.tool_calls),
                _detail("usage", f"{usage_text(event.usage)}; run total {total_text(st.usage)}"),
            ]
        if isinstance(event, StepFailed):
            lines = [
                f"{tag} {event.path} attempt={event.attempt} error={event.error_class}",
                _detail("message", preview(event.message)),
            ]
            if event.retry_after is not None:
                lines.append(_detail("retryAfter", seconds_text(event.retry_after)))
            lines.extend(_tool_lines(event.tool_calls))
            lines.append(
                _detail("usage", f"{usage_text(event.usage)}; run total {total_text(st.usage)}")
            )
            return lines
        if isinstance(event, StepCancelled):
            return [
                f"{tag} {event.path} attempt={event.attempt}",
                _detail("usage", f"{usage_text(event.usage)}; run total {total_text(st.usage)}"),
            ]
        if isinstance(event, RunCancelled):
            return [tag, _detail("reason", preview(event.reason))]
        if isinstance(event, DeadlineReached):
            return [tag]
        if isinstance(event, ApprovalAnswered):
            verdict = "approved" if event.approved else "rejected"
            lines = [f"{tag} {event.path} {verdict}" + (f" by {event.by}" if event.by else "")]
            if event.reason:
                lines.append(_detail("reason", preview(event.reason)))
            if event.input is not None:
                lines.append(_detail("input", preview(event.input)))
            return lines
        if isinstance(event, ApprovalTimedOut):
            return [f"{tag} {event.path}"]
        return [tag]  # pragma: no cover - every event type is handled above

    # --- what changed ------------------------------------------------------

    def _diff(self, s: StepState, old: _Snap, cancelled: set[str], *, fresh: bool) -> list[_Entry]:
        """Lines for what happened to one step since ``old`` (its earlier snapshot).

        ``fresh``: the step was created by this event (its start line is printed).
        """
        entries: list[_Entry] = []
        depth = s.path.count("/")

        def add(text: str, path: str = s.path, at: int = depth, late: bool = False) -> None:
            entries.append(_Entry(at, path, len(entries), text, late))

        spec = self.spec_of(s)
        if s.kind == "agent" and s.attempt > old.attempt and old.attempt > 0:
            if s.fallback_used and not old.fallback_used:
                add(
                    _line(
                        "fallback",
                        f"{s.path}: {old.agent} failed ({s.error_class}); switching to {s.agent}",
                    )
                )
            else:
                limit = spec.retry.max_attempts if spec is not None and spec.retry else 1
                add(
                    _line(
                        "retry",
                        f"{s.path}: {s.error_class} is retried "
                        f"(try {s.tries_on_agent} of {limit} on {s.agent})",
                    )
                )
        if s.kind == "approval" and s.fallback_used and not old.fallback_used:
            add(_line("fallback", f"{s.path}: {s.message}; calling {s.agent}"))
        if s.kind == "loop" and spec is not None and spec.loop is not None:
            exit_when = spec.loop.exit_when
            cond = f"exitWhen `{exit_when}`" if exit_when else "no exitWhen"
            for i in range(max(old.iteration, 1), s.iteration):
                add(
                    _line(
                        "loop", f"{s.path}: iteration {i} ended, {cond} false -> iteration {i + 1}"
                    )
                )
            if s.phase != old.phase:
                add(self._loop_end(s, spec))
        if s.kind in ("parallel", "map"):
            noun = "branch" if s.kind == "parallel" else "item"
            for key in s.scopes:
                before, now = old.scope_phases.get(key), s.scope_phases.get(key)
                if now == before or now is None:
                    continue
                scope = f"{s.path}/{key}"
                if now == "running":
                    if fresh:
                        continue  # listed on the container's start line
                    add(_line(noun, f"{scope} started"), scope, depth + 1)
                else:
                    add(_line(noun, f"{scope} {now}"), scope, depth + 1)
        if s.phase != old.phase:
            stopped = s.kind != "agent" and s.phase in ("failed", "cancelled")
            add(self._ended(s, cancelled), late=stopped and not fresh)
            if s.phase == "succeeded" and s.kind != "agent":
                add(_detail("output", preview(s.output)))
        return [e for e in entries if e.text]

    def _loop_end(self, s: StepState, spec: StepSpec) -> str:
        loop = spec.loop
        assert loop is not None
        n, bound = s.iteration, loop.max_iterations
        cond = f"exitWhen `{loop.exit_when}`" if loop.exit_when else "no exitWhen"
        if s.phase == "succeeded":
            if not loop.exit_when:
                return _line(
                    "loop",
                    f"{s.path}: iteration {n} ended, maxIterations={bound} "
                    "reached -> exit (onMaxIterations=succeed)",
                )
            if n < bound or loop.on_max_iterations == "fail":
                return _line("loop", f"{s.path}: iteration {n} ended, {cond} true -> exit")
            return _line(
                "loop",
                f"{s.path}: iteration {n} ended at maxIterations={bound}, "
                f"{cond} true or onMaxIterations=succeed -> exit",
            )
        last = self.state.steps.get(f"{s.path}/iter-{n}/{loop.steps[-1].name}")
        body_done = last is not None and last.phase == "succeeded"
        if s.phase == "failed" and s.error_class == errors.LOOP_EXHAUSTED and body_done:
            # Its own bound: a nested loop's exhaustion fails this one with the same class.
            return _line(
                "loop",
                f"{s.path}: iteration {n} ended, {cond} false, "
                f"maxIterations={bound} reached -> fail",
            )
        return ""

    def _ended(self, s: StepState, cancelled: set[str]) -> str:
        if s.phase == "succeeded":
            return _line("succeeded", s.path + self._summary(s))
        if s.phase == "failed":
            return _line("failed", f"{s.path} ({s.error_class}): {s.message}")
        if s.phase == "cancelled":
            if s.kind == "agent" and s.path in cancelled:
                return ""  # the CancelStep line says it, with the reason
            if s.kind == "agent":
                return _line("cancelled", f"{s.path} (never launched)")
            return _line("cancelled", s.path)
        return ""

    @staticmethod
    def _summary(s: StepState) -> str:
        if s.kind == "loop":
            return f" after {s.iteration} iteration{'s' if s.iteration != 1 else ''}"
        if s.kind == "conditional":
            return f" (branch {s.branch})"
        if s.kind in ("parallel", "map"):
            ok = [k for k in s.scopes if s.scope_phases.get(k) == "succeeded"]
            return (
                f" ({len(ok)} of {len(s.scopes)} {'branches' if s.kind == 'parallel' else 'items'})"
            )
        if s.fallback_used and s.kind == "approval":
            return f" (rejected; fallback {s.agent})"
        if s.fallback_used:
            return f" (on fallback {s.agent})"
        return ""

    def _started(self, s: StepState, launched: set[str], deferred: list[str]) -> list[str]:
        spec = self.spec_of(s)
        if s.kind == "agent":
            if s.path in launched:
                return []
            if s.path in deferred:
                return [_line("deferred", f"{s.path}: waiting for reserved budget ({s.agent})")]
            agent = spec.agent if spec is not None else s.agent
            return [_line("start", f"{s.path} (agent {agent})")]
        if s.kind == "loop":
            return [_line("loop", f"{s.path}: iteration 1 started")]
        if s.kind == "approval":
            if s.phase != "running":
                return [_line("start", f"{s.path} (approval)")]
            return [
                _line("await", f"{s.path}: {self.state.awaiting.get(s.path, '')}"),
                _detail("input", preview(s.input)),
            ]
        if s.kind == "conditional":
            assert spec is not None and spec.conditional is not None
            if s.branch is None:
                return [_line("condition", f"{s.path}: `{spec.conditional.condition}`")]
            return [_line("condition", f"{s.path}: `{spec.conditional.condition}` -> {s.branch}")]
        started = [k for k in s.scopes if k in s.scope_phases]
        if s.kind == "parallel":
            waiting = [k for k in s.scopes if k not in s.scope_phases]
            text = f"{s.path}: branches {', '.join(started) or 'none'} started"
            if waiting:
                text += f"; {', '.join(waiting)} queued"
            return [_line("parallel", text)]
        if s.items is None:
            return [_line("map", f"{s.path}: items not evaluated")]
        text = f"{s.path}: {len(s.items)} item{'s' if len(s.items) != 1 else ''}"
        if started:
            text += f", {_scope_range(started)} started"
        if len(started) < len(s.scopes) and s.phase == "running":
            text += f", {len(s.scopes) - len(started)} queued"
        return [_line("map", text), _detail("items", preview(s.items))]

    def _commands(self, commands: list[Command]) -> list[str]:
        out: list[str] = []
        for c in commands:
            if isinstance(c, CancelStep):
                out.append(_line("cancel", f"{c.path} ({c.reason})"))
            elif isinstance(c, LaunchStep):
                how = f"attempt {c.attempt}"
                if c.delay_seconds:
                    how += f", after {seconds_text(c.delay_seconds)} backoff"
                if c.timeout_seconds is not None:
                    how += f", timeout {seconds_text(c.timeout_seconds)}"
                out.append(_line("launch", f"{c.path} -> {c.agent} ({how})"))
                out.append(_detail("input", preview(c.input)))
            elif isinstance(c, FinishRun):
                out.extend(_finish_lines(c.outcome))
        return out


def _tool_lines(calls: list[dict[str, Any]] | None) -> list[str]:
    """One line per tool call of a tool loop: round, tool, arguments, then result or error."""
    lines = []
    for call in calls or []:
        head = f"round {call.get('round')} {call.get('tool')} {preview(call.get('arguments'))}"
        if "error" in call:
            lines.append(_detail("tool", f"{head} -> error {preview(call['error'])}"))
        else:
            lines.append(_detail("tool", f"{head} -> {preview(call.get('output'))}"))
    return lines


def _scope_range(keys: list[str]) -> str:
    if len(keys) > 3:
        return f"{keys[0]} .. {keys[-1]}"
    return ", ".join(keys)


def _ignored_reason(st: RunState, event: Event) -> str:
    if isinstance(event, StepSucceeded | StepFailed | StepCancelled):
        s = st.steps.get(event.path)
        if s is None:
            return "no such step"
        if st.finished:
            return f"the run is over (step {s.phase}, attempt {s.attempt})"
        return f"stale or duplicate (step {s.phase}, attempt {s.attempt})"
    return "the run is not in a phase that accepts it"


def _finish_lines(oc: Outcome) -> list[str]:
    if oc.status == "succeeded":
        return [_line("finish", "succeeded"), _detail("output", preview(oc.output))]
    text = f"{oc.status}: {oc.reason} ({oc.error_class})"
    if oc.path:
        text += f" at {oc.path}"
    lines = [_line("finish", text)]
    if oc.message:
        lines.append(_detail("message", oc.message))
    return lines
