"""The audit log's records: one pydantic model per event, the schema of one JSON line.

Every line has ``v`` (:data:`AUDIT_SCHEMA_VERSION`), ``time`` and ``event``;
:data:`audit_event_adapter` validates a line and :func:`audit_json_schema`
returns its JSON Schema (camelCase field names, as written).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from pydantic.alias_generators import to_camel

__all__ = [
    "AUDIT_SCHEMA_VERSION",
    "AgentCall",
    "ApprovalDecided",
    "AuditEvent",
    "CircuitTransition",
    "ConfigChanged",
    "GovernorBreach",
    "PolicyDenied",
    "RunFinished",
    "RunStartedAudit",
    "audit_event_adapter",
    "audit_json_schema",
]

AUDIT_SCHEMA_VERSION = 1


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


class ApprovalDecided(_Audit):
    """A person approved or rejected an approval step of a run."""

    event: Literal["approval.decided"] = "approval.decided"
    run: str = Field(description="The run (PipelineRun name, or embedded run id).")
    namespace: str | None = Field(None, description="Namespace.")
    step: str = Field(description="The approval step's path.")
    decision: Literal["approve", "reject"] = Field(description="What was decided.")
    reason: str | None = Field(None, description="A rejection's reason.")
    field_manager: str | None = Field(
        None, description="Who, as the API recorded it: the patch's field manager."
    )
    uid: str | None = Field(None, description="The run's metadata.uid.")


AuditEvent = Annotated[
    RunStartedAudit
    | AgentCall
    | GovernorBreach
    | RunFinished
    | ConfigChanged
    | CircuitTransition
    | PolicyDenied
    | ApprovalDecided,
    Field(discriminator="event"),
]
audit_event_adapter: TypeAdapter[AuditEvent] = TypeAdapter(AuditEvent)
"""Validates one parsed audit line: ``audit_event_adapter.validate_json(line)``."""


def audit_json_schema() -> dict[str, Any]:
    """The JSON Schema of one audit line (camelCase field names)."""
    return audit_event_adapter.json_schema(by_alias=True)
