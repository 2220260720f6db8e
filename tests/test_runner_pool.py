"""The warm pool for real: idle runners kept per namespace, claimed by runs needing no Secrets.

The operator (a kopf process, ``FLUJO_RUNNERS_WARM=1``) keeps one idle runner
pod (``flujo runner``, run by the local kubelet) in its namespace.  A run whose
agents need no credentials takes it as its runner — no pod is created for the
run — and the pool is topped up behind it; a run whose agent reads a Secret
gets a runner of its own.  An operator SIGKILLed after a claim, before any
status recorded it, adopts the claimed runner on restart: the call in flight is
made once.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from tests.operatorkit import ROOT, get_json, running_operator, wait_for, wait_phase
from tests.servers import OpenAIServer, RecordedRequest, Reply, completion


def manifests(endpoint: str) -> str:
    return f"""
apiVersion: v1
kind: Secret
metadata: {{name: llm-key}}
stringData: {{key: not-a-real-key}}
---
apiVersion: flujo.dev/v1alpha1
kind: Agent
metadata: {{name: open-llm}}
spec: {{type: openai, model: m, endpoint: "{endpoint}", stream: true}}
---
apiVersion: flujo.dev/v1alpha1
kind: Agent
metadata: {{name: keyed-llm}}
spec:
  type: openai
  model: m
  endpoint: "{endpoint}"
  apiKey: {{secretKeyRef: {{name: llm-key, key: key}}}}
"""


def run(name: str, agent: str) -> str:
    return f"""
apiVersion: flujo.dev/v1alpha1
kind: PipelineRun
metadata: {{name: {name}}}
spec:
  pipeline:
    steps:
      - {{name: ask, agent: {agent}}}
      - {{name: shout, agent: builtin.upper}}
  input: "question for {name}"
"""


def idle_runners(kubectl: Any) -> list[str]:
    pods = get_json(kubectl, "pods", "-l", "flujo.dev/runner-pool=idle")["items"]
    return sorted(
        p["metadata"]["name"]
        for p in pods
        if p["status"].get("phase") == "Running" and p["status"].get("podIP")
    )


def run_pod_names(kubectl: Any, name: str) -> list[str]:
    pods = get_json(kubectl, "pods", "-l", f"flujo.dev/run={name}")["items"]
    return sorted(p["metadata"]["name"] for p in pods)


@pytest.fixture
def cluster(kubeconfig: Path, kubectl: Any, local_kubelet: Any) -> Any:
    kubectl("apply", "-f", str(ROOT / "crds"))
    return kubectl


def test_a_run_needing_no_secrets_takes_a_warm_runner_and_the_pool_refills(
    cluster: Any, kubeconfig: Path, tmp_path: Path
) -> None:
    with (
        OpenAIServer(responder=lambda r: completion("an answer")) as server,
        running_operator(
            kubeconfig, tmp_path, FLUJO_EXECUTOR="runner", FLUJO_RUNNERS_WARM="1"
        ) as op,
    ):
        cluster.apply(manifests(server.base_url))
        first = wait_for(lambda: idle_runners(cluster), 120, "an idle pool runner")
        assert len(first) == 1
        pooled = get_json(cluster, "pod", first[0])
        assert not pooled["metadata"].get("ownerReferences")  # no run owns it yet
        assert pooled["spec"]["automountServiceAccountToken"] is False
        env = pooled["spec"]["containers"][0]["env"]
        assert not [e for e in env if "secretKeyRef" in (e.get("valueFrom") or {})]

        cluster.apply(run("warm", "open-llm"))
        status = wait_phase(cluster, "warm", "Succeeded", op)
        assert status["output"] == {"value": "AN ANSWER"}
        assert status["runner"] == {"pod": first[0], "generation": 0}
        assert run_pod_names(cluster, "warm") == [first[0]]  # no runner created for the run
        claimed = get_json(cluster, "pod", first[0])["metadata"]
        assert claimed["labels"]["flujo.dev/runner-pool"] == "claimed"
        assert [o["name"] for o in claimed["ownerReferences"]] == ["warm"]

        refilled = wait_for(
            lambda: [n for n in idle_runners(cluster) if n != first[0]], 120, "the pool to refill"
        )
        assert len(refilled) == 1

        # An agent with a Secret: a runner of the run's own carries it; the pool is left alone.
        cluster.apply(run("keyed", "keyed-llm"))
        status = wait_phase(cluster, "keyed", "Succeeded", op)
        assert status["runner"] == {"pod": "keyed-runner-0", "generation": 0}
        own = get_json(cluster, "pod", "keyed-runner-0")["spec"]["containers"][0]["env"]
        refs = [
            e["valueFrom"]["secretKeyRef"] for e in own if "secretKeyRef" in e.get("valueFrom", {})
        ]
        assert [r["name"] for r in refs] == ["llm-key"]
        assert idle_runners(cluster) == refilled
        keys = [r.headers.get("Authorization") for r in server.requests]
        assert keys == [None, "Bearer not-a-real-key"]


def test_an_operator_killed_after_a_claim_adopts_the_claimed_runner(
    cluster: Any, kubeconfig: Path, tmp_path: Path
) -> None:
    gate = threading.Event()

    def held(request: RecordedRequest) -> Reply:
        return completion("once", gate=gate)

    with (
        OpenAIServer(responder=held) as server,
        running_operator(
            kubeconfig,
            tmp_path,
            FLUJO_EXECUTOR="runner",
            FLUJO_RUNNERS_WARM="1",
            # No status write before the kill: the claim is only on the pod.
            FLUJO_STATUS_LINGER_SECONDS="60",
        ) as op,
    ):
        cluster.apply(manifests(server.base_url))
        pool = wait_for(lambda: idle_runners(cluster), 120, "an idle pool runner")
        cluster.apply(run("crash", "open-llm"))
        wait_for(lambda: server.calls == 1, 60, "the step's call to arrive")
        assert "runner" not in (get_json(cluster, "pipelinerun", "crash").get("status") or {})
        op.kill()
        op.start()
        # The restarted operator re-sends the launch to the claimed runner, which joins the
        # call it is still making (or answers from memory once it is made).
        gate.set()
        status = wait_phase(cluster, "crash", "Succeeded", op)
        assert status["output"] == {"value": "ONCE"}
        assert status["runner"] == {"pod": pool[0], "generation": 0}
        assert run_pod_names(cluster, "crash") == [pool[0]]
        assert server.calls == 1
