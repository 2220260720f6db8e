"""Approval steps: the run waits for a person, embedded, and goes on with the answer.

The machine's part (pure: a wait is a command, an answer or a timeout an
event), the embedded executor's (the run stops holding a process while it
waits; answers and timeouts come through the run store), ``flujo approve`` /
``flujo reject`` as a user types them, and golden transcripts
(golden/approval/).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from flujo import AgentContext, AgentOutput, BaseAgent, Flujo, ParallelStep, Pipeline, Step
from flujo.domain.validation import check_pipeline
from flujo.engine import (
    ApprovalAnswered,
    ApprovalTimedOut,
    AwaitApproval,
    RunCancelled,
    RunStarted,
    StepSucceeded,
    advance,
    new_run,
)
from flujo.runtime.store import RunStore, StoreError
from flujo.spec.pipeline import PipelineSpec
from flujo.transcript.golden import compare, load_scenarios, stale_goldens

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "golden" / "approval"
SCENARIOS = load_scenarios(GOLDEN / "scenarios.yaml")


def spec(approval: dict[str, Any], **step: Any) -> PipelineSpec:
    return PipelineSpec.model_validate(
        {
            "steps": [
                {"name": "draft", "agent": "writer"},
                {"name": "review", "approval": approval, **step},
                {"name": "send", "agent": "mailer"},
            ]
        }
    )


def waiting(pipeline: PipelineSpec) -> Any:
    state = new_run(pipeline)
    state, _ = advance(state, RunStarted(input="x"))
    state, commands = advance(state, StepSucceeded(path="draft", output="the draft"))
    return state, commands


# --- the machine -------------------------------------------------------------------


def test_an_approval_step_is_a_command_and_its_answer_an_event() -> None:
    state, commands = waiting(spec({"message": "Send {{ previous_step }}?"}))
    (request,) = commands
    assert isinstance(request, AwaitApproval)
    assert (request.path, request.message, request.input) == (
        "review",
        "Send the draft?",
        "the draft",
    )
    assert state.awaiting == {"review": "Send the draft?"} and not state.running
    state, commands = advance(state, ApprovalAnswered(path="review", approved=True))
    assert [c.type for c in commands] == ["LaunchStep"]
    assert commands[0].input == "the draft"  # type: ignore[union-attr]
    assert state.steps["review"].output == "the draft" and not state.awaiting


def test_a_rejection_fails_the_step_and_a_late_answer_is_ignored() -> None:
    state, _ = waiting(spec({}))
    state, commands = advance(
        state, ApprovalAnswered(path="review", approved=False, reason="too long", by="ann")
    )
    assert state.outcome is not None and state.outcome.error_class == "rejected"
    assert state.outcome.message == "step review failed (rejected): rejected by ann: too long"
    ignored = state.ignored_events
    state, commands = advance(state, ApprovalAnswered(path="review", approved=True))
    assert commands == [] and state.ignored_events == ignored + 1


@pytest.mark.parametrize(
    ("on_timeout", "status", "error_class"),
    [("approve", "running", None), ("reject", "failed", "rejected"), ("fail", "failed", "timeout")],
)
def test_the_timeout_does_what_on_timeout_says(
    on_timeout: str, status: str, error_class: str | None
) -> None:
    state, _ = waiting(spec({"timeoutSeconds": 60, "onTimeout": on_timeout}))
    state, _ = advance(state, ApprovalTimedOut(path="review"))
    assert state.phase == status
    assert (state.outcome.error_class if state.outcome else None) == error_class


def test_cancelling_a_waiting_run_withdraws_the_wait() -> None:
    state, _ = waiting(spec({}))
    state, _ = advance(state, RunCancelled(reason="stop"))
    assert state.phase == "cancelled" and not state.awaiting
    assert state.steps["review"].phase == "cancelled"


def test_a_bad_message_template_is_a_finding_and_approval_has_no_retry() -> None:
    findings = check_pipeline(spec({"message": "Send {{ nosuch }}?"}))
    assert any("approval" in str(f.loc) for f in findings)
    with pytest.raises(ValueError, match="approval step has no retry"):
        spec({}, retry={"maxAttempts": 2})


# --- embedded ------------------------------------------------------------------------


class Slow(BaseAgent):
    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    async def run(self, data: Any, context: AgentContext) -> AgentOutput:
        self.started.set()
        for _ in range(6000):  # bounded: released by the test as soon as it answered
            if self.release.is_set():
                break
            await asyncio.sleep(0.01)
        return AgentOutput(f"slow({data})")


def publish() -> Pipeline:
    return Pipeline(
        [
            Step("draft", "builtin.upper"),
            Step.approval("review", message="Send {{ previous_step }}?", schema={"type": "string"}),
            Step("send", "builtin.lower"),
        ],
        name="publish",
    )


def test_the_run_stops_while_it_waits_and_resumes_with_the_answer(tmp_path: Path) -> None:
    with RunStore(tmp_path / "runs.db") as store:
        runner = Flujo(publish(), store=store)
        result = runner.run("hello", run_id="r")
        assert result.status == "awaiting approval" and result.outcome.path == "review"
        assert store.get("r").status == "awaiting approval"  # type: ignore[union-attr]
        assert not store.owned_elsewhere("r")  # no process holds it while it waits
        with pytest.raises(StoreError, match="does not fit step review's schema"):
            runner.answer("r", approved=True, input=42)
        assert runner.answer("r", approved=True, input="Edited", by="ann") == "review"
        done = runner.resume("r")
        assert done.success and done.output == "edited"
        assert store.answers("r")[0]["by"] == "ann"  # the record of the decision stays


def test_an_answer_reaches_the_process_still_running_the_run(tmp_path: Path) -> None:
    slow = Slow()
    pipeline = Pipeline(
        [
            ParallelStep(
                "both",
                {
                    "ask": [Step.approval("review", message="ok?")],
                    "work": [Step("long", slow)],
                },
            )
        ],
        name="both",
    )
    db = tmp_path / "runs.db"
    out: dict[str, Any] = {}

    def run() -> None:
        with RunStore(db) as store:
            out["result"] = Flujo(pipeline, store=store).run("in", run_id="live")

    thread = threading.Thread(target=run)
    thread.start()
    assert slow.started.wait(60)
    with RunStore(db) as store:
        assert store.owned_elsewhere("live")
        Flujo(pipeline, store=store).answer("live", approved=True, input="yes")
        for _ in range(6000):  # bounded: the live process looks once a second
            if any(isinstance(e, ApprovalAnswered) for e, _ in store.entries("live")):
                break
            threading.Event().wait(0.01)
    slow.release.set()
    thread.join(60)
    result = out["result"]
    assert result.success and result.output == {"ask": "yes", "work": "slow(in)"}


def test_a_timeout_passes_on_the_executors_clock(tmp_path: Path) -> None:
    pipeline = Pipeline([Step.approval("review", timeout=30, on_timeout="approve")], name="t")
    with RunStore(tmp_path / "runs.db") as store:
        runner = Flujo(pipeline, store=store)
        now = [1000.0]
        runner.clock = lambda: now[0]
        assert runner.run("in", run_id="t").status == "awaiting approval"
        now[0] += 29
        assert runner.resume("t").status == "awaiting approval"
        now[0] += 2
        result = runner.resume("t")
        assert result.success and result.output == "in"
        assert any(isinstance(e, ApprovalTimedOut) for e in result.events)


# --- the commands ----------------------------------------------------------------------


PIPELINE = """
apiVersion: flujo.dev/v1alpha1
kind: Pipeline
metadata: {name: publish}
spec:
  steps:
    - {name: draft, agent: builtin.upper}
    - name: review
      approval: {message: "Publish {{ previous_step }}?", schema: {type: string}}
    - {name: send, agent: builtin.lower}
