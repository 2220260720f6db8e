"""A real Prometheus scrapes the operator's metrics endpoint while pipelines run on
the emulator, and finds the runs that succeeded and the tokens they spent."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.operatorkit import ROOT, free_port, running_operator
from tests.test_observability_prometheus import PROMETHEUS, RULES, Prometheus, poll

pytestmark = pytest.mark.skipif(
    PROMETHEUS is None, reason="prometheus (Debian package) is not installed"
)

PRICED = """
apiVersion: flujo.dev/v1alpha1
kind: Agent
metadata: {name: priced}
spec:
  type: scripted
  responses: [{output: "ok", usage: {inputTokens: 40, outputTokens: 2, costUsd: 0.01}}]
---
apiVersion: flujo.dev/v1alpha1
kind: Pipeline
metadata: {name: metered}
spec:
  steps:
    - {name: one, agent: priced}
    - {name: two, agent: priced}
"""


@contextmanager
def prometheus_scraping(port: int, tmp_path: Path) -> Iterator[Prometheus]:
    assert PROMETHEUS is not None
    web = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(RULES)],
                "scrape_configs": [
                    {
                        "job_name": "flujo-operator",
                        "static_configs": [{"targets": [f"127.0.0.1:{port}"]}],
                    }
                ],
            }
        )
    )
    log = (tmp_path / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{web}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{web}"
    try:
        poll("prometheus ready", lambda: httpx.get(f"{url}/-/ready", timeout=2).status_code == 200)
        yield Prometheus(url)
    finally:
        proc.terminate()
        proc.wait(15)
        log.close()


def test_prometheus_scrapes_the_operator_while_runs_succeed(
    kubeconfig: Path, kubectl: Any, local_kubelet: Any, tmp_path: Path
) -> None:
    kubectl("apply", "-f", str(ROOT / "crds"))
    metrics_port = free_port()
    with (
        running_operator(kubeconfig, tmp_path, FLUJO_METRICS_PORT=str(metrics_port)),
        prometheus_scraping(metrics_port, tmp_path) as prom,
    ):
        prom.wait_for('up{job="flujo-operator"}', 1)
        kubectl.apply(PRICED)
        for i in range(3):
            kubectl.apply(f"""
apiVersion: flujo.dev/v1alpha1
kind: PipelineRun
metadata: {{name: metered-{i}}}
spec: {{pipelineRef: {{name: metered}}, input: "x{i}"}}
""")
        pipeline = '{pipeline="default/metered"}'
        prom.wait_for(f'sum(flujo_runs_finished_total{pipeline[:-1]},outcome="succeeded"}})', 3)
        prom.wait_for(f"sum(flujo_tokens_total{pipeline})", 3 * 2 * 42)
        cost = prom.scalar(f"sum(flujo_cost_usd_total{pipeline})")
        assert cost == pytest.approx(3 * 2 * 0.01)
        launches = prom.scalar(f"sum(flujo_step_launches_total{pipeline})")
        assert launches == 6
        reconciles = prom.scalar("sum(flujo_operator_reconcile_duration_seconds_count)")
        assert reconciles is not None and reconciles > 0


def test_an_unusually_expensive_run_gets_an_event_and_a_condition(
    kubeconfig: Path, kubectl: Any, local_kubelet: Any, tmp_path: Path
) -> None:
    import json

    from tests.operatorkit import get_json, wait_for

    kubectl("apply", "-f", str(ROOT / "crds"))
    costs = [0.010, 0.011, 0.009, 0.012, 0.010, 0.011, 0.009, 0.010, 0.012, 0.011, 0.010, 0.009]
    responses = [
        {"output": "ok", "usage": {"inputTokens": 100 + i, "costUsd": c}}
        for i, c in enumerate(costs)
    ]
    agent = {
        "apiVersion": "flujo.dev/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": "llm"},
        "spec": {
            "type": "scripted",
            "responses": [
                {
                    "match": "EXPENSIVE",
                    "output": "long",
                    "usage": {"inputTokens": 9000, "costUsd": 0.9},
                },
                *responses,
            ],
        },
    }
    pipeline = {
        "apiVersion": "flujo.dev/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": "usual"},
        "spec": {"steps": [{"name": "ask", "agent": "llm"}]},
    }

    def run(name: str, text: str) -> dict[str, Any]:
        return {
            "apiVersion": "flujo.dev/v1alpha1",
            "kind": "PipelineRun",
            "metadata": {"name": name},
            "spec": {"pipelineRef": {"name": "usual"}, "input": text},
        }

    def phase(name: str) -> str:
        return str((get_json(kubectl, "pipelinerun", name).get("status") or {}).get("phase"))

    with running_operator(kubeconfig, tmp_path, FLUJO_MAX_RUNNING_PODS="1"):
        kubectl.apply([agent, pipeline])
        kubectl.apply([run(f"normal-{i}", f"q{i}") for i in range(len(costs))])
        wait_for(
            lambda: all(phase(f"normal-{i}") == "Succeeded" for i in range(len(costs))),
            120,
            "normal runs",
        )
        for i in range(len(costs)):
            conditions = get_json(kubectl, "pipelinerun", f"normal-{i}")["status"]["conditions"]
            assert "Anomalous" not in {c["type"] for c in conditions}  # normal variance
        # the baseline is saved in the Pipeline's status every 10th run...
        saved = get_json(kubectl, "pipeline", "usual")["status"]["usageBaseline"]
        assert len(saved["cost"]) == 10
    # ...so a restarted operator still knows what is usual
    with running_operator(kubeconfig, tmp_path, FLUJO_MAX_RUNNING_PODS="1"):
        kubectl.apply([run("spendy", "EXPENSIVE please")])
        wait_for(lambda: phase("spendy") == "Succeeded", 60, "the expensive run")
        conditions = {
            c["type"]: c for c in get_json(kubectl, "pipelinerun", "spendy")["status"]["conditions"]
        }
        assert conditions["Anomalous"]["status"] == "True"
        assert "cost 0.9" in conditions["Anomalous"]["message"]
        events = json.loads(kubectl("get", "events", "-o", "json").stdout)["items"]
        mine = [e for e in events if e["involvedObject"]["name"] == "spendy"]
        assert [e["reason"] for e in mine] == ["UnusualUsage"]
