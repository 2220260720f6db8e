"""``flujo run`` / ``flujo validate``: thin commands over the library.

Exit codes: 0 success, 1 the pipeline ran and failed, 2 bad input or usage.
Every error is one line on stderr (``error: …``); ``--debug`` adds the
traceback of unexpected exceptions.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from flujo.agents.registry import AgentRegistry
from flujo.domain.validation import check_agents, check_pipeline
from flujo.engine import Event, RunState, StepFailed, StepSucceeded
from flujo.runtime import Flujo, RunResult
from flujo.security.policy import (
    PolicyError,
    PolicyViolation,
    SecurityPolicy,
    check_pipeline_policy,
    parse_input,
    policy_from_env,
)
from flujo.security.redaction import Redactor, install_log_redaction
from flujo.spec.limits import UsageLimits
from flujo.spec.loader import Documents, Problem, load_files
from flujo.spec.pipeline import PipelineManifest

__all__ = ["app", "main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
MAX_INPUT_BYTES = 1 << 20

app = typer.Typer(
    name="flujo",
    help="Run AI-agent pipelines embedded, validate them, and more.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


class UsageProblem(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


def _fail(lines: list[str], code: int = EXIT_USAGE) -> NoReturn:
    for line in lines:
        typer.echo(f"error: {line}", err=True)
    raise typer.Exit(code)


def _shown(problem: Problem, detail: bool) -> str:
    if not detail:
        return str(problem)
    from flujo.cli.devx import describe_problem

    return describe_problem(problem)


def _policy() -> SecurityPolicy:
    try:
        return policy_from_env().policy()
    except PolicyError as exc:
        _fail([str(exc)])


def _load(
    file: Path, agents: list[Path] | None, pipeline: str | None, *, detail: bool = False
) -> tuple[Documents, PipelineManifest, AgentRegistry]:
    policy = _policy()
    docs = load_files([file, *(agents or [])])
    if docs.problems:
        _fail([_shown(p, detail) for p in docs.problems])
    candidates = docs.pipelines
    if pipeline is not None:
        candidates = [p for p in candidates if p.metadata.name == pipeline]
    if not candidates:
        names = ", ".join(p.metadata.name for p in docs.pipelines) or "none"
        what = f"no Pipeline named {pipeline!r}" if pipeline else "no Pipeline document"
        _fail([f"{file}: {what} (pipelines found: {names})"])
    if len(candidates) > 1:
        names = ", ".join(p.metadata.name for p in candidates)
        _fail([f"{file}: several pipelines ({names}); choose one with --pipeline NAME"])
    manifest = candidates[0]
    registry = AgentRegistry()
    for agent in docs.agents:
        source, _ = docs.locators.get(id(agent), (str(file), None))
        registry.register_manifest(agent, source=source)
    findings = check_pipeline(manifest.spec) + check_agents(manifest.spec, registry.names())
    findings += check_pipeline_policy(
        manifest.spec, {e.name: e.spec for e in registry.list()}, policy
    )
    if findings:
        _fail([_shown(docs.locate(manifest, f.loc, f.message), detail) for f in findings])
    return docs, manifest, registry


def _read_input(text: str | None, json_text: str | None, file: Path | None) -> Any:
    given = [x is not None for x in (text, json_text, file)]
    if sum(given) > 1:
        raise UsageProblem("give only one of --input, --input-json, --input-file")
    policy = _policy()
    try:
        if json_text is not None:
            return parse_input(json_text, policy, as_json=True, source="--input-json")
        if file is not None:
            try:
                with file.open("rb") as handle:
                    raw = handle.read(policy.max_input_bytes + 1)
            except OSError as exc:
                raise UsageProblem(f"--input-file {file}: {exc.strerror or exc}") from None
            return parse_input(
                raw, policy, as_json=file.suffix == ".json", source=f"--input-file {file}"
            )
        if text is not None:
            return parse_input(text, policy, source="--input")
    except PolicyViolation as exc:
        raise UsageProblem(str(exc)) from None
    return text


def _progress(console: Any) -> Any:
    def hook(event: Event, state: RunState) -> None:
        if isinstance(event, StepSucceeded):
            console.print(f"[green]✓[/] {event.path}", highlight=False)
        elif isinstance(event, StepFailed):
            console.print(
                f"[red]✗[/] {event.path} ({event.error_class}): {event.message}", highlight=False
            )

    return hook


def _audit(
    target: str | None, manifest: Any, registry: AgentRegistry, redactor: Redactor
) -> list[Any]:
    if not target:
        return []
    from flujo.security.audit import AuditObserver, open_audit_log

    log = open_audit_log(target, redactor=redactor)
    specs = {e.name: e.spec for e in registry.list()}
    return [AuditObserver(log, manifest.metadata.name, agents=specs)]


def _json_chunks(data: dict[str, Any], streamed: dict[str, Iterable[Any]]) -> Iterator[str]:
    """``json.dumps(data, ensure_ascii=False, indent=2, default=str)``, piece by piece.

    The lists named in ``streamed`` replace those keys' values and are read one
    item at a time, so a long event log is never held (as objects or as text)
    all at once.
    """

    def text(value: Any, level: int) -> str:
        # Raw newlines only separate JSON tokens (a string's are escaped).
        dumped = json.dumps(value, ensure_ascii=False, indent=2, default=str)
        return dumped.replace("\n", "\n" + "  " * level)

    if not data:
        yield "{}"
        return
    for i, (key, value) in enumerate(data.items()):
        yield ("," if i else "{") + "\n  " + json.dumps(key, ensure_ascii=False) + ": "
        if key not in streamed:
            yield text(value, 1)
            continue
        empty = True
        for item in streamed[key]:
            yield ("[" if empty else ",") + "\n    " + text(item, 2)
            empty = False
        yield "[]" if empty else "\n  ]"
    yield "\n}"


def _print_output(result: RunResult, as_json: bool, name: str, redactor: Redactor) -> None:
    if as_json:
        data = redactor.redact_data(result.to_dict(events=False))
        data["pipelineName"] = name
        events = (redactor.redact_data(e.model_dump(mode="json")) for e in result.iter_events())
        for chunk in _json_chunks(data, {"events": events}):
            typer.echo(chunk, nl=False)
        typer.echo()
    elif result.success:
        out = result.output
        text = out if isinstance(out, str) else json.dumps(out, ensure_ascii=False, indent=2)
        typer.echo(redactor.redact(text))


@app.command()
def run(
    file: Annotated[Path, typer.Argument(help="Pipeline YAML (may also hold Agents).")],
    input: Annotated[str | None, typer.Option("--input", "-i", help="Input text.")] = None,
    input_json: Annotated[str | None, typer.Option(help="Input as a JSON value.")] = None,
    input_file: Annotated[
        Path | None, typer.Option(help="Read the input from a file (.json is parsed).")
    ] = None,
    agents: Annotated[
        list[Path] | None, typer.Option("--agents", "-a", help="More files with Agents.")
    ] = None,
    pipeline: Annotated[str | None, typer.Option(help="Pipeline name, if several.")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON result with per-step outcomes and usage.")
    ] = False,
    max_cost: Annotated[float | None, typer.Option(help="Cost limit in USD.")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Token limit.")] = None,
    max_launches: Annotated[int | None, typer.Option(help="Limit on step launches.")] = None,
    timeout: Annotated[float | None, typer.Option(help="Run deadline in seconds.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for retry jitter.")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
    transcript: Annotated[
        Path | None, typer.Option(help="Write the run's transcript to this file.")
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus metrics on this port during the run.")
    ] = None,
    trace: Annotated[
        bool | None,
        typer.Option(
            "--trace/--no-trace",
            help="OpenTelemetry traces (default: on when OTEL_EXPORTER_OTLP_ENDPOINT is set).",
            show_default=False,
        ),
    ] = None,
    debug: Annotated[bool, typer.Option(help="Show tracebacks of unexpected errors.")] = False,
    audit_log: Annotated[
        str | None,
        typer.Option(envvar="FLUJO_AUDIT_LOG", help="Append audit events (JSON lines) here."),
    ] = None,
    spill_bytes: Annotated[
        int | None,
        typer.Option(
            envvar="FLUJO_SPILL_BYTES",
            min=0,
            help="Keep step outputs whose JSON is larger than this many bytes in a temp file "
            "instead of memory (default 4096; 0: keep all in memory).",
            show_default=False,
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Replace openai and http agents with placeholders (no network, zero usage) "
            "and say what would have been called.",
        ),
    ] = False,
) -> None:
    """Run a pipeline in this process and print its output."""
    redactor = Redactor()
    try:
        docs, manifest, registry = _load(file, agents, pipeline)
        redactor.add_agent_specs(a.spec for a in docs.agents).add_environment()
        install_log_redaction(redactor)
        if dry_run:
            from flujo.cli.devx import describe_dry_run, dry_run_registry

            typer.echo(describe_dry_run(manifest, registry), err=True)
            registry = dry_run_registry(registry, docs.agents)
        data = _read_input(input, input_json, input_file)
        try:
            limits = UsageLimits(
                max_cost_usd=max_cost,
                max_tokens=max_tokens,
                max_launches=max_launches,
                max_seconds=timeout,
            )
        except ValueError as exc:
            raise UsageProblem(str(exc).splitlines()[-1].strip()) from None
        hook = None
        if not quiet and not as_json and sys.stderr.isatty():
            from rich.console import Console

            hook = _progress(Console(stderr=True))
        from flujo.observability import start_observability

        try:
            obs = start_observability(
                manifest.metadata.name, registry, metrics_port=metrics_port, tracing=trace
            )
        except OSError as exc:
            raise UsageProblem(f"--metrics-port {metrics_port}: {exc.strerror or exc}") from None
        try:
            runner = Flujo(
                manifest,
                agent_registry=registry,
                usage_limits=limits,
                seed=seed,
                on_event=hook,
                observers=[*obs.observers, *_audit(audit_log, manifest, registry, redactor)],
                source=str(file),
                security_policy=_policy(),
                spill_bytes=spill_bytes,
            )
            result = runner.run(data)
        finally:
            obs.close()
    except UsageProblem as exc:
        _fail([str(exc)])
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        _fail(["interrupted"], EXIT_FAILED)
    except Exception as exc:
        if debug:
            raise
        _fail(
            [f"internal error: {type(exc).__name__}: {exc} (run with --debug for details)"],
            EXIT_FAILED,
        )
    if transcript is not None:
        from flujo.cli.transcript import write_transcript

        try:
            write_transcript(result, transcript, name=manifest.metadata.name, redactor=redactor)
        except OSError as exc:
            _fail([f"--transcript {transcript}: {exc.strerror or exc}"])
    _print_output(result, as_json, manifest.metadata.name, redactor)
    if dry_run:
        from flujo.cli.devx import dry_run_summary

        typer.echo(dry_run_summary(result, registry), err=True)
    if not result.success:
        message = redactor.redact(str(result.outcome.message))
        typer.echo(f"error: run {result.status}: {message}", err=True)
        raise typer.Exit(EXIT_FAILED)


@app.command()
def validate(
    file: Annotated[Path, typer.Argument(help="Pipeline YAML (may also hold Agents).")],
    agents: Annotated[
        list[Path] | None, typer.Option("--agents", "-a", help="More files with Agents.")
    ] = None,
    pipeline: Annotated[str | None, typer.Option(help="Pipeline name, if several.")] = None,
) -> None:
    """Check a pipeline file: schema, names, templates, agent references."""
    docs = load_files([file, *(agents or [])])
    if not docs.problems and not docs.pipelines and docs.runs:
        names = ", ".join(r.metadata.name for r in docs.runs)
        typer.echo(f"ok: {file}: PipelineRun {names}")
        return
    _, manifest, _registry = _load(file, agents, pipeline, detail=True)
    steps = sum(1 for _ in _iter_steps(manifest))
    typer.echo(f"ok: {file}: pipeline {manifest.metadata.name!r}, {steps} steps")


def _iter_steps(manifest: PipelineManifest) -> Any:
    from flujo.domain.validation import walk_steps

    return walk_steps(manifest.spec.steps)


@app.command("step-run")
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
        _fail([f"{launch}: cannot read the launch document: {exc.strerror or exc}"])
    except (ValueError, ValidationError) as exc:
        _fail([f"{launch}: not a launch document: {str(exc).splitlines()[0]}"])
    message, log = encode_result(event)
    sys.stdout.write(log)
    sys.stdout.flush()
    try:
        termination_log.write_text(message, encoding="utf-8")
    except OSError as exc:
        typer.echo(f"warning: cannot write {termination_log}: {exc.strerror or exc}", err=True)
    if isinstance(event, StepFailed):
        raise typer.Exit(EXIT_FAILED_STEP)


@app.command()
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
        _fail([f"{p} is out of date; run 'flujo crds'" for p in stale], EXIT_FAILED)
    where = ", ".join(str(t) for t in targets)
    typer.echo(f"{'checked' if check else 'wrote'} {where} ({len(stale)} changed)")


@app.command()
def version() -> None:
    """Print Flujo's version."""
    from flujo.version import __version__

    typer.echo(__version__)


def main() -> None:
    app()


def _register_subcommands() -> None:
    from flujo.cli.transcript import transcript_app

    app.add_typer(transcript_app, name="transcript")

    from flujo.cli.devx import register

    register(app)


_register_subcommands()
