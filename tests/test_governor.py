"""The usage governor: limits enforced inside the state machine, for both executors."""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import pytest
from flujo import (
    AgentManifest,
    AgentOutput,
    AgentRegistry,
    Flujo,
    LoopStep,
    ParallelStep,
    Pipeline,
    Step,
    Usage,
)
from flujo.domain import errors
from flujo.engine import (
    CancelStep,
    FinishRun,
    LaunchStep,
    RunStarted,
    StepFailed,
    StepSucceeded,
    advance,
)
from flujo.engine import new_run as engine_new_run
from flujo.observability.metrics import FlujoMetrics, MetricsObserver
from flujo.security.audit import AuditLog, AuditObserver, StreamSink
from flujo.spec import PipelineSpec, UsageLimits
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.enginekit import Driver, agent, spec
from tests.servers import OpenAIServer, completion
from tests.test_machine_properties import pipelines


def paid(cost: float, tokens: int = 0, output: Any = "ok") -> Any:
    def call(data: Any) -> AgentOutput:
        return AgentOutput(output, Usage(input_tokens=tokens, cost_usd=cost))

    return call


def done(d: Driver, path: str, cost: float = 0.0, tokens: int = 0, output: Any = "ok") -> list:
    launch = d.take(path)
    return d.feed(
        StepSucceeded(
            path=path,
            attempt=launch.attempt,
            output=output,
            usage=Usage(input_tokens=tokens, cost_usd=cost),
        )
    )


def test_breach_mid_loop_stops_after_that_iteration() -> None:
    counter = iter(range(100))

    def step(data: Any) -> AgentOutput:
        return AgentOutput(next(counter), Usage(cost_usd=0.2))

    p = Pipeline([LoopStep("refine", Step("work", step), max_iterations=10)])
    result = Flujo(p, usage_limits={"maxCostUsd": 0.5}).run(None)
    assert result.outcome.reason == "UsageLimitExceeded"
    assert result.outcome.message == (
        "cost limit $0.50 exceeded at refine/iter-3/work (iteration 3): $0.60 spent"
    )
    assert result.state.steps["refine"].iteration == 3
    assert "refine/iter-4/work" not in result.steps
    # partial results: the iteration that crossed the limit is recorded
    assert result.steps["refine/iter-3/work"].output == 2
    assert result.state.launches == 3


def test_breach_in_one_branch_cancels_the_others_and_keeps_partial_outputs() -> None:
    d = Driver(
        spec(
            {
                "name": "fanout",
                "parallel": {
                    "branches": [
                        {"name": "a", "steps": [agent("first"), agent("second")]},
                        {"name": "b", "steps": [agent("summarise")]},
                        {"name": "c", "steps": [agent("other")]},
                    ]
                },
            }
        ),
        UsageLimits(max_cost_usd=0.5),
    )
    d.start("doc")
    done(d, "fanout/a/first", cost=0.1, output="A1")
    cmds = done(d, "fanout/b/summarise", cost=0.45, output="B")
    cancels = [c.path for c in cmds if isinstance(c, CancelStep)]
    assert cancels == ["fanout/a/second", "fanout/c/other"]
    assert not [c for c in cmds if isinstance(c, LaunchStep)]
    finish = cmds[-1]
    assert isinstance(finish, FinishRun)
    assert finish.outcome.message == "cost limit $0.50 exceeded at fanout/b/summarise: $0.55 spent"
    assert d.state.steps["fanout/a/first"].output == "A1"
    assert d.state.steps["fanout/b/summarise"].output == "B"
    assert d.state.breach is not None and d.state.breach.path == "fanout/b/summarise"
    # a late answer of a cancelled branch is accounted, but launches nothing
    late = d.feed(StepSucceeded(path="fanout/c/other", attempt=1, usage=Usage(cost_usd=0.2)))
    assert late == [] and abs(d.state.usage.cost_usd - 0.75) < 1e-9


def test_exactly_at_the_limit_is_not_a_breach_but_refuses_the_next_launch() -> None:
    d = Driver(spec(agent("a"), agent("b")), UsageLimits(max_cost_usd=0.5))
    d.start(None)
    [finish] = done(d, "a", cost=0.5)
    assert finish.outcome.reason == "UsageLimitExceeded"
    assert finish.outcome.message == "cost limit $0.50 reached before launching b: $0.50 spent"
    assert d.state.breach is not None and d.state.breach.when == "before"
    d = Driver(spec(agent("a")), UsageLimits(max_cost_usd=0.5))
    d.start(None)
    [finish] = done(d, "a", cost=0.5)
    assert finish.outcome.status == "succeeded"


