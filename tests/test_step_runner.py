"""The step-runner and its result envelope: what a step pod does and reports."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from flujo.domain.usage import Usage
from flujo.engine import LaunchStep, StepFailed, StepSucceeded
from flujo.runtime.envelope import (
    MAX_ENVELOPE_BYTES,
    EnvelopeError,
    decode_result,
    encode_result,
    inline_result,
)

from tests.servers import OpenAIServer, completion


def test_a_one_mib_output_round_trips_byte_for_byte() -> None:
    output = "".join(chr(0x20 + (i * 7919) % 0x2FFF) for i in range(1 << 20))
    event = StepSucceeded(
        path="loop/iter-3/a", attempt=2, output=output, usage=Usage(input_tokens=5, cost_usd=0.25)
    )
    message, log = encode_result(event)
    assert len(message.encode()) <= MAX_ENVELOPE_BYTES
    noisy = "some warning\n" + log + "trailing noise\n"
    back = decode_result(message, noisy)
    assert isinstance(back, StepSucceeded)
    assert back.output == output and back.usage == event.usage and back.attempt == 2


def test_tampered_or_truncated_logs_are_rejected() -> None:
    message, log = encode_result(StepSucceeded(path="a", output={"k": "v" * 1000}))
    lines = log.splitlines()
    with pytest.raises(EnvelopeError, match="digest"):
        decode_result(message, "\n".join([lines[0], lines[2], *lines[1:2], *lines[3:]]))
    with pytest.raises(EnvelopeError, match="no complete"):
        decode_result(message, "\n".join(lines[:-1]))
    with pytest.raises(EnvelopeError, match="not a Flujo result envelope"):
        decode_result("OOMKilled", log)


def test_a_small_result_travels_whole_in_the_envelope() -> None:
    """No log read for small results; the digest still guards the inline body."""
    event = StepSucceeded(path="a", attempt=3, output={"label": "spam"}, usage=Usage(cost_usd=0.1))
    message, log = encode_result(event)
    assert len(message.encode()) <= MAX_ENVELOPE_BYTES
    assert inline_result(message) == event == decode_result(message, log)
    envelope = json.loads(message)
    envelope["body"] = base64.b64encode(b'{"type":"StepSucceeded","path":"a"}').decode()
    with pytest.raises(EnvelopeError, match="digest"):
        inline_result(json.dumps(envelope))
    big, _ = encode_result(StepSucceeded(path="a", output="x" * 5000))
    assert inline_result(big) is None  # only in the log


def test_failures_carry_class_and_usage_in_the_envelope() -> None:
    event = StepFailed(
        path="a",
        error_class="rate_limited",
        message="slow down " * 500,
        usage=Usage(input_tokens=3),
        retry_after=2.5,
    )
    message, log = encode_result(event)
    envelope = json.loads(message)
    assert envelope["errorClass"] == "rate_limited" and envelope["usage"]["inputTokens"] == 3
    assert len(message.encode()) <= MAX_ENVELOPE_BYTES
    assert decode_result(message, log) == event


def run_step(tmp_path: Path, document: dict, env: dict | None = None) -> tuple[int, str, str]:
    launch = tmp_path / "launch.json"
    launch.write_text(json.dumps(document))
    term = tmp_path / "termination-log"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "flujo",
            "step-run",
            "--launch",
            str(launch),
            "--termination-log",
            str(term),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )
    return proc.returncode, term.read_text() if term.exists() else "", proc.stdout + proc.stderr


def launch(agent: str, data: object) -> dict:
    return LaunchStep(
        path="fan/b/s", step="s", agent=agent, input=data, attempt=1, call_index=1
    ).model_dump(mode="json")


def test_step_run_calls_a_scripted_agent(tmp_path: Path) -> None:
    code, message, log = run_step(
        tmp_path,
        {
            "run": "r1",
            "launch": launch("bot", "hi"),
            "agent": {
                "type": "scripted",
                "responses": [
                    {"output": "first"},
                    {"output": {"second": True}, "usage": {"outputTokens": 4}},
                ],
            },
        },
    )
    assert code == 0
    event = decode_result(message, log)
    assert event == StepSucceeded(
        path="fan/b/s", output={"second": True}, usage=Usage(output_tokens=4)
    )


def test_step_run_reports_classified_failures_with_exit_3(tmp_path: Path) -> None:
    code, message, log = run_step(tmp_path, {"run": "r1", "launch": launch("nobody", "x")})
    assert code == 3
    event = decode_result(message, log)
    assert isinstance(event, StepFailed) and event.error_class == "config"


def test_step_run_calls_an_openai_endpoint_with_a_secret_from_env(
    tmp_path: Path, openai_server: OpenAIServer
) -> None:
    openai_server.script(completion("pong", prompt_tokens=7, completion_tokens=2))
    agent = {
        "type": "openai",
        "model": "m",
        "endpoint": openai_server.base_url,
        "apiKey": {"secretKeyRef": {"name": "llm-creds", "key": "api-key"}},
        "pricing": {"inputPer1k": 1.0, "outputPer1k": 1.0},
    }
    code, message, log = run_step(
        tmp_path,
        {"run": "r1", "launch": launch("llm", "ping"), "agent": agent},
        env={"FLUJO_SECRET_LLM_CREDS_API_KEY": "sk-pod"},
    )
    assert code == 0
    event = decode_result(message, log)
    assert isinstance(event, StepSucceeded) and event.output == "pong"
    assert event.usage == Usage(input_tokens=7, output_tokens=2, cost_usd=0.009)
    assert openai_server.requests[0].headers["Authorization"] == "Bearer sk-pod"
    assert "sk-pod" not in message + log


def test_a_bad_launch_document_is_a_one_line_error(tmp_path: Path) -> None:
    code, message, out = run_step(tmp_path, {"launch": {}})
    assert code == 2 and message == ""
    assert out.startswith("error: ") and "Traceback" not in out
