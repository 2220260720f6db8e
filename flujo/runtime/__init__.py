"""Executors that drive the run state machine: the embedded asyncio runtime."""

from flujo.runtime.runner import Flujo, PipelineValidationError, RunObserver, RunResult

__all__ = ["Flujo", "PipelineValidationError", "RunObserver", "RunResult"]
