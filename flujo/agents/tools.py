"""The tool loop: a model step whose model may call other agents as functions.

An ``openai`` agent with ``tools`` is built as a :class:`ToolLoopAgent`.  One
step call runs the whole loop::

    model ──tool calls──▶ tools (in parallel, asyncio.gather) ──results──▶ model … ──▶ answer

until the model answers without asking for a tool, or ``maxToolRounds``
model calls were made (a model still asking for tools then fails the step
with ``loop_exhausted``).  Everything happens inside the one agent call, so
the engine sees one step with one result and one usage (the sum of every
model and tool call); under the operator the step pod runs the loop, and a
restarted operator reads its one result back instead of re-running rounds.

What each tool is offered as (an OpenAI function tool):

- an Agent (``http``, ``builtin``, ``openai``, ``scripted``): named after it
  (``.`` becomes ``_``), described by its ``description``, with its
  ``inputSchema`` as the parameters; a schema that is not an object, or none,
  is offered as ``{"input": …}`` and unwrapped before the call;
- a Python function registered in code: its signature's type hints give the
  schema, its docstring the description;
- an ``mcp`` agent: every tool its server lists (after ``allowTools`` /
  ``denyTools``), under the server's names and schemas.  One MCP session per
  step call serves every round.

Arguments are parsed and checked against the schema; a bad argument, an
unknown tool name or a failing tool goes back to the model as that tool's
result (``error (class): message``) — the model may correct itself — never as
a crash.  Tools are called through the registry's agents, so each tool call
passes its own security policy checks, rate limiter, circuit breaker and
output cap, as each model call passes the model agent's.

The run's remaining budget arrives in the call's context
(:class:`~flujo.domain.agent.Budget`).  Between rounds, and inside a streamed
answer, the loop compares the step's spend with it: once the spend crosses it
the loop stops and returns its partial results (the governor then fails the
run, naming the step, and keeps them as the step's output); when the spend
only reaches it, no further model call is made and the step fails with
``usage_limit``, naming the step and round.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from jsonschema import exceptions as schema_exceptions
from jsonschema import validators
from pydantic import TypeAdapter

from flujo.agents.chat import ChatReply, ChatTurn, ToolCall
from flujo.domain.agent import Agent, AgentContext, AgentOutput, BaseAgent, Budget
from flujo.domain.errors import AGENT_ERROR, CONFIG, LOOP_EXHAUSTED, USAGE_LIMIT, AgentError
from flujo.domain.usage import ZERO, Usage
from flujo.hooks import tool_called
from flujo.spec.agent import AgentSpec

__all__ = [
    "ModelAgent",
    "Tool",
    "ToolLoopAgent",
    "ToolLoopError",
    "ToolTarget",
    "function_schema",
    "tool_name",
]

_NAME = re.compile(r"[^A-Za-z0-9_-]")
_ANY_INPUT: dict[str, Any] = {"description": "The tool's input."}
RESULT_CHARS = 16_000
"""A tool result longer than this is cut before it goes back to the model."""


def tool_name(agent: str) -> str:
    """The function name an agent is offered under (OpenAI: ``[A-Za-z0-9_-]{1,64}``)."""
    return _NAME.sub("_", agent)[:64]


class ToolLoopError(AgentError):
    """A tool loop's failure, carrying the tool calls made before it."""

    def __init__(
        self,
        error_class: str,
        message: str,
        *,
        usage: Usage,
        tool_calls: list[dict[str, Any]],
        retry_after: float | None = None,
    ) -> None:
        super().__init__(error_class, message, retry_after=retry_after, usage=usage)
        self.tool_calls = tuple(tool_calls)


class ModelAgent(Protocol):
    """What the loop needs of the model agent itself (besides its governed ``run``)."""

    who: str

    def messages_for(self, data: Any) -> list[dict[str, Any]]: ...

    def final(self, reply: ChatReply, usage: Usage) -> AgentOutput: ...


