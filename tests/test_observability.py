"""Metrics: what a run reports, bounded cardinality, the executor hooks, operator helpers."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from flujo import AgentContext, AgentError, AgentOutput, Flujo, ParallelStep, Pipeline, Step, Usage
from flujo.agents.registry import AgentRegistry
from flujo.domain import errors
from flujo.engine import Command, Event, LaunchStep, RunState
from flujo.observability import (
    AgentInfo,
    agent_infos,
    call_started,
    rate_limit_waited,
    record_advance,
    start_observability,
)
from flujo.observability.anomaly import AnomalyConfig, AnomalyDetector
from flujo.observability.metrics import (
    ALLOWED_LABELS,
    CATALOGUE,
    OTHER,
    FlujoMetrics,
    MetricsObserver,
    api_error_class,
    pod_queue_seconds,
    serve_metrics,
)
from flujo.resilience.breaker import BreakerRegistry
from flujo.spec.loader import load_documents
from flujo.spec.pipeline import PipelineManifest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

SCRIPTED = """
apiVersion: flujo.dev/v1alpha1
kind: Agent
metadata: {name: writer}
spec:
  type: scripted
  model: gpt-test
  responses:
    - output: "a draft"
      usage: {inputTokens: 100, outputTokens: 50, costUsd: 0.01}
---
apiVersion: flujo.dev/v1alpha1
kind: Agent
metadata: {name: critic}
spec:
  type: scripted
  model: critic-model
  responses:
    - output: "fine"
      usage: {inputTokens: 10, outputTokens: 5, costUsd: 0.001}
---
apiVersion: flujo.dev/v1alpha1
kind: Pipeline
metadata: {name: review}
spec:
  steps:
    - {name: write, agent: writer}
    - {name: check, agent: critic}
