"""One agent call for one ``LaunchStep``, turned into a result event.

Shared by the embedded runtime and the step-runner pod, so a step behaves
the same under both executors: same context, same timeout handling, same
classification of failures.
"""

from __future__ import annotations

import asyncio

from flujo.agents.base import Agent, AgentContext, AgentOutput
from flujo.domain import errors
from flujo.domain.errors import AgentError
from flujo.domain.usage import Usage
from flujo.engine.commands import LaunchStep
from flujo.engine.events import StepFailed, StepSucceeded
from flujo.hooks import call_started

__all__ = ["call_agent", "context_for", "crashed", "failed", "succeeded"]


def context_for(cmd: LaunchStep, run_id: str = "") -> AgentContext:
    return AgentContext(
        step_path=cmd.path,
        step_name=cmd.step,
        attempt=cmd.attempt,
        agent_name=cmd.agent,
        run_id=run_id,
        timeout_seconds=cmd.timeout_seconds,
        call_index=cmd.call_index,
    )


def succeeded(cmd: LaunchStep, out: AgentOutput) -> StepSucceeded:
    return StepSucceeded.model_construct(
        path=cmd.path, attempt=cmd.attempt, output=out.output, usage=out.usage
    )


def failed(cmd: LaunchStep, exc: AgentError) -> StepFailed:
    usage = exc.usage if isinstance(exc.usage, Usage) else Usage()
    return StepFailed(
        path=cmd.path,
        attempt=cmd.attempt,
        error_class=exc.error_class,
        message=exc.message,
        usage=usage,
        retry_after=exc.retry_after,
    )


def crashed(cmd: LaunchStep, exc: Exception) -> StepFailed:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return StepFailed(
        path=cmd.path,
        attempt=cmd.attempt,
        error_class=errors.AGENT_ERROR,
        message=f"agent {cmd.agent!r} raised {type(exc).__name__}: {text}".rstrip(": "),
    )


def timed_out(cmd: LaunchStep) -> StepFailed:
    return StepFailed(
        path=cmd.path,
        attempt=cmd.attempt,
        error_class=errors.TIMEOUT,
        message=f"agent {cmd.agent!r} gave no answer within {cmd.timeout_seconds:g}s",
    )


async def call_agent(agent: Agent, cmd: LaunchStep, run_id: str = "") -> StepSucceeded | StepFailed:
    """Wait out the backoff delay, call once, classify. Cancellation propagates."""
    try:
        if cmd.delay_seconds:
            await asyncio.sleep(cmd.delay_seconds)
        call_started(cmd)
        call = agent.run(cmd.input, context_for(cmd, run_id))
        if cmd.timeout_seconds is not None:
            out = await asyncio.wait_for(call, cmd.timeout_seconds)
        else:
            out = await call
        return succeeded(cmd, out)
    except AgentError as exc:
        return failed(cmd, exc)
    except TimeoutError:
        return timed_out(cmd)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        return crashed(cmd, exc)
