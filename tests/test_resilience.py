"""Circuit breakers and rate limits, on real calls to the local server.

Time-dependent behaviour is checked two ways: with an injected clock (exact,
no sleeping), and end to end with small real timeouts, asserting on what the
server saw (call counts, arrivals per window), never on elapsed durations.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flujo.agents.base import Agent
from flujo.agents.pool import ClientPool
from flujo.agents.remote import build_remote_agent
from flujo.domain import errors
from flujo.domain.errors import AgentError
from flujo.resilience import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    AgentBreaker,
    BreakerRegistry,
    MemoryBreakerStateStore,
    RateLimiter,
    RateLimiterRegistry,
    ResilientAgent,
)
from flujo.spec.agent import AgentSpec

from tests.servers import OpenAIServer, Reply, completion, error, max_in_window
from tests.servers.harness import CONTEXT, agent_spec


def llm_spec(server: OpenAIServer, **fields: Any) -> AgentSpec:
    return agent_spec(type="openai", model="m", endpoint=server.base_url, **fields)


async def outcomes(agent: Agent, n: int) -> list[str]:
    """Error class (or ``ok``) of ``n`` sequential calls."""
    seen = []
    for _ in range(n):
        try:
            await agent.run("hi", CONTEXT)
        except AgentError as exc:
            seen.append(exc.error_class)
        else:
            seen.append("ok")
    return seen


def with_agent(
    server: OpenAIServer,
    scenario: Callable[[Agent], Awaitable[Any]],
    *,
    breakers: BreakerRegistry | None = None,
    limiters: RateLimiterRegistry | None = None,
    **fields: Any,
) -> Any:
    async def main() -> Any:
        async with ClientPool() as pool:
            agent = build_remote_agent("llm", llm_spec(server, **fields), pool, breakers, limiters)
            return await scenario(agent)

    return asyncio.run(main())


class FakeClock:
    """A settable UTC clock for breakers."""

    def __init__(self) -> None:
        self.now = datetime(2024, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


# -- circuit breaker ---------------------------------------------------------


def test_breaker_opens_after_n_transient_failures_then_fails_fast(
    openai_server: OpenAIServer,
) -> None:
    openai_server.script(error(500, "boom"), error(503, "down"), error(429, "slow down"))
    breakers = BreakerRegistry(fail_max=3, reset_timeout=60)

    seen = with_agent(openai_server, lambda a: outcomes(a, 6), breakers=breakers)

    assert (
        seen
        == [errors.TRANSIENT, errors.TRANSIENT, errors.RATE_LIMITED] + [errors.CIRCUIT_OPEN] * 3
    )
    assert openai_server.calls == 3  # open: nothing more reached the network
    assert breakers.get("llm").state == OPEN


def test_timeouts_count_as_transient(openai_server: OpenAIServer) -> None:
    openai_server.script(*[completion("late", delay=2)] * 2)
    breakers = BreakerRegistry(fail_max=2, reset_timeout=60)

    seen = with_agent(
        openai_server, lambda a: outcomes(a, 3), breakers=breakers, timeoutSeconds=0.1
    )

    assert seen == [errors.TIMEOUT, errors.TIMEOUT, errors.CIRCUIT_OPEN]
    assert openai_server.calls == 2


def test_permanent_errors_do_not_open_the_breaker(openai_server: OpenAIServer) -> None:
    openai_server.script(
        error(404, "no model"), error(404, "no model"), error(401, "bad key"), error(400, "bad")
    )
    breakers = BreakerRegistry(fail_max=2, reset_timeout=60)

    seen = with_agent(openai_server, lambda a: outcomes(a, 5), breakers=breakers)

    assert seen == [errors.PERMANENT, errors.PERMANENT, errors.AUTH, errors.PERMANENT, "ok"]
    assert breakers.get("llm").state == CLOSED


def test_only_consecutive_transient_failures_count(openai_server: OpenAIServer) -> None:
    openai_server.script(
        error(500, "a"), error(500, "b"), completion("ok"), error(500, "c"), error(500, "d")
    )
    breakers = BreakerRegistry(fail_max=3, reset_timeout=60)

    seen = with_agent(openai_server, lambda a: outcomes(a, 6), breakers=breakers)

    assert seen == [
        errors.TRANSIENT,
        errors.TRANSIENT,
        "ok",
        errors.TRANSIENT,
        errors.TRANSIENT,
        "ok",
    ]
    assert openai_server.calls == 6


def test_breaker_recovers_after_reset_timeout(openai_server: OpenAIServer) -> None:
    openai_server.script(error(503, "down"), error(503, "down"))
    breakers = BreakerRegistry(fail_max=2, reset_timeout=0.3)
    transitions: list[tuple[str, str, str]] = []
    breakers.add_listener(lambda name, old, new: transitions.append((name, old, new)))

    async def scenario(agent: Agent) -> list[str]:
        seen = await outcomes(agent, 3)  # fail, fail, refused
        await asyncio.sleep(0.35)
        return seen + await outcomes(agent, 2)  # probe succeeds, then closed

    seen = with_agent(openai_server, scenario, breakers=breakers)

    assert seen == [errors.TRANSIENT, errors.TRANSIENT, errors.CIRCUIT_OPEN, "ok", "ok"]
    assert openai_server.calls == 4
    assert transitions == [
        ("llm", CLOSED, OPEN),
        ("llm", OPEN, HALF_OPEN),
        ("llm", HALF_OPEN, CLOSED),
    ]


def test_failed_probe_reopens_the_breaker(openai_server: OpenAIServer) -> None:
    clock = FakeClock()
    openai_server.script(*[error(500, "down")] * 3)
    breakers = BreakerRegistry(fail_max=2, reset_timeout=30, clock=clock)

    async def scenario(agent: Agent) -> list[str]:
        seen = await outcomes(agent, 3)
        clock.advance(29)
        seen += await outcomes(agent, 1)  # still open
        clock.advance(2)
        seen += await outcomes(agent, 2)  # the probe fails: open again
        clock.advance(31)
        return seen + await outcomes(agent, 1)  # next probe succeeds

    seen = with_agent(openai_server, scenario, breakers=breakers)

    assert seen == [
        errors.TRANSIENT,
        errors.TRANSIENT,
        errors.CIRCUIT_OPEN,
        errors.CIRCUIT_OPEN,
        errors.TRANSIENT,
        errors.CIRCUIT_OPEN,
        "ok",
    ]
    assert openai_server.calls == 4


def test_half_open_admits_a_single_probe(openai_server: OpenAIServer) -> None:
    clock = FakeClock()
    openai_server.script(error(500, "x"), completion("probe ok", delay=0.3))
    breakers = BreakerRegistry(fail_max=1, reset_timeout=10, clock=clock)

    async def scenario(agent: Agent) -> list[str]:
        await outcomes(agent, 1)
        clock.advance(11)
        probe = asyncio.create_task(outcomes(agent, 1))
        while openai_server.calls < 2:
            await asyncio.sleep(0.005)
        concurrent = await outcomes(agent, 1)  # while the probe is in flight
        return (await probe) + concurrent + await outcomes(agent, 1)

    assert with_agent(openai_server, scenario, breakers=breakers) == [
        "ok",
        errors.CIRCUIT_OPEN,
        "ok",
    ]
    assert openai_server.calls == 3


def test_circuit_open_error_is_actionable(openai_server: OpenAIServer) -> None:
    openai_server.script(error(500, "x"))
    breakers = BreakerRegistry(fail_max=1, reset_timeout=60)

    async def scenario(agent: Agent) -> AgentError:
        await outcomes(agent, 1)
        with pytest.raises(AgentError) as caught:
            await agent.run("hi", CONTEXT)
        return caught.value

    exc = with_agent(openai_server, scenario, breakers=breakers)
    assert exc.error_class == errors.CIRCUIT_OPEN
    assert "'llm'" in exc.message and "not sent" in exc.message
    assert exc.retry_after is not None and 59 <= exc.retry_after <= 60


def test_breaker_state_is_persisted_and_restored(openai_server: OpenAIServer) -> None:
    store = MemoryBreakerStateStore()
    openai_server.script(error(500, "x"), error(500, "y"))
    with_agent(
        openai_server, lambda a: outcomes(a, 2), breakers=BreakerRegistry(fail_max=2, store=store)
    )

    saved = store.get("llm")
    assert saved is not None
    assert saved["state"] == OPEN and saved["fail_counter"] == 2
    assert saved["opened_at"] is not None
    assert json.loads(json.dumps(saved)) == saved  # plain data, fit for a status field

    # A new process (a new registry) over the same store starts open.
    restored = BreakerRegistry(fail_max=2, reset_timeout=60, store=store)
    assert restored.get("llm").state == OPEN
    seen = with_agent(openai_server, lambda a: outcomes(a, 2), breakers=restored)
    assert seen == [errors.CIRCUIT_OPEN] * 2
    assert openai_server.calls == 2


def test_restored_breaker_honours_the_stored_opening_time() -> None:
    clock = FakeClock()
    store = MemoryBreakerStateStore()
    opened = clock.now - timedelta(seconds=45)
    store.set("llm", {"state": OPEN, "fail_counter": 5, "opened_at": opened.isoformat()})
    breaker = AgentBreaker("llm", fail_max=5, reset_timeout=60, store=store, clock=clock)

    async def ok() -> str:
        return "ok"

    async def scenario() -> list[str]:
        seen = []
        for step in (0, 16):
            clock.advance(step)
            try:
                seen.append(await breaker.call(ok))
            except AgentError as exc:
                seen.append(exc.error_class)
        return seen

    assert asyncio.run(scenario()) == [errors.CIRCUIT_OPEN, "ok"]
    assert store.get("llm") == {"state": CLOSED, "fail_counter": 0, "opened_at": opened.isoformat()}


def test_cancelled_calls_do_not_count() -> None:
    breaker = AgentBreaker("llm", fail_max=1, reset_timeout=60)

    async def hang() -> None:
        await asyncio.sleep(10)

    async def scenario() -> None:
        task = asyncio.create_task(breaker.call(hang))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert (breaker.state, breaker.fail_counter) == (CLOSED, 0)


def test_store_is_written_only_on_change() -> None:
    class CountingStore(MemoryBreakerStateStore):
        writes = 0

        def set(self, name: str, state: Any) -> None:
            CountingStore.writes += 1
            super().set(name, state)

    breaker = AgentBreaker("llm", store=CountingStore())

    async def ok() -> None:
        return None

    async def scenario() -> None:
        for _ in range(20):
            await breaker.call(ok)

    asyncio.run(scenario())
    assert CountingStore.writes == 0


# -- rate limiting -----------------------------------------------------------


class FakeTime:
    """An injectable monotonic clock whose ``sleep`` advances it."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_token_bucket_schedule_is_exact() -> None:
    fake = FakeTime()
    limiter = RateLimiter(requests_per_second=4, burst=2, clock=fake.clock, sleep=fake.sleep)
    starts: list[float] = []

    async def one() -> None:
        await limiter.acquire()
        starts.append(fake.now)

    async def scenario() -> None:
        for _ in range(6):  # back to back, each waiting its turn
            await one()

    asyncio.run(scenario())
    assert [round(s - 100.0, 6) for s in starts] == [0.0, 0.0, 0.25, 0.5, 0.75, 1.0]


