"""PipelineRuns for the web view, read and acted on with the user's own ``kubectl``.

``flujo`` never imports a Kubernetes client (an import-linter contract): the
view runs the ``kubectl`` the user runs, with ``-o json``, so their
kubeconfig, context and RBAC apply and nothing more — a namespace they may
not list is an error from kubectl, shown as one line.  Live updates are
``kubectl get pipelinerun NAME -o json --watch``: one JSON document per
change of the run, read as kubectl prints them.

A run's graph comes from its pipeline (inline ``spec.pipeline``, or the
Pipeline its ``pipelineRef`` names), its steps from ``status.steps`` (the
running steps and the last finished ones the operator keeps there).
Outputs stay in the step pods' logs (the operator's result store); a step
shows its pod's name, and ``kubectl logs`` reads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

from flujo.domain.usage import Usage
from flujo.security.redaction import Redactor
from flujo.spec.pipeline import PipelineSpec
from flujo.ui.view import ActionError, RunSummary, RunView, StepInfo, css_class

__all__ = ["RESOURCE", "ClusterRuns", "parse_documents"]

RESOURCE = "pipelineruns.flujo.dev"
KUBECTL_TIMEOUT = 30.0


def _when(stamp: str | None) -> float | None:
    if not stamp:
        return None
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def parse_documents(buffer: str) -> tuple[list[dict[str, Any]], str]:
    """The complete JSON documents at the start of ``buffer`` and what is left of it."""
    decoder = json.JSONDecoder()
    docs: list[dict[str, Any]] = []
    pos = 0
    while True:
        while pos < len(buffer) and buffer[pos].isspace():
            pos += 1
        if pos >= len(buffer):
            return docs, ""
        try:
            doc, end = decoder.raw_decode(buffer, pos)
        except json.JSONDecodeError:
            return docs, buffer[pos:]
        if isinstance(doc, dict):
            docs.append(doc)
        pos = end


class ClusterRuns:
    """PipelineRuns of the chosen namespaces (the kubeconfig's own when none is given)."""

    source = "cluster"

    def __init__(self, namespaces: Sequence[str], kubectl: str = "kubectl") -> None:
        self.namespaces = list(namespaces)
        self.kubectl = kubectl
        self.redactor = Redactor().add_environment()

    def close(self) -> None:
        return None

    def _run(self, *args: str, stdin: str | None = None) -> str:
        try:
            done = subprocess.run(
                [self.kubectl, *args],
                input=stdin,
                capture_output=True,
                text=True,
                timeout=KUBECTL_TIMEOUT,
                check=False,
            )
        except FileNotFoundError:
            raise ActionError(f"{self.kubectl}: not found (--kubectl names it)") from None
        except subprocess.TimeoutExpired:
            raise ActionError(f"kubectl {args[0]} did not answer in {KUBECTL_TIMEOUT:g}s") from None
        if done.returncode != 0:
            lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
            raise ActionError(lines[-1] if lines else f"kubectl {args[0]} exited {done.returncode}")
        return done.stdout

    def _json(self, *args: str) -> dict[str, Any]:
        out = self._run(*args, "-o", "json")
        try:
            data = json.loads(out)
        except json.JSONDecodeError:
            raise ActionError(f"kubectl {args[0]}: not JSON") from None
        if not isinstance(data, dict):
            raise ActionError(f"kubectl {args[0]}: not an object")
        return data

    @staticmethod
    def split(key: str) -> tuple[str, str]:
        namespace, _, name = key.partition("/")
        if not namespace or not name or "/" in name:
            raise ActionError(f"{key!r}: a cluster run is NAMESPACE/NAME")
        return namespace, name

    # --- reading ----------------------------------------------------------------

    def list(
        self, *, status: str | None, query: str, offset: int, limit: int
    ) -> tuple[list[RunSummary], bool]:
        items: list[dict[str, Any]] = []
        for namespace in self.namespaces or [""]:
            scope = ["-n", namespace] if namespace else []
            items += self._json("get", RESOURCE, *scope).get("items", [])
        items.sort(key=lambda o: str(o.get("metadata", {}).get("creationTimestamp", "")))
        items.reverse()
        rows = [self.summary(o) for o in items]
        rows = [
            r
            for r in rows
            if (not query or query.lower() in f"{r.key} {r.pipeline}".lower())
            and (not status or css_class(r.phase) == css_class(status))
        ]
        return rows[offset : offset + limit], len(rows) > offset + limit

    def summary(self, obj: dict[str, Any]) -> RunSummary:
        meta = obj.get("metadata", {})
        spec = obj.get("spec", {})
        status = obj.get("status") or {}
        usage = status.get("usage") or {}
        pipeline = (spec.get("pipelineRef") or {}).get("name") or f"{meta.get('name')} (inline)"
        waiting = status.get("awaitingApproval") or {}
        return RunSummary(
            source=self.source,
            key=f"{meta.get('namespace', 'default')}/{meta.get('name')}",
            pipeline=str(pipeline),
            phase=str(status.get("phase") or "Pending"),
            progress=str(status.get("progress") or ""),
            tokens=int(usage.get("totalTokens", 0)),
            cost_usd=float(usage.get("costUsd", 0.0)),
            created=_when(meta.get("creationTimestamp")),
            updated=_when(status.get("finishedAt") or status.get("startedAt")),
            launches=int(status.get("launches", 0)),
            message=self.redactor.redact(str(status.get("message") or "")),
            reason=str(status.get("reason") or ""),
            awaiting=sorted(p for p, w in waiting.items() if w is not None),
        )

    def get(self, key: str) -> dict[str, Any]:
        namespace, name = self.split(key)
        return self._json("get", RESOURCE, name, "-n", namespace)

    def pipeline_of(self, obj: dict[str, Any]) -> PipelineSpec:
        spec = obj.get("spec", {})
        namespace = obj.get("metadata", {}).get("namespace", "default")
        data = spec.get("pipeline")
        if data is None:
            ref = (spec.get("pipelineRef") or {}).get("name")
            if not ref:
                raise ActionError("the run names no pipeline")
            data = self._json("get", "pipelines.flujo.dev", str(ref), "-n", namespace).get("spec")
        try:
            return PipelineSpec.model_validate(data)
        except ValueError as exc:
            raise ActionError(f"its pipeline cannot be read: {str(exc).splitlines()[0]}") from None

    def view_of(self, obj: dict[str, Any], spec: PipelineSpec) -> RunView:
        status = obj.get("status") or {}
        waiting = {p: w for p, w in (status.get("awaitingApproval") or {}).items() if w}
        steps: dict[str, StepInfo] = {}
        for path, entry in (status.get("steps") or {}).items():
            if not entry:
                continue
            wait = waiting.get(path)
            if wait is not None:
                entry = {**entry, "message": wait.get("message", "")}
            steps[path] = StepInfo(
                path=path,
                name=path.rsplit("/", 1)[-1],
                kind=str(entry.get("kind", "agent")),
                phase="awaiting approval"
                if wait is not None
                else str(entry.get("phase", "running")).lower(),
                agent=entry.get("agent"),
                attempts=int(entry.get("attempts", 0)),
                iteration=int(entry.get("iterations", 0)),
                branch=entry.get("branch"),
                error_class=entry.get("errorClass"),
                message=self.redactor.redact(str(entry["message"])) if "message" in entry else None,
                usage=Usage.model_validate(entry["usage"]) if "usage" in entry else None,
                pod=entry.get("pod"),
            )
        output = (status.get("output") or {}).get("value") if status.get("output") else None
        return RunView(
            summary=self.summary(obj),
            spec=spec,
            steps=steps,
            input=self.redactor.redact_data(obj.get("spec", {}).get("input")),
            output=self.redactor.redact_data(output),
        )

    def view(self, key: str) -> RunView:
        obj = self.get(key)
        return self.view_of(obj, self.pipeline_of(obj))

    # --- acting -----------------------------------------------------------------

    def answer(
        self, key: str, *, approved: bool, step: str | None, input: Any, reason: str | None
    ) -> str:
        """Add the answer to the run's ``spec.approvals`` with ``kubectl patch``, as the docs do.

        The operator applies it (once) and journals it; who answered is what
        the API server records for the patch (its field manager), as for any
        ``kubectl patch`` of the run.
        """
        namespace, name = self.split(key)
        obj = self.get(key)
        waiting = sorted(
            p for p, w in ((obj.get("status") or {}).get("awaitingApproval") or {}).items() if w
        )
        if not waiting:
            raise ActionError(f"run {key} waits on no approval")
        chosen = [p for p in waiting if step in (None, p, p.rsplit("/", 1)[-1])]
        if len(chosen) != 1:
            raise ActionError(f"run {key} waits on {', '.join(waiting)}: name one step")
        entry: dict[str, Any] = {"step": chosen[0], "decision": "approve" if approved else "reject"}
        if approved and input is not None:
            entry["input"] = input
        if not approved and reason:
            entry["reason"] = reason
        patch: list[dict[str, Any]] = (
            [{"op": "add", "path": "/spec/approvals", "value": [entry]}]
            if (obj.get("spec") or {}).get("approvals") is None
            else [{"op": "add", "path": "/spec/approvals/-", "value": entry}]
        )
        self._run(
            "patch", RESOURCE, name, "-n", namespace, "--type", "json", "-p", json.dumps(patch)
        )
        verb = "approved" if approved else "rejected"
        return f"{chosen[0]} {verb}: kubectl patch sent, the operator goes on"

    async def watch(self, key: str) -> AsyncIterator[dict[str, Any]]:
        """The run's object each time it changes (first as it is now), until it finishes."""
        namespace, name = self.split(key)
        process = await asyncio.create_subprocess_exec(
            self.kubectl,
            "get",
            RESOURCE,
            name,
            "-n",
            namespace,
            "-o",
            "json",
            "--watch",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            stdin=asyncio.subprocess.DEVNULL,
        )
        assert process.stdout is not None
        buffer = ""
        try:
            while True:
                chunk = await process.stdout.read(65536)
                if not chunk:
                    return
                buffer += chunk.decode("utf-8", errors="replace")
                docs, buffer = parse_documents(buffer)
                for doc in docs:
                    yield doc
        finally:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
