"""A test-only local kubelet: runs the emulator's pods as local subprocesses (DESIGN.md §6).

Why: the operator launches one step-runner pod per step and learns the outcome
from the pod status (phase, exit code, termination message) and logs. Without a
cluster, something must play the kubelet: this module watches pods on the API
emulator, binds the unscheduled ones to its node, runs each pod's single
container ``command`` + ``args`` as a subprocess and reports status the way a
kubelet does, through the API (``pods/binding``, ``pods/status``, ``DELETE``).

What a pod gets, and how container paths map to the host
----------------------------------------------------------
* ``env``: ``value``; ``valueFrom.fieldRef`` (``metadata.name``, ``metadata.namespace``,
  ``metadata.uid``, ``metadata.labels['k']``, ``metadata.annotations['k']``,
  ``spec.nodeName``, ``spec.serviceAccountName``, ``status.podIP``, ``status.hostIP``);
  ``valueFrom.secretKeyRef`` / ``configMapKeyRef`` and ``envFrom``, read from the API
  like a real kubelet (a missing key leaves the container waiting with
  ``CreateContainerConfigError``). ``$(VAR)`` in command/args expands as in Kubernetes.
  The process environment is *not* inherited: only ``PATH`` (with the test
  interpreter's ``bin`` first), ``HOME``, ``HOSTNAME``, ``LANG`` and ``extra_env``.
* volumes: ``downwardAPI``, ``projected`` (downwardAPI/secret/configMap sources),
  ``secret``, ``configMap`` and ``emptyDir`` are materialised as files under a
  per-pod host directory ``<root>``, each at ``<root>/<mountPath>`` — the same
  layout a container sees, re-rooted. The termination-message file lives at
  ``<root>/<terminationMessagePath>`` (default ``/dev/termination-log``).
* path translation (the one piece of "magic", kept explicit and small): every
  occurrence of a mount path or of the termination-message path in the
  container's ``command``, ``args``, ``workingDir`` and env *values* is rewritten to
  its host location. A program therefore must receive its paths through argv or
  env (good practice anyway) and must not hard-code them.
* the image is ignored; a container without ``command`` uses ``entrypoints``
  (image repository name without registry/tag → argv prefix), like an image ENTRYPOINT.
  Resource limits, security contexts and probes are ignored; ``restartPolicy`` is
  treated as ``Never``.

Status, logs, deletion
----------------------
Pending → Running → Succeeded/Failed, with ``containerStatuses`` (``running`` /
``terminated`` with exitCode, reason Completed/Error/OOMKilled, message = the
termination-message file capped at 4096 bytes, startedAt/finishedAt; ``waiting``
for image/config errors), ``conditions`` (PodScheduled, Initialized,
ContainersReady, Ready), stdout+stderr stored as the pod's log (``pods/log``).
``FallbackToLogsOnError`` uses the log tail when a failed container wrote no message.
Deleting a running pod sends SIGTERM to its process group, SIGKILL after the
grace period, then confirms the deletion with a zero-grace DELETE.

Simulated pod-level failures
----------------------------
``kubelet.fail_next(match, reason, after=0.0, message=None)`` arms a one-shot
failure for the next pod matching ``match`` (a name glob, a label mapping, or a
predicate on the pod dict); the annotation ``test.flujo.dev/simulate-failure:
<reason>`` (optionally ``test.flujo.dev/simulate-after: <seconds>``) does the same
from a manifest. Reasons:

* ``OOMKilled`` — the process is SIGKILLed ``after`` seconds after start; exit 137,
  reason OOMKilled, phase Failed.
* ``Evicted`` — the process is killed ``after`` seconds after start; phase Failed,
  pod ``reason: Evicted``, a DisruptionTarget condition (TerminationByKubelet).
* ``ErrImagePull`` / ``ImagePullBackOff`` / ``InvalidImageName`` — nothing runs; the
  container stays ``waiting`` with that reason, the pod stays Pending.
* ``NodeLost`` — the process is killed silently ``after`` seconds after start, the
  pod gets Ready=False and DisruptionTarget (DeletionByTaintManager) and is then
  force-deleted, as the node lifecycle controller and pod GC would do.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fnmatch
import json
import os
import re
import shutil
import signal
import ssl
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import attrs

from tests.k8s.apimachinery import now_rfc3339
from tests.k8s.emulator import KUBELET_USER_AGENT

__all__ = [
    "IMAGE_ERRORS",
    "SIMULATE_AFTER_ANNOTATION",
    "SIMULATE_ANNOTATION",
    "LocalKubelet",
    "PodMatch",
]

Obj = dict[str, Any]
PodMatch = str | Mapping[str, str] | Callable[[Obj], bool]

SIMULATE_ANNOTATION = "test.flujo.dev/simulate-failure"
SIMULATE_AFTER_ANNOTATION = "test.flujo.dev/simulate-after"
IMAGE_ERRORS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName"})
FAILURES = IMAGE_ERRORS | {"OOMKilled", "Evicted", "NodeLost"}
TERMINATION_MESSAGE_LIMIT = 4096  # bytes per container, as the kubelet truncates
LOG_FALLBACK_LINES, LOG_FALLBACK_BYTES = 80, 2048  # FallbackToLogsOnError's tail

_IP_BLOCK = 1 + int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0) % 200
"""The second octet of pod addresses: one block of 127/8 per pytest-xdist worker, so two
workers' kubelets never hand out the same address (and a runner port on it)."""


