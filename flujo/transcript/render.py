"""Render a run's event log as a deterministic, human-readable transcript.

Why a transcript is rendered *from the event log* and not from a finished
``RunState``: the log is the one record both executors share (the embedded
runtime and the operator feed the same events to the same
:func:`flujo.engine.advance`), so replaying it gives every intermediate
decision — retries, fallbacks, each loop iteration's exit decision, the branch
a conditional took, cancellations, the governor's breach — and the same log
gives the same transcript whichever executor produced it.  A final state
would only show where the run ended up.

Why the output is byte-stable: transcripts are checked in as golden files and
reviewed as diffs, so nothing in them may depend on the clock, ids, the
Python hash seed or the machine.  The renderer reads no clock, never iterates
a set, and orders what the machine leaves unordered by a natural sort of step
paths; long values appear as a short preview plus a sha256 of their canonical
JSON.  The format is described in ``docs/transcripts.md``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from flujo.domain import errors
from flujo.domain.usage import Usage
from flujo.engine import (
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
    event_adapter,
    new_run,
)
from flujo.engine.plan import Plan
from flujo.spec.limits import UsageLimits
from flujo.spec.pipeline import PipelineSpec, StepSpec

if TYPE_CHECKING:
    from flujo.runtime.runner import RunResult

__all__ = [
    "FORMAT_VERSION",
    "PREVIEW_CHARS",
    "canonical_json",
    "digest",
    "iter_transcript",
    "preview",
    "render_transcript",
    "transcript_of",
]

FORMAT_VERSION = 1
"""Bumped whenever the layout changes, so a golden diff names its cause."""

PREVIEW_CHARS = 96
"""Values whose canonical JSON is longer than this are shown abbreviated."""

_HEAD_CHARS = 64
_VERB = 10
_PAD = " " * 4


# --- values ----------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    """Plain JSON data for any value, without reprs that hold memory addresses."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, BaseModel):
        return _jsonable(value.model_dump(mode="json", by_alias=True))
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted((_jsonable(v) for v in value), key=canonical_json)
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes sha256:{hashlib.sha256(value).hexdigest()[:16]}>"
    return f"<{type(value).__module__}.{type(value).__qualname__}>"


