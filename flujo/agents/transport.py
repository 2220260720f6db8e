"""What the remote agent kinds share: one JSON POST, and what its failures mean.

The ``openai`` and ``http`` kinds differ only in the request they build and
how they read the answer.  Everything else lives here, once: building
headers from credentials, the pooled POST under the agent's timeout, the
mapping of every failure onto the error taxonomy of
:mod:`flujo.domain.errors`, output-schema validation and pricing.

Each ``run`` makes exactly **one** attempt.  Retries with backoff belong to
the engine's retry policy, which reads the error class and the
``retry_after`` hint carried by the :class:`AgentError`.

The taxonomy, decided once for both kinds (``retry_after`` in brackets):

- transport timeout, or the agent's ``timeoutSeconds`` elapsed → ``timeout``;
- connection refused, reset or dropped, bad content encoding → ``transient``;
- HTTP 408 → ``timeout`` [Retry-After if sent];
- HTTP 429 → ``rate_limited`` [Retry-After, seconds or HTTP date];
- HTTP 5xx → ``transient`` [Retry-After if sent];
- HTTP 401, 403, or a missing credential → ``auth``;
- any other HTTP 4xx → ``permanent``;
- a 2xx body that is not JSON → ``transient``;
- 2xx JSON of the wrong shape (no ``choices``, bad ``usage``) → ``permanent``;
- an answer violating ``outputSchema`` → ``schema`` (with the call's usage);
- an input that cannot be encoded as JSON → ``permanent``;
- a bad endpoint URL, parameters or schema → ``config``, when the agent is built;
- an endpoint or credential file the active security policy refuses (SSRF:
  metadata, link-local, loopback or private addresses; plain http; hosts
  outside the allow-list) → ``config``, when the agent is built, with the
  host *resolved* then (see :mod:`flujo.security.policy`).

A 2xx body that is not JSON is classed *transient*: in practice it is a
response cut short by a dropped connection or an intermediary's HTML error
page, both of which a retry can fix; a well-formed JSON answer of the wrong
shape is a protocol mismatch that retrying cannot fix.

Messages are one line — what failed, which agent and endpoint, what to check —
and never contain a credential: values the server echoes back are redacted
and URLs are shown without user info or query string.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Final

import httpx
from jsonschema import exceptions as schema_exceptions
from jsonschema import validators

from flujo.agents.base import AgentContext, AgentOutput, BaseAgent
from flujo.agents.pool import ClientPool, origin_of
from flujo.domain.errors import (
    AUTH,
    CONFIG,
    INTERNAL,
    PERMANENT,
    RATE_LIMITED,
    SCHEMA,
    TIMEOUT,
    TRANSIENT,
    AgentError,
)
from flujo.domain.usage import Usage
from flujo.security.credentials import resolve_credential
from flujo.security.policy import active_policy, credential_file_problems, endpoint_problems
from flujo.security.redaction import Redactor
from flujo.spec.agent import AgentSpec, PricingSpec
from flujo.spec.loader import format_loc

__all__ = [
    "MAX_ANSWER_BYTES",
    "JsonEndpoint",
    "OutputSchema",
    "RemoteAgent",
    "answer_limit",
    "display_url",
    "encode_json",
    "error_for_status",
    "one_line",
    "parse_retry_after",
    "priced_usage",
]

USER_AGENT: Final = "flujo"
_EXCERPT_CHARS: Final = 200
MAX_ANSWER_BYTES: Final = 64 << 20
"""Largest answer body read when no security policy is active."""
_ERROR_BODY_BYTES: Final = 64 << 10
"""Of an error answer, only this much is read: enough for the server's message."""


def answer_limit(max_output_bytes: int | None) -> int:
    """Bytes of an answer body to read at most, for an output cap of ``max_output_bytes``.

    The body is JSON around the output (escaping can multiply a string's size),
    so the limit is a generous multiple: it exists to stop a hostile or broken
    server from filling memory before the output check can run, not to be exact.
    """
    if not max_output_bytes:
        return MAX_ANSWER_BYTES
    return max_output_bytes * 6 + (64 << 10)


