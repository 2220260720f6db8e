"""The hardened Jinja2 environment every Flujo template is compiled in.

Jinja2's immutable sandbox, minus the helper globals and filters an attack
or a non-deterministic render could use, with ``self`` refused at compile
time and no loader (so ``include``, ``import`` and ``extends`` fail).  Work
is metered: loops, ``{{ … }}`` outputs and ``~`` concatenations are
rewritten in the template's syntax tree before code generation (a custom
``code_generator_class``), and binary operators, calls and filters are
counted and pre-checked at run time, against the bounds in
:mod:`flujo.domain.templates.limits`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any, cast

from jinja2 import StrictUndefined, nodes, pass_context
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import TemplateSyntaxError
from jinja2.lexer import Token, TokenStream
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

from flujo.domain.templates.amplifiers import (
    check_format_spec,
    check_method,
    check_pow,
    check_printf,
    metered_filter,
    repeat_size,
)
from flujo.domain.templates.limits import (
    MAX_CALL_DEPTH,
    MAX_INT_BITS,
    MAX_RANGE,
    TemplateLimitExceeded,
    compile_tick,
    current_budget,
    size,
)

__all__ = ["FORBIDDEN_NAMES", "env", "is_template"]

_REMOVED_GLOBALS = ("lipsum", "cycler", "joiner", "namespace")
_REMOVED_FILTERS = ("random",)
FORBIDDEN_NAMES = frozenset({"self"})
"""Names a template may not read (refused at compile time)."""


def is_template(text: str) -> bool:
    return "{{" in text or "{%" in text


# Internal filters the rewrite inserts.  Their names cannot be written in a
# template (a filter name is an identifier), and ``pass_context`` keeps Jinja
# from folding them into constants at compile time, so literal text in a
# loop is counted on every iteration.  Filters are called directly by the
# generated code, which keeps metering cheap on the hot path.


@pass_context
def _guarded_iter(context: Context, iterable: Any) -> Iterator[Any]:
    """Every ``{% for %}`` iterates through this: one operation per item."""
    budget = current_budget()
    for item in iterable:
        budget.step()
        yield item


@pass_context
def _emit(context: Context, value: Any) -> str:
    """Every ``{{ … }}`` output and literal text goes through this: characters are counted."""
    text = value if type(value) is str else str(value)
    current_budget().produce(len(text))
    return text


@pass_context
def _concat(context: Context, *parts: Any) -> str:
    """``a ~ b``: sizes are counted before the new string is built."""
    texts = [str(p) for p in parts]
    current_budget().produce(sum(len(t) for t in texts))
    return "".join(texts)


_ITER, _EMIT, _CONCAT = "flujo:iter", "flujo:emit", "flujo:concat"
_INTERNAL_FILTERS: dict[str, Callable[..., Any]] = {
    _ITER: _guarded_iter,
    _EMIT: _emit,
    _CONCAT: _concat,
}


def _timed(tokens: Iterator[Token]) -> Iterator[Token]:
    for token in tokens:
        compile_tick()
        yield token


def _capped_range(*args: int) -> range:
    rng = range(*args)
    if len(rng) > MAX_RANGE:
        raise TemplateLimitExceeded(f"range() of {len(rng)} items exceeds {MAX_RANGE}")
    return rng


def _internal(name: str, node: nodes.Node, *args: nodes.Node) -> nodes.Filter:
    exprs = cast(list[nodes.Expr], list(args))
    return nodes.Filter(cast(nodes.Expr, node), name, exprs, [], None, None, lineno=node.lineno)


class _Meter(NodeTransformer):
    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = _internal(_ITER, node.iter)
        return node

    def visit_Output(self, node: nodes.Output) -> nodes.Node:
        self.generic_visit(node)
        node.nodes = [_internal(_EMIT, child) for child in node.nodes]
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        first, *rest = node.nodes
        return _internal(_CONCAT, first, *rest)

    def visit_Name(self, node: nodes.Name) -> nodes.Node:
        if node.name in FORBIDDEN_NAMES and node.ctx == "load":
            raise TemplateSyntaxError(
                f"{node.name!r} is not available in Flujo templates", node.lineno
            )
        return node


class _MeteringCodeGenerator(CodeGenerator):
    def visit(self, node: nodes.Node, *args: Any, **kwargs: Any) -> Any:
        compile_tick()  # the compile deadline, every few hundred nodes
        return super().visit(node, *args, **kwargs)

    def visit_Template(self, node: nodes.Template, frame: Frame | None = None) -> None:
        tree = _Meter().visit(node)
        tree.set_environment(self.environment)
        super().visit_Template(tree, frame)


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox with work bounds; see the module docstring."""

    code_generator_class = _MeteringCodeGenerator
    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def _tokenize(
        self, source: str, name: str | None, filename: str | None = None, state: str | None = None
    ) -> TokenStream:
        """The lexer's tokens, under the compile deadline (the parser pulls them one by one)."""
        stream = super()._tokenize(source, name, filename, state)
        return TokenStream(_timed(stream), name, filename)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        budget = current_budget()
        budget.step()
        if operator == "**":
            check_pow(left, right)
        elif operator == "*":
            if isinstance(left, int) and isinstance(right, int):
                if left.bit_length() + right.bit_length() > MAX_INT_BITS:
                    raise TemplateLimitExceeded(f"product larger than {MAX_INT_BITS} bits")
            else:
                budget.produce(repeat_size(left, right))
        elif operator == "%" and isinstance(left, str):
            check_printf(left)
        result = self.binop_table[operator](left, right)
        if operator in ("+", "%"):
            budget.produce(size(result))
        return result

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        budget = current_budget()
        budget.step()
        args = check_method(__obj, args, budget)
        budget.depth += 1
        try:
            if budget.depth > MAX_CALL_DEPTH:
                raise TemplateLimitExceeded(f"calls nested deeper than {MAX_CALL_DEPTH}")
            result = super().call(__context, __obj, *args, **kwargs)
        finally:
            budget.depth -= 1
        budget.produce(size(result))
        return result

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is not None:
            check_format_spec(value.__self__)
        return wrapped


def _fromjson(value: str) -> Any:
    return json.loads(value)


def _build_env() -> _Sandbox:
    env = _Sandbox(undefined=StrictUndefined, autoescape=False)
    for name in _REMOVED_GLOBALS:
        env.globals.pop(name, None)
    for name in _REMOVED_FILTERS:
        env.filters.pop(name, None)
    env.globals["range"] = _capped_range
    env.filters["fromjson"] = _fromjson
    env.filters["json"] = lambda v: json.dumps(v, ensure_ascii=False, sort_keys=True)
    for name, fn in list(env.filters.items()):
        env.filters[name] = metered_filter(name, fn)
    env.filters.update(_INTERNAL_FILTERS)
    return env


env = _build_env()
"""The one environment templates are compiled in (compiling is pure: it is shared)."""
