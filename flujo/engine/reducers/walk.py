"""The tree walk: start a sequence, finish or fail a node, pass the end to its owner.

A container whose kind has no ``body_done`` (``body_failed``) entry in the
table ends (fails) with its body: a conditional with its branch, a loop when
an iteration fails.

What is particular to a step kind — how an agent launches, when a loop starts
its next iteration, how a parallel merges — is its reducer's, reached through
``Batch.reducers`` (filled in by ``flujo.engine.machine``): this module imports
no reducer.
"""

from __future__ import annotations

from typing import Any

from flujo.engine.plan import child_path, split_scope
from flujo.engine.reducers.batch import Batch
from flujo.engine.reducers.finish import fail_run, succeed_run
from flujo.engine.reducers.iterations import ITER, index_iterations
from flujo.engine.state import StepState
from flujo.spec.pipeline import StepSpec

__all__ = ["node_done", "node_failed", "start_seq"]


def start_seq(b: Batch, prefix: str, seq: list[StepSpec], data: Any) -> None:
    if seq:
        _start_node(b, prefix, seq[0], data)
    else:
        _seq_done(b, prefix, data)


def _new_state(b: Batch, path: str, spec: StepSpec, kind: str, data: Any) -> StepState:
    s = StepState(path=path, name=spec.name, kind=kind, input=data)
    b.state.steps[path] = s
    if ITER in path:
        index_iterations(b.state, path)
    return s


def _start_node(b: Batch, prefix: str, spec: StepSpec, data: Any) -> None:
    path = child_path(prefix, spec.name)
    kind = spec.kind
    s = _new_state(b, path, spec, kind, data)
    b.reducers.start[kind](b, s, spec, data)


def node_done(b: Batch, s: StepState, output: Any) -> None:
    s.phase = "succeeded"
    s.output = output
    b.state.latest[s.name] = s.path
    node = b.plan.nodes[s.name]
    prefix = split_scope(s.path)[0]
    if node.index + 1 < len(node.siblings):
        _start_node(b, prefix, node.siblings[node.index + 1], output)
    else:
        _seq_done(b, prefix, output)


def _seq_done(b: Batch, prefix: str, output: Any) -> None:
    st = b.state
    if not prefix:
        succeed_run(b, output)
        return
    owner_path, key = split_scope(prefix)
    owner = st.steps[owner_path]
    if owner.phase != "running":
        return
    done = b.reducers.body_done.get(owner.kind)
    if done is None:  # a conditional: its branch's end is its own
        node_done(b, owner, output)
    else:
        done(b, owner, b.plan.nodes[owner.name].spec, key, output)


def node_failed(b: Batch, s: StepState, error_class: str, message: str, origin: str) -> None:
    s.phase = "failed"
    s.error_class = error_class
    s.message = message
    prefix = split_scope(s.path)[0]
    if not prefix:
        fail_run(
            b, "StepFailed", error_class, f"step {origin} failed ({error_class}): {message}", origin
        )
        return
    owner_path, key = split_scope(prefix)
    owner = b.state.steps[owner_path]
    if owner.phase != "running":
        return
    failed = b.reducers.body_failed.get(owner.kind)
    if failed is None:  # a loop or a conditional: its body's failure is its own
        node_failed(b, owner, error_class, message, origin)
    else:
        failed(b, owner, b.plan.nodes[owner.name].spec, key, error_class, message, origin)
