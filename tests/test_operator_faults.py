"""A faulty API server (issue 19): the operator converges.

The real operator on the emulator with fault injection on (tests/k8s/faults.py):
10 % of the operator's writes are answered 500, 409 Conflict or 429 with
``Retry-After``, and every watch stream is dropped after about 3 s, its resume
answered ``410 Gone`` so kopf must list again.  50 runs of a one-step pipeline
calling a real (local) OpenAI-compatible endpoint must all succeed, with exactly
one successful model call per run and each run's own answer as its output.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.k8s.faults import Faults
from tests.operatorkit import ROOT, get_json, running_operator, wait_for
from tests.servers import OpenAIServer, RecordedRequest, Reply, completion

RUNS = 50


def manifests(endpoint: str) -> str:
    docs = [
        f"""
apiVersion: flujo.dev/v1alpha1
kind: Agent
metadata: {{name: llm}}
spec: {{type: openai, model: faults-model, endpoint: {endpoint}}}
---
apiVersion: flujo.dev/v1alpha1
kind: Pipeline
metadata: {{name: answer}}
spec:
  steps:
    - {{name: ask, agent: llm, input: "question {{{{ input }}}}"}}
"""
    ]
    for i in range(RUNS):
        docs.append(f"""
apiVersion: flujo.dev/v1alpha1
kind: PipelineRun
metadata: {{name: q-{i}}}
spec: {{pipelineRef: {{name: answer}}, input: "n{i}"}}
""")
    return "---".join(docs)


@pytest.mark.timeout(1500)
def test_runs_converge_under_api_faults_and_dropped_watches(
    k8s_emulator: Any, kubeconfig: Path, kubectl: Any, local_kubelet: Any, tmp_path: Path
) -> None:
    def answer(request: RecordedRequest) -> Reply:
        text = json.dumps(request.body)
        found = re.search(r"question (n\d+)", text)
        return completion(f"answer to {found.group(1) if found else '?'}")

    kubectl("apply", "-f", str(ROOT / "crds"))
    faults = Faults(write_error_rate=0.10, watch_drop_seconds=3.0, seed=19)
    with OpenAIServer(responder=answer) as server:
        k8s_emulator.emulator.faults = faults
        with running_operator(kubeconfig, tmp_path) as op:
            kubectl.apply(manifests(server.base_url))

            def all_done() -> bool:
                items = get_json(kubectl, "pipelineruns")["items"]
                phases = [(i.get("status") or {}).get("phase") for i in items]
                return len(items) == RUNS and all(p in ("Succeeded", "Failed") for p in phases)

            wait_for(all_done, 1200, "every run to finish")
            runs = get_json(kubectl, "pipelineruns")["items"]
            log = op.log()
        k8s_emulator.emulator.faults = None

    injected = dict(faults.injected)
    print("injected:", injected)
    outputs = {r["metadata"]["name"]: r["status"].get("output") for r in runs}
    phases = {r["metadata"]["name"]: r["status"]["phase"] for r in runs}
    assert set(phases.values()) == {"Succeeded"}, (phases, log[-5000:])
    assert outputs == {f"q-{i}": {"value": f"answer to n{i}"} for i in range(RUNS)}
    assert sum(r["status"]["launches"] for r in runs) == RUNS
    assert server.wait_until(lambda: server.successful == RUNS)
    assert server.successful == RUNS  # no duplicate agent call
    # The faults did happen, of every kind.
    assert injected.get("500", 0) and injected.get("429", 0) and injected.get("409", 0)
    assert injected.get("watch-drop", 0) and injected.get("410", 0)
