"""``flujo run``: run a pipeline in this process and print its output.

The command reads the input (``--input``, ``--input-json`` or
``--input-file``, within the security policy's size limit), sets up what the
run reports to (progress on a terminal, metrics, traces, the audit log), runs
the pipeline and prints its output, or with ``--json`` the whole result,
streamed so that a long event log is never held whole.  ``--dry-run``
replaces the paid agents first (:mod:`flujo.cli.dry_run`); ``--transcript``
writes the run's transcript (:mod:`flujo.cli.transcript`).

Exit codes: 0 success, 1 the pipeline ran and failed, 2 bad input or usage.
Every error is one line on stderr (``error: …``); ``--debug`` adds the
traceback of unexpected exceptions.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from flujo.agents.registry import AgentRegistry
from flujo.cli.conventions import EXIT_FAILED, UsageProblem, fail
from flujo.cli.dry_run import describe_dry_run, dry_run_registry, dry_run_summary
from flujo.cli.stream import TokenPrinter
from flujo.cli.transcript import write_transcript
from flujo.cli.validate import AgentFiles, PipelineFile, PipelineName, load_checked, policy
from flujo.cli.waiting import report_waiting
from flujo.engine import Event, RunState, StepFailed, StepSucceeded
from flujo.runtime import Flujo, RunResult
from flujo.runtime.store import RunStore, StoreError, open_store
from flujo.security.policy import PolicyViolation, parse_input
from flujo.security.redaction import Redactor, install_log_redaction
from flujo.spec.limits import UsageLimits

__all__ = ["register", "run"]

MAX_INPUT_BYTES = 1 << 20
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _read_input(text: str | None, json_text: str | None, file: Path | None) -> Any:
    given = [x is not None for x in (text, json_text, file)]
    if sum(given) > 1:
        raise UsageProblem("give only one of --input, --input-json, --input-file")
    security = policy()
    try:
        if json_text is not None:
            return parse_input(json_text, security, as_json=True, source="--input-json")
        if file is not None:
            try:
                with file.open("rb") as handle:
                    raw = handle.read(security.max_input_bytes + 1)
            except OSError as exc:
                raise UsageProblem(f"--input-file {file}: {exc.strerror or exc}") from None
            return parse_input(
                raw, security, as_json=file.suffix == ".json", source=f"--input-file {file}"
            )
        if text is not None:
            return parse_input(text, security, source="--input")
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


def run(
    file: PipelineFile,
    input: Annotated[str | None, typer.Option("--input", "-i", help="Input text.")] = None,
    input_json: Annotated[str | None, typer.Option(help="Input as a JSON value.")] = None,
    input_file: Annotated[
        Path | None, typer.Option(help="Read the input from a file (.json is parsed).")
    ] = None,
    agents: AgentFiles = None,
    pipeline: PipelineName = None,
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
    stream: Annotated[
        bool,
        typer.Option(
            "--stream",
            help="Print model steps' answers to stderr as they arrive (streamed from the "
            "server); stdout and the transcript stay those of the run without it.",
        ),
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Replace openai and http agents with placeholders (no network, zero usage) "
            "and say what would have been called.",
        ),
    ] = False,
    store: Annotated[
        str | None,
        typer.Option(
            "--store",
            envvar="FLUJO_STORE",
            help="Journal the run here, so that flujo resume can finish it after a crash "
            "(default .flujo/runs.db; none: keep the run in memory only).",
            show_default=False,
        ),
    ] = None,
    run_id: Annotated[
        str | None,
        typer.Option("--run-id", help="The run's id in the store (default: a random one)."),
    ] = None,
) -> None:
    """Run a pipeline in this process and print its output."""
    redactor = Redactor()
    try:
        docs, manifest, registry = load_checked(file, agents, pipeline)
        redactor.add_agent_specs(a.spec for a in docs.agents).add_environment()
        install_log_redaction(redactor)
        if dry_run:
            typer.echo(describe_dry_run(manifest, registry), err=True)
            registry = dry_run_registry(registry, docs.agents)
        data = _read_input(input, input_json, input_file)
        run_store = _open_store(None if not dry_run else "none", store, run_id)
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
        printer = TokenPrinter(redactor, sys.stderr) if stream else None
        try:
            runner = Flujo(
                manifest,
                on_token=printer,
                agent_registry=registry,
                usage_limits=limits,
                seed=seed,
                on_event=hook,
                observers=[*obs.observers, *_audit(audit_log, manifest, registry, redactor)],
                source=str(file),
                security_policy=policy(),
                spill_bytes=spill_bytes,
                store=run_store,
                store_meta={"agents": [a.to_data() for a in docs.agents], "source": str(file)},
            )
            result = runner.run(data, run_id=run_id)
        finally:
            if printer is not None:
                printer.close()
            obs.close()
    except UsageProblem as exc:
        fail([str(exc)])
    except StoreError as exc:
        fail([str(exc)])
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        fail(["interrupted"], EXIT_FAILED)
    except Exception as exc:
        if debug:
            raise
        fail(
            [f"internal error: {type(exc).__name__}: {exc} (run with --debug for details)"],
            EXIT_FAILED,
        )
    if transcript is not None:
        try:
            write_transcript(result, transcript, name=manifest.metadata.name, redactor=redactor)
        except OSError as exc:
            fail([f"--transcript {transcript}: {exc.strerror or exc}"])
    _print_output(result, as_json, manifest.metadata.name, redactor)
    if dry_run:
        typer.echo(dry_run_summary(result, registry), err=True)
    if report_waiting(result, store):
        return
    if not result.success:
        message = redactor.redact(str(result.outcome.message))
        typer.echo(f"error: run {result.status}: {message}", err=True)
        raise typer.Exit(EXIT_FAILED)


def _open_store(forced: str | None, target: str | None, run_id: str | None) -> RunStore | None:
    """The run store of ``--store`` / ``$FLUJO_STORE`` (a dry run keeps none)."""
    if run_id is not None and not RUN_ID.fullmatch(run_id):
        raise UsageProblem(
            f"--run-id {run_id!r}: letters, digits, '.', '_' and '-' only, at most 64"
        )
    try:
        run_store = open_store(forced or target)
    except StoreError as exc:
        raise UsageProblem(str(exc)) from None
    if run_store is None and run_id is not None and forced is None:
        raise UsageProblem("--run-id needs a run store (not --store none)")
    return run_store


def register(app: typer.Typer) -> None:
    """Add ``run`` to the ``flujo`` app."""
    app.command()(run)
