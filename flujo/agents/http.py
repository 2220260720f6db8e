"""The ``http`` agent kind: a JSON webhook used as a tool.

The contract is small so that any service can implement it in a few lines.

Request — ``POST <endpoint>`` with the agent's static and secret headers::

    Content-Type: application/json
    X-Flujo-Step: <step path>        X-Flujo-Attempt: <attempt, 1-based>
    X-Flujo-Run: <run id, when known>

    {"input": <the step input, any JSON value>}

Response — a 2xx JSON body, either

- an *envelope* object with an ``"output"`` key: the output is that value;
- anything else: the whole body is the output.

An object body may also carry ``"usage": {"inputTokens": int, "outputTokens":
int, "costUsd": float}`` (every field optional); when ``costUsd`` is absent
the cost is priced from the agent's ``pricing``.  An invalid usage object is a
``permanent`` failure rather than being ignored: silently wrong usage would
defeat the run's usage limits.

The output is validated against the agent's ``outputSchema`` when it has one.
Failures follow :mod:`flujo.agents.transport`.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from flujo.agents.base import AgentContext, AgentOutput
from flujo.agents.transport import RemoteAgent, one_line, priced_usage
from flujo.domain.errors import PERMANENT, AgentError
from flujo.domain.usage import Usage

__all__ = ["HttpAgent"]


class HttpAgent(RemoteAgent):
    """A JSON webhook: ``{"input": …}`` in, ``{"output": …}`` (or any JSON) out."""

    kind = "http"

    def request(self, data: Any, context: AgentContext) -> tuple[Any, dict[str, str]]:
        headers = {"x-flujo-step": context.step_path, "x-flujo-attempt": str(context.attempt)}
        if context.run_id:
            headers["x-flujo-run"] = context.run_id
        return {"input": data}, headers

    def interpret(self, body: Any) -> AgentOutput:
        is_object = isinstance(body, dict)
        usage = self._usage(body.get("usage") if is_object else None)
        output = body["output"] if is_object and "output" in body else body
        return self.checked(output, usage)

    def _usage(self, raw: Any) -> Usage:
        if raw is None:
            return priced_usage(0, 0, self.spec.pricing)
        try:
            reported = Usage.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "usage"
            raise AgentError(
                PERMANENT,
                f"{self.who}: the answer's usage is invalid at {where}: "
                f"{one_line(first['msg'], 100)}; expected "
                "{inputTokens, outputTokens, costUsd} as non-negative numbers",
            ) from exc
        cost = reported.cost_usd if "costUsd" in raw or "cost_usd" in raw else None
        return priced_usage(reported.input_tokens, reported.output_tokens, self.spec.pricing, cost)
