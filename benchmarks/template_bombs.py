"""Template bombs, embedded: time to the one-line error and peak RSS, as whole processes.

Every bomb class of issue 19 is written as a Pipeline file and checked with
``flujo validate`` (``flujo run`` for the class only a render can catch, the
loop and macro amplification), each a fresh process under ``/usr/bin/time -v``
(peak RSS: "Maximum resident set size").  Beside each figure: the same
process on ``examples/linear.yaml`` (the interpreter's start-up and import
cost, which a refusal cannot go below; ``over_startup_s`` is the bomb's time
beyond it), and, with ``--before REV``, the same
bomb against an older commit checked out in a ``git worktree`` (the state
before the template limits), cut at ``--before-timeout`` seconds::

    .venv/bin/python -m benchmarks.template_bombs [--before 8910832] [--quick]

Targets (issue 19, embedded): every bomb class refused with its one-line
error within 2 s and at most 150 MB peak RSS.  Writes
``benchmarks/results/template_bombs.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "template_bombs.json"
TARGET_SECONDS = 2.0
TARGET_MIB = 150.0
MIB = 1 << 20


@dataclass(frozen=True)
class Bomb:
    name: str
    what: str
    steps: tuple[str, ...]
    expected: str
    """A fragment of the one-line error."""
    command: str = "validate"


def _outputs(n_bytes: int) -> str:
    unit = "{{ input }}"
    return unit * (n_bytes // len(unit))


BOMBS: tuple[Bomb, ...] = (
    Bomb("outputs-1mb", "1 MiB of {{ input }}", (_outputs(MIB),), "maxTemplateBytes"),
    Bomb("set-30k", "30,000 {% set %} tags", ("{% set x = 1 %}" * 30_000,), "maxTemplateBytes"),
    Bomb(
        "concat-60k",
        "a 60,000-term ~ chain",
        ("{{ " + " ~ ".join(["input"] * 60_000) + " }}",),
        "maxTemplateBytes",
    ),
    Bomb(
        "parens-5000",
        "((((…)))) 5,000 deep (10 KB)",
        ("{{ " + "(" * 5_000 + "input" + ")" * 5_000 + " }}",),
        "maxTemplateNesting",
    ),
    Bomb(
        "blocks-2000",
        "{% if %} nested 2,000 deep (48 KB)",
        ("{% if true %}" * 2_000 + "x" + "{% endif %}" * 2_000,),
        "maxTemplateNesting",
    ),
    Bomb(
        "plus-4000",
        "a 4,000-term + chain (a left-deep tree)",
        ("{{ " + " + ".join(["1"] * 4_000) + " }}",),
        "maxTemplateNesting",
    ),
    Bomb(
        "list-30k",
        "a literal list of 30,000 items (60 KB)",
        ("{{ [" + ",".join(["1"] * 30_000) + "] | length }}",),
        "maxTemplateTokens",
    ),
    Bomb(
        "pipeline-10x30k",
        "10 steps of 30 KB templates each",
        tuple("{{ input }} " + "x" * 30_000 + "{{ input }}" for _ in range(10)),
        "maxPipelineTemplateBytes",
    ),
    Bomb(
        "loop-amplification",
        "nested loops and a macro: 10^8 iterations from 150 bytes",
        (
            "{% macro m(x) %}{% for i in range(10000) %}{{ x }}{% endfor %}{% endmacro %}"
            "{% for j in range(10000) %}{{ m(input) }}{% endfor %}",
        ),
        "template work limit",
        command="run",
    ),
)


def manifest(bomb: Bomb) -> str:
    """The bomb as a Pipeline file (JSON, which is YAML)."""
    steps = [
        {"name": f"s{i}", "agent": "builtin.strip", "input": source}
        for i, source in enumerate(bomb.steps)
    ]
    doc = {
        "apiVersion": "flujo.dev/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": bomb.name},
        "spec": {"steps": steps},
    }
    return json.dumps(doc) + "\n"


def _peak_mib(stderr: str) -> float | None:
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr)
    return int(match.group(1)) / 1024 if match else None


def measure(command: list[str], cwd: Path, env: dict[str, str], timeout: float) -> dict[str, Any]:
    """One whole process under /usr/bin/time -v: wall seconds, peak RSS, exit, error line."""
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            ["/usr/bin/time", "-v", *command],
            capture_output=True,
            text=True,
            cwd=cwd,
            env=env,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"seconds": timeout, "timed_out": True}
    seconds = time.perf_counter() - start
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    return {
        "seconds": round(seconds, 3),
        "peak_mib": _peak_mib(proc.stderr),
        "exit_code": proc.returncode,
        "error": errors[0][:300] if errors else None,
        "traceback": "Traceback" in proc.stderr,
    }


def _flujo(bomb_command: str, path: Path) -> list[str]:
    args = [sys.executable, "-m", "flujo", bomb_command, str(path)]
    return [*args, "--input", "x", "--quiet", "--store", "none"] if bomb_command == "run" else args


def _worktree(rev: str) -> Path | None:
    target = Path(tempfile.gettempdir()) / f"flujo-before-{rev[:12]}"
    if (target / "flujo").is_dir():
        return target
    proc = subprocess.run(
        ["git", "worktree", "add", "--detach", str(target), rev],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    return target if proc.returncode == 0 else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="a commit to measure the same way (git worktree)")
    parser.add_argument("--before-timeout", type=float, default=120.0)
    parser.add_argument("--quick", action="store_true", help="accepted; the run is short")
    args = parser.parse_args(argv)
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "FLUJO_AUDIT_LOG": ""}
    env.pop("PYTHONPATH", None)
    before_root = _worktree(args.before) if args.before else None
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        baseline = measure(
            [sys.executable, "-m", "flujo", "validate", str(ROOT / "examples" / "linear.yaml")],
            ROOT,
            env,
            60,
        )
        print(f"start-up (flujo validate examples/linear.yaml): {baseline}", flush=True)
        for bomb in BOMBS:
            path = Path(tmp) / f"{bomb.name}.yaml"
            path.write_text(manifest(bomb), encoding="utf-8")
            after = measure(_flujo(bomb.command, path), Path(tmp), env, 60)
            after["over_startup_s"] = round(after["seconds"] - baseline["seconds"], 3)
            after["refused"] = bool(
                after.get("error") and bomb.expected in str(after["error"])
            ) and not after.get("traceback")
            row: dict[str, Any] = {
                "bomb": bomb.name,
                "what": bomb.what,
                "command": f"flujo {bomb.command}",
                "source_bytes": sum(len(s.encode()) for s in bomb.steps),
                "after": after,
            }
            if before_root is not None:
                row["before"] = measure(
                    _flujo(bomb.command, path),
                    Path(tmp),
                    {**env, "PYTHONPATH": str(before_root)},
                    args.before_timeout,
                )
            results.append(row)
            print(json.dumps(row), flush=True)
    met = all(
        r["after"].get("refused")
        and r["after"]["seconds"] <= TARGET_SECONDS
        and (r["after"].get("peak_mib") or 0) <= TARGET_MIB
        for r in results
    )
    data = {
        "benchmark": "template_bombs",
        "targets": {"seconds": TARGET_SECONDS, "peak_mib": TARGET_MIB},
        "before_rev": args.before,
        "startup": baseline,
        "load_average": list(os.getloadavg()),
        "cpus": os.cpu_count(),
        "results": results,
        "all_met": met,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS.relative_to(ROOT)}; all targets met: {met}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
