"""Run every benchmark in sequence, then print one summary table of the headline figures.

Run from the repository root (``bash benchmarks/run.sh`` also creates ``.venv`` first)::

    .venv/bin/python -m benchmarks [--quick] [--only NAMES] [--skip-peers]

Each benchmark runs as a subprocess of this interpreter (``python -m benchmarks.<name>``)
from the repository root, with its output streamed as it comes.  ``--quick`` is passed to
the scripts that take it (``engine_overhead``, ``memory``, ``governor``); the others are
already short and run as they are.  ``--skip-peers`` is passed to the scripts that measure
peers (``engine_overhead``, ``memory``).

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
DASH = "—"


@dataclass(frozen=True)
class Benchmark:
    name: str
    full_args: tuple[str, ...] = ()
    quick_args: tuple[str, ...] = ()
    skip_peers_args: tuple[str, ...] = ()


BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark("engine_overhead", quick_args=("--quick",), skip_peers_args=("--skip-peers",)),
    Benchmark("memory", quick_args=("--quick",), skip_peers_args=("--skip-peers",)),
    Benchmark("http_agent"),
    Benchmark("tool_loop", quick_args=("--quick",)),
    Benchmark("operator_load"),
    Benchmark("operator_latency", quick_args=("--quick",)),
    Benchmark(
        "governor",
        full_args=("--http", "--operator"),
        quick_args=("--quick", "--http", "--operator"),
    ),
    Benchmark("batch"),
    Benchmark("guard"),
)
NAMES: tuple[str, ...] = tuple(b.name for b in BENCHMARKS)


@dataclass
class Outcome:
    name: str
    command: list[str]
    exit_code: int | None
    seconds: float
    results_file: str
    results_fresh: bool
    results_present: bool


@dataclass(frozen=True)
class Row:
    benchmark: str
    figure: str
    ours: str
    beside: str
    ratio: str
    target: str
    verdict: str


# ---------------------------------------------------------------------------
# Small, None-tolerant helpers
# ---------------------------------------------------------------------------


def dig(data: Any, *keys: str | int) -> Any:
    """``data[k1][k2]...``, or None as soon as a key or index is missing."""
    for key in keys:
        if isinstance(data, Mapping) and isinstance(key, str):
            data = data.get(key)
        elif isinstance(data, Sequence) and not isinstance(data, str) and isinstance(key, int):
            data = data[key] if -len(data) <= key < len(data) else None
        else:
            return None
        if data is None:
            return None
    return data


def num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def fmt(value: Any, spec: str = ".2f", unit: str = "") -> str:
    v = num(value)
    return DASH if v is None else f"{format(v, spec)}{unit}"


def fmt_sig(value: Any, unit: str = "") -> str:
    """A figure with about three significant digits."""
    v = num(value)
    if v is None:
        return DASH
    text = f"{v:,.2f}" if abs(v) < 10 else f"{v:,.1f}" if abs(v) < 100 else f"{v:,.0f}"
    return text + unit


def usd(value: Any) -> str:
    v = num(value)
    return DASH if v is None else f"${v:.3f}"


def ratio(a: Any, b: Any) -> float | None:
    x, y = num(a), num(b)
    if x is None or y is None or y == 0:
        return None
    return x / y


def verdict(met: bool | None) -> str:
    return DASH if met is None else "met" if met else "MISSED"


def load_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# ---------------------------------------------------------------------------
# Per-benchmark rows
# ---------------------------------------------------------------------------

ENGINE_PEERS: tuple[tuple[str, str, float, str], ...] = (
    # (column in engine_overhead's table, label, target ratio, target text)
    ("Flujo 0.6.11 (in-memory)", "Flujo 0.6.11 (in-memory)", 1 / 10, "≤ 0.1 (1/10)"),
    ("Flujo 0.6.11 (default)", "Flujo 0.6.11 (default)", 1 / 10, "≤ 0.1 (1/10)"),
    ("LangGraph", "LangGraph 1.2", 1 / 3, "≤ 0.333 (1/3)"),
)


def _engine_absent(data: Mapping[str, Any], column: str) -> str:
    """Why a peer's cell is empty: not measured, an error, or no figure."""
    engine = "langgraph" if column == "LangGraph" else "flujo0611"
    record = dig(data, "engines", engine)
    if record is None:
        return "not measured"
    error = dig(record, "error")
    if error:
        text = " ".join(str(error).split())
        return f"error: {text[:80]}"
    return DASH


