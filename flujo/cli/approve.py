"""``flujo approve`` / ``flujo reject``: answer a stored run that waits for a person.

The answer is kept in the run store (with who gave it: ``--by``, else the OS
user) and the run goes on: in this process when nobody holds the run, else
in the process that does (it looks once a second).  An input that does not
fit the step's ``approval.schema`` is refused, one line, and the run keeps
waiting.  Exit codes as for ``flujo run``.
"""

from __future__ import annotations

import getpass
import json
from typing import Annotated, Any

import typer

from flujo.cli.conventions import fail
from flujo.cli.runs import RunId, StoreOption, finish, open_runs, record_of, runner_for
from flujo.runtime.store import StoreError

__all__ = ["approve", "register", "reject"]

StepOption = Annotated[
    str | None,
    typer.Option(help="The approval step (name or path), when the run waits on several."),
]
ByOption = Annotated[
    str | None, typer.Option(help="Who answers (default: the user running the command).")
]


def _user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no user name in this environment
        return "unknown"


def _answer(
    run_id: str,
    store: str | None,
    *,
    approved: bool,
    step: str | None,
    input: Any,
    reason: str | None,
    by: str | None,
    as_json: bool,
) -> None:
    with open_runs(store) as runs:
        record = record_of(runs, run_id)
        runner = runner_for(runs, record)
        try:
            path = runner.answer(
                record.id,
                approved=approved,
                step=step,
                input=input,
                reason=reason,
                by=by or _user(),
            )
            if runs.owned_elsewhere(record.id):
                typer.echo(f"run {record.id}: answer to {path} recorded; its process applies it")
                return
            result = runner.resume(record.id)
        except StoreError as exc:
            fail([str(exc)])
        with result:
            finish(result, record, as_json, None, store)


def approve(
    run_id: RunId,
    store: StoreOption = None,
    input: Annotated[
        str | None, typer.Option("--input", "-i", help="The answer's input, as text.")
    ] = None,
    input_json: Annotated[
        str | None, typer.Option(help="The answer's input, as a JSON value.")
    ] = None,
    step: StepOption = None,
    by: ByOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON result.")] = False,
) -> None:
    """Approve the step a run waits on (its input, or --input, goes on), and go on."""
    if input is not None and input_json is not None:
        fail(["give only one of --input, --input-json"])
    value: Any = input
    if input_json is not None:
        try:
            value = json.loads(input_json)
        except ValueError as exc:
            fail([f"--input-json: not JSON: {exc}"])
    _answer(
        run_id, store, approved=True, step=step, input=value, reason=None, by=by, as_json=as_json
    )


def reject(
    run_id: RunId,
    reason: Annotated[str, typer.Option(help="Why: the step's failure message.")],
    store: StoreOption = None,
    step: StepOption = None,
    by: ByOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON result.")] = False,
) -> None:
    """Reject the step a run waits on: it fails (its fallback runs, if it names one)."""
    _answer(
        run_id, store, approved=False, step=step, input=None, reason=reason, by=by, as_json=as_json
    )


def register(app: typer.Typer) -> None:
    """Add ``approve`` and ``reject`` to the ``flujo`` app."""
    app.command()(approve)
    app.command()(reject)
