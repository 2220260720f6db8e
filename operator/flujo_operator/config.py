"""The operator's configuration: one object, read once from environment variables.

| variable | default | meaning |
| --- | --- | --- |
| ``FLUJO_NAMESPACES`` | (all) | comma-separated namespaces to watch; empty watches all |
| ``FLUJO_STEP_IMAGE`` | ``ghcr.io/flujo/flujo:0.1.0`` | image of step-runner pods |
| ``FLUJO_STEP_COMMAND`` | ``["flujo", "step-run"]`` | step-runner command, as a JSON list |
| ``FLUJO_STEP_CPU_REQUEST`` / ``_LIMIT`` | ``100m`` / ``1`` | step pod CPU |
| ``FLUJO_STEP_MEMORY_REQUEST`` / ``_LIMIT`` | ``128Mi`` / ``512Mi`` | step pod memory |
| ``FLUJO_STEP_SERVICE_ACCOUNT`` | (none) | service account of step pods (no token is mounted) |
| ``FLUJO_STEP_NODE_SELECTOR`` | ``{}`` | JSON object |
| ``FLUJO_STEP_TOLERATIONS`` | ``[]`` | JSON list |
| ``FLUJO_MAX_RUNNING_RUNS`` | ``50`` | running PipelineRuns per namespace; more wait as Pending |
| ``FLUJO_MAX_RUNNING_PODS`` | ``100`` | running step pods per namespace; more launches wait |
| ``FLUJO_POD_GC`` | ``Never`` | ``OnSuccess``: delete a run's pods when it succeeds |
| ``FLUJO_STATUS_STEPS`` | ``50`` | finished steps listed in a run's status (the newest) |
| ``FLUJO_BREAKER_FAIL_MAX`` | ``5`` | consecutive transient failures that open an agent's circuit |
| ``FLUJO_BREAKER_RESET_SECONDS`` | ``30`` | how long a circuit stays open before a probe |
| ``FLUJO_METRICS_PORT`` | ``0`` | Prometheus ``/metrics`` port (``0`` disables) |
| ``FLUJO_PEERING`` | (none) | kopf peering object name: set it to run several replicas (HA) |
| ``FLUJO_LOG_FORMAT`` | ``text`` | ``json`` for structured logs |
| ``FLUJO_HEALTH_PORT`` | ``8080`` | liveness/readiness endpoint port (``0`` disables) |
| ``FLUJO_API_QPS`` / ``_BURST`` | ``500`` / ``1000`` | API requests per second, burst (0: none) |
| ``FLUJO_POD_CREATE_QPS`` / ``_BURST`` | ``200`` / ``400`` | pods created per second, and burst |
| ``FLUJO_AUDIT_LOG`` | ``stdout`` | audit JSON lines: ``stdout``, ``stderr``, a path, ``off`` |
| ``FLUJO_AUDIT_CONTENT`` | ``false`` | ``true`` adds inputs, outputs and messages to audit events |
| ``FLUJO_SECURITY_POLICY`` | (none) | policy file or inline JSON (profile: ``cluster``) |
| ``FLUJO_EXECUTOR`` | ``runner`` | runs' default executor: ``runner`` (a pod per run), ``pod`` |
| ``FLUJO_RUNNER_COMMAND`` | ``["flujo", "runner"]`` | runner pod command, as a JSON list |
| ``FLUJO_RUNNER_PORT`` | ``8471`` | port runner pods listen on (only the operator connects) |
| ``FLUJO_RUNNER_IDLE_SECONDS`` | ``600`` | a runner with nothing to do exits after this long |
| ``FLUJO_RUNNERS_WARM`` | ``0`` | idle runners kept per namespace (runs needing no Secrets) |
| ``FLUJO_STATUS_LINGER_SECONDS`` | ``0.2`` | runner mode: status written at most this often |
| ``FLUJO_VALIDATION_WORKERS`` | ``2`` | Pipeline validation processes (``0``: on the event loop) |
| ``FLUJO_VALIDATION_TIMEOUT`` | ``5`` | seconds one validation may take (then its worker dies) |
| ``FLUJO_VALIDATION_MEMORY_MB`` | ``192`` | address space a validation worker may add |
| ``FLUJO_COMPILE_BUDGET_MS`` | ``250`` | compile time of a Pipeline's templates (``0``: none) |

The policy's other variables, FLUJO_SECURITY_PROFILE and FLUJO_SECURITY_<FIELD>,
work as for ``flujo run`` (``docs/security.md``); the policy's per-namespace
overrides apply to the runs, Pipelines and Agents of that namespace.

Standard ``OTEL_*`` variables (for example ``OTEL_EXPORTER_OTLP_ENDPOINT``)
turn on tracing and are passed on to step pods.

A malformed value stops the operator at start with a one-line error naming
the variable.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flujo.security.policy import PolicyConfig, PolicyError, SecurityPolicy, policy_from_env

__all__ = ["Config", "ConfigError"]


class ConfigError(ValueError):
    """A bad environment variable; the message names it."""


def _json(env: Mapping[str, str], name: str, default: Any, kind: type) -> Any:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{name} is not valid JSON: {exc.msg}") from None
    if not isinstance(value, kind):
        raise ConfigError(f"{name} must be a JSON {kind.__name__}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not value >= 0 or value == float("inf"):
        raise ConfigError(f"{name} must be a finite number not below 0")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < 0:
        raise ConfigError(f"{name} must not be negative")
    return value


@dataclass(frozen=True)
class Config:
    namespaces: tuple[str, ...] = ()
    step_image: str = "ghcr.io/flujo/flujo:0.1.0"
    step_command: tuple[str, ...] = ("flujo", "step-run")
    cpu_request: str = "100m"
    cpu_limit: str = "1"
    memory_request: str = "128Mi"
    memory_limit: str = "512Mi"
    step_service_account: str | None = None
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    max_running_runs: int = 50
    max_running_pods: int = 100
    pod_gc: str = "Never"
    status_steps: int = 50
    breaker_fail_max: int = 5
    breaker_reset_seconds: int = 30
    metrics_port: int = 0
    peering: str | None = None
    log_format: str = "text"
    health_port: int = 8080
    otel: dict[str, str] = field(default_factory=dict)
    """The operator's ``OTEL_*`` variables, passed on to step pods (one trace per run)."""
    api_qps: float = 500.0
    api_burst: int = 1000
    pod_create_qps: float = 200.0
    pod_create_burst: int = 400
    audit_log: str = "stdout"
    """Where audit events go; ``off`` writes none."""
    audit_content: bool = False
    security: PolicyConfig = field(default_factory=lambda: PolicyConfig(profile="cluster"))
    """The security policy: cluster profile, file defaults, per-namespace overrides."""
    executor: str = "runner"
    """Where a run's steps execute unless its spec says: ``runner`` or ``pod``."""
    runner_command: tuple[str, ...] = ("flujo", "runner")
    runner_port: int = 8471
    runner_idle_seconds: float = 600.0
    runners_warm: int = 0
    """Idle runners kept per namespace (runner_pool.py); 0 keeps none."""
    status_linger_seconds: float = 0.2
    """Runner mode: results applied within this window share one status write (the final
    write is never delayed).  The status lags the run by at most this much; the runner
    keeps every result until a written status holds it, so nothing is lost."""
    validation_workers: int = 2
    """Processes that check tenants' Pipelines off the event loop (0: on it)."""
    validation_timeout: float = 5.0
    validation_memory_mb: int = 192
    compile_budget_ms: float = 250.0

    def policy(self, namespace: str) -> SecurityPolicy:
        """The policy in force for one namespace's runs, Pipelines and Agents."""
        return self.security.policy(namespace)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        env = os.environ if env is None else env
        namespaces = tuple(
            n.strip() for n in env.get("FLUJO_NAMESPACES", "").split(",") if n.strip()
        )
        command = _json(env, "FLUJO_STEP_COMMAND", ["flujo", "step-run"], list)
        if not command or not all(isinstance(c, str) for c in command):
            raise ConfigError("FLUJO_STEP_COMMAND must be a non-empty JSON list of strings")
        pod_gc = env.get("FLUJO_POD_GC", "Never")
        if pod_gc not in ("Never", "OnSuccess"):
            raise ConfigError(f"FLUJO_POD_GC must be Never or OnSuccess, got {pod_gc!r}")
        log_format = env.get("FLUJO_LOG_FORMAT", "text")
        if log_format not in ("text", "json"):
            raise ConfigError(f"FLUJO_LOG_FORMAT must be text or json, got {log_format!r}")
        try:  # "FLUJO_SECURITY_POLICY" and the other FLUJO_SECURITY_* variables
            security = policy_from_env(env, profile="cluster")
        except PolicyError as exc:
            raise ConfigError(str(exc)) from None
        audit_log = env.get("FLUJO_AUDIT_LOG", "").strip() or "stdout"
        executor = env.get("FLUJO_EXECUTOR", "").strip() or cls.executor
        if executor not in ("runner", "pod"):
            raise ConfigError(f"FLUJO_EXECUTOR must be runner or pod, got {executor!r}")
        runner_command = _json(env, "FLUJO_RUNNER_COMMAND", ["flujo", "runner"], list)
        if not runner_command or not all(isinstance(c, str) for c in runner_command):
            raise ConfigError("FLUJO_RUNNER_COMMAND must be a non-empty JSON list of strings")
        return cls(
            namespaces=namespaces,
            step_image=env.get("FLUJO_STEP_IMAGE", cls.step_image),
            step_command=tuple(command),
            cpu_request=env.get("FLUJO_STEP_CPU_REQUEST", cls.cpu_request),
            cpu_limit=env.get("FLUJO_STEP_CPU_LIMIT", cls.cpu_limit),
            memory_request=env.get("FLUJO_STEP_MEMORY_REQUEST", cls.memory_request),
            memory_limit=env.get("FLUJO_STEP_MEMORY_LIMIT", cls.memory_limit),
            step_service_account=env.get("FLUJO_STEP_SERVICE_ACCOUNT") or None,
            node_selector=_json(env, "FLUJO_STEP_NODE_SELECTOR", {}, dict),
            tolerations=_json(env, "FLUJO_STEP_TOLERATIONS", [], list),
            max_running_runs=_int(env, "FLUJO_MAX_RUNNING_RUNS", cls.max_running_runs),
            max_running_pods=_int(env, "FLUJO_MAX_RUNNING_PODS", cls.max_running_pods),
            pod_gc=pod_gc,
            status_steps=_int(env, "FLUJO_STATUS_STEPS", cls.status_steps),
            breaker_fail_max=max(1, _int(env, "FLUJO_BREAKER_FAIL_MAX", cls.breaker_fail_max)),
            breaker_reset_seconds=_int(
                env, "FLUJO_BREAKER_RESET_SECONDS", cls.breaker_reset_seconds
            ),
            metrics_port=_int(env, "FLUJO_METRICS_PORT", cls.metrics_port),
            peering=env.get("FLUJO_PEERING") or None,
            otel={k: v for k, v in sorted(env.items()) if k.startswith("OTEL_")},
            log_format=log_format,
            health_port=_int(env, "FLUJO_HEALTH_PORT", cls.health_port),
            api_qps=_float(env, "FLUJO_API_QPS", cls.api_qps),
            api_burst=max(1, _int(env, "FLUJO_API_BURST", cls.api_burst)),
            pod_create_qps=_float(env, "FLUJO_POD_CREATE_QPS", cls.pod_create_qps),
            pod_create_burst=max(1, _int(env, "FLUJO_POD_CREATE_BURST", cls.pod_create_burst)),
            audit_log=audit_log,
            audit_content=_bool(env, "FLUJO_AUDIT_CONTENT", cls.audit_content),
            security=security,
            executor=executor,
            runner_command=tuple(runner_command),
            runner_port=_int(env, "FLUJO_RUNNER_PORT", cls.runner_port) or cls.runner_port,
            runner_idle_seconds=_float(env, "FLUJO_RUNNER_IDLE_SECONDS", cls.runner_idle_seconds),
            runners_warm=_int(env, "FLUJO_RUNNERS_WARM", cls.runners_warm),
            status_linger_seconds=_float(
                env, "FLUJO_STATUS_LINGER_SECONDS", cls.status_linger_seconds
            ),
            validation_workers=_int(env, "FLUJO_VALIDATION_WORKERS", cls.validation_workers),
            validation_timeout=_float(env, "FLUJO_VALIDATION_TIMEOUT", cls.validation_timeout)
            or cls.validation_timeout,
            validation_memory_mb=_int(env, "FLUJO_VALIDATION_MEMORY_MB", cls.validation_memory_mb),
            compile_budget_ms=_float(env, "FLUJO_COMPILE_BUDGET_MS", cls.compile_budget_ms),
        )
