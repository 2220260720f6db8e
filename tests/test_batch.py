"""Batched maps (issue #10): ``map.batchSize`` runs the body once per batch of items.

The body of a batched map receives the batch (a list) and must return one
result per item; the map's output is the same flat list an unbatched map
gives, ``maxConcurrency`` counts batches, ``onItemFailure`` applies per batch
and the governor checks after every batch's result.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
from flujo import AgentRegistry, Flujo, MapStep, Pipeline, Step, Usage
from flujo.agents.base import AgentOutput
from flujo.agents.builtin import BuiltinAgent
from flujo.domain import errors
from flujo.domain.dsl.convert import step_from_spec
from flujo.domain.dsl.step import AgentSink
from flujo.domain.validation import check_pipeline
from flujo.engine import CancelStep, LaunchStep, StepFailed, StepSucceeded
from flujo.spec import UsageLimits
from flujo.spec.loader import load_documents
from flujo.transcript.golden import compare, load_scenarios, stale_goldens
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.enginekit import Driver, agent, spec

ROOT = Path(__file__).resolve().parent.parent
BATCH_GOLDEN = ROOT / "golden" / "batch"


def batched(
    items: str = "input",
    size: int = 3,
    body: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "name": "each",
        "map": {"items": items, "batchSize": size, "steps": body or [agent("d")], **extra},
    }


def succeed(d: Driver, path: str, output: Any, cost: float = 0.0) -> None:
    launch = d.take(path)
    d.feed(
        StepSucceeded(path=path, attempt=launch.attempt, output=output, usage=Usage(cost_usd=cost))
    )


# --- the spec ----------------------------------------------------------------


def test_batch_size_is_camel_case_in_yaml_and_round_trips_through_the_dsl() -> None:
    p = spec(batched(size=50))
    assert p.steps[0].map is not None and p.steps[0].map.batch_size == 50
    assert p.to_data()["steps"][0]["map"]["batchSize"] == 50
    step = step_from_spec(p.steps[0])
    assert isinstance(step, MapStep) and step.batch_size == 50
    assert step.to_spec(AgentSink()) == p.steps[0]
    assert MapStep("m", "input", Step("d", "a")).to_spec(AgentSink()).map.batch_size is None  # type: ignore[union-attr]


PIPELINE_YAML = """\
apiVersion: flujo.dev/v1alpha1
kind: Pipeline
metadata: {name: p}
spec:
  steps:
    - name: each
      map:
        items: input
        batchSize: SIZE
        maxItems: 100
        steps:
          - {name: d, agent: builtin.echo}
