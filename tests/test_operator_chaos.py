"""Crash safety: the operator SIGKILLed at random moments while runs with loops and
parallel steps call a real (local) OpenAI-compatible endpoint.

Every run must finish, and the endpoint must see exactly one successful call per
step launch: a step whose success was recorded is never launched again, and a
repeated pod creation after a crash is an idempotent 409, never a second call.
Under the runner executor, a launch re-sent to the run's runner after a restart
is answered from the runner's memory (or joins the call in flight).
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pytest

from tests.operatorkit import OperatorProcess, get_json, wait_for
from tests.servers import OpenAIServer, RecordedRequest, Reply, completion

RUNS = 10
KILLS = 20


def manifests(endpoint: str) -> str:
    docs = [
        f"""
apiVersion: flujo.dev/v1alpha1
kind: Agent
metadata: {{name: llm}}
spec:
  type: openai
  model: chaos-model
  endpoint: {endpoint}
  pricing: {{inputPer1k: 0.001, outputPer1k: 0.002}}
---
apiVersion: flujo.dev/v1alpha1
kind: Pipeline
metadata: {{name: chaos}}
spec:
  steps:
    - name: refine
      loop:
        maxIterations: 3
        exitWhen: "iteration >= 3"
        steps:
          - name: draft
            agent: llm
            input: "round {{{{ iteration }}}} of {{{{ input }}}}"
    - name: review
      parallel:
        branches:
          - name: style
            steps: [{{name: style-check, agent: llm}}]
          - name: facts
            steps: [{{name: fact-check, agent: llm}}]
"""
    ]
    for i in range(RUNS):
        docs.append(f"""
apiVersion: flujo.dev/v1alpha1
kind: PipelineRun
metadata: {{name: chaos-{i}}}
spec:
  pipelineRef: {{name: chaos}}
  input: "topic {i}"
""")
    return "---".join(docs)


@pytest.mark.timeout(900)
@pytest.mark.parametrize("executor", ["runner", "pod"])
def test_runs_survive_random_operator_kills_without_double_calls(
    executor: str, kubeconfig: Path, kubectl: Any, local_kubelet: Any, tmp_path: Path
) -> None:
    rng = random.Random(20261125)

    def answer(request: RecordedRequest) -> Reply:
        return completion("ok", delay=rng.uniform(0.0, 0.3))

    with OpenAIServer(responder=answer) as server:
        kubectl("apply", "-f", str(Path(__file__).parent.parent / "crds"))
        operator = OperatorProcess(kubeconfig, tmp_path / "operator.log", FLUJO_EXECUTOR=executor)
        operator.start()
        kubectl.apply(manifests(server.base_url))
        kills = 0

        def all_done() -> bool:
            items = get_json(kubectl, "pipelineruns")["items"]
            phases = [(i.get("status") or {}).get("phase") for i in items]
            return len(items) == RUNS and all(p in ("Succeeded", "Failed") for p in phases)

        try:
            deadline = time.monotonic() + 480
            while time.monotonic() < deadline and (kills < KILLS or not all_done()):
                if kills < KILLS:
                    time.sleep(rng.uniform(0.2, 1.2))
                    operator.kill()
                    kills += 1
                    operator.start()
                else:
                    time.sleep(0.5)
            wait_for(all_done, 300, "every run to finish")
        finally:
            operator.stop()

        runs = get_json(kubectl, "pipelineruns")["items"]
        phases = {r["metadata"]["name"]: r["status"]["phase"] for r in runs}
        assert set(phases.values()) == {"Succeeded"}, (phases, operator.log()[-5000:])
        launches = sum(r["status"]["launches"] for r in runs)
        assert launches == RUNS * 5
        pods = get_json(kubectl, "pods", "-l", "flujo.dev/run")["items"]
        components = {p["metadata"]["labels"]["app.kubernetes.io/component"] for p in pods}
        if executor == "pod":
            assert len(pods) == launches and components == {"step"}
        else:  # one runner per run: no runner was lost, so none was replaced
            assert len(pods) == RUNS and components == {"runner"}
            assert {r["status"]["runner"]["generation"] for r in runs} == {0}
        assert server.wait_until(lambda: server.successful == launches)
        assert server.successful == launches, (server.successful, launches)
        assert kills >= KILLS and operator.starts == kills + 1
