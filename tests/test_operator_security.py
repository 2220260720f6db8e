"""The operator's half of security: policy per namespace, step pods, audit, budgets, secrets.

The operator runs for real (a kopf process against the API emulator; step pods
are ``flujo step-run`` processes of the local kubelet), so every control is
checked where it acts: admission of runs, Pipeline and Agent status, the step
pod that builds the agent, the audit file, and every channel a secret could
leak through.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.operatorkit import free_port, get_json, running_operator, wait_for
from tests.servers import OpenAIServer, RecordedRequest, Reply, completion, error


@pytest.fixture
def cluster(kubeconfig: Path, kubectl: Any, local_kubelet: Any) -> Any:
    from tests.operatorkit import ROOT

    kubectl("apply", "-f", str(ROOT / "crds"))
    return kubectl


def status_of(kubectl: Any, kind: str, name: str, namespace: str = "default") -> dict[str, Any]:
    found: dict[str, Any] = get_json(kubectl, kind, name, "-n", namespace).get("status") or {}
    return found


def conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status.get("conditions") or []}


def llm_pipeline(namespace: str, endpoint: str, *, retry: str = "") -> str:
    return f"""
apiVersion: flujo.dev/v1alpha1
kind: Agent
metadata: {{name: llm, namespace: {namespace}}}
spec:
  type: openai
  model: m
  endpoint: "{endpoint}"
  pricing: {{inputPer1k: 0.001, outputPer1k: 0.002}}
---
apiVersion: flujo.dev/v1alpha1
kind: Pipeline
metadata: {{name: ask, namespace: {namespace}}}
spec:
  steps:
    - {{name: answer, agent: llm{retry}}}
---
apiVersion: flujo.dev/v1alpha1
kind: PipelineRun
metadata: {{name: ask-1, namespace: {namespace}}}
spec:
  pipelineRef: {{name: ask}}
  input: question
