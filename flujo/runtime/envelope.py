"""How a step-runner pod hands its result back to the operator.

Kubernetes caps a container's termination message at 4 KiB — the ceiling
Tekton results keep hitting.  So the result travels in two parts:

- the **envelope**, in the termination message: a small JSON object with
  the outcome, usage, the body's sha256 and size, and a preview;
- the **body**, in the container log: the full result event as JSON,
  base64-encoded between two marker lines, so other log lines cannot corrupt
  it.  The operator reads the log and checks it against the envelope's
  digest; outputs up to :data:`MAX_BODY_BYTES` round-trip byte for byte.

A body small enough to fit is *also* carried in the envelope (``body``), and
the operator then does not read the log at all: most steps (classifications,
short answers, tool results) cost one API read fewer, off the critical path
between a step finishing and the next one starting.

Both sides live here so they cannot drift.  Pure functions, no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from pydantic import TypeAdapter

from flujo.domain.usage import Usage
from flujo.engine.events import StepFailed, StepSucceeded

__all__ = [
    "BEGIN",
    "END",
    "MAX_BODY_BYTES",
    "MAX_ENVELOPE_BYTES",
    "EnvelopeError",
    "decode_result",
    "encode_result",
    "inline_result",
    "parse_envelope",
]

BEGIN = "----- BEGIN FLUJO RESULT -----"
END = "----- END FLUJO RESULT -----"
MAX_BODY_BYTES = 4 << 20
MAX_ENVELOPE_BYTES = 4096
_PREVIEW = 160

StepResult = StepSucceeded | StepFailed
_adapter: TypeAdapter[StepResult] = TypeAdapter(StepResult)


class EnvelopeError(Exception):
    """The pod's result is missing, truncated or does not match its digest."""


def _canonical(event: StepResult) -> bytes:
    return json.dumps(
        event.model_dump(mode="json"), ensure_ascii=False, sort_keys=True, separators=(",", ":")
    ).encode("utf-8")


def _preview(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= _PREVIEW else text[: _PREVIEW - 1] + "…"


def encode_result(event: StepResult) -> tuple[str, str]:
    """(termination message, log text) for a step's result event."""
    body = _canonical(event)
    if len(body) > MAX_BODY_BYTES:
        event = StepFailed(
            path=event.path,
            attempt=event.attempt,
            error_class="schema",
            message=f"the step's output is {len(body)} bytes; the limit is {MAX_BODY_BYTES}",
            usage=event.usage,
        )
        body = _canonical(event)
    envelope: dict[str, Any] = {
        "v": 1,
        "status": "succeeded" if isinstance(event, StepSucceeded) else "failed",
        "path": event.path,
        "attempt": event.attempt,
        "usage": event.usage.model_dump(by_alias=True),
        "sha256": hashlib.sha256(body).hexdigest(),
        "size": len(body),
    }
    if isinstance(event, StepFailed):
        envelope["errorClass"] = event.error_class
        envelope["message"] = event.message[:1000]
    else:
        envelope["preview"] = _preview(event.output)
    encoded = base64.b64encode(body).decode("ascii")
    lines = [encoded[i : i + 76] for i in range(0, len(encoded), 76)]
    log = "\n".join([BEGIN, *lines, END]) + "\n"
    inline = json.dumps({**envelope, "body": encoded}, ensure_ascii=False, separators=(",", ":"))
    if len(inline.encode("utf-8")) <= MAX_ENVELOPE_BYTES:
        return inline, log
    message = json.dumps(envelope, ensure_ascii=False, separators=(",", ":"))
    if len(message.encode("utf-8")) > MAX_ENVELOPE_BYTES:  # pragma: no cover - bounded above
        envelope.pop("preview", None)
        envelope["message"] = envelope.get("message", "")[:200]
        message = json.dumps(envelope, ensure_ascii=False, separators=(",", ":"))
    return message, log


def parse_envelope(message: str) -> dict[str, Any]:
    try:
        envelope = json.loads(message)
    except (json.JSONDecodeError, TypeError):
        raise EnvelopeError("the termination message is not a Flujo result envelope") from None
    if not isinstance(envelope, dict) or envelope.get("v") != 1:
        raise EnvelopeError("the termination message is not a Flujo result envelope")
    return envelope


def inline_result(message: str) -> StepResult | None:
    """The result carried whole in the envelope, or None when it is only in the log."""
    envelope = parse_envelope(message)
    encoded = envelope.get("body")
    return _verified(envelope, encoded) if isinstance(encoded, str) else None


def decode_result(message: str, log: str) -> StepResult:
    """The result event, verified against the envelope's digest and size."""
    envelope = parse_envelope(message)
    try:
        start = log.rindex(BEGIN) + len(BEGIN)
        stop = log.index(END, start)
    except ValueError:
        raise EnvelopeError("the pod log holds no complete Flujo result") from None
    encoded = "".join(line.strip() for line in log[start:stop].splitlines())
    return _verified(envelope, encoded)


def _verified(envelope: dict[str, Any], encoded: str) -> StepResult:
    try:
        body = base64.b64decode(encoded, validate=True)
    except ValueError:
        raise EnvelopeError("the result in the pod log is not valid base64") from None
    if len(body) != envelope.get("size") or (
        hashlib.sha256(body).hexdigest() != envelope.get("sha256")
    ):
        raise EnvelopeError("the result in the pod log does not match its digest")
    return _adapter.validate_json(body)


def usage_of(envelope: dict[str, Any]) -> Usage:
    """The usage an envelope reports, even when the body is lost."""
    try:
        return Usage.model_validate(envelope.get("usage") or {})
    except ValueError:
        return Usage()
