"""Benchmark: what the run store costs per step.

The same workloads as ``benchmarks/engine_overhead.py`` (``chain``: 1,000 steps of
``x + 1`` in sequence; ``loop``: a 1,000-iteration loop of one step), run by our engine

- in memory (``Flujo(pipeline)``, what ``--store none`` does), and
- journaled to a run store in a temp directory (``Flujo(pipeline, store=RunStore(path))``,
  what ``flujo run`` does by default), one store file for every run of a workload, so the
  file grows as a real ``.flujo/runs.db`` does;

and one more workload, ``chain-async``: the chain with an agent that is a coroutine, so every step
is an asyncio task and the journal is committed before each one (a commit per step, the
case of real model calls, where it is negligible beside the call).

Flujo 0.6.11's default configuration (its SQLite state backend) is measured on ``chain``
and ``loop`` by the peer script of ``engine_overhead`` (``benchmarks/peers/``) when its
virtualenv exists (``benchmarks/peers/setup.sh``).  Targets (issue 21): stored <= 2x in
memory, and >= 10x faster than Flujo 0.6.11's default.  Nothing here asserts on timings.

    .venv/bin/python -m benchmarks.store [--quick] [--skip-peers]

Writes ``benchmarks/results/store.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

try:
    from benchmarks import engine_overhead as eo
    from benchmarks.peers import overhead_common as oc
except ModuleNotFoundError:  # run as a file
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks import engine_overhead as eo
    from benchmarks.peers import overhead_common as oc

from flujo import AgentContext, AgentOutput, BaseAgent, Flujo, Pipeline, Step
from flujo.runtime.store import RunStore

WORKLOADS = ("chain", "loop", "chain-async")


class AsyncInc(BaseAgent):
    """``x + 1`` as a coroutine: every step becomes a task, as a model call is."""

    async def run(self, data: Any, context: AgentContext) -> AgentOutput:
        return AgentOutput(oc.inc(data))


def build(workload: str) -> Pipeline:
    if workload == "chain-async":
        agent = AsyncInc()
        return Pipeline([Step(f"s{i}", agent=agent) for i in range(oc.CHAIN_STEPS)])
    return eo.build_ours(workload)


def _measure(runner: Flujo, workload: str, settings: oc.Settings) -> dict[str, Any]:
    def prepare() -> Callable[[], Any]:
        return lambda: runner.run(0).output

    return oc.measure_sync(prepare, "chain" if workload == "chain-async" else workload, settings)


def measure(settings: oc.Settings, rounds: int) -> dict[str, Any]:
    """Both configurations in alternating rounds, so a busy machine weighs on both alike."""
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="flujo-bench-store-") as scratch:
        for workload in WORKLOADS:
            memory_runner = Flujo(build(workload))
            path = Path(scratch) / f"{workload}.db"
            pairs: list[tuple[float, float]] = []
            records: list[dict[str, Any]] = []
            with RunStore(path) as store:
                stored_runner = Flujo(build(workload), store=store)
                for r in range(rounds):
                    eo._progress(f"store: {workload} round {r + 1} of {rounds}")
                    memory = _measure(memory_runner, workload, settings)
                    stored = _measure(stored_runner, workload, settings)
                    records.append({"memory": memory, "stored": stored})
                    if "median_us_per_step" in memory and "median_us_per_step" in stored:
                        pairs.append((memory["median_us_per_step"], stored["median_us_per_step"]))
                runs = len(store.list(limit=100_000))
            size = sum(p.stat().st_size for p in Path(scratch).glob(f"{workload}.db*"))
            out[workload] = {
                "memory_us_per_step": statistics.median(m for m, _ in pairs) if pairs else None,
                "stored_us_per_step": statistics.median(s for _, s in pairs) if pairs else None,
                "ratio_median_of_rounds": (
                    statistics.median(s / m for m, s in pairs) if pairs else None
                ),
                "rounds": rounds,
                "store_runs": runs,
                "store_bytes": size,
                "records": records,
            }
    return out


def _peer(settings: oc.Settings, budget_s: float) -> dict[str, Any]:
    """Flujo 0.6.11's default (SQLite) figures; a run cut by ``budget_s`` gives a lower bound."""
    peer_settings = oc.Settings(settings.repeats, settings.warmup, budget_s, ("chain", "loop"))
    problem = eo.ensure_peer_venvs()
    if problem:
        return {"error": problem}
    record = eo.run_peer("flujo0611", peer_settings)
    if "error" in record:
        return record
    variant = (record.get("variants") or {}).get("default") or {}
    return {
        "version": record.get("version"),
        "description": variant.get("description"),
        "workloads": {
            w: (variant.get("workloads") or {}).get(w, {}).get("us_per_step")
            for w in ("chain", "loop")
        },
        "lower_bound": {
            w: bool((variant.get("workloads") or {}).get(w, {}).get("lower_bound"))
            for w in ("chain", "loop")
        },
    }


def _fmt(value: Any) -> str:
    return f"{value:,.1f}" if isinstance(value, int | float) else "—"


def render(ours: dict[str, Any], peer: dict[str, Any] | None) -> str:
    lines = [
        "us per step (median)      in memory    stored   stored/memory   Flujo 0.6.11 default"
        "   0.6.11/stored",
    ]
    for workload, r in ours.items():
        mem, sto = r["memory_us_per_step"], r["stored_us_per_step"]
        ratio = r["ratio_median_of_rounds"]
        theirs = (peer or {}).get("workloads", {}).get(workload) if peer else None
        bound = ">=" if (peer or {}).get("lower_bound", {}).get(workload) else ""
        speedup = theirs / sto if theirs and sto else None
        lines.append(
            f"{workload:<24}{_fmt(mem):>11}{_fmt(sto):>10}"
            f"{(f'{ratio:.2f}x' if ratio else '—'):>16}{bound + _fmt(theirs):>23}"
            f"{(f'{bound}{speedup:.0f}x' if speedup else '—'):>16}"
        )
    if peer and "error" in peer:
        lines.append(f"Flujo 0.6.11: {peer['error']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--quick", action="store_true", help="2 timed runs per mode, 2 rounds")
    parser.add_argument("--skip-peers", action="store_true", help="our engine only")
    parser.add_argument(
        "--peer-budget-s",
        type=float,
        default=60.0,
        help="cut a Flujo 0.6.11 run after this long (its cost grows with the run: a lower "
        "bound then; default 60)",
    )
    parser.add_argument("--output", type=Path, default=eo.RESULTS_DIR / "store.json")
    args = parser.parse_args(argv)
    repeats = 2 if args.quick else args.repeats
    settings = oc.Settings(repeats, args.warmup, 60.0 if args.quick else None, ("chain",))
    environment = oc.environment()
    ours = measure(settings, 2 if args.quick else args.rounds)
    peer = None if args.skip_peers else _peer(settings, args.peer_budget_s)
    text = render(ours, peer)
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {"environment": environment, "ours": ours, "flujo0611_default": peer, "table": text},
            indent=2,
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
