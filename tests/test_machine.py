"""Unit tests of the run state machine's semantics, event by event."""

from __future__ import annotations

from flujo.domain import errors
from flujo.domain.usage import Usage
from flujo.engine import (
    CancelStep,
    DeadlineReached,
    FinishRun,
    LaunchStep,
    RunCancelled,
    StepCancelled,
    StepFailed,
    StepSucceeded,
    advance,
)

from tests.enginekit import Driver, agent, spec


def ok(d: Driver, path: str, output: object, cost: float = 0.0, tokens: int = 0) -> list:
    launch = d.take(path)
    return d.feed(
        StepSucceeded(
            path=path,
            attempt=launch.attempt,
            output=output,
            usage=Usage(input_tokens=tokens, cost_usd=cost),
        )
    )


def fail(d: Driver, path: str, cls: str = errors.PERMANENT, **kw: object) -> list:
    launch = d.take(path)
    return d.feed(
        StepFailed(path=path, attempt=launch.attempt, error_class=cls, message="boom", **kw)
    )


def test_sequence_passes_outputs_and_renders_templates() -> None:
    d = Driver(spec(agent("a"), agent("b", input="got {{ previous_step }} from {{ input }}")))
    [launch] = d.start("x")
    assert (launch.path, launch.input, launch.attempt) == ("a", "x", 1)
    [launch_b] = ok(d, "a", "A")
    assert launch_b.input == "got A from x"
    [finish] = ok(d, "b", "B")
    assert isinstance(finish, FinishRun)
    assert finish.outcome.status == "succeeded" and finish.outcome.output == "B"


def test_single_expression_template_keeps_native_value() -> None:
    d = Driver(spec(agent("a"), agent("b", input="{{ steps.a.output }}")))
    d.start(None)
    [launch] = ok(d, "a", {"k": [1, 2]})
    assert launch.input == {"k": [1, 2]}


def test_loop_runs_until_exit_condition_with_iteration_paths() -> None:
    d = Driver(
        spec(
            {
                "name": "l",
                "loop": {
                    "maxIterations": 5,
                    "exitWhen": "output >= 3",
                    "steps": [agent("inc", input="{{ previous_step }}")],
                },
            }
        )
    )
    d.start(0)
    for i in range(1, 3):
        [launch] = ok(d, f"l/iter-{i}/inc", i)
        assert launch.path == f"l/iter-{i + 1}/inc" and launch.input == i
    [finish] = ok(d, "l/iter-3/inc", 3)
    assert finish.outcome.output == 3
    assert d.state.steps["l"].iteration == 3


def test_loop_bound_fails_by_default_and_can_succeed() -> None:
    body = [agent("x")]
    d = Driver(
        spec({"name": "l", "loop": {"maxIterations": 2, "exitWhen": "false", "steps": body}})
    )
    d.start(0)
    ok(d, "l/iter-1/x", 1)
    [finish] = ok(d, "l/iter-2/x", 2)
    assert finish.outcome.status == "failed"
    assert finish.outcome.error_class == errors.LOOP_EXHAUSTED
    d = Driver(
        spec(
            {"name": "l", "loop": {"maxIterations": 1, "onMaxIterations": "succeed", "steps": body}}
        )
    )
    d.start(0)
    [finish] = ok(d, "l/iter-1/x", 7)
    assert finish.outcome.status == "succeeded" and finish.outcome.output == 7


def test_conditional_takes_named_branch_default_and_reports_unknown() -> None:
    cond = {
        "name": "c",
        "conditional": {
            "condition": "previous_step",
            "branches": [
                {"name": "yes", "steps": [agent("y")]},
                {"name": "no", "steps": [agent("n")]},
            ],
        },
    }
    d = Driver(spec(cond))
    [launch] = d.start("no")
    assert launch.path == "c/no/n" and d.state.steps["c"].branch == "no"
    d = Driver(spec(cond))
    [finish] = d.start("maybe")
    assert finish.outcome.status == "failed"
    assert "names no branch" in (finish.outcome.message or "")
    cond["conditional"]["default"] = "yes"  # type: ignore[index]
    d = Driver(spec(cond))
    [launch] = d.start("maybe")
    assert launch.path == "c/yes/y"