class ConfigError(Exception):
    """The container cannot be configured yet (a missing Secret/ConfigMap or key).

    ``reason`` is what the kubelet shows as the container's waiting reason: a missing
    env source is ``CreateContainerConfigError``; a volume that cannot be mounted
    leaves the container ``ContainerCreating``.
    """

    def __init__(self, message: str, reason: str = "CreateContainerConfigError") -> None:
        super().__init__(message)
        self.reason = reason


@attrs.define
class Failure:
    match: PodMatch
    reason: str
    after: float = 0.0
    message: str | None = None

    def matches(self, pod: Obj) -> bool:
        meta = pod.get("metadata") or {}
        if isinstance(self.match, str):
            return fnmatch.fnmatchcase(meta.get("name", ""), self.match)
        if isinstance(self.match, Mapping):
            labels = meta.get("labels") or {}
            return all(labels.get(k) == v for k, v in self.match.items())
        return bool(self.match(pod))


@attrs.define
class PodRun:
    """What the kubelet tracks for one pod it owns."""

    uid: str
    namespace: str
    name: str
    task: asyncio.Task[None] | None = None
    process: asyncio.subprocess.Process | None = None
    deleting: asyncio.Event = attrs.field(factory=asyncio.Event)
    grace: float = 30.0
    gone: bool = False  # the pod object no longer exists (force-deleted)
    ip: str = "127.0.0.1"
    output: bytearray = attrs.field(factory=bytearray)


