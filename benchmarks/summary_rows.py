"""How each benchmark's results JSON becomes rows of the summary table.

``python -m benchmarks`` (``benchmarks/__main__.py``) runs the benchmarks, reads each
``benchmarks/results/<name>.json`` and renders one table.  This module holds the reading:
one ``rows_<name>`` function per benchmark, which takes the parsed JSON and returns its
``Row``s (our figure, the peer's or the reference's beside it, the ratio, the target and
the verdict), and the small None-tolerant helpers they share; a figure missing from a
results file renders as a dash, never a guess.  The operator benchmarks' rows are in
``summary_rows_operator.py`` (it imports these helpers), and ``__main__.py``'s
``ROW_BUILDERS`` maps each benchmark's name to its function.  Kept apart from the runner
so that each module stays short and each benchmark's reading of its JSON sits in one place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

DASH = "—"


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


def _peer_absent(peer: Any) -> str:
    """Why Flujo 0.6.11's cell is empty in ``store.json``: not measured, or its error."""
    if not isinstance(peer, Mapping):
        return "not measured"
    error = peer.get("error")
    return f"error: {' '.join(str(error).split())[:80]}" if error else DASH


def rows_store(data: Mapping[str, Any]) -> list[Row]:
    """Per workload: stored / in memory (≤ 2x), and Flujo 0.6.11 default / stored (≥ 10x)."""
    ours = data.get("ours")
    peer = data.get("flujo0611_default")
    rows: list[Row] = []
    for workload, r in ours.items() if isinstance(ours, Mapping) else []:
        stored, memory = dig(r, "stored_us_per_step"), dig(r, "memory_us_per_step")
        slower = num(dig(r, "ratio_median_of_rounds"))
        if slower is None:
            slower = ratio(stored, memory)
        rows.append(
            Row(
                "store",
                f"{workload}: µs per step, journaled to a run store vs in memory "
                f"({dig(r, 'rounds')} rounds)",
                f"stored: {fmt_sig(stored, ' µs')}",
                f"in memory: {fmt_sig(memory, ' µs')}",
                DASH if slower is None else f"{slower:.2f}x",
                "≤ 2x",
                verdict(None if slower is None else slower <= 2.0),
            )
        )
        if workload not in ("chain", "loop"):  # Flujo 0.6.11 runs chain and loop only
            continue
        theirs = dig(peer, "workloads", workload)
        bound = "≥ " if dig(peer, "lower_bound", workload) else ""
        faster = ratio(theirs, stored)
        peer_text = _peer_absent(peer) if num(theirs) is None else f"{bound}{fmt_sig(theirs)} µs"
        rows.append(
            Row(
                "store",
                f"{workload}: µs per step, run store vs Flujo 0.6.11's default (SQLite)",
                f"stored: {fmt_sig(stored, ' µs')}",
                f"Flujo 0.6.11 (default): {peer_text}",
                DASH if faster is None else f"{bound}{faster:.0f}x faster",
                "≥ 10x faster",
                # A peer cut by its time budget gives a lower bound: a miss is then unknown.
                DASH if faster is None or (bound and faster < 10) else verdict(faster >= 10),
            )
        )
    return rows


def _bomb_figures(m: Any) -> str:
    if not isinstance(m, Mapping):
        return DASH
    bound = "≥ " if m.get("timed_out") else ""
    return f"{bound}{fmt(m.get('seconds'), '.2f', ' s')} / {fmt(m.get('peak_mib'), '.0f', ' MiB')}"


def _bomb_met(after: Mapping[str, Any], seconds: float, mib: float) -> bool | None:
    """Refused within both targets; None when a figure needed to tell is missing."""
    refused = after.get("refused")
    if not isinstance(refused, bool):
        return None
    if not refused or after.get("timed_out"):
        return False
    t, peak = num(after.get("seconds")), num(after.get("peak_mib"))
    if t is None or peak is None:
        return None
    return t <= seconds and peak <= mib


def rows_template_bombs(data: Mapping[str, Any]) -> list[Row]:
    """Per bomb class, one process: time to its one-line error and peak RSS, beside targets."""
    seconds = num(dig(data, "targets", "seconds")) or 2.0
    mib = num(dig(data, "targets", "peak_mib")) or 150.0
    startup = data.get("startup")
    before_rev = data.get("before_rev")
    bench = "template_bombs (embedded, one process per bomb)"
    rows = [
        Row(
            bench,
            "start-up alone: flujo validate examples/linear.yaml, time / peak RSS",
            _bomb_figures(startup),
            DASH,
            DASH,
            DASH,
            DASH,
        )
    ]
    entries = [r for r in data.get("results") or [] if isinstance(r, Mapping)]
    verdicts: list[bool | None] = []
    for entry in entries:
        found = entry.get("after")
        after: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
        before = entry.get("before")
        refused = after.get("refused")
        met = _bomb_met(after, seconds, mib)
        verdicts.append(met)
        t = after.get("seconds")
        faster = ratio(dig(before, "seconds"), t) if isinstance(before, Mapping) else None
        before_bound = "≥ " if dig(before, "timed_out") else ""  # cut at --before-timeout
        state = "refused" if refused else "timed out" if after.get("timed_out") else "NOT refused"
        rows.append(
            Row(
                bench,
                f"{entry.get('bomb', '?')} ({entry.get('what', '?')}; {entry.get('command', '?')}):"
                " time to the one-line error / peak RSS",
                f"{_bomb_figures(after)} ({state if isinstance(refused, bool) else DASH}; "
                f"{fmt(after.get('over_startup_s'), '+.2f', ' s')} over start-up)",
                DASH
                if not isinstance(before, Mapping)
                else f"before ({before_rev}): {_bomb_figures(before)}",
                DASH if faster is None else f"{before_bound}{faster:.1f}x faster",
                f"refused, ≤ {seconds:g} s, ≤ {mib:g} MiB",
                verdict(met),
            )
        )
    all_met = data.get("all_met")
    if entries:
        rows.append(
            Row(
                bench,
                "bomb classes within every target",
                f"{sum(1 for v in verdicts if v)}/{len(entries)}",
                DASH,
                DASH,
                "all",
                verdict(all_met if isinstance(all_met, bool) else None),
            )
        )
    return rows
