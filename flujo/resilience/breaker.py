"""Circuit breakers: stop calling an endpoint that keeps failing.

Retries help with a blip; against an endpoint that is down they multiply the
load and make every step wait out its backoff.  A breaker per agent counts
*consecutive transient* failures (``transient``, ``rate_limited``,
``timeout``); after ``fail_max`` of them it opens, and calls fail at once
with ``circuit_open`` — no request is sent — so steps go to their fallback or
fail fast.  After ``reset_timeout`` seconds it is half-open: one call (per
process) probes the endpoint; success closes the breaker, a transient
failure opens it again for another ``reset_timeout``.

Any answer that is not a transient failure — a success, but also an
``auth``, ``permanent`` or ``schema`` error — shows the endpoint is up and
resets the count, as pybreaker does for excluded errors.  A cancelled call
tells nothing about the endpoint and changes nothing.

pybreaker keeps the state, the counters, the transitions (``open``,
``half_open``, ``close``) and notifies listeners; its storage is a
:class:`StoreStorage` over a :class:`BreakerStateStore`, a plain-dict store
that the operator backs with the Agent's status so that every step pod and
operator replica sees one breaker.  pybreaker's own ``call`` is synchronous
(its async support needs Tornado) and lets every concurrent call through
when half-open, so the asyncio gate — admission, the single half-open probe,
recording an outcome after the ``await`` — is :class:`AgentBreaker`'s.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypedDict, TypeVar, cast

import pybreaker

from flujo.domain.errors import CIRCUIT_OPEN, AgentError, is_transient

__all__ = [
    "CLOSED",
    "HALF_OPEN",
    "OPEN",
    "AgentBreaker",
    "BreakerRegistry",
    "BreakerState",
    "BreakerStateStore",
    "MemoryBreakerStateStore",
    "StateChangeListener",
    "StoreStorage",
]

CLOSED: str = pybreaker.STATE_CLOSED
OPEN: str = pybreaker.STATE_OPEN
HALF_OPEN: str = pybreaker.STATE_HALF_OPEN

T = TypeVar("T")


class BreakerState(TypedDict):
    """A breaker's persistent state: plain JSON data."""

    state: str
    """``closed``, ``open`` or ``half-open``."""
    fail_counter: int
    """Consecutive transient failures counted so far."""
    opened_at: str | None
    """When it last opened, ISO 8601 in UTC; ``None`` if never."""


def closed_state() -> BreakerState:
    return {"state": CLOSED, "fail_counter": 0, "opened_at": None}


class BreakerStateStore(Protocol):
    """Where breaker states live, by breaker name. ``get`` returns ``None`` if unknown.

    Reads happen on every call, so an implementation keeps a local copy
    (the operator's mirrors the Agent status) and makes ``set`` cheap.
    """

    def get(self, name: str) -> BreakerState | None: ...

    def set(self, name: str, state: BreakerState) -> None: ...


class MemoryBreakerStateStore:
    """A process-local store; also the reference for other implementations."""

    def __init__(self) -> None:
        self._states: dict[str, BreakerState] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> BreakerState | None:
        with self._lock:
            state = self._states.get(name)
            return None if state is None else BreakerState(**state)

    def set(self, name: str, state: BreakerState) -> None:
        with self._lock:
            self._states[name] = BreakerState(**state)


class StoreStorage(pybreaker.CircuitBreakerStorage):
    """pybreaker storage reading and writing one entry of a :class:`BreakerStateStore`.

    Every write stores the whole dict, and only when a value changed, so a
    stream of successes writes nothing.  The half-open success counter is
    process-local (probing is per process).
    """

    def __init__(self, name: str, store: BreakerStateStore) -> None:
        super().__init__(name)
        self._store = store
        self._success_counter = 0

    def snapshot(self) -> BreakerState:
        return self._store.get(self.name) or closed_state()

    def _update(self, **changes: Any) -> None:
        current = self.snapshot()
        merged = {**current, **changes}
        if merged != current:
            self._store.set(self.name, cast(BreakerState, merged))

    @property
    def state(self) -> str:
        return self.snapshot()["state"]

    @state.setter
    def state(self, state: str) -> None:
        self._update(state=str(state))

    def increment_counter(self) -> None:
        self._update(fail_counter=self.snapshot()["fail_counter"] + 1)

    def reset_counter(self) -> None:
        self._update(fail_counter=0)

    def increment_success_counter(self) -> None:
        self._success_counter += 1

    def reset_success_counter(self) -> None:
        self._success_counter = 0

    @property
    def counter(self) -> int:
        return self.snapshot()["fail_counter"]

    @property
    def success_counter(self) -> int:
        return self._success_counter

    @property
    def opened_at(self) -> datetime | None:
        raw = self.snapshot()["opened_at"]
        return None if raw is None else datetime.fromisoformat(raw)

    @opened_at.setter
    def opened_at(self, when: datetime) -> None:
        self._update(opened_at=when.astimezone(UTC).isoformat())


StateChangeListener = Callable[[str, str, str], None]
"""Called with (breaker name, old state, new state) on every transition."""


class _ListenerAdapter(pybreaker.CircuitBreakerListener):
    def __init__(self, listener: StateChangeListener) -> None:
        self.listener = listener

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        old = old_state.name if old_state is not None else CLOSED
        if old != new_state.name:
            self.listener(cb.name, old, new_state.name)