"""


def test_batch_size_below_one_is_a_schema_error_naming_the_field() -> None:
    docs = load_documents(PIPELINE_YAML.replace("SIZE", "0"), "p.yaml")
    [problem] = docs.problems
    text = str(problem)
    assert "\n" not in text
    assert "spec.steps[0].map.batchSize" in text and "greater than or equal to 1" in text
    assert problem.line == 9


def test_batch_size_above_max_items_is_a_one_line_finding() -> None:
    docs = load_documents(PIPELINE_YAML.replace("SIZE", "500"), "p.yaml")
    assert not docs.problems
    [finding] = check_pipeline(docs.pipelines[0].spec)
    assert finding.loc == ("spec", "steps", 0, "map", "batchSize")
    assert finding.message == "batchSize 500 exceeds maxItems 100, so no batch could ever be full"
    docs = load_documents(PIPELINE_YAML.replace("SIZE", "100"), "p.yaml")
    assert not check_pipeline(docs.pipelines[0].spec)


def test_flujo_validate_rejects_a_bad_batch_size(tmp_path: Path) -> None:
    from flujo.cli.app import app
    from typer.testing import CliRunner

    path = tmp_path / "p.yaml"
    path.write_text(PIPELINE_YAML.replace("SIZE", "500"), encoding="utf-8")
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code != 0
    assert "spec.steps[0].map.batchSize: batchSize 500 exceeds maxItems 100" in result.output


# --- the machine ---------------------------------------------------------------


def test_batches_are_consecutive_slices_and_the_output_is_flat() -> None:
    d = Driver(spec(batched(size=3)))
    d.start(list("abcdefg"))
    assert d.launched() == ["each/batch-0/d", "each/batch-1/d", "each/batch-2/d"]
    inputs = {p: d.inflight[p].input for p in d.launched()}
    assert inputs == {
        "each/batch-0/d": ["a", "b", "c"],
        "each/batch-1/d": ["d", "e", "f"],
        "each/batch-2/d": ["g"],
    }
    assert d.state.steps["each"].scopes == ["batch-0", "batch-1", "batch-2"]
    # Results arrive out of order; the output follows the items.
    succeed(d, "each/batch-2/d", ["G"])
    succeed(d, "each/batch-0/d", ["A", "B", "C"])
    succeed(d, "each/batch-1/d", ("D", "E", "F"))
    assert d.finish is not None and d.finish.outcome.status == "succeeded"
    assert d.finish.outcome.output == list("ABCDEFG")


def test_item_is_the_batch_and_index_the_batch_number_in_templates() -> None:
    body = [
        agent("d", input={"n": "{{ index }}", "size": "{{ item | length }}", "xs": "{{ item }}"})
    ]
    d = Driver(spec(batched(size=2, body=body)))
    d.start([10, 20, 30])
    assert d.inflight["each/batch-0/d"].input == {"n": 0, "size": 2, "xs": [10, 20]}
    assert d.inflight["each/batch-1/d"].input == {"n": 1, "size": 1, "xs": [30]}


def test_a_multi_step_body_passes_the_batch_along() -> None:
    d = Driver(spec(batched(size=2, body=[agent("d"), agent("e")])))
    d.start([1, 2, 3])
    succeed(d, "each/batch-0/d", [1, 2])
    assert d.inflight["each/batch-0/e"].input == [1, 2]
    succeed(d, "each/batch-0/e", ["one", "two"])
    succeed(d, "each/batch-1/d", [3])
    succeed(d, "each/batch-1/e", ["three"])
    assert d.finish is not None and d.finish.outcome.output == ["one", "two", "three"]


def test_max_concurrency_counts_batches() -> None:
    d = Driver(spec(batched(size=10, maxConcurrency=2)))
    d.start(list(range(45)))
    assert d.launched() == ["each/batch-0/d", "each/batch-1/d"]
    assert d.state.steps["each"].queued == ["batch-2", "batch-3", "batch-4"]
    succeed(d, "each/batch-1/d", list(range(10, 20)))
    assert d.launched() == ["each/batch-0/d", "each/batch-2/d"]


def test_an_empty_list_gives_an_empty_output_without_launches() -> None:
    d = Driver(spec(batched()))
    cmds = d.start([])
    assert not [c for c in cmds if isinstance(c, LaunchStep)]
    assert d.finish is not None and d.finish.outcome.output == []


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (["A", "B"], "returned 2 results for 3 items"),
        ("ABC", "returned str"),
    ],
)
def test_a_batch_returning_the_wrong_number_of_results_fails_the_map(
    output: Any, expected: str
) -> None:
    d = Driver(spec(batched(size=3, maxConcurrency=1), agent("after")))
    d.start(list("abcdef"))
    succeed(d, "each/batch-0/d", output)
    assert d.finish is not None
    oc = d.finish.outcome
    assert oc.status == "failed" and oc.error_class == errors.SCHEMA
    assert oc.path == "each/batch-0"
    assert oc.message is not None and "\n" not in oc.message
    assert oc.message.startswith("step each/batch-0 failed (schema): the body's last step d ")
    assert expected in oc.message
    assert "one result per item" in oc.message
    assert "each/batch-1/d" not in d.inflight  # failFast: nothing else starts


def test_on_item_failure_applies_per_batch() -> None:
    d = Driver(spec(batched(size=2, onItemFailure="ignore")))
    d.start([1, 2, 3, 4, 5])
    launch = d.take("each/batch-1/d")
    d.feed(StepFailed(path=launch.path, attempt=launch.attempt, error_class=errors.PERMANENT))
    succeed(d, "each/batch-0/d", ["a", "b"])
    succeed(d, "each/batch-2/d", ["c", "d"])  # wrong length: this batch fails too
    assert d.finish is not None and d.finish.outcome.status == "succeeded"
    # Every item of a failed batch is None, as each failed item is in an unbatched map.
    assert d.finish.outcome.output == ["a", "b", None, None, None]
    phases = d.state.steps["each"].scope_phases
    assert phases == {"batch-0": "succeeded", "batch-1": "failed", "batch-2": "failed"}


def test_fail_fast_cancels_the_batches_in_flight() -> None:
    d = Driver(spec(batched(size=2)))
    d.start([1, 2, 3, 4, 5, 6])
    launch = d.take("each/batch-1/d")
    cmds = d.feed(
        StepFailed(path=launch.path, attempt=launch.attempt, error_class=errors.PERMANENT)
    )
    assert sorted(c.path for c in cmds if isinstance(c, CancelStep)) == [
        "each/batch-0/d",
        "each/batch-2/d",
    ]
    assert d.finish is not None and d.finish.outcome.path == "each/batch-1/d"


def test_a_breach_in_batch_k_cancels_batches_in_flight_and_launches_no_more() -> None:
    """Each batch is one agent call carrying its usage: the governor checks after each."""
    d = Driver(spec(batched(size=10, maxConcurrency=2)), UsageLimits(max_cost_usd=1.0))
    d.start(list(range(100)))
    assert d.launched() == ["each/batch-0/d", "each/batch-1/d"]
    for k in range(3):  # 0.3 each: $0.90 after batch 2, still under the limit
        succeed(d, f"each/batch-{k}/d", list(range(10)), cost=0.3)
    assert d.launched() == ["each/batch-3/d", "each/batch-4/d"]
    launches_before = d.state.launches
    succeed(d, "each/batch-3/d", list(range(10)), cost=0.3)  # $1.20 > $1.00
    assert d.state.launches == launches_before
    assert d.launched() == []  # batch-4 was cancelled, batches 5.. never launched
    assert [c.path for c in d.log if isinstance(c, CancelStep)] == ["each/batch-4/d"]
    launched = {c.path for c in d.log if isinstance(c, LaunchStep)}
    assert launched == {f"each/batch-{k}/d" for k in range(5)}
    assert d.finish is not None
    oc = d.finish.outcome
    assert oc.reason == "UsageLimitExceeded" and oc.error_class == errors.USAGE_LIMIT
    assert oc.message == "cost limit $1.00 exceeded at each/batch-3/d: $1.20 spent"
    # The batch that crossed the limit keeps its output; the others are recorded.
    assert d.state.steps["each/batch-3/d"].phase == "succeeded"
    assert d.state.steps["each/batch-4/d"].phase == "cancelled"


def test_launch_limits_count_calls_so_batching_fits_a_large_list() -> None:
    d = Driver(spec(batched(size=50)), UsageLimits(max_launches=20))
    d.start(list(range(1000)))
    assert len(d.launched()) == 20
    for path in d.launched():
        succeed(d, path, list(range(50)))
    assert d.finish is not None and d.finish.outcome.status == "succeeded"
    assert d.finish.outcome.output == list(range(50)) * 20


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(0, 30),
    size=st.integers(1, 12),
    concurrency=st.sampled_from([None, 1, 3]),
    data=st.data(),
)
def test_batched_output_equals_the_unbatched_output(
    n: int, size: int, concurrency: int | None, data: st.DataObject
) -> None:
    items = [f"x{i}" for i in range(n)]

    def run(batch_size: int | None) -> Any:
        mp: dict[str, Any] = {"items": "input", "steps": [agent("d")]}
        if batch_size is not None:
            mp["batchSize"] = batch_size
        if concurrency is not None:
            mp["maxConcurrency"] = concurrency
        d = Driver(spec({"name": "each", "map": mp}))
        d.start(items)
        while d.finish is None:
            assert d.inflight
            path = data.draw(st.sampled_from(d.launched()))
            value = d.inflight[path].input
            if concurrency is not None:
                assert len(d.inflight) <= concurrency
            upper = [v.upper() for v in value] if batch_size else value.upper()
            succeed(d, path, upper)
        assert d.finish.outcome.status == "succeeded"
        return d.finish.outcome.output

    assert run(size) == run(None) == [f"X{i}" for i in range(n)]


# --- the embedded runtime -------------------------------------------------------


def test_embedded_batches_run_concurrently_up_to_max_concurrency() -> None:
    calls: list[list[int]] = []
    in_flight = peak = 0

    async def square_all(xs: list[int]) -> list[int]:
        nonlocal in_flight, peak
        calls.append(xs)
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return [x * x for x in xs]

    step = MapStep("each", "input", Step("sq", square_all), batch_size=10, max_concurrency=3)
    result = Flujo(Pipeline([step])).run(list(range(95)))
    assert result.outcome.status == "succeeded"
    assert result.output == [x * x for x in range(95)]
    assert [len(c) for c in calls] == [10] * 9 + [5]
    assert peak == 3


def test_embedded_governor_stops_the_batches_after_the_one_that_crossed() -> None:
    calls = 0

    async def priced(xs: list[int]) -> AgentOutput:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.005)
        return AgentOutput(xs, Usage(input_tokens=len(xs), cost_usd=0.3))

    step = MapStep("each", "input", Step("llm", priced), batch_size=10, max_concurrency=1)
    result = Flujo(Pipeline([step]), usage_limits={"maxCostUsd": 1.0}).run(list(range(100)))
    assert result.outcome.reason == "UsageLimitExceeded"
    assert result.outcome.message == "cost limit $1.00 exceeded at each/batch-3/llm: $1.20 spent"
    assert calls == 4  # batches 4..9 never ran


def test_builtin_each_makes_any_transform_a_batch_agent() -> None:
    text = """\
