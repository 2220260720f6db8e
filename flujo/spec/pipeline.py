"""The Pipeline manifest: the document ``flujo run`` and ``kubectl apply`` take.

A step is one object holding exactly one *kind* key, Argo-style::

    - name: draft            # an agent call
      agent: writer
      input: "Write about {{ input }}"
    - name: refine           # a loop around a body of steps
      loop:
        maxIterations: 3
        exitWhen: "'APPROVED' in output"
        steps: [...]

Containers (``loop``, ``conditional``, ``parallel``, ``map``) hold further
steps.  Nesting is bounded (:data:`MAX_DEPTH`) because Kubernetes structural
schemas cannot recurse: the CRD schema is the same model unrolled to that
depth, and validation here enforces the same bound, so every document that
runs embedded also fits the cluster.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from flujo.spec.base import API_VERSION, NAME_PATTERN, ObjectMeta, SpecModel
from flujo.spec.error_classes import DEFAULT_RETRY_ON
from flujo.spec.limits import UsageLimits

__all__ = [
    "CONTAINER_KINDS",
    "MAX_BRANCHES",
    "MAX_DEPTH",
    "MAX_SEQUENCE",
    "STEP_KINDS",
    "ApprovalSpec",
    "BranchSpec",
    "ConditionalSpec",
    "LoopSpec",
    "MapSpec",
    "ParallelSpec",
    "PipelineManifest",
    "PipelineSpec",
    "RetrySpec",
    "StepSpec",
]

MAX_DEPTH = 6
"""Deepest nesting of containers (a loop in a parallel in a loop is depth 3)."""

MAX_SEQUENCE = 10_000
"""Steps in one sequence (pipeline, loop body, branch, map body)."""
MAX_BRANCHES = 64
"""Branches of one parallel or conditional step."""

STEP_KINDS = ("agent", "loop", "conditional", "parallel", "map", "approval")
CONTAINER_KINDS = ("loop", "conditional", "parallel", "map")

MergeStrategy = Literal["dict", "list", "concat", "merge", "first"]
FailurePolicy = Literal["failFast", "wait", "ignore"]


class RetrySpec(SpecModel):
    """How a failed agent call is retried. Delays grow exponentially with jitter."""

    max_attempts: int = Field(1, ge=1, le=100, description="Attempts in all, the first included.")
    backoff_seconds: float = Field(1.0, ge=0, description="Delay before the second attempt.")
    backoff_multiplier: float = Field(2.0, ge=1, description="Growth factor of the delay.")
    max_backoff_seconds: float = Field(60.0, ge=0, description="Upper bound of one delay.")
    jitter: float = Field(0.1, ge=0, le=1, description="Random spread, as a fraction of the delay.")
    retry_on: list[str] = Field(
        default_factory=lambda: list(DEFAULT_RETRY_ON),
        description="Error classes that are retried (transient ones by default).",
    )


class BranchSpec(SpecModel):
    """A named sequence of steps inside a conditional or parallel step."""

    name: str = Field(pattern=NAME_PATTERN, description="Branch name, part of step paths.")
    steps: list[StepSpec] = Field(
        default_factory=list, max_length=MAX_SEQUENCE, description="Steps run in order."
    )


class LoopSpec(SpecModel):
    """Repeat a body until ``exitWhen`` is true, at most ``maxIterations`` times.

    The condition is evaluated after each iteration (do-while) with
    ``output`` (the iteration's output) and ``iteration`` (1-based) in scope.
    Each iteration's output is the next iteration's input.
    """

    max_iterations: int = Field(ge=1, le=100_000, description="Hard bound on iterations.")
    exit_when: str | None = Field(None, description="Jinja expression; true ends the loop.")
    on_max_iterations: Literal["fail", "succeed"] = Field(
        "fail", description="Outcome when the bound is hit before exitWhen holds."
    )
    steps: list[StepSpec] = Field(
        min_length=1, max_length=MAX_SEQUENCE, description="The loop body."
    )


class ConditionalSpec(SpecModel):
    """Evaluate ``condition`` and run the branch whose name equals its value."""

    condition: str = Field(description="Jinja expression giving a branch name (true/false too).")
    branches: list[BranchSpec] = Field(
        min_length=1, max_length=MAX_BRANCHES, description="Candidate branches."
    )
    default: str | None = Field(None, description="Branch taken when no name matches.")


class ParallelSpec(SpecModel):
    """Run every branch concurrently, then merge their outputs."""

    branches: list[BranchSpec] = Field(
        min_length=1, max_length=MAX_BRANCHES, description="Branches run concurrently."
    )
    merge: MergeStrategy = Field(
        "dict",
        description="dict: {branch: output}; list: outputs in branch order; concat: strings "
        "joined by newlines; merge: dict outputs merged in branch order; first: first branch.",
    )
    on_branch_failure: FailurePolicy = Field(
        "failFast",
        description="failFast: cancel the others and fail; wait: let the others finish, then "
        "fail; ignore: merge the branches that succeeded.",
    )
    max_concurrency: int | None = Field(None, ge=1, description="Branches running at once.")


class MapSpec(SpecModel):
    """Run the body once per item of a list, concurrently; the output is the list of results.

    With ``batchSize`` the body runs once per *batch* of up to that many
    consecutive items instead: ``item`` is the batch (a list) and ``index``
    the batch number; the body must return one result per item, and the
    map's output is the same flat list an unbatched map gives.
    """

    items: str = Field(description="Jinja expression giving the list to fan out over.")
    steps: list[StepSpec] = Field(
        min_length=1, max_length=MAX_SEQUENCE, description="Body run per item (or per batch)."
    )
    max_concurrency: int | None = Field(
        None, ge=1, description="Items (batches, with batchSize) running at once."
    )
    on_item_failure: FailurePolicy = Field(
        "failFast", description="As parallel.onBranchFailure; applies per batch with batchSize."
    )
    max_items: int = Field(1000, ge=1, le=100_000, description="Refuse lists longer than this.")
    batch_size: int | None = Field(
        None,
        ge=1,
        le=100_000,
        description="Run the body once per batch of up to this many items: its input (item) "
        "is the list of the batch's items and it must return a list of as many results.",
    )


class ApprovalSpec(SpecModel):
    """Pause the run until a person approves or rejects (``flujo approve``, ``kubectl patch``).

    The step's input (its ``input`` template, else the previous step's output)
    is what is approved; the answer's input, when given, becomes the step's
    output, else the step's input does.  A rejection fails the step with error
    class ``rejected``: its ``fallback`` agent runs if it names one, otherwise
    the failure takes the path any step failure takes.
    """

    message: str = Field(
        "Approve {{ previous_step }}?",
        max_length=4096,
        description="Template shown to the person (earlier outputs, input, step in scope).",
    )
    input_schema: dict[str, Any] | None = Field(
        None,
        alias="schema",
        description="JSON Schema the answer's input must satisfy (refused otherwise).",
    )
    timeout_seconds: float | None = Field(
        None, gt=0, description="How long to wait for an answer (from when the wait began)."
    )
    on_timeout: Literal["reject", "approve", "fail"] = Field(
        "reject",
        description="Without an answer in time: reject (the failure path), approve (the "
        "input goes on) or fail (error class timeout, no fallback).",
    )


class StepSpec(SpecModel):
    """One step: an agent call or a container of further steps."""

    name: str = Field(pattern=NAME_PATTERN, description="Unique step name in the pipeline.")
    description: str | None = Field(None, description="Free text for humans.")
    agent: str | None = Field(None, description="Agent name, resolved by the registry.")
    input: Any = Field(
        None,
        description="Template (or JSON value with templates) rendered as the agent's input; "
        "the previous step's output when unset.",
    )
    retry: RetrySpec | None = Field(None, description="Retry policy for agent failures.")
    timeout_seconds: float | None = Field(None, gt=0, description="Per-attempt timeout.")
    fallback: str | None = Field(
        None, description="Agent used when the primary fails permanently or its circuit is open."
    )
    loop: LoopSpec | None = Field(None, description="Repeat a body of steps.")
    conditional: ConditionalSpec | None = Field(None, description="Run one named branch.")
    parallel: ParallelSpec | None = Field(None, description="Run branches concurrently.")
    map: MapSpec | None = Field(None, description="Run a body once per list item.")
    approval: ApprovalSpec | None = Field(
        None, description="Wait for a person to approve or reject."
    )

    @model_validator(mode="before")
    @classmethod
    def _known_kind(cls, data: Any) -> Any:
        if isinstance(data, dict):
            known = {f.alias or n for n, f in cls.model_fields.items()} | set(cls.model_fields)
            unknown = sorted(str(k) for k in data if k not in known)
            if unknown:
                raise ValueError(
                    f"unknown step kind or field {unknown[0]!r} (a step has one of: "
                    + ", ".join(STEP_KINDS)
                    + ")"
                )
        return data

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> StepSpec:
        kinds = [k for k in STEP_KINDS if getattr(self, k) is not None]
        if len(kinds) != 1:
            found = " and ".join(kinds) if kinds else "none"
            raise ValueError(
                f"step {self.name!r} must have exactly one of {', '.join(STEP_KINDS)}; "
                f"found {found}"
            )
        if kinds[0] == "approval" and (self.retry or self.timeout_seconds):
            raise ValueError(
                f"step {self.name!r}: an approval step has no retry or timeoutSeconds "
                "(its wait has approval.timeoutSeconds)"
            )
        if kinds[0] not in ("agent", "approval") and (
            self.retry or self.fallback or self.timeout_seconds
        ):
            raise ValueError(
                f"step {self.name!r}: retry, fallback and timeoutSeconds apply to agent steps only"
            )
        return self

    @property
    def kind(self) -> str:
        for k in STEP_KINDS:
            if getattr(self, k) is not None:
                return k
        return "agent"  # unreachable after validation


class PipelineSpec(SpecModel):
    """What a pipeline does: its steps, default limits and timeout."""

    description: str | None = Field(None, description="Free text for humans.")
    steps: list[StepSpec] = Field(
        min_length=1, max_length=MAX_SEQUENCE, description="Top-level steps run in order."
    )
    usage_limits: UsageLimits | None = Field(None, description="Default budget for runs.")
    timeout_seconds: float | None = Field(None, gt=0, description="Default run deadline.")


class PipelineManifest(SpecModel):
    """A ``Pipeline`` object, as in a YAML file or the cluster."""

    api_version: Literal["flujo.dev/v1alpha1"] = Field("flujo.dev/v1alpha1", alias="apiVersion")
    kind: Literal["Pipeline"] = "Pipeline"
    metadata: ObjectMeta
    spec: PipelineSpec
    status: Any = Field(None, exclude=True, description="Ignored when loading.")

    def to_data(self) -> dict[str, Any]:
        metadata = self.metadata.model_dump(exclude_none=True, exclude_defaults=True)
        metadata["name"] = self.metadata.name
        return {
            "apiVersion": API_VERSION,
            "kind": "Pipeline",
            "metadata": metadata,
            "spec": self.spec.to_data(),
        }


BranchSpec.model_rebuild()
LoopSpec.model_rebuild()
ConditionalSpec.model_rebuild()
ParallelSpec.model_rebuild()
MapSpec.model_rebuild()
ApprovalSpec.model_rebuild()
StepSpec.model_rebuild()
