"""Golden scenarios: run a pipeline on a fixed input, compare its transcript with a file.

Why this is library code and not test code: one scenario file
(``golden/scenarios.yaml``) drives the test suite, the update mode
(``pytest tests/test_golden.py --update-goldens``) and the review command
(``flujo transcript diff``), and a user can golden-test their own pipelines
the same way.  A scenario names a pipeline (a shipped recipe or a file), an
input, usage limits and a seed; it may replace some of the pipeline's agents
with others (a scripted agent that fails, say) to exercise failure paths; and
it states the outcome it expects, so that rewriting goldens cannot quietly
turn a failure scenario into a happy path.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, model_validator

from flujo.agents.registry import AgentRegistry
from flujo.domain.validation import walk_steps
from flujo.runtime.runner import Flujo, RunResult
from flujo.runtime.store import RunStore
from flujo.spec.agent import AgentManifest
from flujo.spec.base import NAME_PATTERN, SpecModel
from flujo.spec.limits import UsageLimits
from flujo.spec.loader import Problem, SpecError, load_files
from flujo.spec.pipeline import PipelineManifest
from flujo.transcript.render import transcript_of

__all__ = [
    "Answer",
    "Comparison",
    "Expectation",
    "Scenario",
    "compare",
    "load_scenarios",
    "render_scenario",
    "run_scenario",
    "stale_goldens",
    "unified_diff",
]


class Expectation(SpecModel):
    """What the run must end with, checked before any transcript comparison."""

    status: str = Field(description="succeeded, failed or cancelled.")
    reason: str | None = Field(None, description="Outcome reason, e.g. UsageLimitExceeded.")
    error_class: str | None = Field(None, description="Outcome error class.")


class Answer(SpecModel):
    """What a person does when the run waits for an approval (in order)."""

    decision: Literal["approve", "reject", "timeout"] = Field(
        description="approve, reject, or let the wait time out."
    )
    step: str | None = Field(None, description="The approval step, if the run waits on several.")
    input: Any = Field(None, description="approve: the answer's input.")
    reason: str | None = Field(None, description="reject: why.")
    by: str | None = Field(None, description="Who answers.")


class Scenario(SpecModel):
    """One run whose transcript is pinned by a golden file."""

    name: str = Field(pattern=NAME_PATTERN, description="Also the golden file's default name.")
    description: str | None = Field(None, description="What the scenario exercises.")
    recipe: str | None = Field(None, description="A shipped recipe (flujo/recipes/NAME.yaml).")
    pipeline: str | None = Field(
        None, description="A pipeline file (with its Agents), relative to the scenario file."
    )
    input: Any = Field(None, description="The run's input.")
    limits: UsageLimits | None = Field(None, description="Usage limits for the run.")
    seed: int = Field(0, description="Seed of retry jitter.")
    golden: str | None = Field(None, description="Golden file; NAME.txt by default.")
    agents: list[AgentManifest] = Field(
        default_factory=list,
        description="Agents replacing the pipeline's agents of the same name.",
    )
    expect: Expectation = Field(description="The outcome the run must have.")
    answers: list[Answer] = Field(
        default_factory=list,
        description="Answers to the run's approval steps, given in order while it waits.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> Scenario:
        if (self.recipe is None) == (self.pipeline is None):
            raise ValueError(f"scenario {self.name!r}: give exactly one of recipe, pipeline")
        return self

    @property
    def golden_file(self) -> str:
        return self.golden or f"{self.name}.txt"


class _ScenarioFile(SpecModel):
    scenarios: list[Scenario] = Field(min_length=1)


def load_scenarios(path: str | Path) -> list[Scenario]:
    """Read a scenario file; names and golden files must be unique."""
    source = str(path)
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        scenarios = _ScenarioFile.model_validate(data).scenarios
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise SpecError([Problem(source, f"invalid YAML: {exc}".splitlines()[0], line)]) from exc
    except (OSError, ValueError) as exc:
        raise SpecError([Problem(source, str(exc).strip())]) from exc
    problems: list[Problem] = []
    for attr in ("name", "golden_file"):
        seen: set[str] = set()
        for s in scenarios:
            value = getattr(s, attr)
            if value in seen:
                problems.append(Problem(source, f"scenario {s.name!r}: duplicate {attr} {value!r}"))
            seen.add(value)
    if problems:
        raise SpecError(problems)
    return scenarios


def _documents(scenario: Scenario, base: Path) -> tuple[PipelineManifest, list[AgentManifest]]:
    if scenario.recipe is not None:
        from flujo.recipes import load_recipe

        recipe = load_recipe(scenario.recipe)
        return recipe.pipeline, list(recipe.agents)
    assert scenario.pipeline is not None
    source = base / scenario.pipeline
    docs = load_files([source])
    docs.raise_for_problems()
    if len(docs.pipelines) != 1:
        raise SpecError([Problem(str(source), "expected exactly one Pipeline document")])
    return docs.pipelines[0], docs.agents


def run_scenario(scenario: Scenario, base: str | Path) -> tuple[PipelineManifest, RunResult]:
    """Run the scenario embedded; ``base`` is the directory of its scenario file."""
    manifest, agents = _documents(scenario, Path(base))
    used = {
        name
        for step, _, _ in walk_steps(manifest.spec.steps)
        for name in (step.agent, step.fallback)
        if name is not None
    }
    unused = sorted(a.metadata.name for a in scenario.agents if a.metadata.name not in used)
    if unused:
        raise SpecError(
            [Problem(scenario.name, f"replaces agents the pipeline does not use: {unused}")]
        )
    registry = AgentRegistry(clock=lambda: "")
    for agent in [*agents, *scenario.agents]:
        registry.register_manifest(agent, source=scenario.name)
    store = RunStore(":memory:") if scenario.answers else None
    runner = Flujo(
        manifest,
        agent_registry=registry,
        usage_limits=scenario.limits,
        seed=scenario.seed,
        source=scenario.name,
        store=store,
    )
    now = [0.0]
    runner.clock = lambda: now[0]  # approval timeouts pass when the scenario says so
    result = runner.run(scenario.input, run_id=scenario.name if store else None)
    for answer in scenario.answers:
        if result.status != "awaiting approval":
            raise SpecError([Problem(scenario.name, f"an answer ({answer.decision}) to no wait")])
        if answer.decision == "timeout":
            now[0] += 10.0**9
        else:
            runner.answer(
                scenario.name,
                approved=answer.decision == "approve",
                step=answer.step,
                input=answer.input,
                reason=answer.reason,
                by=answer.by,
            )
        result = runner.resume(scenario.name)
    return manifest, result


def _unmet(scenario: Scenario, result: RunResult) -> list[str]:
    want, got = scenario.expect, result.outcome
    problems = []
    for label, expected, actual in (
        ("status", want.status, got.status),
        ("reason", want.reason, got.reason),
        ("errorClass", want.error_class, got.error_class),
    ):
        if expected is not None and expected != actual:
            problems.append(f"expected {label} {expected!r}, the run ended with {actual!r}")
    return problems


def render_scenario(scenario: Scenario, base: str | Path) -> str:
    """The scenario's transcript, exactly as its golden file should hold it."""
    manifest, result = run_scenario(scenario, base)
    return transcript_of(result, name=manifest.metadata.name)


