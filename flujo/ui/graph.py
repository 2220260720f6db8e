"""A pipeline as a picture: nodes and edges laid out by grandalf, coloured by the run's steps.

The graph is the *spec's*, not the run's: a loop of 1,000 iterations is one
loop node (with its count) above one copy of its body, whose nodes show the
latest iteration; a parallel step forks into its branches side by side and
joins below them; a conditional draws every branch and marks the one taken
(the others are ``skipped``); a map draws its body once with the item count.
So the picture of a run stays as small as its pipeline, whatever the run did.

Layout is grandalf's Sugiyama layered layout (top to bottom); this module
only says which boxes exist, how big they are and what links them, then turns
the coordinates into plain data the template draws as SVG.  Statuses
(:func:`node_statuses`) are computed apart from the layout, so live updates
send only ``{node id: phase, note}``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flujo.spec.pipeline import PipelineSpec, StepSpec
from flujo.transcript.values import natural_order
from flujo.ui.view import FINISHED, StepInfo

__all__ = ["Graph", "GraphEdge", "GraphNode", "NodeStatus", "layout", "node_statuses"]

NODE_W, NODE_H = 176.0, 46.0
JOIN_W = JOIN_H = 14.0
MARGIN = 24.0
_ITERATION = re.compile(r"(?:^|/)iter-(\d+)/")


@dataclass
class GraphNode:
    id: str
    """``n-STEP`` for a step (names are unique in a pipeline), ``j-STEP`` for a container's join."""
    name: str
    kind: str
    """``agent``, ``loop``, ``parallel``, ``conditional``, ``map``, ``approval``, or ``join``."""
    detail: str = ""
    """What the step calls: the agent's name, a loop's bound, a conditional's condition."""
    container: str | None = None
    """The innermost container step this node is in."""
    branch: str | None = None
    """The branch of that container (parallel, conditional) this node is in."""
    x: float = 0.0
    y: float = 0.0
    w: float = NODE_W
    h: float = NODE_H


@dataclass
class GraphEdge:
    points: list[tuple[float, float]]
    back: bool = False
    """A loop's way back to its head (drawn dashed, not part of the layout)."""


@dataclass
class Graph:
    nodes: list[GraphNode] = field(default_factory=list)
    edges: list[GraphEdge] = field(default_factory=list)
    width: float = 0.0
    height: float = 0.0

    def node(self, node_id: str) -> GraphNode:
        return next(n for n in self.nodes if n.id == node_id)


@dataclass(frozen=True)
class NodeStatus:
    phase: str
    note: str = ""


def _kind(step: StepSpec) -> str:
    for kind in ("loop", "conditional", "parallel", "map"):
        if getattr(step, kind) is not None:
            return kind
    if step.agent is not None:
        return "agent"
    # A kind this module does not draw specially (added later): its first set key.
    data = step.model_dump(exclude_none=True, by_alias=True)
    others = [k for k in data if k not in {"name", "description", "input", "retry"}]
    return others[0] if others else "step"


class _Builder:
    def __init__(self) -> None:
        self.nodes: list[GraphNode] = []
        self.edges: list[tuple[str, str]] = []
        self.back: list[tuple[str, str]] = []

    def add(self, node: GraphNode) -> str:
        self.nodes.append(node)
        return node.id

    def sequence(
        self, steps: Iterable[StepSpec], container: str | None, branch: str | None
    ) -> tuple[str | None, str | None]:
        first = last = None
        for step in steps:
            entry, exit_ = self.step(step, container, branch)
            if last is not None:
                self.edges.append((last, entry))
            first = first or entry
            last = exit_
        return first, last

    def step(self, step: StepSpec, container: str | None, branch: str | None) -> tuple[str, str]:
        kind = _kind(step)
        head = GraphNode(f"n-{step.name}", step.name, kind, container=container, branch=branch)
        self.add(head)
        if step.loop is not None:
            head.detail = f"at most {step.loop.max_iterations}"
            first, last = self.sequence(step.loop.steps, step.name, None)
            if first is None or last is None:
                return head.id, head.id
            self.edges.append((head.id, first))
            self.back.append((last, head.id))
            return head.id, last
        branches: list[tuple[str | None, list[StepSpec]]] = []
        if step.parallel is not None:
            branches = [(b.name, b.steps) for b in step.parallel.branches]
            head.detail = f"{len(branches)} branches"
        elif step.conditional is not None:
            branches = [(b.name, b.steps) for b in step.conditional.branches]
            head.detail = step.conditional.condition
        elif step.map is not None:
            branches = [(None, step.map.steps)]
            head.detail = step.map.items
        else:
            head.detail = step.agent or ""
            return head.id, head.id
        join = self.add(
            GraphNode(f"j-{step.name}", step.name, "join", w=JOIN_W, h=JOIN_H, container=container)
        )
        for name, body in branches:
            first, last = self.sequence(body, step.name, name)
            if first is None or last is None:
                self.edges.append((head.id, join))
                continue
            self.edges.append((head.id, first))
            self.edges.append((last, join))
        return head.id, join


class _View:
    """What grandalf needs of a vertex (its size) and gives back (its centre)."""

    def __init__(self, w: float, h: float) -> None:
        self.w, self.h = w, h
        self.xy: tuple[float, float] = (0.0, 0.0)


