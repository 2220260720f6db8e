"""The embedded executor's side of approval steps.

The machine emits ``AwaitApproval``; the executor records the wait in the run
store (since when: the first time, so a timeout counts from when the wait
began, whatever process held the run since), and turns what happens later
into events:

- an answer (``flujo approve`` / ``flujo reject``, or
  :meth:`flujo.runtime.Flujo.answer`) is a row of the store's ``answers``;
  the process holding the run picks it up within a second, and a process
  resuming the run applies it first;
- a timeout is the executor's clock passing ``since + timeoutSeconds``: a
  timer while a process holds the run, and a check when it is resumed.  An
  answer given after the timeout is too late: the timeout wins.

When a run waits on nothing but approvals, the executor stops holding it: the
run's status is ``awaiting approval`` and no process, budget or deadline runs
until it is answered (its run deadline counts only the time it executed).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from jsonschema import exceptions as schema_exceptions
from jsonschema import validators

from flujo.engine import (
    ApprovalAnswered,
    ApprovalTimedOut,
    AwaitApproval,
    Event,
    RunState,
    advance,
    new_run,
)
from flujo.runtime.store import RunStore, StoreError
from flujo.spec.pipeline import PipelineSpec

__all__ = ["Approvals", "answer_problem", "record_answer", "replayed"]

Clock = Callable[[], float]


def answer_problem(schema: dict[str, Any] | None, value: Any) -> str | None:
    """Why ``value`` is not an acceptable answer input under ``schema``; ``None`` if it is."""
    if schema is None or value is None:
        return None
    try:
        cls = validators.validator_for(schema)
        cls.check_schema(schema)
        error = next(iter(cls(schema).iter_errors(value)), None)
    except schema_exceptions.SchemaError as exc:
        return f"the step's schema is not a valid JSON Schema: {exc.message}"
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path)
    return f"{where + ': ' if where else ''}{error.message}"


class Approvals:
    """Waits of one execution; answers and timeouts become events put on ``put``."""

    def __init__(
        self, store: RunStore | None, run_id: str | None, clock: Clock, put: Callable[[Event], None]
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.clock = clock
        self.put = put
        self.requests: dict[str, AwaitApproval] = {}
        self.since: dict[str, float] = {}
        self.timers: dict[str, asyncio.TimerHandle] = {}
        self.delivered: set[str] = set()
        """Paths whose answer or timeout was handed over already (polls repeat)."""

    def wait(self, request: AwaitApproval) -> None:
        """The machine asks for an approval: note when the wait began, arm its timeout."""
        self.requests[request.path] = request
        now = self.clock()
        if self.store is not None and self.run_id is not None:
            now = self.store.record_wait(
                self.run_id, request.model_dump(mode="json", by_alias=True), now
            )
        self.since[request.path] = now

    def arm(self, loop: asyncio.AbstractEventLoop) -> None:
        """Timers for the timeouts of the waits (while this process holds the run)."""
        for path, request in self.requests.items():
            if request.timeout_seconds is None or path in self.timers:
                continue
            left = self.since[path] + request.timeout_seconds - self.clock()
            self.timers[path] = loop.call_later(
                max(left, 0.0), self.put, ApprovalTimedOut(path=path)
            )

    def disarm(self) -> None:
        for timer in self.timers.values():
            timer.cancel()
        self.timers.clear()

    def due(self, awaiting: dict[str, str]) -> list[Event]:
        """Answers given and timeouts passed for the steps still ``awaiting``, in order."""
        events: list[Event] = []
        answers = (
            self.store.answers(self.run_id)
            if self.store is not None and self.run_id is not None
            else []
        )
        now = self.clock()
        for path in sorted(set(awaiting) - self.delivered):
            request = self.requests.get(path)
            since = self.since.get(path)
            deadline = (
                since + request.timeout_seconds
                if request is not None and request.timeout_seconds is not None and since is not None
                else None
            )
            answer = next((a for a in answers if a["path"] == path), None)
            if answer is not None and (deadline is None or answer["at"] <= deadline):
                events.append(
                    ApprovalAnswered(
                        path=path,
                        approved=answer["approved"],
                        input=answer["input"],
                        reason=answer["reason"],
                        by=answer["by"],
                    )
                )
            elif deadline is not None and now >= deadline:
                events.append(ApprovalTimedOut(path=path))
        self.delivered.update(e.path for e in events)  # type: ignore[union-attr]
        return events


def replayed(store: RunStore, run_id: str, spec: PipelineSpec) -> RunState:
    """The stored run's state, from its journal (the machine is pure: nothing is called)."""
    state = new_run(spec)
    for event, _ in store.entries(run_id):
        state, _commands = advance(state, event)
    return state


def record_answer(
    store: RunStore,
    spec: PipelineSpec,
    run_id: str,
    *,
    approved: bool,
    step: str | None,
    input: Any,
    reason: str | None,
    by: str | None,
    at: float,
) -> str:
    """Check and keep an answer to one of the run's waits; return the step's path."""
    record = store.resolve(run_id)
    if record.finished:
        raise StoreError(f"run {record.id} has {record.status} already")
    state = replayed(store, record.id, spec)
    waiting = sorted(state.awaiting)
    if not waiting:
        raise StoreError(f"run {record.id} waits on no approval")
    chosen = [p for p in waiting if step in (None, p, state.steps[p].name)]
    if len(chosen) != 1:
        raise StoreError(
            f"run {record.id} waits on {', '.join(waiting)}: "
            + ("name one with --step" if step is None else f"not on {step!r}")
        )
    path = chosen[0]
    request = store.waits(record.id).get(path, (0.0, {}))[1]
    problem = answer_problem(request.get("schema"), input) if approved else None
    if problem is not None:
        raise StoreError(f"the answer's input does not fit step {path}'s schema: {problem}")
    store.add_answer(record.id, path, approved=approved, input=input, reason=reason, by=by, at=at)
    return path
