"""Benchmark: per-step orchestration overhead of our engine against two peers.

Three workloads of trivial steps (``x + 1``), so that what is measured is the engine
(see ``benchmarks/peers/overhead_common.py`` for the exact definitions):

- ``chain``: 1,000 steps in sequence;
- ``loop``: a 1,000-iteration loop whose body is one step (exit when output >= 1000);
- ``fanout``: 100 parallel steps in sequence, each with 10 branches of one step,
  reported per branch execution.

Engines, all measured in the same invocation on the same machine:

- ours (this repository's ``flujo``), in-process, in this interpreter;
- Flujo 0.6.11 from PyPI, a different project that is also called ``flujo``, in its own
  virtualenv ``.bench/flujo0611``, in two configurations: ``in-memory`` (no state
  persistence, its fastest setup for these workloads) and ``default``;
- LangGraph 1.2.x in its own virtualenv ``.bench/langgraph``.

Each peer runs as a subprocess (``benchmarks/peers/*_overhead.py``, from a scratch
directory, with ``PYTHONPATH`` and ``FLUJO_*`` variables removed) and prints one JSON
object.  The peer virtualenvs are created by ``benchmarks/peers/setup.sh``, which this
script calls first (a fast no-op once they exist).

Run from the repository root::

    .venv/bin/python -m benchmarks.engine_overhead [--quick] [--skip-peers]

It prints a table (µs per step execution; ratios ours/peer, lower is better) and
writes ``benchmarks/results/engine_overhead.json``.  Targets: ours <= 1/10 of
Flujo 0.6.11 and <= 1/3 of LangGraph.  Nothing here asserts on timings.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

try:
    from benchmarks.peers import overhead_common as oc
except ModuleNotFoundError:  # run as a file: python benchmarks/engine_overhead.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks.peers import overhead_common as oc

from flujo import Flujo, LoopStep, ParallelStep, Pipeline, Step

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
PEERS_DIR = BENCH_DIR / "peers"
RESULTS_DIR = BENCH_DIR / "results"
VENV_DIR = Path(os.environ.get("FLUJO_BENCH_DIR", REPO_ROOT / ".bench"))

FLUJO_TARGET = 1 / 10
"""Target: ours <= 1/10 of Flujo 0.6.11's µs/step."""
LANGGRAPH_TARGET = 1 / 3
"""Target: ours <= 1/3 of LangGraph's µs/step."""

PEERS: dict[str, dict[str, str]] = {
    "flujo0611": {"venv": "flujo0611", "script": "flujo0611_overhead.py"},
    "langgraph": {"venv": "langgraph", "script": "langgraph_overhead.py"},
}

COLUMNS: list[tuple[str, str, str]] = [
    # (header, engine key, variant)
    ("ours µs/step", "ours", "default"),
    ("Flujo 0.6.11 (in-memory)", "flujo0611", "in-memory"),
    ("Flujo 0.6.11 (default)", "flujo0611", "default"),
    ("LangGraph", "langgraph", "default"),
]


# ---------------------------------------------------------------------------
# Our engine, in-process
# ---------------------------------------------------------------------------


def build_ours(workload: str) -> Pipeline:
    """The workload as one of our pipelines; the trivial step is a plain function agent."""
    if workload == "chain":
        return Pipeline([Step(f"s{i}", agent=oc.inc) for i in range(oc.CHAIN_STEPS)])
    if workload == "loop":
        return Pipeline(
            [
                LoopStep(
                    "loop",
                    body=[Step("body", agent=oc.inc)],
                    max_iterations=oc.LOOP_ITERATIONS,
                    exit_when=f"output >= {oc.LOOP_ITERATIONS}",
                )
            ]
        )
    if workload == "fanout":
        return Pipeline(
            [
                ParallelStep(
                    f"p{j}",
                    branches={
                        f"b{i}": [Step(f"p{j}b{i}", agent=oc.inc)] for i in range(oc.FANOUT_WIDTH)
                    },
                    merge="first",
                )
                for j in range(oc.FANOUT_DEPTH)
            ]
        )
    raise ValueError(workload)


