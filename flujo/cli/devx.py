"""Developer experience: ``flujo init``, ``flujo explain``, dry runs, error excerpts.

Why a module apart from :mod:`flujo.cli.app`: these commands help a person
write a pipeline rather than run one, and their logic (the scaffold, the tree,
the stand-in agents of a dry run, the YAML excerpt under an error) is plain
functions that tests and other commands call directly.  ``register(app)``
adds the commands to the ``flujo`` typer app.

- ``flujo init [DIR]`` writes a project that runs and tests offline: a
  pipeline with a scripted agent, an agents file with the real (openai)
  agent, a pytest golden test, its golden transcript (made by running the
  pipeline) and a README.  It never overwrites a file.
- ``flujo explain FILE`` prints the pipeline as a tree: steps, kinds,
  agents, loop bounds, branches, retries, fallbacks.
- :func:`dry_run_registry` replaces every paid agent (``openai``, ``http``)
  by a scripted stand-in answering a placeholder at zero usage, and
  :func:`describe_dry_run` / :func:`dry_run_summary` say what would have been
  called: the logic of ``flujo run --dry-run``.
- :func:`excerpt` and :func:`describe_problem` show the offending YAML line
  under an error, with a hint: what ``flujo validate`` prints.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from flujo.agents.registry import AgentEntry, AgentRegistry
from flujo.domain.validation import check_agents, check_pipeline, walk_steps
from flujo.spec.agent import AgentManifest, AgentSpec, CredentialSpec, ScriptedResponse
from flujo.spec.base import ObjectMeta
from flujo.spec.loader import Documents, Problem, load_files
from flujo.spec.pipeline import BranchSpec, PipelineManifest, StepSpec

if TYPE_CHECKING:
    from rich.text import Text
    from rich.tree import Tree

    from flujo.runtime import RunResult

__all__ = [
    "PAID_AGENT_TYPES",
    "InitError",
    "describe_dry_run",
    "describe_problem",
    "dry_run_registry",
    "dry_run_summary",
    "excerpt",
    "explain_command",
    "explain_text",
    "explain_tree",
    "hint_for",
    "init_command",
    "init_project",
    "placeholder",
    "project_name",
    "register",
]

EXIT_USAGE = 2
PAID_AGENT_TYPES: tuple[str, ...] = ("openai", "http")
"""Agent types that call the network and may cost money: what a dry run replaces."""
DRY_RUN_MARK = "dry-run stand-in"
"""Start of the description of every stand-in agent, so a summary can find them."""


def _fail(lines: Iterable[str], code: int = EXIT_USAGE) -> NoReturn:
    for line in lines:
        typer.echo(f"error: {line}", err=True)
    raise typer.Exit(code)


# --- error excerpts -------------------------------------------------------------

_MAX_SHOWN = 160


def _span(text: str, key: str | None) -> tuple[int, int]:
    """Columns to underline in ``text``: the value of ``key:`` when present, else the content."""
    if key:
        found = re.search(rf"(?<![\w-]){re.escape(key)}\s*:", text)
        if found:
            rest = text[found.end() :]
            value = rest.strip()
            if value and not value.startswith("#"):
                start = found.end() + len(rest) - len(rest.lstrip())
                end = start + len(re.sub(r"\s+#.*$", "", value))
                return start, end
            return found.start(), found.end() - 1
    start = len(text) - len(text.lstrip())
    if text[start:].startswith("- "):
        start += 2
    body = re.sub(r"\s+#.*$", "", text[start:]).rstrip()
    return start, start + max(1, len(body))


def excerpt(path: str | Path, line: int, *, key: str | None = None, context: int = 1) -> str:
    """The YAML line ``line`` of ``path`` with a marker and a caret, and ``context`` lines
    either side; ``""`` when the file or the line cannot be read.

    ``key`` (the last field name of the error's path, such as ``agent``) makes
    the caret point at that key's value rather than at the whole line::

          8 |     - name: draft
        > 9 |       agent: writr
            |              ^^^^^
         10 |       input: "..."
    """
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError, ValueError):
        return ""
    if not 1 <= line <= len(lines):
        return ""
    first, last = max(1, line - context), min(len(lines), line + context)
    width = len(str(last))
    out: list[str] = []
    for number in range(first, last + 1):
        text = lines[number - 1].expandtabs(4)[:_MAX_SHOWN]
        marker = ">" if number == line else " "
        out.append(f"{marker} {number:>{width}} | {text}".rstrip())
        if number == line:
            start, end = _span(text, key)
            out.append(f"  {' ' * width} | {' ' * start}{'^' * max(1, end - start)}")
    return "\n".join(out)


_HINTS: tuple[tuple[str, str], ...] = (
    (
        "unknown agent",
        "agents are Agent documents in this file or in a file given with --agents; "
        "built-in transforms are named builtin.NAME",
    ),
    (
        "unknown step kind or field",
        "a step has a name and exactly one of agent, loop, conditional, parallel, map",
    ),
    (
        "must have exactly one of",
        "a step has exactly one of agent, loop, conditional, parallel, map",
    ),
    (
        "apply to agent steps only",
        "put retry, fallback and timeoutSeconds on the agent steps inside",
    ),
    (
        "template uses unknown variable",
        "templates see input, previous_step, steps.NAME.output; loops add iteration, "
        "maps item and index, parallel branches branch",
    ),
    ("template references unknown step", "steps.NAME refers to a step of this pipeline by name"),
    ("invalid template", "Jinja2 syntax: {{ expression }}, {% if %}…{% endif %}"),
    (
        "invalid YAML",
        "indent with spaces, not tabs; quote values that start with {{ or contain ': '",
    ),
    ("duplicate step name", "step names are unique in the whole pipeline, nested steps included"),
    ("duplicate branch name", "branch names are unique within their step"),
    ("unknown kind", "kind is Pipeline, Agent or PipelineRun, with apiVersion flujo.dev/v1alpha1"),
    ("no kind", "kind is Pipeline, Agent or PipelineRun, with apiVersion flujo.dev/v1alpha1"),
    ("nested deeper", "move the inner steps into a separate pipeline"),
    ("needs model", "an openai agent needs model and endpoint (…/v1)"),
    ("needs endpoint", "set endpoint: the URL the agent calls"),
    ("needs responses", "a scripted agent lists its answers under responses"),
    ("needs builtin", "name the transform: builtin: upper (flujo explain lists them per step)"),
)


_TEMPLATE_NAMES = (
    "input", "previous_step", "steps", "output", "iteration", "item", "index", "branch",
)  # fmt: skip


@cache
def _field_names() -> tuple[str, ...]:
    """Every YAML field name of the manifests (camelCase), for "did you mean"."""
    from pydantic import BaseModel

    from flujo.spec.run import PipelineRunManifest

    seen: set[type[BaseModel]] = set()
    names: set[str] = set()
    todo: list[Any] = [PipelineManifest, AgentManifest, PipelineRunManifest]
    while todo:
        item = todo.pop()
        if isinstance(item, type) and issubclass(item, BaseModel):
            if item in seen:
                continue
            seen.add(item)
            for name, info in item.model_fields.items():
                names.add(info.alias or name)
                todo.append(info.annotation)
        else:
            todo.extend(getattr(item, "__args__", ()))
    return tuple(sorted(names))


def hint_for(message: str, loc: str = "") -> str | None:
    """A one-line hint for a validation message, or ``None``."""
    unknown = re.match(r"unknown field '([^']+)'", message)
    if unknown:
        close = difflib.get_close_matches(unknown.group(1), _field_names(), n=1, cutoff=0.7)
        if close:
            return f"did you mean {close[0]!r}?"
        return "unknown fields are errors, so that a typo never changes behaviour silently"
    variable = re.match(r"template uses unknown variable '([^']+)'", message)
    if variable:
        close = difflib.get_close_matches(variable.group(1), _TEMPLATE_NAMES, n=1, cutoff=0.6)
        if close:
            return f"did you mean {close[0]!r}?"
    missing = re.match(r"missing required field '([^']+)'", message)
    if missing:
        name = missing.group(1)
        if name == "maxIterations":
            return "every loop needs maxIterations, an upper bound on its iterations"
        return f"add {name}: it has no default"
    for needle, hint in _HINTS:
        if needle in message:
            return hint
    return None


def describe_problem(problem: Problem, *, context: int = 1) -> str:
    """``problem`` as ``flujo validate`` shows it: its line, the YAML excerpt, a hint."""
    lines = [str(problem)]
    if problem.line:
        key = problem.loc.rsplit(".", 1)[-1] if problem.loc else None
        if key is not None and (key.endswith("]") or not key):
            key = None
        shown = excerpt(problem.source, problem.line, key=key, context=context)
        if shown:
            lines.extend("  " + line for line in shown.splitlines())
    hint = hint_for(problem.message, problem.loc)
    if hint:
        lines.append(f"  hint: {hint}")
    return "\n".join(lines)


# --- loading ------------------------------------------------------------------


def _load(
    file: Path, agents: Sequence[Path] | None, pipeline: str | None
) -> tuple[Documents, PipelineManifest, AgentRegistry]:
    docs = load_files([file, *(agents or [])])
    if docs.problems:
        _fail(str(p) for p in docs.problems)
    candidates = [p for p in docs.pipelines if pipeline is None or p.metadata.name == pipeline]
    if len(candidates) != 1:
        names = ", ".join(p.metadata.name for p in docs.pipelines) or "none"
        if not candidates:
            what = f"no Pipeline named {pipeline!r}" if pipeline else "no Pipeline document"
        else:
            what = "several pipelines; choose one with --pipeline NAME"
        _fail([f"{file}: {what} (pipelines found: {names})"])
    registry = AgentRegistry()
    for agent in docs.agents:
        source, _ = docs.locators.get(id(agent), (str(file), None))
        registry.register_manifest(agent, source=source)
    return docs, candidates[0], registry


# --- flujo explain ------------------------------------------------------------


def _seconds(value: float) -> str:
    return f"{value:g}s"


def _agent_detail(name: str, registry: AgentRegistry) -> tuple[str, bool]:
    """What kind of agent ``name`` is, and whether the registry knows it."""
    if name not in registry:
        return "unknown agent", False
    spec = registry.entry(name).spec
    if spec is None:
        return "python", True
    if spec.type == "builtin":
        return ("builtin" if name == f"builtin.{spec.builtin}" else f"builtin {spec.builtin}"), True
    if spec.type == "scripted":
        count = len(spec.responses)
        return f"scripted, {count} response{'' if count == 1 else 's'}", True
    if spec.type == "openai":
        return f"openai {spec.model}", True
    return f"{spec.type} {spec.endpoint}", True


def _preview(value: Any, limit: int = 72) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = json.dumps(text, ensure_ascii=False) if isinstance(value, str) else text
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _label(step: StepSpec, registry: AgentRegistry) -> Text:
    from rich.text import Text

    label = Text()
    label.append(step.name, style="bold")
    label.append(f"  {step.kind}", style="cyan")
    if step.loop is not None:
        lp = step.loop
        label.append(f" maxIterations={lp.max_iterations}")
        label.append(f", exitWhen `{lp.exit_when}`" if lp.exit_when else ", no exitWhen")
        if lp.on_max_iterations != "fail":
            label.append(f", onMaxIterations={lp.on_max_iterations}")
    elif step.conditional is not None:
        cd = step.conditional
        label.append(f" on `{cd.condition}`")
        if cd.default:
            label.append(f", default {cd.default}")
    elif step.parallel is not None:
        pl = step.parallel
        label.append(f" {len(pl.branches)} branches, merge={pl.merge}")
        label.append(f", onBranchFailure={pl.on_branch_failure}")
        if pl.max_concurrency:
            label.append(f", maxConcurrency={pl.max_concurrency}")
    elif step.map is not None:
        mp = step.map
        label.append(f" over `{mp.items}`, maxItems={mp.max_items}")
        label.append(f", onItemFailure={mp.on_item_failure}")
        if mp.max_concurrency:
            label.append(f", maxConcurrency={mp.max_concurrency}")
        if mp.batch_size:
            label.append(f", batchSize={mp.batch_size}")
    else:
        for role, name in (("", step.agent), ("fallback ", step.fallback)):
            if name is None:
                continue
            detail, known = _agent_detail(name, registry)
            label.append(f", {role}" if role else " ")
            label.append(name, style="green" if known else "bold red")
            label.append(f" ({detail})", style="" if known else "red")
        if step.retry is not None and step.retry.max_attempts > 1:
            label.append(f", retry maxAttempts={step.retry.max_attempts}")
        if step.timeout_seconds is not None:
            label.append(f", timeout {_seconds(step.timeout_seconds)}")
        if step.input is not None:
            label.append(f"\ninput: {_preview(step.input)}", style="dim")
    return label


def _add_steps(node: Tree, steps: Sequence[StepSpec], registry: AgentRegistry) -> None:
    for step in steps:
        child = node.add(_label(step, registry))
        body: Sequence[StepSpec] = ()
        branches: Sequence[BranchSpec] = ()
        default = None
        if step.loop is not None:
            body = step.loop.steps
        elif step.map is not None:
            body = step.map.steps
        elif step.parallel is not None:
            branches = step.parallel.branches
        elif step.conditional is not None:
            branches = step.conditional.branches
            default = step.conditional.default
        _add_steps(child, body, registry)
        for branch in branches:
            from rich.text import Text

            title = Text(f"[{branch.name}]", style="magenta")
            if branch.name == default:
                title.append(" (default)")
            _add_steps(child.add(title), branch.steps, registry)


def explain_tree(manifest: PipelineManifest, registry: AgentRegistry) -> Tree:
    """The pipeline as a rich tree: one node per step, branches as labelled nodes."""
    from rich.text import Text
    from rich.tree import Tree

    spec = manifest.spec
    total = sum(1 for _ in walk_steps(spec.steps))
    root = Text()
    root.append(f"pipeline {manifest.metadata.name}", style="bold")
    root.append(f": {len(spec.steps)} top-level steps, {total} in all")
    if spec.description:
        root.append(f"\n{spec.description}", style="dim")
    limits = spec.usage_limits.to_data() if spec.usage_limits else {}
    if spec.timeout_seconds is not None:
        limits["timeoutSeconds"] = spec.timeout_seconds
    if limits:
        root.append("\nlimits: " + ", ".join(f"{k}={limits[k]}" for k in sorted(limits)))
    tree = Tree(root)
    _add_steps(tree, spec.steps, registry)
    return tree


def explain_text(manifest: PipelineManifest, registry: AgentRegistry, *, width: int = 200) -> str:
    """:func:`explain_tree` as plain text (no colour), for tests and pipes."""
    from rich.console import Console

    console = Console(width=width, color_system=None, force_terminal=False, highlight=False)
    with console.capture() as capture:
        console.print(explain_tree(manifest, registry))
    return "\n".join(line.rstrip() for line in capture.get().splitlines()) + "\n"


def explain_command(
    file: Annotated[Path, typer.Argument(help="Pipeline YAML (may also hold Agents).")],
    agents: Annotated[
        list[Path] | None, typer.Option("--agents", "-a", help="More files with Agents.")
    ] = None,
    pipeline: Annotated[str | None, typer.Option(help="Pipeline name, if several.")] = None,
) -> None:
    """Print a pipeline as a tree: steps, kinds, agents, loop bounds, branches."""
    docs, manifest, registry = _load(file, agents, pipeline)
    import sys

    if sys.stdout.isatty():
        from rich.console import Console

        Console(highlight=False).print(explain_tree(manifest, registry))
    else:
        sys.stdout.write(explain_text(manifest, registry))
    findings = check_pipeline(manifest.spec) + check_agents(manifest.spec, registry.names())
    if findings:
        _fail(str(docs.locate(manifest, f.loc, f.message)) for f in findings)


# --- dry runs -----------------------------------------------------------------


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


# --- flujo init ---------------------------------------------------------------


class InitError(Exception):
    """``flujo init`` cannot write the project (a file exists, a path is not a directory)."""


PIPELINE_YAML = """\
# The @NAME@ pipeline: draft a text about the input, review it, revise it
# until the reviewer approves (at most 3 rounds), then publish the last draft.
#
# `writer` below is a *scripted* agent: canned answers, no API key, the same
# every run -- which is what makes the golden test deterministic.  The real
# agent is in agents.yaml; a later file's agent replaces one of the same name:
#
#   flujo run pipeline.yaml --input rivers                     # scripted, offline
#   flujo run pipeline.yaml --agents agents.yaml --input rivers --dry-run
#   flujo run pipeline.yaml --agents agents.yaml --input rivers  # the real LLM
#   flujo explain pipeline.yaml
apiVersion: flujo.dev/v1alpha1
kind: Agent
metadata:
  name: writer
spec:
  type: scripted
  description: Stand-in for the LLM writer of agents.yaml.
  responses:                        # in call order; the last one repeats
    - output: "Rivers run."
      usage: {inputTokens: 12, outputTokens: 3, costUsd: 0.00001}
    - output: "Rivers carry the rain of the hills down to the sea, and the sea remembers."
      usage: {inputTokens: 14, outputTokens: 17, costUsd: 0.00003}
---
apiVersion: flujo.dev/v1alpha1
kind: Agent
metadata:
  name: reviewer
spec:
  type: builtin
  builtin: classify
  description: Approves a draft that mentions what the sea remembers.
  config:
    rules:
      APPROVED: ["remembers"]
    default: REVISE
---
apiVersion: flujo.dev/v1alpha1
kind: Pipeline
metadata:
  name: @NAME@
spec:
  description: Draft a text about the input; revise it until the reviewer approves.
  usageLimits:
    maxCostUsd: 0.10                # the run fails rather than spend more
  steps:
    - name: refine
      loop:
        maxIterations: 3            # every loop has a bound
        exitWhen: "output == 'APPROVED'"
        onMaxIterations: succeed    # publish the last draft even if not approved
        steps:
          - name: draft
            agent: writer
            input: "Write two sentences about {{ input }}. Round {{ iteration }}."
            retry:
              maxAttempts: 3        # timeouts, 429s and 5xx are retried
          - name: review
            agent: reviewer
    - name: publish
      agent: builtin.strip
      input: "{{ steps.draft.output }}"
"""

AGENTS_YAML = """\
# The real agents of the @NAME@ pipeline.  Given after the pipeline file, an
# agent here replaces the pipeline file's agent of the same name:
#
#   export OPENAI_API_KEY=sk-...                        # any value for a local server
#   export OPENAI_BASE_URL=http://localhost:11434/v1    # omit for OpenAI itself
#   flujo run pipeline.yaml --agents agents.yaml --input rivers --dry-run   # free
#   flujo run pipeline.yaml --agents agents.yaml --input rivers
apiVersion: flujo.dev/v1alpha1
kind: Agent
metadata:
  name: writer
spec:
  type: openai
  endpoint: "${OPENAI_BASE_URL:-https://api.openai.com/v1}"
  model: "${OPENAI_MODEL:-gpt-4o-mini}"
  apiKey:
    env: OPENAI_API_KEY
  systemPrompt: >-
    You write short, concrete prose. When you revise, mention what the sea remembers.
  timeoutSeconds: 60
  pricing:
    inputPer1k: 0.00015
    outputPer1k: 0.0006
"""

TEST_PY = '''\
"""Golden test of the @NAME@ pipeline.

Runs pipeline.yaml with its scripted agents (canned answers, no network) and
compares the run's transcript with golden/@NAME@.txt, byte for byte.  After an
intended change, rewrite the golden and review the difference like code:

    FLUJO_UPDATE_GOLDENS=1 pytest -q
    git diff golden/
"""

from __future__ import annotations

import os
from pathlib import Path

from flujo import AgentRegistry, Flujo
from flujo.spec.loader import load_files
from flujo.transcript import transcript_of
from flujo.transcript.golden import unified_diff

ROOT = Path(__file__).resolve().parent.parent
PIPELINE = ROOT / "pipeline.yaml"
GOLDEN = ROOT / "golden" / "@NAME@.txt"
INPUT = "rivers"


def run_transcript() -> str:
    """Run the pipeline on INPUT and return its transcript."""
    docs = load_files([PIPELINE])
    docs.raise_for_problems()
    (manifest,) = docs.pipelines
    registry = AgentRegistry()
    for agent in docs.agents:
        registry.register_manifest(agent, source=PIPELINE.name)
    result = Flujo(manifest, agent_registry=registry).run(INPUT)
    assert result.success, f"run {result.status}: {result.outcome.message}"
    return transcript_of(result, name=manifest.metadata.name)


def test_transcript_matches_golden() -> None:
    actual = run_transcript()
    if os.environ.get("FLUJO_UPDATE_GOLDENS"):
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(actual, encoding="utf-8", newline="\\n")
    expected = GOLDEN.read_text(encoding="utf-8")
    assert actual == expected, (
        unified_diff(expected, actual, str(GOLDEN))
        + "If the change is intended: FLUJO_UPDATE_GOLDENS=1 pytest -q, then review git diff"
    )
'''

README_MD = """\
# @NAME@

A [Flujo](https://pypi.org/project/flujo/) pipeline, scaffolded by `flujo init`.

| file | what |
| --- | --- |
| `pipeline.yaml` | the pipeline; its `writer` is scripted (canned answers) |
| `agents.yaml` | the real `writer`: any OpenAI-compatible endpoint |
| `tests/test_pipeline.py` | the golden test: runs the pipeline, compares transcripts |
| `golden/@NAME@.txt` | the golden transcript: every step, output, usage, decision |

## Run

```bash
flujo run pipeline.yaml --input rivers        # offline: the scripted writer
flujo explain pipeline.yaml                   # the pipeline as a tree
flujo validate pipeline.yaml --agents agents.yaml
```

## Test

```bash
pip install pytest                            # once
pytest -q                                     # compares the transcript with the golden
FLUJO_UPDATE_GOLDENS=1 pytest -q              # after an intended change; then git diff golden/
```

## Use a real model

`agents.yaml` holds the real `writer`; given after the pipeline file, it
replaces the scripted one. A dry run first shows what would be called, for free:

```bash
flujo run pipeline.yaml --agents agents.yaml --input rivers --dry-run
export OPENAI_API_KEY=sk-...                  # any value for a local server
export OPENAI_BASE_URL=http://localhost:11434/v1   # e.g. Ollama; omit for OpenAI
flujo run pipeline.yaml --agents agents.yaml --input rivers
```

The run stops at `usageLimits.maxCostUsd` (pipeline.yaml) whatever the model does.
"""

_SLUG = re.compile(r"[^a-z0-9]+")


def project_name(directory: Path) -> str:
    """A pipeline name (a DNS label) from a directory name; ``hello`` if none fits."""
    slug = _SLUG.sub("-", directory.resolve().name.lower()).strip("-")[:63].strip("-")
    return slug or "hello"


@dataclass(frozen=True)
class _File:
    path: str
    text: str


def _golden(pipeline_file: Path, name: str) -> str:
    from flujo.runtime import Flujo
    from flujo.transcript import transcript_of

    docs = load_files([pipeline_file])
    docs.raise_for_problems()
    (manifest,) = docs.pipelines
    registry = AgentRegistry()
    for agent in docs.agents:
        registry.register_manifest(agent, source=pipeline_file.name)
    result = Flujo(manifest, agent_registry=registry).run("rivers")
    if not result.success:  # pragma: no cover - the template is tested
        raise InitError(f"the scaffolded pipeline failed: {result.outcome.message}")
    return transcript_of(result, name=name)


def init_project(directory: str | Path = ".", *, name: str | None = None) -> list[Path]:
    """Scaffold a project in ``directory`` (created if missing) and return the files
    written.  Raises :class:`InitError`, writing nothing, if any file exists."""
    root = Path(directory)
    name = name or project_name(root)
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", name):
        raise InitError(f"--name {name!r}: use lower-case letters, digits and '-' (a DNS label)")
    if root.exists() and not root.is_dir():
        raise InitError(f"{root} exists and is not a directory")
    files = [
        _File("pipeline.yaml", PIPELINE_YAML),
        _File("agents.yaml", AGENTS_YAML),
        _File("tests/test_pipeline.py", TEST_PY),
        _File(f"golden/{name}.txt", ""),
        _File("README.md", README_MD),
    ]
    for f in files:
        if (root / f.path).exists() or (root / f.path).is_symlink():
            raise InitError(
                f"{root / f.path} already exists; flujo init never overwrites files "
                "(choose another directory)"
            )
    written: list[Path] = []
    for f in files:
        path = root / f.path
        path.parent.mkdir(parents=True, exist_ok=True)
        text = f.text.replace("@NAME@", name)
        if f.path.startswith("golden/"):
            text = _golden(root / "pipeline.yaml", name)
        with path.open("x", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        written.append(path)
    return written


def init_command(
    directory: Annotated[
        Path, typer.Argument(help="Where to create the project (created if missing).")
    ] = Path("."),
    name: Annotated[
        str | None, typer.Option(help="Pipeline name (default: the directory's name).")
    ] = None,
) -> None:
    """Scaffold a project: a pipeline, its agents, a golden test and a README."""
    try:
        written = init_project(directory, name=name)
    except InitError as exc:
        _fail([str(exc)])
    except OSError as exc:
        _fail([f"{directory}: {exc.strerror or exc}"])
    shown = ", ".join(str(p.relative_to(directory)) for p in written)
    typer.echo(f"created {directory}: {shown}")
    typer.echo("next:")
    if Path(directory) != Path("."):
        typer.echo(f"  cd {directory}")
    typer.echo("  flujo run pipeline.yaml --input rivers")
    typer.echo("  pytest -q")


def register(app: typer.Typer) -> None:
    """Add ``init`` and ``explain`` to the ``flujo`` app."""
    app.command("init")(init_command)
    app.command("explain")(explain_command)
