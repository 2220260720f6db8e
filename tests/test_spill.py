"""Large outputs are spilled to the run's result store; nothing outlives a run.

No timings or RSS here (see ``benchmarks/memory.py``): these tests check the
structure — what is held in memory, what is on disk, that reading back gives
the same events and the same transcript, and that files, tasks and
connections are released.
"""

from __future__ import annotations

import asyncio
import gc
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from flujo import AgentManifest, AgentRegistry, Flujo, LoopStep, ParallelStep, Pipeline, Step
from flujo.cli.app import _json_chunks
from flujo.engine import RunStarted, StepFailed, StepSucceeded
from flujo.engine.machine import KEEP_ITERATIONS
from flujo.runtime.envelope import MAX_ENVELOPE_BYTES
from flujo.runtime.results import (
    DEFAULT_SPILL_BYTES,
    SPILL_BYTES_ENV,
    EventLog,
    ResultStore,
    ResultStoreClosedError,
    spill_threshold,
)
from flujo.transcript import iter_transcript, transcript_of
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.servers import OpenAIServer, completion

ROOT = Path(__file__).resolve().parent.parent
BLOB = 10 * 1024


def big(x: Any) -> dict[str, Any]:
    n = x["n"] if isinstance(x, dict) else 0
    return {"n": n + 1, "blob": f"{n:08d}" + "x" * BLOB}


def big_loop(iterations: int, **kwargs: Any) -> Flujo:
    loop = LoopStep(
        "loop",
        body=Step("big", agent=big),
        exit_when=f"output.n >= {iterations}",
        max_iterations=iterations,
    )
    return Flujo(Pipeline([loop]), **kwargs)


def _log(result: Any) -> EventLog:
    assert isinstance(result.events, EventLog)
    return result.events


def _inline_large(log: EventLog) -> int:
    """Events of the log holding a large output in memory (not through the store)."""
    return sum(
        1
        for item in log._items
        if isinstance(item, StepSucceeded) and len(json.dumps(item.output)) > DEFAULT_SPILL_BYTES
    )


# -- the 10,000-iteration loop ------------------------------------------------


def test_a_10000_iteration_loop_of_10_kib_outputs_keeps_them_out_of_memory() -> None:
    result = big_loop(10_000).run(0)
    assert result.success and result.output["n"] == 10_000
    log = _log(result)
    assert len(log) == 10_001  # RunStarted + one StepSucceeded per iteration
    assert log.spilled == 10_000 and _inline_large(log) == 0
    assert log.store.values == 10_000 and log.store.size > 10_000 * BLOB
    # the state keeps the last iterations only (the machine's own bound)
    agents = [s for s in result.steps.values() if s.kind == "agent"]
    assert len(agents) == KEEP_ITERATIONS
    # reading back gives every output, in order
    last = log[-1]
    assert isinstance(last, StepSucceeded) and last.output == result.output
    ns = [e.output["n"] for e in result.iter_events() if isinstance(e, StepSucceeded)]
    assert ns == list(range(1, 10_001))

    file = log.store.file
    assert file is not None and not file.closed
    result.close()
    assert file.closed and log.store.closed
    result.close()  # idempotent
    assert result.output["n"] == 10_000 and result.success  # outcome and state stay
    with pytest.raises(ResultStoreClosedError, match="closed"):
        _ = log[1]
    assert isinstance(log[0], RunStarted)  # inline events still read


def test_spilled_events_resolve_to_the_events_of_an_unspilled_run() -> None:
    iterations = KEEP_ITERATIONS + 50  # past the machine's window of kept iterations
    spilled = big_loop(iterations).run(0)
    inline = big_loop(iterations, spill_bytes=0).run(0)
    assert _log(spilled).spilled == iterations
    assert _log(inline).spilled == 0 and _log(inline).store.file is None
    assert _inline_large(_log(inline)) == iterations
    assert list(spilled.events) == list(inline.events)
    assert spilled.events == inline.events  # Sequence equality, both ways
    assert list(inline.events) == spilled.events
    assert spilled.events[5:8] == inline.events[5:8]
    assert spilled.to_dict() == inline.to_dict()
    assert spilled.to_dict(events=False)["events"] == []
    text = transcript_of(spilled, name="big")
    assert text == transcript_of(inline, name="big")
    state = spilled.state
    lines = list(iter_transcript(state.pipeline, spilled.iter_events(), state.limits, name="big"))
    assert all(line.endswith("\n") and "\n" not in line[:-1] for line in lines)
    assert "".join(lines) == text
    spilled.close()


