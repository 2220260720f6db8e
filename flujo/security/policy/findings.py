"""What a policy refuses in an Agent manifest or a Pipeline, located like validation findings.

:func:`agent_policy_findings` and :func:`check_agent_policy` for one agent
(type, endpoint, retries, credential files); :func:`check_pipeline_policy`
for a pipeline (loop, parallel and map bounds, retries, templates over the
template limits or reading private attributes, and each agent it references).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from flujo.domain.templates import (
    Tally,
    TemplateProblem,
    active_limits,
    private_attributes,
    use_limits,
)
from flujo.domain.validation import (
    Finding,
    Loc,
    agent_references,
    template_findings,
    tool_closure,
    walk_steps,
)
from flujo.security.policy.endpoints import endpoint_problems
from flujo.security.policy.model import SecurityPolicy
from flujo.spec.agent import AgentSpec, CredentialSpec
from flujo.spec.loader import format_loc
from flujo.spec.pipeline import PipelineSpec, StepSpec

__all__ = [
    "agent_policy_findings",
    "check_agent_policy",
    "check_pipeline_policy",
    "credential_file_problems",
]

# --- agents -------------------------------------------------------------------


def _dirs_problem(path: str, policy: SecurityPolicy) -> str | None:
    if not policy.allow_credential_files:
        return "credential files are not allowed by the security policy (use env or secretKeyRef)"
    if not policy.credential_dirs:
        return None
    real = Path(os.path.realpath(path))
    for directory in policy.credential_dirs:
        root = Path(os.path.realpath(directory))
        if real == root or root in real.parents:
            return None
    return f"{path!r} is outside the policy's credentialDirs ({', '.join(policy.credential_dirs)})"


def _credentials(spec: AgentSpec) -> Iterator[tuple[Loc, CredentialSpec]]:
    if spec.api_key is not None:
        yield ("spec", "apiKey"), spec.api_key
    for i, header in enumerate(spec.secret_headers):
        yield ("spec", "secretHeaders", i, "valueFrom"), header.value_from


def credential_file_problems(spec: AgentSpec, policy: SecurityPolicy) -> list[tuple[Loc, str]]:
    """Credential files of ``spec`` the policy refuses (symlinks resolved now)."""
    out = []
    for loc, cred in _credentials(spec):
        if cred.file:
            problem = _dirs_problem(cred.file, policy)
            if problem is not None:
                out.append(((*loc, "file"), problem))
    return out


def agent_policy_findings(
    spec: AgentSpec, policy: SecurityPolicy, *, resolve: bool = False
) -> list[Finding]:
    """Problems of one Agent manifest, located in it (``spec.endpoint``)."""
    found: list[Finding] = []
    if spec.type not in policy.allowed_agent_types:
        allowed = ", ".join(policy.allowed_agent_types) or "none"
        found.append(
            Finding(
                ("spec", "type"),
                f"agent type {spec.type!r} is not allowed by the security policy "
                f"(allowed: {allowed})",
            )
        )
    if spec.type == "mcp" and spec.command and not policy.allow_python_callables:
        # A stdio server is a process started on the host: code, like a Python callable.
        found.append(
            Finding(
                ("spec", "command"),
                "a stdio MCP server (command) runs embedded only; give the agent its endpoint",
            )
        )
    if spec.type in ("openai", "http", "mcp") and spec.endpoint and "${" not in spec.endpoint:
        problems = endpoint_problems(spec.endpoint, policy, resolve=resolve)
        if problems:
            found.append(Finding(("spec", "endpoint"), "; ".join(problems)))
    if spec.retry is not None and spec.retry.max_attempts > policy.max_attempts:
        found.append(
            Finding(
                ("spec", "retry", "maxAttempts"),
                f"{spec.retry.max_attempts} exceeds the security policy's maxAttempts "
                f"({policy.max_attempts})",
            )
        )
    found += [Finding(loc, msg) for loc, msg in credential_file_problems(spec, policy)]
    return found


def check_agent_policy(name: str, spec: AgentSpec, policy: SecurityPolicy) -> list[str]:
    """One-line problems of agent ``name``, each starting with its field path."""
    return [f"{format_loc(f.loc)}: {f.message}" for f in agent_policy_findings(spec, policy)]


# --- pipelines ----------------------------------------------------------------


def _step_templates(step: StepSpec, loc: Loc) -> Iterator[tuple[Any, bool, Loc]]:
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


def _over(value: int, cap: int, field: str) -> str:
    return f"{value} exceeds the security policy's {field} ({cap})"


def check_pipeline_policy(
    spec: PipelineSpec,
    agents: Mapping[str, AgentSpec | None],
    policy: SecurityPolicy,
) -> list[Finding]:
    """Everything in a pipeline the policy refuses, located like validation findings.

    ``agents`` maps the names the registry knows to their manifests; ``None``
    is a built-in preset (``builtin.*``) or an agent registered from Python
    code.  Names missing from ``agents`` are left to ``check_agents``.
    Each agent's own problems are reported once, at its first reference; the
    agents a step's model may call as tools are checked at that step too.
    """
    found: list[Finding] = []
    # check_pipeline measured the templates against the limits in force here and
    # skipped those over them; this policy's limits may be wider or narrower.
    skipped_by_validation = Tally(active_limits())
    limits = policy.template_limits()
    tally = Tally(limits)
    step_names = {step.name for step, _, _ in walk_steps(spec.steps)}
    for step, loc, _ in walk_steps(spec.steps):
        if step.loop is not None and step.loop.max_iterations > policy.max_loop_iterations:
            found.append(
                Finding(
                    (*loc, "loop", "maxIterations"),
                    _over(
                        step.loop.max_iterations, policy.max_loop_iterations, "maxLoopIterations"
                    ),
                )
            )
        if step.parallel is not None and len(step.parallel.branches) > policy.max_parallel_branches:
            found.append(
                Finding(
                    (*loc, "parallel", "branches"),
                    f"{len(step.parallel.branches)} branches exceed the security policy's "
                    f"maxParallelBranches ({policy.max_parallel_branches})",
                )
            )
        if step.map is not None and step.map.max_items > policy.max_map_items:
            found.append(
                Finding(
                    (*loc, "map", "maxItems"),
                    _over(step.map.max_items, policy.max_map_items, "maxMapItems"),
                )
            )
        if step.retry is not None and step.retry.max_attempts > policy.max_attempts:
            found.append(
                Finding(
                    (*loc, "retry", "maxAttempts"),
                    _over(step.retry.max_attempts, policy.max_attempts, "maxAttempts"),
                )
            )
        for source, expression, at in _step_templates(step, loc):
            unchecked = skipped_by_validation.add(source, expression)[1]
            problem, skip = tally.add(source, expression)
            if problem is not None:
                found.append(Finding(at, problem))
            if skip:
                continue
            with use_limits(limits):
                if unchecked:  # within this policy's limits: check it as check_pipeline would
                    found += template_findings(source, expression, at, step_names)
                try:
                    private = private_attributes(source, expression)
                except TemplateProblem:
                    continue  # reported by check_pipeline
            if private:
                names = ", ".join(repr(a) for a in sorted(private))
                plural = "s" if len(private) > 1 else ""
                found.append(
                    Finding(at, f"template reads private attribute{plural} {names}; refused")
                )
    seen: set[str] = set()
    references = [
        (used, loc)
        for name, loc in agent_references(spec)
        for used in (name, *tool_closure([name], agents))
    ]
    for name, loc in references:
        if name in seen or name not in agents:
            continue
        seen.add(name)
        agent = agents[name]
        if agent is None:
            kind = "builtin" if name.startswith("builtin.") else "python"
            if kind == "builtin" and "builtin" not in policy.allowed_agent_types:
                found.append(Finding(loc, f"agent {name!r}: builtin agents are not allowed"))
            elif kind == "python" and not policy.allow_python_callables:
                found.append(
                    Finding(
                        loc,
                        f"agent {name!r} is Python code; the security policy sets "
                        "allowPythonCallables: false",
                    )
                )
            continue
        for problem in check_agent_policy(name, agent, policy):
            found.append(Finding(loc, f"agent {name!r}: {problem}"))
    return found