def test_boolean_condition_maps_to_true_false_branches() -> None:
    d = Driver(
        spec(
            {
                "name": "c",
                "conditional": {
                    "condition": "previous_step > 2",
                    "branches": [
                        {"name": "true", "steps": [agent("big")]},
                        {"name": "false", "steps": []},
                    ],
                },
            }
        )
    )
    [finish] = d.start(1)
    assert finish.outcome.output == 1  # empty branch passes its input through


def _parallel(**extra: object) -> dict:
    return {
        "name": "p",
        "parallel": {
            "branches": [
                {"name": "a", "steps": [agent("pa")]},
                {"name": "b", "steps": [agent("pb1"), agent("pb2")]},
                {"name": "c", "steps": [agent("pc")]},
            ],
            **extra,
        },
    }


def test_parallel_launches_all_branches_sorted_and_merges_in_branch_order() -> None:
    d = Driver(spec(_parallel(merge="list")))
    launches = d.start("in")
    assert [c.path for c in launches] == ["p/a/pa", "p/b/pb1", "p/c/pc"]
    ok(d, "p/c/pc", "C")
    ok(d, "p/b/pb1", "B1")
    ok(d, "p/a/pa", "A")
    [finish] = ok(d, "p/b/pb2", "B2")
    assert finish.outcome.output == ["A", "B2", "C"]


def test_parallel_merge_strategies() -> None:
    results = {"p/a/pa": {"x": 1}, "p/b/pb1": "-", "p/b/pb2": {"y": 2}, "p/c/pc": {"x": 3}}
    expected = {
        "dict": {"a": {"x": 1}, "b": {"y": 2}, "c": {"x": 3}},
        "merge": {"x": 3, "y": 2},
        "first": {"x": 1},
    }
    for strategy, want in expected.items():
        d = Driver(spec(_parallel(merge=strategy)))
        d.start(None)
        for path in ["p/a/pa", "p/b/pb1", "p/c/pc", "p/b/pb2"]:
            cmds = ok(d, path, results[path])
        assert cmds[-1].outcome.output == want, strategy


def test_parallel_fail_fast_cancels_running_siblings() -> None:
    d = Driver(spec(_parallel()))
    d.start(None)
    ok(d, "p/a/pa", "A")
    cmds = fail(d, "p/c/pc")
    cancels = [c for c in cmds if isinstance(c, CancelStep)]
    assert [c.path for c in cancels] == ["p/b/pb1"]
    assert isinstance(cmds[-1], FinishRun) and cmds[-1].outcome.path == "p/c/pc"
    assert d.state.steps["p/a/pa"].output == "A"  # partial results kept
    assert d.state.steps["p/b/pb1"].phase == "cancelled"
    # the late result of the cancelled branch changes nothing but is accounted
    before = d.state.model_dump()
    d.feed(StepSucceeded(path="p/b/pb1", attempt=1, output="late", usage=Usage(cost_usd=0.5)))
    assert d.state.steps["p/b/pb1"].phase == "cancelled"
    assert d.state.usage.cost_usd == 0.5 and before["usage"]["cost_usd"] == 0


def test_parallel_wait_and_ignore_policies() -> None:
    d = Driver(spec(_parallel(onBranchFailure="wait")))
    d.start(None)
    assert not [c for c in fail(d, "p/a/pa") if isinstance(c, CancelStep | FinishRun)]
    ok(d, "p/c/pc", "C")
    ok(d, "p/b/pb1", "B1")
    [finish] = ok(d, "p/b/pb2", "B2")
    assert finish.outcome.status == "failed" and finish.outcome.path == "p"
    d = Driver(spec(_parallel(onBranchFailure="ignore", merge="dict")))
    d.start(None)
    fail(d, "p/a/pa")
    ok(d, "p/c/pc", "C")
    ok(d, "p/b/pb1", "B1")
    [finish] = ok(d, "p/b/pb2", "B2")
    assert finish.outcome.output == {"b": "B2", "c": "C"}


