"""``flujo runner``: the warm step runner a runner pod executes.

One process serves every step of one PipelineRun (the cluster's default
executor): the operator posts each launch document to it and reads the
result event from the answer.  See :mod:`flujo.runtime.runner_server`.
"""

from __future__ import annotations

import logging
from typing import Annotated

import typer

__all__ = ["register", "runner"]


def runner(
    host: Annotated[
        str, typer.Option(envvar="FLUJO_RUNNER_HOST", help="Address to listen on (the pod IP).")
    ] = "0.0.0.0",
    port: Annotated[
        int, typer.Option(envvar="FLUJO_RUNNER_PORT", help="Port to listen on.")
    ] = 8471,
    token: Annotated[
        str,
        typer.Option(
            envvar="FLUJO_RUNNER_TOKEN",
            show_default=False,
            help="Bearer token the operator sends (set it in the environment, not in argv).",
        ),
    ] = "",
    idle_seconds: Annotated[
        float,
        typer.Option(
            envvar="FLUJO_RUNNER_IDLE_SECONDS",
            help="Exit after this long with nothing running and no request (0: never).",
        ),
    ] = 600.0,
) -> None:
    """Serve step launches until the operator says the run ended (what a runner pod runs)."""
    from flujo.runtime.runner_server import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    serve(host, port, token=token, idle_seconds=idle_seconds)


def register(app: typer.Typer) -> None:
    """Add ``runner`` to the ``flujo`` app."""
    app.command()(runner)
