"""Benchmark: the usage governor under parallel load — overspend and cancel latency.

One ``MapStep`` fans a list of ``N`` items out to ``N`` concurrent calls of one agent
(no ``maxConcurrency``: every call is in flight at once unless budget reservation
defers it).  Each call sleeps a jittered latency (uniform 25-75 ms) and reports a
jittered cost (uniform 0.5-1.5 x ``c``, ``c`` = $0.001, the *mean call cost*)
through ``AgentOutput(usage=Usage(...))``.  The run's ``maxCostUsd`` is half the
expected total (``N x c / 2``), so the limit is crossed mid-run, with many calls
still in flight.  Latencies and costs are drawn from a seeded RNG, one seed per
repeat, identical for both policies.

Two policies (see ``docs/governor.md``):

- ``default``: no reservation; calls are paid when they finish;
- ``reserve``: the agent declares a per-call cap (``pricing.maxCostPerCall``) of
  1.5 x ``c`` — an honest upper bound of its cost — so each launch reserves it and
  launches that do not fit wait.

Measured per run (timestamps are ``time.perf_counter``):

- **ledger overspend** = ``RunResult.usage`` - limit, in $ and in units of ``c``;
  **billed overspend** = the cost of every call that delivered its answer (the agent
  returned; with ``--http``, the server answered) - limit, what a provider would
  charge; **uncounted** = such answers missing from the ledger (e.g. results still
  queued when the breach stopped the run);
- the **theoretical bound** from ``docs/governor.md``: ``default`` — the breaching
  call's cost plus the cost of every call in flight at the breach (all of them billed
  in the worst case); ``reserve`` — one call's cap;
- **cancel latency**: from the moment the breach is recorded (an observer sees the
  event that set ``state.breach``; the executor cancels right after the observers
  return) to the ``CancelledError`` handler of each in-flight call; per run the
  *max* over calls (every other in-flight call cancelled), and per call; plus
  breaching result returned by its agent → breach recorded, and breach → ``run()``
  returned (every task finished);
- **calls started after the breach**: agent bodies that began after the breach
  (must be 0), and ``LaunchStep`` commands issued after it (must be 0).

``--http`` also runs the same scenario through the real ``openai`` agent against the
local OpenAI-compatible test server (``tests/servers``): the server delays each answer
and reports prompt tokens; the agent's manifest prices them so that costs match the
in-process runs, and declares ``pricing.maxCostPerCall`` for the ``reserve`` policy.
There, what the server answered after the client gave up is counted as billed.

``--operator`` runs it through the real operator (``python -m flujo_operator``) on the
API emulator, reusing ``benchmarks/operator_load.py``'s emulator and in-process kubelet,
with a ``scripted`` agent of the same costs whose pods run 0.5-1.5 s: cancel latency is
then from the emulator receiving the breaching pod's ``Succeeded`` status to it
receiving the operator's DELETE of each sibling pod still running.

Run from the repository root::

    .venv/bin/python -m benchmarks.governor [--quick] [--sizes 50,200] [--repeats 30] \
        [--http] [--operator]

It prints a table and writes ``benchmarks/results/governor.json``.  Nothing here
asserts on timings; the script exits 1 only if a call started after a breach.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import json
import math
import os
import platform
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flujo import (
    AgentContext,
    AgentManifest,
    AgentOutput,
    AgentRegistry,
    Flujo,
    MapStep,
    Pipeline,
    Step,
    Usage,
)
from flujo.engine import CancelStep, Command, Event, LaunchStep, RunState

RESULTS = Path(__file__).resolve().parent / "results" / "governor.json"

MEAN_COST = 0.001
"""``c``: the mean cost of one call, in US dollars."""
COST_SPREAD = (0.5, 1.5)
"""A call costs uniform(0.5, 1.5) x ``c``."""
CAP = COST_SPREAD[1] * MEAN_COST
"""The declared per-call cap under reservation: the largest possible cost."""
LATENCY_S = (0.025, 0.075)
"""A call takes uniform(25, 75) ms."""
LIMIT_FRACTION = 0.5
"""``maxCostUsd`` = this fraction of the expected total ``N x c``."""
PRICE_PER_1K = 0.01
"""HTTP variant: USD per 1k prompt tokens, so 100 tokens cost ``c``."""
POLICIES = ("default", "reserve")


@dataclass(frozen=True)
class Workload:
    """One repeat's draw: every call's latency and cost, and the limit."""

    latency: list[float]
    cost: list[float]
    tokens: list[int]
    limit: float

    @classmethod
    def draw(cls, n: int, seed: int) -> Workload:
        rng = random.Random(seed)
        latency = [rng.uniform(*LATENCY_S) for _ in range(n)]
        # Costs are whole token counts priced per 1k, so the HTTP variant reports the
        # same costs as the in-process one.
        lo, hi = (round(f * MEAN_COST / PRICE_PER_1K * 1000) for f in COST_SPREAD)
        tokens = [rng.randint(lo, hi) for _ in range(n)]
        cost = [t * PRICE_PER_1K / 1000 for t in tokens]
        return cls(latency, cost, tokens, limit=LIMIT_FRACTION * n * MEAN_COST)


@dataclass
class Probe:
    """Timestamps of one run, written by the agent and by the observer."""

    started: dict[int, float] = field(default_factory=dict)
    returned: dict[int, float] = field(default_factory=dict)
    cancelled: dict[int, float] = field(default_factory=dict)
    breach_at: float | None = None
    breach_at_monotonic: float | None = None
    breach_path: str | None = None
    breach_value: float | None = None
    cancelled_paths: list[str] = field(default_factory=list)
    deferred_at_breach: int = 0
    launches_after_breach: int = 0
    launches: int = 0

    def observe(self, event: Event, state: RunState, commands: Sequence[Command]) -> None:
        launches = sum(isinstance(c, LaunchStep) for c in commands)
        self.launches += launches
        if self.breach_at is not None:
            self.launches_after_breach += launches
            return
        if state.breach is None:
            return
        self.breach_at = time.perf_counter()
        self.breach_at_monotonic = time.monotonic()
        self.breach_path = state.breach.path
        self.breach_value = state.breach.value
        self.cancelled_paths = [c.path for c in commands if isinstance(c, CancelStep)]
        self.launches_after_breach += launches


def item_of(path: str) -> int:
    """``fan/item-17/call`` → 17."""
    return int(path.split("/")[1].removeprefix("item-"))


def pipeline(agent: Any) -> Pipeline:
    return Pipeline([MapStep("fan", "input", Step("call", agent), max_items=10_000)])


class CappedFlujo(Flujo):
    """``Flujo`` with a per-call cap declared for the in-process agent.

    A Python callable registered with ``AgentRegistry.register`` has no manifest,
    hence no ``pricing.maxCostPerCall``; the caps the runner hands to the state
    machine are overridden here instead (the HTTP variant declares the cap in its
    ``AgentManifest``, the public way).
    """

    def __init__(self, *args: Any, caps: dict[str, float], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._caps = caps

    def _agent_caps(self) -> dict[str, float]:
        return dict(self._caps)


def make_agent(work: Workload, probe: Probe) -> Any:
    async def llm(item: int, context: AgentContext) -> AgentOutput:
        probe.started[item] = time.perf_counter()
        try:
            await asyncio.sleep(work.latency[item])
        except asyncio.CancelledError:
            probe.cancelled[item] = time.perf_counter()
            raise
        probe.returned[item] = time.perf_counter()
        return AgentOutput(item, Usage(input_tokens=work.tokens[item], cost_usd=work.cost[item]))

    return llm


# ---------------------------------------------------------------------------
# One run
# ---------------------------------------------------------------------------


def summarize_run(
    work: Workload, probe: Probe, result: Any, finished_at: float, policy: str
) -> dict[str, Any]:
    """Figures of one run (the in-process agent's timestamps where available)."""
    spent = float(result.usage.cost_usd)
    overspend = spent - work.limit
    record: dict[str, Any] = {
        "reason": result.outcome.reason,
        "limit_usd": work.limit,
        "spent_usd": spent,
        "overspend_usd": overspend,
        "overspend_calls": overspend / MEAN_COST,
        "launches": result.state.launches,
        "launch_commands_after_breach": probe.launches_after_breach,
    }
    if probe.breach_at is None or probe.breach_path is None or probe.breach_value is None:
        record["breached"] = False
        return record
    breach_item = item_of(probe.breach_path)
    in_flight = [item_of(p) for p in probe.cancelled_paths]
    breach_cost = work.cost[breach_item]
    bound = breach_cost + sum(work.cost[i] for i in in_flight) if policy == "default" else CAP
    record.update(
        breached=True,
        breach_path=probe.breach_path,
        overshoot_at_breach_usd=probe.breach_value - work.limit,
        late_results_usd=spent - probe.breach_value,
        late_results_calls=(spent - probe.breach_value) / MEAN_COST,
        in_flight_at_breach=len(in_flight),
        bound_usd=bound,
        bound_calls=bound / MEAN_COST,
        within_bound=overspend <= bound + 1e-9,
        breach_to_run_returned_ms=(finished_at - probe.breach_at) * 1e3,
        started_after_breach=sum(t > probe.breach_at for t in probe.started.values()),
    )
    if probe.returned.get(breach_item) is not None:
        record["result_to_breach_ms"] = (probe.breach_at - probe.returned[breach_item]) * 1e3
    if probe.started or probe.cancelled:  # the in-process agent: per-call timestamps
        cancel_ms = [(probe.cancelled[i] - probe.breach_at) * 1e3 for i in probe.cancelled]
        queued = [i for i in in_flight if i in probe.returned]
        record.update(
            cancelled_calls=len(cancel_ms),
            queued_at_breach=len(queued),
            unaccounted=len([i for i in in_flight if i not in probe.cancelled and i not in queued]),
            cancel_latency_max_ms=max(cancel_ms) if cancel_ms else None,
            cancel_latency_calls_ms=cancel_ms,
        )
    return record


def add_billing(record: dict[str, Any], work: Workload, result: Any, billed: list[int]) -> None:
    """What was really consumed: every call that delivered its answer (``billed``), whether
    or not the run's ledger (``RunResult.usage``) counted it."""
    # Counted = the ledger has its usage: succeeded steps, and results that arrived
    # while the run stopped (their step stays cancelled, their usage is added).
    counted = sum(1 for s in result.steps.values() if s.kind == "agent" and s.usage.cost_usd > 0)
    overspend = sum(work.cost[i] for i in billed) - work.limit
    record.update(
        billed_calls=len(billed),
        uncounted_results=len(billed) - counted,
        billed_overspend_usd=overspend,
        billed_overspend_calls=overspend / MEAN_COST,
    )


async def run_inprocess(n: int, policy: str, seed: int) -> dict[str, Any]:
    work = Workload.draw(n, seed)
    probe = Probe()
    kwargs: dict[str, Any] = {
        "usage_limits": {"max_cost_usd": work.limit},
        "observers": [probe],
    }
    p = pipeline(make_agent(work, probe))
    runner = (
        CappedFlujo(p, caps={"llm": CAP}, **kwargs) if policy == "reserve" else Flujo(p, **kwargs)
    )
    gc.collect()
    t0 = time.perf_counter()
    result = await runner.run_async(list(range(n)))
    finished_at = time.perf_counter()
    record = summarize_run(work, probe, result, finished_at, policy)
    record["run_ms"] = (finished_at - t0) * 1e3
    add_billing(record, work, result, list(probe.returned))
    return record


# ---------------------------------------------------------------------------
# The HTTP variant
# ---------------------------------------------------------------------------


def _http_registry(base_url: str, policy: str) -> AgentRegistry:
    pricing: dict[str, Any] = {"inputPer1k": PRICE_PER_1K, "outputPer1k": 0.0}
    if policy == "reserve":
        pricing["maxCostPerCall"] = CAP
    registry = AgentRegistry()
    registry.register_manifest(
        AgentManifest.model_validate(
            {
                "apiVersion": "flujo.dev/v1alpha1",
                "kind": "Agent",
                "metadata": {"name": "llm"},
                "spec": {
                    "type": "openai",
                    "model": "bench",
                    "endpoint": base_url,
                    "pricing": pricing,
                    "timeoutSeconds": 30,
                },
            }
        )
    )
    return registry


def run_http(server: Any, n: int, policy: str, seed: int) -> dict[str, Any]:
    from tests.servers import completion

    work = Workload.draw(n, seed)

    def responder(record: Any) -> Any:
        item = int(record.body["messages"][-1]["content"])
        return completion(
            str(item),
            prompt_tokens=work.tokens[item],
            completion_tokens=0,
            delay=work.latency[item],
        )

    server.reset()
    server.responder = responder
    probe = Probe()
    runner = Flujo(
        pipeline("llm"),
        agent_registry=_http_registry(server.base_url, policy),
        usage_limits={"max_cost_usd": work.limit},
        observers=[probe],
    )
    gc.collect()
    t0 = time.perf_counter()
    result = runner.run(list(range(n)))
    finished_at = time.perf_counter()
    record = summarize_run(work, probe, result, finished_at, policy)
    record["run_ms"] = (finished_at - t0) * 1e3
    if probe.breach_at_monotonic is not None:
        # The server handles each request in its own thread and loop: wait for it to
        # notice every abandoned request before counting.
        in_flight = record.get("in_flight_at_breach", 0)
        server.wait_until(lambda: server.cancelled + server.successful >= server.calls, 5.0)
        answered = [
            int(r.body["messages"][-1]["content"])
            for r in server.requests
            if r.outcome == "answered"
        ]
        add_billing(record, work, result, answered)
        record.update(
            server_requests=server.calls,
            server_answered=len(answered),
            server_abandoned=server.cancelled,
            requests_after_breach=sum(t > probe.breach_at_monotonic for t in server.arrivals()),
            in_flight_at_breach=in_flight,
        )
    return record


# ---------------------------------------------------------------------------
# The operator variant
# ---------------------------------------------------------------------------

OPERATOR_LATENCY_S = (0.5, 1.5)
"""Operator variant: a step pod runs uniform(0.5, 1.5) s, so that every pod of the map
is created (one API call each) before the first one finishes."""


@dataclass
class ApiLog:
    """Pod writes seen by the API emulator: (perf_counter, pod name)."""

    created: dict[str, float] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)
    terminated: dict[str, float] = field(default_factory=dict)
    deleted: dict[str, float] = field(default_factory=dict)

    def reset(self) -> None:
        for d in (self.created, self.paths, self.terminated, self.deleted):
            d.clear()


