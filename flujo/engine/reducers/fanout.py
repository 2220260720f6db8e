"""Parallel and map steps: scopes (branches, items or batches) started up to the
concurrency, the failure policy when one fails, and merging the results."""

from __future__ import annotations

from typing import Any

from flujo.domain import errors
from flujo.engine.reducers.batch import Batch
from flujo.engine.reducers.finish import cancel_under
from flujo.engine.reducers.scope import evaluate_at, map_input
from flujo.engine.reducers.walk import node_done, node_failed, start_seq
from flujo.engine.state import StepState
from flujo.spec.pipeline import MapSpec, StepSpec

__all__ = ["body_done", "body_failed", "start_map", "start_parallel"]


def start_parallel(b: Batch, s: StepState, spec: StepSpec, data: Any) -> None:
    assert spec.parallel is not None
    s.scopes = [br.name for br in spec.parallel.branches]
    s.queued = list(s.scopes)
    _fill(b, s, spec)


def start_map(b: Batch, s: StepState, spec: StepSpec, data: Any) -> None:
    mp = spec.map
    assert mp is not None
    ok, items = evaluate_at(b, s, mp.items, data)
    if not ok:
        return
    if not isinstance(items, list | tuple):
        node_failed(
            b, s, errors.TEMPLATE, f"map items gave {type(items).__name__}, not a list", s.path
        )
        return
    if len(items) > mp.max_items:
        node_failed(
            b,
            s,
            errors.CONFIG,
            f"map over {len(items)} items exceeds maxItems={mp.max_items}",
            s.path,
        )
        return
    s.items = list(items)
    if mp.batch_size is None:
        s.scopes = [f"item-{i}" for i in range(len(items))]
    else:
        s.scopes = [f"batch-{k}" for k in range(-(-len(items) // mp.batch_size))]
    s.queued = list(s.scopes)
    if not items:
        node_done(b, s, [])
        return
    _fill(b, s, spec)


def body_done(b: Batch, owner: StepState, spec: StepSpec, key: str, output: Any) -> None:
    """A branch (or map item / batch) of ``owner`` succeeded: record it, start more."""
    if spec.map is not None and spec.map.batch_size is not None:
        problem = _batch_problem(owner, spec.map, key, output)
        if problem is not None:
            body_failed(b, owner, spec, key, errors.SCHEMA, problem, f"{owner.path}/{key}")
            return
    owner.results[key] = output
    owner.scope_phases[key] = "succeeded"
    owner.active -= 1
    _fill(b, owner, spec)


def _batch_problem(owner: StepState, mp: MapSpec, key: str, output: Any) -> str | None:
    """Why a batch's output cannot be spread over its items, or None if it can."""
    expected = len(map_input(owner, mp, key)[1])
    last = mp.steps[-1].name
    rule = "a batched map needs a list with one result per item"
    if not isinstance(output, list | tuple):
        return f"the body's last step {last} returned {type(output).__name__}; {rule}"
    if len(output) != expected:
        return (
            f"the body's last step {last} returned {len(output)} results "
            f"for {expected} items; {rule}"
        )
    return None


def body_failed(
    b: Batch,
    owner: StepState,
    spec: StepSpec,
    key: str,
    error_class: str,
    message: str,
    origin: str,
) -> None:
    """A branch (or map item / batch) of ``owner`` failed: apply the failure policy."""
    owner.scope_phases[key] = "failed"
    owner.active -= 1
    if owner.error_class is None:
        owner.error_class = error_class
        owner.message = f"{origin}: {message}"
    policy = spec.parallel.on_branch_failure if spec.parallel else spec.map.on_item_failure  # type: ignore[union-attr]
    if policy == "failFast":
        owner.queued = []
        cancel_under(b, owner.path, f"sibling {origin} failed")
        node_failed(b, owner, error_class, message, origin)
    else:
        _fill(b, owner, spec)


def _fill(b: Batch, s: StepState, spec: StepSpec) -> None:
    """Start queued scopes of a parallel/map up to its concurrency; finish when all ended."""
    fan = spec.parallel or spec.map
    assert fan is not None
    limit = fan.max_concurrency or len(s.scopes) or 1
    while s.queued and s.phase == "running":
        if s.active >= limit:
            return
        key = s.queued.pop(0)
        s.scope_phases[key] = "running"
        s.active += 1
        if spec.parallel is not None:
            branch = next(br for br in spec.parallel.branches if br.name == key)
            start_seq(b, f"{s.path}/{key}", branch.steps, s.input)
        else:
            assert spec.map is not None
            start_seq(b, f"{s.path}/{key}", spec.map.steps, map_input(s, spec.map, key)[1])
    if s.phase != "running" or s.queued:
        return
    if s.active:
        return
    failed = [k for k in s.scopes if s.scope_phases.get(k) == "failed"]
    policy = spec.parallel.on_branch_failure if spec.parallel else spec.map.on_item_failure  # type: ignore[union-attr]
    if failed and policy != "ignore":
        node_failed(b, s, s.error_class or errors.PERMANENT, s.message or "a branch failed", s.path)
        return
    merged = _merge(s, spec)
    if isinstance(merged, _MergeError):
        node_failed(b, s, errors.CONFIG, merged.message, s.path)
    else:
        node_done(b, s, merged)


class _MergeError:
    def __init__(self, message: str) -> None:
        self.message = message


def _merge(s: StepState, spec: StepSpec) -> Any:
    if spec.map is not None:
        if spec.map.batch_size is None:
            return [s.results.get(k) for k in s.scopes]
        # Batches are spread back over their items: the same list an unbatched map gives.
        flat: list[Any] = []
        for k in s.scopes:
            if k in s.results:
                flat.extend(s.results[k])
            else:
                flat.extend([None] * len(map_input(s, spec.map, k)[1]))
        return flat
    ok = [k for k in s.scopes if s.scope_phases.get(k) == "succeeded"]
    assert spec.parallel is not None
    strategy = spec.parallel.merge
    if strategy == "dict":
        return {k: s.results[k] for k in ok}
    if strategy == "list":
        return [s.results[k] for k in ok]
    if strategy == "concat":
        return "\n".join(v if isinstance(v, str) else str(v) for v in (s.results[k] for k in ok))
    if strategy == "first":
        return s.results[ok[0]] if ok else None
    merged: dict[str, Any] = {}
    for k in ok:
        value = s.results[k]
        if not isinstance(value, dict):
            return _MergeError(
                f"merge: branch {k!r} returned {type(value).__name__}, not an object"
            )
        merged.update(value)
    return merged
