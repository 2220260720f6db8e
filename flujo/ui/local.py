"""Embedded runs for the web view: the run store read, replayed, redacted and acted on.

A run's page is its journal replayed through :func:`flujo.engine.advance`
(pure: nothing is called), as ``flujo runs show`` does; replays are cached
by the journal's length, so a finished run is replayed once and a live one
once per change.  Values are redacted as transcripts are (the run's stored
agents' credentials and the environment's secret variables, with
:class:`~flujo.security.redaction.Redactor`), and a step's transcript lines
are cut from the run's transcript (:func:`flujo.transcript.iter_transcript`).

Cancelling is the run store's: a run live in another process gets a
cancellation request (that process stops it within a second); a stopped one
is cancelled here by resuming it with ``cancel``, which calls nothing.
"""

from __future__ import annotations

import builtins
import re
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from flujo.agents.registry import AgentRegistry
from flujo.engine import Event, RunState, advance, event_adapter, new_run
from flujo.runtime import Flujo, PipelineValidationError
from flujo.runtime.store import RunRecord, RunStore, StoreError, open_store
from flujo.security.policy import PolicyError, policy_from_env
from flujo.security.redaction import Redactor
from flujo.spec.agent import AgentManifest
from flujo.spec.limits import UsageLimits
from flujo.spec.pipeline import PipelineManifest
from flujo.transcript import iter_transcript
from flujo.ui.view import ActionError, RunSummary, RunView, steps_of_state, summary_of_state

__all__ = ["ActionError", "LocalRuns", "step_lines"]

TRANSCRIPT_LINES = 400
"""At most this many transcript lines of one step are shown."""
_CACHE_RUNS = 64
_CACHE_TRANSCRIPTS = 4


@dataclass
class _Cached:
    """A run replayed so far: its state after ``events`` journal entries, and its view."""

    events: int
    status: str
    view: RunView | None
    state: RunState
    manifest: PipelineManifest
    redactor: Redactor


