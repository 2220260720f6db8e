"""The ``mcp`` agent kind: the tools of a Model Context Protocol server.

Built on the ``mcp`` SDK (``pip install 'flujo[mcp]'``), imported only when
an ``mcp`` agent is first used, so ``import flujo`` stays light.

- ``endpoint``: the server's streamable-HTTP URL (``http://host:port/mcp``),
  checked by the security policy's endpoint rules like any agent's, with the
  agent's ``headers`` and ``secretHeaders`` sent on every request;
- ``command``: a server started as a subprocess and spoken to over stdio —
  embedded runs only (a step pod refuses it);
- ``allowTools`` / ``denyTools``: which of the server's tools are offered and
  may be called.

Named in a model agent's ``tools``, it offers the server's tools to the model
(:mod:`flujo.agents.tools`); the loop opens one session per step call and
every round uses it.  Used as a step's agent, the input
``{"tool": NAME, "arguments": {...}}`` calls one tool, in a session of its own.

A tool's output is its ``structuredContent`` when the server sends one, else
its text content (parsed as JSON when it is JSON).  Failures are classified:
a tool result flagged ``isError`` → ``permanent`` (the model sees the text);
a server that cannot be reached → ``transient``; no answer within
``timeoutSeconds`` → ``timeout``; a tool the lists refuse → ``config``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from flujo.agents.transport import display_url, one_line
from flujo.domain.agent import AgentContext, AgentOutput, BaseAgent
from flujo.domain.errors import CONFIG, PERMANENT, TIMEOUT, TRANSIENT, AgentError
from flujo.domain.usage import Usage
from flujo.security.credentials import resolve_credential
from flujo.security.policy import active_policy, endpoint_problems
from flujo.spec.agent import AgentSpec

__all__ = ["McpAgent"]


def _sdk_missing(who: str) -> AgentError:
    return AgentError(CONFIG, f"{who}: the mcp SDK is not installed; pip install 'flujo[mcp]'")


class McpAgent(BaseAgent):
    """The tools of one MCP server; see the module docstring."""

    kind = "mcp"

    def __init__(self, name: str, spec: AgentSpec) -> None:
        self.name = name
        self.spec = spec
        self.who = f"mcp agent {name!r}"
        policy = active_policy()
        if spec.endpoint and policy is not None:
            problems = endpoint_problems(spec.endpoint, policy)
            if problems:
                raise AgentError(
                    CONFIG,
                    f"{self.who}: refused by the security policy: spec.endpoint "
                    f"{display_url(spec.endpoint)}: {'; '.join(problems)}",
                )
        self.where = display_url(spec.endpoint) if spec.endpoint else " ".join(spec.command[:1])

    def allowed(self, tool: str) -> bool:
        allow = self.spec.allow_tools
        return (allow is None or tool in allow) and tool not in self.spec.deny_tools

    def _headers(self) -> dict[str, str]:
        headers = dict(self.spec.headers)
        for header in self.spec.secret_headers:
            value = resolve_credential(
                header.value_from, agent=self.name, purpose=f"value of header {header.name}"
            )
            headers[header.name] = header.prefix + value
        return headers

    @asynccontextmanager
    async def session(self) -> AsyncIterator[Any]:
        """A connected ``mcp.Client``, closed on exit."""
        try:
            import httpx2
            from mcp import Client, StdioServerParameters
            from mcp.client.streamable_http import streamable_http_client
        except ImportError as exc:
            raise _sdk_missing(self.who) from exc
        timeout = self.spec.timeout_seconds
        async with AsyncExitStack() as stack:
            server: Any
            if self.spec.command:
                server = StdioServerParameters(
                    command=self.spec.command[0], args=list(self.spec.command[1:])
                )
            else:
                assert self.spec.endpoint is not None
                http = httpx2.AsyncClient(headers=self._headers(), timeout=timeout)
                stack.push_async_callback(http.aclose)
                server = streamable_http_client(self.spec.endpoint, http_client=http)
            client = Client(server, read_timeout_seconds=timeout, cache=None)
            try:
                async with asyncio.timeout(timeout):
                    await stack.enter_async_context(client)
            except Exception as exc:
                raise self._classified(exc, "connect to") from exc
            yield client

    async def list_tools(self, client: Any) -> list[dict[str, Any]]:
        """The server's tools the lists allow: name, description, inputSchema."""
        try:
            async with asyncio.timeout(self.spec.timeout_seconds):
                listed = await client.list_tools()
        except Exception as exc:
            raise self._classified(exc, "list the tools of") from exc
        return [
            {"name": t.name, "description": t.description or "", "inputSchema": t.input_schema}
            for t in listed.tools
            if self.allowed(t.name)
        ]

    async def run(self, data: Any, context: AgentContext) -> AgentOutput:
        if not (
            isinstance(data, dict)
            and isinstance(data.get("tool"), str)
            and isinstance(data.get("arguments", {}), dict)
        ):
            raise AgentError(
                PERMANENT,
                f"{self.who}: the input must be {{'tool': NAME, 'arguments': {{...}}}}",
            )
        tool, arguments = data["tool"], data.get("arguments", {})
        if not self.allowed(tool):
            raise AgentError(
                CONFIG, f"{self.who}: tool {tool!r} is not allowed (allowTools/denyTools)"
            )
        session = context.extra.get("mcpSession")
        if session is not None:
            return await self._call(session, tool, arguments, context)
        async with self.session() as client:
            return await self._call(client, tool, arguments, context)

    async def _call(
        self, client: Any, tool: str, arguments: dict[str, Any], context: AgentContext
    ) -> AgentOutput:
        timeout = self.spec.timeout_seconds
        if context.timeout_seconds is not None:
            timeout = min(timeout, context.timeout_seconds)
        try:
            async with asyncio.timeout(timeout):
                result = await client.call_tool(tool, arguments)
        except Exception as exc:
            raise self._classified(exc, f"call tool {tool!r} of") from exc
        texts = [getattr(block, "text", "") for block in result.content]
        text = "\n".join(t for t in texts if t)
        if result.is_error:
            raise AgentError(
                PERMANENT, f"{self.who}: tool {tool!r} failed: {one_line(text) or 'no message'}"
            )
        if result.structured_content is not None:
            output: Any = result.structured_content
        else:
            try:
                output = json.loads(text)
            except ValueError:
                output = text
        return AgentOutput(output=output, usage=Usage())

    def _classified(self, exc: Exception, doing: str) -> AgentError:
        if isinstance(exc, AgentError):
            return exc
        if isinstance(exc, TimeoutError):
            return AgentError(
                TIMEOUT,
                f"{self.who}: no answer from {self.where} within "
                f"{self.spec.timeout_seconds:g}s; check the server or raise timeoutSeconds",
            )
        leaf = exc
        while isinstance(leaf, BaseExceptionGroup) and leaf.exceptions:
            inner = leaf.exceptions[0]
            if not isinstance(inner, Exception):
                break
            leaf = inner
        name = type(leaf).__name__
        reason = one_line(str(leaf), 160) or name
        error_class = PERMANENT if name == "MCPError" else TRANSIENT
        return AgentError(error_class, f"{self.who}: could not {doing} {self.where}: {reason}")
