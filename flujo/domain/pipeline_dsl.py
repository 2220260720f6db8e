"""Compatibility module: the DSL names under their historical import path.

Kept so ``from flujo.domain.pipeline_dsl import Step`` keeps working; new
code imports from :mod:`flujo` or :mod:`flujo.domain.dsl`.  Nothing inside
the project imports this module (an import-linter contract checks it).
"""

from flujo.domain.dsl import (
    BaseStep,
    ConditionalStep,
    LoopStep,
    MapStep,
    ParallelStep,
    Pipeline,
    Step,
)

__all__ = ["BaseStep", "ConditionalStep", "LoopStep", "MapStep", "ParallelStep", "Pipeline", "Step"]
