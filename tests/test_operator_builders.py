"""Pure manifest and status builders of the operator."""

from __future__ import annotations

import json
from pathlib import Path

from flujo.engine import LaunchStep, StepSucceeded, advance, new_run
from flujo.engine.events import RunStarted
from flujo.spec import AgentSpec, PipelineSpec

from flujo_operator.builders import (
    RunRef,
    build_run_status,
    build_step_pod,
    decode_journal,
    encode_journal,
    pod_failure,
    pod_name,
)
from flujo_operator.config import Config, ConfigError

RUN = RunRef("My_Run.2026", "team-a", "uid-1")


def launch(path: str = "fan/b/summarise", attempt: int = 2, data: object = "x") -> LaunchStep:
    return LaunchStep(
        path=path, step=path.rsplit("/", 1)[-1], agent="llm", input=data, attempt=attempt
    )


def test_pod_names_are_deterministic_dns_labels() -> None:
    a = pod_name(RUN.name, "fan/b/summarise", 2)
    assert a == pod_name(RUN.name, "fan/b/summarise", 2)
    assert a != pod_name(RUN.name, "fan/b/summarise", 3)
    assert a != pod_name(RUN.name, "fan/c/summarise", 2)
    assert len(pod_name("x" * 200, "p", 1)) <= 63
    assert all(c.isalnum() or c == "-" for c in a) and a == a.lower()


