"""``flujo runs list|show|resume|cancel`` and ``flujo resume``: the run store from the shell.

Every embedded run started by ``flujo run`` is journaled in the run store
(``.flujo/runs.db``, ``--store PATH`` or ``$FLUJO_STORE``; see
:mod:`flujo.runtime.store`).  These commands read it, finish a run that
stopped (a crash, a reboot, a SIGKILL) without calling again any step whose
result was recorded, and cancel runs, live in another process or stopped.

A run is resumed with what the store kept when it started: its pipeline, its
limits and the Agent manifests it was run with (the files may have changed
since), under the security policy of the environment now.

Exit codes, as for ``flujo run``: 0 success, 1 the run failed or was
cancelled, 2 bad input (an unknown run, a store that is not one).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from flujo.agents.registry import AgentRegistry
from flujo.cli.conventions import EXIT_FAILED, command_group, fail
from flujo.cli.run import _print_output
from flujo.cli.transcript import write_transcript
from flujo.cli.validate import policy
from flujo.cli.waiting import report_waiting
from flujo.engine import RunState, advance, new_run
from flujo.runtime import Flujo, PipelineValidationError, RunResult
from flujo.runtime.store import RunRecord, RunStore, StoreError, open_store
from flujo.security.redaction import Redactor
from flujo.spec.agent import AgentManifest
from flujo.spec.limits import UsageLimits
from flujo.spec.pipeline import PipelineManifest
from flujo.transcript import render_transcript

__all__ = [
    "RunId",
    "StoreOption",
    "cancel",
    "finish",
    "list_runs",
    "open_runs",
    "record_of",
    "register",
    "resume",
    "runner_for",
    "runs_app",
    "show",
]

CANCEL_WAIT_SECONDS = 60.0
"""How long ``flujo runs cancel`` waits for a live run to stop (it checks every second)."""

runs_app = command_group("runs", "List, inspect, resume and cancel the runs of the run store.")

StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        envvar="FLUJO_STORE",
        help="The run store (default .flujo/runs.db).",
        show_default=False,
    ),
]
RunId = Annotated[str, typer.Argument(help="The run's id (or the start of it).")]


def open_runs(target: str | None) -> RunStore:
    try:
        store = open_store(target)
    except StoreError as exc:
        fail([str(exc)])
    if store is None:
        fail(["--store none keeps no runs: choose a store file"])
    return store


def record_of(store: RunStore, given: str) -> RunRecord:
    try:
        return store.resolve(given)
    except StoreError as exc:
        fail([str(exc)])


def status_of(store: RunStore, record: RunRecord) -> str:
    """The status to show: a run nobody executes any more is ``interrupted``."""
    if record.status == "running" and not store.owned_elsewhere(record.id):
        return "interrupted"
    return record.status


def _when(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _cost(usage: dict[str, Any]) -> str:
    return f"${float(usage.get('costUsd', 0.0)):.4f}"


def _console() -> Any:
    from rich.console import Console

    console = Console(highlight=False)
    if not console.is_terminal:  # a pipe or a file: do not cut ids to 80 columns
        console = Console(highlight=False, width=200)
    return console


@runs_app.command("list")
def list_runs(
    store: StoreOption = None,
    status: Annotated[str | None, typer.Option(help="Only runs with this status.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many runs, newest first.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")] = False,
) -> None:
    """The runs of the store, newest first."""
    from rich.table import Table

    with open_runs(store) as runs:
        try:
            wanted = None if status == "interrupted" else status
            records = [(r, status_of(runs, r)) for r in runs.list(limit=limit, status=wanted)]
        except StoreError as exc:
            fail([str(exc)])
    if status is not None:
        records = [(r, s) for r, s in records if s == status]
    if as_json:
        for r, shown in records:
            typer.echo(json.dumps(_summary(r, shown), ensure_ascii=False))
        return
    table = Table("ID", "PIPELINE", "STATUS", "EVENTS", "LAUNCHES", "COST", "STARTED", "UPDATED")
    for r, shown in records:
        table.add_row(
            r.id,
            r.pipeline,
            shown,
            str(r.events),
            str(r.launches),
            _cost(r.usage),
            _when(r.created),
            _when(r.updated),
        )
    _console().print(table)


def _summary(record: RunRecord, shown: str) -> dict[str, Any]:
    return {
        "id": record.id,
        "pipeline": record.pipeline,
        "status": shown,
        "events": record.events,
        "launches": record.launches,
        "usage": record.usage,
        "outcome": record.outcome,
        "created": _when(record.created),
        "updated": _when(record.updated),
    }


def _replayed(store: RunStore, record: RunRecord, manifest: PipelineManifest) -> RunState:
    """The run's state from its journal: the machine is pure, nothing is called."""
    limits = record.definition.get("limits")
    state = new_run(manifest.spec, UsageLimits.model_validate(limits) if limits else None)
    for event, _ in store.entries(record.id):
        state, _commands = advance(state, event)
    return state


def _manifest(record: RunRecord) -> PipelineManifest:
    try:
        return record.manifest()
    except ValueError as exc:
        fail([str(exc)])