def rows_engine_overhead(data: Mapping[str, Any]) -> list[Row]:
    rows: list[Row] = []
    table = data.get("table")
    for entry in table if isinstance(table, list) else []:
        workload = str(dig(entry, "workload") or "?")
        ours_us = dig(entry, "us_per_step", "ours µs/step")
        ours_text = dig(entry, "cells", "ours µs/step") or fmt_sig(ours_us)
        ours_bound = str(ours_text).startswith("≥")
        for column, label, target, target_text in ENGINE_PEERS:
            peer_us = dig(entry, "us_per_step", column)
            peer_text = str(dig(entry, "cells", column) or fmt_sig(peer_us))
            if peer_text in ("-", "", DASH):
                peer_text = _engine_absent(data, column)
            r = ratio(ours_us, peer_us)
            # A peer figure cut by the time budget is a lower bound: the ratio is an upper bound.
            prefix = "≤ " if peer_text.startswith("≥") and not ours_bound else ""
            rows.append(
                Row(
                    "engine_overhead",
                    f"{workload}: µs per step",
                    f"{ours_text} µs",
                    f"{label}: {peer_text}" + (" µs" if num(peer_us) is not None else ""),
                    DASH if r is None else f"{prefix}{r:.3g}",
                    target_text,
                    DASH if r is None or (prefix == "" and ours_bound) else verdict(r <= target),
                )
            )
    return rows


MEMORY_CONFIGS: tuple[tuple[str, str], ...] = (
    ("ours-nospill", "ours without spilling"),
    ("flujo0611-in-memory", "Flujo 0.6.11 (in-memory)"),
    ("flujo0611-default", "Flujo 0.6.11 (default)"),
)


def _memory_figure(record: Any, key: str, unit: str) -> str:
    if not isinstance(record, Mapping):
        return DASH
    if "error" in record:
        return "error"
    text = fmt_sig(record.get(key), unit)
    return ("≥ " + text) if record.get("aborted") and text != DASH else text


def rows_memory(data: Mapping[str, Any]) -> list[Row]:
    results = data.get("results") or {}
    ours = results.get("ours")
    target = num(data.get("target_mib")) or 50.0
    growth = num(dig(ours, "growth_mib"))
    iterations = dig(data, "settings", "iterations")
    blob = dig(data, "settings", "blob_bytes")
    what = (
        f"{int(iterations):,}-iteration loop, {int(blob) // 1024} KiB outputs"
        if num(iterations) is not None and num(blob) is not None
        else "loop"
    )
    rows: list[Row] = []
    for key, label, unit in (
        ("growth_mib", "peak RSS growth", " MiB"),
        ("elapsed_s", "wall", " s"),
    ):
        first = True
        for config, peer_label in MEMORY_CONFIGS:
            peer = results.get(config)
            if peer is None and config.startswith("flujo0611"):
                peer_text = "not measured"
            else:
                peer_text = _memory_figure(peer, key, unit)
            r = ratio(dig(ours, key), dig(peer, key))
            aborted = bool(dig(peer, "aborted"))
            is_growth = key == "growth_mib"
            rows.append(
                Row(
                    "memory",
                    f"{label} ({what})",
                    _memory_figure(ours, key, unit),
                    f"{peer_label}: {peer_text}",
                    DASH if r is None else f"{'≤ ' if aborted else ''}{r:.3g}",
                    f"ours ≤ {target:g} MiB" if is_growth and first else DASH,
                    verdict(None if growth is None else growth <= target)
                    if is_growth and first
                    else DASH,
                )
            )
            first = False
    return rows


