"""The audit log: who ran what, with which agents, at what cost, and what changed.

Why a separate log: metrics aggregate and traces sample, but an audit trail
must answer, per run and per change, *what happened* — long after, and to
someone who is not allowed to read the prompts.  So every audit event is one
JSON line with a fixed, versioned schema (the pydantic models of
:mod:`~flujo.security.audit.records`; the same schema is documented in
``docs/security.md``), and it never carries
prompt, input or output contents, error messages (which may quote them) or
secrets — unless ``include_content=True`` is chosen explicitly, and even
then lines pass through the :class:`~flujo.security.redaction.Redactor`.

Events:

- ``run.started`` / ``run.finished`` — a run's identity, limits, outcome
  and totals (:class:`AuditObserver`, a ``RunObserver``);
- ``agent.call`` — one per agent attempt: step path, agent name, type and
  model, attempt, tokens, cost, outcome and error class;
- ``governor.breach`` — the usage limit a run crossed, where, by how much;
- ``config.changed`` — an Agent or Pipeline created, updated or deleted,
  with its generation and field manager (the operator calls
  :meth:`AuditLog.config_changed`);
- ``circuit.transition`` — an agent's circuit breaker changed state;
- ``policy.denied`` — the security policy refused a pipeline, agent or input.

Sinks are JSON-lines streams (stdout, stderr) and append-only files created
``0600``.  A sink that fails raises: the embedded runtime then disables the
observer with one warning (observers never fail a run), so an audit log
that must not lose lines belongs on a reliable file system.

Where each part lives (this package re-exports them all):

- :mod:`~flujo.security.audit.records` — the record models, one per event,
  and the schema of a line;
- :mod:`~flujo.security.audit.sinks` — streams and files the lines go to;
- :mod:`~flujo.security.audit.log` — :class:`AuditLog`, :func:`open_audit_log`
  and the operator's ``config.changed`` helpers;
- :mod:`~flujo.security.audit.observer` — :class:`AuditObserver`, a run's
  events as records.
"""

from flujo.security.audit.log import AuditLog, field_manager_of, open_audit_log
from flujo.security.audit.observer import AgentDescription, AuditObserver
from flujo.security.audit.records import (
    AUDIT_SCHEMA_VERSION,
    AgentCall,
    ApprovalDecided,
    AuditEvent,
    CircuitTransition,
    ConfigChanged,
    GovernorBreach,
    PolicyDenied,
    RunFinished,
    RunStartedAudit,
    audit_event_adapter,
    audit_json_schema,
)
from flujo.security.audit.sinks import AuditSink, FileSink, StreamSink

__all__ = [
    "AUDIT_SCHEMA_VERSION",
    "AgentCall",
    "AgentDescription",
    "ApprovalDecided",
    "AuditEvent",
    "AuditLog",
    "AuditObserver",
    "AuditSink",
    "CircuitTransition",
    "ConfigChanged",
    "FileSink",
    "GovernorBreach",
    "PolicyDenied",
    "RunFinished",
    "RunStartedAudit",
    "StreamSink",
    "audit_event_adapter",
    "audit_json_schema",
    "field_manager_of",
    "open_audit_log",
]
