"""One shared operator, many tenants: namespace B's run latency, quiet and under attack.

The real operator (``python -m flujo_operator``) on the API emulator watches
namespaces ``a`` and ``b``.  B submits ``--b-runs`` one-step runs, once with A
quiet and once while A attacks with

- a template bomb: a Pipeline whose step input is 20,000 ``{{ input }}``
  outputs (in-process it compiles for tens of seconds) and a run of it, and
- a flood: ``--flood`` PipelineRuns at once, behind an Agent with
  ``rateLimit.maxConcurrent: 1``.

Measured: B's latency from creating a run to seeing it ``Succeeded`` (p50,
p99), the operator's peak RSS (``VmHWM``) and the peak RSS of its validation
workers, the slowest ``/healthz`` answer, and what the bomb's Pipeline says.
Steps complete in the benchmark's process (the in-process kubelet of
``operator_load``): the figure is the operator's, not Python's start-up.

    .venv/bin/python -m benchmarks.operator_isolation [--b-runs 20] [--flood 1000]

Targets (issue 19): operator peak RSS at most 300 MB; B's p99 under attack at
most twice the quiet p99.  Writes ``benchmarks/results/operator_isolation.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.operator_latency import InProcessKubelet  # noqa: E402
from benchmarks.operator_load import connect_with_crds, percentile  # noqa: E402
from tests.k8s.emulator import EmulatorServer  # noqa: E402
from tests.operatorkit import OperatorProcess  # noqa: E402

BOMB_INPUT = "{{ input }}" * 20_000


def doc(kind: str, name: str, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "flujo.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


def children(pid: int) -> list[int]:
    try:
        found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    return [int(c) for c in found]


class Sampler:
    """Samples the workers' RSS and the liveness endpoint's latency from a thread."""

    def __init__(self, pid: int, port: int) -> None:
        self.pid = pid
        self.url = f"http://127.0.0.1:{port}/healthz"
        self.worker_peak_kib = 0
        self.liveness: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for child in children(self.pid):
                self.worker_peak_kib = max(self.worker_peak_kib, kib(child, "VmHWM"))
            started = time.monotonic()
            try:
                with urllib.request.urlopen(self.url, timeout=60) as answer:
                    answer.read()
            except OSError:
                pass
            self.liveness.append(time.monotonic() - started)
            self._stop.wait(0.2)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(60)


def b_latencies(custom: Any, prefix: str, runs: int, timeout: float) -> list[float]:
    """Create B's runs and return each one's seconds from creation to Succeeded."""
    created: dict[str, float] = {}
    for i in range(runs):
        name = f"{prefix}-{i}"
        created[name] = time.perf_counter()
        spec = {"pipelineRef": {"name": "plain"}, "input": name}
        custom.create_namespaced_custom_object(
            "flujo.dev", "v1alpha1", "b", "pipelineruns", doc("PipelineRun", name, "b", spec)
        )
    done: dict[str, float] = {}
    deadline = time.perf_counter() + timeout
    while len(done) < runs and time.perf_counter() < deadline:
        items = custom.list_namespaced_custom_object("flujo.dev", "v1alpha1", "b", "pipelineruns")
        now = time.perf_counter()
        for item in items["items"]:
            name = item["metadata"]["name"]
            phase = (item.get("status") or {}).get("phase")
            if name in created and name not in done and phase == "Succeeded":
                done[name] = now - created[name]
        time.sleep(0.05)
    if len(done) < runs:
        raise SystemExit(f"only {len(done)} of B's {runs} runs succeeded in {timeout} s")
    return sorted(done.values())


def attack(custom: Any, flood: int) -> None:
    create = custom.create_namespaced_custom_object
    bomb = [{"name": "boom", "agent": "builtin.echo", "input": BOMB_INPUT}]
    create("flujo.dev", "v1alpha1", "a", "pipelines", doc("Pipeline", "bomb", "a", {"steps": bomb}))
    spec = {"pipelineRef": {"name": "bomb"}, "input": "x"}
    create("flujo.dev", "v1alpha1", "a", "pipelineruns", doc("PipelineRun", "bomb-1", "a", spec))
    for i in range(flood):
        spec = {"pipelineRef": {"name": "queued"}, "input": f"a-{i}"}
        body = doc("PipelineRun", f"a-{i}", "a", spec)
        create("flujo.dev", "v1alpha1", "a", "pipelineruns", body)


def figures(latencies: list[float]) -> dict[str, float]:
    return {
        "p50_s": round(statistics.median(latencies), 3),
        "p99_s": round(percentile(latencies, 0.99), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--b-runs", type=int, default=20)
    parser.add_argument("--flood", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()

    with EmulatorServer() as server, tempfile.TemporaryDirectory() as tmp:
        kubeconfig, custom = connect_with_crds(server.url, Path(tmp))
        from kubernetes import client

        core = client.CoreV1Api(custom.api_client)
        for ns in ("a", "b"):
            core.create_namespace({"metadata": {"name": ns}})
        create = custom.create_namespaced_custom_object
        narrow = {
            "type": "builtin",
            "builtin": "append",
            "config": {"suffix": "."},
            "rateLimit": {"maxConcurrent": 1},
        }
        create("flujo.dev", "v1alpha1", "a", "agents", doc("Agent", "narrow", "a", narrow))
        queued = {"steps": [{"name": "call", "agent": "narrow"}]}
        create("flujo.dev", "v1alpha1", "a", "pipelines", doc("Pipeline", "queued", "a", queued))
        plain = {"steps": [{"name": "echo", "agent": "builtin.echo", "input": "{{ input }}"}]}
        create("flujo.dev", "v1alpha1", "b", "pipelines", doc("Pipeline", "plain", "b", plain))

        kubelet = InProcessKubelet(server.url, log_sink=server.emulator.append_log, max_pods=64)
        server.run(kubelet.start())
        operator = OperatorProcess(
            kubeconfig,
            Path(tmp) / "operator.log",
            FLUJO_NAMESPACES="a,b",
            FLUJO_AUDIT_LOG="off",
        )
        operator.start()
        assert operator.process is not None
        pid = operator.process.pid
        try:
            with Sampler(pid, operator.port) as quiet_sampler:
                quiet = b_latencies(custom, "quiet", args.b_runs, args.timeout)
            quiet_rss_kib = kib(pid, "VmHWM")
            with Sampler(pid, operator.port) as sampler:
                attack(custom, args.flood)
                attacked = b_latencies(custom, "attacked", args.b_runs, args.timeout)
            rss_kib = kib(pid, "VmHWM")
            bomb = custom.get_namespaced_custom_object(
                "flujo.dev", "v1alpha1", "a", "pipelines", "bomb"
            )
            conditions = (bomb.get("status") or {}).get("conditions") or []
            valid = [c for c in conditions if c["type"] == "Valid"]
            a_runs = custom.list_namespaced_custom_object(
                "flujo.dev", "v1alpha1", "a", "pipelineruns"
            )["items"]
            a_done = sum(1 for r in a_runs if (r.get("status") or {}).get("phase") == "Succeeded")
            alive = operator.process.poll() is None
        finally:
            operator.stop()
            server.run(kubelet.stop())

    quiet_figures, attacked_figures = figures(quiet), figures(attacked)
    result = {
        "b_runs": args.b_runs,
        "flood": args.flood,
        "quiet": quiet_figures,
        "attacked": attacked_figures,
        "p99_ratio": round(attacked_figures["p99_s"] / max(quiet_figures["p99_s"], 1e-9), 2),
        "operator_peak_rss_mb_quiet": round(quiet_rss_kib / 1024, 1),
        "operator_peak_rss_mb": round(rss_kib / 1024, 1),
        "validation_worker_peak_rss_mb": round(
            max(sampler.worker_peak_kib, quiet_sampler.worker_peak_kib) / 1024, 1
        ),
        "liveness_slowest_s_quiet": round(max(quiet_sampler.liveness or [0.0]), 3),
        "liveness_slowest_s": round(max(sampler.liveness or [0.0]), 3),
        "liveness_polls": len(sampler.liveness),
        "bomb_valid": valid[0] if valid else None,
        "a_runs_succeeded_meanwhile": a_done,
        "operator_alive": alive,
        "targets": {"operator_peak_rss_mb": 300, "p99_ratio": 2.0},
    }
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "operator_isolation.json").write_text(json.dumps(result, indent=2))
    print(f"{'metric':<34} value")
    for key in (
        "quiet",
        "attacked",
        "p99_ratio",
        "operator_peak_rss_mb_quiet",
        "operator_peak_rss_mb",
        "validation_worker_peak_rss_mb",
        "liveness_slowest_s_quiet",
        "liveness_slowest_s",
        "a_runs_succeeded_meanwhile",
        "operator_alive",
    ):
        print(f"{key:<34} {result[key]}")
    print(f"bomb Valid: {result['bomb_valid']}")
    print("targets: operator peak RSS ≤ 300 MB, B's p99 under attack at most twice quiet")


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    main()
