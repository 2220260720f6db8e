"""An agent behind its rate limiter and circuit breaker.

The order matters.  An open breaker refuses at once, before the call queues
for a rate slot (failing fast must not wait).  Otherwise the call waits for
its slot and then goes through the breaker, which re-checks the state: it may
have opened while the call waited.  The tokens the call used — on success,
or reported on its failure — are debited from the agent's per-minute budget.

The inner agent still makes exactly one attempt; retries are the engine's.
"""

from __future__ import annotations

import time
from typing import Any

from flujo.domain.agent import AgentContext, AgentOutput, BaseAgent
from flujo.domain.errors import AgentError
from flujo.domain.usage import Usage
from flujo.hooks import rate_limit_waited
from flujo.resilience.breaker import AgentBreaker
from flujo.resilience.ratelimit import RateLimiter

__all__ = ["ResilientAgent"]


class ResilientAgent(BaseAgent):
    """Wraps an agent with an optional rate limiter and an optional circuit breaker."""

    def __init__(
        self,
        inner: Any,
        breaker: AgentBreaker | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.inner = inner
        self.breaker = breaker
        self.limiter = limiter

    async def run(self, data: Any, context: AgentContext) -> AgentOutput:
        if self.breaker is not None:
            self.breaker.check()
        if self.limiter is None:
            return await self._call(data, context)
        waited = time.monotonic()
        await self.limiter.enter()
        try:
            await self.limiter.acquire()
            rate_limit_waited(context.agent_name, time.monotonic() - waited)
            return await self._call(data, context)
        finally:
            self.limiter.leave()

    async def _call(self, data: Any, context: AgentContext) -> AgentOutput:
        try:
            if self.breaker is None:
                result: AgentOutput = await self.inner.run(data, context)
            else:
                result = await self.breaker.call(lambda: self.inner.run(data, context))
        except AgentError as exc:
            if isinstance(exc.usage, Usage):
                self._record(exc.usage)
            raise
        self._record(result.usage)
        return result

    def _record(self, usage: Usage) -> None:
        if self.limiter is not None:
            self.limiter.record(usage.total_tokens)

    async def aclose(self) -> None:
        await self.inner.aclose()

    def __repr__(self) -> str:
        return f"ResilientAgent({self.inner!r})"
