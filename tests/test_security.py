"""The security policy: SSRF, agent types, bounds on retries/loops/fan-out, data caps.

Checks are exercised where they bite: ``check_pipeline_policy`` on loaded
manifests (what ``flujo validate`` and the operator call), agents built
under an active policy inside a real run (the transport refuses at build
time, before any connection), and data through real runs.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from flujo import AgentManifest, AgentRegistry, Flujo, Pipeline, Step
from flujo.agents.openai import OpenAIAgent
from flujo.agents.pool import ClientPool
from flujo.domain import errors
from flujo.domain.errors import AgentError
from flujo.domain.validation import check_pipeline
from flujo.security import (
    OutputGuard,
    PolicyError,
    PolicyViolation,
    SecurityPolicy,
    check_agent_policy,
    check_input,
    check_output,
    check_pipeline_policy,
    load_policy,
    policy_from_env,
    use_policy,
)
from flujo.security.policy import (
    PolicyConfig,
    PolicyOverrides,
    agent_policy_findings,
    endpoint_problems,
    parse_input,
)
from flujo.spec.agent import AgentSpec
from flujo.spec.loader import format_loc, load_documents

from tests.servers import OpenAIServer

EMBEDDED = SecurityPolicy.embedded()
CLUSTER = SecurityPolicy.cluster()


def openai(endpoint: str, **fields: Any) -> AgentSpec:
    return AgentSpec.model_validate(
        {"type": "openai", "model": "m", "endpoint": endpoint, **fields}
    )


# --- SSRF -----------------------------------------------------------------------

METADATA = [
    "http://169.254.169.254/latest/meta-data",
    "https://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "http://[fd00:ec2::254]/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "https://metadata.google.internal./",
    "http://METADATA.GOOGLE.INTERNAL/",
    "http://100.100.100.200/latest/meta-data",
    "http://2852039166/",  # 169.254.169.254 as one decimal number
    "http://0xA9FEA9FE/",  # … in hex
    "http://[::ffff:169.254.169.254]/",  # IPv4-mapped IPv6
    "http://[64:ff9b::a9fe:a9fe]/",  # NAT64
    "https://[fe80::1]/",
    "https://0.0.0.0:8080/",
]


@pytest.mark.parametrize("url", METADATA)
@pytest.mark.parametrize("policy", [EMBEDDED, CLUSTER], ids=["embedded", "cluster"])
def test_metadata_and_link_local_endpoints_are_always_refused(
    url: str, policy: SecurityPolicy
) -> None:
    problems = endpoint_problems(url, policy, resolve=False)
    assert problems, url
    assert "always refused" in problems[0]
    # even a policy that allows every network class refuses them
    lax = policy.model_copy(
        update={"allow_loopback": True, "allow_private_networks": True, "require_https": False}
    )
    assert endpoint_problems(url, lax, resolve=False)


def test_urls_the_client_cannot_parse_are_refused_too() -> None:
    assert endpoint_problems("http://0251.0376.0251.0376/", CLUSTER) == [
        "endpoint is not a valid URL"
    ]


def test_names_that_resolve_into_forbidden_networks_are_refused() -> None:
    def resolver(address: str) -> Any:
        return lambda host, port: [address]

    cases = {
        "169.254.169.254": "always refused",
        "::ffff:169.254.169.254": "always refused",
        "127.0.0.1": "loopback",
        "10.1.2.3": "private",
        "fd12::1": "private",
    }
    for address, fragment in cases.items():
        problems = endpoint_problems("https://evil.example/v1", CLUSTER, resolver=resolver(address))
        assert problems and fragment in problems[0], (address, problems)
        assert "evil.example" in problems[0]
    assert endpoint_problems("https://ok.example/v1", CLUSTER, resolver=resolver("8.8.8.8")) == []


def test_localhost_resolves_to_loopback_and_is_refused_when_loopback_is_disallowed() -> None:
    problems = endpoint_problems("https://localhost:8443/v1", CLUSTER)
    assert problems and "loopback" in problems[0] and "allowLoopback: false" in problems[0]
    assert endpoint_problems("http://localhost:8000/v1", EMBEDDED) == []


def test_https_is_required_but_embedded_allows_http_to_loopback() -> None:
    assert endpoint_problems("http://127.0.0.1:8000/v1", EMBEDDED) == []
    assert endpoint_problems("http://[::1]:8000/v1", EMBEDDED) == []
    lan = endpoint_problems("http://192.168.1.20:8000/v1", EMBEDDED)
    assert lan and "requireHttps" in lan[-1]
    assert endpoint_problems("https://192.168.1.20:8000/v1", EMBEDDED) == []
    plain = EMBEDDED.model_copy(update={"require_https": False})
    assert endpoint_problems("http://192.168.1.20:8000/v1", plain) == []


def test_allow_lists_and_deny_lists() -> None:
    policy = CLUSTER.merged(
        PolicyOverrides(allowed_hosts=["api.openai.com", "*.svc.cluster.local"])
    )
    assert endpoint_problems("https://api.openai.com/v1", policy, resolve=False) == []
    other = endpoint_problems("https://api.evil.example/v1", policy, resolve=False)
    assert other and "allowedHosts" in other[0]
    # a host named by the administrator may be private (an in-cluster vLLM)
    svc = "https://vllm.ml.svc.cluster.local/v1"
    assert endpoint_problems(svc, policy, resolver=lambda h, p: ["10.96.3.4"]) == []
    # but never a metadata address, whatever its name
    bad = endpoint_problems(svc, policy, resolver=lambda h, p: ["169.254.169.254"])
    assert bad and "always refused" in bad[0]
    cidr = CLUSTER.merged(PolicyOverrides(allowed_cidrs=["10.0.0.0/8"]))
    assert endpoint_problems("https://a.example/", cidr, resolver=lambda h, p: ["10.0.0.9"]) == []
    outside = endpoint_problems("https://a.example/", cidr, resolver=lambda h, p: ["8.8.8.8"])
    assert outside and "allowedCidrs" in outside[0]
    assert "deniedHosts" in endpoint_problems("https://kubernetes.default.svc/", CLUSTER)[0]


def test_messages_never_show_credentials_paths_or_queries() -> None:
    problems = endpoint_problems(
        "http://user:hunter2-pass@169.254.169.254/latest?token=s3cr3t-query", CLUSTER
    )
    text = " ".join(problems)
    assert "user info" not in text and "hunter2" not in text and "s3cr3t" not in text
    assert "embeds credentials" in text


def test_unresolvable_hosts_fail_closed() -> None:
    def fail(host: str, port: int) -> list[str]:
        raise OSError(-2, "Name or service not known")

    problems = endpoint_problems("https://nowhere.example/", CLUSTER, resolver=fail)
    assert problems and "cannot resolve nowhere.example" in problems[0]


# --- agents, checked statically (validation) ------------------------------------


def test_check_agent_policy_names_the_field() -> None:
    spec = openai("http://169.254.169.254/latest/meta-data")
    (problem,) = check_agent_policy("meta", spec, CLUSTER)
    assert problem.startswith("spec.endpoint: ") and "always refused" in problem
    assert "\n" not in problem
    retry = openai("https://api.openai.com/v1", retry={"maxAttempts": 50})
    assert check_agent_policy("r", retry, CLUSTER) == [
        "spec.retry.maxAttempts: 50 exceeds the security policy's maxAttempts (10)"
    ]
    typed = AgentSpec.model_validate({"type": "http", "endpoint": "https://hook.example/"})
    only_llm = CLUSTER.model_copy(update={"allowed_agent_types": ["openai", "builtin"]})
    (problem,) = check_agent_policy("hook", typed, only_llm)
    assert problem.startswith("spec.type: agent type 'http' is not allowed")


def test_endpoints_with_variables_are_checked_when_built_not_when_validated() -> None:
    spec = openai("${BASE_URL:-http://169.254.169.254}/v1")
    assert check_agent_policy("v", spec, CLUSTER) == []


MANIFESTS = """\
apiVersion: flujo.dev/v1alpha1
kind: Agent
metadata: {name: meta}
spec: {type: openai, model: m, endpoint: "http://169.254.169.254/latest/meta-data"}
---
apiVersion: flujo.dev/v1alpha1
kind: Agent
metadata: {name: good}
spec: {type: openai, model: m, endpoint: "https://api.openai.com/v1"}
---
apiVersion: flujo.dev/v1alpha1
kind: Pipeline
metadata: {name: p}
spec:
  steps:
    - name: fetch
      agent: meta
      retry: {maxAttempts: 40}
    - name: refine
      loop:
        maxIterations: 50000
        steps:
          - {name: again, agent: good}
    - name: fan
      parallel:
        branches:
{branches}
    - name: each
      map:
        items: "input"
        maxItems: 20000
        steps:
          - {{name: one, agent: builtin.upper}}
    - {{name: code, agent: mine}}
