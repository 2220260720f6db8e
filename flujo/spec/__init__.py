"""Pydantic models of the manifests: the single source for YAML loading,
validation and the generated CRD schemas."""

from flujo.spec.agent import AgentManifest, AgentSpec
from flujo.spec.base import API_GROUP, API_VERSION, ObjectMeta
from flujo.spec.limits import UsageLimits
from flujo.spec.pipeline import (
    BranchSpec,
    ConditionalSpec,
    LoopSpec,
    MapSpec,
    ParallelSpec,
    PipelineManifest,
    PipelineSpec,
    RetrySpec,
    StepSpec,
)

__all__ = [
    "API_GROUP",
    "API_VERSION",
    "AgentManifest",
    "AgentSpec",
    "BranchSpec",
    "ConditionalSpec",
    "LoopSpec",
    "MapSpec",
    "ObjectMeta",
    "ParallelSpec",
    "PipelineManifest",
    "PipelineSpec",
    "RetrySpec",
    "StepSpec",
    "UsageLimits",
]