"""


def load(text: str) -> tuple[PipelineManifest, AgentRegistry]:
    """A pipeline and a registry with its agents, from YAML text."""
    docs = load_documents(text)
    docs.raise_for_problems()
    registry = AgentRegistry()
    for agent in docs.agents:
        registry.register_manifest(agent)
    return docs.pipelines[0], registry


def load_example(name: str) -> tuple[PipelineManifest, AgentRegistry]:
    return load((EXAMPLES / name).read_text(encoding="utf-8"))


class Ticks:
    """A monotonic clock advancing by ``step`` at every reading."""

    def __init__(self, step: float = 0.5) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        value = self.now
        self.now += self.step
        return value


def value(metrics: FlujoMetrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def series(metrics: FlujoMetrics) -> list[tuple[str, dict[str, str]]]:
    return [
        (sample.name, dict(sample.labels))
        for family in metrics.registry.collect()
        for sample in family.samples
    ]


def run(
    manifest: Any,
    registry: AgentRegistry | None,
    observers: list[Any],
    data: Any = "x",
    **kwargs: Any,
) -> Any:
    return Flujo(manifest, agent_registry=registry, observers=observers, **kwargs).run(data)


# --- what a run reports -------------------------------------------------------------------


def test_a_linear_run_counts_runs_launches_and_step_durations() -> None:
    manifest, registry = load_example("linear.yaml")
    metrics = FlujoMetrics()
    observer = MetricsObserver(metrics, "linear", clock=Ticks(0.5))
    assert run(manifest, registry, [observer], "hello").success
    assert value(metrics, "flujo_runs_started_total", pipeline="linear") == 1
    assert (
        value(
            metrics,
            "flujo_runs_finished_total",
            pipeline="linear",
            outcome="succeeded",
            reason="Succeeded",
        )
        == 1
    )
    assert value(metrics, "flujo_runs_active", pipeline="linear") == 0
    for agent in ("builtin.strip", "builtin.upper", "headline"):
        assert value(metrics, "flujo_step_launches_total", pipeline="linear", agent=agent) == 1
        labels = {"pipeline": "linear", "agent": agent, "outcome": "succeeded"}
        # Sync agents run inline: launch at one observe, the call start (one tick),
        # the result at the next observe (another tick).
        assert value(metrics, "flujo_step_duration_seconds_count", **labels) == 1
        assert value(metrics, "flujo_step_duration_seconds_sum", **labels) == 1.0
    # Four events (start + three results) and three call starts, one tick each.
    assert (
        value(metrics, "flujo_run_duration_seconds_sum", pipeline="linear", outcome="succeeded")
        == 3.0
    )
    assert observer.tracked_runs == 0


def test_tokens_and_cost_are_counted_by_agent_and_model_and_per_run() -> None:
    manifest, registry = load(SCRIPTED)
    metrics = FlujoMetrics()
    observer = MetricsObserver(metrics, "review", agents=agent_infos(registry))
    for _ in range(3):
        assert run(manifest, registry, [observer]).success
    tokens = "flujo_tokens_total"
    w = {"pipeline": "review", "agent": "writer", "model": "gpt-test"}
    c = {"pipeline": "review", "agent": "critic", "model": "critic-model"}
    assert value(metrics, tokens, **w, direction="input") == 300
    assert value(metrics, tokens, **w, direction="output") == 150
    assert value(metrics, tokens, **c, direction="input") == 30
    assert value(metrics, tokens, **c, direction="output") == 15
    assert value(metrics, "flujo_cost_usd_total", **w) == pytest.approx(0.03)
    assert value(metrics, "flujo_cost_usd_total", **c) == pytest.approx(0.003)
    # Per-run histograms: _sum / _count is the cost (tokens) per run.
    assert value(metrics, "flujo_run_cost_usd_count", pipeline="review") == 3
    assert value(metrics, "flujo_run_cost_usd_sum", pipeline="review") == pytest.approx(0.033)
    assert value(metrics, "flujo_run_tokens_sum", pipeline="review") == 3 * 165


class Flaky:
    """Fails ``failures`` times with ``error_class``, then answers; reports usage each time."""

    def __init__(self, failures: int, error_class: str = errors.TRANSIENT) -> None:
        self.failures = failures
        self.error_class = error_class
        self.calls = 0

    def __call__(self, data: Any) -> AgentOutput:
        self.calls += 1
        if self.calls <= self.failures:
            raise AgentError(self.error_class, "boom", usage=Usage(input_tokens=7))
        return AgentOutput("ok", Usage(input_tokens=7, output_tokens=3))


def test_retries_fallbacks_and_failures_are_counted_once_each() -> None:
    flaky, broken, backup = Flaky(2), Flaky(99, errors.PERMANENT), Flaky(0)
    pipeline = Pipeline(
        [
            Step("a", flaky, retry={"maxAttempts": 3, "backoffSeconds": 0}),
            Step("b", broken, fallback=backup),
        ]
    )
    metrics = FlujoMetrics()
    assert run(pipeline, None, [MetricsObserver(metrics, "p")]).success
    assert value(metrics, "flujo_step_retries_total", pipeline="p", agent="Flaky") == 2
    assert value(metrics, "flujo_step_launches_total", pipeline="p", agent="Flaky") == 3
    failures = "flujo_step_failures_total"
    assert value(metrics, failures, pipeline="p", agent="Flaky", error_class="transient") == 2
    assert value(metrics, failures, pipeline="p", agent="Flaky-2", error_class="permanent") == 1
    # The switch to the fallback is a fallback, not a retry.
    assert value(metrics, "flujo_step_fallbacks_total", pipeline="p", agent="Flaky-3") == 1
    assert value(metrics, "flujo_step_retries_total", pipeline="p", agent="Flaky-3") == 0
    # Failed attempts' tokens count: 2 + 1 failures and 2 successes of 7 input tokens.
    assert value(
        metrics, "flujo_tokens_total", pipeline="p", agent="Flaky", model="", direction="input"
    ) == (21)


def test_a_governor_breach_is_counted_by_limit() -> None:
    manifest, registry = load(SCRIPTED)
    metrics = FlujoMetrics()
    result = run(
        manifest, registry, [MetricsObserver(metrics, "review")], usage_limits={"maxCostUsd": 0.005}
    )
    assert result.outcome.reason == "UsageLimitExceeded"
    assert value(metrics, "flujo_governor_breaches_total", pipeline="review", limit="cost") == 1
    assert (
        value(
            metrics,
            "flujo_runs_finished_total",
            pipeline="review",
            outcome="failed",
            reason="UsageLimitExceeded",
        )
        == 1
    )


def test_a_deadline_counts_as_a_seconds_breach_and_cancelled_steps_have_a_duration() -> None:
    async def slow(data: Any) -> str:
        await asyncio.sleep(30)
        return "late"

    metrics = FlujoMetrics()
    pipeline = Pipeline([ParallelStep("p", {"x": Step("s1", slow), "y": Step("s2", slow)})])
    result = run(pipeline, None, [MetricsObserver(metrics, "p")], usage_limits={"maxSeconds": 0.2})
    assert result.outcome.reason == "DeadlineExceeded"
    assert value(metrics, "flujo_governor_breaches_total", pipeline="p", limit="seconds") == 1
    labels = {"pipeline": "p", "agent": "slow", "outcome": "cancelled"}
    assert value(metrics, "flujo_step_duration_seconds_count", **labels) == 2
    assert value(metrics, "flujo_step_duration_seconds_sum", **labels) >= 0.3


def test_finished_runs_feed_the_anomaly_detector() -> None:
    manifest, registry = load(SCRIPTED)
    metrics = FlujoMetrics()
    detector = AnomalyDetector(AnomalyConfig(window=10, min_runs=3))
    observer = MetricsObserver(metrics, "review", anomaly=detector)
    for _ in range(4):
        run(manifest, registry, [observer])
    score = value(metrics, "flujo_run_anomaly_score", pipeline="review", metric="cost")
    assert score == 0.0
    assert value(metrics, "flujo_run_anomalies_total", pipeline="review", metric="cost") == 0
    assert len(detector.baselines["review"].cost) == 4


# --- executor hooks -------------------------------------------------------------------


class AdvanceTimer:
    """Stands in for the executor's ``record_advance`` call (placed before other observers)."""

    def observe(self, event: Event, state: RunState, commands: list[Command]) -> None:
        record_advance(event, 2e-5)


