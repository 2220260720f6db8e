"""The secret canary: a known API key must never appear in any output channel.

A real ``openai`` agent calls the local OpenAI-compatible server with a
canary key; the server is as hostile as real ones get — it echoes the
``Authorization`` header back in 401s, 5xx, 429s, plain-text and HTML
bodies, and in bodies long enough to be cut into excerpts.  Every channel a
user or operator can see is scanned, for the key and for its first
characters (a truncated echo would leak a prefix):

- embedded: the ``RunResult`` and its JSON, the event log, the transcript,
  audit lines (with contents included), every log record at DEBUG,
  exception messages and their causes;
- ``flujo run``: stdout and stderr, plain, ``--json``, ``--debug``, and the
  ``--transcript`` file; ``flujo step-run``: its envelope and termination log.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flujo import AgentManifest, AgentRegistry, Flujo, Pipeline, Step
from flujo.agents.base import AgentContext
from flujo.agents.openai import OpenAIAgent
from flujo.agents.pool import ClientPool
from flujo.domain.errors import AgentError
from flujo.security import AuditLog, AuditObserver, Redactor, install_log_redaction
from flujo.security.audit import StreamSink, audit_event_adapter
from flujo.security.redaction import RedactingFilter
from flujo.spec.agent import AgentSpec
from flujo.transcript.render import transcript_of

from tests.servers import OpenAIServer, RecordedRequest, Reply, completion, error

ROOT = Path(__file__).resolve().parent.parent
KEY_ENV = "FLUJO_TEST_CANARY_KEY"
SECRET = "sk-7Qx9Lm2Vb8Tz4Rw6Ny1Kp3Hd5Gf0Js"
PREFIX = SECRET[:12]


def auth(record: RecordedRequest) -> str:
    return record.headers.get("Authorization", "")


ECHOES: dict[str, Callable[[RecordedRequest], Reply]] = {
    "401 json": lambda r: error(401, f"Incorrect API key provided: {auth(r)}."),
    "403 detail": lambda r: Reply(status=403, json={"detail": f"forbidden for {auth(r)}"}),
    "500 json": lambda r: error(500, f"upstream rejected header {auth(r)}"),
    "429 json": lambda r: error(429, f"quota of {auth(r)} exhausted", retry_after=0),
    "400 text": lambda r: Reply(
        status=400, body=f"bad header: {auth(r)}".encode(), content_type="text/plain"
    ),
    "200 html": lambda r: Reply(
        status=200, body=f"<html><p>{auth(r)}</p></html>".encode(), content_type="text/html"
    ),
    "400 long": lambda r: error(400, "x" * 170 + " " + auth(r)),
    "502 list": lambda r: Reply(status=502, json=[{"echo": auth(r)}]),
}


def scan(label: str, text: str) -> None:
    assert SECRET not in text, f"the canary leaked through {label}: {text[:500]}"
    assert PREFIX not in text, f"a prefix of the canary leaked through {label}: {text[:500]}"


def agent_manifest(server: OpenAIServer, **fields: Any) -> AgentManifest:
    return AgentManifest.model_validate(
        {
            "metadata": {"name": "llm"},
            "spec": {
                "type": "openai",
                "model": "m",
                "endpoint": server.base_url,
                "apiKey": {"env": KEY_ENV},
                **fields,
            },
        }
    )


@pytest.fixture(autouse=True)
def _canary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)


def _chain(exc: BaseException | None) -> str:
    parts = []
    while exc is not None:
        parts.append(f"{type(exc).__name__}: {exc}")
        exc = exc.__cause__ or exc.__context__
    return "\n".join(parts)


@pytest.mark.parametrize("echo", sorted(ECHOES))
def test_canary_never_leaks_from_an_embedded_run(
    openai_server: OpenAIServer, echo: str, caplog: pytest.LogCaptureFixture
) -> None:
    openai_server.responder = ECHOES[echo]
    manifest = agent_manifest(openai_server)
    registry = AgentRegistry()
    registry.register_manifest(manifest)
    audit_out = io.StringIO()
    audit = AuditLog([StreamSink(audit_out)], include_content=True)
    observer = AuditObserver(audit, "canary", agents={"llm": manifest.spec})
    step = Step(
        "ask", "llm", retry={"maxAttempts": 2, "backoffSeconds": 0, "retryOn": ["transient"]}
    )
    caplog.set_level(logging.DEBUG)
    result = Flujo(Pipeline([step]), agent_registry=registry, observers=[observer]).run("hi")
    assert openai_server.calls >= 1
    assert auth(openai_server.requests[0]) == f"Bearer {SECRET}"  # the key really was sent
    assert not result.success
    scan("the run's outcome", repr(result.outcome))
    scan("RunResult JSON", json.dumps(result.to_dict(), default=str))
    scan("the event log", json.dumps([e.model_dump(mode="json") for e in result.events]))
    scan("the transcript", transcript_of(result, name="canary"))
    for line in audit_out.getvalue().splitlines():
        audit_event_adapter.validate_json(line)
    scan("the audit log", audit_out.getvalue())
    logged = [f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records]
    assert logged, "expected DEBUG records from the HTTP stack"
    scan("DEBUG log records", "\n".join(logged))


@pytest.mark.parametrize("echo", sorted(ECHOES))
def test_canary_never_leaks_from_agent_errors(openai_server: OpenAIServer, echo: str) -> None:
    openai_server.responder = ECHOES[echo]
    spec = agent_manifest(openai_server).spec
    caught = _call_error(spec)
    scan("the AgentError message", caught.message)
    scan("str(AgentError)", str(caught))


def _call_error(spec: AgentSpec) -> AgentError:
    import asyncio

    async def call() -> AgentError:
        async with ClientPool() as pool:
            agent = OpenAIAgent("llm", spec, pool)
            try:
                await agent.run("hi", AgentContext(step_path="ask", step_name="ask"))
            except AgentError as exc:
                return exc
        raise AssertionError("the call was expected to fail")

    return asyncio.run(call())


def test_a_key_holding_a_newline_is_not_echoed_by_the_http_stack(
    openai_server: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # h11 refuses the header and quotes it, escaped, in its exception message
    monkeypatch.setenv(KEY_ENV, SECRET[:16] + "\n" + SECRET[16:])
    caught = _call_error(agent_manifest(openai_server).spec)
    assert caught.error_class == "transient" and "Illegal header value" in caught.message
    scan("the AgentError message", caught.message.replace("\\n", ""))
    assert "***" in caught.message
    # the raw cause still quotes it: a log record with the traceback must be scrubbed
    cause = _chain(caught)
    assert PREFIX in cause
    redactor = Redactor([SECRET[:16] + "\n" + SECRET[16:]])
    record = logging.LogRecord("flujo", logging.ERROR, __file__, 1, "call failed", None, None)
    try:
        raise caught
    except AgentError:
        record.exc_info = sys.exc_info()
    RedactingFilter(redactor).filter(record)
    scan("a scrubbed traceback", (record.exc_text or "").replace("\\n", ""))


def test_log_redaction_covers_every_logger_and_argument() -> None:
    redactor = Redactor([SECRET])
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    logger = logging.getLogger("some.library")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    uninstall = install_log_redaction(redactor)
    try:
        logger.debug("header %s", f"Bearer {SECRET}")
        logger.info({"authorization": SECRET})
        try:
            raise ValueError(f"bad key {SECRET!r}")
        except ValueError:
            logger.exception("failed")
    finally:
        uninstall()
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert text.count("***") >= 3
    scan("logging", text)


def test_redactor_handles_every_form_and_leaves_other_text_alone() -> None:
    tricky = 'sk-"quoted"\\back/slash é'
    redactor = Redactor([SECRET, tricky, "short"])
    payload = {
        "plain": f"key={SECRET}",
        SECRET: ["nested", {"deep": f"Bearer {SECRET}"}],
        "json": json.dumps({"k": tricky}),
        "ascii": json.dumps({"k": tricky}, ensure_ascii=True),
        "url": "https://x/?key=sk-%22quoted%22%5Cback%2Fslash%20%C3%A9",
        "repr": repr(tricky.encode()),
        "untouched": "a short word, 42",
    }
    clean = redactor.redact_data(payload)
    dumped = json.dumps(clean, ensure_ascii=False)
    scan("redact_data", dumped)
    assert "quoted" not in dumped.replace('"untouched"', "")
    assert clean["untouched"] == "a short word, 42"  # 'short' is under the minimum length
    assert clean["plain"] == "key=***" and "***" in clean
    assert Redactor().redact(SECRET) == SECRET and not Redactor()


def test_redactor_learns_the_values_agents_resolve(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("file-secret-value-123\n")
    specs = [
        AgentSpec.model_validate(
            {
                "type": "openai",
                "model": "m",
                "endpoint": "https://x/v1",
                "apiKey": {"secretKeyRef": {"name": "creds", "key": "api.key"}},
                "secretHeaders": [
                    {"name": "X-A", "valueFrom": {"env": "HEADER_SECRET"}},
                    {"name": "X-B", "valueFrom": {"file": str(key_file)}},
                ],
            }
        )
    ]
    env = {"FLUJO_SECRET_CREDS_API_KEY": "pod-secret-value-456", "HEADER_SECRET": "hdr-secret-789"}
    redactor = Redactor.from_agent_specs(specs, environ=env)
    text = "pod-secret-value-456 hdr-secret-789 file-secret-value-123"
    assert redactor.redact(text) == "*** *** ***"
    by_name = Redactor().add_environment({"OPENAI_API_KEY": "sk-env-000000", "HOME": "/root"})
    assert by_name.redact("sk-env-000000 /root") == "*** /root"


def test_redacting_a_run_that_echoed_the_key_in_its_output(openai_server: OpenAIServer) -> None:
    """The model itself may answer with the key: the boundaries scrub what they show."""
    openai_server.responder = lambda r: completion(f"your key is {auth(r)}")
    registry = AgentRegistry()
    manifest = agent_manifest(openai_server)
    registry.register_manifest(manifest)
    result = Flujo(Pipeline([Step("ask", "llm")]), agent_registry=registry).run("hi")
    assert SECRET in result.output  # the raw result is the caller's own data …
    redactor = Redactor.from_agent_specs([manifest.spec])
    scan("a redacted RunResult", json.dumps(redactor.redact_data(result.to_dict())))
    scan("a redacted transcript", redactor.redact(transcript_of(result)))


# --- through the command line ---------------------------------------------------


def _files(tmp_path: Path, server: OpenAIServer) -> Path:
    path = tmp_path / "canary.yaml"
    path.write_text(
        "apiVersion: flujo.dev/v1alpha1\nkind: Agent\nmetadata: {name: llm}\n"
        f"spec:\n  type: openai\n  model: m\n  endpoint: {server.base_url}\n"
        f"  apiKey: {{env: {KEY_ENV}}}\n"
        "---\napiVersion: flujo.dev/v1alpha1\nkind: Pipeline\nmetadata: {name: canary}\n"
        "spec:\n  steps:\n    - name: ask\n      agent: llm\n"
        "      retry: {maxAttempts: 2, backoffSeconds: 0}\n",
        encoding="utf-8",
    )
    return path


def _flujo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flujo", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, KEY_ENV: SECRET},
    )


@pytest.mark.parametrize("echo", ["401 json", "500 json", "400 long", "200 html"])
def test_canary_never_leaks_from_flujo_run(
    openai_server: OpenAIServer, tmp_path: Path, echo: str
) -> None:
    openai_server.responder = ECHOES[echo]
    path = _files(tmp_path, openai_server)
    transcript = tmp_path / "run.transcript"
    for extra in ([], ["--json"], ["--debug", "--transcript", str(transcript)]):
        proc = _flujo("run", str(path), "--input", "hi", *extra)
        assert proc.returncode == 1, proc.stderr
        assert "Traceback" not in proc.stderr
        scan(f"flujo run {' '.join(extra)} stdout", proc.stdout)
        scan(f"flujo run {' '.join(extra)} stderr", proc.stderr)
    scan("the --transcript file", transcript.read_text(encoding="utf-8"))
    assert auth(openai_server.requests[-1]) == f"Bearer {SECRET}"


def test_canary_never_leaks_from_flujo_step_run(
    openai_server: OpenAIServer, tmp_path: Path
) -> None:
    openai_server.responder = ECHOES["401 json"]
    spec = agent_manifest(openai_server).spec
    launch = tmp_path / "launch.json"
    launch.write_text(
        json.dumps(
            {
                "run": "r-1",
                "launch": {"path": "ask", "step": "ask", "agent": "llm", "input": "hi"},
                "agent": spec.to_data(),
            }
        )
    )
    termination = tmp_path / "termination-log"
    proc = _flujo("step-run", "--launch", str(launch), "--termination-log", str(termination))
    assert proc.returncode == 3, proc.stderr
    scan("step-run stdout", proc.stdout)
    scan("step-run stderr", proc.stderr)
    scan("the termination message", termination.read_text())
    assert "auth" in termination.read_text()
