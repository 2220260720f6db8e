"""The CRDs: generated from the spec models, checked in, structural, with working CEL rules."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import celpy
import pytest
import yaml
from flujo.spec.crd import build_crds, render_crds

ROOT = Path(__file__).resolve().parent.parent
CRDS = build_crds()


def test_checked_in_crds_are_up_to_date() -> None:
    for name, text in render_crds().items():
        assert (ROOT / "crds" / name).read_text() == text, f"crds/{name}: run 'flujo crds'"
    assert {p.name for p in (ROOT / "crds").glob("*.yaml")} == set(CRDS)


def test_the_check_command_detects_drift(tmp_path: Path) -> None:
    run = [sys.executable, "-m", "flujo", "crds", "--output-dir", str(tmp_path)]
    assert subprocess.run([*run], capture_output=True).returncode == 0
    (tmp_path / "agents.flujo.dev.yaml").write_text("stale")
    proc = subprocess.run([*run, "--check"], capture_output=True, text=True)
    assert proc.returncode == 1 and "agents.flujo.dev.yaml is out of date" in proc.stderr


def test_crds_validate_against_the_kubernetes_schemas() -> None:
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "kubernetes-validate"),
            "--strict",
            "--quiet",
            *map(str, sorted((ROOT / "crds").glob("*.yaml"))),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def nodes(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for key, sub in schema.get("properties", {}).items():
        yield from nodes(sub, f"{path}.{key}")
    if isinstance(schema.get("items"), dict):
        yield from nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from nodes(schema["additionalProperties"], f"{path}{{}}")


@pytest.mark.parametrize("name", sorted(CRDS))
def test_schemas_are_structural_and_documented(name: str) -> None:
    schema = CRDS[name]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in nodes(schema):
        assert not {"$ref", "anyOf", "oneOf", "allOf", "default", "title"} & set(node), path
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), path
        assert not ("properties" in node and "additionalProperties" in node), path
        if path.startswith(".spec.") and not path.endswith(("[]", "{}")):
            assert node.get("description"), f"{name}: {path} has no description"


def rules_at(crd: str, *path: str) -> list[Any]:
    node = CRDS[crd]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for part in path:
        node = node["items"] if part == "[]" else node["properties"][part]
    env = celpy.Environment()
    return [
        (env.program(env.compile(r["rule"])), r["message"])
        for r in node["x-kubernetes-validations"]
    ]


def admitted(rules: list[Any], obj: dict[str, Any]) -> list[str]:
    """Messages of the rules the object breaks (empty: admitted)."""
    return [msg for prog, msg in rules if not prog.evaluate({"self": celpy.json_to_cel(obj)})]


def test_step_rule_needs_exactly_one_kind() -> None:
    rules = rules_at("pipelines.flujo.dev.yaml", "spec", "steps", "[]")
    assert admitted(rules, {"name": "a", "agent": "x"}) == []
    assert admitted(rules, {"name": "a", "loop": {"maxIterations": 2, "steps": []}}) == []
    assert admitted(rules, {"name": "a"}) == [
        "a step has exactly one of: agent, loop, conditional, parallel, map, approval"
    ]
    assert admitted(rules, {"name": "a", "agent": "x", "map": {}}) != []
    assert admitted(rules, {"name": "a", "loop": {}, "retry": {"maxAttempts": 2}}) == [
        "retry and timeoutSeconds apply to agent steps only, fallback to agent and approval steps"
    ]
    assert admitted(rules, {"name": "a", "approval": {}, "fallback": "notify"}) == []
    assert admitted(rules, {"name": "a", "loop": {}, "fallback": "notify"}) != []
    nested = CRDS["pipelines.flujo.dev.yaml"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for part in ("spec", "steps", "[]", "loop", "steps", "[]"):
        nested = nested["items"] if part == "[]" else nested["properties"][part]
    assert "x-kubernetes-validations" not in nested  # the operator validates nested steps


def test_run_rule_needs_one_pipeline_source() -> None:
    rules = rules_at("pipelineruns.flujo.dev.yaml", "spec")
    assert admitted(rules, {"pipelineRef": {"name": "p"}}) == []
    assert admitted(rules, {"pipeline": {"steps": []}}) == []
    assert admitted(rules, {}) != []
    assert admitted(rules, {"pipelineRef": {"name": "p"}, "pipeline": {"steps": []}}) != []


def test_agent_rules_match_the_pydantic_validation() -> None:
    from flujo.spec.agent import AgentSpec
    from pydantic import ValidationError

    rules = rules_at("agents.flujo.dev.yaml", "spec")
    samples = [
        {"type": "openai", "model": "m", "endpoint": "https://x/v1"},
        {"type": "openai", "model": "m"},
        {"type": "http", "endpoint": "https://hook"},
        {"type": "http"},
        {"type": "builtin", "builtin": "upper"},
        {"type": "builtin"},
        {"type": "scripted", "responses": [{"output": "x"}]},
        {"type": "scripted", "responses": []},
    ]
    for sample in samples:
        try:
            AgentSpec.model_validate(sample)
            valid = True
        except ValidationError:
            valid = False
        assert (admitted(rules, sample) == []) == valid, sample


def test_examples_fit_the_crd_schema_types() -> None:
    """Every example manifest is admitted by its CRD's structural schema."""
    import jsonschema

    for path in sorted((ROOT / "examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            crd = CRDS[f"{doc['kind'].lower()}s.flujo.dev.yaml"]
            schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
            jsonschema.validate(doc["spec"], _as_jsonschema(schema))


def _as_jsonschema(node: Any) -> Any:
    if isinstance(node, dict):
        out = {
            k: _as_jsonschema(v)
            for k, v in node.items()
            if not k.startswith("x-kubernetes") and k != "exclusiveMinimum"
        }
        if node.get("type") == "object" and "properties" in node:
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_as_jsonschema(v) for v in node]
    return node
