"""The audit log: writes records to its sinks, and the events the operator reports.

:class:`AuditLog` turns one record into one JSON line (redacted when it has
a :class:`~flujo.security.redaction.Redactor`) and writes it to every sink;
``config.changed``, ``circuit.transition`` and ``policy.denied`` are written
through its methods.  :func:`open_audit_log` opens one on stdout, stderr or
a file.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from flujo.security.audit.records import (
    ApprovalDecided,
    CircuitTransition,
    ConfigChanged,
    PolicyDenied,
    _Audit,
)
from flujo.security.audit.sinks import AuditSink, FileSink, StreamSink
from flujo.security.redaction import Redactor

__all__ = ["AuditLog", "field_manager_of", "open_audit_log"]


def _now() -> datetime:
    return datetime.now(UTC)


def _stamp(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class AuditLog:
    """Writes audit events to every sink, one JSON line each.

    ``include_content`` adds inputs, outputs and messages to run and call
    events (off by default; see :mod:`flujo.security.audit`).  ``redactor`` scrubs
    every line.  ``clock`` gives event times.
    """

    def __init__(
        self,
        sinks: Sequence[AuditSink],
        *,
        include_content: bool = False,
        redactor: Redactor | None = None,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self.sinks = list(sinks)
        self.include_content = include_content
        self.redactor = redactor
        self.clock = clock
        self._lock = threading.Lock()

    def now(self) -> str:
        return _stamp(self.clock())

    def emit(self, event: _Audit) -> str:
        """Write one event; returns the line written."""
        line = event.model_dump_json(by_alias=True, exclude_none=True)
        if self.redactor is not None:
            line = self.redactor.redact(line)
        with self._lock:
            for sink in self.sinks:
                sink.write(line)
        return line

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()

    # --- for the operator -------------------------------------------------------

    def config_changed(
        self,
        kind: str,
        name: str,
        action: Literal["created", "updated", "deleted"],
        *,
        namespace: str | None = None,
        generation: int | None = None,
        field_manager: str | None = None,
        uid: str | None = None,
    ) -> str:
        """An Agent, Pipeline or PipelineRun changed."""
        return self.emit(
            ConfigChanged(
                time=self.now(),
                kind=kind,
                name=name,
                action=action,
                namespace=namespace,
                generation=generation,
                field_manager=field_manager,
                uid=uid,
            )
        )

    def config_changed_from_body(
        self, kind: str, event_type: str | None, body: Mapping[str, Any]
    ) -> str | None:
        """``config_changed`` from a watch event (``ADDED``/``MODIFIED``/``DELETED``) and object.

        ``None`` (kopf's initial listing of existing objects) is not a change:
        nothing is written.
        """
        if event_type not in ("ADDED", "CREATED", "MODIFIED", "DELETED"):
            return None
        meta = body.get("metadata") or {}
        action: Literal["created", "updated", "deleted"] = (
            "deleted"
            if event_type == "DELETED"
            else "created"
            if event_type in ("ADDED", "CREATED") and int(meta.get("generation") or 1) <= 1
            else "updated"
        )
        return self.config_changed(
            kind,
            str(meta.get("name", "")),
            action,
            namespace=meta.get("namespace"),
            generation=meta.get("generation"),
            field_manager=field_manager_of(body),
            uid=meta.get("uid"),
        )

    def circuit_transition(
        self,
        agent: str,
        old: str,
        new: str,
        *,
        namespace: str | None = None,
        failures: int | None = None,
    ) -> str:
        """An agent's breaker changed state (a ``BreakerRegistry`` listener can call this)."""
        if namespace is None and "/" in agent:
            namespace = agent.split("/", 1)[0]
        return self.emit(
            CircuitTransition.model_validate(
                {
                    "time": self.now(),
                    "agent": agent,
                    "namespace": namespace,
                    "from": old,
                    "to": new,
                    "failures": failures,
                }
            )
        )

    def approval_decided(
        self,
        run: str,
        step: str,
        decision: Literal["approve", "reject"],
        *,
        namespace: str | None = None,
        reason: str | None = None,
        field_manager: str | None = None,
        uid: str | None = None,
    ) -> str:
        """A person's answer to an approval step, with who the API says made it."""
        return self.emit(
            ApprovalDecided(
                time=self.now(),
                run=run,
                step=step,
                decision=decision,
                namespace=namespace,
                reason=reason,
                field_manager=field_manager,
                uid=uid,
            )
        )

    def policy_denied(
        self,
        kind: str,
        name: str,
        reason: str,
        *,
        field: str | None = None,
        namespace: str | None = None,
    ) -> str:
        return self.emit(
            PolicyDenied(
                time=self.now(),
                kind=kind,
                name=name,
                reason=reason,
                field=field,
                namespace=namespace,
            )
        )


def field_manager_of(body: Mapping[str, Any]) -> str | None:
    """The manager of an object's most recent ``managedFields`` entry, if any.

    Entries for the ``status`` subresource are skipped: they are the
    operator's own status writes, not a change of the configuration.
    """
    entries = (body.get("metadata") or {}).get("managedFields") or []
    best: tuple[str, str] | None = None
    for entry in entries:
        if not isinstance(entry, Mapping) or not entry.get("manager"):
            continue
        if entry.get("subresource") == "status":
            continue
        stamp = str(entry.get("time") or "")
        if best is None or stamp >= best[0]:
            best = (stamp, str(entry["manager"]))
    return best[1] if best else None


def open_audit_log(
    target: str,
    *,
    include_content: bool = False,
    redactor: Redactor | None = None,
) -> AuditLog:
    """An audit log writing to ``stdout``, ``stderr`` (or ``-``, stdout) or a file path."""
    sink: AuditSink
    if target in ("-", "stdout"):
        sink = StreamSink(sys.stdout)
    elif target == "stderr":
        sink = StreamSink(sys.stderr)
    else:
        sink = FileSink(target)
    return AuditLog([sink], include_content=include_content, redactor=redactor)
