"""The run store: embedded runs journaled to SQLite and resumed from their journal.

Crashes are simulated here by cutting a finished run's journal at every
possible event (what a SIGKILL after that commit leaves); the real thing, a
``flujo run`` SIGKILLed at random moments, is tests/test_store_chaos.py.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from flujo import (
    AgentContext,
    AgentOutput,
    BaseAgent,
    Flujo,
    LoopStep,
    ParallelStep,
    Pipeline,
    Step,
)
from flujo.domain.usage import Usage
from flujo.engine import StepSucceeded
from flujo.runtime.store import RunStore, StoreError, open_store
from flujo.transcript import transcript_of


class Counting(BaseAgent):
    """An async agent that counts its calls per step path (it stands for a paid LLM call)."""

    def __init__(self, answer: Any = None, delay: float = 0.0) -> None:
        self.answer = answer
        self.delay = delay
        self.calls: dict[str, int] = {}

    async def run(self, data: Any, context: AgentContext) -> AgentOutput:
        self.calls[context.step_path] = self.calls.get(context.step_path, 0) + 1
        if self.delay:
            await asyncio.sleep(self.delay)
        answer = self.answer if self.answer is not None else f"{context.step_path}({data})"
        return AgentOutput(answer, Usage(input_tokens=3, output_tokens=2, cost_usd=0.001))


def plus_one(x: Any) -> Any:
    return (x or 0) + 1 if isinstance(x, int) else 1


def pipeline(llm: Counting) -> Pipeline:
    return Pipeline(
        [
            Step("first", llm),
            LoopStep(
                "refine",
                [Step("count", plus_one), Step("critic", llm)],
                max_iterations=3,
                exit_when="iteration >= 3",
            ),
            ParallelStep("fan", {"a": Step("pa", llm), "b": Step("pb", llm)}),
            Step("last", llm),
        ],
        name="durable",
    )


def cut_journal(path: Path, run_id: str, keep: int) -> None:
    """What a crash after the commit of ``keep`` events leaves behind."""
    db = sqlite3.connect(path)
    with db:
        db.execute("DELETE FROM journal WHERE run = ? AND seq >= ?", (run_id, keep))
        db.execute(
            "UPDATE runs SET status = 'running', events = ?, outcome = NULL WHERE id = ?",
            (keep, run_id),
        )
    db.close()


def test_a_stored_run_is_journaled_and_listed(tmp_path: Path) -> None:
    llm = Counting()
    with RunStore(tmp_path / "runs.db") as store:
        result = Flujo(pipeline(llm), store=store).run("topic", run_id="one")
        assert result.success and result.run_id == "one"
        (record,) = store.list()
        assert (record.id, record.pipeline, record.status) == ("one", "durable", "succeeded")
        assert record.events == len(result.events)
        assert record.launches == result.state.launches
        assert record.usage["costUsd"] == pytest.approx(result.usage.cost_usd)
        assert [e for e, _ in store.entries("one")] == list(result.events)


@pytest.mark.parametrize("spill_bytes", [0, 16])
def test_resume_after_a_crash_at_any_event_calls_nothing_recorded_again(
    tmp_path: Path, spill_bytes: int
) -> None:
    db = tmp_path / "runs.db"
    reference = Counting()
    with RunStore(db) as store:
        whole = Flujo(pipeline(reference), store=store, spill_bytes=spill_bytes).run(
            "t", run_id="ref"
        )
        expected = transcript_of(whole)
        total = len(whole.events)
    for keep in range(1, total):
        run_id = f"cut-{keep}"
        with RunStore(db) as store:
            Flujo(pipeline(Counting()), store=store, spill_bytes=spill_bytes).run(
                "t", run_id=run_id
            )
        cut_journal(db, run_id, keep)
        llm = Counting()
        with RunStore(db) as store:
            kept = [e for e, _ in store.entries(run_id)]
            recorded = {e.path for e in kept if isinstance(e, StepSucceeded)}
            resumed = Flujo(pipeline(llm), store=store, spill_bytes=spill_bytes).resume(run_id)
            assert resumed.success, (keep, resumed.outcome)
            assert transcript_of(resumed) == expected, keep
            assert not recorded & set(llm.calls), (keep, recorded & set(llm.calls))
            assert all(n == 1 for n in llm.calls.values()), llm.calls
            assert store.get(run_id).status == "succeeded"  # type: ignore[union-attr]


def test_large_outputs_are_kept_once_by_digest(tmp_path: Path) -> None:
    big = "x" * 10_000
    with RunStore(tmp_path / "runs.db") as store:
        result = Flujo(pipeline(Counting(answer=big)), store=store).run("t", run_id="big")
        assert result.output == big
        rows = store.db.execute("SELECT t, d FROM journal WHERE run = 'big'").fetchall()
        digests = {d for t, d in rows if t == "out"}
        assert len(digests) == 1 and sum(1 for t, _ in rows if t == "out") > 1
        assert store.db.execute("SELECT count(*) FROM outputs").fetchone() == (1,)
        assert [e for e, _ in store.entries("big")] == list(result.events)


def test_resume_refuses_a_finished_run_a_live_one_and_another_pipeline(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    with RunStore(db) as store:
        Flujo(pipeline(Counting()), store=store).run("t", run_id="done")
        with pytest.raises(StoreError, match="run done has succeeded already"):
            Flujo(pipeline(Counting()), store=store).resume("done")
        cut_journal(db, "done", 3)
        other = Pipeline([Step("only", Counting())], name="other")
        with pytest.raises(StoreError, match="another pipeline"):
            Flujo(other, store=store).resume("do")  # a prefix of the id is enough
        with RunStore(db) as elsewhere:
            assert elsewhere.claim("done")  # another process runs it now
            with pytest.raises(StoreError, match="being executed by another process"):
                Flujo(pipeline(Counting()), store=store).resume("done")
        assert Flujo(pipeline(Counting()), store=store).resume("done").success


def test_cancelling_a_stopped_run_calls_nothing(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    with RunStore(db) as store:
        Flujo(pipeline(Counting()), store=store).run("t", run_id="c")
    cut_journal(db, "c", 2)
    llm = Counting()
    with RunStore(db) as store:
        result = Flujo(pipeline(llm), store=store).resume("c", cancel="not needed any more")
        assert result.status == "cancelled" and result.outcome.message
        assert llm.calls == {}
        assert store.get("c").status == "cancelled"  # type: ignore[union-attr]


def test_a_cancel_requested_by_another_process_stops_a_live_run(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    slow = Counting(delay=60)
    outcome: dict[str, Any] = {}

    def run() -> None:
        with RunStore(db) as store:
            outcome["result"] = Flujo(Pipeline([Step("wait", slow)]), store=store).run(
                "t", run_id="live"
            )

    thread = threading.Thread(target=run)
    thread.start()
    with RunStore(db) as other:
        for _ in range(2000):  # bounded: the run shows up as soon as it starts
            record = other.get("live")
            if record is not None and slow.calls:
                break
            threading.Event().wait(0.01)
        assert other.owned_elsewhere("live")
        other.request_cancel("live", "stopped from another shell")
    thread.join(60)
    assert not thread.is_alive()
    result = outcome["result"]
    assert result.status == "cancelled"
    assert "stopped from another shell" in str(result.outcome.message)


def test_concurrent_runs_share_one_store(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            with RunStore(db) as store:
                for j in range(5):
                    assert (
                        Flujo(pipeline(Counting()), store=store).run(i, run_id=f"r{i}-{j}").success
                    )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    with RunStore(db) as store:
        records = store.list(limit=100)
        assert len(records) == 20 and {r.status for r in records} == {"succeeded"}


def test_a_foreign_or_corrupt_file_is_one_line_error_and_left_untouched(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database at all, but a user's file\n" * 200)
    before = garbage.read_bytes()
    with pytest.raises(StoreError) as info:
        RunStore(garbage)
    assert str(garbage) in str(info.value) and "\n" not in str(info.value)
    assert garbage.read_bytes() == before

    foreign = tmp_path / "app.db"
    db = sqlite3.connect(foreign)
    db.execute("CREATE TABLE customers(name TEXT)")
    db.execute("INSERT INTO customers VALUES ('ada')")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="not a Flujo run store"):
        RunStore(foreign)
    db = sqlite3.connect(foreign)
    assert db.execute("SELECT name FROM customers").fetchall() == [("ada",)]
    assert [r[0] for r in db.execute("SELECT name FROM sqlite_master")] == ["customers"]
    db.close()

    directory = tmp_path / "dir.db"
    directory.mkdir()
    with pytest.raises(StoreError, match="not a file"):
        RunStore(directory)


def test_open_store_reads_the_target_then_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FLUJO_STORE", raising=False)
    assert open_store("none") is None
    default = open_store(None)
    assert default is not None and default.path == Path(".flujo/runs.db")
    default.close()
    assert (tmp_path / ".flujo" / "runs.db").stat().st_mode & 0o077 == 0
    monkeypatch.setenv("FLUJO_STORE", str(tmp_path / "env.db"))
    chosen = open_store(None)
    assert chosen is not None and chosen.path == tmp_path / "env.db"
    chosen.close()
    monkeypatch.setenv("FLUJO_STORE", "NONE")
    assert open_store(None) is None
