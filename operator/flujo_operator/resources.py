"""Agents and Pipelines: validation, agent resolution, and the shared circuit breakers.

The registry in the cluster is the set of valid Agents of a namespace (plus
the ``builtin.*`` presets).  A Pipeline's status says whether it is valid and
whether every agent it names exists; both are re-evaluated whenever an Agent
appears, changes or disappears.  Step pods have no API access, so the
operator owns each agent's circuit breaker: results reported by step pods
feed it, and its state is mirrored into the Agent's status, from which it is
restored after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from flujo.resilience.breaker import BreakerRegistry, BreakerState, MemoryBreakerStateStore
from flujo.security.audit import AuditLog
from flujo.security.policy import check_agent_policy
from flujo.spec.agent import AgentSpec
from flujo.spec.pipeline import PipelineSpec
from pydantic import ValidationError

from flujo_operator.builders import condition, first_error, now_iso
from flujo_operator.kube import Kube
from flujo_operator.runs import RunController

__all__ = ["ResourceController"]

log = logging.getLogger("flujo_operator.resources")


def _same(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Equal but for condition timestamps: then no write is needed."""

    def strip(status: dict[str, Any]) -> dict[str, Any]:
        out = dict(status)
        out["conditions"] = [
            {k: v for k, v in c.items() if k != "lastTransitionTime"}
            for c in status.get("conditions") or []
        ]
        return out

    return strip(old) == strip(new)


