"""Security controls shared by both executors: policy, audit log, secret redaction.

- :mod:`flujo.security.policy` — what pipelines and agents may do (agent
  types, endpoints and SSRF, bounds on retries, loops, fan-out, data sizes);
- :mod:`flujo.security.audit` — who ran what, with which agents, at what
  cost, as JSON lines that never carry prompts, outputs or secrets;
- :mod:`flujo.security.redaction` — scrubbing known secret values from
  messages, JSON and log records.

The threat model and every option are in ``docs/security.md``.
"""

from flujo.security.audit import AuditLog, AuditObserver, open_audit_log
from flujo.security.policy import (
    OutputGuard,
    PolicyConfig,
    PolicyError,
    PolicyViolation,
    SecurityPolicy,
    active_policy,
    check_agent_policy,
    check_input,
    check_output,
    check_pipeline_policy,
    load_policy,
    policy_from_env,
    use_policy,
)
from flujo.security.redaction import Redactor, install_log_redaction

__all__ = [
    "AuditLog",
    "AuditObserver",
    "OutputGuard",
    "PolicyConfig",
    "PolicyError",
    "PolicyViolation",
    "Redactor",
    "SecurityPolicy",
    "active_policy",
    "check_agent_policy",
    "check_input",
    "check_output",
    "check_pipeline_policy",
    "install_log_redaction",
    "load_policy",
    "open_audit_log",
    "policy_from_env",
    "use_policy",
]
