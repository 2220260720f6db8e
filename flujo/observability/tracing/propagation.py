"""Trace context: run-derived ids and W3C ``traceparent`` propagation into step pods.

Trace and run-span ids are derived from the run's uid, so step pods can name
their parent before the run span exists, and the operator can emit the run
span after a restart with the ids the pods already used.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = [
    "TRACEPARENT_ENV",
    "FlujoIdGenerator",
    "context_from_traceparent",
    "run_span_context",
    "run_span_ids",
    "run_traceparent",
    "traceparent_of",
]

TRACEPARENT_ENV = "TRACEPARENT"

_FORCED_IDS: ContextVar[tuple[int, int] | None] = ContextVar("flujo_forced_ids", default=None)


class FlujoIdGenerator(RandomIdGenerator):
    """Random ids, except for run spans, whose ids derive from the run's id.

    Deterministic run-span ids are what let step pods name their parent
    before the run span exists, and the operator emit the run span after a
    restart with the ids the pods already used.
    """

    def generate_trace_id(self) -> int:
        forced = _FORCED_IDS.get()
        return forced[0] if forced is not None else super().generate_trace_id()

    def generate_span_id(self) -> int:
        forced = _FORCED_IDS.get()
        if forced is not None:
            _FORCED_IDS.set(None)  # only the run span itself
            return forced[1]
        return super().generate_span_id()


def _derive(kind: str, run_id: str, size: int) -> int:
    digest = hashlib.sha256(f"flujo/{kind}/{run_id}".encode()).digest()
    return int.from_bytes(digest[:size], "big") or 1  # all-zero ids are invalid


def run_span_context(run_id: str) -> trace.SpanContext:
    """The run span's context: trace id and span id derived from ``run_id``."""
    return trace.SpanContext(
        trace_id=_derive("trace", run_id, 16),
        span_id=_derive("run-span", run_id, 8),
        is_remote=True,
        trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
    )


def traceparent_of(context: trace.SpanContext) -> str:
    """The W3C ``traceparent`` header value of a span context."""
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def run_traceparent(run_id: str) -> str:
    """The ``traceparent`` of a run (PipelineRun uid): store it in the status, pass it
    to step pods as ``TRACEPARENT``."""
    return traceparent_of(run_span_context(run_id))


def context_from_traceparent(traceparent: str | None) -> Context | None:
    """An OpenTelemetry context whose current span is the remote parent, or None if invalid."""
    if not traceparent:
        return None
    ctx = TraceContextTextMapPropagator().extract({"traceparent": traceparent.strip()})
    if not trace.get_current_span(ctx).get_span_context().is_valid:
        return None
    return ctx


@contextmanager
def run_span_ids(run_id: str | None) -> Iterator[None]:
    """Within it, the next span started gets the ids of ``run_id``'s run span.

    Needs a provider using :class:`FlujoIdGenerator`; ``run_id`` None changes nothing.
    """
    if run_id is None:
        yield
        return
    ids = run_span_context(run_id)
    token = _FORCED_IDS.set((ids.trace_id, ids.span_id))
    try:
        yield
    finally:
        _FORCED_IDS.reset(token)
