"""Core recipes: ready-made pipeline shapes shipped with flujo.

Each recipe is written once, as a YAML file in this package (package data,
so it ships in the wheel and ``kubectl apply -f`` takes it as is): the
Pipeline plus scripted stand-in Agents, which make every recipe runnable
without an API key and give it a deterministic golden transcript
(``golden/``).  The factories below do not restate the pipelines in Python:
they load the YAML into the DSL and only rebind the agents (names, agent
objects or plain callables) and the bounds a caller may want to change —
so the YAML, the DSL pipeline and the golden transcript cannot drift apart.

    from flujo import Flujo
    from flujo.recipes import default_recipe, load_recipe

    pipeline = default_recipe(solver=my_solver, max_iterations=5)
    registry = load_recipe("default").registry()   # the scripted stand-ins
    result = Flujo(pipeline, agent_registry=registry).run("Write add(a, b)")
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources

from flujo.agents.registry import AgentRegistry
from flujo.domain.dsl import (
    BaseStep,
    ConditionalStep,
    LoopStep,
    MapStep,
    ParallelStep,
    Pipeline,
    Step,
)
from flujo.domain.dsl.step import AgentRef
from flujo.spec.agent import AgentManifest
from flujo.spec.loader import load_documents
from flujo.spec.pipeline import PipelineManifest

__all__ = [
    "RECIPES",
    "Recipe",
    "agentic_loop_recipe",
    "default_recipe",
    "load_recipe",
    "map_reduce_recipe",
    "recipe_text",
    "refine_until_recipe",
    "router_recipe",
    "tool_use_recipe",
]

RECIPES: tuple[str, ...] = (
    "default",
    "agentic-loop",
    "router",
    "map-reduce",
    "refine-until",
    "tool-use",
)
"""Names of the shipped recipes; ``flujo/recipes/<name>.yaml`` each."""


@dataclass(frozen=True)
class Recipe:
    """A shipped recipe: its Pipeline and its scripted stand-in Agents."""

    name: str
    source: str
    pipeline: PipelineManifest
    agents: tuple[AgentManifest, ...]

    def registry(self, registry: AgentRegistry | None = None) -> AgentRegistry:
        """``registry`` (a new one by default) with the recipe's Agents registered."""
        registry = registry if registry is not None else AgentRegistry()
        for agent in self.agents:
            registry.register_manifest(agent, source=self.source)
        return registry

    def to_pipeline(self) -> Pipeline:
        """The recipe as a DSL pipeline (a fresh object on every call)."""
        return Pipeline.from_manifest(self.pipeline)


def recipe_text(name: str) -> str:
    """The YAML text of a shipped recipe."""
    if name not in RECIPES:
        raise KeyError(f"unknown recipe {name!r} (known: {', '.join(RECIPES)})")
    return resources.files(__name__).joinpath(f"{name}.yaml").read_text(encoding="utf-8")


@cache
def load_recipe(name: str) -> Recipe:
    """Load and validate a shipped recipe (cached: manifests are immutable in use)."""
    source = f"flujo/recipes/{name}.yaml"
    docs = load_documents(recipe_text(name), source=source)
    docs.raise_for_problems()
    if len(docs.pipelines) != 1:  # pragma: no cover - each shipped file holds one
        raise ValueError(f"{source}: expected one Pipeline, found {len(docs.pipelines)}")
    return Recipe(name, source, docs.pipelines[0], tuple(docs.agents))


# --- rebinding agents and bounds ---------------------------------------------


def _walk(steps: list[BaseStep]) -> Iterator[BaseStep]:
    for step in steps:
        yield step
        if isinstance(step, LoopStep | MapStep):
            yield from _walk(step.body)
        elif isinstance(step, ConditionalStep | ParallelStep):
            for body in step.branches.values():
                yield from _walk(body)


