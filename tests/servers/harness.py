"""Small helpers shared by the remote-agent tests: build, call once, catch the error."""

from __future__ import annotations

import asyncio
from typing import Any

from flujo.agents.base import Agent, AgentContext, AgentOutput
from flujo.agents.pool import ClientPool
from flujo.agents.remote import build_remote_agent
from flujo.domain.errors import AgentError
from flujo.resilience import BreakerRegistry, RateLimiterRegistry
from flujo.spec.agent import AgentSpec

__all__ = ["CONTEXT", "agent_spec", "call", "call_error", "call_in_pool"]

CONTEXT = AgentContext(step_path="review", step_name="review", run_id="run-1")


def agent_spec(**fields: Any) -> AgentSpec:
    """An ``AgentSpec`` from manifest-style (camelCase) fields."""
    return AgentSpec.model_validate(fields)


async def call_in_pool(
    spec: AgentSpec,
    data: Any = "hello",
    *,
    name: str = "writer",
    breakers: BreakerRegistry | None = None,
    limiters: RateLimiterRegistry | None = None,
) -> AgentOutput:
    """One call through a fresh pool, closed afterwards."""
    async with ClientPool() as pool:
        agent: Agent = build_remote_agent(name, spec, pool, breakers, limiters)
        return await agent.run(data, CONTEXT)


def call(spec: AgentSpec, data: Any = "hello", **kwargs: Any) -> AgentOutput:
    """``call_in_pool`` from a sync test."""
    return asyncio.run(call_in_pool(spec, data, **kwargs))


def call_error(spec: AgentSpec, data: Any = "hello", **kwargs: Any) -> AgentError:
    """The ``AgentError`` one call raises; fails the test if it succeeds."""
    try:
        output = call(spec, data, **kwargs)
    except AgentError as exc:
        assert "\n" not in exc.message, f"message is not one line: {exc.message!r}"
        return exc
    raise AssertionError(f"expected an AgentError, got {output!r}")
