"""The Helm chart (charts/flujo): rendered with a real helm, validated, held to its promises.

helm comes from ``scripts/install-tools.sh`` (run here when ``.tools/bin/helm``
is missing). Every scenario — default values and each ``ci/*-values.yaml`` —
is linted, rendered and every object validated against the Kubernetes
schemas; then the security defaults are checked as policies, and the
operator contract (command, environment, health endpoint, RBAC verbs) is
checked against the operator's own code so the chart cannot drift from it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from flujo.engine import LaunchStep

from flujo_operator import __main__ as operator_main
from flujo_operator.builders import RunRef, build_step_pod
from flujo_operator.config import Config

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "flujo"
HELM = ROOT / ".tools" / "bin" / "helm"
RELEASE = "flujo"
NAMESPACE = "flujo-system"
MONITORING = "monitoring.coreos.com/v1"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
SCENARIOS = ["default", *(p.name.removesuffix("-values.yaml") for p in CI_VALUES)]
KUBE_VERSIONS = ["1.27.0", kubernetes_validate.latest_version()]
"""The chart's minimum (Chart.yaml kubeVersion) and the newest schemas we have."""

NOT_IN_KUBERNETES_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "a Prometheus Operator CRD",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "a Prometheus Operator CRD",
    ("kopf.dev/v1", "ClusterKopfPeering"): "kopf's peering CRD (charts/flujo/crds/)",
    ("kopf.dev/v1", "KopfPeering"): "kopf's peering CRD (charts/flujo/crds/)",
}
"""Kinds kubernetes-validate has no schema for; they are checked structurally below."""

CONDITIONAL_VARS = {
    "FLUJO_PEERING": "set only with operator.replicas > 1 (kopf peering)",
    "FLUJO_METRICS_PORT": "set only with metrics.enabled",
}
"""Variables Config reads that the chart sets only when their feature is on."""


# --- helm ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def helm() -> Path:
    """The helm binary, installed by scripts/install-tools.sh when missing."""
    return ensure_helm()


def ensure_helm() -> Path:
    """helm, installed when missing; skips (fails under CI) when it cannot be had."""
    detail = ""
    if not _runs(HELM):
        proc = subprocess.run(
            ["bash", str(ROOT / "scripts" / "install-tools.sh")],
            capture_output=True,
            text=True,
            timeout=900,
        )
        detail = (proc.stderr or proc.stdout).strip()[-500:]
    if _runs(HELM):
        return HELM
    reason = f"helm is unavailable: scripts/install-tools.sh could not install it ({detail})"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def _runs(binary: Path) -> bool:
    if not binary.is_file():
        return False
    try:
        return subprocess.run([binary, "version"], capture_output=True).returncode == 0
    except OSError:
        return False


def helm_run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=120)


def values_args(scenario: str) -> list[str]:
    return [] if scenario == "default" else ["-f", str(CHART / "ci" / f"{scenario}-values.yaml")]


