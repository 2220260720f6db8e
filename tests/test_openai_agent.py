"""The ``openai`` agent against a real local chat-completions server.

No client is patched: every case is a real HTTP exchange with
``tests.servers.OpenAIServer``, so the error taxonomy is tested on what
httpx really raises and what servers really send.
"""

from __future__ import annotations

import asyncio
import json
import socket
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from flujo.agents.base import AgentContext
from flujo.agents.credentials import secret_env_name
from flujo.agents.openai import OpenAIAgent
from flujo.agents.pool import ClientPool, PoolLimits
from flujo.agents.transport import parse_retry_after
from flujo.domain import errors
from flujo.domain.errors import AgentError
from flujo.domain.usage import Usage
from flujo.spec.agent import AgentSpec, SecretKeyRef

from tests.servers import CHAT_PATH, OpenAIServer, Reply, completion, drop, error, malformed
from tests.servers.harness import CONTEXT, agent_spec, call, call_error

SCORE_SCHEMA = {
    "type": "object",
    "properties": {"score": {"type": "integer"}, "verdict": {"type": "string"}},
    "required": ["score"],
}


def openai_spec(server: OpenAIServer, **fields: Any) -> AgentSpec:
    return agent_spec(type="openai", model="test-model", endpoint=server.base_url, **fields)


# -- success -----------------------------------------------------------------


def test_success_reports_output_usage_and_cost(openai_server: OpenAIServer) -> None:
    openai_server.script(completion("a fine draft", prompt_tokens=1200, completion_tokens=300))
    spec = openai_spec(openai_server, pricing={"inputPer1k": 0.5, "outputPer1k": 2.0})

    result = call(spec, "write a draft")

    assert result.output == "a fine draft"
    assert result.usage.input_tokens == 1200
    assert result.usage.output_tokens == 300
    assert result.usage.cost_usd == pytest.approx(1200 / 1000 * 0.5 + 300 / 1000 * 2.0)
    assert openai_server.calls_per_path() == {CHAT_PATH: 1}


def test_request_carries_system_prompt_model_and_parameters(openai_server: OpenAIServer) -> None:
    spec = openai_spec(
        openai_server,
        systemPrompt="You are a terse critic.",
        parameters={"temperature": 0.2, "max_tokens": 64},
    )

    call(spec, "judge this")

    (request,) = openai_server.requests
    assert request.body["model"] == "test-model"
    assert request.body["messages"] == [
        {"role": "system", "content": "You are a terse critic."},
        {"role": "user", "content": "judge this"},
    ]
    assert request.body["temperature"] == 0.2
    assert request.body["max_tokens"] == 64
    assert "response_format" not in request.body
    assert request.headers["Content-Type"] == "application/json"
    assert "Authorization" not in request.headers


def test_non_string_input_is_sent_as_json(openai_server: OpenAIServer) -> None:
    data = {"title": "Año", "points": [1, 2]}

    result = call(openai_spec(openai_server), data)

    (request,) = openai_server.requests
    assert json.loads(request.body["messages"][-1]["content"]) == data
    assert result.output == "echo: " + request.body["messages"][-1]["content"]


def test_unserialisable_input_is_permanent_without_a_call(openai_server: OpenAIServer) -> None:
    exc = call_error(openai_spec(openai_server), {"when": object()})
    assert exc.error_class == errors.PERMANENT
    assert "JSON-serialisable" in exc.message
    assert openai_server.calls == 0


def test_missing_usage_is_estimated_from_the_text_never_zero(openai_server: OpenAIServer) -> None:
    """A server that sends no usage is counted by the documented rule, marked estimated."""
    openai_server.script(completion("ok", usage=False))
    spec = openai_spec(openai_server, pricing={"inputPer1k": 1.0, "outputPer1k": 1.0})
    usage = call(spec, "hello").usage
    # 3 priming + 4 for the message + ceil(len("hello") / 4) = 9; "ok" is 1 token.
    assert usage == Usage(input_tokens=9, output_tokens=1, cost_usd=0.010, estimated=True)
    assert usage.model_dump(by_alias=True)["estimated"] is True


# -- output schema -----------------------------------------------------------


def test_schema_output_is_parsed_and_validated(openai_server: OpenAIServer) -> None:
    openai_server.script(completion('{"score": 4, "verdict": "good"}'))

    result = call(openai_spec(openai_server, outputSchema=SCORE_SCHEMA), "rate it")

    assert result.output == {"score": 4, "verdict": "good"}
    (request,) = openai_server.requests
    assert request.body["response_format"] == {"type": "json_object"}


