"""Load manifests from YAML, keeping line numbers for error messages.

A file may hold several documents (``---``): Agents and Pipelines can share
one file, exactly as with ``kubectl apply -f``.  Loading is defensive
because pipeline files may come from untrusted authors: only YAML's safe
subset, no aliases (which is what makes "billion laughs" bombs possible),
bounded nesting and size.  Every problem becomes a :class:`Problem` with the
file, line and field path — never a traceback.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from flujo.spec.agent import AgentManifest
from flujo.spec.pipeline import PipelineManifest
from flujo.spec.run import PipelineRunManifest

__all__ = ["Documents", "Problem", "SpecError", "format_loc", "load_documents", "load_files"]

MAX_FILE_BYTES = 4 << 20
MAX_YAML_DEPTH = 64
KINDS: dict[str, type[BaseModel]] = {
    "Pipeline": PipelineManifest,
    "Agent": AgentManifest,
    "PipelineRun": PipelineRunManifest,
}
IGNORED_KINDS: frozenset[str] = frozenset()
UNKNOWN_KEY = "unknown step kind or field "


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input, located as precisely as we can."""

    source: str
    message: str
    line: int | None = None
    loc: str = ""

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line else self.source
        field_ = f" {self.loc}:" if self.loc else ""
        return f"{where}:{field_} {self.message}"


class SpecError(Exception):
    """Raised with every problem found, not just the first."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(str(p) for p in self.problems))


class _Loader(yaml.SafeLoader):
    """SafeLoader without aliases and with a nesting bound."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None, None, "YAML aliases (*name) are not allowed in Flujo manifests", mark
            )
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise yaml.composer.ComposerError(
                    None, None, f"YAML nested deeper than {MAX_YAML_DEPTH} levels", mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


_C_LOADER_BYTES = 64 << 10
"""Texts from this size up are parsed by libyaml (when PyYAML has it): the
pure-Python scanner takes seconds per megabyte, libyaml milliseconds."""
_CSafeLoader: Any = getattr(yaml, "CSafeLoader", None)


def _mark(event: yaml.Event) -> Any:
    return event.start_mark


def _refuse_aliases_and_depth(text: str) -> None:
    """What :class:`_Loader` refuses (aliases, nesting), checked on libyaml's events."""
    open_collections = 0
    for event in yaml.parse(text, Loader=_CSafeLoader):
        if isinstance(event, yaml.AliasEvent):
            raise yaml.composer.ComposerError(
                None,
                None,
                "YAML aliases (*name) are not allowed in Flujo manifests",
                _mark(event),
            )
        if isinstance(event, yaml.NodeEvent):
            if open_collections + 1 > MAX_YAML_DEPTH:
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"YAML nested deeper than {MAX_YAML_DEPTH} levels",
                    _mark(event),
                )
            if isinstance(event, yaml.CollectionStartEvent):
                open_collections += 1
        elif isinstance(event, yaml.CollectionEndEvent):
            open_collections -= 1


def _loader(text: str) -> Any:
    if _CSafeLoader is None or len(text) < _C_LOADER_BYTES:
        return _Loader(text)
    _refuse_aliases_and_depth(text)
    return _CSafeLoader(text)