def test_identical_outputs_are_stored_once() -> None:
    same = "y" * BLOB
    loop = LoopStep(
        "loop",
        body=Step("same", agent=lambda _: same),
        max_iterations=20,
        on_max_iterations="succeed",
    )
    with Flujo(Pipeline([loop])).run(0) as result:
        log = _log(result)
        assert log.spilled == 20 and log.store.spills == 20
        assert log.store.values == 1 and log.store.size == BLOB + 2
        assert all(e.output == same for e in result.events if isinstance(e, StepSucceeded))
    assert log.store.closed  # the context manager closed it


def test_a_garbage_collected_result_closes_its_store() -> None:
    result = big_loop(3).run(0)
    file = _log(result).store.file
    assert file is not None and not file.closed
    del result
    gc.collect()
    assert file.closed


def test_parallel_branches_spill_and_a_failed_run_keeps_its_events() -> None:
    def boom(_: Any) -> Any:
        raise ValueError("no")

    p = Pipeline(
        [
            Step("first", agent=big),
            ParallelStep("p", {"a": Step("a", agent=big), "b": Step("b", agent=big)}),
            Step("last", agent=boom),
        ]
    )
    result = Flujo(p).run(0)
    assert result.status == "failed"
    log = _log(result)
    assert log.spilled == 3
    assert isinstance(log[-1], StepFailed)
    unspilled = Flujo(p, spill_bytes=0).run(0)
    assert transcript_of(result) == transcript_of(unspilled)
    assert result.to_dict() == unspilled.to_dict()


# -- what spills ----------------------------------------------------------------


def test_threshold_defaults_to_the_envelope_limit_and_reads_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(SPILL_BYTES_ENV, raising=False)
    assert spill_threshold() == DEFAULT_SPILL_BYTES == MAX_ENVELOPE_BYTES == 4096
    assert spill_threshold(10) == 10
    monkeypatch.setenv(SPILL_BYTES_ENV, "0")
    assert spill_threshold() == 0
    assert _log(big_loop(3).run(0)).spilled == 0  # 0: spilling off
    assert _log(big_loop(3, spill_bytes=100).run(0)).spilled == 3  # the argument wins
    monkeypatch.setenv(SPILL_BYTES_ENV, "lots")
    with pytest.raises(ValueError, match=SPILL_BYTES_ENV):
        spill_threshold()
    with pytest.raises(ValueError, match=">= 0"):
        Flujo(Pipeline([Step("s", agent=big)]), spill_bytes=-1)


class Text(str):
    pass


@pytest.mark.parametrize(
    "value",
    [
        ("x",) * 5000,  # a tuple would come back as a list
        Text("x" * 5000),  # a str subclass as a str
        {1: "x" * 5000},  # an int key as a str
        [b"x" * 5000],  # not JSON at all
        10**5000,  # too many digits for int()/str()
    ],
    ids=["tuple", "str-subclass", "int-key", "bytes", "huge-int"],
)
def test_values_a_json_round_trip_would_change_stay_in_memory(value: Any) -> None:
    assert ResultStore(16).put(value) is None


def test_a_container_reached_twice_stays_in_memory() -> None:
    shared = ["x" * 5000]
    assert ResultStore(16).put([shared, shared]) is None
    cyclic: list[Any] = ["x" * 5000]
    cyclic.append(cyclic)
    assert ResultStore(16).put(cyclic) is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=8), children, max_size=6)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(value=json_values, limit=st.integers(1, 400))
