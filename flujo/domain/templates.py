"""Step-input templates and expressions, rendered in Jinja2's sandbox.

Templates come from pipeline authors, who may not be trusted with the
operator's process: the immutable sandbox blocks access to private
attributes (``__class__``, ``__globals__``) and to mutating methods, and
undefined names raise instead of rendering empty.

A string that is exactly one ``{{ expression }}`` evaluates to the native
value (a dict stays a dict); any other string renders to text.  Compiled
templates are memoised by their source text: rendering is pure, so the cache
only saves work.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from jinja2 import StrictUndefined, TemplateError, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

__all__ = [
    "CONTEXT_NAMES",
    "TemplateProblem",
    "evaluate",
    "is_template",
    "referenced_steps",
    "render_value",
    "undeclared_names",
]

CONTEXT_NAMES = frozenset(
    {"input", "previous_step", "steps", "output", "iteration", "item", "index", "branch"}
)
"""Names a template may use; see docs/architecture.md."""

_SINGLE_EXPR = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\}\}).)*)\}\}\s*$", re.DOTALL)
_MAX_RENDERED = 1 << 20


class TemplateProblem(Exception):
    """A template could not be compiled or rendered; the message is one line."""


def _fromjson(value: str) -> Any:
    return json.loads(value)


_env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
_env.filters["fromjson"] = _fromjson
_env.filters["json"] = lambda v: json.dumps(v, ensure_ascii=False, sort_keys=True)

_expr_cache: dict[str, Callable[..., Any]] = {}
_tmpl_cache: dict[str, Any] = {}


def is_template(text: str) -> bool:
    return "{{" in text or "{%" in text


def _one_line(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {msg[0] if msg else ''}".rstrip(": ")


def evaluate(expression: str, context: Mapping[str, Any]) -> Any:
    """Evaluate a bare Jinja expression (``'ok' in output``) to a native value."""
    fn = _expr_cache.get(expression)
    if fn is None:
        try:
            fn = _env.compile_expression(expression, undefined_to_none=False)
        except TemplateError as exc:
            raise TemplateProblem(f"invalid expression {expression!r}: {_one_line(exc)}") from None
        _expr_cache[expression] = fn
    try:
        return fn(**context)
    except Exception as exc:
        raise TemplateProblem(f"expression {expression!r} failed: {_one_line(exc)}") from None


def _render_text(text: str, context: Mapping[str, Any]) -> Any:
    single = _SINGLE_EXPR.match(text)
    if single is not None and "{%" not in text:
        return evaluate(single.group("expr").strip(), context)
    tmpl = _tmpl_cache.get(text)
    if tmpl is None:
        try:
            tmpl = _env.from_string(text)
        except TemplateError as exc:
            raise TemplateProblem(f"invalid template {text!r}: {_one_line(exc)}") from None
        _tmpl_cache[text] = tmpl
    try:
        out: str = tmpl.render(**context)
    except Exception as exc:
        raise TemplateProblem(f"template {text!r} failed: {_one_line(exc)}") from None
    if len(out) > _MAX_RENDERED:
        raise TemplateProblem(f"template {text[:40]!r} rendered more than {_MAX_RENDERED} chars")
    return out


def render_value(value: Any, context: Mapping[str, Any]) -> Any:
    """Render every template string inside a JSON-like value."""
    if isinstance(value, str):
        return _render_text(value, context) if is_template(value) else value
    if isinstance(value, dict):
        return {k: render_value(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [render_value(v, context) for v in value]
    return value


# --- static analysis, used by validation ---------------------------------


def _parse(source: str, expression: bool) -> nodes.Template:
    text = "{{ " + source + " }}" if expression else source
    return _env.parse(text)


def _walk_strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        if is_template(value):
            yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _walk_strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _walk_strings(v)


def _asts(value: Any, expression: bool) -> Iterator[nodes.Template]:
    if expression:
        yield _parse(str(value), True)
    else:
        for text in _walk_strings(value):
            yield _parse(text, False)


def referenced_steps(value: Any, expression: bool = False) -> set[str]:
    """Step names used as ``steps.NAME`` or ``steps['NAME']``.

    Raises :class:`TemplateProblem` when the source does not parse.
    """
    found: set[str] = set()
    try:
        for ast in _asts(value, expression):
            for attr in ast.find_all(nodes.Getattr):
                if isinstance(attr.node, nodes.Name) and attr.node.name == "steps":
                    found.add(attr.attr)
            for item in ast.find_all(nodes.Getitem):
                if (
                    isinstance(item.node, nodes.Name)
                    and item.node.name == "steps"
                    and isinstance(item.arg, nodes.Const)
                    and isinstance(item.arg.value, str)
                ):
                    found.add(item.arg.value)
    except TemplateError as exc:
        raise TemplateProblem(_one_line(exc)) from None
    return found


def undeclared_names(value: Any, expression: bool = False) -> set[str]:
    """Top-level names a template reads that are not in :data:`CONTEXT_NAMES`."""
    from jinja2 import meta

    names: set[str] = set()
    try:
        for ast in _asts(value, expression):
            names |= meta.find_undeclared_variables(ast)
    except TemplateError as exc:
        raise TemplateProblem(_one_line(exc)) from None
    return {n for n in names if n not in CONTEXT_NAMES and n not in _env.globals}
