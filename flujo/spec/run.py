"""The PipelineRun manifest: one execution of a pipeline in the cluster.

A run names a Pipeline in its namespace (``pipelineRef``) or embeds a spec
(``pipeline``), and carries the input and the budget.  Its status is written
by the operator only (the status subresource).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from flujo.spec.base import ObjectMeta, SpecModel
from flujo.spec.limits import UsageLimits
from flujo.spec.pipeline import PipelineSpec

__all__ = ["ApprovalDecision", "PipelineRef", "PipelineRunManifest", "PipelineRunSpec"]


class PipelineRef(SpecModel):
    """A Pipeline in the run's namespace."""

    name: str = Field(description="Name of the Pipeline.")


class ApprovalDecision(SpecModel):
    """A person's answer to an approval step the run waits on (``kubectl flujo approve``).

    Added to ``spec.approvals`` with ``kubectl patch``; the operator applies each
    once, to a step that waits, and records who made it (the field manager).
    """

    step: str = Field(description="The approval step: its name, or its path.")
    decision: Literal["approve", "reject"] = Field(description="approve or reject.")
    input: Any = Field(None, description="approve: the answer's input (the step's output).")
    reason: str | None = Field(None, max_length=1000, description="reject: why.")


class PipelineRunSpec(SpecModel):
    """What to run, on what input, within which budget."""

    pipeline_ref: PipelineRef | None = Field(None, description="The Pipeline to run.")
    pipeline: PipelineSpec | None = Field(None, description="An inline pipeline spec instead.")
    input: Any = Field(None, description="The run's input (any JSON value).")
    usage_limits: UsageLimits | None = Field(
        None, description="Budget; unset fields fall back to the pipeline's usageLimits."
    )
    timeout_seconds: float | None = Field(None, gt=0, description="Run deadline in seconds.")
    seed: int = Field(0, description="Seed for retry jitter.")
    approvals: list[ApprovalDecision] = Field(
        default_factory=list,
        max_length=1000,
        description="Answers to the run's approval steps, added while it waits.",
    )
    executor: Literal["runner", "pod"] | None = Field(
        None,
        description=(
            "Where the steps execute: runner (one pod serves every step of the run) or pod "
            "(one pod per step launch); unset: the operator's default (FLUJO_EXECUTOR)."
        ),
    )

    @model_validator(mode="after")
    def _one_pipeline(self) -> PipelineRunSpec:
        if (self.pipeline_ref is None) == (self.pipeline is None):
            raise ValueError("a PipelineRun needs exactly one of pipelineRef and pipeline")
        return self


class PipelineRunManifest(SpecModel):
    """A ``PipelineRun`` object."""

    api_version: Literal["flujo.dev/v1alpha1"] = Field("flujo.dev/v1alpha1", alias="apiVersion")
    kind: Literal["PipelineRun"] = "PipelineRun"
    metadata: ObjectMeta
    spec: PipelineRunSpec
    status: Any = Field(None, exclude=True, description="Written by the operator.")