def test_float_sums_at_the_limit_do_not_breach() -> None:
    d = Driver(spec(agent("a"), agent("b"), agent("c")), UsageLimits(max_cost_usd=0.3))
    d.start(None)
    done(d, "a", cost=0.1)
    [launch] = done(d, "b", cost=0.1)
    assert isinstance(launch, LaunchStep)
    [finish] = done(d, "c", cost=0.1)
    assert finish.outcome.status == "succeeded"


def test_limits_of_zero_launch_nothing() -> None:
    for limits in (
        UsageLimits(max_cost_usd=0),
        UsageLimits(max_tokens=0),
        UsageLimits(max_launches=0),
    ):
        d = Driver(spec(agent("a")), limits)
        [finish] = d.start(None)
        assert finish.outcome.reason == "UsageLimitExceeded"
        assert d.state.launches == 0


def test_token_and_cost_limits_are_independent() -> None:
    p = Pipeline([Step("a", paid(0.01, tokens=600)), Step("b", paid(0.01, tokens=600))])
    by_tokens = Flujo(p, usage_limits={"maxTokens": 1000}).run(None)
    assert by_tokens.outcome.message == "token limit 1000 exceeded at b: 1200 tokens used"
    by_cost = Flujo(p, usage_limits={"maxCostUsd": 1.0}).run(None)
    assert by_cost.success and by_cost.usage == Usage(input_tokens=1200, cost_usd=0.02)


def test_retries_consume_budget() -> None:
    retry = {"maxAttempts": 5, "backoffSeconds": 0}
    d = Driver(spec(agent("a", retry=retry)), UsageLimits(max_cost_usd=0.25))
    d.start(None)
    for _ in range(2):
        launch = d.take("a")
        [again] = d.feed(
            StepFailed(
                path="a",
                attempt=launch.attempt,
                error_class=errors.TRANSIENT,
                usage=Usage(cost_usd=0.1),
            )
        )
        assert again.attempt == launch.attempt + 1
    launch = d.take("a")
    [finish] = d.feed(
        StepFailed(
            path="a",
            attempt=launch.attempt,
            error_class=errors.TRANSIENT,
            usage=Usage(cost_usd=0.1),
        )
    )
    assert finish.outcome.message == "cost limit $0.25 exceeded at a: $0.30 spent"
    assert d.state.steps["a"].attempt == 3


def test_max_launches_counts_retries() -> None:
    d = Driver(
        spec(agent("a", retry={"maxAttempts": 5, "backoffSeconds": 0})), UsageLimits(max_launches=2)
    )
    d.start(None)
    launch = d.take("a")
    d.feed(StepFailed(path="a", attempt=launch.attempt, error_class=errors.TRANSIENT))
    launch = d.take("a")
    [finish] = d.feed(StepFailed(path="a", attempt=launch.attempt, error_class=errors.TRANSIENT))
    assert finish.outcome.message == "launch limit 2 reached before launching a: 2 launches made"


def test_loop_in_parallel_breach_names_branch_and_iteration() -> None:
    p = Pipeline(
        [
            ParallelStep(
                "fan",
                {
                    "cheap": Step("quick", paid(0.0)),
                    "costly": LoopStep("grind", Step("work", paid(0.2)), max_iterations=5),
                },
            )
        ]
    )
    result = Flujo(p, usage_limits={"maxCostUsd": 0.5}).run(None)
    assert result.outcome.message == (
        "cost limit $0.50 exceeded at fan/costly/grind/iter-3/work (iteration 3): $0.60 spent"
    )
    assert result.steps["fan/cheap/quick"].phase == "succeeded"


def test_parallel_in_loop_stops_the_loop_and_cancels_branches() -> None:
    d = Driver(
        spec(
            {
                "name": "outer",
                "loop": {
                    "maxIterations": 4,
                    "steps": [
                        {
                            "name": "fan",
                            "parallel": {
                                "branches": [
                                    {"name": "x", "steps": [agent("px")]},
                                    {"name": "y", "steps": [agent("py")]},
                                ]
                            },
                        }
                    ],
                },
            }
        ),
        UsageLimits(max_cost_usd=1.0),
    )
    d.start(None)
    done(d, "outer/iter-1/fan/x/px", cost=0.3)
    done(d, "outer/iter-1/fan/y/py", cost=0.3)
    assert d.launched() == ["outer/iter-2/fan/x/px", "outer/iter-2/fan/y/py"]
    cmds = done(d, "outer/iter-2/fan/y/py", cost=0.5)
    assert [c.path for c in cmds if isinstance(c, CancelStep)] == ["outer/iter-2/fan/x/px"]
    assert cmds[-1].outcome.message == (
        "cost limit $1.00 exceeded at outer/iter-2/fan/y/py (iteration 2): $1.10 spent"
    )
    assert d.state.steps["outer"].phase == "cancelled"


