"""The ``http`` (JSON webhook) agent against a real local server."""

from __future__ import annotations

from typing import Any

import pytest
from flujo.agents.http import HttpAgent
from flujo.agents.remote import build_remote_agent
from flujo.domain import errors
from flujo.domain.errors import AgentError
from flujo.domain.usage import Usage
from flujo.spec.agent import AgentSpec

from tests.servers import HOOK_PATH, OpenAIServer, Reply, drop, error, malformed
from tests.servers.harness import agent_spec, call, call_error


def hook_spec(server: OpenAIServer, **fields: Any) -> AgentSpec:
    return agent_spec(type="http", endpoint=server.hook_url, **fields)


def test_envelope_request_and_output(openai_server: OpenAIServer) -> None:
    openai_server.script(Reply(json={"output": {"summary": "short"}}))

    result = call(hook_spec(openai_server), {"text": "a long text"})

    assert result.output == {"summary": "short"}
    assert result.usage == Usage()
    (request,) = openai_server.requests
    assert request.path == HOOK_PATH
    assert request.body == {"input": {"text": "a long text"}}
    assert request.headers["X-Flujo-Step"] == "review"
    assert request.headers["X-Flujo-Attempt"] == "1"
    assert request.headers["X-Flujo-Run"] == "run-1"


@pytest.mark.parametrize("body", [[1, 2, 3], {"answer": 42}, "plain string", 7, None], ids=repr)
def test_a_body_without_output_is_the_output(openai_server: OpenAIServer, body: Any) -> None:
    openai_server.script(Reply(json=body))
    assert call(hook_spec(openai_server)).output == body


def test_reported_usage_is_used(openai_server: OpenAIServer) -> None:
    openai_server.script(
        Reply(
            json={"output": "x", "usage": {"inputTokens": 12, "outputTokens": 3, "costUsd": 0.25}}
        )
    )
    spec = hook_spec(openai_server, pricing={"inputPer1k": 100.0})
    assert call(spec).usage == Usage(input_tokens=12, output_tokens=3, cost_usd=0.25)


def test_usage_without_cost_is_priced(openai_server: OpenAIServer) -> None:
    openai_server.script(
        Reply(json={"output": "x", "usage": {"inputTokens": 2000, "outputTokens": 500}})
    )
    spec = hook_spec(openai_server, pricing={"inputPer1k": 0.01, "outputPer1k": 0.1})
    assert call(spec).usage.cost_usd == pytest.approx(0.02 + 0.05)


def test_invalid_usage_is_permanent(openai_server: OpenAIServer) -> None:
    openai_server.script(Reply(json={"output": "x", "usage": {"inputTokens": -4}}))
    exc = call_error(hook_spec(openai_server))
    assert exc.error_class == errors.PERMANENT
    assert "inputTokens" in exc.message


def test_static_and_secret_headers(
    openai_server: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOK_TOKEN", "tok-123456")
    spec = hook_spec(
        openai_server,
        headers={"X-Tenant": "acme"},
        secretHeaders=[
            {"name": "X-Api-Token", "valueFrom": {"env": "HOOK_TOKEN"}, "prefix": "Token "}
        ],
    )
    call(spec)
    headers = openai_server.requests[0].headers
    assert headers["X-Tenant"] == "acme"
    assert headers["X-Api-Token"] == "Token tok-123456"


def test_secret_header_value_is_redacted_from_errors(
    openai_server: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOK_TOKEN", "tok-123456")
    openai_server.script(error(403, "token tok-123456 may not call this hook"))
    spec = hook_spec(
        openai_server, secretHeaders=[{"name": "X-Api-Token", "valueFrom": {"env": "HOOK_TOKEN"}}]
    )
    exc = call_error(spec)
    assert exc.error_class == errors.AUTH
    assert "tok-123456" not in str(exc) and "token *** may not" in exc.message


def test_missing_secret_header_names_header_and_variable(
    openai_server: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HOOK_TOKEN", raising=False)
    spec = hook_spec(
        openai_server, secretHeaders=[{"name": "X-Api-Token", "valueFrom": {"env": "HOOK_TOKEN"}}]
    )
    exc = call_error(spec)
    assert exc.error_class == errors.AUTH
    assert "X-Api-Token" in exc.message and "HOOK_TOKEN" in exc.message
    assert openai_server.calls == 0


def test_output_schema_is_enforced(openai_server: OpenAIServer) -> None:
    schema = {"type": "array", "items": {"type": "string"}}
    openai_server.script(Reply(json={"output": ["a", "b"]}), Reply(json={"output": ["a", 2]}))
    spec = hook_spec(openai_server, outputSchema=schema)

    assert call(spec).output == ["a", "b"]
    exc = call_error(spec)
    assert exc.error_class == errors.SCHEMA
    assert "$[1]" in exc.message


@pytest.mark.parametrize(
    ("reply", "error_class"),
    [
        (error(429, "busy", retry_after=2), errors.RATE_LIMITED),
        (error(503, "down"), errors.TRANSIENT),
        (error(401, "who are you"), errors.AUTH),
        (error(422, "bad input"), errors.PERMANENT),
        (drop(), errors.TRANSIENT),
        (malformed(), errors.TRANSIENT),
        (Reply(json={"output": 1}, delay=3), errors.TIMEOUT),
    ],
    ids=["429", "503", "401", "422", "drop", "malformed", "slow"],
)
def test_failures_use_the_shared_taxonomy(
    openai_server: OpenAIServer, reply: Reply, error_class: str
) -> None:
    openai_server.script(reply)
    exc = call_error(hook_spec(openai_server, timeoutSeconds=0.3))
    assert exc.error_class == error_class
    assert exc.message.startswith("http agent 'writer': ")
    assert openai_server.calls == 1


def test_unserialisable_input_is_permanent_without_a_call(openai_server: OpenAIServer) -> None:
    exc = call_error(hook_spec(openai_server), {"when": object()})
    assert exc.error_class == errors.PERMANENT
    assert "JSON-serialisable" in exc.message
    assert openai_server.calls == 0


def test_factory_builds_the_kind_and_refuses_others(openai_server: OpenAIServer) -> None:
    from flujo.agents.pool import ClientPool

    pool = ClientPool()
    assert isinstance(
        build_remote_agent("hook", hook_spec(openai_server), pool, None, None), HttpAgent
    )
    builtin = agent_spec(type="builtin", builtin="upper")
    with pytest.raises(AgentError) as caught:
        build_remote_agent("up", builtin, pool, None, None)
    assert caught.value.error_class == errors.CONFIG