def _sync_factory(runner: Flujo) -> Callable[[], Callable[[], Any]]:
    def run() -> Any:
        return runner.run(0).output

    return lambda: run


def _async_factory(runner: Flujo) -> Callable[[], Callable[[], Awaitable[Any]]]:
    async def run() -> Any:
        return (await runner.run_async(0)).output

    return lambda: run


def measure_ours(settings: oc.Settings) -> dict[str, Any]:
    """Our engine: one ``Flujo`` runner per workload, reused across runs."""
    environment = oc.environment()  # before measuring: the load average seen at the start
    workloads: dict[str, Any] = {}
    for workload in settings.workloads:
        _progress(f"ours: {workload}")
        try:
            runner = Flujo(build_ours(workload))
        except Exception as exc:
            workloads[workload] = {"error": f"{type(exc).__name__}: {_one_line(exc)}"}
            continue
        modes = {
            "sync": oc.measure_sync(_sync_factory(runner), workload, settings),
            "async": oc.measure_async(_async_factory(runner), workload, settings),
        }
        workloads[workload] = oc.summarize(modes)
    import flujo

    return {
        "engine": "Flujo (this repository)",
        "package": "flujo",
        "version": getattr(flujo, "__version__", "?"),
        "source": str(Path(flujo.__file__).resolve().parent),
        "step": "Step(name, agent=inc) with a plain sync function",
        "environment": environment,
        "variants": {
            "default": {
                "description": "Flujo(pipeline), built once per workload; "
                "run(0) or await run_async(0)",
                "workloads": workloads,
            }
        },
    }


# ---------------------------------------------------------------------------
# Peers, as subprocesses in their own virtualenvs
# ---------------------------------------------------------------------------


def ensure_peer_venvs() -> str | None:
    """Run ``setup.sh``; return an error message, or None when the venvs are ready."""
    _progress("peers: benchmarks/peers/setup.sh")
    proc = subprocess.run(
        ["bash", str(PEERS_DIR / "setup.sh")],
        cwd=REPO_ROOT,
        stdout=sys.stderr,
        stderr=sys.stderr,
        check=False,
    )
    return None if proc.returncode == 0 else f"setup.sh exited with {proc.returncode}"


def _peer_env() -> dict[str, str]:
    """This environment minus anything that could make a peer import our ``flujo``."""
    return {
        k: v
        for k, v in os.environ.items()
        if k != "PYTHONPATH" and not k.startswith("FLUJO_") and k != "VIRTUAL_ENV"
    }


def run_peer(name: str, settings: oc.Settings) -> dict[str, Any]:
    """Run one peer script in its venv and return its JSON (or an ``error`` record)."""
    peer = PEERS[name]
    python = VENV_DIR / peer["venv"] / "bin" / "python"
    if not python.exists():
        return {"error": f"{python} missing: run benchmarks/peers/setup.sh"}
    args = [
        str(python),
        "-E",  # ignore PYTHON* variables
        "-s",  # no user site-packages
        str(PEERS_DIR / peer["script"]),
        "--repeats",
        str(settings.repeats),
        "--warmup",
        str(settings.warmup),
        "--budget-s",
        str(settings.budget_s or 0),
        "--workloads",
        ",".join(settings.workloads),
    ]
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    log_path = RESULTS_DIR / f"engine_overhead.{name}.log"
    _progress(f"{name}: {' '.join(args[3:])} (stderr -> {log_path.relative_to(REPO_ROOT)})")
    with (
        tempfile.TemporaryDirectory(prefix=f"flujo-bench-{name}-") as scratch,
        log_path.open("w") as log,
    ):
        proc = subprocess.run(
            args,
            cwd=scratch,
            env=_peer_env(),
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            check=False,
        )
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    if proc.returncode != 0 or not lines:
        return {"error": f"exited with {proc.returncode}; see {log_path}"}
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except json.JSONDecodeError as exc:
        return {"error": f"unparsable output ({exc}); see {log_path}"}
    return result


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------