def test_schema_tolerates_a_markdown_fence(openai_server: OpenAIServer) -> None:
    openai_server.script(completion('```json\n{"score": 2}\n```'))
    assert call(openai_spec(openai_server, outputSchema=SCORE_SCHEMA)).output == {"score": 2}


def test_schema_violation_is_a_schema_error_with_usage(openai_server: OpenAIServer) -> None:
    openai_server.script(completion('{"score": "high"}', prompt_tokens=100, completion_tokens=7))
    spec = openai_spec(openai_server, outputSchema=SCORE_SCHEMA, pricing={"inputPer1k": 1.0})

    exc = call_error(spec)

    assert exc.error_class == errors.SCHEMA
    assert "$.score" in exc.message
    assert "'high' is not of type 'integer'" in exc.message
    assert "'writer'" in exc.message
    assert exc.usage == Usage(input_tokens=100, output_tokens=7, cost_usd=0.1)


def test_schema_with_non_json_content_is_a_schema_error(openai_server: OpenAIServer) -> None:
    openai_server.script(completion("Sure! The score is 4.", finish_reason="stop"))
    exc = call_error(openai_spec(openai_server, outputSchema=SCORE_SCHEMA))
    assert exc.error_class == errors.SCHEMA
    assert "not JSON" in exc.message
    assert isinstance(exc.usage, Usage) and exc.usage.input_tokens == 10


def test_truncated_json_says_max_tokens(openai_server: OpenAIServer) -> None:
    openai_server.script(completion('{"score": ', finish_reason="length"))
    exc = call_error(openai_spec(openai_server, outputSchema=SCORE_SCHEMA))
    assert exc.error_class == errors.SCHEMA
    assert "max_tokens" in exc.message


def test_parameters_may_choose_the_response_format(openai_server: OpenAIServer) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "s", "schema": SCORE_SCHEMA}}
    openai_server.script(completion('{"score": 1}'))
    call(openai_spec(openai_server, outputSchema=SCORE_SCHEMA, parameters={"response_format": fmt}))
    assert openai_server.requests[0].body["response_format"] == fmt


# -- error taxonomy ----------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (500, errors.TRANSIENT),
        (502, errors.TRANSIENT),
        (503, errors.TRANSIENT),
        (401, errors.AUTH),
        (403, errors.AUTH),
        (404, errors.PERMANENT),
        (400, errors.PERMANENT),
        (422, errors.PERMANENT),
        (408, errors.TIMEOUT),
    ],
)
def test_http_status_maps_to_error_class(
    openai_server: OpenAIServer, status: int, error_class: str
) -> None:
    openai_server.script(error(status, "the server says no"))

    exc = call_error(openai_spec(openai_server))

    assert exc.error_class == error_class
    assert f"HTTP {status}" in exc.message
    assert "the server says no" in exc.message
    assert openai_server.base_url in exc.message
    assert exc.retry_after is None
    assert openai_server.calls == 1  # exactly one attempt: retries are the engine's


def test_429_with_retry_after_seconds(openai_server: OpenAIServer) -> None:
    openai_server.script(error(429, "Rate limit reached", retry_after=7))
    exc = call_error(openai_spec(openai_server))
    assert exc.error_class == errors.RATE_LIMITED
    assert exc.retry_after == 7.0
    assert "retry after 7s" in exc.message


def test_429_with_retry_after_http_date(openai_server: OpenAIServer) -> None:
    when = datetime.now(UTC) + timedelta(seconds=30)
    openai_server.script(error(429, "Rate limit reached", retry_after=format_datetime(when, True)))
    exc = call_error(openai_spec(openai_server))
    assert exc.error_class == errors.RATE_LIMITED
    assert exc.retry_after is not None and 25 <= exc.retry_after <= 31


def test_503_passes_retry_after_on(openai_server: OpenAIServer) -> None:
    openai_server.script(error(503, "overloaded", retry_after="3"))
    exc = call_error(openai_spec(openai_server))
    assert (exc.error_class, exc.retry_after) == (errors.TRANSIENT, 3.0)


def test_parse_retry_after_variants() -> None:
    now = datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after({"retry-after": "120"}, now) == 120.0
    assert parse_retry_after({"retry-after": "Mon, 01 Jan 2024 12:00:10 GMT"}, now) == 10.0
    assert parse_retry_after({"retry-after": "Mon, 01 Jan 2024 11:00:00 GMT"}, now) == 0.0
    assert parse_retry_after({"retry-after": "soon"}, now) is None
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}, now) == 1.5
    assert parse_retry_after({}, now) is None


