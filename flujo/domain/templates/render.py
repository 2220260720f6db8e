"""Rendering JSON-like values whose strings are templates or expressions.

A string that is exactly one ``{{ expression }}`` evaluates to the native
value (a dict stays a dict); any other template string renders to text; an
expression (``'ok' in output``) evaluates to a native value, which must be
data.  One budget counts the work of a whole value.  Compiled templates are
memoised by their source text: rendering is pure, so the cache only saves
work.  Before a source is compiled it is measured
(:mod:`~flujo.domain.templates.scan`) against the limits in force, and
compiled under their deadline; a cached template is checked again against
the limits in force when it is reused (they may be another namespace's).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

from jinja2 import TemplateError
from jinja2.runtime import Undefined

from flujo.domain.templates.limits import MAX_RENDERED, budget_scope, compile_scope
from flujo.domain.templates.problems import TemplateProblem, one_line, quote
from flujo.domain.templates.sandbox import env, is_template
from flujo.domain.templates.scan import TemplateSize, check_size, size_problem

__all__ = ["evaluate", "render_value"]

_MAX_CACHED = 4096
_SINGLE_EXPR = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\}\}).)*)\}\}\s*$", re.DOTALL)

_expr_cache: dict[str, tuple[Callable[..., Any], TemplateSize]] = {}
_tmpl_cache: dict[str, tuple[Any, TemplateSize]] = {}


def _remember(cache: dict[str, Any], key: str, value: Any) -> None:
    if len(cache) >= _MAX_CACHED:
        cache.clear()
    cache[key] = value


def _compile(source: str, expression: bool, build: Callable[[], Any]) -> tuple[Any, TemplateSize]:
    """``build()`` of a source measured first and compiled under the compile deadline."""
    size = check_size(source, expression)
    kind = "expression" if expression else "template"
    try:
        with compile_scope():
            return build(), size
    except (TemplateError, RecursionError, MemoryError) as exc:
        raise TemplateProblem(f"invalid {kind} {quote(source)}: {one_line(exc)}") from None


def _reused(entry: tuple[Any, TemplateSize]) -> Any:
    problem = size_problem(entry[1])
    if problem is not None:
        raise TemplateProblem(problem)
    return entry[0]


def _check_result(value: Any, expression: str) -> Any:
    """An expression's value must be data: no undefined, no callable, no module."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Undefined):
            try:
                str(item)
            except Exception as exc:
                raise TemplateProblem(
                    f"expression {quote(expression)} failed: {one_line(exc)}"
                ) from None
            raise TemplateProblem(f"expression {quote(expression)} is undefined")
        if isinstance(item, str | int | float | bool) or item is None:
            continue
        if callable(item) or isinstance(item, ModuleType):
            raise TemplateProblem(
                f"expression {quote(expression)} gave a {type(item).__name__}, not data"
            )
        if depth >= 64:
            continue
        if isinstance(item, Mapping):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list | tuple):
            stack.extend((v, depth + 1) for v in item)
    return value


def evaluate(expression: str, context: Mapping[str, Any]) -> Any:
    """Evaluate a bare Jinja expression (``'ok' in output``) to a native value."""
    entry = _expr_cache.get(expression)
    if entry is None:
        entry = _compile(
            expression,
            True,
            lambda: env.compile_expression(expression, undefined_to_none=False),
        )
        _remember(_expr_cache, expression, entry)
    fn = _reused(entry)
    with budget_scope():
        try:
            value = fn(**context)
        except Exception as exc:
            raise TemplateProblem(
                f"expression {quote(expression)} failed: {one_line(exc)}"
            ) from None
        return _check_result(value, expression)


def _render_text(text: str, context: Mapping[str, Any]) -> Any:
    single = _SINGLE_EXPR.match(text)
    if single is not None and "{%" not in text:
        return evaluate(single.group("expr").strip(), context)
    entry = _tmpl_cache.get(text)
    if entry is None:
        entry = _compile(text, False, lambda: env.from_string(text))
        _remember(_tmpl_cache, text, entry)
    tmpl = _reused(entry)
    with budget_scope():
        try:
            out: str = tmpl.render(**context)
        except Exception as exc:
            raise TemplateProblem(f"template {quote(text)} failed: {one_line(exc)}") from None
    if len(out) > MAX_RENDERED:
        raise TemplateProblem(f"template {quote(text, 40)} rendered more than {MAX_RENDERED} chars")
    return out


def render_value(value: Any, context: Mapping[str, Any]) -> Any:
    """Render every template string inside a JSON-like value."""
    with budget_scope():
        return _render_value(value, context)


def _render_value(value: Any, context: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        return _render_text(value, context) if is_template(value) else value
    if isinstance(value, dict):
        return {k: _render_value(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [_render_value(v, context) for v in value]
    return value
