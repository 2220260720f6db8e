"""What ``flujo run`` and ``flujo resume`` say when a run stops to wait for a person."""

from __future__ import annotations

import typer

from flujo.runtime import RunResult

__all__ = ["WAITING", "report_waiting"]

WAITING = "awaiting approval"


def report_waiting(result: RunResult, store: str | None = None) -> bool:
    """Print (on stderr) what the run waits on and how to answer; ``False`` if it does not wait."""
    if result.status != WAITING:
        return False
    where = f" --store {store}" if store else ""
    run_id = result.run_id or "?"
    for path in sorted(result.state.awaiting):
        typer.echo(
            f"run {run_id} awaits approval of {path}: {result.state.awaiting[path]}", err=True
        )
    typer.echo(
        f"  approve: flujo approve {run_id}{where} [--input TEXT | --input-json VALUE]\n"
        f"  reject:  flujo reject {run_id}{where} --reason TEXT",
        err=True,
    )
    return True