def _cell(engines: dict[str, Any], engine: str, variant: str, workload: str) -> dict[str, Any]:
    record = engines.get(engine) or {}
    if "error" in record:
        return {"error": record["error"]}
    wl = (record.get("variants", {}).get(variant) or {}).get("workloads", {}).get(workload)
    if wl is None:
        return {"missing": True}
    return dict(wl)


def _fmt_us(cell: dict[str, Any]) -> str:
    if "error" in cell:
        return "error"
    if "us_per_step" not in cell:
        return "-"
    value = float(cell["us_per_step"])
    text = f"{value:,.2f}" if value < 10 else f"{value:,.1f}" if value < 100 else f"{value:,.0f}"
    return ("≥ " if cell.get("lower_bound") else "") + text


def _ratio(ours: dict[str, Any], peer: dict[str, Any]) -> tuple[float | None, str]:
    if "us_per_step" not in ours or "us_per_step" not in peer:
        return None, "-"
    value = float(ours["us_per_step"]) / float(peer["us_per_step"])
    # A peer figure that is a lower bound makes the ratio an upper bound.
    prefix = "≤ " if peer.get("lower_bound") and not ours.get("lower_bound") else ""
    return value, f"{prefix}{value:.3g}"


def build_table(engines: dict[str, Any], workloads: tuple[str, ...]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for workload in workloads:
        cells = {header: _cell(engines, e, v, workload) for header, e, v in COLUMNS}
        ours = cells["ours µs/step"]
        flujo = cells["Flujo 0.6.11 (in-memory)"]
        if "us_per_step" not in flujo:
            flujo = cells["Flujo 0.6.11 (default)"]
        flujo_ratio, flujo_text = _ratio(ours, flujo)
        lg_ratio, lg_text = _ratio(ours, cells["LangGraph"])
        rows.append(
            {
                "workload": workload,
                "cells": {h: _fmt_us(c) for h, c in cells.items()},
                "us_per_step": {h: c.get("us_per_step") for h, c in cells.items()},
                "ours/Flujo": flujo_text,
                "ours/LangGraph": lg_text,
                "ratio_ours_flujo": flujo_ratio,
                "ratio_ours_langgraph": lg_ratio,
                "flujo_target_met": None if flujo_ratio is None else flujo_ratio <= FLUJO_TARGET,
                "langgraph_target_met": None if lg_ratio is None else lg_ratio <= LANGGRAPH_TARGET,
            }
        )
    return rows


def render(rows: list[dict[str, Any]], engines: dict[str, Any], settings: oc.Settings) -> str:
    headers = ["workload", *(h for h, _, _ in COLUMNS), "ours/Flujo", "ours/LangGraph"]
    body = [
        [
            r["workload"],
            *(r["cells"][h] for h, _, _ in COLUMNS),
            r["ours/Flujo"],
            r["ours/LangGraph"],
        ]
        for r in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *body, strict=True)]

    def line(values: list[str]) -> str:
        first, *rest = (str(v) for v in values)
        cells = [first.ljust(widths[0])]
        cells += [v.rjust(w) for v, w in zip(rest, widths[1:], strict=True)]
        return "| " + " | ".join(cells) + " |"

    out = [
        "Engine overhead: µs per step execution (median of "
        f"{settings.repeats} run(s) after {settings.warmup} warm-up; lower is better)",
        "",
        line(headers),
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
        *(line(b) for b in body),
        "",
        "fanout is reported per branch execution.  '≥': the run hit the "
        f"{settings.budget_s or 0:g} s budget; figure = elapsed / completed steps "
        "(a lower bound).",
        "ours/Flujo uses Flujo 0.6.11 (in-memory), its faster configuration.",
        f"Targets: ours/Flujo <= {FLUJO_TARGET:.3g} (1/10), ours/LangGraph <= "
        f"{LANGGRAPH_TARGET:.3g} (1/3).",
    ]
    for r in rows:
        verdicts = []
        for key, label in (("flujo_target_met", "Flujo"), ("langgraph_target_met", "LangGraph")):
            met = r[key]
            verdicts.append(f"{label} {'n/a' if met is None else 'met' if met else 'MISSED'}")
        out.append(f"  {r['workload']}: " + ", ".join(verdicts))
    out.append("")
    for key, record in engines.items():
        if "error" in record:
            out.append(f"{key}: ERROR {record['error']}")
            continue
        env = record.get("environment", {})
        load = env.get("loadavg") or ["?"]
        out.append(
            f"{key}: {record.get('engine')} on Python {env.get('python')} "
            f"(1-min load average at its start: {load[0]})"
        )
        for variant, v in record.get("variants", {}).items():
            for wl, w in v.get("workloads", {}).items():
                if "error" in w:
                    out.append(f"  {variant} {wl}: ERROR {w['error']}")
        modes = ", ".join(
            f"{variant}/{wl}={w['mode']}"
            for variant, v in record.get("variants", {}).items()
            for wl, w in v.get("workloads", {}).items()
            if "mode" in w
        )
        if modes:
            out.append(f"  fastest entry point: {modes}")
    return "\n".join(out)


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def _progress(message: str) -> None:
    print(f"[engine_overhead] {message}", file=sys.stderr, flush=True)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:297] + "..."


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, oc.Settings]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    oc.add_common_args(parser)
    parser.set_defaults(repeats=None, budget_s=None)
    parser.add_argument(
        "--quick", action="store_true", help="2 timed runs per mode and a 15 s run budget"
    )
    parser.add_argument("--skip-peers", action="store_true", help="measure our engine only")
    parser.add_argument(
        "--peers", default=",".join(PEERS), help=f"comma-separated subset of {','.join(PEERS)}"
    )
    parser.add_argument(
        "--no-setup", action="store_true", help="do not run benchmarks/peers/setup.sh first"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=RESULTS_DIR / "engine_overhead.json",
        help="where to write the JSON results",
    )
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 2 if args.quick else 5
    if args.budget_s is None:
        args.budget_s = 15.0 if args.quick else 60.0
    return args, oc.settings_from_args(args)


