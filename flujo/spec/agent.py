"""The Agent manifest: how to reach an agent and what it costs.

The same model is the embedded registry's file format and the cluster's
``Agent`` custom resource.  Credentials are *references* only: a
``secretKeyRef`` in the cluster (only the step pod resolves it), an
environment variable or a file path when embedded.  A secret value never
appears in a manifest, a status or a log.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, model_validator

from flujo.spec.base import ObjectMeta, SpecModel
from flujo.spec.pipeline import RetrySpec

__all__ = [
    "AGENT_TYPES",
    "MAX_TOOL_ROUNDS",
    "AgentManifest",
    "AgentSpec",
    "CredentialSpec",
    "PricingSpec",
    "RateLimitSpec",
    "ScriptedResponse",
    "ScriptedToolCall",
    "SecretKeyRef",
    "cost_caps",
]

AgentType = Literal["openai", "http", "builtin", "scripted", "mcp"]
AGENT_TYPES: tuple[str, ...] = ("openai", "http", "builtin", "scripted", "mcp")
MAX_TOOL_ROUNDS = 100
"""The most model calls one tool loop may make (``maxToolRounds``'s maximum)."""


class SecretKeyRef(SpecModel):
    """A key of a Kubernetes Secret in the agent's namespace."""

    name: str = Field(description="Secret name.")
    key: str = Field(description="Key inside the Secret.")


class CredentialSpec(SpecModel):
    """Where a credential comes from. Exactly one source is used, in this order:
    ``secretKeyRef`` (cluster), ``env`` (embedded), ``file`` (embedded)."""

    secret_key_ref: SecretKeyRef | None = Field(None, description="Cluster: a Secret key.")
    env: str | None = Field(None, description="Embedded: an environment variable name.")
    file: str | None = Field(None, description="Embedded: a file holding the value.")

    @model_validator(mode="after")
    def _one_source(self) -> CredentialSpec:
        if not (self.secret_key_ref or self.env or self.file):
            raise ValueError("a credential needs secretKeyRef, env or file")
        return self


class HeaderSpec(SpecModel):
    """An HTTP header whose value is a credential."""

    name: str = Field(description="Header name.")
    value_from: CredentialSpec = Field(description="Where the header's value comes from.")
    prefix: str = Field("", description="Prepended to the value, e.g. 'Bearer '.")


class PricingSpec(SpecModel):
    """Price per 1,000 tokens, used to compute a call's cost from its usage."""

    input_per_1k: float = Field(0.0, ge=0, alias="inputPer1k", description="USD per 1k input.")
    output_per_1k: float = Field(0.0, ge=0, alias="outputPer1k", description="USD per 1k output.")
    max_cost_per_call: float | None = Field(
        None, ge=0, description="Upper bound of one call's cost, used for budget reservation."
    )


class RateLimitSpec(SpecModel):
    """Outbound rate limit shared by every step using the agent in one process."""

    requests_per_second: float | None = Field(None, gt=0, description="Sustained call rate.")
    burst: int = Field(1, ge=1, description="Calls allowed at once before the rate applies.")
    tokens_per_minute: int | None = Field(None, gt=0, description="Token budget per minute.")
    max_concurrent: int | None = Field(
        None,
        ge=1,
        description="Calls in flight at once: per process embedded, per namespace in the "
        "cluster (the operator holds further step pods back).",
    )


class ScriptedError(SpecModel):
    error_class: str = Field(alias="class", description="Error class to report.")
    message: str = Field("scripted failure", description="Error message.")


class ScriptedToolCall(SpecModel):
    """A tool call a scripted model asks for (its agent lists ``tools``)."""

    name: str = Field(description="The tool's function name.")
    arguments: dict[str, Any] = Field(default_factory=dict, description="Its arguments.")


class ScriptedResponse(SpecModel):
    """One canned answer of a ``scripted`` agent."""

    match: str | None = Field(None, description="Regex on the input; first match wins.")
    output: Any = Field(None, description="The answer (any JSON value).")
    usage: dict[str, float] | None = Field(
        None, description="inputTokens, outputTokens, costUsd reported for this answer."
    )
    error: ScriptedError | None = Field(None, description="Fail instead of answering.")
    tool_calls: list[ScriptedToolCall] = Field(
        default_factory=list,
        max_length=16,
        description="With tools: ask for these tool calls instead of answering (one round).",
    )
    delay_seconds: float = Field(0.0, ge=0, description="Wait before answering.")


class AgentSpec(SpecModel):
    """How to call one agent."""

    type: AgentType = Field(description="openai, http, builtin, scripted or mcp.")
    description: str | None = Field(None, description="Free text for humans.")
    version: str | None = Field(None, description="Agent version, recorded in runs.")
    model: str | None = Field(None, description="openai: the model name.")
    endpoint: str | None = Field(
        None,
        description="openai: the API base URL (…/v1); http: the webhook URL; "
        "mcp: the server's streamable-HTTP URL (…/mcp).",
    )
    system_prompt: str | None = Field(None, description="openai: the system message.")
    output_schema: dict[str, Any] | None = Field(
        None, description="JSON Schema the output must satisfy (openai: JSON mode)."
    )
    input_schema: dict[str, Any] | None = Field(
        None,
        description="JSON Schema of the input; a model calling this agent as a tool is "
        "offered it as the function's parameters, and arguments are checked against it.",
    )
    tools: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="openai (and scripted, in tests): names of Agents the model may call as "
        "tools (http, builtin, openai, Python functions; an mcp agent offers each tool of its "
        "server).",
    )
    max_tool_rounds: int = Field(
        8,
        ge=1,
        le=MAX_TOOL_ROUNDS,
        description="openai with tools: the most model calls of one step; a model still "
        "asking for tools after them fails the step (loop_exhausted).",
    )
    stream: bool = Field(
        False,
        description="openai: stream the answer (server-sent events, usage from the final "
        "chunk); flujo run --stream streams every model step.",
    )
    command: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="mcp, embedded only: start the server with this command and talk to it "
        "over stdio (instead of endpoint).",
    )
    allow_tools: list[str] | None = Field(
        None, description="mcp: only these of the server's tools are offered (default: all)."
    )
    deny_tools: list[str] = Field(
        default_factory=list, description="mcp: these of the server's tools are never offered."
    )
    parameters: dict[str, Any] = Field(
        default_factory=dict, description="openai: extra request fields (temperature, …)."
    )
    api_key: CredentialSpec | None = Field(None, description="openai: the API key source.")
    headers: dict[str, str] = Field(default_factory=dict, description="Static HTTP headers.")
    secret_headers: list[HeaderSpec] = Field(
        default_factory=list, description="HTTP headers whose values are credentials."
    )
    timeout_seconds: float = Field(60.0, gt=0, description="Per-call timeout.")
    retry: RetrySpec | None = Field(None, description="Default retry policy of steps using it.")
    rate_limit: RateLimitSpec | None = Field(None, description="Outbound rate limit.")
    pricing: PricingSpec | None = Field(None, description="Token prices.")
    builtin: str | None = Field(None, description="builtin: the transform's name.")
    config: dict[str, Any] = Field(default_factory=dict, description="builtin: its parameters.")
    responses: list[ScriptedResponse] = Field(
        default_factory=list,
        max_length=1000,
        description="scripted: canned answers, in call order.",
    )

    @model_validator(mode="after")
    def _fields_for_type(self) -> AgentSpec:
        need = {
            "openai": ("model", "endpoint"),
            "http": ("endpoint",),
            "builtin": ("builtin",),
            "scripted": ("responses",),
            "mcp": (),
        }[self.type]
        missing = [n for n in need if not getattr(self, n)]
        if missing:
            raise ValueError(f"an agent of type {self.type!r} needs {', '.join(missing)}")
        if self.type == "mcp" and bool(self.endpoint) == bool(self.command):
            raise ValueError("an agent of type 'mcp' needs exactly one of endpoint and command")
        if self.tools and self.type not in ("openai", "scripted"):
            raise ValueError(
                "tools are offered to a model: only an openai (or scripted) agent has tools"
            )
        if self.command and self.type != "mcp":
            raise ValueError("command starts an MCP server: only an mcp agent has one")
        if len(set(self.tools)) != len(self.tools):
            raise ValueError("tools lists an agent twice")
        return self


def cost_caps(agents: Mapping[str, AgentSpec | None]) -> dict[str, float]:
    """Agent name → declared maximum cost of one call: what budget reservation uses.

    Shared by both executors so they start a run with the same caps.
    """
    return {
        name: spec.pricing.max_cost_per_call
        for name, spec in agents.items()
        if spec is not None
        and spec.pricing is not None
        and spec.pricing.max_cost_per_call is not None
    }


class AgentManifest(SpecModel):
    """An ``Agent`` object, as in a YAML file or the cluster."""

    api_version: Literal["flujo.dev/v1alpha1"] = Field("flujo.dev/v1alpha1", alias="apiVersion")
    kind: Literal["Agent"] = "Agent"
    metadata: ObjectMeta
    spec: AgentSpec
    status: Any = Field(None, exclude=True, description="Ignored when loading.")
