"""Property tests: random pipelines, random event orders.

For any pipeline and any interleaving of results the machine must: never
raise (and never hit its internal-error path), end every launch exactly
once, never relaunch a step whose success was recorded, always finish, and
give the same commands when the same events are replayed.
"""

from __future__ import annotations

import itertools
from typing import Any

from flujo.domain import errors
from flujo.domain.usage import Usage
from flujo.engine import (
    CancelStep,
    DeadlineReached,
    FinishRun,
    LaunchStep,
    RunStarted,
    StepCancelled,
    StepFailed,
    StepSucceeded,
    advance,
    new_run,
)
from flujo.spec import PipelineSpec, UsageLimits
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ERROR_CHOICES = [errors.TRANSIENT, errors.PERMANENT, errors.TIMEOUT, errors.CIRCUIT_OPEN]
ECHO = "<echo>"
"""An output choice: answer with the launch's input (so a batch gets a list of its size)."""


@st.composite
def pipelines(draw: st.DrawFn) -> dict[str, Any]:
    counter = itertools.count()

    def name(prefix: str) -> str:
        return f"{prefix}{next(counter)}"

    def seq(depth: int) -> list[dict[str, Any]]:
        return [step(depth) for _ in range(draw(st.integers(1 if depth == 0 else 0, 3)))]

    def body(depth: int) -> list[dict[str, Any]]:
        return [step(depth) for _ in range(draw(st.integers(1, 2)))]

    def step(depth: int) -> dict[str, Any]:
        kinds = ["agent"] if depth >= 3 else ["agent", "agent", "loop", "cond", "par", "map"]
        kind = draw(st.sampled_from(kinds))
        if kind == "agent":
            s: dict[str, Any] = {"name": name("s"), "agent": "a"}
            if draw(st.booleans()):
                s["retry"] = {"maxAttempts": draw(st.integers(1, 3)), "backoffSeconds": 0}
            if draw(st.booleans()):
                s["fallback"] = "b"
            return s
        if kind == "loop":
            return {
                "name": name("loop"),
                "loop": {
                    "maxIterations": draw(st.integers(1, 3)),
                    "exitWhen": draw(st.sampled_from([None, "iteration >= 2", "output == 'stop'"])),
                    "onMaxIterations": draw(st.sampled_from(["fail", "succeed"])),
                    "steps": body(depth + 1),
                },
            }
        if kind == "cond":
            return {
                "name": name("cond"),
                "conditional": {
                    "condition": "'x' if previous_step == 'x' else 'y'",
                    "default": "y",
                    "branches": [
                        {"name": "x", "steps": seq(depth + 1)},
                        {"name": "y", "steps": seq(depth + 1)},
                    ],
                },
            }
        if kind == "par":
            return {
                "name": name("par"),
                "parallel": {
                    "merge": draw(st.sampled_from(["dict", "list", "first", "concat"])),
                    "onBranchFailure": draw(st.sampled_from(["failFast", "wait", "ignore"])),
                    "maxConcurrency": draw(st.sampled_from([None, 1, 2])),
                    "branches": [
                        {"name": f"b{i}", "steps": seq(depth + 1)}
                        for i in range(draw(st.integers(1, 3)))
                    ],
                },
            }
        mp: dict[str, Any] = {
            "items": "[1, 2, 3][:" + str(draw(st.integers(0, 3))) + "]",
            "maxConcurrency": draw(st.sampled_from([None, 2])),
            "onItemFailure": draw(st.sampled_from(["failFast", "ignore"])),
            "steps": body(depth + 1),
        }
        batch_size = draw(st.sampled_from([None, None, 1, 2]))
        if batch_size is not None:
            mp["batchSize"] = batch_size  # the body gets lists; ECHO answers them in kind
        return {"name": name("map"), "map": mp}

    return {"steps": seq(0)}