def _lines(node: yaml.Node, loc: tuple[Any, ...], out: dict[tuple[Any, ...], int]) -> None:
    out[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            sub = (*loc, key.value)
            _lines(value, sub, out)
            out[sub] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _lines(item, (*loc, i), out)


def format_loc(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


@dataclass
class _Doc:
    index: int
    data: Any
    lines: dict[tuple[Any, ...], int]

    def line_of(self, loc: Sequence[Any]) -> int | None:
        """The line of the deepest part of ``loc`` present in the YAML."""
        best = self.lines.get(())
        current: tuple[Any, ...] = ()
        for part in loc:
            candidate = (*current, part)
            if candidate in self.lines:
                current = candidate
                best = self.lines[candidate]
        return best

    def yaml_loc(self, loc: Sequence[Any]) -> list[Any]:
        """``loc`` without the parts pydantic adds that are not YAML keys."""
        current: tuple[Any, ...] = ()
        kept: list[Any] = []
        for part in loc:
            candidate = (*current, part)
            if candidate in self.lines:
                current = candidate
                kept.append(part)
        missing = [p for p in loc[len(kept) :] if isinstance(p, str)]
        if missing and len(missing) == 1:
            kept.append(missing[0])
        return kept


@dataclass
class Documents:
    """Everything found in one or more files."""

    pipelines: list[PipelineManifest] = field(default_factory=list)
    agents: list[AgentManifest] = field(default_factory=list)
    runs: list[PipelineRunManifest] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    locators: dict[int, tuple[str, _Doc]] = field(default_factory=dict)
    """id(manifest) → (source, document), to place later (semantic) problems."""

    def locate(self, manifest: object, loc: Sequence[Any], message: str) -> Problem:
        source, doc = self.locators.get(id(manifest), ("<input>", None))
        if doc is None:
            return Problem(source, message, None, format_loc(loc))
        return Problem(source, message, doc.line_of(loc), format_loc(doc.yaml_loc(loc)))

    def raise_for_problems(self) -> None:
        if self.problems:
            raise SpecError(self.problems)

    def extend(self, other: Documents) -> None:
        self.pipelines += other.pipelines
        self.agents += other.agents
        self.runs += other.runs
        self.problems += other.problems
        self.locators.update(other.locators)


def _yaml_problem(source: str, exc: yaml.YAMLError) -> Problem:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    line = mark.line + 1 if mark is not None else None
    return Problem(source, f"invalid YAML: {problem}", line)


def _parse(text: str, source: str) -> Iterator[_Doc]:
    loader = _loader(text)
    try:
        index = 0
        while loader.check_node():
            node = loader.get_node()
            lines: dict[tuple[Any, ...], int] = {}
            if node is not None:
                _lines(node, (), lines)
            data = loader.construct_document(node) if node is not None else None
            yield _Doc(index, data, lines)
            index += 1
    finally:
        loader.dispose()


def _clean(msg: str) -> str:
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix) :]
    return msg


def load_documents(text: str, source: str = "<input>") -> Documents:
    """Parse and validate every document of a YAML text; collect all problems."""
    out = Documents()
    if len(text.encode("utf-8", "surrogatepass")) > MAX_FILE_BYTES:
        out.problems.append(Problem(source, f"file larger than {MAX_FILE_BYTES} bytes"))
        return out
    try:
        docs = list(_parse(text, source))
    except yaml.YAMLError as exc:
        out.problems.append(_yaml_problem(source, exc))
        return out
    except RecursionError:
        out.problems.append(Problem(source, "invalid YAML: nested too deeply"))
        return out
    for doc in docs:
        if doc.data is None:
            continue
        line = doc.lines.get(())
        if not isinstance(doc.data, dict):
            out.problems.append(Problem(source, f"document {doc.index + 1} is not a mapping", line))
            continue
        kind = doc.data.get("kind")
        if kind in IGNORED_KINDS:
            continue
        model = KINDS.get(str(kind))
        if model is None:
            got = "no kind" if kind is None else f"unknown kind {kind!r}"
            out.problems.append(
                Problem(
                    source,
                    f"{got} (expected one of: {', '.join([*KINDS, *IGNORED_KINDS])})",
                    doc.line_of(("kind",)),
                    "kind",
                )
            )
            continue
        try:
            # camelCase only, as the Kubernetes API server (which would prune
            # snake_case fields) sees the same document.
            manifest = model.model_validate(doc.data, by_alias=True, by_name=False)
        except ValidationError as exc:
            for err in exc.errors(include_url=False):
                loc = err["loc"]
                msg = _clean(err["msg"])
                if err["type"] == "extra_forbidden":
                    msg = f"unknown field {loc[-1]!r}"
                elif err["type"] == "missing":
                    msg = f"missing required field {loc[-1]!r}"
                elif msg.startswith(UNKNOWN_KEY):
                    loc = (*loc, msg[len(UNKNOWN_KEY) :].split("'")[1])
                out.problems.append(
                    Problem(source, msg, doc.line_of(loc), format_loc(doc.yaml_loc(loc)))
                )
            continue
        out.locators[id(manifest)] = (source, doc)
        if isinstance(manifest, PipelineManifest):
            out.pipelines.append(manifest)
        elif isinstance(manifest, AgentManifest):
            out.agents.append(manifest)
        elif isinstance(manifest, PipelineRunManifest):
            out.runs.append(manifest)
    return out


def load_files(paths: Sequence[str | Path]) -> Documents:
    """Load several files; unreadable or non-UTF-8 files become problems."""
    out = Documents()
    for path in paths:
        source = str(path)
        try:
            raw = Path(path).read_bytes()
        except OSError as exc:
            out.problems.append(Problem(source, f"cannot read file: {exc.strerror or exc}"))
            continue
        if len(raw) > MAX_FILE_BYTES:
            out.problems.append(Problem(source, f"file larger than {MAX_FILE_BYTES} bytes"))
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            out.problems.append(Problem(source, f"not UTF-8 text (byte {exc.start})"))
            continue
        out.extend(load_documents(text, source))
    return out
