"""Crash safety, embedded: ``flujo run`` SIGKILLed at random moments and resumed.

A 20-step pipeline with a loop and a parallel step calls a real (local)
OpenAI-compatible endpoint.  Every launch of ``flujo`` (the first ``flujo run``,
then ``flujo resume``) is killed with SIGKILL, 20 times, then a last resume
finishes the run.

- ``test_kills_during_calls_…``: each kill lands while a call is in flight at
  the server (the k-th request of that launch, k random, is held).  The
  endpoint must see exactly one successful call per step launch, and the
  transcript must equal an uninterrupted run's.
- ``test_kills_at_any_moment_…``: each kill lands as soon as the journal has
  grown by a random number of rows, wherever the process is then (mid-call,
  mid-commit, between steps).  A call whose result the journal holds is never
  made again, and the transcript still equals an uninterrupted run's.

Waits are bounded and driven by what the server and the store show, never by
sleeping a guessed time.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.servers import OpenAIServer, RecordedRequest, Reply, completion

pytestmark = pytest.mark.timeout(1800)

KILLS = 20
RUN_ID = "chaos"
WAIT_S = 120.0
"""Bound on any one wait: a process start, a request, a journal commit (machine-load proof)."""
LLM_STEPS = 17


def manifests(endpoint: str) -> str:
    head = "\n".join(
        f"    - {{name: s{i}, agent: llm, input: 'step s{i}: {{{{ previous_step }}}}'}}"
        for i in range(1, 6)
    )
    tail = "\n".join(
        f"    - {{name: t{i}, agent: llm, input: 'step t{i}: {{{{ previous_step }}}}'}}"
        for i in range(1, 6)
    )
    branches = "\n".join(
        f"          - name: {b}\n            steps:\n"
        f"              - {{name: review-{b}, agent: llm, input: 'review {b}: {{{{ input }}}}'}}"
        for b in ("style", "facts", "tone", "length")
    )
    return f"""
apiVersion: flujo.dev/v1alpha1
kind: Agent
metadata: {{name: llm}}
spec:
  type: openai
  model: chaos-model
  endpoint: {endpoint}
  pricing: {{inputPer1k: 0.001, outputPer1k: 0.002}}
  rateLimit: {{maxConcurrent: 1}}
