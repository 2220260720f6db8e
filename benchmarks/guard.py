"""Regression guard: our engine's per-step time as a *ratio* to plain asyncio.

Absolute times depend on the machine and on whoever else uses it; a ratio to a
baseline measured in the same process, interleaved with ours, mostly does not.  For
each workload of ``benchmarks/engine_overhead.py`` (``chain``, ``loop``, ``fanout``:
1,000 trivial step executions each, built by that module's ``build_ours``), this
script times

- **ours**: ``await Flujo(pipeline).run_async(0)`` (one runner per workload, reused);
- **baseline**: the same work written directly with asyncio, no engine: each step is
  a dict ``{"path": ..., "input": x}`` handed to an awaited coroutine that calls the
  same trivial step and whose result is stored in a results dict — 1,000 in
  sequence (``chain``); a ``while`` loop of 1,000 with the exit test
  ``output >= 1000`` after each iteration (``loop``); 100 levels of
  ``asyncio.gather`` over 10 such coroutines, the first result feeding the next
  level (``fanout``).

Both sides run in one event loop, interleaved round by round (ours then baseline,
then the reverse order in the next round, across all workloads), with
``gc.collect()`` before each run.  The figure per side is the **minimum** over the
rounds (the least disturbed run); ratio = ours / baseline.  Every run is checked
(output and number of trivial-step executions).

The ratios are compared with the committed ``benchmarks/baseline.json``: a workload
fails when its ratio is more than ``--threshold`` (default 2) times the committed
ratio.  A failing workload is measured once more (same rounds) before the
guard gives up, so one noisy moment on a shared machine does not fail CI.  It never
compares absolute times.

Run from the repository root::

    .venv/bin/python -m benchmarks.guard              # check (exit 1 on a regression)
    .venv/bin/python -m benchmarks.guard --update     # re-measure and rewrite baseline.json

It prints a table and writes ``benchmarks/results/guard.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import json
import math
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    from benchmarks import engine_overhead
except ModuleNotFoundError:  # run as a file: python benchmarks/guard.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks import engine_overhead

from benchmarks.peers import overhead_common as oc
from flujo import Flujo

BENCH_DIR = Path(__file__).resolve().parent
BASELINE_PATH = BENCH_DIR / "baseline.json"
RESULTS_PATH = BENCH_DIR / "results" / "guard.json"
WORKLOADS: tuple[str, ...] = oc.WORKLOADS
DEFAULT_THRESHOLD = 2.0
DEFAULT_ROUNDS = 25
WARMUP_ROUNDS = 2

BASELINE_DEFINITIONS: dict[str, str] = {
    "chain": (
        f"{oc.CHAIN_STEPS:,} awaited coroutine calls in sequence; each gets a dict "
        "{path, input}, calls the trivial step, and its result is stored in a dict and "
        "fed to the next"
    ),
    "loop": (
        "a while loop of such awaited calls, exit test output >= "
        f"{oc.LOOP_ITERATIONS} after each iteration, at most {oc.LOOP_ITERATIONS:,}"
    ),
    "fanout": (
        f"{oc.FANOUT_DEPTH} levels of asyncio.gather over {oc.FANOUT_WIDTH} such calls; "
        "the first result feeds the next level"
    ),
}

Run = Callable[[], Awaitable[Any]]


# ---------------------------------------------------------------------------
# The plain-asyncio baseline
# ---------------------------------------------------------------------------

_CHAIN_PATHS = [f"s{i}" for i in range(oc.CHAIN_STEPS)]
_LOOP_PATHS = [f"loop/iter-{i + 1}/body" for i in range(oc.LOOP_ITERATIONS)]
_FANOUT_PATHS = [
    [f"p{j}/b{i}/p{j}b{i}" for i in range(oc.FANOUT_WIDTH)] for j in range(oc.FANOUT_DEPTH)
]


async def _call(record: dict[str, Any]) -> int:
    """One step of the baseline: the trivial step applied to a dict-carried input."""
    return oc.inc(record["input"])


async def baseline_chain() -> int:
    x, results = 0, dict[str, int]()
    for path in _CHAIN_PATHS:
        x = await _call({"path": path, "input": x})
        results[path] = x
    return x


async def baseline_loop() -> int:
    x, results, i = 0, dict[str, int](), 0
    while i < oc.LOOP_ITERATIONS:
        path = _LOOP_PATHS[i]
        x = await _call({"path": path, "input": x})
        results[path] = x
        i += 1
        if x >= oc.LOOP_ITERATIONS:
            break
    return x


async def baseline_fanout() -> int:
    x, results = 0, dict[str, int]()
    for paths in _FANOUT_PATHS:
        outs = await asyncio.gather(*(_call({"path": p, "input": x}) for p in paths))
        results.update(zip(paths, outs, strict=True))
        x = outs[0]
    return x


BASELINES: dict[str, Run] = {
    "chain": baseline_chain,
    "loop": baseline_loop,
    "fanout": baseline_fanout,
}


# ---------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------


class WrongRunError(RuntimeError):
    """A run gave the wrong output or executed the wrong number of steps."""


async def timed(run: Run, workload: str) -> float:
    """Seconds for one checked run of ``run``."""
    gc.collect()
    oc.PROBE.arm(None)
    started = time.perf_counter()
    output = await run()
    elapsed = time.perf_counter() - started
    executed = oc.PROBE.executed()
    if output != oc.EXPECTED_OUTPUT[workload] or executed != oc.STEP_EXECUTIONS[workload]:
        raise WrongRunError(
            f"{workload}: output {output!r}, {executed} step executions (expected "
            f"{oc.EXPECTED_OUTPUT[workload]}, {oc.STEP_EXECUTIONS[workload]})"
        )
    return elapsed


def _ours(workload: str) -> Run:
    runner = Flujo(engine_overhead.build_ours(workload))

    async def run() -> Any:
        return (await runner.run_async(0)).output

    return run


async def _measure(workloads: tuple[str, ...], rounds: int) -> dict[str, dict[str, list[float]]]:
    sides = {w: {"ours": _ours(w), "baseline": BASELINES[w]} for w in workloads}
    times: dict[str, dict[str, list[float]]] = {w: {"ours": [], "baseline": []} for w in workloads}
    for r in range(WARMUP_ROUNDS + rounds):
        order = ("ours", "baseline") if r % 2 == 0 else ("baseline", "ours")
        for w in workloads:
            for side in order:
                elapsed = await timed(sides[w][side], w)
                if r >= WARMUP_ROUNDS:
                    times[w][side].append(elapsed)
    return times


def measure(workloads: tuple[str, ...], rounds: int) -> dict[str, dict[str, Any]]:
    """Per workload: µs/step of each side (min over rounds), the ratio and every run."""
    times = asyncio.run(_measure(workloads, rounds))
    out: dict[str, dict[str, Any]] = {}
    for w, t in times.items():
        steps = oc.STEP_EXECUTIONS[w]
        ours, base = min(t["ours"]), min(t["baseline"])
        out[w] = {
            "ratio": ours / base,
            "ours_us_per_step": ours / steps * 1e6,
            "baseline_us_per_step": base / steps * 1e6,
            "median_ratio": statistics.median(t["ours"]) / statistics.median(t["baseline"]),
            "rounds": rounds,
            "ours_runs_s": t["ours"],
            "baseline_runs_s": t["baseline"],
        }
    return out


# ---------------------------------------------------------------------------
# Comparing (pure)
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """One workload's comparison with the committed baseline."""

    workload: str
    ratio: float
    baseline: float | None
    threshold: float

    @property
    def factor(self) -> float | None:
        return None if self.baseline is None else self.ratio / self.baseline

    @property
    def ok(self) -> bool:
        return self.factor is not None and self.factor <= self.threshold

    def message(self) -> str:
        if self.baseline is None:
            return (
                f"{self.workload}: ratio {self.ratio:.3g} has no committed baseline; "
                "run python -m benchmarks.guard --update"
            )
        verdict = "ok" if self.ok else "REGRESSION"
        return (
            f"{self.workload}: {verdict}: ratio ours/asyncio {self.ratio:.3g} vs baseline "
            f"{self.baseline:.3g} = {self.factor:.2f}x (fails above {self.threshold:g}x)"
        )


