"""``flujo ui`` without a browser: the command's errors, lazy imports, the graph, the parsers."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from flujo.spec.pipeline import PipelineSpec
from flujo.ui.cluster import parse_documents
from flujo.ui.graph import layout, node_statuses
from flujo.ui.local import step_lines
from flujo.ui.view import StepInfo, css_class


def flujo(
    *args: str, prelude: str = "", cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    code = (
        f"{prelude}\nimport sys\nfrom flujo.cli.app import main\n"
        f"sys.argv = ['flujo', *{list(args)!r}]\nmain()"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUJO_")}
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
        env=env,
    )


def test_import_flujo_and_its_cli_load_no_web_library() -> None:
    code = (
        "import sys, flujo, flujo.cli.app\n"
        "names = ('starlette', 'uvicorn', 'grandalf', 'flujo.ui.app')\n"
        "print([m for m in names if m in sys.modules])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"


def test_without_the_extra_the_command_says_what_to_install_in_one_line(tmp_path: Path) -> None:
    done = flujo("ui", prelude="import sys; sys.modules['grandalf'] = None", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["error: flujo ui needs grandalf: pip install 'flujo[ui]'"]
    assert not (tmp_path / ".flujo").exists()  # nothing was opened


def test_bad_options_are_one_line_errors(tmp_path: Path) -> None:
    done = flujo("ui", "--namespace", "team-a", cwd=tmp_path)
    assert (done.returncode, done.stderr.splitlines()) == (
        2,
        ["error: --namespace is for PipelineRuns: add --cluster"],
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = flujo("ui", "--port", str(port), "--store", "runs.db", cwd=tmp_path)
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"error: 127.0.0.1:{port}: ") and "in use" in line
    (tmp_path / "foreign.db").write_bytes(b"not a database at all, not even close" * 40)
    done = flujo("ui", "--store", "foreign.db", cwd=tmp_path)
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert line.startswith("error: foreign.db: ")


SPEC = PipelineSpec.model_validate(
    {
        "steps": [
            {"name": "plan", "agent": "writer"},
            {
                "name": "refine",
                "loop": {
                    "maxIterations": 50,
                    "steps": [
                        {"name": "draft", "agent": "writer"},
                        {
                            "name": "route",
                            "conditional": {
                                "condition": "previous_step",
                                "branches": [
                                    {"name": "short", "steps": [{"name": "pad", "agent": "w"}]},
                                    {"name": "long", "steps": [{"name": "cut", "agent": "w"}]},
                                ],
                            },
                        },
                    ],
                },
            },
            {
                "name": "fan",
                "parallel": {
                    "branches": [
                        {"name": "a", "steps": [{"name": "left", "agent": "w"}]},
                        {"name": "b", "steps": [{"name": "right", "agent": "w"}]},
                    ]
                },
            },
            {"name": "ok", "approval": {}},
        ]
    }
)


def info(path: str, phase: str, kind: str = "agent", **extra: object) -> StepInfo:
    return StepInfo(path=path, name=path.rsplit("/", 1)[-1], kind=kind, phase=phase, **extra)  # type: ignore[arg-type]


def test_the_graph_is_the_pipelines_parallel_branches_side_by_side_and_one_loop_body() -> None:
    graph = layout(SPEC)
    ids = [n.id for n in graph.nodes]
    assert ids == [
        "n-plan",
        "n-refine",
        "n-draft",
        "n-route",
        "j-route",
        "n-pad",
        "n-cut",
        "n-fan",
        "j-fan",
        "n-left",
        "n-right",
        "n-ok",
    ]
    left, right = graph.node("n-left"), graph.node("n-right")
    assert left.y == right.y and left.x + left.w <= right.x  # side by side
    assert graph.node("n-fan").y < left.y < graph.node("j-fan").y < graph.node("n-ok").y
    assert graph.node("n-ok").kind == "approval"
    assert sum(1 for e in graph.edges if e.back) == 1  # the loop's way back
    assert 0 < graph.width < 1000 and 0 < graph.height < 1200


def test_node_phases_show_the_latest_iteration_the_branch_taken_and_what_is_left() -> None:
    graph = layout(SPEC)
    steps = {
        s.path: s
        for s in [
            info("plan", "succeeded"),
            info("refine", "running", kind="loop", iteration=12),
            info("refine/iter-11/draft", "succeeded"),
            info("refine/iter-12/draft", "running", attempts=2),
            info("refine/iter-11/route", "succeeded", kind="conditional", branch="long"),
            info("refine/iter-11/route/long/cut", "succeeded"),
        ]
    }
    phases = node_statuses(graph, steps, "running")
    assert phases["n-refine"].note == "12 iterations"
    assert (phases["n-draft"].phase, phases["n-draft"].note) == (
        "running",
        "iteration 12, attempt 2",
    )
    assert phases["n-route"].note == "→ long"
    assert phases["n-cut"].phase == "succeeded"
    assert phases["n-pad"].phase == "skipped"  # the branch not taken
    assert phases["n-left"].phase == "pending"  # not reached yet
    finished = node_statuses(graph, steps, "failed")
    assert finished["n-left"].phase == "skipped"  # never will be
    assert css_class("AwaitingApproval") == css_class("awaiting approval") == "awaiting"


def test_kubectl_watch_output_is_read_document_by_document_across_chunks() -> None:
    one, two = {"metadata": {"name": "a"}}, {"status": {"phase": "Running", "x": "}{"}}
    text = json.dumps(one, indent=4) + "\n" + json.dumps(two, indent=4) + "\n"
    docs, rest = parse_documents(text[:40])
    assert docs == [] and rest == text[:40].lstrip()
    docs, rest = parse_documents(rest + text[40:])
    assert docs == [one, two] and rest == ""


def test_a_steps_transcript_lines_are_its_own_with_their_details() -> None:
    lines = [
        "[1] RunStarted seed=0",
        "    launch    each/item-1/measure -> m (attempt 1)",
        "              input: 1",
        "    launch    each/item-10/measure -> m (attempt 1)",
        "              input: 10",
        "[2] StepSucceeded each/item-1/measure attempt=1",
        "              output: 2",
    ]
    assert step_lines(lines, "each/item-1/measure") == [lines[1], lines[2], lines[5], lines[6]]
