"""The summary table's rows for the operator benchmarks (``operator_load``,
``operator_latency``, ``operator_isolation``).

Split from ``benchmarks/summary_rows.py``, whose helpers and ``Row`` these use, to keep each
module short: each function takes the parsed ``benchmarks/results/<name>.json`` and returns
its rows; a figure missing from the file renders as a dash.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from benchmarks.summary_rows import DASH, Row, dig, fmt, num, ratio, verdict


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
        top = max(data.get("latencies") or [0])
        pool = row.get(f"pool@{top:g}s")
        if isinstance(pool, Mapping):
            first = num(pool.get("first_step_ms"))
            cold = num((row.get(f"runner@{top:g}s") or {}).get("first_step_ms"))
            budget = None if embedded is None else embedded + 100
            rows.append(
                Row(
                    f"operator_latency ({name}, warm pool, pod start {top:g} s)",
                    f"first step: warm pool vs runner started for the run; whole run "
                    f"{fmt(num(pool.get('wall_ms')), '.0f')} ms, writes/step "
                    f"{fmt(pool.get('writes_per_step'), '.2f')}",
                    f"pool: {fmt(first, '.0f')} ms",
                    f"runner: {fmt(cold, '.0f')} ms",
                    DASH if not first or cold is None else f"{cold / first:.0f}x sooner",
                    DASH if budget is None else f"≤ {budget:.0f} ms (embedded + 100)",
                    verdict(None if first is None or budget is None else first <= budget),
                )
            )
    if checks:
        met = sum(1 for ok in checks.values() if ok)
        rows.append(
            Row(
                "operator_latency",
                "targets met (wall, ≤ 1.2 writes/step, CPU/step ≤ pod, ≥ 10x on the loop, "
                "warm pool's first step)",
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


def rows_operator_isolation(data: Mapping[str, Any]) -> list[Row]:
    """Namespace B's latency quiet vs while A attacks; the operator's peak RSS."""
    rss_target = num(dig(data, "targets", "operator_peak_rss_mb")) or 300.0
    p99_target = num(dig(data, "targets", "p99_ratio")) or 2.0
    rss = num(data.get("operator_peak_rss_mb"))
    p99_ratio = num(data.get("p99_ratio"))
    if p99_ratio is None:
        p99_ratio = ratio(dig(data, "attacked", "p99_s"), dig(data, "quiet", "p99_s"))
    bench = (
        f"operator_isolation (B: {data.get('b_runs', DASH)} runs; A: a template bomb + "
        f"{data.get('flood', DASH)} runs behind maxConcurrent 1)"
    )

    def latency(key: str) -> str:
        return f"{fmt(dig(data, key, 'p50_s'), '.3f')} / {fmt(dig(data, key, 'p99_s'), '.3f')} s"

    valid = data.get("bomb_valid")
    if isinstance(valid, Mapping):
        message = " ".join(str(valid.get("message") or "").split())
        valid_text = (
            f"Valid={valid.get('status', '?')} ({valid.get('reason', '?')}): {message[:80]}"
        )
    else:
        valid_text = DASH
    alive = data.get("operator_alive")
    return [
        Row(
            bench,
            "operator peak RSS (VmHWM) after the attack",
            fmt(rss, ".1f", " MB"),
            f"after the quiet runs: {fmt(data.get('operator_peak_rss_mb_quiet'), '.1f', ' MB')}; "
            f"validation workers: {fmt(data.get('validation_worker_peak_rss_mb'), '.1f', ' MB')}",
            DASH,
            f"≤ {rss_target:g} MB",
            verdict(None if rss is None else rss <= rss_target),
        ),
        Row(
            bench,
            "B's run created → Succeeded, p50 / p99",
            f"under attack: {latency('attacked')}",
            f"quiet: {latency('quiet')}",
            DASH if p99_ratio is None else f"{p99_ratio:.2f}x (p99)",
            f"p99 ≤ {p99_target:g}x quiet",
            verdict(None if p99_ratio is None else p99_ratio <= p99_target),
        ),
        Row(
            bench,
            "slowest /healthz answer",
            f"under attack: {fmt(data.get('liveness_slowest_s'), '.3f', ' s')} "
            f"({data.get('liveness_polls', DASH)} polls)",
            f"quiet: {fmt(data.get('liveness_slowest_s_quiet'), '.3f', ' s')}",
            DASH,
            DASH,
            DASH,
        ),
        Row(
            bench,
            "the bomb's Pipeline; A's runs succeeded meanwhile; operator alive",
            valid_text,
            f"{data.get('a_runs_succeeded_meanwhile', DASH)} of A's runs; "
            f"alive: {alive if isinstance(alive, bool) else DASH}",
            DASH,
            DASH,
            DASH,
        ),
    ]
