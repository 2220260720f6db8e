"""The operator's executor: drives a PipelineRun's state machine with pods.

Each run has a session (:mod:`flujo_operator.run_session`): its
:class:`~flujo.engine.RunState`, kept in memory, and its *journal* — the
ordered references of the events applied so far
(:mod:`flujo_operator.run_journal`).  The journal is persisted, compressed,
in the run's status.  After an operator restart the session is rebuilt by
replaying the journal through :func:`flujo.engine.advance` — the step pods
are the result store, owned by the run — so a step whose success was recorded
is never launched again, and pod names being deterministic, re-creating a
pod that exists is a harmless 409.

This module ties one reconcile together, under the run's lock: a new run is
admitted or refused (:mod:`~flujo_operator.run_admission`); per event, the
controller applies it, has the commands carried out — pods created and
deleted within their budgets (:mod:`~flujo_operator.run_launcher`) — and
then writes the status once (:mod:`~flujo_operator.run_status`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from flujo.engine import (
    ApprovalAnswered,
    ApprovalTimedOut,
    AwaitApproval,
    Command,
    DeadlineReached,
    Event,
    LaunchStep,
    RunStarted,
    advance,
    new_run,
)
from flujo.hooks import record_advance
from flujo.observability.anomaly import AnomalyDetector, Verdict
from flujo.observability.metrics import FlujoMetrics, MetricsObserver
from flujo.observability.tracing import configure_tracing, record_run_span
from flujo.resilience.breaker import BreakerRegistry
from flujo.security.audit import AuditLog, AuditObserver
from flujo.security.policy import SecurityPolicy
from flujo.spec.agent import AgentSpec, cost_caps
from flujo.spec.pipeline import PipelineSpec
from flujo.spec.run import PipelineRunSpec

from flujo_operator.builders import (
    ANNOTATION_PATH,
    LABEL_ATTEMPT,
    LABEL_RUN,
    RunRef,
    build_anomaly_event,
    decode_journal,
    describe_anomalies,
    now_iso,
    pod_name,
)
from flujo_operator.config import Config
from flujo_operator.kube import Kube
from flujo_operator.run_admission import Admission, Refusal
from flujo_operator.run_approvals import (
    answers_of,
    approval_event,
    note_wait,
    now_utc,
    seconds_left,
)
from flujo_operator.run_journal import event_entry as journal_entry_of
from flujo_operator.run_journal import journal_event, pod_event, run_events
from flujo_operator.run_launcher import Launcher
from flujo_operator.run_runner import Key, Runners, is_runner_pod
from flujo_operator.run_session import TERMINAL, Session, spec_ref_pipeline
from flujo_operator.run_status import BASELINE_EVERY, Baselines, refusal_status, run_status

__all__ = [
    "BASELINE_EVERY",
    "TERMINAL",
    "RunController",
    "Session",
    "journal_event",
    "run_events",
    "spec_ref_pipeline",
]

log = logging.getLogger("flujo_operator.runs")


class RunController:
    def __init__(
        self,
        kube: Kube,
        config: Config,
        breakers: BreakerRegistry | None = None,
        clock: Callable[[], str] = now_iso,
        metrics: FlujoMetrics | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        self.kube = kube
        self.audit = audit
        self.auditor = AuditObserver(audit) if audit is not None else None
        self.config = config
        self.breakers = breakers or BreakerRegistry(
            fail_max=config.breaker_fail_max, reset_timeout=config.breaker_reset_seconds
        )
        self.clock = clock
        self.metrics = metrics or FlujoMetrics()
        self.tracer = configure_tracing(service_name="flujo-operator", env=config.otel)
        self.anomaly = AnomalyDetector()
        self.observer = MetricsObserver(self.metrics, anomaly=self.anomaly)
        self.baselines = Baselines(kube, self.anomaly)
        self.admission = Admission(kube, config, audit=audit)
        self.launcher = Launcher(kube, config, self.breakers, self.launch_policy, clock)
        self.runners = Runners(kube, config, self._on_runner_result)
        self.launcher.runners = self.runners
        self.sessions: dict[str, Session] = {}
        self.finished: set[str] = set()
        self.locks: dict[str, asyncio.Lock] = {}

    # --- what the Agent and Pipeline watches read and keep current --------------

    @property
    def agents(self) -> dict[str, dict[str, AgentSpec | None]]:
        """namespace → valid Agents, kept current by the Agent watch (a cache, not truth)."""
        return self.admission.agents

    @property
    def pipelines(self) -> dict[tuple[str, str], PipelineSpec]:
        """(namespace, name) → valid Pipeline specs, kept current by the Pipeline watch."""
        return self.admission.pipelines

    def policy(self, namespace: str) -> SecurityPolicy:
        """The security policy of a namespace (the cluster profile, then overrides)."""
        return self.admission.policy(namespace)

    def launch_policy(self, namespace: str) -> dict[str, Any]:
        """The policy as step pods receive it in their launch document."""
        return self.admission.launch_policy(namespace)

    def known_agents(self, namespace: str) -> dict[str, AgentSpec | None]:
        """Agents of the namespace as last seen in their watch events, plus the presets."""
        return self.admission.known_agents(namespace)

    async def read_agents(self, namespace: str) -> dict[str, AgentSpec | None]:
        """Agents of the namespace read from the API (refreshing the cache)."""
        return await self.admission.read_agents(namespace)

    def restore_baseline(self, pipeline: str, data: Any) -> None:
        """Seed the detector from a Pipeline status (after a restart)."""
        self.baselines.restore(pipeline, data)

    def _lock(self, uid: str) -> asyncio.Lock:
        return self.locks.setdefault(uid, asyncio.Lock())

    # --- PipelineRun events ---------------------------------------------------

    async def on_run(self, kind: str, body: dict[str, Any]) -> None:
        meta = body.get("metadata") or {}
        uid = meta.get("uid", "")
        if kind == "DELETED":
            self._forget(uid)
            return
        if uid in self.sessions:
            if (body.get("spec") or {}).get("approvals"):
                await self.on_answers(uid, body)
            return
        if uid in self.finished:
            return
        async with self._lock(uid):
            if uid in self.sessions or uid in self.finished:
                return
            self.admission.wait(meta.get("namespace", ""), uid, body)
            try:
                await self._open(body)
            finally:
                if uid in self.sessions or uid in self.finished:
                    self.admission.done_waiting(uid)

    def _forget(self, uid: str) -> None:
        session = self.sessions.pop(uid, None)
        if session is not None:
            if self.runners.serves(session):
                asyncio.get_running_loop().create_task(self.runners.close(session))
            if session.deadline is not None:
                session.deadline.cancel()
            for path, attempt in session.state.running.items():
                name = pod_name(session.ref.name, path, attempt)
                self.launcher.pod_done(session.ref.namespace, name)
        self.finished.discard(uid)
        self.locks.pop(uid, None)
        self.admission.done_waiting(uid)

    async def _open(self, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        ref = RunRef(meta["name"], meta["namespace"], meta["uid"])
        status = body.get("status") or {}
        if status.get("phase") in TERMINAL:
            self.finished.add(ref.uid)
            return
        admitted = await self.admission.admit(
            ref,
            body,
            running=lambda: sum(
                1 for s in self.sessions.values() if s.ref.namespace == ref.namespace
            ),
        )
        if isinstance(admitted, Refusal):
            await self._refuse(ref, admitted)
            return
        spec, agents = admitted.spec, admitted.agents
        state = new_run(admitted.pipeline, admitted.limits, cost_caps(agents))
        session = Session(ref=ref, state=state, agents=agents)
        session.listed = set((status.get("steps") or {}).keys())
        if spec.pipeline_ref is not None:
            session.pipeline = f"{ref.namespace}/{spec.pipeline_ref.name}"
        session.started_at = status.get("startedAt") or self.clock()
        session.waits = {p: dict(w) for p, w in (status.get("awaitingApproval") or {}).items() if w}
        self.sessions[ref.uid] = session
        if Runners.executor(spec.executor, status, self.config.executor) == "runner":
            await self.runners.open(session, status)
        journal = decode_journal(status.get("journal"))
        if journal:
            await self._replay(session, spec, journal)
        else:
            await self._apply(
                session, [(RunStarted(input=spec.input, seed=spec.seed), {"t": "start"})]
            )
        self._arm_deadline(session)
        if self.sessions.get(ref.uid) is session and spec.approvals:
            await self._answers(session, body)  # given while no operator watched

    async def _refuse(self, ref: RunRef, refusal: Refusal) -> None:
        """The run does not start (yet): say why in its status."""
        if refusal.terminal:
            self.finished.add(ref.uid)
        await self.kube.patch_status(
            "pipelineruns",
            ref.namespace,
            ref.name,
            refusal_status(refusal.reason, refusal.message, refusal.terminal, self.clock()),
        )

    async def retry_pending(self, namespace: str) -> None:
        """Agents or Pipelines changed, or a run finished: try runs waiting in Pending.

        The waiting runs are known from their watch events (kopf lists every run
        at start), so this reads nothing from the API: re-listing a namespace's
        runs on every finished run cost a LIST of every run, status and all.
        """
        for body in self.admission.waiting_in(namespace):
            await self.on_run("MODIFIED", body)

    # --- replay after a restart -----------------------------------------------

    async def _replay(
        self, session: Session, spec: PipelineRunSpec, journal: list[dict[str, Any]]
    ) -> None:
        state = session.state
        launches: dict[str, LaunchStep] = {}
        for entry in journal:
            event = await journal_event(self.kube, session.ref, spec, entry)
            if event is None:
                log.warning("run %s: journal entry %s cannot be replayed", session.ref.name, entry)
                continue
            state, commands = advance(state, event)
            for command in commands:
                if isinstance(command, LaunchStep):
                    launches[command.path] = command
                elif isinstance(command, AwaitApproval):
                    note_wait(session, command, self.clock())
            if entry.get("t") in ("pod", "ev", "cm"):
                session.seen.add((entry["p"], entry["a"]))
        session.state = state
        session.journal = journal
        # Launches in flight: their pods may be missing (a crash between advance and
        # create); creating one that exists is a 409, never a second call.
        in_flight: list[Command] = [launches[p] for p in sorted(state.running) if p in launches]
        await self.launcher.execute(session, in_flight)
        await self._persist(session)

    # --- pod events -------------------------------------------------------------

    async def on_pod(self, kind: str, pod: dict[str, Any]) -> None:
        if is_runner_pod(pod):
            await self._on_runner_pod(kind, pod)
            return
        meta = pod.get("metadata") or {}
        owners = [o for o in meta.get("ownerReferences") or [] if o.get("kind") == "PipelineRun"]
        path = (meta.get("annotations") or {}).get(ANNOTATION_PATH)
        if not owners or path is None:
            return
        attempt = int((meta.get("labels") or {}).get(LABEL_ATTEMPT, "0"))
        uid = owners[0]["uid"]
        session = self.sessions.get(uid)
        if session is None:
            if uid in self.finished:
                return
            run = await self.kube.get("pipelineruns", meta["namespace"], owners[0]["name"])
            if run is None:
                return
            await self.on_run("MODIFIED", run)
            session = self.sessions.get(uid)
            if session is None:
                return
        async with self._lock(uid):
            if self.sessions.get(uid) is not session or (path, attempt) in session.seen:
                return
            found = await pod_event(self.kube, session, kind, pod, path, attempt)
            if found is None:
                return
            session.seen.add((path, attempt))
            self.launcher.pod_done(session.ref.namespace, meta["name"])
            await self._apply(session, [found])
        # Outside the lock: draining takes each waiting run's own lock.
        await self._drain_waiting(session.ref.namespace)

    # --- the runner executor ------------------------------------------------------------

    async def _on_runner_pod(self, kind: str, pod: dict[str, Any]) -> None:
        """A runner pod came up (its address) or was lost (its launches fail as transient)."""
        meta = pod.get("metadata") or {}
        owners = [o for o in meta.get("ownerReferences") or [] if o.get("kind") == "PipelineRun"]
        if not owners:
            return
        uid = owners[0]["uid"]
        if uid not in self.sessions and uid not in self.finished:  # after a restart
            run = await self.kube.get("pipelineruns", meta["namespace"], owners[0]["name"])
            if run is not None:
                await self.on_run("MODIFIED", run)
        session = self.sessions.get(uid)
        if session is None:
            if uid in self.finished and kind != "DELETED":
                await self.runners.stop_orphan(pod)  # its run ended while we were down
            return
        async with self._lock(session.ref.uid):
            if self.sessions.get(session.ref.uid) is not session:
                return
            failures = self.runners.observe(session, kind, pod)
            for failure in failures:
                session.seen.add((failure.path, failure.attempt))
                self.launcher.pod_done(
                    session.ref.namespace, pod_name(session.ref.name, failure.path, failure.attempt)
                )
            if failures:
                # The runner was lost, not the agent: these failures leave its breaker alone.
                entries: list[tuple[Event, dict[str, Any]]] = [
                    (f, journal_entry_of(f)) for f in failures
                ]
                await self._apply(session, entries, agent_outcomes=False)
        if failures:
            await self._drain_waiting(session.ref.namespace)

    async def _on_runner_result(
        self, session: Session, key: Key, event: Event, entry: dict[str, Any]
    ) -> None:
        """A launch's result, as the run's runner answered it."""
        async with self._lock(session.ref.uid):
            if self.sessions.get(session.ref.uid) is not session or key in session.seen:
                return
            session.seen.add(key)
            self.launcher.pod_done(session.ref.namespace, pod_name(session.ref.name, *key))
            await self._apply(session, [(event, entry)])
            self.runners.journaled(session, key)
        await self._drain_waiting(session.ref.namespace)

    async def _drain_waiting(self, namespace: str) -> None:
        for session in list(self.sessions.values()):
            if session.ref.namespace != namespace or not session.waiting:
                continue
            async with self._lock(session.ref.uid):
                await self.launcher.launch_waiting(session)

    # --- applying events, then writing the status once ---------------------------

    async def _apply(
        self,
        session: Session,
        events: list[tuple[Event, dict[str, Any]]],
        *,
        agent_outcomes: bool = True,
    ) -> None:
        """Advance the run by each event (journaling what it accepted), then persist once.

        ``agent_outcomes``: the events report what agents did, so they feed the agents'
        circuit breakers; false for failures of the infrastructure (a runner pod lost).
        """
        queue = [(event, entry, agent_outcomes) for event, entry in events]
        while queue:
            event, entry, outcome = queue.pop(0)
            ignored = session.state.ignored_events
            agent = self.launcher.agent_of(session, event)  # before advance switches to a fallback
            started = time.perf_counter()
            session.state, commands = advance(session.state, event)
            record_advance(event, time.perf_counter() - started)
            self.observer.observe_run(
                event, session.state, commands, pipeline=session.pipeline, key=session.ref.uid
            )
            if self.auditor is not None:
                self.auditor.observe_run(
                    event,
                    session.state,
                    commands,
                    run_id=session.ref.uid,
                    pipeline=session.pipeline,
                    namespace=session.ref.namespace,
                    key=session.ref.uid,
                    agents=session.agents,
                )
            if session.state.ignored_events == ignored:
                session.journal.append(entry)
                if agent is not None and outcome:
                    self.launcher.feed_breaker(session, agent, event)
            for command in commands:
                if isinstance(command, AwaitApproval):
                    await self._await(session, command)
            queue += [(e, j, True) for e, j in await self.launcher.execute(session, commands)]
        await self._persist(session)

    async def _persist(self, session: Session) -> None:
        state = session.state
        if not state.finished and self.runners.write_behind(session, lambda: self._write(session)):
            return  # runner mode: coalesced with the results that follow
        await self.runners.flush(session)
        anomalies: list[Verdict] = []
        if state.finished:
            anomalies = [v for v in self.observer.verdicts.pop(session.ref.uid, []) if v.anomalous]
        written = self.runners.journaled_count(session)
        status = run_status(session, self.config, anomalies, self.clock)
        status.update(self.runners.status_of(session))
        await self.kube.patch_status(
            "pipelineruns", session.ref.namespace, session.ref.name, status
        )
        self.runners.persisted(session, status, written)
        if anomalies:
            await self.kube.create_event(
                build_anomaly_event(
                    session.ref, describe_anomalies(session.pipeline, anomalies), self.clock()
                )
            )
        if not state.finished:
            return
        if spec_ref_pipeline(session) is not None:
            await self.baselines.run_finished(session.pipeline)
        if self.tracer is not None and state.outcome is not None:
            record_run_span(
                session.ref.uid,
                session.pipeline,
                started_at=_parse_time(session.started_at),
                finished_at=_parse_time(status["finishedAt"]),
                outcome=state.outcome,
                usage=state.usage,
                launches=state.launches,
                tracer_provider=self.tracer,
            )
            self.tracer.force_flush(timeout_millis=5000)
        self.sessions.pop(session.ref.uid, None)
        self.finished.add(session.ref.uid)
        await self.runners.close(session)
        if session.deadline is not None:
            session.deadline.cancel()
        for timer in session.timers.values():
            timer.cancel()
        if self.config.pod_gc == "OnSuccess" and state.phase == "succeeded":
            await self.kube.delete_pods(session.ref.namespace, f"{LABEL_RUN}={session.ref.name}")
        asyncio.get_running_loop().create_task(self.retry_pending(session.ref.namespace))

    # --- approvals (flujo_operator.run_approvals) -----------------------------------

    async def on_answers(self, uid: str, body: dict[str, Any]) -> None:
        """The spec of a live run changed: apply its answers to steps that wait."""
        async with self._lock(uid):
            session = self.sessions.get(uid)
            if session is not None:
                await self._answers(session, body)

    async def _await(self, session: Session, request: AwaitApproval) -> None:
        if note_wait(session, request, self.clock()):
            message = (
                f"step {request.path} waits for approval: {request.message} "
                f"(kubectl flujo approve {session.ref.name} {request.step})"
            )
            await self.kube.create_event(
                approval_event(session.ref, "AwaitingApproval", message, self.clock())
            )
        self._arm_approval(session, request.path)

    def _arm_approval(self, session: Session, path: str) -> None:
        wait = session.waits.get(path)
        left = seconds_left(wait, now_utc()) if wait else None
        if left is None or path in session.timers:
            return

        def fire() -> None:
            asyncio.get_running_loop().create_task(self._approval_timeout(session, path))

        session.timers[path] = asyncio.get_running_loop().call_later(max(left, 0.0), fire)

    async def _approval_timeout(self, session: Session, path: str) -> None:
        async with self._lock(session.ref.uid):
            if self.sessions.get(session.ref.uid) is session and path in session.state.awaiting:
                event = ApprovalTimedOut(path=path)
                entry = {"t": "ev", "p": path, "a": 0, "e": event.model_dump(mode="json")}
                await self._apply(session, [(event, entry)])

    async def _answers(self, session: Session, body: dict[str, Any]) -> None:
        """Apply the spec's answers to steps that wait; each once (it is journaled).

        The Event and the audit record follow the status write that journals the
        answer: a crash in between loses a notification, never repeats a decision.
        """
        events, refused = answers_of(session, body)
        for problem in refused:
            await self.kube.create_event(
                approval_event(session.ref, "ApprovalRefused", problem, self.clock(), True)
            )
        if not events:
            return
        for event, _ in events:
            timer = session.timers.pop(getattr(event, "path", ""), None)
            if timer is not None:
                timer.cancel()
        await self._apply(session, events)
        for event, _ in events:
            assert isinstance(event, ApprovalAnswered)
            decision: Literal["approve", "reject"] = "approve" if event.approved else "reject"
            if self.audit is not None:
                self.audit.approval_decided(
                    session.ref.name,
                    event.path,
                    decision,
                    namespace=session.ref.namespace,
                    reason=event.reason,
                    field_manager=event.by,
                    uid=session.ref.uid,
                )
            verdict = "approved" if event.approved else f"rejected ({event.reason or ''})"
            await self.kube.create_event(
                approval_event(
                    session.ref,
                    "Approved" if event.approved else "Rejected",
                    f"step {event.path} {verdict} by {event.by or 'unknown'}",
                    self.clock(),
                )
            )

    async def _write(self, session: Session) -> None:
        """A runner-mode status write made behind the run (see ``Runners.write_behind``)."""
        if self.sessions.get(session.ref.uid) is not session or session.state.finished:
            return
        written = self.runners.journaled_count(session)
        status = run_status(session, self.config, [], self.clock)
        status.update(self.runners.status_of(session))
        await self.kube.patch_status(
            "pipelineruns", session.ref.namespace, session.ref.name, status
        )
        self.runners.persisted(session, status, written)

    # --- the run's deadline -------------------------------------------------------

    def _arm_deadline(self, session: Session) -> None:
        seconds = session.state.limits.max_seconds or session.state.pipeline.timeout_seconds
        if not seconds or session.state.finished:
            return
        started = _parse_time(session.started_at)
        remaining = seconds - (datetime.now(UTC) - started).total_seconds()

        def fire() -> None:
            asyncio.get_running_loop().create_task(self._deadline(session))

        session.deadline = asyncio.get_running_loop().call_later(max(remaining, 0.0), fire)

    async def _deadline(self, session: Session) -> None:
        async with self._lock(session.ref.uid):
            if self.sessions.get(session.ref.uid) is session:
                await self._apply(session, [(DeadlineReached(), {"t": "deadline"})])


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
