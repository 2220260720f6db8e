"""Bounded templates and expressions (issue 19): every bomb is refused before Jinja parses it.

Each bomb class of ``benchmarks/template_bombs.py`` goes through the real
``flujo`` command: exit code 2 (``flujo run``: the step fails with class
``template`` for the one only a render catches), one ``error:`` line naming
the field and the policy option, no traceback.  Time and memory are measured
by the benchmark, not asserted here.  Then the pieces: the pre-scan, the
per-namespace limits through ``check_pipeline_policy``, the state machine
under a policy's limits, the deadlines (with a fake clock), the operator.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from benchmarks.template_bombs import BOMBS, Bomb, manifest
from flujo.domain import errors
from flujo.domain.templates import (
    TemplateLimits,
    TemplateProblem,
    evaluate,
    measure,
    render_value,
    use_limits,
)
from flujo.domain.templates import (
    limits as limits_module,
)
from flujo.domain.templates import render as render_module
from flujo.domain.validation import check_pipeline
from flujo.security.policy import SecurityPolicy, check_pipeline_policy, use_policy
from flujo.spec.loader import format_loc

from tests.enginekit import Driver, agent, spec

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 120


def flujo(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flujo", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=cwd,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
    )


def one_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, proc.stderr[:1000]
    assert len(lines[0]) < 400
    return lines[0]


def write(tmp_path: Path, bomb: Bomb) -> Path:
    path = tmp_path / f"{bomb.name}.yaml"
    path.write_text(manifest(bomb), encoding="utf-8")
    return path


# --- every bomb class, through the real command ----------------------------------------------

VALIDATED = [b for b in BOMBS if b.command == "validate"]


@pytest.mark.parametrize("bomb", VALIDATED, ids=[b.name for b in VALIDATED])
def test_flujo_validate_refuses_each_bomb_in_one_line(bomb: Bomb, tmp_path: Path) -> None:
    proc = flujo("validate", str(write(tmp_path, bomb)))
    assert proc.returncode == 2, proc.stderr[-1000:]
    line = one_error(proc)
    assert ": spec.steps[" in line and "].input: " in line, line
    assert bomb.expected in line, line


def test_the_issues_bomb_reads_as_the_issue_asks(tmp_path: Path) -> None:
    proc = flujo("validate", str(write(tmp_path, BOMBS[0])))
    assert proc.returncode == 2
    assert one_error(proc).endswith(
        "spec.steps[0].input: template too large: 1048575 bytes (limit 65536, maxTemplateBytes)"
    )


@pytest.mark.parametrize("name", ["outputs-1mb", "parens-5000", "list-30k"])
def test_flujo_run_refuses_before_running(name: str, tmp_path: Path) -> None:
    bomb = next(b for b in BOMBS if b.name == name)
    proc = flujo("run", str(write(tmp_path, bomb)), "--input", "x", "--store", "none")
    assert proc.returncode == 2, proc.stderr[-1000:]
    assert bomb.expected in one_error(proc)
    assert proc.stdout == ""


def test_loop_amplification_fails_the_step_with_class_template(tmp_path: Path) -> None:
    bomb = next(b for b in BOMBS if b.command == "run")
    assert flujo("validate", str(write(tmp_path, bomb))).returncode == 0  # only a render can tell
    proc = flujo("run", str(write(tmp_path, bomb)), "--input", "x", "--store", "none", "--json")
    assert proc.returncode == 1, proc.stderr[-1000:]
    assert "Traceback" not in proc.stderr
    result = json.loads(proc.stdout)
    assert result["errorClass"] == errors.TEMPLATE
    assert "template work limit" in result["message"]


def test_a_namespace_policy_from_the_environment_moves_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(manifest(Bomb("small", "", ("{{ input }} " * 20,), "")), encoding="utf-8")
    assert flujo("validate", str(path)).returncode == 0
    proc = subprocess.run(
        [sys.executable, "-m", "flujo", "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, "FLUJO_SECURITY_MAX_TEMPLATE_BYTES": "100"},
    )
    assert proc.returncode == 2
    assert one_error(proc).endswith(
        "spec.steps[0].input: template too large: 240 bytes (limit 100, maxTemplateBytes)"
    )


def test_a_large_yaml_file_still_refuses_aliases_and_deep_nesting(tmp_path: Path) -> None:
    padding = "# " + "x" * (80 << 10) + "\n"
    path = tmp_path / "alias.yaml"
    path.write_text(padding + "a: &a [1]\nb: *a\n", encoding="utf-8")
    proc = flujo("validate", str(path))
    assert proc.returncode == 2 and "aliases (*name) are not allowed" in one_error(proc)
    path.write_text(padding + "a: " + "[" * 70 + "]" * 70 + "\n", encoding="utf-8")
    proc = flujo("validate", str(path))
    assert proc.returncode == 2 and "nested deeper than 64 levels" in one_error(proc)


# --- the pre-scan --------------------------------------------------------------------------


def test_the_prescan_stops_at_the_first_limit() -> None:
    limits = TemplateLimits()
    huge = "{{ input }}" * 100_000
    assert measure(huge, False, limits).tokens == 0  # over the byte limit: never lexed
    dense = "{{ input }}" * 5_000
    assert measure(dense, False, limits).tokens == limits.max_template_tokens + 1
    deep = "{{ " + "(" * 1_000 + "1" + ")" * 1_000 + " }}"
    assert measure(deep, False, limits).nesting == limits.max_template_nesting + 1


@pytest.mark.parametrize(
    ("source", "nesting"),
    [
        ("hello {{ input }}", 0),
        ("{{ a ~ b ~ c ~ d ~ e }}", 0),
        ("{{ (a) }}", 1),
        ("{% for x in y %}{% if x %}{{ x + 1 }}{% endif %}{% endfor %}", 3),
        ("{% set x %}{% if a %}q{% endif %}{% endset %}", 2),
        ("{{ not not a }}", 2),
    ],
)
def test_nesting_counts_what_makes_jinja_recurse(source: str, nesting: int) -> None:
    assert measure(source).nesting == nesting


def test_every_example_is_far_within_the_cluster_limits() -> None:
    from flujo.domain.templates.scan import template_sources
    from flujo.domain.validation import pipeline_templates
    from flujo.spec.loader import load_files

    cluster = SecurityPolicy.cluster().template_limits()
    examples = sorted((ROOT / "examples").glob("*.yaml"))
    assert examples
    for path in examples:
        for pipeline in load_files([path]).pipelines:
            for value, expression, _ in pipeline_templates(pipeline.spec):
                for source in template_sources(value, expression):
                    size = measure(source, expression, cluster)
                    assert size.bytes * 10 < cluster.max_template_bytes
                    assert size.tokens * 10 < cluster.max_template_tokens
                    assert size.nesting * 4 < cluster.max_template_nesting


# --- validation and the policy -------------------------------------------------------------


def bomb_spec(source: str, *more: dict[str, Any]) -> Any:
    return spec(agent("s", input=source), *more)


def test_check_pipeline_does_not_parse_a_bomb_and_the_policy_names_the_field() -> None:
    pipeline = bomb_spec("{{ input }}" * 100_000)
    assert check_pipeline(pipeline) == []  # skipped, not parsed: reported by the policy
    found = check_pipeline_policy(pipeline, {}, SecurityPolicy.cluster())
    assert [f"{format_loc(f.loc)}: {f.message}" for f in found] == [
        "spec.steps[0].input: template too large: 1100000 bytes (limit 32768, maxTemplateBytes)"
    ]


def test_the_pipeline_total_is_reported_once_where_it_is_crossed() -> None:
    steps = [agent(f"s{i}", input="{{ input }}" + "x" * 30_000) for i in range(6)]
    found = check_pipeline_policy(spec(*steps), {}, SecurityPolicy.cluster())
    assert len(found) == 1 and found[0].loc == ("spec", "steps", 4, "input")
    assert "maxPipelineTemplateBytes" in found[0].message


def test_a_wider_namespace_policy_still_gets_the_name_checks() -> None:
    source = "{{ steps.nope.output }}" + "x" * (100 << 10)
    pipeline = bomb_spec(source)
    assert check_pipeline(pipeline) == []  # over the defaults: left to the policy
    wide = SecurityPolicy.cluster(max_template_bytes=1 << 20, max_pipeline_template_bytes=1 << 20)
    messages = [f.message for f in check_pipeline_policy(pipeline, {}, wide)]
    assert messages == ["template references unknown step 'nope'"]
    narrow = SecurityPolicy.cluster()
    assert "maxTemplateBytes" in check_pipeline_policy(pipeline, {}, narrow)[0].message


def test_expressions_are_measured_too() -> None:
    deep = "(" * 100 + "1" + ")" * 100
    loop = {"name": "l", "loop": {"steps": [agent("a")], "exitWhen": deep, "maxIterations": 2}}
    found = check_pipeline_policy(spec(loop), {}, SecurityPolicy.embedded())
    assert [(f.loc[-1], "maxTemplateNesting" in f.message) for f in found] == [("exitWhen", True)]


def test_the_policy_profiles_set_the_template_limits() -> None:
    embedded, cluster = SecurityPolicy.embedded(), SecurityPolicy.cluster()
    assert embedded.template_limits() == TemplateLimits()
    assert (cluster.max_template_bytes, cluster.max_template_tokens) == (32 << 10, 5_000)
    assert cluster.template_limits().max_compile_ms == 1_000
    with use_policy(cluster):
        assert limits_module.active_limits() == cluster.template_limits()
    assert limits_module.active_limits() == TemplateLimits()


# --- the state machine ---------------------------------------------------------------------


def test_the_machine_fails_the_step_with_class_template_under_a_policys_limits() -> None:
    pipeline = bomb_spec("{{ input }} and " + "x" * 200)
    with use_limits(TemplateLimits(max_template_bytes=100)):
        [finish] = Driver(pipeline).start("data")
    assert finish.outcome.status == "failed"
    assert finish.outcome.error_class == errors.TEMPLATE
    assert "template too large: 216 bytes (limit 100, maxTemplateBytes)" in str(
        finish.outcome.message
    )


def test_a_cached_template_is_checked_again_under_narrower_limits() -> None:
    source = "{{ input }} " + "y" * 300
    assert render_value(source, {"input": 1}).startswith("1 ")
    with use_limits(TemplateLimits(max_template_bytes=100)), pytest.raises(TemplateProblem):
        render_value(source, {"input": 1})


class FakeClock:
    """monotonic() that moves one second per reading: every deadline passes at its first check."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@pytest.fixture
