"""Executor hooks: the moments of a run that no event marks, for telemetry.

A :class:`~flujo.runtime.RunObserver` sees each event with the commands it
produced, which is enough for counts, usage and durations.  Three facts are
known only inside the executor:

- how long ``advance()`` took (orchestration overhead) — :func:`record_advance`;
- when an agent call actually started, after the backoff delay, the task
  scheduling or the pod start (queueing time) — :func:`call_started`;
- how long a call waited for its rate-limit slot — :func:`rate_limit_waited`;
- each tool call a model step's tool loop made, with its duration and
  outcome — :func:`tool_called` (a sink without a ``tool_called`` method is
  skipped).

This module sits just above the engine and below everything that calls it
(resilience, agents, runtimes), so those layers report without importing the
observability adapters above them; the adapters *bind* themselves here.  It
imports no telemetry library: a hook costs a context-variable lookup when
nobody listens.

``record_advance`` stores the duration next to the event, in a context
variable, for observers to read while observing that same event.  The other
two run in agent tasks; an observer that wants them binds itself to the
run's context when the run starts (:func:`bind`), and asyncio copies that
context into every task the run creates — so concurrent runs, each in its own
task, never see each other's calls.
"""

from __future__ import annotations

from collections.abc import Hashable
from contextvars import ContextVar
from typing import Protocol

from flujo.engine.commands import LaunchStep

__all__ = [
    "ExecutorSink",
    "advance_seconds",
    "bind",
    "call_started",
    "rate_limit_waited",
    "record_advance",
    "tool_called",
    "unbind",
]


class ExecutorSink(Protocol):
    """What a bound observer receives from executor hooks (see :func:`bind`)."""

    def call_started(self, key: Hashable, cmd: LaunchStep) -> None: ...

    def rate_limit_waited(self, key: Hashable, agent: str, seconds: float) -> None: ...


_ADVANCE: ContextVar[tuple[object, float] | None] = ContextVar("flujo_advance", default=None)
_SINKS: ContextVar[tuple[tuple[ExecutorSink, Hashable], ...]] = ContextVar(
    "flujo_sinks", default=()
)


def record_advance(event: object, seconds: float) -> None:
    """Executor: ``advance(state, event)`` took ``seconds``; call before the observers."""
    _ADVANCE.set((event, seconds))


def advance_seconds(event: object) -> float | None:
    """Observer: how long ``advance`` took for ``event``, if the executor said so."""
    found = _ADVANCE.get()
    if found is None or found[0] is not event:
        return None
    return found[1]


def bind(sink: ExecutorSink, key: Hashable) -> None:
    """Observer: receive this context's executor hooks for the run ``key``.

    Call while observing ``RunStarted`` — i.e. in the run's own task, before
    it creates the tasks of its agent calls, which inherit the binding.
    """
    _SINKS.set((*_SINKS.get(), (sink, key)))


def unbind(sink: ExecutorSink, key: Hashable) -> None:
    """Observer: stop receiving hooks for ``key`` (call when the run finishes)."""
    _SINKS.set(tuple(b for b in _SINKS.get() if b[0] is not sink or b[1] != key))


def call_started(cmd: LaunchStep) -> None:
    """Executor: the agent call for ``cmd`` starts now (after any backoff delay)."""
    for sink, key in _SINKS.get():
        try:
            sink.call_started(key, cmd)
        except Exception:  # telemetry never fails a call
            continue


def tool_called(
    path: str, attempt: int, tool: str, agent: str, seconds: float, error_class: str | None
) -> None:
    """Executor: the tool loop of step ``path`` called ``tool`` (of ``agent``) for ``seconds``.

    ``error_class`` is None when the tool answered.
    """
    for sink, key in _SINKS.get():
        hook = getattr(sink, "tool_called", None)
        if hook is None:
            continue
        try:
            hook(key, path, attempt, tool, agent, seconds, error_class)
        except Exception:  # telemetry never fails a call
            continue


def rate_limit_waited(agent: str, seconds: float) -> None:
    """Executor: a call to ``agent`` waited ``seconds`` for its rate-limit slot."""
    for sink, key in _SINKS.get():
        try:
            sink.rate_limit_waited(key, agent, seconds)
        except Exception:
            continue
