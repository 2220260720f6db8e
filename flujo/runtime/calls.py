"""One agent call for one ``LaunchStep``, turned into a result event.

Shared by the embedded runtime and the step-runner pod, so a step behaves
the same under both executors: same context, same timeout handling, same
classification of failures.
"""

from __future__ import annotations

import asyncio

from flujo.agents.base import Agent, AgentContext, AgentOutput
from flujo.domain import errors
from flujo.domain.agent import Budget, TokenSink
from flujo.domain.errors import AgentError
from flujo.domain.usage import Usage
from flujo.engine.commands import LaunchStep
from flujo.engine.events import StepFailed, StepSucceeded
from flujo.hooks import call_started
from flujo.spec.limits import UsageLimits

__all__ = ["budget_of", "call_agent", "context_for", "crashed", "failed", "succeeded"]


def budget_of(limits: UsageLimits, usage: Usage) -> Budget | None:
    """What the run may still spend: its cost and token limits minus its usage so far."""
    if limits.max_cost_usd is None and limits.max_tokens is None:
        return None
    return Budget(
        cost_usd=None
        if limits.max_cost_usd is None
        else max(0.0, limits.max_cost_usd - usage.cost_usd),
        tokens=None
        if limits.max_tokens is None
        else max(0, limits.max_tokens - usage.total_tokens),
    )


def context_for(
    cmd: LaunchStep,
    run_id: str = "",
    *,
    budget: Budget | None = None,
    on_token: TokenSink | None = None,
) -> AgentContext:
    return AgentContext(
        step_path=cmd.path,
        step_name=cmd.step,
        attempt=cmd.attempt,
        agent_name=cmd.agent,
        run_id=run_id,
        timeout_seconds=cmd.timeout_seconds,
        call_index=cmd.call_index,
        budget=budget,
        on_token=on_token,
    )


def succeeded(cmd: LaunchStep, out: AgentOutput) -> StepSucceeded:
    if out.tool_calls:
        return StepSucceeded.model_construct(
            path=cmd.path,
            attempt=cmd.attempt,
            output=out.output,
            usage=out.usage,
            tool_calls=list(out.tool_calls),
        )
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
        tool_calls=list(getattr(exc, "tool_calls", ())) or None,
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


async def call_agent(
    agent: Agent,
    cmd: LaunchStep,
    run_id: str = "",
    *,
    budget: Budget | None = None,
    on_token: TokenSink | None = None,
) -> StepSucceeded | StepFailed:
    """Wait out the backoff delay, call once, classify. Cancellation propagates.

    ``budget`` is what the run could still spend at launch (agents making
    several billed calls stop between them once it is crossed); ``on_token``
    receives a streamed answer's text as it arrives.
    """
    try:
        if cmd.delay_seconds:
            await asyncio.sleep(cmd.delay_seconds)
        call_started(cmd)
        call = agent.run(cmd.input, context_for(cmd, run_id, budget=budget, on_token=on_token))
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
