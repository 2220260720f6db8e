"""Semantic checks a schema cannot express, shared by ``flujo validate``,
the embedded runner and the operator.

Every check returns problems with a field path (``spec.steps[2].input``), so
the loader can point at the offending YAML line.  All problems are reported
at once: an author fixing a file should not discover errors one per run.

Templates are measured before they are parsed (source bytes, then a cheap
lexical pre-scan; :class:`~flujo.domain.templates.Tally`) against the
template limits in force; :func:`check_pipeline` does not parse a template
over them, and leaves reporting it to ``check_pipeline_policy``, which knows
the namespace's policy and names the field and the policy option.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from flujo.domain.templates import (
    Tally,
    TemplateProblem,
    active_limits,
    referenced_steps,
    undeclared_names,
)
from flujo.spec.agent import AgentSpec
from flujo.spec.error_classes import ERROR_CLASSES
from flujo.spec.pipeline import MAX_DEPTH, BranchSpec, PipelineSpec, StepSpec

__all__ = [
    "Finding",
    "check_agents",
    "check_pipeline",
    "check_tools",
    "pipeline_templates",
    "template_findings",
    "tool_closure",
    "walk_steps",
]

Loc = tuple[Any, ...]


@dataclass(frozen=True)
class Finding:
    loc: Loc
    message: str


def walk_steps(
    steps: list[StepSpec], loc: Loc = ("spec", "steps"), depth: int = 0
) -> Iterator[tuple[StepSpec, Loc, int]]:
    """Every step with its location and container depth, in document order."""
    for i, step in enumerate(steps):
        here = (*loc, i)
        yield step, here, depth
        if step.loop is not None:
            yield from walk_steps(step.loop.steps, (*here, "loop", "steps"), depth + 1)
        elif step.map is not None:
            yield from walk_steps(step.map.steps, (*here, "map", "steps"), depth + 1)
        elif step.parallel is not None:
            yield from _walk_branches(step.parallel.branches, (*here, "parallel"), depth)
        elif step.conditional is not None:
            yield from _walk_branches(step.conditional.branches, (*here, "conditional"), depth)


def _walk_branches(
    branches: list[BranchSpec], loc: Loc, depth: int
) -> Iterator[tuple[StepSpec, Loc, int]]:
    for j, branch in enumerate(branches):
        yield from walk_steps(branch.steps, (*loc, "branches", j, "steps"), depth + 1)


def _templates(step: StepSpec, loc: Loc) -> Iterator[tuple[Any, bool, Loc]]:
    if step.input is not None:
        yield step.input, False, (*loc, "input")
    if step.loop is not None and step.loop.exit_when:
        yield step.loop.exit_when, True, (*loc, "loop", "exitWhen")
    if step.conditional is not None:
        yield step.conditional.condition, True, (*loc, "conditional", "condition")
    if step.map is not None:
        yield step.map.items, True, (*loc, "map", "items")
    if step.approval is not None:
        yield step.approval.message, False, (*loc, "approval", "message")


def pipeline_templates(spec: PipelineSpec) -> Iterator[tuple[Any, bool, Loc]]:
    """Every template field of a pipeline: ``(value, is_expression, location)``, in order."""
    for step, loc, _ in walk_steps(spec.steps):
        yield from _templates(step, loc)


def template_findings(source: Any, expression: bool, at: Loc, steps: set[str]) -> list[Finding]:
    """What one template field gets wrong: syntax, unknown steps, unknown variables."""
    try:
        unknown_steps = referenced_steps(source, expression) - steps
        unknown_vars = undeclared_names(source, expression)
    except TemplateProblem as exc:
        return [Finding(at, f"invalid template: {exc}")]
    found = [
        Finding(at, f"template references unknown step {name!r}" + _hint(name, steps))
        for name in sorted(unknown_steps)
    ]
    for name in sorted(unknown_vars):
        found.append(
            Finding(
                at,
                f"template uses unknown variable {name!r} (known: "
                "input, previous_step, steps, output, iteration, item, "
                "index, branch)",
            )
        )
    return found


def check_pipeline(spec: PipelineSpec) -> list[Finding]:
    """Names, nesting depth, branches, map batch sizes, templates and retry classes."""
    found: list[Finding] = []
    seen: dict[str, Loc] = {}
    steps = list(walk_steps(spec.steps))
    for step, loc, depth in steps:
        if step.name in seen:
            found.append(
                Finding(
                    (*loc, "name"),
                    f"duplicate step name {step.name!r} (step names must be "
                    f"unique in a pipeline; first used at {_dotted(seen[step.name])})",
                )
            )
        else:
            seen[step.name] = loc
        if depth >= MAX_DEPTH and step.kind not in ("agent", "approval"):
            found.append(Finding(loc, f"containers nested deeper than {MAX_DEPTH} levels"))
        for branches, where in (
            (step.parallel.branches if step.parallel else [], "parallel"),
            (step.conditional.branches if step.conditional else [], "conditional"),
        ):
            names: set[str] = set()
            for j, branch in enumerate(branches):
                if branch.name in names:
                    found.append(
                        Finding(
                            (*loc, where, "branches", j, "name"),
                            f"duplicate branch name {branch.name!r}",
                        )
                    )
                names.add(branch.name)
        if step.conditional is not None and step.conditional.default is not None:
            names = {b.name for b in step.conditional.branches}
            if step.conditional.default not in names:
                found.append(
                    Finding(
                        (*loc, "conditional", "default"),
                        f"default {step.conditional.default!r} names no branch",
                    )
                )
        if (
            step.map is not None
            and step.map.batch_size is not None
            and step.map.batch_size > step.map.max_items
        ):
            found.append(
                Finding(
                    (*loc, "map", "batchSize"),
                    f"batchSize {step.map.batch_size} exceeds maxItems "
                    f"{step.map.max_items}, so no batch could ever be full",
                )
            )
        if step.retry is not None:
            for j, cls in enumerate(step.retry.retry_on):
                if cls not in ERROR_CLASSES:
                    found.append(
                        Finding(
                            (*loc, "retry", "retryOn", j),
                            f"unknown error class {cls!r} (known: "
                            f"{', '.join(sorted(ERROR_CLASSES))})",
                        )
                    )
    names_all = set(seen)
    tally = Tally(active_limits())
    for source, expression, at in pipeline_templates(spec):
        _, skip = tally.add(source, expression)
        if not skip:  # one over the limits is reported by check_pipeline_policy
            found += template_findings(source, expression, at, names_all)
    return found


def agent_references(spec: PipelineSpec) -> Iterator[tuple[str, Loc]]:
    for step, loc, _ in walk_steps(spec.steps):
        if step.agent is not None:
            yield step.agent, (*loc, "agent")
        if step.fallback is not None:
            yield step.fallback, (*loc, "fallback")


def check_agents(spec: PipelineSpec, known: Iterable[str]) -> list[Finding]:
    """One finding per reference to an agent the registry does not know."""
    names = set(known)
    return [
        Finding(loc, f"unknown agent {name!r}" + _hint(name, names))
        for name, loc in agent_references(spec)
        if name not in names
    ]


def tool_closure(names: Iterable[str], agents: Mapping[str, AgentSpec | None]) -> list[str]:
    """The agents reachable through ``tools`` from ``names`` (not ``names`` themselves)."""
    seen: set[str] = set(names)
    found: list[str] = []
    queue = list(seen)
    while queue:
        spec = agents.get(queue.pop())
        for tool in spec.tools if spec is not None else []:
            if tool not in seen:
                seen.add(tool)
                found.append(tool)
                queue.append(tool)
    return sorted(found)


def check_tools(spec: PipelineSpec, agents: Mapping[str, AgentSpec | None]) -> list[Finding]:
    """One finding per tool a step's model agent names that does not exist, or itself.

    Tools of tools are followed: a model agent offered as a tool brings its own.
    """
    findings: list[Finding] = []
    reported: set[tuple[str, str]] = set()
    for name, loc in agent_references(spec):
        for owner in [name, *tool_closure([name], agents)]:
            owner_spec = agents.get(owner)
            for tool in owner_spec.tools if owner_spec is not None else []:
                if (owner, tool) in reported:
                    continue
                if tool == owner:
                    problem = "an agent cannot be its own tool"
                elif tool not in agents:
                    problem = f"unknown agent {tool!r}" + _hint(tool, agents)
                else:
                    continue
                reported.add((owner, tool))
                findings.append(Finding(loc, f"agent {owner!r}: spec.tools: {problem}"))
    return findings


def _hint(name: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _dotted(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