def rows_http_agent(data: Mapping[str, Any]) -> list[Row]:
    pooled = dig(data, "variants", "pooled")
    unpooled = dig(data, "variants", "client per call")
    r = num(data.get("throughput_ratio_pooled_vs_per_call"))
    if r is None:
        r = ratio(dig(pooled, "throughput_per_s"), dig(unpooled, "throughput_per_s"))
    target = num(data.get("target_ratio")) or 3.0
    calls, conc = data.get("calls"), data.get("concurrency")
    failed = data.get("failed_calls")
    return [
        Row(
            "http_agent",
            f"openai agent calls/s ({calls} calls, {conc} in flight)",
            f"pooled: {fmt(dig(pooled, 'throughput_per_s'), '.0f')}",
            f"client per call: {fmt(dig(unpooled, 'throughput_per_s'), '.0f')}",
            DASH if r is None else f"{r:.1f}x",
            f"≥ {target:g}x",
            verdict(None if r is None else r >= target),
        ),
        Row(
            "http_agent",
            "latency p50 / p99",
            f"pooled: {fmt(dig(pooled, 'p50_ms'), '.1f')} / {fmt(dig(pooled, 'p99_ms'), '.0f')} ms",
            f"client per call: {fmt(dig(unpooled, 'p50_ms'), '.1f')} / "
            f"{fmt(dig(unpooled, 'p99_ms'), '.0f')} ms",
            DASH,
            DASH,
            DASH,
        ),
        Row(
            "http_agent",
            "failed calls / server connections opened",
            f"{failed if failed is not None else DASH} / "
            f"{data.get('server_connections_opened', DASH)}",
            DASH,
            DASH,
            "0 failed",
            verdict(None if num(failed) is None else failed == 0),
        ),
    ]


def rows_tool_loop(data: Mapping[str, Any]) -> list[Row]:
    ours = dig(data, "variants", "flujo")
    bare = dig(data, "variants", "openai client")
    r = num(data.get("ratio_flujo_vs_client"))
    target = num(data.get("target_ratio")) or 1.2
    return [
        Row(
            "tool_loop",
            f"tool-loop time per round ({data.get('rounds')} rounds, "
            f"{data.get('runs')} runs; 1 model + 1 http tool call)",
            f"flujo: {fmt(dig(ours, 'median_per_round_ms'), '.2f')} ms",
            f"openai client loop: {fmt(dig(bare, 'median_per_round_ms'), '.2f')} ms",
            DASH if r is None else f"{r:.2f}x",
            f"≤ {target:g}x",
            verdict(None if r is None else r <= target),
        )
    ]


def rows_operator_load(data: Mapping[str, Any]) -> list[Row]:
    executors = data.get("executors")
    if isinstance(executors, Mapping) and executors:
        return [r for name, figures in executors.items() for r in _rows_load(figures, name)]
    return _rows_load(data, None)


def rows_operator_latency(data: Mapping[str, Any]) -> list[Row]:
    """Wall time by executor beside embedded; API writes and operator CPU per step."""
    rows: list[Row] = []
    checks = data.get("checks") or {}
    for name, row in (data.get("pipelines") or {}).items():
        steps, embedded = row.get("steps"), num(row.get("embedded_ms"))
        for latency in data.get("latencies") or []:
            runner = row.get(f"runner@{latency:g}s") or {}
            pod = row.get(f"pod@{latency:g}s") or {}
            wall, pod_wall = num(runner.get("wall_ms")), num(pod.get("wall_ms"))
            budget = None if embedded is None else latency * 1000 + embedded + 20 * (steps or 0)
            rows.append(
                Row(
                    f"operator_latency ({name}, {steps} steps, pod start {latency:g} s)",
                    f"wall: runner (embedded {fmt(embedded, '.1f')} ms); "
                    f"writes/step {fmt(runner.get('writes_per_step'), '.2f')} "
                    f"(pod {fmt(pod.get('writes_per_step'), '.2f')}); "
                    f"operator CPU/step {fmt(runner.get('cpu_ms_per_step'), '.1f')} ms "
                    f"(pod {fmt(pod.get('cpu_ms_per_step'), '.1f')})",
                    f"runner: {fmt(wall, '.0f')} ms",
                    f"pod: {fmt(pod_wall, '.0f')} ms",
                    DASH if not wall or pod_wall is None else f"{pod_wall / wall:.1f}x faster",
                    DASH if budget is None else f"≤ {budget:.0f} ms",
                    verdict(None if wall is None or budget is None else wall <= budget),
                )
            )
    if checks:
        met = sum(1 for ok in checks.values() if ok)
        rows.append(
            Row(
                "operator_latency",
                "targets met (wall, ≤ 1.2 writes/step, CPU/step ≤ pod, ≥ 10x on the loop)",
                f"{met}/{len(checks)}",
                DASH,
                DASH,
                "all",
                verdict(met == len(checks)),
            )
        )
    return rows


