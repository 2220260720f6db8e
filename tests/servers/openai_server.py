"""A local server that speaks the real protocols remote agents call.

Agents are tested against real HTTP, never a patched client: this aiohttp
server listens on 127.0.0.1 on an ephemeral port and serves

- ``POST /v1/chat/completions`` — OpenAI-compatible chat completions, with
  tool calls, and streamed as server-sent ``chat.completion.chunk`` events
  when the request says ``"stream": true`` (usage in a last chunk when it asks
  for ``stream_options.include_usage``, as OpenAI does);
- ``POST /hook`` — the JSON webhook of ``http`` agents;

with scripted behaviour: a queue of :class:`Reply` objects (consumed in
order, whatever the route), then a ``responder`` callable, then a default
echo.  A reply can set status, headers (``Retry-After``), a JSON or raw body
(malformed JSON), a delay (slow answers, timeouts) or drop the connection
without answering; a streamed answer can pause between chunks or wait, after
its first piece of text, until the test releases a ``gate``.

It records what clients did, for assertions: every request's path, JSON
body, headers and arrival time; calls in total, successful, per path;
connections opened and currently open; requests the client abandoned
(disconnected while the handler was still working).

It runs in a background thread with its own event loop, so the same object
serves sync tests, ``asyncio.run`` inside tests and benchmarks::

    with OpenAIServer() as server:
        server.script(error(429, "slow down", retry_after=2))
        ...  # call server.base_url
        assert server.calls == 1
"""

from __future__ import annotations

import asyncio
import bisect
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from multidict import CIMultiDict

__all__ = [
    "CHAT_PATH",
    "HOOK_PATH",
    "OpenAIServer",
    "RecordedRequest",
    "Reply",
    "completion",
    "drop",
    "error",
    "malformed",
    "max_in_window",
    "tool_call",
]

CHAT_PATH = "/v1/chat/completions"
HOOK_PATH = "/hook"
_UNSET: Any = object()


@dataclass(frozen=True)
class Reply:
    """One scripted answer."""

    status: int = 200
    json: Any = _UNSET
    """Body, encoded as JSON; ignored when ``body`` is given."""
    body: bytes | None = None
    """Raw body bytes (for malformed answers)."""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    """Seconds to wait before answering (the client may give up meanwhile)."""
    drop: bool = False
    """Close the connection after ``delay`` without sending any response."""
    content_type: str = "application/json"
    chunk_delay: float = 0.0
    """Streamed answers: seconds between chunks (a slow model)."""
    gate: threading.Event | None = None
    """Streamed answers: after the first text chunk, wait until this is set."""


def tool_call(name: str, arguments: Any, call_id: str | None = None) -> dict[str, Any]:
    """One entry of an assistant message's ``tool_calls``."""
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {
        "id": call_id or f"call_{name}",
        "type": "function",
        "function": {"name": name, "arguments": text},
    }


def completion(
    content: str | None,
    *,
    prompt_tokens: int = 10,
    completion_tokens: int = 5,
    finish_reason: str | None = None,
    delay: float = 0.0,
    usage: bool = True,
    tool_calls: list[dict[str, Any]] | None = None,
    chunk_delay: float = 0.0,
    gate: threading.Event | None = None,
) -> Reply:
    """A chat completion answering ``content`` and/or asking for ``tool_calls``."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    body: dict[str, Any] = {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1,
        "model": "test-model",
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": finish_reason or ("tool_calls" if tool_calls else "stop"),
            }
        ],
    }
    if usage:
        body["usage"] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
    return Reply(json=body, delay=delay, chunk_delay=chunk_delay, gate=gate)


def error(
    status: int, message: str, *, retry_after: str | float | None = None, delay: float = 0.0
) -> Reply:
    """An OpenAI-style error answer, optionally with ``Retry-After``."""
    headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
    return Reply(
        status=status,
        json={"error": {"message": message, "type": "test_error", "code": status}},
        headers=headers,
        delay=delay,
    )


def malformed(status: int = 200) -> Reply:
    """A body that claims to be JSON and is cut short."""
    return Reply(status=status, body=b'{"choices": [{"message": {"content": "hel')


def drop(delay: float = 0.0) -> Reply:
    """Close the connection without answering."""
    return Reply(drop=True, delay=delay)


@dataclass
class RecordedRequest:
    """What the server saw of one request."""

    path: str
    headers: CIMultiDict[str]
    """Case-insensitive, as HTTP header names are."""
    body: Any
    """Decoded JSON body, or ``None`` if it was not JSON."""
    arrived: float
    """``time.monotonic()`` when the request arrived."""
    status: int | None = None
    """Status answered; ``None`` while pending, dropped or cancelled."""
    outcome: str = "pending"
    """``pending``, ``answered``, ``dropped`` or ``cancelled`` (client went away)."""
    chunks: int = 0
    """Streamed answers: the events sent so far."""


Responder = Callable[[RecordedRequest], Reply | None]


class _CountingServer(web.Server):
    """aiohttp's low-level server, telling its owner about new connections."""

    def __init__(self, owner: OpenAIServer, **kwargs: Any) -> None:
        super().__init__(owner._handle, **kwargs)
        self.owner = owner

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        self.owner._connection_opened(len(self.connections))


