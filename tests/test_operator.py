"""The operator for real: a kopf process against the API emulator, kubectl doing apply.

Pods are run by the local kubelet (tests/k8s/kubelet.py) as `flujo step-run`
subprocesses, exactly as a node would run the step image.
"""

from __future__ import annotations

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
        assert "linear-1" in cluster("get", "fpr").stdout  # short name
        everything = cluster("get", "flujo").stdout  # the category
        assert "headline" in everything and "linear" in everything and "linear-1" in everything
        pipeline = get_json(cluster, "pipeline", "linear")["status"]
        conditions = {c["type"]: c["status"] for c in pipeline["conditions"]}
        assert conditions == {"Valid": "True", "AgentsResolved": "True"}


MISSING = """
apiVersion: flujo.dev/v1alpha1
kind: Pipeline
metadata: {name: needs-writer}
spec:
  steps:
    - {name: draft, agent: writer}
    - {name: loud, agent: builtin.upper}
---
apiVersion: flujo.dev/v1alpha1
kind: PipelineRun
metadata: {name: needs-writer-1}
spec:
  pipelineRef: {name: needs-writer}
  input: topic
"""

WRITER = """
apiVersion: flujo.dev/v1alpha1
kind: Agent
metadata: {name: writer}
spec:
  type: scripted
  responses: [{output: "a draft"}]
"""


def test_a_missing_agent_is_reported_and_the_run_waits_for_it(
    cluster: Any, kubeconfig: Path, tmp_path: Path
) -> None:
    with running_operator(kubeconfig, tmp_path) as op:
        cluster.apply(MISSING)

        def pipeline_status() -> Any:
            return get_json(cluster, "pipeline", "needs-writer").get("status")

        status = wait_for(pipeline_status, 30, "pipeline status")
        conditions = {c["type"]: c for c in status["conditions"]}
        assert conditions["AgentsResolved"]["status"] == "False"
        assert status["missingAgents"] == ["writer"]
        run = wait_for(
            lambda: get_json(cluster, "pipelinerun", "needs-writer-1").get("status"),
            30,
            "run status",
        )
        assert (run["phase"], run["reason"]) == ("Pending", "AgentsMissing")
        assert "unknown agent 'writer'" in run["message"]
        assert run_pods(cluster, "needs-writer-1") == []
        # the agent appears: the pipeline resolves and the run starts by itself
        cluster.apply(WRITER)
        done = cluster(
            "wait",
            "--for=jsonpath={.status.phase}=Succeeded",
            "pipelinerun/needs-writer-1",
            "--timeout=60s",
            check=False,
        )
        assert done.returncode == 0, done.stderr + op.log()[-3000:]
        assert get_json(cluster, "pipelinerun", "needs-writer-1")["status"]["output"] == {
            "value": "A DRAFT"
        }
        assert get_json(cluster, "pipeline", "needs-writer")["status"]["missingAgents"] == []


BREACH = """
apiVersion: flujo.dev/v1alpha1
kind: Agent
metadata: {name: pricey}
spec:
  type: scripted
  responses: [{output: "expensive summary", usage: {inputTokens: 900, costUsd: 0.6}}]
---
apiVersion: flujo.dev/v1alpha1
kind: Agent
metadata: {name: cheap}
spec:
  type: scripted
  responses: [{output: "cheap note", usage: {inputTokens: 10, costUsd: 0.01}}]
---
apiVersion: flujo.dev/v1alpha1
kind: Agent
metadata: {name: slow}
spec:
  type: scripted
  responses: [{output: "never", delaySeconds: 60}]
---
apiVersion: flujo.dev/v1alpha1
kind: PipelineRun
metadata: {name: breach-1}
spec:
  usageLimits: {maxCostUsd: 0.5}
  input: a long document
  pipeline:
    steps:
      - name: fanout
        parallel:
          branches:
            - name: branch-a
              steps: [{name: note, agent: cheap}, {name: summarise, agent: pricey}]
            - name: branch-b
              steps: [{name: ponder, agent: slow}]
"""


