"""The security controls as users meet them, once wired into ``Flujo`` and ``flujo``.

The controls live in :mod:`flujo.security`; calling them from the runner and
the CLI is a handful of lines in files owned elsewhere (see the "Wiring"
section of ``docs/security.md``).  Until those lines land, these tests are
strict expected failures: the day the wiring is in, they pass, strict
``xfail`` turns that into a failure, and the marker must be removed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from flujo import AgentRegistry, Flujo, Pipeline, PipelineManifest, PipelineValidationError, Step

from tests.servers import OpenAIServer, RecordedRequest, completion

ROOT = Path(__file__).resolve().parent.parent
KEY_ENV = "FLUJO_TEST_CANARY_KEY"
SECRET = "sk-wire-5Hq2Zt8Ym4Xc7Vb1Nd3Kf6"


def flujo(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flujo", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "PYTHONIOENCODING": "utf-8", **(env or {})},
    )


def one_line_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """Exit 2, no traceback; each problem one ``error:`` line (context lines are indented)."""
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert errors, proc.stderr
    for line in proc.stderr.splitlines():
        assert line.startswith(("error: ", " ")), line
    for fragment in fragments:
        assert any(fragment in line for line in errors), (fragment, proc.stderr)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(text, encoding="utf-8")
    return path


AGENT = """\
apiVersion: flujo.dev/v1alpha1
kind: Agent
metadata: {{name: llm}}
spec: {{type: openai, model: m, endpoint: "{endpoint}"}}
---
apiVersion: flujo.dev/v1alpha1
kind: Pipeline
metadata: {{name: p}}
spec:
  steps:
    - {{name: ask, agent: llm}}
"""


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://169.254.169.254/latest/meta-data",
        "http://[fd00:ec2::254]/",
        "http://metadata.google.internal/",
    ],
)
def test_flujo_validate_refuses_ssrf_endpoints(tmp_path: Path, endpoint: str) -> None:
    proc = flujo("validate", str(write(tmp_path, AGENT.format(endpoint=endpoint))))
    one_line_error(proc, "spec.steps[0].agent: agent 'llm': spec.endpoint: ", "always refused")


def test_flujo_validate_refuses_loopback_under_the_cluster_profile(tmp_path: Path) -> None:
    path = write(tmp_path, AGENT.format(endpoint="https://localhost:8443/v1"))
    proc = flujo("validate", str(path), env={"FLUJO_SECURITY_PROFILE": "cluster"})
    one_line_error(proc, "spec.endpoint: ", "loopback")


LIMITS = """\
apiVersion: flujo.dev/v1alpha1
kind: Pipeline
metadata: {name: p}
spec:
  steps:
    - name: a
      agent: builtin.upper
      retry: {maxAttempts: 5}
    - name: l
      loop:
        maxIterations: 50000
        steps: [{name: b, agent: builtin.upper}]
