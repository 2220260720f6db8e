"""Cost anomalies: flag a run that costs far more than its pipeline usually does.

A fixed budget (``maxCostUsd``) stops runaway runs, but it is set generously
and says nothing about a pipeline that quietly got three times more expensive
(a prompt that grew, a loop that now needs more iterations, a model swap).
This module keeps, per pipeline, a *robust baseline* of the last runs' cost
and tokens and scores each new run against it.

**Method: median and MAD over a bounded window.**  The score is the modified
z-score of Iglewicz and Hoaglin::

    z = 0.6745 * (x - median) / MAD

computed over the last ``window`` runs.  Median and MAD ignore a few extreme
values, unlike a mean and a standard deviation (or their EWMA versions), which
one runaway run inflates enough to hide the next one.  For normally
distributed costs ``z`` is close to the ordinary z-score.

Defaults (:class:`AnomalyConfig`), and why:

- ``window = 50`` runs: enough for a stable median, small enough to follow a
  deliberate change within a day of typical use, and small to persist;
- ``min_runs = 10``: no verdict before ten runs have been seen — a median of
  three runs is not a baseline;
- ``threshold = 3.5``: Iglewicz and Hoaglin's recommended cut-off; only
  *expensive* runs are flagged (``z > threshold``); cheap runs are no concern;
- ``relative_floor = 0.05``: the MAD is at least 5 % of the median, so that a
  pipeline whose runs all cost exactly the same (scripted agents, caching)
  does not flag a run costing one token more; with the default threshold a
  run must cost about 26 % above the median to be flagged then.

Every run's value is learnt after it is scored — including flagged ones — so
a deliberate, lasting change stops being flagged after about half a window.
Failed runs are scored but (as the caller decides with ``learn``) not learnt:
they stop early and would drag the baseline down.

Everything here is pure: no clock, no I/O; the state is plain data
(:meth:`AnomalyDetector.to_dict`), which the operator persists and restores.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from statistics import median
from typing import Any

__all__ = ["AnomalyConfig", "AnomalyDetector", "PipelineBaseline", "Verdict", "robust_z"]

METRICS = ("cost", "tokens")
_CONSISTENCY = 0.6745
"""Makes MAD-based scores comparable to standard deviations for normal data."""
_ABSOLUTE_FLOOR = {"cost": 1e-6, "tokens": 1.0}
"""The smallest MAD that makes sense per metric: a millionth of a dollar, one token."""
STATE_VERSION = 1


@dataclass(frozen=True)
class AnomalyConfig:
    """Tuning of the detector; see the module docstring for the defaults' reasons."""

    window: int = 50
    min_runs: int = 10
    threshold: float = 3.5
    relative_floor: float = 0.05
    max_pipelines: int = 1000
    """Baselines kept at most; the least recently updated pipeline is dropped."""

    def __post_init__(self) -> None:
        if self.window < 3 or self.min_runs < 3 or self.min_runs > self.window:
            raise ValueError("need 3 <= min_runs <= window")
        if self.threshold <= 0 or self.relative_floor < 0 or self.max_pipelines < 1:
            raise ValueError("threshold must be positive, relative_floor >= 0, max_pipelines >= 1")


@dataclass(frozen=True)
class Verdict:
    """One run's score for one metric."""

    metric: str
    value: float
    score: float
    """Robust z-score against the baseline (0.0 while it has fewer than 2 runs)."""
    anomalous: bool
    baseline_runs: int
    median: float


def robust_z(values: Iterable[float], x: float, *, floor: float = 0.0) -> float:
    """The modified z-score of ``x`` against ``values``; MAD is at least ``floor``."""
    data = list(values)
    if len(data) < 2:
        return 0.0
    mid = median(data)
    mad = max(median(abs(v - mid) for v in data), floor)
    if mad <= 0:
        return 0.0 if x == mid else math.copysign(math.inf, x - mid)
    return _CONSISTENCY * (x - mid) / mad


