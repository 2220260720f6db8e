"""A real MCP server (the ``mcp`` SDK's ``MCPServer``) on 127.0.0.1, streamable HTTP.

It runs under uvicorn in a background thread with its own event loop, like
:class:`~tests.servers.openai_server.OpenAIServer`, and serves a few tools:

- ``add(a, b)`` → ``a + b`` (structured output);
- ``shout(text)`` → the text in capitals;
- ``explode(reason)`` → fails (a tool error the model should see);
- ``secret()`` → a tool the tests deny.

``calls`` records each tool call as ``(name, arguments)``; ``headers`` the
HTTP headers of every request.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

__all__ = ["McpTestServer"]


class McpTestServer:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def _app(self) -> Any:
        mcp = MCPServer("flujo-test-tools", log_level="WARNING")
        calls, lock = self.calls, self._lock

        @mcp.tool(description="Add two integers.")
        def add(a: int, b: int) -> int:
            with lock:
                calls.append(("add", {"a": a, "b": b}))
            return a + b

        @mcp.tool(description="The text in capitals.")
        def shout(text: str) -> str:
            with lock:
                calls.append(("shout", {"text": text}))
            return text.upper()

        @mcp.tool(description="Always fails.")
        def explode(reason: str) -> str:
            with lock:
                calls.append(("explode", {"reason": reason}))
            raise ToolError(f"boom: {reason}")

        @mcp.tool(description="Never offered: the tests deny it.")
        def secret() -> str:
            with lock:
                calls.append(("secret", {}))
            return "leaked"

        app = mcp.streamable_http_app(host="127.0.0.1")
        headers = self.headers

        async def recording(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                with lock:
                    headers.append({k.decode(): v.decode() for k, v in scope.get("headers", [])})
            await app(scope, receive, send)

        return recording

    def start(self) -> McpTestServer:
        config = uvicorn.Config(
            self._app(), host="127.0.0.1", port=0, log_level="warning", lifespan="on"
        )
        self._server = uvicorn.Server(config)
        ready = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            assert self._server is not None
            task = loop.create_task(self._server.serve())

            async def wait_started() -> None:
                while not self._server.started and not task.done():  # type: ignore[union-attr]
                    await asyncio.sleep(0.01)
                ready.set()

            loop.run_until_complete(wait_started())
            loop.run_until_complete(task)
            loop.close()

        self._thread = threading.Thread(target=serve, name="mcp-test-server", daemon=True)
        self._thread.start()
        if not ready.wait(20) or not self._server.started:
            raise RuntimeError("the MCP test server did not start")
        sockets = self._server.servers[0].sockets
        self.port = int(sockets[0].getsockname()[1])
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        self._server = self._thread = None

    def __enter__(self) -> McpTestServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
