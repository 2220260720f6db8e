"""The work bounds of one template render, and the budget that counts against them.

Rendering may not read a clock (it runs in the state machine), so work is
*counted*, per top-level render (nested renders share the outermost budget):
loop iterations plus calls against :data:`MAX_OPERATIONS`, characters
produced against :data:`MAX_WORK_CHARS`, call nesting against
:data:`MAX_CALL_DEPTH`.  The other bounds cap single operations before they
allocate (:mod:`flujo.domain.templates.amplifiers`).  Exceeding any of them
raises :class:`TemplateLimitExceeded`.

Bounds a security policy sets per namespace are :class:`TemplateLimits`
(source size, tokens and nesting of a template and of a pipeline's
templates, compile and render deadlines, characters a render produces); the
limits in force are :func:`active_limits`, set for a context by
:func:`use_limits` (``use_policy`` does it for a run).  The deadlines are the
one bound that reads a clock: a backstop behind the counted bounds, checked
every few hundred tokens, syntax-tree nodes or operations.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from time import monotonic
from typing import Any

from jinja2.exceptions import SecurityError

__all__ = [
    "DEFAULT_LIMITS",
    "MAX_CALL_DEPTH",
    "MAX_FORMAT_WIDTH",
    "MAX_INT_BITS",
    "MAX_JSON_INDENT",
    "MAX_OPERATIONS",
    "MAX_RANGE",
    "MAX_RENDERED",
    "MAX_WORK_CHARS",
    "Budget",
    "TemplateLimitExceeded",
    "TemplateLimits",
    "active_limits",
    "budget_scope",
    "compile_scope",
    "compile_tick",
    "current_budget",
    "size",
    "use_limits",
]

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
MAX_JSON_INDENT = 64
"""Largest ``indent`` of the ``tojson`` filter."""


_TICK_MASK = 0xFF
"""The clock is read once every 256 operations, tokens or syntax-tree nodes."""


class TemplateLimitExceeded(SecurityError):
    """A template exceeded a work bound (operations, characters, depth, widths)."""


@dataclass(frozen=True)
class TemplateLimits:
    """The template bounds a security policy sets (per namespace in the cluster).

    Defaults are the embedded profile's; ``SecurityPolicy.template_limits()``
    builds one from a policy.  A deadline of 0 turns that deadline off.
    """

    max_template_bytes: int = 64 << 10
    """UTF-8 bytes of one template or expression's source."""
    max_template_tokens: int = 10_000
    """Lexical tokens of one template (its compiled size grows with them)."""
    max_template_nesting: int = 32
    """Nesting of brackets, block tags and operators in one template."""
    max_pipeline_template_bytes: int = 256 << 10
    """UTF-8 bytes of all templates of one pipeline."""
    max_pipeline_template_tokens: int = 50_000
    """Lexical tokens of all templates of one pipeline."""
    max_compile_ms: int = 2_000
    """Wall time to parse and compile one template."""
    max_render_ms: int = 5_000
    """Wall time of one top-level render."""
    max_render_chars: int = MAX_WORK_CHARS
    """Characters produced by all operations of one render (its memory)."""


DEFAULT_LIMITS = TemplateLimits()
"""The limits in force when no policy is active (the embedded defaults)."""

_limits: ContextVar[TemplateLimits] = ContextVar("flujo_template_limits", default=DEFAULT_LIMITS)


def active_limits() -> TemplateLimits:
    """The template limits in force in this context."""
    return _limits.get()


@contextmanager
def use_limits(limits: TemplateLimits | None) -> Iterator[TemplateLimits]:
    """Make ``limits`` (``None``: the defaults) the ones in force here and in tasks started here."""
    token = _limits.set(limits or DEFAULT_LIMITS)
    try:
        yield _limits.get()
    finally:
        _limits.reset(token)


class Budget:
    """Work done by one top-level render; exceeding a bound raises."""

    __slots__ = ("chars", "deadline", "depth", "max_chars", "ops", "render_ms", "ticks")

    def __init__(self, limits: TemplateLimits | None = None, *, timed: bool = True) -> None:
        limits = limits or active_limits()
        self.ops = 0
        self.chars = 0
        self.depth = 0
        self.ticks = 0
        self.max_chars = limits.max_render_chars
        self.render_ms = limits.max_render_ms
        self.deadline = (
            monotonic() + self.render_ms / 1000 if timed and self.render_ms > 0 else None
        )

    def _tick(self) -> None:
        self.ticks += 1
        if (
            self.ticks & _TICK_MASK == 0
            and self.deadline is not None
            and monotonic() > self.deadline
        ):
            raise TemplateLimitExceeded(
                f"template work limit: rendering took over {self.render_ms} ms "
                "(maxTemplateRenderMs)"
            )

    def step(self, n: int = 1) -> None:
        self.ops += n
        if self.ops > MAX_OPERATIONS:
            raise TemplateLimitExceeded(
                f"template work limit: more than {MAX_OPERATIONS} loop iterations and calls"
            )
        self._tick()

    def produce(self, n: int) -> None:
        self.chars += max(0, n)
        if self.chars > self.max_chars:
            raise TemplateLimitExceeded(
                f"template work limit: more than {self.max_chars} characters produced"
                + ("" if self.max_chars == MAX_WORK_CHARS else " (maxTemplateRenderChars)")
            )
        self._tick()


_budget: ContextVar[Budget | None] = ContextVar("flujo_template_budget", default=None)


def current_budget() -> Budget:
    """The budget of the render in progress."""
    # Outside a render (constant folding at compile time) a throwaway budget
    # still applies the per-operation checks.
    return _budget.get() or Budget(timed=False)


@contextmanager
def budget_scope() -> Iterator[None]:
    """One budget for the outermost render; nested renders share it."""
    if _budget.get() is not None:
        yield
        return
    token = _budget.set(Budget(active_limits()))
    try:
        yield
    finally:
        _budget.reset(token)


class _CompileClock:
    __slots__ = ("deadline", "ms", "ticks")

    def __init__(self, ms: int) -> None:
        self.ms = ms
        self.deadline = monotonic() + ms / 1000
        self.ticks = 0


_compile_clock: ContextVar[_CompileClock | None] = ContextVar(
    "flujo_template_compile_clock", default=None
)


@contextmanager
def compile_scope(limits: TemplateLimits | None = None) -> Iterator[None]:
    """A deadline (``max_compile_ms``) for the parsing and compiling done inside."""
    ms = (limits or active_limits()).max_compile_ms
    if _compile_clock.get() is not None or ms <= 0:
        yield
        return
    token = _compile_clock.set(_CompileClock(ms))
    try:
        yield
    finally:
        _compile_clock.reset(token)


def compile_tick() -> None:
    """One token lexed or node generated: past the compile deadline, raise."""
    clock = _compile_clock.get()
    if clock is None:
        return
    clock.ticks += 1
    if clock.ticks & _TICK_MASK == 0 and monotonic() > clock.deadline:
        raise TemplateLimitExceeded(
            f"template took over {clock.ms} ms to compile (maxTemplateCompileMs)"
        )


def size(value: Any) -> int:
    """The characters (or items) a value counts for; 0 for scalars."""
    return len(value) if isinstance(value, str | bytes | list | tuple | dict) else 0
