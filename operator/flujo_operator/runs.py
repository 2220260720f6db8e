"""The operator's executor: drives a PipelineRun's state machine with pods.

Each run has a session: its :class:`~flujo.engine.RunState`, kept in memory,
and its *journal* — the ordered references of the events applied so far
(``start``; ``pod`` = the result in that step pod's log; inline pod-level
failures; ``deadline``).  The journal is persisted, compressed, in the run's
status.  After an operator restart the session is rebuilt by replaying the
journal through :func:`flujo.engine.advance` — the step pods are the result
store, owned by the run — so a step whose success was recorded is never
launched again, and pod names being deterministic, re-creating a pod that
exists is a harmless 409.

Per event: apply it, execute the commands (create/delete pods), then write
the status once.  Everything for one run happens under one lock.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from flujo.agents.builtin import PRESET_PREFIX, builtin_names
from flujo.domain import errors
from flujo.domain.validation import check_agents, check_pipeline
from flujo.engine import (
    CancelStep,
    Command,
    DeadlineReached,
    Event,
    FinishRun,
    LaunchStep,
    RunStarted,
    RunState,
    StepFailed,
    advance,
    event_adapter,
    new_run,
)
from flujo.hooks import record_advance
from flujo.observability.anomaly import STATE_VERSION, AnomalyDetector, Verdict
from flujo.observability.metrics import FlujoMetrics, MetricsObserver
from flujo.observability.tracing import configure_tracing, record_run_span, run_traceparent
from flujo.resilience.breaker import BreakerRegistry
from flujo.runtime.envelope import EnvelopeError, decode_result, inline_result
from flujo.security.audit import AuditLog, AuditObserver
from flujo.security.policy import SecurityPolicy, check_input, check_pipeline_policy
from flujo.spec.agent import AgentSpec, cost_caps
from flujo.spec.loader import format_loc
from flujo.spec.pipeline import PipelineSpec
from flujo.spec.run import PipelineRunSpec
from pydantic import ValidationError

from flujo_operator.builders import (
    ANNOTATION_PATH,
    LABEL_ATTEMPT,
    LABEL_RUN,
    RunRef,
    build_anomaly_event,
    build_run_status,
    build_step_pod,
    condition,
    decode_journal,
    describe_anomalies,
    first_error,
    now_iso,
    pod_failure,
    pod_name,
    terminated,
)
from flujo_operator.config import Config
from flujo_operator.kube import Kube

__all__ = ["RunController", "journal_event", "run_events"]

log = logging.getLogger("flujo_operator.runs")
TERMINAL = {"Succeeded", "Failed", "Cancelled"}
BASELINE_EVERY = 10


@dataclass
class Session:
    ref: RunRef
    state: RunState
    agents: dict[str, AgentSpec | None]
    journal: list[dict[str, Any]] = field(default_factory=list)
    seen: set[tuple[str, int]] = field(default_factory=set)
    deleting: set[str] = field(default_factory=set)
    waiting: list[LaunchStep] = field(default_factory=list)
    listed: set[str] = field(default_factory=set)
    """Step paths the status lists now: a merge patch must null the ones it drops."""
    pipeline: str = "inline"
    """``namespace/name`` of the Pipeline, the metrics label of this run."""
    started_at: str = ""
    finished_at: str | None = None
    deadline: asyncio.TimerHandle | None = None


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
        self.learned: dict[str, int] = {}
        """Finished runs per pipeline since its baseline was last saved."""
        self.sessions: dict[str, Session] = {}
        self.finished: set[str] = set()
        self.locks: dict[str, asyncio.Lock] = {}
        self.agents: dict[str, dict[str, AgentSpec | None]] = {}
        """namespace → valid Agents, kept current by the Agent watch (a cache, not truth)."""
        self.pipelines: dict[tuple[str, str], PipelineSpec] = {}
        """(namespace, name) → valid Pipeline specs, kept current by the Pipeline watch."""
        self._policies: dict[str, SecurityPolicy] = {}
        self._launch_policies: dict[str, dict[str, Any]] = {}
        self.running_pods: dict[str, set[str]] = {}
        self.agent_pods: dict[tuple[str, str], set[str]] = {}
        """(namespace, agent) → its step pods running now (``rateLimit.maxConcurrent``)."""
        self.pod_agents: dict[tuple[str, str], str] = {}
        self.waiting_runs: dict[str, dict[str, dict[str, Any]]] = {}
        """namespace → uid → the latest body of runs that could not start yet (Pending)."""
        """namespace → names of step pods created and not yet finished."""

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

    def _lock(self, uid: str) -> asyncio.Lock:
        return self.locks.setdefault(uid, asyncio.Lock())

    # --- PipelineRun events ---------------------------------------------------

    async def on_run(self, kind: str, body: dict[str, Any]) -> None:
        meta = body.get("metadata") or {}
        uid = meta.get("uid", "")
        if kind == "DELETED":
            self._forget(uid)
            return
        if uid in self.finished or uid in self.sessions:
            return
        async with self._lock(uid):
            if uid in self.sessions or uid in self.finished:
                return
            waiting = self.waiting_runs.setdefault(meta.get("namespace", ""), {})
            waiting[uid] = body
            try:
                await self._open(body)
            finally:
                if uid in self.sessions or uid in self.finished:
                    waiting.pop(uid, None)

    def _forget(self, uid: str) -> None:
        session = self.sessions.pop(uid, None)
        if session is not None:
            if session.deadline is not None:
                session.deadline.cancel()
            for path, attempt in session.state.running.items():
                self._pod_done(session.ref.namespace, pod_name(session.ref.name, path, attempt))
        self.finished.discard(uid)
        self.locks.pop(uid, None)
        for waiting in self.waiting_runs.values():
            waiting.pop(uid, None)

    async def _open(self, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        ref = RunRef(meta["name"], meta["namespace"], meta["uid"])
        status = body.get("status") or {}
        if status.get("phase") in TERMINAL:
            self.finished.add(ref.uid)
            return
        try:
            spec = PipelineRunSpec.model_validate(body.get("spec") or {})
        except ValidationError as exc:
            await self._refuse(ref, "InvalidSpec", first_error(exc), terminal=True)
            return
        pipeline = await self._pipeline(ref, spec)
        if pipeline is None:
            return
        agents = self.known_agents(ref.namespace)
        if check_agents(pipeline, agents):  # the cache may be cold or behind: ask the API
            agents = await self.read_agents(ref.namespace)
        problems = [f.message for f in check_pipeline(pipeline)]
        problems += [f.message for f in check_agents(pipeline, agents)]
        if problems:
            reason = (
                "AgentsMissing"
                if all("unknown agent" in p for p in problems)
                else ("PipelineInvalid")
            )
            await self._refuse(ref, reason, "; ".join(problems), terminal=False)
            return
        policy = self.policy(ref.namespace)
        denied = check_pipeline_policy(pipeline, agents, policy)
        if denied:
            # Pending, not Failed: the Pipeline, an Agent or the policy may still change.
            message = "; ".join(f"{format_loc(f.loc)}: {f.message}" for f in denied)
            self._audit_denied("PipelineRun", ref, message, format_loc(denied[0].loc))
            await self._refuse(ref, "PolicyDenied", message, terminal=False)
            return
        refused = check_input(spec.input, policy)
        if refused:
            message = f"spec.input: {refused[0]}"
            self._audit_denied("PipelineRun", ref, message, "spec.input")
            await self._refuse(ref, "InputRefused", message, terminal=True)
            return
        running = sum(1 for s in self.sessions.values() if s.ref.namespace == ref.namespace)
        if running >= self.config.max_running_runs:
            await self._refuse(
                ref,
                "Queued",
                f"{running} runs are running in {ref.namespace} "
                f"(maxRunningRuns={self.config.max_running_runs})",
                terminal=False,
            )
            return
        caps = cost_caps(agents)
        limits = spec.usage_limits
        if spec.timeout_seconds is not None:
            from flujo.spec.limits import UsageLimits

            limits = (limits or UsageLimits()).model_copy(
                update={"max_seconds": spec.timeout_seconds}
            )
        state = new_run(pipeline, limits, caps)
        session = Session(ref=ref, state=state, agents=agents)
        session.listed = set((status.get("steps") or {}).keys())
        if spec.pipeline_ref is not None:
            session.pipeline = f"{ref.namespace}/{spec.pipeline_ref.name}"
        session.started_at = status.get("startedAt") or self.clock()
        self.sessions[ref.uid] = session
        journal = decode_journal(status.get("journal"))
        if journal:
            await self._replay(session, spec, journal)
        else:
            await self._apply(
                session, [(RunStarted(input=spec.input, seed=spec.seed), {"t": "start"})]
            )
        self._arm_deadline(session)

    async def _pipeline(self, ref: RunRef, spec: PipelineRunSpec) -> PipelineSpec | None:
        if spec.pipeline is not None:
            return spec.pipeline
        assert spec.pipeline_ref is not None
        cached = self.pipelines.get((ref.namespace, spec.pipeline_ref.name))
        if cached is not None:
            return cached
        obj = await self.kube.get("pipelines", ref.namespace, spec.pipeline_ref.name)
        if obj is None:
            await self._refuse(
                ref,
                "PipelineNotFound",
                f"Pipeline {spec.pipeline_ref.name!r} not found in {ref.namespace}",
                terminal=False,
            )
            return None
        try:
            return PipelineSpec.model_validate(obj.get("spec") or {})
        except ValidationError as exc:
            await self._refuse(ref, "PipelineInvalid", first_error(exc), terminal=False)
            return None

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

    async def _refuse(self, ref: RunRef, reason: str, message: str, terminal: bool) -> None:
        """The run does not start (yet): say why in its status."""
        phase = "Failed" if terminal else "Pending"
        if terminal:
            self.finished.add(ref.uid)
        await self.kube.patch_status(
            "pipelineruns",
            ref.namespace,
            ref.name,
            {
                "phase": phase,
                "reason": reason,
                "message": message[:1000],
                "conditions": [
                    condition(
                        "Succeeded",
                        "False" if terminal else "Unknown",
                        reason,
                        message,
                        self.clock(),
                    )
                ],
            },
        )

    async def retry_pending(self, namespace: str) -> None:
        """Agents or Pipelines changed, or a run finished: try runs waiting in Pending.

        The waiting runs are known from their watch events (kopf lists every run
        at start), so this reads nothing from the API: re-listing a namespace's
        runs on every finished run cost a LIST of every run, status and all.
        """
        for body in list(self.waiting_runs.get(namespace, {}).values()):
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
            if entry.get("t") in ("pod", "ev"):
                session.seen.add((entry["p"], entry["a"]))
        session.state = state
        session.journal = journal
        # Launches in flight: their pods may be missing (a crash between advance and
        # create); creating one that exists is a 409, never a second call.
        in_flight: list[Command] = [launches[p] for p in sorted(state.running) if p in launches]
        await self._execute(session, in_flight)
        await self._persist(session)

    # --- pod events -------------------------------------------------------------

    async def on_pod(self, kind: str, pod: dict[str, Any]) -> None:
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
            found = await self._pod_event(session, kind, pod, path, attempt)
            if found is None:
                return
            session.seen.add((path, attempt))
            self._pod_done(session.ref.namespace, meta["name"])
            await self._apply(session, [found])
        # Outside the lock: draining takes each waiting run's own lock.
        await self._drain_waiting(session.ref.namespace)

    async def _pod_event(
        self, session: Session, kind: str, pod: dict[str, Any], path: str, attempt: int
    ) -> tuple[Event, dict[str, Any]] | None:
        name = pod["metadata"]["name"]
        done = terminated(pod)
        if done is not None and done.get("message"):
            try:
                event = inline_result(done["message"])
                if event is None:  # too big for the envelope: read it from the log
                    text = await self.kube.pod_log(session.ref.namespace, name)
                    event = decode_result(done["message"], text)
                return event, {"t": "pod", "p": path, "a": attempt}
            except EnvelopeError:
                pass
            except Exception as exc:  # the log may be gone with the node
                log.warning("pod %s: cannot read its log: %s", name, exc)
        failure = pod_failure(pod, path, attempt)
        if failure is None and kind == "DELETED":
            if name in session.deleting:
                return None
            failure = StepFailed(
                path=path,
                attempt=attempt,
                error_class=errors.TRANSIENT,
                message=f"step pod {name} was deleted before it finished",
            )
        if failure is None:
            return None
        if done is None and kind != "DELETED":
            await self.kube.delete_pod(session.ref.namespace, name)
        return failure, {"t": "ev", "p": path, "a": attempt, "e": failure.model_dump(mode="json")}

    def _pod_done(self, namespace: str, name: str) -> None:
        self.running_pods.get(namespace, set()).discard(name)
        agent = self.pod_agents.pop((namespace, name), None)
        if agent is not None:
            self.agent_pods.get((namespace, agent), set()).discard(name)

    # --- applying events and executing commands ---------------------------------

    async def _apply(self, session: Session, events: list[tuple[Event, dict[str, Any]]]) -> None:
        queue = list(events)
        while queue:
            event, entry = queue.pop(0)
            ignored = session.state.ignored_events
            agent = self._agent_of(session, event)  # before advance switches to a fallback
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
                if agent is not None:
                    self._feed_breaker(session, agent, event)
            queue += await self._execute(session, commands)
        await self._persist(session)

    @staticmethod
    def _agent_of(session: Session, event: Event) -> str | None:
        """The declared agent whose call this result reports (presets have no breaker)."""
        path = getattr(event, "path", None)
        step = session.state.steps.get(path) if path else None
        if step is None or not step.agent or session.agents.get(step.agent) is None:
            return None
        return step.agent

    def _feed_breaker(self, session: Session, agent: str, event: Event) -> None:
        """Step pods cannot reach the API: their reported outcomes feed the shared breaker."""
        if isinstance(event, StepFailed) and event.error_class == errors.CIRCUIT_OPEN:
            return
        breaker = self.breakers.get(f"{session.ref.namespace}/{agent}")
        breaker.record(event.error_class if isinstance(event, StepFailed) else None)

    async def _execute(
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
                    follow.append(
                        (
                            refused,
                            {
                                "t": "ev",
                                "p": command.path,
                                "a": command.attempt,
                                "e": refused.model_dump(mode="json"),
                            },
                        )
                    )
                elif session.waiting or not await self._launch(session, command):
                    # FIFO: a run's launches start in the order the machine issued them.
                    session.waiting.append(command)
            elif isinstance(command, CancelStep):
                session.waiting = [w for w in session.waiting if w.path != command.path]
                attempt = session.state.steps[command.path].attempt
                name = pod_name(session.ref.name, command.path, attempt)
                session.deleting.add(name)
                self._pod_done(session.ref.namespace, name)
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

    async def _launch(self, session: Session, cmd: LaunchStep) -> bool:
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
        pod, config_map = build_step_pod(
            session.ref, cmd, spec, self.config, policy=self.launch_policy(namespace)
        )
        if config_map is not None:
            await self.kube.create_config_map(config_map)
        pods.add(name)
        agent_pods.add(name)
        self.pod_agents[namespace, name] = cmd.agent
        await self.kube.create_pod(pod)
        return True

    async def _drain_waiting(self, namespace: str) -> None:
        for session in list(self.sessions.values()):
            if session.ref.namespace != namespace or not session.waiting:
                continue
            async with self._lock(session.ref.uid):
                pending, session.waiting = session.waiting, []
                for cmd in pending:
                    if not await self._launch(session, cmd):
                        session.waiting.append(cmd)

    async def _persist(self, session: Session) -> None:
        state = session.state
        status = build_run_status(session.ref, state, session.journal, self.config)
        shown = set(status["steps"])
        for gone in session.listed - shown:
            status["steps"][gone] = None  # JSON merge patch: null deletes the key
        session.listed = shown
        status["startedAt"] = session.started_at
        status["traceparent"] = run_traceparent(session.ref.uid)
        status["observedGeneration"] = 1
        if session.waiting:
            status["waitingPods"] = len(session.waiting)
        anomalies: list[Verdict] = []
        if state.finished:
            anomalies = [v for v in self.observer.verdicts.pop(session.ref.uid, []) if v.anomalous]
            status["finishedAt"] = session.finished_at or self.clock()
            outcome = state.outcome
            succeeded = outcome is not None and outcome.status == "succeeded"
            status["conditions"] = [
                *(
                    [
                        condition(
                            "Anomalous",
                            "True",
                            "UnusualUsage",
                            describe_anomalies(session.pipeline, anomalies),
                            status["finishedAt"],
                        )
                    ]
                    if anomalies
                    else []
                ),
                condition(
                    "Succeeded",
                    "True" if succeeded else "False",
                    status.get("reason", ""),
                    status.get("message", ""),
                    status["finishedAt"],
                ),
            ]
        else:
            status["conditions"] = [
                condition("Succeeded", "Unknown", "Running", "", session.started_at)
            ]
        await self.kube.patch_status(
            "pipelineruns", session.ref.namespace, session.ref.name, status
        )
        if anomalies:
            await self.kube.create_event(
                build_anomaly_event(
                    session.ref, describe_anomalies(session.pipeline, anomalies), self.clock()
                )
            )
        if state.finished and spec_ref_pipeline(session) is not None:
            await self._save_baseline(session)
        if state.finished and self.tracer is not None and state.outcome is not None:
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
        if state.finished:
            self.sessions.pop(session.ref.uid, None)
            self.finished.add(session.ref.uid)
            if session.deadline is not None:
                session.deadline.cancel()
            if self.config.pod_gc == "OnSuccess" and state.phase == "succeeded":
                await self.kube.delete_pods(
                    session.ref.namespace, f"{LABEL_RUN}={session.ref.name}"
                )
            asyncio.get_running_loop().create_task(self.retry_pending(session.ref.namespace))

    async def _save_baseline(self, session: Session) -> None:
        """Persist the pipeline's usage baseline in its status every 10th run: anomaly
        detection survives restarts at the cost of 0.1 write per run."""
        count = self.learned.get(session.pipeline, 0) + 1
        self.learned[session.pipeline] = count
        baseline = self.anomaly.baselines.get(session.pipeline)
        if count % BASELINE_EVERY or baseline is None:
            return
        namespace, _, name = session.pipeline.partition("/")
        await self.kube.patch_status(
            "pipelines", namespace, name, {"usageBaseline": baseline.to_dict()}
        )

    def restore_baseline(self, pipeline: str, data: Any) -> None:
        """Seed the detector from a Pipeline status (after a restart)."""
        if pipeline in self.anomaly.baselines or not isinstance(data, dict):
            return
        restored = AnomalyDetector.from_dict(
            {"version": STATE_VERSION, "pipelines": {pipeline: data}}
        ).baselines.get(pipeline)
        if restored is not None:
            self.anomaly.baselines[pipeline] = restored

    def _arm_deadline(self, session: Session) -> None:
        seconds = session.state.limits.max_seconds or session.state.pipeline.timeout_seconds
        if not seconds or session.state.finished:
            return
        started = datetime.fromisoformat(session.started_at.replace("Z", "+00:00"))
        remaining = seconds - (datetime.now(UTC) - started).total_seconds()

        def fire() -> None:
            asyncio.get_running_loop().create_task(self._deadline(session))

        session.deadline = asyncio.get_running_loop().call_later(max(remaining, 0.0), fire)

    async def _deadline(self, session: Session) -> None:
        async with self._lock(session.ref.uid):
            if self.sessions.get(session.ref.uid) is session:
                await self._apply(session, [(DeadlineReached(), {"t": "deadline"})])


async def journal_event(
    kube: Kube, ref: RunRef, spec: PipelineRunSpec, entry: dict[str, Any]
) -> Event | None:
    """The event a journal entry stands for; results are read back from step pods."""
    kind = entry.get("t")
    if kind == "start":
        return RunStarted(input=spec.input, seed=spec.seed)
    if kind == "deadline":
        return DeadlineReached()
    if kind == "ev":
        return event_adapter.validate_python(entry["e"])
    if kind == "pod":
        name = pod_name(ref.name, entry["p"], entry["a"])
        try:
            pod = await kube.get_pod(ref.namespace, name)
            message = str((terminated(pod or {}) or {}).get("message", ""))
            event = inline_result(message)
            if event is None:
                event = decode_result(message, await kube.pod_log(ref.namespace, name))
            return event
        except Exception as exc:
            return StepFailed(
                path=entry["p"],
                attempt=entry["a"],
                error_class=errors.INTERNAL,
                message=f"the result of pod {name} is lost: {exc}",
            )
    return None


async def run_events(kube: Kube, run: dict[str, Any]) -> list[Event]:
    """A PipelineRun's event log, rebuilt from its status journal and its pods.

    This is what makes an operator run's transcript comparable with an
    embedded one: the same events, replayed by the same machine.
    """
    meta = run["metadata"]
    ref = RunRef(meta["name"], meta["namespace"], meta.get("uid", ""))
    spec = PipelineRunSpec.model_validate(run.get("spec") or {})
    events: list[Event] = []
    for entry in decode_journal((run.get("status") or {}).get("journal")):
        event = await journal_event(kube, ref, spec, entry)
        if event is not None:
            events.append(event)
    return events


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def spec_ref_pipeline(session: Session) -> str | None:
    """The ``namespace/name`` of the run's Pipeline; None for inline pipelines."""
    return None if session.pipeline == "inline" else session.pipeline
