"""The transcript's first section: its format version, the pipeline's outline, the limits.

The outline is one row per step of the spec, nested as the pipeline nests
(loop bodies, branches, map bodies), with what decides the run's shape: loop
bounds and exit conditions, merges and failure policies, agents, fallbacks,
retries and timeouts.  It is printed before the first event, so a golden diff
that starts here is a change of the pipeline, not of the engine.
"""

from __future__ import annotations

from flujo.engine import RunState
from flujo.spec.pipeline import BranchSpec, PipelineSpec, StepSpec
from flujo.transcript.values import seconds_text

__all__ = ["FORMAT_VERSION", "header"]

FORMAT_VERSION = 1
"""Bumped whenever the layout changes, so a golden diff names its cause."""


def _retry_text(step: StepSpec) -> str:
    r = step.retry
    if r is None or r.max_attempts <= 1:
        return ""
    on = ",".join(r.retry_on)
    return f", retry {r.max_attempts}x on {on} (backoff {seconds_text(r.backoff_seconds)})"


def _branches(branches: list[BranchSpec], depth: int, rows: list[tuple[str, str]]) -> None:
    """A conditional's or a parallel's branches: a ``[name]`` row, then its steps."""
    for br in branches:
        rows.append((f"{'  ' * depth}  [{br.name}]", ""))
        _outline(br.steps, depth + 2, rows)


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
            _branches(cd.branches, depth, rows)
        elif step.parallel is not None:
            pl = step.parallel
            text = f"parallel merge={pl.merge} onBranchFailure={pl.on_branch_failure}"
            if pl.max_concurrency:
                text += f" maxConcurrency={pl.max_concurrency}"
            rows.append((label, text))
            _branches(pl.branches, depth, rows)
        elif step.map is not None:
            mp = step.map
            text = f"map over `{mp.items}` onItemFailure={mp.on_item_failure}"
            if mp.max_concurrency:
                text += f" maxConcurrency={mp.max_concurrency}"
            if mp.batch_size:
                text += f" batchSize={mp.batch_size}"
            rows.append((label, text))
            _outline(mp.steps, depth + 1, rows)
        elif step.approval is not None:
            ap = step.approval
            text = "approval"
            if ap.timeout_seconds is not None:
                text += f" timeout {seconds_text(ap.timeout_seconds)} onTimeout={ap.on_timeout}"
            if ap.input_schema is not None:
                text += " with schema"
            if step.fallback:
                text += f", fallback {step.fallback}"
            rows.append((label, text))
        else:
            text = f"agent {step.agent}"
            if step.fallback:
                text += f", fallback {step.fallback}"
            text += _retry_text(step)
            if step.timeout_seconds is not None:
                text += f", timeout {seconds_text(step.timeout_seconds)}"
            rows.append((label, text))


def header(spec: PipelineSpec, state: RunState, name: str | None) -> list[str]:
    """The lines before ``events``: version, pipeline name and outline, limits, cost caps."""
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
