"""The Python DSL: composition, agents by object/name/callable, lossless round trips."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from flujo import (
    AgentOutput,
    BaseAgent,
    ConditionalStep,
    Flujo,
    LoopStep,
    MapStep,
    ParallelStep,
    Pipeline,
    Step,
    Usage,
)

ROOT = Path(__file__).resolve().parent.parent


def big_pipeline() -> Pipeline:
    return Pipeline(
        [
            Step(
                "draft",
                "writer",
                input="Write about {{ input }}",
                timeout=5,
                retry={"maxAttempts": 3},
                fallback="backup",
            ),
            LoopStep(
                "refine",
                [Step("critic", "critic"), Step("fix", "writer")],
                max_iterations=3,
                exit_when="'ok' in output",
            ),
            ConditionalStep("route", "previous_step", {"a": Step("ra", "x"), "b": []}, default="b"),
            ParallelStep(
                "fan",
                {"one": Step("p1", "x"), "two": [Step("p2", "y")]},
                merge="list",
                on_branch_failure="ignore",
                max_concurrency=2,
            ),
            MapStep("each", "steps.fan.output", Step("per", "x"), max_concurrency=4),
        ],
        name="big",
        usage_limits={"maxCostUsd": 1.5},
        timeout=30,
    )


def test_rshift_composes_steps_and_pipelines() -> None:
    a, b, c = Step("a", "x"), Step("b", "x"), Step("c", "x")
    p = a >> b >> c
    assert [s.name for s in p.steps] == ["a", "b", "c"]
    assert [s.name for s in ((a >> b) >> Pipeline([c])).steps] == ["a", "b", "c"]


def test_dsl_spec_yaml_dsl_round_trip_is_lossless() -> None:
    original = big_pipeline()
    text = original.to_yaml()
    again = Pipeline.from_yaml(text)
    assert again == original
    assert again.to_yaml() == text
    assert "maxIterations: 3" in text and "exitWhen: '''ok'' in output'" in text


def test_yaml_output_is_a_valid_manifest_for_the_cli(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(big_pipeline().to_yaml())
    proc = subprocess.run(
        [sys.executable, "-m", "flujo", "validate", str(path)], capture_output=True, text=True
    )
    # agents are names only: validation reports them all, and nothing else
    assert proc.returncode == 2
    problems = [line for line in proc.stderr.strip().splitlines() if line.startswith("error:")]
    assert problems and all("unknown agent" in line for line in problems)
    assert {line.split("unknown agent ")[1].split()[0] for line in problems} == {
        "'writer'",
        "'backup'",
        "'critic'",
        "'x'",
        "'y'",
    }


class Shout(BaseAgent):
    supports_sync = False
    name = "shout"

    async def run(self, data: object, context: object) -> AgentOutput:
        return AgentOutput(str(data).upper(), Usage(input_tokens=2, output_tokens=3, cost_usd=0.01))


def test_steps_accept_objects_names_and_callables() -> None:
    def exclaim(text: str) -> str:
        return text + "!"

    async def twice(text: str) -> str:
        return text * 2

    shout = Shout()
    p = Step("s", shout) >> Step("e", exclaim) >> Step("t", twice) >> Step("u", "builtin.lower")
    assert set(p.agents()) == {"shout", "exclaim", "twice"}
    result = Flujo(p).run("hey")
    assert result.output == "hey!hey!"
    assert result.usage == Usage(input_tokens=2, output_tokens=3, cost_usd=0.01)
    assert [s.agent for s in result.steps.values()] == [
        "shout",
        "exclaim",
        "twice",
        "builtin.lower",
    ]


def test_same_named_callables_get_distinct_names() -> None:
    p = Step("a", lambda x: x + 1) >> Step("b", lambda x: x * 10)
    assert Flujo(p).run(1).output == 20


def test_compat_module_reexports_and_is_unused_internally() -> None:
    from flujo.domain import pipeline_dsl

    assert pipeline_dsl.Step is Step and pipeline_dsl.Pipeline is Pipeline
    users = [
        p
        for p in (ROOT / "flujo").rglob("*.py")
        if "pipeline_dsl" in p.read_text() and p.name != "pipeline_dsl.py"
    ]
    assert users == []


def test_operator_is_a_source_folder_not_a_package() -> None:
    assert not (ROOT / "operator" / "__init__.py").exists()
    import operator

    assert hasattr(operator, "itemgetter")  # the stdlib module, not ours


def test_a_single_step_runs_as_a_pipeline() -> None:
    assert Flujo(Step("only", "builtin.upper")).run("x").output == "X"


def test_yaml_fields_are_camel_case_only(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        "apiVersion: flujo.dev/v1alpha1\nkind: Pipeline\nmetadata: {name: p}\n"
        "spec:\n  steps:\n    - name: l\n      loop:\n        max_iterations: 2\n"
        "        steps: [{name: a, agent: builtin.echo}]\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "flujo", "validate", str(path)], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "max_iterations" in proc.stderr and "maxIterations" in proc.stderr
