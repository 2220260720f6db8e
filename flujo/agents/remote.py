"""Building a remote agent (``openai`` or ``http``) from its manifest.

The registry calls :func:`build_remote_agent` for every remote agent it
loads.  All agents of a process share one :class:`ClientPool` (connections),
one :class:`BreakerRegistry` (one breaker per agent name) and one
:class:`RateLimiterRegistry` (one limiter per agent name); passing ``None``
for a registry leaves that protection out.  A misconfigured agent fails here,
at build time, with ``AgentError(config)``, not at its first call.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from flujo.agents.base import Agent
from flujo.agents.http import HttpAgent
from flujo.agents.openai import OpenAIAgent
from flujo.agents.pool import ClientPool
from flujo.agents.transport import RemoteAgent
from flujo.domain.errors import CONFIG, AgentError
from flujo.resilience.breaker import BreakerRegistry
from flujo.resilience.ratelimit import RateLimiterRegistry
from flujo.resilience.wrapper import ResilientAgent
from flujo.spec.agent import AgentSpec

__all__ = ["REMOTE_KINDS", "RemoteResources", "build_remote_agent", "govern"]

REMOTE_KINDS: dict[str, type[RemoteAgent]] = {"openai": OpenAIAgent, "http": HttpAgent}


_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(name: str, field: str, text: str, environ: Mapping[str, str] | None = None) -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}`` in an endpoint or model name.

    This lets one manifest target any OpenAI-compatible server by setting
    environment variables, without editing the file.  An unset variable
    without a default is a ``config`` error naming it.
    """
    env = os.environ if environ is None else environ

    def value(match: re.Match[str]) -> str:
        var, default = match.group(1), match.group(2)
        found = env.get(var)
        if found:
            return found
        if default is not None:
            return default
        raise AgentError(
            CONFIG, f"agent {name!r}: {field} uses ${{{var}}}, which is not set; export it"
        )

    return _VARIABLE.sub(value, text)


def build_remote_agent(
    name: str,
    spec: AgentSpec,
    pool: ClientPool,
    breakers: BreakerRegistry | None = None,
    limiters: RateLimiterRegistry | None = None,
) -> Agent:
    """The agent for ``spec``, behind its breaker and rate limiter when configured."""
    kind = REMOTE_KINDS.get(spec.type)
    if kind is None:
        raise AgentError(CONFIG, f"agent {name!r}: type {spec.type!r} is not a remote agent kind")
    expanded = {
        field: expand_env(name, field, value)
        for field, value in (("endpoint", spec.endpoint), ("model", spec.model))
        if value is not None and "${" in value
    }
    if expanded:
        spec = spec.model_copy(update=expanded)
    return govern(name, spec, kind(name, spec, pool), breakers, limiters)


def govern(
    name: str,
    spec: AgentSpec,
    agent: Agent,
    breakers: BreakerRegistry | None = None,
    limiters: RateLimiterRegistry | None = None,
) -> Agent:
    """``agent`` behind the breaker and rate limiter of ``name``, when there are any."""
    breaker = breakers.get(name) if breakers is not None else None
    limiter = limiters.get(name, spec.rate_limit) if limiters is not None else None
    if breaker is None and limiter is None:
        return agent
    return ResilientAgent(agent, breaker, limiter)


class RemoteResources:
    """What the remote agents of one registry share: a pool, breakers, limiters.

    By default every remote agent gets a circuit breaker (``fail_max`` 5,
    ``reset_timeout`` 30 s) and, when its manifest has a ``rateLimit``, a
    rate limiter.  :meth:`aclose` closes the pool's connections; breakers and
    limiters need no closing.
    """

    def __init__(
        self,
        pool: ClientPool | None = None,
        breakers: BreakerRegistry | None = None,
        limiters: RateLimiterRegistry | None = None,
    ) -> None:
        self.pool = pool or ClientPool()
        self.breakers = breakers or BreakerRegistry()
        self.limiters = limiters or RateLimiterRegistry()

    def build(self, name: str, spec: AgentSpec) -> Agent:
        return build_remote_agent(name, spec, self.pool, self.breakers, self.limiters)

    def govern(self, name: str, spec: AgentSpec, agent: Agent) -> Agent:
        """An agent built elsewhere (an MCP server), behind this registry's breaker and limiter."""
        return govern(name, spec, agent, self.breakers, self.limiters)

    async def aclose(self) -> None:
        await self.pool.aclose()
