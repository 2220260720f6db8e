"""Operations that can allocate far more than their inputs, checked before they run.

Widths of ``center``/``ljust``/``zfill`` and of ``%``/``str.format`` specs,
the result sizes of ``replace``/``join``/``indent``/``wordwrap``/
``translate``, the bits of ``**`` results and the counts of ``batch``/
``slice`` are known from the arguments: they are charged to the render's
budget (or refused) *before* the string or number is built.  Every filter is
wrapped by :func:`metered_filter`, which counts the call and its result.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable, Mapping
from functools import wraps
from string import Formatter
from typing import Any

from flujo.domain.templates.limits import (
    MAX_FORMAT_WIDTH,
    MAX_INT_BITS,
    MAX_JSON_INDENT,
    MAX_RANGE,
    MAX_RENDERED,
    Budget,
    TemplateLimitExceeded,
    current_budget,
    size,
)

__all__ = [
    "check_format_spec",
    "check_method",
    "check_pow",
    "check_printf",
    "metered_filter",
    "repeat_size",
]

_PRINTF_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[a-zA-Z%]")
_FORMATTER = Formatter()


def _check_width(value: Any, what: str) -> None:
    if isinstance(value, int) and value > MAX_FORMAT_WIDTH:
        raise TemplateLimitExceeded(f"{what} {value} exceeds {MAX_FORMAT_WIDTH}")


def check_printf(fmt: str) -> None:
    """The widths and precisions of a ``%`` format string."""
    for match in _PRINTF_SPEC.finditer(fmt):
        for part in match.groups():
            if part == "*":
                raise TemplateLimitExceeded("'*' widths are not allowed in templates")
            if part:
                _check_width(int(part), "format width")


def check_format_spec(fmt: str) -> None:
    """The widths of a ``str.format`` string; nested fields are refused."""
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


def check_pow(left: Any, right: Any) -> None:
    """``left ** right`` may not compute an integer over :data:`MAX_INT_BITS` bits."""
    if (
        isinstance(left, int)
        and isinstance(right, int)
        and right > 0
        and abs(left) > 1
        and right * left.bit_length() > MAX_INT_BITS
    ):
        raise TemplateLimitExceeded(f"{left}**{right} is larger than {MAX_INT_BITS} bits")


def repeat_size(left: Any, right: Any) -> int:
    """The size of ``left * right`` when it repeats a sequence; 0 otherwise."""
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


def _check_padding(name: str, width: Any, budget: Budget) -> None:
    if isinstance(width, int):
        if width > MAX_RENDERED:
            raise TemplateLimitExceeded(f"{name}({width}) exceeds {MAX_RENDERED} characters")
        budget.produce(width)


def check_method(method: Any, args: tuple[Any, ...], budget: Budget) -> tuple[Any, ...]:
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


def _filter_precheck(name: str, a: Mapping[str, Any], budget: Budget) -> None:
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
            check_printf(a["value"])
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
        if size(indent) > MAX_JSON_INDENT or (isinstance(indent, int) and indent > MAX_JSON_INDENT):
            raise TemplateLimitExceeded(f"tojson indent exceeds {MAX_JSON_INDENT}")


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


def metered_filter(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """The filter ``fn``, counted as one call plus its result, pre-checked if it amplifies."""
    if name not in _CHECKED_FILTERS:

        @wraps(fn)
        def counted(*args: Any, **kwargs: Any) -> Any:
            budget = current_budget()
            budget.step()
            result = fn(*args, **kwargs)
            budget.produce(size(result))
            return result

        return counted

    shape = _FilterSignature(fn)

    @wraps(fn)
    def checked(*args: Any, **kwargs: Any) -> Any:
        budget = current_budget()
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
                    budget.produce(size(bound.arguments.get("d")) * max(len(items) - 1, 0))
                    args, kwargs = (*lead, *bound.args), bound.kwargs
            else:
                _filter_precheck(name, bound.arguments, budget)
        result = fn(*args, **kwargs)
        budget.produce(size(result))
        return result

    return checked