def _rows_load(data: Mapping[str, Any], executor: str | None) -> list[Row]:
    runs, steps = data.get("runs"), data.get("steps_per_run")
    wps = num(data.get("writes_per_step"))
    wps_target = num(dig(data, "targets", "writes_per_step")) or 2.5
    p50 = num(data.get("first_pod_ms_p50"))
    p50_target = num(dig(data, "targets", "first_pod_ms_p50")) or 50.0
    succeeded = data.get("runs_succeeded")
    cpu = num(data.get("operator_cpu_seconds"))
    n_runs, n_per_run = num(runs), num(steps)
    n_steps = n_runs * n_per_run if n_runs is not None and n_per_run is not None else None
    cpu_per_step = ratio(cpu, n_steps)
    cpu_ms_per_step = None if cpu_per_step is None else cpu_per_step * 1000
    writes = data.get("api_writes")
    writes_text = (
        ", ".join(f"{k}: {v}" for k, v in writes.items()) if isinstance(writes, dict) else DASH
    )
    bench = f"operator_load ({runs} runs x {steps} steps)"
    if executor is not None:
        bench = f"operator_load ({runs} runs x {steps} steps, executor {executor})"
    return [
        Row(
            bench,
            "API writes per step",
            fmt(wps, ".2f"),
            writes_text,
            DASH,
            f"≤ {wps_target:g}",
            verdict(None if wps is None else wps <= wps_target),
        ),
        Row(
            bench,
            "run created → first pod, p50 / p99",
            f"{fmt(p50, '.0f')} / {fmt(data.get('first_pod_ms_p99'), '.0f')} ms",
            DASH,
            DASH,
            f"p50 ≤ {p50_target:g} ms",
            verdict(None if p50 is None else p50 <= p50_target),
        ),
        Row(
            bench,
            "runs succeeded; total; runs/s",
            f"{succeeded if succeeded is not None else DASH}/{runs}; "
            f"{fmt(data.get('total_seconds'), '.1f', ' s')}; {fmt(data.get('runs_per_second'))}",
            DASH,
            DASH,
            "all runs succeed",
            verdict(None if succeeded is None else succeeded == runs),
        ),
        Row(
            bench,
            "operator CPU",
            f"{fmt(cpu, '.2f', ' s')} ({fmt(cpu_ms_per_step, '.1f', ' ms')} per step)",
            DASH,
            DASH,
            DASH,
            DASH,
        ),
    ]


def rows_governor(data: Mapping[str, Any]) -> list[Row]:
    rows: list[Row] = []
    entries = data.get("rows")
    for entry in entries if isinstance(entries, list) else []:
        a = dig(entry, "aggregate") or {}
        label = f"{dig(entry, 'agent')} N={dig(entry, 'n')} {dig(entry, 'policy')}"
        runs = f"{a.get('breached_runs', DASH)}/{a.get('runs', DASH)} runs breached"
        started_after = sum(
            int(a.get(k) or 0)
            for k in (
                "started_after_breach",
                "launch_commands_after_breach",
                "requests_after_breach",
            )
        )
        within = a.get("all_within_bound")
        rows.append(
            Row(
                "governor",
                f"{label}: overspend p50 / max, in calls ({runs})",
                f"ledger {fmt(dig(a, 'overspend_calls', 'p50'))} / "
                f"{fmt(dig(a, 'overspend_calls', 'max'))}",
                f"billed {fmt(dig(a, 'billed_overspend_calls', 'p50'))} / "
                f"{fmt(dig(a, 'billed_overspend_calls', 'max'))}; bound p50 "
                f"{fmt(dig(a, 'bound_calls', 'p50'), '.1f')}; uncounted "
                f"{a.get('uncounted_results_total', DASH)}",
                DASH,
                "ledger ≤ bound",
                verdict(within if isinstance(within, bool) else None),
            )
        )
        rows.append(
            Row(
                "governor",
                f"{label}: cancel latency (all p50 / p99; per call p50 / p99); → returned p50",
                f"{fmt(dig(a, 'cancel_latency_max_ms', 'p50'))} / "
                f"{fmt(dig(a, 'cancel_latency_max_ms', 'p99'))} ms; "
                f"{fmt(dig(a, 'cancel_latency_per_call_ms', 'p50'))} / "
                f"{fmt(dig(a, 'cancel_latency_per_call_ms', 'p99'))} ms; "
                f"{fmt(dig(a, 'breach_to_run_returned_ms', 'p50'))} ms",
                f"in flight at breach p50 {fmt(dig(a, 'in_flight_at_breach', 'p50'), '.0f')}; "
                f"run p50 {fmt(dig(a, 'run_ms', 'p50'), '.0f')} ms",
                DASH,
                f"0 started after breach (here {started_after})",
                verdict(started_after == 0),
            )
        )
    return rows


