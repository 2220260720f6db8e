"""``flujo version``: what the ``flujo`` command says about itself."""

from __future__ import annotations

import typer

__all__ = ["register", "version"]


def version() -> None:
    """Print Flujo's version."""
    from flujo.version import __version__

    typer.echo(__version__)


def register(app: typer.Typer) -> None:
    """Add ``version`` to the ``flujo`` app."""
    app.command()(version)
