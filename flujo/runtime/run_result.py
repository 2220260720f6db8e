"""What a finished run returns: :class:`RunResult` (output, outcome, states, events)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from flujo.domain.usage import Usage
from flujo.engine import Event, Outcome, RunState, StepState
from flujo.runtime.results import EventLog

__all__ = ["RunResult"]


@dataclass(repr=False)
class RunResult:
    """What a finished run returns: output, outcome, per-step states, usage, events.

    ``events`` is the run's whole event log.  Under the embedded executor it is
    an :class:`~flujo.runtime.results.EventLog`: large step outputs are kept in
    the run's result store (a temp file) and read back on access, so iterate it
    (or :meth:`iter_events`) rather than copying it into a list.  The store is
    released by :meth:`close` (or ``with result:``) or when the result is
    garbage-collected; after that, reading a spilled event raises
    :class:`~flujo.runtime.results.ResultStoreClosedError`.
    """

    outcome: Outcome
    state: RunState
    events: Sequence[Event] = field(default_factory=list)
    run_id: str | None = None
    """The run's id in its run store (``None`` for a run kept in memory only)."""

    def __repr__(self) -> str:
        # Short on purpose: asyncio reprs task results, and a full dump of a
        # thousand-step state would cost more than running the steps.
        return (
            f"RunResult(status={self.status!r}, steps={len(self.state.steps)}, "
            f"usage={self.usage!r})"
        )

    @property
    def status(self) -> str:
        return self.outcome.status

    @property
    def success(self) -> bool:
        return self.outcome.status == "succeeded"

    @property
    def output(self) -> Any:
        return self.outcome.output

    @property
    def usage(self) -> Usage:
        return self.state.usage

    @property
    def steps(self) -> dict[str, StepState]:
        return self.state.steps

    def iter_events(self) -> Iterator[Event]:
        """The events in order, holding at most one spilled output at a time."""
        return iter(self.events)

    def close(self) -> None:
        """Release the run's result store (idempotent); the outcome and state stay."""
        if isinstance(self.events, EventLog):
            self.events.close()

    def __enter__(self) -> RunResult:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def to_dict(self, *, events: bool = True) -> dict[str, Any]:
        """The JSON form printed by ``flujo run --json``.

        ``events=False`` leaves the event list empty, for callers that stream
        it from :meth:`iter_events` instead of holding every output at once.
        """
        return {
            "status": self.outcome.status,
            "output": self.outcome.output,
            "reason": self.outcome.reason,
            "errorClass": self.outcome.error_class,
            "message": self.outcome.message,
            "failedPath": self.outcome.path,
            "usage": self.state.usage.model_dump(by_alias=True),
            "launches": self.state.launches,
            "steps": {
                path: {
                    "kind": s.kind,
                    "phase": s.phase,
                    **({"agent": s.agent, "attempts": s.attempt} if s.kind == "agent" else {}),
                    **({"iterations": s.iteration} if s.kind == "loop" else {}),
                    **({"branch": s.branch} if s.branch else {}),
                    "output": s.output,
                    **(
                        {"errorClass": s.error_class, "message": s.message} if s.error_class else {}
                    ),
                    "usage": s.usage.model_dump(by_alias=True),
                }
                for path, s in self.state.steps.items()
            },
            "events": [e.model_dump(mode="json") for e in self.iter_events()] if events else [],
            "pipeline": self.state.pipeline.to_data(),
            "limits": self.state.limits.to_data(),
            "agentCaps": dict(self.state.agent_caps),
        }
