"""Cost anomalies: a robust per-pipeline baseline that flags expensive runs only."""

from __future__ import annotations

import json
import math
import random

import pytest
from flujo.observability.anomaly import (
    AnomalyConfig,
    AnomalyDetector,
    PipelineBaseline,
    robust_z,
)


def normal_runs(n: int, seed: int = 7) -> list[tuple[float, float]]:
    """(cost, tokens) of ordinary runs: $0.10 ± $0.01, 5,000 ± 500 tokens."""
    rng = random.Random(seed)
    return [(max(0.0, rng.gauss(0.10, 0.01)), max(0.0, rng.gauss(5000, 500))) for _ in range(n)]


def test_normal_runs_raise_nothing_and_an_expensive_run_is_flagged() -> None:
    detector = AnomalyDetector()
    for cost, tokens in normal_runs(200):
        verdicts = detector.observe("summarise", cost=cost, tokens=tokens)
        assert not any(v.anomalous for v in verdicts), verdicts
    by_cost, by_tokens = detector.observe("summarise", cost=0.45, tokens=21_000)
    assert by_cost.anomalous and by_tokens.anomalous
    assert by_cost.score > 10 and by_cost.baseline_runs == 50
    assert by_cost.median == pytest.approx(0.10, abs=0.01)


def test_no_verdict_before_the_minimum_number_of_runs() -> None:
    detector = AnomalyDetector(AnomalyConfig(min_runs=10))
    for cost, tokens in normal_runs(9):
        detector.observe("p", cost=cost, tokens=tokens)
    early = detector.score("p", 100.0)
    assert early.score > 100 and not early.anomalous  # scored, but too early to judge
    detector.learn("p", cost=0.1, tokens=5000)
    assert detector.score("p", 100.0).anomalous


def test_cheap_runs_are_not_anomalies_and_pipelines_are_independent() -> None:
    detector = AnomalyDetector()
    for cost, tokens in normal_runs(30):
        detector.observe("a", cost=cost, tokens=tokens)
        detector.observe("b", cost=cost * 100, tokens=tokens)
    assert not detector.score("a", 0.0).anomalous
    assert detector.score("a", 0.0).score < 0
    assert detector.score("a", 5.0).anomalous
    assert not detector.score("b", 10.0).anomalous  # normal for b


def test_identical_runs_tolerate_small_changes_thanks_to_the_floor() -> None:
    detector = AnomalyDetector()
    for _ in range(20):
        detector.observe("fixed", cost=0.010, tokens=1000)
    assert not detector.score("fixed", 0.0105).anomalous  # 5 % more
    assert not detector.score("fixed", 1001, "tokens").anomalous
    assert detector.score("fixed", 0.020).anomalous  # twice the cost


def test_one_runaway_run_does_not_hide_the_next() -> None:
    detector = AnomalyDetector()
    for cost, tokens in normal_runs(40):
        detector.observe("p", cost=cost, tokens=tokens)
    assert detector.observe("p", cost=5.0, tokens=5000)[0].anomalous
    assert detector.observe("p", cost=0.6, tokens=5000)[0].anomalous


def test_failed_runs_can_be_scored_without_being_learnt() -> None:
    detector = AnomalyDetector()
    detector.observe("p", cost=0.1, tokens=10, learn=False)
    assert "p" not in detector.baselines


def test_a_lasting_change_becomes_the_new_normal() -> None:
    detector = AnomalyDetector(AnomalyConfig(window=20, min_runs=10))
    for cost, tokens in normal_runs(20):
        detector.observe("p", cost=cost, tokens=tokens)
    flagged = [detector.observe("p", cost=0.3, tokens=5000)[0].anomalous for _ in range(20)]
    assert flagged[0] and not flagged[-1]


def test_state_is_bounded_and_round_trips_through_json() -> None:
    detector = AnomalyDetector(AnomalyConfig(window=10, min_runs=5, max_pipelines=3))
    for name in ("a", "b", "c", "d"):
        for cost, tokens in normal_runs(25):
            detector.observe(name, cost=cost, tokens=tokens)
    assert sorted(detector.baselines) == ["b", "c", "d"]  # least recently updated dropped
    assert all(len(b.cost) == 10 and len(b.tokens) == 10 for b in detector.baselines.values())
    text = json.dumps(detector.to_dict())
    restored = AnomalyDetector.from_dict(json.loads(text), detector.config)
    assert restored.baselines == detector.baselines
    assert restored.score("d", 1.0) == detector.score("d", 1.0)


def test_unknown_or_garbled_state_starts_afresh() -> None:
    assert AnomalyDetector.from_dict(None).baselines == {}
    assert AnomalyDetector.from_dict({"version": 99, "pipelines": {"a": {}}}).baselines == {}
    restored = AnomalyDetector.from_dict(
        {"version": 1, "pipelines": {"a": {"cost": ["x"]}, "b": {"cost": [1], "tokens": [2]}}}
    )
    assert restored.baselines == {"b": PipelineBaseline(cost=[1.0], tokens=[2.0])}


def test_robust_z_edge_cases() -> None:
    assert robust_z([], 5) == 0.0
    assert robust_z([1.0], 5) == 0.0
    assert robust_z([2.0, 2.0, 2.0], 2.0) == 0.0
    assert robust_z([2.0, 2.0, 2.0], 3.0) == math.inf
    assert robust_z([1.0, 2.0, 3.0], 2.0) == 0.0
    assert robust_z([1.0, 2.0, 3.0], 4.0) == pytest.approx(0.6745 * 2)


def test_bad_configurations_are_refused() -> None:
    with pytest.raises(ValueError):
        AnomalyConfig(window=5, min_runs=10)
    with pytest.raises(ValueError):
        AnomalyConfig(threshold=0)
    with pytest.raises(ValueError):
        AnomalyDetector().score("p", 1.0, "latency")