def _build(
    name: str,
    agents: Mapping[str, AgentRef | None],
    *,
    loop: str | None = None,
    max_iterations: int | None = None,
) -> Pipeline:
    """The recipe ``name`` with agent names replaced per ``agents`` (None keeps one)."""
    pipeline = load_recipe(name).to_pipeline()
    chosen = {k: v for k, v in agents.items() if v is not None}
    for step in _walk(pipeline.steps):
        if isinstance(step, Step):
            if isinstance(step.agent, str) and step.agent in chosen:
                step.agent = chosen[step.agent]
            if isinstance(step.fallback, str) and step.fallback in chosen:
                step.fallback = chosen[step.fallback]
        elif isinstance(step, LoopStep) and step.name == loop and max_iterations is not None:
            if max_iterations < 1:
                raise ValueError("max_iterations must be at least 1")
            step.max_iterations = max_iterations
    return pipeline


def default_recipe(
    *,
    reviewer: AgentRef | None = None,
    solver: AgentRef | None = None,
    solver_fallback: AgentRef | None = None,
    validator: AgentRef | None = None,
    max_iterations: int | None = None,
) -> Pipeline:
    """review → (solution → validate) until the validator passes it.

    The validator must answer an object with ``passed`` (bool) and
    ``feedback`` (text given to the solver on the next round).
    ``max_iterations=1`` turns reflection off: the first failed validation
    fails the run.
    """
    return _build(
        "default",
        {
            "default-reviewer": reviewer,
            "default-solver": solver,
            "default-solver-backup": solver_fallback,
            "default-validator": validator,
        },
        loop="reflect",
        max_iterations=max_iterations,
    )


def agentic_loop_recipe(
    *,
    planner: AgentRef | None = None,
    search: AgentRef | None = None,
    calculator: AgentRef | None = None,
    max_iterations: int | None = None,
) -> Pipeline:
    """A planner emits ``{"command", "argument"}``; tools run until ``finish``."""
    return _build(
        "agentic-loop",
        {
            "agentic-planner": planner,
            "agentic-search": search,
            "agentic-calculator": calculator,
        },
        loop="work",
        max_iterations=max_iterations,
    )


def router_recipe(
    *,
    classifier: AgentRef | None = None,
    billing: AgentRef | None = None,
    billing_fallback: AgentRef | None = None,
    technical: AgentRef | None = None,
    general: AgentRef | None = None,
) -> Pipeline:
    """Classify (``billing``, ``technical`` or anything else), then branch."""
    return _build(
        "router",
        {
            "router-classifier": classifier,
            "router-billing": billing,
            "router-handoff": billing_fallback,
            "router-technical": technical,
            "router-general": general,
        },
    )


def map_reduce_recipe(
    *,
    summariser: AgentRef | None = None,
    reducer: AgentRef | None = None,
    max_concurrency: int | None = None,
) -> Pipeline:
    """split lines → summarise each (map) → reduce and count (parallel) → report."""
    pipeline = _build(
        "map-reduce", {"map-reduce-summariser": summariser, "map-reduce-reducer": reducer}
    )
    if max_concurrency is not None:
        for step in _walk(pipeline.steps):
            if isinstance(step, MapStep):
                step.max_concurrency = max_concurrency
    return pipeline


def refine_until_recipe(
    *,
    generator: AgentRef | None = None,
    critic: AgentRef | None = None,
    max_iterations: int | None = None,
) -> Pipeline:
    """generate → critique until the critic answers ``{"verdict": "accept"}``."""
    return _build(
        "refine-until",
        {"refine-until-generator": generator, "refine-until-critic": critic},
        loop="refine",
        max_iterations=max_iterations,
    )


def tool_use_recipe(*, assistant: AgentRef | None = None) -> Pipeline:
    """One model step whose model calls tools (its Agent's ``tools``) until it answers.

    ``assistant`` replaces the scripted model: an ``openai`` Agent's name with
    the same ``tools``, say.
    """
    return _build("tool-use", {"tool-use-assistant": assistant})
