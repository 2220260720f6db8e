"""The usage governor: limits checked before a launch and after usage is added.

Also the budget-reservation test (:func:`fits`) used when launches wait for
calls in flight under ``maxCostUsd``, and the one-line description of a breach.
"""

from __future__ import annotations

from typing import Any

from flujo.domain import errors
from flujo.engine.reducers.batch import Batch
from flujo.engine.reducers.finish import fail_run
from flujo.engine.state import Breach, RunState

__all__ = ["EPS", "describe_breach", "fits", "governor_after", "governor_before"]

EPS = 1e-9


def governor_after(
    b: Batch,
    path: str,
    record: tuple[Any] | None = None,
    failed: tuple[str, str] | None = None,
) -> bool:
    """After usage was added: fail the run if a limit is now exceeded."""
    st = b.state
    if st.breach is not None or st.finished:
        return False
    limits, usage = st.limits, st.usage
    if limits.max_cost_usd is not None and usage.cost_usd > limits.max_cost_usd + EPS:
        exceeded: tuple[Any, float, float] = ("cost", limits.max_cost_usd, usage.cost_usd)
    elif limits.max_tokens is not None and usage.total_tokens > limits.max_tokens:
        exceeded = ("tokens", limits.max_tokens, usage.total_tokens)
    else:
        return False
    limit, limit_value, value = exceeded
    breach = Breach(limit=limit, limit_value=limit_value, value=value, path=path, when="after")
    st.breach = breach
    s = st.steps[path]
    if s.phase == "running":
        st.running.pop(path, None)
        if record is not None:
            # Partial results are kept: the output that crossed the limit is recorded.
            s.phase = "succeeded"
            s.output = record[0]
            st.latest[s.name] = path
        elif failed is not None:
            s.phase = "failed"
    fail_run(b, "UsageLimitExceeded", errors.USAGE_LIMIT, describe_breach(breach), path)
    return True


def governor_before(st: RunState) -> tuple[Any, float, float] | None:
    """Before a launch: the limit that is already reached, if any."""
    limits, usage = st.limits, st.usage
    if limits.max_cost_usd is not None and usage.cost_usd >= limits.max_cost_usd - EPS:
        return "cost", limits.max_cost_usd, usage.cost_usd
    if limits.max_tokens is not None and usage.total_tokens >= limits.max_tokens:
        return "tokens", limits.max_tokens, usage.total_tokens
    if limits.max_launches is not None and st.launches >= limits.max_launches:
        return "launches", limits.max_launches, st.launches
    return None


def fits(st: RunState, cap: float) -> bool:
    """Whether a call costing up to ``cap`` fits beside the usage and the reservations."""
    limit = st.limits.max_cost_usd
    assert limit is not None
    return st.usage.cost_usd + sum(st.reserved.values()) + cap <= limit + EPS


def _usd(value: float) -> str:
    """Dollars with at least cents and as many digits as needed (up to 6), so that
    ``$0.012`` is never shown as ``$0.01`` next to a ``$0.01`` limit."""
    text = f"{value:.6f}".rstrip("0")
    whole, _, cents = text.partition(".")
    return f"${whole}.{cents.ljust(2, '0')}"


def describe_breach(breach: Breach) -> str:
    """E.g. ``cost limit $0.50 exceeded at fanout/b/summarise (iteration 3): $0.53 spent``."""
    iteration = ""
    for segment in reversed(breach.path.split("/")):
        if segment.startswith("iter-"):
            iteration = f" (iteration {segment[5:]})"
            break
    if breach.limit == "cost":
        limit, value = _usd(breach.limit_value), f"{_usd(breach.value)} spent"
        name = "cost limit"
    elif breach.limit == "tokens":
        limit, value = f"{int(breach.limit_value)}", f"{int(breach.value)} tokens used"
        name = "token limit"
    else:
        limit, value = f"{int(breach.limit_value)}", f"{int(breach.value)} launches made"
        name = "launch limit"
    where = "exceeded at" if breach.when == "after" else "reached before launching"
    return f"{name} {limit} {where} {breach.path}{iteration}: {value}"
