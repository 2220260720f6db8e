"""The warm step runner: one long-lived process executing many launch documents.

In the cluster's default executor (``executor: runner``) a PipelineRun gets one
*runner pod* running ``flujo runner``, instead of one pod per step.  The
operator is the runner's only client: it sends each launch document in a
``POST /launch`` and the answer is that launch's result event.  Everything a
step pod guarantees holds per launch, because a launch runs the step pod's own
code (:mod:`flujo.runtime.step_runner` and :mod:`flujo.runtime.calls`): the
agent is built under the document's security policy (endpoints checked again
here), its output capped by the :class:`~flujo.security.policy.OutputGuard`,
secrets redacted, failures classified; the result reports the outcome the
operator feeds into the Agent's circuit breaker.

What a runner adds:

- **Concurrency.** Launches run as asyncio tasks, so parallel branches, map
  items and batches the machine issued together run together.
- **Idempotence by (path, attempt).** A launch already running is joined, one
  already finished is answered from memory: an operator that restarts and
  sends its in-flight launches again never causes a second call.  The
  operator says which results it has journaled (``forget``) and the runner
  drops them.
- **Shared governance.** One :class:`~flujo.agents.registry.AgentRegistry` per
  runner: an agent's ``rateLimit`` limiter and its breaker are shared by every
  launch of the run, as they are embedded (a step pod has its own, fresh).
- **Bounded life.** ``POST /shutdown`` (the run ended) or an idle period with
  nothing running ends the process (exit 0).

The transport is HTTP/1.1 with a bearer token (``FLUJO_RUNNER_TOKEN``), one
request per connection; only the operator may connect (NetworkPolicy).  The
server is a few lines over :func:`asyncio.start_server`, so ``flujo`` needs
no web framework.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from flujo.agents.registry import AgentRegistry
from flujo.domain import errors
from flujo.domain.errors import AgentError
from flujo.engine.events import StepFailed, StepSucceeded
from flujo.runtime.calls import call_agent, crashed, failed
from flujo.runtime.envelope import MAX_BODY_BYTES
from flujo.runtime.step_runner import LaunchDocument
from flujo.security.policy import OutputGuard, SecurityPolicy, use_policy
from flujo.spec.agent import AgentManifest, AgentSpec
from flujo.spec.base import ObjectMeta

__all__ = ["MAX_REQUEST_BYTES", "RunnerServer", "result_body", "serve"]

log = logging.getLogger("flujo.runner")

MAX_REQUEST_BYTES = 64 << 20
"""A launch document is at most a few MiB (its input); anything bigger is refused."""

Key = tuple[str, int]


def result_body(event: StepSucceeded | StepFailed) -> bytes:
    """The canonical JSON of a result event (what the operator verifies and journals)."""
    body = _canonical(event)
    if len(body) > MAX_BODY_BYTES:
        body = _canonical(
            StepFailed(
                path=event.path,
                attempt=event.attempt,
                error_class=errors.SCHEMA,
                message=f"the step's output is {len(body)} bytes; the limit is {MAX_BODY_BYTES}",
                usage=event.usage,
            )
        )
    return body


def _canonical(event: StepSucceeded | StepFailed) -> bytes:
    return json.dumps(
        event.model_dump(mode="json"), ensure_ascii=False, sort_keys=True, separators=(",", ":")
    ).encode("utf-8")


@dataclass
class RunnerServer:
    """Executes launch documents; see the module doc.  ``token`` empty: no auth (tests)."""

    token: str = ""
    idle_seconds: float = 600.0
    results: dict[Key, bytes] = field(default_factory=dict)
    tasks: dict[Key, asyncio.Task[bytes]] = field(default_factory=dict)
    calls: int = 0
    """Agent calls started (a re-sent launch adds none)."""

    def __post_init__(self) -> None:
        self.registry = AgentRegistry()
        self._specs: dict[str, str] = {}
        self._stopping = asyncio.Event()
        self._last = time.monotonic()

    # --- launches ---------------------------------------------------------------------

    async def launch(self, document: LaunchDocument, forget: Sequence[Key] = ()) -> bytes:
        """The result of the document's launch: joined if running, remembered if done."""
        for key in forget:
            self.results.pop((str(key[0]), int(key[1])), None)
        cmd = document.launch
        key = (cmd.path, cmd.attempt)
        if key in self.results:
            return self.results[key]
        task = self.tasks.get(key)
        if task is None:
            self.calls += 1
            task = asyncio.get_running_loop().create_task(self._execute(document))
            self.tasks[key] = task
            task.add_done_callback(functools.partial(self._finished, key))
        return await asyncio.shield(task)

    def _finished(self, key: Key, task: asyncio.Task[bytes]) -> None:
        self.tasks.pop(key, None)
        self._last = time.monotonic()
        if not task.cancelled() and task.exception() is None:
            self.results[key] = task.result()

    def cancel(self, key: Key) -> bool:
        task = self.tasks.get(key)
        if task is None:
            return False
        task.cancel()
        return True

    async def _execute(self, document: LaunchDocument) -> bytes:
        cmd = document.launch
        policy = SecurityPolicy.model_validate(document.policy) if document.policy else None
        with use_policy(policy):
            try:
                agent = self._agent(document, policy)
            except (KeyError, AgentError) as exc:
                error = exc if isinstance(exc, AgentError) else AgentError(errors.CONFIG, str(exc))
                return result_body(failed(cmd, error))
            try:
                event = await call_agent(
                    agent, cmd, run_id=document.run, budget=document.budget_value()
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # call_agent classifies; this is a last resort
                event = crashed(cmd, exc)
        log.info("%s attempt %d: %s", cmd.path, cmd.attempt, type(event).__name__)
        return result_body(event)

    def _agent(self, document: LaunchDocument, policy: SecurityPolicy | None) -> Any:
        """The launch's agent from the shared registry; (re)registered when its spec changed."""
        cmd = document.launch
        specs = dict(document.tools or {})
        if document.agent is not None:
            specs[cmd.agent] = document.agent
        for name, raw in sorted(specs.items()):
            spec = AgentSpec.model_validate(raw)
            if spec.command:
                raise AgentError(
                    errors.CONFIG,
                    f"mcp agent {name!r}: command (a stdio server) runs embedded only; "
                    "give the agent the server's endpoint",
                )
            digest = hashlib.sha256(
                json.dumps([raw, document.policy], sort_keys=True, default=str).encode()
            ).hexdigest()
            if self._specs.get(name) != digest:
                manifest = AgentManifest(metadata=ObjectMeta(name=name), spec=spec)
                self.registry.register_manifest(manifest, provenance="cluster")
                self._specs[name] = digest
        agent = self.registry.get(cmd.agent)
        return OutputGuard(agent, cmd.agent, policy) if policy is not None else agent

    # --- HTTP -------------------------------------------------------------------------

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._last = time.monotonic()
        try:
            status, body = await self._respond(reader)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError) as exc:
            status, body = 400, _error(f"bad request: {exc}")
        try:
            writer.write(
                f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
                "Content-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n"
                f"X-Flujo-Sha256: {hashlib.sha256(body).hexdigest()}\r\n"
                "Connection: close\r\n\r\n".encode("latin-1")
                + body
            )
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            self._last = time.monotonic()

    async def _respond(self, reader: asyncio.StreamReader) -> tuple[int, bytes]:
        method, target, _ = (await reader.readline()).decode("latin-1").split(" ", 2)
        headers: dict[str, str] = {}
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length") or 0)
        if length > MAX_REQUEST_BYTES:
            return 413, _error(f"request over {MAX_REQUEST_BYTES} bytes")
        raw = await reader.readexactly(length) if length else b""
        if target == "/healthz":
            return 200, b'{"ok":true}'
        if self.token and not hmac.compare_digest(
            headers.get("authorization", ""), f"Bearer {self.token}"
        ):
            return 401, _error("unauthorized")
        if method != "POST":
            return 405, _error("POST only")
        data = json.loads(raw or b"{}")
        if target == "/launch":
            document = LaunchDocument.model_validate(data["document"])
            forget = [(str(p), int(a)) for p, a in data.get("forget") or []]
            return 200, await self.launch(document, forget)
        if target == "/cancel":
            found = self.cancel((str(data["path"]), int(data["attempt"])))
            return 200, json.dumps({"cancelled": found}).encode()
        if target == "/shutdown":
            self._stopping.set()
            return 200, b'{"stopping":true}'
        return 404, _error(f"no such endpoint {target}")

    async def serve(self, host: str, port: int) -> None:
        """Serve until ``/shutdown`` or until idle for ``idle_seconds``; then clean up."""
        server = await asyncio.start_server(self.handle, host, port, limit=1 << 20)
        log.info("flujo runner listening on %s:%d", host, port)
        try:
            while not self._stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), 1.0)
                idle = time.monotonic() - self._last
                if not self.tasks and self.idle_seconds and idle >= self.idle_seconds:
                    log.info("idle for %.0f s with nothing running: exiting", idle)
                    break
        finally:
            server.close()
            for task in list(self.tasks.values()):
                task.cancel()
            await asyncio.gather(*self.tasks.values(), return_exceptions=True)
            await self.registry.aclose()


_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Payload Too Large",
}


def _error(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


def serve(host: str, port: int, *, token: str = "", idle_seconds: float = 600.0) -> None:
    """Run a runner until it is told to stop (the ``flujo runner`` body)."""

    async def main() -> None:
        await RunnerServer(token=token, idle_seconds=idle_seconds).serve(host, port)

    asyncio.run(main())
