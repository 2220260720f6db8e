"""Run spans: live for runs seen through a :class:`TracingObserver`, after the fact
for the operator's runs (:func:`record_run_span`), with a child span per step attempt."""

from __future__ import annotations

import time
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from flujo.domain.usage import Usage
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
    StepSucceeded,
)
from flujo.hooks import bind, unbind
from flujo.observability.info import AgentInfo
from flujo.observability.tracing.genai import (
    ERROR_TYPE,
    GEN_AI_OPERATION_NAME,
    GEN_AI_WORKFLOW_NAME,
    LLM_KINDS,
    finish_step_span,
    flujo_tracer,
    outcome_attributes,
    step_span_shape,
    tool_span_attributes,
)
from flujo.observability.tracing.propagation import run_span_ids

__all__ = ["TracingObserver", "record_run_span"]


@dataclass
class _TracedRun:
    span: Span
    context: Context
    steps: dict[str, tuple[int, Span, bool]] = field(default_factory=dict)
    """path → (attempt, span, is LLM) of the attempt in flight."""
    fallbacks: set[str] = field(default_factory=set)


def _start_run_span(
    tracer: trace.Tracer, pipeline: str, run_id: str | None, *, start_time: int | None = None
) -> Span:
    """Start a run span; with ``run_id``, with the ids derived from it."""
    attributes: dict[str, AttributeValue] = {
        GEN_AI_OPERATION_NAME: "invoke_workflow",
        GEN_AI_WORKFLOW_NAME: pipeline,
        "flujo.pipeline.name": pipeline,
    }
    if run_id is not None:
        attributes["flujo.run.id"] = run_id
    with run_span_ids(run_id):
        return tracer.start_span(
            f"invoke_workflow {pipeline}",
            context=Context(),
            start_time=start_time,
            attributes=attributes,
        )


