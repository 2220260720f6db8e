"""The ``/metrics`` HTTP endpoint, served from a daemon thread."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, start_http_server

__all__ = ["MetricsServer", "serve_metrics"]


class MetricsServer:
    """A running ``/metrics`` endpoint; :meth:`close` stops it."""

    def __init__(self, server: Any, thread: Any) -> None:
        self._server = server
        self._thread = thread
        self.port: int = int(server.server_port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve_metrics(
    port: int, registry: CollectorRegistry, *, addr: str = "127.0.0.1"
) -> MetricsServer:
    """Serve ``registry`` on ``http://addr:port/metrics`` from a daemon thread.

    Loopback by default: metrics name pipelines and agents, and exposing them
    on every interface is a choice the caller makes explicitly (the operator's
    pod passes ``0.0.0.0``).  ``port`` 0 picks a free port (see ``.port``).
    """
    server, thread = start_http_server(port, addr=addr, registry=registry)
    return MetricsServer(server, thread)