def test_overhead_queueing_and_rate_limit_waits_reach_the_bound_observer() -> None:
    clock = Ticks(0.25)

    async def agent(data: Any, context: AgentContext) -> str:
        # What the executor does right before calling an agent, and a rate limiter after waiting.
        call_started(
            LaunchStep(
                path=context.step_path,
                step=context.step_name,
                agent=context.agent_name,
                attempt=context.attempt,
            )
        )
        rate_limit_waited(context.agent_name, 0.5)
        return "ok"

    pipeline = Pipeline([Step("a", agent), Step("b", agent)])
    metrics = FlujoMetrics()
    observer = MetricsObserver(metrics, "p", clock=clock)
    assert run(pipeline, None, [AdvanceTimer(), observer]).success
    assert value(metrics, "flujo_orchestration_overhead_seconds_count", pipeline="p") == 3
    assert value(metrics, "flujo_orchestration_overhead_seconds_sum", pipeline="p") == (
        pytest.approx(6e-5)
    )
    assert value(metrics, "flujo_step_queue_seconds_count", pipeline="p", agent="agent") == 2
    assert value(metrics, "flujo_step_queue_seconds_sum", pipeline="p", agent="agent") == 0.5
    assert value(metrics, "flujo_rate_limit_wait_seconds_count", agent="agent") == 2
    # Outside a run nobody is bound: the hooks are no-ops.
    call_started(LaunchStep(path="a", step="a", agent="agent"))
    assert value(metrics, "flujo_step_queue_seconds_count", pipeline="p", agent="agent") == 2