def operator_run(custom: Any, log: ApiLog, name: str, n: int, seed: int) -> dict[str, Any] | None:
    """One PipelineRun through the operator; figures from the emulator's timestamps."""
    work = Workload.draw(n, seed)
    rng = random.Random(seed)
    latency = [rng.uniform(*OPERATOR_LATENCY_S) for _ in range(n)]
    agent = {
        "apiVersion": "flujo.dev/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": f"llm-{name}"},
        "spec": {
            "type": "scripted",
            # call_index order = launch order = item order (the map launches in order)
            "responses": [
                {"output": i, "usage": {"costUsd": work.cost[i]}, "delaySeconds": latency[i]}
                for i in range(n)
            ],
        },
    }
    spec = {
        "steps": [
            {
                "name": "fan",
                "map": {
                    "items": "input",
                    "maxItems": 1000,
                    "steps": [{"name": "call", "agent": f"llm-{name}"}],
                },
            }
        ]
    }
    group = ("flujo.dev", "v1alpha1", "default")
    custom.create_namespaced_custom_object(*group, "agents", agent)
    custom.create_namespaced_custom_object(
        *group,
        "pipelines",
        {
            "apiVersion": "flujo.dev/v1alpha1",
            "kind": "Pipeline",
            "metadata": {"name": name},
            "spec": spec,
        },
    )
    log.reset()
    custom.create_namespaced_custom_object(
        *group,
        "pipelineruns",
        {
            "apiVersion": "flujo.dev/v1alpha1",
            "kind": "PipelineRun",
            "metadata": {"name": name},
            "spec": {
                "pipelineRef": {"name": name},
                "input": list(range(n)),
                "usageLimits": {"maxCostUsd": work.limit},
            },
        },
    )
    deadline = time.monotonic() + 60
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = (
            custom.get_namespaced_custom_object(*group, "pipelineruns", name).get("status") or {}
        )
        if status.get("phase") in ("Failed", "Succeeded"):
            break
        time.sleep(0.05)
    breach = status.get("breach") or {}
    pods_by_path = {path: pod for pod, path in log.paths.items()}
    breach_pod = pods_by_path.get(str(breach.get("path")))
    if breach_pod is None or breach_pod not in log.terminated:
        return {"breached": False, "phase": status.get("phase"), "reason": status.get("reason")}
    # Let the operator finish deleting before reading the log.
    time.sleep(0.5)
    t_breach = log.terminated[breach_pod]
    running = [
        pod
        for pod in log.created
        if pod != breach_pod and log.terminated.get(pod, math.inf) > t_breach
    ]
    deletes = [(log.deleted[p] - t_breach) * 1e3 for p in running if p in log.deleted]
    spent = float((status.get("usage") or {}).get("costUsd", 0.0))
    items = [item_of(log.paths[p]) for p in running if p in log.paths]
    bound = work.cost[item_of(log.paths[breach_pod])] + sum(work.cost[i] for i in items)
    return {
        "breached": True,
        "reason": status.get("reason"),
        "limit_usd": work.limit,
        "spent_usd": spent,
        "overspend_usd": spent - work.limit,
        "overspend_calls": (spent - work.limit) / MEAN_COST,
        "pods_created": len(log.created),
        "in_flight_at_breach": len(running),
        "pods_deleted": len(deletes),
        "not_deleted": len(running) - len(deletes),
        "bound_usd": bound,
        "bound_calls": bound / MEAN_COST,
        "within_bound": spent - work.limit <= bound + 1e-9,
        "cancel_latency_max_ms": max(deletes) if deletes else None,
        "cancel_latency_calls_ms": deletes,
        "pods_created_after_breach": sum(t > t_breach for t in log.created.values()),
        "launch_commands_after_breach": 0,
    }


