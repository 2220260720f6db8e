"""Memory workload on Flujo 0.6.11 from PyPI (a different project also named ``flujo``).

Runs inside ``.bench/flujo0611`` (made by ``benchmarks/peers/setup.sh``) from an empty
scratch directory (the default configuration writes ``flujo_ops.db`` into the cwd), one
configuration per process, and prints one JSON object on stdout; progress and Flujo
0.6.11's own logging go to stderr.  ``benchmarks/memory.py`` does all of that for you.

Workload (the same as ours, see ``benchmarks/memory.py``): one loop step whose body is
one step returning ``{"n": n + 1, "blob": "x" * 10240}`` for input ``{"n": n}`` (input
0 counts as ``n = 0``); exit when ``output["n"] >= iterations``, checked after every
iteration, at most ``iterations`` iterations; input 0.  Written as the overhead
benchmark writes its loop: ``Step.from_callable(async def big)`` in
``Step.loop_until(..., exit_condition_callable=..., max_loops=iterations)``.

Configurations (``--variant``), as in ``flujo0611_overhead.py``:

- ``in-memory``: ``Flujo(pipeline, persist_state=False)``, ``flujo`` logger at WARNING;
- ``default``: ``Flujo(pipeline)`` as shipped: SQLite state backend, INFO logging.  It
  serialises the whole run state after every step, so it slows down as the run grows;
  the run is cut after ``--budget-s`` seconds by the step itself raising, and the
  figures are then those of the iterations completed so far.

Measured: peak RSS growth = ``ru_maxrss`` after the run - ``ru_maxrss`` after imports,
pipeline and runner construction and ``gc.collect()``; wall time of ``Flujo.run()``.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import json
import logging
import os
import platform
import resource
import sys
import time
from typing import Any

from flujo import Flujo, Pipeline, Step
from flujo.domain.dsl.loop import LoopStep

VARIANTS: dict[str, str] = {
    "in-memory": "Flujo(pipeline, persist_state=False); 'flujo' logger at WARNING",
    "default": "Flujo(pipeline) as shipped: SQLite state backend (flujo_ops.db), INFO logging",
}


class BudgetExceededError(RuntimeError):
    """Raised by the step once the run has used up its time budget."""


class Probe:
    def __init__(self) -> None:
        self.executed = 0
        self.deadline = float("inf")
        self.aborted_after: int | None = None


PROBE = Probe()


def _rss_kib() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak  # bytes on macOS


def build(iterations: int, blob_bytes: int) -> Pipeline[Any, Any]:
    async def big(x: Any) -> dict[str, Any]:
        if PROBE.executed % 64 == 0 and time.perf_counter() > PROBE.deadline:
            if PROBE.aborted_after is None:
                PROBE.aborted_after = PROBE.executed
            raise BudgetExceededError("time budget of this run exceeded")
        PROBE.executed += 1
        n = x["n"] if isinstance(x, dict) else 0
        return {"n": n + 1, "blob": "x" * blob_bytes}

    body = Pipeline.from_step(Step.from_callable(big, name="big"))
    loop: LoopStep[Any] = Step.loop_until(
        name="loop",
        loop_body_pipeline=body,
        exit_condition_callable=lambda out, _ctx: isinstance(out, dict) and out["n"] >= iterations,
        max_loops=iterations,
    )
    return Pipeline.from_step(loop)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=list(VARIANTS), default="in-memory")
    parser.add_argument("--iterations", type=int, default=10_000)
    parser.add_argument("--blob-bytes", type=int, default=10 * 1024)
    parser.add_argument(
        "--budget-s", type=float, default=300.0, help="cut the run after this long (0: no limit)"
    )
    args = parser.parse_args()
    version = importlib.metadata.version("flujo")
    if version != "0.6.11":
        raise SystemExit(f"expected flujo 0.6.11 in this interpreter, found {version}")
    logging.getLogger("flujo").setLevel(
        logging.INFO if args.variant == "default" else logging.WARNING
    )

    pipeline = build(args.iterations, args.blob_bytes)
    runner = (
        Flujo(pipeline, persist_state=False) if args.variant == "in-memory" else Flujo(pipeline)
    )
    gc.collect()
    baseline = _rss_kib()
    print(f"[flujo 0.6.11] {args.variant}: {args.iterations} iterations", file=sys.stderr)
    PROBE.deadline = time.perf_counter() + args.budget_s if args.budget_s > 0 else float("inf")
    started = time.perf_counter()
    error: str | None = None
    output: Any = None
    try:
        result = runner.run(0)
        output = getattr(result, "output", None)
        if output is None:  # 0.6.11 returns a PipelineResult: the last step's output
            history = getattr(result, "step_history", None) or []
            output = history[-1].output if history else None
    except Exception as exc:
        error = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
    elapsed = time.perf_counter() - started
    peak = _rss_kib()
    n = output.get("n") if isinstance(output, dict) else None
    record: dict[str, Any] = {
        "engine": "Flujo 0.6.11",
        "version": version,
        "variant": args.variant,
        "description": VARIANTS[args.variant],
        "iterations": args.iterations,
        "blob_bytes": args.blob_bytes,
        "completed_iterations": PROBE.executed,
        "output_n": n,
        "ok": n == args.iterations and PROBE.aborted_after is None,
        "aborted": PROBE.aborted_after is not None,
        "budget_s": args.budget_s,
        "baseline_rss_kib": baseline,
        "peak_rss_kib": peak,
        "growth_mib": (peak - baseline) / 1024,
        "elapsed_s": elapsed,
        "error": error if PROBE.aborted_after is None else None,
        "python": platform.python_version(),
        "cwd": os.getcwd(),
    }
    sys.stdout.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