---
apiVersion: flujo.dev/v1alpha1
kind: Pipeline
metadata: {{name: chaos}}
spec:
  steps:
{head}
    - name: refine
      loop:
        maxIterations: 3
        exitWhen: "iteration >= 3"
        steps:
          - {{name: draft, agent: llm, input: "round {{{{ iteration }}}}: {{{{ previous_step }}}}"}}
          - {{name: tidy, agent: builtin.strip}}
    - name: review
      parallel:
        branches:
{branches}
{tail}
"""


def _flujo(store: Path, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLUJO_", "OPENAI_"))}
    env["OPENAI_API_KEY"] = "test-key"
    return subprocess.Popen(
        [sys.executable, "-m", "flujo", *args, "--store", str(store)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _launch(store: Path, pipeline: Path, first: bool) -> subprocess.Popen[str]:
    if first:
        return _flujo(store, "run", str(pipeline), "--input", "rivers", "--run-id", RUN_ID)
    return _flujo(store, "resume", RUN_ID)


def _wait(predicate: Callable[[], bool], what: str, proc: subprocess.Popen[str]) -> bool:
    """True once ``predicate`` holds; False if the process ended first."""
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        if proc.poll() is not None:
            return False
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.01)
    return True


def _kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=WAIT_S)  # reaped: its run lock is gone with it


def _journal(store: Path) -> list[tuple[str, str]]:
    """(type, path) of every committed journal row, read as another process would."""
    if not store.exists():
        return []
    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=WAIT_S)
    try:
        rows = db.execute(
            "SELECT e, p FROM journal WHERE run = ? ORDER BY seq", (RUN_ID,)
        ).fetchall()
    except sqlite3.OperationalError:  # the tables are not created yet
        return []
    finally:
        db.close()
    return [(_type(bytes(e)), p or "") for e, p in rows]


def _type(data: bytes) -> str:
    start = data.index(b'"type":"') + 8
    return data[start : data.index(b'"', start)].decode()


def _recorded_llm(store: Path) -> list[str]:
    return [p for t, p in _journal(store) if t == "StepSucceeded" and not p.endswith("tidy")]


def _prompt(request: RecordedRequest) -> str:
    return str(request.body["messages"][-1]["content"])


def _reference(tmp_path: Path, pipeline: Path, server: OpenAIServer) -> tuple[str, Counter[str]]:
    """An uninterrupted run: its transcript, and the prompts the server answered."""
    transcript = tmp_path / "reference.txt"
    proc = _flujo(
        tmp_path / "reference.db", "run", str(pipeline), "--input", "rivers",
        "--transcript", str(transcript),
    )  # fmt: skip
    _, err = proc.communicate(timeout=WAIT_S * 2)
    assert proc.returncode == 0, err
    answered = Counter(_prompt(r) for r in server.requests if r.status == 200)
    assert sum(answered.values()) == LLM_STEPS
    server.reset()
    return transcript.read_text(), answered


def _finish(store: Path, *, resume: bool = True) -> str:
    if resume:
        proc = _flujo(store, "resume", RUN_ID)
        _, err = proc.communicate(timeout=WAIT_S * 2)
        assert proc.returncode == 0, err
    shown = _flujo(store, "runs", "show", RUN_ID, "--transcript")
    text, err = shown.communicate(timeout=WAIT_S)
    assert shown.returncode == 0, err
    return text


def test_kills_during_calls_leave_exactly_one_successful_call_per_launch(
    tmp_path: Path,
) -> None:
    rng = random.Random(20261203)
    held: set[int] = set()

    def answer(request: RecordedRequest) -> Reply:
        index = len(server.requests)  # this request is recorded already: 1-based
        if index in held:
            return completion("never sent", delay=3600)
        return completion(f"ok: {_prompt(request)}")

    with OpenAIServer(responder=answer) as server:
        pipeline = tmp_path / "chaos.yaml"
        pipeline.write_text(manifests(server.base_url))
        expected, answered = _reference(tmp_path, pipeline, server)
        store = tmp_path / "runs.db"
        kills = 0
        first = True
        while kills < KILLS:
            before = server.calls
            target = before + rng.choice([1, 1, 1, 2, 2, 3])  # this launch's k-th request
            held.add(target)
            proc = _launch(store, pipeline, first)
            first = False
            pending = _wait(
                lambda t=target: server.calls >= t and server.requests[t - 1].outcome == "pending",
                f"request {target}",
                proc,
            )
            assert pending, f"the run ended before request {target}: {proc.communicate()}"
            # Every answer given so far is committed before the kill (none may be lost
            # between the answer and the journal: that would be a second, paid call).
            assert _wait(
                lambda: len(_recorded_llm(store)) == server.successful, "the journal", proc
            )
            _kill(proc)
            kills += 1
            assert server.wait_until(lambda t=target: server.requests[t - 1].outcome != "pending")
        held.clear()
        transcript = _finish(store)
    successful = Counter(_prompt(r) for r in server.requests if r.status == 200)
    assert successful == answered  # exactly one successful call per step launch
    assert sum(1 for r in server.requests if r.outcome == "cancelled") == KILLS
    assert transcript == expected


def test_kills_at_any_moment_never_repeat_a_recorded_call(tmp_path: Path) -> None:
    rng = random.Random(7)

    def answer(request: RecordedRequest) -> Reply:
        return completion(f"ok: {_prompt(request)}", delay=rng.uniform(0.0, 0.05))

    with OpenAIServer(responder=answer) as server:
        pipeline = tmp_path / "chaos.yaml"
        pipeline.write_text(manifests(server.base_url))
        expected, _ = _reference(tmp_path, pipeline, server)
        store = tmp_path / "runs.db"
        kills: list[tuple[int, set[str]]] = []  # (requests made before, steps recorded)
        first, finished = True, False
        while len(kills) < KILLS:
            rows, calls = len(_journal(store)), server.calls
            proc = _launch(store, pipeline, first)
            first = False
            if rng.random() < 0.5:  # as soon as the journal grows, wherever the run is then
                landed = _wait(lambda r=rows: len(_journal(store)) > r, "a commit", proc)
            else:  # as soon as a call arrives: before, during or after its answer and commit
                landed = _wait(lambda c=calls: server.calls > c, "a call", proc)
            if not landed:
                _, err = proc.communicate(timeout=WAIT_S)
                assert proc.returncode == 0, err
                finished = True  # the run finished before this kill: nothing left to interrupt
                break
            _kill(proc)
            kills.append((server.calls, set(_recorded_llm(store))))
        transcript = _finish(store, resume=not finished)
        requests = server.requests
    assert len(kills) == KILLS, f"only {len(kills)} kills landed before the run finished"
    for made, recorded in kills:
        again = [p for r in requests[made:] if (p := _step_path(_prompt(r))) in recorded]
        assert not again, f"steps recorded before a kill were called again: {again}"
    assert transcript == expected


def _step_path(prompt: str) -> str:
    """The step path a prompt belongs to: ``step s3: …`` → ``s3``, ``round 2: …`` → …"""
    kind, _, name = prompt.split(":", 1)[0].partition(" ")
    if kind == "review":
        return f"review/{name}/review-{name}"
    if kind == "round":
        return f"refine/iter-{name}/draft"
    return name
