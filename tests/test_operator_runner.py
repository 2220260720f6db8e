"""The runner executor for real: one warm runner pod serves every step of a run.

The operator (a kopf process) posts each launch document to the run's runner
pod (``flujo runner``, run by the local kubelet as a subprocess on a loopback
address of its own) and journals the answers; no step pod is created.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.operatorkit import ROOT, get_json, running_operator, wait_for

EXAMPLES = ROOT / "examples"


@pytest.fixture
def cluster(kubeconfig: Path, kubectl: Any, local_kubelet: Any) -> Any:
    kubectl("apply", "-f", str(ROOT / "crds"))
    return kubectl


def run_pods(kubectl: Any, run: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = get_json(kubectl, "pods", "-l", f"flujo.dev/run={run}")["items"]
    return items


def test_one_runner_pod_serves_every_step_of_a_run(
    cluster: Any, kubeconfig: Path, tmp_path: Path
) -> None:
    with running_operator(kubeconfig, tmp_path, FLUJO_EXECUTOR="runner") as op:
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
            "--timeout=120s",
            check=False,
        )
        assert done.returncode == 0, done.stderr + op.log()[-4000:]
        status = get_json(cluster, "pipelinerun", "linear-1")["status"]
        assert status["output"] == {"value": "*** HELLO, CLUSTER (14 chars) ***"}
        assert status["progress"] == "3/3" and status["launches"] == 3
        assert status["executor"] == "runner"
        assert status["runner"] == {"pod": "linear-1-runner-0", "generation": 0}
        pods = run_pods(cluster, "linear-1")
        assert [p["metadata"]["name"] for p in pods] == ["linear-1-runner-0"]
        spec = pods[0]["spec"]
        assert spec["automountServiceAccountToken"] is False
        assert spec["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
        assert spec["containers"][0]["command"] == ["flujo", "runner"]
        table = cluster("get", "pipelineruns").stdout
        assert "EXECUTOR" in table and "runner" in table
        # the run over, its runner exits by itself: nothing left running, its log kept
        wait_for(
            lambda: run_pods(cluster, "linear-1")[0]["status"].get("phase") == "Succeeded",
            60,
            "the runner pod to exit",
        )


def test_a_run_may_ask_for_a_pod_per_step(cluster: Any, kubeconfig: Path, tmp_path: Path) -> None:
    docs = list(yaml.safe_load_all((EXAMPLES / "runs" / "linear.yaml").read_text()))
    docs[0]["spec"]["executor"] = "pod"
    with running_operator(kubeconfig, tmp_path, FLUJO_EXECUTOR="runner") as op:
        cluster("apply", "-f", str(EXAMPLES / "linear.yaml"))
        cluster.apply(docs)
        done = cluster(
            "wait",
            "--for=jsonpath={.status.phase}=Succeeded",
            "pipelinerun/linear-1",
            "--timeout=120s",
            check=False,
        )
        assert done.returncode == 0, done.stderr + op.log()[-4000:]
        status = get_json(cluster, "pipelinerun", "linear-1")["status"]
        assert status["executor"] == "pod" and "runner" not in status
        pods = run_pods(cluster, "linear-1")
        assert sorted(p["metadata"]["annotations"]["flujo.dev/step-path"] for p in pods) == [
            "clean",
            "frame",
            "shout",
        ]


def test_a_one_mib_output_round_trips_through_the_runner_byte_for_byte(
    cluster: Any, kubeconfig: Path, tmp_path: Path, k8s_client: Any
) -> None:
    from flujo.engine import StepSucceeded

    from flujo_operator.kube import Kube
    from flujo_operator.runs import run_events

    text = "".join(chr(0x41 + (i * 7) % 26) + ("\n" if i % 97 == 0 else "") for i in range(1 << 20))
    big = {
        "apiVersion": "flujo.dev/v1alpha1",
        "kind": "PipelineRun",
        "metadata": {"name": "big"},
        "spec": {
            "input": text,
            "pipeline": {
                "steps": [
                    {"name": "copy", "agent": "builtin.echo"},
                    {"name": "measure", "agent": "builtin.length"},
                ]
            },
        },
    }
    with running_operator(
        kubeconfig,
        tmp_path,
        FLUJO_EXECUTOR="runner",
        FLUJO_SECURITY_MAX_INPUT_BYTES=str(2 << 20),
        FLUJO_SECURITY_MAX_OUTPUT_BYTES=str(2 << 20),
    ) as op:
        cluster("create", "-f", "-", input=yaml.safe_dump(big))
        done = cluster(
            "wait",
            "--for=jsonpath={.status.phase}=Succeeded",
            "pipelinerun/big",
            "--timeout=120s",
            check=False,
        )
        assert done.returncode == 0, done.stderr + op.log()[-3000:]
        run = get_json(cluster, "pipelinerun", "big")
        assert run["status"]["output"] == {"value": len(text)}
        # the copy's result outlives the runner: ConfigMaps owned by the run, in chunks
        stored = get_json(cluster, "configmaps", "-l", "flujo.dev/run=big")["items"]
        assert len(stored) >= 2
        assert all(c["metadata"]["ownerReferences"][0]["name"] == "big" for c in stored)
        events = asyncio.run(run_events(Kube(k8s_client), run))
        copies = [e for e in events if isinstance(e, StepSucceeded) and e.path == "copy"]
        assert len(copies) == 1 and copies[0].output == text
        assert len(json.dumps(run["status"])) < 16 * 1024
