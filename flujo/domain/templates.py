"""Step-input templates and expressions, rendered in a hardened Jinja2 sandbox.

Templates come from pipeline authors, who may not be trusted with the
process that renders them (the operator renders every run's templates), and
they are rendered *inside* the pure state machine, so they must neither
escape nor stall it.  The sandbox therefore enforces three things:

**No escape.**  Jinja2's immutable sandbox blocks private and internal
attributes (``__class__``, ``__mro__``, ``__globals__``, ``gi_frame``, …),
``str.format`` field lookups into them, and mutating methods.  On top of
that the helper globals whose only use in an attack is reaching Python
internals or accumulating state are removed (``lipsum``, ``cycler``,
``joiner``, ``namespace``); the name ``self`` (a reference to the template
object) is refused at compile time; there is no loader, so ``include``,
``import`` and ``extends`` fail; the impure ``random`` filter is removed
(rendering must be deterministic).  Undefined names raise, and an
expression whose value is (or contains) an undefined or a callable is an
error rather than a Python object smuggled into a step input.

**Bounded work, deterministically.**  Rendering may not read a clock (it runs
in the state machine), so work is *counted*, per top-level render:

- loop iterations plus calls (functions, methods, macros, filters) —
  at most :data:`MAX_OPERATIONS`;
- characters produced (output, ``~`` and ``+`` concatenations, ``*``
  repetition, ``%`` formatting, string methods and filter results) — at
  most :data:`MAX_WORK_CHARS`;
- call nesting (macro recursion) — at most :data:`MAX_CALL_DEPTH`;
- ``range()`` — at most :data:`MAX_RANGE` items;
- amplifying operations are checked *before* they allocate: widths of
  ``center``/``ljust``/``zfill``/format specs, ``replace``/``join``/
  ``indent``/``wordwrap`` result sizes, ``**`` result bits, ``batch``/
  ``slice`` counts.

Loops, ``{{ … }}`` outputs and ``~`` concatenations are metered by rewriting
the template's syntax tree before code generation (a custom
``code_generator_class``), so no template construct bypasses the count.

**One-line failures.**  Every problem — syntax, sandbox violation, budget,
undefined name — is a :class:`TemplateProblem` whose message is one line,
quoting at most the start of the template.

A string that is exactly one ``{{ expression }}`` evaluates to the native
value (a dict stays a dict); any other string renders to text.  Compiled
templates are memoised by their source text: rendering is pure, so the cache
only saves work.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from functools import wraps
from string import Formatter
from types import ModuleType
from typing import Any, cast

from jinja2 import StrictUndefined, TemplateError, nodes, pass_context
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError, TemplateSyntaxError
from jinja2.runtime import Context, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

__all__ = [
    "CONTEXT_NAMES",
    "MAX_CALL_DEPTH",
    "MAX_OPERATIONS",
    "MAX_RANGE",
    "MAX_RENDERED",
    "MAX_WORK_CHARS",
    "TemplateLimitExceeded",
    "TemplateProblem",
    "evaluate",
    "is_template",
    "private_attributes",
    "referenced_steps",
    "render_value",
    "undeclared_names",
]

CONTEXT_NAMES = frozenset(
    {"input", "previous_step", "steps", "output", "iteration", "item", "index", "branch"}
)
"""Names a template may use; see docs/architecture.md."""

MAX_RENDERED = 1 << 20
"""Characters a template may render to (its output)."""
MAX_RANGE = 10_000
"""Items ``range()`` may produce in a template."""
MAX_OPERATIONS = 100_000
"""Loop iterations plus calls in one render."""
MAX_WORK_CHARS = 16 << 20
"""Characters produced by all operations of one render (outputs included)."""
MAX_CALL_DEPTH = 32
"""Nested calls (macro recursion) in one render."""
MAX_FORMAT_WIDTH = 10_000
"""Largest width or precision in a ``%`` or ``str.format`` spec."""
MAX_INT_BITS = 1 << 16
"""Largest integer ``*`` and ``**`` may compute, in bits."""
_MAX_JSON_INDENT = 64
_MAX_CACHED = 4096
_REMOVED_GLOBALS = ("lipsum", "cycler", "joiner", "namespace")
_REMOVED_FILTERS = ("random",)
_FORBIDDEN_NAMES = frozenset({"self"})

_SINGLE_EXPR = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\}\}).)*)\}\}\s*$", re.DOTALL)


class TemplateProblem(Exception):
    """A template could not be compiled or rendered; the message is one line."""


class TemplateLimitExceeded(SecurityError):
    """A template exceeded a work bound (operations, characters, depth, widths)."""


# --- the per-render budget -----------------------------------------------


class _Budget:
    """Work done by one top-level render; exceeding a bound raises."""

    __slots__ = ("chars", "depth", "ops")

    def __init__(self) -> None:
        self.ops = 0
        self.chars = 0
        self.depth = 0

    def step(self, n: int = 1) -> None:
        self.ops += n
        if self.ops > MAX_OPERATIONS:
            raise TemplateLimitExceeded(
                f"template work limit: more than {MAX_OPERATIONS} loop iterations and calls"
            )

    def produce(self, n: int) -> None:
        self.chars += max(0, n)
        if self.chars > MAX_WORK_CHARS:
            raise TemplateLimitExceeded(
                f"template work limit: more than {MAX_WORK_CHARS} characters produced"
            )


_budget: ContextVar[_Budget | None] = ContextVar("flujo_template_budget", default=None)


def _current() -> _Budget:
    # Outside a render (constant folding at compile time) a throwaway budget
    # still applies the per-operation checks.
    return _budget.get() or _Budget()


@contextmanager
def _budget_scope() -> Iterator[None]:
    """One budget for the outermost render; nested renders share it."""
    if _budget.get() is not None:
        yield
        return
    token = _budget.set(_Budget())
    try:
        yield
    finally:
        _budget.reset(token)


def _size(value: Any) -> int:
    return len(value) if isinstance(value, str | bytes | list | tuple | dict) else 0


# --- pre-checks of amplifying operations --------------------------------

_PRINTF_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[a-zA-Z%]")
_FORMATTER = Formatter()


def _check_width(value: Any, what: str) -> None:
    if isinstance(value, int) and value > MAX_FORMAT_WIDTH:
        raise TemplateLimitExceeded(f"{what} {value} exceeds {MAX_FORMAT_WIDTH}")


def _check_printf(fmt: str) -> None:
    for match in _PRINTF_SPEC.finditer(fmt):
        for part in match.groups():
            if part == "*":
                raise TemplateLimitExceeded("'*' widths are not allowed in templates")
            if part:
                _check_width(int(part), "format width")


def _check_format_spec(fmt: str) -> None:
    try:
        parsed = list(_FORMATTER.parse(fmt))
    except ValueError:
        return  # str.format itself will report the error
    for _, _, spec, _ in parsed:
        if not spec:
            continue
        if "{" in spec:
            raise TemplateLimitExceeded("nested format fields are not allowed in templates")
        for number in re.findall(r"\d+", spec):
            _check_width(int(number), "format width")


def _check_pow(left: Any, right: Any) -> None:
    if (
        isinstance(left, int)
        and isinstance(right, int)
        and right > 0
        and abs(left) > 1
        and right * left.bit_length() > MAX_INT_BITS
    ):
        raise TemplateLimitExceeded(f"{left}**{right} is larger than {MAX_INT_BITS} bits")


def _repeat_size(left: Any, right: Any) -> int:
    for seq, count in ((left, right), (right, left)):
        if isinstance(seq, str | bytes | list | tuple) and isinstance(count, int):
            return len(seq) * max(count, 0)
    return 0


def _replace_size(s: Any, old: Any, new: Any, count: Any = -1) -> int:
    if not (isinstance(s, str | bytes) and isinstance(old, type(s)) and isinstance(new, type(s))):
        return 0
    counter: Any = s
    hits = counter.count(old) if old else len(s) + 1
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    return len(s) + hits * max(0, len(new) - len(old))


def _translate_size(s: Any, table: Any) -> int:
    if isinstance(s, str) and isinstance(table, Mapping):
        longest = max((len(v) for v in table.values() if isinstance(v, str)), default=1)
        return len(s) * max(longest, 1)
    return 0


def _check_padding(name: str, width: Any, budget: _Budget) -> None:
    if isinstance(width, int):
        if width > MAX_RENDERED:
            raise TemplateLimitExceeded(f"{name}({width}) exceeds {MAX_RENDERED} characters")
        budget.produce(width)


def _check_method(method: Any, args: tuple[Any, ...], budget: _Budget) -> tuple[Any, ...]:
    """Pre-check a str/bytes method that can allocate far more than its inputs."""
    owner = getattr(method, "__self__", None)
    if not isinstance(owner, str | bytes):
        return args
    name = getattr(method, "__name__", "")
    if name in ("center", "ljust", "rjust", "zfill") and args:
        _check_padding(name, args[0], budget)
    elif name == "expandtabs":
        tab = args[0] if args and isinstance(args[0], int) else 8
        budget.produce(len(owner) * max(tab, 1))
    elif name == "replace" and len(args) >= 2:
        budget.produce(_replace_size(owner, *args[:3]))
    elif name == "translate" and args:
        budget.produce(_translate_size(owner, args[0]))
    elif name == "join" and args:
        items = list(args[0])
        budget.step(len(items))
        budget.produce(len(owner) * max(len(items) - 1, 0))
        return (items, *args[1:])
    return args


def _filter_precheck(name: str, a: Mapping[str, Any], budget: _Budget) -> None:
    if name == "center":
        _check_padding("center", a.get("width"), budget)
    elif name == "indent":
        s, width = str(a.get("s", "")), a.get("width", 4)
        per_line = width if isinstance(width, int) else len(str(width))
        budget.produce(len(s) + (s.count("\n") + 1) * max(per_line, 0))
    elif name == "replace":
        budget.produce(_replace_size(a.get("s"), a.get("old"), a.get("new"), a.get("count") or -1))
    elif name == "format":
        if isinstance(a.get("value"), str):
            _check_printf(a["value"])
    elif name == "wordwrap":
        s = str(a.get("s", ""))
        width = a.get("width")
        wrap = a.get("wrapstring") or "\n"
        lines = len(s) // max(width if isinstance(width, int) else 79, 1) + s.count("\n") + 1
        budget.produce(len(s) + lines * len(str(wrap)))
    elif name in ("batch", "slice"):
        count = a.get("linecount", a.get("slices"))
        if isinstance(count, int) and count > MAX_RANGE:
            raise TemplateLimitExceeded(f"{name}({count}) exceeds {MAX_RANGE}")
    elif name == "tojson":
        indent = a.get("indent")
        if _size(indent) > _MAX_JSON_INDENT or (
            isinstance(indent, int) and indent > _MAX_JSON_INDENT
        ):
            raise TemplateLimitExceeded(f"tojson indent exceeds {_MAX_JSON_INDENT}")


_CONTEXT_PARAMS = frozenset({"eval_ctx", "environment", "env", "context"})


class _FilterSignature:
    """A filter's parameters as the template author sees them.

    Jinja passes a context, eval context or environment first to filters
    marked for it; those leading arguments are set aside so checks can bind
    the author's arguments by name.
    """

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.injects = getattr(fn, "jinja_pass_arg", None) is not None
        try:
            signature: inspect.Signature | None = inspect.signature(fn)
        except (TypeError, ValueError):
            signature = None
        if signature is not None:
            params = list(signature.parameters.values())
            if params and params[0].name in _CONTEXT_PARAMS:
                signature = signature.replace(parameters=params[1:])
        self.signature = signature

    def bind(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], inspect.BoundArguments | None]:
        lead, rest = (args[:1], args[1:]) if self.injects else ((), args)
        if self.signature is None:
            return lead, None
        try:
            bound = self.signature.bind(*rest, **kwargs)
        except TypeError:
            return lead, None  # the filter reports the bad call itself
        return lead, bound


_CHECKED_FILTERS = frozenset(
    {"join", "center", "indent", "replace", "format", "wordwrap", "batch", "slice", "tojson"}
)
"""Filters that can allocate far more than their inputs: checked before they run."""


def _metered_filter(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    if name not in _CHECKED_FILTERS:

        @wraps(fn)
        def counted(*args: Any, **kwargs: Any) -> Any:
            budget = _current()
            budget.step()
            result = fn(*args, **kwargs)
            budget.produce(_size(result))
            return result

        return counted

    shape = _FilterSignature(fn)

    @wraps(fn)
    def checked(*args: Any, **kwargs: Any) -> Any:
        budget = _current()
        budget.step()
        lead, bound = shape.bind(args, kwargs)
        if bound is not None:
            bound.apply_defaults()
            if name == "join":
                value = bound.arguments.get("value")
                if isinstance(value, Iterable) and not isinstance(value, str):
                    # Materialise once, so the result size is known before joining.
                    bound.arguments["value"] = items = list(value)
                    budget.step(len(items))
                    budget.produce(_size(bound.arguments.get("d")) * max(len(items) - 1, 0))
                    args, kwargs = (*lead, *bound.args), bound.kwargs
            else:
                _filter_precheck(name, bound.arguments, budget)
        result = fn(*args, **kwargs)
        budget.produce(_size(result))
        return result

    return checked


# Internal filters the rewrite inserts.  Their names cannot be written in a
# template (a filter name is an identifier), and ``pass_context`` keeps Jinja
# from folding them into constants at compile time, so literal text in a
# loop is counted on every iteration.  Filters are called directly by the
# generated code, which keeps metering cheap on the hot path.


@pass_context
def _guarded_iter(context: Context, iterable: Any) -> Iterator[Any]:
    """Every ``{% for %}`` iterates through this: one operation per item."""
    budget = _current()
    for item in iterable:
        budget.step()
        yield item


@pass_context
def _emit(context: Context, value: Any) -> str:
    """Every ``{{ … }}`` output and literal text goes through this: characters are counted."""
    text = value if type(value) is str else str(value)
    _current().produce(len(text))
    return text


@pass_context
def _concat(context: Context, *parts: Any) -> str:
    """``a ~ b``: sizes are counted before the new string is built."""
    texts = [str(p) for p in parts]
    _current().produce(sum(len(t) for t in texts))
    return "".join(texts)


_ITER, _EMIT, _CONCAT = "flujo:iter", "flujo:emit", "flujo:concat"
_INTERNAL_FILTERS: dict[str, Callable[..., Any]] = {
    _ITER: _guarded_iter,
    _EMIT: _emit,
    _CONCAT: _concat,
}


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
        if node.name in _FORBIDDEN_NAMES and node.ctx == "load":
            raise TemplateSyntaxError(
                f"{node.name!r} is not available in Flujo templates", node.lineno
            )
        return node


class _MeteringCodeGenerator(CodeGenerator):
    def visit_Template(self, node: nodes.Template, frame: Frame | None = None) -> None:
        tree = _Meter().visit(node)
        tree.set_environment(self.environment)
        super().visit_Template(tree, frame)


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox with work bounds; see the module docstring."""

    code_generator_class = _MeteringCodeGenerator
    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        budget = _current()
        budget.step()
        if operator == "**":
            _check_pow(left, right)
        elif operator == "*":
            if isinstance(left, int) and isinstance(right, int):
                if left.bit_length() + right.bit_length() > MAX_INT_BITS:
                    raise TemplateLimitExceeded(f"product larger than {MAX_INT_BITS} bits")
            else:
                budget.produce(_repeat_size(left, right))
        elif operator == "%" and isinstance(left, str):
            _check_printf(left)
        result = self.binop_table[operator](left, right)
        if operator in ("+", "%"):
            budget.produce(_size(result))
        return result

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        budget = _current()
        budget.step()
        args = _check_method(__obj, args, budget)
        budget.depth += 1
        try:
            if budget.depth > MAX_CALL_DEPTH:
                raise TemplateLimitExceeded(f"calls nested deeper than {MAX_CALL_DEPTH}")
            result = super().call(__context, __obj, *args, **kwargs)
        finally:
            budget.depth -= 1
        budget.produce(_size(result))
        return result

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is not None:
            _check_format_spec(value.__self__)
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
        env.filters[name] = _metered_filter(name, fn)
    env.filters.update(_INTERNAL_FILTERS)
    return env