async def _read_body(response: httpx.Response, limit: int, too_big: str | None) -> bytes:
    """Read the body incrementally, up to ``limit`` bytes.

    Past the limit: raise with ``too_big`` as the message, or (``None``) keep the
    first ``limit`` bytes and stop reading (error answers, which are excerpted).
    """
    declared = response.headers.get("content-length", "")
    if too_big is not None and declared.isdigit() and int(declared) > limit:
        raise AgentError(PERMANENT, too_big)
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            if too_big is not None:
                raise AgentError(PERMANENT, too_big)
            chunks.append(chunk[: len(chunk) - (size - limit)])
            break
        chunks.append(chunk)
    return b"".join(chunks)


_WHITESPACE = re.compile(r"\s+")


def one_line(text: str, limit: int = _EXCERPT_CHARS) -> str:
    """``text`` on one line, at most ``limit`` characters."""
    flat = _WHITESPACE.sub(" ", text).strip()
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def parse_retry_after(headers: Mapping[str, str], now: datetime | None = None) -> float | None:
    """Seconds to wait according to ``Retry-After`` (or ``retry-after-ms``).

    ``Retry-After`` is either delta-seconds or an HTTP date (RFC 9110 §10.2.3);
    ``retry-after-ms`` is the millisecond variant some LLM providers send and,
    being more precise, wins.  Unparseable or absent values give ``None``;
    dates in the past give ``0``.
    """
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def priced_usage(
    input_tokens: int,
    output_tokens: int,
    pricing: PricingSpec | None,
    cost_usd: float | None = None,
) -> Usage:
    """Usage of one call; ``cost_usd`` if the server reported it, else priced per 1k."""
    if cost_usd is None:
        cost_usd = 0.0
        if pricing is not None:
            cost_usd = (
                input_tokens * pricing.input_per_1k + output_tokens * pricing.output_per_1k
            ) / 1000.0
    return Usage(input_tokens=input_tokens, output_tokens=output_tokens, cost_usd=cost_usd)


def encode_json(value: Any, who: str) -> str:
    """``value`` as compact JSON text, or ``AgentError(permanent)`` if it has no JSON form."""
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise AgentError(
            PERMANENT, f"{who}: the step input is not JSON-serialisable ({one_line(str(exc))})"
        ) from exc


def display_url(url: str) -> str:
    """The URL without user info or query string, safe to put in a message."""
    parsed = httpx.URL(url)
    return str(parsed.copy_with(userinfo=b"", query=None, fragment=None))


_STATUS_HINTS: Final = {
    401: "check the agent's credential (API key or secret headers)",
    403: "check that the credential is allowed to use this endpoint and model",
    404: "check the endpoint URL (and the model name)",
    408: "the endpoint timed out the request; a retry may succeed",
    429: "the endpoint is rate limiting; lower the agent's rateLimit or raise the quota",
}


def error_for_status(
    response: httpx.Response, *, who: str, url: str, secrets: list[str]
) -> AgentError:
    """The classified error for a non-2xx response."""
    status = response.status_code
    retry_after: float | None = None
    if status == 401 or status == 403:
        error_class = AUTH
    elif status == 408:
        error_class, retry_after = TIMEOUT, parse_retry_after(response.headers)
    elif status == 429:
        error_class, retry_after = RATE_LIMITED, parse_retry_after(response.headers)
    elif status >= 500:
        error_class, retry_after = TRANSIENT, parse_retry_after(response.headers)
    else:
        error_class = PERMANENT
    if status >= 500:
        hint = "the endpoint failed on its side; a retry may succeed, check its health"
    else:
        hint = _STATUS_HINTS.get(
            status, "the endpoint rejected the request; check the agent's parameters and input"
        )
    detail = _server_message(response, secrets)
    wait = f" (retry after {retry_after:g}s)" if retry_after is not None else ""
    message = f"{who}: HTTP {status} from {display_url(url)}{wait}"
    if detail:
        message += f": {detail}"
    return AgentError(error_class, f"{message}; {hint}", retry_after=retry_after)