def test_step_pod_is_secure_by_default_and_owned_by_the_run() -> None:
    agent = AgentSpec.model_validate(
        {
            "type": "openai",
            "model": "m",
            "endpoint": "https://llm/v1",
            "apiKey": {"secretKeyRef": {"name": "creds", "key": "key"}},
        }
    )
    pod, config_map = build_step_pod(RUN, launch(), agent, Config())
    assert config_map is None
    spec = pod["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["restartPolicy"] == "Never"
    assert spec["securityContext"]["runAsNonRoot"] is True
    container = spec["containers"][0]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["resources"]["limits"] and container["resources"]["requests"]
    owner = pod["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("PipelineRun", "uid-1", True)
    assert pod["metadata"]["labels"]["flujo.dev/run"] == RUN.name
    # the credential is a reference, resolved by the kubelet, never by the operator
    env = {e["name"]: e for e in container["env"]}
    assert env["FLUJO_SECRET_CREDS_KEY"]["valueFrom"] == {
        "secretKeyRef": {"name": "creds", "key": "key"}
    }
    # the launch document reaches the pod through a projected annotation
    doc = json.loads(pod["metadata"]["annotations"]["flujo.dev/launch"])
    assert doc["launch"]["path"] == "fan/b/summarise" and doc["agent"]["model"] == "m"
    assert spec["volumes"][0]["downwardAPI"]["items"][0]["path"] == "launch.json"


def test_large_inputs_go_to_a_config_map_owned_by_the_run() -> None:
    pod, config_map = build_step_pod(RUN, launch(data="z" * 300_000), None, Config())
    assert config_map is not None
    assert "flujo.dev/launch" not in pod["metadata"]["annotations"]
    assert pod["spec"]["volumes"][0]["configMap"]["name"] == config_map["metadata"]["name"]
    assert config_map["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert json.loads(config_map["data"]["launch.json"])["launch"]["input"] == "z" * 300_000


def test_pod_level_failures_map_to_error_classes() -> None:
    def pod(status: dict) -> dict:
        return {"status": status}

    evicted = pod_failure(pod({"phase": "Failed", "reason": "Evicted", "message": "disk"}), "a", 1)
    assert evicted is not None and evicted.error_class == "transient"
    oom = pod_failure(
        pod(
            {
                "phase": "Failed",
                "containerStatuses": [
                    {"state": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}
                ],
            }
        ),
        "a",
        1,
    )
    assert oom is not None and oom.error_class == "permanent" and "memory" in oom.message
    pull = pod_failure(
        pod(
            {
                "phase": "Pending",
                "containerStatuses": [
                    {"state": {"waiting": {"reason": "ErrImagePull", "message": "not found"}}}
                ],
            }
        ),
        "a",
        1,
    )
    assert pull is not None and pull.error_class == "config"
    assert pod_failure(pod({"phase": "Running"}), "a", 1) is None


def test_status_stays_small_for_a_thousand_iteration_loop() -> None:
    spec = PipelineSpec.model_validate(
        {
            "steps": [
                {
                    "name": "refine",
                    "loop": {
                        "maxIterations": 1000,
                        "exitWhen": "iteration >= 1000",
                        "steps": [{"name": "work", "agent": "llm"}],
                    },
                }
            ]
        }
    )
    state = new_run(spec)
    state, cmds = advance(state, RunStarted(input="x"))
    journal = [{"t": "start"}]
    while not state.finished:
        cmd = cmds[0]
        state, cmds = advance(state, StepSucceeded(path=cmd.path, output="o" * 10_000))
        journal.append({"t": "pod", "p": cmd.path, "a": cmd.attempt})
    status = build_run_status(RUN, state, journal, Config())
    size = len(json.dumps(status))
    assert state.phase == "succeeded" and size < 64 * 1024, size
    assert status["progress"] == "1000/1000"
    assert decode_journal(status["journal"]) == journal
    assert len(status["steps"]) <= Config().status_steps + 1


def test_journal_round_trip_and_config_errors() -> None:
    entries = [{"t": "start"}, {"t": "pod", "p": "a", "a": 1}]
    assert decode_journal(encode_journal(entries)) == entries
    assert decode_journal(None) == []
    import pytest

    with pytest.raises(ConfigError, match="FLUJO_STEP_COMMAND"):
        Config.from_env({"FLUJO_STEP_COMMAND": "flujo step-run"})
    with pytest.raises(ConfigError, match="FLUJO_MAX_RUNNING_PODS"):
        Config.from_env({"FLUJO_MAX_RUNNING_PODS": "many"})
    config = Config.from_env({"FLUJO_NAMESPACES": "a, b", "FLUJO_STEP_COMMAND": '["x", "y"]'})
    assert config.namespaces == ("a", "b") and config.step_command == ("x", "y")


def test_security_audit_and_budget_settings_are_read_and_checked(tmp_path: Path) -> None:
    import pytest

    defaults = Config.from_env({})
    assert defaults.security.profile == "cluster" and defaults.audit_log == "stdout"
    assert not defaults.policy("any").allow_loopback  # the cluster profile
    assert (defaults.api_qps, defaults.pod_create_qps) == (500.0, 200.0)
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(
        "profile: embedded\nnamespaces:\n  lab: {maxLoopIterations: 7}\n", encoding="utf-8"
    )
    config = Config.from_env(
        {
            "FLUJO_SECURITY_POLICY": str(policy_file),
            "FLUJO_SECURITY_REQUIRE_HTTPS": "false",
            "FLUJO_API_QPS": "0",
            "FLUJO_AUDIT_LOG": "off",
            "FLUJO_AUDIT_CONTENT": "yes",
        }
    )
    # The file's profile wins over the operator's default profile.
    assert config.policy("other").allow_loopback
    assert config.policy("lab").max_loop_iterations == 7
    assert not config.policy("other").require_https
    assert (config.api_qps, config.audit_log, config.audit_content) == (0.0, "off", True)
    for env, name in (
        ({"FLUJO_API_QPS": "fast"}, "FLUJO_API_QPS"),
        ({"FLUJO_POD_CREATE_QPS": "-1"}, "FLUJO_POD_CREATE_QPS"),
        ({"FLUJO_AUDIT_CONTENT": "maybe"}, "FLUJO_AUDIT_CONTENT"),
        ({"FLUJO_SECURITY_POLICY": "{not json"}, "FLUJO_SECURITY_POLICY"),
        ({"FLUJO_SECURITY_MAX_ATTEMPTS": "lots"}, "FLUJO_SECURITY_MAX_ATTEMPTS"),
        ({"FLUJO_SECURITY_POLICY": str(tmp_path / "missing.yaml")}, "missing.yaml"),
    ):
        with pytest.raises(ConfigError, match=name):
            Config.from_env(env)


def test_a_bad_setting_stops_the_operator_with_one_line(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    for name, value in (
        ("FLUJO_AUDIT_LOG", str(tmp_path / "missing-dir" / "audit.log")),
        ("FLUJO_SECURITY_POLICY", '{"maxLoopIterations": "many"}'),
    ):
        env = {**os.environ, name: value}
        proc = subprocess.run(
            [sys.executable, "-m", "flujo_operator"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
        assert name in proc.stderr
        assert "Traceback" not in proc.stderr