def main(argv: list[str] | None = None) -> int:
    args, settings = parse_args(argv)
    peers = [] if args.skip_peers else [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = [p for p in peers if p not in PEERS]
    if unknown:
        raise SystemExit(f"unknown peer(s): {', '.join(unknown)}")
    started = dt.datetime.now(dt.UTC)

    engines: dict[str, Any] = {"ours": measure_ours(settings)}
    setup_error = None if not peers or args.no_setup else ensure_peer_venvs()
    for peer in peers:
        engines[peer] = {"error": setup_error} if setup_error else run_peer(peer, settings)

    rows = build_table(engines, settings.workloads)
    report = render(rows, engines, settings)
    print(report)

    result = {
        "benchmark": "engine_overhead",
        "started": started.isoformat(timespec="seconds"),
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "loadavg_at_finish": oc.environment()["loadavg"],
        "command": " ".join([Path(sys.executable).name, "-m", "benchmarks.engine_overhead"])
        + (" " + " ".join(sys.argv[1:]) if argv is None and sys.argv[1:] else ""),
        "settings": {
            "repeats": settings.repeats,
            "warmup": settings.warmup,
            "budget_s": settings.budget_s,
            "workloads": list(settings.workloads),
            "statistic": "median of the timed runs of the fastest mode (sync or async)",
        },
        "trivial_step": oc.TRIVIAL_STEP,
        "workload_definitions": {w: oc.WORKLOAD_DEFINITIONS[w] for w in settings.workloads},
        "targets": {"ours/Flujo 0.6.11": FLUJO_TARGET, "ours/LangGraph": LANGGRAPH_TARGET},
        "table": rows,
        "engines": engines,
        "report": report,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    _progress(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
