"""Validating tenants' Pipelines off the event loop: a bounded pool of worker processes.

Every check of a Pipeline — parsing, :func:`~flujo.domain.validation.check_pipeline`,
``check_agents``, ``check_tools``, the security policy's findings, compiling its
templates — runs in a :mod:`flujo_operator.worker` child, never on the
operator's event loop, which must keep answering probes and reconciling
every namespace.  Each worker has

- a **wall-clock bound** (``FLUJO_VALIDATION_TIMEOUT``): past it the worker is
  killed and replaced, and the verdict is ``validation exceeded its time bound``;
- a **memory bound** (``FLUJO_VALIDATION_MEMORY_MB`` of address space on top of
  its baseline, ``RLIMIT_AS``): a ``MemoryError`` or a worker that dies gives
  ``validation exceeded its memory bound``, and the worker is replaced;
- a **compile bound** (``FLUJO_COMPILE_BUDGET_MS``): the state machine compiles a
  run's templates on the event loop when it first renders them, so a Pipeline
  whose templates take longer than this to compile in the worker is refused —
  what is admitted compiles in at most about that long, once per process
  (compiled templates are memoised), and renders within the sandbox's counted
  work bounds.

Verdicts are cached by content (the spec, the agents it is checked against,
the policy), so 1,000 runs of one Pipeline cost one validation, and a bomb
costs its timeout once, not once per run (a breach is forgotten after
:data:`BREACH_TTL`, in case the node was only busy).  Identical requests in flight share
one answer.  Workers are handed out round-robin by namespace
(:class:`~flujo_operator.fairness.FairGate`): a namespace submitting many
expensive Pipelines waits behind its own queue.

``workers=0`` validates in-process, on the event loop: for the in-memory
controller tests and single-tenant use only.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import json
import logging
import math
import sys
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

from flujo.spec.agent import AgentSpec
from flujo.spec.pipeline import PipelineSpec

from flujo_operator.config import Config
from flujo_operator.fairness import FairGate
from flujo_operator.worker import check

__all__ = ["ValidationPool", "Verdict"]

log = logging.getLogger("flujo_operator.validation")

_READY_TIMEOUT = 120.0
"""Starting a worker is not part of a validation's bound (a busy node starts processes slowly)."""
_LINE_LIMIT = 64 << 20
BREACH_TTL = 300.0
"""Seconds a breached bound is remembered (a bomb costs its bound at most this often)."""
_background: set[asyncio.Task[Any]] = set()


def _in_background(coro: Coroutine[Any, Any, Any]) -> None:
    """Start a worker without waiting; a failure to start shows at the next validation."""

    def done(task: asyncio.Task[Any]) -> None:
        _background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("a validation worker did not start: %s", task.exception())

    task = asyncio.get_running_loop().create_task(coro)
    _background.add(task)
    task.add_done_callback(done)


@dataclass(frozen=True)
class Verdict:
    """The checks' one-line messages; ``breach`` when a bound stopped the validation."""

    spec_error: str | None = None
    pipeline: list[str] = field(default_factory=list)
    agents: list[str] = field(default_factory=list)
    tools: list[str] = field(default_factory=list)
    denied: list[tuple[str, str]] = field(default_factory=list)
    """(where, message) of each policy finding."""
    breach: str | None = None

    @property
    def problems(self) -> list[str]:
        """Everything wrong but the policy's findings (the Pipeline's own checks first)."""
        found = [self.breach] if self.breach else []
        found += [self.spec_error] if self.spec_error else []
        return found + self.pipeline