class _EdgeView:
    def __init__(self) -> None:
        self.points: list[tuple[float, float]] = []

    def setpath(self, points: list[Any]) -> None:
        self.points = [(float(x), float(y)) for x, y in points]


def layout(spec: PipelineSpec) -> Graph:
    """The pipeline's graph with every node and edge placed (top to bottom)."""
    from grandalf.graphs import Edge, Vertex
    from grandalf.graphs import Graph as GGraph
    from grandalf.layouts import SugiyamaLayout
    from grandalf.routing import route_with_lines

    built = _Builder()
    built.sequence(spec.steps, None, None)
    vertices = {n.id: Vertex(n.id) for n in built.nodes}
    for node in built.nodes:
        vertices[node.id].view = _View(node.w, node.h)
    edges = []
    for a, b in built.edges:
        edge = Edge(vertices[a], vertices[b])
        edge.view = _EdgeView()
        edges.append(edge)
    graph = GGraph(list(vertices.values()), edges)
    for component in graph.C:
        sugiyama = SugiyamaLayout(component)
        sugiyama.route_edge = route_with_lines
        sugiyama.xspace, sugiyama.yspace = 28, 34
        sugiyama.init_all()
        sugiyama.draw()
    # Components (a pipeline is one; a lone step is its own) side by side.
    offset = 0.0
    for component in graph.C:
        xs = [v.view.xy[0] - v.view.w / 2 for v in component.sV]
        shift = offset - min(xs)
        for v in component.sV:
            v.view.xy = (v.view.xy[0] + shift, v.view.xy[1])
        for e in component.sE:
            e.view.points = [(x + shift, y) for x, y in e.view.points]
        offset = max(v.view.xy[0] + v.view.w / 2 for v in component.sV) + 40
    top = min((v.view.xy[1] - v.view.h / 2 for v in vertices.values()), default=0.0)
    result = Graph()
    for node in built.nodes:
        cx, cy = vertices[node.id].view.xy
        node.x = cx - node.w / 2 + MARGIN
        node.y = cy - node.h / 2 - top + MARGIN
    for edge in edges:
        pts = edge.view.points or [edge.v[0].view.xy, edge.v[1].view.xy]
        result.edges.append(GraphEdge([(x + MARGIN, y - top + MARGIN) for x, y in pts]))
    by_id = {n.id: n for n in built.nodes}
    for a, b in built.back:
        src, dst = by_id[a], by_id[b]
        right = max(src.x + src.w, dst.x + dst.w) + 18
        result.edges.append(
            GraphEdge(
                [
                    (src.x + src.w, src.y + src.h / 2),
                    (right, src.y + src.h / 2),
                    (right, dst.y + dst.h / 2),
                    (dst.x + dst.w, dst.y + dst.h / 2),
                ],
                back=True,
            )
        )
    result.nodes = built.nodes
    xs = [n.x + n.w for n in built.nodes] + [x for e in result.edges for x, _ in e.points]
    ys = [n.y + n.h for n in built.nodes]
    result.width = max(xs, default=0.0) + MARGIN
    result.height = max(ys, default=0.0) + MARGIN
    return result


def node_statuses(
    graph: Graph, steps: Mapping[str, StepInfo], run_phase: str
) -> dict[str, NodeStatus]:
    """Each node's phase and note, from the run's step instances (by path)."""
    latest: dict[str, StepInfo] = {}
    for step in sorted(steps.values(), key=lambda s: natural_order(s.path)):
        latest[step.name] = step
    finished = run_phase.lower() in FINISHED
    heads = {n.name: n for n in graph.nodes if n.kind != "join"}
    out: dict[str, NodeStatus] = {}
    for node in graph.nodes:
        if node.kind == "join":
            joined = latest.get(node.name)
            out[node.id] = NodeStatus(joined.phase if joined else "pending")
            continue
        info = latest.get(node.name)
        if info is None:
            out[node.id] = NodeStatus(_unreached(node, heads, latest, finished))
            continue
        out[node.id] = NodeStatus(info.phase, _note(node, info))
    return out


def _unreached(
    node: GraphNode, heads: Mapping[str, GraphNode], latest: Mapping[str, StepInfo], finished: bool
) -> str:
    """``skipped`` when it cannot run any more (a branch not taken, a finished run)."""
    if finished:
        return "skipped"
    owner: GraphNode | None = node
    while owner is not None and owner.container is not None:
        container = latest.get(owner.container)
        head = heads.get(owner.container)
        if (
            head is not None
            and head.kind == "conditional"
            and container is not None
            and container.branch is not None
            and owner.branch != container.branch
        ):
            return "skipped"
        owner = head
    return "pending"


def _note(node: GraphNode, info: StepInfo) -> str:
    if node.kind == "loop":
        return f"{info.iteration} iteration{'s' if info.iteration != 1 else ''}"
    if node.kind == "map":
        return f"{info.items} items" if info.items is not None else ""
    if node.kind == "conditional":
        return f"→ {info.branch}" if info.branch else ""
    parts = []
    iterations = _ITERATION.findall(info.path)
    if iterations:
        parts.append(f"iteration {iterations[-1]}")
    if info.attempts > 1:
        parts.append(f"attempt {info.attempts}")
    return ", ".join(parts)