apiVersion: flujo.dev/v1alpha1
kind: Agent
metadata: {name: shout-all}
spec: {type: builtin, builtin: upper, config: {each: true}}
---
apiVersion: flujo.dev/v1alpha1
kind: Pipeline
metadata: {name: p}
spec:
  steps:
    - name: each
      map:
        items: input
        batchSize: 2
        steps: [{name: shout, agent: shout-all}]
"""
    docs = load_documents(text, "p.yaml")
    assert not docs.problems
    registry = AgentRegistry()
    for manifest in docs.agents:
        registry.register_manifest(manifest)
    result = Flujo(docs.pipelines[0], agent_registry=registry).run(["a", "b", "c"])
    assert result.output == ["A", "B", "C"]


def test_builtin_each_refuses_an_input_that_is_not_a_list() -> None:
    from flujo.agents.base import AgentContext
    from flujo.domain.errors import AgentError

    shout = BuiltinAgent("upper", {"each": True})
    with pytest.raises(AgentError) as caught:
        shout.run_sync("abc", AgentContext("each/batch-0/shout", "shout"))
    assert caught.value.error_class == errors.SCHEMA
    assert caught.value.message == "upper (each: true): input must be a list, got str"
    assert (
        BuiltinAgent("upper").run_sync("abc", AgentContext("each/batch-0/shout", "shout")).output
        == "ABC"
    )


def test_batch_paths_give_valid_pod_names() -> None:
    from flujo_operator.builders import pod_name

    name = pod_name("run-1", "each/batch-3/d", 1)
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", name)
    assert name != pod_name("run-1", "each/item-3/d", 1)


# --- golden transcripts ---------------------------------------------------------

BATCH_SCENARIOS = load_scenarios(BATCH_GOLDEN / "scenarios.yaml")


@pytest.mark.parametrize("scenario", BATCH_SCENARIOS, ids=[s.name for s in BATCH_SCENARIOS])
def test_batched_map_transcript_matches_golden(
    scenario: Any, request: pytest.FixtureRequest
) -> None:
    comparison = compare(scenario, BATCH_GOLDEN)
    if comparison.unmet:
        pytest.fail(comparison.report(), pytrace=False)
    if request.config.getoption("--update-goldens", default=False):
        if comparison.changed:
            comparison.write()
        return
    if comparison.changed:
        pytest.fail(
            comparison.report()
            + "\n\nIf the change is intended: pytest tests/test_batch.py --update-goldens",
            pytrace=False,
        )


def test_no_stale_batch_goldens() -> None:
    assert not stale_goldens(BATCH_SCENARIOS, BATCH_GOLDEN)