@cache
def _render(args: tuple[str, ...]) -> tuple[dict[str, Any], ...]:
    proc = helm_run("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args)
    assert proc.returncode == 0, proc.stderr
    return tuple(d for d in yaml.safe_load_all(proc.stdout) if d)


def render(*args: str, scenario: str = "default") -> list[dict[str, Any]]:
    """Objects rendered for a scenario; the cluster serves the Prometheus Operator API."""
    return list(_render((*values_args(scenario), "--api-versions", MONITORING, *args)))


def render_error(*args: str) -> str:
    proc = helm_run("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args)
    assert proc.returncode != 0, f"helm template {' '.join(args)} should have failed"
    return proc.stderr


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = of_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def operator_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    containers = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["operator"]
    return containers[0]


def operator_env(objects: list[dict[str, Any]]) -> dict[str, str]:
    env = operator_container(objects)["env"]
    assert all(set(e) == {"name", "value"} for e in env), "operator env must be literal values"
    names = [e["name"] for e in env]
    assert len(names) == len(set(names)), f"duplicate env vars: {names}"
    return {e["name"]: e["value"] for e in env}


def chart_values(scenario: str) -> dict[str, Any]:
    """values.yaml merged with the scenario's file (the merge helm does, for maps)."""

    def merge(base: Any, over: Any) -> Any:
        if isinstance(base, dict) and isinstance(over, dict):
            return {k: merge(base.get(k), over[k]) if k in base else over[k] for k in over} | {
                k: v for k, v in base.items() if k not in over
            }
        return over

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    if scenario != "default":
        values = merge(
            values, yaml.safe_load((CHART / "ci" / f"{scenario}-values.yaml").read_text())
        )
    return values


def watched(scenario: str) -> list[str]:
    values = chart_values(scenario)
    return [NAMESPACE] if values["singleNamespace"] else list(values["watchNamespaces"])


# --- lint, render, validate -----------------------------------------------------------


def test_every_ci_scenario_exists() -> None:
    assert set(SCENARIOS) >= {"default", "namespaced", "metrics-on", "ha", "networkpolicy-off"}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_helm_lint_strict(helm: Path, scenario: str) -> None:
    proc = helm_run("lint", "--strict", str(CHART), *values_args(scenario))
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_object_validates_strictly(helm: Path, scenario: str, kube_version: str) -> None:
    objects = render("--include-crds", "--kube-version", kube_version, scenario=scenario)
    skipped = set()
    for obj in objects:
        key = (obj["apiVersion"], obj["kind"])
        if key in NOT_IN_KUBERNETES_SCHEMAS:
            skipped.add(key)
            continue
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        try:
            kubernetes_validate.validate(obj, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{scenario}: {where} is invalid for Kubernetes {kube_version}: {exc}")
    expected = {
        "default": set(),
        "namespaced": set(),
        "networkpolicy-off": set(),
        "metrics-on": {(MONITORING, "ServiceMonitor"), (MONITORING, "PrometheusRule")},
        "ha": {("kopf.dev/v1", "ClusterKopfPeering")},
    }
    if scenario in expected:
        assert skipped == expected[scenario], "objects left out of schema validation changed"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_objects_are_namespaced_and_labelled(helm: Path, scenario: str) -> None:
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
    cluster_scoped |= {"ClusterKopfPeering"}
    for obj in render(scenario=scenario):
        meta = obj["metadata"]
        if obj["kind"] in cluster_scoped:
            assert "namespace" not in meta
        else:
            assert meta.get("namespace"), f"{obj['kind']}/{meta['name']} has no namespace"
        if obj["kind"] != "CustomResourceDefinition":
            assert meta["labels"]["app.kubernetes.io/instance"] == RELEASE
            assert meta["labels"]["app.kubernetes.io/part-of"] == "flujo"


# --- CRDs: the same source as crds/ ---------------------------------------------------


def test_chart_crd_files_are_byte_identical_to_crds() -> None:
    source = {p.name: p.read_bytes() for p in (ROOT / "crds").glob("*.yaml")}
    copies = {p.name: p.read_bytes() for p in (CHART / "files" / "crds").glob("*.yaml")}
    assert copies.keys() == source.keys(), "charts/flujo/files/crds must hold exactly crds/*.yaml"
    for name in source:
        assert copies[name] == source[name], f"charts/flujo/files/crds/{name}: run 'flujo crds'"


def _source_crds() -> dict[str, dict[str, Any]]:
    docs = (yaml.safe_load(p.read_text()) for p in sorted((ROOT / "crds").glob("*.yaml")))
    return {d["metadata"]["name"]: d for d in docs}


def test_rendered_crds_equal_crds_and_are_kept(helm: Path) -> None:
    rendered = {c["metadata"]["name"]: c for c in of_kind(render(), "CustomResourceDefinition")}
    source = _source_crds()
    assert rendered.keys() == source.keys()
    for name, crd in rendered.items():
        annotations = crd["metadata"].pop("annotations")
        assert annotations == {"helm.sh/resource-policy": "keep"}
        assert crd == source[name], f"{name} differs from crds/{name}.yaml"


def test_crds_keep_false_renders_them_verbatim(helm: Path) -> None:
    rendered = of_kind(render("--set", "crds.keep=false"), "CustomResourceDefinition")
    assert {c["metadata"]["name"]: c for c in rendered} == _source_crds()


def test_crd_annotations_are_added(helm: Path) -> None:
    objects = render("--set-string", "crds.annotations.argocd\\.argoproj\\.io/sync-wave=-1")
    for crd in of_kind(objects, "CustomResourceDefinition"):
        assert crd["metadata"]["annotations"] == {
            "helm.sh/resource-policy": "keep",
            "argocd.argoproj.io/sync-wave": "-1",
        }


def test_crds_install_false_renders_none(helm: Path) -> None:
    assert not of_kind(render("--set", "crds.install=false"), "CustomResourceDefinition")


def test_kopf_peering_crds_ship_in_the_crds_folder(helm: Path) -> None:
    crds = of_kind(render("--include-crds"), "CustomResourceDefinition")
    names = {c["metadata"]["name"] for c in crds}
    assert {"clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"} <= names


# --- the operator contract --------------------------------------------------------------


def config_keys() -> set[str]:
    """Every environment variable Config reads, from its code and its documented table."""
    import inspect

    from flujo_operator import config as config_module

    code = set(re.findall(r"\"(FLUJO_[A-Z_]+)\"", inspect.getsource(Config.from_env)))
    table = set(re.findall(r"``(FLUJO_[A-Z_]+)``", config_module.__doc__ or ""))
    assert table <= code, "config.py's table documents a variable from_env does not read"
    return code


def test_operator_command_is_the_console_script(helm: Path) -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["flujo-operator"] == "flujo_operator.__main__:main"
    for scenario in SCENARIOS:
        container = operator_container(render(scenario=scenario))
        assert container["command"] == ["flujo-operator"]
        assert "args" not in container


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_operator_env_is_what_config_reads(helm: Path, scenario: str) -> None:
    env = operator_env(render(scenario=scenario))
    missing = config_keys() - set(env) - set(CONDITIONAL_VARS)
    assert not missing, f"Config reads {missing}: add values for them to the chart"
    unknown = set(env) - config_keys()
    assert not unknown, f"the chart sets variables Config does not read: {unknown}"
    values = chart_values(scenario)
    assert ("FLUJO_METRICS_PORT" in env) == bool(values["metrics"]["enabled"])
    assert ("FLUJO_PEERING" in env) == (values["operator"]["replicas"] > 1)
    config = Config.from_env(env)  # a malformed value raises ConfigError
    assert config.namespaces == tuple(watched(scenario))
    assert list(config.step_command) == values["steps"]["command"]
    resources = values["steps"]["resources"]
    assert (config.cpu_request, config.cpu_limit) == (
        str(resources["requests"]["cpu"]),
        str(resources["limits"]["cpu"]),
    )
    assert (config.memory_request, config.memory_limit) == (
        resources["requests"]["memory"],
        resources["limits"]["memory"],
    )
    assert config.step_service_account == (values["steps"]["serviceAccountName"] or None)
    assert config.node_selector == values["steps"]["nodeSelector"]
    assert config.tolerations == values["steps"]["tolerations"]
    assert config.pod_gc == values["operator"]["podGC"]
    assert config.log_format == values["operator"]["logFormat"]
    assert config.max_running_runs == values["operator"]["maxRunningRuns"]
    assert config.max_running_pods == values["operator"]["maxRunningPods"]
    assert config.status_steps == values["operator"]["statusSteps"]
    assert config.breaker_fail_max == values["operator"]["breaker"]["failMax"]
    assert config.breaker_reset_seconds == values["operator"]["breaker"]["resetSeconds"]
    assert config.health_port == values["operator"]["healthPort"]
    assert config.api_qps == values["operator"]["apiQps"]
    assert config.api_burst == values["operator"]["apiBurst"]
    assert config.pod_create_qps == values["operator"]["podCreateQps"]
    assert config.pod_create_burst == values["operator"]["podCreateBurst"]
    assert config.audit_log == values["security"]["auditLog"]
    assert config.audit_content == values["security"]["auditContent"]
    assert config.security.profile == "cluster"


def test_security_values_reach_the_operators_policy(helm: Path) -> None:
    """Chart defaults and per-namespace overrides become the policy Config enforces."""
    env = operator_env(
        render(
            "--set-json",
            'security.defaults={"allowedHosts":["api.openai.com"],"maxLoopIterations":500}',
            "--set-json",
            'security.namespaces={"research":{"maxLoopIterations":5000}}',
            "--set",
            "security.auditLog=stderr",
        )
    )
    config = Config.from_env(env)
    assert config.audit_log == "stderr"
    default, research = config.policy("default"), config.policy("research")
    assert default.allowed_hosts == research.allowed_hosts == ["api.openai.com"]
    assert (default.max_loop_iterations, research.max_loop_iterations) == (500, 5000)
    assert not default.allow_loopback and not default.allow_python_callables  # cluster profile


def test_the_policy_schema_is_the_policy_model() -> None:
    """Every policy field can be set in values, with its type; misspelt ones are refused."""
    from flujo.security.policy import PolicyOverrides

    node = SCHEMA["definitions"]["securityPolicy"]
    assert node["additionalProperties"] is False
    fields = {f.alias or n: f for n, f in PolicyOverrides.model_fields.items()}
    assert set(node["properties"]) == set(fields)
    for name, field in fields.items():
        kind = node["properties"][name]["type"]
        annotation = str(field.annotation)
        expected = (
            "array" if "list" in annotation else "boolean" if "bool" in annotation else "integer"
        )
        assert kind == expected, name


def kopf_run(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> dict[str, Any]:
    """What `flujo-operator` asks of kopf.run, given the chart's environment.

    A kubeconfig file stands in for the pod's service account: flujo-operator
    refuses to start without credentials it can find.
    """
    import kopf

    for name in list(os.environ):
        if name.startswith("FLUJO_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    seen: dict[str, Any] = {}

    def run(*args: Any, **kwargs: Any) -> None:
        assert not args, "kopf.run takes keyword arguments"
        seen.update(kwargs)

    monkeypatch.setattr(kopf, "configure", lambda *args, **kwargs: None)
    monkeypatch.setattr(kopf, "run", run)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    operator_main.main([])
    assert seen, "flujo-operator did not call kopf.run"
    return seen


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_probes_hit_the_operators_health_endpoint(
    helm: Path, scenario: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    objects = render(scenario=scenario)
    container = operator_container(objects)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    launch = kopf_run(operator_env(objects), monkeypatch, tmp_path)
    assert launch["liveness_endpoint"] == f"http://0.0.0.0:{ports['health']}/healthz"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert list(launch["namespaces"]) == watched(scenario)
    assert launch["clusterwide"] == (not watched(scenario))


def test_ha_runs_kopf_peering(helm: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    objects = render(scenario="ha")
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    pdb = one(objects, "PodDisruptionBudget")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    env = operator_env(objects)
    peering = one(objects, "ClusterKopfPeering")["metadata"]["name"]
    assert env["FLUJO_PEERING"] == peering
    rules = rbac_rules(objects)
    assert rules[("kopf.dev", "clusterkopfpeerings")] >= {"list", "watch", "patch"}
    launch = kopf_run(env, monkeypatch, tmp_path)
    assert not launch.get("standalone")
    assert launch["peering_name"] == peering


def test_namespaced_ha_uses_a_peering_per_namespace(helm: Path) -> None:
    objects = render("--set", "operator.replicas=3", scenario="namespaced")
    peerings = of_kind(objects, "KopfPeering")
    assert sorted(p["metadata"]["namespace"] for p in peerings) == ["team-a", "team-b"]
    for role in of_kind(objects, "Role"):
        peering = [r for r in role["rules"] if r["apiGroups"] == ["kopf.dev"]]
        assert [r["resources"] for r in peering] == [["kopfpeerings"]]


def test_a_single_replica_is_never_doubled_during_rollout(helm: Path) -> None:
    objects = render()
    assert one(objects, "Deployment")["spec"]["strategy"] == {"type": "Recreate"}
    assert not of_kind(objects, "PodDisruptionBudget")


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_step_image_defaults_to_the_operator_image(helm: Path, scenario: str) -> None:
    objects = render(scenario=scenario)
    assert operator_env(objects)["FLUJO_STEP_IMAGE"] == operator_container(objects)["image"]


def test_step_image_can_be_set_apart(helm: Path) -> None:
    objects = render("--set", "steps.image.tag=0.2.0")
    assert operator_env(objects)["FLUJO_STEP_IMAGE"] == "ghcr.io/flujo/flujo:0.2.0"
    assert operator_container(objects)["image"] == "ghcr.io/flujo/flujo:0.1.0"


def test_image_digest_wins_over_the_tag(helm: Path) -> None:
    image = operator_container(render(scenario="ha"))["image"]
    assert image == "ghcr.io/flujo/flujo@sha256:" + "0" * 64


# --- pod security -------------------------------------------------------------------------

RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
    "persistentVolumeClaim", "projected", "secret",
}  # fmt: skip


def restricted_violations(spec: dict[str, Any]) -> list[str]:
    """Where a pod spec breaks the restricted Pod Security Standard (or hostPath use)."""
    problems = []
    pod_sc = spec.get("securityContext") or {}
    for field in ("hostNetwork", "hostPID", "hostIPC", "hostUsers"):
        if spec.get(field) is (field != "hostUsers"):
            problems.append(f"{field} is set")
    for volume in spec.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if "hostPath" in kinds or not kinds <= RESTRICTED_VOLUMES:
            problems.append(f"volume {volume['name']} is {kinds}")
    if pod_sc.get("runAsUser") == 0:
        problems.append("pod runs as UID 0")
    for sysctl in pod_sc.get("sysctls") or []:
        problems.append(f"sysctl {sysctl['name']}")
    containers = [
        *(spec.get("initContainers") or []),
        *spec["containers"],
        *(spec.get("ephemeralContainers") or []),
    ]
    for container in containers:
        name = container["name"]
        sc = container.get("securityContext") or {}
        if sc.get("privileged"):
            problems.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation is not false")
        if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
            problems.append(f"{name}: runAsNonRoot is not true")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            problems.append(f"{name}: runs as UID 0")
        capabilities = sc.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            problems.append(f"{name}: capabilities do not drop ALL")
        if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: adds capabilities {capabilities['add']}")
        seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccomp profile is {seccomp}")
        if sc.get("procMount", "Default") != "Default":
            problems.append(f"{name}: procMount {sc['procMount']}")
        if any(p.get("hostPort") for p in container.get("ports") or []):
            problems.append(f"{name}: uses a hostPort")
    return problems


def step_pod(objects: list[dict[str, Any]], namespace: str = "team-a") -> dict[str, Any]:
    """The step pod the operator would launch, configured by the chart's environment."""
    config = Config.from_env(operator_env(objects))
    launch = LaunchStep(path="frame", step="frame", agent="builtin.upper", input="x", attempt=1)
    pod, _ = build_step_pod(RunRef("hello", namespace, "uid-1"), launch, None, config)
    return pod


def test_the_policy_check_catches_violations() -> None:
    bad = {
        "hostNetwork": True,
        "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
        "containers": [{"name": "c", "securityContext": {"privileged": True}}],
    }
    found = "\n".join(restricted_violations(bad))
    for expected in ("hostNetwork", "volume h", "privileged", "allowPrivilegeEscalation",
                     "runAsNonRoot", "drop ALL", "seccomp"):  # fmt: skip
        assert expected in found


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_pod_meets_the_restricted_pod_security_standard(helm: Path, scenario: str) -> None:
    objects = render(scenario=scenario)
    specs = {
        f"{o['kind']}/{o['metadata']['name']}": o["spec"]["template"]["spec"]
        for o in objects
        if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job")
    }
    specs["step pod"] = step_pod(objects)["spec"]
    for where, spec in specs.items():
        assert restricted_violations(spec) == [], where


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_operator_pod_is_hardened(helm: Path, scenario: str) -> None:
    objects = render(scenario=scenario)
    spec = one(objects, "Deployment")["spec"]["template"]["spec"]
    container = spec["containers"][0]
    assert spec["automountServiceAccountToken"] is True  # the operator needs the API
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert spec["securityContext"]["runAsUser"] == 10001  # the image's user (Dockerfile)
    assert container["resources"]["requests"] and container["resources"]["limits"]
    account = one(objects, "ServiceAccount")
    assert account["automountServiceAccountToken"] is False
    assert spec["serviceAccountName"] == account["metadata"]["name"]
    step = step_pod(objects)["spec"]
    assert step["automountServiceAccountToken"] is False


# --- RBAC ---------------------------------------------------------------------------------

KUBE_CALLS = {
    "create_namespaced_pod": [("", "pods", "create")],
    "create_namespaced_config_map": [("", "configmaps", "create")],
    "read_namespaced_config_map": [("", "configmaps", "get")],
    "create_namespaced_event": [("", "events", "create")],
    "delete_namespaced_pod": [("", "pods", "delete")],
    "delete_collection_namespaced_pod": [("", "pods", "deletecollection")],
    "read_namespaced_pod": [("", "pods", "get")],
    "list_namespaced_pod": [("", "pods", "list")],
    "patch_namespaced_pod": [("", "pods", "patch")],
    "read_namespaced_pod_log": [("", "pods/log", "get")],
    "get_namespaced_custom_object": [
        ("flujo.dev", p, "get") for p in ("agents", "pipelines", "pipelineruns")
    ],
    "list_namespaced_custom_object": [
        ("flujo.dev", p, "list") for p in ("agents", "pipelines", "pipelineruns")
    ],
    "patch_namespaced_custom_object_status": [
        ("flujo.dev", f"{p}/status", "patch") for p in ("agents", "pipelines", "pipelineruns")
    ],
    # API discovery (the readiness probe): every authenticated user may, no rule needed.
    "get_api_resources": [],
}
"""Each API method flujo_operator/kube.py calls, and the RBAC grant it needs."""

KOPF_NEEDS = {
    ("", "events", "create"),  # kopf posts warnings as Kubernetes events
}
KOPF_CLUSTER_NEEDS = {
    ("apiextensions.k8s.io", "customresourcedefinitions", "list"),  # kopf notices CRD changes
    ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
}


def rbac_rules(objects: list[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
    """(apiGroup, resource) → verbs, over every Role and ClusterRole."""
    granted: dict[tuple[str, str], set[str]] = {}
    for role in of_kind(objects, "Role") + of_kind(objects, "ClusterRole"):
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    granted.setdefault((group, resource), set()).update(rule["verbs"])
    return granted


def required_grants() -> set[tuple[str, str, str]]:
    """What the operator's code needs: its API calls, and the watches of its kopf handlers."""
    calls = set(
        re.findall(
            r"self\.(?:core|custom)\.(\w+)(?![\w.])",
            (ROOT / "operator/flujo_operator/kube.py").read_text(),
        )
    )
    unknown = calls - set(KUBE_CALLS)
    assert not unknown, (
        f"kube.py calls {unknown}: grant it in templates/operator/rbac.yaml and map it here"
    )
    needs = {grant for call in calls for grant in KUBE_CALLS[call]}
    handlers = (ROOT / "operator/flujo_operator/handlers.py").read_text()
    for group, plural in re.findall(
        r"kopf\.on\.event\(\s*([\w\"]+),\s*[\w\"]+,\s*\"(\w+)\"", handlers
    ):
        api_group = "" if group == '""' else "flujo.dev"
        needs |= {(api_group, plural, "list"), (api_group, plural, "watch")}
    return needs


def test_rbac_mapping_covers_the_watched_resources() -> None:
    needs = required_grants()
    for plural in ("pods", "agents", "pipelines", "pipelineruns"):
        assert any(r == plural and v == "watch" for _, r, v in needs), plural


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_rbac_is_exactly_what_the_operator_uses(helm: Path, scenario: str) -> None:
    objects = render(scenario=scenario)
    granted = {(g, r, v) for (g, r), verbs in rbac_rules(objects).items() for v in verbs}
    needs = required_grants() | KOPF_NEEDS
    if not watched(scenario):
        needs |= KOPF_CLUSTER_NEEDS
    peering = {(g, r, v) for g, r, v in granted if g == "kopf.dev"}
    if chart_values(scenario)["operator"]["replicas"] > 1:
        resource = "kopfpeerings" if watched(scenario) else "clusterkopfpeerings"
        assert peering == {("kopf.dev", resource, v) for v in ("get", "list", "watch", "patch")}
    else:
        assert not peering
    assert granted - peering == needs, "RBAC must grant exactly what the operator uses"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_no_wildcards_and_no_secrets(helm: Path, scenario: str) -> None:
    for role in of_kind(render(scenario=scenario), "Role") + of_kind(
        render(scenario=scenario), "ClusterRole"
    ):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
                assert "*" not in (rule.get(field) or []), f"{role['metadata']['name']}: {rule}"
            assert not any(r.startswith("secrets") for r in rule["resources"]), rule


def test_namespaced_mode_renders_no_cluster_rbac(helm: Path) -> None:
    objects = render(scenario="namespaced")
    assert not of_kind(objects, "ClusterRole")
    assert not of_kind(objects, "ClusterRoleBinding")
    roles = of_kind(objects, "Role")
    bindings = of_kind(objects, "RoleBinding")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    account = one(objects, "ServiceAccount")["metadata"]
    for binding in bindings:
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": account["name"], "namespace": NAMESPACE}
        ]
    assert operator_env(objects)["FLUJO_NAMESPACES"] == "team-a,team-b"


def test_single_namespace_watches_the_release_namespace(helm: Path) -> None:
    objects = render("--set", "singleNamespace=true")
    assert not of_kind(objects, "ClusterRole")
    assert [r["metadata"]["namespace"] for r in of_kind(objects, "Role")] == [NAMESPACE]
    assert operator_env(objects)["FLUJO_NAMESPACES"] == NAMESPACE


# --- NetworkPolicy ------------------------------------------------------------------------


def selects(policy: dict[str, Any], labels: dict[str, str]) -> bool:
    selector = policy["spec"]["podSelector"]
    assert set(selector) <= {"matchLabels"}, "only matchLabels selectors are checked"
    return selector.get("matchLabels", {}).items() <= labels.items()


def dns_rule(rule: dict[str, Any]) -> bool:
    return {p["port"] for p in rule["ports"]} == {53} and all(
        "namespaceSelector" in peer and "podSelector" in peer for peer in rule["to"]
    )


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_step_pods_are_denied_ingress_and_egress_is_limited(helm: Path, scenario: str) -> None:
    objects = render(scenario=scenario)
    values = chart_values(scenario)
    policies = of_kind(objects, "NetworkPolicy")
    if not values["networkPolicy"]["enabled"]:
        assert not policies
        return
    namespaces = watched(scenario) or values["networkPolicy"]["steps"]["namespaces"] or [NAMESPACE]
    allowed = {e["cidr"] for e in values["networkPolicy"]["steps"]["agentEndpoints"]}
    for namespace in namespaces:
        labels = step_pod(objects, namespace)["metadata"]["labels"]
        covering = [
            p for p in policies if p["metadata"]["namespace"] == namespace and selects(p, labels)
        ]
        assert len(covering) == 1, f"{namespace}: step pods need one policy, found {covering}"
        spec = covering[0]["spec"]
        assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
        assert spec["ingress"] == []
        for rule in spec["egress"]:
            assert rule.get("to"), f"egress rule without a destination allows everything: {rule}"
            if not dns_rule(rule):
                assert rule.get("ports"), rule
                assert {peer["ipBlock"]["cidr"] for peer in rule["to"]} <= allowed, rule
    operator_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert not any(
        selects(p, operator_labels) for p in policies if "steps" in p["metadata"]["name"]
    )


def test_agent_endpoints_open_egress(helm: Path) -> None:
    objects = render(scenario="namespaced")
    policy = next(
        p for p in of_kind(objects, "NetworkPolicy") if p["metadata"]["namespace"] == "team-a"
    )
    rule = next(r for r in policy["spec"]["egress"] if not dns_rule(r))
    assert rule["to"][0]["ipBlock"]["cidr"] == "0.0.0.0/0"
    assert "10.0.0.0/8" in rule["to"][0]["ipBlock"]["except"]
    assert rule["ports"] == [{"port": 443, "protocol": "TCP"}]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_operator_policy_allows_only_its_ports_the_api_server_runners_and_dns(
    helm: Path, scenario: str
) -> None:
    objects = render(scenario=scenario)
    values = chart_values(scenario)
    if not values["networkPolicy"]["enabled"]:
        return
    labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    policies = [p for p in of_kind(objects, "NetworkPolicy") if selects(p, labels)]
    assert len(policies) == 1
    spec = policies[0]["spec"]
    assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
    ports = {p["port"] for rule in spec["ingress"] for p in rule["ports"]}
    expected = {values["operator"]["healthPort"]}
    if values["metrics"]["enabled"]:
        expected.add(values["metrics"]["port"])
    assert ports == expected
    api = values["networkPolicy"]["operator"]["apiServer"]
    runner_selector = {
        "app.kubernetes.io/component": "runner",
        "app.kubernetes.io/managed-by": "flujo-operator",
    }
    runner_rules = []
    for rule in spec["egress"]:
        if dns_rule(rule):
            continue
        if all("ipBlock" in peer for peer in rule["to"]):
            assert [peer["ipBlock"]["cidr"] for peer in rule["to"]] == api["cidrs"]
            assert [p["port"] for p in rule["ports"]] == api["ports"]
        else:
            # The only other destination: runner pods, on the runner port alone.
            assert rule["to"] == [
                {"namespaceSelector": {}, "podSelector": {"matchLabels": runner_selector}}
            ], rule
            assert rule["ports"] == [{"port": values["steps"]["runnerPort"], "protocol": "TCP"}]
            runner_rules.append(rule)
    assert len(runner_rules) == 1


def test_steps_policy_goes_where_runs_run(helm: Path) -> None:
    objects = render("--set", "networkPolicy.steps.namespaces={team-x,team-y}")
    namespaces = [
        p["metadata"]["namespace"]
        for p in of_kind(objects, "NetworkPolicy")
        if p["metadata"]["name"].endswith("-steps")
    ]
    assert namespaces == ["team-x", "team-y"]


# --- monitoring ---------------------------------------------------------------------------


def test_monitoring_objects_need_the_flag_and_the_api(helm: Path) -> None:
    with_api = render(scenario="metrics-on")
    servicemonitor = one(with_api, "ServiceMonitor")
    rule = one(with_api, "PrometheusRule")
    service = one(with_api, "Service")
    deployment = one(with_api, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert (
        servicemonitor["spec"]["selector"]["matchLabels"].items()
        <= service["metadata"]["labels"].items()
    )
    port = servicemonitor["spec"]["endpoints"][0]["port"]
    assert port in {p["name"] for p in service["spec"]["ports"]}
    assert port in {
        p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
    }
    assert servicemonitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    alerts = [r.get("alert") for group in rule["spec"]["groups"] for r in group["rules"]]
    assert "FlujoOperatorDown" in alerts and "FlujoRunFailureRateHigh" in alerts
    down = next(
        r
        for g in rule["spec"]["groups"]
        for r in g["rules"]
        if r.get("alert") == "FlujoOperatorDown"
    )
    assert f'job="{service["metadata"]["name"]}"' in down["expr"]
    without_api = list(_render(tuple(values_args("metrics-on"))))
    kinds = {o["kind"] for o in without_api}
    assert "ServiceMonitor" not in kinds and "PrometheusRule" not in kinds
    assert "Service" in kinds
    default_kinds = {o["kind"] for o in render()}
    assert not default_kinds & {"ServiceMonitor", "PrometheusRule", "Service"}


# --- values: schema, documentation --------------------------------------------------------

BAD_VALUES = [
    (["--set", "operator.podGC=Sometimes"], "/operator/podGC"),
    (["--set", "operator.logFormat=xml"], "/operator/logFormat"),
    (["--set", "operator.breaker.failMax=0"], "/operator/breaker/failMax"),
    (["--set", "operator.replica=2"], "additional properties 'replica' not allowed"),
    (["--set", "operator.replicas=0"], "/operator/replicas"),
    (["--set", "operator.healthPort=70000"], "/operator/healthPort"),
    (["--set", "image.pullPolicy=Sometimes"], "/image/pullPolicy"),
    (["--set", "image.digest=latest"], "/image/digest"),
    (["--set", "watchNamespaces={Team_A}"], "/watchNamespaces/0"),
    (["--set", "steps.resources.limits.cpu=lots"], "/steps/resources/limits/cpu"),
    (["--set", "steps.resources.limits.gpu=1"], "additional properties 'gpu' not allowed"),
    (["--set-json", 'steps.command=[]'], "/steps/command"),
    (["--set-json", 'networkPolicy.steps.agentEndpoints=[{"cidr":"example.com"}]'],
     "/networkPolicy/steps/agentEndpoints/0"),
    (["--set", "metrics.serviceMonitor.interval=often"], "/metrics/serviceMonitor/interval"),
    (["--set", "singleNamespace=true", "--set", "watchNamespaces={a}"],
     "set singleNamespace or watchNamespaces, not both"),
    (["--set", "metrics.serviceMonitor.enabled=true"],
     "metrics.serviceMonitor.enabled needs metrics.enabled=true"),
    (["--set", "metrics.enabled=true", "--set", "metrics.port=8080"],
     "metrics.port must differ from operator.healthPort"),
    (["--set", "security.defaults.maxLoopIteration=5"],
     "additional properties 'maxLoopIteration' not allowed"),
    (["--set", "security.namespaces.research.requireHttps=maybe"],
     "/security/namespaces/research/requireHttps"),
    (["--set", "security.auditLog=/var/log/audit"], "/security/auditLog"),
    (["--set", "operator.apiQps=-1"], "/operator/apiQps"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "message"), BAD_VALUES, ids=[" ".join(a) for a, _ in BAD_VALUES])
def test_bad_values_fail_with_a_message(helm: Path, args: list[str], message: str) -> None:
    assert message in render_error(*args)


def values_comments() -> dict[str, str]:
    """`# -- text` comments of values.yaml, by dotted key path."""
    found: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    pending: str | None = None
    for line in (CHART / "values.yaml").read_text().splitlines():
        stripped = line.strip()
        if not stripped:
            pending = None
            continue
        if stripped.startswith("# --"):
            pending = stripped[4:].strip()
            continue
        if stripped.startswith("#"):
            continue
        match = re.match(r"^(\s*)([A-Za-z0-9_.\-/]+):(\s|$)", line)
        if not match:
            pending = None
            continue
        indent = len(match.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match.group(2)))
        if pending is not None:
            found[".".join(k for _, k in stack)] = pending
        pending = None
    return found


def schema_nodes(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    for key, sub in (node.get("properties") or {}).items():
        here = f"{path}.{key}" if path else key
        yield here, sub
        yield from schema_nodes(sub, here)


SCHEMA = json.loads((CHART / "values.schema.json").read_text())


def test_every_value_is_documented_in_values_yaml_and_the_schema() -> None:
    comments = values_comments()
    schema = {p: n for p, n in schema_nodes(SCHEMA) if p != "global"}
    assert schema.keys() == comments.keys(), "values.yaml `# --` comments and schema differ"
    for path, node in schema.items():
        assert node.get("description") == comments[path], f"{path}: schema description differs"
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def leaves(node: Any, path: str = "") -> Iterator[str]:
        yield path
        if isinstance(node, dict) and (not path or "properties" in _schema_at(path)):
            for key, sub in node.items():
                yield from leaves(sub, f"{path}.{key}" if path else key)

    for path in leaves(values):
        if path:
            assert path in schema, f"values.yaml key {path} is not in values.schema.json"


def _schema_at(path: str) -> dict[str, Any]:
    node = SCHEMA
    for key in path.split("."):
        node = node["properties"][key]
    return node


def test_defaults_validate_against_the_schema() -> None:
    import jsonschema

    jsonschema.validate(yaml.safe_load((CHART / "values.yaml").read_text()), SCHEMA)
    for scenario in SCENARIOS:
        jsonschema.validate(chart_values(scenario), SCHEMA)


REF_TYPES = {
    "stringMap": "map of strings",
    "resources": "resources",
    "stepResources": "resources (cpu, memory)",
    "tolerations": "list of tolerations",
    "objectList": "list of objects",
    "securityPolicy": "security policy fields",
    "policyNamespaces": "map of namespace to policy fields",
}


def values_reference() -> str:
    """The values table of docs/helm.md, generated from values.schema.json and values.yaml."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    rows = ["| Value | Type | Default | Description |", "| --- | --- | --- | --- |"]
    for path, node in schema_nodes(SCHEMA):
        if path == "global" or "properties" in node:
            continue
        default: Any = values
        for key in path.split("."):
            default = default[key]
        kind = node.get("type") or REF_TYPES[node["$ref"].rsplit("/", 1)[-1]]
        if "enum" in node:
            kind = " \\| ".join(f"`{v}`" for v in node["enum"])
        shown = json.dumps(default, separators=(", ", ": "))
        description = node["description"].replace("|", "\\|")
        rows.append(f"| `{path}` | {kind} | `{shown}` | {description} |")
    return "\n".join(rows) + "\n"


def test_docs_values_reference_is_current() -> None:
    """docs/helm.md lists every value; FLUJO_UPDATE_DOCS=1 rewrites the table."""
    doc = ROOT / "docs" / "helm.md"
    text = doc.read_text()
    start, end = "<!-- values-reference:start -->\n", "<!-- values-reference:end -->"
    head, rest = text.split(start)
    _, tail = rest.split(end)
    current = head + start + values_reference() + end + tail
    if os.environ.get("FLUJO_UPDATE_DOCS") == "1" and text != current:
        doc.write_text(current)
        text = current
    assert text == current, (
        "docs/helm.md values table is stale: FLUJO_UPDATE_DOCS=1 pytest tests/test_chart.py"
    )


# --- NOTES --------------------------------------------------------------------------------


def test_notes_tell_how_to_run_a_first_pipeline(helm: Path) -> None:
    proc = helm_run("install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client")
    assert proc.returncode == 0, proc.stderr
    notes = proc.stdout.split("NOTES:", 1)[1]
    assert "kubectl -n flujo-system apply -f examples/linear.yaml" in notes
    assert "kubectl -n flujo-system get pipelineruns" in notes
    assert '"pipelineRef": {"name": "linear"}' in notes
    example = yaml.safe_load_all((ROOT / "examples" / "linear.yaml").read_text())
    assert ("Pipeline", "linear") in {(d["kind"], d["metadata"]["name"]) for d in example}
    assert "networkPolicy.steps.agentEndpoints" in notes


def test_the_chart_ships_the_tested_alert_rules_with_configurable_thresholds(
    helm: Path, tmp_path: Path
) -> None:
    shipped = ROOT / "charts" / "flujo" / "files" / "prometheus" / "rules.yaml"
    source = ROOT / "docs" / "prometheus" / "rules.yaml"
    assert shipped.read_text() == source.read_text(), "copy docs/prometheus/rules.yaml"
    groups = yaml.safe_load(source.read_text())["groups"]
    rule = one(render(scenario="metrics-on"), "PrometheusRule")
    by_name = {g["name"]: g for g in rule["spec"]["groups"]}
    assert [by_name[g["name"]] for g in groups] == groups  # defaults: the file as tested
    tuned = one(
        render(
            "--set",
            "metrics.prometheusRule.thresholds.runFailureRatio=0.4",
            "--set",
            "metrics.prometheusRule.thresholds.circuitOpenFor=3m",
            scenario="metrics-on",
        ),
        "PrometheusRule",
    )
    alerts = {r["alert"]: r for g in tuned["spec"]["groups"] for r in g["rules"] if "alert" in r}
    assert "> 0.4  # param: runFailureRatio" in alerts["FlujoRunFailureRateHigh"]["expr"]
    assert alerts["FlujoCircuitOpenTooLong"]["for"] == "3m"
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool (Debian package prometheus) is not installed")
    rendered = tmp_path / "rules.yaml"
    rendered.write_text(yaml.safe_dump({"groups": tuned["spec"]["groups"]}))
    check = subprocess.run(
        [promtool, "check", "rules", str(rendered)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_grafana_dashboard_ships_behind_a_value(helm: Path) -> None:
    source = ROOT / "docs" / "grafana" / "flujo-dashboard.json"
    shipped = ROOT / "charts" / "flujo" / "files" / "grafana" / "flujo-dashboard.json"
    assert shipped.read_text() == source.read_text(), "copy docs/grafana/flujo-dashboard.json"
    assert "ConfigMap" not in {o["kind"] for o in render()}
    objects = render("--set", "metrics.grafanaDashboard.enabled=true")
    dashboard = one(objects, "ConfigMap")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["flujo-dashboard.json"]) == json.loads(source.read_text())


def test_step_egress_to_anywhere_never_includes_cloud_metadata(helm: Path) -> None:
    objects = render(
        "--set",
        "networkPolicy.steps.agentEndpoints[0].cidr=0.0.0.0/0",
        "--set",
        "networkPolicy.steps.agentEndpoints[0].ports[0]=443",
    )
    policy = next(
        o for o in of_kind(objects, "NetworkPolicy") if o["metadata"]["name"].endswith("-steps")
    )
    blocks = [
        t["ipBlock"]
        for rule in policy["spec"]["egress"]
        for t in rule.get("to", [])
        if "ipBlock" in t
    ]
    anywhere = [b for b in blocks if b["cidr"] == "0.0.0.0/0"]
    assert anywhere and all("169.254.0.0/16" in b.get("except", []) for b in anywhere)
