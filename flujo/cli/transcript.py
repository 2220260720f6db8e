"""``flujo transcript``: render a run's transcript; review golden transcripts.

Why these live apart from ``flujo run``: a transcript is rendered from an
event log, which may come from a run made long ago, on another machine or by
the operator, so ``show`` works on the JSON result file alone; and reviewing
goldens (``diff``) must be possible without rewriting them, which is what the
update mode of the test suite does.  ``write_transcript`` is the hook
``flujo run --transcript FILE`` calls.

Exit codes, as for ``flujo run``: 0 ok, 1 differences found, 2 bad input.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from flujo.cli.conventions import command_group, fail
from flujo.engine import Outcome
from flujo.runtime.runner import RunResult
from flujo.spec.limits import UsageLimits
from flujo.spec.loader import SpecError, load_files
from flujo.spec.pipeline import PipelineManifest, PipelineSpec
from flujo.transcript.render import render_transcript, transcript_of

__all__ = ["register", "transcript_app", "write_transcript"]

EXIT_OK, EXIT_DIFFERENT, EXIT_USAGE = 0, 1, 2
DEFAULT_SCENARIOS = Path("golden/scenarios.yaml")

transcript_app = command_group(
    "transcript", "Render run transcripts and review golden transcripts."
)


def register(app: typer.Typer) -> None:
    """Add ``transcript show`` and ``transcript diff`` to the ``flujo`` app."""
    app.add_typer(transcript_app, name="transcript")


def write_transcript(
    result: RunResult, path: str | Path, *, name: str | None = None, redactor: Any = None
) -> None:
    """Write the run's transcript to ``path`` (UTF-8, ``\\n`` line ends on every OS)."""
    text = transcript_of(result, name=name)
    if redactor is not None:
        text = redactor.redact(text)
    Path(path).write_text(text, encoding="utf-8", newline="\n")


def _fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    fail([message], code)


def _spec_from_file(path: Path, name: str | None) -> tuple[PipelineSpec, str]:
    docs = load_files([path])
    if docs.problems:
        _fail("; ".join(str(p) for p in docs.problems))
    found = [p for p in docs.pipelines if name is None or p.metadata.name == name]
    if len(found) != 1:
        names = ", ".join(p.metadata.name for p in docs.pipelines) or "none"
        _fail(f"{path}: choose one Pipeline with --pipeline-name (found: {names})")
    return found[0].spec, found[0].metadata.name


def _spec_from_result(data: Any) -> PipelineSpec:
    if isinstance(data, dict) and data.get("kind") == "Pipeline":
        return PipelineManifest.model_validate(data).spec
    return PipelineSpec.model_validate(data)


def _recorded(data: dict[str, Any]) -> Outcome | None:
    """The outcome the result file reports, to check the replay against."""
    try:
        return Outcome.model_validate(
            {
                "status": data["status"],
                "output": data.get("output"),
                "reason": data.get("reason"),
                "error_class": data.get("errorClass"),
                "message": data.get("message"),
                "path": data.get("failedPath"),
                "usage": data.get("usage") or {},
            }
        )
    except (KeyError, ValueError):
        return None


@transcript_app.command()
def show(
    result: Annotated[Path, typer.Argument(help="A JSON result written by 'flujo run --json'.")],
    pipeline: Annotated[
        Path | None,
        typer.Option(help="The pipeline file, if the result does not embed the pipeline."),
    ] = None,
    pipeline_name: Annotated[
        str | None, typer.Option(help="Which Pipeline of --pipeline, if several.")
    ] = None,
) -> None:
    """Print the transcript of a run from its JSON result (events + pipeline)."""
    try:
        data = json.loads(result.read_text(encoding="utf-8"))
    except OSError as exc:
        _fail(f"{result}: cannot read: {exc.strerror or exc}")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        _fail(f"{result}: not a JSON result: {exc}")
    if not isinstance(data, dict) or not isinstance(data.get("events"), list):
        _fail(f"{result}: no \"events\" list: write the result with 'flujo run --json'")
    name = pipeline_name
    try:
        if pipeline is not None:
            spec, name = _spec_from_file(pipeline, pipeline_name)
        elif "pipeline" in data:
            spec = _spec_from_result(data["pipeline"])
            name = pipeline_name or data.get("pipelineName")
        else:
            _fail(f"{result}: the result does not embed its pipeline; pass --pipeline FILE")
        limits = UsageLimits.model_validate(data.get("limits") or {})
        caps = data.get("agentCaps") or None
        text = render_transcript(
            spec, data["events"], limits, agent_caps=caps, name=name, recorded=_recorded(data)
        )
    except ValueError as exc:  # pydantic's ValidationError included
        _fail(f"{result}: {str(exc).splitlines()[0]}")
    sys.stdout.write(text)


@transcript_app.command()
def diff(
    scenarios: Annotated[
        Path, typer.Argument(help="The scenario file; goldens are next to it.")
    ] = DEFAULT_SCENARIOS,
) -> None:
    """Review goldens: run every scenario and show what would change. Writes nothing.

    Exit 0 when every golden is up to date, 1 otherwise.  Rewrite them with
    'pytest tests/test_golden.py --update-goldens', then review 'git diff golden/'.
    """
    from flujo.transcript.golden import compare, load_scenarios, stale_goldens

    try:
        loaded = load_scenarios(scenarios)
    except SpecError as exc:
        _fail(str(exc))
    base = scenarios.parent
    differing = 0
    for scenario in loaded:
        try:
            comparison = compare(scenario, base)
        except SpecError as exc:
            typer.echo(f"scenario {scenario.name}: cannot run: {exc}")
            differing += 1
            continue
        if not comparison.ok:
            differing += 1
            typer.echo(comparison.report())
    stale = stale_goldens(loaded, base)
    for path in stale:
        typer.echo(f"stale golden {path}: no scenario writes it; delete it")
    if differing or stale:
        typer.echo(
            f"{differing} of {len(loaded)} goldens differ, {len(stale)} stale "
            "(update: pytest tests/test_golden.py --update-goldens)",
            err=True,
        )
        raise typer.Exit(EXIT_DIFFERENT)
    typer.echo(f"ok: {len(loaded)} goldens up to date ({scenarios})")


if __name__ == "__main__":  # pragma: no cover - `python -m flujo.cli.transcript`
    transcript_app()