def test_bucket_refills_after_idle_time_but_not_beyond_burst() -> None:
    fake = FakeTime()
    limiter = RateLimiter(requests_per_second=1, burst=3, clock=fake.clock, sleep=fake.sleep)

    async def scenario() -> None:
        fake.now += 100  # long idle
        for _ in range(5):
            await limiter.acquire()

    asyncio.run(scenario())
    assert fake.sleeps == [1.0, 1.0]  # 3 at once (burst), then one per second


def test_cancelled_waiter_returns_its_slot() -> None:
    delays: list[float] = []

    async def sleep_forever(seconds: float) -> None:
        delays.append(seconds)
        await asyncio.Event().wait()

    limiter = RateLimiter(requests_per_second=1, burst=1, clock=lambda: 0.0, sleep=sleep_forever)

    async def scenario() -> None:
        await limiter.acquire()  # takes the burst, no wait
        for _ in range(2):  # each waiter is cancelled while waiting
            waiter = asyncio.create_task(limiter.acquire())
            await asyncio.sleep(0)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter

    asyncio.run(scenario())
    assert delays == [1.0, 1.0]  # the second waiter got the first's slot back, not 2.0


def test_token_budget_is_debited_and_waited_out() -> None:
    fake = FakeTime()
    limiter = RateLimiter(tokens_per_minute=600, clock=fake.clock, sleep=fake.sleep)

    async def scenario() -> None:
        await limiter.acquire()  # full budget: no wait
        limiter.record(900)  # 300 tokens of debt
        await limiter.acquire()  # 301 tokens at 10/s

    asyncio.run(scenario())
    assert sum(fake.sleeps) == pytest.approx(30.1)
    assert limiter.available_tokens() == pytest.approx(1.0)


