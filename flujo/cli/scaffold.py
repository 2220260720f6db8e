"""``flujo init``: scaffold a project that runs and tests offline.

It writes a pipeline with a scripted agent (:data:`PIPELINE_YAML`), an agents
file with the real (openai) agent (:data:`AGENTS_YAML`), a pytest golden test
(:data:`TEST_PY`; its ``from flujo import …`` is text of the generated file,
not an import of this one), the golden transcript, made by running the
pipeline, and a README (:data:`README_MD`).  It never overwrites a file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from flujo.agents.registry import AgentRegistry
from flujo.cli.conventions import fail
from flujo.spec.loader import load_files

__all__ = [
    "AGENTS_YAML",
    "PIPELINE_YAML",
    "README_MD",
    "TEST_PY",
    "InitError",
    "init_command",
    "init_project",
    "project_name",
    "register",
]


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
        fail([str(exc)])
    except OSError as exc:
        fail([f"{directory}: {exc.strerror or exc}"])
    shown = ", ".join(str(p.relative_to(directory)) for p in written)
    typer.echo(f"created {directory}: {shown}")
    typer.echo("next:")
    if Path(directory) != Path("."):
        typer.echo(f"  cd {directory}")
    typer.echo("  flujo run pipeline.yaml --input rivers")
    typer.echo("  pytest -q")


def register(app: typer.Typer) -> None:
    """Add ``init`` to the ``flujo`` app."""
    app.command("init")(init_command)
