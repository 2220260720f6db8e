"""Benchmark: peak memory of a long loop with large outputs, ours against Flujo 0.6.11.

Workload: one loop step whose body is one step returning ``{"n": n + 1, "blob": "x" *
10240}`` for input ``{"n": n}`` (input 0 counts as ``n = 0``); exit when
``output.n >= 10000``, checked after every iteration, at most 10,000 iterations; input 0.
So 10,000 step executions with 10 KiB outputs (100 MiB of outputs in all), and a final
output with ``n == 10000`` (checked).

Every measurement runs in a fresh subprocess.  Peak RSS growth = ``ru_maxrss`` after the
run - ``ru_maxrss`` after imports, pipeline and runner construction and ``gc.collect()``
(the baseline); wall time brackets the run call only.  Configurations:

- ours, as shipped: the embedded executor spills outputs whose JSON is over 4 KiB to the
  run's result store (``flujo/runtime/results.py``); the state machine keeps the last
  100 iterations; also measured: the peak after writing the run's transcript from the
  result (``iter_transcript`` to a file: the log is streamed, one spilled output read
  back at a time);
- ours with spilling off (``Flujo(spill_bytes=0)``): the event log holds every output;
- Flujo 0.6.11 from PyPI (a different project also named ``flujo``), in its own
  virtualenv ``.bench/flujo0611`` (``benchmarks/peers/flujo0611_memory.py``, from a
  scratch directory), ``in-memory`` (``persist_state=False``) and ``default`` (SQLite
  state backend) configurations.  ``default`` is cut after ``--budget-s`` seconds.

Run from the repository root::

    .venv/bin/python -m benchmarks.memory [--quick] [--skip-peers]

It prints a table and writes ``benchmarks/results/memory.json``.  Target: ours (as
shipped) <= 50 MiB of peak RSS growth.  Nothing here asserts on figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
PEERS_DIR = BENCH_DIR / "peers"
RESULTS_DIR = BENCH_DIR / "results"
VENV_DIR = Path(os.environ.get("FLUJO_BENCH_DIR", REPO_ROOT / ".bench"))

ITERATIONS = 10_000
BLOB_BYTES = 10 * 1024
TARGET_MIB = 50.0
"""Target: peak RSS growth of ours (as shipped) <= 50 MiB."""

WORKLOAD = (
    "one loop step whose body is one step returning {'n': n + 1, 'blob': 'x' * BLOB} for "
    "input {'n': n} (input 0 counts as n = 0); exit when output.n >= ITERATIONS, checked "
    "after every iteration, at most ITERATIONS iterations; input 0; output n == ITERATIONS"
)

# (key, header, engine, how it is run)
CONFIGS: list[tuple[str, str, str, str]] = [
    ("ours", "ours", "ours", "Flujo(pipeline): spill outputs over 4 KiB to the result store"),
    ("ours-nospill", "ours, spill off", "ours", "Flujo(pipeline, spill_bytes=0)"),
    ("flujo0611-in-memory", "Flujo 0.6.11 (in-memory)", "flujo0611", "persist_state=False"),
    ("flujo0611-default", "Flujo 0.6.11 (default)", "flujo0611", "SQLite state backend"),
]


def _progress(text: str) -> None:
    print(f"[memory] {text}", file=sys.stderr, flush=True)


def _peak_kib() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak  # bytes on macOS


def _current_kib() -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


# ---------------------------------------------------------------------------
# Ours, in a child process
# ---------------------------------------------------------------------------


def child(iterations: int, blob_bytes: int, spill_bytes: int, transcript: bool) -> dict[str, Any]:
    """One measured run of ours in this (fresh) process."""
    from flujo import Flujo, LoopStep, Pipeline, Step
    from flujo.runtime.results import EventLog
    from flujo.transcript import iter_transcript

    def big(x: Any) -> dict[str, Any]:
        n = x["n"] if isinstance(x, dict) else 0
        return {"n": n + 1, "blob": "x" * blob_bytes}

    loop = LoopStep(
        "loop",
        body=Step("big", agent=big),
        exit_when=f"output.n >= {iterations}",
        max_iterations=iterations,
    )
    runner = Flujo(Pipeline([loop]), spill_bytes=spill_bytes)
    gc.collect()
    baseline = _peak_kib()
    started = time.perf_counter()
    result = runner.run(0)
    elapsed = time.perf_counter() - started
    peak = _peak_kib()
    retained = _current_kib()
    n = result.output.get("n") if isinstance(result.output, dict) else None
    log = result.events
    record: dict[str, Any] = {
        "engine": "ours",
        "spill_bytes": spill_bytes,
        "iterations": iterations,
        "blob_bytes": blob_bytes,
        "output_n": n,
        "ok": result.success and n == iterations,
        "baseline_rss_kib": baseline,
        "peak_rss_kib": peak,
        "growth_mib": (peak - baseline) / 1024,
        "retained_after_run_mib": None if retained is None else (retained - baseline) / 1024,
        "elapsed_s": elapsed,
        "events": len(log),
        "spilled_events": log.spilled if isinstance(log, EventLog) else 0,
        "store_bytes": log.store.size if isinstance(log, EventLog) else 0,
        "python": platform.python_version(),
    }
    if transcript:
        # Streamed to a file, as a CLI would write it: the lines are rendered as the
        # (spilled) events are read back, one at a time.
        state = result.state
        started = time.perf_counter()
        chars = 0
        with open(os.devnull, "w", encoding="utf-8") as sink:
            for line in iter_transcript(
                state.pipeline,
                result.iter_events(),
                state.limits,
                agent_caps=state.agent_caps,
                recorded=result.outcome,
            ):
                sink.write(line)
                chars += len(line)
        record["transcript_s"] = time.perf_counter() - started
        record["transcript_chars"] = chars
        record["growth_with_transcript_mib"] = (_peak_kib() - baseline) / 1024
    result.close()
    return record


def run_child(args: list[str], python: Path, cwd: Path, env: dict[str, str]) -> dict[str, Any]:
    proc = subprocess.run(
        [str(python), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    if proc.returncode != 0 or not lines:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        return {"error": f"exited with {proc.returncode}: {tail[-400:]}"}
    try:
        record: dict[str, Any] = json.loads(lines[-1])
    except json.JSONDecodeError as exc:
        return {"error": f"unparsable output: {exc}"}
    return record


def measure_ours(spill_bytes: int, settings: argparse.Namespace) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "FLUJO_SPILL_BYTES"}
    runs = []
    for i in range(settings.repeats):
        _progress(f"ours spill_bytes={spill_bytes}: run {i + 1} of {settings.repeats}")
        runs.append(
            run_child(
                [
                    "-m",
                    "benchmarks.memory",
                    "--child",
                    "--iterations",
                    str(settings.iterations),
                    "--blob-bytes",
                    str(settings.blob_bytes),
                    "--spill-bytes",
                    str(spill_bytes),
                    *([] if settings.transcript else ["--no-transcript"]),
                ],
                Path(sys.executable),
                REPO_ROOT,
                env,
            )
        )
    return summarize(runs)


# ---------------------------------------------------------------------------
# Flujo 0.6.11, in its own virtualenv
# ---------------------------------------------------------------------------


def ensure_peer_venv() -> str | None:
    _progress("peers: benchmarks/peers/setup.sh")
    proc = subprocess.run(
        ["bash", str(PEERS_DIR / "setup.sh")],
        cwd=REPO_ROOT,
        stdout=sys.stderr,
        stderr=sys.stderr,
        check=False,
    )
    return None if proc.returncode == 0 else f"setup.sh exited with {proc.returncode}"


def measure_peer(variant: str, repeats: int, settings: argparse.Namespace) -> dict[str, Any]:
    python = VENV_DIR / "flujo0611" / "bin" / "python"
    if not python.exists():
        return {"error": f"{python} missing: run benchmarks/peers/setup.sh"}
    env = {
        k: v
        for k, v in os.environ.items()
        if k != "PYTHONPATH" and not k.startswith("FLUJO_") and k != "VIRTUAL_ENV"
    }
    runs = []
    for i in range(repeats):
        _progress(f"Flujo 0.6.11 {variant}: run {i + 1} of {repeats}")
        with tempfile.TemporaryDirectory(prefix="flujo-bench-memory-") as scratch:
            runs.append(
                run_child(
                    [
                        "-E",
                        "-s",
                        str(PEERS_DIR / "flujo0611_memory.py"),
                        "--variant",
                        variant,
                        "--iterations",
                        str(settings.iterations),
                        "--blob-bytes",
                        str(settings.blob_bytes),
                        "--budget-s",
                        str(settings.budget_s),
                    ],
                    python,
                    Path(scratch),
                    env,
                )
            )
    return summarize(runs)


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in runs if "error" not in r or r.get("error") is None]
    ok = [r for r in ok if "growth_mib" in r]
    if not ok:
        return {"error": "; ".join(str(r.get("error")) for r in runs), "runs": runs}
    out: dict[str, Any] = {
        "growth_mib": statistics.median(r["growth_mib"] for r in ok),
        "elapsed_s": statistics.median(r["elapsed_s"] for r in ok),
        "all_ok": all(r.get("ok") for r in ok),
        "aborted": any(r.get("aborted") for r in ok),
        "completed_iterations": min(
            r.get("completed_iterations", r.get("output_n") or 0) for r in ok
        ),
        "runs": runs,
    }
    with_transcript = [r["growth_with_transcript_mib"] for r in ok if "transcript_s" in r]
    if with_transcript:
        out["growth_with_transcript_mib"] = statistics.median(with_transcript)
        out["transcript_s"] = statistics.median(r["transcript_s"] for r in ok)
    return out


def render(results: dict[str, dict[str, Any]], settings: argparse.Namespace) -> str:
    rows = [
        "| configuration | peak RSS growth | wall time | with transcript written | note |",
        "|---|---:|---:|---:|---|",
    ]
    for key, header, _engine, how in CONFIGS:
        r = results.get(key)
        if r is None:
            continue
        if "error" in r:
            rows.append(f"| {header} | error | - | - | {r['error'][:120]} |")
            continue
        note = how
        if r.get("aborted"):
            note += (
                f"; cut after {settings.budget_s:g} s at {r['completed_iterations']:,} "
                "iterations (lower bound)"
            )
        elif not r.get("all_ok"):
            note += "; WRONG OUTPUT"
        transcript = (
            f"{r['growth_with_transcript_mib']:.1f} MiB, +{r['transcript_s']:.1f} s"
            if "growth_with_transcript_mib" in r
            else "-"
        )
        prefix = "≥ " if r.get("aborted") else ""
        rows.append(
            f"| {header} | {prefix}{r['growth_mib']:.1f} MiB | {prefix}{r['elapsed_s']:.2f} s "
            f"| {transcript} | {note} |"
        )
    lines = [
        f"{settings.iterations:,}-iteration loop, {settings.blob_bytes:,}-byte outputs "
        f"(median of {settings.repeats} fresh process(es) for ours)",
        "",
        *rows,
        "",
    ]
    ours = results.get("ours", {})
    if "growth_mib" in ours:
        met = ours["growth_mib"] <= TARGET_MIB
        lines.append(
            f"Target: ours <= {TARGET_MIB:g} MiB peak RSS growth: "
            f"{'met' if met else 'NOT met'} ({ours['growth_mib']:.1f} MiB)"
        )
        for key in ("flujo0611-in-memory", "flujo0611-default"):
            peer = results.get(key, {})
            if "growth_mib" in peer and peer["growth_mib"] > 0:
                lines.append(
                    f"ours / {key}: {ours['growth_mib'] / peer['growth_mib']:.3f} of the memory, "
                    f"{ours['elapsed_s'] / peer['elapsed_s']:.3f} of the time"
                )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one run per configuration")
    parser.add_argument("--skip-peers", action="store_true", help="measure ours only")
    parser.add_argument("--no-setup", action="store_true", help="do not run setup.sh first")
    parser.add_argument("--repeats", type=int, default=None, help="runs of ours (default 3)")
    parser.add_argument(
        "--peer-repeats",
        type=int,
        default=None,
        help="runs of Flujo 0.6.11 in-memory (default 3; default configuration: always 1)",
    )
    parser.add_argument("--iterations", type=int, default=ITERATIONS)
    parser.add_argument("--blob-bytes", type=int, default=BLOB_BYTES)
    parser.add_argument(
        "--budget-s",
        type=float,
        default=300.0,
        help="cut a Flujo 0.6.11 run after this long (default 300; 0: no limit)",
    )
    parser.add_argument(
        "--no-transcript", dest="transcript", action="store_false", help="skip the transcript"
    )
    parser.add_argument(
        "--output", type=Path, default=RESULTS_DIR / "memory.json", help="JSON results"
    )
    # internal: one measured run of ours in this process
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--spill-bytes", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.peer_repeats is None:
        args.peer_repeats = 1 if args.quick else 3
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        from flujo.runtime.results import DEFAULT_SPILL_BYTES

        spill = DEFAULT_SPILL_BYTES if args.spill_bytes is None else args.spill_bytes
        record = child(args.iterations, args.blob_bytes, spill, args.transcript)
        sys.stdout.write(json.dumps(record) + "\n")
        return 0
    from flujo.runtime.results import DEFAULT_SPILL_BYTES

    started = dt.datetime.now(dt.UTC)
    results: dict[str, dict[str, Any]] = {
        "ours": measure_ours(DEFAULT_SPILL_BYTES, args),
        "ours-nospill": measure_ours(0, args),
    }
    if not args.skip_peers:
        setup_error = None if args.no_setup else ensure_peer_venv()
        for variant, repeats in (("in-memory", args.peer_repeats), ("default", 1)):
            key = f"flujo0611-{variant}"
            results[key] = (
                {"error": setup_error} if setup_error else measure_peer(variant, repeats, args)
            )
    report = render(results, args)
    print(report)
    try:
        load: list[float] | None = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        load = None
    data = {
        "benchmark": "memory",
        "started": started.isoformat(timespec="seconds"),
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(
            [
                Path(sys.executable).name,
                "-m",
                "benchmarks.memory",
                *(argv if argv else sys.argv[1:]),
            ]
        ),
        "workload": WORKLOAD.replace("ITERATIONS", str(args.iterations)).replace(
            "BLOB", str(args.blob_bytes)
        ),
        "method": (
            "each run in a fresh process; peak RSS growth = ru_maxrss after the run - ru_maxrss "
            "after imports, pipeline and runner construction and gc.collect(); wall time of "
            "the run call; medians over runs"
        ),
        "target_mib": TARGET_MIB,
        "configurations": {key: how for key, _h, _e, how in CONFIGS},
        "settings": {
            "iterations": args.iterations,
            "blob_bytes": args.blob_bytes,
            "repeats": args.repeats,
            "peer_repeats": args.peer_repeats,
            "budget_s": args.budget_s,
        },
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "loadavg_at_finish": load,
        },
        "results": results,
        "report": report,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(data, indent=2) + "\n")
    _progress(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
