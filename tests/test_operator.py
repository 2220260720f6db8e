"""The operator for real: a kopf process against the API emulator, kubectl doing apply.

Pods are run by the local kubelet (tests/k8s/kubelet.py) as `flujo step-run`
subprocesses, exactly as a node would run the step image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.operatorkit import ROOT, get_json, running_operator

EXAMPLES = ROOT / "examples"


@pytest.fixture
def cluster(kubeconfig: Path, kubectl: Any, local_kubelet: Any) -> Any:
    kubectl("apply", "-f", str(ROOT / "crds"))
    return kubectl


def phase(kubectl: Any, run: str) -> str:
    return str(get_json(kubectl, "pipelinerun", run).get("status", {}).get("phase", ""))


def run_pods(kubectl: Any, run: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = get_json(kubectl, "pods", "-l", f"flujo.dev/run={run}")["items"]
    return items


def test_a_valid_pipeline_runs_to_succeeded_with_one_pod_per_step(
    cluster: Any, kubeconfig: Path, tmp_path: Path
) -> None:
    with running_operator(kubeconfig, tmp_path) as op:
        cluster(
            "apply",
            "-f",
            str(EXAMPLES / "linear.yaml"),
            "-f",
            str(EXAMPLES / "runs" / "linear.yaml"),
        )
        done = cluster(
            "wait",
            "--for=jsonpath={.status.phase}=Succeeded",
            "pipelinerun/linear-1",
            "--timeout=60s",
            check=False,
        )
        assert done.returncode == 0, done.stderr + op.log()[-4000:]
        status = get_json(cluster, "pipelinerun", "linear-1")["status"]
        assert status["output"] == {"value": "*** HELLO, CLUSTER (14 chars) ***"}
        assert status["progress"] == "3/3"
        pods = run_pods(cluster, "linear-1")
        assert len(pods) == 3
        assert {p["metadata"]["annotations"]["flujo.dev/step-path"] for p in pods} == {
            "clean",
            "shout",
            "frame",
        }
        table = cluster("get", "pipelineruns").stdout
        assert "linear-1" in table and "Succeeded" in table and "3/3" in table
        pipeline = get_json(cluster, "pipeline", "linear")["status"]
        conditions = {c["type"]: c["status"] for c in pipeline["conditions"]}
        assert conditions == {"Valid": "True", "AgentsResolved": "True"}