def canonical_json(value: Any) -> str:
    """The canonical JSON text of a value: sorted keys, no spaces, UTF-8 kept."""
    return json.dumps(_jsonable(value), sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def digest(value: Any) -> str:
    """``sha256:`` and the first 16 hex digits of the value's canonical JSON."""
    return "sha256:" + hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()[:16]


def _head(text: str, limit: int) -> str:
    """At most ``limit`` chars of JSON text, never ending inside an escape."""
    i = 0
    while i < len(text):
        step = 1
        if text[i] == "\\":  # in JSON, a backslash only ever starts an escape
            step = 6 if text[i + 1 : i + 2] == "u" else 2
        if i + step > limit:
            break
        i += step
    return text[:i]


def preview(value: Any) -> str:
    """Canonical JSON in full when short, else a head, its length and digest."""
    text = canonical_json(value)
    if len(text) <= PREVIEW_CHARS:
        return text
    return f"{_head(text, _HEAD_CHARS)}... ({len(text)} chars, {digest(value)})"


def _usage(u: Usage) -> str:
    if u.is_zero:
        return "none"
    return (
        f"{u.total_tokens} tokens ({u.input_tokens} in, {u.output_tokens} out), ${u.cost_usd:.6f}"
    )


def _total(u: Usage) -> str:
    return f"{u.total_tokens} tokens, ${u.cost_usd:.6f}"


def _seconds(value: float) -> str:
    return f"{value!r}s"


def _natural(path: str) -> tuple[tuple[int, int | str], ...]:
    """``each/item-10`` after ``each/item-9``: numbers compare as numbers."""
    out: list[tuple[int, int | str]] = []
    for part in re.split(r"(\d+)", path):
        if part:
            out.append((0, int(part)) if part.isdigit() else (1, part))
    return tuple(out)


def _line(verb: str, text: str) -> str:
    return f"{_PAD}{verb:<{_VERB}}{text}".rstrip()


def _detail(label: str, text: str) -> str:
    return f"{_PAD}{' ' * _VERB}{label}: {text}"


# --- the pipeline outline ---------------------------------------------------


def _retry_text(step: StepSpec) -> str:
    r = step.retry
    if r is None or r.max_attempts <= 1:
        return ""
    on = ",".join(r.retry_on)
    return f", retry {r.max_attempts}x on {on} (backoff {_seconds(r.backoff_seconds)})"


def _outline(steps: list[StepSpec], depth: int, rows: list[tuple[str, str]]) -> None:
    indent = "  " * depth
    for step in steps:
        label = f"{indent}{step.name}"
        if step.loop is not None:
            lp = step.loop
            text = f"loop maxIterations={lp.max_iterations}"
            if lp.exit_when:
                text += f" exitWhen `{lp.exit_when}`"
            if lp.on_max_iterations != "fail":
                text += f" onMaxIterations={lp.on_max_iterations}"
            rows.append((label, text))
            _outline(lp.steps, depth + 1, rows)
        elif step.conditional is not None:
            cd = step.conditional
            text = f"conditional `{cd.condition}`"
            if cd.default:
                text += f" default={cd.default}"
            rows.append((label, text))
            for br in cd.branches:
                rows.append((f"{indent}  [{br.name}]", ""))
                _outline(br.steps, depth + 2, rows)
        elif step.parallel is not None:
            pl = step.parallel
            text = f"parallel merge={pl.merge} onBranchFailure={pl.on_branch_failure}"
            if pl.max_concurrency:
                text += f" maxConcurrency={pl.max_concurrency}"
            rows.append((label, text))
            for br in pl.branches:
                rows.append((f"{indent}  [{br.name}]", ""))
                _outline(br.steps, depth + 2, rows)
        elif step.map is not None:
            mp = step.map
            text = f"map over `{mp.items}` onItemFailure={mp.on_item_failure}"
            if mp.max_concurrency:
                text += f" maxConcurrency={mp.max_concurrency}"
            if mp.batch_size:
                text += f" batchSize={mp.batch_size}"
            rows.append((label, text))
            _outline(mp.steps, depth + 1, rows)
        else:
            text = f"agent {step.agent}"
            if step.fallback:
                text += f", fallback {step.fallback}"
            text += _retry_text(step)
            if step.timeout_seconds is not None:
                text += f", timeout {_seconds(step.timeout_seconds)}"
            rows.append((label, text))


def _header(spec: PipelineSpec, state: RunState, name: str | None) -> list[str]:
    out = [f"flujo transcript v{FORMAT_VERSION}", ""]
    out.append(f"pipeline {name}" if name else "pipeline")
    if spec.description:
        out.append(f"  description: {spec.description}")
    rows: list[tuple[str, str]] = []
    _outline(spec.steps, 1, rows)
    width = max(len(label) for label, _ in rows) + 2
    out.extend(f"{label:<{width}}{text}".rstrip() for label, text in rows)
    limits = state.limits.to_data()
    shown = " ".join(f"{k}={limits[k]}" for k in sorted(limits)) if limits else "none"
    out.append(f"  limits: {shown}")
    caps = state.agent_caps
    if caps:
        out.append("  cost caps: " + " ".join(f"{k}=${caps[k]:.6f}" for k in sorted(caps)))
    out.append("")
    return out


# --- snapshots of what can still change --------------------------------------


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


class _Renderer:
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
        entries.sort(key=lambda e: (e.late, -e.depth, _natural(e.path), e.seq))
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
                _detail("usage", f"{_usage(event.usage)}; run total {_total(st.usage)}"),
            ]
        if isinstance(event, StepFailed):
            lines = [
                f"{tag} {event.path} attempt={event.attempt} error={event.error_class}",
                _detail("message", preview(event.message)),
            ]
            if event.retry_after is not None:
                lines.append(_detail("retryAfter", _seconds(event.retry_after)))
            lines.append(_detail("usage", f"{_usage(event.usage)}; run total {_total(st.usage)}"))
            return lines
        if isinstance(event, StepCancelled):
            return [
                f"{tag} {event.path} attempt={event.attempt}",
                _detail("usage", f"{_usage(event.usage)}; run total {_total(st.usage)}"),
            ]
        if isinstance(event, RunCancelled):
            return [tag, _detail("reason", preview(event.reason))]
        if isinstance(event, DeadlineReached):
            return [tag]
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
                    how += f", after {_seconds(c.delay_seconds)} backoff"
                if c.timeout_seconds is not None:
                    how += f", timeout {_seconds(c.timeout_seconds)}"
                out.append(_line("launch", f"{c.path} -> {c.agent} ({how})"))
                out.append(_detail("input", preview(c.input)))
            elif isinstance(c, FinishRun):
                out.extend(_finish_lines(c.outcome))
        return out

    # --- the end -----------------------------------------------------------

    def footer(self, recorded: Outcome | None) -> list[str]:
        st = self.state
        out = ["", "outcome"]
        oc = st.outcome
        if oc is None:
            out.append(f"  status: unfinished (the event log ends while the run is {st.phase})")
        else:
            out.append(f"  status: {oc.status}")
            for label, value in (
                ("reason", oc.reason),
                ("error", oc.error_class),
                ("at", oc.path),
                ("message", oc.message),
            ):
                if value is not None:
                    out.append(f"  {label}: {value}")
            out.append(f"  output: {preview(oc.output)}")
        out.append(f"  usage: {_usage(st.usage)}")
        out.append(f"  launches: {st.launches}")
        if st.breach is not None:
            b = st.breach
            value, limit = (
                (repr(b.value), repr(b.limit_value))
                if b.limit == "cost"
                else (str(int(b.value)), str(int(b.limit_value)))
            )
            verb = "exceeded" if b.when == "after" else "reached"
            out.append(f"  breach: {b.limit} {value} {verb} limit {limit} at {b.path} ({b.when})")
        if st.ignored_events:
            out.append(f"  ignored events: {st.ignored_events}")
        if recorded is not None and (oc is None or canonical_json(recorded) != canonical_json(oc)):
            out.append("  NOTE: replaying the event log does not reproduce the recorded outcome")
            out.append(f"  recorded: {preview(recorded.model_dump(mode='json'))}")
        out.extend(["", "steps"])
        rows = [(s.path, _step_row(s)) for s in st.steps.values()]
        width = max((len(p) for p, _ in rows), default=0) + 2
        out.extend(f"  {p:<{width}}{text}".rstrip() for p, text in rows)
        return out


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


