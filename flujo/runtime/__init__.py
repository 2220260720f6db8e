"""Executors that drive the run state machine: the embedded asyncio runtime."""

from flujo.runtime.results import EventLog, ResultStore, ResultStoreClosedError
from flujo.runtime.runner import Flujo, PipelineValidationError, RunObserver, RunResult

__all__ = [
    "EventLog",
    "Flujo",
    "PipelineValidationError",
    "ResultStore",
    "ResultStoreClosedError",
    "RunObserver",
    "RunResult",
]