class TracingObserver:
    """Spans for runs seen through :meth:`observe` (a :class:`~flujo.runtime.RunObserver`).

    ``agents`` maps agent names to their kind and model (an
    :class:`~flujo.observability.AgentInfo` or a ``(type, model)`` pair) for
    the GenAI attributes.  ``run_id``, when given, makes the run span's ids
    derive from it (with a provider using :class:`FlujoIdGenerator`), as the
    operator's do; leave it None when one observer serves many runs.
    """

    def __init__(
        self,
        pipeline: str = "unknown",
        agents: Mapping[str, AgentInfo | tuple[str, str | None]] | None = None,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        run_id: str | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.agents = {name: AgentInfo.of(info) for name, info in (agents or {}).items()}
        self.tracer = flujo_tracer(tracer_provider)
        self.run_id = run_id
        self._runs: dict[Hashable, _TracedRun] = {}

    def observe(self, event: Event, state: RunState, commands: Sequence[Command]) -> None:
        key = id(state)
        run = self._runs.get(key)
        if isinstance(event, RunStarted):
            run = self._start(key)
        if run is None:
            return
        if isinstance(event, StepSucceeded | StepFailed | StepCancelled):
            found = run.steps.get(event.path)
            if found is not None and found[0] == event.attempt:
                del run.steps[event.path]
                finish_step_span(found[1], event, found[2])
                found[1].end()
        elif isinstance(event, DeadlineReached):
            run.span.add_event("flujo.run.deadline_reached")
        elif isinstance(event, RunCancelled):
            run.span.add_event("flujo.run.cancelled", {"flujo.cancel.reason": event.reason})
        for command in commands:
            if isinstance(command, LaunchStep):
                self._launch(run, command, state)
            elif isinstance(command, CancelStep):
                self._cancel(run, command)
            elif isinstance(command, FinishRun):
                self._finish(key, run, command.outcome, state)

    def _start(self, key: Hashable) -> _TracedRun:
        span = _start_run_span(self.tracer, self.pipeline, self.run_id)
        run = _TracedRun(span, trace.set_span_in_context(span))
        self._runs[key] = run
        bind(self, key)  # tool calls of tool loops arrive through the executor hooks
        return run

    # ExecutorSink: only tool calls make spans; the other hooks are the metrics' business.
    def call_started(self, key: Hashable, cmd: LaunchStep) -> None:
        del key, cmd

    def rate_limit_waited(self, key: Hashable, agent: str, seconds: float) -> None:
        del key, agent, seconds

    def tool_called(
        self,
        key: Hashable,
        path: str,
        attempt: int,
        tool: str,
        agent: str,
        seconds: float,
        error_class: str | None,
    ) -> None:
        """An ``execute_tool {tool}`` span under the step's span, as long as the call took."""
        run = self._runs.get(key)
        found = run.steps.get(path) if run is not None else None
        if found is None or found[0] != attempt:
            return
        end = time.time_ns()
        span = self.tracer.start_span(
            f"execute_tool {tool}",
            context=trace.set_span_in_context(found[1]),
            kind=SpanKind.INTERNAL,
            attributes=tool_span_attributes(path, tool, agent, self.agents.get(agent)),
            start_time=end - int(max(0.0, seconds) * 1e9),
        )
        if error_class is not None:
            span.set_attribute(ERROR_TYPE, error_class)
            span.set_status(Status(StatusCode.ERROR, error_class))
        else:
            span.set_status(Status(StatusCode.OK))
        span.end(end_time=end)

    def _launch(self, run: _TracedRun, cmd: LaunchStep, state: RunState) -> None:
        info = self.agents.get(cmd.agent)
        name, kind, attributes = step_span_shape(cmd, info)
        attributes["flujo.pipeline.name"] = self.pipeline
        previous = run.steps.pop(cmd.path, None)
        if previous is not None:  # not expected: an attempt superseded without a result
            previous[1].end()
        span = self.tracer.start_span(name, context=run.context, kind=kind, attributes=attributes)
        step = state.steps.get(cmd.path)
        details: dict[str, AttributeValue] = {
            "flujo.step.path": cmd.path,
            "flujo.step.attempt": cmd.attempt,
        }
        if step is not None and step.fallback_used and cmd.path not in run.fallbacks:
            run.fallbacks.add(cmd.path)
            details["flujo.fallback.agent"] = cmd.agent
            span.set_attribute("flujo.step.fallback", True)
            span.add_event("flujo.step.fallback", details)
            run.span.add_event("flujo.step.fallback", details)
        elif cmd.attempt > 1:
            details["flujo.retry.delay_seconds"] = cmd.delay_seconds
            if step is not None and step.error_class:
                details["flujo.retry.after_error"] = step.error_class
            span.add_event("flujo.step.retry", details)
            run.span.add_event("flujo.step.retry", details)
        run.steps[cmd.path] = (cmd.attempt, span, info is not None and info.type in LLM_KINDS)

    def _cancel(self, run: _TracedRun, cmd: CancelStep) -> None:
        found = run.steps.pop(cmd.path, None)
        details: dict[str, AttributeValue] = {
            "flujo.step.path": cmd.path,
            "flujo.cancel.reason": cmd.reason,
        }
        run.span.add_event("flujo.step.cancelled", details)
        if found is not None:
            found[1].set_attribute("flujo.step.outcome", "cancelled")
            found[1].add_event("flujo.step.cancelled", details)
            found[1].end()

    def _finish(self, key: Hashable, run: _TracedRun, outcome: Outcome, state: RunState) -> None:
        for _, span, _ in run.steps.values():
            span.end()
        if state.breach is not None:
            run.span.add_event(
                "flujo.governor.breach",
                {
                    "flujo.limit": state.breach.limit,
                    "flujo.limit.value": state.breach.limit_value,
                    "flujo.limit.reached": state.breach.value,
                    "flujo.step.path": state.breach.path,
                },
            )
        outcome_attributes(run.span, outcome, state.usage, state.launches)
        run.span.end()
        del self._runs[key]
        unbind(self, key)


# --- the operator's run span ----------------------------------------------------------------


def _ns(when: datetime) -> int:
    return int(when.timestamp() * 1_000_000_000)


def record_run_span(
    run_id: str,
    pipeline: str,
    *,
    started_at: datetime,
    finished_at: datetime,
    outcome: Outcome,
    usage: Usage,
    launches: int = 0,
    tracer_provider: TracerProvider | None = None,
) -> None:
    """Emit a finished run's span with the ids its step pods used as parent.

    For the operator, once the run is over: the span is created and ended
    in one go, with the run's recorded start and end times, so an operator
    restart mid-run loses nothing.  Needs a provider using
    :class:`FlujoIdGenerator` (as :func:`configure_tracing` makes) for the ids.
    """
    span = _start_run_span(
        flujo_tracer(tracer_provider), pipeline, run_id, start_time=_ns(started_at)
    )
    outcome_attributes(span, outcome, usage, launches)
    span.end(end_time=_ns(finished_at))