@dataclass(frozen=True)
class ToolTarget:
    """What the registry knows of an agent named in ``tools``."""

    agent: Agent
    """The governed agent: policy, rate limiter, breaker, output cap."""
    spec: AgentSpec | None = None
    description: str | None = None
    function: Callable[..., Any] | None = None
    """The Python function of a code-registered agent (its schema comes from it)."""
    mcp: Any = None
    """For an ``mcp`` agent: the :class:`flujo.agents.mcp.McpAgent` (to list tools)."""


@dataclass
class Tool:
    """One function offered to the model and how to call it."""

    name: str
    agent_name: str
    agent: Agent
    parameters: dict[str, Any]
    description: str = ""
    wrapped: bool = False
    """Arguments are ``{"input": value}``; the agent is called with ``value``."""
    mcp_tool: str | None = None
    session: Any = None
    _validator: Any = field(default=None, repr=False)

    def offer(self) -> dict[str, Any]:
        function: dict[str, Any] = {"name": self.name, "parameters": self.parameters}
        if self.description:
            function["description"] = self.description
        return {"type": "function", "function": function}

    def check(self, arguments: Any) -> str | None:
        if self._validator is None:
            cls = validators.validator_for(self.parameters)
            self._validator = cls(self.parameters)
        error = schema_exceptions.best_match(self._validator.iter_errors(arguments))
        return None if error is None else f"at {error.json_path}: {error.message}"

    def data(self, arguments: Any) -> Any:
        if self.mcp_tool is not None:
            return {"tool": self.mcp_tool, "arguments": arguments}
        return arguments["input"] if self.wrapped else arguments


def _parameters(schema: dict[str, Any] | None) -> tuple[dict[str, Any], bool]:
    """The function parameters for an input schema, and whether the input is wrapped."""
    if schema is not None and schema.get("type") == "object":
        return schema, False
    inner = schema if schema is not None else _ANY_INPUT
    return {"type": "object", "properties": {"input": inner}, "required": ["input"]}, True


def function_schema(fn: Callable[..., Any]) -> dict[str, Any] | None:
    """The input schema of a Python function from its first parameter's type hint."""
    try:
        params = list(inspect.signature(fn).parameters.values())
        hints = inspect.get_annotations(fn, eval_str=True)
    except (TypeError, ValueError, NameError):
        return None
    if not params or params[0].name not in hints:
        return None
    try:
        schema: dict[str, Any] = TypeAdapter(hints[params[0].name]).json_schema()
    except Exception:  # a hint pydantic cannot describe: offer any input
        return None
    return schema


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= RESULT_CHARS else text[: RESULT_CHARS - 1] + "…"


def _remaining(budget: Budget | None, spent: Usage) -> Budget | None:
    if budget is None:
        return None
    return Budget(
        cost_usd=None if budget.cost_usd is None else max(0.0, budget.cost_usd - spent.cost_usd),
        tokens=None if budget.tokens is None else max(0, budget.tokens - spent.total_tokens),
    )


def _unit(limit: str, budget: Budget, spent: Usage) -> str:
    if limit == "cost":
        return f"${spent.cost_usd:.4f} spent by this step of ${budget.cost_usd or 0:.4f} left"
    return f"{spent.total_tokens} tokens used by this step of {budget.tokens} left"


