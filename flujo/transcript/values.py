"""How a value appears in a transcript: canonical JSON, digests, short previews.

Everything here is a pure function of its argument, with nothing that depends
on the clock, ids, the hash seed or the machine (sets are sorted, reprs with
memory addresses are replaced), which is what lets transcripts be checked in
as golden files.  Also the text of usage figures and durations, and the
natural order of step paths the renderer sorts by.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from flujo.domain.usage import Usage

__all__ = [
    "PREVIEW_CHARS",
    "canonical_json",
    "digest",
    "natural_order",
    "preview",
    "seconds_text",
    "total_text",
    "usage_text",
]

PREVIEW_CHARS = 96
"""Values whose canonical JSON is longer than this are shown abbreviated."""

_HEAD_CHARS = 64


def _jsonable(value: Any) -> Any:
    """Plain JSON data for any value, without reprs that hold memory addresses."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, BaseModel):
        return _jsonable(value.model_dump(mode="json", by_alias=True))
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted((_jsonable(v) for v in value), key=canonical_json)
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes sha256:{hashlib.sha256(value).hexdigest()[:16]}>"
    return f"<{type(value).__module__}.{type(value).__qualname__}>"


def canonical_json(value: Any) -> str:
    """The canonical JSON text of a value: sorted keys, no spaces, UTF-8 kept."""
    return json.dumps(_jsonable(value), sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def digest(value: Any) -> str:
    """``sha256:`` and the first 16 hex digits of the value's canonical JSON."""
    return "sha256:" + hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()[:16]


def _head(text: str, limit: int) -> str:
    """At most ``limit`` chars of JSON text, never ending inside an escape."""
    i = 0
    while i < len(text):
        step = 1
        if text[i] == "\\":  # in JSON, a backslash only ever starts an escape
            step = 6 if text[i + 1 : i + 2] == "u" else 2
        if i + step > limit:
            break
        i += step
    return text[:i]


def preview(value: Any) -> str:
    """Canonical JSON in full when short, else a head, its length and digest."""
    text = canonical_json(value)
    if len(text) <= PREVIEW_CHARS:
        return text
    return f"{_head(text, _HEAD_CHARS)}... ({len(text)} chars, {digest(value)})"


def usage_text(u: Usage) -> str:
    if u.is_zero:
        return "none"
    estimated = ", estimated" if u.estimated else ""
    return (
        f"{u.total_tokens} tokens ({u.input_tokens} in, {u.output_tokens} out{estimated}), "
        f"${u.cost_usd:.6f}"
    )


def total_text(u: Usage) -> str:
    return f"{u.total_tokens} tokens, ${u.cost_usd:.6f}"


def seconds_text(value: float) -> str:
    return f"{value!r}s"


def natural_order(path: str) -> tuple[tuple[int, int | str], ...]:
    """``each/item-10`` after ``each/item-9``: numbers compare as numbers."""
    out: list[tuple[int, int | str]] = []
    for part in re.split(r"(\d+)", path):
        if part:
            out.append((0, int(part)) if part.isdigit() else (1, part))
    return tuple(out)
