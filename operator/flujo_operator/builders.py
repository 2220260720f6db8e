"""Pure functions from run state to Kubernetes objects, and back.

Nothing here talks to the API server: handlers call these and send the
result.  Keeping them pure makes the manifests testable on their own and
keeps the handlers thin.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flujo.domain import errors
from flujo.domain.usage import Usage
from flujo.engine import LaunchStep, RunState, StepFailed
from flujo.observability.tracing import run_traceparent
from flujo.runtime.step_runner import LaunchDocument
from flujo.security.credentials import secret_env_name
from flujo.spec.agent import AgentSpec
from flujo.spec.base import API_VERSION
from pydantic import ValidationError

from flujo_operator.config import Config

__all__ = [
    "LABEL_ATTEMPT",
    "LABEL_RUN",
    "LABEL_STEP",
    "RunRef",
    "build_run_status",
    "build_step_pod",
    "decode_journal",
    "encode_journal",
    "pod_failure",
    "pod_name",
]

LABEL_RUN = "flujo.dev/run"
LABEL_STEP = "flujo.dev/step"
LABEL_ATTEMPT = "flujo.dev/attempt"
ANNOTATION_PATH = "flujo.dev/step-path"
ANNOTATION_LAUNCH = "flujo.dev/launch"
LAUNCH_DIR = "/etc/flujo"
MAX_INLINE_LAUNCH = 200_000
"""Launch documents above this go to a ConfigMap (annotations total ≤ 256 KiB)."""
MAX_INLINE_OUTPUT = 16_384

_NOT_DNS = re.compile(r"[^a-z0-9-]+")


@dataclass(frozen=True)
class RunRef:
    name: str
    namespace: str
    uid: str


def _digest(text: str, size: int = 10) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:size]


def pod_name(run: str, path: str, attempt: int) -> str:
    """Deterministic, so a repeated create after a crash is an idempotent 409."""
    stem = _NOT_DNS.sub("-", run.lower()).strip("-")[:40].rstrip("-") or "run"
    return f"{stem}-{_digest(path)}-{attempt}"


def owner_reference(run: RunRef) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "PipelineRun",
        "name": run.name,
        "uid": run.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _secret_env(*specs: AgentSpec | None) -> list[dict[str, Any]]:
    """Agent credentials as secretKeyRef env vars: the operator never reads values."""
    refs = []
    for spec in specs:
        if spec is not None:
            refs += [spec.api_key] if spec.api_key else []
            refs += [h.value_from for h in spec.secret_headers]
    env: dict[str, dict[str, Any]] = {}
    for cred in refs:
        if cred is not None and cred.secret_key_ref is not None:
            ref = cred.secret_key_ref
            env[secret_env_name(ref)] = {
                "name": secret_env_name(ref),
                "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}},
            }
    return [env[k] for k in sorted(env)]


def _spec_data(spec: AgentSpec) -> dict[str, Any]:
    return spec.model_dump(by_alias=True, exclude_none=True, mode="json")


def launch_document(
    run: RunRef,
    cmd: LaunchStep,
    agent: AgentSpec | None,
    policy: dict[str, Any] | None = None,
    *,
    tools: Mapping[str, AgentSpec] | None = None,
    budget: Mapping[str, float] | None = None,
) -> str:
    """The step pod's launch document; ``tools`` and ``budget`` only when there are any."""
    doc = LaunchDocument(
        run=run.name,
        launch=cmd,
        agent=_spec_data(agent) if agent else None,
        policy=policy,
        tools={name: _spec_data(tools[name]) for name in sorted(tools)} if tools else None,
        budget=dict(budget) if budget else None,
    )
    unset = {k for k in ("policy", "tools", "budget") if getattr(doc, k) is None}
    return doc.model_dump_json(exclude=unset or None)


