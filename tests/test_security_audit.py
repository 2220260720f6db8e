"""The audit log: structured, schema-valid lines that never carry contents or secrets.

Runs are real (``Flujo(..., observers=[AuditObserver(...)])``), against
scripted agents and the local OpenAI-compatible server; every emitted line
is parsed and validated against the published schema.
"""

from __future__ import annotations

import io
import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from flujo import AgentManifest, AgentRegistry, Flujo, Pipeline, Step
from flujo.resilience import BreakerRegistry
from flujo.security import AuditLog, AuditObserver, Redactor, open_audit_log
from flujo.security.audit import (
    AgentCall,
    CircuitTransition,
    ConfigChanged,
    FileSink,
    GovernorBreach,
    PolicyDenied,
    RunFinished,
    RunStartedAudit,
    StreamSink,
    audit_event_adapter,
    audit_json_schema,
    field_manager_of,
)

from tests.servers import OpenAIServer, completion, error

PROMPT = "TOP-SECRET-PROMPT-7c1d"
ANSWER = "CONFIDENTIAL-ANSWER-93ab"
DOCS = Path(__file__).resolve().parent.parent / "docs" / "security.md"


def _log(include_content: bool = False, **kwargs: Any) -> tuple[AuditLog, io.StringIO]:
    out = io.StringIO()
    fixed = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    return AuditLog(
        [StreamSink(out)], include_content=include_content, clock=lambda: fixed, **kwargs
    ), out


def _lines(out: io.StringIO) -> list[dict[str, Any]]:
    """Every line parsed and validated against the schema; returns the raw dicts."""
    parsed = []
    for line in out.getvalue().splitlines():
        audit_event_adapter.validate_json(line)
        data = json.loads(line)
        assert data["v"] == 1 and data["time"] == "2026-01-02T03:04:05.678Z"
        parsed.append(data)
    return parsed


def _scripted(name: str, *responses: dict[str, Any]) -> AgentManifest:
    return AgentManifest.model_validate(
        {
            "metadata": {"name": name},
            "spec": {"type": "scripted", "model": "m-1", "responses": list(responses)},
        }
    )


def test_a_run_writes_started_calls_and_finished_without_contents() -> None:
    registry = AgentRegistry()
    writer = _scripted(
        "writer",
        {"output": ANSWER, "usage": {"inputTokens": 12, "outputTokens": 7, "costUsd": 0.002}},
    )
    registry.register_manifest(writer)
    log, out = _log()
    observer = AuditObserver(
        log, "demo", agents={"writer": writer.spec, "builtin.upper": None}, run_id="run-1"
    )
    pipeline = Pipeline([Step("draft", "writer"), Step("shout", "builtin.upper")])
    result = Flujo(pipeline, agent_registry=registry, observers=[observer]).run(PROMPT)
    assert result.success
    lines = _lines(out)
    assert [e["event"] for e in lines] == [
        "run.started",
        "agent.call",
        "agent.call",
        "run.finished",
    ]
    started, draft, shout, finished = lines
    assert started["runId"] == "run-1" and started["pipeline"] == "demo"
    assert started["inputBytes"] == len(json.dumps(PROMPT))
    assert draft == {
        "v": 1,
        "time": "2026-01-02T03:04:05.678Z",
        "runId": "run-1",
        "pipeline": "demo",
        "event": "agent.call",
        "step": "draft",
        "stepName": "draft",
        "agent": "writer",
        "agentType": "scripted",
        "model": "m-1",
        "attempt": 1,
        "outcome": "succeeded",
        "inputTokens": 12,
        "outputTokens": 7,
        "costUsd": 0.002,
        "durationMs": draft["durationMs"],
    }
    assert shout["agentType"] == "builtin" and "model" not in shout
    assert finished["status"] == "succeeded" and finished["launches"] == 2
    assert finished["costUsd"] == 0.002 and finished["inputTokens"] == 12
    text = out.getvalue()
    assert PROMPT not in text and ANSWER not in text and PROMPT.upper() not in text


