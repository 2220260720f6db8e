"""The template sandbox under attack: SSTI payloads and work bombs.

Every payload goes through the real paths a pipeline author can reach — the
renderer, a real ``Flujo(...).run()`` and the ``flujo run`` command — and
must end as a ``template`` failure (or a validation error) with a one-line
message, no traceback, and nothing from Python's internals in any output.
Bombs must be refused by the deterministic work counters, never by luck.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from flujo import Flujo, PipelineManifest, PipelineValidationError
from flujo.domain import templates
from flujo.domain.templates import (
    MAX_CALL_DEPTH,
    MAX_OPERATIONS,
    MAX_RANGE,
    MAX_WORK_CHARS,
    TemplateProblem,
    evaluate,
    private_attributes,
    render_value,
    undeclared_names,
)
from flujo.security import SecurityPolicy, check_pipeline_policy

ROOT = Path(__file__).resolve().parent.parent
CANARY_ENV = "FLUJO_TEST_TEMPLATE_CANARY"
CANARY = "canary-5b1f0c9e-env-value"

# Strings that betray a sandbox escape: Python internals rendered as text.
LEAK_MARKERS = ("<class", "<function", "<module", "__builtins__", "<built-in", CANARY)

SSTI = [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ input.__class__.__base__.__subclasses__() }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ cycler.__init__.__globals__.os.environ }}",
    "{{ lipsum.__globals__ }}",
    "{{ lipsum.__globals__['os'].environ }}",
    "{{ joiner.__init__.__globals__ }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ self._TemplateReference__context }}",
    "{{ self.__dict__ }}",
    "{{ config }}",
    "{{ config.items() }}",
    "{{ request.application.__globals__ }}",
    "{{ range.__globals__ }}",
    "{{ dict.__base__.__subclasses__() }}",
    "{{ input|attr('__class__') }}",
    "{{ input['__class__']['__mro__'] }}",
    "{{ '{0.__class__.__mro__}'.format(input) }}",
    "{{ input.format_map.__self__.__class__ }}",
    "{{ (input.upper).__globals__ }}",
    "{% for c in ''.__class__.__mro__ %}{{ c }}{% endfor %}",
    "{% set x = input.__class__ %}{{ x }}",
    "{% include '/etc/passwd' %}",
    "{% import 'os' as os %}{{ os }}",
    "{% extends '/etc/hosts' %}",
    "{{ range(10**9)|list }}",
    "{{ dict }}",
    "{{ input.upper }}",
    "prefix {{ lipsum(n=1000) }}",
]


@pytest.fixture(autouse=True)
def _canary_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CANARY_ENV, CANARY)


def _no_leak(text: str) -> None:
    for marker in LEAK_MARKERS:
        assert marker not in text, f"{marker!r} leaked: {text[:300]}"


def _pipeline(template: str) -> PipelineManifest:
    return PipelineManifest.model_validate(
        {
            "metadata": {"name": "ssti"},
            "spec": {"steps": [{"name": "a", "agent": "builtin.echo", "input": template}]},
        }
    )


# --- the renderer -------------------------------------------------------------


@pytest.mark.parametrize("payload", SSTI)
def test_ssti_payloads_fail_with_one_line_template_problems(payload: str) -> None:
    with pytest.raises(TemplateProblem) as caught:
        render_value(payload, {"input": "hi", "steps": {}})
    message = str(caught.value)
    assert "\n" not in message
    _no_leak(message)


@pytest.mark.parametrize("payload", SSTI)
def test_ssti_payloads_fail_a_real_run_as_template_or_validation(payload: str) -> None:
    try:
        result = Flujo(_pipeline(payload)).run("hi")
    except PipelineValidationError as exc:
        # caught before running: an unknown name (cycler, lipsum, config …), or a
        # private attribute once the security policy is part of validation
        assert any(
            reason in str(exc)
            for reason in ("unknown variable", "invalid template", "private attribute")
        ), str(exc)
        _no_leak(str(exc))
        return
    assert result.status == "failed"
    assert result.outcome.error_class == "template"
    _no_leak(json.dumps(result.to_dict(), default=str))


def test_removed_globals_and_self_are_unknown_to_validation() -> None:
    for name in ("lipsum", "cycler", "joiner", "namespace", "self", "config", "request"):
        assert name in undeclared_names("{{ " + name + " }}"), name
    assert undeclared_names("{{ range(3)|list }} {{ dict(a=1) }}") == set()


def test_private_attribute_reads_are_rejected_before_running() -> None:
    assert private_attributes("{{ ''.__class__.__mro__ }}") == {"__class__", "__mro__"}
    assert private_attributes("x.__globals__", expression=True) == {"__globals__"}
    assert private_attributes("{{ input['_secret'] }}") == {"_secret"}
    assert private_attributes("{{ input.upper() }}") == set()
    findings = check_pipeline_policy(
        _pipeline("{{ input.__class__ }}").spec, {"builtin.echo": None}, SecurityPolicy()
    )
    assert [f.loc for f in findings] == [("spec", "steps", 0, "input")]
    assert "'__class__'" in findings[0].message


def test_undefined_and_callables_never_become_step_inputs() -> None:
    for expression in ("nothing_here", "input.missing", "[input.missing]", "{'a': input.nope}"):
        with pytest.raises(TemplateProblem):
            evaluate(expression, {"input": {"x": 1}})
    for expression in ("range", "input.keys", "dict"):
        with pytest.raises(TemplateProblem, match="not data"):
            evaluate(expression, {"input": {"x": 1}})
    assert evaluate("input.x + 1", {"input": {"x": 1}}) == 2


def test_ordinary_templates_still_work() -> None:
    ctx: dict[str, Any] = {"input": "a b c", "steps": {"s": {"output": [1, 2, 3]}}}
    text = (
        "{% for w in input.split() %}{{ w|upper }}{{ '-' if not loop.last }}{% endfor %} "
        "{{ steps.s.output|join(',') }} {{ '%05.1f'|format(3.14159) }} {{ '{:>6}'.format('x') }} "
        "{{ input|replace('b', 'B') }} {{ (input ~ '!')|center(9) }} {{ 2 ** 10 }} "
        "{% macro twice(x) %}{{ x }}{{ x }}{% endmacro %}{{ twice('ab') }}"
    )
    centred = "a b c!".center(9)
    assert render_value(text, ctx) == f"A-B-C 1,2,3 003.1      x a B c {centred} 1024 abab"
    assert render_value({"k": ["{{ input|length }}"]}, ctx) == {"k": [5]}


# --- work bombs ---------------------------------------------------------------

MEGABYTE = "a b\n" * 262_144

BOMBS = {
    "nested loops": "{% for i in range(10000) %}{% for j in range(10000) %}x{% endfor %}"
    "{% endfor %}",
    "loop over a large input": "{% for c in input %}{% for d in input %}{% endfor %}{% endfor %}",
    "infinite macro recursion": "{% macro m(n) %}{{ m(n) }}{% endmacro %}{{ m(1) }}",
    "exponential macro recursion": "{% macro m(n) %}{% if n %}{{ m(n-1) }}{{ m(n-1) }}"
    "{% endif %}{% endmacro %}{{ m(40) }}",
    "recursive loop": "{% for x in [1] recursive %}{{ loop([x]) }}{% endfor %}",
    "captured output": "{% set x %}{% for i in range(10000) %}{{ input }}{% endfor %}{% endset %}"
    "{{ x|length }}",
    "captured literal text": "{% set x %}{% for i in range(10000) %}" + "A" * 4096 + "{% endfor %}"
    "{% endset %}{{ x|length }}",
    "huge range": "{{ range(10**9)|list }}",
    "string repetition": "{{ ('a' * 10**9)|length }}",
    "list repetition": "{{ ([1] * 10**9)|length }}",
    "integer power": "{{ 9 ** (9 ** 9) }}",
    "replace amplification": "{{ input|replace('a', input)|length }}",
    "replace method amplification": "{{ input.replace('a', input)|length }}",
    "join amplification": "{{ range(10000)|join(input)|length }}",
    "join method amplification": "{{ input.join(range(10000)|map('string'))|length }}",
    "center width": "{{ 'x'|center(10**9)|length }}",
    "ljust width": "{{ 'x'.ljust(10**9)|length }}",
    "printf width": "{{ '%0999999999d' % 1 }}",
    "printf star width": "{{ '%*d' % (10**9, 1) }}",
    "format filter width": "{{ '%999999999s'|format('x') }}",
    "format method width": "{{ '{:>999999999}'.format(1) }}",
    "format nested width": "{{ '{:>{w}}'.format(1, w=10**9) }}",
    "indent amplification": "{{ input|indent(10**6)|length }}",
    "expandtabs": "{{ ('\t' * 100).expandtabs(10**6)|length }}",
    "translate amplification": "{{ input.translate({97: input})|length }}",
    "batch fill": "{{ [1]|batch(10**9, 0)|list|length }}",
    "slice count": "{{ [1]|slice(10**9)|list|length }}",
    "tojson indent": "{{ [[[[1]]]]|tojson(indent=10**8)|length }}",
    "many filter results": "{{ range(10000)|map('center', 100000)|list|length }}",
    "concatenation in a loop": "{% for i in range(10000) %}{% if input ~ input %}{% endif %}"
    "{% endfor %}",
    "output": "{% for i in range(10000) %}{{ input }}{% endfor %}",
    "deeply nested expression": "{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}",
}


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_work_bombs_are_refused_by_counters(name: str) -> None:
    with pytest.raises(TemplateProblem) as caught:
        render_value(BOMBS[name], {"input": MEGABYTE, "steps": {}})
    message = str(caught.value)
    assert "\n" not in message and len(message) < 400


def test_limits_are_what_the_docs_say() -> None:
    assert (MAX_RANGE, MAX_OPERATIONS, MAX_CALL_DEPTH) == (10_000, 100_000, 32)
    assert MAX_WORK_CHARS == 16 << 20
    assert len(render_value("{{ range(10000)|list }}", {})) == MAX_RANGE
    with pytest.raises(TemplateProblem, match="range"):
        render_value("{{ range(10001)|list }}", {})


def test_budgets_are_deterministic_and_per_render() -> None:
    # the same template fails or succeeds identically, whatever ran before
    almost = "{% for i in range(8000) %}{% for j in range(10) %}{% endfor %}{% endfor %}ok"
    for _ in range(3):
        assert render_value(almost, {}) == "ok"
    over = "{% for i in range(10000) %}{% for j in range(10) %}{% endfor %}{% endfor %}ok"
    for _ in range(3):
        with pytest.raises(TemplateProblem, match=str(MAX_OPERATIONS)):
            render_value(over, {})


def test_one_budget_covers_a_whole_input_value() -> None:
    # 20 strings of 60,000 iterations each: fine alone, refused together
    part = "{% for i in range(6000) %}{% for j in range(10) %}{% endfor %}{% endfor %}"
    assert render_value(part, {}) == ""
    with pytest.raises(TemplateProblem):
        render_value([part] * 2, {})


def test_messages_quote_at_most_the_start_of_a_long_template() -> None:
    text = "{{ nope }}" + " filler" * 10_000
    with pytest.raises(TemplateProblem) as caught:
        render_value(text, {})
    assert len(str(caught.value)) < 300


def test_random_filter_is_gone_rendering_is_deterministic() -> None:
    with pytest.raises(TemplateProblem):
        render_value("{{ [1, 2, 3]|random }}", {})
    assert "random" not in templates._env.filters


# --- through the command line -------------------------------------------------


def _write(tmp_path: Path, name: str, template: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        "apiVersion: flujo.dev/v1alpha1\nkind: Pipeline\nmetadata: {name: p}\nspec:\n"
        "  steps:\n    - name: a\n      agent: builtin.echo\n"
        f"      input: {json.dumps(template)}\n",
        encoding="utf-8",
    )
    return path


CLI_PAYLOADS = {
    "mro": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "format": "{{ '{0.__class__.__init__.__globals__}'.format(input) }}",
    "attr": "{{ input|attr('__class__') }}",
    "range": "{{ range(10**9)|list }}",
    "loops": "{% for i in range(10000) %}{% for j in range(10000) %}x{% endfor %}{% endfor %}",
    "macro": "{% macro m(n) %}{{ m(n) }}{% endmacro %}{{ m(1) }}",
}


@pytest.mark.parametrize("name", sorted(CLI_PAYLOADS))
@pytest.mark.parametrize("as_json", [False, True])
def test_cli_run_fails_with_class_template_and_no_traceback(
    tmp_path: Path, name: str, as_json: bool
) -> None:
    path = _write(tmp_path, name, CLI_PAYLOADS[name])
    args = [sys.executable, "-m", "flujo", "run", str(path), "--input", "hi"]
    env = {**os.environ, CANARY_ENV: CANARY}
    proc = subprocess.run(
        [*args, *(["--json"] if as_json else [])],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
    )
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1
    _no_leak(proc.stdout + proc.stderr)
    if proc.returncode == 2:  # refused by validation (private attributes, with the policy)
        assert "template reads private attribute" in proc.stderr and proc.stdout == ""
        return
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("error: run failed: step a failed (template): ")
    if as_json:
        assert json.loads(proc.stdout)["errorClass"] == "template"
    else:
        assert proc.stdout == ""
    _no_leak(proc.stdout + proc.stderr)