def test_a_cost_breach_in_a_parallel_branch_fails_the_run_and_deletes_siblings(
    cluster: Any, kubeconfig: Path, tmp_path: Path
) -> None:
    with running_operator(kubeconfig, tmp_path) as op:
        cluster.apply(BREACH)
        done = cluster(
            "wait",
            "--for=jsonpath={.status.phase}=Failed",
            "pipelinerun/breach-1",
            "--timeout=60s",
            check=False,
        )
        assert done.returncode == 0, done.stderr + op.log()[-3000:]
        status = get_json(cluster, "pipelinerun", "breach-1")["status"]
        assert status["reason"] == "UsageLimitExceeded"
        assert status["message"] == (
            "cost limit $0.50 exceeded at fanout/branch-a/summarise: $0.61 spent"
        )
        assert status["breach"]["path"] == "fanout/branch-a/summarise"
        steps = status["steps"]
        assert steps["fanout/branch-a/note"]["phase"] == "succeeded"  # partial output kept
        assert steps["fanout/branch-b/ponder"]["phase"] == "cancelled"
        # the sibling's pod is gone; the finished ones stay as the run's result store
        wait_for(
            lambda: (
                {
                    p["metadata"]["annotations"]["flujo.dev/step-path"]
                    for p in run_pods(cluster, "breach-1")
                }
                == {"fanout/branch-a/note", "fanout/branch-a/summarise"}
            ),
            30,
            "sibling deleted",
        )
        table = cluster("get", "pipelineruns").stdout
        assert "Failed" in table and "$0.61" in table


POD_FAILURES = """
apiVersion: flujo.dev/v1alpha1
kind: Agent
metadata: {name: echo}
spec: {type: builtin, builtin: echo}
---
apiVersion: flujo.dev/v1alpha1
kind: PipelineRun
metadata: {name: flaky-node}
spec:
  input: hello
  pipeline:
    steps:
      - {name: first, agent: echo, retry: {maxAttempts: 3, backoffSeconds: 0}}
---
apiVersion: flujo.dev/v1alpha1
kind: PipelineRun
metadata: {name: oom}
spec:
  input: hello
  pipeline:
    steps:
      - {name: big, agent: echo, retry: {maxAttempts: 3, backoffSeconds: 0}}
---
apiVersion: flujo.dev/v1alpha1
kind: PipelineRun
metadata: {name: bad-image}
spec:
  input: hello
  pipeline:
    steps:
      - {name: pull, agent: echo}
"""


def test_pod_level_failures_become_classified_step_events(
    cluster: Any, kubeconfig: Path, tmp_path: Path, local_kubelet: Any
) -> None:
    local_kubelet.fail_next({"flujo.dev/run": "flaky-node"}, "Evicted")
    local_kubelet.fail_next({"flujo.dev/run": "oom"}, "OOMKilled")
    local_kubelet.fail_next({"flujo.dev/run": "bad-image"}, "ErrImagePull")
    with running_operator(kubeconfig, tmp_path) as op:
        cluster.apply(POD_FAILURES)

        def finished(run: str) -> Any:
            status = get_json(cluster, "pipelinerun", run).get("status") or {}
            return status if status.get("phase") in ("Succeeded", "Failed") else None

        # eviction is transient: retried on a new pod, and the run succeeds
        evicted = wait_for(lambda: finished("flaky-node"), 60, f"flaky-node ({op.log()[-2000:]})")
        assert evicted["phase"] == "Succeeded" and evicted["steps"]["first"]["attempts"] == 2
        # OOMKilled is permanent: no retry, the pod's reason is in the status
        oom = wait_for(lambda: finished("oom"), 60, "oom")
        assert oom["phase"] == "Failed" and oom["steps"]["big"]["attempts"] == 1
        assert oom["steps"]["big"]["errorClass"] == "permanent"
        assert "OOMKilled" in oom["message"]
        # an image that cannot be pulled is a configuration error; the pod is removed
        pull = wait_for(lambda: finished("bad-image"), 60, "bad-image")
        assert pull["phase"] == "Failed" and pull["steps"]["pull"]["errorClass"] == "config"
        assert "ErrImagePull" in pull["message"]
        wait_for(lambda: run_pods(cluster, "bad-image") == [], 30, "failed pod deleted")


