"""Approval steps in the cluster: the real operator (a kopf process) on the emulator, real kubectl.

A run waits in ``AwaitingApproval`` (phase, condition, Event); the operator is
SIGKILLed while it waits and again right after a person approves with
``kubectl patch``; the answer is applied exactly once and the run finishes.
A rejection follows the failure path, and an answer that misfits the schema
is refused with a Warning Event while the run keeps waiting.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from flujo_operator.builders import decode_journal
from tests.k8s.fixtures import KUBECTL
from tests.operatorkit import OperatorProcess, get_json, wait_for

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(900)

PIPELINE = """
apiVersion: flujo.dev/v1alpha1
kind: Pipeline
metadata: {name: publish}
spec:
  steps:
    - {name: draft, agent: builtin.upper}
    - name: review
      approval: {message: "Publish {{ previous_step }}?", schema: {type: string}}
    - {name: send, agent: builtin.lower}
---
apiVersion: flujo.dev/v1alpha1
kind: PipelineRun
metadata: {name: NAME}
spec:
  pipelineRef: {name: publish}
  input: rivers rise
"""


def _run(kubectl: Any, name: str) -> dict[str, Any]:
    run: dict[str, Any] = get_json(kubectl, "pipelinerun", name)
    return run


def _phase(kubectl: Any, name: str) -> str | None:
    return (_run(kubectl, name).get("status") or {}).get("phase")


def _answer(kubectl: Any, name: str, decision: dict[str, Any]) -> None:
    """What docs/operator.md tells a person to run (and scripts/kubectl-flujo does)."""
    patch = json.dumps([{"op": "add", "path": "/spec/approvals/-", "value": decision}])
    if not _run(kubectl, name)["spec"].get("approvals"):
        patch = json.dumps([{"op": "add", "path": "/spec/approvals", "value": [decision]}])
    kubectl("patch", "pipelinerun", name, "--type", "json", "-p", patch)


def _events(kubectl: Any, name: str) -> list[dict[str, Any]]:
    items = get_json(kubectl, "events")["items"]
    return [e for e in items if (e.get("involvedObject") or {}).get("name") == name]


def test_a_run_waits_survives_kills_and_applies_the_approval_once(
    kubeconfig: Path, kubectl: Any, local_kubelet: Any, tmp_path: Path
) -> None:
    kubectl("apply", "-f", str(Path(__file__).parent.parent / "crds"))
    operator = OperatorProcess(kubeconfig, tmp_path / "operator.log")
    operator.start()
    try:
        kubectl.apply(PIPELINE.replace("NAME", "ok"))
        wait_for(lambda: _phase(kubectl, "ok") == "AwaitingApproval", 120, "AwaitingApproval")
        status = _run(kubectl, "ok")["status"]
        assert status["awaitingApproval"]["review"]["message"] == "Publish RIVERS RISE?"
        waiting = [c for c in status["conditions"] if c["type"] == "AwaitingApproval"]
        assert waiting and waiting[0]["status"] == "True"
        assert any(e["reason"] == "AwaitingApproval" for e in _events(kubectl, "ok"))

        operator.kill()  # while it waits
        operator.start()
        assert _phase(kubectl, "ok") == "AwaitingApproval"

        _answer(kubectl, "ok", {"step": "review", "decision": "approve", "input": 7})
        wait_for(
            lambda: any(e["reason"] == "ApprovalRefused" for e in _events(kubectl, "ok")),
            120,
            "the misfit answer to be refused",
        )
        assert _phase(kubectl, "ok") == "AwaitingApproval"

        _answer(kubectl, "ok", {"step": "review", "decision": "approve", "input": "Rivers rise"})
        operator.kill()  # right after the patch, whether or not it saw it
        operator.start()
        wait_for(lambda: _phase(kubectl, "ok") == "Succeeded", 120, "the run to finish")
        operator.kill()
        operator.start()  # once more: a finished run's approvals are never applied again
    finally:
        operator.stop()

    run = _run(kubectl, "ok")
    assert run["status"]["output"]["value"] == "rivers rise"
    assert "awaitingApproval" not in run["status"]
    journal = decode_journal(run["status"]["journal"])
    answers = [j["e"] for j in journal if j.get("e", {}).get("type") == "ApprovalAnswered"]
    assert len(answers) == 1  # applied exactly once, whatever the kills
    assert (answers[0]["approved"], answers[0]["by"]) == (True, "kubectl-patch")
    # Notifications follow the journal: a kill in between may lose one, never double it.
    approved = [e for e in _events(kubectl, "ok") if e["reason"] == "Approved"]
    assert len(approved) <= 1
    decided = [a for a in operator.audit() if a.get("event") == "approval.decided"]
    assert len(decided) <= 1


def test_a_rejection_fails_the_run(
    kubeconfig: Path, kubectl: Any, local_kubelet: Any, tmp_path: Path
) -> None:
    kubectl("apply", "-f", str(Path(__file__).parent.parent / "crds"))
    operator = OperatorProcess(kubeconfig, tmp_path / "operator.log")
    operator.start()
    try:
        kubectl.apply(PIPELINE.replace("NAME", "turned-down"))
        wait_for(
            lambda: _phase(kubectl, "turned-down") == "AwaitingApproval", 120, "AwaitingApproval"
        )
        plugin = subprocess.run(  # the kubectl plugin the repository ships
            [
                str(ROOT / "scripts" / "kubectl-flujo"),
                "reject",
                "turned-down",
                "--reason",
                "off-brand",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env={
                **os.environ,
                "KUBECTL": str(KUBECTL),
                "KUBECTL_FLAGS": f"--kubeconfig {kubeconfig} --cache-dir {tmp_path / 'kc'}",
            },
        )
        assert plugin.returncode == 0, plugin.stderr
        wait_for(lambda: _phase(kubectl, "turned-down") == "Failed", 120, "the run to fail")
    finally:
        operator.stop()
    status = _run(kubectl, "turned-down")["status"]
    assert status["failedPath"] == "review"
    assert status["steps"]["review"]["errorClass"] == "rejected"
    assert "rejected by kubectl-patch: off-brand" in status["message"]
    (rejected,) = [e for e in _events(kubectl, "turned-down") if e["reason"] == "Rejected"]
    assert rejected["message"] == "step review rejected (off-brand) by kubectl-patch"
    (decided,) = [a for a in operator.audit() if a.get("event") == "approval.decided"]
    assert (decided["run"], decided["step"], decided["decision"]) == (
        "turned-down",
        "review",
        "reject",
    )
    assert (decided["reason"], decided["fieldManager"]) == ("off-brand", "kubectl-patch")
