"""The warm step runner (``flujo runner``) on its own: launches over HTTP, deduplicated by
(path, attempt), run concurrently, governed as a step pod's are."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from flujo.engine import LaunchStep

from tests.servers import OpenAIServer, completion


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def document(path: str, name: str, value: Any, attempt: int = 1, **extra: Any) -> dict[str, Any]:
    launch = LaunchStep(path=path, step=path.rsplit("/", 1)[-1], agent=name, input=value)
    launch = launch.model_copy(update={"attempt": attempt})
    return {"run": "r", "launch": launch.model_dump(mode="json"), **extra}


class Runner:
    """``flujo runner`` as a subprocess on a free port, with a token."""

    def __init__(self, tmp_path: Path) -> None:
        self.port = _free_port()
        self.token = "s3cret-token"
        env = {
            **os.environ,
            "FLUJO_RUNNER_TOKEN": self.token,
            "FLUJO_RUNNER_IDLE_SECONDS": "0",
        }
        self.log = (tmp_path / "runner.log").open("wb")
        flujo = str(Path(sys.executable).parent / "flujo")
        self.process = subprocess.Popen(
            [flujo, "runner", "--host", "127.0.0.1", "--port", str(self.port)],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{self.url}/healthz", timeout=1)
                return
            except httpx.TransportError:
                time.sleep(0.05)
        raise AssertionError("the runner did not start listening")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def post(self, target: str, data: Any, token: str | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token or self.token}"}
        return httpx.post(f"{self.url}{target}", json=data, headers=headers, timeout=60)

    def stop(self) -> int:
        self.post("/shutdown", {})
        code = self.process.wait(30)
        self.log.close()
        return code


def test_launches_are_answered_once_per_path_and_attempt(tmp_path: Path) -> None:
    runner = Runner(tmp_path)
    try:
        first = runner.post("/launch", {"document": document("a", "builtin.upper", "hi")})
        assert first.status_code == 200
        assert json.loads(first.content)["output"] == "HI"
        again = runner.post("/launch", {"document": document("a", "builtin.upper", "other")})
        assert again.content == first.content  # answered from memory, never called again
        retry = runner.post("/launch", {"document": document("a", "builtin.upper", "x", 2)})
        again_later = json.loads(retry.content)
        assert again_later["output"] == "X" and again_later["attempt"] == 2
        refused = runner.post("/launch", {"document": document("b", "builtin.upper", "hi")}, "bad")
        assert refused.status_code == 401
    finally:
        assert runner.stop() == 0


def test_concurrent_launches_run_together_and_a_rejoined_one_calls_once(tmp_path: Path) -> None:
    answered: list[int] = []
    seen_answered: list[int] = []
    gate = threading.Event()

    def answer(request: Any) -> Any:
        # A streamed answer is held after its first text until the gate opens, and the
        # gate opens when the fifth call arrives: launches run one after another would
        # have answered (after the server's 30 s hold) before the next call arrived.
        seen_answered.append(len(answered))
        if len(seen_answered) == 5:
            gate.set()
        return completion("ok", gate=gate)

    with OpenAIServer(responder=answer) as server:
        agent = {"type": "openai", "model": "m", "endpoint": server.base_url, "stream": True}
        runner = Runner(tmp_path)
        try:

            async def fan_out() -> list[httpx.Response]:
                async with httpx.AsyncClient(timeout=120) as client:
                    headers = {"Authorization": f"Bearer {runner.token}"}

                    async def send(i: int) -> httpx.Response:
                        doc = document(f"fan/b{i % 5}/ask", "llm", f"q{i}", agent=agent)
                        got = await client.post(
                            f"{runner.url}/launch", json={"document": doc}, headers=headers
                        )
                        answered.append(i)
                        return got

                    # 10 requests for 5 launches: each launch is sent twice, as a restarted
                    # operator re-sends the launches it had in flight
                    return list(await asyncio.gather(*(send(i) for i in range(10))))

            answers = asyncio.run(fan_out())
            assert all(a.status_code == 200 for a in answers)
            assert {json.loads(a.content)["type"] for a in answers} == {"StepSucceeded"}
            assert len(seen_answered) == 5  # one call per (path, attempt)
            assert seen_answered == [0] * 5  # all five were in flight together
        finally:
            assert runner.stop() == 0


def test_the_runner_rechecks_the_security_policy(tmp_path: Path) -> None:
    from flujo.security.policy import PolicyConfig

    # the cluster profile refuses plain http and loopback
    policy = PolicyConfig(profile="cluster").policy("default").model_dump(mode="json")
    agent = {"type": "openai", "model": "m", "endpoint": "http://127.0.0.1:9/v1"}
    runner = Runner(tmp_path)
    try:
        doc = document("ask", "llm", "q", agent=agent, policy=policy)
        answer = json.loads(runner.post("/launch", {"document": doc}).content)
        assert answer["type"] == "StepFailed", answer
        assert answer["error_class"] not in ("transient", "timeout"), answer  # refused, not tried
        assert "loopback" in answer["message"] or "https" in answer["message"], answer
    finally:
        assert runner.stop() == 0
