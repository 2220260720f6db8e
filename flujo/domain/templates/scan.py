"""The size of a template, measured before Jinja parses it.

Parsing and compiling cost far more than the source suggests (a megabyte
of ``{{ input }}`` took 26 s and 1 GB to compile), so every template is
measured first, cheaply, against :class:`~flujo.domain.templates.limits.TemplateLimits`:

1. its UTF-8 length (no lexing at all past ``max_template_bytes``);
2. a lexical pre-scan with Jinja's own lexer (``tokeniter``, one regular
   expression pass, linear in the source) that counts tokens and nesting
   and stops as soon as either is over its limit.

Nesting counts what makes the parser and code generator recurse: brackets,
block tags (``for``, ``if``, ``macro``, ``call``, ``filter``, ``block``,
``with``, block ``set``) and, inside one expression, the operators that
build nested syntax trees (``+ - * / // % ** |``, ``and``, ``or``, ``not``
and inline ``if``); ``~`` and comparisons build flat nodes and are not
counted.  :class:`Tally` adds the templates of one pipeline against the
per-pipeline limits.  Problems are one line, naming the policy field.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jinja2 import TemplateError

from flujo.domain.templates.limits import TemplateLimits, active_limits
from flujo.domain.templates.problems import TemplateProblem
from flujo.domain.templates.sandbox import env, is_template

__all__ = ["Tally", "TemplateSize", "check_size", "measure", "size_problem", "template_sources"]

_OPENERS = frozenset({"for", "if", "macro", "call", "filter", "block", "with", "autoescape"})
_NESTING_OPS = frozenset({"+", "-", "*", "/", "//", "%", "**", "|"})
_NESTING_NAMES = frozenset({"and", "or", "not", "if"})
_OPEN, _CLOSE = frozenset("([{"), frozenset(")]}")
_ENDS = frozenset({"variable_end", "block_end"})


@dataclass(frozen=True)
class TemplateSize:
    """What the pre-scan found; ``tokens`` and ``nesting`` stop one past their limit."""

    bytes: int
    tokens: int = 0
    nesting: int = 0


def utf8_length(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def template_sources(value: Any, expression: bool) -> Iterator[str]:
    """The sources Jinja would compile for a field: its template strings, or its expression."""
    if expression:
        yield str(value)
    elif isinstance(value, str):
        if is_template(value):
            yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from template_sources(v, False)
    elif isinstance(value, list):
        for v in value:
            yield from template_sources(v, False)


@lru_cache(maxsize=64)
def _scan(text: str, max_tokens: int, max_nesting: int) -> tuple[int, int]:
    tokens = deepest = blocks = expr = 0
    stack: list[int] = []
    tag_start = in_set = set_assigns = False
    try:
        for _, kind, value in env.lexer.tokeniter(text, None):
            if kind == "whitespace":
                continue
            tokens += 1
            if kind == "operator":
                if value in _OPEN:
                    stack.append(0)
                    expr += 1
                elif value in _CLOSE:
                    expr -= 1 + (stack.pop() if stack else 0)
                elif value in _NESTING_OPS:
                    if stack:
                        stack[-1] += 1
                    expr += 1
                elif value == "=" and in_set:
                    set_assigns = True
            elif kind == "name":
                if tag_start:
                    if value in _OPENERS:
                        blocks += 1
                    elif value.startswith("end"):
                        blocks = max(0, blocks - 1)
                    in_set, set_assigns = value == "set", False
                elif value in _NESTING_NAMES:
                    if stack:
                        stack[-1] += 1
                    expr += 1
            elif kind in _ENDS:
                if kind == "block_end" and in_set and not set_assigns:
                    blocks += 1  # {% set x %}…{% endset %}
                in_set = False
                stack.clear()
                expr = 0
            tag_start = kind == "block_begin"
            deepest = max(deepest, blocks + expr)
            if tokens > max_tokens or deepest > max_nesting:
                break
    except TemplateError:
        pass  # a syntax error: parsing reports it, at no more cost than this scan
    return tokens, deepest


def measure(
    source: str, expression: bool = False, limits: TemplateLimits | None = None
) -> TemplateSize:
    """The size of one template (or expression) source, scanning no further than ``limits``."""
    limits = limits or active_limits()
    length = utf8_length(source)
    if length > limits.max_template_bytes:
        return TemplateSize(length)
    text = "{{ " + source + " }}" if expression else source
    tokens, nesting = _scan(text, limits.max_template_tokens, limits.max_template_nesting)
    return TemplateSize(length, tokens, nesting)


def size_problem(size: TemplateSize, limits: TemplateLimits | None = None) -> str | None:
    """Why ``size`` is over ``limits``, in one line; None when it is within them."""
    limits = limits or active_limits()
    if size.bytes > limits.max_template_bytes:
        return (
            f"template too large: {size.bytes} bytes "
            f"(limit {limits.max_template_bytes}, maxTemplateBytes)"
        )
    if size.tokens > limits.max_template_tokens:
        return (
            f"template too large: more than {limits.max_template_tokens} tokens (maxTemplateTokens)"
        )
    if size.nesting > limits.max_template_nesting:
        return (
            f"template nested too deeply: more than {limits.max_template_nesting} levels "
            "(maxTemplateNesting)"
        )
    return None


def check_size(
    source: str, expression: bool = False, limits: TemplateLimits | None = None
) -> TemplateSize:
    """The size of ``source``; raises :class:`TemplateProblem` when it is over ``limits``."""
    size = measure(source, expression, limits)
    problem = size_problem(size, limits)
    if problem is not None:
        raise TemplateProblem(problem)
    return size


class Tally:
    """The templates of one pipeline, measured one field at a time against ``limits``.

    :meth:`add` returns the field's problem (its own size, or the pipeline's
    templates passing a per-pipeline limit, reported once) and whether the
    field must not be parsed.  Once the pipeline is over a limit, later
    fields are neither measured nor parsed.
    """

    def __init__(self, limits: TemplateLimits | None = None) -> None:
        self.limits = limits or active_limits()
        self.bytes = 0
        self.tokens = 0
        self.over = False

    def add(self, value: Any, expression: bool) -> tuple[str | None, bool]:
        if self.over:
            return None, True
        lim = self.limits
        for source in template_sources(value, expression):
            size = measure(source, expression, lim)
            problem = size_problem(size, lim)
            if problem is not None:
                return problem, True
            self.bytes += size.bytes
            self.tokens += size.tokens
            if self.bytes > lim.max_pipeline_template_bytes:
                self.over = True
                return (
                    f"templates too large: {self.bytes} bytes in this pipeline so far "
                    f"(limit {lim.max_pipeline_template_bytes}, maxPipelineTemplateBytes)",
                    True,
                )
            if self.tokens > lim.max_pipeline_template_tokens:
                self.over = True
                return (
                    f"templates too large: more than {lim.max_pipeline_template_tokens} "
                    "tokens in this pipeline (maxPipelineTemplateTokens)",
                    True,
                )
        return None, False