def run_randomly(spec: PipelineSpec, limits: UsageLimits, data: st.DataObject) -> tuple[list, list]:
    state = new_run(spec, limits)
    events: list[Any] = [RunStarted(input=data.draw(st.sampled_from(["x", "y", None])), seed=3)]
    state, cmds = advance(state, events[0])
    commands: list[Any] = list(cmds)
    inflight: dict[str, LaunchStep] = {}
    succeeded: set[str] = set()
    ended: set[tuple[str, int]] = set()
    finished = False
    stale: list[LaunchStep] = []

    def absorb(cmds: list[Any]) -> None:
        nonlocal finished
        for c in cmds:
            assert not finished, "no command after FinishRun"
            if isinstance(c, LaunchStep):
                key = (c.path, c.attempt)
                assert key not in ended and c.path not in inflight, f"relaunch of {key}"
                assert c.path not in succeeded, f"{c.path} launched after success"
                inflight[c.path] = c
            elif isinstance(c, CancelStep):
                launch = inflight.pop(c.path)
                ended.add((c.path, launch.attempt))
                stale.append(launch)
            elif isinstance(c, FinishRun):
                assert c.outcome.reason != "InternalError", c.outcome.message
                finished = True

    absorb(cmds)
    for _ in range(400):
        if finished:
            break
        assert inflight, "the run is stuck: nothing in flight and not finished"
        path = data.draw(st.sampled_from(sorted(inflight)))
        launch = inflight.pop(path)
        ended.add((path, launch.attempt))
        roll = data.draw(st.integers(0, 99))
        usage = Usage(
            input_tokens=data.draw(st.integers(0, 50)),
            cost_usd=data.draw(st.sampled_from([0.0, 0.01, 0.05])),
        )
        event: Any
        if roll < 70:
            output = data.draw(st.sampled_from(["x", "y", "stop", 1, ECHO]))
            event = StepSucceeded(
                path=path,
                attempt=launch.attempt,
                output=launch.input if output == ECHO else output,
                usage=usage,
            )
            succeeded.add(path)
        elif roll < 95:
            event = StepFailed(
                path=path,
                attempt=launch.attempt,
                usage=usage,
                error_class=data.draw(st.sampled_from(ERROR_CHOICES)),
            )
        elif roll < 98:
            event = StepCancelled(path=path, attempt=launch.attempt)
        else:
            event = DeadlineReached()
            inflight[path] = launch
            ended.discard((path, launch.attempt))
        events.append(event)
        state, cmds = advance(state, event)
        commands.extend(cmds)
        if isinstance(event, StepSucceeded) and state.steps[path].phase != "succeeded":
            succeeded.discard(path)  # its success was not recorded (run ended first)
        absorb(cmds)
        # sometimes deliver a late result of a cancelled or duplicated attempt
        if stale and data.draw(st.booleans()):
            old = stale.pop()
            late = StepSucceeded(path=old.path, attempt=old.attempt, output="late")
            events.append(late)
            state, cmds = advance(state, late)
            commands.extend(cmds)
            absorb(cmds)
    assert finished, "the run did not finish"
    assert not inflight, f"launches never ended: {sorted(inflight)}"
    return events, commands


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pipelines(), st.data())
def test_random_runs_are_sound_and_replayable(raw: dict[str, Any], data: st.DataObject) -> None:
    spec = PipelineSpec.model_validate(raw)
    limits = data.draw(
        st.sampled_from(
            [
                UsageLimits(),
                UsageLimits(max_cost_usd=0.1),
                UsageLimits(max_tokens=120),
                UsageLimits(max_launches=6),
            ]
        )
    )
    events, commands = run_randomly(spec, limits, data)

    replay = new_run(spec, limits)
    replayed: list[Any] = []
    for event in events:
        replay, cmds = advance(replay, event)
        replayed.extend(cmds)
    assert replayed == commands
    original = new_run(spec, limits)
    for event in events:
        original, _ = advance(original, event)
    assert replay.model_dump() == original.model_dump()