SLOW_RUN = """
apiVersion: flujo.dev/v1alpha1
kind: Agent
metadata: {name: slow}
spec:
  type: scripted
  responses: [{output: "late", delaySeconds: 60}]
---
apiVersion: flujo.dev/v1alpha1
kind: PipelineRun
metadata: {name: doomed}
spec:
  input: x
  pipeline:
    steps:
      - name: fan
        parallel:
          branches:
            - {name: a, steps: [{name: wait-a, agent: slow}]}
            - {name: b, steps: [{name: wait-b, agent: slow}]}
"""


def test_a_deleted_step_pod_fails_its_step_and_deleting_the_run_removes_its_pods(
    cluster: Any, kubeconfig: Path, tmp_path: Path, local_kubelet: Any
) -> None:
    with running_operator(kubeconfig, tmp_path):
        cluster.apply(SLOW_RUN)
        pods = wait_for(
            lambda: len(local_kubelet.running) == 2 and run_pods(cluster, "doomed"),
            60,
            "two step pods running",
        )
        # someone deletes a step pod: a transient failure, retried if the policy allows —
        # here it does not, so the parallel fails fast and cancels its sibling
        victim = pods[0]["metadata"]["name"]
        cluster("delete", "pod", victim, "--wait=false")
        status = wait_for(
            lambda: (
                (get_json(cluster, "pipelinerun", "doomed").get("status") or {})
                if (get_json(cluster, "pipelinerun", "doomed").get("status") or {}).get("phase")
                == "Failed"
                else None
            ),
            60,
            "run failed",
        )
        assert "was deleted before it finished" in status["message"], status["message"]
        wait_for(lambda: local_kubelet.running == [], 30, "no step process left")
        cluster("delete", "pipelinerun", "doomed")
        wait_for(lambda: run_pods(cluster, "doomed") == [], 30, "pods garbage-collected")


