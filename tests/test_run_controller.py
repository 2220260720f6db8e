"""The run controller against an in-memory Kubernetes stand-in: fast checks of its
bookkeeping (journal, replay after a restart, idempotent pod creation, caps).

The real thing — kopf, the API emulator, kubectl — is exercised in
tests/test_operator.py; this file pins the controller's logic in isolation.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import pytest
from flujo.runtime.envelope import encode_result
from flujo.runtime.step_runner import LaunchDocument, execute

from flujo_operator.builders import decode_journal
from flujo_operator.config import Config
from flujo_operator.runs import RunController


class FakeKube:
    """Just enough API: objects in dicts, pods completed on demand by running the step."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.pods: dict[str, dict[str, Any]] = {}
        self.logs: dict[str, str] = {}
        self.writes: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()

    async def create_pod(self, body: dict[str, Any]) -> bool:
        self.writes["pod.create"] += 1
        name = body["metadata"]["name"]
        if name in self.pods:
            return False
        self.pods[name] = json.loads(json.dumps(body))
        return True

    async def create_config_map(self, body: dict[str, Any]) -> None:
        self.writes["configmap.create"] += 1

    async def delete_pod(self, namespace: str, name: str) -> None:
        self.writes["pod.delete"] += 1
        self.pods.pop(name, None)

    async def delete_pods(self, namespace: str, selector: str) -> None:
        self.writes["pod.deletecollection"] += 1

    async def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.pods.get(name)

    async def pod_log(self, namespace: str, name: str) -> str:
        return self.logs[name]

    async def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((plural, name))

    async def list(self, plural: str, namespace: str) -> list[dict[str, Any]]:
        return [o for (p, _), o in self.objects.items() if p == plural]

    async def patch_status(
        self, plural: str, namespace: str, name: str, status: dict[str, Any]
    ) -> None:
        self.writes[f"{plural}.status"] += 1
        obj = self.objects[(plural, name)]
        obj["status"] = {**(obj.get("status") or {}), **status}

    async def finish_pod(self, name: str) -> dict[str, Any]:
        """Run the step as the pod would, and record the kubelet's view of it."""
        pod = self.pods[name]
        document = LaunchDocument.model_validate_json(
            pod["metadata"]["annotations"]["flujo.dev/launch"]
        )
        self.calls[document.launch.path] += 1
        message, log = encode_result(await execute(document))
        self.logs[name] = log
        pod["status"] = {
            "phase": "Succeeded",
            "containerStatuses": [{"state": {"terminated": {"exitCode": 0, "message": message}}}],
        }
        return pod


def add(kube: FakeKube, kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    plural = {"Agent": "agents", "Pipeline": "pipelines", "PipelineRun": "pipelineruns"}[kind]
    obj = {
        "apiVersion": "flujo.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}", "generation": 1},
        "spec": spec,
    }
    kube.objects[(plural, name)] = obj
    return obj


SCRIPTED = {
    "type": "scripted",
    "responses": [
        {"output": "one", "usage": {"costUsd": 0.1}},
        {"output": "two", "usage": {"costUsd": 0.1}},
    ],
}
PIPELINE = {
    "steps": [
        {"name": "first", "agent": "bot"},
        {
            "name": "fan",
            "parallel": {
                "merge": "list",
                "branches": [
                    {"name": "a", "steps": [{"name": "left", "agent": "builtin.upper"}]},
                    {"name": "b", "steps": [{"name": "right", "agent": "bot"}]},
                ],
            },
        },
    ]
}


async def drive(kube: FakeKube, controller: RunController, limit: int = 50) -> None:
    """Complete pods one at a time, in name order, until none is left running."""
    for _ in range(limit):
        pending = sorted(n for n, p in kube.pods.items() if "status" not in p)
        if not pending:
            return
        pod = await kube.finish_pod(pending[0])
        await controller.on_pod("MODIFIED", pod)


def run_status(kube: FakeKube, name: str = "r1") -> dict[str, Any]:
    return kube.objects[("pipelineruns", name)]["status"]


def test_a_run_goes_to_succeeded_with_one_pod_per_step() -> None:
    async def main() -> None:
        kube = FakeKube()
        add(kube, "Agent", "bot", SCRIPTED)
        add(kube, "Pipeline", "p", PIPELINE)
        run = add(kube, "PipelineRun", "r1", {"pipelineRef": {"name": "p"}, "input": "hi"})
        controller = RunController(kube, Config(executor="pod"))  # type: ignore[arg-type]
        await controller.on_run("ADDED", run)
        await drive(kube, controller)
        status = run_status(kube)
        assert status["phase"] == "Succeeded", status
        assert status["output"] == {"value": ["ONE", "two"]}
        assert status["progress"] == "3/3" and status["usage"]["cost"] == "$0.20"
        assert len(kube.pods) == 3 and set(kube.calls.values()) == {1}
        assert kube.writes["pod.create"] == 3
        assert [e["t"] for e in decode_journal(status["journal"])] == ["start", "pod", "pod", "pod"]

    asyncio.run(main())


