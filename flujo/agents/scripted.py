"""Scripted agents: canned answers, for tests, golden transcripts and dry runs.

A reply is chosen deterministically from the call, never from timing: the
first response whose ``match`` regex finds the input wins; otherwise the
responses without ``match`` are used in call order (``call_index`` from the
state machine, so the embedded runtime and step pods agree), the last one
repeating once they run out.

A scripted agent with ``tools`` plays a model in a tool loop
(:mod:`flujo.agents.tools`): round ``r`` of a step's loop answers with the
response at ``call_index + r - 1`` (or the first whose ``match`` finds the
conversation's last message — a tool result, say), and a response's
``toolCalls`` ask for tools instead of answering.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from flujo.agents.base import AgentContext, AgentOutput, BaseAgent
from flujo.agents.chat import ChatReply, ChatTurn, ToolCall
from flujo.domain.errors import CONFIG, AgentError
from flujo.domain.usage import Usage
from flujo.spec.agent import ScriptedResponse

__all__ = ["ScriptedAgent"]


class ScriptedAgent(BaseAgent):
    def __init__(self, responses: list[ScriptedResponse], name: str = "scripted") -> None:
        if not responses:
            raise AgentError(CONFIG, f"scripted agent {name!r} has no responses")
        self.name = name
        self.matchers = [(re.compile(r.match), r) for r in responses if r.match is not None]
        self.sequence = [r for r in responses if r.match is None]
        self.supports_sync = all(r.delay_seconds == 0 for r in responses)

    def pick(self, data: Any, call_index: int) -> ScriptedResponse:
        text = data if isinstance(data, str) else json.dumps(data, sort_keys=True, default=str)
        for pattern, response in self.matchers:
            if pattern.search(text):
                return response
        if not self.sequence:
            raise AgentError(CONFIG, f"scripted agent {self.name!r}: no response matches the input")
        return self.sequence[min(call_index, len(self.sequence) - 1)]

    @staticmethod
    def _answer(response: ScriptedResponse) -> AgentOutput:
        usage = Usage.model_validate(response.usage or {})
        if response.error is not None:
            raise AgentError(response.error.error_class, response.error.message, usage=usage)
        return AgentOutput(response.output, usage)

    def run_sync(self, data: Any, context: AgentContext) -> AgentOutput:
        return self._answer(self.pick(data, context.call_index))

    async def run(self, data: Any, context: AgentContext) -> AgentOutput:
        if isinstance(data, ChatTurn):
            return await self._round(data, context)
        response = self.pick(data, context.call_index)
        if response.delay_seconds:
            await asyncio.sleep(response.delay_seconds)
        return self._answer(response)

    # --- a model in a tool loop ---------------------------------------------

    who = "scripted agent"

    def messages_for(self, data: Any) -> list[dict[str, Any]]:
        content = data if isinstance(data, str) else json.dumps(data, sort_keys=True, default=str)
        return [{"role": "user", "content": content}]

    def final(self, reply: ChatReply, usage: Usage) -> AgentOutput:
        return AgentOutput(reply.value if reply.value is not None else reply.content, usage)

    async def _round(self, turn: ChatTurn, context: AgentContext) -> AgentOutput:
        last = turn.messages[-1].get("content") if turn.messages else ""
        response = self.pick(last or "", context.call_index + turn.round - 1)
        if response.delay_seconds:
            await asyncio.sleep(response.delay_seconds)
        answer = self._answer(response)
        calls = [
            ToolCall(
                id=f"call_{turn.round}_{i}",
                name=call.name,
                arguments=json.dumps(call.arguments, sort_keys=True),
            )
            for i, call in enumerate(response.tool_calls)
        ]
        output = answer.output
        content = output if isinstance(output, str) or output is None else json.dumps(output)
        return AgentOutput(ChatReply(content, calls, value=output), answer.usage)
