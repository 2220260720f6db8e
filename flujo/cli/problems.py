"""How ``flujo validate`` shows a problem: the offending YAML line, a caret, a hint.

:func:`excerpt` cuts the lines around an error out of its file and underlines
the value at fault; :func:`hint_for` turns a validation message into a one-line
hint (a "did you mean" for a misspelt field or template variable, else what
the rule wants); :func:`describe_problem` puts the three together.
"""

from __future__ import annotations

import difflib
import re
from functools import cache
from pathlib import Path
from typing import Any

from flujo.spec.agent import AgentManifest
from flujo.spec.loader import Problem
from flujo.spec.pipeline import PipelineManifest

__all__ = ["describe_problem", "excerpt", "hint_for"]

_MAX_SHOWN = 160


def _span(text: str, key: str | None) -> tuple[int, int]:
    """Columns to underline in ``text``: the value of ``key:`` when present, else the content."""
    if key:
        found = re.search(rf"(?<![\w-]){re.escape(key)}\s*:", text)
        if found:
            rest = text[found.end() :]
            value = rest.strip()
            if value and not value.startswith("#"):
                start = found.end() + len(rest) - len(rest.lstrip())
                end = start + len(re.sub(r"\s+#.*$", "", value))
                return start, end
            return found.start(), found.end() - 1
    start = len(text) - len(text.lstrip())
    if text[start:].startswith("- "):
        start += 2
    body = re.sub(r"\s+#.*$", "", text[start:]).rstrip()
    return start, start + max(1, len(body))


def excerpt(path: str | Path, line: int, *, key: str | None = None, context: int = 1) -> str:
    """The YAML line ``line`` of ``path`` with a marker and a caret, and ``context`` lines
    either side; ``""`` when the file or the line cannot be read.

    ``key`` (the last field name of the error's path, such as ``agent``) makes
    the caret point at that key's value rather than at the whole line::

          8 |     - name: draft
        > 9 |       agent: writr
            |              ^^^^^
         10 |       input: "..."
    """
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError, ValueError):
        return ""
    if not 1 <= line <= len(lines):
        return ""
    first, last = max(1, line - context), min(len(lines), line + context)
    width = len(str(last))
    out: list[str] = []
    for number in range(first, last + 1):
        text = lines[number - 1].expandtabs(4)[:_MAX_SHOWN]
        marker = ">" if number == line else " "
        out.append(f"{marker} {number:>{width}} | {text}".rstrip())
        if number == line:
            start, end = _span(text, key)
            out.append(f"  {' ' * width} | {' ' * start}{'^' * max(1, end - start)}")
    return "\n".join(out)


_HINTS: tuple[tuple[str, str], ...] = (
    (
        "unknown agent",
        "agents are Agent documents in this file or in a file given with --agents; "
        "built-in transforms are named builtin.NAME",
    ),
    (
        "unknown step kind or field",
        "a step has a name and exactly one of agent, loop, conditional, parallel, map",
    ),
    (
        "must have exactly one of",
        "a step has exactly one of agent, loop, conditional, parallel, map",
    ),
    (
        "apply to agent steps only",
        "put retry, fallback and timeoutSeconds on the agent steps inside",
    ),
    (
        "template uses unknown variable",
        "templates see input, previous_step, steps.NAME.output; loops add iteration, "
        "maps item and index, parallel branches branch",
    ),
    ("template references unknown step", "steps.NAME refers to a step of this pipeline by name"),
    ("invalid template", "Jinja2 syntax: {{ expression }}, {% if %}…{% endif %}"),
    (
        "invalid YAML",
        "indent with spaces, not tabs; quote values that start with {{ or contain ': '",
    ),
    ("duplicate step name", "step names are unique in the whole pipeline, nested steps included"),
    ("duplicate branch name", "branch names are unique within their step"),
    ("unknown kind", "kind is Pipeline, Agent or PipelineRun, with apiVersion flujo.dev/v1alpha1"),
    ("no kind", "kind is Pipeline, Agent or PipelineRun, with apiVersion flujo.dev/v1alpha1"),
    ("nested deeper", "move the inner steps into a separate pipeline"),
    ("needs model", "an openai agent needs model and endpoint (…/v1)"),
    ("needs endpoint", "set endpoint: the URL the agent calls"),
    ("needs responses", "a scripted agent lists its answers under responses"),
    ("needs builtin", "name the transform: builtin: upper (flujo explain lists them per step)"),
)


_TEMPLATE_NAMES = (
    "input", "previous_step", "steps", "output", "iteration", "item", "index", "branch",
)  # fmt: skip


@cache
def _field_names() -> tuple[str, ...]:
    """Every YAML field name of the manifests (camelCase), for "did you mean"."""
    from pydantic import BaseModel

    from flujo.spec.run import PipelineRunManifest

    seen: set[type[BaseModel]] = set()
    names: set[str] = set()
    todo: list[Any] = [PipelineManifest, AgentManifest, PipelineRunManifest]
    while todo:
        item = todo.pop()
        if isinstance(item, type) and issubclass(item, BaseModel):
            if item in seen:
                continue
            seen.add(item)
            for name, info in item.model_fields.items():
                names.add(info.alias or name)
                todo.append(info.annotation)
        else:
            todo.extend(getattr(item, "__args__", ()))
    return tuple(sorted(names))


def hint_for(message: str, loc: str = "") -> str | None:
    """A one-line hint for a validation message, or ``None``."""
    unknown = re.match(r"unknown field '([^']+)'", message)
    if unknown:
        close = difflib.get_close_matches(unknown.group(1), _field_names(), n=1, cutoff=0.7)
        if close:
            return f"did you mean {close[0]!r}?"
        return "unknown fields are errors, so that a typo never changes behaviour silently"
    variable = re.match(r"template uses unknown variable '([^']+)'", message)
    if variable:
        close = difflib.get_close_matches(variable.group(1), _TEMPLATE_NAMES, n=1, cutoff=0.6)
        if close:
            return f"did you mean {close[0]!r}?"
    missing = re.match(r"missing required field '([^']+)'", message)
    if missing:
        name = missing.group(1)
        if name == "maxIterations":
            return "every loop needs maxIterations, an upper bound on its iterations"
        return f"add {name}: it has no default"
    for needle, hint in _HINTS:
        if needle in message:
            return hint
    return None


def describe_problem(problem: Problem, *, context: int = 1) -> str:
    """``problem`` as ``flujo validate`` shows it: its line, the YAML excerpt, a hint."""
    lines = [str(problem)]
    if problem.line:
        key = problem.loc.rsplit(".", 1)[-1] if problem.loc else None
        if key is not None and (key.endswith("]") or not key):
            key = None
        shown = excerpt(problem.source, problem.line, key=key, context=context)
        if shown:
            lines.extend("  " + line for line in shown.splitlines())
    hint = hint_for(problem.message, problem.loc)
    if hint:
        lines.append(f"  hint: {hint}")
    return "\n".join(lines)
