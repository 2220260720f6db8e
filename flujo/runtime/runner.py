"""The embedded executor: drives the run state machine with asyncio.

``LaunchStep`` becomes an agent call — inline for instant synchronous agents
(built-in transforms, plain functions), an asyncio task otherwise;
``CancelStep`` becomes ``Task.cancel()``; results come back as events.  The
executor decides nothing about orchestration: every decision is
:func:`flujo.engine.advance`'s, which is what keeps embedded runs and
operator runs identical.
"""

from __future__ import annotations

import asyncio
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from flujo.agents.base import Agent
from flujo.agents.registry import AgentRegistry, UnknownAgentError
from flujo.domain import errors
from flujo.domain.agent import Budget, TokenSink
from flujo.domain.dsl.pipeline import Pipeline
from flujo.domain.dsl.step import AgentSink, BaseStep
from flujo.domain.errors import AgentError
from flujo.domain.validation import check_agents, check_pipeline, check_tools
from flujo.engine import (
    AwaitApproval,
    CancelStep,
    Command,
    DeadlineReached,
    Event,
    FinishRun,
    LaunchStep,
    Outcome,
    RunCancelled,
    RunStarted,
    RunState,
    StepCancelled,
    StepFailed,
    StepSucceeded,
    advance,
    new_run,
)
from flujo.hooks import call_started, record_advance
from flujo.runtime.approvals import Approvals, record_answer
from flujo.runtime.calls import budget_of, call_agent, context_for, crashed, failed, succeeded
from flujo.runtime.durable import DurableEventLog, StoreOutputs
from flujo.runtime.results import EventLog, ResultStore, spill_threshold
from flujo.runtime.run_result import RunResult
from flujo.runtime.store import FLUSH_EVERY, Journal, RunStore, StoreError
from flujo.security.policy import (
    OutputGuard,
    SecurityPolicy,
    check_pipeline_policy,
    enforce_input,
    use_policy,
)
from flujo.spec.agent import cost_caps
from flujo.spec.limits import UsageLimits
from flujo.spec.loader import Problem, SpecError
from flujo.spec.pipeline import PipelineManifest, PipelineSpec

__all__ = ["Flujo", "PipelineValidationError", "RunObserver", "RunResult"]

EventHook = Callable[[Event, RunState], None]
CANCEL_POLL_SECONDS = 1.0
"""How often a stored run looks for a cancellation requested by another process."""


class RunObserver(Protocol):
    """Sees every event with the commands it produced: metrics, traces, audit.

    Observers run on the executor side (they may read clocks); a failing
    observer is disabled with one warning and never fails the run.
    """

    def observe(self, event: Event, state: RunState, commands: Sequence[Command]) -> None: ...


class PipelineValidationError(SpecError):
    """The pipeline cannot run: every problem is listed."""


def _to_spec(
    pipeline: Pipeline | BaseStep | PipelineSpec | PipelineManifest, sink: AgentSink
) -> PipelineSpec:
    if isinstance(pipeline, BaseStep):
        pipeline = Pipeline([pipeline])
    if isinstance(pipeline, PipelineManifest):
        return pipeline.spec
    if isinstance(pipeline, PipelineSpec):
        return pipeline
    return pipeline.to_spec(sink)


