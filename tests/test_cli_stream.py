"""``flujo run --stream``: first tokens while the answer is still being written, same result.

The model is the OpenAI-compatible test server streaming its answer and
holding it, after the first piece, until the test has seen that piece on
the CLI's stderr: the first tokens are shown before the answer ends, which no
timing could prove on a busy machine.  The streamed run's stdout and
transcript then equal those of the same run without ``--stream``.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
from pathlib import Path

from flujo.cli.stream import TokenPrinter
from flujo.security.redaction import Redactor

from tests.servers import CHAT_PATH, OpenAIServer, completion

ANSWER = "Streams arrive piece by piece, and this one ends here."


def files(tmp_path: Path, server: OpenAIServer) -> list[str]:
    (tmp_path / "agents.yaml").write_text(
        f"""
apiVersion: flujo.dev/v1alpha1
kind: Agent
metadata: {{name: writer}}
spec:
  type: openai
  model: m
  endpoint: "{server.base_url}"
  apiKey: {{env: TEST_API_KEY}}
  pricing: {{inputPer1k: 1.0, outputPer1k: 2.0}}
"""
    )
    (tmp_path / "pipeline.yaml").write_text(
        """
apiVersion: flujo.dev/v1alpha1
kind: Pipeline
metadata: {name: streamed}
spec:
  steps:
    - {name: draft, agent: writer}
    - {name: shout, agent: builtin.upper}
    - {name: final, agent: writer, input: "{{ steps.draft.output }}"}
"""
    )
    return ["pipeline.yaml", "--agents", "agents.yaml", "--input", "write"]


def flujo(tmp_path: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "TEST_API_KEY": "sk-test-secret-value-123"}
    env = {k: v for k, v in env.items() if not k.startswith(("FLUJO_", "OTEL_"))}
    return subprocess.Popen(
        [sys.executable, "-m", "flujo", "run", *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )


def test_stream_shows_first_tokens_before_the_answer_ends_and_changes_nothing_else(
    tmp_path: Path, openai_server: OpenAIServer
) -> None:
    gate = threading.Event()
    args = files(tmp_path, openai_server)
    openai_server.script(
        completion(ANSWER, prompt_tokens=7, completion_tokens=11, gate=gate),
        completion("the second model step", prompt_tokens=3, completion_tokens=4),
        completion(ANSWER, prompt_tokens=7, completion_tokens=11),
        completion("the second model step", prompt_tokens=3, completion_tokens=4),
    )
    streaming = flujo(tmp_path, *args, "--stream", "--transcript", "streamed.txt")
    assert streaming.stderr is not None
    seen = b""
    try:
        while b"Streams " not in seen:
            piece = os.read(streaming.stderr.fileno(), 4096)
            assert piece, f"stderr closed before the first token: {seen!r}"
            seen += piece
        # The server is still holding the rest of the answer: it has not ended.
        assert not gate.is_set() and streaming.poll() is None
        first = openai_server.requests[0]
        assert first.outcome == "answered" and first.chunks < len(ANSWER.split()) + 2
    finally:
        gate.set()
    out, err = streaming.communicate(timeout=120)
    err = seen + err
    assert streaming.returncode == 0, err.decode()
    plain = flujo(tmp_path, *args, "--transcript", "plain.txt")
    plain_out, plain_err = plain.communicate(timeout=120)
    assert plain.returncode == 0, plain_err.decode()

    assert out == plain_out == b"the second model step\n"
    streamed_text = (tmp_path / "streamed.txt").read_text()
    assert streamed_text == (tmp_path / "plain.txt").read_text()
    assert "draft" in streamed_text and "final" in streamed_text
    assert err.decode() == f"[draft] {ANSWER}\n[final] the second model step\n"
    bodies = [r.body for r in openai_server.requests if r.path == CHAT_PATH]
    assert [b.get("stream") for b in bodies] == [True, True, None, None]
    assert bodies[0]["stream_options"] == {"include_usage": True}


def test_streamed_text_is_redacted_even_when_a_secret_is_split_across_pieces(
    tmp_path: Path, openai_server: OpenAIServer
) -> None:
    args = files(tmp_path, openai_server)
    leak = "the key is sk-test-secret-value-123 ok"
    openai_server.script(completion(leak), completion("done"))
    proc = flujo(tmp_path, *args, "--stream")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    assert b"sk-test-secret-value-123" not in err and b"sk-test-secret-value-123" not in out
    assert err.decode().startswith("[draft] the key is ")


def test_the_printer_holds_back_only_what_could_begin_a_secret() -> None:
    redactor = Redactor(["sk-test-secret-value-123"])
    out = io.StringIO()
    printer = TokenPrinter(redactor, out)
    printer("ask", "the key: sk-te")
    assert out.getvalue() == "[ask] the key: "  # "sk-te" may begin the secret: held back
    printer("ask", "st-secret-val")
    printer("ask", "ue-123 and more")
    printer("other", "next")
    printer.close()
    text = out.getvalue()
    assert "sk-test-secret-value-123" not in text and "st-secret" not in text
    assert (
        text
        == f"[ask] the key: {redactor.redact('sk-test-secret-value-123')} and more\n[other] next\n"
    )
    assert redactor.pending("plain word.") == 0 and redactor.pending("ends with sk-t") == 4
