"""Operator load on the API emulator: 200 PipelineRuns x 5 steps.

Measures what the operator costs the API server and how fast it reacts:

- for both executors, ``pod`` (a pod per step) and ``runner`` (one runner pod
  per run serving its steps), side by side:
- API writes per step, counted at the emulator (the kubelet's own writes and
  the benchmark's PipelineRun creations are excluded);
- run created → first step pod created latency, p50 and p99;
- total wall time until every run succeeded, and the operator's CPU seconds.

The operator under test is the real one (``python -m flujo_operator``, kopf,
the kubernetes client).  Only the kubelet is simplified: it computes each
step in-process with the step-runner code (and serves runner pods with an
in-process runner server) instead of forking a Python process per pod, which
would make 1,000 pods a CPU benchmark of Python start-up on 2 cores rather
than of the operator.

    .venv/bin/python -m benchmarks.operator_load [--runs 200] [--steps 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.k8s.emulator import Emulator, EmulatorServer  # noqa: E402
from tests.operatorkit import OperatorProcess  # noqa: E402

FIRST_POD: dict[str, float] = {}


class TimingEmulator(Emulator):
    """Timestamps step-pod creations as the API server receives them."""

    def _count_write(self, raw: Any, request: Any) -> None:
        if (
            raw.method == "POST"
            and request.resource is not None
            and (request.resource.plural == "pods")
        ):
            labels = ((request.data or {}).get("metadata") or {}).get("labels") or {}
            FIRST_POD.setdefault(labels.get("flujo.dev/run", ""), time.perf_counter())
        super()._count_write(raw, request)


def manifests(steps: int) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "flujo.dev/v1alpha1",
            "kind": "Agent",
            "metadata": {"name": "step"},
            "spec": {"type": "builtin", "builtin": "append", "config": {"suffix": "."}},
        },
        {
            "apiVersion": "flujo.dev/v1alpha1",
            "kind": "Pipeline",
            "metadata": {"name": "load"},
            "spec": {"steps": [{"name": f"s{i}", "agent": "step"} for i in range(steps)]},
        },
    ]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def connect_with_crds(url: str, folder: Path) -> tuple[Path, Any]:
    """A kubeconfig for the emulator at ``url`` (in ``folder``), the Flujo CRDs
    installed, and a ``CustomObjectsApi`` on it."""
    import yaml
    from kubernetes import client, config

    kubeconfig = folder / "kubeconfig"
    context = {"cluster": "e", "user": "u", "namespace": "default"}
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "e",
                "clusters": [{"name": "e", "cluster": {"server": url}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "e", "context": context}],
            }
        )
    )
    api = config.new_client_from_config(str(kubeconfig))
    ext = client.ApiextensionsV1Api(api)
    for path in sorted((ROOT / "crds").glob("*.yaml")):
        ext.create_custom_resource_definition(yaml.safe_load(path.read_text()))
    return kubeconfig, client.CustomObjectsApi(api)


def measure(args: argparse.Namespace, executor: str) -> dict[str, Any]:
    """One load run of the real operator with ``executor``; the figures as a dict."""
    from benchmarks.operator_latency import InProcessKubelet

    FIRST_POD.clear()
    with EmulatorServer(TimingEmulator()) as server, tempfile.TemporaryDirectory() as tmp:
        kubeconfig, custom = connect_with_crds(server.url, Path(tmp))
        for obj in manifests(args.steps):
            custom.create_namespaced_custom_object(
                "flujo.dev", "v1alpha1", "default", obj["kind"].lower() + "s", obj
            )

        kubelet = InProcessKubelet(server.url, log_sink=server.emulator.append_log, max_pods=256)
        server.run(kubelet.start())
        operator = OperatorProcess(
            kubeconfig,
            Path(tmp) / "operator.log",
            FLUJO_MAX_RUNNING_RUNS=str(args.runs),
            FLUJO_MAX_RUNNING_PODS="200",
            FLUJO_EXECUTOR=executor,
        )
        operator.start()
        assert operator.process is not None
        cpu_before = cpu_seconds(operator.process.pid)

        server.emulator.reset_writes()
        created: dict[str, float] = {}
        start = time.perf_counter()
        for i in range(args.runs):
            name = f"load-{i:04d}"
            created[name] = time.perf_counter()
            custom.create_namespaced_custom_object(
                "flujo.dev",
                "v1alpha1",
                "default",
                "pipelineruns",
                {
                    "apiVersion": "flujo.dev/v1alpha1",
                    "kind": "PipelineRun",
                    "metadata": {"name": name},
                    "spec": {"pipelineRef": {"name": "load"}, "input": "x"},
                },
            )
            if args.interval:
                time.sleep(args.interval)
        deadline = start + args.timeout
        done = 0
        while time.perf_counter() < deadline:
            items = custom.list_namespaced_custom_object(
                "flujo.dev", "v1alpha1", "default", "pipelineruns"
            )["items"]
            done = sum(1 for r in items if (r.get("status") or {}).get("phase") == "Succeeded")
            if done == args.runs:
                break
            time.sleep(0.2)
        total = time.perf_counter() - start
        cpu = cpu_seconds(operator.process.pid) - cpu_before
        time.sleep(0.5)  # the runners' exits
        writes = dict(server.emulator.writes)
        operator.stop()
        server.run(kubelet.stop())

    own = {k: v for k, v in writes.items() if k != ("pipelineruns", "create")}
    steps = args.runs * args.steps
    latencies = [(FIRST_POD[r] - created[r]) * 1000 for r in created if r in FIRST_POD]
    return {
        "executor": executor,
        "runs": args.runs,
        "steps_per_run": args.steps,
        "runs_succeeded": done,
        "total_seconds": round(total, 2),
        "runs_per_second": round(args.runs / total, 2),
        "operator_cpu_seconds": round(cpu, 2),
        "api_writes": {f"{r} {v}": n for (r, v), n in sorted(own.items())},
        "writes_per_step": round(sum(own.values()) / steps, 3),
        "first_pod_ms_p50": round(statistics.median(latencies), 1) if latencies else None,
        "first_pod_ms_p99": round(percentile(latencies, 0.99), 1) if latencies else None,
        "targets": {"writes_per_step": 2.5 if executor == "pod" else 1.2, "first_pod_ms_p50": 50},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument(
        "--interval",
        type=float,
        default=0.02,
        help="Seconds between run creations: 0.02 is 50 runs/s arriving; 0 is a burst.",
    )
    parser.add_argument("--executors", default="pod,runner", help="Comma-separated.")
    args = parser.parse_args()
    found = {executor: measure(args, executor) for executor in args.executors.split(",")}
    # the pod executor's figures stay at the top level (the summary table's first rows)
    result = {**found.get("pod", next(iter(found.values()))), "executors": found}
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "operator_load.json").write_text(json.dumps(result, indent=2))
    keys = (
        "runs_succeeded",
        "total_seconds",
        "runs_per_second",
        "operator_cpu_seconds",
        "writes_per_step",
        "first_pod_ms_p50",
        "first_pod_ms_p99",
    )
    print(f"{'metric':<28} " + " ".join(f"{e:>10}" for e in found))
    for key in keys:
        print(f"{key:<28} " + " ".join(f"{found[e][key]!s:>10}" for e in found))
    for executor, figures in found.items():
        print(f"writes by resource and verb ({executor}):")
        for key, count in figures["api_writes"].items():
            print(f"  {key:<30} {count}")
    print("targets: ≤ 2.5 writes per step (pod), ≤ 1.2 (runner); first pod ≤ 50 ms p50")


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    main()
