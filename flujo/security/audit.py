"""The audit log: who ran what, with which agents, at what cost, and what changed.

Why a separate log: metrics aggregate and traces sample, but an audit trail
must answer, per run and per change, *what happened* — long after, and to
someone who is not allowed to read the prompts.  So every audit event is one
JSON line with a fixed, versioned schema (the pydantic models below; the
same schema is documented in ``docs/security.md``), and it never carries
prompt, input or output contents, error messages (which may quote them) or
secrets — unless ``include_content=True`` is chosen explicitly, and even
then lines pass through the :class:`~flujo.security.redaction.Redactor`.

Events:

- ``run.started`` / ``run.finished`` — a run's identity, limits, outcome
  and totals (:class:`AuditObserver`, a ``RunObserver``);
- ``agent.call`` — one per agent attempt: step path, agent name, type and
  model, attempt, tokens, cost, outcome and error class;
- ``governor.breach`` — the usage limit a run crossed, where, by how much;
- ``config.changed`` — an Agent or Pipeline created, updated or deleted,
  with its generation and field manager (the operator calls
  :meth:`AuditLog.config_changed`);
- ``circuit.transition`` — an agent's circuit breaker changed state;
- ``policy.denied`` — the security policy refused a pipeline, agent or input.

Sinks are JSON-lines streams (stdout, stderr) and append-only files created
``0600``.  A sink that fails raises: the embedded runtime then disables the
observer with one warning (observers never fail a run), so an audit log
that must not lose lines belongs on a reliable file system.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from pydantic.alias_generators import to_camel

from flujo.engine.commands import Command, FinishRun, LaunchStep
from flujo.engine.events import Event, RunStarted, StepCancelled, StepFailed, StepSucceeded
from flujo.engine.state import RunState
from flujo.security.redaction import Redactor
from flujo.spec.agent import AgentSpec

__all__ = [
    "AUDIT_SCHEMA_VERSION",
    "AgentCall",
    "AuditEvent",
    "AuditLog",
    "AuditObserver",
    "AuditSink",
    "CircuitTransition",
    "ConfigChanged",
    "FileSink",
    "GovernorBreach",
    "PolicyDenied",
    "RunFinished",
    "RunStartedAudit",
    "StreamSink",
    "audit_event_adapter",
    "audit_json_schema",
    "field_manager_of",
    "open_audit_log",
]

AUDIT_SCHEMA_VERSION = 1


def _now() -> datetime:
    return datetime.now(UTC)


def _stamp(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- the schema ---------------------------------------------------------------


class _Audit(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, alias_generator=to_camel
    )

    v: Literal[1] = Field(1, description="Schema version of the line.")
    time: str = Field(description="When the event was recorded (RFC 3339, UTC, ms).")


class _RunScoped(_Audit):
    run_id: str = Field(description="The run's id (the PipelineRun uid in the cluster).")
    pipeline: str = Field(description="Pipeline name.")
    namespace: str | None = Field(None, description="Namespace (cluster runs).")


class RunStartedAudit(_RunScoped):
    """A run began."""

    event: Literal["run.started"] = "run.started"
    input_bytes: int = Field(description="Size of the input as JSON (UTF-8 bytes).")
    limits: dict[str, float] = Field(
        default_factory=dict, description="Usage limits in force (maxCostUsd, maxTokens, …)."
    )
    input: Any = Field(None, description="The input itself; only with include_content.")


class AgentCall(_RunScoped):
    """One attempt of one agent step ended."""

    event: Literal["agent.call"] = "agent.call"
    step: str = Field(description="Step path, e.g. refine/iter-2/critic.")
    step_name: str = Field(description="Step name.")
    agent: str = Field(description="Agent name.")
    agent_type: str = Field(description="openai, http, builtin, scripted or python.")
    model: str | None = Field(None, description="Model name (openai agents).")
    attempt: int = Field(description="Attempt number, 1-based.")
    outcome: Literal["succeeded", "failed", "cancelled"] = Field(description="How it ended.")
    error_class: str | None = Field(None, description="Error class of a failure.")
    input_tokens: int = Field(0, description="Prompt tokens.")
    output_tokens: int = Field(0, description="Completion tokens.")
    cost_usd: float = Field(0.0, description="Cost in US dollars.")
    duration_ms: float | None = Field(
        None, description="From launch to result, backoff delay included."
    )
    input: Any = Field(None, description="The rendered input; only with include_content.")
    output: Any = Field(None, description="The output; only with include_content.")
    message: str | None = Field(None, description="The error message; only with include_content.")


class GovernorBreach(_RunScoped):
    """The usage governor stopped a run."""

    event: Literal["governor.breach"] = "governor.breach"
    limit: str = Field(description="cost, tokens or launches.")
    limit_value: float = Field(description="The limit.")
    value: float = Field(description="The total that crossed it.")
    path: str = Field(description="The step (or branch, iteration) that crossed it.")
    when: str = Field(description="after a step's usage, or before a launch.")


class RunFinished(_RunScoped):
    """A run ended."""

    event: Literal["run.finished"] = "run.finished"
    status: Literal["succeeded", "failed", "cancelled"] = Field(description="Outcome.")
    reason: str | None = Field(None, description="StepFailed, UsageLimitExceeded, …")
    error_class: str | None = Field(None, description="Error class of the failure.")
    failed_path: str | None = Field(None, description="The step that caused a failure.")
    input_tokens: int = Field(0, description="Total prompt tokens.")
    output_tokens: int = Field(0, description="Total completion tokens.")
    cost_usd: float = Field(0.0, description="Total cost in US dollars.")
    launches: int = Field(0, description="Agent launches, retries included.")
    duration_ms: float | None = Field(None, description="From start to finish.")
    message: str | None = Field(None, description="The outcome message; only with include_content.")
    output: Any = Field(None, description="The run's output; only with include_content.")


class ConfigChanged(_Audit):
    """An Agent or Pipeline was created, updated or deleted."""

    event: Literal["config.changed"] = "config.changed"
    kind: str = Field(description="Agent, Pipeline or PipelineRun.")
    namespace: str | None = Field(None, description="Namespace.")
    name: str = Field(description="Object name.")
    action: Literal["created", "updated", "deleted"] = Field(description="What happened.")
    generation: int | None = Field(None, description="metadata.generation after the change.")
    field_manager: str | None = Field(
        None, description="The manager of the latest managedFields entry (kubectl, argocd, …)."
    )
    uid: str | None = Field(None, description="metadata.uid.")


class CircuitTransition(_Audit):
    """An agent's circuit breaker changed state."""

    event: Literal["circuit.transition"] = "circuit.transition"
    agent: str = Field(description="Agent name (namespace/name in the cluster).")
    namespace: str | None = Field(None, description="Namespace.")
    from_state: str = Field(alias="from", description="closed, open or half-open.")
    to_state: str = Field(alias="to", description="closed, open or half-open.")
    failures: int | None = Field(None, description="Consecutive failures counted.")