class Flujo:
    """Run a pipeline in this process.

    ``Flujo(pipeline).run(input)`` validates the pipeline (every problem at
    once), resolves every agent name through the registry, then executes.

    ``on_token(path, text)``: model agents stream their answers and pass each
    piece here as it arrives (``flujo run --stream``); the outputs, usage and
    transcript are those of the same run without it.

    ``spill_bytes``: step outputs whose JSON text is longer than this are kept
    in the run's result store (a temp file) instead of the in-memory event
    log; default ``$FLUJO_SPILL_BYTES``, else 4096; ``0`` keeps everything in
    memory.  See :mod:`flujo.runtime.results`.

    ``store``: a :class:`~flujo.runtime.store.RunStore` that journals the run as
    it happens, so :meth:`resume` can finish it after a crash; ``store_meta``
    is JSON data kept with the run (the CLI keeps the agent manifests there).
    Without a store the run lives in memory only.
    """

    def __init__(
        self,
        pipeline: Pipeline | BaseStep | PipelineSpec | PipelineManifest,
        *,
        agent_registry: AgentRegistry | None = None,
        usage_limits: UsageLimits | dict[str, Any] | None = None,
        seed: int = 0,
        on_event: EventHook | None = None,
        observers: Sequence[RunObserver] = (),
        source: str = "<pipeline>",
        security_policy: SecurityPolicy | None = None,
        spill_bytes: int | None = None,
        store: RunStore | None = None,
        store_meta: dict[str, Any] | None = None,
        on_token: TokenSink | None = None,
    ) -> None:
        sink = AgentSink()
        self.on_token = on_token
        self.clock: Callable[[], float] = time.time
        """Wall clock of approval timeouts (tests replace it)."""
        self.store = store
        self.store_meta = dict(store_meta or {})
        self.name = (
            pipeline.metadata.name
            if isinstance(pipeline, PipelineManifest)
            else str(getattr(pipeline, "name", "") or "pipeline")
        )
        self.spill_bytes = spill_threshold(spill_bytes)
        self.security_policy = security_policy or SecurityPolicy.embedded()
        self.spec = _to_spec(pipeline, sink)
        self.registry = agent_registry if agent_registry is not None else AgentRegistry()
        for name, obj in sink.objects.items():
            if name not in self.registry:
                self.registry.register(name, obj, provenance="code", source=source)
        self.usage_limits = (
            UsageLimits.model_validate(usage_limits)
            if isinstance(usage_limits, dict)
            else usage_limits
        )
        self.seed = seed
        self.on_event = on_event
        self.observers = list(observers)
        findings = check_pipeline(self.spec) + check_agents(self.spec, self.registry.names())
        agent_specs = {e.name: e.spec for e in self.registry.list()}
        findings += check_tools(self.spec, agent_specs)
        findings += check_pipeline_policy(self.spec, agent_specs, self.security_policy)
        if findings:
            from flujo.spec.loader import format_loc

            raise PipelineValidationError(
                [Problem(source, f.message, None, format_loc(f.loc)) for f in findings]
            )

    def _agent_caps(self) -> dict[str, float]:
        """Declared per-call cost caps, which turn on budget reservation."""
        entries = self.registry.list()
        caps = cost_caps({entry.name: entry.spec for entry in entries})
        caps.update(
            {e.name: e.max_cost_per_call for e in entries if e.max_cost_per_call is not None}
        )
        return caps

    def run(self, input: Any = None, *, run_id: str | None = None) -> RunResult:
        """Run to completion from synchronous code."""
        return self._sync(self.run_async(input, run_id=run_id), "run")

    def resume(self, run_id: str, *, cancel: str | None = None) -> RunResult:
        """Finish a stored run from its journal (see :meth:`resume_async`)."""
        return self._sync(self.resume_async(run_id, cancel=cancel), "resume")

    @staticmethod
    def _sync(call: Any, name: str) -> RunResult:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            result: RunResult = asyncio.run(call)
            return result
        call.close()
        raise RuntimeError(f"Flujo.{name}() called inside an event loop; use await {name}_async()")

    def _definition(self) -> dict[str, Any]:
        """What the store keeps to resume the run: its pipeline and limits, and the meta."""
        return {
            **self.store_meta,
            "name": self.name,
            "pipeline": self.spec.to_data(),
            "limits": self.usage_limits.to_data() if self.usage_limits is not None else None,
            "seed": self.seed,
            "spillBytes": self.spill_bytes,
            "agentCaps": self._agent_caps(),
        }

    async def run_async(self, input: Any = None, *, run_id: str | None = None) -> RunResult:
        enforce_input(input, self.security_policy)
        state = new_run(self.spec, self.usage_limits, self._agent_caps())
        journal: Journal | None = None
        events: EventLog
        if self.store is not None:
            run_id = self.store.create(self._definition(), run_id=run_id)
            journal = self.store.journal(run_id)
            events = DurableEventLog(StoreOutputs(self.store, journal, self.spill_bytes))
        else:
            events = EventLog(ResultStore(self.spill_bytes))
        execution = _Execution(self, state, events, journal)
        try:
            with use_policy(self.security_policy):
                return await execution.run(input)
        finally:
            await self.registry.aclose()
            if self.store is not None and run_id is not None:
                self.store.release(run_id)

    def answer(
        self,
        run_id: str,
        *,
        approved: bool,
        step: str | None = None,
        input: Any = None,
        reason: str | None = None,
        by: str | None = None,
    ) -> str:
        """Record a person's answer to the stored run's approval step; return the step's path.

        ``step`` (a path or a step name) may be left out when the run waits on
        one step only.  The answer's input must satisfy the step's schema.
        :meth:`resume` then applies it (a process holding the run does so
        within a second).
        """
        if self.store is None:
            raise StoreError("answering needs a run store: Flujo(..., store=RunStore(path))")
        return record_answer(
            self.store,
            self.spec,
            run_id,
            approved=approved,
            step=step,
            input=input,
            reason=reason,
            by=by,
            at=self.clock(),
        )

    async def resume_async(self, run_id: str, *, cancel: str | None = None) -> RunResult:
        """Finish the stored run ``run_id`` (or an unambiguous prefix of it).

        Its journal is replayed through the state machine: a step whose result
        was recorded is not called again; the launches that were in flight
        when the run stopped are made again, same attempt (their result was
        never recorded), and the policy of each step applies to what they
        return.  With ``cancel``, the run is cancelled instead, without
        calling anything.  The pipeline must be the run's own: the store keeps
        it, and a different one is refused.
        """
        store = self.store
        if store is None:
            raise StoreError("resume needs a run store: Flujo(..., store=RunStore(path))")
        record = store.resolve(run_id)
        if record.finished:
            raise StoreError(f"run {record.id} has {record.status} already; nothing to resume")
        if not store.claim(record.id):
            raise StoreError(f"run {record.id} is being executed by another process")
        try:
            stored = record.definition.get("pipeline")
            if stored != self.spec.to_data():
                raise StoreError(
                    f"run {record.id} was started with another pipeline than the one given"
                )
            limits = record.definition.get("limits")
            usage_limits = UsageLimits.model_validate(limits) if limits else None
            state = new_run(self.spec, usage_limits, self._agent_caps())
            journal = store.journal(
                record.id, next_seq=record.events, active_seconds=record.active_seconds
            )
            spill = record.definition.get("spillBytes")
            events = DurableEventLog(
                StoreOutputs(store, journal, spill if isinstance(spill, int) else None)
            )
            execution = _Execution(self, state, events, journal)
            with use_policy(self.security_policy):
                return await execution.run(None, replay=store.entries(record.id), cancel=cancel)
        finally:
            await self.registry.aclose()
            store.release(record.id)


