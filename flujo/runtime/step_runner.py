"""The step-runner: execute exactly one step launch, as a step pod does.

The operator turns each ``LaunchStep`` into a pod running ``flujo step-run``
with a *launch document* — the command, plus the manifest spec of the agent
it names — projected into the pod from an annotation by the downward API.
The runner calls the agent with the same code the embedded runtime uses
(:mod:`flujo.runtime.calls`) and reports the result event through
:mod:`flujo.runtime.envelope`.

A model agent with tools runs its whole tool loop here, in the pod: the
document also carries the specs of the agents its model may call (``tools``)
and what the run could still spend at launch (``budget``), so a limit crossed
mid-loop stops the loop between rounds as it does embedded.  An ``mcp`` agent
that starts a server ``command`` is refused: stdio servers are for embedded
runs only.

Exit codes: 0 the call succeeded, 3 it failed in a classified way (the
envelope says how), anything else means the runner itself crashed and the
operator falls back on the pod's status.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from pydantic import BaseModel, ConfigDict

from flujo.agents.registry import AgentRegistry
from flujo.domain import errors
from flujo.domain.agent import Budget
from flujo.domain.errors import AgentError
from flujo.engine.commands import LaunchStep
from flujo.engine.events import StepFailed, StepSucceeded
from flujo.runtime.calls import call_agent, failed
from flujo.security.policy import OutputGuard, SecurityPolicy, use_policy
from flujo.spec.agent import AgentManifest, AgentSpec
from flujo.spec.base import ObjectMeta

__all__ = ["EXIT_FAILED_STEP", "LaunchDocument", "execute", "run_document"]

EXIT_FAILED_STEP = 3


class LaunchDocument(BaseModel):
    """What a step pod receives: the launch, the agent it calls, the run it serves."""

    model_config = ConfigDict(extra="forbid")

    run: str
    launch: LaunchStep
    agent: dict[str, Any] | None = None
    """The agent's manifest spec; None for the ``builtin.*`` presets."""
    policy: dict[str, Any] | None = None
    """The security policy of the run's namespace; None: no checks (a local ``step-run``)."""
    tools: dict[str, dict[str, Any]] | None = None
    """Manifest specs of the agents the agent's model may call, by name (tools of tools too)."""
    budget: dict[str, float] | None = None
    """What the run could still spend at launch: ``costUsd`` and/or ``tokens``."""

    def budget_value(self) -> Budget | None:
        if not self.budget:
            return None
        tokens = self.budget.get("tokens")
        return Budget(
            cost_usd=self.budget.get("costUsd"), tokens=None if tokens is None else int(tokens)
        )


async def execute(document: LaunchDocument) -> StepSucceeded | StepFailed:
    """Call the agent once; every failure becomes a classified ``StepFailed``."""
    cmd = document.launch
    registry = AgentRegistry()
    policy = SecurityPolicy.model_validate(document.policy) if document.policy else None
    try:
        with use_policy(policy):
            specs = dict(document.tools or {})
            if document.agent is not None:
                specs[cmd.agent] = document.agent
            try:
                for name, raw in sorted(specs.items()):
                    spec = AgentSpec.model_validate(raw)
                    if spec.command:
                        raise AgentError(
                            errors.CONFIG,
                            f"mcp agent {name!r}: command (a stdio server) runs embedded only; "
                            "give the agent the server's endpoint",
                        )
                    manifest = AgentManifest(metadata=ObjectMeta(name=name), spec=spec)
                    registry.register_manifest(manifest, provenance="cluster")
                agent = registry.get(cmd.agent)
            except (KeyError, AgentError) as exc:
                error = exc if isinstance(exc, AgentError) else AgentError(errors.CONFIG, str(exc))
                return failed(cmd, error)
            if policy is not None:
                agent = OutputGuard(agent, cmd.agent, policy)
            return await call_agent(agent, cmd, run_id=document.run, budget=document.budget_value())
    finally:
        await registry.aclose()


def run_document(text: str) -> StepSucceeded | StepFailed:
    """Parse a launch document and execute it (the ``flujo step-run`` body)."""
    document = LaunchDocument.model_validate(json.loads(text))
    return asyncio.run(execute(document))
