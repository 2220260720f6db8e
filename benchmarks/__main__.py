"""Run every benchmark in sequence, then print one summary table of the headline figures.

Run from the repository root (``bash benchmarks/run.sh`` also creates ``.venv`` first)::

    .venv/bin/python -m benchmarks [--quick] [--only NAMES] [--skip-peers]

Each benchmark runs as a subprocess of this interpreter (``python -m benchmarks.<name>``)
from the repository root, with its output streamed as it comes.  ``--quick`` is passed to
the scripts that take it (``engine_overhead``, ``memory``, ``store``, ``template_bombs``,
``tool_loop``, ``operator_latency``, ``governor``); the others run as they are.
``--skip-peers`` is passed to the scripts that measure peers (``engine_overhead``,
``memory``, ``store``).  How each results file becomes rows of the table is
``benchmarks/summary_rows.py``.

Afterwards it reads each ``benchmarks/results/<name>.json`` and prints one markdown table:
every headline figure of ours with the peers' (or the reference's) figure beside it, the
ratio, the target and whether it is met.  A results file that the benchmark did not rewrite
in this invocation is marked *stale*.  It writes ``benchmarks/results/summary.json`` and
``benchmarks/results/summary.md``.  A benchmark that fails (non-zero exit) is reported with
its exit code and the next one runs; the exit code is 1 when any benchmark failed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

if not __package__:  # run as a file: python benchmarks/__main__.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.summary_rows import (
    DASH,
    Row,
    rows_batch,
    rows_engine_overhead,
    rows_governor,
    rows_guard,
    rows_http_agent,
    rows_memory,
    rows_store,
    rows_template_bombs,
    rows_tool_loop,
)
from benchmarks.summary_rows_operator import (
    rows_operator_isolation,
    rows_operator_latency,
    rows_operator_load,
)

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"


@dataclass(frozen=True)
class Benchmark:
    name: str
    full_args: tuple[str, ...] = ()
    quick_args: tuple[str, ...] = ()
    skip_peers_args: tuple[str, ...] = ()


BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark("engine_overhead", quick_args=("--quick",), skip_peers_args=("--skip-peers",)),
    Benchmark("memory", quick_args=("--quick",), skip_peers_args=("--skip-peers",)),
    Benchmark("store", quick_args=("--quick",), skip_peers_args=("--skip-peers",)),
    Benchmark("template_bombs", quick_args=("--quick",)),
    Benchmark("http_agent"),
    Benchmark("tool_loop", quick_args=("--quick",)),
    Benchmark("operator_load"),
    Benchmark("operator_latency", quick_args=("--quick",)),
    Benchmark("operator_isolation"),
    Benchmark(
        "governor",
        full_args=("--http", "--operator"),
        quick_args=("--quick", "--http", "--operator"),
    ),
    Benchmark("batch"),
    Benchmark("guard"),
)
NAMES: tuple[str, ...] = tuple(b.name for b in BENCHMARKS)

# How each benchmark's results JSON becomes rows of the table (benchmarks/summary_rows*.py).
ROW_BUILDERS: dict[str, Callable[[Mapping[str, Any]], list[Row]]] = {
    "engine_overhead": rows_engine_overhead,
    "memory": rows_memory,
    "store": rows_store,
    "template_bombs": rows_template_bombs,
    "http_agent": rows_http_agent,
    "tool_loop": rows_tool_loop,
    "operator_load": rows_operator_load,
    "operator_latency": rows_operator_latency,
    "operator_isolation": rows_operator_isolation,
    "governor": rows_governor,
    "batch": rows_batch,
    "guard": rows_guard,
}


@dataclass
class Outcome:
    name: str
    command: list[str]
    exit_code: int | None
    seconds: float
    results_file: str
    results_fresh: bool
    results_present: bool


def load_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# ---------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def build_rows(outcomes: list[Outcome]) -> list[Row]:
    rows: list[Row] = []
    for outcome in outcomes:
        data = load_json(Path(outcome.results_file))
        notes = [] if outcome.results_fresh else ["stale"]
        if outcome.exit_code not in (0, None):
            notes.insert(0, f"FAILED, exit {outcome.exit_code}")
        suffix = f" ({'; '.join(notes)})" if notes else ""
        if data is None:
            rows.append(Row(outcome.name, "no results", DASH, DASH, DASH, DASH, _status(outcome)))
            continue
        try:
            built = ROW_BUILDERS[outcome.name](data)
        except Exception as exc:  # a results file of an unexpected shape
            built = [
                Row(outcome.name, f"unreadable results ({type(exc).__name__})", DASH, *[DASH] * 4)
            ]
        if not built:
            built = [Row(outcome.name, "no figures in results", DASH, DASH, DASH, DASH, DASH)]
        rows += [replace(r, benchmark=r.benchmark + suffix) for r in built]
    return rows


def _status(outcome: Outcome) -> str:
    if outcome.exit_code is None:
        return "not run"
    return "ok" if outcome.exit_code == 0 else f"FAILED (exit {outcome.exit_code})"


def render(outcomes: list[Outcome], rows: list[Row], settings: Mapping[str, Any]) -> str:
    headers = [
        "benchmark",
        "figure",
        "ours",
        "beside it (peer / reference)",
        "ratio",
        "target",
        "verdict",
    ]
    lines = [
        f"# Benchmark summary ({settings['finished']})",
        "",
        f"Mode: {settings['mode']}; Python {platform.python_version()} on "
        f"{platform.platform()}, {os.cpu_count()} CPU(s); load average at the end: "
        f"{settings['loadavg']}.",
        "",
        "Benchmarks run:",
        "",
    ]
    for o in outcomes:
        freshness = (
            "results written by this run"
            if o.results_fresh
            else "results from an earlier run (stale)"
            if o.results_present
            else "no results file"
        )
        command = " ".join(["python", *o.command[1:]])
        took = "" if o.exit_code is None else f", {o.seconds:.0f} s"
        lines.append(f"- `{o.name}`: {_status(o)}{took}, `{command}`; {freshness}")
    lines += [
        "",
        "ratio = ours / peer (lower is better) unless stated; '≥' marks a figure cut by a "
        "time budget (a lower bound), '≤' a ratio that is therefore an upper bound; "
        f"'{DASH}' = not available.",
        "",
        "| " + " | ".join(headers) + " |",
        "|" + "|".join(["---"] * len(headers)) + "|",
    ]
    for r in rows:
        lines.append("| " + " | ".join(_md_cell(str(c)) for c in asdict(r).values()) + " |")
    failed = [o.name for o in outcomes if o.exit_code not in (0, None)]
    lines += [
        "",
        f"Failed: {', '.join(failed)}" if failed else "All benchmarks exited 0.",
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="pass --quick to the benchmarks that take it (a few minutes in all)",
    )
    parser.add_argument(
        "--only",
        default="",
        help=f"comma-separated subset to run, in this order: {','.join(NAMES)}",
    )
    parser.add_argument(
        "--skip-peers",
        action="store_true",
        help="do not measure Flujo 0.6.11 / LangGraph (no peer virtualenvs needed)",
    )
    parser.add_argument(
        "--summary-only",
        action="store_true",
        help="run nothing: summarise the results files already in benchmarks/results/",
    )
    args = parser.parse_args(argv)
    only = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in only if n not in NAMES]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}; choose from {','.join(NAMES)}")
    args.selected = [b for b in BENCHMARKS if not only or b.name in only]
    return args


def command_for(bench: Benchmark, quick: bool, skip_peers: bool) -> list[str]:
    args = list(bench.quick_args if quick else bench.full_args)
    if skip_peers:
        args += bench.skip_peers_args
    return [sys.executable, "-m", f"benchmarks.{bench.name}", *args]


def run_one(bench: Benchmark, quick: bool, skip_peers: bool, execute: bool) -> Outcome:
    results = RESULTS_DIR / f"{bench.name}.json"
    command = command_for(bench, quick, skip_peers)
    if not execute:
        return Outcome(bench.name, command, None, 0.0, str(results), False, results.exists())
    before = results.stat().st_mtime_ns if results.exists() else None
    banner = f"=== [{bench.name}] {' '.join(['python', *command[1:]])}"
    print(f"\n{banner}", flush=True)
    start = time.perf_counter()
    try:
        code = subprocess.run(command, cwd=REPO_ROOT, check=False).returncode
    except OSError as exc:
        print(f"[benchmarks] could not start {bench.name}: {exc}", file=sys.stderr, flush=True)
        code = 127
    seconds = time.perf_counter() - start
    after = results.stat().st_mtime_ns if results.exists() else None
    fresh = after is not None and after != before
    print(
        f"=== [{bench.name}] exit {code} after {seconds:.1f} s"
        + ("" if fresh else f"; {results.name} was not rewritten"),
        flush=True,
    )
    return Outcome(bench.name, command, code, seconds, str(results), fresh, after is not None)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = dt.datetime.now(dt.UTC)
    execute = not args.summary_only
    outcomes = [run_one(b, args.quick, args.skip_peers, execute) for b in args.selected]
    try:
        load: list[float] | None = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        load = None
    mode = "summary only" if not execute else ("quick" if args.quick else "full")
    if args.skip_peers:
        mode += ", peers skipped"
    settings = {
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "mode": mode,
        "loadavg": load,
    }
    rows = build_rows(outcomes)
    markdown = render(outcomes, rows, settings)
    print("\n" + markdown, flush=True)

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    summary = {
        "benchmark": "summary",
        "started": started.isoformat(timespec="seconds"),
        **settings,
        "quick": args.quick,
        "skip_peers": args.skip_peers,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "benchmarks": [asdict(o) | {"status": _status(o)} for o in outcomes],
        "rows": [asdict(r) for r in rows],
        "failed": [o.name for o in outcomes if o.exit_code not in (0, None)],
    }
    (RESULTS_DIR / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (RESULTS_DIR / "summary.md").write_text(markdown)
    print(f"wrote {RESULTS_DIR / 'summary.md'} and {RESULTS_DIR / 'summary.json'}", flush=True)
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