class ResourceController:
    def __init__(self, kube: Kube, runs: RunController, audit: AuditLog | None = None) -> None:
        self.kube = kube
        self.runs = runs
        self.audit = audit
        self.store = MemoryBreakerStateStore()
        self.breakers: BreakerRegistry = runs.breakers
        self.breakers.store = self.store
        self.breakers.add_listener(self._circuit_changed)
        self.breakers.add_listener(runs.metrics.circuit_changed)
        self._pending: set[asyncio.Task[None]] = set()
        self._generations: dict[str, Any] = {}
        """uid → the generation last audited (or listed at start)."""

    # --- audit --------------------------------------------------------------------

    def _audit_change(self, kind: str, event: str, body: dict[str, Any]) -> None:
        """Audit a change of the spec: a new generation, not our own status writes.

        Every status patch comes back as a MODIFIED event with the same
        generation; those are not configuration changes.  The initial listing
        (no event type) records generations without writing anything.
        """
        meta = body.get("metadata") or {}
        uid, generation = meta.get("uid", ""), meta.get("generation")
        if event == "DELETED":
            self._generations.pop(uid, None)
        else:
            seen = self._generations.get(uid)
            self._generations[uid] = generation
            if event not in ("ADDED", "MODIFIED") or seen == generation:
                return
        if self.audit is not None:
            self.audit.config_changed_from_body(kind, event, body)

    # --- Agents -------------------------------------------------------------------

    async def on_agent(self, kind: str, body: dict[str, Any]) -> None:
        self._audit_change("Agent", kind, body)
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        key = f"{namespace}/{name}"
        cache = self.runs.agents.setdefault(namespace, {})
        cache.pop(name, None)
        if kind != "DELETED":
            with contextlib.suppress(ValidationError):
                cache[name] = AgentSpec.model_validate(body.get("spec") or {})
            status = body.get("status") or {}
            circuit = status.get("circuit")
            if isinstance(circuit, dict) and key not in self.breakers and circuit.get("state"):
                self.runs.metrics.set_circuit_state(key, circuit["state"])
                self.store.set(
                    key,
                    BreakerState(
                        state=circuit["state"],
                        fail_counter=int(circuit.get("failures", 0)),
                        opened_at=circuit.get("openedAt"),
                    ),
                )
            new = self._agent_status(body)
            if not _same(status, {**status, **new}):
                await self.kube.patch_status("agents", namespace, name, new)
        await self.reevaluate(namespace)

    def _agent_status(self, body: dict[str, Any]) -> dict[str, Any]:
        meta = body["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        state = self.store.get(key)
        circuit = {"state": "closed", "failures": 0}
        if state is not None:
            circuit = {"state": state["state"], "failures": state["fail_counter"]}
            if state["opened_at"]:
                circuit["openedAt"] = state["opened_at"]
        try:
            spec = AgentSpec.model_validate(body.get("spec") or {})
        except ValidationError as exc:
            return {
                "resolved": False,
                "message": first_error(exc),
                "circuit": circuit,
                "observedGeneration": meta.get("generation", 1),
            }
        # Allowed or not, the Agent stays in the registry: the runs that use it are
        # refused with the policy's reason (PolicyDenied), not with "unknown agent".
        denied = check_agent_policy(meta["name"], spec, self.runs.policy(meta["namespace"]))
        return {
            "resolved": True,
            "allowed": not denied,
            "message": ("refused by the security policy: " + "; ".join(denied)) if denied else "",
            "circuit": circuit,
            "observedGeneration": meta.get("generation", 1),
        }

    def _circuit_changed(self, name: str, old: str, new: str) -> None:
        namespace, _, agent = name.partition("/")
        log.info("agent %s: circuit %s -> %s", name, old, new)
        if self.audit is not None:
            state = self.store.get(name)
            self.audit.circuit_transition(
                name, old, new, failures=state["fail_counter"] if state else None
            )
        task = asyncio.get_running_loop().create_task(self._write_circuit(namespace, agent))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _write_circuit(self, namespace: str, agent: str) -> None:
        obj = await self.kube.get("agents", namespace, agent)
        if obj is not None:
            await self.kube.patch_status("agents", namespace, agent, self._agent_status(obj))

    # --- Pipelines ----------------------------------------------------------------

    async def on_pipeline(self, kind: str, body: dict[str, Any]) -> None:
        self._audit_change("Pipeline", kind, body)
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        self.runs.pipelines.pop((namespace, name), None)
        if kind == "DELETED":
            return
        baseline = (body.get("status") or {}).get("usageBaseline")
        if baseline:
            self.runs.restore_baseline(f"{namespace}/{name}", baseline)
        with contextlib.suppress(ValidationError):
            self.runs.pipelines[namespace, name] = PipelineSpec.model_validate(
                body.get("spec") or {}
            )
        agents = await self._agents(namespace)
        await self._evaluate(body, agents)
        await self.runs.retry_pending(namespace)

    async def reevaluate(self, namespace: str) -> None:
        agents = await self._agents(namespace)
        for pipeline in await self.kube.list("pipelines", namespace):
            await self._evaluate(pipeline, agents)
        await self.runs.retry_pending(namespace)

    async def _agents(self, namespace: str) -> dict[str, AgentSpec | None]:
        return await self.runs.read_agents(namespace)

    async def _evaluate(self, body: dict[str, Any], agents: dict[str, AgentSpec | None]) -> None:
        meta = body["metadata"]
        now = now_iso()
        status: dict[str, Any] = {"observedGeneration": meta.get("generation", 1)}
        # Parsing, the checks, the policy and compiling the templates: in a bounded
        # worker process, never on this event loop (flujo_operator.validation_pool).
        # Parsed here first (pydantic, linear in the object's size, which the API server
        # caps), so the verdict is shared with the runs' admission through its cache.
        subject: PipelineSpec | dict[str, Any] = body.get("spec") or {}
        with contextlib.suppress(ValidationError):
            subject = PipelineSpec.model_validate(subject)
        namespace = meta["namespace"]
        verdict = await self.runs.admission.validator.check(
            namespace, subject, agents, self.runs.launch_policy(namespace)
        )
        if verdict.spec_error is not None or verdict.breach is not None:
            message = verdict.breach or verdict.spec_error or ""
            status["conditions"] = [
                condition("Valid", "False", "InvalidSpec", message, now),
                condition("AgentsResolved", "Unknown", "InvalidSpec", "", now),
            ]
            status["missingAgents"] = []
        else:
            problems = verdict.pipeline
            missing = sorted({m.split("'")[1] for m in verdict.agents})
            reason = "InvalidSpec" if problems else "Valid"
            if not problems:
                problems = [m for _, m in verdict.denied]
                reason = "PolicyDenied" if verdict.denied else reason
            status["missingAgents"] = missing
            status["conditions"] = [
                condition(
                    "Valid",
                    "False" if problems else "True",
                    reason,
                    "; ".join(problems),
                    now,
                ),
                condition(
                    "AgentsResolved",
                    "False" if missing else "True",
                    "AgentsMissing" if missing else "Resolved",
                    ("missing agents: " + ", ".join(missing)) if missing else "",
                    now,
                ),
            ]
        old = body.get("status") or {}
        if not _same({k: old.get(k) for k in status}, status):
            await self.kube.patch_status("pipelines", meta["namespace"], meta["name"], status)
