"""Hostile files and inputs through the real ``flujo`` command.

YAML bombs and oversized inputs must end, within a bounded time (the
subprocess timeout, not a timed assertion), in exit code 2 with one-line
errors and no traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from flujo.cli.app import app
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
LINEAR = ROOT / "examples" / "linear.yaml"
TIMEOUT = 60


def flujo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flujo", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=ROOT,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
    )


def refused(proc: subprocess.CompletedProcess[str], fragment: str) -> None:
    """Exit 2, no traceback, one ``error:`` line (``validate`` may add indented context)."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-300:], proc.stderr[-300:])
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr[:500]
    assert fragment in errors[0], errors[0]
    assert len(errors[0]) < 500 and len(proc.stderr) < 4096
    for line in proc.stderr.splitlines():
        assert line.startswith(("error: ", " ")), line


def _laughs() -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 9):
        prev, name = chr(96 + i), chr(97 + i)
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n"


BOMBS = {
    "billion laughs": (_laughs(), "aliases (*name) are not allowed"),
    "merge key alias": (
        "base: &b {kind: Pipeline}\ndoc:\n  <<: *b\n",
        "aliases (*name) are not allowed",
    ),
    "flow sequences 10,000 deep": ("[" * 10_000 + "]" * 10_000 + "\n", "nested deeper than 64"),
    "flow mappings 10,000 deep": ("{a: " * 10_000 + "1" + "}" * 10_000 + "\n", "nested deeper"),
    "block sequences 10,000 deep": ("- " * 10_000 + "x\n", "nested deeper than 64"),
    "a 5 MiB file": ("# " + "x" * (5 << 20) + "\n", "file larger than 4194304 bytes"),
    "python object tag": (
        "kind: Pipeline\nspec: !!python/object/apply:os.system ['echo pwned']\n",
        "invalid YAML",
    ),
    "many documents": ("---\n" * 200_000, "no Pipeline document"),
    "a nested template": (
        "apiVersion: flujo.dev/v1alpha1\nkind: Pipeline\nmetadata: {name: p}\nspec:\n"
        "  steps:\n    - name: a\n      agent: builtin.echo\n"
        '      input: "{{ ' + "(" * 5000 + "input" + ")" * 5000 + ' }}"\n',
        "template nested too deeply: more than 32 levels (maxTemplateNesting)",
    ),
}


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_yaml_bombs_are_refused_by_flujo_validate(tmp_path: Path, name: str) -> None:
    text, fragment = BOMBS[name]
    path = tmp_path / "bomb.yaml"
    path.write_text(text, encoding="utf-8")
    refused(flujo("validate", str(path)), fragment)
    assert not (tmp_path / "pwned").exists()


def test_huge_input_file_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.txt"
    big.write_bytes(b"x" * (5 << 20))
    refused(flujo("run", str(LINEAR), "--input-file", str(big)), "larger than 1048576 bytes")


def test_non_utf8_input_file_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_bytes(b'{"a": "\xff\xfe"}')
    refused(flujo("run", str(LINEAR), "--input-file", str(bad)), "not UTF-8")


def test_oversized_input_argument_is_refused() -> None:
    # An argument over 128 KiB cannot be passed to exec(); the parser is the same in-process.
    result = CliRunner().invoke(app, ["run", str(LINEAR), "--input", "x" * ((1 << 20) + 1)])
    assert result.exit_code == 2
    assert "larger than 1048576 bytes" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