def test_parallel_max_concurrency_queues_branches() -> None:
    d = Driver(spec(_parallel(maxConcurrency=1)))
    assert [c.path for c in d.start(None)] == ["p/a/pa"]
    assert [c.path for c in ok(d, "p/a/pa", 1)] == ["p/b/pb1"]


def test_map_fans_out_over_items_with_item_and_index() -> None:
    d = Driver(
        spec(
            {
                "name": "m",
                "map": {
                    "items": "previous_step",
                    "steps": [agent("each", input="{{ index }}:{{ item }}")],
                },
            }
        )
    )
    launches = d.start(["x", "y"])
    assert [(c.path, c.input) for c in launches] == [
        ("m/item-0/each", "0:x"),
        ("m/item-1/each", "1:y"),
    ]
    ok(d, "m/item-1/each", "Y")
    [finish] = ok(d, "m/item-0/each", "X")
    assert finish.outcome.output == ["X", "Y"]


def test_map_rejects_non_list_and_accepts_empty() -> None:
    m = {"name": "m", "map": {"items": "previous_step", "steps": [agent("each")]}}
    [finish] = Driver(spec(m)).start("text")
    assert finish.outcome.error_class == errors.TEMPLATE
    [finish] = Driver(spec(m)).start([])
    assert finish.outcome.output == []


def test_retry_transient_with_deterministic_backoff_and_retry_after() -> None:
    retry = {"maxAttempts": 3, "backoffSeconds": 1, "backoffMultiplier": 2, "jitter": 0.5}
    d = Driver(spec(agent("a", retry=retry)))
    d.start(None, seed=7)
    [r2] = fail(d, "a", errors.TRANSIENT)
    [r3] = fail(d, "a", errors.RATE_LIMITED, retry_after=30.0)
    assert r2.attempt == 2 and 0.5 <= r2.delay_seconds <= 1.5
    assert r3.attempt == 3 and r3.delay_seconds == 30.0
    [finish] = fail(d, "a", errors.TIMEOUT)
    assert finish.outcome.status == "failed" and "timeout" in (finish.outcome.message or "")
    # same seed, same delays
    again = Driver(spec(agent("a", retry=retry)))
    again.start(None, seed=7)
    [same] = fail(again, "a", errors.TRANSIENT)
    assert same.delay_seconds == r2.delay_seconds


def test_permanent_errors_are_not_retried_but_fall_back() -> None:
    d = Driver(spec(agent("a", retry={"maxAttempts": 5}, fallback="backup")))
    d.start(None)
    [fb] = fail(d, "a", errors.PERMANENT)
    assert (fb.agent, fb.attempt, fb.delay_seconds) == ("backup", 2, 0.0)
    assert d.state.steps["a"].fallback_used
    [finish] = ok(d, "a", "saved")
    assert finish.outcome.output == "saved"


def test_circuit_open_goes_to_fallback_and_fallback_failure_fails() -> None:
    d = Driver(spec(agent("a", fallback="backup")))
    d.start(None)
    [fb] = fail(d, "a", errors.CIRCUIT_OPEN)
    assert fb.agent == "backup"
    [finish] = fail(d, "a", errors.PERMANENT)
    assert finish.outcome.status == "failed"


def test_duplicate_and_unknown_events_are_ignored_without_double_usage() -> None:
    d = Driver(spec(agent("a"), agent("b")))
    d.start(None)
    ok(d, "a", "A", cost=0.1)
    d.feed(StepSucceeded(path="a", attempt=1, output="A", usage=Usage(cost_usd=0.1)))
    d.feed(StepSucceeded(path="zzz", attempt=1, output="?"))
    d.feed(StepFailed(path="b", attempt=9, error_class="transient"))
    assert abs(d.state.usage.cost_usd - 0.1) < 1e-12
    assert d.state.ignored_events == 3
    assert list(d.inflight) == ["b"]  # a was never relaunched


