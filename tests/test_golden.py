"""Golden transcripts of every core recipe, and the transcript renderer's guarantees.

Each scenario of ``golden/scenarios.yaml`` runs through the embedded runtime;
its transcript must equal ``golden/<name>.txt`` byte for byte, and a
difference fails with a unified diff.  After an intended change::

    pytest tests/test_golden.py --update-goldens   # rewrite, then review `git diff golden/`
    flujo transcript diff                           # review only: show what would change
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from flujo import AgentRegistry, Flujo, Usage
from flujo.cli.transcript import transcript_app, write_transcript
from flujo.domain import errors
from flujo.engine import (
    DeadlineReached,
    Outcome,
    RunStarted,
    StepFailed,
    StepSucceeded,
)
from flujo.recipes import (
    RECIPES,
    agentic_loop_recipe,
    default_recipe,
    load_recipe,
    map_reduce_recipe,
    recipe_text,
    refine_until_recipe,
    router_recipe,
    tool_use_recipe,
)
from flujo.spec import PipelineSpec, UsageLimits
from flujo.transcript import canonical_json, digest, preview, render_transcript, transcript_of
from flujo.transcript.golden import (
    Scenario,
    compare,
    load_scenarios,
    render_scenario,
    run_scenario,
    stale_goldens,
)
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "golden"
SCENARIO_FILE = GOLDEN / "scenarios.yaml"
SCENARIOS = load_scenarios(SCENARIO_FILE)
BY_NAME = {s.name: s for s in SCENARIOS}


def _updating(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-goldens", default=False))


# --- the goldens -------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_transcript_matches_golden(scenario: Scenario, request: pytest.FixtureRequest) -> None:
    comparison = compare(scenario, GOLDEN)
    if comparison.unmet:
        pytest.fail(comparison.report(), pytrace=False)
    if _updating(request):
        if comparison.changed:
            comparison.write()
        return
    if comparison.changed:
        pytest.fail(
            comparison.report()
            + "\n\nIf the change is intended: pytest tests/test_golden.py --update-goldens",
            pytrace=False,
        )


def test_no_stale_goldens() -> None:
    stale = stale_goldens(SCENARIOS, GOLDEN)
    assert not stale, f"golden files no scenario writes (delete them): {stale}"


def test_every_recipe_has_a_scenario() -> None:
    assert {s.recipe for s in SCENARIOS} >= set(RECIPES)


def test_failure_scenarios_exercise_what_they_claim() -> None:
    """The goldens pin failure paths: check the runs really take them."""
    _, fallback = run_scenario(BY_NAME["router-billing-fallback"], GOLDEN)
    reply = fallback.steps["route/billing/billing-reply"]
    assert fallback.success and reply.fallback_used and reply.agent == "router-handoff"
    assert reply.attempt == 2

    _, budget = run_scenario(BY_NAME["map-reduce-budget"], GOLDEN)
    assert budget.outcome.reason == "UsageLimitExceeded"
    assert budget.state.breach is not None and budget.state.breach.limit == "cost"
    cancelled = sorted(p for p, s in budget.steps.items() if s.phase == "cancelled")
    assert cancelled == [
        "summarise-each",
        "summarise-each/item-3/summarise",
        "summarise-each/item-4/summarise",
    ]

    _, permanent = run_scenario(BY_NAME["default-permanent-error"], GOLDEN)
    assert permanent.outcome.error_class == errors.PERMANENT
    assert permanent.steps["review"].attempt == 1  # permanent errors are not retried

    _, transient = run_scenario(BY_NAME["refine-until-transient"], GOLDEN)
    first = transient.events[1]
    assert isinstance(first, StepFailed) and first.error_class == errors.TIMEOUT
    assert transient.success and transient.steps["refine/iter-1/generate"].attempt == 2


def test_golden_shows_retry_fallback_breach_and_cancellation() -> None:
    """The decisions a reviewer needs are spelled out in the goldens."""
    retry = (GOLDEN / "refine-until-transient.txt").read_text(encoding="utf-8")
    assert "retry     refine/iter-1/generate: timeout is retried (try 2 of 3" in retry
    assert "(attempt 2, after 0.0" in retry  # the backoff delay, seeded and stable
    fallback = (GOLDEN / "router-billing-fallback.txt").read_text(encoding="utf-8")
    assert "switching to router-handoff" in fallback
    budget = (GOLDEN / "map-reduce-budget.txt").read_text(encoding="utf-8")
    assert "governor  cost limit" in budget
    assert "cancel    summarise-each/item-4/summarise (run stopped: UsageLimitExceeded)" in budget
    loop = (GOLDEN / "agentic-loop-bound.txt").read_text(encoding="utf-8")
    assert "maxIterations=5 reached -> fail" in loop


# --- a changed recipe shows up as a readable diff ------------------------------


def _mutated(tmp_path: Path, scenario: Scenario, text: str) -> Scenario:
    path = tmp_path / f"{scenario.recipe}.yaml"
    path.write_text(text, encoding="utf-8")
    return scenario.model_copy(
        update={
            "recipe": None,
            "pipeline": str(path),
            "golden": str(GOLDEN / scenario.golden_file),
        }
    )


def test_changed_exit_condition_is_reported_as_a_diff(tmp_path: Path) -> None:
    text = recipe_text("default")
    assert 'exitWhen: "output.passed"' in text
    scenario = _mutated(
        tmp_path,
        BY_NAME["default"],
        text.replace('exitWhen: "output.passed"', 'exitWhen: "iteration >= 1"'),
    )
    comparison = compare(scenario, tmp_path)
    assert comparison.changed
    diff = comparison.diff()
    assert (
        "-    loop      reflect: iteration 1 ended, exitWhen `output.passed` false -> iteration 2"
        in diff
    )
    assert (
        "+    loop      reflect: iteration 1 ended, exitWhen `iteration >= 1` true -> exit" in diff
    )
    assert "-    launch    reflect/iter-2/solution -> default-solver (attempt 1)" in diff


def test_changed_parallel_branch_order_is_reported_as_a_diff(tmp_path: Path) -> None:
    docs = list(yaml.safe_load_all(recipe_text("map-reduce")))
    pipeline = next(d for d in docs if d["kind"] == "Pipeline")
    combine = next(s for s in pipeline["spec"]["steps"] if s["name"] == "combine")
    combine["parallel"]["branches"].reverse()
    text = yaml.safe_dump_all(docs, sort_keys=False)
    comparison = compare(_mutated(tmp_path, BY_NAME["map-reduce"], text), tmp_path)
    diff = comparison.diff()
    assert "-    parallel  combine: branches digest, stats started" in diff
    assert "+    parallel  combine: branches stats, digest started" in diff


# --- stability -------------------------------------------------------------------

_DUMP = """
import sys
from flujo.transcript.golden import load_scenarios, render_scenario
path = sys.argv[1]
for scenario in load_scenarios(path):
    sys.stdout.write(render_scenario(scenario, sys.argv[2]))
