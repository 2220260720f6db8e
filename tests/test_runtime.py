"""The embedded runtime: real asyncio tasks, timeouts, cancellation, no leaks."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from flujo import (
    AgentContext,
    AgentError,
    AgentOutput,
    AgentRegistry,
    BaseAgent,
    Flujo,
    ParallelStep,
    Pipeline,
    PipelineValidationError,
    Step,
    Usage,
)
from flujo.domain import errors


class Recorder(BaseAgent):
    """An async agent that records starts, finishes and cancellations."""

    def __init__(
        self,
        delay: float,
        answer: Any = "ok",
        fail_first: int = 0,
        error_class: str = errors.TRANSIENT,
    ) -> None:
        self.delay = delay
        self.answer = answer
        self.fail_first = fail_first
        self.error_class = error_class
        self.started: list[str] = []
        self.first_start = asyncio.Event()
        self.cancelled: list[str] = []
        self.finished: list[str] = []

    async def run(self, data: Any, context: AgentContext) -> AgentOutput:
        self.started.append(f"{context.step_path}#{context.attempt}")
        self.first_start.set()
        try:
            await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self.cancelled.append(context.step_path)
            raise
        if len(self.started) <= self.fail_first:
            raise AgentError(self.error_class, "flaky", usage=Usage(input_tokens=1))
        self.finished.append(context.step_path)
        return AgentOutput(self.answer, Usage(output_tokens=1))


def test_fail_fast_cancels_in_flight_tasks_and_leaves_no_task_behind() -> None:
    slow = Recorder(delay=30)

    async def boom(_: Any) -> Any:
        await slow.first_start.wait()  # fail only once the slow call is in flight
        raise AgentError(errors.PERMANENT, "bad request")

    p = Pipeline([ParallelStep("p", {"slow": Step("s", slow), "fast": Step("f", boom)})])

    async def main() -> Any:
        before = asyncio.all_tasks()
        result = await Flujo(p).run_async("x")
        return result, asyncio.all_tasks() - before

    result, leftover = asyncio.run(asyncio.wait_for(main(), 10))
    assert result.status == "failed" and result.outcome.path == "p/fast/f"
    assert slow.cancelled == ["p/slow/s"] and slow.finished == []
    assert result.steps["p/slow/s"].phase == "cancelled"
    assert leftover == set()


def test_retries_run_with_backoff_and_count_usage_of_failed_attempts() -> None:
    flaky = Recorder(delay=0, fail_first=2)
    p = Pipeline([Step("a", flaky, retry={"maxAttempts": 3, "backoffSeconds": 0.01})])
    result = Flujo(p).run(None)
    assert result.success
    assert flaky.started == ["a#1", "a#2", "a#3"]
    assert result.usage == Usage(input_tokens=2, output_tokens=1)


def test_step_timeout_becomes_a_timeout_failure() -> None:
    slow = Recorder(delay=5)
    result = Flujo(Pipeline([Step("a", slow, timeout=0.05)])).run(None)
    assert result.outcome.error_class == errors.TIMEOUT
    assert "within 0.05s" in (result.outcome.message or "")
    assert slow.cancelled == ["a"]


def test_run_deadline_cancels_everything() -> None:
    slow = Recorder(delay=5)
    p = Pipeline([ParallelStep("p", {"a": Step("a", slow), "b": Step("b", slow)})], timeout=0.1)
    result = Flujo(p).run(None)
    assert result.outcome.reason == "DeadlineExceeded"
    assert sorted(slow.cancelled) == ["p/a/a", "p/b/b"]


def test_unexpected_exceptions_are_classified_not_raised() -> None:
    def buggy(_: Any) -> Any:
        return 1 / 0

    result = Flujo(Pipeline([Step("a", buggy)])).run(None)
    assert result.outcome.error_class == errors.AGENT_ERROR
    assert "ZeroDivisionError" in (result.outcome.message or "")


def test_caller_cancellation_stops_the_run_and_its_tasks() -> None:
    slow = Recorder(delay=30)

    async def main() -> None:
        task = asyncio.create_task(Flujo(Pipeline([Step("a", slow)])).run_async(None))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert slow.cancelled == ["a"]


def test_validation_reports_every_problem_before_running() -> None:
    p = Pipeline([Step("a", "nobody"), Step("a", "noone", input="{{ steps.zz.output }}")])
    with pytest.raises(PipelineValidationError) as info:
        Flujo(p)
    text = str(info.value)
    assert "unknown agent 'nobody'" in text and "unknown agent 'noone'" in text
    assert "duplicate step name 'a'" in text and "unknown step 'zz'" in text


def test_registry_metadata_and_lookup() -> None:
    registry = AgentRegistry(clock=lambda: "2026-01-01T00:00:00+00:00")
    entry = registry.register("up", str.upper, version="1.2", source="tests")
    assert (entry.version, entry.provenance, entry.registered_at) == (
        "1.2",
        "code",
        "2026-01-01T00:00:00+00:00",
    )
    assert "up" in registry and "builtin.upper" in registry.names()
    assert registry.missing(["up", "x", "y"]) == ["x", "y"]
    result = Flujo(Pipeline([Step("s", "up")]), agent_registry=registry).run("a")
    assert result.output == "A"


def test_observers_see_events_and_a_failing_one_is_disabled_not_fatal() -> None:
    seen: list[tuple[str, int]] = []

    class Counter:
        def observe(self, event: Any, state: Any, commands: Any) -> None:
            seen.append((type(event).__name__, len(commands)))

    class Broken:
        def observe(self, event: Any, state: Any, commands: Any) -> None:
            raise RuntimeError("exporter down")

    p = Pipeline([Step("a", "builtin.upper"), Step("b", "builtin.lower")])
    with pytest.warns(RuntimeWarning, match="Broken failed and was disabled"):
        result = Flujo(p, observers=[Broken(), Counter()]).run("x")
    assert result.output == "x"
    assert seen == [("RunStarted", 1), ("StepSucceeded", 1), ("StepSucceeded", 1)]
