"""The CRDs of crds/ against the upstream apiserver: accepted, published, enforced.

The emulator stores CRDs and prunes unknown fields but checks no schema; here the
real apiserver validates every object against the OpenAPI schema and the CEL rules
(x-kubernetes-validations), and publishes the schema for ``kubectl explain``.
"""

from __future__ import annotations

import pytest

from tests.realcluster.controlplane import ROOT, RealKubectl

EXAMPLES = ROOT / "examples"

TWO_KINDS_OF_STEP = """
apiVersion: flujo.dev/v1alpha1
kind: Pipeline
metadata: {name: ambiguous}
spec:
  steps:
    - name: both
      agent: builtin.upper
      loop:
        maxIterations: 2
        steps: [{name: inner, agent: builtin.upper}]
"""

RUN_WITH_BOTH_SOURCES = """
apiVersion: flujo.dev/v1alpha1
kind: PipelineRun
metadata: {name: both-sources}
spec:
  pipelineRef: {name: linear}
  pipeline:
    steps: [{name: one, agent: builtin.upper}]
  input: x
"""

OPENAI_WITHOUT_MODEL = """
apiVersion: flujo.dev/v1alpha1
kind: Agent
metadata: {name: no-model}
spec:
  type: openai
  endpoint: http://127.0.0.1:1/v1
"""

BAD_STEP_NAME = """
apiVersion: flujo.dev/v1alpha1
kind: Pipeline
metadata: {name: bad-name}
spec:
  steps:
    - {name: "not a name!", agent: builtin.upper}
"""

UNKNOWN_FIELD = """
apiVersion: flujo.dev/v1alpha1
kind: Pipeline
metadata: {name: unknown-field}
spec:
  stepz: []
  steps:
    - {name: one, agent: builtin.upper}
"""


def _rejected(kubectl: RealKubectl, manifest: str, *extra: str) -> str:
    result = kubectl("apply", "-f", "-", *extra, input=manifest, check=False)
    assert result.returncode != 0, f"the server accepted it:\n{result.stdout}"
    return result.stderr


def test_every_crd_is_established_with_the_served_version(real_crds: RealKubectl) -> None:
    crds = real_crds.json("crd")["items"]
    ours = {c["metadata"]["name"]: c for c in crds if c["spec"]["group"] == "flujo.dev"}
    assert set(ours) == {"agents.flujo.dev", "pipelines.flujo.dev", "pipelineruns.flujo.dev"}
    for name, crd in ours.items():
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions.get("Established") == "True", (name, conditions)
        # A structural schema: otherwise the server reports NonStructuralSchema.
        assert conditions.get("NonStructuralSchema") in (None, "False"), (name, conditions)
        assert crd["status"]["acceptedNames"]["kind"] in {"Agent", "Pipeline", "PipelineRun"}


@pytest.mark.parametrize("example", ["linear", "fanout", "refine-loop", "router", "openai-chat"])
def test_every_example_passes_server_side_validation(
    real_crds: RealKubectl, real_namespace: str, example: str
) -> None:
    kubectl = real_crds.bound(real_namespace)
    out = kubectl(
        "apply", "--dry-run=server", "--validate=strict", "-f", str(EXAMPLES / f"{example}.yaml")
    ).stdout
    assert "(server dry run)" in out, out


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        (TWO_KINDS_OF_STEP, "a step has exactly one of: agent, loop, conditional, parallel, map"),
        (RUN_WITH_BOTH_SOURCES, "a PipelineRun needs exactly one of pipelineRef and pipeline"),
        (OPENAI_WITHOUT_MODEL, "an openai agent needs model and endpoint"),
    ],
    ids=["step-with-agent-and-loop", "run-with-ref-and-inline", "openai-without-model"],
)
def test_cel_rules_reject_with_their_message(
    real_crds: RealKubectl, real_namespace: str, manifest: str, message: str
) -> None:
    kubectl = real_crds.bound(real_namespace)
    error = _rejected(kubectl, manifest)
    assert message in error, error
    assert "Invalid value" in error or "is invalid" in error, error
    kinds = kubectl("get", "agents,pipelines,pipelineruns", "-o", "name").stdout
    assert kinds.strip() == "", f"a rejected object was stored: {kinds}"


def test_the_openapi_pattern_rejects_a_bad_step_name(
    real_crds: RealKubectl, real_namespace: str
) -> None:
    error = _rejected(real_crds.bound(real_namespace), BAD_STEP_NAME)
    assert "spec.steps[0].name" in error and "should match" in error, error


def test_unknown_fields_are_rejected_under_strict_validation_and_pruned_otherwise(
    real_crds: RealKubectl, real_namespace: str
) -> None:
    kubectl = real_crds.bound(real_namespace)
    error = _rejected(kubectl, UNKNOWN_FIELD, "--validate=strict")
    assert "stepz" in error, error
    # Without strict validation the server stores the object and prunes the field.
    out = kubectl("apply", "-f", "-", "--validate=false", input=UNKNOWN_FIELD).stdout
    assert "pipeline.flujo.dev/unknown-field created" in out, out
    stored = kubectl.json("pipeline", "unknown-field")
    assert "stepz" not in stored["spec"] and stored["spec"]["steps"][0]["name"] == "one"


def test_kubectl_explain_shows_the_field_docs(real_crds: RealKubectl) -> None:
    top = real_crds("explain", "pipelines.spec").stdout
    assert "What a pipeline does: its steps, default limits and timeout." in top, top
    assert "steps" in top and "timeoutSeconds" in top, top
    name = real_crds("explain", "pipelines.spec.steps.name").stdout
    assert "Unique step name in the pipeline." in name, name
    ref = real_crds("explain", "pipelineruns.spec.pipelineRef").stdout
    assert "The Pipeline to run." in ref and "Name of the Pipeline." in ref, ref
    assert "-required-" in ref, ref