def test_rate_limit_holds_under_a_burst(openai_server: OpenAIServer) -> None:
    limiters = RateLimiterRegistry()
    rate, burst, calls = 10.0, 3, 20

    async def burst_of_calls(agent: Agent) -> None:
        await asyncio.gather(*(agent.run(f"call {i}", CONTEXT) for i in range(calls)))

    with_agent(
        openai_server,
        burst_of_calls,
        limiters=limiters,
        rateLimit={"requestsPerSecond": rate, "burst": burst},
    )

    arrivals = openai_server.arrivals()
    assert len(arrivals) == calls and openai_server.successful == calls
    # In any window of w seconds at most burst + rate * w calls may start, plus
    # two of slack for scheduling jitter (client and server share one process);
    # unlimited, or at twice the rate, the 1 s window would hold all 20.
    for width in (0.5, 1.0):
        assert max_in_window(arrivals, width) <= burst + rate * width + 2, width


def test_limiter_is_shared_by_name_and_debits_tokens(openai_server: OpenAIServer) -> None:
    limiters = RateLimiterRegistry()
    openai_server.script(completion("a", prompt_tokens=70, completion_tokens=30))

    async def scenario(agent: Agent) -> None:
        await agent.run("hi", CONTEXT)

    with_agent(openai_server, scenario, limiters=limiters, rateLimit={"tokensPerMinute": 1000})
    limiter = limiters.get("llm", None)
    assert limiter is not None
    assert limiter.available_tokens() == pytest.approx(900, abs=1)
    assert limiters.get("other", None) is None