def test_slow_answer_is_a_timeout_and_drops_the_request(openai_server: OpenAIServer) -> None:
    openai_server.script(completion("too late", delay=5))

    exc = call_error(openai_spec(openai_server, timeoutSeconds=0.2))

    assert exc.error_class == errors.TIMEOUT
    assert "0.2s" in exc.message and "timeoutSeconds" in exc.message
    assert openai_server.wait_until(lambda: openai_server.cancelled == 1)
    assert openai_server.wait_until(lambda: openai_server.open_connections == 0)


def test_step_timeout_bounds_the_call(openai_server: OpenAIServer) -> None:
    openai_server.script(completion("too late", delay=5))

    async def scenario() -> AgentError:
        async with ClientPool() as pool:
            agent = OpenAIAgent("writer", openai_spec(openai_server), pool)
            context = AgentContext(step_path="s", step_name="s", timeout_seconds=0.2)
            with pytest.raises(AgentError) as caught:
                await agent.run("hi", context)
            return caught.value

    assert asyncio.run(scenario()).error_class == errors.TIMEOUT


def test_dropped_connection_is_transient(openai_server: OpenAIServer) -> None:
    openai_server.script(drop())
    exc = call_error(openai_spec(openai_server))
    assert exc.error_class == errors.TRANSIENT
    assert "reachable" in exc.message


def test_malformed_json_body_is_transient(openai_server: OpenAIServer) -> None:
    openai_server.script(malformed())
    exc = call_error(openai_spec(openai_server))
    assert exc.error_class == errors.TRANSIENT
    assert "not valid JSON" in exc.message


def test_json_of_the_wrong_shape_is_permanent(openai_server: OpenAIServer) -> None:
    openai_server.script(Reply(json={"result": "not a completion"}))
    exc = call_error(openai_spec(openai_server))
    assert exc.error_class == errors.PERMANENT
    assert "OpenAI-compatible" in exc.message


def test_refused_connection_is_transient() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    spec = agent_spec(type="openai", model="m", endpoint=f"http://127.0.0.1:{port}/v1")
    exc = call_error(spec)
    assert exc.error_class == errors.TRANSIENT


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"endpoint": "not a url"}, "not an absolute http(s) URL"),
        ({"endpoint": "ftp://example.com/v1"}, "not an absolute http(s) URL"),
        ({"parameters": {"model": "other"}}, "parameters may not set model"),
        ({"parameters": {"stream": True}}, "stream"),
        ({"outputSchema": {"type": "no-such-type"}}, "not a valid JSON Schema"),
    ],
)
def test_bad_config_fails_at_build(fields: dict[str, object], fragment: str) -> None:
    spec = agent_spec(**{"type": "openai", "model": "m", "endpoint": "http://x/v1", **fields})
    with pytest.raises(AgentError) as caught:
        OpenAIAgent("writer", spec, ClientPool())
    assert caught.value.error_class == errors.CONFIG
    assert fragment in caught.value.message
    assert "'writer'" in caught.value.message


# -- credentials -------------------------------------------------------------

API_KEY = "sk-test-4f9a8b7c6d5e"


