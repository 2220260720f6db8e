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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol

from flujo.agents.base import Agent
from flujo.agents.registry import AgentRegistry, UnknownAgentError
from flujo.domain import errors
from flujo.domain.dsl.pipeline import Pipeline
from flujo.domain.dsl.step import AgentSink, BaseStep
from flujo.domain.errors import AgentError
from flujo.domain.usage import Usage
from flujo.domain.validation import check_agents, check_pipeline
from flujo.engine import (
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
    StepState,
    StepSucceeded,
    advance,
    new_run,
)
from flujo.hooks import call_started, record_advance
from flujo.runtime.calls import call_agent, context_for, crashed, failed, succeeded
from flujo.runtime.results import EventLog, ResultStore, spill_threshold
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


class RunObserver(Protocol):
    """Sees every event with the commands it produced: metrics, traces, audit.

    Observers run on the executor side (they may read clocks); a failing
    observer is disabled with one warning and never fails the run.
    """

    def observe(self, event: Event, state: RunState, commands: Sequence[Command]) -> None: ...


class PipelineValidationError(SpecError):
    """The pipeline cannot run: every problem is listed."""


@dataclass(repr=False)
class RunResult:
    """What a finished run returns: output, outcome, per-step states, usage, events.

    ``events`` is the run's whole event log.  Under the embedded executor it is
    an :class:`~flujo.runtime.results.EventLog`: large step outputs are kept in
    the run's result store (a temp file) and read back on access, so iterate it
    (or :meth:`iter_events`) rather than copying it into a list.  The store is
    released by :meth:`close` (or ``with result:``) or when the result is
    garbage-collected; after that, reading a spilled event raises
    :class:`~flujo.runtime.results.ResultStoreClosedError`.
    """

    outcome: Outcome
    state: RunState
    events: Sequence[Event] = field(default_factory=list)

    def __repr__(self) -> str:
        # Short on purpose: asyncio reprs task results, and a full dump of a
        # thousand-step state would cost more than running the steps.
        return (
            f"RunResult(status={self.status!r}, steps={len(self.state.steps)}, "
            f"usage={self.usage!r})"
        )

    @property
    def status(self) -> str:
        return self.outcome.status

    @property
    def success(self) -> bool:
        return self.outcome.status == "succeeded"

    @property
    def output(self) -> Any:
        return self.outcome.output

    @property
    def usage(self) -> Usage:
        return self.state.usage

    @property
    def steps(self) -> dict[str, StepState]:
        return self.state.steps

    def iter_events(self) -> Iterator[Event]:
        """The events in order, holding at most one spilled output at a time."""
        return iter(self.events)

    def close(self) -> None:
        """Release the run's result store (idempotent); the outcome and state stay."""
        if isinstance(self.events, EventLog):
            self.events.close()

    def __enter__(self) -> RunResult:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def to_dict(self, *, events: bool = True) -> dict[str, Any]:
        """The JSON form printed by ``flujo run --json``.

        ``events=False`` leaves the event list empty, for callers that stream
        it from :meth:`iter_events` instead of holding every output at once.
        """
        return {
            "status": self.outcome.status,
            "output": self.outcome.output,
            "reason": self.outcome.reason,
            "errorClass": self.outcome.error_class,
            "message": self.outcome.message,
            "failedPath": self.outcome.path,
            "usage": self.state.usage.model_dump(by_alias=True),
            "launches": self.state.launches,
            "steps": {
                path: {
                    "kind": s.kind,
                    "phase": s.phase,
                    **({"agent": s.agent, "attempts": s.attempt} if s.kind == "agent" else {}),
                    **({"iterations": s.iteration} if s.kind == "loop" else {}),
                    **({"branch": s.branch} if s.branch else {}),
                    "output": s.output,
                    **(
                        {"errorClass": s.error_class, "message": s.message} if s.error_class else {}
                    ),
                    "usage": s.usage.model_dump(by_alias=True),
                }
                for path, s in self.state.steps.items()
            },
            "events": [e.model_dump(mode="json") for e in self.iter_events()] if events else [],
            "pipeline": self.state.pipeline.to_data(),
            "limits": self.state.limits.to_data(),
            "agentCaps": dict(self.state.agent_caps),
        }


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

    ``spill_bytes``: step outputs whose JSON text is longer than this are kept
    in the run's result store (a temp file) instead of the in-memory event
    log; default ``$FLUJO_SPILL_BYTES``, else 4096; ``0`` keeps everything in
    memory.  See :mod:`flujo.runtime.results`.
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
    ) -> None:
        sink = AgentSink()
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

    def run(self, input: Any = None) -> RunResult:
        """Run to completion from synchronous code."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.run_async(input))
        raise RuntimeError("Flujo.run() called inside an event loop; use await run_async()")

    async def run_async(self, input: Any = None) -> RunResult:
        enforce_input(input, self.security_policy)
        state = new_run(self.spec, self.usage_limits, self._agent_caps())
        execution = _Execution(self, state, EventLog(ResultStore(self.spill_bytes)))
        try:
            with use_policy(self.security_policy):
                return await execution.run(input)
        finally:
            await self.registry.aclose()


class _Execution:
    """One run: the event loop between the machine and the agents."""

    def __init__(self, flujo: Flujo, state: RunState, events: EventLog) -> None:
        self.flujo = flujo
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

    async def run(self, input: Any) -> RunResult:
        deadline = self._deadline()
        timer = (
            asyncio.get_running_loop().call_later(
                deadline, self.results.put_nowait, DeadlineReached()
            )
            if deadline
            else None
        )
        try:
            self._apply(RunStarted(input=input, seed=self.flujo.seed))
            while self.outcome is None:
                if self.ready:
                    self._next_ready()
                else:
                    self._apply(await self.results.get())
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError) and self.outcome is None:
                self._apply(RunCancelled(reason="the run was cancelled by its caller"))
            self.events.close()  # nobody will read this run's spilled outputs
            raise
        finally:
            if timer is not None:
                timer.cancel()
            await self._drain()
        self._apply_late_results()
        return RunResult(outcome=self.outcome, state=self.state, events=self.events)

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
        seconds = [
            s for s in (self.state.limits.max_seconds, self.state.pipeline.timeout_seconds) if s
        ]
        return min(seconds) if seconds else None

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
        self.tasks[cmd.path] = asyncio.create_task(self._call(agent, cmd), name=cmd.path)

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

    async def _call(self, agent: Agent, cmd: LaunchStep) -> None:
        event = await call_agent(agent, cmd)
        if self.tasks.get(cmd.path) is asyncio.current_task():
            del self.tasks[cmd.path]
        self.results.put_nowait(event)