class AgentBreaker:
    """The breaker of one agent endpoint, for coroutines.

    ``clock`` (UTC ``datetime``) is injectable so that tests and the operator
    can decide when the reset timeout has passed.
    """

    def __init__(
        self,
        name: str,
        *,
        fail_max: int = 5,
        reset_timeout: float = 30.0,
        store: BreakerStateStore | None = None,
        listeners: list[StateChangeListener] | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if fail_max < 1 or reset_timeout < 0:
            raise ValueError("fail_max must be >= 1 and reset_timeout >= 0")
        self.name = name
        self.storage = StoreStorage(name, store or MemoryBreakerStateStore())
        self._cb = pybreaker.CircuitBreaker(
            fail_max=fail_max,
            reset_timeout=reset_timeout,
            state_storage=self.storage,
            listeners=[_ListenerAdapter(fn) for fn in listeners or []],
            name=name,
            throw_new_error_on_trip=False,
        )
        self._clock = clock
        self._probing = False

    @property
    def fail_max(self) -> int:
        return int(self._cb.fail_max)

    @property
    def reset_timeout(self) -> float:
        return float(self._cb.reset_timeout)

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half-open``, as stored (and notified if changed elsewhere)."""
        return str(self._cb.state.name)

    @property
    def fail_counter(self) -> int:
        return int(self._cb.fail_counter)

    def add_listener(self, listener: StateChangeListener) -> None:
        self._cb.add_listener(_ListenerAdapter(listener))

    def snapshot(self) -> BreakerState:
        """The persistent state, as the store holds it."""
        return self.storage.snapshot()

    def check(self) -> None:
        """Fail fast with ``circuit_open`` if a call would be refused now; changes nothing."""
        self._refusal(probe=False)

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn`` if the breaker admits it, and record how it went."""
        probe = self._refusal(probe=True)
        try:
            result = await fn()
        except AgentError as exc:
            if is_transient(exc.error_class):
                self._failure(exc)
            else:
                self._success()
            raise
        # Any other exception (a cancellation, a bug) tells nothing about the endpoint.
        else:
            self._success()
            return result
        finally:
            if probe:
                self._probing = False

    def admit(self) -> bool:
        """For executors that call out of process (the operator launching pods):
        raise ``circuit_open`` if refused, else return whether this is the probe."""
        return self._refusal(probe=True)

    def record(self, error_class: str | None) -> None:
        """Record an out-of-process call's outcome: None for success."""
        self._probing = False
        if error_class is None or not is_transient(error_class):
            self._success()
        else:
            self._failure(AgentError(error_class, "reported by a step pod"))

    def _refusal(self, *, probe: bool) -> bool:
        """Raise if refused; return whether this call is the half-open probe."""
        state = self.state
        if state == OPEN:
            opened_at = self.storage.opened_at
            wait = 0.0
            if opened_at is not None:
                reopen = opened_at + timedelta(seconds=self.reset_timeout)
                wait = (reopen - self._now()).total_seconds()
            if wait > 0:
                raise self._open_error(f"open for another {wait:.1f}s", wait)
            if not probe:
                return False
            self._cb.half_open()
            state = HALF_OPEN
        if state == HALF_OPEN:
            if self._probing:
                raise self._open_error("half-open, a probe call is in flight", None)
            self._probing = probe
            return probe
        return False

    def _open_error(self, why: str, retry_after: float | None) -> AgentError:
        return AgentError(
            CIRCUIT_OPEN,
            f"agent {self.name!r}: circuit breaker {why} (it opens after {self.fail_max} "
            "consecutive transient failures); the call was not sent; check the endpoint's health",
            retry_after=retry_after,
        )

    def _failure(self, exc: AgentError) -> None:
        for listener in self._cb.listeners:
            listener.failure(self._cb, exc)
        if self.state == HALF_OPEN:
            self._open()
            return
        self.storage.increment_counter()
        if self.state == CLOSED and self.storage.counter >= self.fail_max:
            self._open()

    def _now(self) -> datetime:
        return datetime.now(UTC) if self._clock is None else self._clock()

    def _open(self) -> None:
        self._cb.open()
        if self._clock is not None:  # pybreaker stamps opened_at with the wall clock
            self.storage.opened_at = self._clock()

    def _success(self) -> None:
        self.storage.reset_counter()
        for listener in self._cb.listeners:
            listener.success(self._cb)
        if self.state == HALF_OPEN:
            self._cb.close()


class BreakerRegistry:
    """The breakers of one process (or of the operator), one per agent, by name.

    ``fail_max`` and ``reset_timeout`` are defaults; :meth:`get` may override
    them for one agent when it is first asked for.  Listeners added here hear
    every breaker's transitions (for events and metrics).
    """

    def __init__(
        self,
        *,
        fail_max: int = 5,
        reset_timeout: float = 30.0,
        store: BreakerStateStore | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.fail_max = fail_max
        self.reset_timeout = reset_timeout
        self.store: BreakerStateStore = store or MemoryBreakerStateStore()
        self._clock = clock
        self._breakers: dict[str, AgentBreaker] = {}
        self._listeners: list[StateChangeListener] = []

    def get(
        self, name: str, *, fail_max: int | None = None, reset_timeout: float | None = None
    ) -> AgentBreaker:
        breaker = self._breakers.get(name)
        if breaker is None:
            breaker = AgentBreaker(
                name,
                fail_max=fail_max or self.fail_max,
                reset_timeout=self.reset_timeout if reset_timeout is None else reset_timeout,
                store=self.store,
                listeners=list(self._listeners),
                clock=self._clock,
            )
            self._breakers[name] = breaker
        return breaker

    def add_listener(self, listener: StateChangeListener) -> None:
        """Hear the transitions of every breaker, present and future."""
        self._listeners.append(listener)
        for breaker in self._breakers.values():
            breaker.add_listener(listener)

    def states(self) -> dict[str, BreakerState]:
        """Every known breaker's persistent state, by name."""
        return {name: b.snapshot() for name, b in sorted(self._breakers.items())}

    def __contains__(self, name: object) -> bool:
        return name in self._breakers
