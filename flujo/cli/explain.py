"""``flujo explain``: a pipeline as a tree.

One node per step with its kind and what decides its course: agents (and
whether the registry knows them), loop bounds and exit conditions, a
conditional's branches and default, merges and concurrency, retries,
fallbacks, timeouts and inputs.  :func:`explain_tree` builds the rich tree,
:func:`explain_text` the same as plain text for tests and pipes.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import typer

from flujo.agents.registry import AgentRegistry
from flujo.cli.conventions import fail
from flujo.cli.validate import AgentFiles, PipelineFile, PipelineName, load_pipeline
from flujo.domain.validation import check_agents, check_pipeline, walk_steps
from flujo.spec.pipeline import BranchSpec, PipelineManifest, StepSpec

if TYPE_CHECKING:
    from rich.text import Text
    from rich.tree import Tree

__all__ = ["explain_command", "explain_text", "explain_tree", "register"]


def _seconds(value: float) -> str:
    return f"{value:g}s"


def _agent_detail(name: str, registry: AgentRegistry) -> tuple[str, bool]:
    """What kind of agent ``name`` is, and whether the registry knows it."""
    if name not in registry:
        return "unknown agent", False
    spec = registry.entry(name).spec
    if spec is None:
        return "python", True
    if spec.type == "builtin":
        return ("builtin" if name == f"builtin.{spec.builtin}" else f"builtin {spec.builtin}"), True
    if spec.type == "scripted":
        count = len(spec.responses)
        return f"scripted, {count} response{'' if count == 1 else 's'}", True
    if spec.type == "openai":
        return f"openai {spec.model}", True
    return f"{spec.type} {spec.endpoint}", True


def _preview(value: Any, limit: int = 72) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = json.dumps(text, ensure_ascii=False) if isinstance(value, str) else text
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _label(step: StepSpec, registry: AgentRegistry) -> Text:
    from rich.text import Text

    label = Text()
    label.append(step.name, style="bold")
    label.append(f"  {step.kind}", style="cyan")
    if step.loop is not None:
        lp = step.loop
        label.append(f" maxIterations={lp.max_iterations}")
        label.append(f", exitWhen `{lp.exit_when}`" if lp.exit_when else ", no exitWhen")
        if lp.on_max_iterations != "fail":
            label.append(f", onMaxIterations={lp.on_max_iterations}")
    elif step.conditional is not None:
        cd = step.conditional
        label.append(f" on `{cd.condition}`")
        if cd.default:
            label.append(f", default {cd.default}")
    elif step.parallel is not None:
        pl = step.parallel
        label.append(f" {len(pl.branches)} branches, merge={pl.merge}")
        label.append(f", onBranchFailure={pl.on_branch_failure}")
        if pl.max_concurrency:
            label.append(f", maxConcurrency={pl.max_concurrency}")
    elif step.map is not None:
        mp = step.map
        label.append(f" over `{mp.items}`, maxItems={mp.max_items}")
        label.append(f", onItemFailure={mp.on_item_failure}")
        if mp.max_concurrency:
            label.append(f", maxConcurrency={mp.max_concurrency}")
        if mp.batch_size:
            label.append(f", batchSize={mp.batch_size}")
    else:
        for role, name in (("", step.agent), ("fallback ", step.fallback)):
            if name is None:
                continue
            detail, known = _agent_detail(name, registry)
            label.append(f", {role}" if role else " ")
            label.append(name, style="green" if known else "bold red")
            label.append(f" ({detail})", style="" if known else "red")
        if step.retry is not None and step.retry.max_attempts > 1:
            label.append(f", retry maxAttempts={step.retry.max_attempts}")
        if step.timeout_seconds is not None:
            label.append(f", timeout {_seconds(step.timeout_seconds)}")
        if step.input is not None:
            label.append(f"\ninput: {_preview(step.input)}", style="dim")
    return label


def _add_steps(node: Tree, steps: Sequence[StepSpec], registry: AgentRegistry) -> None:
    for step in steps:
        child = node.add(_label(step, registry))
        body: Sequence[StepSpec] = ()
        branches: Sequence[BranchSpec] = ()
        default = None
        if step.loop is not None:
            body = step.loop.steps
        elif step.map is not None:
            body = step.map.steps
        elif step.parallel is not None:
            branches = step.parallel.branches
        elif step.conditional is not None:
            branches = step.conditional.branches
            default = step.conditional.default
        _add_steps(child, body, registry)
        for branch in branches:
            from rich.text import Text

            title = Text(f"[{branch.name}]", style="magenta")
            if branch.name == default:
                title.append(" (default)")
            _add_steps(child.add(title), branch.steps, registry)


def explain_tree(manifest: PipelineManifest, registry: AgentRegistry) -> Tree:
    """The pipeline as a rich tree: one node per step, branches as labelled nodes."""
    from rich.text import Text
    from rich.tree import Tree

    spec = manifest.spec
    total = sum(1 for _ in walk_steps(spec.steps))
    root = Text()
    root.append(f"pipeline {manifest.metadata.name}", style="bold")
    root.append(f": {len(spec.steps)} top-level steps, {total} in all")
    if spec.description:
        root.append(f"\n{spec.description}", style="dim")
    limits = spec.usage_limits.to_data() if spec.usage_limits else {}
    if spec.timeout_seconds is not None:
        limits["timeoutSeconds"] = spec.timeout_seconds
    if limits:
        root.append("\nlimits: " + ", ".join(f"{k}={limits[k]}" for k in sorted(limits)))
    tree = Tree(root)
    _add_steps(tree, spec.steps, registry)
    return tree


def explain_text(manifest: PipelineManifest, registry: AgentRegistry, *, width: int = 200) -> str:
    """:func:`explain_tree` as plain text (no colour), for tests and pipes."""
    from rich.console import Console

    console = Console(width=width, color_system=None, force_terminal=False, highlight=False)
    with console.capture() as capture:
        console.print(explain_tree(manifest, registry))
    return "\n".join(line.rstrip() for line in capture.get().splitlines()) + "\n"


def explain_command(
    file: PipelineFile,
    agents: AgentFiles = None,
    pipeline: PipelineName = None,
) -> None:
    """Print a pipeline as a tree: steps, kinds, agents, loop bounds, branches."""
    docs, manifest, registry = load_pipeline(file, agents, pipeline)

    if sys.stdout.isatty():
        from rich.console import Console

        Console(highlight=False).print(explain_tree(manifest, registry))
    else:
        sys.stdout.write(explain_text(manifest, registry))
    findings = check_pipeline(manifest.spec) + check_agents(manifest.spec, registry.names())
    if findings:
        fail(str(docs.locate(manifest, f.loc, f.message)) for f in findings)


def register(app: typer.Typer) -> None:
    """Add ``explain`` to the ``flujo`` app."""
    app.command("explain")(explain_command)
