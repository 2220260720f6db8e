"""``flujo ui``: serve the web view of runs on this machine (127.0.0.1 unless told otherwise).

The view lists the run store's embedded runs and, with ``--cluster``, the
PipelineRuns of the chosen namespaces read with the user's own ``kubectl``;
a run's page shows its pipeline as a graph updated live, each step's input,
output, usage and transcript lines (redacted as transcripts are), and the
actions the CLI has (cancel a run). Whoever runs it acts with their own
files and kubeconfig, nothing more. See ``docs/ui.md``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from flujo.cli.conventions import fail

__all__ = ["register", "ui"]

DEFAULT_PORT = 8765


def ui(
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="Port to listen on (0: any free port).")
    ] = DEFAULT_PORT,
    host: Annotated[
        str,
        typer.Option(help="Address to listen on; another than loopback lets others act as you."),
    ] = "127.0.0.1",
    store: Annotated[
        str | None,
        typer.Option(
            "--store",
            envvar="FLUJO_STORE",
            help="The run store (default .flujo/runs.db).",
            show_default=False,
        ),
    ] = None,
    cluster: Annotated[
        bool, typer.Option("--cluster", help="Show PipelineRuns too, read with kubectl.")
    ] = False,
    namespace: Annotated[
        list[str] | None,
        typer.Option(
            "--namespace",
            "-n",
            help="A namespace of PipelineRuns (repeatable; default: the kubeconfig's).",
        ),
    ] = None,
    kubectl: Annotated[str, typer.Option(help="The kubectl to run.")] = "kubectl",
) -> None:
    """Serve a web view of runs: the list, a run's graph live, its steps, approvals."""
    from flujo.ui import missing_dependencies

    missing = missing_dependencies()
    if missing:
        fail([f"flujo ui needs {', '.join(missing)}: pip install 'flujo[ui]'"])
    if namespace and not cluster:
        fail(["--namespace is for PipelineRuns: add --cluster"])
    from flujo.runtime.store import StoreError
    from flujo.ui.serve import is_loopback, open_sources, serve

    if not is_loopback(host):
        typer.echo(f"warning: serving on {host}: anyone who reaches it can act as you", err=True)
    try:
        sources = open_sources(store, cluster=cluster, namespaces=namespace or [], kubectl=kubectl)
    except StoreError as exc:
        fail([str(exc)])
    try:
        serve(sources, host, port, announce=lambda line: typer.echo(line))
    except OSError as exc:
        fail([f"{host}:{port}: {exc.strerror or exc}"])
    except KeyboardInterrupt:
        pass


def register(app: typer.Typer) -> None:
    """Add ``ui`` to the ``flujo`` app."""
    app.command("ui")(ui)