def test_an_agent_circuit_opens_in_its_status_and_steps_fall_back(
    cluster: Any, kubeconfig: Path, tmp_path: Path, openai_server: Any
) -> None:
    from tests.servers import error

    openai_server.script(*[error(500, "down") for _ in range(10)])
    docs = f"""
apiVersion: flujo.dev/v1alpha1
kind: Agent
metadata: {{name: llm}}
spec: {{type: openai, model: m, endpoint: "{openai_server.base_url}"}}
---
apiVersion: flujo.dev/v1alpha1
kind: Agent
metadata: {{name: backup}}
spec: {{type: builtin, builtin: upper}}
---
apiVersion: flujo.dev/v1alpha1
kind: Pipeline
metadata: {{name: guarded}}
spec:
  steps: [{{name: ask, agent: llm, fallback: backup}}]
"""
    run = """
apiVersion: flujo.dev/v1alpha1
kind: PipelineRun
metadata: {{name: guarded-{i}}}
spec: {{pipelineRef: {{name: guarded}}, input: "q{i}"}}
"""
    with running_operator(
        kubeconfig, tmp_path, FLUJO_BREAKER_FAIL_MAX="2", FLUJO_BREAKER_RESET_SECONDS="300"
    ) as op:
        cluster.apply(docs)
        for i in range(3):
            cluster.apply(run.format(i=i))
            done = cluster(
                "wait",
                "--for=jsonpath={.status.phase}=Succeeded",
                f"pipelinerun/guarded-{i}",
                "--timeout=60s",
                check=False,
            )
            assert done.returncode == 0, done.stderr + op.log()[-3000:]
            output = get_json(cluster, "pipelinerun", f"guarded-{i}")["status"]["output"]
            assert output == {"value": f"Q{i}"}  # the fallback answered
        # two transient failures opened the circuit: the third run never called the endpoint
        assert openai_server.calls == 2
        circuit = wait_for(
            lambda: (
                (get_json(cluster, "agent", "llm").get("status") or {}).get("circuit", {})
                if (get_json(cluster, "agent", "llm").get("status") or {})
                .get("circuit", {})
                .get("state")
                == "open"
                else None
            ),
            30,
            "circuit open in status",
        )
        assert circuit["failures"] >= 2 and circuit["openedAt"]
        assert "open" in cluster("get", "agents").stdout
        third = get_json(cluster, "pipelinerun", "guarded-2")["status"]
        assert third["steps"]["ask"]["agent"] == "backup"
        assert len(run_pods(cluster, "guarded-2")) == 1  # only the fallback's pod
        transitions = [e for e in op.audit() if e["event"] == "circuit.transition"]
        assert [(t["agent"], t["from"], t["to"]) for t in transitions] == [
            ("default/llm", "closed", "open")
        ]
        assert transitions[0]["namespace"] == "default" and transitions[0]["failures"] >= 2
    # a restarted operator restores the open circuit from the Agent status
    with running_operator(
        kubeconfig, tmp_path, FLUJO_BREAKER_FAIL_MAX="2", FLUJO_BREAKER_RESET_SECONDS="300"
    ) as op:
        cluster.apply(run.format(i=3))
        done = cluster(
            "wait",
            "--for=jsonpath={.status.phase}=Succeeded",
            "pipelinerun/guarded-3",
            "--timeout=60s",
            check=False,
        )
        assert done.returncode == 0, done.stderr + op.log()[-3000:]
        assert openai_server.calls == 2


