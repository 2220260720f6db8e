"""The ``openai`` agent kind: any OpenAI-compatible chat-completions endpoint.

OpenAI, vLLM, Ollama, llama.cpp's server, LiteLLM and most gateways speak the
same ``POST {endpoint}/chat/completions`` protocol, so one small client
covers them all; the official SDK would add a dependency, its own retries
(the engine owns retries) and its own connection pool (the runtime owns one).

One call sends::

    {"model": <model>, "messages": [{"role": "system", "content": <systemPrompt>},
                                    {"role": "user", "content": <input>}],
     ...<parameters>, "response_format": {"type": "json_object"}}

- a non-string input is sent as its JSON encoding;
- ``parameters`` (temperature, max_tokens, seed, …) are merged in, but never
  replace ``model``, ``messages`` or ``tools``; ``parameters.stream`` is refused
  (the agent's ``stream`` field, or a token callback in the call's context,
  asks for a streamed answer: ``"stream": true`` with
  ``stream_options.include_usage``, read as server-sent events);
- ``response_format`` JSON mode is asked for when the agent has an
  ``outputSchema`` (unless ``parameters`` chooses a ``response_format``); the
  answer's content is then parsed as JSON (a surrounding Markdown code fence
  is tolerated, as some local models add one) and validated;
- the answer's ``usage.prompt_tokens`` / ``completion_tokens`` become the
  call's usage, priced with the agent's ``pricing`` (USD per 1k tokens); an
  answer without ``usage`` is counted by an estimate from the text, marked
  ``estimated`` (see :mod:`flujo.agents.chat`);
- with a budget in the call's context, a streamed answer is cut as soon as
  its (estimated) cost crosses what the run has left: the text so far is the
  output and the governor stops the run.

A :class:`~flujo.agents.chat.ChatTurn` as the input is one round of a tool
loop (:mod:`flujo.agents.tools`): the conversation and tools are sent as
given and the output is the :class:`~flujo.agents.chat.ChatReply`.

Failures follow :mod:`flujo.agents.transport`; an answer that was produced
(and billed) but cannot be used carries its usage on the error.
"""

from __future__ import annotations

import json
import re
from typing import Any

from flujo.agents.base import AgentContext, AgentOutput
from flujo.agents.chat import (
    ChatReply,
    ChatTurn,
    ReplyBuilder,
    ToolCall,
    estimate_completion_tokens,
    estimate_prompt_tokens,
)
from flujo.agents.pool import ClientPool
from flujo.agents.transport import RemoteAgent, encode_json, one_line, priced_usage
from flujo.domain.errors import CONFIG, PERMANENT, SCHEMA, AgentError
from flujo.domain.usage import ZERO, Usage
from flujo.spec.agent import AgentSpec

__all__ = ["OpenAIAgent"]

_RESERVED = frozenset({"model", "messages", "tools", "stream_options"})
_FENCE = re.compile(r"^\s*```[A-Za-z0-9_-]*\s*\n(?P<body>.*?)\n?```\s*$", re.DOTALL)