def test_concurrent_runs_of_one_observer_keep_their_calls_apart() -> None:
    async def agent(data: Any, context: AgentContext) -> str:
        await asyncio.sleep(0.01)
        call_started(
            LaunchStep(path=context.step_path, step=context.step_name, agent=context.agent_name)
        )
        return "ok"

    metrics = FlujoMetrics()
    observer = MetricsObserver(metrics, "p")
    flujo = Flujo(Pipeline([Step("a", agent)]), observers=[observer])

    async def main() -> list[Any]:
        return await asyncio.gather(*(flujo.run_async(i) for i in range(5)))

    assert all(r.success for r in asyncio.run(main()))
    assert value(metrics, "flujo_step_queue_seconds_count", pipeline="p", agent="agent") == 5
    assert (
        value(
            metrics,
            "flujo_runs_finished_total",
            pipeline="p",
            outcome="succeeded",
            reason="Succeeded",
        )
        == 5
    )
    assert observer.tracked_runs == 0


def test_the_runtime_reports_overhead_and_queueing_once_wired() -> None:
    """Passes once flujo/runtime reports ``record_advance`` and ``call_started``."""
    manifest, registry = load_example("linear.yaml")
    metrics = FlujoMetrics()
    assert run(manifest, registry, [MetricsObserver(metrics, "linear")], "hi").success
    overhead = value(metrics, "flujo_orchestration_overhead_seconds_count", pipeline="linear")
    if overhead == 0:
        pytest.skip("the runtime does not call flujo.observability.record_advance yet")
    assert overhead == 4
    queued = sum(
        value(metrics, "flujo_step_queue_seconds_count", pipeline="linear", agent=agent)
        for agent in ("builtin.strip", "builtin.upper", "headline")
    )
    assert queued == 3


# --- cardinality ------------------------------------------------------------------------

MANY_PATHS = """
apiVersion: flujo.dev/v1alpha1
kind: Agent
metadata: {name: llm}
spec:
  type: scripted
  model: m
  responses:
    - match: "^stop"
      output: "DONE"
      usage: {inputTokens: 3, outputTokens: 1, costUsd: 0.0001}
    - output: "more"
      usage: {inputTokens: 3, outputTokens: 1, costUsd: 0.0001}
---
apiVersion: flujo.dev/v1alpha1
kind: Pipeline
metadata: {name: many}
spec:
  steps:
    - name: split
      agent: builtin.split-lines
    - name: each
      map:
        items: "steps.split.output"
        steps:
          - name: ask
            agent: llm
    - name: refine
      loop:
        maxIterations: 30
        exitWhen: "iteration >= (input | length) % 17 + 1"
        steps:
          - name: again
            agent: llm
"""


def test_series_stay_bounded_whatever_the_runs_ids_and_step_paths() -> None:
    manifest, registry = load(MANY_PATHS)
    metrics = FlujoMetrics()
    observer = MetricsObserver(metrics, "many", agents=agent_infos(registry))

    def batch(start: int, count: int) -> None:
        for i in range(start, start + count):
            lines = "\n".join(f"line {i}-{j}" for j in range(i % 23 + 1))
            assert run(manifest, registry, [observer], lines, seed=i).success

    batch(0, 30)
    after_30 = series(metrics)
    batch(30, 270)
    after_300 = series(metrics)
    # Hundreds of distinct paths (each/item-N/ask, refine/iter-N/again) and inputs,
    # yet the same series as after a few runs.
    assert {(n, tuple(sorted(lbl.items()))) for n, lbl in after_300} == {
        (n, tuple(sorted(lbl.items()))) for n, lbl in after_30
    }
    assert len(after_300) < 400
    for _, labels in after_300:
        assert set(labels) <= ALLOWED_LABELS | {"le"}
        for text in labels.values():
            assert "/" not in text and not re.search(r"(item|iter)-\d|line \d", text)
    assert (
        value(
            metrics,
            "flujo_runs_finished_total",
            pipeline="many",
            outcome="succeeded",
            reason="Succeeded",
        )
        == 300
    )
    assert observer.tracked_runs == 0


