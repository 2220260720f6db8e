"""End-to-end on a real Kubernetes cluster (kind, via pytest-kind): the same
scenarios as tests/test_operator.py, with the real image and real nodes.

Needs a working Docker engine (kind runs nodes as containers) and network
access for kind to fetch its node image.  Where Docker is unavailable — as on
the machines that run this project's CI — the whole module is skipped with
the reason, rather than passing vacuously.

    pytest tests/e2e -m kind --keep-cluster
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "flujo:e2e"


def _docker_problem() -> str | None:
    if shutil.which("docker") is None:
        return "no docker client on PATH"
    probe = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["docker info failed"])[-1]
        return f"no Docker engine: {last}"
    return None


_PROBLEM = _docker_problem()
pytestmark = [
    pytest.mark.kind,
    pytest.mark.skipif(_PROBLEM is not None, reason=f"kind needs Docker: {_PROBLEM}"),
]


@pytest.fixture(scope="module")
def cluster(kind_cluster: Any) -> Any:
    subprocess.run(["docker", "build", "-t", IMAGE, str(ROOT)], check=True)
    kind_cluster.load_docker_image(IMAGE)
    kind_cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    subprocess.run(
        [
            "helm",
            "upgrade",
            "--install",
            "flujo",
            str(ROOT / "charts" / "flujo"),
            "--set",
            f"image.repository={IMAGE.split(':')[0]}",
            "--set",
            f"image.tag={IMAGE.split(':')[1]}",
            "--set",
            "crds.install=false",
            "--kubeconfig",
            str(kind_cluster.kubeconfig_path),
            "--wait",
        ],
        check=True,
    )
    return kind_cluster


def _wait_phase(cluster: Any, run: str, phase: str, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        obj = json.loads(cluster.kubectl("get", "pipelinerun", run, "-o", "json"))
        if (obj.get("status") or {}).get("phase") == phase:
            status: dict[str, Any] = obj["status"]
            return status
        time.sleep(2)
    raise AssertionError(f"{run} did not reach {phase}")


def test_linear_example_succeeds_with_one_pod_per_step(cluster: Any) -> None:
    cluster.kubectl(
        "apply",
        "-f",
        str(ROOT / "examples" / "linear.yaml"),
        "-f",
        str(ROOT / "examples" / "runs" / "linear.yaml"),
    )
    status = _wait_phase(cluster, "linear-1", "Succeeded")
    assert status["output"] == {"value": "*** HELLO, CLUSTER (14 chars) ***"}
    pods = json.loads(cluster.kubectl("get", "pods", "-l", "flujo.dev/run=linear-1", "-o", "json"))[
        "items"
    ]
    assert len(pods) == 3


def test_fanout_example_succeeds(cluster: Any) -> None:
    cluster.kubectl(
        "apply",
        "-f",
        str(ROOT / "examples" / "fanout.yaml"),
        "-f",
        str(ROOT / "examples" / "runs" / "fanout.yaml"),
    )
    status = _wait_phase(cluster, "fanout-1", "Succeeded")
    assert json.loads(status["output"]["value"])["words"] == 5