class LocalRuns:
    """The run store of ``flujo ui`` (``--store``, ``$FLUJO_STORE``, ``.flujo/runs.db``)."""

    source = "local"

    def __init__(self, target: str | None) -> None:
        store = open_store(target)
        if store is None:
            raise StoreError("--store none keeps no runs: choose a store file")
        self.store: RunStore = store
        self.lock = threading.RLock()
        self._cache: dict[str, _Cached] = {}
        self._lines: dict[str, tuple[int, list[str]]] = {}
        self.failures: dict[str, str] = {}
        """Runs whose resumption (after an answer given here) failed: one line each."""

    def close(self) -> None:
        with self.lock:
            self.store.close()

    # --- reading ----------------------------------------------------------------

    def _status(self, record: RunRecord) -> str:
        """As ``flujo runs list`` shows it: a run nobody executes any more is ``interrupted``."""
        if record.status == "running" and not self.store.owned_elsewhere(record.id):
            return "interrupted"
        return record.status

    def list(
        self, *, status: str | None, query: str, offset: int, limit: int
    ) -> tuple[list[RunSummary], bool]:
        """A page of runs, newest first, and whether there are more."""
        with self.lock:
            wanted = None if status in (None, "", "interrupted") else status
            # The store pages by count only: read up to the end of this page, filter here.
            records = self.store.list(limit=(offset + limit) * 4 + 200, status=wanted)
            rows = []
            for record in records:
                if query and query.lower() not in f"{record.id} {record.pipeline}".lower():
                    continue
                shown = self._status(record)
                if status and shown != status:
                    continue
                rows.append((record, shown))
            page = rows[offset : offset + limit]
            return [self._summary(r, s, self._progress(r.id)) for r, s in page], (
                len(rows) > offset + limit
            )

    def _progress(self, run_id: str) -> str:
        try:  # replayed once per change of the run (cached), as its page would be
            return self.view(run_id).summary.progress
        except (StoreError, ActionError):
            return "?"

    def _summary(self, record: RunRecord, shown: str, progress: str) -> RunSummary:
        usage = record.usage
        return RunSummary(
            source=self.source,
            key=record.id,
            pipeline=record.pipeline,
            phase=shown,
            progress=progress,
            tokens=int(usage.get("inputTokens", 0)) + int(usage.get("outputTokens", 0)),
            cost_usd=float(usage.get("costUsd", 0.0)),
            estimated=bool(usage.get("estimated", False)),
            created=record.created,
            updated=record.updated,
            launches=record.launches,
            message=str((record.outcome or {}).get("message") or ""),
        )

    def record(self, run_id: str) -> RunRecord:
        with self.lock:
            return self.store.resolve(run_id)

    def version(self, run_id: str) -> tuple[int, str, str | None]:
        """What changes when the run does: its journal length, status and cancel request."""
        with self.lock:
            record = self.store.get(run_id)
            if record is None:
                raise ActionError(f"no run {run_id!r}")
            return record.events, self._status(record), record.cancel

    def fresh(self, run_id: str) -> RunView | None:
        """The run's view if it is replayed up to date already, else ``None`` (nothing is read)."""
        with self.lock:
            record = self.store.resolve(run_id)
            cached = self._cache.get(record.id)
            if (
                cached is not None
                and cached.view is not None
                and cached.events == record.events
                and cached.status == self._status(record)
            ):
                return cached.view
            return None

    def head(self, run_id: str) -> RunView:
        """What a page shows before the journal is replayed: the record's totals, the graph."""
        with self.lock:
            record = self.store.resolve(run_id)
            summary = self._summary(record, self._status(record), "")
            return RunView(summary=summary, spec=manifest_of(record).spec, steps={})

    def _since(self, run_id: str, seq: int) -> builtins.list[Event]:
        """The run's journal from entry ``seq`` on (the store's :meth:`entries`, resumed)."""
        try:
            rows = self.store.db.execute(
                "SELECT t, d, e FROM journal WHERE run = ? AND seq >= ? ORDER BY seq",
                (run_id, seq),
            ).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.store.path}: {str(exc).splitlines()[0]}") from None
        events: builtins.list[Event] = []
        for kind, digest, data in rows:
            try:
                event = event_adapter.validate_json(data)
            except ValueError as exc:
                first = str(exc).splitlines()[0]
                raise StoreError(
                    f"run {run_id}: a journal entry cannot be read ({first})"
                ) from None
            if kind == "out":
                event = event.model_copy(update={"output": self.store.output(digest)})
            events.append(event)
        return events

    def view(self, run_id: str) -> RunView:
        """The run replayed from its journal: once, then only the entries added since."""
        with self.lock:
            record = self.store.resolve(run_id)
            shown = self._status(record)
            cached = self._cache.get(record.id)
            if (
                cached is not None
                and cached.view is not None
                and cached.events == record.events
                and cached.status == shown
            ):
                return cached.view
            if cached is None or cached.events > record.events:
                manifest = manifest_of(record)
                cached = _Cached(
                    0,
                    shown,
                    None,
                    new_run(manifest.spec, _limits(record)),
                    manifest,
                    redactor_of(record),
                )
            state = cached.state
            new = self._since(record.id, cached.events)
            for event in new:
                state, _commands = advance(state, event)
            redactor = cached.redactor
            summary = summary_of_state(
                state, key=record.id, pipeline=record.pipeline, phase=shown, redactor=redactor
            )
            summary.created, summary.updated = record.created, record.updated
            outcome = state.outcome
            view = RunView(
                summary=summary,
                spec=cached.manifest.spec,
                steps=steps_of_state(state, redactor),
                input=redactor.redact_data(state.input),
                output=redactor.redact_data(outcome.output) if outcome else None,
            )
            cached.events += len(new)
            cached.status, cached.view = shown, view
            self._cache.pop(record.id, None)
            while len(self._cache) >= _CACHE_RUNS:
                self._cache.pop(next(iter(self._cache)))
            self._cache[record.id] = cached
            return view

    def transcript(self, run_id: str) -> builtins.list[str]:
        """The run's transcript lines, redacted as ``flujo runs show --transcript`` redacts."""
        with self.lock:
            record = self.store.resolve(run_id)
            known = self._lines.get(record.id)
            if known is not None and known[0] == record.events:
                return known[1]
            manifest = manifest_of(record)
            events = self._since(record.id, 0)
            redactor = redactor_of(record)
            lines = [
                redactor.redact(line.rstrip("\n"))
                for line in iter_transcript(
                    manifest.spec, events, _limits(record), name=record.pipeline
                )
            ]
            if len(self._lines) >= _CACHE_TRANSCRIPTS:
                self._lines.pop(next(iter(self._lines)))
            self._lines[record.id] = (len(events), lines)
            return lines

    # --- acting -----------------------------------------------------------------

    def cancel(self, run_id: str, reason: str) -> str:
        """Cancel as ``flujo runs cancel`` does; returns what happened, in one line."""
        with self.lock:
            record = self.store.resolve(run_id)
            if record.finished:
                raise ActionError(f"run {record.id} has {record.status} already")
            if self.store.owned_elsewhere(record.id):
                self.store.request_cancel(record.id, reason)
                return f"run {record.id}: cancellation requested"
            result = runner_of(self.store, record).resume(record.id, cancel=reason)
            result.close()
            return f"run {record.id} {result.status}"

    def answer(
        self,
        run_id: str,
        *,
        approved: bool,
        step: str | None,
        input: Any = None,
        reason: str | None,
        by: str,
    ) -> str:
        """Approve or reject as ``flujo approve`` / ``flujo reject`` do: the same runtime calls.

        The answer is kept in the store (:meth:`flujo.runtime.Flujo.answer`);
        a process holding the run applies it within a second, else the run
        goes on here, in a thread of this process (with its own connection).
        """
        with self.lock:
            record = self.store.resolve(run_id)
            try:
                path = runner_of(self.store, record).answer(
                    record.id,
                    approved=approved,
                    step=step,
                    input=input,
                    reason=reason,
                    by=by,
                )
            except StoreError as exc:
                raise ActionError(str(exc)) from None
            verb = "approved" if approved else "rejected"
            if self.store.owned_elsewhere(record.id):
                return f"{path} {verb}: the process running it goes on"
            started = threading.Event()
            thread = threading.Thread(
                target=self._go_on, args=(record, started), name=f"flujo-ui-{record.id}"
            )
            thread.daemon = True
            thread.start()
            started.wait(30)
        return f"{path} {verb}: the run goes on in flujo ui"

    def _go_on(self, record: RunRecord, started: threading.Event) -> None:
        try:
            with RunStore(self.store.path) as store:
                runner = runner_of(store, record)
                if not store.claim(record.id):
                    return  # another process took the run over first: it applies the answer
                started.set()
                runner.resume(record.id).close()
        except Exception as exc:  # the run stays resumable; the page shows it as interrupted
            self.failures[record.id] = str(exc).splitlines()[0] if str(exc) else repr(exc)
        finally:
            started.set()