"""


def test_flujo_validate_refuses_limits_over_the_policy_with_field_paths(tmp_path: Path) -> None:
    proc = flujo("validate", str(write(tmp_path, LIMITS)), env={"FLUJO_SECURITY_MAX_ATTEMPTS": "3"})
    one_line_error(
        proc,
        ":8: spec.steps[0].retry.maxAttempts: 5 exceeds the security policy's maxAttempts (3)",
        "spec.steps[1].loop.maxIterations: 50000 exceeds",
    )


def test_bad_policy_environment_is_a_one_line_error(tmp_path: Path) -> None:
    proc = flujo(
        "validate", str(write(tmp_path, LIMITS)), env={"FLUJO_SECURITY_REQUIRE_HTTPS": "maybe"}
    )
    one_line_error(proc, "FLUJO_SECURITY_REQUIRE_HTTPS")


LINEAR = str(ROOT / "examples" / "linear.yaml")


def test_flujo_run_refuses_non_utf8_input() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "flujo", "run", LINEAR, "--input", b"\xff\xfe abc"],
        capture_output=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
    )
    stderr = proc.stderr.decode()
    assert proc.returncode == 2 and "not valid UTF-8" in stderr and "Traceback" not in stderr


def test_flujo_run_refuses_deeply_nested_json_input() -> None:
    proc = flujo("run", LINEAR, "--input-json", "[" * 30_000 + "]" * 30_000)
    one_line_error(proc, "--input-json: ")


def test_flujo_run_input_size_follows_the_policy() -> None:
    proc = flujo(
        "run", LINEAR, "--input", "x" * 2000, env={"FLUJO_SECURITY_MAX_INPUT_BYTES": "1000"}
    )
    one_line_error(proc, "larger than 1000 bytes")


def _loop_manifest(iterations: int) -> PipelineManifest:
    return PipelineManifest.model_validate(
        {
            "metadata": {"name": "p"},
            "spec": {
                "steps": [
                    {
                        "name": "l",
                        "loop": {
                            "maxIterations": iterations,
                            "steps": [{"name": "b", "agent": "builtin.upper"}],
                        },
                    }
                ]
            },
        }
    )


def test_flujo_applies_the_embedded_policy_by_default() -> None:
    with pytest.raises(PipelineValidationError, match=r"loop\.maxIterations: 50000 exceeds"):
        Flujo(_loop_manifest(50_000))
    with pytest.raises(ValueError, match="not valid UTF-8"):
        Flujo(Pipeline([Step("a", "builtin.upper")])).run("bad \udcff")


def test_flujo_takes_a_policy_and_caps_outputs() -> None:
    from flujo.security import SecurityPolicy

    registry = AgentRegistry()
    registry.register("big", lambda data: "z" * 5000)
    policy = SecurityPolicy.embedded(max_output_bytes=1000)
    kwargs: dict[str, Any] = {"agent_registry": registry, "security_policy": policy}
    result = Flujo(Pipeline([Step("a", "big")]), **kwargs).run("x")
    assert result.outcome.error_class == "permanent"


def test_flujo_run_scrubs_a_key_the_model_echoed(
    openai_server: OpenAIServer, tmp_path: Path
) -> None:
    def echo(record: RecordedRequest) -> Any:
        return completion(f"your key is {record.headers.get('Authorization')}")

    openai_server.responder = echo
    path = tmp_path / "p.yaml"
    path.write_text(
        "apiVersion: flujo.dev/v1alpha1\nkind: Agent\nmetadata: {name: llm}\n"
        f"spec: {{type: openai, model: m, endpoint: '{openai_server.base_url}', "
        f"apiKey: {{env: {KEY_ENV}}}}}\n"
        "---\napiVersion: flujo.dev/v1alpha1\nkind: Pipeline\nmetadata: {name: p}\n"
        "spec:\n  steps:\n    - {name: ask, agent: llm}\n"
    )
    transcript = tmp_path / "t.txt"
    env = {KEY_ENV: SECRET}
    for extra in ([], ["--json", "--transcript", str(transcript)]):
        proc = flujo("run", str(path), "--input", "hi", *extra, env=env)
        assert proc.returncode == 0, proc.stderr
        assert SECRET not in proc.stdout + proc.stderr and "***" in proc.stdout
    assert SECRET not in transcript.read_text()


def test_flujo_run_writes_an_audit_log(tmp_path: Path) -> None:
    from flujo.security.audit import audit_event_adapter

    log = tmp_path / "audit.jsonl"
    proc = flujo("run", LINEAR, "--input", "secret words", env={"FLUJO_AUDIT_LOG": str(log)})
    assert proc.returncode == 0, proc.stderr
    lines = log.read_text().splitlines()
    events = [audit_event_adapter.validate_json(line).event for line in lines]
    assert events[0] == "run.started" and events[-1] == "run.finished"
    assert "secret words" not in log.read_text()
    assert json.loads(lines[-1])["status"] == "succeeded"