def build_step_pod(
    run: RunRef,
    cmd: LaunchStep,
    agent: AgentSpec | None,
    config: Config,
    *,
    policy: dict[str, Any] | None = None,
    tools: Mapping[str, AgentSpec] | None = None,
    budget: Mapping[str, float] | None = None,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The step-runner pod for one launch, and a ConfigMap when the input is too big.

    ``policy`` is the namespace's security policy (its JSON form): the step
    runner builds the agent under it — endpoint resolved and checked again
    inside the pod, output size capped.  ``tools``: the specs of the agents the
    agent's model may call (the pod runs the whole tool loop; their
    credentials are mounted too); ``budget``: what the run could still spend
    at launch (``costUsd``, ``tokens``), so the loop stops between rounds.
    """
    name = pod_name(run.name, cmd.path, cmd.attempt)
    document = launch_document(run, cmd, agent, policy, tools=tools, budget=budget)
    labels = {
        LABEL_RUN: run.name,
        LABEL_STEP: _digest(cmd.path, 16),
        LABEL_ATTEMPT: str(cmd.attempt),
        "app.kubernetes.io/managed-by": "flujo-operator",
        "app.kubernetes.io/component": "step",
    }
    annotations = {ANNOTATION_PATH: cmd.path}
    config_map: dict[str, Any] | None = None
    if len(document) <= MAX_INLINE_LAUNCH:
        annotations[ANNOTATION_LAUNCH] = document
        launch_volume: dict[str, Any] = {
            "name": "launch",
            "downwardAPI": {
                "items": [
                    {
                        "path": "launch.json",
                        "fieldRef": {"fieldPath": f"metadata.annotations['{ANNOTATION_LAUNCH}']"},
                    }
                ]
            },
        }
    else:
        config_map = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": f"{name}-launch",
                "namespace": run.namespace,
                "labels": labels,
                "ownerReferences": [owner_reference(run)],
            },
            "data": {"launch.json": document},
        }
        launch_volume = {"name": "launch", "configMap": {"name": f"{name}-launch"}}
    container: dict[str, Any] = {
        "name": "step",
        "image": config.step_image,
        "imagePullPolicy": "IfNotPresent",
        "command": list(config.step_command),
        "env": [
            {"name": "FLUJO_LAUNCH_FILE", "value": f"{LAUNCH_DIR}/launch.json"},
            {"name": "FLUJO_TERMINATION_LOG", "value": "/dev/termination-log"},
            {"name": "HOME", "value": "/tmp"},
            {"name": "TRACEPARENT", "value": run_traceparent(run.uid)},
            *({"name": k, "value": v} for k, v in config.otel.items()),
            *_secret_env(agent, *(tools or {}).values()),
        ],
        "volumeMounts": [
            {"name": "launch", "mountPath": LAUNCH_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        "resources": {
            "requests": {"cpu": config.cpu_request, "memory": config.memory_request},
            "limits": {"cpu": config.cpu_limit, "memory": config.memory_limit},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
    }
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [launch_volume, {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
    }
    if config.step_service_account:
        spec["serviceAccountName"] = config.step_service_account
    if config.node_selector:
        spec["nodeSelector"] = dict(config.node_selector)
    if config.tolerations:
        spec["tolerations"] = list(config.tolerations)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": run.namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [owner_reference(run)],
        },
        "spec": spec,
    }
    return pod, config_map


# --- pod → event ----------------------------------------------------------------

_TRANSIENT_REASONS = {"Evicted", "NodeLost", "Preempting", "DeadlineExceeded", "Shutdown"}
_CONFIG_WAITING = {
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
}


def _container(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return statuses[0] if statuses else {}


def terminated(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    state = _container(pod).get("state") or {}
    value = state.get("terminated")
    return value if isinstance(value, Mapping) else None


def pod_failure(pod: Mapping[str, Any], path: str, attempt: int) -> StepFailed | None:
    """A step failure for pod-level trouble (no result envelope), or None if none yet."""
    status = pod.get("status") or {}
    reason = status.get("reason") or ""
    message = status.get("message") or ""
    waiting = (_container(pod).get("state") or {}).get("waiting") or {}
    if waiting.get("reason") in _CONFIG_WAITING:
        why = waiting.get("message") or waiting["reason"]
        return StepFailed(
            path=path,
            attempt=attempt,
            error_class=errors.CONFIG,
            message=f"step pod cannot start: {waiting['reason']}: {why}"[:500],
        )
    done = terminated(pod)
    if reason in _TRANSIENT_REASONS or (status.get("phase") == "Failed" and done is None):
        return StepFailed(
            path=path,
            attempt=attempt,
            error_class=errors.TRANSIENT,
            message=f"step pod lost: {reason or 'Failed'}: {message}".rstrip(": ")[:500],
        )
    if done is not None and done.get("reason") == "OOMKilled":
        return StepFailed(
            path=path,
            attempt=attempt,
            error_class=errors.PERMANENT,
            message="step pod was OOMKilled; raise the step memory limit",
        )
    if done is not None:
        deleted = (pod.get("metadata") or {}).get("deletionTimestamp")
        how = "was deleted before it finished and exited" if deleted else "exited"
        return StepFailed(
            path=path,
            attempt=attempt,
            error_class=errors.TRANSIENT,
            message=(
                f"step pod {how} with code {done.get('exitCode')} "
                f"({done.get('reason') or 'Error'}) without a result"
            ),
        )
    return None


# --- journal --------------------------------------------------------------------


def encode_journal(entries: list[dict[str, Any]]) -> str:
    """The run's event references, compressed: a 1,000-iteration loop fits in a few KiB."""
    raw = json.dumps(entries, separators=(",", ":"), sort_keys=True).encode()
    return base64.b64encode(gzip.compress(raw, mtime=0)).decode("ascii")


def decode_journal(text: str | None) -> list[dict[str, Any]]:
    if not text:
        return []
    entries: list[dict[str, Any]] = json.loads(gzip.decompress(base64.b64decode(text)))
    return entries


