"""What every DSL object shares: agent naming, the step base, and ``Pipeline``.

The DSL is a thin, friendly layer over the declarative spec
(:mod:`flujo.spec`): every DSL object converts to its spec model and back,
so a pipeline written in Python and the same pipeline written in YAML are
the same thing to the engine.  Agent objects and plain callables are
registered under a name when converted; the spec only ever holds names.

Why one module: ``step >> step`` makes a ``Pipeline``, a ``Pipeline`` is made
of steps, and every container holds a ``Pipeline``-like body, so the base
step and the sequence belong together, below every step kind.  Spec → DSL
runs the other way without a cycle: each step class names the spec key it
builds (``kind``) and converts itself in ``from_spec``; defining the class
registers it here, and :func:`step_from_spec` looks the kind up.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import yaml

from flujo.spec.base import ObjectMeta
from flujo.spec.limits import UsageLimits
from flujo.spec.pipeline import PipelineManifest, PipelineSpec, StepSpec

__all__ = [
    "AgentRef",
    "AgentSink",
    "BaseStep",
    "Body",
    "Pipeline",
    "agent_ref",
    "as_steps",
    "step_from_spec",
    "steps_from_spec",
]

AgentRef = Any
"""An agent name (``str``), an agent object, or a plain Python callable."""


class AgentSink:
    """Collects in-code agents under unique names while converting to a spec."""

    def __init__(self) -> None:
        self.objects: dict[str, Any] = {}
        self._names: dict[int, str] = {}

    def name_for(self, agent: AgentRef) -> str:
        if isinstance(agent, str):
            return agent
        known = self._names.get(id(agent))
        if known is not None:
            return known
        base = getattr(agent, "name", None) or getattr(agent, "__name__", None)
        base = str(base or type(agent).__name__).replace("<", "").replace(">", "")
        base = "".join(c if c.isalnum() or c in "-_." else "-" for c in base).strip("-_.")
        name, n = base or "agent", 2
        while name in self.objects:
            name, n = f"{base}-{n}", n + 1
        self.objects[name] = agent
        self._names[id(agent)] = name
        return name


def agent_ref(agent: AgentRef, sink: AgentSink) -> str:
    return sink.name_for(agent)


_KINDS: dict[str, type[BaseStep]] = {}
"""Step class by the spec key it builds, filled as step classes are defined."""


class BaseStep:
    """What every step has: a unique name, and ``>>`` to compose."""

    name: str
    kind: ClassVar[str | None] = None
    """The spec key this class builds (``agent``, ``loop`` …); None for abstract bases."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        kind = cls.__dict__.get("kind")
        if kind is not None:
            _KINDS[kind] = cls

    def __rshift__(self, other: BaseStep | Pipeline) -> Pipeline:
        return Pipeline([self]) >> other

    def to_spec(self, sink: AgentSink) -> StepSpec:
        raise NotImplementedError

    @classmethod
    def from_spec(cls, spec: StepSpec) -> BaseStep:
        """The DSL step a spec of this class's ``kind`` describes."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def step_from_spec(spec: StepSpec) -> BaseStep:
    """Spec → DSL, the inverse of every ``to_spec``."""
    return _KINDS[spec.kind].from_spec(spec)


def steps_from_spec(specs: Iterable[StepSpec]) -> list[BaseStep]:
    return [step_from_spec(s) for s in specs]


class Pipeline:
    """Steps run in order; each step's output is the next one's input."""

    def __init__(
        self,
        steps: Iterable[BaseStep] = (),
        *,
        name: str = "pipeline",
        description: str | None = None,
        usage_limits: UsageLimits | dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> None:
        self.steps: list[BaseStep] = list(steps)
        self.name = name
        self.description = description
        self.usage_limits = (
            UsageLimits.model_validate(usage_limits)
            if isinstance(usage_limits, dict)
            else usage_limits
        )
        self.timeout = timeout

    def __rshift__(self, other: BaseStep | Pipeline) -> Pipeline:
        more = other.steps if isinstance(other, Pipeline) else [other]
        return Pipeline(
            [*self.steps, *more],
            name=self.name,
            description=self.description,
            usage_limits=self.usage_limits,
            timeout=self.timeout,
        )

    def __repr__(self) -> str:
        return f"Pipeline({self.name!r}, steps={[s.name for s in self.steps]})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pipeline) and self.to_manifest().to_data() == (
            other.to_manifest().to_data()
        )

    __hash__ = None  # type: ignore[assignment]

    # --- conversion -----------------------------------------------------

    def to_spec(self, sink: AgentSink | None = None) -> PipelineSpec:
        sink = sink or AgentSink()
        return PipelineSpec(
            description=self.description,
            steps=[s.to_spec(sink) for s in self.steps],
            usage_limits=self.usage_limits,
            timeout_seconds=self.timeout,
        )

    def agents(self) -> dict[str, Any]:
        """In-code agents (objects and callables) by the names the spec uses."""
        sink = AgentSink()
        self.to_spec(sink)
        return sink.objects

    def to_manifest(self, sink: AgentSink | None = None) -> PipelineManifest:
        return PipelineManifest(metadata=ObjectMeta(name=self.name), spec=self.to_spec(sink))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_manifest().to_data(), sort_keys=False, allow_unicode=True)

    @classmethod
    def from_spec(cls, spec: PipelineSpec, name: str = "pipeline") -> Pipeline:
        return cls(
            [step_from_spec(s) for s in spec.steps],
            name=name,
            description=spec.description,
            usage_limits=spec.usage_limits,
            timeout=spec.timeout_seconds,
        )

    @classmethod
    def from_manifest(cls, manifest: PipelineManifest) -> Pipeline:
        return cls.from_spec(manifest.spec, name=manifest.metadata.name)

    @classmethod
    def from_yaml(cls, text: str) -> Pipeline:
        """Load the single Pipeline document of a YAML text (Agents are ignored)."""
        from flujo.spec.loader import load_documents

        docs = load_documents(text, source="<yaml>")
        pipelines = list(docs.pipelines)
        if len(pipelines) != 1:
            raise ValueError(f"expected one Pipeline document, found {len(pipelines)}")
        return cls.from_manifest(pipelines[0])


Body = BaseStep | Pipeline | Iterable[BaseStep]


def as_steps(body: Body) -> list[BaseStep]:
    """A container body given as a step, a pipeline or a list of steps."""
    if isinstance(body, Pipeline):
        return list(body.steps)
    if isinstance(body, BaseStep):
        return [body]
    return list(body)