class OpenAIServer:
    """The scripted local server; see the module docstring."""

    def __init__(self, host: str = "127.0.0.1", *, responder: Responder | None = None) -> None:
        self.host = host
        self.port = 0
        self.responder = responder
        self._lock = threading.Lock()
        self._queue: list[Reply] = []
        self._requests: list[RecordedRequest] = []
        self._connections_opened = 0
        self._max_open = 0
        self._in_flight = 0
        self._max_in_flight = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: _CountingServer | None = None
        self._runner: web.ServerRunner | None = None

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> OpenAIServer:
        ready = threading.Event()
        failure: list[BaseException] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._serve, args=(ready, failure), name="openai-test-server", daemon=True
        )
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("test server did not start within 10s")
        if failure:
            raise RuntimeError("test server failed to start") from failure[0]
        return self

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop = self._thread = None

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _serve(self, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._setup())
        except BaseException as exc:
            failure.append(exc)
            ready.set()
            loop.close()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            assert self._runner is not None
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

    async def _setup(self) -> None:
        self._server = _CountingServer(self, handler_cancellation=True, access_log=None)
        self._runner = web.ServerRunner(self._server, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0, backlog=1024)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    # -- addresses ---------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI API base (``…/v1``), an ``openai`` agent's endpoint."""
        return f"{self.url}/v1"

    @property
    def hook_url(self) -> str:
        """The webhook URL, an ``http`` agent's endpoint."""
        return f"{self.url}{HOOK_PATH}"

    # -- scripting ---------------------------------------------------------

    def script(self, *replies: Reply) -> None:
        """Queue replies, answered in order to the next requests (any route)."""
        with self._lock:
            self._queue.extend(replies)

    def reset(self) -> None:
        """Forget scripted replies and recorded requests (connection counts stay)."""
        with self._lock:
            self._queue.clear()
            self._requests.clear()

    # -- observations ------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def calls(self) -> int:
        with self._lock:
            return len(self._requests)

    @property
    def successful(self) -> int:
        """Requests answered with a 2xx status."""
        with self._lock:
            return sum(1 for r in self._requests if r.status is not None and r.status < 300)

    @property
    def cancelled(self) -> int:
        """Requests whose client disconnected before the answer was sent."""
        with self._lock:
            return sum(1 for r in self._requests if r.outcome == "cancelled")

    def calls_per_path(self) -> Counter[str]:
        with self._lock:
            return Counter(r.path for r in self._requests)

    def arrivals(self) -> list[float]:
        """Arrival times (``time.monotonic()``) of every request, in order."""
        with self._lock:
            return [r.arrived for r in self._requests]

    @property
    def connections_opened(self) -> int:
        with self._lock:
            return self._connections_opened

    @property
    def max_open_connections(self) -> int:
        with self._lock:
            return self._max_open

    @property
    def max_in_flight(self) -> int:
        """The most requests being answered at the same time, so far."""
        with self._lock:
            return self._max_in_flight

    @property
    def open_connections(self) -> int:
        """Client connections open right now (idle keep-alive ones included)."""
        server = self._server
        return 0 if server is None else len(server.connections)

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Poll ``predicate`` until true or ``timeout``; the server works in its own thread."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True

    # -- serving -----------------------------------------------------------

    def _connection_opened(self, open_now: int) -> None:
        with self._lock:
            self._connections_opened += 1
            self._max_open = max(self._max_open, open_now)

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        arrived = time.monotonic()
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        record = RecordedRequest(
            path=request.path, headers=CIMultiDict(request.headers), body=body, arrived=arrived
        )
        with self._lock:
            self._requests.append(record)
            reply = self._queue.pop(0) if self._queue else None
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
        try:
            return await self._answer(request, record, reply)
        finally:
            with self._lock:
                self._in_flight -= 1

    async def _answer(
        self, request: web.BaseRequest, record: RecordedRequest, reply: Reply | None
    ) -> web.StreamResponse:
        if reply is None and self.responder is not None:
            reply = self.responder(record)
        if reply is None:
            reply = _default_reply(record)
        try:
            if reply.delay:
                await asyncio.sleep(reply.delay)
        except asyncio.CancelledError:
            record.outcome = "cancelled"
            raise
        if reply.drop:
            record.outcome = "dropped"
            transport = request.transport
            if transport is not None:
                transport.abort()
            raise asyncio.CancelledError  # nothing more to do on a dead connection
        record.status, record.outcome = reply.status, "answered"
        body = record.body if isinstance(record.body, dict) else {}
        if body.get("stream") and reply.status < 300 and _is_completion(reply.json):
            return await self._stream(request, record, reply, body)
        if reply.body is not None:
            data = reply.body
        else:
            data = json.dumps(None if reply.json is _UNSET else reply.json).encode()
        return web.Response(
            status=reply.status, body=data, headers=reply.headers, content_type=reply.content_type
        )

    async def _stream(
        self, request: web.BaseRequest, record: RecordedRequest, reply: Reply, body: dict[str, Any]
    ) -> web.StreamResponse:
        """The completion as ``chat.completion.chunk`` server-sent events, then ``[DONE]``."""
        response = web.StreamResponse(
            status=200, headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        try:
            for chunk in _chunks(reply.json, include_usage):
                await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                record.chunks += 1
                has_text = any(c.get("delta", {}).get("content") for c in chunk["choices"])
                if reply.gate is not None and has_text and not reply.gate.is_set():
                    await asyncio.get_running_loop().run_in_executor(None, reply.gate.wait, 30)
                if reply.chunk_delay:
                    await asyncio.sleep(reply.chunk_delay)
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            record.outcome = "cancelled"
            raise
        return response


def _is_completion(body: Any) -> bool:
    return isinstance(body, dict) and isinstance(body.get("choices"), list)


def _chunks(completion: dict[str, Any], include_usage: bool) -> list[dict[str, Any]]:
    """How an OpenAI server streams ``completion``: role, text pieces, tool calls, finish, usage."""
    choice = completion["choices"][0]
    message = choice["message"]

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": completion["id"],
            "object": "chat.completion.chunk",
            "created": completion.get("created", 1),
            "model": completion["model"],
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    out = [chunk({"role": "assistant", "content": ""})]
    text = message.get("content") or ""
    pieces = [p for p in text.replace(" ", " \0").split("\0") if p]
    out += [chunk({"content": piece}) for piece in pieces]
    for index, call in enumerate(message.get("tool_calls") or []):
        arguments = call["function"]["arguments"]
        half = len(arguments) // 2
        first = {
            "index": index,
            "id": call["id"],
            "type": "function",
            "function": {"name": call["function"]["name"], "arguments": arguments[:half]},
        }
        out.append(chunk({"tool_calls": [first]}))
        rest = {"index": index, "function": {"arguments": arguments[half:]}}
        out.append(chunk({"tool_calls": [rest]}))
    out.append(chunk({}, choice["finish_reason"]))
    if include_usage and "usage" in completion:
        last = chunk({})
        last["choices"] = []
        last["usage"] = completion["usage"]
        out.append(last)
    return out


def _default_reply(record: RecordedRequest) -> Reply:
    """Echo: a chat completion of the last user message, or the webhook's input."""
    body = record.body if isinstance(record.body, dict) else {}
    if record.path == CHAT_PATH:
        messages = body.get("messages") or []
        words = sum(len(str(m.get("content", "")).split()) for m in messages)
        last = str(messages[-1].get("content", "")) if messages else ""
        content = f"echo: {last}"
        return completion(content, prompt_tokens=words, completion_tokens=len(content.split()))
    if record.path == HOOK_PATH:
        return Reply(json={"output": body.get("input")})
    return error(404, f"no route for {record.path}")


def max_in_window(times: list[float], width: float) -> int:
    """The most arrivals in any window ``[t, t + width)`` (``t`` an arrival time)."""
    ordered = sorted(times)
    return max(
        (bisect.bisect_left(ordered, start + width) - i for i, start in enumerate(ordered)),
        default=0,
    )
