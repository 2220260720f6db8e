"""The operator's shared capacity is shared fairly, and tenants' Pipelines are checked
off its event loop: the round-robin gate and the bounded validation worker pool."""

from __future__ import annotations

import asyncio
from typing import Any

from flujo.security.policy import SecurityPolicy

from flujo_operator.fairness import FairGate
from flujo_operator.validation_pool import ValidationPool

POLICY: dict[str, Any] = SecurityPolicy().model_dump(by_alias=True, mode="json")
LOOSE_POLICY: dict[str, Any] = SecurityPolicy(
    max_template_bytes=1 << 20,
    max_template_tokens=1 << 20,
    max_pipeline_template_bytes=1 << 20,
    max_pipeline_template_tokens=1 << 20,
    max_template_compile_ms=0,
).model_dump(by_alias=True, mode="json")
"""Template limits raised, compile deadline off: only the worker's time bound stops the bomb."""
ORDINARY = {"steps": [{"name": "a", "agent": "builtin.echo", "input": "{{ input }}"}]}
BOMB = {"steps": [{"name": "a", "agent": "builtin.echo", "input": "{{ input }}" * 20_000}]}
AGENTS: dict[str, Any] = {"builtin.echo": None}


def test_the_gate_serves_namespaces_in_turn_not_in_arrival_order() -> None:
    async def main() -> list[str]:
        gate = FairGate(1)
        order: list[str] = []
        await gate.acquire("hold")

        async def one(key: str) -> None:
            async with gate.slot(key):
                order.append(key)

        tasks = [asyncio.create_task(one("a")) for _ in range(5)]
        await asyncio.sleep(0)
        tasks.append(asyncio.create_task(one("b")))
        await asyncio.sleep(0)
        assert gate.waiting("a") == 5 and gate.waiting("b") == 1
        gate.release()
        await asyncio.gather(*tasks)
        assert gate.holders == 0 and gate.waiting() == 0
        return order

    order = asyncio.run(main())
    # b arrived after five of a's, and goes second: one turn of a, then b.
    assert order == ["a", "b", "a", "a", "a", "a"]


def test_a_cancelled_waiter_gives_up_its_place_and_no_slot_leaks() -> None:
    async def main() -> None:
        gate = FairGate(1)
        await gate.acquire("x")
        waiter = asyncio.create_task(gate.acquire("a"))
        await asyncio.sleep(0)
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        assert gate.waiting() == 0
        gate.release()
        assert gate.holders == 0
        async with gate.slot("b"):
            assert gate.holders == 1

    asyncio.run(main())


def test_a_template_bomb_breaches_the_time_bound_and_its_worker_is_replaced() -> None:
    async def main() -> None:
        pool = ValidationPool(workers=1, timeout=1.0, memory_mb=512)
        try:
            good = await pool.check("b", ORDINARY, AGENTS, POLICY)
            assert good.problems == [] and good.breach is None
            bomb = await pool.check("a", BOMB, AGENTS, LOOSE_POLICY)
            assert bomb.breach == "validation exceeded its time bound (1 s)"
            assert bomb.problems == [bomb.breach] and "\n" not in bomb.breach
            # The bomb is cached: a second run of it costs nothing.
            assert await pool.check("a", BOMB, AGENTS, LOOSE_POLICY) is bomb
            # Under the default policy the same bomb is refused at once, by its size.
            refused = await pool.check("a", BOMB, AGENTS, POLICY)
            assert refused.breach is None and "maxTemplateBytes" in refused.denied[0][1]
            # The replacement worker answers the next (different) pipeline.
            other = {**ORDINARY, "steps": [{**ORDINARY["steps"][0], "name": "b"}]}
            assert (await pool.check("b", other, AGENTS, POLICY)).problems == []
            assert pool.breaches["time"] == 1 and pool.restarts == 1
            assert pool.validations == 4
        finally:
            await pool.close()

    asyncio.run(main())


def test_a_pipeline_too_big_to_hold_breaches_the_memory_bound() -> None:
    # 200,000 steps: a few MB of JSON, well over 32 MiB once parsed into objects.
    huge = {"steps": [{"name": f"s{i}", "agent": "builtin.echo"} for i in range(200_000)]}

    async def main() -> None:
        pool = ValidationPool(workers=1, timeout=600.0, memory_mb=32)
        try:
            bomb = await pool.check("a", huge, AGENTS, POLICY)
            assert bomb.breach == "validation exceeded its memory bound (32 MiB)"
            assert (await pool.check("b", ORDINARY, AGENTS, POLICY)).problems == []
            assert pool.restarts == 1
        finally:
            await pool.close()

    asyncio.run(main())


