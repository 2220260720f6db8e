"""What an agent is, as far as the runtimes are concerned.

An agent turns one step input into one output, reporting the usage it
consumed.  Agents are called by executors (the embedded asyncio runtime, the
step-runner inside a pod); the state machine never sees them, only their
names.

Two calling conventions exist because most built-in transforms are instant
and CPU-only: running them inline avoids an asyncio task per step, which is
most of the orchestration overhead for trivial steps.

- ``async def run(data, context) -> AgentOutput`` — every agent has it;
- ``def run_sync(data, context) -> AgentOutput`` — optional; when
  ``supports_sync`` is true the embedded runtime calls it inline.

Failures are reported by raising :class:`flujo.domain.errors.AgentError`
with an error class; any other exception is classified ``agent_error``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from flujo.domain.usage import Usage

__all__ = [
    "Agent",
    "AgentContext",
    "AgentOutput",
    "BaseAgent",
    "Budget",
    "CallableAgent",
    "TokenSink",
    "as_agent",
]


TokenSink = Callable[[str, str], None]
"""Receives ``(step path, text)`` for every piece of a streamed answer, as it arrives."""

_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class Budget:
    """What the run may still spend when a call starts: its limits minus its usage.

    An agent that makes several billed calls in one step (the tool loop) checks
    its own spend against this between calls and inside a streamed answer, so a
    limit crossed mid-step stops the step at once rather than at its end.
    ``None`` means no such limit.
    """

    cost_usd: float | None = None
    tokens: int | None = None

    def crossed(self, spent: Usage) -> str | None:
        """``cost`` or ``tokens`` when ``spent`` goes strictly above what remains, else None."""
        if self.cost_usd is not None and spent.cost_usd > self.cost_usd + _EPS:
            return "cost"
        if self.tokens is not None and spent.total_tokens > self.tokens:
            return "tokens"
        return None

    def reached(self, spent: Usage) -> str | None:
        """``cost`` or ``tokens`` when ``spent`` leaves nothing of that limit, else None."""
        if self.cost_usd is not None and spent.cost_usd >= self.cost_usd - _EPS:
            return "cost"
        if self.tokens is not None and spent.total_tokens >= self.tokens:
            return "tokens"
        return None


@dataclass(frozen=True, slots=True)
class AgentContext:
    """Where a call comes from: for logs, metrics, traces and scripted replies."""

    step_path: str
    step_name: str
    attempt: int = 1
    agent_name: str = ""
    run_id: str = ""
    timeout_seconds: float | None = None
    call_index: int = 0
    """How many times the run launched this agent before (scripted replies use it)."""
    extra: dict[str, Any] = field(default_factory=dict)
    budget: Budget | None = None
    """What the run could still spend when this call started (None: no cost/token limit)."""
    on_token: TokenSink | None = None
    """When set, model agents stream their answer and pass each piece here."""


@dataclass(frozen=True, slots=True)
class AgentOutput:
    """An agent's answer and what it cost."""

    output: Any
    usage: Usage = field(default_factory=Usage)
    tool_calls: tuple[dict[str, Any], ...] = ()
    """The tool calls a tool loop made for this answer: round, tool, arguments, output or
    error (they reach the result event, and so the transcript)."""


@runtime_checkable
class Agent(Protocol):
    """The interface every agent kind implements."""

    supports_sync: bool

    async def run(self, data: Any, context: AgentContext) -> AgentOutput: ...

    def run_sync(self, data: Any, context: AgentContext) -> AgentOutput: ...

    async def aclose(self) -> None: ...


class BaseAgent:
    """Convenience base: subclasses implement ``run`` (and maybe ``run_sync``)."""

    supports_sync: bool = False

    async def run(self, data: Any, context: AgentContext) -> AgentOutput:
        if self.supports_sync:
            return self.run_sync(data, context)
        raise NotImplementedError

    def run_sync(self, data: Any, context: AgentContext) -> AgentOutput:
        raise NotImplementedError(f"{type(self).__name__} has no synchronous call")

    async def aclose(self) -> None:
        """Release connections; called once when the runtime shuts down."""


def _wrap(result: Any) -> AgentOutput:
    return result if isinstance(result, AgentOutput) else AgentOutput(output=result)


class CallableAgent(BaseAgent):
    """A plain Python function (sync or async) used as an agent, embedded only.

    The function receives the step input; if it declares a second parameter it
    also receives the :class:`AgentContext`.  Returning an :class:`AgentOutput`
    reports usage; any other value is the output with zero usage.
    """

    def __init__(self, fn: Callable[..., Any], name: str | None = None) -> None:
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "callable")
        self.is_async = inspect.iscoroutinefunction(fn)
        self.supports_sync = not self.is_async
        try:
            params = inspect.signature(fn).parameters
            self.wants_context = len(params) >= 2
        except (TypeError, ValueError):
            self.wants_context = False

    def run_sync(self, data: Any, context: AgentContext) -> AgentOutput:
        return _wrap(self.fn(data, context) if self.wants_context else self.fn(data))

    async def run(self, data: Any, context: AgentContext) -> AgentOutput:
        if self.is_async:
            call = self.fn(data, context) if self.wants_context else self.fn(data)
            return _wrap(await call)
        return self.run_sync(data, context)


def as_agent(obj: Any, name: str | None = None) -> Agent:
    """Accept an agent object or a plain callable."""
    if isinstance(obj, Agent):
        return obj
    if callable(obj):
        return CallableAgent(obj, name)
    raise TypeError(f"not an agent or callable: {obj!r}")
