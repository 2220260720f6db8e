"""The embedded run's result store: large outputs live on disk, not in memory.

A run's event log keeps every event, and every ``StepSucceeded`` carries the
step's output: a 10,000-iteration loop of 10 KiB outputs would hold 100 MiB
for the whole run, although the state machine itself only keeps the last
:data:`~flujo.engine.machine.KEEP_ITERATIONS` iterations.  So the embedded
executor records events in an :class:`EventLog` whose large outputs are
*spilled* to a :class:`ResultStore` and referenced by digest:

- **what spills**: a ``StepSucceeded.output`` that is plain JSON data (``dict``
  with ``str`` keys, ``list``, ``str``, ``int``, ``float``, ``bool``, ``None``,
  exact types; numbers, booleans and ``null`` alone never spill) and whose
  compact UTF-8 JSON text is longer than the threshold:
  :data:`DEFAULT_SPILL_BYTES` (4 KiB, the size of the operator's
  termination-message envelope) unless ``Flujo(spill_bytes=...)`` or the
  environment variable ``FLUJO_SPILL_BYTES`` says otherwise; ``0`` turns
  spilling off.  Other Python objects (tuples, models, ...) stay in memory: a
  JSON round trip would change their type.  ``RunStarted.input`` is not
  spilled: the run state keeps the input for templates anyway.
- **the cheap path stays cheap**: scalars and short strings are recognised by
  their type and length, and small containers by a walk that bounds their
  JSON size from above; only values that may be large are serialised.
- **the store**: one anonymous temporary file per run (``tempfile.TemporaryFile``:
  already unlinked, so nothing is left behind even after a crash), created on
  the first spill, append-only, with an in-memory index from sha256 digest to
  offset and length; identical values are stored once.  It is closed by
  :meth:`ResultStore.close` (``RunResult.close()`` or ``with result:``) or when
  it is garbage-collected.
- **reading back**: the log is a ``Sequence[Event]`` that rebuilds a spilled
  event on access, so iterating it (the transcript renderer does) holds one
  large output at a time.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any, overload

from flujo.engine import Event, StepSucceeded
from flujo.runtime.envelope import MAX_ENVELOPE_BYTES

__all__ = [
    "DEFAULT_SPILL_BYTES",
    "SPILL_BYTES_ENV",
    "EventLog",
    "Ref",
    "ResultStore",
    "ResultStoreClosedError",
    "spill_threshold",
]

DEFAULT_SPILL_BYTES = MAX_ENVELOPE_BYTES
"""Outputs whose JSON text is longer than this many bytes are spilled (4 KiB)."""

SPILL_BYTES_ENV = "FLUJO_SPILL_BYTES"
"""Environment variable overriding :data:`DEFAULT_SPILL_BYTES`; ``0`` disables spilling."""

_INLINE_TYPES = frozenset({type(None), bool, int, float})
"""Output types that are never spilled, recognised without looking inside."""

_MAX_ESCAPE = 6
"""Worst-case JSON bytes per character of a string (``\\u001f``)."""

_POSITIONAL = hasattr(os, "pwrite") and hasattr(os, "pread")
"""Positional I/O (POSIX): no shared file position, so reads never disturb writes."""


def spill_threshold(spill_bytes: int | None = None) -> int:
    """The threshold in effect: the argument, else ``$FLUJO_SPILL_BYTES``, else 4 KiB."""
    if spill_bytes is None:
        raw = os.environ.get(SPILL_BYTES_ENV, "").strip()
        if not raw:
            return DEFAULT_SPILL_BYTES
        try:
            spill_bytes = int(raw)
        except ValueError:
            raise ValueError(
                f"{SPILL_BYTES_ENV}={raw!r} is not a whole number of bytes (0 disables spilling)"
            ) from None
    if spill_bytes < 0:
        raise ValueError(f"spill_bytes must be >= 0 (0 disables spilling), not {spill_bytes}")
    return spill_bytes


class ResultStoreClosedError(RuntimeError):
    """A spilled output was read after its run result was closed."""


@dataclass(frozen=True, slots=True)
class Ref:
    """Where a spilled value lives: its sha256 and its place in the store's file."""

    digest: str
    offset: int
    size: int


