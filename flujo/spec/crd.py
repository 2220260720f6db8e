"""CustomResourceDefinitions generated from the spec models — never written twice.

Kubernetes wants *structural* OpenAPI v3 schemas: every node typed, no
``$ref``, no ``anyOf`` of types, no recursion, ``additionalProperties`` only
without ``properties``.  Pydantic's JSON schema is none of these, so this
module rewrites it:

- ``$ref`` is inlined; ``Optional[X]`` becomes ``X``; ``Any`` becomes
  ``x-kubernetes-preserve-unknown-fields``; ``exclusiveMinimum`` becomes the
  OpenAPI 3.0 boolean form; titles and defaults are dropped (defaults are the
  operator's business, so a stored object is exactly what the user wrote).
- Recursion is cut: steps are fully typed for :data:`TYPED_STEP_LEVELS`
  levels (what ``kubectl explain`` shows); deeper bodies are kept as
  preserve-unknown objects that the operator validates with the same
  pydantic models.  Unrolling all :data:`~flujo.spec.pipeline.MAX_DEPTH`
  levels would copy the step schema 4^6 times.
- CEL rules (``x-kubernetes-validations``) check at admission what the
  schema cannot: one kind per step, one pipeline source per run.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import BaseModel

from flujo.spec.agent import AgentSpec
from flujo.spec.base import API_GROUP
from flujo.spec.pipeline import STEP_KINDS, PipelineSpec
from flujo.spec.run import PipelineRunSpec

__all__ = [
    "CRD_VERSION",
    "TYPED_STEP_LEVELS",
    "CrdInfo",
    "build_crd",
    "build_crds",
    "render_crds",
    "schema_of",
]

CRD_VERSION = "v1alpha1"
TYPED_STEP_LEVELS = 2

_KEEP = {
    "type", "description", "properties", "required", "items", "enum", "pattern",
    "minimum", "maximum", "minLength", "maxLength", "minItems", "maxItems", "format",
}  # fmt: skip

STEP_RULES = [
    {
        "rule": "["
        + ", ".join(f"has(self.{k})" for k in ("agent", *STEP_KINDS[1:]))
        + "].filter(x, x).size() == 1",
        "message": "a step has exactly one of: " + ", ".join(STEP_KINDS),
    },
    {
        "rule": "!has(self.agent) ? !has(self.retry) && !has(self.timeoutSeconds)"
        " && (!has(self.fallback) || has(self.approval)) : true",
        "message": "retry and timeoutSeconds apply to agent steps only, fallback to agent "
        "and approval steps",
    },
]
RUN_RULES = [
    {
        "rule": "has(self.pipelineRef) != has(self.pipeline)",
        "message": "a PipelineRun needs exactly one of pipelineRef and pipeline",
    }
]
AGENT_RULES = [
    {"rule": "self.type != 'openai' || (has(self.model) && has(self.endpoint))",
     "message": "an openai agent needs model and endpoint"},
    {"rule": "self.type != 'http' || has(self.endpoint)",
     "message": "an http agent needs endpoint"},
    {"rule": "self.type != 'builtin' || has(self.builtin)",
     "message": "a builtin agent needs builtin"},
    {"rule": "self.type != 'scripted' || (has(self.responses) && size(self.responses) > 0)",
     "message": "a scripted agent needs responses"},
    {"rule": "self.type != 'mcp'"
             " || has(self.endpoint) != (has(self.command) && size(self.command) > 0)",
     "message": "an mcp agent needs exactly one of endpoint and command"},
    {"rule": "!has(self.tools) || size(self.tools) == 0"
             " || self.type == 'openai' || self.type == 'scripted'",
     "message": "only an openai (or scripted) agent has tools"},
]  # fmt: skip


class _Converter:
    def __init__(self, defs: dict[str, Any]) -> None:
        self.defs = defs

    def convert(self, node: dict[str, Any], step_level: int) -> dict[str, Any]:
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[-1]
            target = dict(self.defs[name])
            if "description" in node:
                target["description"] = node["description"]
            if name == "StepSpec":
                if step_level >= TYPED_STEP_LEVELS:
                    return _opaque(target.get("description"))
                step = self.convert(target, step_level + 1)
                if step_level == 0:
                    # Only the top level: CEL cost estimates multiply by every enclosing
                    # list's maxItems, and nested steps are validated by the operator.
                    step["x-kubernetes-validations"] = copy.deepcopy(STEP_RULES)
                return step
            return self.convert(target, step_level)
        if "anyOf" in node:
            options = [o for o in node["anyOf"] if o.get("type") != "null"]
            if len(options) == 1:
                merged = {**options[0]}
                if "description" in node:
                    merged["description"] = node["description"]
                return self.convert(merged, step_level)
            return _opaque(node.get("description"))
        if "const" in node:
            node = {**node, "enum": [node["const"]], "type": "string"}
        kind = node.get("type")
        if kind is None:
            return _opaque(node.get("description"))
        out: dict[str, Any] = {k: v for k, v in node.items() if k in _KEEP}
        if "exclusiveMinimum" in node:
            out["minimum"] = node["exclusiveMinimum"]
            out["exclusiveMinimum"] = True
        if kind == "object":
            props = node.get("properties")
            extra = node.get("additionalProperties")
            if props:
                out["properties"] = {k: self.convert(v, step_level) for k, v in props.items()}
            elif isinstance(extra, dict) and extra.get("type"):
                out["additionalProperties"] = self.convert(extra, step_level)
            else:
                out["x-kubernetes-preserve-unknown-fields"] = True
        elif kind == "array":
            out["items"] = self.convert(node.get("items", {}), step_level)
        return out


def _opaque(description: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"x-kubernetes-preserve-unknown-fields": True}
    if description:
        out["description"] = description
    return out


def schema_of(model: type[BaseModel]) -> dict[str, Any]:
    """The structural schema of a spec model."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    return _Converter(defs).convert(raw, 0)