"""


# Loopback (the test server) is refused by the cluster profile; `default` allows it.
NAMESPACE_POLICY = json.dumps(
    {
        "profile": "cluster",
        "namespaces": {"default": {"allowLoopback": True, "allowHttpLoopback": True}},
    }
)
TWO_NAMESPACES: dict[str, str | None] = {
    "FLUJO_NAMESPACES": "default,restricted",
    "FLUJO_SECURITY_POLICY": NAMESPACE_POLICY,
    "FLUJO_SECURITY_ALLOW_LOOPBACK": None,
    "FLUJO_SECURITY_ALLOW_HTTP_LOOPBACK": None,
}


def test_the_policy_applies_per_namespace_to_agents_pipelines_and_runs(
    cluster: Any, kubeconfig: Path, tmp_path: Path, openai_server: OpenAIServer
) -> None:
    openai_server.responder = lambda r: completion("fine", prompt_tokens=3, completion_tokens=2)
    cluster("create", "namespace", "restricted")
    with running_operator(kubeconfig, tmp_path, **TWO_NAMESPACES) as op:
        for namespace in ("restricted", "default"):
            cluster.apply(llm_pipeline(namespace, openai_server.base_url))
        done = cluster(
            "wait",
            "--for=jsonpath={.status.phase}=Succeeded",
            "pipelinerun/ask-1",
            "-n",
            "default",
            "--timeout=60s",
            check=False,
        )
        assert done.returncode == 0, done.stderr + op.log()[-3000:]

        run = wait_for(
            lambda: (
                status_of(cluster, "pipelinerun", "ask-1", "restricted").get("reason")
                and status_of(cluster, "pipelinerun", "ask-1", "restricted")
            ),
            30,
            "the restricted run's status",
        )
        assert (run["phase"], run["reason"]) == ("Pending", "PolicyDenied")
        assert "loopback" in run["message"] and "allowLoopback: false" in run["message"]
        agent = wait_for(
            lambda: status_of(cluster, "agent", "llm", "restricted").get("message"),
            30,
            "the restricted agent's status",
        )
        assert agent.startswith("refused by the security policy: spec.endpoint:")
        assert status_of(cluster, "agent", "llm", "restricted")["allowed"] is False
        assert status_of(cluster, "agent", "llm")["allowed"] is True
        valid = conditions(status_of(cluster, "pipeline", "ask", "restricted"))["Valid"]
        assert (valid["status"], valid["reason"]) == ("False", "PolicyDenied")
        assert conditions(status_of(cluster, "pipeline", "ask"))["Valid"]["status"] == "True"
        assert openai_server.calls == 1  # only the allowed namespace called the endpoint

        audit = op.audit()
    denied = [e for e in audit if e["event"] == "policy.denied"]
    assert denied and all(e["namespace"] == "restricted" for e in denied)
    assert denied[0]["kind"] == "PipelineRun" and denied[0]["name"] == "ask-1"
    changes = {
        (e["kind"], e["namespace"], e["action"]) for e in audit if e["event"] == "config.changed"
    }
    for namespace in ("default", "restricted"):
        assert ("Agent", namespace, "created") in changes
        assert ("Pipeline", namespace, "created") in changes
    created = [e for e in audit if e["event"] == "config.changed"]
    # kubectl apply is the field manager; the operator's own status writes are neither
    # the manager nor a change of configuration.
    assert len(created) == 4
    assert {e["fieldManager"] for e in created} == {"kubectl-client-side-apply"}
    assert all(e["generation"] == 1 and e["uid"] for e in created)
    uid = get_json(cluster, "pipelinerun", "ask-1")["metadata"]["uid"]
    runs = [e for e in audit if e.get("runId") == uid]
    assert [e["event"] for e in runs] == ["run.started", "agent.call", "run.finished"]
    call = runs[1]
    assert (call["agent"], call["agentType"], call["model"], call["outcome"]) == (
        "llm",
        "openai",
        "m",
        "succeeded",
    )
    assert (call["inputTokens"], call["outputTokens"], call["namespace"]) == (3, 2, "default")
    assert "input" not in call and "output" not in call  # no contents by default
    assert runs[2]["status"] == "succeeded" and runs[2]["pipeline"] == "default/ask"


def test_a_step_pod_builds_its_agent_under_the_namespace_policy(
    cluster: Any, kubeconfig: Path, tmp_path: Path, openai_server: OpenAIServer
) -> None:
    """An endpoint hidden behind ``${VAR}`` passes admission; the step pod still refuses it."""
    openai_server.responder = lambda r: completion("should never be asked")
    hidden = f"http://${{FLUJO_TEST_UNSET_HOST:-127.0.0.1}}:{openai_server.port}/v1"
    cluster("create", "namespace", "restricted")
    with running_operator(kubeconfig, tmp_path, **TWO_NAMESPACES) as op:
        cluster.apply(llm_pipeline("restricted", hidden))
        done = cluster(
            "wait",
            "--for=jsonpath={.status.phase}=Failed",
            "pipelinerun/ask-1",
            "-n",
            "restricted",
            "--timeout=60s",
            check=False,
        )
        assert done.returncode == 0, done.stderr + op.log()[-3000:]
        run = status_of(cluster, "pipelinerun", "ask-1", "restricted")
    step = run["steps"]["answer"]
    assert step["errorClass"] == "config"
    assert "refused by the security policy" in step["message"]
    assert "loopback" in step["message"]
    assert openai_server.calls == 0


def test_a_step_pod_caps_agent_outputs_at_the_namespace_limit(
    cluster: Any, kubeconfig: Path, tmp_path: Path, openai_server: OpenAIServer
) -> None:
    openai_server.responder = lambda r: completion("x" * 5000)
    with running_operator(kubeconfig, tmp_path, FLUJO_SECURITY_MAX_OUTPUT_BYTES="1000") as op:
        cluster.apply(llm_pipeline("default", openai_server.base_url))
        done = cluster(
            "wait",
            "--for=jsonpath={.status.phase}=Failed",
            "pipelinerun/ask-1",
            "--timeout=60s",
            check=False,
        )
        assert done.returncode == 0, done.stderr + op.log()[-3000:]
        run = status_of(cluster, "pipelinerun", "ask-1")
    step = run["steps"]["answer"]
    assert step["errorClass"] == "permanent"
    assert "1000" in step["message"]
    assert openai_server.calls == 1
    assert run["usage"]["totalTokens"] > 0  # the refused call's usage still counts


def test_a_run_input_over_the_limit_fails_at_once(
    cluster: Any, kubeconfig: Path, tmp_path: Path
) -> None:
    manifest = """
apiVersion: flujo.dev/v1alpha1
kind: PipelineRun
metadata: {name: big-input}
spec:
  pipeline:
    steps: [{name: loud, agent: builtin.upper}]
  input: "%s"
""" % ("y" * 3000)
    with running_operator(kubeconfig, tmp_path, FLUJO_SECURITY_MAX_INPUT_BYTES="2048") as op:
        cluster.apply(manifest)
        run = wait_for(
            lambda: (
                status_of(cluster, "pipelinerun", "big-input").get("phase") == "Failed"
                and status_of(cluster, "pipelinerun", "big-input")
            ),
            30,
            "the run to fail",
        )
        assert run["reason"] == "InputRefused"
        assert run["message"].startswith("spec.input: ")
        assert "2048" in run["message"]
        assert not get_json(cluster, "pods", "-l", "flujo.dev/run=big-input")["items"]
        assert any(e["event"] == "policy.denied" for e in op.audit())


# --- the secret canary, through the operator ------------------------------------------------

SECRET = "sk-Op4Qx9Lm2Vb8Tz4Rw6Ny1Kp3Hd5Gf"
PREFIX = SECRET[:12]


def _auth(record: RecordedRequest) -> str:
    return record.headers.get("Authorization", "")


ECHOES: list[Callable[[RecordedRequest], Reply]] = [
    lambda r: error(500, f"upstream rejected header {_auth(r)}"),
    lambda r: error(429, f"quota of {_auth(r)} exhausted", retry_after=0),
    lambda r: Reply(status=200, body=f"<html>{_auth(r)}</html>".encode(), content_type="text/html"),
    lambda r: error(401, f"Incorrect API key provided: {_auth(r)}."),
    lambda r: Reply(status=403, json={"detail": f"forbidden for {_auth(r)}"}),
    lambda r: error(400, "x" * 170 + " " + _auth(r)),
    lambda r: Reply(status=502, json=[{"echo": _auth(r)}]),
    lambda r: Reply(status=400, body=f"bad header: {_auth(r)}".encode()),
]


def canary_manifests(endpoint: str) -> str:
    secret = base64.b64encode(SECRET.encode()).decode()
    branches = "\n".join(
        f"          - name: b{i}\n            steps: [{{name: ask-{i}, agent: llm, "
        f'retry: {{maxAttempts: 2, backoffSeconds: 0, retryOn: ["transient"]}}}}]'
        for i in range(4)
    )
    return f"""