def fake_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(limits_module, "monotonic", FakeClock())
    render_module._tmpl_cache.clear()
    render_module._expr_cache.clear()
    yield
    render_module._tmpl_cache.clear()
    render_module._expr_cache.clear()


def test_the_render_deadline_is_a_backstop(fake_clock: None) -> None:
    loop = "{% for i in range(5000) %}{{ i }}{% endfor %}"
    with pytest.raises(
        TemplateProblem, match=r"rendering took over 5000 ms \(maxTemplateRenderMs\)"
    ):
        render_value(loop, {})
    with use_limits(TemplateLimits(max_render_ms=0)):
        assert len(render_value(loop, {})) > 5000  # 0: no deadline


def test_the_compile_deadline_is_a_backstop(fake_clock: None) -> None:
    source = "{{ input }}" * 500
    with pytest.raises(TemplateProblem, match=r"took over 2000 ms to compile"):
        render_value(source, {"input": 1})
    with pytest.raises(TemplateProblem, match="maxTemplateCompileMs"):
        evaluate(" + ".join(["1"] * 20) + " ~ 'x'" * 300, {})
    with use_limits(TemplateLimits(max_compile_ms=0, max_render_ms=0)):
        assert render_value(source, {"input": 1}) == "1" * 500


# --- the operator --------------------------------------------------------------------------


