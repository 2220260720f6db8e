"""The error taxonomy every executor reports step failures in.

A step failure carries an *error class*, a short string from the set below.
The state machine only looks at the class to decide whether a retry policy
applies; the message is for humans.  Executors map whatever went wrong
(an HTTP 503, a pod OOMKilled, a Python exception) onto one of these.

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
    "SCHEMA",
    "TEMPLATE",
    "TIMEOUT",
    "TRANSIENT",
    "TRANSIENT_CLASSES",
    "USAGE_LIMIT",
    "AgentError",
    "is_transient",
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
    }
)


def is_transient(error_class: str) -> bool:
    return error_class in TRANSIENT_CLASSES


class AgentError(Exception):
    """Raised by agents to report a classified failure.

    ``retry_after`` (seconds) is a server's hint, honoured by the retry policy
    as a lower bound on the next backoff delay.
    """

    def __init__(
        self,
        error_class: str,
        message: str,
        *,
        retry_after: float | None = None,
        usage: object | None = None,
    ) -> None:
        super().__init__(message)
        self.error_class = error_class
        self.message = message
        self.retry_after = retry_after
        self.usage = usage