def test_include_content_adds_inputs_outputs_and_messages() -> None:
    registry = AgentRegistry()
    registry.register_manifest(_scripted("w", {"output": ANSWER}))
    log, out = _log(include_content=True)
    Flujo(
        Pipeline([Step("a", "w")]), agent_registry=registry, observers=[AuditObserver(log, "p")]
    ).run(PROMPT)
    started, call, finished = _lines(out)
    assert started["input"] == PROMPT
    assert call["input"] == PROMPT and call["output"] == ANSWER
    assert finished["output"] == ANSWER


def test_failures_retries_and_fallbacks_are_one_line_per_attempt() -> None:
    registry = AgentRegistry()
    registry.register_manifest(
        _scripted(
            "flaky",
            {"error": {"class": "transient", "message": f"upstream said {PROMPT}"}},
            {"error": {"class": "permanent", "message": f"no: {PROMPT}"}},
        )
    )
    log, out = _log()
    step = Step(
        "ask", "flaky", retry={"maxAttempts": 2, "backoffSeconds": 0}, fallback="builtin.upper"
    )
    Flujo(Pipeline([step]), agent_registry=registry, observers=[AuditObserver(log, "p")]).run("x")
    calls = [e for e in _lines(out) if e["event"] == "agent.call"]
    assert [(c["agent"], c["attempt"], c["outcome"], c.get("errorClass")) for c in calls] == [
        ("flaky", 1, "failed", "transient"),
        ("flaky", 2, "failed", "permanent"),
        ("builtin.upper", 3, "succeeded", None),
    ]
    assert PROMPT not in out.getvalue()  # error messages may quote contents: left out


def test_governor_breach_is_recorded_once_with_where_and_how_much() -> None:
    registry = AgentRegistry()
    registry.register_manifest(
        _scripted("pricey", {"output": "ok", "usage": {"inputTokens": 100, "costUsd": 0.3}})
    )
    log, out = _log()
    pipeline = Pipeline([Step("a", "pricey"), Step("b", "pricey"), Step("c", "pricey")])
    Flujo(
        pipeline,
        agent_registry=registry,
        usage_limits={"maxCostUsd": 0.5},
        observers=[AuditObserver(log, "p")],
    ).run("x")
    lines = _lines(out)
    breaches = [e for e in lines if e["event"] == "governor.breach"]
    assert breaches == [
        {
            "v": 1,
            "time": "2026-01-02T03:04:05.678Z",
            "runId": lines[0]["runId"],
            "pipeline": "p",
            "event": "governor.breach",
            "limit": "cost",
            "limitValue": 0.5,
            "value": pytest.approx(0.6),
            "path": "b",
            "when": "after",
        }
    ]
    finished = lines[-1]
    assert finished["status"] == "failed" and finished["reason"] == "UsageLimitExceeded"
    assert lines[0]["limits"] == {"maxCostUsd": 0.5}


def test_each_run_of_one_observer_gets_its_own_id() -> None:
    log, out = _log()
    observer = AuditObserver(log, "p")
    flujo = Flujo(Pipeline([Step("a", "builtin.upper")]), observers=[observer])
    flujo.run("x")
    flujo.run("y")
    ids = {e["runId"] for e in _lines(out)}
    assert len(ids) == 2


def test_openai_agent_calls_and_circuit_transitions(openai_server: OpenAIServer) -> None:
    openai_server.script(completion("fine", prompt_tokens=4, completion_tokens=2))
    openai_server.script(error(500, "down"), error(500, "down"))
    breakers = BreakerRegistry(fail_max=2, reset_timeout=60)
    log, out = _log()

    def audit_circuit(name: str, old: str, new: str) -> None:
        log.circuit_transition(name, old, new)

    breakers.add_listener(audit_circuit)
    registry = AgentRegistry(breakers=breakers)
    manifest = AgentManifest.model_validate(
        {
            "metadata": {"name": "llm"},
            "spec": {"type": "openai", "model": "gpt-test", "endpoint": openai_server.base_url},
        }
    )
    registry.register_manifest(manifest)
    observer = AuditObserver(log, "p", agents={"llm": manifest.spec})
    for _ in range(4):
        Flujo(
            Pipeline([Step("ask", "llm", fallback="builtin.upper")]),
            agent_registry=registry,
            observers=[observer],
        ).run("q")
    lines = _lines(out)
    calls = [e for e in lines if e["event"] == "agent.call" and e["agent"] == "llm"]
    assert calls[0]["agentType"] == "openai" and calls[0]["model"] == "gpt-test"
    assert (calls[0]["inputTokens"], calls[0]["outputTokens"]) == (4, 2)
    assert [c.get("errorClass") for c in calls] == [None, "transient", "transient", "circuit_open"]
    assert openai_server.calls == 3
    transitions = [e for e in lines if e["event"] == "circuit.transition"]
    assert [(t["agent"], t["from"], t["to"]) for t in transitions] == [("llm", "closed", "open")]


