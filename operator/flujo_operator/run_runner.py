"""The runner executor: one warm pod per run serves every step launch of it.

A run whose executor is ``runner`` (its spec's ``executor``, else
``FLUJO_EXECUTOR``) gets a runner pod at admission
(:func:`~flujo_operator.runner_pods.build_runner_pod`, ``flujo runner``).  Each
``LaunchStep`` is then an HTTP ``POST /launch`` of the step pod's own launch
document to that pod, and the answer is the launch's result event — no pod
create, no log read, no API write on the way.  The operator is the client; it
serves nothing.

Guarantees, and how:

- **Operator SIGKILLed.** The runner keeps every result it produced, keyed by
  ``(path, attempt)``; after a restart the replay re-sends the launches in
  flight and the runner answers them from memory (or joins the call still
  running): no second call, nothing lost.
- **Runner pod lost** (deleted, evicted, crashed): the launches in flight fail
  as ``transient`` — the step's retry policy decides — and results already
  applied are in the journal, so completed steps are never called again.  A
  new runner (the next *generation*) is created only once the status records
  that generation, so a restarted operator never sends a launch to a runner
  it does not know about.
- **Results outlive the runner.** A result is journaled inline (the status's
  compressed journal) while it is small and the journal under its budget;
  otherwise in ConfigMaps owned by the run, verified by sha256 on the way back.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from flujo.domain import errors
from flujo.domain.validation import agent_references, tool_closure
from flujo.engine import Event, LaunchStep, StepFailed, StepSucceeded
from flujo.runtime.calls import budget_of
from flujo.spec.agent import AgentSpec
from pydantic import TypeAdapter, ValidationError

from flujo_operator.builders import LABEL_RUN, launch_document
from flujo_operator.config import Config
from flujo_operator.kube import Kube
from flujo_operator.run_session import Session
from flujo_operator.runner_pods import (
    LABEL_COMPONENT,
    LABEL_GENERATION,
    LABEL_POOL,
    POOL_CLAIMED,
    build_result_config_maps,
    build_runner_pod,
    needs_credentials,
    runner_pod_name,
    runner_token,
)
from flujo_operator.runner_pool import RunnerPool

__all__ = ["INLINE_RESULT_BYTES", "JOURNAL_INLINE_BUDGET", "Runners", "is_runner_pod"]

log = logging.getLogger("flujo_operator.runner")

INLINE_RESULT_BYTES = 4096
"""Results up to this (canonical JSON) are journaled inline, in the status."""
JOURNAL_INLINE_BUDGET = 192 * 1024
"""Once the compressed journal passes this, results go to ConfigMaps: the status stays bounded."""

Key = tuple[str, int]
Deliver = Callable[[Session, Key, Event, dict[str, Any]], Awaitable[None]]
_results: TypeAdapter[StepSucceeded | StepFailed] = TypeAdapter(StepSucceeded | StepFailed)


class RunnerError(Exception):
    """The runner answered, but not with a result (a bad document, a wrong token)."""


@dataclass
class Handle:
    """What the operator knows about one run's runner."""

    name: str
    generation: int
    token: str
    agents: list[AgentSpec | None]
    ip: str | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    durable: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once a status recording this generation was written: its pod may be created."""
    created: bool = False
    creating: asyncio.Task[None] | None = None
    calls: dict[Key, asyncio.Task[None]] = field(default_factory=dict)
    forget: list[Key] = field(default_factory=list)
    """Results journaled since the last request: the runner may drop them."""
    journaled: list[Key] = field(default_factory=list)
    """Results applied since the last status write."""
    journal_bytes: int = 0
    closing: bool = False
    dirty: bool = False
    writer: asyncio.Task[None] | None = None
    lingering: bool = False
    """The writer waits out the linger window (no write in flight: a flush may cancel it)."""


class Runners:
    """The runner pods of the runs in ``executor: runner`` mode, and their calls."""

    def __init__(self, kube: Kube, config: Config, deliver: Deliver) -> None:
        self.kube = kube
        self.config = config
        self.deliver = deliver
        self.handles: dict[str, Handle] = {}
        self.pool = RunnerPool(kube, config)
        self._http: aiohttp.ClientSession | None = None

    def serves(self, session: Session) -> bool:
        return session.ref.uid in self.handles

    @staticmethod
    def executor(spec_executor: str | None, status: Mapping[str, Any], default: str) -> str:
        """The run's executor: its spec, else what its status recorded, else the default.

        A run journaled before executors existed ran in pods, and keeps doing so.
        """
        if spec_executor:
            return spec_executor
        recorded = status.get("executor")
        if isinstance(recorded, str) and recorded in ("runner", "pod"):
            return recorded
        return "pod" if status.get("journal") else default

    def status_of(self, session: Session) -> dict[str, Any]:
        handle = self.handles.get(session.ref.uid)
        if handle is None:
            return {"executor": "pod"}
        return {
            "executor": "runner",
            "runner": {"pod": handle.name, "generation": handle.generation},
        }

    # --- the runner pod -----------------------------------------------------------------

    async def open(self, session: Session, status: Mapping[str, Any]) -> None:
        """Adopt the run's runner (after a restart), else claim a pool runner or create one."""
        recorded = status.get("runner") or {}
        generation = int(recorded.get("generation") or 0)
        handle = Handle(
            name=str(recorded.get("pod") or runner_pod_name(session.ref.name, generation)),
            generation=generation,
            token=secrets.token_urlsafe(24),
            agents=self._run_agents(session),
        )
        handle.durable.set()  # this generation is recorded (or is the first: no launch is lost)
        self.handles[session.ref.uid] = handle
        if generation == 0 and await self._adopt_claimed(session, handle, recorded):
            return
        if not recorded and self.pool.size > 0 and not needs_credentials(handle.agents):
            claimed = await self.pool.claim(session.ref)
            if claimed is not None:
                handle.name, handle.ip, handle.token = claimed.name, claimed.ip, claimed.token
                handle.created = True
                handle.ready.set()
                return
        await self._create(session, handle)

    async def _adopt_claimed(
        self, session: Session, handle: Handle, recorded: Mapping[str, Any]
    ) -> bool:
        """A pool runner this run claimed before a restart: adopt it (True), never make a
        second runner beside it.  Its name is in the status — or, when the operator died
        before writing one, on the pod (its claim labels), looked up while a pool is kept."""
        ref = session.ref
        if recorded:
            if handle.name == runner_pod_name(ref.name, 0):
                return False  # the run's own runner: created (or adopted) by name
            pod = await self.kube.get_pod(ref.namespace, handle.name)
            if pod is None:  # gone while no operator watched: the next generation replaces it
                handle.created = True
                self._lost(session, handle, f"runner pod {handle.name} was deleted")
                return True
        elif self.pool.size > 0:
            selector = f"{LABEL_RUN}={ref.name},{LABEL_POOL}={POOL_CLAIMED}"
            pods = await self.kube.list_pods(ref.namespace, selector)
            owned = (
                p
                for p in pods
                if any(o.get("uid") == ref.uid for o in p["metadata"].get("ownerReferences") or [])
            )
            pod = next(owned, None)
            if pod is None:
                return False
            handle.name = pod["metadata"]["name"]
        else:
            return False
        handle.token = runner_token(pod)
        handle.created = True
        self.observe(session, "MODIFIED", pod)
        return True

    @staticmethod
    def _run_agents(session: Session) -> list[AgentSpec | None]:
        """The specs whose credentials the runner needs: the pipeline's agents and their tools."""
        names = {name for name, _ in agent_references(session.state.pipeline)}
        closure = tool_closure(sorted(names), session.agents)
        return [session.agents.get(n) for n in sorted(set(closure) | names)]

    async def _create(self, session: Session, handle: Handle) -> None:
        await handle.durable.wait()
        handle.created = True
        pod = build_runner_pod(
            session.ref, handle.generation, handle.token, handle.agents, self.config
        )
        if not await self.kube.create_pod(pod):  # it exists: adopt it, token and address
            found = await self.kube.get_pod(session.ref.namespace, handle.name)
            if found is not None:
                handle.token = runner_token(found) or handle.token
                self.observe(session, "MODIFIED", found)

    def observe(self, session: Session, kind: str, pod: Mapping[str, Any]) -> list[StepFailed]:
        """A runner pod's watch event; the launches it failed when the runner is lost."""
        handle = self.handles.get(session.ref.uid)
        meta = pod.get("metadata") or {}
        if handle is None or meta.get("name") != handle.name:
            return []
        status = pod.get("status") or {}
        phase = status.get("phase")
        if kind != "DELETED" and phase == "Running" and status.get("podIP"):
            handle.ip = status["podIP"]
            handle.ready.set()
            return []
        if kind != "DELETED" and phase not in ("Failed", "Succeeded"):
            return []
        if handle.closing:
            return []
        why = "was deleted" if kind == "DELETED" else f"ended ({phase}: {status.get('reason', '')})"
        return self._lost(session, handle, f"runner pod {handle.name} {why}".rstrip(": )") + ")")

    def _lost(self, session: Session, handle: Handle, why: str) -> list[StepFailed]:
        log.warning("run %s: %s; launches in flight fail as transient", session.ref.name, why)
        failures = []
        for (path, attempt), task in sorted(handle.calls.items()):
            task.cancel()
            failures.append(
                StepFailed(
                    path=path,
                    attempt=attempt,
                    error_class=errors.TRANSIENT,
                    message=f"{why} before the step finished"[:500],
                )
            )
        handle.calls.clear()
        handle.generation += 1
        handle.name = runner_pod_name(session.ref.name, handle.generation)
        handle.ip = None
        handle.ready = asyncio.Event()
        handle.durable = asyncio.Event()
        handle.created = False
        handle.creating = None
        handle.forget.clear()
        return failures

    def journaled(self, session: Session, key: Key) -> None:
        """A runner's result is in the run's journal (in memory, not yet written)."""
        handle = self.handles.get(session.ref.uid)
        if handle is not None:
            handle.journaled.append(key)

    def journaled_count(self, session: Session) -> int:
        """Taken when a status is computed: the results that status will hold."""
        handle = self.handles.get(session.ref.uid)
        return 0 if handle is None else len(handle.journaled)

    def persisted(self, session: Session, status: Mapping[str, Any], count: int = 0) -> None:
        """A status write succeeded: its generation is durable; the first ``count`` results
        journaled are written, so the runner may forget them."""
        handle = self.handles.get(session.ref.uid)
        if handle is None:
            return
        handle.journal_bytes = len(status.get("journal") or "")
        handle.forget += handle.journaled[:count]
        del handle.journaled[:count]
        handle.durable.set()

    # --- status writes ----------------------------------------------------------------

    def write_behind(self, session: Session, write: Callable[[], Awaitable[None]]) -> bool:
        """Coalesce the run's status writes: True when one is scheduled instead of made now.

        A write waits ``status_linger_seconds`` first, so the results of a burst
        of fast steps share it, and while a write is in flight results keep being
        applied and launches sent; the next write carries all of them.  The
        journal then lags the run by at most a linger and one write, which the
        runner covers: it keeps every result until a written status holds it, so
        a restarted operator gets what the status lacks by sending its launches
        again.  Not while a new runner generation waits to be recorded: that
        write is made at once.
        """
        handle = self.handles.get(session.ref.uid)
        if handle is None or not handle.durable.is_set():
            return False
        handle.dirty = True
        if handle.writer is None or handle.writer.done():
            handle.writer = asyncio.get_running_loop().create_task(self._writes(handle, write))
        return True

    async def _writes(self, handle: Handle, write: Callable[[], Awaitable[None]]) -> None:
        while handle.dirty and not handle.closing:
            handle.lingering = True
            try:
                await asyncio.sleep(self.config.status_linger_seconds)
            finally:
                handle.lingering = False
            handle.dirty = False
            try:
                await write()
            except Exception as exc:  # the API is down or throttling: try again, later
                log.warning("runner %s: status write failed (%s); retrying", handle.name, exc)
                handle.dirty = True
                await asyncio.sleep(1.0)

    async def flush(self, session: Session) -> None:
        """Before a write made now (the run's final one): drop the write waiting out its
        linger — the one made now carries what it would have — and wait for the one in
        flight, so the final write comes last."""
        handle = self.handles.get(session.ref.uid)
        if handle is None or handle.writer is None:
            return
        handle.dirty = False
        if handle.lingering:
            handle.writer.cancel()
        await asyncio.wait([handle.writer])  # its outcome is its own (it logs failures)

    async def close(self, session: Session) -> None:
        """The run ended (or was deleted): stop its calls, tell the runner to exit."""
        handle = self.handles.pop(session.ref.uid, None)
        if handle is None:
            return
        handle.closing = True
        for task in handle.calls.values():
            task.cancel()
        if handle.ip is not None:
            with contextlib.suppress(Exception):
                await self._post(handle, "/shutdown", {}, timeout=5)

    async def stop_orphan(self, pod: Mapping[str, Any]) -> None:
        """A runner whose run ended while the operator was down: tell it to exit now."""
        status = pod.get("status") or {}
        if status.get("phase") != "Running" or not status.get("podIP"):
            return
        handle = Handle(
            name=pod["metadata"]["name"], generation=-1, token=runner_token(pod), agents=[]
        )
        handle.ip = status["podIP"]
        with contextlib.suppress(Exception):
            await self._post(handle, "/shutdown", {}, timeout=5)

    # --- launches ----------------------------------------------------------------------

    def submit(
        self,
        session: Session,
        cmd: LaunchStep,
        spec: AgentSpec | None,
        policy: dict[str, Any] | None,
    ) -> None:
        """Send one launch to the run's runner; its result comes back through ``deliver``."""
        handle = self.handles[session.ref.uid]
        key = (cmd.path, cmd.attempt)
        if key in handle.calls:
            return
        names = tool_closure([cmd.agent], session.agents)
        tools = {n: s for n in names if n != cmd.agent and (s := session.agents.get(n))}
        budget = None
        if spec is not None and spec.tools:
            found = budget_of(session.state.limits, session.state.usage)
            if found is not None:
                values = {"costUsd": found.cost_usd, "tokens": found.tokens}
                budget = {k: float(v) for k, v in values.items() if v is not None}
        document = launch_document(session.ref, cmd, spec, policy, tools=tools, budget=budget)
        if not handle.created and handle.creating is None:
            handle.creating = asyncio.get_running_loop().create_task(self._create(session, handle))
        handle.calls[key] = asyncio.get_running_loop().create_task(
            self._call(session, handle, key, document)
        )

    def cancel(self, session: Session, path: str, attempt: int) -> None:
        """Stop waiting for a launch and ask the runner to cancel it (best effort)."""
        handle = self.handles.get(session.ref.uid)
        task = handle.calls.pop((path, attempt), None) if handle else None
        if handle is None or task is None:
            return
        task.cancel()
        if handle.ip is not None:
            asyncio.get_running_loop().create_task(
                self._quiet_post(handle, "/cancel", {"path": path, "attempt": attempt})
            )

    async def _quiet_post(self, handle: Handle, target: str, data: dict[str, Any]) -> None:
        with contextlib.suppress(Exception):
            await self._post(handle, target, data, timeout=10)

    async def _call(self, session: Session, handle: Handle, key: Key, document: str) -> None:
        generation = handle.generation
        delay = 0.02
        body = b""
        while True:
            await handle.ready.wait()
            if handle.generation != generation:
                return
            forget, handle.forget = handle.forget, []
            payload = {"document": json.loads(document), "forget": forget}
            try:
                body = await self._post(handle, "/launch", payload, timeout=None)
                break
            except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                handle.forget += forget
                log.debug("runner %s not answering (%s); retrying", handle.name, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
            except RunnerError as exc:
                body = json.dumps(
                    StepFailed(
                        path=key[0],
                        attempt=key[1],
                        error_class=errors.INTERNAL,
                        message=f"runner {handle.name} refused the launch: {exc}"[:500],
                    ).model_dump(mode="json")
                ).encode()
                break
        if handle.calls.get(key) is not asyncio.current_task():
            return
        del handle.calls[key]
        try:
            event = _results.validate_json(body)
        except ValidationError as exc:
            event = StepFailed(
                path=key[0],
                attempt=key[1],
                error_class=errors.INTERNAL,
                message=f"runner {handle.name} answered with no result: {exc}"[:500],
            )
        entry = await self._entry(session, handle, key, event, body)
        await self.deliver(session, key, event, entry)

    async def _post(
        self, handle: Handle, target: str, data: dict[str, Any], *, timeout: float | None
    ) -> bytes:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, force_close=True)
            )
        url = f"http://{handle.ip}:{self.config.runner_port}{target}"
        async with self._http.post(
            url,
            data=json.dumps(data, separators=(",", ":")),
            headers={"Authorization": f"Bearer {handle.token}"},
            timeout=aiohttp.ClientTimeout(total=timeout, sock_connect=5),
        ) as response:
            body = await response.read()
            if response.status != 200:
                raise RunnerError(f"HTTP {response.status}: {body[:300]!r}")
            digest = response.headers.get("X-Flujo-Sha256")
            if digest is not None and digest != hashlib.sha256(body).hexdigest():
                raise aiohttp.ClientPayloadError("the answer does not match its digest")
            return body

    async def _entry(
        self, session: Session, handle: Handle, key: Key, event: Event, body: bytes
    ) -> dict[str, Any]:
        """The result's journal entry: inline while small, else in ConfigMaps of the run."""
        if len(body) <= INLINE_RESULT_BYTES and handle.journal_bytes < JOURNAL_INLINE_BUDGET:
            return {"t": "ev", "p": key[0], "a": key[1], "e": json.loads(body)}
        config_maps = build_result_config_maps(session.ref, key[0], key[1], body)
        for config_map in config_maps:
            await self.kube.create_config_map(config_map)
        return {
            "t": "cm",
            "p": key[0],
            "a": key[1],
            "n": len(config_maps),
            "s": hashlib.sha256(body).hexdigest(),
            "z": len(body),
        }

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()


def is_runner_pod(pod: Mapping[str, Any]) -> bool:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return labels.get(LABEL_COMPONENT) == "runner" and LABEL_GENERATION in labels
