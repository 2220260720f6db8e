"""The transcript's last sections: the run's ``outcome`` and the table of its ``steps``.

Both are read from the state the event log leads to: status, reason, error,
output, usage, launches, the governor's breach and any ignored events; then
one row per step with its kind, phase, agent, attempts, iterations, branch or
items.  When the executor's recorded outcome is given and the replay does not
reproduce it, a ``NOTE`` says so: a determinism bug.
"""

from __future__ import annotations

from flujo.engine import Outcome, RunState, StepState
from flujo.transcript.values import canonical_json, preview, usage_text

__all__ = ["footer"]


def footer(st: RunState, recorded: Outcome | None) -> list[str]:
    """The lines after the events: ``outcome`` and ``steps``, each after a blank line."""
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
    out.append(f"  usage: {usage_text(st.usage)}")
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


def _step_row(s: StepState) -> str:
    parts = [f"{s.kind:<12}", f"{s.phase:<10}"]
    if s.kind == "agent":
        parts.append(f"{s.agent or '-'} attempts={s.attempt}")
        if s.fallback_used:
            parts.append("fallback")
        parts.append(f"usage {usage_text(s.usage)}")
    elif s.kind == "loop":
        parts.append(f"iterations={s.iteration}")
    elif s.kind == "conditional":
        parts.append(f"branch={s.branch or '-'}")
    elif s.kind == "map":
        parts.append(f"items={len(s.items) if s.items is not None else 0}")
    elif s.kind == "parallel":
        parts.append(f"branches={len(s.scopes)}")
    elif s.kind == "approval" and s.agent:
        parts.append(f"fallback {s.agent} attempts={s.attempt} usage {usage_text(s.usage)}")
    if s.error_class and s.phase == "failed":
        parts.append(f"error={s.error_class}")
    return " ".join(parts)