def _bounds(value: Any) -> tuple[int, int] | None:
    """Lower and upper bounds of the compact JSON size of ``value``.

    ``None`` when ``value`` is not plain JSON data that survives a JSON round
    trip unchanged (a tuple, a model, a ``str`` subclass, a dict with a non-str
    key, a container reached twice).
    """
    low = high = 0
    stack: list[Any] = [value]
    seen: set[int] = set()
    while stack:
        v = stack.pop()
        t = type(v)
        if t is str:
            n = len(v)
            low += n + 2
            high += _MAX_ESCAPE * n + 2
        elif t is int:
            bits = v.bit_length()
            low += bits * 3 // 10 or 1  # decimal digits: bits * log10(2) = bits * 0.30103
            high += bits * 31 // 100 + 2  # and a sign
        elif v is None or t is bool:
            low += 4
            high += 5
        elif t is float:
            low += 1
            high += 24
        elif t is dict or t is list:
            if id(v) in seen:
                return None
            seen.add(id(v))
            n = len(v)
            low += 2 + max(n - 1, 0)
            high += 2 + max(n - 1, 0)
            if t is dict:
                for k in v:
                    if type(k) is not str:
                        return None
                    low += len(k) + 3
                    high += _MAX_ESCAPE * len(k) + 3
                stack.extend(v.values())
            else:
                stack.extend(v)
        else:
            return None
    return low, high