class _Execution:
    """One run: the event loop between the machine and the agents."""

    def __init__(
        self, flujo: Flujo, state: RunState, events: EventLog, journal: Journal | None = None
    ) -> None:
        self.flujo = flujo
        self.journal = journal
        """The run's journal in its store: committed before every wait (see ``_flush``)."""
        self.watcher: asyncio.TimerHandle | None = None
        self.registry = flujo.registry
        self.state = state
        self.events = events
        self.ready: deque[Event | LaunchStep] = deque()
        """Events to apply, and inline calls to make, in order (see ``_launch``)."""
        self.results: asyncio.Queue[Event] = asyncio.Queue()
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.cancelling: set[asyncio.Task[None]] = set()
        self.agents: dict[str, Agent | AgentError] = {}
        self.outcome: Outcome | None = None
        self.approvals = Approvals(
            journal.store if journal is not None else None,
            journal.run_id if journal is not None else None,
            flujo.clock,
            self.results.put_nowait,
        )

    async def run(
        self,
        input: Any,
        replay: Iterable[tuple[Event, str | None]] | None = None,
        cancel: str | None = None,
    ) -> RunResult:
        if replay is not None:
            self._replay(replay, relaunch=cancel is None)
            if cancel is not None and self.outcome is None:
                self._apply(RunCancelled(reason=cancel))
        deadline = self._deadline()
        timer = (
            asyncio.get_running_loop().call_later(
                max(deadline, 0.0), self.results.put_nowait, DeadlineReached()
            )
            if deadline is not None
            else None
        )
        self._watch_cancel()
        try:
            if replay is None:
                self._apply(RunStarted(input=input, seed=self.flujo.seed))
            self.approvals.arm(asyncio.get_running_loop())
            for event in self.approvals.due(self.state.awaiting):
                self.results.put_nowait(event)
            while self.outcome is None:
                if self.ready:
                    self._next_ready()
                elif self._only_approvals():
                    break  # nothing runs until a person answers: stop holding the run
                else:
                    self._flush()
                    self._apply(await self.results.get())
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError) and self.outcome is None:
                self._apply(RunCancelled(reason="the run was cancelled by its caller"))
                self._flush()
            self.events.close()  # nobody will read this run's spilled outputs
            raise
        finally:
            if timer is not None:
                timer.cancel()
            if self.watcher is not None:
                self.watcher.cancel()
            self.approvals.disarm()
            await self._drain()
        self._apply_late_results()
        self._flush(final=True)
        return RunResult(
            outcome=self.outcome or self._waiting(),
            state=self.state,
            events=self.events,
            run_id=self.journal.run_id if self.journal is not None else None,
        )

    def _only_approvals(self) -> bool:
        st = self.state
        return (
            bool(st.awaiting and not st.running and not st.deferred and not self.tasks)
            and self.results.empty()
        )

    def _waiting(self) -> Outcome:
        """The result of a run that stopped for approvals: not an end."""
        paths = sorted(self.state.awaiting)
        return Outcome(
            status="awaiting approval",
            reason="AwaitingApproval",
            message="; ".join(f"{p}: {self.state.awaiting[p]}" for p in paths),
            path=paths[0] if paths else None,
            usage=self.state.usage,
        )

    def _replay(self, entries: Iterable[tuple[Event, str | None]], *, relaunch: bool) -> None:
        """Rebuild the run from its journal; make again the launches still in flight.

        Replayed events are not shown to observers or hooks (they saw them in
        the process that recorded them) and not journaled again.
        """
        assert isinstance(self.events, DurableEventLog)
        launches: dict[str, LaunchStep] = {}
        waits: dict[str, AwaitApproval] = {}
        for event, digest in entries:
            self.events.restore(event, digest)
            self.state, commands = advance(self.state, event)
            for command in commands:
                if isinstance(command, LaunchStep):
                    launches[command.path] = command
                elif isinstance(command, AwaitApproval):
                    waits[command.path] = command
                elif isinstance(command, FinishRun):
                    self.outcome = command.outcome
        for path in sorted(self.state.awaiting):
            self.approvals.wait(waits[path])
        if self.outcome is not None or not relaunch:
            return
        for path, attempt in sorted(self.state.running.items()):
            launch = launches.get(path)
            if launch is not None and launch.attempt == attempt:
                self._launch(launch)

    def _flush(self, *, final: bool = False) -> None:
        """Commit the journal: called before the executor waits on anything.

        Tasks start their agent calls only when this loop awaits, so every
        event a call depends on is on disk before the call leaves the process.
        """
        if self.journal is not None:
            status = None
            if final:
                status = (self.outcome or self._waiting()).status
            self.journal.flush(self.state, status=status)

    def _watch_cancel(self) -> None:
        """``flujo runs cancel`` from another process: a request in the store, polled."""
        journal = self.journal
        if journal is None or journal.store.memory:
            return
        loop = asyncio.get_running_loop()

        def check() -> None:
            try:
                reason = journal.store.cancel_requested(journal.run_id)
            except StoreError:
                reason = None
            if reason is not None and self.outcome is None:
                self.results.put_nowait(RunCancelled(reason=reason))
                return
            try:
                for event in self.approvals.due(self.state.awaiting):
                    self.results.put_nowait(event)
            except StoreError:
                pass
            self.watcher = loop.call_later(CANCEL_POLL_SECONDS, check)

        self.watcher = loop.call_later(CANCEL_POLL_SECONDS, check)

    def _apply_late_results(self) -> None:
        """Results that arrived while the run was stopping: their tokens were spent.

        The machine adds a late result's usage and changes nothing else, so a
        breach's ledger counts every call that completed, as the operator's does.
        """
        self.ready.clear()  # inline calls not made yet are never made
        while not self.results.empty():
            event = self.results.get_nowait()
            if isinstance(event, StepSucceeded | StepFailed | StepCancelled):
                self._apply(event)

    def _deadline(self) -> float | None:
        """Seconds left of the run's deadline (time run by earlier processes counts)."""
        seconds = [
            s for s in (self.state.limits.max_seconds, self.state.pipeline.timeout_seconds) if s
        ]
        if not seconds:
            return None
        spent = self.journal.base_seconds if self.journal is not None else 0.0
        return min(seconds) - spent

    async def _drain(self) -> None:
        """No task outlives its run."""
        tasks = [*self.tasks.values(), *self.cancelling]
        self.tasks.clear()
        self.cancelling.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _apply(self, event: Event) -> None:
        self.events.append(event)
        if self.journal is not None and self.journal.pending >= FLUSH_EVERY:
            self.journal.flush(self.state)
        started = time.perf_counter()
        self.state, commands = advance(self.state, event)
        record_advance(event, time.perf_counter() - started)
        if self.flujo.on_event is not None:
            self.flujo.on_event(event, self.state)
        for observer in list(self.flujo.observers):
            try:
                observer.observe(event, self.state, commands)
            except Exception as exc:  # degrade to a no-op, once
                self.flujo.observers.remove(observer)
                warnings.warn(
                    f"observer {type(observer).__name__} failed and was disabled: {exc}",
                    RuntimeWarning,
                    stacklevel=2,
                )
        for command in commands:
            self._execute(command)

    def _execute(self, command: Command) -> None:
        if isinstance(command, LaunchStep):
            self._launch(command)
        elif isinstance(command, CancelStep):
            task = self.tasks.pop(command.path, None)
            if task is not None:
                task.cancel()
                self.cancelling.add(task)
                task.add_done_callback(self.cancelling.discard)
        elif isinstance(command, AwaitApproval):
            self.approvals.wait(command)
            self.approvals.arm(asyncio.get_running_loop())
        elif isinstance(command, FinishRun):
            self.outcome = command.outcome

    def _agent(self, name: str) -> Agent | AgentError:
        agent = self.agents.get(name)
        if agent is None:
            try:
                agent = OutputGuard(self.registry.get(name), name, self.flujo.security_policy)
            except UnknownAgentError as exc:
                agent = AgentError(errors.CONFIG, str(exc))
            except AgentError as exc:
                agent = exc
            self.agents[name] = agent
        return agent

    def _launch(self, cmd: LaunchStep) -> None:
        agent = self._agent(cmd.agent)
        if isinstance(agent, AgentError):
            self.ready.append(failed(cmd, agent))
            return
        if agent.supports_sync and not cmd.delay_seconds and cmd.timeout_seconds is None:
            # Made when its turn comes, not now: a breach or a failing sibling
            # decided before then cancels it, and a cancelled inline call is
            # never made — as a pod deleted before it ran never calls.
            self.ready.append(cmd)
            return
        budget = budget_of(self.state.limits, self.state.usage)
        self.tasks[cmd.path] = asyncio.create_task(self._call(agent, cmd, budget), name=cmd.path)

    def _next_ready(self) -> None:
        item = self.ready.popleft()
        if not isinstance(item, LaunchStep):
            self._apply(item)
            return
        if self.state.running.get(item.path) != item.attempt:
            return  # cancelled before its turn
        agent = self.agents[item.agent]
        assert not isinstance(agent, AgentError)
        call_started(item)
        try:
            out = agent.run_sync(item.input, context_for(item))
        except AgentError as exc:
            self._apply(failed(item, exc))
        except Exception as exc:
            self._apply(crashed(item, exc))
        else:
            self._apply(succeeded(item, out))

    async def _call(self, agent: Agent, cmd: LaunchStep, budget: Budget | None) -> None:
        event = await call_agent(agent, cmd, budget=budget, on_token=self.flujo.on_token)
        if self.tasks.get(cmd.path) is asyncio.current_task():
            del self.tasks[cmd.path]
        self.results.put_nowait(event)
