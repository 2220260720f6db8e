"""The chat messages a model agent and the tool loop exchange, and usage estimates.

A model step with tools is several chat-completion calls: the tool loop
(:mod:`flujo.agents.tools`) hands the model agent a :class:`ChatTurn` (the
conversation so far and the tools on offer) and gets a :class:`ChatReply`
back (text, tool calls, or both), whether the answer came whole or streamed
(:class:`ReplyBuilder` assembles streamed chunks).

**Usage estimates.** A server that omits ``usage`` would otherwise record 0
tokens and $0, and the governor could never stop the run.  Its calls are
counted by the documented rule of OpenAI's tokenizer guide — one token per
four characters of text, rounded up — plus 4 tokens per message and 3 for
the reply's priming, and the tools' JSON schemas as text; the usage is
marked ``estimated``.  No tokenizer is used: the models behind
OpenAI-compatible servers use many, and the exact ones need files fetched
over the network.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ChatReply",
    "ChatTurn",
    "ReplyBuilder",
    "ToolCall",
    "estimate_completion_tokens",
    "estimate_prompt_tokens",
    "estimate_tokens",
]

_PER_MESSAGE = 4
_PRIMING = 3


def estimate_tokens(text: str) -> int:
    """Tokens of ``text`` by the four-characters rule (0 for empty text)."""
    return math.ceil(len(text) / 4)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def estimate_prompt_tokens(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
) -> int:
    """Prompt tokens of a request: its messages and tool schemas."""
    total = _PRIMING
    for message in messages:
        total += _PER_MESSAGE
        for key in ("content", "tool_calls", "name"):
            if message.get(key) is not None:
                total += estimate_tokens(_text(message[key]))
    if tools:
        total += estimate_tokens(_text(tools))
    return total


def estimate_completion_tokens(content: str | None, calls: list[ToolCall]) -> int:
    """Completion tokens of a reply: its text and its tool calls' names and arguments."""
    total = estimate_tokens(content or "")
    for call in calls:
        total += estimate_tokens(call.name) + estimate_tokens(call.arguments)
    return total


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One function call the model asked for; ``arguments`` is the model's JSON text."""

    id: str
    name: str
    arguments: str

    def to_message(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass(frozen=True, slots=True)
class ChatTurn:
    """One model call of a tool loop: the conversation so far and the tools offered."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] = field(default_factory=list)
    round: int = 1
    spent: Any = None
    """The step's usage before this call (a ``Usage``), for the in-stream budget check."""


@dataclass(frozen=True, slots=True)
class ChatReply:
    """What one model call answered."""

    content: str | None
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    stopped: str | None = None
    """``cost`` or ``tokens``: the stream was cut because the run's budget was crossed."""
    value: Any = None
    """A scripted model's answer as it was scripted (any JSON value), for its output."""

    def to_message(self) -> dict[str, Any]:
        """The assistant message to send back in the next call."""
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            message["tool_calls"] = [c.to_message() for c in self.tool_calls]
        return message


class ReplyBuilder:
    """Assembles a streamed answer from its ``chat.completion.chunk`` objects."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self._calls: dict[int, dict[str, str]] = {}
        self.finish_reason: str | None = None
        self.usage: Any = None
        self.completion_chars = 0

    def add(self, chunk: Any) -> str:
        """Take one chunk; return the text it adds (for the token callback)."""
        if not isinstance(chunk, dict):
            return ""
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return ""
        choice = choices[0]
        if choice.get("finish_reason"):
            self.finish_reason = str(choice["finish_reason"])
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            return ""
        for raw in delta.get("tool_calls") or []:
            if not isinstance(raw, dict):
                continue
            index = raw.get("index", len(self._calls))
            call = self._calls.setdefault(index, {"id": "", "name": "", "arguments": ""})
            if raw.get("id"):
                call["id"] = str(raw["id"])
            function = raw.get("function")
            if isinstance(function, dict):
                call["name"] += str(function.get("name") or "")
                call["arguments"] += str(function.get("arguments") or "")
                self.completion_chars += len(str(function.get("arguments") or ""))
        text = delta.get("content")
        if isinstance(text, str) and text:
            self.parts.append(text)
            self.completion_chars += len(text)
            return text
        return ""

    def reply(self, stopped: str | None = None) -> ChatReply:
        calls = [
            ToolCall(id=c["id"] or f"call_{i}", name=c["name"], arguments=c["arguments"] or "{}")
            for i, c in sorted(self._calls.items())
        ]
        content = "".join(self.parts) if self.parts or not calls else None
        return ChatReply(content, calls, self.finish_reason, stopped)