def _encode(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class ResultStore:
    """Content-addressed, append-only storage of one run's large values in a temp file."""

    def __init__(self, spill_bytes: int | None = None) -> None:
        self.spill_bytes = spill_threshold(spill_bytes)
        self._file: IO[bytes] | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._index: dict[str, Ref] = {}
        self._end = 0
        self._closed = False
        self.spills = 0
        """Values handed to the store (duplicates included)."""

    def __repr__(self) -> str:
        return (
            f"ResultStore(spill_bytes={self.spill_bytes}, values={len(self._index)}, "
            f"bytes={self._end}, closed={self._closed})"
        )

    @property
    def enabled(self) -> bool:
        return self.spill_bytes > 0

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def values(self) -> int:
        """Distinct values stored."""
        return len(self._index)

    @property
    def size(self) -> int:
        """Bytes written to the file."""
        return self._end

    @property
    def file(self) -> IO[bytes] | None:
        """The backing temp file, ``None`` until the first spill."""
        return self._file

    def put(self, value: Any) -> Ref | None:
        """Store ``value`` if it is large JSON data and return its reference; else ``None``.

        ``None`` means: keep the value in memory.
        """
        limit = self.spill_bytes
        if limit <= 0 or self._closed or type(value) in _INLINE_TYPES:
            return None
        if type(value) is str and len(value) * _MAX_ESCAPE + 2 <= limit:
            return None
        bounds = _bounds(value)
        if bounds is None or bounds[1] <= limit:
            return None
        try:
            data = _encode(value)
        except (ValueError, RecursionError):  # a huge int, a very deep nesting: keep it
            return None
        if len(data) <= limit:
            return None
        return self._write(data)

    def _write(self, data: bytes) -> Ref:
        self.spills += 1
        digest = hashlib.sha256(data).hexdigest()
        ref = self._index.get(digest)
        if ref is not None:
            return ref
        if self._file is None:
            # Lives as long as the run result: closed by close() or the finalizer.
            self._file = tempfile.TemporaryFile(prefix="flujo-results-", buffering=0)  # noqa: SIM115
            self._finalizer = weakref.finalize(self, self._file.close)
        if _POSITIONAL:
            fd, done = self._file.fileno(), 0
            while done < len(data):  # a regular file writes all at once; loop to be sure
                done += os.pwrite(fd, data[done:], self._end + done)
        else:  # pragma: no cover - Windows
            self._file.seek(self._end)
            self._file.write(data)
        ref = Ref(digest, self._end, len(data))
        self._end += len(data)
        self._index[digest] = ref
        return ref

    def get(self, ref: Ref) -> Any:
        """The value stored under ``ref``."""
        if self._closed or self._file is None:
            raise ResultStoreClosedError(
                "this run's result store is closed: spilled outputs are gone "
                "(read result.events before result.close())"
            )
        if _POSITIONAL:
            fd, data = self._file.fileno(), b""
            while len(data) < ref.size:
                chunk = os.pread(fd, ref.size - len(data), ref.offset + len(data))
                if not chunk:
                    break
                data += chunk
        else:  # pragma: no cover - Windows
            self._file.seek(ref.offset)
            data = self._file.read(ref.size)
        if len(data) != ref.size:  # pragma: no cover - the file is private to this process
            raise ResultStoreClosedError(f"the result store lost {ref.digest}")
        return json.loads(data)

    def close(self) -> None:
        """Release the temp file; idempotent."""
        self._closed = True
        if self._finalizer is not None:
            self._finalizer()


class _Spilled:
    """A ``StepSucceeded`` whose output lives in the store."""

    __slots__ = ("attempt", "fields_set", "path", "ref", "tool_calls", "usage")

    def __init__(self, event: StepSucceeded, ref: Ref) -> None:
        self.path = event.path
        self.attempt = event.attempt
        self.usage = event.usage
        self.tool_calls = event.tool_calls
        self.fields_set = event.model_fields_set
        self.ref = ref

    def resolve(self, store: ResultStore) -> StepSucceeded:
        return StepSucceeded.model_construct(
            self.fields_set,
            path=self.path,
            attempt=self.attempt,
            output=store.get(self.ref),
            usage=self.usage,
            tool_calls=self.tool_calls,
        )


class EventLog(Sequence[Event]):
    """A run's events in order; large outputs are held by a :class:`ResultStore`.

    Reads as a ``Sequence[Event]`` (indexing, slicing, iteration, ``len``,
    comparison with a list); each access to a spilled event reads its output
    back, so iterating holds one large output at a time.
    """

    __slots__ = ("_items", "_spill", "store")

    def __init__(self, store: ResultStore | None = None) -> None:
        self.store = store if store is not None else ResultStore(0)
        self._spill = self.store.enabled
        self._items: list[Event | _Spilled] = []

    def append(self, event: Event) -> None:
        if (
            self._spill
            and type(event) is StepSucceeded
            and type(event.output) not in _INLINE_TYPES
            and (ref := self.store.put(event.output)) is not None
        ):
            self._items.append(_Spilled(event, ref))
            return
        self._items.append(event)

    @property
    def spilled(self) -> int:
        """Events whose output is held by the store, not in memory."""
        return sum(1 for item in self._items if type(item) is _Spilled)

    def close(self) -> None:
        self.store.close()

    def _resolve(self, item: Event | _Spilled) -> Event:
        return item.resolve(self.store) if type(item) is _Spilled else item  # type: ignore[return-value]

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, index: int) -> Event: ...

    @overload
    def __getitem__(self, index: slice) -> list[Event]: ...

    def __getitem__(self, index: int | slice) -> Event | list[Event]:
        if isinstance(index, slice):
            return [self._resolve(item) for item in self._items[index]]
        return self._resolve(self._items[index])

    def __iter__(self) -> Iterator[Event]:
        store = self.store
        for item in self._items:
            yield item.resolve(store) if type(item) is _Spilled else item  # type: ignore[misc]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str | bytes):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"EventLog({len(self._items)} events, {self.spilled} spilled)"