def test_reservation_keeps_parallel_branches_within_budget() -> None:
    branches = {
        "name": "fan",
        "parallel": {
            "branches": [{"name": f"b{i}", "steps": [agent(f"s{i}", "llm")]} for i in range(4)]
        },
    }
    state = engine_new_run(spec(branches), UsageLimits(max_cost_usd=1.0), {"llm": 0.4})
    state, cmds = advance(state, RunStarted())
    # two calls fit under $1.00 with $0.40 reserved each; the others wait
    assert [c.path for c in cmds] == ["fan/b0/s0", "fan/b1/s1"]
    assert [d.path for d in state.deferred] == ["fan/b2/s2", "fan/b3/s3"]
    state, cmds = advance(state, StepSucceeded(path="fan/b0/s0", usage=Usage(cost_usd=0.3)))
    assert cmds == []  # 0.3 spent + 0.4 reserved for b1 + 0.4 for b2 would be 1.1
    state, cmds = advance(state, StepSucceeded(path="fan/b1/s1", usage=Usage(cost_usd=0.3)))
    assert [c.path for c in cmds] == ["fan/b2/s2"]  # 0.6 spent + 0.4 reserved fits
    state, cmds = advance(state, StepSucceeded(path="fan/b2/s2", usage=Usage(cost_usd=0.3)))
    # nothing in flight: the last call launches though its worst case would overshoot
    assert [c.path for c in cmds] == ["fan/b3/s3"]
    state, cmds = advance(state, StepSucceeded(path="fan/b3/s3", usage=Usage(cost_usd=0.3)))
    assert cmds[-1].outcome.reason == "UsageLimitExceeded"
    assert state.usage.cost_usd <= 1.0 + 0.4


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pipelines(), st.data())
def test_overspend_is_bounded_and_nothing_launches_after_a_breach(
    raw: dict[str, Any], data: st.DataObject
) -> None:
    """At the breach, the recorded total exceeds the limit by at most the step that crossed it;
    with reservation, the final total exceeds it by at most one call's cap."""
    pipeline = PipelineSpec.model_validate(raw)
    limit = data.draw(st.sampled_from([0.05, 0.1, 0.3]))
    cap = 0.05
    reserve = data.draw(st.booleans())
    state = engine_new_run(
        pipeline, UsageLimits(max_cost_usd=limit), {"a": cap, "b": cap} if reserve else None
    )
    state, cmds = advance(state, RunStarted(input="x"))
    inflight = {c.path: c for c in cmds if isinstance(c, LaunchStep)}
    largest = 0.0
    for _ in range(300):
        if state.finished or not inflight:
            break
        path = data.draw(st.sampled_from(sorted(inflight)))
        launch = inflight.pop(path)
        cost = data.draw(st.sampled_from([0.0, 0.01, 0.02, 0.05]))
        largest = max(largest, cost)
        before = state.usage.cost_usd
        breach_before = state.breach
        if data.draw(st.integers(0, 9)) < 8:
            event: Any = StepSucceeded(
                path=path, attempt=launch.attempt, output="x", usage=Usage(cost_usd=cost)
            )
        else:
            event = StepFailed(
                path=path,
                attempt=launch.attempt,
                error_class=errors.TRANSIENT,
                usage=Usage(cost_usd=cost),
            )
        state, cmds = advance(state, event)
        if breach_before is None and state.breach is not None and state.breach.when == "after":
            assert before <= limit + 1e-9
            assert state.usage.cost_usd <= limit + cost + 1e-9
        if state.breach is not None:
            assert not [c for c in cmds if isinstance(c, LaunchStep)]
        for c in cmds:
            if isinstance(c, LaunchStep):
                inflight[c.path] = c
            elif isinstance(c, CancelStep):
                inflight.pop(c.path, None)
    assert state.usage.cost_usd <= limit + largest + 1e-9
    if reserve:
        assert state.usage.cost_usd <= limit + cap + 1e-9