def test_findings_come_back_as_one_line_messages() -> None:
    async def main() -> None:
        pool = ValidationPool(workers=1)
        try:
            broken = {"steps": [{"name": "a", "agent": "nobody", "input": "{{ nope }}"}]}
            verdict = await pool.check("a", broken, {}, POLICY)
            assert verdict.agents == ["unknown agent 'nobody'"] or any(
                "nobody" in m for m in verdict.agents
            )
            assert any("nope" in m for m in verdict.pipeline), verdict
            spec_error = await pool.check("a", {"steps": "no"}, {}, POLICY)
            assert spec_error.spec_error is not None and spec_error.spec_error.startswith("spec.")
        finally:
            await pool.close()

    asyncio.run(main())


def test_identical_requests_in_flight_share_one_validation() -> None:
    async def main() -> None:
        pool = ValidationPool(workers=1)
        try:
            verdicts = await asyncio.gather(
                *(pool.check("a", ORDINARY, AGENTS, POLICY) for _ in range(20))
            )
            assert all(v is verdicts[0] for v in verdicts) and pool.validations == 1
        finally:
            await pool.close()

    asyncio.run(main())


def test_templates_that_compile_too_long_for_the_event_loop_are_refused() -> None:
    async def main() -> None:
        # 2,000 outputs compile in well under the time bound but (on any machine)
        # take longer than a 1 ms compile budget: the state machine would compile
        # them on the operator's event loop.
        pool = ValidationPool(workers=1, timeout=600.0, memory_mb=512, compile_budget_ms=1.0)
        heavy = {"steps": [{"name": "a", "agent": "builtin.echo", "input": "{{ input }}" * 2000}]}
        try:
            verdict = await pool.check("a", heavy, AGENTS, POLICY)
            assert len(verdict.pipeline) == 1, verdict
            assert "to compile, more than the operator's bound of 1 ms" in verdict.pipeline[0]
        finally:
            await pool.close()

    asyncio.run(main())


# --- the run controller (an in-memory API: tests/test_run_controller.py) ---------------


def test_one_agents_rate_limit_queue_does_not_hold_back_another_agents_launch() -> None:
    from flujo_operator.config import Config
    from flujo_operator.runs import RunController
    from tests.test_run_controller import FakeKube, add, drive, run_status

    async def main() -> None:
        kube = FakeKube()
        narrow = {"type": "builtin", "builtin": "echo", "rateLimit": {"maxConcurrent": 1}}
        add(kube, "Agent", "narrow", narrow)
        add(kube, "Agent", "wide", {"type": "builtin", "builtin": "echo"})
        branches = [
            {"name": n, "steps": [{"name": f"{n}-step", "agent": agent}]}
            for n, agent in (("n1", "narrow"), ("n2", "narrow"), ("w", "wide"))
        ]
        spec = {"pipeline": {"steps": [{"name": "fan", "parallel": {"branches": branches}}]}}
        add(kube, "PipelineRun", "r1", spec)
        controller = RunController(kube, Config(executor="pod"))  # type: ignore[arg-type]
        await controller.on_run("ADDED", kube.objects[("pipelineruns", "r1")])
        launched = sorted(
            p["metadata"]["annotations"]["flujo.dev/step-path"] for p in kube.pods.values()
        )
        # n2 waits for narrow's one slot; w (another agent) was not held behind it.
        assert len(launched) == 2 and any("w-step" in p for p in launched), launched
        assert run_status(kube).get("waitingPods") == 1
        await drive(kube, controller)
        assert run_status(kube)["phase"] == "Succeeded" and len(kube.pods) == 3

    asyncio.run(main())


def test_a_finished_run_does_not_rewrite_every_queued_run_of_its_namespace() -> None:
    from flujo_operator.config import Config
    from flujo_operator.runs import RunController
    from tests.test_run_controller import FakeKube, add, drive, run_status

    async def main() -> None:
        kube = FakeKube()
        add(kube, "Pipeline", "p", {"steps": [{"name": "only", "agent": "builtin.echo"}]})
        runs = [
            add(kube, "PipelineRun", f"r{i}", {"pipelineRef": {"name": "p"}}) for i in range(30)
        ]
        controller = RunController(kube, Config(executor="pod", max_running_runs=1))  # type: ignore[arg-type]
        for run in runs:
            await controller.on_run("ADDED", run)
        assert run_status(kube, "r29")["reason"] == "Queued"
        before = kube.writes["pipelineruns.status"]
        for _ in range(3):  # three runs finish, one after the other
            await drive(kube, controller)
            await asyncio.gather(
                *[t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            )
        done = [i for i in range(30) if run_status(kube, f"r{i}").get("phase") == "Succeeded"]
        assert done == [0, 1, 2], done  # and r3 is running
        # Each finish admits the next run (a few writes each), not all 29 queued runs.
        assert kube.writes["pipelineruns.status"] - before < 30, kube.writes
        assert run_status(kube, "r29")["reason"] == "Queued"

    asyncio.run(main())