class ToolLoopAgent(BaseAgent):
    """A model agent that may call tools, in rounds; see the module docstring."""

    def __init__(
        self,
        name: str,
        spec: AgentSpec,
        model: Agent,
        chat: ModelAgent,
        lookup: Callable[[str], ToolTarget],
    ) -> None:
        self.name = name
        self.spec = spec
        self.model = model
        self.chat = chat
        self.lookup = lookup
        self.max_rounds = spec.max_tool_rounds
        self.who = chat.who

    async def run(self, data: Any, context: AgentContext) -> AgentOutput:
        async with AsyncExitStack() as stack:
            tools = await self._tools(stack)
            return await self._loop(data, context, tools)

    async def _tools(self, stack: AsyncExitStack) -> dict[str, Tool]:
        tools: dict[str, Tool] = {}
        for agent_name in self.spec.tools:
            try:
                target = self.lookup(agent_name)
            except (KeyError, AgentError) as exc:
                why = (
                    exc.message if isinstance(exc, AgentError) else f"unknown agent {agent_name!r}"
                )
                raise AgentError(CONFIG, f"{self.who}: tool {agent_name!r}: {why}") from exc
            found = await self._offered(agent_name, target, stack)
            for tool in found:
                if tool.name in tools:
                    raise AgentError(
                        CONFIG,
                        f"{self.who}: two tools are named {tool.name!r} "
                        f"({tools[tool.name].agent_name} and {agent_name}); "
                        "rename one or deny it with denyTools",
                    )
                tools[tool.name] = tool
        return tools

    async def _offered(
        self, agent_name: str, target: ToolTarget, stack: AsyncExitStack
    ) -> list[Tool]:
        if target.mcp is not None:
            session = await stack.enter_async_context(target.mcp.session())
            listed = await target.mcp.list_tools(session)
            return [
                Tool(
                    name=t["name"],
                    agent_name=agent_name,
                    agent=target.agent,
                    parameters=t["inputSchema"],
                    description=t.get("description") or "",
                    mcp_tool=t["name"],
                    session=session,
                )
                for t in listed
            ]
        schema = target.spec.input_schema if target.spec is not None else None
        if schema is None and target.function is not None:
            schema = function_schema(target.function)
        description = target.description or (target.spec.description if target.spec else None)
        if not description and target.function is not None:
            description = (inspect.getdoc(target.function) or "").split("\n\n")[0]
        parameters, wrapped = _parameters(schema)
        return [
            Tool(
                name=tool_name(agent_name),
                agent_name=agent_name,
                agent=target.agent,
                parameters=parameters,
                description=description or f"Call the agent {agent_name}.",
                wrapped=wrapped,
            )
        ]

    async def _loop(self, data: Any, context: AgentContext, tools: dict[str, Tool]) -> AgentOutput:
        messages = self.chat.messages_for(data)
        offered = [t.offer() for t in tools.values()]
        budget = context.budget
        spent = ZERO
        calls: list[dict[str, Any]] = []
        made: dict[str, int] = {}
        """Calls of each tool agent so far: a tool call's ``call_index`` (scripted tools)."""
        reply: ChatReply | None = None
        for round_ in range(1, self.max_rounds + 1):
            where = f"step {context.step_path!r} round {round_} of {self.max_rounds}"
            turn = ChatTurn(messages=list(messages), tools=offered, round=round_, spent=spent)
            try:
                answer = await self.model.run(turn, replace(context, extra={"round": round_}))
            except AgentError as exc:
                used = exc.usage if isinstance(exc.usage, Usage) else ZERO
                raise ToolLoopError(
                    exc.error_class,
                    f"{exc.message} ({where})",
                    usage=spent + used,
                    tool_calls=calls,
                    retry_after=exc.retry_after,
                ) from exc
            spent = spent + answer.usage
            reply = answer.output
            assert isinstance(reply, ChatReply)
            if reply.stopped is not None or (budget is not None and budget.crossed(spent)):
                limit = reply.stopped or (budget.crossed(spent) if budget else None) or "cost"
                return self._partial(limit, where, reply, calls, spent, budget)
            if not reply.tool_calls:
                try:
                    final = self.chat.final(reply, spent)
                except AgentError as exc:
                    raise ToolLoopError(
                        exc.error_class, exc.message, usage=spent, tool_calls=calls
                    ) from exc
                return replace(final, tool_calls=tuple(calls))
            if round_ == self.max_rounds:
                names = ", ".join(sorted({c.name for c in reply.tool_calls}))
                raise ToolLoopError(
                    LOOP_EXHAUSTED,
                    f"{self.who}: the model still asked for tools ({names}) after "
                    f"maxToolRounds={self.max_rounds} ({where}); raise maxToolRounds "
                    "or make the prompt ask for an answer",
                    usage=spent,
                    tool_calls=calls,
                )
            self._check_reached(budget, spent, where, calls)
            indices = []
            for call in reply.tool_calls:
                agent = tools[call.name].agent_name if call.name in tools else ""
                indices.append(made.get(agent, 0))
                made[agent] = indices[-1] + 1
            left = _remaining(budget, spent)
            results = await asyncio.gather(
                *(
                    self._call(call, tools, context, round_, left, index)
                    for call, index in zip(reply.tool_calls, indices, strict=True)
                )
            )
            messages.append(reply.to_message())
            for call, (content, usage, record) in zip(reply.tool_calls, results, strict=True):
                spent = spent + usage
                calls.append(record)
                messages.append({"role": "tool", "tool_call_id": call.id, "content": content})
            crossed = budget.crossed(spent) if budget is not None else None
            if crossed is not None:
                return self._partial(crossed, where, None, calls, spent, budget)
            self._check_reached(budget, spent, where, calls)
        raise AssertionError("unreachable: the last round returns or raises")

    def _check_reached(
        self, budget: Budget | None, spent: Usage, where: str, calls: list[dict[str, Any]]
    ) -> None:
        limit = budget.reached(spent) if budget is not None else None
        if limit is not None and budget is not None:
            raise ToolLoopError(
                USAGE_LIMIT,
                f"{self.who}: the run's {limit} limit is reached after {where}: "
                f"{_unit(limit, budget, spent)}; no further model call is made",
                usage=spent,
                tool_calls=calls,
            )

    def _partial(
        self,
        limit: str,
        where: str,
        reply: ChatReply | None,
        calls: list[dict[str, Any]],
        spent: Usage,
        budget: Budget | None,
    ) -> AgentOutput:
        """The results so far: the spend crossed the budget, and the governor will stop the run."""
        unit = _unit(limit, budget, spent) if budget is not None else ""
        return AgentOutput(
            output={
                "partial": True,
                "stopped": f"{limit} limit crossed in {where}: {unit}",
                "content": reply.content if reply is not None else None,
                "toolCalls": calls,
            },
            usage=spent,
            tool_calls=tuple(calls),
        )

    async def _call(
        self,
        call: ToolCall,
        tools: dict[str, Tool],
        context: AgentContext,
        round_: int,
        budget: Budget | None,
        call_index: int,
    ) -> tuple[str, Usage, dict[str, Any]]:
        """Call one tool: ``(text for the model, usage, record)``; failures become text."""
        record: dict[str, Any] = {"round": round_, "tool": call.name, "arguments": call.arguments}
        tool = tools.get(call.name)
        if tool is None:
            known = ", ".join(sorted(tools)) or "none"
            return self._failed(record, CONFIG, f"no tool named {call.name!r}; the tools: {known}")
        try:
            arguments = json.loads(call.arguments or "{}")
        except ValueError:
            return self._failed(record, CONFIG, "the arguments are not valid JSON")
        record["arguments"] = arguments
        problem = tool.check(arguments)
        if problem is not None:
            return self._failed(
                record, "schema", f"the arguments do not match the schema {problem}"
            )
        extra: dict[str, Any] = {"round": round_, "toolCall": call.id}
        if tool.session is not None:
            extra["mcpSession"] = tool.session
        tool_context = replace(
            context,
            agent_name=tool.agent_name,
            call_index=call_index,
            extra=extra,
            budget=budget,
            on_token=None,
        )
        started = time.perf_counter()

        def done(error_class: str | None) -> None:
            seconds = time.perf_counter() - started
            tool_called(
                context.step_path, context.attempt, call.name, tool.agent_name, seconds, error_class
            )

        try:
            out = await tool.agent.run(tool.data(arguments), tool_context)
        except asyncio.CancelledError:
            raise
        except AgentError as exc:
            done(exc.error_class)
            used = exc.usage if isinstance(exc.usage, Usage) else ZERO
            content, _, failed = self._failed(record, exc.error_class, exc.message)
            return content, used, failed
        except Exception as exc:
            done(AGENT_ERROR)
            return self._failed(record, AGENT_ERROR, f"{type(exc).__name__}: {exc}")
        done(None)
        record["output"] = out.output
        return _text(out.output), out.usage, record

    @staticmethod
    def _failed(
        record: dict[str, Any], error_class: str, message: str
    ) -> tuple[str, Usage, dict[str, Any]]:
        record["error"] = f"{error_class}: {message}"
        return f"error ({error_class}): {message}", ZERO, record

    async def aclose(self) -> None:
        await self.model.aclose()
