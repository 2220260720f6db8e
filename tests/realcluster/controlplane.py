"""A real control plane for tests: etcd, kube-apiserver and kube-controller-manager.

Why: the emulator (tests/k8s/emulator.py) is ours; this tier checks the same claims
against the upstream server — OpenAPI and CEL validation, RBAC, Pod Security
admission, the garbage collector. ``scripts/control-plane.sh`` builds the binaries
from the Go module proxy into a cache keyed by version and starts them; this module
drives it, runs the local kubelet (tests/k8s/kubelet.py) against it on a thread of its
own, and gives tests a real ``kubectl`` bound to it.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import ssl
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from aiohttp import web

from tests.k8s.kubelet import LocalKubelet
from tests.operatorkit import free_port

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "control-plane.sh"
VENV_KUBECTL = Path(sys.executable).parent / "kubectl"
T = TypeVar("T")


def _script(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def bin_dir() -> tuple[Path, str | None]:
    """The cache folder of the binaries, and why the tier cannot run (None: it can)."""
    result = _script("bin-dir")
    path = Path(result.stdout.strip())
    if result.returncode == 0:
        if shutil.which("openssl") is None:
            return path, "openssl is missing (it makes the throwaway certificates)"
        return path, None
    if shutil.which("go") is None:
        return path, "no Go toolchain on PATH: the control plane cannot be built here"
    return path, (
        f"the control plane is not built in {path} "
        "(run `bash scripts/control-plane.sh build`; scripts/test.sh does)"
    )


class ControlPlane:
    """``scripts/control-plane.sh start DIR``: a running etcd + apiserver + controller manager."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.env: dict[str, str] = {}

    def start(self) -> None:
        started = time.monotonic()
        for _ in range(3):  # a port chosen free may be taken by another process meanwhile
            result = _script("start", str(self.dir), timeout=240)
            if result.returncode == 0 or "address already in use" not in result.stderr:
                break
            shutil.rmtree(self.dir, ignore_errors=True)
        if result.returncode != 0:
            raise RuntimeError(f"control plane did not start:\n{result.stderr[-4000:]}")
        for line in (self.dir / "env").read_text().splitlines():
            key, _, value = line.partition("=")
            self.env[key] = value
        self.start_seconds = time.monotonic() - started

    def stop(self) -> None:
        _script("stop", str(self.dir))

    @property
    def kubeconfig(self) -> Path:
        return Path(self.env["KUBECONFIG"])

    @property
    def server(self) -> str:
        return self.env["FLUJO_REAL_APISERVER"]

    @property
    def pki(self) -> Path:
        return Path(self.env["FLUJO_REAL_PKI"])

    @property
    def kubectl_binary(self) -> Path:
        built = Path(self.env["FLUJO_REAL_BIN"]) / "kubectl"
        return built if built.exists() else VENV_KUBECTL

    def ssl_context(self, user: str = "admin") -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        context.load_cert_chain(str(self.pki / f"{user}.crt"), str(self.pki / f"{user}.key"))
        return context

    def token_kubeconfig(self, path: Path, token: str, namespace: str) -> Path:
        """A kubeconfig that authenticates with a bearer token (a ServiceAccount's)."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "real",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority": str(self.pki / "ca.crt"),
                    },
                }
            ],
            "users": [{"name": "sa", "user": {"token": token}}],
            "contexts": [
                {"name": "sa", "context": {"cluster": "real", "user": "sa", "namespace": namespace}}
            ],
            "current-context": "sa",
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path


class RealKubectl:
    """The real kubectl against the real apiserver; client-side validation stays on.

    Same calling convention as tests/k8s/fixtures.Kubectl, so tests/operatorkit's
    helpers (``get_json``) work with either.
    """

    def __init__(
        self, binary: Path, kubeconfig: Path, cache_dir: Path, namespace: str | None = None
    ) -> None:
        self.binary = binary
        self.kubeconfig = kubeconfig
        self.cache_dir = cache_dir
        self.namespace = namespace

    def __call__(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(self.binary), "--kubeconfig", str(self.kubeconfig)]
        argv += ["--cache-dir", str(self.cache_dir)]
        if self.namespace is not None:
            argv += ["--namespace", self.namespace]
        argv += list(args)
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
        if isinstance(manifest, Path):
            return self("apply", "-f", str(manifest), *extra).stdout
        text = manifest if isinstance(manifest, str) else yaml.safe_dump_all(list(manifest))
        return self("apply", "-f", "-", *extra, input=text).stdout

    def json(self, *args: str) -> Any:
        return json.loads(self("get", *args, "-o", "json").stdout)

    def bound(self, namespace: str | None) -> RealKubectl:
        """The same kubectl with another default namespace."""
        return RealKubectl(self.binary, self.kubeconfig, self.cache_dir, namespace)


class KubeletThread:
    """The local kubelet on an event loop thread of its own, bound to the real apiserver.

    Pod output is kept in ``logs[(namespace, pod)]`` and served the way a kubelet serves
    it (``/containerLogs/...`` over TLS, the port in the Node's ``daemonEndpoints``), so
    ``pods/log`` through the real apiserver works.
    """

    def __init__(self, plane: ControlPlane, **options: Any) -> None:
        self.logs: dict[tuple[str, str], bytearray] = defaultdict(bytearray)
        self._pki = plane.pki
        self.log_port = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="kubelet", daemon=True)
        self.kubelet = LocalKubelet(
            plane.server,
            log_sink=self._log,
            entrypoints={"flujo": [str(Path(sys.executable).parent / "flujo")]},
            ssl_context=plane.ssl_context(),
            **options,
        )

    def _log(self, namespace: str, pod: str, chunk: bytes) -> None:
        self.logs[namespace, pod] += chunk

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> None:
        self.thread.start()
        self.run(self._serve_logs())
        self.run(self.kubelet.start())
        # A real apiserver serves pods/log by asking the node's kubelet endpoint.
        self.run(self._advertise_log_port())

    async def _serve_logs(self) -> None:
        """The kubelet's ``/containerLogs/{namespace}/{pod}/{container}`` over TLS on loopback."""
        app = web.Application()
        app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", self._container_logs)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_tls.load_cert_chain(
            str(self._pki / "apiserver.crt"), str(self._pki / "apiserver.key")
        )
        self.log_port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.log_port, ssl_context=server_tls).start()

    async def _container_logs(self, request: web.Request) -> web.Response:
        key = (request.match_info["namespace"], request.match_info["pod"])
        if key not in self.logs:
            return web.Response(status=404, text="pod not found on this node")
        data = bytes(self.logs[key])
        if request.query.get("tailLines"):
            lines = data.splitlines(keepends=True)
            count = int(request.query["tailLines"])
            data = b"".join(lines[-count:]) if count else b""
        if request.query.get("limitBytes"):
            data = data[: int(request.query["limitBytes"])]
        return web.Response(body=data, content_type="text/plain")

    async def _advertise_log_port(self) -> None:
        await self.kubelet._call(  # the kubelet's own authenticated session
            "PATCH",
            f"/api/v1/nodes/{self.kubelet.node_name}/status",
            {"status": {"daemonEndpoints": {"kubeletEndpoint": {"Port": self.log_port}}}},
            "application/merge-patch+json",
        )

    def stop(self) -> None:
        try:
            self.run(self.kubelet.stop())
            self.run(self._runner.cleanup())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()
