"""Developer experience: ``flujo init``, ``flujo explain``, dry runs, error excerpts.

These help a person write a pipeline rather than run one.  Each has its own
module now; this one keeps the names importable from ``flujo.cli.devx``:

- :mod:`flujo.cli.scaffold`: ``flujo init [DIR]``, a project that runs and
  tests offline (pipeline, agents, golden test and transcript, README).
- :mod:`flujo.cli.explain`: ``flujo explain FILE``, the pipeline as a tree.
- :mod:`flujo.cli.dry_run`: the stand-in agents of ``flujo run --dry-run`` and
  what it says before and after the run.
- :mod:`flujo.cli.problems`: the YAML excerpt and hint under an error, what
  ``flujo validate`` prints.

``register(app)`` adds ``init`` and ``explain`` to a typer app.
"""

from __future__ import annotations

import typer

from flujo.cli import explain, scaffold
from flujo.cli.conventions import EXIT_USAGE
from flujo.cli.dry_run import (
    DRY_RUN_MARK,
    PAID_AGENT_TYPES,
    describe_dry_run,
    dry_run_registry,
    dry_run_summary,
    placeholder,
)
from flujo.cli.explain import explain_command, explain_text, explain_tree
from flujo.cli.problems import describe_problem, excerpt, hint_for
from flujo.cli.scaffold import (
    AGENTS_YAML,
    PIPELINE_YAML,
    README_MD,
    TEST_PY,
    InitError,
    init_command,
    init_project,
    project_name,
)

__all__ = [
    "AGENTS_YAML",
    "DRY_RUN_MARK",
    "EXIT_USAGE",
    "PAID_AGENT_TYPES",
    "PIPELINE_YAML",
    "README_MD",
    "TEST_PY",
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


def register(app: typer.Typer) -> None:
    """Add ``init`` and ``explain`` to the ``flujo`` app."""
    scaffold.register(app)
    explain.register(app)