def _verdict(answer: Mapping[str, Any], compile_budget_ms: float) -> Verdict:
    pipeline = list(answer.get("pipeline") or [])
    compiled = float(answer.get("compileMs") or 0.0)
    if compile_budget_ms and compiled > compile_budget_ms:
        pipeline.append(
            f"templates take {compiled:.0f} ms of CPU to compile, more than the operator's bound "
            f"of {compile_budget_ms:.0f} ms (FLUJO_COMPILE_BUDGET_MS)"
        )
    if answer.get("error"):
        pipeline.append(f"validation failed: {answer['error']}")
    return Verdict(
        spec_error=answer.get("specError"),
        pipeline=pipeline,
        agents=list(answer.get("agents") or []),
        tools=list(answer.get("tools") or []),
        denied=[(d["where"], d["message"]) for d in answer.get("denied") or []],
    )


class _Worker:
    def __init__(self, memory: int) -> None:
        self.memory = memory
        self.process: asyncio.subprocess.Process | None = None
        self.started = 0
        self._starting = asyncio.Lock()

    async def ensure(self) -> asyncio.subprocess.Process:
        async with self._starting:
            process = self.process
            if process is not None and process.returncode is None:
                return process
            return await self._spawn()

    async def _spawn(self) -> asyncio.subprocess.Process:
        self.started += 1
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "flujo_operator.worker",
            str(self.memory),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            limit=_LINE_LIMIT,
        )
        assert process.stdout is not None
        ready = await asyncio.wait_for(process.stdout.readline(), _READY_TIMEOUT)
        if not ready:
            raise RuntimeError("the validation worker did not start")
        self.process = process
        return process

    async def ask(self, payload: bytes, timeout: float) -> dict[str, Any] | str:
        """The worker's answer, or which bound it breached (``time``/``memory``)."""
        process = await self.ensure()
        assert process.stdin is not None and process.stdout is not None
        try:
            process.stdin.write(payload)
            await process.stdin.drain()
            line = await asyncio.wait_for(process.stdout.readline(), timeout or None)
        except TimeoutError:
            await self.replace()
            return "time"
        except (ConnectionError, BrokenPipeError):
            line = b""
        if not line:  # it died: the kernel refused it memory, or it was killed
            await self.replace()
            return "memory"
        answer: dict[str, Any] = json.loads(line)
        if answer.get("breach"):
            await self.replace()
            return "memory" if answer["breach"] == "memory" else str(answer["breach"])
        return answer

    async def replace(self) -> None:
        """Kill the worker and start its successor now, not at the next validation."""
        await self.kill()
        _in_background(self.ensure())

    async def kill(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        if process.stdin is not None:
            process.stdin.close()


class ValidationPool:
    def __init__(
        self,
        workers: int = 2,
        timeout: float = 5.0,
        memory_mb: int = 192,
        compile_budget_ms: float = 250.0,
        cache_size: int = 1024,
    ) -> None:
        self.timeout = timeout
        self.memory_mb = memory_mb
        self.compile_budget_ms = compile_budget_ms
        self.cache_size = cache_size
        self._workers = [_Worker(memory_mb << 20) for _ in range(workers)]
        self._idle = list(self._workers)
        self._gate = FairGate(max(1, workers))
        self._cache: collections.OrderedDict[str, Verdict] = collections.OrderedDict()
        self._inflight: dict[str, asyncio.Future[Verdict]] = {}
        self._expiry: dict[str, float] = {}
        self._dumps: dict[int, tuple[Any, str]] = {}
        self.breaches: collections.Counter[str] = collections.Counter()
        self.validations = 0

    @classmethod
    def from_config(cls, config: Config) -> ValidationPool:
        """The pool the operator runs with (``FLUJO_VALIDATION_*``, ``FLUJO_COMPILE_BUDGET_MS``)."""
        return cls(
            workers=config.validation_workers,
            timeout=config.validation_timeout,
            memory_mb=config.validation_memory_mb,
            compile_budget_ms=config.compile_budget_ms,
        )

    @property
    def restarts(self) -> int:
        """Workers started beyond the first of each slot (after a breach)."""
        return sum(max(0, w.started - 1) for w in self._workers)

    async def warm(self) -> None:
        """Start the first worker and wait until it is ready: called at the operator's
        start-up, so the first runs admitted do not wait for a Python import (about a
        second) before their validation.  The other workers start when a validation
        first needs them (two checks at once): an operator restarted often should not
        pay for idle ones.  A worker that cannot start is logged; the validation that
        needs it reports the failure."""
        if not self._idle:
            return
        try:
            await self._idle[-1].ensure()
        except (OSError, RuntimeError, TimeoutError) as exc:
            log.warning("the validation worker did not start: %s", exc)

    async def close(self) -> None:
        await asyncio.gather(*(w.kill() for w in self._workers))

    # --- the request --------------------------------------------------------------

    def _dump(self, obj: Any) -> str:
        """JSON of a spec, memoised per object: 1,000 runs share one cached PipelineSpec."""
        if isinstance(obj, dict):
            return json.dumps(obj, sort_keys=True, separators=(",", ":"))
        found = self._dumps.get(id(obj))
        if found is not None and found[0] is obj:
            return found[1]
        text = json.dumps(
            obj.model_dump(mode="json", by_alias=True, exclude_unset=True),
            sort_keys=True,
            separators=(",", ":"),
        )
        if len(self._dumps) >= 4096:
            self._dumps.clear()
        self._dumps[id(obj)] = (obj, text)
        return text

    def _request(
        self,
        spec: PipelineSpec | dict[str, Any],
        agents: Mapping[str, AgentSpec | None],
        policy: dict[str, Any],
    ) -> tuple[str, bytes]:
        parts = [
            self._dump(spec),
            "{"
            + ",".join(
                f"{json.dumps(name)}:{'null' if a is None else self._dump(a)}"
                for name, a in sorted(agents.items())
            )
            + "}",
            self._dump(policy),
        ]
        payload = '{"spec":%s,"agents":%s,"policy":%s}\n' % tuple(parts)  # noqa: UP031
        key = hashlib.sha256(payload.encode()).hexdigest()
        return key, payload.encode()

    async def check(
        self,
        namespace: str,
        spec: PipelineSpec | dict[str, Any],
        agents: Mapping[str, AgentSpec | None],
        policy: dict[str, Any],
    ) -> Verdict:
        """The verdict on one Pipeline for one namespace's Agents and policy."""
        key, payload = self._request(spec, agents, policy)
        cached = self._cache.get(key)
        if cached is not None and self._expiry.get(key, math.inf) < time.monotonic():
            self._cache.pop(key, None)
            self._expiry.pop(key, None)
            cached = None
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        shared = self._inflight.get(key)
        if shared is not None:
            return await asyncio.shield(shared)
        future: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            verdict = await self._validate(namespace, payload)
        except BaseException as exc:
            self._inflight.pop(key, None)
            if not future.done():
                future.set_exception(exc)
                future.exception()  # retrieved: sharers re-raise it, nobody else must
            raise
        self._inflight.pop(key, None)
        self._cache[key] = verdict
        if verdict.breach is not None:
            # A bound may have been breached because the node was busy: try again later.
            self._expiry[key] = time.monotonic() + BREACH_TTL
        if len(self._cache) > self.cache_size:
            old, _ = self._cache.popitem(last=False)
            self._expiry.pop(old, None)
        future.set_result(verdict)
        return verdict

    async def _validate(self, namespace: str, payload: bytes) -> Verdict:
        self.validations += 1
        if not self._workers:
            return _verdict(check(json.loads(payload)), self.compile_budget_ms)
        async with self._gate.slot(namespace):
            worker = self._idle.pop()
            try:
                answer = await worker.ask(payload, self.timeout)
            finally:
                self._idle.append(worker)
        if isinstance(answer, str):
            self.breaches[answer] += 1
            bound = {"time": f" ({self.timeout:g} s)", "memory": f" ({self.memory_mb} MiB)"}
            log.warning("namespace %s: validation exceeded its %s bound", namespace, answer)
            return Verdict(breach=f"validation exceeded its {answer} bound{bound.get(answer, '')}")
        return _verdict(answer, self.compile_budget_ms)