def test_open_breaker_fails_fast_without_waiting_for_a_rate_slot(
    openai_server: OpenAIServer,
) -> None:
    openai_server.script(error(500, "x"))
    breakers = BreakerRegistry(fail_max=1, reset_timeout=60)
    fake = FakeTime()
    limiters = RateLimiterRegistry(clock=fake.clock, sleep=fake.sleep)

    async def scenario(agent: Agent) -> list[str]:
        assert isinstance(agent, ResilientAgent) and agent.limiter is not None
        seen = await outcomes(agent, 1)  # takes the only burst slot, then opens
        seen += await outcomes(agent, 5)  # a slot every 10s: these must not queue
        assert fake.sleeps == []
        return seen

    seen = with_agent(
        openai_server,
        scenario,
        breakers=breakers,
        limiters=limiters,
        rateLimit={"requestsPerSecond": 0.1, "burst": 1},
    )
    assert seen == [errors.TRANSIENT] + [errors.CIRCUIT_OPEN] * 5


def test_factory_wraps_only_when_configured(openai_server: OpenAIServer) -> None:
    pool = ClientPool()
    plain = build_remote_agent("llm", llm_spec(openai_server), pool, None, RateLimiterRegistry())
    guarded = build_remote_agent("llm", llm_spec(openai_server), pool, BreakerRegistry(), None)
    assert not isinstance(plain, ResilientAgent)
    assert isinstance(guarded, ResilientAgent) and guarded.breaker is not None


def test_no_leaked_connections_or_tasks_after_pool_close(openai_server: OpenAIServer) -> None:
    openai_server.script(*[Reply(json={"output": i}, delay=0.01) for i in range(10)])

    async def scenario() -> set[asyncio.Task[Any]]:
        pool = ClientPool()
        breakers, limiters = BreakerRegistry(), RateLimiterRegistry()
        spec = agent_spec(
            type="http", endpoint=openai_server.hook_url, rateLimit={"requestsPerSecond": 500}
        )
        agent = build_remote_agent("hook", spec, pool, breakers, limiters)
        await asyncio.gather(*(agent.run(i, CONTEXT) for i in range(30)))
        assert openai_server.open_connections > 0  # keep-alive connections are pooled
        await agent.aclose()
        await pool.aclose()
        return asyncio.all_tasks() - {asyncio.current_task()}

    assert asyncio.run(scenario()) == set()
    assert openai_server.successful == 30
    assert openai_server.wait_until(lambda: openai_server.open_connections == 0)


def test_remote_resources_share_breakers_and_limiters(openai_server: OpenAIServer) -> None:
    from flujo.agents.remote import RemoteResources

    resources = RemoteResources()
    spec = llm_spec(openai_server, rateLimit={"requestsPerSecond": 5})
    first, second = resources.build("llm", spec), resources.build("llm", spec)
    assert isinstance(first, ResilientAgent) and isinstance(second, ResilientAgent)
    assert first.breaker is second.breaker and first.limiter is second.limiter

    async def scenario() -> None:
        await first.run("hi", CONTEXT)
        await resources.aclose()

    asyncio.run(scenario())
    assert resources.pool.closed
    assert openai_server.wait_until(lambda: openai_server.open_connections == 0)


def test_max_concurrent_bounds_the_calls_in_flight(openai_server: OpenAIServer) -> None:
    """``rateLimit.maxConcurrent`` caps in-flight calls to one agent across a run's steps."""
    from flujo import AgentManifest, AgentRegistry, Flujo, ParallelStep, Pipeline, Step

    openai_server.responder = lambda r: completion("ok", delay=0.15)
    manifest = AgentManifest.model_validate(
        {
            "metadata": {"name": "llm"},
            "spec": {
                "type": "openai",
                "model": "m",
                "endpoint": openai_server.base_url,
                "rateLimit": {"maxConcurrent": 2},
            },
        }
    )
    registry = AgentRegistry()
    registry.register_manifest(manifest)
    fan = ParallelStep("fan", branches={f"b{i}": [Step(f"ask{i}", "llm")] for i in range(6)})
    result = Flujo(Pipeline([fan]), agent_registry=registry).run("hi")
    assert result.success
    assert openai_server.calls == 6
    assert openai_server.max_in_flight == 2
