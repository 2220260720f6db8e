"""Built-in transforms: agents that need no network and no API key.

They make real pipelines runnable anywhere (examples, tests, dry runs) and
are ordinary agents to the engine.  Each transform is a pure function of the
input and the agent's ``config``; in a manifest::

    kind: Agent
    metadata: {name: shout}
    spec: {type: builtin, builtin: upper}

The plain transforms are also pre-registered as ``builtin.<name>`` (for
example ``builtin.upper``) so a pipeline can use them without a manifest.

``config.each: true`` makes any transform a *batch* agent: its input must be
a list and it applies the transform to every element, returning the list of
results — what the body of a map with ``batchSize`` must do.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from flujo.agents.base import AgentContext, AgentOutput, BaseAgent
from flujo.domain.errors import CONFIG, SCHEMA, AgentError
from flujo.domain.templates import TemplateProblem, render_value

__all__ = ["BUILTINS", "PRESET_PREFIX", "BuiltinAgent", "builtin_names"]

PRESET_PREFIX = "builtin."

Transform = Callable[[Any, Mapping[str, Any]], Any]


def _text(data: Any) -> str:
    return data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, sort_keys=True)


def _get(data: Any, config: Mapping[str, Any]) -> Any:
    path = str(config.get("path", ""))
    value = data
    for part in [p for p in path.split(".") if p]:
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif (
            isinstance(value, list)
            and part.lstrip("-").isdigit()
            and -len(value) <= int(part) < len(value)
        ):
            value = value[int(part)]
        elif "default" in config:
            return config["default"]
        else:
            raise AgentError(SCHEMA, f"get: no {part!r} in the input (path {path!r})")
    return value


def _json_parse(data: Any, config: Mapping[str, Any]) -> Any:
    if not isinstance(data, str):
        return data
    try:
        return json.loads(data)
    except json.JSONDecodeError as exc:
        raise AgentError(
            SCHEMA, f"json-parse: input is not JSON ({exc.msg} at {exc.pos})"
        ) from None


def _template(data: Any, config: Mapping[str, Any]) -> Any:
    if "template" not in config:
        raise AgentError(CONFIG, "template: config.template is required")
    try:
        return render_value(config["template"], {"input": data, "previous_step": data})
    except TemplateProblem as exc:
        raise AgentError(CONFIG, f"template: {exc}") from None


def _classify(data: Any, config: Mapping[str, Any]) -> Any:
    """First label whose keywords occur in the input (case-insensitive)."""
    text = _text(data).lower()
    rules = config.get("rules", {})
    if not isinstance(rules, Mapping):
        raise AgentError(CONFIG, "classify: config.rules must map labels to keyword lists")
    for label, words in rules.items():
        if any(str(w).lower() in text for w in words):
            return label
    return config.get("default", "other")


def _add(data: Any, config: Mapping[str, Any]) -> Any:
    if isinstance(data, bool) or not isinstance(data, int | float):
        raise AgentError(SCHEMA, f"add: input must be a number, got {type(data).__name__}")
    amount = config.get("amount", 1)
    return data + amount


BUILTINS: dict[str, Transform] = {
    "echo": lambda d, c: d,
    "upper": lambda d, c: _text(d).upper(),
    "lower": lambda d, c: _text(d).lower(),
    "strip": lambda d, c: _text(d).strip(),
    "length": lambda d, c: len(d) if isinstance(d, list | dict | str) else len(_text(d)),
    "word-count": lambda d, c: len(_text(d).split()),
    "split-lines": lambda d, c: [ln for ln in _text(d).splitlines() if ln.strip()],
    "join": lambda d, c: str(c.get("separator", "\n")).join(
        _text(x) for x in (d if isinstance(d, list) else [d])
    ),
    "json-parse": _json_parse,
    "json-dump": lambda d, c: json.dumps(d, ensure_ascii=False, sort_keys=True),
    "get": _get,
    "const": lambda d, c: c.get("value"),
    "template": _template,
    "classify": _classify,
    "add": _add,
    "append": lambda d, c: _text(d) + str(c.get("suffix", "")),
    "prepend": lambda d, c: str(c.get("prefix", "")) + _text(d),
}

_NEEDS_CONFIG = frozenset({"template", "const", "get", "classify"})


def builtin_names(presets_only: bool = False) -> list[str]:
    names = sorted(BUILTINS)
    return [n for n in names if n not in _NEEDS_CONFIG] if presets_only else names


class BuiltinAgent(BaseAgent):
    """A named transform with its config; instant, so called inline."""

    supports_sync = True

    def __init__(self, transform: str, config: Mapping[str, Any] | None = None) -> None:
        if transform not in BUILTINS:
            raise AgentError(
                CONFIG,
                f"unknown builtin {transform!r} (known: {', '.join(builtin_names())})",
            )
        self.transform = transform
        self.config = dict(config or {})
        # Batch mode: apply the transform to every element of a list input.
        self.each = self.config.get("each", False) is True
        self._fn = BUILTINS[transform]

    def run_sync(self, data: Any, context: AgentContext) -> AgentOutput:
        if not self.each:
            return AgentOutput(self._fn(data, self.config))
        if not isinstance(data, list):
            raise AgentError(
                SCHEMA,
                f"{self.transform} (each: true): input must be a list, got {type(data).__name__}",
            )
        return AgentOutput([self._fn(x, self.config) for x in data])