"""


def test_transcripts_are_identical_under_any_hash_seed() -> None:
    outputs: dict[str, bytes] = {}
    for seed in ("0", "1", "4242", "random"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        proc = subprocess.run(
            [sys.executable, "-c", _DUMP, str(SCENARIO_FILE), str(GOLDEN)],
            capture_output=True,
            env=env,
            cwd=ROOT,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr.decode()
        outputs[seed] = proc.stdout
    here = "".join(render_scenario(s, GOLDEN) for s in SCENARIOS).encode("utf-8")
    assert len(set(outputs.values())) == 1, "transcripts differ between hash seeds"
    assert outputs["0"] == here


def test_transcript_from_the_json_result_equals_the_in_process_one() -> None:
    scenario = BY_NAME["map-reduce-budget"]
    manifest, result = run_scenario(scenario, GOLDEN)
    data = json.loads(json.dumps(result.to_dict()))
    spec = PipelineSpec.model_validate(json.loads(json.dumps(manifest.spec.to_data())))
    limits = UsageLimits.model_validate(result.state.limits.to_data())
    text = render_transcript(spec, data["events"], limits, name=manifest.metadata.name)
    assert text == transcript_of(result, name=manifest.metadata.name)
    assert text == (GOLDEN / scenario.golden_file).read_text(encoding="utf-8")


def test_values_preview_with_a_digest_of_their_canonical_json() -> None:
    assert canonical_json({"b": 1, "a": [1, "é"]}) == '{"a":[1,"é"],"b":1}'
    assert digest({"b": 1, "a": 2}) == digest({"a": 2, "b": 1})
    assert preview({"b": 1, "a": 2}) == '{"a":2,"b":1}'
    assert canonical_json({3, 1, 2}) == "[1,2,3]"
    assert canonical_json(object()).startswith('"<builtins.object>')  # never an address
    long = "line\n" * 40
    shown = preview(long)
    assert shown.endswith(f"... (242 chars, {digest(long)})")  # of its JSON text
    head = shown.split("...")[0]
    assert not head.endswith("\\") and head.count("\\n") == head.count("\\")
    assert len(shown) < 120
    for cut in range(60, 70):  # a \\u escape is never cut in half
        text = "x" * cut + "\u0001" * 40
        head = preview(text).split("...")[0]
        assert head.endswith(("\\u0001", "x")), head


# --- the DSL factories are the YAML recipes ---------------------------------------


def test_factories_build_the_yaml_pipelines() -> None:
    factories = {
        "default": default_recipe,
        "agentic-loop": agentic_loop_recipe,
        "router": router_recipe,
        "map-reduce": map_reduce_recipe,
        "refine-until": refine_until_recipe,
        "tool-use": tool_use_recipe,
    }
    assert set(factories) == set(RECIPES)
    for name, factory in factories.items():
        assert factory().to_spec() == load_recipe(name).pipeline.spec, name


def test_factory_pipeline_runs_to_the_golden_transcript() -> None:
    scenario = BY_NAME["default"]
    runner = Flujo(default_recipe(), agent_registry=load_recipe("default").registry())
    result = runner.run(scenario.input)
    expected = (GOLDEN / scenario.golden_file).read_text(encoding="utf-8")
    assert transcript_of(result, name="default") == expected


def test_factories_rebind_agents_and_bounds() -> None:
    def solver(task: Any) -> str:
        return "def add(a, b):\n    return a + b\n\ndef test_add(): ...\n"

    pipeline = default_recipe(solver=solver, max_iterations=1)
    spec = pipeline.to_spec()
    reflect = spec.steps[1]
    assert reflect.loop is not None and reflect.loop.max_iterations == 1
    solution = reflect.loop.steps[0]
    assert solution.agent == "solver" and solution.fallback == "default-solver-backup"
    result = Flujo(pipeline, agent_registry=load_recipe("default").registry()).run("add")
    assert result.success and "test_add" in result.output
    assert map_reduce_recipe(max_concurrency=2).to_spec().steps[1].map.max_concurrency == 2  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="at least 1"):
        refine_until_recipe(max_iterations=0)
    with pytest.raises(KeyError, match="unknown recipe"):
        recipe_text("nope")


# --- rendering decisions no recipe scenario reaches --------------------------------


def _spec(*steps: dict[str, Any]) -> PipelineSpec:
    return PipelineSpec.model_validate({"steps": list(steps)})


def test_fail_fast_cancellation_and_a_late_result_are_rendered() -> None:
    spec = _spec(
        {
            "name": "fan",
            "parallel": {
                "branches": [
                    {"name": "a", "steps": [{"name": "x", "agent": "ax"}]},
                    {"name": "b", "steps": [{"name": "y", "agent": "by"}]},
                ]
            },
        }
    )
    events = [
        RunStarted(input="go"),
        StepFailed(path="fan/a/x", error_class=errors.PERMANENT, message="boom"),
        StepSucceeded(path="fan/b/y", output="late", usage=Usage(output_tokens=7)),
    ]
    text = render_transcript(spec, events)
    assert "    cancel    fan/b/y (sibling fan/a/x failed)" in text
    assert "    failed    fan/a/x (permanent): boom" in text
    assert "    ignored   the run is over (step cancelled, attempt 1)" in text
    assert "usage: 7 tokens (0 in, 7 out), $0.000000; run total 7 tokens" in text
    assert "  status: failed" in text


def test_unfinished_log_and_replay_mismatch_are_flagged() -> None:
    spec = _spec({"name": "only", "agent": "a"})
    text = render_transcript(spec, [RunStarted(input=1)])
    assert "status: unfinished (the event log ends while the run is running)" in text
    done = [RunStarted(input=1), StepSucceeded(path="only", output=2)]
    wrong = Outcome(status="succeeded", output=3)
    assert "NOTE: replaying" in render_transcript(spec, done, recorded=wrong)
    right = Outcome(status="succeeded", output=2)
    assert "NOTE" not in render_transcript(spec, done, recorded=right)


# --- the CLI ------------------------------------------------------------------------


def _result_json(tmp_path: Path, embed: bool) -> tuple[Path, str]:
    scenario = BY_NAME["router-billing-fallback"]
    manifest, result = run_scenario(scenario, GOLDEN)
    data = result.to_dict()
    if embed:  # as `flujo run --json` writes it
        data["pipelineName"] = manifest.metadata.name
    else:  # an older result, or one trimmed by hand
        for key in ("pipeline", "limits", "agentCaps"):
            data.pop(key)
    path = tmp_path / "result.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path, (GOLDEN / scenario.golden_file).read_text(encoding="utf-8")


def test_cli_show_renders_a_json_result_with_its_embedded_pipeline(tmp_path: Path) -> None:
    path, golden = _result_json(tmp_path, embed=True)
    out = CliRunner().invoke(transcript_app, ["show", str(path)])
    assert out.exit_code == 0, out.output
    assert out.stdout == golden


def test_cli_show_takes_the_pipeline_file_when_not_embedded(tmp_path: Path) -> None:
    path, golden = _result_json(tmp_path, embed=False)
    runner = CliRunner()
    out = runner.invoke(transcript_app, ["show", str(path)])
    assert out.exit_code == 2 and "--pipeline FILE" in out.output
    recipe = ROOT / "flujo" / "recipes" / "router.yaml"
    out = runner.invoke(transcript_app, ["show", str(path), "--pipeline", str(recipe)])
    assert out.exit_code == 0, out.output
    assert out.stdout == golden
    wrong = ROOT / "examples" / "router.yaml"  # another pipeline: the replay says so
    out = runner.invoke(transcript_app, ["show", str(path), "--pipeline", str(wrong)])
    assert "NOTE: replaying the event log does not reproduce the recorded outcome" in out.stdout


def test_cli_show_rejects_files_without_events(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text('{"status": "succeeded"}', encoding="utf-8")
    out = CliRunner().invoke(transcript_app, ["show", str(path)])
    assert out.exit_code == 2 and 'no "events"' in out.output


def test_cli_diff_reviews_without_writing(tmp_path: Path) -> None:
    scenario = BY_NAME["router-general"]
    golden = (GOLDEN / scenario.golden_file).read_text(encoding="utf-8")
    (tmp_path / "scenarios.yaml").write_text(
        yaml.safe_dump({"scenarios": [scenario.model_dump(by_alias=True, exclude_none=True)]}),
        encoding="utf-8",
    )
    target = tmp_path / scenario.golden_file
    target.write_text(golden, encoding="utf-8")
    runner = CliRunner()
    out = runner.invoke(transcript_app, ["diff", str(tmp_path / "scenarios.yaml")])
    assert out.exit_code == 0, out.output
    assert "ok: 1 goldens up to date" in out.output

    edited = golden.replace("branch=general", "branch=billing")
    target.write_text(edited, encoding="utf-8")
    (tmp_path / "orphan.txt").write_text("", encoding="utf-8")
    out = runner.invoke(transcript_app, ["diff", str(tmp_path / "scenarios.yaml")])
    assert out.exit_code == 1
    assert "-  route/general/general-reply" not in out.stdout  # unchanged lines are context
    assert "-  route                        conditional  succeeded  branch=billing" in out.stdout
    assert "+  route                        conditional  succeeded  branch=general" in out.stdout
    assert "stale golden" in out.stdout and "orphan.txt" in out.stdout
    assert target.read_text(encoding="utf-8") == edited  # nothing written


def test_write_transcript_writes_the_golden_bytes(tmp_path: Path) -> None:
    scenario = BY_NAME["agentic-loop"]
    manifest, result = run_scenario(scenario, GOLDEN)
    out = tmp_path / "t.txt"
    write_transcript(result, out, name=manifest.metadata.name)
    assert out.read_bytes() == (GOLDEN / scenario.golden_file).read_bytes()


def test_scenario_replacing_an_unused_agent_is_refused(tmp_path: Path) -> None:
    scenario = BY_NAME["router-general"].model_copy(
        update={"agents": [load_recipe("default").agents[0]]}
    )
    with pytest.raises(Exception, match="does not use"):
        run_scenario(scenario, GOLDEN)


def test_registry_of_a_recipe_holds_its_agents() -> None:
    registry = load_recipe("router").registry(AgentRegistry())
    assert {"router-billing", "router-handoff", "router-classifier"} <= set(registry.names())


def test_a_launch_deferred_for_reserved_budget_is_rendered() -> None:
    spec = _spec(
        {
            "name": "fan",
            "parallel": {
                "branches": [
                    {"name": "a", "steps": [{"name": "x", "agent": "capped"}]},
                    {"name": "b", "steps": [{"name": "y", "agent": "capped"}]},
                ]
            },
        }
    )
    events = [
        RunStarted(input="go"),
        StepSucceeded(path="fan/a/x", output=1, usage=Usage(cost_usd=0.1)),
        StepSucceeded(path="fan/b/y", output=2, usage=Usage(cost_usd=0.1)),
    ]
    text = render_transcript(
        spec, events, UsageLimits(max_cost_usd=1.0), agent_caps={"capped": 0.6}
    )
    assert "  cost caps: capped=$0.600000" in text
    start = text.index("[1] RunStarted")
    deferred = text.index("    deferred  fan/b/y: waiting for reserved budget (capped)")
    resumed = text.index("    launch    fan/b/y -> capped (attempt 1)")
    assert start < deferred < text.index("[2] StepSucceeded") < resumed


def test_only_the_loop_that_hit_its_bound_says_so() -> None:
    inner = {
        "name": "inner",
        "loop": {"maxIterations": 1, "exitWhen": "false", "steps": [{"name": "x", "agent": "a"}]},
    }
    spec = _spec({"name": "outer", "loop": {"maxIterations": 3, "steps": [inner]}})
    events = [RunStarted(input=0), StepSucceeded(path="outer/iter-1/inner/iter-1/x", output=1)]
    text = render_transcript(spec, events)
    assert (
        "    loop      outer/iter-1/inner: iteration 1 ended, exitWhen `false` false, "
        "maxIterations=1 reached -> fail"
    ) in text
    assert "loop      outer: iteration 1 ended" not in text  # outer did not hit its bound
    assert "    failed    outer (loop_exhausted)" in text


def test_a_deadline_stops_the_run_and_cancels_what_runs() -> None:
    spec = _spec({"name": "slow", "agent": "a"})
    text = render_transcript(spec, [RunStarted(input=0), DeadlineReached()])
    assert "[2] DeadlineReached" in text
    assert "    cancel    slow (run stopped: DeadlineExceeded)" in text
    assert "    finish    failed: DeadlineExceeded (timeout)" in text