"""


def test_pipeline_policy_findings_carry_field_paths_and_lines() -> None:
    branches = "\n".join(
        f"          - {{name: b{i}, steps: [{{name: s{i}, agent: builtin.upper}}]}}"
        for i in range(40)
    )
    text = MANIFESTS.replace("{branches}", branches).replace("{{", "{").replace("}}", "}")
    docs = load_documents(text, "p.yaml")
    assert not docs.problems
    (pipeline,) = docs.pipelines
    assert check_pipeline(pipeline.spec) == []
    agents: dict[str, AgentSpec | None] = {a.metadata.name: a.spec for a in docs.agents}
    agents |= {"builtin.upper": None, "mine": None}
    findings = check_pipeline_policy(pipeline.spec, agents, CLUSTER)
    by_loc = {format_loc(f.loc): f.message for f in findings}
    assert set(by_loc) == {
        "spec.steps[0].retry.maxAttempts",
        "spec.steps[1].loop.maxIterations",
        "spec.steps[2].parallel.branches",
        "spec.steps[3].map.maxItems",
        "spec.steps[0].agent",
        "spec.steps[4].agent",
    }
    assert "maxLoopIterations (1000)" in by_loc["spec.steps[1].loop.maxIterations"]
    assert "40 branches" in by_loc["spec.steps[2].parallel.branches"]
    assert by_loc["spec.steps[0].agent"].startswith("agent 'meta': spec.endpoint: ")
    assert "allowPythonCallables: false" in by_loc["spec.steps[4].agent"]
    located = [str(docs.locate(pipeline, f.loc, f.message)) for f in findings]
    assert any(line.startswith("p.yaml:21: spec.steps[1].loop.maxIterations:") for line in located)
    # the embedded profile allows 40 branches and Python code, nothing else here
    embedded = check_pipeline_policy(pipeline.spec, agents, EMBEDDED)
    assert {format_loc(f.loc) for f in embedded} == set(by_loc) - {
        "spec.steps[2].parallel.branches",
        "spec.steps[4].agent",
    }


def test_credential_files_must_stay_inside_the_allowed_directories(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "key").write_text("k")
    outside = tmp_path / "elsewhere"
    outside.write_text("x")
    (secrets / "link").symlink_to(outside)
    policy = EMBEDDED.model_copy(update={"credential_dirs": [str(secrets)]})

    def problems(path: str) -> list[str]:
        spec = openai("https://api.openai.com/v1", apiKey={"file": path})
        return [f.message for f in agent_policy_findings(spec, policy)]

    assert problems(str(secrets / "key")) == []
    assert problems(str(secrets / ".." / "elsewhere"))  # traversal
    assert problems(str(secrets / "link"))  # symlink out of the directory
    assert problems("/etc/passwd")
    assert "outside the policy's credentialDirs" in problems("/etc/passwd")[0]
    header = openai(
        "https://api.openai.com/v1",
        secretHeaders=[{"name": "X-Token", "valueFrom": {"file": "/etc/shadow"}}],
    )
    (finding,) = agent_policy_findings(header, policy)
    assert format_loc(finding.loc) == "spec.secretHeaders[0].valueFrom.file"
    no_files = openai("https://api.openai.com/v1", apiKey={"file": str(secrets / "key")})
    assert "not allowed" in agent_policy_findings(no_files, CLUSTER)[0].message


# --- agents, checked when built (inside a real run) -------------------------------


def _registry(name: str, spec: dict[str, Any]) -> AgentRegistry:
    registry = AgentRegistry()
    registry.register_manifest(
        AgentManifest.model_validate({"metadata": {"name": name}, "spec": spec})
    )
    return registry


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://169.254.169.254/latest/meta-data",
        "http://[fd00:ec2::254]/",
        "http://metadata.google.internal/",
        "https://2852039166/",
    ],
)
def test_a_run_refuses_at_build_what_validation_could_not_see(
    endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a variable hides the endpoint from static checks; building the agent expands it
    monkeypatch.setenv("FLUJO_TEST_ENDPOINT", endpoint)
    spec = {"type": "openai", "model": "m", "endpoint": "${FLUJO_TEST_ENDPOINT}"}
    with use_policy(EMBEDDED):
        result = Flujo(Pipeline([Step("ask", "llm")]), agent_registry=_registry("llm", spec)).run()
    assert result.status == "failed" and result.outcome.error_class == errors.CONFIG
    message = result.outcome.message or ""
    assert "refused by the security policy: spec.endpoint " in message
    assert "always refused" in message and "\n" not in message
    assert result.state.launches == 1


def test_loopback_server_is_not_called_when_loopback_is_disallowed(
    openai_server: OpenAIServer,
) -> None:
    spec = {"type": "openai", "model": "m", "endpoint": openai_server.base_url}
    registry = _registry("llm", spec)
    with use_policy(CLUSTER), pytest.raises(AgentError) as caught:
        registry.get("llm")  # what every executor does before the first call
    assert caught.value.error_class == errors.CONFIG and "loopback" in caught.value.message
    assert openai_server.calls == 0
    with use_policy(EMBEDDED):
        allowed = Flujo(Pipeline([Step("ask", "llm")]), agent_registry=registry).run("q")
    assert allowed.success and openai_server.calls == 1


def test_no_active_policy_means_no_build_checks() -> None:
    spec = openai("http://169.254.169.254/v1")
    agent = OpenAIAgent("meta", spec, ClientPool())  # nothing active: library use
    assert agent.endpoint.url.endswith("/chat/completions")
    with use_policy(EMBEDDED), pytest.raises(AgentError) as caught:
        OpenAIAgent("meta", spec, ClientPool())
    assert caught.value.error_class == errors.CONFIG
    assert "openai agent 'meta': refused by the security policy" in caught.value.message


def test_credential_file_outside_the_allowed_directory_is_refused_at_build(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("sk-file-key-123456")
    spec = openai("http://127.0.0.1:9/v1", apiKey={"file": str(key)})
    policy = EMBEDDED.model_copy(update={"credential_dirs": [str(tmp_path / "secrets")]})
    with use_policy(policy), pytest.raises(AgentError) as caught:
        OpenAIAgent("llm", spec, ClientPool())
    assert "spec.apiKey.file:" in caught.value.message
    assert "sk-file-key" not in caught.value.message


# --- data -----------------------------------------------------------------------


def test_input_size_utf8_and_nesting() -> None:
    policy = EMBEDDED.model_copy(update={"max_input_bytes": 1000})
    assert check_input("x" * 900, policy) == []
    assert "larger than" in check_input("x" * 1001, policy)[0]
    assert "larger than" in check_input({"k": ["é" * 501]}, policy)[0]  # bytes, not chars
    assert "not valid UTF-8" in check_input("ok \udcff", policy)[0]
    assert "not valid UTF-8" in check_input({"a": ["\ud800"]}, policy)[0]
    deep: Any = 1
    for _ in range(200):
        deep = [deep]
    assert "nested deeper" in check_input(deep, EMBEDDED)[0]
    assert check_output("y" * 2000, EMBEDDED) == []
    assert "larger than" in check_output("y" * (1 << 20 + 1), CLUSTER)[0]


def test_parse_input_reads_like_the_cli() -> None:
    policy = EMBEDDED.model_copy(update={"max_input_bytes": 100})
    assert parse_input(b'{"a": [1]}', policy, as_json=True) == {"a": [1]}
    assert parse_input("plain", policy) == "plain"
    cases: list[tuple[Any, bool, str]] = [
        (b"x" * 101, False, "larger than 100 bytes"),
        (b"\xff\xfe", False, "not UTF-8 (byte 0)"),
        ("\udcff", False, "not valid UTF-8"),
        ("[" * 50 + "]" * 50, True, ""),
        (b"{nope", True, "is not JSON"),
    ]
    for raw, as_json, fragment in cases:
        if not fragment:
            continue
        with pytest.raises(PolicyViolation, match=re.escape(fragment)) as caught:
            parse_input(raw, policy, as_json=as_json, source="--input")
        assert str(caught.value).startswith("--input")
    deep = "[" * 100_000 + "]" * 100_000
    big = EMBEDDED.model_copy(update={"max_input_bytes": 1 << 20})
    with pytest.raises(PolicyViolation, match="nested") as caught:
        parse_input(deep, big, as_json=True, source="--input-json")
    assert str(caught.value).startswith("--input-json: ")


def test_oversized_outputs_fail_the_step_with_its_usage() -> None:
    policy = EMBEDDED.model_copy(update={"max_output_bytes": 1000})
    registry = AgentRegistry()
    entry = registry.register("big", lambda data: "z" * 5000)
    assert entry.agent is not None
    registry.register("guarded", OutputGuard(entry.agent, "big", policy))
    registry.register("small", OutputGuard(entry.agent, "big", EMBEDDED))
    result = Flujo(Pipeline([Step("a", "guarded")]), agent_registry=registry).run("x")
    assert result.status == "failed" and result.outcome.error_class == errors.PERMANENT
    assert "larger than the security policy's limit of 1000 bytes" in str(result.outcome.message)
    assert "zzzz" not in json.dumps(result.to_dict())
    ok = Flujo(Pipeline([Step("a", "small")]), agent_registry=registry).run("x")
    assert ok.success and len(ok.output) == 5000


# --- loading --------------------------------------------------------------------


def test_profiles_and_documented_defaults() -> None:
    assert EMBEDDED.require_https and EMBEDDED.allow_http_loopback
    assert EMBEDDED.allow_python_callables and EMBEDDED.allow_private_networks
    assert not CLUSTER.allow_python_callables and not CLUSTER.allow_loopback
    assert not CLUSTER.allow_private_networks and not CLUSTER.allow_http_loopback
    assert (CLUSTER.max_loop_iterations, CLUSTER.max_output_bytes) == (1000, 1 << 20)
    docs = (Path(__file__).resolve().parent.parent / "docs" / "security.md").read_text()
    for name, field in SecurityPolicy.model_fields.items():
        assert f"`{field.alias or name}`" in docs, f"docs/security.md misses {field.alias}"


def test_policy_file_with_namespace_overrides_merged_field_by_field(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(
        "profile: cluster\n"
        "defaults:\n  allowedHosts: [api.openai.com]\n  maxLoopIterations: 500\n"
        "namespaces:\n  research:\n    maxLoopIterations: 5000\n    allowPrivateNetworks: true\n",
        encoding="utf-8",
    )
    config = load_policy(path)
    base, research = config.policy(), config.policy("research")
    assert base.max_loop_iterations == 500 and not base.allow_private_networks
    assert research.max_loop_iterations == 5000 and research.allow_private_networks
    assert research.allowed_hosts == ["api.openai.com"]  # inherited
    assert research.max_attempts == CLUSTER.max_attempts  # from the profile
    assert config.policy("unknown-ns") == base
    flat = tmp_path / "flat.json"
    flat.write_text(json.dumps({"requireHttps": False}))
    assert not load_policy(flat).policy().require_https


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("maxLoopIterations: lots\n", "maxLoopIterations"),
        ("allowedCidrs: [not-a-cidr]\n", "not a network"),
        ("allowedAgentTypes: [openAI]\n", "unknown agent type 'openAI'"),
        ("surprise: 1\n", "surprise"),
        ("- a list\n", "must be a mapping"),
        ("a: [unclosed\n", "not a YAML/JSON document"),
    ],
)
def test_bad_policy_files_are_one_line_errors(tmp_path: Path, content: str, fragment: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(content)
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert fragment in str(caught.value) and "\n" not in str(caught.value)
    assert str(caught.value).startswith(str(path))


def test_policy_from_environment(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("maxAttempts: 3\n")
    env = {
        "FLUJO_SECURITY_POLICY": str(path),
        "FLUJO_SECURITY_PROFILE": "cluster",
        "FLUJO_SECURITY_ALLOWED_HOSTS": "api.openai.com, *.internal",
        "FLUJO_SECURITY_REQUIRE_HTTPS": "false",
        "FLUJO_SECURITY_MAX_INPUT_BYTES": "2048",
    }
    policy = policy_from_env(env).policy()
    assert policy.max_attempts == 3 and not policy.allow_loopback  # file + cluster profile
    assert policy.allowed_hosts == ["api.openai.com", "*.internal"]
    assert not policy.require_https and policy.max_input_bytes == 2048
    inline = policy_from_env({"FLUJO_SECURITY_POLICY": '{"maxMapItems": 7}'}).policy()
    assert inline.max_map_items == 7 and inline.allow_loopback  # embedded by default
    assert policy_from_env({}, profile="cluster").policy() == CLUSTER
    for bad in (
        {"FLUJO_SECURITY_REQUIRE_HTTPS": "maybe"},
        {"FLUJO_SECURITY_MAX_ATTEMPTS": "ten"},
        {"FLUJO_SECURITY_MAX_ATTEMPTS": "0"},
        {"FLUJO_SECURITY_PROFILE": "cloud"},
        {"FLUJO_SECURITY_POLICY": "{not json"},
        {"FLUJO_SECURITY_POLICY": str(tmp_path / "missing.yaml")},
    ):
        with pytest.raises(PolicyError):
            policy_from_env(bad)


def test_policy_config_round_trips_through_json() -> None:
    config = PolicyConfig.model_validate(
        {"profile": "cluster", "namespaces": {"a": {"maxAttempts": 2}}}
    )
    again = PolicyConfig.model_validate(json.loads(config.model_dump_json(by_alias=True)))
    assert again.policy("a").max_attempts == 2


def test_the_active_policy_reaches_agents_built_in_tasks_and_is_scoped() -> None:
    from flujo.security import active_policy

    assert active_policy() is None
    with use_policy(CLUSTER) as chosen:
        assert active_policy() is chosen
    assert active_policy() is None
    assert os.environ.get("FLUJO_SECURITY_POLICY") is None  # tests run without one
