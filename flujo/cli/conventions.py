"""What every command of ``flujo`` shares: exit codes, one-line errors, a group's Typer app.

Exit codes: 0 success, 1 the pipeline ran and failed (or, for checks,
something is out of date), 2 bad input or usage.  Every error is one line on
stderr, ``error: …``, printed by :func:`fail`.

A command module (``run``, ``validate``, ``explain``, …) holds its commands
and a ``register(app)`` that adds them to the ``flujo`` app;
:mod:`flujo.cli.app` lists the registrations.  A module with several
subcommands makes its own app with :func:`command_group`, so that
``flujo NAME --help`` looks like every other group.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NoReturn

import typer

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "UsageProblem", "command_group", "fail"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageProblem(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


def fail(lines: Iterable[str], code: int = EXIT_USAGE) -> NoReturn:
    """Print each of ``lines`` as ``error: LINE`` on stderr and exit with ``code``."""
    for line in lines:
        typer.echo(f"error: {line}", err=True)
    raise typer.Exit(code)


def command_group(name: str, help: str) -> typer.Typer:
    """A Typer app for a group of subcommands (``flujo NAME …``), or for ``flujo`` itself."""
    return typer.Typer(
        name=name,
        help=help,
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
    )
