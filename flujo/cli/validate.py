"""Loading and checking pipeline files, and ``flujo validate``, which does only that.

:func:`load_checked` is what ``flujo run`` and ``flujo validate`` do before
anything else: read the files, pick the pipeline, register the files' agents
and check the pipeline (schema, names, templates, agent references, the
security policy); any problem is printed as one line (with ``detail``, as
:func:`~flujo.cli.problems.describe_problem` shows it) and exits 2.
:func:`load_pipeline` stops before the checks, for ``flujo explain``, which
shows a pipeline even when it would not pass them.  The three typed
parameters name the files alike in every command that reads a pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from flujo.agents.registry import AgentRegistry
from flujo.cli.conventions import fail
from flujo.cli.problems import describe_problem
from flujo.domain.validation import check_agents, check_pipeline
from flujo.security.policy import (
    PolicyError,
    SecurityPolicy,
    check_pipeline_policy,
    policy_from_env,
)
from flujo.spec.loader import Documents, Problem, load_files
from flujo.spec.pipeline import PipelineManifest

__all__ = [
    "AgentFiles",
    "PipelineFile",
    "PipelineName",
    "load_checked",
    "load_pipeline",
    "policy",
    "register",
    "validate",
]

PipelineFile = Annotated[Path, typer.Argument(help="Pipeline YAML (may also hold Agents).")]
AgentFiles = Annotated[
    list[Path] | None, typer.Option("--agents", "-a", help="More files with Agents.")
]
PipelineName = Annotated[str | None, typer.Option(help="Pipeline name, if several.")]


def policy() -> SecurityPolicy:
    """The security policy of the environment; a bad setting exits 2."""
    try:
        return policy_from_env().policy()
    except PolicyError as exc:
        fail([str(exc)])


def _shown(problem: Problem, detail: bool) -> str:
    return describe_problem(problem) if detail else str(problem)


def _registry_of(docs: Documents, file: Path) -> AgentRegistry:
    registry = AgentRegistry()
    for agent in docs.agents:
        source, _ = docs.locators.get(id(agent), (str(file), None))
        registry.register_manifest(agent, source=source)
    return registry


def load_checked(
    file: Path, agents: Sequence[Path] | None, pipeline: str | None, *, detail: bool = False
) -> tuple[Documents, PipelineManifest, AgentRegistry]:
    """The documents, the chosen pipeline and a registry of the files' agents, all
    checked; exits 2 with every problem found."""
    security = policy()
    docs = load_files([file, *(agents or [])])
    if docs.problems:
        fail([_shown(p, detail) for p in docs.problems])
    candidates = docs.pipelines
    if pipeline is not None:
        candidates = [p for p in candidates if p.metadata.name == pipeline]
    if not candidates:
        names = ", ".join(p.metadata.name for p in docs.pipelines) or "none"
        what = f"no Pipeline named {pipeline!r}" if pipeline else "no Pipeline document"
        fail([f"{file}: {what} (pipelines found: {names})"])
    if len(candidates) > 1:
        names = ", ".join(p.metadata.name for p in candidates)
        fail([f"{file}: several pipelines ({names}); choose one with --pipeline NAME"])
    manifest = candidates[0]
    registry = _registry_of(docs, file)
    findings = check_pipeline(manifest.spec) + check_agents(manifest.spec, registry.names())
    findings += check_pipeline_policy(
        manifest.spec, {e.name: e.spec for e in registry.list()}, security
    )
    if findings:
        fail([_shown(docs.locate(manifest, f.loc, f.message), detail) for f in findings])
    return docs, manifest, registry


def load_pipeline(
    file: Path, agents: Sequence[Path] | None, pipeline: str | None
) -> tuple[Documents, PipelineManifest, AgentRegistry]:
    """As :func:`load_checked`, without checking the pipeline (only the files' syntax)."""
    docs = load_files([file, *(agents or [])])
    if docs.problems:
        fail(str(p) for p in docs.problems)
    candidates = [p for p in docs.pipelines if pipeline is None or p.metadata.name == pipeline]
    if len(candidates) != 1:
        names = ", ".join(p.metadata.name for p in docs.pipelines) or "none"
        if not candidates:
            what = f"no Pipeline named {pipeline!r}" if pipeline else "no Pipeline document"
        else:
            what = "several pipelines; choose one with --pipeline NAME"
        fail([f"{file}: {what} (pipelines found: {names})"])
    return docs, candidates[0], _registry_of(docs, file)


def validate(
    file: PipelineFile,
    agents: AgentFiles = None,
    pipeline: PipelineName = None,
) -> None:
    """Check a pipeline file: schema, names, templates, agent references."""
    docs = load_files([file, *(agents or [])])
    if not docs.problems and not docs.pipelines and docs.runs:
        names = ", ".join(r.metadata.name for r in docs.runs)
        typer.echo(f"ok: {file}: PipelineRun {names}")
        return
    _, manifest, _registry = load_checked(file, agents, pipeline, detail=True)
    steps = sum(1 for _ in _iter_steps(manifest))
    typer.echo(f"ok: {file}: pipeline {manifest.metadata.name!r}, {steps} steps")


def _iter_steps(manifest: PipelineManifest) -> Any:
    from flujo.domain.validation import walk_steps

    return walk_steps(manifest.spec.steps)


def register(app: typer.Typer) -> None:
    """Add ``validate`` to the ``flujo`` app."""
    app.command()(validate)
