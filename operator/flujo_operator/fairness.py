"""Fair shares of the operator's shared capacity: round-robin across namespaces.

The operator is shared by every namespace, so every queue inside it is a
place where one tenant could stand in front of another.  The two that
matter are API requests (a namespace creating 1,000 PipelineRuns makes
1,000 status writes) and validations (a namespace submitting many large
Pipelines).  Both go through a :class:`FairGate`: at most ``limit`` holders
at a time, and when it is full the next slot goes to the *next namespace* in
turn, not to the oldest waiter.  A flooding namespace therefore waits behind
its own backlog, while another namespace's request waits for at most one
turn of each namespace that has work queued.

Pure asyncio, no Kubernetes: unit-tested on its own (``tests/test_operator_fairness.py``).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

__all__ = ["FairGate"]


class FairGate:
    """At most ``limit`` holders; waiters are admitted round-robin by key (the namespace)."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.holders = 0
        self._queues: dict[str, collections.deque[asyncio.Future[None]]] = {}
        self._turns: collections.deque[str] = collections.deque()
        """Keys with waiters, in the order their next turn comes."""

    def waiting(self, key: str | None = None) -> int:
        """Waiters of one key, or of all."""
        if key is not None:
            return len(self._queues.get(key, ()))
        return sum(len(q) for q in self._queues.values())

    @asynccontextmanager
    async def slot(self, key: str) -> AsyncIterator[None]:
        await self.acquire(key)
        try:
            yield
        finally:
            self.release()

    async def acquire(self, key: str) -> None:
        if self.holders < self.limit and not self._turns:
            self.holders += 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = collections.deque()
            self._turns.append(key)
        queue.append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # the slot was handed to us as we were cancelled
            else:
                self._discard(key, future)
            raise

    def release(self) -> None:
        """Give the slot to the first waiter of the next key in turn, else free it."""
        while self._turns:
            key = self._turns.popleft()
            queue = self._queues[key]
            future = queue.popleft()
            if queue:
                self._turns.append(key)  # the key's next waiter gets a later turn
            else:
                del self._queues[key]
            if not future.done():
                future.set_result(None)  # the slot passes on: holders stays the same
                return
        self.holders -= 1

    def _discard(self, key: str, future: asyncio.Future[None]) -> None:
        queue = self._queues.get(key)
        if queue is None or future not in queue:
            return
        queue.remove(future)
        if not queue:
            del self._queues[key]
            self._turns.remove(key)
