"""Engine-overhead workloads on LangGraph 1.2.x (``StateGraph``, no checkpointer).

Runs inside ``.bench/langgraph`` (made by ``benchmarks/peers/setup.sh``) and prints one
JSON object on stdout.  ``benchmarks/engine_overhead.py`` runs it for you.

State is ``{"x": int}``; each trivial step is a node ``lambda s: {"x": inc(s["x"])}``
around the shared :func:`overhead_common.inc` (an ``async def`` node for ``ainvoke``).
A graph is compiled once per mode and reused: without a checkpointer or cache policy it
keeps nothing between runs.  ``recursion_limit`` is raised to 10,000 supersteps.

- chain: nodes ``s0 .. s999`` joined by edges ``START -> s0 -> ... -> s999 -> END``;
- loop: one node ``body`` with a conditional edge back to itself until ``x >= 1000``
  (LangGraph has no loop construct: a cycle plus a router is its idiom; the router is
  not a node, so it adds no step execution);
- fanout: 100 levels of 10 nodes; every node of level j has an edge from every node of
  level j-1 (``START`` for level 0), so a level is one superstep that starts after the
  whole previous level has finished.  All 10 branches write ``x + 1`` to ``x``, whose
  reducer keeps the last write: that is the "first branch's output" merge of the
  workload, as every branch agrees.  No join nodes: the Pregel superstep barrier is the
  join, so every node execution is a branch execution.

Modes: ``invoke`` with sync nodes (parallel nodes run on LangGraph's thread pool) and
``await ainvoke`` with async nodes (parallel nodes run as asyncio tasks); the faster
mode is reported.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
from collections.abc import Awaitable, Callable, Hashable
from typing import Annotated, Any, TypedDict

import overhead_common as oc
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph

RECURSION_LIMIT = 10_000
CONFIG: RunnableConfig = {"recursion_limit": RECURSION_LIMIT}


class ChainState(TypedDict):
    x: int


def _keep_last(_current: int, update: int) -> int:
    return update


class FanoutState(TypedDict):
    x: Annotated[int, _keep_last]


def node(state: ChainState) -> dict[str, int]:
    """The trivial step as a LangGraph node."""
    return {"x": oc.inc(state["x"])}


async def anode(state: ChainState) -> dict[str, int]:
    """The trivial step as an async LangGraph node."""
    return {"x": oc.inc(state["x"])}


def _route(state: ChainState) -> str:
    return END if state["x"] >= oc.LOOP_ITERATIONS else "body"


def build(workload: str, step: Callable[..., Any]) -> StateGraph[Any]:
    """The workload as an uncompiled ``StateGraph`` whose nodes run ``step``."""
    if workload == "chain":
        chain: StateGraph[Any] = StateGraph(ChainState)
        prev = START
        for i in range(oc.CHAIN_STEPS):
            chain.add_node(f"s{i}", step)
            chain.add_edge(prev, f"s{i}")
            prev = f"s{i}"
        chain.add_edge(prev, END)
        return chain
    if workload == "loop":
        loop: StateGraph[Any] = StateGraph(ChainState)
        loop.add_node("body", step)
        loop.add_edge(START, "body")
        targets: dict[Hashable, str] = {"body": "body", END: END}
        loop.add_conditional_edges("body", _route, targets)
        return loop
    if workload == "fanout":
        fan: StateGraph[Any] = StateGraph(FanoutState)
        previous = [START]
        for j in range(oc.FANOUT_DEPTH):
            level = [f"p{j}b{i}" for i in range(oc.FANOUT_WIDTH)]
            for name in level:
                fan.add_node(name, step)
                for p in previous:
                    fan.add_edge(p, name)
            previous = level
        for p in previous:
            fan.add_edge(p, END)
        return fan
    raise ValueError(workload)


def _sync_factory(workload: str) -> Callable[[], Callable[[], Any]]:
    graph = build(workload, node).compile()

    def run() -> Any:
        return graph.invoke({"x": 0}, CONFIG)["x"]

    return lambda: run


def _async_factory(workload: str) -> Callable[[], Callable[[], Awaitable[Any]]]:
    graph = build(workload, anode).compile()

    async def run() -> Any:
        return (await graph.ainvoke({"x": 0}, CONFIG))["x"]

    return lambda: run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    oc.add_common_args(parser)
    settings = oc.settings_from_args(parser.parse_args())
    version = importlib.metadata.version("langgraph")
    environment = oc.environment()  # before measuring: the load average seen at the start

    workloads: dict[str, Any] = {}
    for workload in settings.workloads:
        print(f"[langgraph {version}] {workload}", file=sys.stderr, flush=True)
        modes = {
            "sync": oc.measure_sync(_sync_factory(workload), workload, settings),
            "async": oc.measure_async(_async_factory(workload), workload, settings),
        }
        workloads[workload] = oc.summarize(modes)

    oc.emit(
        {
            "engine": f"LangGraph {version}",
            "package": "langgraph",
            "version": version,
            "step": "StateGraph node returning {'x': inc(state['x'])} (async def for ainvoke)",
            "environment": environment,
            "variants": {
                "default": {
                    "description": "StateGraph(...).compile() without checkpointer "
                    f"(in-memory state), recursion_limit={RECURSION_LIMIT}",
                    "workloads": workloads,
                }
            },
        },
        settings.workloads,
    )


if __name__ == "__main__":
    main()
