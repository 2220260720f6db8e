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
  replace ``model`` or ``messages``; ``stream`` is refused (one JSON answer is
  read);
- ``response_format`` JSON mode is asked for when the agent has an
  ``outputSchema`` (unless ``parameters`` chooses a ``response_format``); the
  answer's content is then parsed as JSON (a surrounding Markdown code fence
  is tolerated, as some local models add one) and validated;
- the answer's ``usage.prompt_tokens`` / ``completion_tokens`` become the
  call's usage, priced with the agent's ``pricing`` (USD per 1k tokens).

Failures follow :mod:`flujo.agents.transport`; an answer that was produced
(and billed) but cannot be used carries its usage on the error.
"""

from __future__ import annotations

import json
import re
from typing import Any

from flujo.agents.base import AgentContext, AgentOutput
from flujo.agents.pool import ClientPool
from flujo.agents.transport import RemoteAgent, encode_json, one_line, priced_usage
from flujo.domain.errors import CONFIG, PERMANENT, SCHEMA, AgentError
from flujo.domain.usage import Usage
from flujo.spec.agent import AgentSpec

__all__ = ["OpenAIAgent"]

_RESERVED = frozenset({"model", "messages"})
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
            raise AgentError(CONFIG, f"{self.who}: parameters.stream is not supported")
        self._base: dict[str, Any] = {}
        if spec.output_schema is not None:
            self._base["response_format"] = {"type": "json_object"}
        self._base.update(spec.parameters)
        self._system = (
            [{"role": "system", "content": spec.system_prompt}] if spec.system_prompt else []
        )

    def url_for(self, spec: AgentSpec) -> str:
        return super().url_for(spec).rstrip("/") + "/chat/completions"

    def request(self, data: Any, context: AgentContext) -> tuple[Any, dict[str, str]]:
        content = data if isinstance(data, str) else encode_json(data, self.who)
        messages = [*self._system, {"role": "user", "content": content}]
        return {**self._base, "model": self.model, "messages": messages}, {}

    def interpret(self, body: Any) -> AgentOutput:
        usage = self._usage(body)
        choice = self._first_choice(body, usage)
        content = choice["message"].get("content")
        if not isinstance(content, str):
            reason = choice.get("finish_reason")
            raise AgentError(
                PERMANENT,
                f"{self.who}: the completion has no text content (finish_reason={reason!r}); "
                "check the model's refusal or tool-call settings",
                usage=usage,
            )
        if self.output_schema is None:
            return AgentOutput(output=content, usage=usage)
        return self.checked(self._parse_json(content, choice, usage), usage)

    def _usage(self, body: Any) -> Usage:
        raw = body.get("usage") if isinstance(body, dict) else None
        if not isinstance(raw, dict):
            return priced_usage(0, 0, self.spec.pricing)
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

    def _parse_json(self, content: str, choice: dict[str, Any], usage: Usage) -> Any:
        fenced = _FENCE.match(content)
        try:
            return json.loads(fenced.group("body") if fenced else content)
        except ValueError as exc:
            truncated = choice.get("finish_reason") == "length"
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
