"""A static index of a pipeline spec, built once per run and never persisted.

Step names are unique in a pipeline, so a name identifies a node of the spec
tree; the index answers "which sequence is this step in, at which position,
and which container owns that sequence" in O(1).  Dynamic instances (loop
iterations, map items) are told apart by their paths, not by the index.
"""

from __future__ import annotations

from dataclasses import dataclass

from flujo.spec.pipeline import PipelineSpec, StepSpec

__all__ = ["Node", "Plan", "child_path", "split_scope"]


@dataclass(frozen=True, slots=True)
class Node:
    spec: StepSpec
    siblings: list[StepSpec]
    index: int
    owner: str | None
    """Name of the container whose sequence holds this step; None at top level."""


class Plan:
    """Name → :class:`Node` for every step of a pipeline spec."""

    def __init__(self, spec: PipelineSpec) -> None:
        self.spec = spec
        self.nodes: dict[str, Node] = {}
        self._index(spec.steps, None)

    def _index(self, seq: list[StepSpec], owner: str | None) -> None:
        for i, step in enumerate(seq):
            # The first definition wins; validation reports duplicates.
            self.nodes.setdefault(step.name, Node(step, seq, i, owner))
            if step.loop is not None:
                self._index(step.loop.steps, step.name)
            elif step.map is not None:
                self._index(step.map.steps, step.name)
            elif step.parallel is not None:
                for branch in step.parallel.branches:
                    self._index(branch.steps, step.name)
            elif step.conditional is not None:
                for branch in step.conditional.branches:
                    self._index(branch.steps, step.name)


def child_path(prefix: str, name: str) -> str:
    return f"{prefix}/{name}" if prefix else name


def split_scope(path: str) -> tuple[str, str]:
    """``a/b/c`` → (``a/b``, ``c``); ``c`` → (``""``, ``c``)."""
    head, _, tail = path.rpartition("/")
    return head, tail