def compare(
    ratios: Mapping[str, float], baseline: Mapping[str, float], threshold: float
) -> list[Verdict]:
    """Verdicts in the order of ``ratios``; a workload missing from ``baseline`` fails."""
    return [Verdict(w, r, baseline.get(w), threshold) for w, r in ratios.items()]


class BaselineError(ValueError):
    """``baseline.json`` is missing, unreadable or incomplete."""


def load_baseline(path: Path = BASELINE_PATH) -> dict[str, float]:
    """Workload → committed ratio; raises :class:`BaselineError` unless every workload
    has a finite positive ratio."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BaselineError(f"{path}: {exc}") from exc
    workloads = data.get("workloads") if isinstance(data, dict) else None
    if not isinstance(workloads, dict):
        raise BaselineError(f"{path}: no 'workloads' object")
    ratios: dict[str, float] = {}
    for w in WORKLOADS:
        entry = workloads.get(w)
        ratio = entry.get("ratio") if isinstance(entry, dict) else None
        if (
            not isinstance(ratio, int | float)
            or isinstance(ratio, bool)
            or not math.isfinite(ratio)
            or ratio <= 0
        ):
            raise BaselineError(f"{path}: workload {w!r} has no positive ratio")
        ratios[w] = float(ratio)
    return ratios


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------


def render(measured: Mapping[str, Mapping[str, Any]], verdicts: list[Verdict]) -> str:
    by_name = {v.workload: v for v in verdicts}
    headers = ["workload", "ours µs/step", "asyncio µs/step", "ratio", "baseline", "factor", ""]
    body = []
    for w, m in measured.items():
        v = by_name.get(w)
        body.append(
            [
                w,
                f"{m['ours_us_per_step']:.2f}",
                f"{m['baseline_us_per_step']:.3f}",
                f"{m['ratio']:.3g}",
                "-" if v is None or v.baseline is None else f"{v.baseline:.3g}",
                "-" if v is None or v.factor is None else f"{v.factor:.2f}x",
                "" if v is None else ("ok" if v.ok else "FAIL"),
            ]
        )
    widths = [max(len(x) for x in col) for col in zip(headers, *body, strict=True)]

    def line(cells: list[str]) -> str:
        first, *rest = cells
        return (
            "| "
            + " | ".join(
                [first.ljust(widths[0])]
                + [c.rjust(w) for c, w in zip(rest, widths[1:], strict=True)]
            )
            + " |"
        )

    return "\n".join(
        [
            "Regression guard: ours / plain asyncio, min over rounds (lower is better)",
            "",
            line(headers),
            "|" + "|".join("-" * (w + 2) for w in widths) + "|",
            *(line(b) for b in body),
        ]
    )


def _progress(message: str) -> None:
    print(f"[guard] {message}", file=sys.stderr, flush=True)


def _write_baseline(path: Path, measured: Mapping[str, Mapping[str, Any]], rounds: int) -> None:
    data = {
        "description": "ratio = our engine's µs/step / plain asyncio's µs/step, same process, "
        "interleaved; benchmarks/guard.py fails when a ratio exceeds --threshold times the "
        "one committed here",
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "python -m benchmarks.guard --update",
        "statistic": f"min over {rounds} interleaved rounds per side, after {WARMUP_ROUNDS} "
        "warm-up rounds; ratio of the minima",
        "machine": oc.environment(),
        "baseline_definitions": BASELINE_DEFINITIONS,
        "workloads": {
            w: {
                "ratio": round(m["ratio"], 3),
                "ours_us_per_step": round(m["ours_us_per_step"], 3),
                "baseline_us_per_step": round(m["baseline_us_per_step"], 4),
                "median_ratio": round(m["median_ratio"], 3),
            }
            for w, m in measured.items()
        },
    }
    path.write_text(json.dumps(data, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        help=f"fail when ratio > THRESHOLD x the committed ratio (default {DEFAULT_THRESHOLD:g})",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=DEFAULT_ROUNDS,
        help=f"timed rounds per side (default {DEFAULT_ROUNDS})",
    )
    parser.add_argument("--update", action="store_true", help="rewrite the baseline file")
    parser.add_argument("--baseline", type=Path, default=BASELINE_PATH)
    parser.add_argument("--output", type=Path, default=RESULTS_PATH)
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.threshold <= 0:
        raise SystemExit("--rounds must be >= 1 and --threshold > 0")

    started = time.perf_counter()
    try:
        measured = measure(WORKLOADS, args.rounds)
    except Exception as exc:
        print(f"benchmark guard: FAIL: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if args.update:
        _write_baseline(args.baseline, measured, args.rounds)
        _progress(f"wrote {args.baseline}")
    try:
        baseline = load_baseline(args.baseline)
    except BaselineError as exc:
        print(f"benchmark guard: FAIL: {exc}", file=sys.stderr)
        return 1

    verdicts = compare({w: m["ratio"] for w, m in measured.items()}, baseline, args.threshold)
    retried: dict[str, Any] = {}
    failing = tuple(v.workload for v in verdicts if not v.ok and v.baseline is not None)
    if failing:
        _progress(f"over the threshold: {', '.join(failing)}; measuring once more")
        try:
            again = measure(failing, args.rounds)
        except Exception as exc:
            print(f"benchmark guard: FAIL: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        retried = {w: {"first": measured[w]} for w in failing}
        measured = {**measured, **again}
        verdicts = compare({w: m["ratio"] for w, m in measured.items()}, baseline, args.threshold)

    report = render(measured, verdicts)
    print(report)
    elapsed = time.perf_counter() - started
    result = {
        "benchmark": "guard",
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "elapsed_s": elapsed,
        "threshold": args.threshold,
        "rounds": args.rounds,
        "baseline_file": str(args.baseline),
        "baseline": baseline,
        "environment": oc.environment(),
        "baseline_definitions": BASELINE_DEFINITIONS,
        "workloads": measured,
        "retried": retried,
        "verdicts": [
            {
                "workload": v.workload,
                "ratio": v.ratio,
                "baseline": v.baseline,
                "factor": v.factor,
                "ok": v.ok,
            }
            for v in verdicts
        ],
        "report": report,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    failed = [v for v in verdicts if not v.ok]
    for v in failed:
        print(f"benchmark guard: FAIL: {v.message()}", file=sys.stderr)
    print(
        f"benchmark guard: {'FAIL' if failed else 'ok'} "
        f"({len(verdicts) - len(failed)}/{len(verdicts)} workloads within "
        f"{args.threshold:g}x of the baseline ratio; {elapsed:.1f} s)"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