def test_label_values_are_capped_and_closed_vocabularies_enforced() -> None:
    metrics = FlujoMetrics(max_label_values=5)
    for i in range(50):
        metrics.inc("flujo_runs_started", pipeline=f"pipeline-{i}")
    pipelines = {lbl["pipeline"] for n, lbl in series(metrics) if n == "flujo_runs_started_total"}
    assert len(pipelines) == 6 and OTHER in pipelines
    assert value(metrics, "flujo_runs_started_total", pipeline=OTHER) == 45
    metrics.inc("flujo_step_failures", pipeline="pipeline-0", agent="a", error_class="made up text")
    assert (
        value(
            metrics,
            "flujo_step_failures_total",
            pipeline="pipeline-0",
            agent="a",
            error_class=OTHER,
        )
        == 1
    )
    assert metrics.label("model", "y" * 1000) == "y" * 128


def test_the_catalogue_uses_only_allowed_labels_and_never_ids_or_paths() -> None:
    for metric in CATALOGUE:
        assert set(metric.labels) <= ALLOWED_LABELS, metric.name
    assert not ALLOWED_LABELS & {"run", "run_id", "uid", "path", "step", "step_path", "message"}


# --- operator helpers -------------------------------------------------------------------


def test_reconcile_timer_api_errors_and_queue_gauges() -> None:
    metrics = FlujoMetrics(clock=Ticks(0.1))
    with metrics.reconcile("pod"):
        pass
    with pytest.raises(RuntimeError), metrics.reconcile("pipelinerun"):
        raise RuntimeError("boom")
    name = "flujo_operator_reconcile_duration_seconds_count"
    assert value(metrics, name, resource="pod", outcome="succeeded") == 1
    assert value(metrics, name, resource="pipelinerun", outcome="failed") == 1

    class ApiException(Exception):
        def __init__(self, status: int) -> None:
            self.status = status

    for verb, exc in (
        ("create", ApiException(409)),
        ("patch", ApiException(503)),
        ("get", ConnectionError("refused")),
    ):
        with pytest.raises((ApiException, ConnectionError)), metrics.api_call(verb):
            raise exc
    errors_total = "flujo_operator_api_errors_total"
    assert value(metrics, errors_total, verb="create", error_class="conflict") == 1
    assert value(metrics, errors_total, verb="patch", error_class="server_error") == 1
    assert value(metrics, errors_total, verb="get", error_class="connection") == 1
    assert api_error_class(429) == "throttled" and api_error_class(418) == OTHER
    metrics.set_runs_pending(7)
    metrics.set_pods_pending(3)
    metrics.set_launches_waiting(2)
    assert value(metrics, "flujo_operator_runs_pending") == 7
    assert value(metrics, "flujo_operator_pods_pending") == 3
    assert value(metrics, "flujo_operator_launches_waiting") == 2


def test_breaker_transitions_set_the_state_gauge() -> None:
    metrics = FlujoMetrics()
    breakers = BreakerRegistry(fail_max=2, reset_timeout=60)
    breakers.add_listener(metrics.circuit_changed)
    breaker = breakers.get("ns/llm")
    breaker.record("transient")
    assert value(metrics, "flujo_circuit_transitions_total", agent="ns/llm", state="open") == 0
    breaker.record("transient")
    assert value(metrics, "flujo_circuit_state", agent="ns/llm") == 2
    assert value(metrics, "flujo_circuit_transitions_total", agent="ns/llm", state="open") == 1
    metrics.set_circuit_state("ns/llm", "closed")
    assert value(metrics, "flujo_circuit_state", agent="ns/llm") == 0


