"""The names of the error classes: part of the pipeline language.

Authors write them in ``retry.retryOn``, executors report step failures in
them and the state machine decides retries from them alone.  They live in
the spec, the lowest layer, because the spec's own models and checks need
them; :mod:`flujo.domain.errors` re-exports them beside ``AgentError``.

Transient classes are retried by the default retry policy; every other class
fails the step at once (or hands it to the fallback agent).
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "AGENT_ERROR",
    "AUTH",
    "CANCELLED",
    "CIRCUIT_OPEN",
    "CONFIG",
    "DEFAULT_RETRY_ON",
    "ERROR_CLASSES",
    "INTERNAL",
    "LOOP_EXHAUSTED",
    "PERMANENT",
    "RATE_LIMITED",
    "REJECTED",
    "SCHEMA",
    "TEMPLATE",
    "TIMEOUT",
    "TRANSIENT",
    "TRANSIENT_CLASSES",
    "USAGE_LIMIT",
]

TRANSIENT: Final = "transient"
"""Connection errors, HTTP 5xx, a pod evicted or lost with its node."""
RATE_LIMITED: Final = "rate_limited"
"""HTTP 429; the message carries Retry-After when the server sent one."""
TIMEOUT: Final = "timeout"
"""The step's own timeout elapsed, or the agent's transport timed out."""
PERMANENT: Final = "permanent"
"""HTTP 4xx other than 429, an image that cannot be pulled, OOMKilled."""
AUTH: Final = "auth"
"""HTTP 401/403 or a missing credential."""
SCHEMA: Final = "schema"
"""The agent answered, but not in the declared output schema."""
CONFIG: Final = "config"
"""The agent is misconfigured or unknown to the registry."""
TEMPLATE: Final = "template"
"""The step's input template or an expression failed to render."""
CIRCUIT_OPEN: Final = "circuit_open"
"""The agent's circuit breaker is open: the call was not attempted."""
AGENT_ERROR: Final = "agent_error"
"""Unexpected exception inside agent code (a bug in a callable, say)."""
CANCELLED: Final = "cancelled"
"""The step was cancelled (governor breach, fail-fast branch, deadline)."""
LOOP_EXHAUSTED: Final = "loop_exhausted"
"""A loop hit maxIterations before its exit condition held."""
USAGE_LIMIT: Final = "usage_limit"
"""The governor stopped the run: a usage limit was exceeded or reached."""
INTERNAL: Final = "internal"
"""A bug in Flujo itself, reported as a failure instead of a crash."""
REJECTED: Final = "rejected"
"""A person rejected an approval step (or its timeout said reject)."""

TRANSIENT_CLASSES: Final = frozenset({TRANSIENT, RATE_LIMITED, TIMEOUT})
DEFAULT_RETRY_ON: Final = (TRANSIENT, RATE_LIMITED, TIMEOUT)
ERROR_CLASSES: Final = frozenset(
    {
        TRANSIENT,
        RATE_LIMITED,
        TIMEOUT,
        PERMANENT,
        AUTH,
        SCHEMA,
        CONFIG,
        TEMPLATE,
        CIRCUIT_OPEN,
        AGENT_ERROR,
        CANCELLED,
        LOOP_EXHAUSTED,
        USAGE_LIMIT,
        INTERNAL,
        REJECTED,
    }
)
