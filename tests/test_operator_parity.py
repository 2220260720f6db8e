"""Parity: every golden scenario, run through the operator, gives the same transcript
as the embedded run (the golden file), under both cluster executors: a runner pod
serving every step of the run, and a pod per step.

Both executors drive the same state machine, and the operator's event log is
rebuilt from the run's journal and its step pods.  With one step pod at a time
(``FLUJO_MAX_RUNNING_PODS=1``; in runner mode it caps launches in flight)
results arrive in launch order, as they do for the embedded runtime's inline
scripted agents, so the logs must be identical.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from flujo.spec import PipelineSpec, UsageLimits
from flujo.transcript import render_transcript
from flujo.transcript.golden import load_scenarios

from flujo_operator.kube import Kube
from flujo_operator.runs import run_events
from tests.operatorkit import ROOT, get_json, running_operator, wait_for

GOLDEN = ROOT / "golden"
SCENARIOS = load_scenarios(GOLDEN / "scenarios.yaml")


def documents(scenario: Any) -> list[dict[str, Any]]:
    from flujo.transcript.golden import _documents

    pipeline, agents = _documents(scenario, GOLDEN)
    overrides = {a.metadata.name: a for a in scenario.agents}
    docs: list[dict[str, Any]] = []
    for agent in agents:
        chosen = overrides.pop(agent.metadata.name, agent)
        docs.append(
            {
                "apiVersion": "flujo.dev/v1alpha1",
                "kind": "Agent",
                "metadata": {"name": agent.metadata.name},
                "spec": chosen.spec.model_dump(by_alias=True, exclude_none=True, mode="json"),
            }
        )
    for name, agent in overrides.items():
        docs.append(
            {
                "apiVersion": "flujo.dev/v1alpha1",
                "kind": "Agent",
                "metadata": {"name": name},
                "spec": agent.spec.model_dump(by_alias=True, exclude_none=True, mode="json"),
            }
        )
    docs.append(pipeline.to_data())
    run_spec: dict[str, Any] = {
        "pipelineRef": {"name": pipeline.metadata.name},
        "input": scenario.input,
        "seed": scenario.seed,
    }
    if scenario.limits is not None:
        run_spec["usageLimits"] = scenario.limits.to_data()
    docs.append(
        {
            "apiVersion": "flujo.dev/v1alpha1",
            "kind": "PipelineRun",
            "metadata": {"name": "parity"},
            "spec": run_spec,
        }
    )
    return docs


@pytest.mark.parametrize("executor", ["runner", "pod"])
def test_operator_transcripts_equal_the_embedded_goldens(
    executor: str,
    kubeconfig: Path,
    kubectl: Any,
    local_kubelet: Any,
    k8s_client: Any,
    tmp_path: Path,
) -> None:
    kubectl("apply", "-f", str(ROOT / "crds"))
    namespaces = {s.name: f"g-{i}" for i, s in enumerate(SCENARIOS)}
    for namespace in namespaces.values():
        kubectl("create", "namespace", namespace)
    with running_operator(
        kubeconfig,
        tmp_path,
        FLUJO_NAMESPACES=",".join(namespaces.values()),
        FLUJO_MAX_RUNNING_PODS="1",
        FLUJO_EXECUTOR=executor,
    ) as op:
        for scenario in SCENARIOS:
            kubectl.apply(documents(scenario), "-n", namespaces[scenario.name])

        def finished() -> list[str]:
            left = []
            for scenario in SCENARIOS:
                status = (
                    get_json(kubectl, "pipelinerun", "parity", "-n", namespaces[scenario.name]).get(
                        "status"
                    )
                    or {}
                )
                if status.get("phase") not in ("Succeeded", "Failed", "Cancelled"):
                    left.append(scenario.name)
            return left

        wait_for(lambda: not finished(), 180, f"runs to finish ({op.log()[-2000:]})")
        kube = Kube(k8s_client)
        differences = []
        for scenario in SCENARIOS:
            run = get_json(kubectl, "pipelinerun", "parity", "-n", namespaces[scenario.name])
            events = asyncio.run(run_events(kube, run))
            pipeline = documents(scenario)[-2]
            limits = scenario.limits or UsageLimits()
            transcript = render_transcript(
                PipelineSpec.model_validate(pipeline["spec"]),
                events,
                limits.merged_over(PipelineSpec.model_validate(pipeline["spec"]).usage_limits),
                name=pipeline["metadata"]["name"],
            )
            golden = (GOLDEN / scenario.golden_file).read_text()
            if transcript != golden:
                import difflib

                differences.append(
                    "".join(
                        difflib.unified_diff(
                            golden.splitlines(True),
                            transcript.splitlines(True),
                            f"golden/{scenario.golden_file}",
                            f"operator:{scenario.name}",
                        )
                    )
                )
        assert not differences, "\n".join(differences)
