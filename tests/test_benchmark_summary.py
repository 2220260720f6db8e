"""The summary table of ``python -m benchmarks`` reads each benchmark's results JSON.

No benchmark runs here: each results file is written by hand with the keys its script
writes (``benchmarks/store.py``, ``template_bombs.py``, ``operator_isolation.py``), and the
rows are checked: figures beside their targets, a verdict, a dash for what is missing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.__main__ import BENCHMARKS, NAMES, ROW_BUILDERS, Outcome, build_rows, render
from benchmarks.summary_rows import DASH, Row


def _rows(tmp_path: Path, name: str, data: dict[str, Any]) -> list[Row]:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(data))
    outcome = Outcome(name, ["python", "-m", f"benchmarks.{name}"], 0, 1.0, str(path), True, True)
    rows = build_rows([outcome])
    render([outcome], rows, {"finished": "now", "mode": "test", "loadavg": None})
    return rows


def test_every_benchmark_has_a_row_builder() -> None:
    assert set(NAMES) == set(ROW_BUILDERS)
    store = next(b for b in BENCHMARKS if b.name == "store")
    assert store.quick_args == ("--quick",) and store.skip_peers_args == ("--skip-peers",)


def _store(peer: dict[str, Any] | None) -> dict[str, Any]:
    def workload(memory: float, stored: float) -> dict[str, Any]:
        return {
            "memory_us_per_step": memory,
            "stored_us_per_step": stored,
            "ratio_median_of_rounds": stored / memory,
            "rounds": 3,
            "store_runs": 21,
            "store_bytes": 4096,
            "records": [],
        }

    ours = {"chain": workload(16.0, 24.0), "loop": workload(32.0, 40.0)}
    ours["chain-async"] = workload(40.0, 100.0)
    return {"environment": {}, "ours": ours, "flujo0611_default": peer, "table": ""}


def test_store_rows(tmp_path: Path) -> None:
    peer = {
        "version": "0.6.11",
        "workloads": {"chain": 2400.0, "loop": 320.0},
        "lower_bound": {"chain": True, "loop": False},
    }
    rows = _rows(tmp_path, "store", _store(peer))
    cells = [(r.figure.split(":")[0], r.ratio, r.target, r.verdict) for r in rows]
    assert cells == [
        ("chain", "1.50x", "≤ 2x", "met"),
        ("chain", "≥ 100x faster", "≥ 10x faster", "met"),
        ("loop", "1.25x", "≤ 2x", "met"),
        ("loop", "8x faster", "≥ 10x faster", "MISSED"),
        ("chain-async", "2.50x", "≤ 2x", "MISSED"),
    ]
    skipped = _rows(tmp_path, "store", _store(None))
    assert [r.beside for r in skipped if "0.6.11" in r.figure] == [
        "Flujo 0.6.11 (default): not measured"
    ] * 2
    assert all(r.verdict == DASH for r in skipped if "0.6.11" in r.figure)


def test_template_bomb_rows(tmp_path: Path) -> None:
    def after(seconds: float, peak: float | None, refused: bool = True) -> dict[str, Any]:
        return {
            "seconds": seconds,
            "peak_mib": peak,
            "exit_code": 1,
            "error": "error: template too large (maxTemplateBytes)",
            "traceback": False,
            "over_startup_s": seconds - 0.9,
            "refused": refused,
        }

    data = {
        "benchmark": "template_bombs",
        "targets": {"seconds": 2.0, "peak_mib": 150.0},
        "before_rev": None,
        "startup": {"seconds": 0.9, "peak_mib": 60.0, "exit_code": 0, "error": None},
        "results": [
            {
                "bomb": "outputs-1mb",
                "what": "1 MiB",
                "command": "flujo validate",
                "after": after(1.2, 70.0),
            },
            {
                "bomb": "set-30k",
                "what": "sets",
                "command": "flujo validate",
                "after": after(2.5, 70.0),
            },
            {
                "bomb": "list-30k",
                "what": "list",
                "command": "flujo validate",
                "after": after(1.0, None),
            },
        ],
        "all_met": False,
    }
    rows = _rows(tmp_path, "template_bombs", data)
    assert [r.verdict for r in rows] == [DASH, "met", "MISSED", DASH, "MISSED"]
    assert rows[1].ours.startswith("1.20 s / 70 MiB (refused")
    assert rows[1].target == "refused, ≤ 2 s, ≤ 150 MiB"
    assert rows[3].ours.startswith(f"1.00 s / {DASH}")
    assert rows[-1].ours == "1/3"


def test_operator_isolation_rows(tmp_path: Path) -> None:
    data = {
        "b_runs": 20,
        "flood": 1000,
        "quiet": {"p50_s": 0.06, "p99_s": 0.1},
        "attacked": {"p50_s": 0.08, "p99_s": 0.25},
        "p99_ratio": 2.5,
        "operator_peak_rss_mb_quiet": 110.0,
        "operator_peak_rss_mb": 140.0,
        "validation_worker_peak_rss_mb": 90.0,
        "liveness_slowest_s_quiet": 0.01,
        "liveness_slowest_s": 0.05,
        "liveness_polls": 40,
        "bomb_valid": {
            "type": "Valid",
            "status": "False",
            "reason": "PolicyDenied",
            "message": "x",
        },
        "a_runs_succeeded_meanwhile": 30,
        "operator_alive": True,
        "targets": {"operator_peak_rss_mb": 300, "p99_ratio": 2.0},
    }
    rows = _rows(tmp_path, "operator_isolation", data)
    assert (rows[0].ours, rows[0].target, rows[0].verdict) == ("140.0 MB", "≤ 300 MB", "met")
    assert (rows[1].ratio, rows[1].target, rows[1].verdict) == (
        "2.50x (p99)",
        "p99 ≤ 2x quiet",
        "MISSED",
    )
    assert rows[3].ours == "Valid=False (PolicyDenied): x"
    empty = _rows(tmp_path, "operator_isolation", {"b_runs": 20})
    assert [r.verdict for r in empty] == [DASH] * 4
    assert empty[0].ours == DASH
