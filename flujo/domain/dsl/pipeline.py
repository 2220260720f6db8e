"""``Pipeline``: an ordered sequence of steps, and the unit that runs.

``a >> b >> c`` builds one; ``Pipeline.from_yaml`` loads one.  Conversion to
the declarative :class:`~flujo.spec.PipelineManifest` is lossless, so
DSL → spec → YAML → DSL gives back an equal pipeline.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml

from flujo.domain.dsl.step import AgentSink, BaseStep
from flujo.spec.base import ObjectMeta
from flujo.spec.limits import UsageLimits
from flujo.spec.pipeline import PipelineManifest, PipelineSpec

__all__ = ["Body", "Pipeline", "as_steps"]


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
        from flujo.domain.dsl.convert import step_from_spec

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
