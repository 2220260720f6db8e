"""The chart and the operator on the upstream control plane.

``helm install`` of charts/flujo (namespaced mode: a Role and RoleBinding in the
watched namespace), then the operator runs as a kopf process authenticated with a
token of the chart's own ServiceAccount — not as admin — with the environment the
chart's Deployment gives it. RBAC is the real authorizer, so a verb the chart's Role
lacks fails the run. The watched namespace enforces the ``restricted`` Pod Security
Standard, so every step pod the operator creates passes real admission. The garbage
collector of kube-controller-manager removes a deleted run's pods.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.operatorkit import OperatorProcess, wait_for
from tests.realcluster.controlplane import ROOT, ControlPlane, KubeletThread, RealKubectl

CHART = ROOT / "charts" / "flujo"
HELM = ROOT / ".tools" / "bin" / "helm"
EXAMPLES = ROOT / "examples"
RELEASE_NAMESPACE = "flujo-system"
WATCHED = "flujo-restricted"

# Every example that needs no API key, with the input of its example run.
EXAMPLE_RUNS = {
    "linear": "  hello, cluster ",
    "fanout": "One two. Three four five.",
    "refine-loop": "rivers",
    "router": "my invoice is wrong",
}


def embedded_output(example: str, text: str) -> Any:
    """What the same pipeline returns when run in this process (`flujo run --json`)."""
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "flujo"),
            "run",
            str(EXAMPLES / f"{example}.yaml"),
            *("--input", text, "--json", "-q"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(result.stdout)["output"]


class Release:
    """The installed chart: its manifest, ServiceAccount and the operator's environment."""

    def __init__(self, manifest: str) -> None:
        self.objects = [o for o in yaml.safe_load_all(manifest) if o]

    def one(self, kind: str) -> dict[str, Any]:
        found = [o for o in self.objects if o["kind"] == kind]
        assert len(found) == 1, [o["metadata"]["name"] for o in found]
        return found[0]

    @property
    def service_account(self) -> str:
        return str(self.one("ServiceAccount")["metadata"]["name"])

    def operator_env(self) -> dict[str, str]:
        container = self.one("Deployment")["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
        env.pop("FLUJO_HEALTH_PORT", None)  # OperatorProcess picks a free port
        env["FLUJO_AUDIT_LOG"] = "off"  # the chart's stdout; off keeps the log readable
        return env


@pytest.fixture(scope="module")
def release(
    control_plane: ControlPlane, admin_kubectl: RealKubectl, real_crds: RealKubectl
) -> Iterator[Release]:
    if not HELM.exists():
        pytest.skip("helm is not installed (bash scripts/install-tools.sh)")
    admin_kubectl("create", "namespace", WATCHED)
    admin_kubectl(
        "label",
        "namespace",
        WATCHED,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/enforce-version=latest",
    )
    wait_for(
        lambda: admin_kubectl("-n", WATCHED, "get", "sa", "default", check=False).returncode == 0,
        30,
        "the default ServiceAccount",
    )
    helm = [str(HELM), "--kubeconfig", str(control_plane.kubeconfig)]
    # The CRDs are already there (applied with kubectl by real_crds): the chart adopts them.
    # helm 4 applies server-side; where its CRDs differ from the kubectl-applied ones (a
    # newer chart), the fields kubectl owns conflict, so the chart wins with --force-conflicts.
    install = subprocess.run(
        [
            *(*helm, "install", "flujo", str(CHART), "--namespace", RELEASE_NAMESPACE),
            *("--create-namespace", "--take-ownership", "--force-conflicts"),
            *("--set", f"watchNamespaces={{{WATCHED}}}"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert install.returncode == 0, install.stderr + install.stdout
    manifest = subprocess.run(
        [*helm, "get", "manifest", "flujo", "--namespace", RELEASE_NAMESPACE],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    try:
        yield Release(manifest)
    finally:
        subprocess.run(
            [*helm, "uninstall", "flujo", "--namespace", RELEASE_NAMESPACE, "--wait=false"],
            capture_output=True,
            timeout=120,
            check=False,
        )
        admin_kubectl("delete", "namespace", WATCHED, "--wait=false", check=False)


@pytest.fixture(scope="module")
def operator_kubeconfig(
    release: Release,
    control_plane: ControlPlane,
    admin_kubectl: RealKubectl,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """A kubeconfig holding a token of the chart's ServiceAccount (TokenRequest API)."""
    token = admin_kubectl(
        "-n", RELEASE_NAMESPACE, "create", "token", release.service_account, "--duration=2h"
    ).stdout.strip()
    path = tmp_path_factory.mktemp("operator") / "kubeconfig"
    return control_plane.token_kubeconfig(path, token, WATCHED)


def test_helm_install_created_the_least_privilege_rbac(
    release: Release, admin_kubectl: RealKubectl
) -> None:
    sa = f"system:serviceaccount:{RELEASE_NAMESPACE}:{release.service_account}"
    role = admin_kubectl.json("-n", WATCHED, "role", release.one("Role")["metadata"]["name"])
    assert role["rules"], role

    def can(verb: str, resource: str, namespace: str = WATCHED) -> bool:
        resource, _, subresource = resource.partition("/")
        extra = [f"--subresource={subresource}"] if subresource else []
        answer = admin_kubectl(
            "auth", "can-i", verb, resource, *extra, "-n", namespace, "--as", sa, check=False
        )
        return answer.stdout.strip() == "yes"

    assert can("create", "pods") and can("watch", "pipelineruns.flujo.dev")
    assert can("patch", "pipelineruns.flujo.dev/status") and can("get", "pods/log")
    assert not can("get", "secrets"), "the operator must never read Secrets"
    assert not can("update", "pipelineruns.flujo.dev"), "only the status subresource"
    assert not can("create", "pods", "default"), "only the watched namespace"


@pytest.mark.parametrize("executor", ["pod", "runner"])
def test_every_example_succeeds_under_the_charts_serviceaccount_in_a_restricted_namespace(
    release: Release,
    operator_kubeconfig: Path,
    admin_kubectl: RealKubectl,
    real_kubelet: KubeletThread,
    tmp_path: Path,
    executor: str,
) -> None:
    kubectl = admin_kubectl.bound(WATCHED)
    expected = {name: embedded_output(name, text) for name, text in EXAMPLE_RUNS.items()}
    runs = {name: f"{name}-{executor}" for name in EXAMPLE_RUNS}
    operator = OperatorProcess(
        operator_kubeconfig, tmp_path / "operator.log", **release.operator_env()
    )
    operator.start(timeout=60)
    try:
        for name, text in EXAMPLE_RUNS.items():
            kubectl("apply", "-f", str(EXAMPLES / f"{name}.yaml"))
            spec = {"pipelineRef": {"name": name}, "input": text, "executor": executor}
            kubectl.apply(
                [
                    {
                        "apiVersion": "flujo.dev/v1alpha1",
                        "kind": "PipelineRun",
                        "metadata": {"name": runs[name]},
                        "spec": spec,
                    }
                ]
            )

        def finished() -> dict[str, str] | None:
            phases = {
                run: (kubectl.json("pipelinerun", run).get("status") or {}).get("phase")
                for run in runs.values()
            }
            done = all(p in ("Succeeded", "Failed") for p in phases.values())
            return phases if done else None

        phases = wait_for(finished, 100, "every example run to finish")
    finally:
        operator.stop()
    log = operator.log()
    assert set(phases.values()) == {"Succeeded"}, (phases, log[-4000:])
    launches = 0
    for name, run in runs.items():
        status = kubectl.json("pipelinerun", run)["status"]
        assert status["output"] == {"value": expected[name]}, (name, status)
        launches += status["launches"]
        pods = kubectl.json("pods", "-l", f"flujo.dev/run={run}")["items"]
        # Each pod passed the namespace's `restricted` Pod Security admission to exist.
        if executor == "pod":
            assert len(pods) == status["launches"] > 0, (run, len(pods))
            assert all(p["status"]["phase"] == "Succeeded" for p in pods)
        else:
            assert len(pods) == 1, (run, [p["metadata"]["name"] for p in pods])
    assert launches >= len(EXAMPLE_RUNS)
    assert "forbidden" not in log.lower(), log[-4000:]


def test_the_restricted_namespace_enforces_pod_security(
    admin_kubectl: RealKubectl, release: Release
) -> None:
    """The control for the test above: a pod that breaks `restricted` is refused there."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "runs-as-root"},
        "spec": {"containers": [{"name": "c", "image": "flujo", "command": ["true"]}]},
    }
    result = admin_kubectl.bound(WATCHED)("apply", "-f", "-", input=json.dumps(pod), check=False)
    assert result.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in result.stderr, result.stderr


@pytest.mark.parametrize("executor", ["pod", "runner"])
def test_deleting_a_pipelinerun_garbage_collects_its_pods(
    release: Release,
    operator_kubeconfig: Path,
    admin_kubectl: RealKubectl,
    real_kubelet: KubeletThread,
    tmp_path: Path,
    executor: str,
) -> None:
    run = f"collected-{executor}"
    kubectl = admin_kubectl.bound(WATCHED)
    kubectl("apply", "-f", str(EXAMPLES / "linear.yaml"))
    kubectl.apply(
        [
            {
                "apiVersion": "flujo.dev/v1alpha1",
                "kind": "PipelineRun",
                "metadata": {"name": run},
                "spec": {"pipelineRef": {"name": "linear"}, "input": "gc me", "executor": executor},
            }
        ]
    )
    operator = OperatorProcess(
        operator_kubeconfig, tmp_path / "operator.log", **release.operator_env()
    )
    operator.start(timeout=60)
    try:
        done = kubectl(
            "wait",
            "--for=jsonpath={.status.phase}=Succeeded",
            f"pipelinerun/{run}",
            "--timeout=60s",
            check=False,
            timeout=90,
        )
        assert done.returncode == 0, done.stderr + operator.log()[-4000:]
    finally:
        operator.stop()
    pods = kubectl.json("pods", "-l", f"flujo.dev/run={run}")["items"]
    assert len(pods) == (3 if executor == "pod" else 1), [p["metadata"]["name"] for p in pods]
    assert all(p["metadata"]["ownerReferences"][0]["kind"] == "PipelineRun" for p in pods)
    kubectl("delete", "pipelinerun", run, "--wait=false")

    def pods_left() -> int:
        return len(kubectl.json("pods", "-l", f"flujo.dev/run={run}")["items"])

    # The garbage collector (not the operator, which is stopped) removes the dependents.
    wait_for(lambda: pods_left() == 0, 60, "the garbage collector to delete the run's pods")
