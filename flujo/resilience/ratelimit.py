"""Outbound rate limits: keep a process's calls to one agent within its quota.

Providers enforce requests-per-second and tokens-per-minute quotas; going
over earns 429s, retries and, with a breaker, an open circuit.  Limiting on
our side instead makes a burst of parallel steps queue briefly, in arrival
order.  One :class:`RateLimiter` per agent is shared by every step of the
process that uses that agent (:class:`RateLimiterRegistry`).

Three independent limits, all optional:

- **requests per second with a burst** — a token bucket, implemented as its
  exact equivalent GCRA (virtual scheduling): each call reserves the next
  free slot arithmetically and sleeps until it.  No lock, no background task,
  FIFO by arrival, and in any window of ``w`` seconds at most
  ``burst + rate * w`` calls start.  A caller cancelled while waiting gives
  its slot back when nobody reserved after it.
- **tokens per minute** — a budget refilled continuously at ``tpm / 60`` per
  second.  Tokens are only known after a call, so calls are admitted while the
  budget is positive and :meth:`RateLimiter.record` debits what they used;
  the budget may go into debt, which later calls wait out.  Concurrent calls
  can overshoot by what they use together, never for long.
- **calls in flight** (``max_concurrent``) — a semaphore: a call waits for a
  place, first come first served, and gives it back when it ends.

Written here rather than taken from ``aiolimiter``: that library has no
debt-based token budget and reads the event loop's clock, whereas tests and
benchmarks inject a clock and a sleep function here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from flujo.spec.agent import RateLimitSpec

__all__ = ["RateLimiter", "RateLimiterRegistry"]

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

_EPSILON = 1e-9


class RateLimiter:
    """A request-rate bucket and/or a token-per-minute budget for one agent."""

    def __init__(
        self,
        *,
        requests_per_second: float | None = None,
        burst: int = 1,
        tokens_per_minute: int | None = None,
        max_concurrent: int | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if requests_per_second is not None and requests_per_second <= 0:
            raise ValueError("requests_per_second must be positive")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        if tokens_per_minute is not None and tokens_per_minute <= 0:
            raise ValueError("tokens_per_minute must be positive")
        if max_concurrent is not None and max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        self.max_concurrent = max_concurrent
        self._slots = asyncio.Semaphore(max_concurrent) if max_concurrent else None
        self.requests_per_second = requests_per_second
        self.burst = burst
        self.tokens_per_minute = tokens_per_minute
        self._clock = clock
        self._sleep = sleep
        self._interval = 1.0 / requests_per_second if requests_per_second else 0.0
        self._tolerance = (burst - 1) * self._interval
        self._tat = clock()  # theoretical arrival time of the next call (GCRA)
        self._tokens = float(tokens_per_minute or 0)
        self._tokens_at = clock()

    @classmethod
    def from_spec(
        cls, spec: RateLimitSpec, *, clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep
    ) -> RateLimiter | None:
        """The limiter an agent's ``rateLimit`` asks for, or ``None`` if it limits nothing."""
        if (
            spec.requests_per_second is None
            and spec.tokens_per_minute is None
            and spec.max_concurrent is None
        ):
            return None
        return cls(
            requests_per_second=spec.requests_per_second,
            burst=spec.burst,
            tokens_per_minute=spec.tokens_per_minute,
            max_concurrent=spec.max_concurrent,
            clock=clock,
            sleep=sleep,
        )

    async def acquire(self) -> float:
        """Wait until a call may start: first the token budget, then a request slot.

        Returns the seconds it chose to wait (0.0: the call could start at once).
        """
        waited = 0.0
        if self.tokens_per_minute is not None:
            waited += await self._wait_for_tokens(self.tokens_per_minute / 60.0)
        if self.requests_per_second is not None:
            waited += await self._wait_for_slot()
        return waited

    async def enter(self) -> float:
        """Wait for a place among the calls in flight (``max_concurrent``); seconds waited.

        Pair with :meth:`leave` when the call ends, however it ends.
        """
        if self._slots is None:
            return 0.0
        if not self._slots.locked():
            await self._slots.acquire()
            return 0.0
        started = self._clock()
        await self._slots.acquire()
        return max(0.0, self._clock() - started)

    def leave(self) -> None:
        if self._slots is not None:
            self._slots.release()

    def record(self, tokens: int) -> None:
        """Debit the tokens a finished call used from the per-minute budget."""
        if self.tokens_per_minute is not None and tokens > 0:
            self._tokens = self.available_tokens() - tokens
            self._tokens_at = self._clock()

    def available_tokens(self) -> float:
        """The per-minute budget left now (negative while in debt)."""
        if self.tokens_per_minute is None:
            return float("inf")
        elapsed = max(0.0, self._clock() - self._tokens_at)
        refill = elapsed * self.tokens_per_minute / 60.0
        return min(float(self.tokens_per_minute), self._tokens + refill)

    async def _wait_for_tokens(self, per_second: float) -> float:
        waited = 0.0
        while (level := self.available_tokens()) < 1.0 - _EPSILON:
            delay = (1.0 - level) / per_second
            await self._sleep(delay)
            waited += delay
        return waited

    async def _wait_for_slot(self) -> float:
        now = self._clock()
        start = max(self._tat, now)
        delay = start - self._tolerance - now
        self._tat = reserved = start + self._interval
        if delay <= _EPSILON:
            return 0.0
        try:
            await self._sleep(delay)
        except asyncio.CancelledError:
            if self._tat == reserved:  # nobody queued behind us: hand the slot back
                self._tat -= self._interval
            raise
        return delay


class RateLimiterRegistry:
    """The limiters of one process, one per agent name, shared by all its steps."""

    def __init__(self, *, clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep) -> None:
        self._clock = clock
        self._sleep = sleep
        self._limiters: dict[str, RateLimiter | None] = {}

    def get(self, name: str, spec: RateLimitSpec | None) -> RateLimiter | None:
        """The agent's limiter, made from ``spec`` on first request; ``None`` if unlimited."""
        if name not in self._limiters:
            self._limiters[name] = (
                None
                if spec is None
                else RateLimiter.from_spec(spec, clock=self._clock, sleep=self._sleep)
            )
        return self._limiters[name]
