"""What a template reads, found without rendering it (used by validation and policy).

The step names it refers to (:func:`referenced_steps`), the names it reads
that no step context provides (:func:`undeclared_names`) and the private
attributes it tries (:func:`private_attributes`): each parses the template
in the sandbox's environment and walks its syntax tree.  A source over the
limits in force is refused before it is parsed
(:mod:`~flujo.domain.templates.scan`), parsing runs under the compile
deadline, and the last few syntax trees are kept, so the three questions
asked of one template parse it once.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from jinja2 import TemplateError, meta, nodes

from flujo.domain.templates.limits import compile_scope
from flujo.domain.templates.problems import TemplateProblem, one_line
from flujo.domain.templates.sandbox import FORBIDDEN_NAMES, env
from flujo.domain.templates.scan import check_size, template_sources

__all__ = ["CONTEXT_NAMES", "private_attributes", "referenced_steps", "undeclared_names"]

CONTEXT_NAMES = frozenset(
    {"input", "previous_step", "steps", "output", "iteration", "item", "index", "branch"}
)
"""Names a template may use; see docs/architecture.md."""


@lru_cache(maxsize=4)
def _parse_text(text: str) -> nodes.Template:
    # Callers only read the trees (find_all, meta), so sharing them is safe.
    with compile_scope():
        return env.parse(text)


def _parse(source: str, expression: bool) -> nodes.Template:
    check_size(source, expression)
    return _parse_text("{{ " + source + " }}" if expression else source)


def _asts(value: Any, expression: bool) -> Iterator[nodes.Template]:
    try:
        for source in template_sources(value, expression):
            yield _parse(source, expression)
    except (TemplateError, RecursionError, MemoryError) as exc:
        raise TemplateProblem(one_line(exc)) from None


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
    names: set[str] = set()
    try:
        for ast in _asts(value, expression):
            names |= meta.find_undeclared_variables(ast)
            names |= {
                n.name
                for n in ast.find_all(nodes.Name)
                if n.name in FORBIDDEN_NAMES and n.ctx == "load"
            }
    except (TemplateError, RecursionError) as exc:
        raise TemplateProblem(one_line(exc)) from None
    return {n for n in names if n not in CONTEXT_NAMES and n not in env.globals}


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
