"""The documentation is tested like code.

- The site builds with ``mkdocs build --strict`` (broken links and anchors,
  pages missing from the nav fail); skipped only where mkdocs is not installed.
- The generated reference pages (``scripts/gen_docs.py``) are current, and
  every ``FLUJO_*`` variable the code reads is documented.
- Every fenced snippet of README.md, CONTRIBUTING.md and docs/ is executed or
  validated, per the convention in CONTRIBUTING.md ("Documentation"):
  Python runs, YAML passes ``flujo validate``, shell is syntax-checked and its
  ``flujo`` commands parsed against the CLI (``<!-- run -->`` executes it),
  ``console`` sessions run and their output must match.
- ``flujo init``, ``flujo explain``, dry runs and error excerpts
  (``flujo.cli.devx``) do what the docs say.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import typer
import yaml
from flujo.agents.registry import AgentRegistry
from flujo.cli import devx
from flujo.runtime import Flujo
from flujo.spec.loader import Problem, load_documents, load_files
from typer.testing import CliRunner

from tests.servers.openai_server import OpenAIServer

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
BIN = Path(sys.executable).parent
TIMEOUT = 90

# --- the snippet convention (documented in CONTRIBUTING.md) ----------------------

PYTHON = {"python", "py"}
YAML = {"yaml", "yml"}
SHELL = {"bash", "sh", "shell"}
CONSOLE = {"console"}
JSON = {"json"}
NOT_CODE = {"", "text", "txt", "output", "promql", "markdown", "md"}
"""Output, diagrams and formats: not run. Commands never go in these blocks."""

DIRECTIVE = re.compile(r"^\s*<!--\s*([a-z-]+)\s*(?::\s*(.*?))?\s*-->\s*$")
KNOWN_DIRECTIVES = {
    "fragment", "run", "file", "setup", "agents", "invalid", "helm-values", "model",
}  # fmt: skip

# Pages this suite may not edit carry no directives yet; until their owners add
# them in the page, the directive is given here, keyed by the page and the
# start of the snippet's first non-empty line. (Each entry is what the page
# should say.)
EXTERNAL_DIRECTIVES: dict[tuple[str, str], dict[str, str]] = {
    # README's tour: run it, with the notes file its third command reads.
    ("README.md", "flujo run examples/refine-loop.yaml --input rivers"): {
        "run": "",
        "setup": "printf 'Flujo runs pipelines. Steps call agents.' > notes.txt",
    },
    # The writer agent of this example is defined in examples/refine-loop.yaml.
    ("README.md", "apiVersion: flujo.dev/v1alpha1"): {"fragment": ""},
    ("docs/helm.md", "# my-values.yaml"): {"helm-values": "charts/flujo"},
    ("docs/observability.md", "from flujo import Flujo"): {"fragment": ""},
    ("docs/transcripts.md", "from flujo.transcript import render_transcript, transcript_of"): {
        "fragment": ""
    },
    ("docs/security.md", "profile: cluster"): {"model": "flujo.security.policy:PolicyConfig"},
    ("docs/security.md", '{"v":1,'): {"model": "flujo.security.audit:audit_event_adapter"},
}


@dataclass
class Snippet:
    page: str
    line: int
    lang: str
    text: str
    directives: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def first_line(self) -> str:
        return next((ln.strip() for ln in self.text.splitlines() if ln.strip()), "")


def _external(snippet: Snippet) -> dict[str, str] | None:
    for (page, start), directives in EXTERNAL_DIRECTIVES.items():
        if page == snippet.page and snippet.first_line.startswith(start):
            return directives
    return None


def doc_pages() -> list[Path]:
    pages = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted(DOCS.rglob("*.md"))]
    return [p for p in pages if p.exists()]


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.as_posix()


def parse_snippets(path: Path) -> list[Snippet]:
    """Every fenced block of a Markdown page, with the directives just above it."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out: list[Snippet] = []
    i = 0
    while i < len(lines):
        opening = re.match(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)[^`]*$", lines[i])
        if not opening:
            i += 1
            continue
        indent, fence, lang = opening.group(1), opening.group(2), opening.group(3).lower()
        directives: dict[str, str] = {}
        j = i - 1
        while j >= 0 and (m := DIRECTIVE.match(lines[j])):
            directives.setdefault(m.group(1), m.group(2) or "")
            j -= 1
        body: list[str] = []
        k = i + 1
        while k < len(lines) and not re.match(
            rf"^\s*{re.escape(fence[0])}{{{len(fence)},}}\s*$", lines[k]
        ):
            line = lines[k]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            k += 1
        snippet = Snippet(_rel(path), i + 1, lang, "\n".join(body) + "\n", directives)
        external = _external(snippet)
        if external is not None and not directives:
            snippet.directives = dict(external)
        out.append(snippet)
        i = k + 1
    return out


# --- running things in a page's sandbox -----------------------------------------------


def sandbox_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENAI_", "OTEL_", "FLUJO_", "PYTEST_"))
    }
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        NO_COLOR="1",
        COLUMNS="120",
        PYTHONUNBUFFERED="1",
        PYTHONHASHSEED="0",
    )
    return env


def make_sandbox(tmp: Path) -> Path:
    """A page's working directory: a copy of examples/, nothing else of the repository."""
    shutil.copytree(ROOT / "examples", tmp / "examples")
    return tmp


def sh(command: str, cwd: Path, *, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["bash", "-eo", "pipefail", "-c", command],
        cwd=cwd,
        env=sandbox_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"exit {proc.returncode}: {command}\n--- stdout\n{proc.stdout}\n--- stderr\n"
            f"{proc.stderr}"
        )
    return proc


# --- flujo commands inside shell text ---------------------------------------------------

_SEPARATORS = set(";&|()\n")


def flujo_invocations(script: str) -> list[list[str]]:
    """The argument lists of every ``flujo …`` (or ``python -m flujo …``) command in a
    shell script; redirections and what follows them are dropped."""
    lexer = shlex.shlex(script.replace("\\\n", " "), posix=True, punctuation_chars=";&|()<>\n")
    lexer.whitespace = " \t\r"
    lexer.whitespace_split = True
    lexer.commenters = ""  # shlex's comments swallow the newline that ends a command
    commands: list[list[str]] = [[]]
    in_comment = False
    for token in lexer:
        if token and set(token) <= _SEPARATORS:
            in_comment = in_comment and "\n" not in token
            if not in_comment:
                commands.append([])
        elif in_comment or token.startswith("#"):
            in_comment = True
        else:
            commands[-1].append(token)
    found = []
    for words in commands:
        while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
            words = words[1:]  # VAR=value before the command
        if words[:1] in (["time"], ["exec"]):
            words = words[1:]
        if len(words) >= 3 and words[0].endswith("python") and words[1:3] == ["-m", "flujo"]:
            words = ["flujo", *words[3:]]
        if not words or not (words[0] == "flujo" or words[0].endswith("/flujo")):
            continue
        args: list[str] = []
        for word in words[1:]:
            if set(word) <= set("<>&"):
                if args and args[-1].isdigit():
                    args.pop()
                break
            args.append(word)
        found.append(args)
    return found


def cli_problem(args: list[str]) -> str | None:
    """Why ``flujo ARGS`` would be refused by the CLI's parser (None: it parses)."""
    from flujo.cli.app import app

    command: Any = typer.main.get_command(app)
    ctx: Any = command.context_class(command, info_name="flujo")
    i = 0
    while hasattr(command, "list_commands"):
        if i >= len(args) or args[i] in ("--help", "-h"):
            return None
        sub = command.get_command(ctx, args[i])
        if sub is None:
            return f"no command {args[i]!r} in {ctx.command_path!r}"
        ctx = sub.context_class(sub, info_name=args[i], parent=ctx)
        command, i = sub, i + 1
    rest = [a for a in args[i:] if a not in ("--help", "-h")]
    try:
        command.make_context(ctx.info_name, rest, parent=ctx.parent)
    except Exception as exc:
        formatter = getattr(exc, "format_message", None)
        return formatter() if callable(formatter) else f"{type(exc).__name__}: {exc}"
    return None


# --- console sessions ------------------------------------------------------------------


def console_commands(text: str) -> Iterator[tuple[str, list[str]]]:
    """(command, expected output lines) for every ``$ command`` of a console block."""
    command: str | None = None
    expected: list[str] = []
    pending = ""
    for line in text.splitlines():
        if pending:
            pending += "\n" + line
            if not line.endswith("\\"):
                command, pending = pending, ""
            continue
        if line.startswith("$ "):
            if command is not None:
                yield command, expected
            command, expected = None, []
            if line.endswith("\\"):
                pending = line[2:]
            else:
                command = line[2:]
        elif command is not None:
            expected.append(line)
    if command is not None:
        yield command, expected


def output_matches(expected: list[str], actual: list[str]) -> bool:
    """Line by line, trailing spaces ignored; a line ``...`` matches any lines."""
    exp = [e.rstrip() for e in expected]
    act = [a.rstrip() for a in actual]
    while exp and not exp[-1]:
        exp.pop()
    while act and not act[-1]:
        act.pop()

    def match(i: int, j: int) -> bool:
        if i == len(exp):
            return j == len(act)
        if exp[i] == "...":
            return any(match(i + 1, k) for k in range(j, len(act) + 1))
        return j < len(act) and exp[i] == act[j] and match(i + 1, j + 1)

    return match(0, 0)


def run_console(snippet: Snippet, cwd: Path) -> Path:
    for command, expected in console_commands(snippet.text):
        moved = re.fullmatch(r"cd\s+(\S+)", command.strip())
        if moved:
            cwd = (cwd / moved.group(1)).resolve()
            continue
        proc = subprocess.run(
            ["bash", "-c", command],
            cwd=cwd,
            env=sandbox_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=TIMEOUT,
        )
        actual = proc.stdout.splitlines()
        should_fail = any(line.startswith("error:") for line in expected)
        assert (proc.returncode != 0) == should_fail, (
            f"{snippet.where}: `{command}` exited {proc.returncode}"
            + (" (its shown output has an error: line)" if should_fail else "")
            + f"\n{proc.stdout}"
        )
        assert output_matches(expected, actual), (
            f"{snippet.where}: output of `{command}` differs from the page\n--- page\n"
            + "\n".join(expected)
            + "\n--- actual\n"
            + proc.stdout
        )
    return cwd


# --- checking one snippet ----------------------------------------------------------------


def _deep_merge(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            out[key] = _deep_merge(base.get(key), value) if key in base else value
        return out
    return over


def check_model(snippet: Snippet, data: Any) -> None:
    """``model: module:attr``: the data must validate against a pydantic model or adapter."""
    module, _, attr = snippet.directives["model"].partition(":")
    target = getattr(importlib.import_module(module), attr)
    validate = getattr(target, "model_validate", None) or target.validate_python
    try:
        validate(data)
    except ValueError as exc:
        raise AssertionError(f"{snippet.where}: not a valid {attr}: {exc}") from None


def check_yaml(snippet: Snippet, cwd: Path, path: Path | None) -> None:
    d = snippet.directives
    try:
        documents = [doc for doc in yaml.safe_load_all(snippet.text) if doc is not None]
    except yaml.YAMLError as exc:
        raise AssertionError(f"{snippet.where}: not YAML: {exc}") from None
    assert documents, f"{snippet.where}: an empty YAML snippet"
    if "fragment" in d:
        return
    if "model" in d:
        for document in documents:
            check_model(snippet, document)
        return
    if "helm-values" in d:
        chart = ROOT / d["helm-values"]
        values = yaml.safe_load((chart / "values.yaml").read_text(encoding="utf-8"))
        schema = json.loads((chart / "values.schema.json").read_text(encoding="utf-8"))
        merged = _deep_merge(values, documents[0])
        jsonschema.validate(merged, schema)
        return
    if path is None:
        path = cwd / f"snippet-{snippet.line}.yaml"
        path.write_text(snippet.text, encoding="utf-8")
    if "invalid" in d:
        proc = sh(f"flujo validate {shlex.quote(str(path))}", cwd, check=False)
        assert proc.returncode == 2, f"{snippet.where}: expected flujo validate to fail with 2"
        return
    docs = load_documents(snippet.text, snippet.where)
    assert not docs.problems, "\n".join(str(p) for p in docs.problems)
    if docs.pipelines:
        agents = " ".join(f"--agents {shlex.quote(a)}" for a in d.get("agents", "").split())
        sh(f"flujo validate {shlex.quote(str(path))} {agents}", cwd)


def check_shell(snippet: Snippet, cwd: Path) -> None:
    d = snippet.directives
    proc = subprocess.run(
        ["bash", "-n"], input=snippet.text, capture_output=True, text=True, timeout=TIMEOUT
    )
    assert proc.returncode == 0, f"{snippet.where}: shell syntax: {proc.stderr}"
    if "fragment" not in d:
        for args in flujo_invocations(snippet.text):
            problem = cli_problem(args)
            assert problem is None, f"{snippet.where}: `flujo {' '.join(args)}`: {problem}"
    if "run" in d:
        try:
            sh(snippet.text, cwd)
        except AssertionError as exc:
            raise AssertionError(f"{snippet.where}: {exc}") from None


def check_python(snippet: Snippet, cwd: Path) -> None:
    if "fragment" in snippet.directives:
        compile(snippet.text, snippet.where, "exec")
        return
    script = cwd / f"snippet_{snippet.line}.py"
    script.write_text(snippet.text, encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, script.name],
        cwd=cwd,
        env=sandbox_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert proc.returncode == 0, f"{snippet.where}: Python snippet failed:\n{proc.stderr}"


def check_snippet(snippet: Snippet, cwd: Path) -> Path:
    """Check one snippet in the page's sandbox ``cwd``; return the sandbox's current dir."""
    d = snippet.directives
    unknown = set(d) - KNOWN_DIRECTIVES
    assert not unknown, f"{snippet.where}: unknown directive(s) {sorted(unknown)}"
    if snippet.lang in NOT_CODE:
        assert not d, f"{snippet.where}: directives on a block that is not code"
        return cwd
    if "setup" in d:
        sh(d["setup"], cwd)
    path = None
    if "file" in d:
        path = cwd / d["file"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(snippet.text, encoding="utf-8")
    if snippet.lang in PYTHON:
        check_python(snippet, cwd)
    elif snippet.lang in YAML:
        check_yaml(snippet, cwd, path)
    elif snippet.lang in SHELL:
        check_shell(snippet, cwd)
    elif snippet.lang in CONSOLE:
        if "fragment" in d:
            commands = "\n".join(c for c, _ in console_commands(snippet.text))
            check_shell(Snippet(snippet.page, snippet.line, "bash", commands, {}), cwd)
        else:
            return run_console(snippet, cwd)
    elif snippet.lang in JSON:
        try:
            values = [json.loads(snippet.text)]
        except json.JSONDecodeError:  # JSON Lines: one value per line
            values = [json.loads(line) for line in snippet.text.splitlines() if line.strip()]
        if "model" in d:
            for value in values:
                check_model(snippet, value)
    else:
        raise AssertionError(
            f"{snippet.where}: unknown language {snippet.lang!r}: label code with python, "
            "yaml, bash, console or json, and output with text"
        )
    return cwd


PAGES = doc_pages()


@pytest.mark.parametrize("page", PAGES, ids=[_rel(p) for p in PAGES])
def test_every_snippet_runs_or_validates(page: Path, tmp_path: Path) -> None:
    cwd = make_sandbox(tmp_path)
    for snippet in parse_snippets(page):
        cwd = check_snippet(snippet, cwd)


def test_external_directives_still_match_a_snippet() -> None:
    """An entry of EXTERNAL_DIRECTIVES whose snippet changed or moved is dead: remove it."""
    snippets = [s for p in PAGES for s in parse_snippets(p)]
    dead = [
        (page, start)
        for page, start in EXTERNAL_DIRECTIVES
        if not any(s.page == page and s.first_line.startswith(start) for s in snippets)
    ]
    assert not dead, f"no such snippet any more: {dead}"


# --- the checker itself -----------------------------------------------------------------


def test_flujo_invocations_are_found_in_shell_text() -> None:
    script = (
        "export A=1\n"
        "flujo run x.yaml --input 'a b' --json > out.json  # comment\n"
        "X=1 .venv/bin/flujo validate y.yaml && python -m flujo version\n"
        "kubectl apply -f x.yaml | flujo transcript show r.json 2> err\n"
        "echo flujo run\n"
    )
    assert flujo_invocations(script) == [
        ["run", "x.yaml", "--input", "a b", "--json"],
        ["validate", "y.yaml"],
        ["version"],
        ["transcript", "show", "r.json"],
    ]


def test_cli_problems_are_reported() -> None:
    assert cli_problem(["run", "x.yaml", "--input", "hi"]) is None
    assert cli_problem(["transcript", "diff"]) is None
    assert "--no-such-option" in (cli_problem(["run", "x.yaml", "--no-such-option"]) or "")
    assert "no command" in (cli_problem(["frobnicate"]) or "")


def test_console_output_matching() -> None:
    assert output_matches(["a", "...", "d"], ["a", "b", "c", "d"])
    assert output_matches(["a  ", ""], ["a"])
    assert not output_matches(["a", "b"], ["a", "c"])
    assert list(console_commands("$ a \\\n  --x\nout\n$ b\n")) == [
        ("a \\\n  --x", ["out"]),
        ("b", []),
    ]


def test_directives_are_read_from_the_lines_above_a_fence(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "text\n<!-- file: a.yaml -->\n<!-- agents: b.yaml -->\n```yaml\nkey: 1\n```\n"
        "\n  ```python\n  print(1)\n  ```\n",
        encoding="utf-8",
    )
    first, second = parse_snippets(page)
    assert first.directives == {"file": "a.yaml", "agents": "b.yaml"}
    assert first.text == "key: 1\n" and first.line == 4
    assert second.lang == "python" and second.text == "print(1)\n" and not second.directives


# --- the site and the generated pages ---------------------------------------------------


def test_site_builds_in_strict_mode(tmp_path: Path) -> None:
    if shutil.which("mkdocs", path=str(BIN)) is None and shutil.which("mkdocs") is None:
        pytest.skip("mkdocs is not installed: pip install mkdocs mkdocs-material")
    mkdocs = shutil.which("mkdocs", path=str(BIN)) or "mkdocs"
    proc = subprocess.run(
        [mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert (tmp_path / "site" / "getting-started" / "index.html").exists()


def test_every_page_is_in_the_nav() -> None:
    """Also checked by mkdocs (validation.nav.omitted_files); this says which page."""

    class _Loader(yaml.SafeLoader):
        pass

    _Loader.add_multi_constructor("", lambda loader, suffix, node: None)
    config = yaml.load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"), Loader=_Loader)

    def entries(nav: Any) -> Iterator[str]:
        if isinstance(nav, str):
            yield nav
        elif isinstance(nav, list):
            for item in nav:
                yield from entries(item)
        elif isinstance(nav, dict):
            for value in nav.values():
                yield from entries(value)

    listed = set(entries(config["nav"]))
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert pages - listed == set(), "pages missing from mkdocs.yml's nav"
    assert listed - pages == set(), "nav entries without a page"


def test_reference_pages_are_current() -> None:
    proc = subprocess.run(
        [sys.executable, "scripts/gen_docs.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr


def test_every_environment_variable_is_documented() -> None:
    page = (DOCS / "reference" / "configuration.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"FLUJO_[A-Z0-9_]+", page))
    patterns = set(re.findall(r"(FLUJO_[A-Z0-9_]*)<", page))
    used: set[str] = set()
    for folder in ("flujo", "operator"):
        for source in (ROOT / folder).rglob("*.py"):
            used |= set(re.findall(r"FLUJO_[A-Z0-9_]+", source.read_text(encoding="utf-8")))
    missing = sorted(
        name
        for name in used
        if name not in documented
        and not any(name.startswith(p) for p in patterns)
        and not (name.endswith("_") and any(d.startswith(name) for d in documented))
    )
    assert not missing, f"not in docs/reference/configuration.md: {missing}"


# --- flujo init ---------------------------------------------------------------------------


def _app() -> typer.Typer:
    app = typer.Typer()
    devx.register(app)
    return app


def test_init_scaffolds_a_project_whose_golden_test_passes(tmp_path: Path) -> None:
    result = CliRunner().invoke(_app(), ["init", str(tmp_path / "my-agent")])
    assert result.exit_code == 0, result.output
    project = tmp_path / "my-agent"
    assert sorted(p.relative_to(project).as_posix() for p in project.rglob("*.*")) == [
        "README.md",
        "agents.yaml",
        "golden/my-agent.txt",
        "pipeline.yaml",
        "tests/test_pipeline.py",
    ]
    golden = (project / "golden" / "my-agent.txt").read_text(encoding="utf-8")
    assert golden.startswith("flujo transcript v1\n\npipeline my-agent\n")
    assert "status: succeeded" in golden
    # both files validate, together too
    for files in (["pipeline.yaml"], ["pipeline.yaml", "agents.yaml"]):
        docs = load_files([project / f for f in files])
        assert not docs.problems and len(docs.pipelines) == 1
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=project,
        env=sandbox_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout
    # the golden test catches a change
    pipeline = project / "pipeline.yaml"
    pipeline.write_text(
        pipeline.read_text(encoding="utf-8").replace("maxIterations: 3", "maxIterations: 4"),
        encoding="utf-8",
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=project,
        env=sandbox_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert proc.returncode == 1 and "maxIterations=4" in proc.stdout


def test_init_refuses_to_overwrite(tmp_path: Path) -> None:
    (tmp_path / "agents.yaml").write_text("mine\n", encoding="utf-8")
    result = CliRunner().invoke(_app(), ["init", str(tmp_path)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "agents.yaml already exists" in lines[0]
    assert (tmp_path / "agents.yaml").read_text(encoding="utf-8") == "mine\n"
    assert not (tmp_path / "pipeline.yaml").exists(), "nothing is written when refusing"


def test_init_names_the_pipeline_after_the_directory(tmp_path: Path) -> None:
    assert devx.project_name(tmp_path / "My Agent_2") == "my-agent-2"
    assert devx.project_name(tmp_path / "___") == "hello"
    with pytest.raises(devx.InitError, match="DNS label"):
        devx.init_project(tmp_path / "x", name="Bad_Name")
    written = devx.init_project(tmp_path / "y", name="custom")
    assert tmp_path / "y" / "golden" / "custom.txt" in written


# --- flujo explain ------------------------------------------------------------------------

ROUTER_TREE = """\
pipeline router: 2 top-level steps, 5 in all
├── classify  agent classifier (builtin classify)
└── route  conditional on `previous_step`, default general
    ├── [billing]
    │   └── billing-reply  agent reply (builtin template)
    │       input: {"team": "billing", "request": "{{ input }}"}
    ├── [technical]
    │   └── technical-reply  agent reply (builtin template)
    │       input: {"team": "engineering", "request": "{{ input }}"}
    └── [general] (default)
        └── general-reply  agent reply (builtin template)
            input: {"team": "the front desk", "request": "{{ input }}"}
"""


def test_explain_prints_the_router_as_a_tree() -> None:
    result = CliRunner().invoke(_app(), ["explain", str(ROOT / "examples" / "router.yaml")])
    assert result.exit_code == 0, result.output
    assert result.output == ROUTER_TREE


def test_explain_shows_loop_bounds_parallel_map_retries_and_fallbacks() -> None:
    docs = load_files([ROOT / "flujo" / "recipes" / "default.yaml"])
    registry = AgentRegistry()
    for agent in docs.agents:
        registry.register_manifest(agent)
    text = devx.explain_text(docs.pipelines[0], registry)
    assert "reflect  loop maxIterations=3, exitWhen `output.passed`" in text
    assert "fallback default-solver-backup (scripted, 1 response)" in text
    assert "retry maxAttempts=3" in text
    fanout = load_files([ROOT / "examples" / "fanout.yaml"])
    text = devx.explain_text(fanout.pipelines[0], AgentRegistry())
    assert "analyse  parallel 3 branches, merge=dict, onBranchFailure=failFast" in text
    assert "per-sentence  map over `steps.sentences.output`" in text
    assert "maxConcurrency=2" in text


def test_explain_marks_unknown_agents_and_fails(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: flujo.dev/v1alpha1\nkind: Pipeline\nmetadata: {name: p}\n"
        "spec:\n  steps:\n    - name: a\n      agent: writr\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(_app(), ["explain", str(bad)])
    assert result.exit_code == 2
    assert "a  agent writr (unknown agent)" in result.output
    assert f"error: {bad}:7: spec.steps[0].agent: unknown agent 'writr'" in result.output


# --- dry runs -----------------------------------------------------------------------------

PAID = """\
apiVersion: flujo.dev/v1alpha1
kind: Agent
metadata: {name: poet}
spec:
  type: openai
  endpoint: "${FLUJO_TEST_BASE_URL}"
  model: test-model
  apiKey: {env: FLUJO_TEST_KEY}
  pricing: {inputPer1k: 1.0, outputPer1k: 1.0}
---
apiVersion: flujo.dev/v1alpha1
kind: Agent
metadata: {name: scorer}
spec:
  type: openai
  endpoint: "${FLUJO_TEST_BASE_URL}"
  model: test-model
  outputSchema:
    type: object
    properties:
      score: {type: integer, minimum: 1}
      tags: {type: array, items: {type: string}}
      verdict: {enum: [good, bad]}
---
apiVersion: flujo.dev/v1alpha1
kind: Pipeline
metadata: {name: paid}
spec:
  steps:
    - name: write
      agent: poet
      input: "a poem about {{ input }}"
    - name: score
      agent: scorer
    - name: shout
      agent: builtin.upper
      input: "{{ steps.write.output }}"
"""


def _paid(tmp_path: Path) -> tuple[Any, AgentRegistry, list[Any]]:
    path = tmp_path / "paid.yaml"
    path.write_text(PAID, encoding="utf-8")
    docs = load_files([path])
    assert not docs.problems
    registry = AgentRegistry()
    for agent in docs.agents:
        registry.register_manifest(agent, source=str(path))
    return docs.pipelines[0], registry, docs.agents


def test_dry_run_calls_no_paid_agent(
    openai_server: OpenAIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLUJO_TEST_BASE_URL", openai_server.base_url)
    monkeypatch.setenv("FLUJO_TEST_KEY", "sk-test")
    manifest, registry, agents = _paid(tmp_path)
    dry = devx.dry_run_registry(registry, agents)
    result = Flujo(manifest, agent_registry=dry).run("rivers")
    assert result.success, result.outcome.message
    assert openai_server.calls == 0
    assert result.usage.total_tokens == 0 and result.usage.cost_usd == 0
    assert result.steps["write"].output == "[dry run: poet]"
    assert result.output == "[DRY RUN: POET]"  # free agents still run for real
    assert result.steps["score"].output == {
        "score": 1,
        "tags": ["[dry run: scorer]"],
        "verdict": "good",
    }
    assert dry.entry("poet").type == "scripted" and registry.entry("poet").type == "openai"
    assert devx.dry_run_summary(result, dry) == (
        "dry run: the real run would have made 2 paid calls: poet x1, scorer x1"
    )
    # the same pipeline without the dry run does call the server: the check above is real
    openai_server.reset()
    real = Flujo(manifest, agent_registry=registry).run("rivers")
    assert openai_server.calls >= 1, real.outcome


def test_dry_run_description_names_endpoints_and_credentials_not_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLUJO_TEST_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("FLUJO_TEST_KEY", "sk-very-secret")
    manifest, registry, _ = _paid(tmp_path)
    text = devx.describe_dry_run(manifest, registry)
    assert text.splitlines() == [
        "dry run: 2 paid agents replaced by placeholders (no network, zero usage):",
        "  poet: openai test-model at http://127.0.0.1:9/v1; key from $FLUJO_TEST_KEY (set); "
        "steps write",
        "  scorer: openai test-model at http://127.0.0.1:9/v1; steps score",
    ]
    assert "sk-very-secret" not in text
    monkeypatch.delenv("FLUJO_TEST_KEY")
    assert "(not set)" in devx.describe_dry_run(manifest, registry)
    linear = load_files([ROOT / "examples" / "linear.yaml"]).pipelines[0]
    assert "no step calls an openai or http agent" in devx.describe_dry_run(linear, registry)


def test_dry_run_keeps_code_agents_and_placeholders_follow_schemas() -> None:
    registry = AgentRegistry()
    registry.register("My_Func", lambda data: data)
    dry = devx.dry_run_registry(registry)
    assert dry.entry("My_Func").provenance == "code"
    assert devx.placeholder("x") == "[dry run: x]"
    schema = {
        "type": "object",
        "properties": {"n": {"$ref": "#/$defs/N"}, "ok": {"type": "boolean"}},
        "$defs": {"N": {"type": "number", "minimum": 0.5}},
    }
    assert devx.placeholder("x", schema) == {"n": 0.5, "ok": False}


# --- error excerpts -------------------------------------------------------------------------


def test_excerpt_shows_the_line_with_a_caret_and_context(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("a: 1\nsteps:\n  - name: x\n    agent: writr  # typo\n  - name: y\n")
    assert devx.excerpt(path, 4, key="agent") == (
        "  3 |   - name: x\n"
        "> 4 |     agent: writr  # typo\n"
        "    |            ^^^^^\n"
        "  5 |   - name: y"
    )
    assert devx.excerpt(path, 1).splitlines()[:2] == ["> 1 | a: 1", "    | ^^^^"]
    assert devx.excerpt(path, 3).splitlines()[2] == "    |     ^^^^^^^"
    assert devx.excerpt(path, 99) == ""
    assert devx.excerpt(tmp_path / "missing.yaml", 1) == ""


def test_describe_problem_adds_the_excerpt_and_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        "apiVersion: flujo.dev/v1alpha1\nkind: Pipeline\nmetadata: {name: p}\nspec:\n"
        "  steps:\n    - name: a\n      loop:\n        maxIteration: 3\n"
        "        steps: [{name: b, agent: builtin.echo}]\n",
        encoding="utf-8",
    )
    docs = load_files([path])
    shown = [devx.describe_problem(p) for p in docs.problems]
    unknown = next(s for s in shown if "unknown field 'maxIteration'" in s)
    assert unknown.splitlines()[1:] == [
        "    7 |       loop:",
        "  > 8 |         maxIteration: 3",
        "      |                       ^",
        "    9 |         steps: [{name: b, agent: builtin.echo}]",
        "  hint: did you mean 'maxIterations'?",
    ]
    missing = next(s for s in shown if "missing required field 'maxIterations'" in s)
    assert missing.endswith(
        "hint: every loop needs maxIterations, an upper bound on its iterations"
    )
    assert devx.describe_problem(Problem("<input>", "boom")) == "<input>: boom"
    assert devx.hint_for("invalid YAML: mapping values are not allowed here") is not None
    assert devx.hint_for("unknown field 'zzzqqq'") is not None
    assert devx.hint_for("template uses unknown variable 'inptu' (known: …)") == (
        "did you mean 'input'?"
    )
