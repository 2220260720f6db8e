"""Dry runs: ``flujo run --dry-run`` without the network or the bill.

:func:`dry_run_registry` replaces every paid agent (:data:`PAID_AGENT_TYPES`:
``openai``, ``http``) by a scripted stand-in answering :func:`placeholder` at
zero usage; :func:`describe_dry_run` says beforehand what would have been
called (endpoints, models, which credentials are there) and
:func:`dry_run_summary` afterwards how many calls each stand-in received.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flujo.agents.registry import AgentEntry, AgentRegistry
from flujo.domain.validation import walk_steps
from flujo.spec.agent import AgentManifest, AgentSpec, CredentialSpec, ScriptedResponse
from flujo.spec.base import ObjectMeta
from flujo.spec.pipeline import PipelineManifest

if TYPE_CHECKING:
    from flujo.runtime import RunResult

__all__ = [
    "DRY_RUN_MARK",
    "PAID_AGENT_TYPES",
    "describe_dry_run",
    "dry_run_registry",
    "dry_run_summary",
    "placeholder",
]

PAID_AGENT_TYPES: tuple[str, ...] = ("openai", "http")
"""Agent types that call the network and may cost money: what a dry run replaces."""
DRY_RUN_MARK = "dry-run stand-in"
"""Start of the description of every stand-in agent, so a summary can find them."""


def _resolve_ref(ref: str, root: Mapping[str, Any]) -> Mapping[str, Any]:
    node: Any = root
    for part in ref.removeprefix("#/").split("/"):
        node = node.get(part, {}) if isinstance(node, Mapping) else {}
    return node if isinstance(node, Mapping) else {}


def _sample(schema: Mapping[str, Any], text: str, root: Mapping[str, Any], depth: int) -> Any:
    if depth > 12:
        return None
    if "$ref" in schema:
        return _sample(_resolve_ref(str(schema["$ref"]), root), text, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    if "default" in schema:
        return schema["default"]
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            non_null = [o for o in options if isinstance(o, Mapping) and o.get("type") != "null"]
            return _sample((non_null or options)[0], text, root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        return {str(k): _sample(v, text, root, depth + 1) for k, v in props.items()}
    if kind == "array":
        items = schema.get("items")
        return [_sample(items if isinstance(items, Mapping) else {}, text, root, depth + 1)]
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum", 0))
        return int(low) + (1 if "exclusiveMinimum" in schema else 0) if kind == "integer" else low
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    return text


def placeholder(name: str, output_schema: Mapping[str, Any] | None = None) -> Any:
    """The answer of ``name``'s stand-in: a string naming it, or, when the agent
    declares an output schema, the simplest value of that shape (strings say
    ``[dry run: NAME]``, numbers are their minimum, lists have one item)."""
    text = f"[dry run: {name}]"
    if not output_schema:
        return text
    return _sample(output_schema, text, output_schema, 0)


def _stand_in(name: str, spec: AgentSpec) -> AgentManifest:
    stand_in = AgentSpec(
        type="scripted",
        description=f"{DRY_RUN_MARK} for the {spec.type} agent {name}",
        version=spec.version,
        responses=[ScriptedResponse(output=placeholder(name, spec.output_schema))],
    )
    # model_construct: registry names need not be DNS names (agents registered in code)
    return AgentManifest(metadata=ObjectMeta.model_construct(name=name), spec=stand_in)


def dry_run_registry(
    registry: AgentRegistry, manifests: Sequence[AgentManifest] = ()
) -> AgentRegistry:
    """A new registry: ``registry``'s agents, then ``manifests`` (later names win, as
    when ``flujo run`` registers a file's Agents), with every paid agent
    (:data:`PAID_AGENT_TYPES`: ``openai``, ``http``) replaced by a scripted
    stand-in that answers :func:`placeholder` at zero usage and never touches
    the network.  Built-in, scripted and Python agents are kept: they are
    free and deterministic.  ``registry`` itself is not changed.
    """
    out = AgentRegistry(builtins=False, breakers=registry.breakers)
    entries: list[tuple[str, AgentSpec | None, AgentEntry | None]] = [
        (e.name, e.spec, e) for e in registry.list()
    ]
    entries += [(m.metadata.name, m.spec, None) for m in manifests]
    for name, spec, entry in entries:
        if spec is not None and spec.type in PAID_AGENT_TYPES:
            source = entry.source if entry is not None else "dry run"
            out.register_manifest(_stand_in(name, spec), source=source)
        elif spec is not None:
            manifest = AgentManifest(metadata=ObjectMeta.model_construct(name=name), spec=spec)
            provenance = entry.provenance if entry is not None else "file"
            out.register_manifest(
                manifest, source=entry.source if entry else "", provenance=provenance
            )
        elif entry is not None and entry.agent is not None:
            out.register(
                name,
                entry.agent,
                version=entry.version,
                provenance=entry.provenance,
                source=entry.source,
                description=entry.description,
            )
    return out


def _expanded(name: str, field: str, text: str | None) -> str:
    if not text:
        return "?"
    from flujo.agents.remote import expand_env
    from flujo.domain.errors import AgentError

    try:
        return expand_env(name, field, text)
    except AgentError:
        return f"{text} (a variable is not set)"


def _credential(spec: CredentialSpec | None) -> str:
    if spec is None:
        return ""
    if spec.env:
        state = "set" if os.environ.get(spec.env, "").strip() else "not set"
        return f"key from ${spec.env} ({state})"
    if spec.file:
        return f"key from file {spec.file} ({'exists' if Path(spec.file).exists() else 'missing'})"
    ref = spec.secret_key_ref
    return f"key from Secret {ref.name}/{ref.key}" if ref is not None else ""


def _uses(manifest: PipelineManifest) -> dict[str, list[str]]:
    uses: dict[str, list[str]] = {}
    for step, _, _ in walk_steps(manifest.spec.steps):
        if step.agent is not None:
            uses.setdefault(step.agent, []).append(step.name)
        if step.fallback is not None:
            uses.setdefault(step.fallback, []).append(f"{step.name} (fallback)")
    return uses


def describe_dry_run(manifest: PipelineManifest, registry: AgentRegistry) -> str:
    """What a dry run replaces: each paid agent the pipeline uses, where it would
    call (endpoint and model, ``${VAR}`` expanded), which credential it would
    read (its source and whether it is there, never its value) and the steps
    using it.  ``registry`` is the real one, before :func:`dry_run_registry`.
    """
    rows: list[str] = []
    for name, steps in sorted(_uses(manifest).items()):
        if name not in registry:
            continue
        spec = registry.entry(name).spec
        if spec is None or spec.type not in PAID_AGENT_TYPES:
            continue
        endpoint = _expanded(name, "endpoint", spec.endpoint)
        if spec.type == "openai":
            where = f"openai {_expanded(name, 'model', spec.model)} at {endpoint}"
        else:
            where = f"http POST {endpoint}"
        parts = [where]
        key = _credential(spec.api_key)
        if key:
            parts.append(key)
        parts.extend(f"header {h.name} {_credential(h.value_from)}" for h in spec.secret_headers)
        parts.append("steps " + ", ".join(steps))
        rows.append(f"  {name}: " + "; ".join(parts))
    if not rows:
        return "dry run: no step calls an openai or http agent; the run is the real one"
    count = len(rows)
    head = (
        f"dry run: {count} paid agent{'' if count == 1 else 's'} replaced by "
        "placeholders (no network, zero usage):"
    )
    return "\n".join([head, *rows])


def dry_run_summary(result: RunResult, registry: AgentRegistry) -> str:
    """After a dry run: how many calls each stand-in received, i.e. what the real
    run would have called (given the placeholders' answers)."""
    stand_ins = {
        e.name
        for e in registry.list()
        if e.spec is not None and (e.spec.description or "").startswith(DRY_RUN_MARK)
    }
    calls = {n: c for n, c in result.state.agent_calls.items() if n in stand_ins}
    if not calls:
        return "dry run: no paid agent would have been called"
    shown = ", ".join(f"{n} x{calls[n]}" for n in sorted(calls))
    return f"dry run: the real run would have made {sum(calls.values())} paid calls: {shown}"
