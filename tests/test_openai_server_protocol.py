"""The test server speaks what real OpenAI-compatible servers speak: the official client agrees.

Every agent test trusts ``tests/servers/openai_server.py``; these tests hold
it to the official ``openai`` Python client — chat completions, tool calls,
streaming with usage in the last chunk, answers without usage, error bodies —
so the fake cannot drift into a dialect no real server speaks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import openai
import pytest

from tests.servers import OpenAIServer, completion, error, tool_call


@pytest.fixture
def client(openai_server: OpenAIServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=openai_server.base_url, api_key="sk-test", max_retries=0) as c:
        yield c


def test_a_completion_parses_with_content_and_usage(
    client: openai.OpenAI, openai_server: OpenAIServer
) -> None:
    openai_server.script(completion("hello there", prompt_tokens=7, completion_tokens=2))
    answer = client.chat.completions.create(
        model="test-model", messages=[{"role": "user", "content": "hi"}]
    )
    assert answer.choices[0].message.content == "hello there"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (7, 2)
    assert openai_server.requests[0].headers["authorization"] == "Bearer sk-test"


def test_tool_calls_parse_as_function_calls(
    client: openai.OpenAI, openai_server: OpenAIServer
) -> None:
    openai_server.script(
        completion(None, tool_calls=[tool_call("weather", {"city": "Oslo"}, "call_1")])
    )
    tools = [
        {
            "type": "function",
            "function": {
                "name": "weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    answer = client.chat.completions.create(
        model="test-model",
        messages=[{"role": "user", "content": "weather in Oslo?"}],
        tools=tools,  # type: ignore[arg-type]
    )
    message = answer.choices[0].message
    assert answer.choices[0].finish_reason == "tool_calls"
    assert message.content is None and message.tool_calls is not None
    (call,) = message.tool_calls
    assert call.id == "call_1" and call.type == "function"
    assert call.function.name == "weather"  # type: ignore[union-attr]
    assert call.function.arguments == '{"city": "Oslo"}'  # type: ignore[union-attr]
    assert openai_server.requests[0].body["tools"] == tools


def test_a_streamed_answer_arrives_in_chunks_with_usage_last(
    client: openai.OpenAI, openai_server: OpenAIServer
) -> None:
    openai_server.script(completion("one two three", prompt_tokens=4, completion_tokens=3))
    stream = client.chat.completions.create(
        model="test-model",
        messages=[{"role": "user", "content": "count"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three"
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) == 3
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 3


def test_a_streamed_tool_call_assembles_from_its_deltas(
    client: openai.OpenAI, openai_server: OpenAIServer
) -> None:
    openai_server.script(completion(None, tool_calls=[tool_call("add", {"a": 1, "b": 2})]))
    stream = client.chat.completions.create(
        model="test-model", messages=[{"role": "user", "content": "1+2"}], stream=True
    )
    name, arguments = "", ""
    for chunk in stream:
        for delta in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            assert delta.index == 0
            name += (delta.function.name or "") if delta.function else ""
            arguments += (delta.function.arguments or "") if delta.function else ""
        assert chunk.usage is None  # no include_usage: no usage chunk
    assert (name, arguments) == ("add", '{"a": 1, "b": 2}')


def test_an_answer_without_usage_parses_with_usage_none(
    client: openai.OpenAI, openai_server: OpenAIServer
) -> None:
    openai_server.script(completion("fine", usage=False))
    answer = client.chat.completions.create(
        model="test-model", messages=[{"role": "user", "content": "hi"}]
    )
    assert answer.usage is None and answer.choices[0].message.content == "fine"


def test_error_bodies_become_the_clients_typed_errors(
    client: openai.OpenAI, openai_server: OpenAIServer
) -> None:
    openai_server.script(error(429, "slow down", retry_after=2), error(401, "bad key"))
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert limited.value.status_code == 429 and "slow down" in limited.value.message
    assert limited.value.response.headers["retry-after"] == "2"
    with pytest.raises(openai.AuthenticationError) as denied:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert "bad key" in denied.value.message


def test_the_async_client_streams_too(openai_server: OpenAIServer) -> None:
    openai_server.script(completion("a b", chunk_delay=0.01))

    async def main() -> str:
        async with openai.AsyncOpenAI(
            base_url=openai_server.base_url, api_key="k", max_retries=0
        ) as client:
            stream = await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "x"}], stream=True
            )
            return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    assert asyncio.run(main()) == "a b"
