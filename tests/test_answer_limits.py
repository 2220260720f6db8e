"""Answer bodies are read incrementally and bounded: a hostile server cannot fill memory.

Two real servers: the OpenAI-compatible test server (a body with Content-Length)
and a raw HTTP/1.1 server streaming a chunked body that never ends, which only
an incremental reader can refuse.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from flujo import AgentManifest, AgentRegistry, Flujo, Pipeline, Step
from flujo.agents.transport import MAX_ANSWER_BYTES, answer_limit
from flujo.security.policy import SecurityPolicy

from tests.servers import OpenAIServer, completion


def agent(endpoint: str) -> AgentManifest:
    return AgentManifest.model_validate(
        {
            "metadata": {"name": "llm"},
            "spec": {"type": "openai", "model": "m", "endpoint": endpoint},
        }
    )


def run(endpoint: str, policy: SecurityPolicy) -> Any:
    registry = AgentRegistry()
    registry.register_manifest(agent(endpoint))
    return Flujo(
        Pipeline([Step("ask", "llm")]), agent_registry=registry, security_policy=policy
    ).run("hi")


def test_the_limit_follows_the_output_cap() -> None:
    assert answer_limit(None) == answer_limit(0) == MAX_ANSWER_BYTES
    assert answer_limit(1000) == 1000 * 6 + 65536


def test_an_answer_declared_too_big_is_refused_unread(openai_server: OpenAIServer) -> None:
    openai_server.responder = lambda r: completion("x" * 200_000)
    result = run(openai_server.base_url, SecurityPolicy.embedded(max_output_bytes=1000))
    step = result.steps["ask"]
    assert step.error_class == "permanent"
    assert "larger than 71536 bytes" in (step.message or "")
    assert "maxOutputBytes" in (step.message or "")


def test_an_answer_under_the_limit_is_read_whole(openai_server: OpenAIServer) -> None:
    openai_server.responder = lambda r: completion("y" * 500)
    result = run(openai_server.base_url, SecurityPolicy.embedded(max_output_bytes=1000))
    assert result.success and result.output == "y" * 500


class EndlessChunks:
    """HTTP/1.1 on a raw socket: 200 OK, chunked, 64 KiB chunks until the client leaves."""

    def __init__(self) -> None:
        self.sent = 0
        self.port = 0
        self.closed = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (await reader.readline()) not in (b"\r\n", b""):
            pass  # headers; the body is small and ignored
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"[" + b"1," * (32 << 10)
        try:
            while self.sent < 1 << 30:  # 1 GiB: far past any limit
                writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.sent += len(chunk)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self.closed.set()
            writer.close()

    def __enter__(self) -> EndlessChunks:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture
def endless() -> Iterator[EndlessChunks]:
    with EndlessChunks() as server:
        yield server


def test_an_endless_chunked_answer_is_cut_off_as_it_arrives(endless: EndlessChunks) -> None:
    result = run(
        f"http://127.0.0.1:{endless.port}/v1", SecurityPolicy.embedded(max_output_bytes=100_000)
    )
    step = result.steps["ask"]
    assert step.error_class == "permanent"
    assert "larger than 665536 bytes" in (step.message or "")
    assert endless.closed.wait(10), "the client kept the connection reading"
    # It stopped soon after the limit: nowhere near the gigabyte the server offered.
    assert endless.sent < 16 << 20