def test_template_error_fails_the_step_with_template_class() -> None:
    d = Driver(spec(agent("a", input="{{ nope.x }}")))
    [finish] = d.start(None)
    assert finish.outcome.error_class == errors.TEMPLATE
    assert "nope" in (finish.outcome.message or "")


def test_sandbox_blocks_private_attribute_access() -> None:
    d = Driver(spec(agent("a", input="{{ ''.__class__.__mro__ }}")))
    [finish] = d.start(None)
    assert finish.outcome.status == "failed" and finish.outcome.error_class == errors.TEMPLATE


def test_deadline_and_cancel_stop_everything() -> None:
    d = Driver(spec(_parallel()))
    d.start(None)
    cmds = d.feed(DeadlineReached())
    assert [c.path for c in cmds if isinstance(c, CancelStep)] == ["p/a/pa", "p/b/pb1", "p/c/pc"]
    assert cmds[-1].outcome.reason == "DeadlineExceeded"
    d = Driver(spec(_parallel()))
    d.start(None)
    cmds = d.feed(RunCancelled())
    assert cmds[-1].outcome.status == "cancelled" and d.state.phase == "cancelled"
    assert d.feed(RunCancelled()) == []


def test_unexpected_step_cancellation_fails_the_step() -> None:
    d = Driver(spec(agent("a")))
    d.start(None)
    [finish] = d.feed(StepCancelled(path="a", attempt=1))
    assert finish.outcome.error_class == errors.CANCELLED


def test_a_bug_becomes_a_failed_run_not_an_exception() -> None:
    d = Driver(spec(agent("a"), agent("b")))
    d.start(None)
    d.state.steps["a"].name = "no-such-step"  # corrupt the state on purpose
    state, cmds = advance(d.state, StepSucceeded(path="a", attempt=1, output=1))
    assert isinstance(cmds[-1], FinishRun)
    assert cmds[-1].outcome.reason == "InternalError"
    assert state.phase == "failed"


def test_state_round_trips_through_json() -> None:
    from flujo.engine import RunState

    d = Driver(spec(_parallel(), agent("after")))
    d.start({"k": 1})
    ok(d, "p/a/pa", "A")
    restored = RunState.model_validate_json(d.state.model_dump_json())
    assert restored.model_dump() == d.state.model_dump()
    # and the restored state keeps running
    state, cmds = advance(restored, StepSucceeded(path="p/c/pc", attempt=1, output="C"))
    assert cmds == [] and state.steps["p/c/pc"].phase == "succeeded"
    assert isinstance(d.log[0], LaunchStep)


def test_long_loops_keep_only_recent_iterations_in_state() -> None:
    from flujo.engine.machine import KEEP_ITERATIONS

    n = KEEP_ITERATIONS + 50
    d = Driver(
        spec(
            {
                "name": "l",
                "loop": {
                    "maxIterations": n,
                    "exitWhen": f"output >= {n}",
                    "steps": [agent("inc"), agent("check")],
                },
            },
            agent("after", input="{{ steps.inc.output }}"),
        )
    )
    d.start(0)
    for i in range(1, n + 1):
        ok(d, f"l/iter-{i}/inc", i)
        ok(d, f"l/iter-{i}/check", i)
    [finish] = ok(d, "after", "done")
    assert finish.outcome.status == "succeeded"
    kept = {p.split("/")[1] for p in d.state.steps if p.startswith("l/iter-")}
    assert len(kept) == KEEP_ITERATIONS and f"iter-{n}" in kept and "iter-1" not in kept
    assert d.state.forgotten_steps == 2 * (n - KEEP_ITERATIONS)
    assert d.state.forgotten_succeeded == d.state.forgotten_steps
    assert d.log[-2].input == n  # steps.inc.output still resolves to the latest instance
