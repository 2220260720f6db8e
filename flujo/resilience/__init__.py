"""Resilience around remote agents: circuit breakers and outbound rate limits.

Retries are not here: they are a decision of the run's state machine (so that
both executors retry the same way and transcripts show them).  What lives
here is per-process protection of an endpoint shared by many steps.
"""

from __future__ import annotations

from flujo.resilience.breaker import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    AgentBreaker,
    BreakerRegistry,
    BreakerState,
    BreakerStateStore,
    MemoryBreakerStateStore,
    StateChangeListener,
)
from flujo.resilience.ratelimit import RateLimiter, RateLimiterRegistry
from flujo.resilience.wrapper import ResilientAgent

__all__ = [
    "CLOSED",
    "HALF_OPEN",
    "OPEN",
    "AgentBreaker",
    "BreakerRegistry",
    "BreakerState",
    "BreakerStateStore",
    "MemoryBreakerStateStore",
    "RateLimiter",
    "RateLimiterRegistry",
    "ResilientAgent",
    "StateChangeListener",
]