def run_operator(sizes: list[int], repeats: int) -> list[dict[str, Any]]:
    """The real operator (kopf, kubernetes client) on the API emulator, reusing
    ``benchmarks/operator_load.py``'s emulator and in-process kubelet."""
    import tempfile

    from benchmarks.operator_latency import InProcessKubelet
    from benchmarks.operator_load import TimingEmulator, connect_with_crds
    from tests.k8s.emulator import KUBELET_USER_AGENT, EmulatorServer
    from tests.operatorkit import OperatorProcess

    log = ApiLog()

    class GovernorEmulator(TimingEmulator):
        def _count_write(self, raw: Any, request: Any) -> None:
            now = time.perf_counter()
            resource = request.resource
            if resource is not None and resource.plural == "pods" and request.name is not None:
                kubelet = raw.headers.get("User-Agent", "").startswith(KUBELET_USER_AGENT)
                data = request.data if isinstance(request.data, dict) else {}
                phase = (data.get("status") or {}).get("phase")
                if kubelet and request.subresource == "status" and phase == "Succeeded":
                    log.terminated.setdefault(request.name, now)
                elif not kubelet and raw.method == "DELETE":
                    log.deleted.setdefault(request.name, now)
            elif resource is not None and resource.plural == "pods" and raw.method == "POST":
                data = request.data if isinstance(request.data, dict) else {}
                meta = data.get("metadata") or {}
                if meta.get("name"):
                    log.created.setdefault(meta["name"], now)
                    path = (meta.get("annotations") or {}).get("flujo.dev/step-path")
                    log.paths[meta["name"]] = str(path)
            super()._count_write(raw, request)

    rows: list[dict[str, Any]] = []
    with EmulatorServer(GovernorEmulator()) as server, tempfile.TemporaryDirectory() as tmp:
        kubeconfig, custom = connect_with_crds(server.url, Path(tmp))
        kubelet = InProcessKubelet(server.url, log_sink=server.emulator.append_log, max_pods=256)
        server.run(kubelet.start())
        operator = OperatorProcess(
            kubeconfig, Path(tmp) / "operator.log", FLUJO_MAX_RUNNING_PODS="500"
        )
        operator.start()
        try:
            for n in sizes:
                _progress(f"operator N={n} default: {repeats} runs")
                runs = []
                for seed in range(repeats):
                    record = operator_run(custom, log, f"gov-{n}-{seed}", n, seed)
                    if record is not None:
                        runs.append(record)
                rows.append(
                    {
                        "agent": "operator",
                        "n": n,
                        "policy": "default",
                        "runs": runs,
                        "aggregate": {},
                    }
                )
        finally:
            operator.stop()
            server.run(kubelet.stop())
    return rows