# --- status ---------------------------------------------------------------------

PHASES = {
    "pending": "Pending",
    "running": "Running",
    "succeeded": "Succeeded",
    "failed": "Failed",
    "cancelled": "Cancelled",
}


def _usd(value: float) -> str:
    return f"${value:.4f}" if value < 0.01 and value else f"${value:.2f}"


def usage_status(usage: Usage) -> dict[str, Any]:
    return {
        "inputTokens": usage.input_tokens,
        "outputTokens": usage.output_tokens,
        "totalTokens": usage.total_tokens,
        "costUsd": round(usage.cost_usd, 9),
        "cost": _usd(usage.cost_usd),
    }


def _preview(value: Any) -> dict[str, Any]:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    if len(text) <= MAX_INLINE_OUTPUT:
        return {"value": value}
    return {
        "preview": text[:200],
        "sha256": hashlib.sha256(text.encode()).hexdigest(),
        "size": len(text),
    }


def build_run_status(
    run: RunRef, state: RunState, journal: list[dict[str, Any]], config: Config
) -> dict[str, Any]:
    """The PipelineRun status: small whatever the run does."""
    agent_steps = [s for s in state.steps.values() if s.kind == "agent"]
    done = sum(1 for s in agent_steps if s.phase == "succeeded") + state.forgotten_succeeded
    listed: dict[str, Any] = {}
    finished = [s for s in state.steps.values() if s.phase != "running"]
    keep = {s.path for s in finished[-config.status_steps :]} if config.status_steps else set()
    for s in state.steps.values():
        if s.phase != "running" and s.path not in keep and s.phase == "succeeded":
            continue
        entry: dict[str, Any] = {"kind": s.kind, "phase": s.phase}
        if s.kind == "agent":
            entry["agent"] = s.agent
            entry["attempts"] = s.attempt
            if s.attempt:
                entry["pod"] = pod_name(run.name, s.path, s.attempt)
        if s.iteration:
            entry["iterations"] = s.iteration
        if s.branch:
            entry["branch"] = s.branch
        if s.error_class:
            entry["errorClass"] = s.error_class
            entry["message"] = (s.message or "")[:300]
        listed[s.path] = entry
    status: dict[str, Any] = {
        "phase": PHASES[state.phase],
        "progress": f"{done}/{len(agent_steps) + state.forgotten_steps}",
        "usage": usage_status(state.usage),
        "launches": state.launches,
        "stepCount": len(state.steps),
        "steps": listed,
        "journal": encode_journal(journal),
    }
    if state.breach is not None:
        status["breach"] = {
            "limit": state.breach.limit,
            "limitValue": state.breach.limit_value,
            "value": state.breach.value,
            "path": state.breach.path,
        }
    outcome = state.outcome
    if outcome is not None:
        status["reason"] = outcome.reason or "Succeeded"
        if outcome.message:
            status["message"] = outcome.message[:1000]
        if outcome.path:
            status["failedPath"] = outcome.path
        if outcome.status == "succeeded":
            status["output"] = _preview(outcome.output)
    return status


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def condition(kind: str, status: str, reason: str, message: str, when: str) -> dict[str, Any]:
    return {
        "type": kind,
        "status": status,
        "reason": reason or kind,
        "message": message[:1000],
        "lastTransitionTime": when,
    }


def first_error(exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in err["loc"])
    return f"spec.{where}: {err['msg']}" if where else err["msg"]


def describe_anomalies(pipeline: str, verdicts: list[Any]) -> str:
    """One line per unusual metric, e.g. ``cost 0.9 is 41.2 robust z above the median 0.01``."""
    parts = [
        f"{v.metric} {v.value:g} is {v.score:.1f} robust z-scores above the median {v.median:g} "
        f"of the last {v.baseline_runs} runs of {pipeline}"
        for v in verdicts
    ]
    return "unusual usage: " + "; ".join(parts)


def build_run_event(
    run: RunRef, reason: str, message: str, when: str, warning: bool = False
) -> dict[str, Any]:
    """An Event on the PipelineRun, for ``kubectl describe`` and event exporters."""
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{run.name}-", "namespace": run.namespace},
        "involvedObject": {
            "apiVersion": API_VERSION,
            "kind": "PipelineRun",
            "name": run.name,
            "namespace": run.namespace,
            "uid": run.uid,
        },
        "type": "Warning" if warning else "Normal",
        "reason": reason,
        "message": message[:1000],
        "firstTimestamp": when,
        "lastTimestamp": when,
        "count": 1,
        "source": {"component": "flujo-operator"},
        "reportingComponent": "flujo-operator",
    }


def build_anomaly_event(run: RunRef, message: str, when: str) -> dict[str, Any]:
    """A Warning Event on the PipelineRun: its usage is unusual for its pipeline."""
    return build_run_event(run, "UnusualUsage", message, when, warning=True)