@dataclass(frozen=True)
class CrdInfo:
    kind: str
    plural: str
    short_names: list[str]
    spec_model: type[BaseModel]
    description: str
    columns: list[dict[str, Any]] = field(default_factory=list)
    spec_rules: list[dict[str, str]] = field(default_factory=list)


_AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}

CRDS = [
    CrdInfo(
        kind="Agent",
        plural="agents",
        short_names=["fa"],
        spec_model=AgentSpec,
        description="An agent pipelines can call: an OpenAI-compatible endpoint, an HTTP tool, "
        "a built-in transform or a scripted agent.",
        columns=[
            {"name": "Type", "type": "string", "jsonPath": ".spec.type"},
            {"name": "Model", "type": "string", "jsonPath": ".spec.model"},
            {"name": "Circuit", "type": "string", "jsonPath": ".status.circuit.state"},
            _AGE,
        ],
        spec_rules=AGENT_RULES,
    ),
    CrdInfo(
        kind="Pipeline",
        plural="pipelines",
        short_names=["fp"],
        spec_model=PipelineSpec,
        description="A pipeline of steps calling agents; run it with a PipelineRun.",
        columns=[
            {
                "name": "Valid",
                "type": "string",
                "jsonPath": '.status.conditions[?(@.type=="Valid")].status',
            },
            {
                "name": "Agents Resolved",
                "type": "string",
                "jsonPath": '.status.conditions[?(@.type=="AgentsResolved")].status',
            },
            _AGE,
        ],
    ),
    CrdInfo(
        kind="PipelineRun",
        plural="pipelineruns",
        short_names=["fpr"],
        spec_model=PipelineRunSpec,
        description="One execution of a pipeline: input, budget, and (in status) progress, "
        "usage and outcome.",
        columns=[
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Steps", "type": "string", "jsonPath": ".status.progress"},
            {"name": "Tokens", "type": "integer", "jsonPath": ".status.usage.totalTokens"},
            {"name": "Cost", "type": "string", "jsonPath": ".status.usage.cost"},
            {"name": "Executor", "type": "string", "jsonPath": ".status.executor"},
            {"name": "Reason", "type": "string", "jsonPath": ".status.reason", "priority": 1},
            _AGE,
        ],
        spec_rules=RUN_RULES,
    ),
]


def build_crd(info: CrdInfo) -> dict[str, Any]:
    spec_schema = schema_of(info.spec_model)
    if info.spec_rules:
        spec_schema["x-kubernetes-validations"] = copy.deepcopy(info.spec_rules)
    singular = info.kind.lower()
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{info.plural}.{API_GROUP}",
            "labels": {"app.kubernetes.io/part-of": "flujo"},
        },
        "spec": {
            "group": API_GROUP,
            "names": {
                "kind": info.kind,
                "listKind": f"{info.kind}List",
                "plural": info.plural,
                "singular": singular,
                "shortNames": info.short_names,
                "categories": ["flujo"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": CRD_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": info.columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": info.description,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": {
                                    "type": "object",
                                    "description": "Written by the Flujo operator.",
                                    "x-kubernetes-preserve-unknown-fields": True,
                                },
                            },
                        }
                    },
                }
            ],
        },
    }


def render_crds() -> dict[str, str]:
    """File name → YAML text, as checked into ``crds/``."""
    header = "# Generated from flujo.spec by `flujo crds`. Do not edit.\n"
    return {
        name: header + yaml.safe_dump(crd, sort_keys=False, width=100, allow_unicode=True)
        for name, crd in build_crds().items()
    }


def build_crds() -> dict[str, dict[str, Any]]:
    """File name → CRD, for every Flujo resource."""
    return {f"{info.plural}.{API_GROUP}.yaml": build_crd(info) for info in CRDS}
