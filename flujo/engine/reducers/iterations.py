"""The loop-iteration index: which step paths were created inside which iteration.

Only the last :data:`KEEP_ITERATIONS` iterations of a loop keep their step
states; :func:`forget` drops an older one without scanning every step.
"""

from __future__ import annotations

from collections.abc import Iterator

from flujo.engine.state import RunState

__all__ = ["ITER", "KEEP_ITERATIONS", "forget", "index_iterations"]

KEEP_ITERATIONS = 100
"""Loop iterations whose step states stay in the run state; older ones are forgotten
(their events — and so the transcript — keep everything), which bounds memory
and the operator's status for loops of any length."""
ITER = "/iter-"


def _iteration_prefixes(path: str, start: int = 0) -> Iterator[str]:
    """The loop-iteration scopes (``refine/iter-3/``) enclosing ``path``, found from ``start``."""
    at = path.find(ITER, start)
    while at != -1:
        end = path.find("/", at + len(ITER))
        if end == -1:
            return
        yield path[: end + 1]
        at = path.find(ITER, end)


def index_iterations(st: RunState, path: str) -> None:
    """Note ``path`` under every loop iteration enclosing it, so ``forget`` need not scan."""
    index: dict[str, list[str]] = st._iterations
    for prefix in _iteration_prefixes(path):
        index.setdefault(prefix, []).append(path)


def forget(st: RunState, prefix: str) -> None:
    """Drop the step states of a finished loop iteration, keeping the counts."""
    paths = st._iterations.pop(prefix, None)
    if paths is None:  # a state not built by this machine (deserialised): scan
        paths = [p for p in st.steps if p.startswith(prefix)]
    for path in paths:
        old = st.steps.pop(path, None)
        if old is not None and old.kind == "agent":
            st.forgotten_steps += 1
            st.forgotten_succeeded += old.phase == "succeeded"
        # Iterations of loops nested in this one go with it.
        for nested in _iteration_prefixes(path, len(prefix) - 1):
            st._iterations.pop(nested, None)