def test_a_one_mib_output_round_trips_through_pods_byte_for_byte(
    cluster: Any, kubeconfig: Path, tmp_path: Path, k8s_client: Any
) -> None:
    import asyncio

    from flujo.engine import StepSucceeded

    from flujo_operator.kube import Kube
    from flujo_operator.runs import run_events

    text = "".join(chr(0x41 + (i * 7) % 26) + ("\n" if i % 97 == 0 else "") for i in range(1 << 20))
    big = [
        {
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
    ]
    # The cluster profile caps inputs and outputs at 1 MiB; these are a little more.
    with running_operator(
        kubeconfig,
        tmp_path,
        FLUJO_SECURITY_MAX_INPUT_BYTES=str(2 << 20),
        FLUJO_SECURITY_MAX_OUTPUT_BYTES=str(2 << 20),
    ) as op:
        # `create`, not `apply`: apply would copy the 1 MiB spec into an annotation
        cluster("create", "-f", "-", input=yaml.safe_dump_all(big))
        done = cluster(
            "wait",
            "--for=jsonpath={.status.phase}=Succeeded",
            "pipelinerun/big",
            "--timeout=90s",
            check=False,
        )
        assert done.returncode == 0, done.stderr + op.log()[-3000:]
        run = get_json(cluster, "pipelinerun", "big")
        assert run["status"]["output"] == {"value": len(text)}
        # the 1 MiB input reached the pod through a ConfigMap (too big for an annotation)
        assert get_json(cluster, "configmaps", "-l", "flujo.dev/run=big")["items"]
        events = asyncio.run(run_events(Kube(k8s_client), run))
        copies = [e for e in events if isinstance(e, StepSucceeded) and e.path == "copy"]
        assert len(copies) == 1 and copies[0].output == text
        # the status stays small: outputs live in the pods, not in etcd
        assert len(json.dumps(run["status"])) < 16 * 1024


def test_health_endpoint_reports_missing_crds(
    kubeconfig: Path, kubectl: Any, tmp_path: Path
) -> None:
    import urllib.error
    import urllib.request

    from tests.operatorkit import OperatorProcess

    op = OperatorProcess(kubeconfig, tmp_path / "operator.log")
    with pytest.raises(RuntimeError, match="not healthy"):
        op.start(timeout=8)  # without CRDs the health endpoint answers with an error
    try:
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(f"http://127.0.0.1:{op.port}/healthz", timeout=5)
        assert answer.value.code == 500
        assert "CRDs not installed: agents, pipelineruns, pipelines" in op.log()
    finally:
        op.kill()
    kubectl("apply", "-f", str(ROOT / "crds"))
    op = OperatorProcess(kubeconfig, tmp_path / "operator2.log")
    op.start()
    op.stop()


@pytest.mark.timeout(900)  # 80 step pods: how fast they start is the machine's business
def test_a_long_loop_keeps_the_stored_status_small(
    cluster: Any, kubeconfig: Path, tmp_path: Path
) -> None:
    """Status patches are merges: steps that leave the listed window must be deleted."""
    long_loop = [
        {
            "apiVersion": "flujo.dev/v1alpha1",
            "kind": "PipelineRun",
            "metadata": {"name": "long"},
            "spec": {
                "input": 0,
                "pipeline": {
                    "steps": [
                        {
                            "name": "count",
                            "loop": {
                                "maxIterations": 80,
                                "exitWhen": "output >= 80",
                                "steps": [{"name": "inc", "agent": "builtin.add"}],
                            },
                        }
                    ]
                },
            },
        }
    ]
    # One runner pod serves the 80 iterations: the status window is the executor's concern
    # in neither mode, and 80 step pods would only test how fast this machine starts them.
    env = {"FLUJO_STATUS_STEPS": "10", "FLUJO_EXECUTOR": "runner"}
    with running_operator(kubeconfig, tmp_path, **env) as op:
        cluster.apply(long_loop)
        done = cluster(
            "wait",
            "--for=jsonpath={.status.phase}=Succeeded",
            "pipelinerun/long",
            "--timeout=600s",
            check=False,
        )
        assert done.returncode == 0, done.stderr + op.log()[-3000:]
        status = get_json(cluster, "pipelinerun", "long")["status"]
        assert status["output"] == {"value": 80} and status["progress"] == "80/80"
        assert len(status["steps"]) <= 11  # the window, not all 80 iterations
        assert "count/iter-80/inc" in status["steps"]
        assert "count/iter-1/inc" not in status["steps"]


def test_an_agents_max_concurrent_holds_step_pods_back(
    cluster: Any, kubeconfig: Path, tmp_path: Path, openai_server: Any
) -> None:
    """``rateLimit.maxConcurrent`` in the cluster: at most N of the agent's pods at once."""
    from tests.servers import completion

    openai_server.responder = lambda r: completion("ok", delay=0.3)
    branches = "\n".join(
        f"          - {{name: b{i}, steps: [{{name: ask-{i}, agent: llm}}]}}" for i in range(4)
    )
    docs = f"""
apiVersion: flujo.dev/v1alpha1
kind: Agent
metadata: {{name: llm}}
spec:
  type: openai
  model: m
  endpoint: "{openai_server.base_url}"
  rateLimit: {{maxConcurrent: 1}}
---
apiVersion: flujo.dev/v1alpha1
kind: PipelineRun
metadata: {{name: one-at-a-time}}
spec:
  pipeline:
    steps:
      - name: fan
        parallel:
          branches:
{branches}
  input: q
"""
    with running_operator(kubeconfig, tmp_path) as op:
        cluster.apply(docs)
        done = cluster(
            "wait",
            "--for=jsonpath={.status.phase}=Succeeded",
            "pipelinerun/one-at-a-time",
            "--timeout=90s",
            check=False,
        )
        assert done.returncode == 0, done.stderr + op.log()[-3000:]
    assert openai_server.calls == 4
    assert openai_server.max_in_flight == 1
    assert len(run_pods(cluster, "one-at-a-time")) == 4
