"""Token and cost accounting.

Usage is additive: every finished step attempt (including failed and
cancelled ones that still consumed tokens) contributes to the run's total.
Cost is kept as a float in US dollars; the governor compares against limits
with a small epsilon so that ``0.1 + 0.2`` does not breach a ``0.3`` limit.

``estimated`` marks tokens that were counted from the text because the
server reported none (see :mod:`flujo.agents.estimate`); a sum is estimated
when any part is.  It is left out of the JSON form while false, so usage
that was reported serialises as before.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ZERO", "Usage"]


class Usage(BaseModel):
    """Tokens and money consumed by one agent call, one step, or a whole run."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    input_tokens: int = Field(0, ge=0, alias="inputTokens", description="Prompt tokens.")
    output_tokens: int = Field(0, ge=0, alias="outputTokens", description="Completion tokens.")
    cost_usd: float = Field(0.0, ge=0.0, alias="costUsd", description="Cost in US dollars.")
    estimated: bool = Field(
        False,
        exclude_if=lambda value: not value,
        description="Some tokens were estimated from the text: the server reported no usage.",
    )

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cost_usd=self.cost_usd + other.cost_usd,
            estimated=self.estimated or other.estimated,
        )

    @property
    def is_zero(self) -> bool:
        return not (self.input_tokens or self.output_tokens or self.cost_usd)


ZERO = Usage()
