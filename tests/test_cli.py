"""The ``flujo`` command as a user runs it: a real subprocess, exit codes, output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
INVALID = ROOT / "tests" / "data" / "invalid"


def flujo(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flujo", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        input=stdin,
        timeout=120,
    )


EXPECTED = {
    "linear.yaml": ("  hello, flujo ", "*** HELLO, FLUJO (12 chars) ***"),
    "refine-loop.yaml": ("rivers", "draft 3: rivers run to the sea, and the sea remembers"),
    "router.yaml": ("the app shows an error", "Routed to engineering: the app shows an error"),
    "fanout.yaml": (
        "One two. Three four five.",
        json.dumps(
            {"sentenceLengths": [8, 16], "shouted": "ONE TWO. THREE FOUR FIVE.", "words": 5}
        ),
    ),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_example_runs_and_prints_its_output(name: str) -> None:
    data, want = EXPECTED[name]
    proc = flujo("run", str(EXAMPLES / name), "--input", data)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == want


def test_examples_directory_is_fully_covered() -> None:
    assert {p.name for p in EXAMPLES.glob("*.yaml")} >= set(EXPECTED)


def test_json_result_has_per_step_outcomes_and_usage() -> None:
    proc = flujo("run", str(EXAMPLES / "refine-loop.yaml"), "--input", "rivers", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["status"] == "succeeded"
    assert result["steps"]["refine"]["iterations"] == 3
    assert result["steps"]["refine/iter-2/review"]["output"] == "REVISE"
    assert result["steps"]["final"]["phase"] == "succeeded"
    assert set(result["usage"]) == {"inputTokens", "outputTokens", "costUsd"}


INVALID_CASES = {
    "bad-yaml.yaml": ":9: invalid YAML",
    "unknown-kind.yaml": "unknown step kind or field 'teleport'",
    "unknown-field.yaml": "spec.steps[0].retires: unknown step kind or field 'retires'",
    "missing-agent.yaml": "unknown agent 'writer'",
    "unbounded-loop.yaml": "loop.maxIterations: missing required field",
    "duplicate-name.yaml": "duplicate step name 'a'",
    "unknown-step-ref.yaml": "template references unknown step 'reveiw'",
    "not-a-manifest.yaml": "document 1 is not a mapping",
}


@pytest.mark.parametrize("name", sorted(INVALID_CASES))
@pytest.mark.parametrize("command", ["validate", "run"])
def test_malformed_files_exit_2_with_one_line_errors(name: str, command: str) -> None:
    proc = flujo(command, str(INVALID / name))
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert INVALID_CASES[name] in proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith(f"error: {INVALID / name}")
    for line in lines:
        # each problem is one `error:` line; `validate` adds indented excerpt/hint lines
        if command == "run" or not line.startswith(" "):
            assert line.startswith(f"error: {INVALID / name}"), line


def test_missing_agents_are_all_reported_at_once() -> None:
    proc = flujo("validate", str(INVALID / "missing-agent.yaml"))
    assert "unknown agent 'writer'" in proc.stderr and "unknown agent 'editor'" in proc.stderr


def test_validate_accepts_every_example() -> None:
    for path in EXAMPLES.glob("*.yaml"):
        proc = flujo("validate", str(path))
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith("ok: ")


def test_bad_input_and_missing_file_exit_2(tmp_path: Path) -> None:
    proc = flujo("run", str(tmp_path / "nope.yaml"))
    assert proc.returncode == 2 and "cannot read file" in proc.stderr
    bad = tmp_path / "in.txt"
    bad.write_bytes(b"\xff\xfe\x00bad")
    proc = flujo("run", str(EXAMPLES / "linear.yaml"), "--input-file", str(bad))
    assert proc.returncode == 2 and "not UTF-8" in proc.stderr
    proc = flujo("run", str(EXAMPLES / "linear.yaml"), "--input-json", "{nope")
    assert proc.returncode == 2 and "--input-json is not JSON" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_failed_run_exits_1_with_reason(tmp_path: Path) -> None:
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(
        "apiVersion: flujo.dev/v1alpha1\nkind: Agent\nmetadata: {name: broken}\n"
        "spec:\n  type: scripted\n  responses:\n    - error: {class: permanent, message: nope}\n"
        "---\napiVersion: flujo.dev/v1alpha1\nkind: Pipeline\nmetadata: {name: p}\n"
        "spec:\n  steps:\n    - {name: a, agent: broken}\n"
    )
    proc = flujo("run", str(pipeline), "--input", "x")
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: run failed: step a failed (permanent): nope"


def test_usage_limits_from_the_command_line(tmp_path: Path) -> None:
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(
        "apiVersion: flujo.dev/v1alpha1\nkind: Agent\nmetadata: {name: pricey}\n"
        "spec:\n  type: scripted\n  responses:\n    - output: ok\n"
        "      usage: {inputTokens: 100, costUsd: 0.3}\n"
        "---\napiVersion: flujo.dev/v1alpha1\nkind: Pipeline\nmetadata: {name: p}\n"
        "spec:\n  steps:\n    - {name: a, agent: pricey}\n    - {name: b, agent: pricey}\n"
    )
    proc = flujo("run", str(pipeline), "--max-cost", "0.5")
    assert proc.returncode == 1
    assert "cost limit $0.50 exceeded at b: $0.60 spent" in proc.stderr
    proc = flujo("run", str(pipeline), "--max-tokens", "150", "--json")
    assert json.loads(proc.stdout)["reason"] == "UsageLimitExceeded"
    proc = flujo("run", str(pipeline), "--max-cost", "-1")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_agents_can_live_in_a_separate_file(tmp_path: Path) -> None:
    agents = tmp_path / "agents.yaml"
    agents.write_text(
        "apiVersion: flujo.dev/v1alpha1\nkind: Agent\nmetadata: {name: greeter}\n"
        "spec: {type: builtin, builtin: prepend, config: {prefix: 'hi '}}\n"
    )
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(
        "apiVersion: flujo.dev/v1alpha1\nkind: Pipeline\nmetadata: {name: p}\n"
        "spec:\n  steps:\n    - {name: greet, agent: greeter}\n"
    )
    proc = flujo("run", str(pipeline), "--input", "bob")
    assert proc.returncode == 2 and "unknown agent 'greeter'" in proc.stderr
    proc = flujo("run", str(pipeline), "--agents", str(agents), "--input", "bob")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "hi bob"


def test_pipeline_run_manifests_validate() -> None:
    for path in sorted((EXAMPLES / "runs").glob("*.yaml")):
        proc = flujo("validate", str(path))
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith(f"ok: {path}: PipelineRun ")


def test_an_invalid_pipeline_run_is_reported(tmp_path: Path) -> None:
    bad = tmp_path / "run.yaml"
    bad.write_text(
        "apiVersion: flujo.dev/v1alpha1\nkind: PipelineRun\nmetadata: {name: r}\nspec: {input: x}\n"
    )
    proc = flujo("validate", str(bad))
    assert proc.returncode == 2
    assert "exactly one of pipelineRef and pipeline" in proc.stderr