def test_a_restarted_controller_replays_and_never_relaunches_a_finished_step() -> None:
    async def main() -> None:
        kube = FakeKube()
        add(kube, "Agent", "bot", SCRIPTED)
        add(kube, "Pipeline", "p", PIPELINE)
        run = add(kube, "PipelineRun", "r1", {"pipelineRef": {"name": "p"}, "input": "hi"})
        first = RunController(kube, Config(executor="pod"))  # type: ignore[arg-type]
        await first.on_run("ADDED", run)
        pod = await kube.finish_pod(sorted(kube.pods)[0])
        await first.on_pod("MODIFIED", pod)
        assert len(kube.pods) == 3
        # crash: a new controller knows nothing but what the API holds
        second = RunController(kube, Config(executor="pod"))  # type: ignore[arg-type]
        await second.on_run("MODIFIED", kube.objects[("pipelineruns", "r1")])
        assert len(kube.pods) == 3  # re-created pods were idempotent 409s
        await second.on_pod("MODIFIED", pod)  # a duplicate event of the finished pod
        await drive(kube, second)
        assert run_status(kube)["phase"] == "Succeeded"
        assert set(kube.calls.values()) == {1}, kube.calls

    asyncio.run(main())


def test_missing_agents_keep_the_run_pending_until_they_appear() -> None:
    async def main() -> None:
        kube = FakeKube()
        add(kube, "Pipeline", "p", PIPELINE)
        run = add(kube, "PipelineRun", "r1", {"pipelineRef": {"name": "p"}})
        controller = RunController(kube, Config(executor="pod"))  # type: ignore[arg-type]
        await controller.on_run("ADDED", run)
        status = run_status(kube)
        assert (status["phase"], status["reason"]) == ("Pending", "AgentsMissing")
        assert "unknown agent 'bot'" in status["message"] and not kube.pods
        add(kube, "Agent", "bot", SCRIPTED)
        await controller.retry_pending("ns")
        assert run_status(kube)["phase"] == "Running" and len(kube.pods) == 1

    asyncio.run(main())


def test_a_cost_breach_in_a_branch_deletes_the_sibling_pods() -> None:
    async def main() -> None:
        kube = FakeKube()
        add(
            kube,
            "Agent",
            "pricey",
            {"type": "scripted", "responses": [{"output": "x", "usage": {"costUsd": 0.6}}]},
        )
        add(kube, "Agent", "slow", {"type": "scripted", "responses": [{"output": "y"}]})
        run = add(
            kube,
            "PipelineRun",
            "r1",
            {
                "usageLimits": {"maxCostUsd": 0.5},
                "pipeline": {
                    "steps": [
                        {
                            "name": "fan",
                            "parallel": {
                                "branches": [
                                    {"name": "a", "steps": [{"name": "spend", "agent": "pricey"}]},
                                    {"name": "b", "steps": [{"name": "wait", "agent": "slow"}]},
                                ]
                            },
                        }
                    ]
                },
            },
        )
        controller = RunController(kube, Config(executor="pod"))  # type: ignore[arg-type]
        await controller.on_run("ADDED", run)
        spend = next(
            n
            for n, p in kube.pods.items()
            if p["metadata"]["annotations"]["flujo.dev/step-path"] == "fan/a/spend"
        )
        await controller.on_pod("MODIFIED", await kube.finish_pod(spend))
        status = run_status(kube)
        assert (status["phase"], status["reason"]) == ("Failed", "UsageLimitExceeded")
        assert status["failedPath"] == "fan/a/spend" and status["breach"]["limit"] == "cost"
        assert list(kube.pods) == [spend] and kube.writes["pod.delete"] == 1

    asyncio.run(main())


@pytest.mark.parametrize("cap", [1, 2])
def test_pod_cap_queues_launches(cap: int) -> None:
    async def main() -> None:
        kube = FakeKube()
        add(kube, "Agent", "bot", SCRIPTED)
        run = add(
            kube,
            "PipelineRun",
            "r1",
            {
                "input": ["a", "b", "c"],
                "pipeline": {
                    "steps": [
                        {
                            "name": "each",
                            "map": {"items": "input", "steps": [{"name": "do", "agent": "bot"}]},
                        }
                    ]
                },
            },
        )
        controller = RunController(kube, Config(executor="pod", max_running_pods=cap))  # type: ignore[arg-type]
        await controller.on_run("ADDED", run)
        assert len(kube.pods) == cap
        assert run_status(kube).get("waitingPods") == 3 - cap
        await drive(kube, controller)
        assert run_status(kube)["phase"] == "Succeeded" and len(kube.pods) == 3

    asyncio.run(main())


def test_runs_over_the_namespace_cap_wait_as_pending_then_start() -> None:
    async def main() -> None:
        kube = FakeKube()
        add(kube, "Agent", "bot", SCRIPTED)
        add(kube, "Pipeline", "p", {"steps": [{"name": "only", "agent": "bot"}]})
        runs = [add(kube, "PipelineRun", f"r{i}", {"pipelineRef": {"name": "p"}}) for i in range(3)]
        controller = RunController(kube, Config(executor="pod", max_running_runs=2))  # type: ignore[arg-type]
        for run in runs:
            await controller.on_run("ADDED", run)
        queued = run_status(kube, "r2")
        assert (queued["phase"], queued["reason"]) == ("Pending", "Queued")
        assert "maxRunningRuns=2" in queued["message"]
        await drive(kube, controller)
        await asyncio.sleep(0)  # let the retry of pending runs scheduled at finish run
        await asyncio.gather(*[t for t in asyncio.all_tasks() if t is not asyncio.current_task()])
        await drive(kube, controller)
        assert [run_status(kube, f"r{i}")["phase"] for i in range(3)] == ["Succeeded"] * 3

    asyncio.run(main())
