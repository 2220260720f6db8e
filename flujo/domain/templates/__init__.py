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

**Bounded compiling.**  Before Jinja parses a source it is measured
(:mod:`~flujo.domain.templates.scan`): its UTF-8 length, then a linear
lexical pre-scan of tokens and nesting, against the
:class:`TemplateLimits` in force (a security policy's, per namespace; see
:func:`use_limits`); parsing and compiling run under a deadline, and so
does rendering — the one bound that reads a clock, a backstop behind the
counted ones.

**One-line failures.**  Every problem — syntax, sandbox violation, budget,
undefined name — is a :class:`TemplateProblem` whose message is one line,
quoting at most the start of the template.

A string that is exactly one ``{{ expression }}`` evaluates to the native
value (a dict stays a dict); any other string renders to text.  Compiled
templates are memoised by their source text: rendering is pure, so the cache
only saves work.

The package's rooms, lowest first: :mod:`~flujo.domain.templates.limits`
(the bounds and the per-render budget), :mod:`~flujo.domain.templates.amplifiers`
(pre-checks of operations that allocate far more than their inputs),
:mod:`~flujo.domain.templates.problems` (:class:`TemplateProblem`),
:mod:`~flujo.domain.templates.sandbox` (the environment),
:mod:`~flujo.domain.templates.scan` (a source's size, before parsing),
:mod:`~flujo.domain.templates.render` (rendering and evaluating) and
:mod:`~flujo.domain.templates.analysis` (what a template reads, for validation).
"""

from __future__ import annotations

from flujo.domain.templates.analysis import (
    CONTEXT_NAMES,
    private_attributes,
    referenced_steps,
    undeclared_names,
)
from flujo.domain.templates.limits import (
    DEFAULT_LIMITS,
    MAX_CALL_DEPTH,
    MAX_FORMAT_WIDTH,
    MAX_INT_BITS,
    MAX_OPERATIONS,
    MAX_RANGE,
    MAX_RENDERED,
    MAX_WORK_CHARS,
    TemplateLimitExceeded,
    TemplateLimits,
    active_limits,
    use_limits,
)
from flujo.domain.templates.problems import TemplateProblem
from flujo.domain.templates.render import evaluate, render_value
from flujo.domain.templates.sandbox import env, is_template
from flujo.domain.templates.scan import Tally, TemplateSize, check_size, measure, size_problem

__all__ = [
    "CONTEXT_NAMES",
    "DEFAULT_LIMITS",
    "MAX_CALL_DEPTH",
    "MAX_FORMAT_WIDTH",
    "MAX_INT_BITS",
    "MAX_OPERATIONS",
    "MAX_RANGE",
    "MAX_RENDERED",
    "MAX_WORK_CHARS",
    "Tally",
    "TemplateLimitExceeded",
    "TemplateLimits",
    "TemplateProblem",
    "TemplateSize",
    "active_limits",
    "check_size",
    "evaluate",
    "is_template",
    "measure",
    "private_attributes",
    "referenced_steps",
    "render_value",
    "size_problem",
    "undeclared_names",
    "use_limits",
]

_env = env
"""The sandbox's environment, under the name it had before the package was split."""
