"""``Step``: one agent call, and the base every DSL step shares.

The DSL is a thin, friendly layer over the declarative spec
(:mod:`flujo.spec`): every DSL object converts to its spec model and back,
so a pipeline written in Python and the same pipeline written in YAML are
the same thing to the engine.  Agent objects and plain callables are
registered under a name when converted; the spec only ever holds names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flujo.spec.pipeline import RetrySpec, StepSpec

if TYPE_CHECKING:
    from flujo.domain.dsl.pipeline import Pipeline

__all__ = ["AgentRef", "AgentSink", "BaseStep", "Step", "agent_ref"]

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


class BaseStep:
    """What every step has: a unique name, and ``>>`` to compose."""

    name: str

    def __rshift__(self, other: BaseStep | Pipeline) -> Pipeline:
        from flujo.domain.dsl.pipeline import Pipeline

        return Pipeline([self]) >> other

    def to_spec(self, sink: AgentSink) -> StepSpec:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class Step(BaseStep):
    """Call one agent.

    ``input`` is a template (``"Review: {{ previous_step }}"``) or any JSON
    value containing templates; when omitted the previous step's output is
    passed unchanged.
    """

    def __init__(
        self,
        name: str,
        agent: AgentRef,
        *,
        input: Any = None,
        retry: RetrySpec | dict[str, Any] | None = None,
        timeout: float | None = None,
        fallback: AgentRef | None = None,
        description: str | None = None,
    ) -> None:
        self.name = name
        self.agent = agent
        self.input = input
        self.retry = RetrySpec.model_validate(retry) if isinstance(retry, dict) else retry
        self.timeout = timeout
        self.fallback = fallback
        self.description = description

    @classmethod
    def from_callable(cls, fn: Any, name: str | None = None, **kwargs: Any) -> Step:
        """A step whose agent is ``fn``, named after it unless ``name`` is given."""
        return cls(name or fn.__name__, fn, **kwargs)

    def to_spec(self, sink: AgentSink) -> StepSpec:
        return StepSpec(
            name=self.name,
            description=self.description,
            agent=agent_ref(self.agent, sink),
            input=self.input,
            retry=self.retry,
            timeout_seconds=self.timeout,
            fallback=agent_ref(self.fallback, sink) if self.fallback is not None else None,
        )