def _limits(record: RunRecord) -> UsageLimits | None:
    limits = record.definition.get("limits")
    return UsageLimits.model_validate(limits) if limits else None


def manifest_of(record: RunRecord) -> PipelineManifest:
    try:
        return record.manifest()
    except ValueError as exc:
        raise ActionError(str(exc)) from None


def _agents(record: RunRecord) -> list[AgentManifest]:
    try:
        return [AgentManifest.model_validate(d) for d in record.definition.get("agents") or []]
    except ValueError as exc:
        first = str(exc).splitlines()[0]
        raise ActionError(f"run {record.id}: a stored agent cannot be read: {first}") from None


def redactor_of(record: RunRecord) -> Redactor:
    """The redactor ``flujo runs resume`` prints the run with: its agents' secrets, the env's."""
    redactor = Redactor()
    redactor.add_agent_specs([a.spec for a in _agents(record)])
    return redactor.add_environment()


def runner_of(store: RunStore, record: RunRecord) -> Flujo:
    """A runtime for the stored run: its pipeline and agents as they were when it started."""
    registry = AgentRegistry()
    for manifest in _agents(record):
        registry.register_manifest(manifest, source=f"run {record.id}")
    try:
        security = policy_from_env().policy()
    except PolicyError as exc:
        raise ActionError(str(exc)) from None
    try:
        return Flujo(
            manifest_of(record),
            agent_registry=registry,
            source=f"run {record.id}",
            security_policy=security,
            store=store,
        )
    except PipelineValidationError as exc:
        raise ActionError(f"run {record.id}: {exc.problems[0]}") from None


def step_lines(lines: Iterable[str], path: str, limit: int = TRANSCRIPT_LINES) -> list[str]:
    """The transcript lines about ``path``: each line naming it, with its detail lines."""
    pattern = re.compile(rf"(?<![\w/.-]){re.escape(path)}(?![\w/.-])")
    out: list[str] = []
    keep = False
    for line in lines:
        detail = line.startswith("              ")
        if not detail:
            keep = bool(pattern.search(line))
        if keep:
            out.append(line)
            if len(out) >= limit:
                out.append(f"… (more lines in flujo runs show --transcript; first {limit} shown)")
                break
    return out