# ---------------------------------------------------------------------------
# Aggregation and report
# ---------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    breached = [r for r in runs if r.get("breached")]

    def values(key: str) -> list[float]:
        return [float(r[key]) for r in breached if r.get(key) is not None]

    def stats(key: str) -> dict[str, float | None]:
        v = values(key)
        return {
            "min": min(v) if v else None,
            "p50": percentile(v, 50),
            "p99": percentile(v, 99),
            "max": max(v) if v else None,
        }

    per_call = [x for r in breached for x in r.get("cancel_latency_calls_ms", [])]
    return {
        "runs": len(runs),
        "breached_runs": len(breached),
        "overspend_usd": stats("overspend_usd"),
        "overspend_calls": stats("overspend_calls"),
        "overshoot_at_breach_usd": stats("overshoot_at_breach_usd"),
        "late_results_usd": stats("late_results_usd"),
        "late_results_calls": stats("late_results_calls"),
        "run_ms": stats("run_ms"),
        "billed_overspend_calls": stats("billed_overspend_calls"),
        "uncounted_results": stats("uncounted_results"),
        "uncounted_results_total": sum(int(r.get("uncounted_results", 0)) for r in runs),
        "queued_at_breach_total": sum(int(r.get("queued_at_breach", 0)) for r in runs),
        "bound_calls": stats("bound_calls"),
        "all_within_bound": all(r.get("within_bound", False) for r in breached),
        "in_flight_at_breach": stats("in_flight_at_breach"),
        "launches": stats("launches"),
        "result_to_breach_ms": stats("result_to_breach_ms"),
        "cancel_latency_max_ms": stats("cancel_latency_max_ms"),
        "cancel_latency_per_call_ms": {
            "calls": len(per_call),
            "p50": percentile(per_call, 50),
            "p99": percentile(per_call, 99),
            "max": max(per_call) if per_call else None,
        },
        "breach_to_run_returned_ms": stats("breach_to_run_returned_ms"),
        "started_after_breach": sum(int(r.get("started_after_breach", 0)) for r in runs),
        "launch_commands_after_breach": sum(int(r["launch_commands_after_breach"]) for r in runs),
        "requests_after_breach": sum(int(r.get("requests_after_breach", 0)) for r in runs),
        "unaccounted_in_flight": sum(int(r.get("unaccounted", 0)) for r in runs),
        "server_abandoned": stats("server_abandoned"),
    }


