"""Carrying out the machine's commands: step pods created and deleted, within budgets.

``LaunchStep`` creates a step pod unless a bound holds it back — the
namespace's ``maxRunningPods``, the Agent's ``rateLimit.maxConcurrent``
across the namespace's runs, or an open circuit breaker (which fails the
launch at once instead).  Launches held back wait, first in first out per
agent (one agent's queue never holds back another's), and start when a step
pod finishes.  ``CancelStep`` deletes pods, concurrently;
``FinishRun`` stamps the run's end.

Step pods cannot reach the API, so the operator owns each Agent's circuit:
the outcomes they report feed the shared :class:`~flujo.resilience.breaker.BreakerRegistry`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from flujo.domain import errors
from flujo.domain.validation import tool_closure
from flujo.engine import CancelStep, Command, Event, FinishRun, LaunchStep, StepFailed
from flujo.resilience.breaker import BreakerRegistry
from flujo.runtime.calls import budget_of
from flujo.spec.agent import AgentSpec

from flujo_operator.builders import build_step_pod, pod_name
from flujo_operator.config import Config
from flujo_operator.kube import Kube
from flujo_operator.run_journal import event_entry
from flujo_operator.run_runner import Runners
from flujo_operator.run_session import Session

__all__ = ["Launcher"]


class Launcher:
    def __init__(
        self,
        kube: Kube,
        config: Config,
        breakers: BreakerRegistry,
        launch_policy: Callable[[str], dict[str, Any]],
        clock: Callable[[], str],
    ) -> None:
        self.kube = kube
        self.config = config
        self.breakers = breakers
        self.launch_policy = launch_policy
        self.clock = clock
        self.running_pods: dict[str, set[str]] = {}
        """namespace → names of step pods created and not yet finished."""
        self.agent_pods: dict[tuple[str, str], set[str]] = {}
        """(namespace, agent) → its step pods running now (``rateLimit.maxConcurrent``)."""
        self.pod_agents: dict[tuple[str, str], str] = {}
        self.runners: Runners | None = None
        """The runner executor: runs it serves get their launches over HTTP, not as pods."""

    async def execute(
        self, session: Session, commands: list[Command]
    ) -> list[tuple[Event, dict[str, Any]]]:
        """Carry out commands; return events they produce at once (an open circuit)."""
        follow: list[tuple[Event, dict[str, Any]]] = []
        deletes: list[str] = []
        for command in commands:
            if isinstance(command, LaunchStep):
                if deletes:  # cancels come first: free their capacity before launching
                    await self._delete_pods(session, deletes)
                    deletes = []
                refused = self._circuit_refusal(session, command)
                if refused is not None:
                    follow.append((refused, event_entry(refused)))
                elif self._behind(session, command) or not await self.launch(session, command):
                    # FIFO per agent: a launch waits behind the run's earlier held-back
                    # launches of the same agent only, so one agent's rateLimit queue
                    # does not hold back another agent's steps.
                    session.waiting.append(command)
            elif isinstance(command, CancelStep):
                session.waiting = [w for w in session.waiting if w.path != command.path]
                attempt = session.state.steps[command.path].attempt
                name = pod_name(session.ref.name, command.path, attempt)
                session.deleting.add(name)
                self.pod_done(session.ref.namespace, name)
                if self.runners is not None and self.runners.serves(session):
                    self.runners.cancel(session, command.path, attempt)
                else:
                    deletes.append(name)
            elif isinstance(command, FinishRun):
                session.waiting.clear()
                session.finished_at = self.clock()
        if deletes:
            await self._delete_pods(session, deletes)
        return follow

    async def _delete_pods(self, session: Session, names: list[str]) -> None:
        """Concurrently: a breach cancelling 30 branches must not wait 30 round trips
        for the last one (cancel latency is what bounds the overspend of a breach)."""
        await asyncio.gather(*(self.kube.delete_pod(session.ref.namespace, n) for n in names))

    async def launch(self, session: Session, cmd: LaunchStep) -> bool:
        """Create the step pod; False when the namespace or the agent is at its pod cap."""
        namespace = session.ref.namespace
        pods = self.running_pods.setdefault(namespace, set())
        name = pod_name(session.ref.name, cmd.path, cmd.attempt)
        if name not in pods and len(pods) >= self.config.max_running_pods:
            return False
        spec = session.agents.get(cmd.agent)
        limit = spec.rate_limit.max_concurrent if spec and spec.rate_limit else None
        agent_pods = self.agent_pods.setdefault((namespace, cmd.agent), set())
        if limit is not None and name not in agent_pods and len(agent_pods) >= limit:
            return False  # the Agent's rateLimit.maxConcurrent, across the namespace's runs
        if self.runners is not None and self.runners.serves(session):
            pods.add(name)  # in runner mode the caps count launches in flight
            agent_pods.add(name)
            self.pod_agents[namespace, name] = cmd.agent
            self.runners.submit(session, cmd, spec, self.launch_policy(namespace))
            return True
        pod, config_map = build_step_pod(
            session.ref,
            cmd,
            spec,
            self.config,
            policy=self.launch_policy(namespace),
            tools=self._tools(session, cmd.agent),
            budget=self._budget(session) if spec is not None and spec.tools else None,
        )
        if config_map is not None:
            await self.kube.create_config_map(config_map)
        pods.add(name)
        agent_pods.add(name)
        self.pod_agents[namespace, name] = cmd.agent
        await self.kube.create_pod(pod)
        return True

    @staticmethod
    def _tools(session: Session, agent: str) -> dict[str, AgentSpec]:
        """The agents a model step's tool loop may call (tools of tools too), by name."""
        names = tool_closure([agent], session.agents)
        return {n: spec for n in names if (spec := session.agents.get(n)) is not None}

    @staticmethod
    def _budget(session: Session) -> dict[str, float] | None:
        """What the run may still spend now: the pod's tool loop stops when it is crossed."""
        budget = budget_of(session.state.limits, session.state.usage)
        if budget is None:
            return None
        found = {"costUsd": budget.cost_usd, "tokens": budget.tokens}
        return {k: float(v) for k, v in found.items() if v is not None}

    async def launch_waiting(self, session: Session) -> None:
        """Try the run's held-back launches again, in order; those still held keep waiting."""
        pending, session.waiting = session.waiting, []
        held: set[str] = set()
        for cmd in pending:
            if cmd.agent in held or not await self.launch(session, cmd):
                held.add(cmd.agent)  # its later launches stay behind it
                session.waiting.append(cmd)

    @staticmethod
    def _behind(session: Session, cmd: LaunchStep) -> bool:
        """Whether an earlier launch of the same agent is still held back in this run."""
        return any(w.agent == cmd.agent for w in session.waiting)

    def pod_done(self, namespace: str, name: str) -> None:
        """A step pod finished or is going: it no longer counts against the caps."""
        self.running_pods.get(namespace, set()).discard(name)
        agent = self.pod_agents.pop((namespace, name), None)
        if agent is not None:
            self.agent_pods.get((namespace, agent), set()).discard(name)

    # --- circuit breakers -------------------------------------------------------

    def _circuit_refusal(self, session: Session, cmd: LaunchStep) -> StepFailed | None:
        if session.agents.get(cmd.agent) is None:
            return None
        breaker = self.breakers.get(f"{session.ref.namespace}/{cmd.agent}")
        try:
            breaker.admit()
        except Exception as exc:
            return StepFailed(
                path=cmd.path,
                attempt=cmd.attempt,
                error_class=errors.CIRCUIT_OPEN,
                message=str(exc),
            )
        return None

    @staticmethod
    def agent_of(session: Session, event: Event) -> str | None:
        """The declared agent whose call this result reports (presets have no breaker)."""
        path = getattr(event, "path", None)
        step = session.state.steps.get(path) if path else None
        if step is None or not step.agent or session.agents.get(step.agent) is None:
            return None
        return step.agent

    def feed_breaker(self, session: Session, agent: str, event: Event) -> None:
        """Step pods cannot reach the API: their reported outcomes feed the shared breaker."""
        if isinstance(event, StepFailed) and event.error_class == errors.CIRCUIT_OPEN:
            return
        breaker = self.breakers.get(f"{session.ref.namespace}/{agent}")
        breaker.record(event.error_class if isinstance(event, StepFailed) else None)
