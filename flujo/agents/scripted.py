"""Scripted agents: canned answers, for tests, golden transcripts and dry runs.

A reply is chosen deterministically from the call, never from timing: the
first response whose ``match`` regex finds the input wins; otherwise the
responses without ``match`` are used in call order (``call_index`` from the
state machine, so the embedded runtime and step pods agree), the last one
repeating once they run out.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from flujo.agents.base import AgentContext, AgentOutput, BaseAgent
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
        response = self.pick(data, context.call_index)
        if response.delay_seconds:
            await asyncio.sleep(response.delay_seconds)
        return self._answer(response)
