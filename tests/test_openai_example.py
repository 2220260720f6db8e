"""The README's OpenAI example, run by the real CLI against a local OpenAI-compatible server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.servers import OpenAIServer, completion, error

ROOT = Path(__file__).resolve().parent.parent


def run_example(server: OpenAIServer, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "sk-test-123"}
    env.pop("OPENAI_MODEL", None)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "flujo",
            "run",
            str(ROOT / "examples" / "openai-chat.yaml"),
            "--input",
            "the Rio Grande",
            *args,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_example_runs_against_any_openai_compatible_endpoint(openai_server: OpenAIServer) -> None:
    openai_server.script(
        error(503, "warming up"),
        completion(
            "Brown water bends\nthrough canyon light", prompt_tokens=20, completion_tokens=12
        ),
        completion("Canyon Light", prompt_tokens=30, completion_tokens=3),
    )
    proc = run_example(openai_server, "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["output"] == "Canyon Light"
    assert result["steps"]["write"]["attempts"] == 2  # the 503 was retried
    assert result["usage"]["inputTokens"] == 50 and result["usage"]["outputTokens"] == 15
    first = openai_server.requests[1]
    assert first.body["model"] == "gpt-4o-mini"
    assert first.body["messages"][0] == {
        "role": "system",
        "content": "You write short, vivid poems.",
    }
    assert "the Rio Grande" in first.body["messages"][1]["content"]
    assert first.headers["Authorization"] == "Bearer sk-test-123"
    assert "sk-test-123" not in proc.stdout + proc.stderr


def test_missing_api_key_is_a_clear_one_line_error(openai_server: OpenAIServer) -> None:
    env = {**os.environ, "OPENAI_BASE_URL": openai_server.base_url}
    env.pop("OPENAI_API_KEY", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "flujo",
            "run",
            str(ROOT / "examples" / "openai-chat.yaml"),
            "--input",
            "x",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "OPENAI_API_KEY" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert openai_server.calls == 0
