"""tests/test_operator_chaos.py on the upstream control plane, smaller.

The operator is SIGKILLed at random moments while runs with a loop and parallel
branches call a local OpenAI-compatible endpoint. On the real apiserver the
idempotence rests on its answers: a pod created again after a crash is a real 409
AlreadyExists, and status patches race with real resourceVersions. Every run must
succeed and the endpoint must see exactly one successful call per step launch.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from tests.operatorkit import OperatorProcess, wait_for
from tests.realcluster.controlplane import ControlPlane, KubeletThread, RealKubectl
from tests.servers import OpenAIServer, RecordedRequest, Reply, completion
from tests.test_operator_chaos import manifests

RUNS = 4
KILLS = 8


@pytest.mark.timeout(360)
def test_runs_survive_random_operator_kills_without_double_calls(
    control_plane: ControlPlane,
    real_crds: RealKubectl,
    real_namespace: str,
    real_kubelet: KubeletThread,
    tmp_path: Path,
) -> None:
    rng = random.Random(20261203)
    kubectl = real_crds.bound(real_namespace)

    def answer(request: RecordedRequest) -> Reply:
        return completion("ok", delay=rng.uniform(0.0, 0.3))

    with OpenAIServer(responder=answer) as server:
        text = manifests(server.base_url)
        # tests/test_operator_chaos.py makes RUNS runs; keep the first of ours.
        docs = [d for d in text.split("---") if "name: chaos-" not in d or _index(d) < RUNS]
        kubectl.apply("---".join(docs))
        operator = OperatorProcess(
            control_plane.kubeconfig, tmp_path / "operator.log", FLUJO_NAMESPACES=real_namespace
        )
        operator.start(timeout=60)
        kills = 0

        def all_done() -> bool:
            items = kubectl.json("pipelineruns")["items"]
            phases = [(i.get("status") or {}).get("phase") for i in items]
            return len(items) == RUNS and all(p in ("Succeeded", "Failed") for p in phases)

        try:
            deadline = time.monotonic() + 200
            while time.monotonic() < deadline and (kills < KILLS or not all_done()):
                if kills < KILLS:
                    time.sleep(rng.uniform(0.5, 2.0))
                    operator.kill()
                    kills += 1
                    operator.start(timeout=60)
                else:
                    time.sleep(0.5)
            try:
                wait_for(all_done, 90, "every run to finish")
            except AssertionError as exc:
                runs = kubectl.json("pipelineruns")["items"]
                state = {r["metadata"]["name"]: r.get("status") for r in runs}
                pods = kubectl("get", "pods", "-o", "wide").stdout
                raise AssertionError(
                    f"{exc}\nruns: {state}\npods:\n{pods}\noperator:\n{operator.log()[-6000:]}"
                ) from None
        finally:
            operator.stop()

        runs = kubectl.json("pipelineruns")["items"]
        phases = {r["metadata"]["name"]: r["status"]["phase"] for r in runs}
        assert set(phases.values()) == {"Succeeded"}, (phases, operator.log()[-5000:])
        launches = sum(r["status"]["launches"] for r in runs)
        assert launches == RUNS * 5
        pods = kubectl.json("pods", "-l", "flujo.dev/run")["items"]
        assert len(pods) == launches
        assert server.wait_until(lambda: server.successful == launches)
        assert server.successful == launches, (server.successful, launches)
        assert kills >= KILLS and operator.starts == kills + 1


def _index(doc: str) -> int:
    for line in doc.splitlines():
        if "name: chaos-" in line:
            return int(line.split("chaos-")[1].split("}")[0])
    return -1