def test_configuration_changes_for_the_operator() -> None:
    log, out = _log()
    body = {
        "metadata": {
            "name": "writer",
            "namespace": "team-a",
            "uid": "u-1",
            "generation": 3,
            "managedFields": [
                {"manager": "kubectl-client-side-apply", "time": "2026-01-01T00:00:00Z"},
                {"manager": "argocd-controller", "time": "2026-01-02T00:00:00Z"},
                {  # the operator's own status write is not a configuration change
                    "manager": "flujo-operator",
                    "time": "2026-01-03T00:00:00Z",
                    "subresource": "status",
                },
            ],
        },
        "spec": {"type": "openai", "apiKey": {"secretKeyRef": {"name": "s", "key": "k"}}},
    }
    assert field_manager_of(body) == "argocd-controller"
    log.config_changed_from_body("Agent", "MODIFIED", body)
    log.config_changed_from_body("Pipeline", "ADDED", {"metadata": {"name": "p", "generation": 1}})
    log.config_changed_from_body("Agent", "DELETED", body)
    assert log.config_changed_from_body("Agent", None, body) is None  # initial listing
    log.policy_denied(
        "Pipeline",
        "p",
        "30000 exceeds the security policy's maxLoopIterations (1000)",
        field="spec.steps[0].loop.maxIterations",
        namespace="team-a",
    )
    changed = _lines(out)
    assert [(e["kind"], e.get("action"), e.get("generation")) for e in changed[:3]] == [
        ("Agent", "updated", 3),
        ("Pipeline", "created", 1),
        ("Agent", "deleted", 3),
    ]
    assert changed[0]["fieldManager"] == "argocd-controller" and changed[0]["uid"] == "u-1"
    assert changed[3]["event"] == "policy.denied"
    assert changed[3]["field"] == "spec.steps[0].loop.maxIterations"
    assert "secretKeyRef" not in out.getvalue()  # specs are never copied into the log


def test_the_redactor_scrubs_every_line() -> None:
    secret = "sk-audit-canary-1234567890"
    log, out = _log(include_content=True, redactor=Redactor([secret]))
    registry = AgentRegistry()
    registry.register_manifest(_scripted("w", {"output": f"here: {secret}"}))
    Flujo(
        Pipeline([Step("a", "w")]), agent_registry=registry, observers=[AuditObserver(log, "p")]
    ).run(secret)
    assert secret not in out.getvalue()
    assert _lines(out)[1]["output"] == "here: ***"


def test_file_sink_appends_with_owner_only_permissions(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    for _ in range(2):
        log = open_audit_log(str(path))
        assert isinstance(log.sinks[0], FileSink)
        log.circuit_transition("ns/llm", "closed", "open", failures=5)
        log.close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    event = audit_event_adapter.validate_json(lines[0])
    assert isinstance(event, CircuitTransition) and event.namespace == "ns"
    assert event.failures == 5


def test_schema_is_published_and_documented() -> None:
    schema = audit_json_schema()
    assert {"run.started", "agent.call", "governor.breach", "run.finished"} <= set(
        schema["discriminator"]["mapping"]
    )
    docs = DOCS.read_text(encoding="utf-8")
    models = (
        RunStartedAudit,
        AgentCall,
        GovernorBreach,
        RunFinished,
        ConfigChanged,
        CircuitTransition,
        PolicyDenied,
    )
    for model in models:
        event = model.model_fields["event"].default
        assert f"`{event}`" in docs, event
        for name, field in model.model_fields.items():
            alias = field.alias or name
            assert f"`{alias}`" in docs, f"docs/security.md does not document {event}.{alias}"