class LocalKubelet:
    """Runs the pods of an API server (the emulator) as local subprocesses; see the module doc.

    It must run on an event loop of its own process (the fixture uses the
    emulator's). ``log_sink(namespace, pod, chunk)`` receives container output
    (``Emulator.append_log`` serves it as ``pods/log``). At most ``max_pods``
    processes run at once; further bound pods stay Pending until a slot frees.
    ``entrypoints`` maps an image (or its repository name without registry and
    tag) to the argv prefix used when a container has no ``command``.
    ``extra_env`` is added to every process (e.g. ``COVERAGE_PROCESS_START``);
    ``max_grace_seconds`` caps the deletion grace period (default: the pod's).
    ``started`` lists ``namespace/name`` of every pod whose process started.
    ``ssl_context`` and ``headers`` are for a real apiserver (TLS, client certificate
    or token); the emulator needs neither.
    """

    def __init__(
        self,
        api_url: str,
        *,
        log_sink: Callable[[str, str, bytes], None],
        node_name: str = "local-kubelet",
        max_pods: int = 4,
        entrypoints: Mapping[str, Sequence[str]] | None = None,
        extra_env: Mapping[str, str] | None = None,
        workdir: str | os.PathLike[str] | None = None,
        max_grace_seconds: float | None = None,
        ssl_context: ssl.SSLContext | None = None,
        headers: Mapping[str, str] | None = None,
        start_latency: float = 0.0,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        # A real apiserver (tests/realcluster/) needs TLS and credentials: the context
        # carries the CA and a client certificate, ``headers`` e.g. a bearer token.
        self._ssl_context = ssl_context
        self._headers = dict(headers or {})
        self.node_name = node_name
        self.max_pods = max_pods
        self.entrypoints = dict(entrypoints or {})
        self.extra_env = dict(extra_env or {})
        self.max_grace_seconds = max_grace_seconds
        self._log_sink = log_sink
        self._workdir = Path(workdir) if workdir is not None else None
        self._own_workdir: tempfile.TemporaryDirectory[str] | None = None
        self._failures: list[Failure] = []
        self._runs: dict[str, PodRun] = {}
        self._finished: set[str] = set()  # uids never to run again (restartPolicy: Never)
        self._slots: asyncio.Semaphore | None = None
        self._session: aiohttp.ClientSession | None = None
        self._watcher: asyncio.Task[None] | None = None
        self.started: list[str] = []
        self.start_latency = start_latency
        """Seconds between a pod's binding and its process starting (scheduling, sandbox and
        container start on a real node: 2-6 s); 0 in tests."""
        self._ips = 0

    # --- the public API ------------------------------------------------------------------------

    def fail_next(
        self, match: PodMatch, reason: str, *, after: float = 0.0, message: str | None = None
    ) -> None:
        """Make the next pod matching ``match`` fail with ``reason`` (see the module doc)."""
        if reason not in FAILURES:
            raise ValueError(
                f"unknown simulated failure {reason!r}; choose from {sorted(FAILURES)}"
            )
        self._failures.append(Failure(match, reason, after, message))

    @property
    def running(self) -> list[str]:
        """``namespace/name`` of the pods whose process is alive now."""
        return sorted(
            f"{r.namespace}/{r.name}"
            for r in list(self._runs.values())
            if r.process is not None and r.process.returncode is None
        )

    async def start(self) -> None:
        self._slots = asyncio.Semaphore(self.max_pods)
        if self._workdir is None:
            self._own_workdir = tempfile.TemporaryDirectory(prefix="flujo-kubelet-")
            self._workdir = Path(self._own_workdir.name)
        self._session = aiohttp.ClientSession(
            base_url=self.api_url,
            headers={"User-Agent": f"{KUBELET_USER_AGENT}/{self.node_name}", **self._headers},
            connector=aiohttp.TCPConnector(ssl=self._ssl_context)
            if self._ssl_context is not None
            else None,
        )
        await self._register_node()
        self._watcher = asyncio.create_task(self._watch_pods(), name="kubelet-watch")

    async def stop(self) -> None:
        """Kill every pod process and stop watching (idempotent)."""
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        for run in list(self._runs.values()):
            if run.process is not None and run.process.returncode is None:
                _signal_group(run.process, signal.SIGKILL)
            if run.task is not None:
                run.task.cancel()
        tasks = [r.task for r in self._runs.values() if r.task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
        self._runs.clear()
        if self._session is not None:
            await self._session.close()
        if self._own_workdir is not None:
            self._own_workdir.cleanup()
        self._watcher = self._session = self._own_workdir = None

    # --- API calls -----------------------------------------------------------------------------

    async def _call(
        self, method: str, path: str, body: Any = None, content_type: str | None = None
    ) -> Any:
        assert self._session is not None
        # A real apiserver refuses a body without a JSON content type (415); the emulator did not.
        headers = {"Content-Type": content_type or "application/json"} if body is not None else {}
        data = None if body is None else json.dumps(body)
        async with self._session.request(method, path, data=data, headers=headers) as response:
            payload = await response.json(content_type=None)
            if response.status >= 400:
                raise ApiCallError(response.status, payload)
            return payload

    async def _register_node(self) -> None:
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.node_name,
                "labels": {"kubernetes.io/hostname": self.node_name},
            },
            "status": {
                "capacity": {"pods": str(self.max_pods)},
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            },
        }
        with contextlib.suppress(ApiCallError):
            await self._call("POST", "/api/v1/nodes", node)

    async def _patch_status(self, run: PodRun, status: Obj) -> None:
        with contextlib.suppress(ApiCallError):  # the pod may be gone already
            await self._call(
                "PATCH",
                f"/api/v1/namespaces/{run.namespace}/pods/{run.name}/status",
                {"status": status},
                "application/merge-patch+json",
            )

    async def _confirm_deletion(self, run: PodRun) -> None:
        with contextlib.suppress(ApiCallError):
            await self._call(
                "DELETE",
                f"/api/v1/namespaces/{run.namespace}/pods/{run.name}",
                {"gracePeriodSeconds": 0},
            )

    # --- watching pods ---------------------------------------------------------------------------

    async def _watch_pods(self) -> None:
        assert self._session is not None
        since: str | None = None
        while True:
            if since is None:
                listing = await self._call("GET", "/api/v1/pods")
                since = listing["metadata"]["resourceVersion"]
                for pod in listing["items"]:
                    await self._on_pod("ADDED", pod)
            params = {"watch": "true", "resourceVersion": since, "timeoutSeconds": "60"}
            try:
                async with self._session.get(
                    "/api/v1/pods", params=params, timeout=aiohttp.ClientTimeout(total=None)
                ) as response:
                    async for line in response.content:
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        if event["type"] == "ERROR":
                            since = None
                            break
                        since = event["object"]["metadata"].get("resourceVersion", since)
                        await self._on_pod(event["type"], event["object"])
            except (aiohttp.ClientError, TimeoutError):
                await asyncio.sleep(0.2)

    async def _on_pod(self, kind: str, pod: Obj) -> None:
        meta, spec = pod["metadata"], pod.get("spec") or {}
        run = self._runs.get(meta["uid"])
        if kind == "DELETED":
            if run is not None:
                run.gone = True
                run.deleting.set()
            return
        node = spec.get("nodeName")
        phase = (pod.get("status") or {}).get("phase")
        if meta.get("deletionTimestamp"):
            if run is None and node == self.node_name:
                run = PodRun(meta["uid"], meta["namespace"], meta["name"])
                await self._confirm_deletion(run)
            elif run is not None:
                run.grace = float(meta.get("deletionGracePeriodSeconds") or 0)
                run.deleting.set()
            return
        if (
            not node
            and phase == "Pending"
            and spec.get("schedulerName", "default-scheduler") == "default-scheduler"
        ):
            binding = {
                "apiVersion": "v1",
                "kind": "Binding",
                "metadata": {"name": meta["name"]},
                "target": {"apiVersion": "v1", "kind": "Node", "name": self.node_name},
            }
            with contextlib.suppress(ApiCallError):
                await self._call(
                    "POST",
                    f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/binding",
                    binding,
                )
            return
        if (
            node == self.node_name
            and run is None
            and meta["uid"] not in self._finished
            and phase in ("Pending", None)
        ):
            run = PodRun(meta["uid"], meta["namespace"], meta["name"], ip=self._next_ip())
            self._runs[run.uid] = run
            run.task = asyncio.create_task(self._run_pod(run, pod), name=f"pod-{meta['name']}")

    def _next_ip(self) -> str:
        """A loopback address of its own per pod (all of 127/8 is local): servers in two pods
        may listen on the same port, as on a real cluster."""
        self._ips += 1
        return f"127.{_IP_BLOCK}.{(self._ips // 250) % 250}.{self._ips % 250 + 1}"

    # --- running one pod -------------------------------------------------------------------------

    def _take_failure(self, pod: Obj) -> Failure | None:
        annotations = pod["metadata"].get("annotations") or {}
        if annotations.get(SIMULATE_ANNOTATION) in FAILURES:
            after = float(annotations.get(SIMULATE_AFTER_ANNOTATION, "0"))
            return Failure("*", annotations[SIMULATE_ANNOTATION], after)
        for failure in self._failures:
            if failure.matches(pod):
                self._failures.remove(failure)
                return failure
        return None

    async def _run_pod(self, run: PodRun, pod: Obj) -> None:
        assert self._slots is not None and self._workdir is not None
        container = ((pod.get("spec") or {}).get("containers") or [{}])[0]
        root = self._workdir / run.namespace / run.name
        try:
            async with self._slots:
                if not run.deleting.is_set():
                    await self._run_container(run, pod, container, root)
        except Exception as exc:  # never leave a pod silently stuck: report it as a failed start
            await self._patch_status(
                run, {"phase": "Failed", "reason": "KubeletError", "message": repr(exc)}
            )
        finally:
            shutil.rmtree(root, ignore_errors=True)
            if run.deleting.is_set() and not run.gone:
                await self._confirm_deletion(run)
            self._runs.pop(run.uid, None)
            self._finished.add(run.uid)

    async def _run_container(self, run: PodRun, pod: Obj, container: Obj, root: Path) -> None:
        name, image = container.get("name", "main"), container.get("image", "")
        failure = self._take_failure(pod)
        base = {
            "name": name,
            "image": image,
            "imageID": "",
            "ready": False,
            "restartCount": 0,
            "started": False,
        }
        if failure is not None and failure.reason in IMAGE_ERRORS:
            message = (
                failure.message or f'Failed to pull image "{image}": simulated by the local kubelet'
            )
            await self._patch_status(
                run,
                {
                    "phase": "Pending",
                    "conditions": _conditions(pod, ready=False, initialized=True),
                    "containerStatuses": [
                        {
                            **base,
                            "state": {"waiting": {"reason": failure.reason, "message": message}},
                        }
                    ],
                },
            )
            await run.deleting.wait()
            return
        pod = {**pod, "status": {**(pod.get("status") or {}), "podIP": run.ip}}
        while True:  # like the kubelet, retry until the referenced config exists (or the pod goes)
            try:
                env = await self._environment(pod, container)
                paths = await self._materialise_volumes(pod, container, root)
                break
            except ConfigError as exc:
                await self._patch_status(
                    run,
                    {
                        "phase": "Pending",
                        "conditions": _conditions(pod, ready=False, initialized=True),
                        "containerStatuses": [
                            {
                                **base,
                                "state": {
                                    "waiting": {
                                        "reason": exc.reason,
                                        "message": str(exc),
                                    }
                                },
                            }
                        ],
                    },
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(run.deleting.wait(), 0.5)
                if run.deleting.is_set():
                    return
        message_path = container.get("terminationMessagePath") or "/dev/termination-log"
        message_file = root / message_path.lstrip("/")
        message_file.parent.mkdir(parents=True, exist_ok=True)
        message_file.write_bytes(b"")
        paths[message_path] = str(message_file)
        argv = [_translate(_expand(a, env), paths) for a in self._argv(container)]
        env = {k: _translate(v, paths) for k, v in env.items()}
        workdir = (
            _translate(container["workingDir"], paths) if container.get("workingDir") else str(root)
        )
        process_env = {
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
            "HOME": str(root),
            "HOSTNAME": run.name,
            "LANG": "C.UTF-8",
            **self.extra_env,
            **env,
        }
        if self.start_latency > 0:  # scheduling and container start on a real node
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(run.deleting.wait(), self.start_latency)
            if run.deleting.is_set():
                return
        started = now_rfc3339()
        container_id = f"local://{run.namespace}/{run.name}"
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                env=process_env,
                cwd=workdir,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        except (OSError, ValueError) as exc:
            terminated = {
                "exitCode": 128,
                "reason": "StartError",
                "message": str(exc),
                "startedAt": started,
                "finishedAt": now_rfc3339(),
                "containerID": container_id,
            }
            await self._patch_status(
                run,
                {
                    "phase": "Failed",
                    "conditions": _conditions(pod, ready=False, initialized=True),
                    "containerStatuses": [
                        {**base, "containerID": container_id, "state": {"terminated": terminated}}
                    ],
                },
            )
            return
        run.process = process
        self.started.append(f"{run.namespace}/{run.name}")
        self._log_sink(run.namespace, run.name, b"")
        pump = asyncio.create_task(self._pump(run, process))
        running = {
            **base,
            "containerID": container_id,
            "ready": True,
            "started": True,
            "state": {"running": {"startedAt": started}},
        }
        await self._patch_status(
            run,
            {
                "phase": "Running",
                "startTime": started,
                "podIP": run.ip,
                "hostIP": "127.0.0.1",
                "podIPs": [{"ip": run.ip}],
                "conditions": _conditions(pod, ready=True, initialized=True),
                "containerStatuses": [running],
            },
        )
        outcome = await self._supervise(run, process, failure)
        await pump
        if outcome == "NodeLost":
            await self._patch_status(
                run,
                {
                    "conditions": [
                        *_conditions(pod, ready=False, initialized=True),
                        {
                            "type": "DisruptionTarget",
                            "status": "True",
                            "reason": "DeletionByTaintManager",
                            "message": "Taint manager: deleting due to NoExecute taint",
                            "lastTransitionTime": now_rfc3339(),
                        },
                    ]
                },
            )
            run.deleting.set()
            return
        code = process.returncode if process.returncode is not None else -signal.SIGKILL
        exit_code = code if code >= 0 else 128 - code
        reason = (
            "OOMKilled" if outcome == "OOMKilled" else "Completed" if exit_code == 0 else "Error"
        )
        terminated = {
            "exitCode": exit_code,
            "reason": reason,
            "startedAt": started,
            "finishedAt": now_rfc3339(),
            "containerID": container_id,
        }
        if code < 0:
            terminated["signal"] = -code
        message = _termination_message(message_file)
        if (
            not message
            and exit_code != 0
            and container.get("terminationMessagePolicy") == "FallbackToLogsOnError"
        ):
            message = _log_tail(bytes(run.output))
        if message:
            terminated["message"] = message
        status: Obj = {
            "phase": "Succeeded" if exit_code == 0 and outcome is None else "Failed",
            "conditions": _conditions(pod, ready=False, initialized=True, completed=True),
            "containerStatuses": [
                {
                    **base,
                    "containerID": container_id,
                    "started": False,
                    "state": {"terminated": terminated},
                }
            ],
        }
        if outcome == "Evicted":
            status["reason"] = "Evicted"
            status["message"] = (
                failure.message
                if failure and failure.message
                else "The node was low on resource: memory. (simulated by the local kubelet)"
            )
            status["conditions"].append(
                {
                    "type": "DisruptionTarget",
                    "status": "True",
                    "reason": "TerminationByKubelet",
                    "message": status["message"],
                    "lastTransitionTime": now_rfc3339(),
                }
            )
        await self._patch_status(run, status)

    async def _supervise(
        self, run: PodRun, process: asyncio.subprocess.Process, failure: Failure | None
    ) -> str | None:
        """Wait for the process; kill it on deletion or an armed failure; return that failure."""
        exited = asyncio.create_task(process.wait())
        deleting = asyncio.create_task(run.deleting.wait())
        timer = asyncio.create_task(asyncio.sleep(failure.after)) if failure is not None else None
        try:
            waiting = {t for t in (exited, deleting, timer) if t is not None}
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if exited in done:
                return None
            if timer is not None and timer in done:
                assert failure is not None
                _signal_group(process, signal.SIGKILL)
                await exited
                return failure.reason
            grace = 0.0 if run.gone else run.grace
            if self.max_grace_seconds is not None:
                grace = min(grace, self.max_grace_seconds)
            _signal_group(process, signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(exited), grace)
            except TimeoutError:
                _signal_group(process, signal.SIGKILL)
                await exited
            return None
        finally:
            for task in (deleting, timer):
                if task is not None:
                    task.cancel()

    async def _pump(self, run: PodRun, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        while chunk := await process.stdout.read(65536):
            run.output.extend(chunk)
            self._log_sink(run.namespace, run.name, chunk)

    def _argv(self, container: Obj) -> list[str]:
        command = list(container.get("command") or [])
        if not command:
            image = container.get("image", "")
            repository = image.split("@")[0].rsplit("/", 1)[-1].split(":")[0]
            for key in (image, repository):
                if key in self.entrypoints:
                    command = list(self.entrypoints[key])
                    break
        argv = command + list(container.get("args") or [])
        if not argv:
            raise ValueError(
                f"no command for image {container.get('image')!r}: set `command` or `entrypoints`"
            )
        return argv

    # --- configuration from the API --------------------------------------------------------------

    async def _read(self, kind: str, namespace: str, name: str) -> Obj | None:
        try:
            result: Obj = await self._call("GET", f"/api/v1/namespaces/{namespace}/{kind}/{name}")
        except ApiCallError as exc:
            if exc.status == 404:
                return None
            raise
        return result

    async def _key(self, kind: str, namespace: str, ref: Obj) -> str | None:
        obj = await self._read(kind, namespace, ref.get("name", ""))
        singular = "secret" if kind == "secrets" else "configmap"
        if obj is None:
            if ref.get("optional"):
                return None
            raise ConfigError(f'{singular} "{ref.get("name")}" not found')
        data = obj.get("data") or {}
        if ref["key"] not in data:
            if ref.get("optional"):
                return None
            where = f"{singular.capitalize()} {namespace}/{ref.get('name')}"
            raise ConfigError(f"couldn't find key {ref['key']} in {where}")
        value = data[ref["key"]]
        return base64.b64decode(value).decode() if kind == "secrets" else str(value)

    async def _environment(self, pod: Obj, container: Obj) -> dict[str, str]:
        namespace = pod["metadata"]["namespace"]
        env: dict[str, str] = {}
        for source in container.get("envFrom") or []:
            prefix = source.get("prefix", "")
            for kind, ref in (
                ("secrets", source.get("secretRef")),
                ("configmaps", source.get("configMapRef")),
            ):
                if ref is None:
                    continue
                obj = await self._read(kind, namespace, ref.get("name", ""))
                if obj is None:
                    if ref.get("optional"):
                        continue
                    raise ConfigError(f'{kind[:-1]} "{ref.get("name")}" not found')
                for key, data in (obj.get("data") or {}).items():
                    env[prefix + key] = (
                        base64.b64decode(data).decode() if kind == "secrets" else data
                    )
        for item in container.get("env") or []:
            value_from = item.get("valueFrom") or {}
            value: str | None
            if "value" in item or not value_from:
                value = _expand(str(item.get("value", "")), env)
            elif "fieldRef" in value_from:
                value = _field(pod, value_from["fieldRef"]["fieldPath"])
            elif "secretKeyRef" in value_from:
                value = await self._key("secrets", namespace, value_from["secretKeyRef"])
            elif "configMapKeyRef" in value_from:
                value = await self._key("configmaps", namespace, value_from["configMapKeyRef"])
            else:
                value = ""
            if value is not None:
                env[item["name"]] = value
        return env

    async def _materialise_volumes(self, pod: Obj, container: Obj, root: Path) -> dict[str, str]:
        """Write each mounted volume at ``root``/mountPath; return container → host paths."""
        namespace = pod["metadata"]["namespace"]
        volumes = {v["name"]: v for v in (pod.get("spec") or {}).get("volumes") or []}
        paths: dict[str, str] = {}
        for mount in container.get("volumeMounts") or []:
            volume = volumes.get(mount["name"])
            if volume is None:
                continue
            target = root / mount["mountPath"].lstrip("/")
            target.mkdir(parents=True, exist_ok=True)
            files = await self._volume_files(pod, namespace, volume)
            if mount.get("subPath"):
                sub = files.get(mount["subPath"])
                target.rmdir()
                target.write_bytes(sub or b"")
            else:
                for relative, content in files.items():
                    path = target / relative
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(content)
            paths[mount["mountPath"]] = str(target)
        return paths

    async def _volume_files(self, pod: Obj, namespace: str, volume: Obj) -> dict[str, bytes]:
        sources: list[Obj] = []
        if "projected" in volume:
            sources = list(volume["projected"].get("sources") or [])
        elif "downwardAPI" in volume:
            sources = [{"downwardAPI": volume["downwardAPI"]}]
        elif "secret" in volume:
            secret = volume["secret"]
            sources = [{"secret": {**secret, "name": secret.get("secretName", "")}}]
        elif "configMap" in volume:
            sources = [{"configMap": volume["configMap"]}]
        files: dict[str, bytes] = {}
        for source in sources:
            if "downwardAPI" in source:
                for item in source["downwardAPI"].get("items") or []:
                    field = (item.get("fieldRef") or {}).get("fieldPath", "")
                    files[item["path"]] = (_field(pod, field) or "").encode()
            for kind, key in (("secrets", "secret"), ("configmaps", "configMap")):
                if key not in source:
                    continue
                ref = source[key]
                obj = await self._read(kind, namespace, ref.get("name", ""))
                if obj is None:
                    if ref.get("optional"):
                        continue
                    message = (
                        f'MountVolume.SetUp failed: {key.lower()} "{ref.get("name")}" not found'
                    )
                    raise ConfigError(message, "ContainerCreating")
                data = {
                    k: base64.b64decode(v) if kind == "secrets" else str(v).encode()
                    for k, v in (obj.get("data") or {}).items()
                }
                items = ref.get("items")
                selected = {i["path"]: data.get(i["key"], b"") for i in items} if items else data
                files.update(selected)
        return files


class ApiCallError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status


def _signal_group(process: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


_FIELD_KEY = re.compile(r"^metadata\.(labels|annotations)\['([^']*)'\]$")


def _field(pod: Obj, path: str) -> str | None:
    """Resolve a downward-API fieldPath the way the kubelet renders it."""
    meta = pod["metadata"]
    if match := _FIELD_KEY.match(path):
        return (meta.get(match[1]) or {}).get(match[2])
    if path in ("metadata.labels", "metadata.annotations"):
        values = meta.get(path.split(".")[1]) or {}
        return "\n".join(f"{k}={json.dumps(v)}" for k, v in sorted(values.items()))
    value: Any = pod
    for step in path.split("."):
        value = value.get(step) if isinstance(value, dict) else None
    if path in ("status.podIP", "status.hostIP") and value is None:
        value = "127.0.0.1"
    return None if value is None else str(value)


def _expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion in command, args and env values (``$$`` escapes)."""
    return re.sub(
        r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)",
        lambda m: "$" if m[0] == "$$" else env.get(m[1], m[0]),
        text,
    )


def _translate(text: str, paths: Mapping[str, str]) -> str:
    """Rewrite container paths (mount points, the termination-message file) to host paths.

    One pass, longest path first, so a host path is never translated again.
    """
    if not paths:
        return text
    by_path = {p.rstrip("/") or "/": host for p, host in paths.items()}
    choices = "|".join(re.escape(p) for p in sorted(by_path, key=len, reverse=True))
    pattern = rf"(?<![\w./-])({choices})(?![\w.-])"

    def replace(match: re.Match[str]) -> str:
        # A longer path that exists on this host (the test interpreter under /tmp,
        # say, when the checkout lives there) is the host's, not the pod's.
        token = re.match(r"[^\s'\":;]+", text[match.start() :])
        if token is not None and token[0] != match[1] and os.path.exists(token[0]):
            return match[1]
        return by_path[match[1]]

    return re.sub(pattern, replace, text)


def _termination_message(path: Path) -> str:
    try:
        with path.open("rb") as stream:
            data = stream.read(TERMINATION_MESSAGE_LIMIT)
    except OSError:
        return ""
    return data.decode("utf-8", errors="replace")


def _log_tail(logs: bytes) -> str:
    tail = b"".join(logs.splitlines(keepends=True)[-LOG_FALLBACK_LINES:])[-LOG_FALLBACK_BYTES:]
    return tail.decode("utf-8", errors="replace")


def _conditions(pod: Obj, *, ready: bool, initialized: bool, completed: bool = False) -> list[Obj]:
    now = now_rfc3339()
    reason = {"reason": "PodCompleted"} if completed else {}
    flag = "True" if ready else "False"
    return [
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
        {
            "type": "Initialized",
            "status": "True" if initialized else "False",
            "lastTransitionTime": now,
            **reason,
        },
        {"type": "ContainersReady", "status": flag, "lastTransitionTime": now, **reason},
        {"type": "Ready", "status": flag, "lastTransitionTime": now, **reason},
    ]
