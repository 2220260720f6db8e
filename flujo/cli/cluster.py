"""Commands the cluster side runs: ``flujo step-run`` and ``flujo crds``.

``step-run`` is what a step-runner pod executes: it reads one launch document,
runs that one step and leaves the result envelope in the termination log for
the operator.  ``crds`` writes the CustomResourceDefinitions generated from
the spec models (the chart's copy too), or with ``--check`` only says whether
they are out of date.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from flujo.cli.conventions import EXIT_FAILED, fail
from flujo.engine import StepFailed

__all__ = ["crds", "register", "step_run"]


def step_run(
    launch: Annotated[
        Path, typer.Option(envvar="FLUJO_LAUNCH_FILE", help="The launch document (JSON).")
    ] = Path("/etc/flujo/launch.json"),
    termination_log: Annotated[
        Path, typer.Option(envvar="FLUJO_TERMINATION_LOG", help="Where the envelope goes.")
    ] = Path("/dev/termination-log"),
) -> None:
    """Execute one step launch (what a step-runner pod runs)."""
    from pydantic import ValidationError

    from flujo.runtime.envelope import encode_result
    from flujo.runtime.step_runner import EXIT_FAILED_STEP, run_document

    try:
        from flujo.observability.tracing import traced_step_run

        text = launch.read_text(encoding="utf-8")
        event = traced_step_run(text, run_document)
    except OSError as exc:
        fail([f"{launch}: cannot read the launch document: {exc.strerror or exc}"])
    except (ValueError, ValidationError) as exc:
        fail([f"{launch}: not a launch document: {str(exc).splitlines()[0]}"])
    message, log = encode_result(event)
    sys.stdout.write(log)
    sys.stdout.flush()
    try:
        termination_log.write_text(message, encoding="utf-8")
    except OSError as exc:
        typer.echo(f"warning: cannot write {termination_log}: {exc.strerror or exc}", err=True)
    if isinstance(event, StepFailed):
        raise typer.Exit(EXIT_FAILED_STEP)


def crds(
    output_dir: Annotated[
        list[Path] | None,
        typer.Option(help="Where to write the CRD files (repeatable).", show_default=False),
    ] = None,
    check: Annotated[
        bool, typer.Option(help="Write nothing; exit 1 if the files are out of date.")
    ] = False,
) -> None:
    """Generate the CustomResourceDefinitions from the spec models."""
    from flujo.spec.crd import render_crds

    targets = output_dir or [Path("crds"), Path("charts/flujo/files/crds")]
    stale = []
    for directory in targets:
        for name, text in render_crds().items():
            path = directory / name
            current = path.read_text(encoding="utf-8") if path.exists() else None
            if current == text:
                continue
            stale.append(str(path))
            if not check:
                directory.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
    if check and stale:
        fail([f"{p} is out of date; run 'flujo crds'" for p in stale], EXIT_FAILED)
    where = ", ".join(str(t) for t in targets)
    typer.echo(f"{'checked' if check else 'wrote'} {where} ({len(stale)} changed)")


def register(app: typer.Typer) -> None:
    """Add ``step-run`` and ``crds`` to the ``flujo`` app."""
    app.command("step-run")(step_run)
    app.command()(crds)