def unified_diff(expected: str, actual: str, path: str) -> str:
    """A unified diff from the golden text to this run's text ('' when equal)."""
    lines = difflib.unified_diff(
        expected.splitlines(keepends=True),
        actual.splitlines(keepends=True),
        fromfile=f"{path} (golden)",
        tofile=f"{path} (this run)",
    )
    return "".join(line if line.endswith("\n") else line + "\n\\ no newline\n" for line in lines)


@dataclass
class Comparison:
    """A scenario's transcript against its golden file."""

    scenario: Scenario
    path: Path
    expected: str | None
    actual: str
    unmet: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return self.expected != self.actual

    @property
    def ok(self) -> bool:
        return not self.changed and not self.unmet

    def diff(self) -> str:
        return unified_diff(self.expected or "", self.actual, str(self.path))

    def report(self) -> str:
        """Everything a reviewer needs: unmet expectations, then the diff."""
        lines = [f"scenario {self.scenario.name}: {problem}" for problem in self.unmet]
        if self.expected is None:
            lines.append(f"scenario {self.scenario.name}: no golden file {self.path} yet")
        if self.changed:
            lines.append(self.diff().rstrip("\n"))
        return "\n".join(lines)

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(self.actual, encoding="utf-8", newline="\n")


def compare(scenario: Scenario, base: str | Path) -> Comparison:
    """Run ``scenario`` and compare its transcript with its golden file under ``base``."""
    manifest, result = run_scenario(scenario, base)
    actual = transcript_of(result, name=manifest.metadata.name)
    path = Path(base) / scenario.golden_file
    expected = path.read_text(encoding="utf-8") if path.exists() else None
    return Comparison(scenario, path, expected, actual, _unmet(scenario, result))


def stale_goldens(scenarios: Sequence[Scenario], base: str | Path) -> list[Path]:
    """Golden ``*.txt`` files under ``base`` that no scenario writes."""
    wanted = {(Path(base) / s.golden_file).resolve() for s in scenarios}
    return sorted(p for p in Path(base).glob("*.txt") if p.resolve() not in wanted)