class OpenAIAgent(RemoteAgent):
    """A chat model behind an OpenAI-compatible endpoint; one completion per call."""

    kind = "openai"

    def __init__(self, name: str, spec: AgentSpec, pool: ClientPool) -> None:
        super().__init__(name, spec, pool)
        if not spec.model:
            raise AgentError(CONFIG, f"{self.who}: no model configured")
        self.model = spec.model
        clashing = sorted(_RESERVED & spec.parameters.keys())
        if clashing:
            raise AgentError(
                CONFIG,
                f"{self.who}: parameters may not set {', '.join(clashing)}; "
                "use the agent's model and systemPrompt fields",
            )
        if spec.parameters.get("stream"):
            raise AgentError(
                CONFIG, f"{self.who}: parameters.stream is not supported; set the agent's stream"
            )
        self._base: dict[str, Any] = {}
        if spec.output_schema is not None:
            self._base["response_format"] = {"type": "json_object"}
        self._base.update(spec.parameters)
        self._system = (
            [{"role": "system", "content": spec.system_prompt}] if spec.system_prompt else []
        )

    def url_for(self, spec: AgentSpec) -> str:
        return super().url_for(spec).rstrip("/") + "/chat/completions"

    def messages_for(self, data: Any) -> list[dict[str, Any]]:
        """The conversation a step input starts: the system prompt, then the input."""
        content = data if isinstance(data, str) else encode_json(data, self.who)
        return [*self._system, {"role": "user", "content": content}]

    def request(self, data: Any, context: AgentContext) -> tuple[Any, dict[str, str]]:
        return {**self._base, "model": self.model, "messages": self.messages_for(data)}, {}

    async def run(self, data: Any, context: AgentContext) -> AgentOutput:
        turn = data if isinstance(data, ChatTurn) else ChatTurn(self.messages_for(data))
        reply, usage = await self.complete(turn, context)
        if isinstance(data, ChatTurn):
            return AgentOutput(output=reply, usage=usage)
        return self.final(reply, usage)

    async def complete(self, turn: ChatTurn, context: AgentContext) -> tuple[ChatReply, Usage]:
        """One chat completion: whole, or streamed when asked to."""
        payload: dict[str, Any] = {**self._base, "model": self.model, "messages": turn.messages}
        if turn.tools:
            payload["tools"] = turn.tools
        timeout = self.spec.timeout_seconds
        if context.timeout_seconds is not None:
            timeout = min(timeout, context.timeout_seconds)
        if not (self.spec.stream or context.on_token is not None):
            body = await self.endpoint.post(payload, timeout)
            usage = self._usage(body)
            if usage is None:
                usage = self._estimate(turn, self._reply(body, ZERO), stopped=False)
            return self._reply(body, usage), usage
        payload["stream"] = True
        payload["stream_options"] = {"include_usage": True}
        builder = ReplyBuilder()
        spent = turn.spent if isinstance(turn.spent, Usage) else ZERO
        prompt = estimate_prompt_tokens(turn.messages, turn.tools)
        stopped: list[str] = []

        def on_event(chunk: Any) -> bool:
            text = builder.add(chunk)
            if text and context.on_token is not None:
                context.on_token(context.step_path, text)
            if context.budget is not None and builder.usage is None:
                guess = priced_usage(prompt, -(-builder.completion_chars // 4), self.spec.pricing)
                crossed = context.budget.crossed(spent + guess)
                if crossed is not None:
                    stopped.append(crossed)
                    return False
            return True

        await self.endpoint.stream(payload, timeout, on_event)
        reply = builder.reply(stopped[0] if stopped else None)
        usage = self._usage({"usage": builder.usage}) if builder.usage is not None else None
        if usage is None:
            usage = self._estimate(turn, reply, stopped=bool(stopped))
        return reply, usage

    def _estimate(self, turn: ChatTurn, reply: ChatReply, *, stopped: bool) -> Usage:
        prompt = estimate_prompt_tokens(turn.messages, turn.tools)
        completion = estimate_completion_tokens(reply.content, reply.tool_calls)
        usage = priced_usage(prompt, completion, self.spec.pricing)
        return usage.model_copy(update={"estimated": True})

    def _reply(self, body: Any, usage: Usage) -> ChatReply:
        choice = self._first_choice(body, usage)
        message = choice["message"]
        calls: list[ToolCall] = []
        for i, raw in enumerate(message.get("tool_calls") or []):
            function = raw.get("function") if isinstance(raw, dict) else None
            if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                raise AgentError(
                    PERMANENT,
                    f"{self.who}: tool_calls[{i}] has no function name; "
                    "check that the endpoint is OpenAI-compatible",
                    usage=usage,
                )
            arguments = function.get("arguments")
            calls.append(
                ToolCall(
                    id=str(raw.get("id") or f"call_{i}"),
                    name=function["name"],
                    arguments=arguments if isinstance(arguments, str) else "{}",
                )
            )
        content = message.get("content")
        return ChatReply(
            content if isinstance(content, str) else None, calls, choice.get("finish_reason")
        )

    def final(self, reply: ChatReply, usage: Usage) -> AgentOutput:
        """The step's output from the model's last answer, checked against outputSchema."""
        if reply.stopped is not None:
            return AgentOutput(output=reply.content or "", usage=usage)
        content = reply.content
        if not isinstance(content, str):
            raise AgentError(
                PERMANENT,
                f"{self.who}: the completion has no text content "
                f"(finish_reason={reply.finish_reason!r}); "
                "check the model's refusal or tool-call settings",
                usage=usage,
            )
        if self.output_schema is None:
            return AgentOutput(output=content, usage=usage)
        return self.checked(self._parse_json(content, reply.finish_reason, usage), usage)

    def interpret(self, body: Any) -> AgentOutput:
        usage = self._usage(body) or priced_usage(0, 0, self.spec.pricing)
        return self.final(self._reply(body, usage), usage)

    def _usage(self, body: Any) -> Usage | None:
        """The reported usage, or None when the answer has none (it is then estimated)."""
        raw = body.get("usage") if isinstance(body, dict) else None
        if not isinstance(raw, dict):
            return None
        prompt, completion = raw.get("prompt_tokens", 0), raw.get("completion_tokens", 0)
        if not (_count(prompt) and _count(completion)):
            raise AgentError(
                PERMANENT,
                f"{self.who}: the answer's usage is malformed ({one_line(json.dumps(raw), 120)}); "
                "check that the endpoint is OpenAI-compatible",
            )
        return priced_usage(prompt, completion, self.spec.pricing)

    def _first_choice(self, body: Any, usage: Usage) -> dict[str, Any]:
        choices = body.get("choices") if isinstance(body, dict) else None
        if (
            isinstance(choices, list)
            and choices
            and isinstance(choices[0], dict)
            and isinstance(choices[0].get("message"), dict)
        ):
            return choices[0]
        raise AgentError(
            PERMANENT,
            f"{self.who}: the answer has no choices[0].message "
            f"({one_line(json.dumps(body), 120)}); check that the endpoint is OpenAI-compatible",
            usage=usage,
        )

    def _parse_json(self, content: str, finish_reason: str | None, usage: Usage) -> Any:
        fenced = _FENCE.match(content)
        try:
            return json.loads(fenced.group("body") if fenced else content)
        except ValueError as exc:
            truncated = finish_reason == "length"
            why = (
                "it was cut off at max_tokens; raise max_tokens"
                if truncated
                else "make the system prompt ask for JSON only"
            )
            raise AgentError(
                SCHEMA,
                f"{self.who}: outputSchema is set but the content is not JSON "
                f"(starts {one_line(content, 60)!r}); {why}",
                usage=usage,
            ) from exc


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
