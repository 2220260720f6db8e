"""Executors that drive the run state machine: the embedded asyncio runtime."""

from flujo.runtime.runner import Flujo, PipelineValidationError, RunResult

__all__ = ["Flujo", "PipelineValidationError", "RunResult"]
