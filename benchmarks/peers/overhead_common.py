"""Shared, dependency-free harness of the engine-overhead benchmark.

Imported by ``benchmarks/engine_overhead.py`` (our engine, in-process) and by every
peer script in this folder (each in its own virtualenv, where it is imported as a
sibling module), so that all engines run the *same* workloads, the *same* trivial
step and the *same* timing procedure.  Standard library only; Python >= 3.11.

Workloads (step executions per run in brackets):

- ``chain`` [1,000]: 1,000 trivial steps in sequence; input 0, output 1000.
- ``loop`` [1,000]: one loop step whose body is one trivial step; each iteration's
  output is the next iteration's input; the exit condition ``output >= 1000`` is
  checked after every iteration; at most 1,000 iterations; input 0, output 1000.
- ``fanout`` [1,000]: 100 parallel steps in sequence, each with 10 branches of one
  trivial step; every branch receives the parallel step's input; the parallel
  step's output is the first branch's output (all branches agree), which feeds the
  next parallel step; input 0, output 100.  Reported per branch execution.

The trivial step returns its integer input plus one and counts itself on
:data:`PROBE`, which verifies that an engine executed exactly the expected number of
steps and can abort a run that overruns its time budget (see :class:`StepProbe`).

Timing: per mode (sync or async entry point), ``warmup`` untimed runs, then
``repeats`` timed runs.  Building the pipeline and the runner (or compiled graph) is
not timed: ``time.perf_counter`` brackets only the engine's run call.  ``gc.collect()``
runs before each run; GC stays on during it.
µs/step = run time / step executions; a mode reports the median and the best run;
a workload reports its fastest mode (by median).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CHAIN_STEPS",
    "EXPECTED_OUTPUT",
    "FANOUT_DEPTH",
    "FANOUT_WIDTH",
    "LOOP_ITERATIONS",
    "PROBE",
    "STEP_EXECUTIONS",
    "TRIVIAL_STEP",
    "WORKLOADS",
    "WORKLOAD_DEFINITIONS",
    "BudgetExceededError",
    "Settings",
    "StepProbe",
    "add_common_args",
    "ainc",
    "emit",
    "environment",
    "inc",
    "measure_async",
    "measure_sync",
    "settings_from_args",
    "summarize",
]

CHAIN_STEPS = 1000
LOOP_ITERATIONS = 1000
FANOUT_DEPTH = 100
"""Parallel steps in sequence in the ``fanout`` workload."""
FANOUT_WIDTH = 10
"""Branches (of one trivial step each) per parallel step."""

WORKLOADS: tuple[str, ...] = ("chain", "loop", "fanout")
STEP_EXECUTIONS: dict[str, int] = {
    "chain": CHAIN_STEPS,
    "loop": LOOP_ITERATIONS,
    "fanout": FANOUT_DEPTH * FANOUT_WIDTH,
}
EXPECTED_OUTPUT: dict[str, int] = {
    "chain": CHAIN_STEPS,
    "loop": LOOP_ITERATIONS,
    "fanout": FANOUT_DEPTH,
}
TRIVIAL_STEP = "returns its int input + 1 (and increments an execution counter)"
WORKLOAD_DEFINITIONS: dict[str, str] = {
    "chain": (
        f"{CHAIN_STEPS:,} trivial steps in sequence, each fed the previous step's output; "
        f"input 0, output {CHAIN_STEPS}; {CHAIN_STEPS:,} step executions per run."
    ),
    "loop": (
        "one loop step whose body is one trivial step; each iteration's output is the next "
        f"iteration's input; exit when output >= {LOOP_ITERATIONS} (checked after every "
        f"iteration), at most {LOOP_ITERATIONS:,} iterations; input 0, output "
        f"{LOOP_ITERATIONS}; {LOOP_ITERATIONS:,} body executions per run."
    ),
    "fanout": (
        f"{FANOUT_DEPTH} parallel steps in sequence, each with {FANOUT_WIDTH} branches of one "
        "trivial step; every branch gets the parallel step's input; the parallel step's output "
        "is its first branch's output (all branches agree) and feeds the next parallel step; "
        f"input 0, output {FANOUT_DEPTH}; {FANOUT_DEPTH * FANOUT_WIDTH:,} branch executions per "
        "run; reported as us per branch execution."
    ),
}

_CHECK_EVERY = 16
"""The probe reads the clock on every 16th step execution only."""
_WARMUP_BUDGET_S = 5.0
"""Warm-up runs only need to touch every code path: they are cut after this long."""


class BudgetExceededError(RuntimeError):
    """Raised by the trivial step once the current run has overrun its time budget."""


class StepProbe:
    """Counts trivial-step executions and aborts a run that overruns its budget.

    A run that reaches its deadline raises :class:`BudgetExceededError` from the next
    trivial step (and from every one after it, so retries stop too).  The probe
    records when that happened and how many steps had completed, which yields a
    *lower bound* of the engine's µs/step whenever its per-step cost grows with
    run length (as a persisted run history does).
    """

    def __init__(self) -> None:
        self.ticks = itertools.count(1)  # next() on it is atomic: safe from worker threads
        self.next_check: float = math.inf
        self.deadline: float = math.inf
        self.aborted_at: float | None = None
        self.completed_at_abort = 0

    def arm(self, budget_s: float | None) -> None:
        """Reset the counter; start the budget clock now (``None``: no budget)."""
        self.ticks = itertools.count(1)
        self.aborted_at = None
        self.completed_at_abort = 0
        if budget_s is None:
            self.deadline = math.inf
            self.next_check = math.inf
        else:
            self.deadline = time.perf_counter() + budget_s
            self.next_check = _CHECK_EVERY

    def executed(self) -> int:
        """Trivial steps started since :meth:`arm`; call once, after the run."""
        return next(self.ticks) - 1

    def check(self, n: int) -> None:
        """Called by the n-th trivial step of a run every few executions (see :func:`inc`)."""
        now = time.perf_counter()
        if self.aborted_at is None and now <= self.deadline:
            self.next_check = n + _CHECK_EVERY
            return
        if self.aborted_at is None:
            self.aborted_at = now
            self.completed_at_abort = n - 1
        self.next_check = 0  # every further call raises: no retry gets through
        raise BudgetExceededError("time budget of this run exceeded")


PROBE = StepProbe()


def inc(x: int) -> int:
    """The trivial step: ``x + 1``, counted on :data:`PROBE`."""
    probe = PROBE
    n = next(probe.ticks)
    if n >= probe.next_check:
        probe.check(n)
    return x + 1


async def ainc(x: int) -> int:
    """:func:`inc` as a coroutine function, for engines whose steps must be async."""
    return inc(x)


@dataclass(frozen=True)
class Settings:
    """How much to measure."""

    repeats: int
    warmup: int
    budget_s: float | None
    workloads: tuple[str, ...]


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """The options every benchmark script shares."""
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per mode (default 5)")
    parser.add_argument(
        "--warmup", type=int, default=1, help="untimed runs before timing (default 1)"
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=60.0,
        help="abort a run after this many seconds and report a lower bound (0: no limit)",
    )
    parser.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        help=f"comma-separated subset of {','.join(WORKLOADS)}",
    )


def settings_from_args(args: argparse.Namespace) -> Settings:
    workloads = tuple(w.strip() for w in str(args.workloads).split(",") if w.strip())
    unknown = [w for w in workloads if w not in WORKLOADS]
    if unknown:
        raise SystemExit(f"unknown workload(s): {', '.join(unknown)}")
    if args.repeats < 1 or args.warmup < 0:
        raise SystemExit("--repeats must be >= 1 and --warmup >= 0")
    budget = float(args.budget_s)
    return Settings(
        repeats=int(args.repeats),
        warmup=int(args.warmup),
        budget_s=budget if budget > 0 else None,
        workloads=workloads,
    )


# ---------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------


@dataclass
class _Run:
    elapsed_s: float
    output: Any
    error: BaseException | None
    executed: int
    aborted_at: float | None
    completed_at_abort: int
    started: float


class _Recorder:
    """Turns the runs of one workload in one mode into its JSON record."""

    def __init__(self, workload: str, settings: Settings) -> None:
        self.workload = workload
        self.settings = settings
        self.expected_steps = STEP_EXECUTIONS[workload]
        self.runs_s: list[float] = []
        self.done = False
        self.record: dict[str, Any] = {}

    def _finish(self, **fields: Any) -> None:
        self.done = True
        self.record = {"step_executions": self.expected_steps, **fields}

    def warmup_result(self, run: _Run) -> None:
        if run.aborted_at is None and run.error is not None:
            self._finish(error=f"{type(run.error).__name__}: {run.error}")
        elif run.aborted_at is None:
            self._verify(run)

    def _verify(self, run: _Run) -> bool:
        expected = EXPECTED_OUTPUT[self.workload]
        if run.output != expected:
            self._finish(error=f"wrong output {run.output!r} (expected {expected})")
            return False
        if run.executed != self.expected_steps:
            self._finish(
                error=f"executed {run.executed} trivial steps (expected {self.expected_steps})"
            )
            return False
        return True

    def timed_result(self, run: _Run) -> None:
        if run.aborted_at is not None:
            completed = max(run.completed_at_abort, 1)
            elapsed = run.aborted_at - run.started
            us = elapsed / completed * 1e6
            self._finish(
                runs_s=[elapsed],
                median_us_per_step=us,
                best_us_per_step=us,
                lower_bound=True,
                completed_steps=run.completed_at_abort,
                note=(
                    f"aborted after the {self.settings.budget_s:g} s budget with "
                    f"{run.completed_at_abort} of {self.expected_steps} step executions done; "
                    "figure = elapsed / completed (a lower bound when per-step cost grows)"
                ),
            )
            return
        if run.error is not None:
            self._finish(error=f"{type(run.error).__name__}: {run.error}")
            return
        if not self._verify(run):
            return
        self.runs_s.append(run.elapsed_s)
        if len(self.runs_s) >= self.settings.repeats:
            per_step = [t / self.expected_steps * 1e6 for t in self.runs_s]
            self._finish(
                runs_s=self.runs_s,
                median_us_per_step=statistics.median(per_step),
                best_us_per_step=min(per_step),
                lower_bound=False,
            )


def _budget_for(settings: Settings, warmup: bool) -> float | None:
    if not warmup:
        return settings.budget_s
    if settings.budget_s is None:
        return _WARMUP_BUDGET_S
    return min(settings.budget_s, _WARMUP_BUDGET_S)


def _run_sync(prepare: Callable[[], Callable[[], Any]], budget_s: float | None) -> _Run:
    run = prepare()
    gc.collect()
    PROBE.arm(budget_s)
    started = time.perf_counter()
    output: Any = None
    error: BaseException | None = None
    try:
        output = run()
    except Exception as exc:
        error = exc
    elapsed = time.perf_counter() - started
    return _Run(
        elapsed,
        output,
        error,
        PROBE.executed(),
        PROBE.aborted_at,
        PROBE.completed_at_abort,
        started,
    )


async def _run_async(
    prepare: Callable[[], Callable[[], Awaitable[Any]]], budget_s: float | None
) -> _Run:
    run = prepare()
    gc.collect()
    PROBE.arm(budget_s)
    started = time.perf_counter()
    output: Any = None
    error: BaseException | None = None
    try:
        output = await run()
    except Exception as exc:
        error = exc
    elapsed = time.perf_counter() - started
    return _Run(
        elapsed,
        output,
        error,
        PROBE.executed(),
        PROBE.aborted_at,
        PROBE.completed_at_abort,
        started,
    )


def measure_sync(
    prepare: Callable[[], Callable[[], Any]], workload: str, settings: Settings
) -> dict[str, Any]:
    """Time ``run()``, where ``run = prepare()`` is obtained (untimed) before every run.

    ``run`` performs one complete pipeline run and returns its final output.  ``prepare``
    returns a runner built once, or builds a fresh one where reusing a runner would change
    the work done (a per-runner step-result cache would turn repetitions into cache hits).
    """
    rec = _Recorder(workload, settings)
    for _ in range(settings.warmup):
        rec.warmup_result(_run_sync(prepare, _budget_for(settings, warmup=True)))
        if rec.done:
            return rec.record
    while not rec.done:
        rec.timed_result(_run_sync(prepare, _budget_for(settings, warmup=False)))
    return rec.record


def measure_async(
    prepare: Callable[[], Callable[[], Awaitable[Any]]], workload: str, settings: Settings
) -> dict[str, Any]:
    """As :func:`measure_sync`, timing ``await run()`` inside one event loop.

    Starting the event loop is not timed; ``prepare`` runs inside it, untimed.
    """

    async def main() -> dict[str, Any]:
        rec = _Recorder(workload, settings)
        for _ in range(settings.warmup):
            rec.warmup_result(await _run_async(prepare, _budget_for(settings, warmup=True)))
            if rec.done:
                return rec.record
        while not rec.done:
            rec.timed_result(await _run_async(prepare, _budget_for(settings, warmup=False)))
        return rec.record

    return asyncio.run(main())


def summarize(modes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One workload's record: its fastest mode (by median), with every mode kept."""
    ok = {m: r for m, r in modes.items() if "error" not in r}
    if not ok:
        errors = "; ".join(f"{m}: {r['error']}" for m, r in modes.items())
        return {"error": errors, "modes": modes}
    best = min(ok, key=lambda m: float(ok[m]["median_us_per_step"]))
    return {
        "us_per_step": ok[best]["median_us_per_step"],
        "best_us_per_step": ok[best]["best_us_per_step"],
        "lower_bound": ok[best]["lower_bound"],
        "mode": best,
        "modes": modes,
    }


def environment() -> dict[str, Any]:
    """The interpreter and machine a result was measured on."""
    load: list[float] | None
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        load = None
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "loadavg": load,
    }


def emit(result: dict[str, Any], workloads: Iterable[str] = WORKLOADS) -> None:
    """Print one JSON object: what a peer script hands to the orchestrator."""
    result.setdefault("workload_definitions", {w: WORKLOAD_DEFINITIONS[w] for w in workloads})
    sys.stdout.write(json.dumps(result, indent=None, sort_keys=False) + "\n")
    sys.stdout.flush()