def test_api_key_from_env_is_sent_as_bearer(
    openai_server: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_OPENAI_KEY", API_KEY)
    call(openai_spec(openai_server, apiKey={"env": "TEST_OPENAI_KEY"}))
    assert openai_server.requests[0].headers["Authorization"] == f"Bearer {API_KEY}"


def test_api_key_never_appears_in_errors(
    openai_server: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_OPENAI_KEY", API_KEY)
    # Like real providers, the server echoes the key it rejected.
    openai_server.script(error(401, f"Incorrect API key provided: {API_KEY}."))

    async def scenario() -> tuple[AgentError, str]:
        async with ClientPool() as pool:
            agent = OpenAIAgent(
                "writer", openai_spec(openai_server, apiKey={"env": "TEST_OPENAI_KEY"}), pool
            )
            with pytest.raises(AgentError) as caught:
                await agent.run("hi", CONTEXT)
            return caught.value, repr(agent)

    exc, agent_repr = asyncio.run(scenario())
    assert exc.error_class == errors.AUTH
    assert "Incorrect API key provided: ***" in exc.message
    for text in (str(exc), repr(exc), exc.message, agent_repr, repr(exc.__cause__)):
        assert API_KEY not in text
    assert openai_server.requests[0].headers["Authorization"] == f"Bearer {API_KEY}"


def test_missing_api_key_is_auth_without_a_call(
    openai_server: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TEST_OPENAI_KEY", raising=False)
    exc = call_error(openai_spec(openai_server, apiKey={"env": "TEST_OPENAI_KEY"}))
    assert exc.error_class == errors.AUTH
    assert "TEST_OPENAI_KEY" in exc.message and "'writer'" in exc.message
    assert openai_server.calls == 0


def test_secret_key_ref_reads_its_pod_env_name(
    openai_server: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = SecretKeyRef(name="openai-creds", key="api.key")
    assert secret_env_name(ref) == "FLUJO_SECRET_OPENAI_CREDS_API_KEY"
    monkeypatch.setenv("FLUJO_SECRET_OPENAI_CREDS_API_KEY", API_KEY)
    spec = openai_spec(
        openai_server, apiKey={"secretKeyRef": {"name": "openai-creds", "key": "api.key"}}
    )
    call(spec)
    assert openai_server.requests[0].headers["Authorization"] == f"Bearer {API_KEY}"


def test_credential_sources_fall_through_in_order(
    openai_server: OpenAIServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(API_KEY + "\n")
    monkeypatch.delenv("FLUJO_SECRET_CREDS_KEY", raising=False)
    monkeypatch.delenv("TEST_OPENAI_KEY", raising=False)
    spec = openai_spec(
        openai_server,
        apiKey={
            "secretKeyRef": {"name": "creds", "key": "key"},
            "env": "TEST_OPENAI_KEY",
            "file": str(key_file),
        },
    )
    call(spec)
    assert openai_server.requests[0].headers["Authorization"] == f"Bearer {API_KEY}"

    key_file.unlink()
    exc = call_error(spec)
    assert exc.error_class == errors.AUTH
    for place in ("FLUJO_SECRET_CREDS_KEY", "TEST_OPENAI_KEY", str(key_file)):
        assert place in exc.message


# -- connections -------------------------------------------------------------


def test_calls_share_pooled_connections_and_aclose_releases_them(
    openai_server: OpenAIServer,
) -> None:
    async def scenario() -> tuple[int, set[asyncio.Task[Any]]]:
        pool = ClientPool(PoolLimits(max_connections=4))
        agent = OpenAIAgent("writer", openai_spec(openai_server), pool)
        for _ in range(5):  # sequential: one connection, reused
            await agent.run("hi", CONTEXT)
        sequential_connections = openai_server.connections_opened
        await asyncio.gather(*(agent.run(f"hi {i}", CONTEXT) for i in range(40)))
        await pool.aclose()
        leftover = asyncio.all_tasks() - {asyncio.current_task()}
        return sequential_connections, leftover

    sequential_connections, leftover = asyncio.run(scenario())
    assert sequential_connections == 1
    assert openai_server.successful == 45
    assert openai_server.max_open_connections <= 4  # the pool's limit held under fan-out
    assert leftover == set()
    assert openai_server.wait_until(lambda: openai_server.open_connections == 0)


def test_cancelled_call_drops_its_connection(openai_server: OpenAIServer) -> None:
    openai_server.script(completion("slow", delay=10))

    async def scenario() -> None:
        async with ClientPool() as pool:
            agent = OpenAIAgent("writer", openai_spec(openai_server), pool)
            task = asyncio.create_task(agent.run("hi", CONTEXT))
            while openai_server.calls == 0:
                await asyncio.sleep(0.005)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # The server notices before the pool is closed: the cancel itself dropped it.
            for _ in range(400):
                if openai_server.cancelled:
                    break
                await asyncio.sleep(0.005)

    asyncio.run(scenario())
    assert openai_server.cancelled == 1
    assert openai_server.requests[0].outcome == "cancelled"
    assert openai_server.wait_until(lambda: openai_server.open_connections == 0)


def test_pool_refuses_another_event_loop(openai_server: OpenAIServer) -> None:
    pool = ClientPool()
    agent = OpenAIAgent("writer", openai_spec(openai_server), pool)
    first_loop = asyncio.new_event_loop()
    try:
        first_loop.run_until_complete(agent.run("hi", CONTEXT))
        with pytest.raises(AgentError, match="another event loop") as caught:
            asyncio.run(agent.run("hi", CONTEXT))
        with pytest.raises(RuntimeError, match="event loop that used the pool"):
            asyncio.run(pool.aclose())
        first_loop.run_until_complete(pool.aclose())
    finally:
        first_loop.close()
    assert caught.value.error_class == errors.INTERNAL
    assert openai_server.calls == 1
