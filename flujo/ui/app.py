"""The web app of ``flujo ui``: Starlette routes, Jinja2 pages, server-sent events.

Pages are rendered on the server with autoescaping on (a step output of
``<script>`` shows as text); the one script (``static/ui.js``, no build step,
nothing fetched from elsewhere) only listens to the run's event stream,
recolours nodes and opens a node's details.  Actions are forms POSTed with
the process's CSRF token (a per-process secret; a request without it gets
403), the ``Host`` header must be the address served (no DNS rebinding), the
Content-Security-Policy allows this origin only, and no CORS header is ever
sent.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from flujo.runtime.store import StoreError
from flujo.ui.pages import Pages, Source
from flujo.ui.view import ActionError

__all__ = ["CSP", "create_app"]

HERE = Path(__file__).parent
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
POLL_SECONDS = 0.25
"""How often the server looks at a live embedded run's journal length (one SQLite read)."""
KEEPALIVE_SECONDS = 15.0


def create_app(
    sources: Mapping[str, Source], *, hosts: list[str], token: str | None = None
) -> Starlette:
    """The app serving ``sources`` (``local``, ``cluster``) to requests for ``hosts``."""
    pages = Pages(sources, token or secrets.token_urlsafe(32))

    async def security_headers(request: Request, call_next: Callable[[Request], Any]) -> Response:
        response: Response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    async def index(request: Request) -> Response:
        return HTMLResponse(await run_in_threadpool(pages.runs_page, dict(request.query_params)))

    async def run_page(request: Request) -> Response:
        source, key = pages.target(request.path_params)
        html = await run_in_threadpool(pages.run_page, source, key, dict(request.query_params))
        return HTMLResponse(html)

    async def step(request: Request) -> Response:
        source, key = pages.target(request.path_params)
        q = request.query_params
        html = await run_in_threadpool(pages.step_fragment, source, key, q.get("node", ""))
        return HTMLResponse(html)

    async def actions(request: Request) -> Response:
        source, key = pages.target(request.path_params)
        return HTMLResponse(await run_in_threadpool(pages.actions_fragment, source, key))

    async def io(request: Request) -> Response:
        source, key = pages.target(request.path_params)
        return HTMLResponse(await run_in_threadpool(pages.io_fragment, source, key))

    async def events(request: Request) -> Response:
        source, key = pages.target(request.path_params)
        await run_in_threadpool(pages.exists, source, key)  # 404 before the stream starts
        return StreamingResponse(
            _stream(pages, source, key),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def act(request: Request) -> Response:
        verb = request.path_params["verb"]
        source, key = pages.target(request.path_params)
        form = await request.form()
        given = str(form.get("csrf") or request.headers.get("x-csrf-token") or "")
        if not given or not hmac.compare_digest(given, pages.token):
            return PlainTextResponse("error: missing or wrong CSRF token\n", status_code=403)
        origin = request.headers.get("origin")
        if origin and origin.split("://", 1)[-1] != request.headers.get("host"):
            return PlainTextResponse("error: cross-origin request refused\n", status_code=403)
        fields = {k: str(v) for k, v in form.items() if isinstance(v, str)}
        try:
            notice = await run_in_threadpool(pages.act, verb, source, key, fields)
            query = {"notice": notice}
        except (ActionError, StoreError) as exc:
            query = {"error": str(exc)}
        url = f"{pages.run_url(source, key)}?{urlencode(query)}"
        return RedirectResponse(url, status_code=303)

    async def not_found(request: Request, exc: Exception) -> Response:
        return HTMLResponse(pages.error_page(str(exc) or "not found"), status_code=404)

    routes = [
        Route("/", index),
        Route("/runs/{source}/{key:path}", run_page),
        Route("/step/{source}/{key:path}", step),
        Route("/actions/{source}/{key:path}", actions),
        Route("/io/{source}/{key:path}", io),
        Route("/events/{source}/{key:path}", events),
        Route("/act/{verb}/{source}/{key:path}", act, methods=["POST"]),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
    ]
    from starlette.middleware.base import BaseHTTPMiddleware

    return Starlette(
        routes=routes,
        middleware=[
            Middleware(TrustedHostMiddleware, allowed_hosts=hosts),
            Middleware(BaseHTTPMiddleware, dispatch=security_headers),
        ],
        exception_handlers={ActionError: not_found, StoreError: not_found},
    )


def _sse(event: str, data: Any) -> str:
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"event: {event}\ndata: {text}\n\n"


async def _stream(pages: Pages, source: str, key: str) -> AsyncIterator[str]:
    """The run's node phases and totals each time they change; ``end`` once it finished."""
    yield "retry: 2000\n\n"
    last: Any = None
    quiet_since = time.monotonic()
    changes = pages.changes(source, key)
    try:
        async for payload in changes:
            if payload is None:  # nothing new: a comment now and then keeps proxies open
                if time.monotonic() - quiet_since > KEEPALIVE_SECONDS:
                    quiet_since = time.monotonic()
                    yield ": keepalive\n\n"
                continue
            if payload != last:
                last = payload
                quiet_since = time.monotonic()
                yield _sse("state", payload)
            if payload["summary"]["finished"]:
                yield _sse("end", {})
                return
    except ActionError as exc:
        yield _sse("failure", {"message": str(exc)})
    finally:
        await changes.aclose()
    await asyncio.sleep(0)