def _f(value: float | None, fmt: str = ".2f") -> str:
    return "-" if value is None else format(value, fmt)


def render(rows: list[dict[str, Any]]) -> str:
    headers = [
        "agent",
        "N",
        "policy",
        "runs",
        "in flight p50",
        "ledger overspend p50/max",
        "billed overspend p50/max",
        "uncounted",
        "bound p50 (calls)",
        "cancel all p50/p99 ms",
        "per call p50/p99 ms",
        "→ returned p50 ms",
        "run p50 ms",
        "started after",
    ]
    body: list[list[str]] = []
    for row in rows:
        a = row["aggregate"]
        started_after = a["started_after_breach"] + a["launch_commands_after_breach"]
        started_after += a["requests_after_breach"]
        body.append(
            [
                row["agent"],
                str(row["n"]),
                row["policy"],
                f"{a['breached_runs']}/{a['runs']}",
                _f(a["in_flight_at_breach"]["p50"], ".0f"),
                f"{_f(a['overspend_calls']['p50'])} / {_f(a['overspend_calls']['max'])}",
                f"{_f(a['billed_overspend_calls']['p50'])} / "
                f"{_f(a['billed_overspend_calls']['max'])}",
                str(a["uncounted_results_total"]),
                _f(a["bound_calls"]["p50"]),
                f"{_f(a['cancel_latency_max_ms']['p50'])} / "
                f"{_f(a['cancel_latency_max_ms']['p99'])}",
                f"{_f(a['cancel_latency_per_call_ms']['p50'])} / "
                f"{_f(a['cancel_latency_per_call_ms']['p99'])}",
                _f(a["breach_to_run_returned_ms"]["p50"]),
                _f(a["run_ms"]["p50"], ".0f"),
                str(started_after),
            ]
        )
    widths = [max(len(x) for x in col) for col in zip(headers, *body, strict=True)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    http_notes = [
        f"  openai N={row['n']} {row['policy']}: in flight at breach p50 "
        f"{_f(row['aggregate']['in_flight_at_breach']['p50'], '.0f')}, the server saw p50 "
        f"{_f(row['aggregate']['server_abandoned']['p50'], '.0f')} abandoned and "
        f"{_f(row['aggregate']['uncounted_results']['p50'], '.0f')} answered but not counted "
        "by the run"
        for row in rows
        if row["agent"] == "openai"
    ]
    return "\n".join(
        [
            "Governor under parallel load (MapStep of N concurrent calls; "
            f"limit = {LIMIT_FRACTION:g} x N x c, c = ${MEAN_COST:g} mean call cost)",
            "",
            line(headers),
            "|" + "|".join("-" * (w + 2) for w in widths) + "|",
            *(line(b) for b in body),
            "",
            "Overspends in units of c. ledger = RunResult.usage - limit; billed = cost of every "
            "call that delivered its answer (agent returned / server answered) - limit; "
            "uncounted = such answers missing from the ledger (total over the runs).",
            "bound = docs/governor.md's bound for the run (default: breaching call + every call "
            f"in flight at the breach; reserve: one call's cap, {CAP / MEAN_COST:g} c).",
            "cancel all = breach recorded → last in-flight call's CancelledError (per run); "
            "per call = the same for each cancelled call; → returned = breach → run() returned.",
            "started after = agent bodies started + LaunchStep commands (+ HTTP requests "
            "arriving) after the breach: must be 0.",
            *(
                ["HTTP (openai agent, local test server in this process):", *http_notes]
                if http_notes
                else []
            ),
        ]
    )


def environment() -> dict[str, Any]:
    try:
        load: list[float] | None = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        load = None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "loadavg": load,
    }


