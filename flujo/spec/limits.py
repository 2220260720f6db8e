"""Usage limits: the budget the governor enforces inside the state machine."""

from __future__ import annotations

from pydantic import Field

from flujo.spec.base import SpecModel

__all__ = ["UsageLimits"]


class UsageLimits(SpecModel):
    """Budget for one run. Unset fields are unlimited.

    A limit is *exceeded* when the total goes strictly above it; a step is
    not launched once a limit is *reached* (total equal to or above it).
    """

    max_cost_usd: float | None = Field(None, ge=0, description="Total cost in US dollars.")
    max_tokens: int | None = Field(None, ge=0, description="Total input plus output tokens.")
    max_launches: int | None = Field(None, ge=0, description="Step launches, retries included.")
    max_seconds: float | None = Field(None, gt=0, description="Wall-clock seconds for the run.")

    def merged_over(self, defaults: UsageLimits | None) -> UsageLimits:
        """This run's limits, falling back to the pipeline's defaults field by field."""
        if defaults is None:
            return self
        return UsageLimits(
            max_cost_usd=self.max_cost_usd
            if self.max_cost_usd is not None
            else defaults.max_cost_usd,
            max_tokens=self.max_tokens if self.max_tokens is not None else defaults.max_tokens,
            max_launches=self.max_launches
            if self.max_launches is not None
            else defaults.max_launches,
            max_seconds=self.max_seconds if self.max_seconds is not None else defaults.max_seconds,
        )
