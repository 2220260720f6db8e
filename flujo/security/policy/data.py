"""Data limits: a run's input and each agent's output against the policy's size caps.

Sizes are UTF-8 bytes as JSON would carry them; text must be valid UTF-8 and
values nested at most :data:`MAX_DATA_DEPTH` levels.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from flujo.security.policy.model import PolicyViolation, SecurityPolicy

__all__ = ["MAX_DATA_DEPTH", "check_input", "check_output", "enforce_input", "parse_input"]

MAX_DATA_DEPTH = 100
"""Nesting of input and output values (JSON arrays and objects)."""


def _data_problem(value: Any, limit: int, what: str) -> str | None:
    """Size (UTF-8 bytes, as JSON would carry it), UTF-8 validity and nesting of ``value``."""
    total = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DATA_DEPTH:
            return f"{what} is nested deeper than {MAX_DATA_DEPTH} levels"
        if isinstance(item, str):
            try:
                total += len(item.encode("utf-8")) + 2
            except UnicodeEncodeError as exc:
                return f"{what} is not valid UTF-8 text (invalid character at index {exc.start})"
        elif item is None or isinstance(item, bool | int | float):
            total += len(repr(item)) if isinstance(item, int | float) else 5
        elif isinstance(item, bytes | bytearray):
            total += len(item)
        elif isinstance(item, Mapping):
            total += 2
            for key, val in item.items():
                stack.append((key, depth + 1))
                stack.append((val, depth + 1))
        elif isinstance(item, list | tuple | set | frozenset):
            total += 2 + len(item)
            stack.extend((v, depth + 1) for v in item)
        else:
            total += len(repr(item))
        if total > limit:
            return f"{what} is larger than the security policy's limit of {limit} bytes"
    return None


def check_input(data: Any, policy: SecurityPolicy) -> list[str]:
    """Problems of a run's input: size over ``maxInputBytes``, invalid UTF-8, deep nesting."""
    problem = _data_problem(data, policy.max_input_bytes, "input")
    return [problem] if problem else []


def check_output(data: Any, policy: SecurityPolicy, *, what: str = "output") -> list[str]:
    """Problems of one agent output: size over ``maxOutputBytes``, invalid UTF-8, nesting."""
    problem = _data_problem(data, policy.max_output_bytes, what)
    return [problem] if problem else []


def enforce_input(data: Any, policy: SecurityPolicy) -> None:
    """Raise :class:`PolicyViolation` if the input is refused."""
    problems = check_input(data, policy)
    if problems:
        raise PolicyViolation(problems[0])


def parse_input(
    raw: bytes | str, policy: SecurityPolicy, *, as_json: bool = False, source: str = "input"
) -> Any:
    """Decode a run input the way the CLI reads it, every failure one line.

    Size is checked before decoding, bytes must be UTF-8, JSON is parsed
    without letting deep nesting reach Python's recursion limit.
    """
    size = len(raw) if isinstance(raw, bytes) else len(raw.encode("utf-8", "surrogatepass"))
    if size > policy.max_input_bytes:
        raise PolicyViolation(f"{source}: larger than {policy.max_input_bytes} bytes")
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PolicyViolation(f"{source}: not UTF-8 (byte {exc.start})") from None
    else:
        text = raw
    if not as_json:
        problems = check_input(text, policy)
        if problems:
            raise PolicyViolation(f"{source}: {problems[0]}")
        return text
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PolicyViolation(f"{source} is not JSON: {exc.msg} at {exc.pos}") from None
    except RecursionError:
        raise PolicyViolation(f"{source}: JSON nested too deeply") from None
    problems = check_input(value, policy)
    if problems:
        raise PolicyViolation(f"{source}: {problems[0]}")
    return value
