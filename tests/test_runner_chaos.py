"""Crash safety of the runner executor: runner pods killed while a call is in flight.

Ten runs with loops and parallel steps call a real (local) OpenAI-compatible
endpoint through their runner pods.  Ten times, the test picks a call the
endpoint is holding, force-deletes the runner pod that made it, and only then
lets the call answer (into a dead connection).  Every run must still succeed:
the launches in flight fail as ``transient`` and are retried by the steps'
policy on the run's next runner, and a step whose success was recorded is
never called again — every prompt reaches the endpoint at most once per
attempt the journal records for its step, and exactly one attempt succeeds.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from flujo.engine import StepFailed, StepSucceeded

from flujo_operator.kube import Kube
from flujo_operator.runs import run_events
from tests.operatorkit import ROOT, get_json, running_operator, wait_for
from tests.servers import OpenAIServer, RecordedRequest, Reply, completion

RUNS = 10
KILLS = 10


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
  stream: true  # the endpoint holds a streamed answer after its first text until released
---
apiVersion: flujo.dev/v1alpha1
kind: Pipeline
metadata: {{name: chaos}}
spec:
  steps:
    - name: refine
      loop:
        maxIterations: 2
        exitWhen: "iteration >= 2"
        steps:
          - name: draft
            agent: llm
            input: "draft {{{{ iteration }}}} of {{{{ input }}}}"
            retry: {{maxAttempts: 6}}
    - name: review
      parallel:
        branches:
          - name: style
            steps:
              - {{name: style-check, agent: llm, input: "style of {{{{ input }}}}",
                 retry: {{maxAttempts: 6}}}}
          - name: facts
            steps:
              - {{name: fact-check, agent: llm, input: "facts of {{{{ input }}}}",
                 retry: {{maxAttempts: 6}}}}
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


PATHS = {
    "draft 1": "refine/iter-1/draft",
    "draft 2": "refine/iter-2/draft",
    "style": "review/style/style-check",
    "facts": "review/facts/fact-check",
}


def path_of(prompt: str) -> tuple[str, str]:
    """(run, step path) of a prompt such as ``draft 2 of topic 7``."""
    what, topic = prompt.split(" of ")
    return f"chaos-{topic.split()[-1]}", PATHS[what]


@pytest.mark.timeout(900)
def test_runs_survive_runner_pod_kills_and_no_completed_step_is_called_again(
    kubeconfig: Path, kubectl: Any, local_kubelet: Any, k8s_client: Any, tmp_path: Path
) -> None:
    rng = random.Random(20261203)
    lock = threading.Lock()
    held: list[tuple[str, threading.Event]] = []
    calls: Counter[tuple[str, str]] = Counter()

    def answer(request: RecordedRequest) -> Reply:
        prompt = request.body["messages"][-1]["content"]
        gate = threading.Event()
        with lock:
            calls[path_of(prompt)] += 1
            held.append((prompt, gate))
        return completion("ok", gate=gate)

    with OpenAIServer(responder=answer) as server:
        kubectl("apply", "-f", str(ROOT / "crds"))
        with running_operator(kubeconfig, tmp_path, FLUJO_EXECUTOR="runner") as op:
            kubectl.apply(manifests(server.base_url))

            def all_done() -> bool:
                items = get_json(kubectl, "pipelineruns")["items"]
                phases = [(i.get("status") or {}).get("phase") for i in items]
                return len(items) == RUNS and all(p in ("Succeeded", "Failed") for p in phases)

            kills = 0
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline and not all_done():
                time.sleep(0.2)
                with lock:
                    calls_now = list(held)
                pods = get_json(kubectl, "pods", "-l", "app.kubernetes.io/component=runner")
                running = {
                    p["metadata"]["labels"]["flujo.dev/run"]: p["metadata"]["name"]
                    for p in pods["items"]
                    if p["status"].get("phase") == "Running"
                }
                alive = [c for c in calls_now if path_of(c[0])[0] in running]
                release = [c for c in calls_now if c not in alive]  # their runner is gone
                if kills < KILLS and alive:
                    prompt, _ = alive[rng.randrange(len(alive))]
                    run, _ = path_of(prompt)
                    kubectl("delete", "pod", running[run], "--grace-period=0", "--force")
                    wait_for(
                        lambda pod=running[run]: (
                            not kubectl("get", "pod", pod, check=False).stdout.strip()
                        ),
                        60,
                        f"runner pod {running[run]} to go",
                    )
                    kills += 1
                    # the killed runner's calls (the victim, a parallel sibling) now answer
                    # into dead connections
                    release += [c for c in alive if path_of(c[0])[0] == run]
                elif kills >= KILLS:
                    release = calls_now
                # Until the kills are done, only calls of killed runners answer: the runs
                # stay in flight, and each kill interrupts a call the endpoint holds.
                with lock:
                    for call in release:
                        held.remove(call)
                        call[1].set()
            with lock:
                for _, gate in held:
                    gate.set()
            wait_for(all_done, 120, f"every run to finish ({op.log()[-3000:]})")

        runs = get_json(kubectl, "pipelineruns")["items"]
        failed = {
            r["metadata"]["name"]: (r["status"].get("reason"), r["status"].get("message"))
            for r in runs
            if r["status"]["phase"] != "Succeeded"
        }
        assert not failed, failed
        assert kills == KILLS
        assert sum(r["status"]["runner"]["generation"] for r in runs) == KILLS
        kube = Kube(k8s_client)
        lost = 0
        for run in runs:
            name = run["metadata"]["name"]
            events = asyncio.run(run_events(kube, run))
            for path in PATHS.values():
                mine = [e for e in events if getattr(e, "path", None) == path]
                succeeded = [e for e in mine if isinstance(e, StepSucceeded)]
                attempts = {e.attempt for e in mine}
                assert len(succeeded) == 1, (name, path, mine)
                # the success is the last attempt, and no attempt called twice
                assert succeeded[0].attempt == max(attempts), (name, path, mine)
                assert 1 <= calls[name, path] <= len(attempts), (name, path, calls[name, path])
                lost += sum(
                    1
                    for e in mine
                    if isinstance(e, StepFailed)
                    and e.error_class == "transient"
                    and "runner pod" in e.message
                )
        assert lost >= KILLS  # each kill interrupted (at least) the call it was aimed at
        # A lost runner is not the agent's failure: its circuit breaker never counted them.
        circuit = (get_json(kubectl, "agent", "llm").get("status") or {}).get("circuit") or {}
        assert circuit.get("state", "closed") == "closed", circuit
