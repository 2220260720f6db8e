"""``MapStep``: fan a body out over the items of a list, then gather the results."""

from __future__ import annotations

from typing import Literal

from flujo.domain.dsl.base import AgentSink, BaseStep, Body, as_steps, steps_from_spec
from flujo.spec.pipeline import MapSpec, StepSpec

__all__ = ["MapStep"]


class MapStep(BaseStep):
    """Run ``body`` once per item of ``items`` (a Jinja expression giving a list).

    Inside the body, ``item`` and ``index`` name the current element; the
    step's output is the list of per-item outputs, in item order.

    With ``batch_size`` the body runs once per batch of up to that many
    consecutive items, for agents that take a list: ``item`` is the batch
    (a list), ``index`` the batch number, and the body must return a list
    with one result per item.  The output is the same flat list; at most
    ``max_concurrency`` batches run at once and ``on_item_failure`` applies
    per batch.
    """

    kind = "map"

    def __init__(
        self,
        name: str,
        items: str,
        body: Body,
        *,
        max_concurrency: int | None = None,
        on_item_failure: Literal["failFast", "wait", "ignore"] = "failFast",
        max_items: int = 1000,
        batch_size: int | None = None,
        description: str | None = None,
    ) -> None:
        self.name = name
        self.items = items
        self.body = as_steps(body)
        self.max_concurrency = max_concurrency
        self.on_item_failure = on_item_failure
        self.max_items = max_items
        self.batch_size = batch_size
        self.description = description

    def to_spec(self, sink: AgentSink) -> StepSpec:
        return StepSpec(
            name=self.name,
            description=self.description,
            map=MapSpec(
                items=self.items,
                max_concurrency=self.max_concurrency,
                on_item_failure=self.on_item_failure,
                max_items=self.max_items,
                batch_size=self.batch_size,
                steps=[s.to_spec(sink) for s in self.body],
            ),
        )

    @classmethod
    def from_spec(cls, spec: StepSpec) -> MapStep:
        assert spec.map is not None
        return cls(
            spec.name,
            spec.map.items,
            steps_from_spec(spec.map.steps),
            max_concurrency=spec.map.max_concurrency,
            on_item_failure=spec.map.on_item_failure,
            max_items=spec.map.max_items,
            batch_size=spec.map.batch_size,
            description=spec.description,
        )
