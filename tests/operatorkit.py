"""Running the real operator (a ``python -m flujo_operator`` subprocess) in tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class OperatorProcess:
    """The operator as a subprocess; ``kill()`` is SIGKILL, ``start()`` starts it again."""

    def __init__(self, kubeconfig: Path, log_path: Path, **env: str | None) -> None:
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.audit_path = log_path.parent / "audit.jsonl"
        # The test servers listen on loopback, which the cluster profile refuses
        # (in a cluster, loopback is the step pod itself): allow it, as an
        # administrator's policy would allow an in-cluster model server.
        # A variable given as None is left unset.
        defaults: dict[str, str | None] = {
            "FLUJO_SECURITY_ALLOW_LOOPBACK": "true",
            "FLUJO_SECURITY_ALLOW_HTTP_LOOPBACK": "true",
            "FLUJO_AUDIT_LOG": str(self.audit_path),
            # Tests that look at step pods run one pod per step; the runner executor (the
            # operator's default) is tested where a test asks for it (FLUJO_EXECUTOR=runner).
            "FLUJO_EXECUTOR": "pod",
        }
        self.env = {k: v for k, v in {**defaults, **env}.items() if v is not None}
        self.process: subprocess.Popen[bytes] | None = None
        self.port = free_port()
        self.starts = 0

    def start(self, timeout: float = 30.0) -> None:
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "FLUJO_NAMESPACES": "default",
            "FLUJO_HEALTH_PORT": str(self.port),
            **self.env,
        }
        self.starts += 1
        log = self.log_path.open("ab")
        log.write(f"\n===== start {self.starts} =====\n".encode())
        log.flush()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "flujo_operator"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"operator exited: {self.log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"operator not healthy: {self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def audit(self) -> list[dict[str, Any]]:
        """The audit events the operator wrote so far."""
        if not self.audit_path.exists():
            return []
        lines = self.audit_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]


@contextmanager
def running_operator(
    kubeconfig: Path, tmp_path: Path, **env: str | None
) -> Iterator[OperatorProcess]:
    op = OperatorProcess(kubeconfig, tmp_path / "operator.log", **env)
    op.start()
    try:
        yield op
    finally:
        op.stop()


def wait_for(predicate: Any, timeout: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; last value: {last!r}")


def get_json(kubectl: Any, *args: str) -> Any:
    return json.loads(kubectl("get", *args, "-o", "json").stdout)


def wait_phase(kubectl: Any, name: str, phase: str, op: OperatorProcess) -> dict[str, Any]:
    """Wait (``kubectl wait``, its own timeout) for a run's phase; its status, or fail with
    the operator's log."""
    done = kubectl(
        "wait",
        f"--for=jsonpath={{.status.phase}}={phase}",
        f"pipelinerun/{name}",
        "--timeout=120s",
        check=False,
    )
    assert done.returncode == 0, done.stderr + op.log()[-3000:]
    status: dict[str, Any] = get_json(kubectl, "pipelinerun", name)["status"]
    return status