def _step_row(s: StepState) -> str:
    parts = [f"{s.kind:<12}", f"{s.phase:<10}"]
    if s.kind == "agent":
        parts.append(f"{s.agent or '-'} attempts={s.attempt}")
        if s.fallback_used:
            parts.append("fallback")
        parts.append(f"usage {_usage(s.usage)}")
    elif s.kind == "loop":
        parts.append(f"iterations={s.iteration}")
    elif s.kind == "conditional":
        parts.append(f"branch={s.branch or '-'}")
    elif s.kind == "map":
        parts.append(f"items={len(s.items) if s.items is not None else 0}")
    elif s.kind == "parallel":
        parts.append(f"branches={len(s.scopes)}")
    if s.error_class and s.phase == "failed":
        parts.append(f"error={s.error_class}")
    return " ".join(parts)


# --- entry points -------------------------------------------------------------


def _as_event(item: Event | Mapping[str, Any]) -> Event:
    if isinstance(item, Mapping):
        return event_adapter.validate_python(dict(item))
    return item


def iter_transcript(
    spec: PipelineSpec,
    events: Iterable[Event | Mapping[str, Any]],
    limits: UsageLimits | None = None,
    *,
    agent_caps: Mapping[str, float] | None = None,
    name: str | None = None,
    recorded: Outcome | None = None,
) -> Iterator[str]:
    """:func:`render_transcript` line by line (each ending in ``\\n``), as events are read.

    Neither the events nor the text are held whole: a long run's transcript can
    be written to a file while its (spilled) event log is streamed.
    """
    state = new_run(spec, limits, agent_caps)
    renderer = _Renderer(spec, state)
    for line in _header(spec, state, name):
        yield line + "\n"
    yield "events\n"
    for n, item in enumerate(events, 1):
        renderer.event(n, _as_event(item))
        for line in renderer.lines:
            yield line + "\n"
        renderer.lines.clear()
    for line in renderer.footer(recorded):
        yield line + "\n"


def render_transcript(
    spec: PipelineSpec,
    events: Iterable[Event | Mapping[str, Any]],
    limits: UsageLimits | None = None,
    *,
    agent_caps: Mapping[str, float] | None = None,
    name: str | None = None,
    recorded: Outcome | None = None,
) -> str:
    """Replay ``events`` on a fresh run of ``spec`` and render every decision.

    ``limits`` and ``agent_caps`` must be what the run was started with (the
    governor's decisions depend on them).  ``events`` may be event models or
    their JSON form.  ``recorded``, the outcome the executor reported, adds a
    note when the replay does not reproduce it (a determinism bug).
    """
    return "".join(
        iter_transcript(spec, events, limits, agent_caps=agent_caps, name=name, recorded=recorded)
    )


def transcript_of(result: RunResult, *, name: str | None = None) -> str:
    """The transcript of a finished embedded run, from its recorded event log.

    The log is streamed: a spilled output is read back, previewed and dropped.
    """
    state = result.state
    return render_transcript(
        state.pipeline,
        result.iter_events(),
        state.limits,
        agent_caps=state.agent_caps,
        name=name,
        recorded=result.outcome,
    )