def _progress(message: str) -> None:
    print(f"[governor] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="50,200", help="comma-separated N (default 50,200)")
    parser.add_argument("--repeats", type=int, default=None, help="runs per row (default 30)")
    parser.add_argument("--quick", action="store_true", help="5 runs per row")
    parser.add_argument(
        "--http", action="store_true", help="also run through the openai agent and test server"
    )
    parser.add_argument("--http-sizes", default="50", help="N for the HTTP variant (default 50)")
    parser.add_argument("--http-repeats", type=int, default=10, help="HTTP runs per row")
    parser.add_argument(
        "--operator",
        action="store_true",
        help="also run through the real operator on the API emulator",
    )
    parser.add_argument(
        "--operator-sizes", default="20,50", help="N for the operator (default 20,50)"
    )
    parser.add_argument("--operator-repeats", type=int, default=5, help="operator runs per row")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    repeats = args.repeats or (5 if args.quick else 30)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    started = dt.datetime.now(dt.UTC)
    env_start = environment()

    rows: list[dict[str, Any]] = []
    for n in sizes:
        for policy in POLICIES:
            _progress(f"in-process N={n} {policy}: {repeats} runs")

            async def series(n: int = n, policy: str = policy) -> list[dict[str, Any]]:
                return [await run_inprocess(n, policy, seed) for seed in range(repeats)]

            runs = asyncio.run(series())
            rows.append(
                {"agent": "python", "n": n, "policy": policy, "runs": runs, "aggregate": {}}
            )
    if args.http:
        from tests.servers import OpenAIServer

        http_repeats = 2 if args.quick else args.http_repeats
        with OpenAIServer() as server:
            for n in [int(s) for s in args.http_sizes.split(",") if s.strip()]:
                for policy in POLICIES:
                    _progress(f"http N={n} {policy}: {http_repeats} runs")
                    runs = [run_http(server, n, policy, seed) for seed in range(http_repeats)]
                    rows.append(
                        {"agent": "openai", "n": n, "policy": policy, "runs": runs, "aggregate": {}}
                    )
    if args.operator:
        operator_sizes = [int(x) for x in args.operator_sizes.split(",") if x.strip()]
        rows += run_operator(operator_sizes, 2 if args.quick else args.operator_repeats)
    for row in rows:
        row["aggregate"] = aggregate(row["runs"])
    report = render(rows)
    print(report)

    violations = sum(
        r["aggregate"]["started_after_breach"]
        + r["aggregate"]["launch_commands_after_breach"]
        + r["aggregate"]["requests_after_breach"]
        for r in rows
    )
    result = {
        "benchmark": "governor",
        "started": started.isoformat(timespec="seconds"),
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "environment": env_start,
        "loadavg_at_finish": environment()["loadavg"],
        "settings": {
            "sizes": sizes,
            "repeats": repeats,
            "mean_call_cost_usd": MEAN_COST,
            "cost_spread": COST_SPREAD,
            "cap_usd": CAP,
            "latency_s": LATENCY_S,
            "limit": f"{LIMIT_FRACTION} x N x mean call cost",
            "seeds": f"0..{repeats - 1}, one per repeat, same for both policies",
        },
        "rows": [
            {k: v for k, v in row.items() if k != "runs"}
            | {
                "runs": [
                    {k: v for k, v in run.items() if k != "cancel_latency_calls_ms"}
                    for run in row["runs"]
                ]
            }
            for row in rows
        ],
        "report": report,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    _progress(f"wrote {args.output}")
    if violations:
        print(f"FAIL: {violations} call(s) started after a breach", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
