"""The error taxonomy every executor reports step failures in.

A step failure carries an *error class*, a short string from the set below.
The state machine only looks at the class to decide whether a retry policy
applies; the message is for humans.  Executors map whatever went wrong
(an HTTP 503, a pod OOMKilled, a Python exception) onto one of these.

Transient classes are retried by the default retry policy; every other class
fails the step at once (or hands it to the fallback agent).

The class names themselves are spec vocabulary (:mod:`flujo.spec.error_classes`);
this module adds the exception agents raise to report one.
"""

from __future__ import annotations

from flujo.spec.error_classes import (
    AGENT_ERROR,
    AUTH,
    CANCELLED,
    CIRCUIT_OPEN,
    CONFIG,
    DEFAULT_RETRY_ON,
    ERROR_CLASSES,
    INTERNAL,
    LOOP_EXHAUSTED,
    PERMANENT,
    RATE_LIMITED,
    REJECTED,
    SCHEMA,
    TEMPLATE,
    TIMEOUT,
    TRANSIENT,
    TRANSIENT_CLASSES,
    USAGE_LIMIT,
)

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
    "AgentError",
    "is_transient",
]


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