_env = _build_env()

_expr_cache: dict[str, Callable[..., Any]] = {}
_tmpl_cache: dict[str, Any] = {}


def is_template(text: str) -> bool:
    return "{{" in text or "{%" in text


def _one_line(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {msg[0] if msg else ''}".rstrip(": ")


def _quote(text: str, limit: int = 80) -> str:
    """The template text for a message: one line, at most ``limit`` characters."""
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= limit else flat[: limit - 1] + "…")


def _remember(cache: dict[str, Any], key: str, value: Any) -> None:
    if len(cache) >= _MAX_CACHED:
        cache.clear()
    cache[key] = value


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
                    f"expression {_quote(expression)} failed: {_one_line(exc)}"
                ) from None
            raise TemplateProblem(f"expression {_quote(expression)} is undefined")
        if isinstance(item, str | int | float | bool) or item is None:
            continue
        if callable(item) or isinstance(item, ModuleType):
            raise TemplateProblem(
                f"expression {_quote(expression)} gave a {type(item).__name__}, not data"
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
    fn = _expr_cache.get(expression)
    if fn is None:
        try:
            fn = _env.compile_expression(expression, undefined_to_none=False)
        except (TemplateError, RecursionError, MemoryError) as exc:
            raise TemplateProblem(
                f"invalid expression {_quote(expression)}: {_one_line(exc)}"
            ) from None
        _remember(_expr_cache, expression, fn)
    with _budget_scope():
        try:
            value = fn(**context)
        except Exception as exc:
            raise TemplateProblem(
                f"expression {_quote(expression)} failed: {_one_line(exc)}"
            ) from None
        return _check_result(value, expression)


def _render_text(text: str, context: Mapping[str, Any]) -> Any:
    single = _SINGLE_EXPR.match(text)
    if single is not None and "{%" not in text:
        return evaluate(single.group("expr").strip(), context)
    tmpl = _tmpl_cache.get(text)
    if tmpl is None:
        try:
            tmpl = _env.from_string(text)
        except (TemplateError, RecursionError, MemoryError) as exc:
            raise TemplateProblem(f"invalid template {_quote(text)}: {_one_line(exc)}") from None
        _remember(_tmpl_cache, text, tmpl)
    with _budget_scope():
        try:
            out: str = tmpl.render(**context)
        except Exception as exc:
            raise TemplateProblem(f"template {_quote(text)} failed: {_one_line(exc)}") from None
    if len(out) > MAX_RENDERED:
        raise TemplateProblem(
            f"template {_quote(text, 40)} rendered more than {MAX_RENDERED} chars"
        )
    return out


def render_value(value: Any, context: Mapping[str, Any]) -> Any:
    """Render every template string inside a JSON-like value."""
    with _budget_scope():
        return _render_value(value, context)


def _render_value(value: Any, context: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        return _render_text(value, context) if is_template(value) else value
    if isinstance(value, dict):
        return {k: _render_value(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [_render_value(v, context) for v in value]
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
    try:
        if expression:
            yield _parse(str(value), True)
        else:
            for text in _walk_strings(value):
                yield _parse(text, False)
    except (TemplateError, RecursionError, MemoryError) as exc:
        raise TemplateProblem(_one_line(exc)) from None


def referenced_steps(value: Any, expression: bool = False) -> set[str]:
    """Step names used as ``steps.NAME`` or ``steps['NAME']``.

    Raises :class:`TemplateProblem` when the source does not parse.
    """
    found: set[str] = set()
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
    return found


def undeclared_names(value: Any, expression: bool = False) -> set[str]:
    """Top-level names a template reads that are not in :data:`CONTEXT_NAMES`."""
    from jinja2 import meta

    names: set[str] = set()
    try:
        for ast in _asts(value, expression):
            names |= meta.find_undeclared_variables(ast)
            names |= {
                n.name
                for n in ast.find_all(nodes.Name)
                if n.name in _FORBIDDEN_NAMES and n.ctx == "load"
            }
    except (TemplateError, RecursionError) as exc:
        raise TemplateProblem(_one_line(exc)) from None
    return {n for n in names if n not in CONTEXT_NAMES and n not in _env.globals}


def private_attributes(value: Any, expression: bool = False) -> set[str]:
    """Attribute names starting with ``_`` that a template reads (always refused at render).

    Lets validation reject ``{{ ''.__class__ }}`` before anything runs.
    """
    found: set[str] = set()
    for ast in _asts(value, expression):
        for attr in ast.find_all(nodes.Getattr):
            if attr.attr.startswith("_"):
                found.add(attr.attr)
        for item in ast.find_all(nodes.Getitem):
            if (
                isinstance(item.arg, nodes.Const)
                and isinstance(item.arg.value, str)
                and item.arg.value.startswith("_")
            ):
                found.add(item.arg.value)
    return found
