"""The work bounds of one template render, and the budget that counts against them.

Rendering may not read a clock (it runs in the state machine), so work is
*counted*, per top-level render (nested renders share the outermost budget):
loop iterations plus calls against :data:`MAX_OPERATIONS`, characters
produced against :data:`MAX_WORK_CHARS`, call nesting against
:data:`MAX_CALL_DEPTH`.  The other bounds cap single operations before they
allocate (:mod:`flujo.domain.templates.amplifiers`).  Exceeding any of them
raises :class:`TemplateLimitExceeded`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from jinja2.exceptions import SecurityError

__all__ = [
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
    "budget_scope",
    "current_budget",
    "size",
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


class TemplateLimitExceeded(SecurityError):
    """A template exceeded a work bound (operations, characters, depth, widths)."""


class Budget:
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


_budget: ContextVar[Budget | None] = ContextVar("flujo_template_budget", default=None)


def current_budget() -> Budget:
    """The budget of the render in progress."""
    # Outside a render (constant folding at compile time) a throwaway budget
    # still applies the per-operation checks.
    return _budget.get() or Budget()


@contextmanager
def budget_scope() -> Iterator[None]:
    """One budget for the outermost render; nested renders share it."""
    if _budget.get() is not None:
        yield
        return
    token = _budget.set(Budget())
    try:
        yield
    finally:
        _budget.reset(token)


def size(value: Any) -> int:
    """The characters (or items) a value counts for; 0 for scalars."""
    return len(value) if isinstance(value, str | bytes | list | tuple | dict) else 0
