"""The policy at run time: the one agents are built under, and the guard on their outputs.

:func:`use_policy` makes a policy active for a context (and the tasks it
creates); :mod:`flujo.agents.transport` checks endpoints against
:func:`active_policy` when it builds a remote agent, and templates are
compiled and rendered under its template limits.  :class:`OutputGuard`
wraps an agent so outputs over ``maxOutputBytes`` fail the call.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from flujo.domain.agent import Agent, AgentContext, AgentOutput
from flujo.domain.errors import PERMANENT, AgentError
from flujo.domain.templates import use_limits
from flujo.security.policy.data import check_output
from flujo.security.policy.model import SecurityPolicy

__all__ = ["OutputGuard", "active_policy", "use_policy"]


_active: ContextVar[SecurityPolicy | None] = ContextVar("flujo_security_policy", default=None)


def active_policy() -> SecurityPolicy | None:
    """The policy agents are built under, or None (no checks) when none is active."""
    return _active.get()


@contextmanager
def use_policy(policy: SecurityPolicy | None) -> Iterator[SecurityPolicy | None]:
    """Make ``policy`` the one agents are built under, for this context and its tasks.

    A context variable rather than a parameter threaded through the registry:
    asyncio copies it into every task a run creates, and concurrent runs
    with different policies (the operator's namespaces) never see each
    other's.  The policy's template limits (:meth:`SecurityPolicy.template_limits`)
    are made the ones templates are compiled and rendered under, likewise.
    """
    token = _active.set(policy)
    try:
        with use_limits(policy.template_limits() if policy is not None else None):
            yield policy
    finally:
        _active.reset(token)


class OutputGuard:
    """An agent whose outputs are checked against ``maxOutputBytes`` before anyone sees them.

    An output over the cap becomes ``AgentError(permanent)`` carrying the
    call's usage (the tokens were spent), so the engine's retry and fallback
    rules apply as to any other permanent failure.
    """

    def __init__(self, agent: Agent, name: str, policy: SecurityPolicy) -> None:
        self.agent = agent
        self.name = name
        self.policy = policy
        self.supports_sync = agent.supports_sync

    def _checked(self, out: AgentOutput) -> AgentOutput:
        problems = check_output(out.output, self.policy)
        if problems:
            raise AgentError(PERMANENT, f"agent {self.name!r}: {problems[0]}", usage=out.usage)
        return out

    async def run(self, data: Any, context: AgentContext) -> AgentOutput:
        return self._checked(await self.agent.run(data, context))

    def run_sync(self, data: Any, context: AgentContext) -> AgentOutput:
        return self._checked(self.agent.run_sync(data, context))

    async def aclose(self) -> None:
        await self.agent.aclose()

    def __repr__(self) -> str:
        return f"OutputGuard({self.agent!r})"
