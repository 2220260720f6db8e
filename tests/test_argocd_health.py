"""GitOps with Argo CD (docs/gitops): the Lua health checks and the Applications.

The health scripts run in Lua 5.1 (what Argo CD's gopher-lua implements)
through lupa, against objects shaped as the operator writes them.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa import lua51

from flujo_operator.builders import PHASES, condition
from tests.test_chart import CHART, RELEASE, ensure_helm

ROOT = Path(__file__).resolve().parent.parent
GITOPS = ROOT / "docs" / "gitops"
HEALTH = GITOPS / "health"
CHECKS = {
    "flujo.dev_Agent": "agent.lua",
    "flujo.dev_Pipeline": "pipeline.lua",
    "flujo.dev_PipelineRun": "pipelinerun.lua",
    "argoproj.io_Application": "application.lua",
}


def health(script: str, obj: dict[str, Any]) -> tuple[str, str]:
    """Run a health script the way Argo CD does: `obj` global, the script returns `hs`."""
    lua = lua51.LuaRuntime()
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute((HEALTH / script).read_text())
    return result["status"], result["message"] or ""


def meta(generation: int = 1) -> dict[str, Any]:
    return {"name": "x", "namespace": "team-a", "generation": generation}


# --- the argocd-cm snippet ---------------------------------------------------------------


def test_the_argocd_cm_snippet_embeds_the_health_files() -> None:
    cm = yaml.safe_load((GITOPS / "argocd-cm-health.yaml").read_text())
    assert (cm["kind"], cm["metadata"]["name"], cm["metadata"]["namespace"]) == (
        "ConfigMap",
        "argocd-cm",
        "argocd",
    )
    assert set(cm["data"]) == {f"resource.customizations.health.{key}" for key in CHECKS}
    for key, name in CHECKS.items():
        assert cm["data"][f"resource.customizations.health.{key}"] == (HEALTH / name).read_text()


@pytest.mark.parametrize("name", sorted(CHECKS.values()))
def test_scripts_use_only_what_argo_cd_offers(name: str) -> None:
    text = (HEALTH / name).read_text()
    for forbidden in ("os.", "io.", "require", "dofile", "loadstring", "goto "):
        assert forbidden not in text, f"{name} uses {forbidden}"


# --- PipelineRun -------------------------------------------------------------------------

RUN_HEALTH = {
    "Succeeded": "Healthy",
    "Running": "Progressing",
    "Pending": "Progressing",
    "Failed": "Degraded",
    "Cancelled": "Degraded",
}


def test_every_phase_the_operator_writes_has_a_health() -> None:
    assert set(PHASES.values()) <= set(RUN_HEALTH)


@pytest.mark.parametrize(("phase", "expected"), sorted(RUN_HEALTH.items()))
def test_pipelinerun_health_follows_the_phase(phase: str, expected: str) -> None:
    status: dict[str, Any] = {"phase": phase, "progress": "2/3"}
    if expected == "Degraded":
        status |= {"reason": "UsageLimitExceeded", "message": "cost $0.51 > $0.50"}
    obj = {"metadata": meta(), "spec": {"pipelineRef": {"name": "p"}}, "status": status}
    got, message = health("pipelinerun.lua", obj)
    assert got == expected
    if expected == "Degraded":
        assert message == f"{phase}: cost $0.51 > $0.50"
    if phase == "Running":
        assert message == "Running: 2/3 steps"


def test_pipelinerun_pending_says_why() -> None:
    obj = {
        "metadata": meta(),
        "status": {"phase": "Pending", "reason": "AgentsMissing", "message": "unknown agent 'a'"},
    }
    assert health("pipelinerun.lua", obj) == ("Progressing", "Pending: unknown agent 'a'")


@pytest.mark.parametrize("status", [None, {}, {"progress": "0/1"}])
def test_pipelinerun_without_a_phase_is_progressing(status: Any) -> None:
    obj: dict[str, Any] = {"metadata": meta()}
    if status is not None:
        obj["status"] = status
    assert health("pipelinerun.lua", obj)[0] == "Progressing"


def test_pipelinerun_unknown_phase_is_unknown() -> None:
    assert health("pipelinerun.lua", {"status": {"phase": "Exploded"}})[0] == "Unknown"


# --- Pipeline ------------------------------------------------------------------------------


def pipeline(valid: str | None, agents: str | None, generation: int = 1) -> dict[str, Any]:
    conditions = []
    if valid is not None:
        conditions.append(condition("Valid", valid, "InvalidSpec", "steps: empty", "t"))
    if agents is not None:
        conditions.append(
            condition("AgentsResolved", agents, "AgentsMissing", "missing agents: a", "t")
        )
    return {
        "metadata": meta(generation),
        "status": {"observedGeneration": 1, "conditions": conditions, "missingAgents": []},
    }


@pytest.mark.parametrize(
    ("valid", "agents", "expected"),
    [
        ("True", "True", "Healthy"),
        ("False", "Unknown", "Degraded"),
        ("True", "False", "Degraded"),
        ("False", "False", "Degraded"),
        ("True", None, "Progressing"),
        (None, None, "Progressing"),
        ("True", "Unknown", "Progressing"),
    ],
)
def test_pipeline_health_follows_its_conditions(
    valid: str | None, agents: str | None, expected: str
) -> None:
    status, message = health("pipeline.lua", pipeline(valid, agents))
    assert status == expected
    if valid == "False":
        assert message == "Valid is False: steps: empty"
    elif agents == "False":
        assert message == "AgentsResolved is False: missing agents: a"


def test_pipeline_without_status_or_with_a_stale_one_is_progressing() -> None:
    assert health("pipeline.lua", {"metadata": meta()})[0] == "Progressing"
    assert health("pipeline.lua", pipeline("True", "True", generation=2)) == (
        "Progressing",
        "Waiting for the operator to validate generation 2",
    )


# --- Agent ---------------------------------------------------------------------------------


def agent(status: dict[str, Any] | None, generation: int = 1) -> dict[str, Any]:
    obj: dict[str, Any] = {"metadata": meta(generation), "spec": {"type": "builtin"}}
    if status is not None:
        obj["status"] = {"observedGeneration": 1, **status}
    return obj


CLOSED = {"state": "closed", "failures": 0}


@pytest.mark.parametrize(
    ("status", "expected", "message"),
    [
        ({"resolved": True, "message": "", "circuit": CLOSED}, "Healthy", "Resolved"),
        ({"resolved": True}, "Healthy", "Resolved"),
        (
            {"resolved": True, "circuit": {"state": "half-open", "failures": 5}},
            "Healthy",
            "Resolved; circuit half-open",
        ),
        (
            {"resolved": False, "message": "spec.model: Field required", "circuit": CLOSED},
            "Degraded",
            "Not resolved: spec.model: Field required",
        ),
        (
            {
                "resolved": True,
                "circuit": {"state": "open", "failures": 5, "openedAt": "2026-01-01T00:00:00Z"},
            },
            "Degraded",
            "Circuit open after 5 failures (since 2026-01-01T00:00:00Z)",
        ),
        (
            {
                "resolved": True,
                "allowed": False,
                "message": "refused by the security policy: spec.endpoint: loopback",
                "circuit": CLOSED,
            },
            "Degraded",
            "refused by the security policy: spec.endpoint: loopback",
        ),
        ({"resolved": True, "allowed": True, "circuit": CLOSED}, "Healthy", "Resolved"),
        (None, "Progressing", "Waiting for the operator to resolve the agent"),
        ({}, "Progressing", "Waiting for the operator to resolve the agent"),
    ],
)
def test_agent_health(status: dict[str, Any] | None, expected: str, message: str) -> None:
    assert health("agent.lua", agent(status)) == (expected, message)


def test_agent_with_a_stale_status_is_progressing() -> None:
    assert health("agent.lua", agent({"resolved": True}, generation=3))[0] == "Progressing"


# --- child Application (app of apps) -------------------------------------------------------


def test_application_health_is_the_childs() -> None:
    obj = {"status": {"health": {"status": "Degraded", "message": "1 pod failing"}}}
    assert health("application.lua", obj) == ("Degraded", "1 pod failing")
    assert health("application.lua", {})[0] == "Progressing"


# --- the Applications ----------------------------------------------------------------------


def load(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    return doc


def wave(obj: dict[str, Any]) -> int:
    return int(obj["metadata"].get("annotations", {}).get("argocd.argoproj.io/sync-wave", "0"))


def test_the_app_of_apps_syncs_namespace_then_chart_then_pipelines() -> None:
    root = load(GITOPS / "root.yaml")
    assert root["kind"] == "Application"
    apps_dir = ROOT / root["spec"]["source"]["path"]
    objects = {p.name: load(p) for p in sorted(apps_dir.glob("*.yaml"))}
    chart, pipelines = objects["flujo.yaml"], objects["pipelines.yaml"]
    namespace = objects["namespaces.yaml"]
    assert namespace["kind"] == "Namespace"
    assert wave(namespace) < wave(chart) < wave(pipelines)
    assert namespace["metadata"]["name"] == pipelines["spec"]["destination"]["namespace"]


def test_the_chart_application() -> None:
    app = load(GITOPS / "apps" / "flujo.yaml")
    spec = app["spec"]
    assert (ROOT / spec["source"]["path"] / "Chart.yaml").exists()
    options = spec["syncPolicy"]["syncOptions"]
    assert "ServerSideApply=true" in options and "CreateNamespace=true" in options
    crd_annotations = spec["source"]["helm"]["valuesObject"]["crds"]["annotations"]
    assert int(crd_annotations["argocd.argoproj.io/sync-wave"]) < 0
    assert "Delete=false" in crd_annotations["argocd.argoproj.io/sync-options"]
    pipelines = load(GITOPS / "apps" / "pipelines.yaml")
    steps = spec["source"]["helm"]["valuesObject"]["networkPolicy"]["steps"]
    assert pipelines["spec"]["destination"]["namespace"] in steps["namespaces"]


def test_the_chart_application_values_render(tmp_path: Path) -> None:
    helm = ensure_helm()
    app = load(GITOPS / "apps" / "flujo.yaml")
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(app["spec"]["source"]["helm"]["valuesObject"]))
    namespace = app["spec"]["destination"]["namespace"]
    proc = subprocess.run(
        [str(helm), "template", RELEASE, str(CHART), "-n", namespace, "-f", str(values)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    objects = [d for d in yaml.safe_load_all(proc.stdout) if d]
    crds = [o for o in objects if o["kind"] == "CustomResourceDefinition"]
    assert len(crds) == 3
    for crd in crds:
        assert crd["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"] == "-1"
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    step_policies = [
        o["metadata"]["namespace"]
        for o in objects
        if o["kind"] == "NetworkPolicy" and o["metadata"]["name"].endswith("-steps")
    ]
    assert step_policies == ["team-a"]


def test_the_pipelines_application_and_its_folder() -> None:
    from flujo.agents.builtin import PRESET_PREFIX, builtin_names
    from flujo.domain.validation import check_agents, check_pipeline
    from flujo.spec.loader import load_files

    app = load(GITOPS / "apps" / "pipelines.yaml")
    options = app["spec"]["syncPolicy"]["syncOptions"]
    assert "SkipDryRunOnMissingResource=true" in options
    folder = ROOT / app["spec"]["source"]["path"]
    docs = load_files(sorted(folder.glob("*.yaml")))
    assert docs.problems == []
    assert docs.pipelines and docs.agents
    assert not docs.runs, "PipelineRuns are executions, not GitOps state"
    names = {a.metadata.name for a in docs.agents}
    names |= {PRESET_PREFIX + n for n in builtin_names(presets_only=True)}
    for manifest in docs.pipelines:
        assert check_pipeline(manifest.spec) == []
        assert check_agents(manifest.spec, names) == []