@pytest.fixture
def cluster(kubeconfig: Path, kubectl: Any, local_kubelet: Any) -> Any:
    kubectl("apply", "-f", str(ROOT / "crds"))
    return kubectl


def test_the_operator_marks_a_bomb_pipeline_invalid_with_the_one_line_error(
    cluster: Any, kubeconfig: Path, tmp_path: Path
) -> None:
    from tests.operatorkit import get_json, running_operator, wait_for

    bomb = json.loads(manifest(BOMBS[0]))
    run = {
        "apiVersion": "flujo.dev/v1alpha1",
        "kind": "PipelineRun",
        "metadata": {"name": "bomb-1"},
        "spec": {"pipelineRef": {"name": bomb["metadata"]["name"]}, "input": "x"},
    }
    path = tmp_path / "bomb.json"
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": [bomb, run]}))
    name = bomb["metadata"]["name"]

    def valid() -> dict[str, Any] | None:
        status = get_json(cluster, "pipeline", name).get("status") or {}
        found = {c["type"]: c for c in status.get("conditions") or []}
        return found.get("Valid")

    with running_operator(kubeconfig, tmp_path) as op:
        cluster("create", "-f", str(path))  # 1 MiB: too large for apply's annotation
        condition = wait_for(valid, 60, "the Pipeline's Valid condition")
        assert (condition["status"], condition["reason"]) == ("False", "PolicyDenied"), op.log()[
            -2000:
        ]
        assert condition["message"] == (
            "spec.steps[0].input: template too large: 1048575 bytes (limit 32768, maxTemplateBytes)"
        )
        pending = wait_for(
            lambda: (get_json(cluster, "pipelinerun", "bomb-1").get("status") or {}).get("reason"),
            60,
            "the run's status",
        )
        assert pending == "PolicyDenied"
        assert "Traceback" not in op.log()