@runs_app.command()
def show(
    run_id: RunId,
    store: StoreOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run as JSON.")] = False,
    transcript: Annotated[
        bool, typer.Option("--transcript", help="Print the run's transcript.")
    ] = False,
) -> None:
    """One run: status, totals and every step, replayed from its journal."""
    from rich.table import Table

    with open_runs(store) as runs:
        record = record_of(runs, run_id)
        manifest = _manifest(record)
        try:
            shown = status_of(runs, record)
            if transcript:
                limits = record.definition.get("limits")
                text = render_transcript(
                    manifest.spec,
                    (event for event, _ in runs.entries(record.id)),
                    UsageLimits.model_validate(limits) if limits else None,
                    name=record.pipeline,
                )
                typer.echo(Redactor().add_environment().redact(text), nl=False)
                return
            state = _replayed(runs, record, manifest)
        except StoreError as exc:
            fail([str(exc)])
    if as_json:
        data = _summary(record, shown)
        data["steps"] = {
            path: {"kind": s.kind, "phase": s.phase, "agent": s.agent, "attempts": s.attempt}
            for path, s in state.steps.items()
        }
        typer.echo(json.dumps(data, ensure_ascii=False, indent=2, default=str))
        return
    console = _console()
    console.print(f"run {record.id}  pipeline {record.pipeline}  status {shown}")
    console.print(
        f"started {_when(record.created)}  updated {_when(record.updated)}  "
        f"events {record.events}  launches {record.launches}  cost {_cost(record.usage)}"
    )
    if record.outcome and record.outcome.get("message"):
        console.print(f"message: {record.outcome['message']}")
    table = Table("STEP", "KIND", "PHASE", "AGENT", "ATTEMPTS", "TOKENS", "COST")
    for path, s in state.steps.items():
        table.add_row(
            path,
            s.kind,
            s.phase,
            s.agent or "",
            str(s.attempt) if s.kind == "agent" else "",
            str(s.usage.total_tokens),
            f"${s.usage.cost_usd:.4f}",
        )
    console.print(table)


def runner_for(store: RunStore, record: RunRecord) -> Flujo:
    """A runtime for the stored run: its pipeline and agents as they were when it started."""
    registry = AgentRegistry()
    try:
        for data in record.definition.get("agents") or []:
            registry.register_manifest(
                AgentManifest.model_validate(data), source=f"run {record.id}"
            )
    except ValueError as exc:
        fail([f"run {record.id}: a stored agent cannot be read: {str(exc).splitlines()[0]}"])
    try:
        return Flujo(
            _manifest(record),
            agent_registry=registry,
            source=f"run {record.id}",
            security_policy=policy(),
            store=store,
        )
    except PipelineValidationError as exc:
        fail([f"run {record.id}: {p}" for p in exc.problems])


def finish(
    result: RunResult,
    record: RunRecord,
    as_json: bool,
    transcript: str | None,
    store: str | None = None,
) -> None:
    """Print a resumed run's result as ``flujo run`` does (or what it waits on)."""
    redactor = Redactor()
    for data in record.definition.get("agents") or []:
        redactor.add_agent_specs([AgentManifest.model_validate(data).spec])
    redactor.add_environment()
    if transcript is not None:
        try:
            write_transcript(result, transcript, name=record.pipeline, redactor=redactor)
        except OSError as exc:
            fail([f"--transcript {transcript}: {exc.strerror or exc}"])
    _print_output(result, as_json, record.pipeline, redactor)
    if report_waiting(result, store):
        return
    if not result.success:
        message = redactor.redact(str(result.outcome.message))
        typer.echo(f"error: run {result.status}: {message}", err=True)
        raise typer.Exit(EXIT_FAILED)


@runs_app.command("resume")
def resume(
    run_id: RunId,
    store: StoreOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON result with per-step outcomes and usage.")
    ] = False,
    transcript: Annotated[
        str | None, typer.Option(help="Write the run's transcript to this file.")
    ] = None,
) -> None:
    """Finish a run that stopped: recorded steps are not called again."""
    with open_runs(store) as runs:
        record = record_of(runs, run_id)
        runner = runner_for(runs, record)
        try:
            result = runner.resume(record.id)
        except StoreError as exc:
            fail([str(exc)])
        except KeyboardInterrupt:
            fail(["interrupted"], EXIT_FAILED)
        with result:
            finish(result, record, as_json, transcript, store)


@runs_app.command()
def cancel(
    run_id: RunId,
    store: StoreOption = None,
    reason: Annotated[str, typer.Option(help="Why; shown in the run's outcome.")] = (
        "cancelled with flujo runs cancel"
    ),
) -> None:
    """Cancel a run: a live one stops within a second, a stopped one without calling anything."""
    with open_runs(store) as runs:
        record = record_of(runs, run_id)
        if record.finished:
            fail([f"run {record.id} has {record.status} already"])
        try:
            if runs.owned_elsewhere(record.id):
                runs.request_cancel(record.id, reason)
                deadline = time.monotonic() + CANCEL_WAIT_SECONDS
                while runs.owned_elsewhere(record.id) and time.monotonic() < deadline:
                    time.sleep(0.1)
                now = runs.get(record.id)
                if now is not None and now.finished:
                    typer.echo(f"run {record.id} {now.status}")
                    return
                if runs.owned_elsewhere(record.id):
                    fail([f"run {record.id} did not stop within {CANCEL_WAIT_SECONDS:g}s"])
            result = runner_for(runs, record).resume(record.id, cancel=reason)
        except StoreError as exc:
            fail([str(exc)])
    typer.echo(f"run {record.id} {result.status}")


def register(app: typer.Typer) -> None:
    """Add ``runs`` (and its shortcut ``resume``) to the ``flujo`` app."""
    app.add_typer(runs_app, name="runs")
    app.command("resume", help="Finish a run that stopped (same as flujo runs resume).")(resume)