"""


def flujo(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUJO_")}
    return subprocess.run(
        [sys.executable, "-m", "flujo", *args, "--store", str(tmp_path / "runs.db")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )


def test_flujo_approve_and_reject_from_another_shell(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(PIPELINE)
    started = flujo(tmp_path, "run", "p.yaml", "--input", "hi", "--run-id", "one")
    assert started.returncode == 0 and started.stdout == ""
    assert "run one awaits approval of review: Publish HI?" in started.stderr
    assert "flujo approve one" in started.stderr
    listed = flujo(tmp_path, "runs", "list")
    assert "awaiting approval" in listed.stdout
    bad = flujo(tmp_path, "approve", "one", "--input-json", "[1]")
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "error: the answer's input does not fit step review's schema: [1] is not of type 'string'"
    ]
    approved = flujo(tmp_path, "approve", "one", "--input", "Edited", "--by", "ann")
    assert approved.returncode == 0, approved.stderr
    assert approved.stdout == "edited\n"

    flujo(tmp_path, "run", "p.yaml", "--input", "hi", "--run-id", "two")
    rejected = flujo(tmp_path, "reject", "two", "--reason", "not now", "--by", "bob")
    assert rejected.returncode == 1
    assert "rejected by bob: not now" in rejected.stderr
    shown = flujo(tmp_path, "runs", "show", "two", "--transcript")
    assert "[3] ApprovalAnswered review rejected by bob" in shown.stdout
    again = flujo(tmp_path, "approve", "two")
    assert again.returncode == 2 and "run two has failed already" in again.stderr


# --- golden transcripts ---------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_approval_transcript_matches_golden(scenario: Any, request: pytest.FixtureRequest) -> None:
    comparison = compare(scenario, GOLDEN)
    if comparison.unmet:
        pytest.fail(comparison.report(), pytrace=False)
    if request.config.getoption("--update-goldens", default=False):
        if comparison.changed:
            comparison.write()
        return
    if comparison.changed:
        pytest.fail(
            comparison.report()
            + "\n\nIf the change is intended: pytest tests/test_approval.py --update-goldens",
            pytrace=False,
        )


def test_no_stale_approval_goldens() -> None:
    assert stale_goldens(SCENARIOS, GOLDEN) == []