@dataclass
class PipelineBaseline:
    """The last runs of one pipeline: cost in USD and tokens, oldest first."""

    cost: list[float] = field(default_factory=list)
    tokens: list[float] = field(default_factory=list)

    def values(self, metric: str) -> list[float]:
        return self.cost if metric == "cost" else self.tokens

    def to_dict(self) -> dict[str, list[float]]:
        return {"cost": list(self.cost), "tokens": list(self.tokens)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PipelineBaseline:
        return cls(
            cost=[float(v) for v in data.get("cost", [])],
            tokens=[float(v) for v in data.get("tokens", [])],
        )


class AnomalyDetector:
    """Per-pipeline baselines with :meth:`score` and :meth:`observe`.

    Pure: the state is the ``baselines`` mapping, injectable at construction
    and serialisable with :meth:`to_dict` / :meth:`from_dict`.
    """

    def __init__(
        self,
        config: AnomalyConfig | None = None,
        baselines: Mapping[str, PipelineBaseline] | None = None,
    ) -> None:
        self.config = config or AnomalyConfig()
        self.baselines: dict[str, PipelineBaseline] = dict(baselines or {})

    def _floor(self, metric: str, values: list[float]) -> float:
        typical = abs(median(values)) if values else 0.0
        return max(_ABSOLUTE_FLOOR[metric], self.config.relative_floor * typical)

    def score(self, pipeline: str, value: float, metric: str = "cost") -> Verdict:
        """Score ``value`` against the pipeline's baseline, learning nothing."""
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}")
        baseline = self.baselines.get(pipeline) or PipelineBaseline()
        values = baseline.values(metric)
        z = robust_z(values, value, floor=self._floor(metric, values))
        return Verdict(
            metric=metric,
            value=value,
            score=z,
            anomalous=len(values) >= self.config.min_runs and z > self.config.threshold,
            baseline_runs=len(values),
            median=median(values) if values else 0.0,
        )

    def learn(self, pipeline: str, *, cost: float, tokens: float) -> None:
        """Add one run to the pipeline's window (dropping the oldest beyond ``window``)."""
        baseline = self.baselines.pop(pipeline, None) or PipelineBaseline()
        self.baselines[pipeline] = baseline  # most recently updated last
        for metric, value in (("cost", cost), ("tokens", tokens)):
            values = baseline.values(metric)
            values.append(float(value))
            del values[: max(0, len(values) - self.config.window)]
        while len(self.baselines) > self.config.max_pipelines:
            del self.baselines[next(iter(self.baselines))]

    def observe(
        self, pipeline: str, *, cost: float, tokens: float, learn: bool = True
    ) -> list[Verdict]:
        """Score a finished run's cost and tokens, then (if ``learn``) add it."""
        verdicts = [self.score(pipeline, cost, "cost"), self.score(pipeline, tokens, "tokens")]
        if learn:
            self.learn(pipeline, cost=cost, tokens=tokens)
        return verdicts

    # --- persistence ------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state (baselines only; the config is code)."""
        return {
            "version": STATE_VERSION,
            "pipelines": {name: b.to_dict() for name, b in self.baselines.items()},
        }

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any] | None, config: AnomalyConfig | None = None
    ) -> AnomalyDetector:
        """Restore a detector; an unknown version or garbage starts afresh (it is a cache)."""
        detector = cls(config)
        if not data or data.get("version") != STATE_VERSION:
            return detector
        pipelines = data.get("pipelines")
        if not isinstance(pipelines, Mapping):
            return detector
        for name, raw in pipelines.items():
            if not isinstance(raw, Mapping):
                continue
            try:
                baseline = PipelineBaseline.from_dict(raw)
            except (TypeError, ValueError):
                continue
            window = detector.config.window
            baseline.cost, baseline.tokens = baseline.cost[-window:], baseline.tokens[-window:]
            detector.baselines[str(name)] = baseline
        return detector
