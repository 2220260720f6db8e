"""Whether a PipelineRun may start now: validation, policy, the run cap, and Pending.

Admission decides; it writes nothing to the run.  A run that may not start
gets a :class:`Refusal` — terminal (Failed: its own spec or input is wrong)
or not (Pending: a Pipeline, an Agent, the policy or the cluster's capacity
may still change) — which the controller writes to the run's status.  The
runs left Pending are remembered from their watch events and tried again
when something they wait for changes.

The Agents and Pipelines of each namespace are cached here, kept current by
their watches (:mod:`flujo_operator.resources`); the cache may be cold or
behind, so a run that names an unknown Agent re-reads them from the API.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from flujo.agents.builtin import PRESET_PREFIX, builtin_names
from flujo.domain.validation import check_agents, check_tools
from flujo.security.audit import AuditLog
from flujo.security.policy import SecurityPolicy, check_input
from flujo.spec.agent import AgentSpec
from flujo.spec.limits import UsageLimits
from flujo.spec.pipeline import PipelineSpec
from flujo.spec.run import PipelineRunSpec
from pydantic import ValidationError

from flujo_operator.builders import RunRef, first_error
from flujo_operator.config import Config
from flujo_operator.kube import Kube
from flujo_operator.validation_pool import ValidationPool

__all__ = ["Admission", "Admitted", "Refusal"]


@dataclass(frozen=True)
class Refusal:
    """Why a run does not start (yet): its status says ``reason`` and ``message``."""

    reason: str
    message: str
    terminal: bool
    """Failed for good; otherwise Pending, tried again when something changes."""


@dataclass(frozen=True)
class Admitted:
    """A run that may start: its spec, its pipeline, the agents and limits it runs with."""

    spec: PipelineRunSpec
    pipeline: PipelineSpec
    agents: dict[str, AgentSpec | None]
    limits: UsageLimits | None


class Admission:
    def __init__(self, kube: Kube, config: Config, audit: AuditLog | None = None) -> None:
        self.kube = kube
        self.config = config
        self.audit = audit
        self.agents: dict[str, dict[str, AgentSpec | None]] = {}
        """namespace → valid Agents, kept current by the Agent watch (a cache, not truth)."""
        self.pipelines: dict[tuple[str, str], PipelineSpec] = {}
        """(namespace, name) → valid Pipeline specs, kept current by the Pipeline watch."""
        self.waiting: dict[str, dict[str, dict[str, Any]]] = {}
        """namespace → uid → the latest body of runs that could not start yet (Pending)."""
        self._policies: dict[str, SecurityPolicy] = {}
        self._launch_policies: dict[str, dict[str, Any]] = {}
        self.validator = ValidationPool(workers=0)
        """Where Pipelines are checked: the operator installs its pool of bounded worker
        processes (:mod:`flujo_operator.validation_pool`); in-process by default (tests)."""
        self.queued: dict[str, set[str]] = {}
        """namespace → uids of the waiting runs last refused as Queued (at the run cap)."""
        self._running: dict[str, Callable[[], int]] = {}

    # --- the policy in force ----------------------------------------------------

    def policy(self, namespace: str) -> SecurityPolicy:
        """The security policy of a namespace (the cluster profile, then overrides)."""
        policy = self._policies.get(namespace)
        if policy is None:
            policy = self._policies[namespace] = self.config.policy(namespace)
        return policy

    def launch_policy(self, namespace: str) -> dict[str, Any]:
        """The policy as step pods receive it in their launch document."""
        data = self._launch_policies.get(namespace)
        if data is None:
            data = self.policy(namespace).model_dump(by_alias=True, mode="json")
            self._launch_policies[namespace] = data
        return data

    # --- the checks -------------------------------------------------------------

    async def admit(
        self, ref: RunRef, body: dict[str, Any], running: Callable[[], int]
    ) -> Admitted | Refusal:
        """Check a run in order, stopping at the first refusal.

        ``running`` counts the runs running in the namespace now (read last,
        after the awaits that may let other runs start or finish).
        """
        try:
            spec = PipelineRunSpec.model_validate(body.get("spec") or {})
        except ValidationError as exc:
            return Refusal("InvalidSpec", first_error(exc), terminal=True)
        pipeline = await self._pipeline(ref, spec)
        if isinstance(pipeline, Refusal):
            return pipeline
        agents = self.known_agents(ref.namespace)
        # Names only (no templates): cheap enough for the event loop.
        if check_agents(pipeline, agents) or check_tools(pipeline, agents):
            agents = await self.read_agents(ref.namespace)  # the cache may be cold or behind
        # Everything else about the pipeline is checked in a bounded worker process.
        verdict = await self.validator.check(
            ref.namespace, pipeline, agents, self.launch_policy(ref.namespace)
        )
        problems = verdict.problems + verdict.agents + verdict.tools
        if problems:
            reason = (
                "AgentsMissing"
                if all("unknown agent" in p for p in problems)
                else ("PipelineInvalid")
            )
            return Refusal(reason, "; ".join(problems), terminal=False)
        policy = self.policy(ref.namespace)
        denied = verdict.denied
        if denied:
            # Pending, not Failed: the Pipeline, an Agent or the policy may still change.
            message = "; ".join(m for _, m in denied)
            self._audit_denied("PipelineRun", ref, message, denied[0][0])
            return Refusal("PolicyDenied", message, terminal=False)
        refused = check_input(spec.input, policy)
        if refused:
            message = f"spec.input: {refused[0]}"
            self._audit_denied("PipelineRun", ref, message, "spec.input")
            return Refusal("InputRefused", message, terminal=True)
        count = running()
        self._running[ref.namespace] = running
        queued = self.queued.setdefault(ref.namespace, set())
        queued.discard(ref.uid)
        if count >= self.config.max_running_runs:
            queued.add(ref.uid)
            return Refusal(
                "Queued",
                f"{count} runs are running in {ref.namespace} "
                f"(maxRunningRuns={self.config.max_running_runs})",
                terminal=False,
            )
        limits = spec.usage_limits
        if spec.timeout_seconds is not None:
            limits = (limits or UsageLimits()).model_copy(
                update={"max_seconds": spec.timeout_seconds}
            )
        return Admitted(spec, pipeline, agents, limits)

    async def _pipeline(self, ref: RunRef, spec: PipelineRunSpec) -> PipelineSpec | Refusal:
        if spec.pipeline is not None:
            return spec.pipeline
        assert spec.pipeline_ref is not None
        cached = self.pipelines.get((ref.namespace, spec.pipeline_ref.name))
        if cached is not None:
            return cached
        obj = await self.kube.get("pipelines", ref.namespace, spec.pipeline_ref.name)
        if obj is None:
            return Refusal(
                "PipelineNotFound",
                f"Pipeline {spec.pipeline_ref.name!r} not found in {ref.namespace}",
                terminal=False,
            )
        try:
            return PipelineSpec.model_validate(obj.get("spec") or {})
        except ValidationError as exc:
            return Refusal("PipelineInvalid", first_error(exc), terminal=False)

    def known_agents(self, namespace: str) -> dict[str, AgentSpec | None]:
        """Agents of the namespace as last seen in their watch events, plus the presets."""
        found: dict[str, AgentSpec | None] = {
            PRESET_PREFIX + n: None for n in builtin_names(presets_only=True)
        }
        found.update(self.agents.get(namespace, {}))
        return found

    async def read_agents(self, namespace: str) -> dict[str, AgentSpec | None]:
        """Agents of the namespace read from the API (refreshing the cache)."""
        fresh: dict[str, AgentSpec | None] = {}
        for obj in await self.kube.list("agents", namespace):
            try:
                fresh[obj["metadata"]["name"]] = AgentSpec.model_validate(obj.get("spec") or {})
            except ValidationError:
                continue
        self.agents[namespace] = fresh
        return self.known_agents(namespace)

    def _audit_denied(self, kind: str, ref: RunRef, message: str, where: str) -> None:
        if self.audit is not None:
            self.audit.policy_denied(kind, ref.name, message, field=where, namespace=ref.namespace)

    # --- runs left Pending ------------------------------------------------------

    def wait(self, namespace: str, uid: str, body: dict[str, Any]) -> None:
        """Remember the latest body of a run being admitted, until it starts or ends."""
        self.waiting.setdefault(namespace, {})[uid] = body

    def done_waiting(self, uid: str) -> None:
        """The run started, failed or was deleted: it waits no more."""
        for waiting in self.waiting.values():
            waiting.pop(uid, None)
        for queued in self.queued.values():
            queued.discard(uid)

    def waiting_in(self, namespace: str) -> Iterator[dict[str, Any]]:
        """The runs of a namespace that could not start yet, as last seen, oldest first.

        A run last refused as ``Queued`` is skipped while the namespace is still at its
        run cap (checked lazily, as earlier runs start): it would only be refused again.
        Without this, every finished run in a namespace with 1,000 queued runs re-admitted
        all of them and rewrote each one's status — quadratic work and API writes that
        every other namespace waited behind.
        """
        queued = self.queued.get(namespace, set())
        for uid, body in list(self.waiting.get(namespace, {}).items()):
            running = self._running.get(namespace)
            full = running is not None and running() >= self.config.max_running_runs
            if full and uid in queued:
                continue
            yield body
