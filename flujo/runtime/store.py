"""The run store: embedded runs' journals and outputs in SQLite, written as they happen.

An embedded run is as durable as an operator run: every event the executor
applies is appended to the run's *journal* (the operator keeps the same
journal, compressed, in the PipelineRun status), and large step outputs are
kept once by sha256 digest (the operator keeps them in its step pods' logs).
Resuming a run replays its journal through :func:`flujo.engine.advance`, so a
step whose result was recorded is never called again.

One SQLite file (``.flujo/runs.db`` by default, ``--store PATH`` or
``$FLUJO_STORE``; ``none`` keeps runs in memory only) holds every run of a
directory:

- ``flujo_store``: ``format = flujo-run-store``, ``version = 1``: a file
  without them is refused, never overwritten;
- ``runs``: one row per run: id, pipeline name, status, times, totals, the
  run's *definition* (pipeline spec, limits, seed, input, agent manifests)
  and a pending cancellation request;
- ``journal``: one row per event, ``(run, seq)`` → the operator journal's
  fields ``t`` (``ev`` an event kept whole, ``out`` a ``StepSucceeded`` whose
  output is in ``outputs``), ``p`` path, ``a`` attempt, ``d`` digest and
  ``e`` the event's JSON;
- ``outputs``: digest → compact JSON text of a large output;
- ``waits``: approval steps a run waits on, since when (the first time), and
  the ``AwaitApproval`` request; ``answers``: what people answered, when and
  who (kept: it is the record of the decision).

**Commits.**  Rows are staged in memory by a :class:`Journal` and committed
in one transaction whenever the executor is about to wait for anything
outside the process, every :data:`FLUSH_EVERY` events, and when the run
ends: nothing an agent call depends on is ever uncommitted when the call
leaves the process, and a crash loses at most the results of inline calls
(built-in transforms, plain functions) made since the last commit, which
resuming makes again.  The file is in WAL mode with ``synchronous=NORMAL``:
a killed process loses nothing committed; a power cut may lose the last
commits (never the file).

**Ownership.**  A process running a run holds an exclusive ``flock`` on
``<store>-locks/<id>``, released by the kernel when the process dies however
it dies, so ``flujo runs resume`` knows for certain whether a run is still
being executed somewhere.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import secrets
import sqlite3
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flujo.engine import Event, RunState, StepSucceeded, event_adapter
from flujo.spec.base import API_VERSION
from flujo.spec.pipeline import PipelineManifest

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows: no cross-process ownership check
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "DEFAULT_STORE",
    "FLUSH_EVERY",
    "STORE_ENV",
    "Journal",
    "RunLock",
    "RunRecord",
    "RunStore",
    "StoreError",
    "open_store",
]

STORE_ENV = "FLUJO_STORE"
DEFAULT_STORE = Path(".flujo") / "runs.db"
FORMAT_NAME = "flujo-run-store"
FORMAT_VERSION = 1
FLUSH_EVERY = 512
"""Staged journal rows that force a commit even while inline calls keep coming."""
BUSY_TIMEOUT_MS = 60_000
"""How long a writer waits for another process's transaction (they take milliseconds)."""
FINISHED = frozenset({"succeeded", "failed", "cancelled"})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS flujo_store(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs(
  id TEXT PRIMARY KEY,
  pipeline TEXT NOT NULL,
  status TEXT NOT NULL,
  created REAL NOT NULL,
  updated REAL NOT NULL,
  active_seconds REAL NOT NULL DEFAULT 0,
  events INTEGER NOT NULL DEFAULT 0,
  launches INTEGER NOT NULL DEFAULT 0,
  usage TEXT,
  outcome TEXT,
  definition TEXT NOT NULL,
  cancel TEXT
);
CREATE TABLE IF NOT EXISTS journal(
  run TEXT NOT NULL, seq INTEGER NOT NULL, t TEXT NOT NULL, p TEXT, a INTEGER, d TEXT,
  e BLOB NOT NULL, PRIMARY KEY(run, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outputs(digest TEXT PRIMARY KEY, body BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS waits(
  run TEXT NOT NULL, path TEXT NOT NULL, since REAL NOT NULL, request TEXT NOT NULL,
  PRIMARY KEY(run, path)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS answers(
  run TEXT NOT NULL, path TEXT NOT NULL, at REAL NOT NULL, approved INTEGER NOT NULL,
  input TEXT, reason TEXT, by TEXT
);
"""


class StoreError(Exception):
    """The store cannot be used: one line naming the file."""


def _encode_event(event: Event) -> bytes:
    # The model's own serializer: about 3x faster than the union's TypeAdapter.
    # Values that are not JSON data are kept as their str() (documented).
    return type(event).__pydantic_serializer__.to_json(event, fallback=str)


@dataclass(frozen=True)
class RunRecord:
    """One row of ``runs``: what ``flujo runs list`` shows."""

    id: str
    pipeline: str
    status: str
    created: float
    updated: float
    active_seconds: float
    events: int
    launches: int
    usage: dict[str, Any]
    outcome: dict[str, Any] | None
    definition: dict[str, Any]
    cancel: str | None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def manifest(self) -> PipelineManifest:
        """The pipeline the run was started with, as stored; a ``ValueError`` says in one
        line why it cannot be read (a store written by another version, a damaged row)."""
        try:
            return PipelineManifest.model_validate(
                {
                    "apiVersion": API_VERSION,
                    "kind": "Pipeline",
                    "metadata": {"name": self.pipeline},
                    "spec": self.definition.get("pipeline") or {},
                }
            )
        except ValueError as exc:
            first = str(exc).splitlines()[0]
            raise ValueError(
                f"run {self.id}: its stored pipeline cannot be read: {first}"
            ) from None


class RunLock:
    """This process executes the run: an exclusive ``flock`` the kernel drops at death."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> bool:
        if fcntl is None:  # pragma: no cover - Windows
            return True
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the lock
            self._fd = None


class RunStore:
    """The SQLite file holding runs; see the module docstring.

    ``RunStore(":memory:")`` is a private in-memory store (tests, benchmarks).
    Every failure of the file itself is a :class:`StoreError` naming it.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.memory = str(path) == ":memory:"
        self._lock_dir = self.path.with_name(self.path.name + "-locks")
        self._owned: dict[str, RunLock] = {}
        with self._errors():
            if not self.memory:
                self._prepare_file()
            self.db = sqlite3.connect(
                ":memory:" if self.memory else str(self.path),
                isolation_level=None,
                timeout=BUSY_TIMEOUT_MS / 1000,
                check_same_thread=False,
            )
            self._check_format()

    # --- opening --------------------------------------------------------------

    def _prepare_file(self) -> None:
        if self.path.exists():
            if not self.path.is_file():
                raise StoreError(f"{self.path}: not a file")
            return
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Outputs and inputs are the run's data: private to the user from the start.
        os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))

    def _check_format(self) -> None:
        db = self.db
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        if tables and "flujo_store" not in tables:
            raise StoreError(
                f"{self.path}: a SQLite database that is not a Flujo run store "
                f"(tables: {', '.join(sorted(tables)[:5])}); choose another --store"
            )
        if not tables:
            db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            meta = dict(db.execute("SELECT key, value FROM flujo_store").fetchall())
            if not meta:
                db.executemany(
                    "INSERT INTO flujo_store VALUES (?, ?)",
                    [("format", FORMAT_NAME), ("version", str(FORMAT_VERSION))],
                )
                meta = {"format": FORMAT_NAME, "version": str(FORMAT_VERSION)}
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        if meta.get("format") != FORMAT_NAME:
            raise StoreError(f"{self.path}: not a Flujo run store (format {meta.get('format')!r})")
        if meta.get("version") != str(FORMAT_VERSION):
            raise StoreError(
                f"{self.path}: run store format version {meta.get('version')} "
                f"(this Flujo reads version {FORMAT_VERSION})"
            )

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.DatabaseError as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise StoreError(f"{self.path}: {first}") from None
        except OSError as exc:
            raise StoreError(f"{self.path}: {exc.strerror or exc}") from None

    def close(self) -> None:
        for lock in self._owned.values():
            lock.release()
        self._owned.clear()
        with contextlib.suppress(sqlite3.Error):
            self.db.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- runs -----------------------------------------------------------------

    def create(self, definition: Mapping[str, Any], *, run_id: str | None = None) -> str:
        """A new run row, owned (locked) by this process; returns its id."""
        run_id = run_id or secrets.token_hex(6)
        now = time.time()
        with self._errors():
            if not self.claim(run_id):
                raise StoreError(f"{self.path}: run {run_id} is being executed by another process")
            try:
                self.db.execute(
                    "INSERT INTO runs(id, pipeline, status, created, updated, definition, usage) "
                    "VALUES (?, ?, 'running', ?, ?, ?, '{}')",
                    (
                        run_id,
                        str(definition.get("name") or "pipeline"),
                        now,
                        now,
                        json.dumps(definition, ensure_ascii=False, default=str),
                    ),
                )
            except sqlite3.IntegrityError:
                self.release(run_id)
                raise StoreError(f"{self.path}: a run with id {run_id} exists already") from None
        return run_id

    def claim(self, run_id: str) -> bool:
        """Own the run in this process; ``False`` when a live process owns it."""
        if run_id in self._owned:
            return True
        if self.memory:
            self._owned[run_id] = RunLock(Path(os.devnull))
            return True
        lock = RunLock(self._lock_dir / run_id)
        with self._errors():
            if not lock.acquire():
                return False
        self._owned[run_id] = lock
        return True

    def release(self, run_id: str) -> None:
        lock = self._owned.pop(run_id, None)
        if lock is not None:
            lock.release()

    def owned_elsewhere(self, run_id: str) -> bool:
        """Is the run being executed by another live process right now?"""
        if run_id in self._owned or self.memory:
            return False
        if not self.claim(run_id):
            return True
        self.release(run_id)
        return False

    def get(self, run_id: str) -> RunRecord | None:
        with self._errors():
            row = self.db.execute(f"SELECT {_COLUMNS} FROM runs WHERE id = ?", (run_id,)).fetchone()
        return _record(row) if row else None

    def resolve(self, given: str) -> RunRecord:
        """The run with this id, or the only one whose id starts with it."""
        record = self.get(given)
        if record is not None:
            return record
        with self._errors():
            rows = self.db.execute(
                f"SELECT {_COLUMNS} FROM runs WHERE id LIKE ? ESCAPE '\\' LIMIT 2",
                (given.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%",),
            ).fetchall()
        if len(rows) == 1:
            return _record(rows[0])
        if rows:
            raise StoreError(f"{self.path}: several runs start with {given!r}; give more of the id")
        raise StoreError(f"{self.path}: no run {given!r} (flujo runs list shows them)")

    def list(self, *, limit: int = 50, status: str | None = None) -> list[RunRecord]:
        query = f"SELECT {_COLUMNS} FROM runs"
        args: list[Any] = []
        if status:
            query += " WHERE status = ?"
            args.append(status)
        query += " ORDER BY created DESC, id LIMIT ?"
        args.append(limit)
        with self._errors():
            return [_record(row) for row in self.db.execute(query, args)]

    def request_cancel(self, run_id: str, reason: str) -> None:
        with self._errors():
            self.db.execute("UPDATE runs SET cancel = ? WHERE id = ?", (reason, run_id))

    def cancel_requested(self, run_id: str) -> str | None:
        with self._errors():
            row = self.db.execute("SELECT cancel FROM runs WHERE id = ?", (run_id,)).fetchone()
        return row[0] if row else None

    # --- approvals --------------------------------------------------------------

    def record_wait(self, run_id: str, request: Mapping[str, Any], since: float) -> float:
        """Note an approval wait (the first time only); return when it began."""
        with self._errors():
            self.db.execute(
                "INSERT OR IGNORE INTO waits VALUES (?, ?, ?, ?)",
                (run_id, request["path"], since, json.dumps(request, default=str)),
            )
            row = self.db.execute(
                "SELECT since FROM waits WHERE run = ? AND path = ?", (run_id, request["path"])
            ).fetchone()
        return float(row[0])

    def waits(self, run_id: str) -> dict[str, tuple[float, dict[str, Any]]]:
        """path → (since, request) of every wait the run ever had."""
        with self._errors():
            rows = self.db.execute(
                "SELECT path, since, request FROM waits WHERE run = ?", (run_id,)
            ).fetchall()
        return {path: (since, json.loads(request)) for path, since, request in rows}

    def add_answer(
        self,
        run_id: str,
        path: str,
        *,
        approved: bool,
        input: Any = None,
        reason: str | None = None,
        by: str | None = None,
        at: float | None = None,
    ) -> None:
        with self._errors():
            self.db.execute(
                "INSERT INTO answers VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    path,
                    time.time() if at is None else at,
                    int(approved),
                    None if input is None else json.dumps(input),
                    reason,
                    by,
                ),
            )

    def answers(self, run_id: str) -> builtins.list[dict[str, Any]]:
        """Every answer given for the run, oldest first."""
        with self._errors():
            rows = self.db.execute(
                "SELECT path, at, approved, input, reason, by FROM answers WHERE run = ? "
                "ORDER BY at, rowid",
                (run_id,),
            ).fetchall()
        return [
            {
                "path": path,
                "at": at,
                "approved": bool(approved),
                "input": None if data is None else json.loads(data),
                "reason": reason,
                "by": by,
            }
            for path, at, approved, data, reason, by in rows
        ]

    # --- journal ----------------------------------------------------------------

    def journal(self, run_id: str, *, next_seq: int = 0, active_seconds: float = 0.0) -> Journal:
        return Journal(self, run_id, next_seq, active_seconds)

    def entries(self, run_id: str) -> Iterator[tuple[Event, str | None]]:
        """The run's journal in order: each event (outputs read back) and its digest."""
        with self._errors():
            rows = self.db.execute(
                "SELECT t, d, e FROM journal WHERE run = ? ORDER BY seq", (run_id,)
            ).fetchall()
        for kind, digest, data in rows:
            try:
                event = event_adapter.validate_json(data)
                if kind == "out":
                    event = event.model_copy(update={"output": self.output(digest)})
            except (ValueError, StoreError) as exc:
                raise StoreError(
                    f"{self.path}: run {run_id}: a journal entry cannot be read "
                    f"({str(exc).splitlines()[0]})"
                ) from None
            yield event, digest if kind == "out" else None

    def output(self, digest: str) -> Any:
        with self._errors():
            row = self.db.execute("SELECT body FROM outputs WHERE digest = ?", (digest,)).fetchone()
        if row is None:
            raise StoreError(f"{self.path}: output {digest[:12]} is missing")
        return json.loads(row[0])


_COLUMNS = (
    "id, pipeline, status, created, updated, active_seconds, events, launches, usage, outcome, "
    "definition, cancel"
)


def _record(row: tuple[Any, ...]) -> RunRecord:
    return RunRecord(
        id=row[0],
        pipeline=row[1],
        status=row[2],
        created=row[3],
        updated=row[4],
        active_seconds=row[5],
        events=row[6],
        launches=row[7],
        usage=json.loads(row[8] or "{}"),
        outcome=json.loads(row[9]) if row[9] else None,
        definition=json.loads(row[10]),
        cancel=row[11],
    )


class Journal:
    """One execution's writer: rows are staged in memory and committed by :meth:`flush`."""

    def __init__(self, store: RunStore, run_id: str, next_seq: int, active_seconds: float) -> None:
        self.store = store
        self.run_id = run_id
        self.seq = next_seq
        self.rows: list[tuple[str, int, str, str | None, int | None, str | None, bytes]] = []
        self.bodies: dict[str, bytes] = {}
        self.base_seconds = active_seconds
        self.started = time.monotonic()
        self.commits = 0

    @property
    def active_seconds(self) -> float:
        """Wall-clock time executed by every process that ran this run, so far."""
        return self.base_seconds + (time.monotonic() - self.started)

    def add(self, event: Event, digest: str | None = None) -> None:
        path = getattr(event, "path", None)
        attempt = getattr(event, "attempt", None)
        if digest is not None:
            assert type(event) is StepSucceeded
            data = _encode_event(event.model_copy(update={"output": None}))
            self.rows.append((self.run_id, self.seq, "out", path, attempt, digest, data))
        else:
            data = _encode_event(event)
            self.rows.append((self.run_id, self.seq, "ev", path, attempt, None, data))
        self.seq += 1

    def body(self, digest: str, data: bytes) -> None:
        self.bodies[digest] = data

    @property
    def pending(self) -> int:
        return len(self.rows)

    def flush(self, state: RunState, status: str | None = None) -> None:
        """Commit the staged rows and the run's totals in one transaction."""
        if not self.rows and status is None:
            return
        outcome = state.outcome
        status = status or ("running" if outcome is None else outcome.status)
        db = self.store.db
        with self.store._errors():
            db.execute("BEGIN IMMEDIATE")
            try:
                if self.bodies:
                    db.executemany(
                        "INSERT OR IGNORE INTO outputs VALUES (?, ?)", list(self.bodies.items())
                    )
                db.executemany("INSERT INTO journal VALUES (?, ?, ?, ?, ?, ?, ?)", self.rows)
                db.execute(
                    "UPDATE runs SET status = ?, updated = ?, active_seconds = ?, events = ?, "
                    "launches = ?, usage = ?, outcome = ? WHERE id = ?",
                    (
                        status,
                        time.time(),
                        self.active_seconds,
                        self.seq,
                        state.launches,
                        state.usage.model_dump_json(by_alias=True),
                        None if outcome is None else outcome.model_dump_json(),
                        self.run_id,
                    ),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        self.rows.clear()
        self.bodies.clear()
        self.commits += 1


def open_store(target: str | Path | None) -> RunStore | None:
    """The store a command uses: ``target``, else ``$FLUJO_STORE``, else ``.flujo/runs.db``.

    ``none`` (any case) means no store: the run lives in memory only.
    """
    if target is None or str(target) == "":
        target = os.environ.get(STORE_ENV, "").strip() or DEFAULT_STORE
    if str(target).lower() == "none":
        return None
    return RunStore(target)