def test_a_json_value_spills_exactly_when_its_json_text_exceeds_the_threshold(
    value: Any, limit: int
) -> None:
    store = ResultStore(limit)
    size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())
    ref = store.put(value)
    scalar = value is None or isinstance(value, bool | int | float)
    assert (ref is not None) == (size > limit and not scalar)  # numbers are never spilled
    if ref is not None:
        assert ref.size == size
        back = store.get(ref)
        assert back == value and json.dumps(back) == json.dumps(value)
    store.close()


def test_small_values_never_touch_the_file() -> None:
    store = ResultStore()
    for value in (None, True, 3, 2.5, "short", {"a": [1, 2, "three"]}, "é" * 600):
        assert store.put(value) is None
    assert store.file is None and store.spills == 0
    assert ResultStore(0).put("x" * 100_000) is None  # disabled


# -- flujo run --json streams the event log ------------------------------------


def test_the_json_result_is_written_event_by_event_with_the_same_text() -> None:
    result = big_loop(5, spill_bytes=100).run(0)
    data = result.to_dict()
    data["pipelineName"] = "p"
    expected = json.dumps(data, ensure_ascii=False, indent=2, default=str)
    head = result.to_dict(events=False)
    head["pipelineName"] = "p"
    events = (e.model_dump(mode="json") for e in result.iter_events())
    assert "".join(_json_chunks(head, {"events": events})) == expected
    for shape in ({}, {"a": []}, {"a": [], "b": {"c": "line\nbreak"}}, {"a": [{}, [1]]}):
        streamed = {"a": iter(shape.get("a", []))} if "a" in shape else {}
        assert "".join(_json_chunks(shape, streamed)) == json.dumps(shape, indent=2)


# -- nothing outlives a run -------------------------------------------------------


def test_a_run_of_a_remote_agent_leaves_no_task_and_no_connection(
    openai_server: OpenAIServer,
) -> None:
    answer = "z" * 6000  # spilled: the chat answer's text is over 4 KiB
    openai_server.script(*[completion(answer, delay=0.01) for _ in range(4)])
    registry = AgentRegistry()
    registry.register_manifest(
        AgentManifest.model_validate(
            {
                "apiVersion": "flujo.dev/v1alpha1",
                "kind": "Agent",
                "metadata": {"name": "llm"},
                "spec": {"type": "openai", "model": "m", "endpoint": openai_server.base_url},
            }
        )
    )
    p = Pipeline(
        [
            ParallelStep("p", {"a": Step("a", "llm"), "b": Step("b", "llm")}),
            LoopStep(
                "again", body=Step("ask", "llm"), max_iterations=2, on_max_iterations="succeed"
            ),
        ]
    )

    async def main() -> tuple[Any, set[asyncio.Task[Any]]]:
        before = asyncio.all_tasks()
        result = await Flujo(p, agent_registry=registry).run_async("q")
        return result, asyncio.all_tasks() - before

    result, leftover = asyncio.run(asyncio.wait_for(main(), 30))
    assert result.success and result.output == answer
    assert leftover == set()
    assert openai_server.calls == 4
    assert openai_server.wait_until(lambda: openai_server.open_connections == 0)
    assert _log(result).spilled == 4 and _log(result).store.values == 1
    result.close()


def test_flujo_run_prints_the_same_json_and_transcript_with_and_without_spilling(
    tmp_path: Path,
) -> None:
    text = "spill me " * 700  # over 4 KiB: the first two steps' outputs spill
    outputs = []
    for spill in ("4096", "0"):
        transcript = tmp_path / f"t{spill}.txt"
        proc = subprocess.run(
            [
                *(sys.executable, "-m", "flujo", "run", str(ROOT / "examples" / "linear.yaml")),
                *("--input", text, "--json", "--spill-bytes", spill),
                *("--transcript", str(transcript)),
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        outputs.append((proc.stdout, transcript.read_text(encoding="utf-8")))
    assert outputs[0] == outputs[1]
    data = json.loads(outputs[0][0])
    assert data["events"][2]["output"] == text.strip().upper()