def test_pod_queue_seconds_from_cluster_timestamps() -> None:
    pod: dict[str, Any] = {
        "metadata": {"creationTimestamp": "2024-05-01T10:00:00Z"},
        "status": {"containerStatuses": [{"state": {"waiting": {"reason": "Pulling"}}}]},
    }
    assert pod_queue_seconds(pod) is None
    pod["status"]["containerStatuses"][0]["state"] = {
        "running": {"startedAt": "2024-05-01T10:00:04Z"}
    }
    assert pod_queue_seconds(pod) == 4.0
    pod["status"]["containerStatuses"][0]["state"] = {
        "terminated": {"startedAt": "2024-05-01T10:00:09Z", "exitCode": 0}
    }
    assert pod_queue_seconds(pod) == 9.0
    assert pod_queue_seconds({}) is None


# --- serving ------------------------------------------------------------------------------


def test_serve_metrics_exposes_the_dedicated_registry_only() -> None:
    metrics = FlujoMetrics()
    metrics.inc("flujo_runs_started", pipeline="p")
    server = serve_metrics(0, metrics.registry)
    try:
        text = httpx.get(f"http://127.0.0.1:{server.port}/metrics", timeout=5).text
    finally:
        server.close()
    assert 'flujo_runs_started_total{pipeline="p"} 1.0' in text
    assert "python_gc" not in text and "process_cpu" not in text  # not the global registry


def test_two_metric_sets_in_one_process_do_not_collide() -> None:
    a, b = FlujoMetrics(), FlujoMetrics()
    a.inc("flujo_runs_started", pipeline="p")
    assert value(a, "flujo_runs_started_total", pipeline="p") == 1
    assert value(b, "flujo_runs_started_total", pipeline="p") == 0


def test_start_observability_serves_metrics_for_a_cli_run(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_TRACES_EXPORTER",
    ):
        monkeypatch.delenv(name, raising=False)
    manifest, registry = load(SCRIPTED)
    obs = start_observability("review", registry, metrics_port=0)
    try:
        assert obs.tracer_provider is None and len(obs.observers) == 1
        assert obs.server is not None
        assert run(manifest, registry, obs.observers).success
        text = httpx.get(f"http://127.0.0.1:{obs.server.port}/metrics", timeout=5).text
    finally:
        obs.close()
    assert (
        'flujo_tokens_total{agent="writer",direction="input",model="gpt-test",'
        'pipeline="review"} 100.0' in text
    )


def test_agent_infos_read_kind_and_model_without_building_agents(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OBS_TEST_MODEL", "llama-3")
    _, registry = load(
        SCRIPTED.replace("model: gpt-test", "model: ${OBS_TEST_MODEL}").replace(
            "model: critic-model", "model: ${OBS_TEST_UNSET}"
        )
    )
    infos = agent_infos(registry)
    assert infos["writer"] == AgentInfo("scripted", "llama-3")
    assert infos["critic"] == AgentInfo("scripted", "${OBS_TEST_UNSET}")
    assert infos["builtin.upper"] == AgentInfo("builtin", None)
    assert AgentInfo.of(("openai", "gpt-4o")) == AgentInfo("openai", "gpt-4o")
    assert AgentInfo.of({"type": "http"}) == AgentInfo("http")


def test_counts_stay_exact_over_many_runs() -> None:
    manifest, registry = load(SCRIPTED)
    metrics = FlujoMetrics()
    observer = MetricsObserver(metrics, "review", agents=agent_infos(registry))
    for _ in range(50):
        run(manifest, registry, [observer])
    assert value(metrics, "flujo_runs_started_total", pipeline="review") == 50
    assert value(metrics, "flujo_run_tokens_count", pipeline="review") == 50
