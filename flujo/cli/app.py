"""The ``flujo`` command line: the Typer app, assembled from one module per command group.

Each command module holds its commands and a ``register(app)`` that adds
them; :data:`REGISTRATIONS` lists them in the order ``flujo --help`` shows
them.  Adding a command group is one new module in ``flujo/cli/`` (its
commands, or a sub-app made with
:func:`~flujo.cli.conventions.command_group`, plus ``register``) and one line
here.

Exit codes: 0 success, 1 the pipeline ran and failed, 2 bad input or usage.
Every error is one line on stderr (``error: …``); ``--debug`` adds the
traceback of unexpected exceptions.
"""

from __future__ import annotations

from collections.abc import Callable

import typer

from flujo.cli import (
    about,
    approve,
    cluster,
    explain,
    run,
    runs,
    scaffold,
    transcript,
    ui,
    validate,
)
from flujo.cli.conventions import command_group
from flujo.cli.run import _json_chunks as _json_chunks  # tests/test_spill.py
from flujo.cli.runner import register as register_runner

__all__ = ["REGISTRATIONS", "app", "main"]

app = command_group("flujo", "Run AI-agent pipelines embedded, validate them, and more.")

REGISTRATIONS: tuple[Callable[[typer.Typer], None], ...] = (
    run.register,  # flujo run
    runs.register,  # flujo runs list|show|resume|cancel, flujo resume
    approve.register,  # flujo approve, flujo reject
    validate.register,  # flujo validate
    cluster.register,  # flujo step-run, flujo crds
    register_runner,  # flujo runner
    about.register,  # flujo version
    scaffold.register,  # flujo init
    explain.register,  # flujo explain
    transcript.register,  # flujo transcript show|diff
    ui.register,  # flujo ui
)
"""Every command group's ``register``, in the order ``flujo --help`` lists the commands."""

for _register in REGISTRATIONS:
    _register(app)


def main() -> None:
    app()
