"""``flujo-operator`` as a new user meets it: help, missing credentials, a missing extra."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from flujo_operator.__main__ import missing_credentials

OPERATOR = Path(sys.executable).with_name("flujo-operator")


def run(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv), capture_output=True, text=True, timeout=120, env=env, check=False
    )


def bare_env(home: Path) -> dict[str, str]:
    """This machine's environment without any Kubernetes credentials in it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBE", "FLUJO_"))}
    env["HOME"] = str(home)
    return env


def test_help_prints_usage_and_the_variables_and_exits_0(tmp_path: Path) -> None:
    done = run(str(OPERATOR), "--help", env=bare_env(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: flujo-operator")
    assert "FLUJO_NAMESPACES" in done.stdout and "FLUJO_SECURITY_POLICY" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


def test_an_unknown_argument_is_one_line_and_exit_2(tmp_path: Path) -> None:
    done = run(str(OPERATOR), "--namespace", "x", env=bare_env(tmp_path))
    assert done.returncode == 2
    assert "unrecognized arguments: --namespace x" in done.stderr
    assert "Traceback" not in done.stderr


def test_no_credentials_is_one_line_naming_what_was_looked_for(tmp_path: Path) -> None:
    done = run(str(OPERATOR), env=bare_env(tmp_path))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: no Kubernetes credentials")
    assert "KUBERNETES_SERVICE_HOST" in lines[0]
    assert str(tmp_path / ".kube" / "config") in lines[0]


def test_a_kubeconfig_variable_is_named_when_its_files_do_not_exist(tmp_path: Path) -> None:
    env = {"KUBECONFIG": f"{tmp_path / 'a'}{os.pathsep}{tmp_path / 'b'}"}
    found = missing_credentials(env, tmp_path)
    assert found is not None and f"KUBECONFIG={tmp_path / 'a'}" in found
    (tmp_path / "b").write_text("apiVersion: v1\nkind: Config\n")
    assert missing_credentials(env, tmp_path) is None
    (tmp_path / ".kube").mkdir()
    (tmp_path / ".kube" / "config").write_text("apiVersion: v1\nkind: Config\n")
    assert missing_credentials({}, tmp_path) is None


@pytest.mark.parametrize("missing", ["kopf", "kubernetes"])
def test_without_the_operator_extra_it_says_what_to_install(tmp_path: Path, missing: str) -> None:
    # A module set to None in sys.modules cannot be imported: as if not installed.
    code = (
        f"import sys; sys.modules[{missing!r}] = None; "
        "from flujo_operator.__main__ import main; main([])"
    )
    done = run(sys.executable, "-c", code, env=bare_env(tmp_path))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines == [
        f"error: flujo-operator needs the operator extra ({missing} is missing): "
        "pip install 'flujo[operator]'"
    ]
