"""Span delivery that never holds up a run: the guarded OTLP exporter."""

from __future__ import annotations

import socket
import time
import warnings
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from flujo.observability.info import ObservabilityWarning

__all__ = ["GuardedExporter"]


class GuardedExporter(SpanExporter):
    """Delegates to the OTLP exporter; when the collector is unreachable or refuses,
    drops spans instead, warning once.

    The OTLP exporter alone retries with backoff for up to its timeout on
    every batch and logs each attempt; a quick TCP probe first makes an
    absent collector cost a refused connection, not seconds.  After a failure
    exports are skipped for ``retry_seconds``, then tried again silently.
    """

    retry_seconds = 30.0

    def __init__(
        self,
        inner: SpanExporter,
        url: str,
        *,
        probe_timeout: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inner = inner
        self.url = url
        self.probe_timeout = probe_timeout
        self.clock = clock
        self.failures = 0
        self._down_until: float | None = None
        self._warned = False

    def _address(self) -> tuple[str, int]:
        parts = urlsplit(self.url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return parts.hostname or "localhost", port

    def _reachable(self) -> str | None:
        try:
            with socket.create_connection(self._address(), timeout=self.probe_timeout):
                return None
        except OSError as exc:
            return exc.strerror or type(exc).__name__

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._down_until is not None and self.clock() < self._down_until:
            return SpanExportResult.FAILURE
        problem = self._reachable()
        if problem is None:
            try:
                result = self.inner.export(spans)
            except Exception as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if result is SpanExportResult.SUCCESS:
                    self._down_until = None
                    return result
                problem = "the collector did not accept the spans"
        self._trip(problem)
        return SpanExportResult.FAILURE

    def _trip(self, problem: str) -> None:
        self.failures += 1
        self._down_until = self.clock() + self.retry_seconds
        if not self._warned:
            self._warned = True
            warnings.warn(
                f"tracing: cannot export spans to {self.url} ({problem}); runs go on "
                "without traces (further export failures are not reported)",
                ObservabilityWarning,
                stacklevel=2,
            )

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)
