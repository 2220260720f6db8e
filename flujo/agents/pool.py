"""Shared HTTP clients for the remote agent kinds.

Opening a TCP (and TLS) connection per agent call costs more than a small
LLM or webhook call itself, and an ``httpx.AsyncClient`` is expensive to
build.  So every remote agent talking to the same origin (scheme, host and
port) shares one client, whose connection pool is bounded by explicit
:class:`httpx.Limits`: a pipeline that fans out to 500 branches opens at most
``max_connections`` sockets to a provider and keeps ``max_keepalive`` of them
warm between steps.

A pool belongs to whoever created it (the runtime, a benchmark, a test), not
to the agents using it: agents never close it, its owner calls
:meth:`ClientPool.aclose` once, which closes every client and socket.

An ``httpx.AsyncClient`` is bound to the event loop it first runs in, so a
pool is used from one event loop; using it from another raises a clear error
instead of failing later inside the connection pool.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httpx

__all__ = ["ClientPool", "PoolLimits", "origin_of"]


@dataclass(frozen=True, slots=True)
class PoolLimits:
    """Bounds of one origin's connection pool and the default timeouts."""

    max_connections: int = 100
    """Open sockets to one origin, busy or idle; further calls wait for one."""
    max_keepalive: int = 50
    """Idle sockets kept open for reuse; should cover the usual concurrency."""
    keepalive_expiry: float = 30.0
    """Seconds an idle socket is kept before it is closed."""
    connect_timeout: float = 10.0
    """Seconds to establish a connection."""
    default_timeout: float = 60.0
    """Read/write/pool timeout when a call does not give its own."""

    def to_httpx(self) -> httpx.Limits:
        return httpx.Limits(
            max_connections=self.max_connections,
            max_keepalive_connections=self.max_keepalive,
            keepalive_expiry=self.keepalive_expiry,
        )

    def timeout(self, seconds: float | None = None) -> httpx.Timeout:
        """The timeout of one call: ``seconds`` for each phase, connect bounded."""
        total = self.default_timeout if seconds is None else seconds
        return httpx.Timeout(total, connect=min(self.connect_timeout, total))


def origin_of(url: str) -> str:
    """``scheme://host:port`` of a URL, the key clients are shared by.

    Raises :class:`ValueError` for URLs that are not absolute http(s) URLs.
    """
    parsed = httpx.URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"not an absolute http(s) URL: {url!r}")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return f"{parsed.scheme}://{parsed.host}:{port}"


class ClientPool:
    """One shared ``httpx.AsyncClient`` per endpoint origin.

    Clients are created on first use.  ``limits`` applies to each origin
    separately; ``timeout`` defaults apply when a request passes none.
    """

    def __init__(self, limits: PoolLimits | None = None) -> None:
        self.limits = limits or PoolLimits()
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    def client_for(self, url: str) -> httpx.AsyncClient:
        """The shared client for ``url``'s origin, created on first use."""
        if self._closed:
            raise RuntimeError("ClientPool is closed")
        self._check_loop()
        key = origin_of(url)
        client = self._clients.get(key)
        if client is None:
            client = httpx.AsyncClient(
                limits=self.limits.to_httpx(),
                timeout=self.limits.timeout(),
                follow_redirects=False,
            )
            self._clients[key] = client
        return client

    @property
    def origins(self) -> list[str]:
        """Origins that currently have a client, for diagnostics and tests."""
        return sorted(self._clients)

    @property
    def closed(self) -> bool:
        return self._closed

    async def aclose(self) -> None:
        """Close every client and its sockets; the pool cannot be used after.

        Must run in the event loop that used the pool (sockets belong to it).
        """
        if self._clients and self._loop is not None and self._loop is not _running_loop():
            raise RuntimeError("ClientPool.aclose() must run in the event loop that used the pool")
        self._closed = True
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()

    async def __aenter__(self) -> ClientPool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _check_loop(self) -> None:
        loop = _running_loop()
        if loop is None:
            return  # building a client outside a loop is harmless
        if self._loop is None or not self._clients:
            self._loop = loop
        elif self._loop is not loop:
            raise RuntimeError(
                "ClientPool is bound to another event loop; create one pool per event loop"
            )


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
