"""Fuzzing the untrusted inputs: manifests, templates and command-line inputs.

Properties: loading and checking any YAML text never raises (problems are
data), rendering any template raises nothing but ``TemplateProblem``, a
random but valid pipeline runs to an outcome, and ``flujo`` never prints a
traceback whatever the input.  Time per case is bounded by hypothesis'
deadline (in-process) and by the subprocess timeout (CLI).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from flujo import Flujo, PipelineValidationError
from flujo.domain.templates import (
    TemplateProblem,
    private_attributes,
    referenced_steps,
    render_value,
    undeclared_names,
)
from flujo.domain.validation import check_agents, check_pipeline
from flujo.security import SecurityPolicy, check_agent_policy, check_input, check_pipeline_policy
from flujo.spec.loader import load_documents
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
POLICIES = (SecurityPolicy.embedded(), SecurityPolicy.cluster())
FAST = settings(
    max_examples=150,
    deadline=timedelta(seconds=5),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

KEYS = [
    "apiVersion", "kind", "metadata", "name", "namespace", "spec", "steps", "agent", "input",
    "loop", "maxIterations", "exitWhen", "parallel", "branches", "map", "items", "maxItems",
    "conditional", "condition", "default", "retry", "maxAttempts", "retryOn", "fallback",
    "timeoutSeconds", "type", "endpoint", "model", "apiKey", "env", "file", "secretKeyRef",
    "responses", "output", "builtin", "config", "usageLimits", "maxCostUsd", "merge",
]  # fmt: skip
JINJA = [
    "{{", "}}", "{%", "%}", "for", "in", "endfor", "if", "endif", "macro", "endmacro", "set",
    "input", "steps", "output", "range(", ")", "(", "'", '"', "|", "join", "upper", "~", "*",
    "**", "%", ".", "__class__", "[", "]", "10**9", "loop", "self", "lipsum", " ", "x", "1",
]  # fmt: skip

text = st.text(max_size=40)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=False, allow_infinity=False),
    text,
    st.lists(st.sampled_from(JINJA), max_size=12).map("".join),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), text), children, max_size=5),
    ),
    max_leaves=25,
)
documents = st.fixed_dictionaries(
    {
        "apiVersion": st.sampled_from(["flujo.dev/v1alpha1", "v1", ""]),
        "kind": st.sampled_from(["Pipeline", "Agent", "PipelineRun", "Secret"]),
        "metadata": st.fixed_dictionaries({"name": st.sampled_from(["p", "a", "BAD NAME", ""])}),
        "spec": values,
    }
)


def _check_everything(source: str) -> None:
    docs = load_documents(source, "fuzz.yaml")
    agents: dict[str, Any] = {a.metadata.name: a.spec for a in docs.agents}
    for agent in docs.agents:
        for policy in POLICIES:
            check_agent_policy(agent.metadata.name, agent.spec, policy)
    for pipeline in docs.pipelines:
        findings = check_pipeline(pipeline.spec) + check_agents(pipeline.spec, agents)
        for finding in findings:
            str(docs.locate(pipeline, finding.loc, finding.message))
        for policy in POLICIES:
            check_pipeline_policy(pipeline.spec, agents, policy)


@FAST
@given(st.lists(documents, min_size=1, max_size=3))
def test_random_manifests_never_raise(docs: list[dict[str, Any]]) -> None:
    _check_everything(yaml.safe_dump_all(docs, allow_unicode=True))


@FAST
@given(st.text(max_size=400))
def test_random_text_never_raises(source: str) -> None:
    _check_everything(source)


PIPELINE = {
    "apiVersion": "flujo.dev/v1alpha1",
    "kind": "Pipeline",
    "metadata": {"name": "p"},
    "spec": {
        "steps": [
            {"name": "a", "agent": "builtin.echo", "input": None},
            {
                "name": "loop",
                "loop": {
                    "maxIterations": 3,
                    "exitWhen": None,
                    "steps": [{"name": "b", "agent": "builtin.upper"}],
                },
            },
            {
                "name": "fan",
                "map": {
                    "items": None,
                    "maxItems": 5,
                    "steps": [{"name": "c", "agent": "builtin.length"}],
                },
            },
        ]
    },
}


def _fill(template: Any, strings: list[str]) -> Any:
    """``template`` with every None leaf replaced by the next random string."""
    if template is None:
        return strings.pop() if strings else ""
    if isinstance(template, dict):
        return {k: _fill(v, strings) for k, v in template.items()}
    if isinstance(template, list):
        return [_fill(v, strings) for v in template]
    return template


fragments = st.lists(st.sampled_from(JINJA), max_size=15).map("".join)


def slot(*valid: str) -> st.SearchStrategy[str]:
    """Mostly sensible values for one field, sometimes garbage."""
    sensible = st.sampled_from(valid)
    return st.one_of(*[sensible] * 8, fragments, text)


SLOTS = st.tuples(
    slot("{{ input }}", "{{ input|upper }}", "x {{ input }} y", "{{ [input, input] }}", "{{ 1 }}"),
    slot("output == 'X'", "iteration >= 2", "output|length > 3", "'A' in output", "false"),
    slot("input", "input|list", "[1, 2, 3]", "input.split()", "range(3)|list", "input.keys()|list"),
)


@settings(FAST, max_examples=150)
@given(SLOTS, values)
def test_random_strings_in_a_valid_pipeline_end_in_an_outcome(
    strings: tuple[str, str, str], data: Any
) -> None:
    # _fill pops from the end: items, exitWhen, input
    source = yaml.safe_dump(_fill(PIPELINE, list(strings)[::-1]), allow_unicode=True)
    docs = load_documents(source)
    if docs.problems:
        event("rejected by the loader")
        return
    (manifest,) = docs.pipelines
    try:
        flujo = Flujo(manifest)
    except PipelineValidationError as exc:
        event("rejected by validation")
        assert "\n" not in str(exc).replace("; ", "")
        return
    result = flujo.run(data)
    event(f"ran: {result.status} {result.outcome.error_class}")
    assert result.status in ("succeeded", "failed")
    if result.outcome.message:
        assert "Traceback" not in result.outcome.message
    json.dumps(result.to_dict(), default=str)


@settings(FAST, max_examples=300)
@given(fragments, values)
def test_random_templates_raise_only_template_problems(template: str, data: Any) -> None:
    for call in (
        lambda: render_value(template, {"input": data, "steps": {}, "output": data}),
        lambda: referenced_steps(template),
        lambda: undeclared_names(template),
        lambda: private_attributes(template),
        lambda: undeclared_names(template, expression=True),
    ):
        try:
            call()
        except TemplateProblem as exc:
            assert "\n" not in str(exc)


@settings(FAST, max_examples=200)
@given(values)
def test_input_checks_never_raise(data: Any) -> None:
    for policy in POLICIES:
        check_input(data, policy)


# --- the command line, a bounded number of cases --------------------------------

LINEAR = ROOT / "examples" / "linear.yaml"
CLI = settings(max_examples=6, deadline=None, database=None)


def _run(*args: str | bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "flujo", "run", str(LINEAR), "--quiet", *args],
        capture_output=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
    )


def _no_traceback(proc: subprocess.CompletedProcess[bytes]) -> None:
    stderr = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode in (0, 1, 2), stderr
    assert "Traceback" not in stderr, stderr
    for line in stderr.splitlines():
        assert line.startswith("error: "), stderr


cli_text = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
    max_size=200,
)


@CLI
@given(cli_text)
def test_cli_random_text_input(data: str) -> None:
    _no_traceback(_run("--input", data))


@CLI
@given(values)
def test_cli_random_json_input(data: Any) -> None:
    _no_traceback(_run("--input-json", json.dumps(data)))


@CLI
@given(st.binary(max_size=200))
def test_cli_random_input_file(tmp_path_factory: Any, raw: bytes) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "input.json"
    path.write_bytes(raw)
    _no_traceback(_run("--input-file", str(path)))
