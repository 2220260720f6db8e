"""Flujo: AI-agent pipelines, embedded in one process or run by a Kubernetes operator.

The public API::

    from flujo import Flujo, Pipeline, Step, LoopStep, ConditionalStep, ParallelStep, MapStep

    pipeline = Step("draft", writer) >> Step("review", "reviewer")
    result = Flujo(pipeline).run("a haiku about rivers")
"""

from flujo.agents.base import Agent, AgentContext, AgentOutput, BaseAgent
from flujo.agents.registry import AgentEntry, AgentRegistry, UnknownAgentError
from flujo.domain.dsl import (
    BaseStep,
    ConditionalStep,
    LoopStep,
    MapStep,
    ParallelStep,
    Pipeline,
    Step,
)
from flujo.domain.errors import AgentError
from flujo.domain.usage import Usage
from flujo.runtime import Flujo, PipelineValidationError, RunResult
from flujo.spec import AgentManifest, PipelineManifest, RetrySpec, UsageLimits
from flujo.version import __version__

__all__ = [
    "Agent",
    "AgentContext",
    "AgentEntry",
    "AgentError",
    "AgentManifest",
    "AgentOutput",
    "AgentRegistry",
    "BaseAgent",
    "BaseStep",
    "ConditionalStep",
    "Flujo",
    "LoopStep",
    "MapStep",
    "ParallelStep",
    "Pipeline",
    "PipelineManifest",
    "PipelineValidationError",
    "RetrySpec",
    "RunResult",
    "Step",
    "UnknownAgentError",
    "Usage",
    "UsageLimits",
    "__version__",
]
