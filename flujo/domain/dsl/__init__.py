"""The pipeline DSL: build pipelines in Python, convert them to and from YAML."""

from flujo.domain.dsl.approval import ApprovalStep
from flujo.domain.dsl.conditional import ConditionalStep
from flujo.domain.dsl.loop import LoopStep
from flujo.domain.dsl.map import MapStep
from flujo.domain.dsl.parallel import ParallelStep
from flujo.domain.dsl.pipeline import Pipeline
from flujo.domain.dsl.step import BaseStep, Step

__all__ = [
    "ApprovalStep",
    "BaseStep",
    "ConditionalStep",
    "LoopStep",
    "MapStep",
    "ParallelStep",
    "Pipeline",
    "Step",
]