def test_cancelled_branch_drops_its_http_call(openai_server: OpenAIServer) -> None:
    """A breach in one branch cancels the other's in-flight LLM call: the server sees the
    connection dropped and no further call arrives."""
    openai_server.script(completion("slow answer", delay=30))
    registry = AgentRegistry()
    registry.register_manifest(
        AgentManifest.model_validate(
            {
                "apiVersion": "flujo.dev/v1alpha1",
                "kind": "Agent",
                "metadata": {"name": "llm"},
                "spec": {
                    "type": "openai",
                    "model": "m",
                    "endpoint": openai_server.base_url,
                    "pricing": {"inputPer1k": 0.01, "outputPer1k": 0.01},
                },
            }
        )
    )

    async def expensive(data: Any) -> AgentOutput:
        # cross the limit only once the LLM call is really in flight at the server
        arrived = await asyncio.to_thread(
            openai_server.wait_until, lambda: openai_server.calls >= 1
        )
        assert arrived
        return AgentOutput("spent", Usage(cost_usd=1.0))

    p = Pipeline([ParallelStep("fan", {"llm": Step("ask", "llm"), "tool": Step("pay", expensive)})])
    result = Flujo(p, agent_registry=registry, usage_limits={"maxCostUsd": 0.5}).run("q")
    assert result.outcome.reason == "UsageLimitExceeded"
    assert result.steps["fan/llm/ask"].phase == "cancelled"
    assert openai_server.wait_until(lambda: openai_server.cancelled == 1)
    assert openai_server.calls == 1 and openai_server.successful == 0


def test_results_queued_when_a_breach_stops_the_run_still_count() -> None:
    """Calls that completed while the breach was being decided spent their tokens.

    Both branches finish in the same event-loop turn, so the second result is
    already queued when the first one crosses the limit: the run stops, and the
    ledger, the event log and the audit of usage still include the second call.
    """

    async def costly(data: Any) -> AgentOutput:
        await asyncio.sleep(0)
        return AgentOutput(data, Usage(input_tokens=10, cost_usd=0.6))

    fan = ParallelStep(
        "fan",
        branches={"a": [Step("a1", agent=costly)], "b": [Step("b1", agent=costly)]},
    )
    metrics = FlujoMetrics()
    audit_out = io.StringIO()
    observers = [
        MetricsObserver(metrics, pipeline="fan"),
        AuditObserver(AuditLog([StreamSink(audit_out)]), "fan"),
    ]
    flujo = Flujo(Pipeline([fan]), usage_limits={"maxCostUsd": 0.5}, observers=observers)
    result = flujo.run("x")
    assert result.outcome.reason == "UsageLimitExceeded"
    succeeded = [e for e in result.events if isinstance(e, StepSucceeded)]
    assert sorted(e.path for e in succeeded) == ["fan/a/a1", "fan/b/b1"]
    assert result.usage.cost_usd == 1.2
    assert result.usage.input_tokens == 20
    # The observers count the late call under the same run, without reopening it.
    spent = metrics.registry.get_sample_value(
        "flujo_cost_usd_total", {"pipeline": "fan", "agent": "costly", "model": ""}
    )
    assert spent == 1.2
    lines = [json.loads(line) for line in audit_out.getvalue().splitlines()]
    calls = [e for e in lines if e["event"] == "agent.call"]
    assert len(calls) == 2 and len({e["runId"] for e in lines}) == 1
    assert [e["event"] for e in lines].count("run.started") == 1


def test_a_python_agent_can_declare_its_cost_cap_for_reservation() -> None:
    """``register(..., max_cost_per_call=)`` turns on reservation for code agents."""
    started: list[str] = []

    async def costly(data: Any) -> AgentOutput:
        started.append(str(data))
        await asyncio.sleep(0.01)
        return AgentOutput(data, Usage(cost_usd=0.3))

    registry = AgentRegistry()
    registry.register("costly", costly, max_cost_per_call=0.3)
    fan = ParallelStep(
        "fan", branches={k: [Step(f"{k}1", agent="costly")] for k in ("a", "b", "c", "d")}
    )
    result = Flujo(Pipeline([fan]), agent_registry=registry, usage_limits={"maxCostUsd": 0.7}).run(
        "x"
    )
    # Without reservation all four start at once and spend 1.2; with it, two fit
    # (0.6), a third waits for budget, runs alone and crosses: 0.9 at most.
    assert result.outcome.reason == "UsageLimitExceeded"
    assert result.usage.cost_usd <= 0.7 + 0.3 + 1e-9
    assert len(started) == 3
    with pytest.raises(ValueError, match="max_cost_per_call"):
        registry.register("bad", costly, max_cost_per_call=-1)
