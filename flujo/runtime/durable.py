"""A stored run's event log: the in-memory log of :mod:`flujo.runtime.results`, journaled.

:class:`DurableEventLog` is the :class:`~flujo.runtime.results.EventLog` of a
run kept in a :class:`~flujo.runtime.store.RunStore`: every event appended is
also staged as a journal row, and large outputs are spilled to the store's
``outputs`` table (by the same rule and threshold as the temp-file result
store) instead of a temp file, so the journal refers to them by digest and
nothing is written twice.  Events read back from the journal on resume are
*restored*: kept in the log, not written again.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from flujo.engine import Event, StepSucceeded
from flujo.runtime.results import EventLog, Ref, ResultStore, ResultStoreClosedError, _Spilled
from flujo.runtime.store import Journal, RunStore

__all__ = ["DurableEventLog", "StoreOutputs"]


class StoreOutputs(ResultStore):
    """Large outputs of one stored run, kept in the run store by sha256 digest."""

    def __init__(self, store: RunStore, journal: Journal, spill_bytes: int | None = None) -> None:
        super().__init__(spill_bytes)
        self.run_store = store
        self.journal = journal

    def __repr__(self) -> str:
        return f"StoreOutputs({self.run_store.path}, values={self.values}, closed={self.closed})"

    def _write(self, data: bytes) -> Ref:
        self.spills += 1
        digest = hashlib.sha256(data).hexdigest()
        ref = self._index.get(digest)
        if ref is None:
            ref = Ref(digest, 0, len(data))
            self._index[digest] = ref
            self._end += len(data)
            self.journal.body(digest, data)
        return ref

    def get(self, ref: Ref) -> Any:
        if self.closed:
            raise ResultStoreClosedError(
                "this run's result store is closed: spilled outputs are gone "
                "(read result.events before result.close())"
            )
        staged = self.journal.bodies.get(ref.digest)
        if staged is not None:
            return json.loads(staged)
        return self.run_store.output(ref.digest)

    def close(self) -> None:
        self._closed = True


class DurableEventLog(EventLog):
    """An event log whose every event is staged in the run's journal as it is appended."""

    __slots__ = ("journal",)

    def __init__(self, store: StoreOutputs) -> None:
        super().__init__(store)
        self.journal = store.journal

    def append(self, event: Event) -> None:
        super().append(event)
        item: Any = self._items[-1]
        self.journal.add(event, item.ref.digest if type(item) is _Spilled else None)

    def restore(self, event: Event, digest: str | None) -> None:
        """An event read back from the journal: kept, not journaled again."""
        if digest is not None and type(event) is StepSucceeded:
            self._items.append(_Spilled(event, Ref(digest, 0, 0)))
        else:
            self._items.append(event)