apiVersion: v1
kind: Secret
metadata: {{name: llm-key}}
data: {{key: {secret}}}
---
apiVersion: flujo.dev/v1alpha1
kind: Agent
metadata: {{name: llm}}
spec:
  type: openai
  model: m
  endpoint: "{endpoint}"
  apiKey: {{secretKeyRef: {{name: llm-key, key: key}}}}
---
apiVersion: flujo.dev/v1alpha1
kind: PipelineRun
metadata: {{name: canary}}
spec:
  pipeline:
    steps:
      - name: fan
        parallel:
          onBranchFailure: wait
          branches:
{branches}
  input: hello
"""


def scan(label: str, text: str) -> None:
    assert SECRET not in text, f"the canary leaked through {label}: {text[:400]}"
    assert PREFIX not in text, f"a prefix of the canary leaked through {label}: {text[:400]}"


def test_the_secret_canary_never_leaks_through_the_operator(
    cluster: Any, kubeconfig: Path, tmp_path: Path, openai_server: OpenAIServer
) -> None:
    counter = iter(range(10_000))
    openai_server.responder = lambda r: ECHOES[next(counter) % len(ECHOES)](r)
    port = free_port()
    with running_operator(
        kubeconfig,
        tmp_path,
        FLUJO_METRICS_PORT=str(port),
        FLUJO_AUDIT_CONTENT="true",  # the strictest audit: contents included
    ) as op:
        cluster.apply(canary_manifests(openai_server.base_url))
        done = cluster(
            "wait",
            "--for=jsonpath={.status.phase}=Failed",
            "pipelinerun/canary",
            "--timeout=90s",
            check=False,
        )
        assert done.returncode == 0, done.stderr + op.log()[-3000:]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            metrics = response.read().decode()
        channels = {
            "the PipelineRun": cluster("get", "pipelinerun", "canary", "-o", "json").stdout,
            "the Agent": cluster("get", "agent", "llm", "-o", "json").stdout,
            "Kubernetes Events": cluster("get", "events", "-o", "json").stdout,
            "step pods": cluster("get", "pods", "-o", "json").stdout,
            "the metrics": metrics,
        }
        pods = get_json(cluster, "pods", "-l", "flujo.dev/run=canary")["items"]
        for pod in pods:
            name = pod["metadata"]["name"]
            channels[f"the log of {name}"] = cluster("logs", name).stdout
        op.stop()
        channels["the operator's log"] = op.log()
        channels["the audit log"] = op.audit_path.read_text()
    assert len(openai_server.requests) >= 4
    assert {_auth(r) for r in openai_server.requests} == {f"Bearer {SECRET}"}  # really sent
    assert len(pods) >= 4
    assert any(e["event"] == "agent.call" and "message" in e for e in op.audit())
    for label, text in channels.items():
        scan(label, text)


# --- the API budget ---------------------------------------------------------------------------


def test_pod_creations_wait_for_the_pod_budget(k8s_client: Any) -> None:
    """Five pods at 4/s with a burst of 2: three wait, and the last is at least 0.75 s late."""
    from flujo.observability.metrics import FlujoMetrics

    from flujo_operator.kube import Budget, Kube

    metrics = FlujoMetrics()
    kube = Kube(k8s_client, pod_budget=Budget(4, 2), api_budget=Budget(0, 1), metrics=metrics)

    def pod(i: int) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"budget-{i}", "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        }

    async def create_all() -> list[float]:
        started = time.monotonic()

        async def one(i: int) -> float:
            await kube.create_pod(pod(i))
            return time.monotonic() - started

        return list(await asyncio.gather(*(one(i) for i in range(5))))

    finished = asyncio.run(create_all())
    # GCRA: slots at 0, 0 (the burst), then 0.25, 0.5, 0.75 s — a lower bound, never flaky.
    assert max(finished) >= 0.75
    waits = metrics.registry.get_sample_value(
        "flujo_operator_api_throttle_seconds_count", {"verb": "create"}
    )
    assert waits == 3
    from kubernetes import client

    listed = client.CoreV1Api(k8s_client).list_namespaced_pod("default").items
    names = {p.metadata.name for p in listed}
    assert {f"budget-{i}" for i in range(5)} <= names
