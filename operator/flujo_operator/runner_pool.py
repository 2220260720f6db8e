"""The warm pool: idle runner pods kept per namespace, so a run's first step skips the pod start.

With ``FLUJO_RUNNERS_WARM=N`` (the chart's ``runners.warm``) the operator keeps N
idle runners (:func:`~flujo_operator.runner_pods.build_pool_pod`) in each
namespace it watches by name from the start, and in any other namespace from
its first run.  A run in ``executor: runner`` mode whose agents (and their
tools) need **no credentials** claims one as its generation 0 — one merge patch
of the pod's labels and owner, guarded by its ``resourceVersion`` so no pod is
claimed twice — instead of creating its own; the pool is topped up behind it.

Runs whose agents need Secrets never use the pool: a pod's environment cannot
change once it runs, so a pooled runner could only learn a run's credentials
from the operator (which must never read Secrets) or from an API token that may
read the namespace's Secrets (which every tenant's step would then hold).
docs/architecture.md has the argument.

Crash safety is the run's runner's: the claim is on the pod, so a restarted
operator that finds no runner in a run's status looks for a pod claimed by the
run before creating one (:meth:`Runners.open`), and never sends a launch to two
runners.  Idle pool runners exit after ``FLUJO_RUNNER_IDLE_SECONDS`` like any
runner; the pool deletes and replaces them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flujo_operator.builders import RunRef
from flujo_operator.config import Config
from flujo_operator.kube import Kube
from flujo_operator.runner_pods import (
    LABEL_POOL,
    POOL_IDLE,
    build_claim_patch,
    build_pool_pod,
    runner_token,
)

__all__ = ["Claimed", "RunnerPool"]

log = logging.getLogger("flujo_operator.pool")


@dataclass(frozen=True)
class Claimed:
    """A pool runner now serving one run: what the run needs to reach it."""

    name: str
    ip: str
    token: str


@dataclass
class _Namespace:
    ready: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    """Idle runners serving (Running, with an address), by name: the pods as last seen."""
    starting: set[str] = field(default_factory=set)
    loaded: bool = False
    filling: asyncio.Task[None] | None = None


class RunnerPool:
    """Each namespace's idle runners, topped up to ``config.runners_warm``."""

    def __init__(self, kube: Kube, config: Config) -> None:
        self.kube = kube
        self.config = config
        self.size = config.runners_warm
        self.namespaces: dict[str, _Namespace] = {}

    def keep(self, namespace: str) -> None:
        """Keep a pool in this namespace from now on (a no-op when the pool size is 0)."""
        if self.size <= 0:
            return
        pool = self.namespaces.setdefault(namespace, _Namespace())
        if pool.filling is None or pool.filling.done():
            pool.filling = asyncio.get_running_loop().create_task(self._fill(namespace, pool))

    async def _fill(self, namespace: str, pool: _Namespace) -> None:
        try:
            if not pool.loaded:  # after a (re)start: adopt the idle runners already there
                for pod in await self.kube.list_pods(namespace, f"{LABEL_POOL}={POOL_IDLE}"):
                    self._see(namespace, pool, "ADDED", pod)
                pool.loaded = True
            while len(pool.ready) + len(pool.starting) < self.size:
                suffix = secrets.token_hex(4)
                pod = build_pool_pod(namespace, suffix, secrets.token_urlsafe(24), self.config)
                name = pod["metadata"]["name"]
                pool.starting.add(name)
                if not await self.kube.create_pod(pod):
                    pool.starting.discard(name)  # a name taken: draw another
        except Exception as exc:  # the API refused or is down: the next run or event retries
            log.warning("runner pool in %s not filled: %s", namespace, exc)

    def observe(self, kind: str, pod: Mapping[str, Any]) -> None:
        """A pool pod's watch event (the kopf handler for ``flujo.dev/runner-pool``)."""
        namespace = (pod.get("metadata") or {}).get("namespace") or ""
        pool = self.namespaces.get(namespace)
        if pool is not None:
            self._see(namespace, pool, kind, pod)

    def _see(self, namespace: str, pool: _Namespace, kind: str, pod: Mapping[str, Any]) -> None:
        meta = pod.get("metadata") or {}
        name = meta.get("name") or ""
        status = pod.get("status") or {}
        phase = status.get("phase")
        idle = (meta.get("labels") or {}).get(LABEL_POOL) == POOL_IDLE
        if kind == "DELETED" or not idle or phase in ("Succeeded", "Failed"):
            gone = pool.ready.pop(name, None) is not None or name in pool.starting
            pool.starting.discard(name)
            if idle and kind != "DELETED":  # exited (idle too long, or crashed): replace it
                asyncio.get_running_loop().create_task(self._delete(namespace, name))
            if gone and idle:
                self.keep(namespace)
            return
        if phase == "Running" and status.get("podIP"):
            pool.starting.discard(name)
            pool.ready[name] = pod
        else:
            pool.starting.add(name)

    async def _delete(self, namespace: str, name: str) -> None:
        with contextlib.suppress(Exception):
            await self.kube.delete_pod(namespace, name)

    async def claim(self, run: RunRef) -> Claimed | None:
        """An idle runner of the run's namespace, now the run's; None when none is ready."""
        pool = self.namespaces.get(run.namespace)
        if pool is None:
            self.keep(run.namespace)
            return None
        try:
            while pool.ready:
                name, pod = pool.ready.popitem()
                version = (pod.get("metadata") or {}).get("resourceVersion") or ""
                patch = build_claim_patch(run, version)
                if await self.kube.patch_pod(run.namespace, name, patch):
                    return Claimed(name=name, ip=pod["status"]["podIP"], token=runner_token(pod))
                log.info("pool runner %s changed before %s claimed it", name, run.name)
            return None
        finally:
            self.keep(run.namespace)
