"""Helpers to drive the state machine by hand in tests."""

from __future__ import annotations

from typing import Any

from flujo.engine import (
    CancelStep,
    Command,
    FinishRun,
    LaunchStep,
    RunStarted,
    RunState,
    advance,
    new_run,
)
from flujo.spec import PipelineSpec, UsageLimits


def spec(*steps: dict[str, Any], **extra: Any) -> PipelineSpec:
    return PipelineSpec.model_validate({"steps": list(steps), **extra})


def agent(name: str, agent_name: str = "a", **extra: Any) -> dict[str, Any]:
    return {"name": name, "agent": agent_name, **extra}


class Driver:
    """Feeds events, remembers what is in flight."""

    def __init__(self, pipeline: PipelineSpec, limits: UsageLimits | None = None) -> None:
        self.state: RunState = new_run(pipeline, limits)
        self.inflight: dict[str, LaunchStep] = {}
        self.log: list[Command] = []
        self.finish: FinishRun | None = None

    def feed(self, event: Any) -> list[Command]:
        self.state, commands = advance(self.state, event)
        self.log.extend(commands)
        for c in commands:
            if isinstance(c, LaunchStep):
                self.inflight[c.path] = c
            elif isinstance(c, CancelStep):
                self.inflight.pop(c.path, None)
            elif isinstance(c, FinishRun):
                self.finish = c
        return commands

    def start(self, data: Any = None, seed: int = 0) -> list[Command]:
        return self.feed(RunStarted(input=data, seed=seed))

    def launched(self) -> list[str]:
        return sorted(self.inflight)

    def take(self, path: str) -> LaunchStep:
        return self.inflight.pop(path)
