"""Serving the web view: the sources chosen on the command line, a socket, uvicorn."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence

from flujo.ui.app import create_app
from flujo.ui.cluster import ClusterRuns
from flujo.ui.local import LocalRuns
from flujo.ui.pages import Source

__all__ = ["allowed_hosts", "is_loopback", "open_sources", "serve"]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def allowed_hosts(host: str) -> list[str]:
    """The ``Host`` headers accepted: the loopback names, or any when serving beyond it."""
    if is_loopback(host):
        return ["127.0.0.1", "localhost", "::1", "[::1]"]
    return ["*"]  # an address the user chose explicitly (--host): they said who may reach it


def open_sources(
    store: str | None, *, cluster: bool, namespaces: Sequence[str], kubectl: str
) -> dict[str, Source]:
    sources: dict[str, Source] = {}
    if cluster:
        sources["cluster"] = ClusterRuns(namespaces, kubectl)
    if store is not None or not cluster:
        sources["local"] = LocalRuns(store)
    return sources


def serve(
    sources: dict[str, Source],
    host: str,
    port: int,
    *,
    announce: Callable[[str], None] = print,
) -> None:
    """Serve until interrupted; ``announce`` gets the address once it is listening."""
    import uvicorn

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    bound = sock.getsockname()[1]
    app = create_app(sources, hosts=allowed_hosts(host))
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    shown = f"[{host}]" if ":" in host else host

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            announce(f"flujo ui: http://{shown}:{bound}/ (Ctrl-C stops it)")  # serving now

    server = Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        for source in sources.values():
            source.close()