def rows_batch(data: Mapping[str, Any]) -> list[Row]:
    entries = [r for r in data.get("rows") or [] if isinstance(r, dict)]
    items = data.get("items")
    latency = num(data.get("latency_s"))
    bench = (
        f"batch ({items} items, {fmt(None if latency is None else latency * 1000, 'g')} ms/call)"
    )

    def name(r: Mapping[str, Any]) -> str:
        return f"{r.get('variant', '?')}, maxConc {r.get('max_concurrency', '?')}"

    def figures(r: Mapping[str, Any]) -> str:
        text = (
            f"{r.get('calls', DASH)} calls, {fmt(r.get('wall_s'), '.3f', ' s')}, "
            f"CPU {fmt(r.get('cpu_s'), '.3f', ' s')}"
        )
        if r.get("limit_usd") is not None:
            text += (
                f"; {r.get('status', DASH)} at {usd(r.get('cost_usd'))}"
                f" (limit {usd(r.get('limit_usd'))}, over {usd(r.get('overspend_usd'))})"
            )
        return text

    def reference(r: Mapping[str, Any]) -> Mapping[str, Any] | None:
        budget = r.get("limit_usd") is not None
        unbatched = [
            u
            for u in entries
            if u.get("batch_size") is None and (u.get("limit_usd") is not None) == budget
        ]
        same = [u for u in unbatched if u.get("max_concurrency") == r.get("max_concurrency")]
        candidates = same or unbatched
        return candidates[0] if candidates else None

    rows: list[Row] = []
    for r in entries:
        ref = reference(r) if r.get("batch_size") is not None else None
        # Budget runs stop at different points: their wall times are not comparable.
        comparable = ref is not None and r.get("limit_usd") is None
        speedup = ratio(dig(ref, "wall_s"), r.get("wall_s")) if comparable else None
        rows.append(
            Row(
                bench,
                name(r),
                figures(r),
                DASH if ref is None else f"{name(ref)}: {figures(ref)}",
                DASH if speedup is None else f"{speedup:.1f}x faster",
                DASH,
                DASH,
            )
        )
    return rows


def rows_guard(data: Mapping[str, Any]) -> list[Row]:
    threshold = num(data.get("threshold")) or 2.0
    verdicts = {
        str(v.get("workload")): v for v in data.get("verdicts") or [] if isinstance(v, dict)
    }
    workloads = data.get("workloads") or {}
    rows: list[Row] = []
    for workload, m in workloads.items() if isinstance(workloads, dict) else []:
        committed = num(dig(data, "baseline", workload))
        v = verdicts.get(workload, {})
        ok = v.get("ok")
        rows.append(
            Row(
                "guard",
                f"{workload}: µs per step, ours vs plain asyncio",
                f"{fmt_sig(dig(m, 'ours_us_per_step'))} µs",
                f"plain asyncio: {fmt(dig(m, 'baseline_us_per_step'), '.3f')} µs",
                f"{fmt_sig(dig(m, 'ratio'))} (committed {fmt_sig(committed)})",
                DASH
                if committed is None
                else f"≤ {threshold:g} x committed = {threshold * committed:,.1f}",
                verdict(ok if isinstance(ok, bool) else None),
            )
        )
    return rows


ROW_BUILDERS: dict[str, Callable[[Mapping[str, Any]], list[Row]]] = {
    "engine_overhead": rows_engine_overhead,
    "memory": rows_memory,
    "http_agent": rows_http_agent,
    "tool_loop": rows_tool_loop,
    "operator_load": rows_operator_load,
    "operator_latency": rows_operator_latency,
    "governor": rows_governor,
    "batch": rows_batch,
    "guard": rows_guard,
}


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
