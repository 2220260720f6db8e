"""What the run controller writes to the API: the run's status patch, and usage baselines.

The status of a run is written once per reconcile, as one JSON merge patch:
the summary of its state (:func:`~flujo_operator.builders.build_run_status`,
with the compressed journal), the steps it no longer lists nulled, and its
conditions (``Succeeded``; ``Anomalous`` when a finished run's usage was
unusual for its Pipeline).  A run that may not start gets a shorter patch
saying why (:func:`refusal_status`).

A Pipeline's usage baseline — what anomaly detection learned from its runs —
is saved in the Pipeline's status every :data:`BASELINE_EVERY` finished runs,
and read back after a restart.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flujo.observability.anomaly import STATE_VERSION, AnomalyDetector, Verdict
from flujo.observability.tracing import run_traceparent

from flujo_operator.builders import build_run_status, condition, describe_anomalies
from flujo_operator.config import Config
from flujo_operator.kube import Kube
from flujo_operator.run_approvals import awaiting_status
from flujo_operator.run_session import Session

__all__ = ["BASELINE_EVERY", "Baselines", "refusal_status", "run_status"]

BASELINE_EVERY = 10


def refusal_status(reason: str, message: str, terminal: bool, now: str) -> dict[str, Any]:
    """The run does not start (yet): Failed when ``terminal``, else Pending, and why."""
    return {
        "phase": "Failed" if terminal else "Pending",
        "reason": reason,
        "message": message[:1000],
        "conditions": [
            condition("Succeeded", "False" if terminal else "Unknown", reason, message, now)
        ],
    }


def run_status(
    session: Session, config: Config, anomalies: list[Verdict], clock: Callable[[], str]
) -> dict[str, Any]:
    """The status patch of a started run; marks the steps it lists in ``session.listed``."""
    state = session.state
    status = build_run_status(session.ref, state, session.journal, config)
    shown = set(status["steps"])
    for gone in session.listed - shown:
        status["steps"][gone] = None  # JSON merge patch: null deletes the key
    session.listed = shown
    status["startedAt"] = session.started_at
    status["traceparent"] = run_traceparent(session.ref.uid)
    status["observedGeneration"] = 1
    if session.waiting:
        status["waitingPods"] = len(session.waiting)
    awaiting = awaiting_status(session)
    status["awaitingApproval"] = awaiting  # null removes it (JSON merge patch)
    if not state.finished:
        status["conditions"] = [
            condition("Succeeded", "Unknown", "Running", "", session.started_at)
        ]
        if awaiting and not state.running and not state.deferred:
            status["phase"] = "AwaitingApproval"
            status["conditions"].append(
                condition(
                    "AwaitingApproval",
                    "True",
                    "AwaitingApproval",
                    f"waiting for a person to approve {', '.join(awaiting)}",
                    min(str(w.get("since", "")) for w in awaiting.values()) or clock(),
                )
            )
        return status
    status["finishedAt"] = session.finished_at or clock()
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
    return status


class Baselines:
    """Anomaly baselines persisted in Pipeline statuses, so detection survives restarts."""

    def __init__(self, kube: Kube, anomaly: AnomalyDetector) -> None:
        self.kube = kube
        self.anomaly = anomaly
        self.learned: dict[str, int] = {}
        """Finished runs per pipeline since its baseline was last saved."""

    async def run_finished(self, pipeline: str) -> None:
        """Persist the pipeline's usage baseline in its status every 10th run: anomaly
        detection survives restarts at the cost of 0.1 write per run."""
        count = self.learned.get(pipeline, 0) + 1
        self.learned[pipeline] = count
        baseline = self.anomaly.baselines.get(pipeline)
        if count % BASELINE_EVERY or baseline is None:
            return
        namespace, _, name = pipeline.partition("/")
        await self.kube.patch_status(
            "pipelines", namespace, name, {"usageBaseline": baseline.to_dict()}
        )

    def restore(self, pipeline: str, data: Any) -> None:
        """Seed the detector from a Pipeline status (after a restart)."""
        if pipeline in self.anomaly.baselines or not isinstance(data, dict):
            return
        restored = AnomalyDetector.from_dict(
            {"version": STATE_VERSION, "pipelines": {pipeline: data}}
        ).baselines.get(pipeline)
        if restored is not None:
            self.anomaly.baselines[pipeline] = restored