def _scrub(text: str, secrets: list[str]) -> str:
    """``text`` without the secrets, in any form they take in JSON or a repr.

    Applied *before* flattening or truncating, so neither a secret holding
    whitespace nor one cut in half by an excerpt survives.
    """
    return Redactor(secrets, min_length=1).redact(text)


def _event_json(text: str, who: str, secrets: list[str]) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise AgentError(
            TRANSIENT,
            f"{who}: a streamed event is not valid JSON (starts "
            f"{one_line(_scrub(text, secrets), 80)!r}); a truncated stream or a proxy's page",
        ) from exc


def _server_message(response: httpx.Response, secrets: list[str]) -> str:
    """The human part of an error body: OpenAI's ``error.message`` or a text excerpt."""
    try:
        body = response.json()
    except ValueError:
        return one_line(_scrub(response.text, secrets))
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return one_line(_scrub(error["message"], secrets))
        for key in ("error", "message", "detail"):
            if isinstance(body.get(key), str):
                return one_line(_scrub(body[key], secrets))
    return one_line(_scrub(json.dumps(body), secrets))


class JsonEndpoint:
    """POSTs JSON to one URL for one agent and classifies every failure.

    Credentials are resolved on every call (so rotations apply at once) and
    only live in the request's headers.
    """

    def __init__(self, name: str, kind: str, url: str, spec: AgentSpec, pool: ClientPool) -> None:
        self.who = f"{kind} agent {name!r}"
        self.name = name
        self.url = url
        self.spec = spec
        self.pool = pool
        try:
            origin_of(url)
        except ValueError as exc:
            raise AgentError(
                CONFIG, f"{self.who}: endpoint {url!r} is not an absolute http(s) URL"
            ) from exc
        self._check_policy()
        policy = active_policy()
        self.max_answer_bytes = answer_limit(policy.max_output_bytes if policy else None)

    def _check_policy(self) -> None:
        """Refuse, at build time, what the active security policy does not allow."""
        policy = active_policy()
        if policy is None:
            return
        problems: list[str] = []
        endpoint = endpoint_problems(self.url, policy)
        if endpoint:
            problems.append(f"spec.endpoint {display_url(self.url)}: {'; '.join(endpoint)}")
        for loc, message in credential_file_problems(self.spec, policy):
            problems.append(f"{format_loc(loc)}: {message}")
        if problems:
            raise AgentError(
                CONFIG,
                f"{self.who}: refused by the security policy: {'; '.join(problems)}",
            )

    def _headers(self, extra: Mapping[str, str]) -> tuple[httpx.Headers, list[str]]:
        """Request headers, and the secret values in them (to redact from messages)."""
        headers = httpx.Headers({"content-type": "application/json", "accept": "application/json"})
        headers["user-agent"] = USER_AGENT
        headers.update(self.spec.headers)
        headers.update(extra)
        secrets: list[str] = []
        if self.spec.api_key is not None:
            key = resolve_credential(self.spec.api_key, agent=self.name, purpose="API key")
            headers["authorization"] = f"Bearer {key}"
            secrets.append(key)
        for header in self.spec.secret_headers:
            value = resolve_credential(
                header.value_from, agent=self.name, purpose=f"value of header {header.name}"
            )
            headers[header.name] = header.prefix + value
            secrets.append(value)
        return headers, secrets

    async def post(
        self, payload: Any, timeout: float, extra_headers: Mapping[str, str] | None = None
    ) -> Any:
        """The decoded JSON answer of one POST, or a classified :class:`AgentError`."""
        content = encode_json(payload, self.who).encode()
        headers, secrets = self._headers(extra_headers or {})
        try:
            client = self.pool.client_for(self.url)
        except RuntimeError as exc:  # a closed pool, or one bound to another event loop
            raise AgentError(INTERNAL, f"{self.who}: {exc}") from exc
        where = display_url(self.url)
        limit = self.max_answer_bytes
        too_big = (
            f"{self.who}: the answer from {where} is larger than {limit} bytes; "
            "the security policy's maxOutputBytes bounds what is read"
        )
        try:
            async with asyncio.timeout(timeout):
                # Streamed, so an oversized body is refused as it arrives rather
                # than after it was held in memory whole.
                async with client.stream(
                    "POST",
                    self.url,
                    content=content,
                    headers=headers,
                    timeout=self.pool.limits.timeout(timeout),
                ) as streamed:
                    if streamed.is_success:
                        body = await _read_body(streamed, limit, too_big)
                    else:
                        body = await _read_body(streamed, _ERROR_BODY_BYTES, None)
                    response = httpx.Response(
                        streamed.status_code,
                        headers=streamed.headers,
                        content=body,
                        request=streamed.request,
                    )
        except (TimeoutError, httpx.TimeoutException, httpx.RequestError) as exc:
            raise self._classified(exc, where, timeout, secrets) from exc
        if not response.is_success:
            raise error_for_status(response, who=self.who, url=self.url, secrets=secrets)
        try:
            return response.json()
        except ValueError as exc:
            excerpt = one_line(_scrub(response.text, secrets), 80)
            raise AgentError(
                TRANSIENT,
                f"{self.who}: HTTP {response.status_code} from {where} is not valid JSON "
                f"(starts {excerpt!r}); a truncated answer or a proxy's error page",
            ) from exc

    def _classified(
        self, exc: Exception, where: str, timeout: float, secrets: list[str]
    ) -> AgentError:
        """The error class of a request that raised instead of answering."""
        if isinstance(exc, TimeoutError | httpx.TimeoutException):
            return AgentError(
                TIMEOUT,
                f"{self.who}: no answer from {where} within {timeout:g}s "
                f"({type(exc).__name__}); check the endpoint's health or raise timeoutSeconds",
            )
        if isinstance(exc, httpx.UnsupportedProtocol):
            return AgentError(CONFIG, f"{self.who}: endpoint {where} has an unsupported scheme")
        reason = one_line(_scrub(str(exc), secrets)) or type(exc).__name__
        return AgentError(
            TRANSIENT,
            f"{self.who}: request to {where} failed: {reason}; "
            "check that the endpoint is reachable",
        )

    async def stream(
        self,
        payload: Any,
        timeout: float,
        on_event: Callable[[Any], bool],
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        """POST and read a server-sent-events answer, each ``data:`` event's JSON to ``on_event``.

        ``on_event`` returns False to stop reading (the connection is closed);
        ``data: [DONE]`` ends the stream.  Failures are classified as by :meth:`post`.
        """
        content = encode_json(payload, self.who).encode()
        headers, secrets = self._headers(extra_headers or {})
        headers["accept"] = "text/event-stream"
        try:
            client = self.pool.client_for(self.url)
        except RuntimeError as exc:
            raise AgentError(INTERNAL, f"{self.who}: {exc}") from exc
        where = display_url(self.url)
        limit = self.max_answer_bytes
        try:
            async with (
                asyncio.timeout(timeout),
                client.stream(
                    "POST",
                    self.url,
                    content=content,
                    headers=headers,
                    timeout=self.pool.limits.timeout(timeout),
                ) as streamed,
            ):
                if not streamed.is_success:
                    body = await _read_body(streamed, _ERROR_BODY_BYTES, None)
                    response = httpx.Response(
                        streamed.status_code, headers=streamed.headers, content=body
                    )
                    raise error_for_status(response, who=self.who, url=self.url, secrets=secrets)
                size, data = 0, []
                async for line in streamed.aiter_lines():
                    size += len(line) + 1
                    if size > limit:
                        raise AgentError(
                            PERMANENT,
                            f"{self.who}: the streamed answer from {where} is "
                            f"larger than {limit} bytes; the security policy's maxOutputBytes "
                            "bounds what is read",
                        )
                    if line.startswith("data:"):
                        data.append(line[5:].strip())
                        continue
                    if line or not data:
                        continue  # comments, event names, ids; or a blank line between events
                    text, data = "\n".join(data), []
                    if text == "[DONE]" or not on_event(_event_json(text, self.who, secrets)):
                        return
                if data and data != ["[DONE]"]:
                    on_event(_event_json("\n".join(data), self.who, secrets))
        except (TimeoutError, httpx.TimeoutException, httpx.RequestError) as exc:
            raise self._classified(exc, where, timeout, secrets) from exc


class OutputSchema:
    """A compiled ``outputSchema``: checked when the agent is built, applied per answer."""

    def __init__(self, schema: dict[str, Any], who: str) -> None:
        self.who = who
        cls = validators.validator_for(schema)
        try:
            cls.check_schema(schema)
        except schema_exceptions.SchemaError as exc:
            raise AgentError(
                CONFIG, f"{who}: outputSchema is not a valid JSON Schema: {one_line(exc.message)}"
            ) from exc
        self._validator = cls(schema)

    def check(self, value: Any, usage: Usage) -> None:
        """Raise ``AgentError(schema)`` (carrying ``usage``) if ``value`` violates the schema."""
        error = schema_exceptions.best_match(self._validator.iter_errors(value))
        if error is None:
            return
        raise AgentError(
            SCHEMA,
            f"{self.who}: output does not match outputSchema at {error.json_path}: "
            f"{one_line(error.message)}; make the prompt ask for this shape or relax the schema",
            usage=usage,
        )


class RemoteAgent(BaseAgent):
    """An agent behind an HTTP endpoint: build a request, POST it once, read the answer.

    Subclasses implement :meth:`request` and :meth:`interpret`.  Agents share
    the pool and never close it: the pool's owner does.
    """

    kind: str = "remote"

    def __init__(self, name: str, spec: AgentSpec, pool: ClientPool) -> None:
        self.name = name
        self.spec = spec
        self.who = f"{self.kind} agent {name!r}"
        self.endpoint = JsonEndpoint(name, self.kind, self.url_for(spec), spec, pool)
        self.output_schema = (
            OutputSchema(spec.output_schema, self.who) if spec.output_schema else None
        )

    def url_for(self, spec: AgentSpec) -> str:
        """The URL this agent POSTs to."""
        if not spec.endpoint:
            raise AgentError(CONFIG, f"{self.who}: no endpoint configured")
        return spec.endpoint

    def request(self, data: Any, context: AgentContext) -> tuple[Any, dict[str, str]]:
        """The JSON payload and extra headers of one call."""
        raise NotImplementedError

    def interpret(self, body: Any) -> AgentOutput:
        """The output and usage read from the decoded answer."""
        raise NotImplementedError

    async def run(self, data: Any, context: AgentContext) -> AgentOutput:
        payload, headers = self.request(data, context)
        timeout = self.spec.timeout_seconds
        if context.timeout_seconds is not None:
            timeout = min(timeout, context.timeout_seconds)
        body = await self.endpoint.post(payload, timeout, headers)
        return self.interpret(body)

    def checked(self, output: Any, usage: Usage) -> AgentOutput:
        """``output`` validated against the output schema, if any."""
        if self.output_schema is not None:
            self.output_schema.check(output, usage)
        return AgentOutput(output=output, usage=usage)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, endpoint={display_url(self.endpoint.url)!r})"