class PolicyDenied(_Audit):
    """The security policy refused something."""

    event: Literal["policy.denied"] = "policy.denied"
    kind: str = Field(description="Pipeline, Agent, PipelineRun or input.")
    name: str = Field(description="Object name (or the run id for inputs).")
    namespace: str | None = Field(None, description="Namespace.")
    field: str | None = Field(None, description="Field path, e.g. spec.steps[0].loop.")
    reason: str = Field(description="The policy's one-line message.")


AuditEvent = Annotated[
    RunStartedAudit
    | AgentCall
    | GovernorBreach
    | RunFinished
    | ConfigChanged
    | CircuitTransition
    | PolicyDenied,
    Field(discriminator="event"),
]
audit_event_adapter: TypeAdapter[AuditEvent] = TypeAdapter(AuditEvent)
"""Validates one parsed audit line: ``audit_event_adapter.validate_json(line)``."""


def audit_json_schema() -> dict[str, Any]:
    """The JSON Schema of one audit line (camelCase field names)."""
    return audit_event_adapter.json_schema(by_alias=True)


# --- sinks --------------------------------------------------------------------


class AuditSink(Protocol):
    def write(self, line: str) -> None: ...

    def close(self) -> None: ...


class StreamSink:
    """JSON lines on a text stream (stdout by default); flushed per line."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream

    def write(self, line: str) -> None:
        stream = self.stream if self.stream is not None else sys.stdout
        stream.write(line + "\n")
        stream.flush()

    def close(self) -> None:
        """The stream belongs to its opener."""


class FileSink:
    """JSON lines appended to a file created with mode 0600 (audit data is sensitive)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._file: IO[str] | None = os.fdopen(fd, "a", encoding="utf-8")

    def write(self, line: str) -> None:
        if self._file is None:
            raise ValueError(f"audit log {self.path} is closed")
        self._file.write(line + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


# --- the log ------------------------------------------------------------------


class AuditLog:
    """Writes audit events to every sink, one JSON line each.

    ``include_content`` adds inputs, outputs and messages to run and call
    events (off by default; see the module docstring).  ``redactor`` scrubs
    every line.  ``clock`` gives event times.
    """

    def __init__(
        self,
        sinks: Sequence[AuditSink],
        *,
        include_content: bool = False,
        redactor: Redactor | None = None,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self.sinks = list(sinks)
        self.include_content = include_content
        self.redactor = redactor
        self.clock = clock
        self._lock = threading.Lock()

    def now(self) -> str:
        return _stamp(self.clock())

    def emit(self, event: _Audit) -> str:
        """Write one event; returns the line written."""
        line = event.model_dump_json(by_alias=True, exclude_none=True)
        if self.redactor is not None:
            line = self.redactor.redact(line)
        with self._lock:
            for sink in self.sinks:
                sink.write(line)
        return line

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()

    # --- for the operator -------------------------------------------------------

    def config_changed(
        self,
        kind: str,
        name: str,
        action: Literal["created", "updated", "deleted"],
        *,
        namespace: str | None = None,
        generation: int | None = None,
        field_manager: str | None = None,
        uid: str | None = None,
    ) -> str:
        """An Agent, Pipeline or PipelineRun changed."""
        return self.emit(
            ConfigChanged(
                time=self.now(),
                kind=kind,
                name=name,
                action=action,
                namespace=namespace,
                generation=generation,
                field_manager=field_manager,
                uid=uid,
            )
        )

    def config_changed_from_body(
        self, kind: str, event_type: str | None, body: Mapping[str, Any]
    ) -> str | None:
        """``config_changed`` from a watch event (``ADDED``/``MODIFIED``/``DELETED``) and object.

        ``None`` (kopf's initial listing of existing objects) is not a change:
        nothing is written.
        """
        if event_type not in ("ADDED", "CREATED", "MODIFIED", "DELETED"):
            return None
        meta = body.get("metadata") or {}
        action: Literal["created", "updated", "deleted"] = (
            "deleted"
            if event_type == "DELETED"
            else "created"
            if event_type in ("ADDED", "CREATED") and int(meta.get("generation") or 1) <= 1
            else "updated"
        )
        return self.config_changed(
            kind,
            str(meta.get("name", "")),
            action,
            namespace=meta.get("namespace"),
            generation=meta.get("generation"),
            field_manager=field_manager_of(body),
            uid=meta.get("uid"),
        )

    def circuit_transition(
        self,
        agent: str,
        old: str,
        new: str,
        *,
        namespace: str | None = None,
        failures: int | None = None,
    ) -> str:
        """An agent's breaker changed state (a ``BreakerRegistry`` listener can call this)."""
        if namespace is None and "/" in agent:
            namespace = agent.split("/", 1)[0]
        return self.emit(
            CircuitTransition.model_validate(
                {
                    "time": self.now(),
                    "agent": agent,
                    "namespace": namespace,
                    "from": old,
                    "to": new,
                    "failures": failures,
                }
            )
        )

    def policy_denied(
        self,
        kind: str,
        name: str,
        reason: str,
        *,
        field: str | None = None,
        namespace: str | None = None,
    ) -> str:
        return self.emit(
            PolicyDenied(
                time=self.now(),
                kind=kind,
                name=name,
                reason=reason,
                field=field,
                namespace=namespace,
            )
        )


def field_manager_of(body: Mapping[str, Any]) -> str | None:
    """The manager of an object's most recent ``managedFields`` entry, if any.

    Entries for the ``status`` subresource are skipped: they are the
    operator's own status writes, not a change of the configuration.
    """
    entries = (body.get("metadata") or {}).get("managedFields") or []
    best: tuple[str, str] | None = None
    for entry in entries:
        if not isinstance(entry, Mapping) or not entry.get("manager"):
            continue
        if entry.get("subresource") == "status":
            continue
        stamp = str(entry.get("time") or "")
        if best is None or stamp >= best[0]:
            best = (stamp, str(entry["manager"]))
    return best[1] if best else None


def open_audit_log(
    target: str,
    *,
    include_content: bool = False,
    redactor: Redactor | None = None,
) -> AuditLog:
    """An audit log writing to ``stdout``, ``stderr`` (or ``-``, stdout) or a file path."""
    sink: AuditSink
    if target in ("-", "stdout"):
        sink = StreamSink(sys.stdout)
    elif target == "stderr":
        sink = StreamSink(sys.stderr)
    else:
        sink = FileSink(target)
    return AuditLog([sink], include_content=include_content, redactor=redactor)


# --- the run observer ---------------------------------------------------------


def _json_size(value: Any) -> int:
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError, RecursionError):
        return len(repr(value))
    return len(text.encode("utf-8", "surrogatepass"))


@dataclass
class _Launch:
    agent: str
    step: str
    started: float
    input: Any = None


@dataclass
class _Run:
    run_id: str
    pipeline: str
    namespace: str | None
    started: float
    launches: dict[tuple[str, int], _Launch] = field(default_factory=dict)
    breach_reported: bool = False


AgentDescription = AgentSpec | tuple[str, str | None] | None
"""An agent's manifest, or ``(type, model)``, or None (a built-in preset or Python code)."""


class AuditObserver:
    """A ``RunObserver`` that writes ``run.*``, ``agent.call`` and ``governor.breach`` events.

    ``agents`` describes the agents by name (type and model for the events);
    ``run_id`` names the next run (default: a random UUID per run).  The
    operator calls :meth:`observe_run` with each PipelineRun's uid, pipeline
    and namespace instead of :meth:`observe`.
    """

    max_tracked_runs = 10_000

    def __init__(
        self,
        log: AuditLog,
        pipeline: str = "unknown",
        *,
        agents: Mapping[str, AgentDescription] | None = None,
        run_id: str | None = None,
        namespace: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = log
        self.pipeline = pipeline
        self.agents = dict(agents or {})
        self.run_id = run_id
        self.namespace = namespace
        self.clock = clock
        self._runs: dict[Hashable, _Run] = {}
        self._closed: dict[Hashable, _Run] = {}
        """Recently finished runs, for results that arrive after the run ended."""

    def observe(self, event: Event, state: RunState, commands: Sequence[Command]) -> None:
        run_id = self.run_id
        if isinstance(event, RunStarted):
            self.run_id = None  # a fixed id names one run only
        self.observe_run(
            event,
            state,
            commands,
            run_id=run_id,
            pipeline=self.pipeline,
            namespace=self.namespace,
            key=id(state),
        )

    def observe_run(
        self,
        event: Event,
        state: RunState,
        commands: Sequence[Command],
        *,
        run_id: str | None,
        pipeline: str,
        namespace: str | None = None,
        key: Hashable | None = None,
        agents: Mapping[str, AgentDescription] | None = None,
    ) -> None:
        """Record one ``advance`` step of a run (the operator's entry point).

        ``agents`` describes the agents this run can call, when they differ
        per run (the operator: each namespace has its own Agents).
        """
        now = self.clock()
        key = key if key is not None else run_id
        run = self._runs.get(key)
        if run is None and not isinstance(event, RunStarted) and key in self._closed:
            # A late result of a finished run: the call happened and spent tokens.
            if isinstance(event, StepSucceeded | StepFailed | StepCancelled):
                self._call(self._closed[key], event, state, now, agents)
            return
        if run is None or isinstance(event, RunStarted):
            if len(self._runs) >= self.max_tracked_runs:
                self._runs.pop(next(iter(self._runs)))
            run = _Run(run_id or uuid.uuid4().hex, pipeline, namespace, now)
            self._runs[key] = run
            if isinstance(event, RunStarted):
                self._started(run, event, state)
        if isinstance(event, StepSucceeded | StepFailed | StepCancelled):
            self._call(run, event, state, now, agents)
        if state.breach is not None and not run.breach_reported:
            run.breach_reported = True
            breach = state.breach
            self.log.emit(
                GovernorBreach(
                    time=self.log.now(),
                    run_id=run.run_id,
                    pipeline=run.pipeline,
                    namespace=run.namespace,
                    limit=breach.limit,
                    limit_value=breach.limit_value,
                    value=breach.value,
                    path=breach.path,
                    when=breach.when,
                )
            )
        for command in commands:
            if isinstance(command, LaunchStep):
                run.launches[(command.path, command.attempt)] = _Launch(
                    command.agent, command.step, now, command.input
                )
            elif isinstance(command, FinishRun):
                self._finished(run, command, state, now)
                self._runs.pop(key, None)
                self._closed[key] = run
                while len(self._closed) > self.max_tracked_runs // 10:
                    self._closed.pop(next(iter(self._closed)))

    def _describe(
        self, name: str, agents: Mapping[str, AgentDescription] | None = None
    ) -> tuple[str, str | None]:
        known = self.agents if agents is None else agents
        info = known.get(name)
        if isinstance(info, AgentSpec):
            return info.type, info.model
        if isinstance(info, tuple):
            return info
        if name.startswith("builtin."):
            return "builtin", None
        return ("python", None) if name in known else ("unknown", None)

    def _started(self, run: _Run, event: RunStarted, state: RunState) -> None:
        content = self.log.include_content
        limits = {
            k: float(v) for k, v in state.limits.model_dump(by_alias=True).items() if v is not None
        }
        self.log.emit(
            RunStartedAudit(
                time=self.log.now(),
                run_id=run.run_id,
                pipeline=run.pipeline,
                namespace=run.namespace,
                input_bytes=_json_size(event.input),
                limits=limits,
                input=event.input if content else None,
            )
        )

    def _call(
        self,
        run: _Run,
        event: StepSucceeded | StepFailed | StepCancelled,
        state: RunState,
        now: float,
        agents: Mapping[str, AgentDescription] | None = None,
    ) -> None:
        launch = run.launches.pop((event.path, event.attempt), None)
        step = state.steps.get(event.path)
        agent = launch.agent if launch else (step.agent if step and step.agent else "unknown")
        agent_type, model = self._describe(agent, agents)
        content = self.log.include_content
        outcome: Literal["succeeded", "failed", "cancelled"] = (
            "succeeded"
            if isinstance(event, StepSucceeded)
            else "failed"
            if isinstance(event, StepFailed)
            else "cancelled"
        )
        self.log.emit(
            AgentCall(
                time=self.log.now(),
                run_id=run.run_id,
                pipeline=run.pipeline,
                namespace=run.namespace,
                step=event.path,
                step_name=launch.step if launch else (step.name if step else event.path),
                agent=agent,
                agent_type=agent_type,
                model=model,
                attempt=event.attempt,
                outcome=outcome,
                error_class=event.error_class if isinstance(event, StepFailed) else None,
                input_tokens=event.usage.input_tokens,
                output_tokens=event.usage.output_tokens,
                cost_usd=event.usage.cost_usd,
                duration_ms=round((now - launch.started) * 1000, 3) if launch else None,
                input=launch.input if content and launch else None,
                output=event.output if content and isinstance(event, StepSucceeded) else None,
                message=event.message if content and isinstance(event, StepFailed) else None,
            )
        )

    def _finished(self, run: _Run, command: FinishRun, state: RunState, now: float) -> None:
        outcome = command.outcome
        content = self.log.include_content
        usage = state.usage
        self.log.emit(
            RunFinished(
                time=self.log.now(),
                run_id=run.run_id,
                pipeline=run.pipeline,
                namespace=run.namespace,
                status=outcome.status,
                reason=outcome.reason,
                error_class=outcome.error_class,
                failed_path=outcome.path,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cost_usd=usage.cost_usd,
                launches=state.launches,
                duration_ms=round((now - run.started) * 1000, 3),
                message=outcome.message if content else None,
                output=outcome.output if content else None,
            )
        )
