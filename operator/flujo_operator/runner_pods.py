"""Pure functions for the runner executor: the runner pod, and large results' ConfigMaps.

A run in ``executor: runner`` mode gets one pod running ``flujo runner``
(:mod:`flujo.runtime.runner_server`), named ``<run>-runner-<generation>``: the
generation grows each time a runner is lost, so a new runner never takes the
name of one being deleted.  The pod is a step pod in every respect that
matters for security — no service-account token, non-root, read-only root
filesystem, all capabilities dropped, seccomp ``RuntimeDefault`` — plus one
listening port, which only the operator may reach (the chart's NetworkPolicy).
It carries the credentials of the run's agents (and their tools) as
``secretKeyRef`` variables, marked optional: a missing Secret fails the steps
of the agent that needs it, not the whole run.

A namespace may keep a **warm pool** of idle runners (``FLUJO_RUNNERS_WARM``,
:mod:`flujo_operator.runner_pool`): the same pod without a run, claimed by a
run whose agents need no credentials as its generation 0.

Results too big to travel inline in the run's journal are kept in ConfigMaps
owned by the run, split into chunks under the 1 MiB object limit.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

from flujo.observability.tracing import run_traceparent
from flujo.spec.agent import AgentSpec

from flujo_operator.builders import LABEL_RUN, RunRef, _secret_env, owner_reference, pod_name
from flujo_operator.config import Config

__all__ = [
    "COMPONENT_RUNNER",
    "LABEL_COMPONENT",
    "LABEL_GENERATION",
    "LABEL_POOL",
    "POOL_CLAIMED",
    "POOL_IDLE",
    "RESULT_CHUNK_BYTES",
    "build_claim_patch",
    "build_pool_pod",
    "build_result_config_maps",
    "build_runner_pod",
    "join_result_chunks",
    "needs_credentials",
    "pool_pod_name",
    "runner_pod_name",
    "runner_token",
]

LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_GENERATION = "flujo.dev/runner-generation"
LABEL_POOL = "flujo.dev/runner-pool"
"""On warm-pool runners: ``idle`` until a run claims it, then ``claimed``."""
POOL_IDLE = "idle"
POOL_CLAIMED = "claimed"
COMPONENT_RUNNER = "runner"
RESULT_CHUNK_BYTES = 700_000
"""Bytes of result per ConfigMap (base64 makes them ~933 KB; objects are capped at 1 MiB)."""


def runner_pod_name(run: str, generation: int) -> str:
    """``<run>-runner-<generation>``, DNS-safe (the step pods' stem)."""
    stem = pod_name(run, "", 0).rsplit("-", 2)[0]
    return f"{stem}-runner-{generation}"


def build_runner_pod(
    run: RunRef,
    generation: int,
    token: str,
    agents: Iterable[AgentSpec | None],
    config: Config,
) -> dict[str, Any]:
    """The runner pod of one run: serves every launch of it on ``config.runner_port``."""
    labels = {
        LABEL_RUN: run.name,
        LABEL_GENERATION: str(generation),
        "app.kubernetes.io/managed-by": "flujo-operator",
        LABEL_COMPONENT: COMPONENT_RUNNER,
    }
    secrets = _secret_env(*agents)
    for item in secrets:
        item["valueFrom"]["secretKeyRef"]["optional"] = True
    extra = [{"name": "TRACEPARENT", "value": run_traceparent(run.uid)}, *secrets]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": runner_pod_name(run.name, generation),
            "namespace": run.namespace,
            "labels": labels,
            "ownerReferences": [owner_reference(run)],
        },
        "spec": _runner_spec(token, extra, config),
    }


def needs_credentials(agents: Iterable[AgentSpec | None]) -> bool:
    """Whether a runner for these agents must carry Secrets (then no pooled runner will do)."""
    return bool(_secret_env(*agents))


def pool_pod_name(suffix: str) -> str:
    return f"flujo-runner-pool-{suffix}"


def build_pool_pod(namespace: str, suffix: str, token: str, config: Config) -> dict[str, Any]:
    """An idle runner of the namespace's warm pool: a run's runner pod less the run.

    It carries no credentials and no run's trace context (both exist only once a
    run does), and no owner: it belongs to the namespace until a run claims it
    (:func:`build_claim_patch`), and exits, to be replaced, after the runner's
    idle time.
    """
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pool_pod_name(suffix),
            "namespace": namespace,
            "labels": {
                LABEL_POOL: POOL_IDLE,
                "app.kubernetes.io/managed-by": "flujo-operator",
                LABEL_COMPONENT: COMPONENT_RUNNER,
            },
        },
        "spec": _runner_spec(token, [], config),
    }


def build_claim_patch(run: RunRef, resource_version: str) -> dict[str, Any]:
    """The merge patch by which a run takes an idle pool runner as its generation 0.

    The pod then looks like the run's own runner to everything else (its labels and
    owner: deleted with the run); ``resourceVersion`` makes the claim fail with 409
    if the pod changed since it was seen idle, so no pod is claimed twice.
    """
    return {
        "metadata": {
            "resourceVersion": resource_version,
            "labels": {LABEL_RUN: run.name, LABEL_GENERATION: "0", LABEL_POOL: POOL_CLAIMED},
            "ownerReferences": [owner_reference(run)],
        }
    }


def _runner_spec(token: str, extra_env: list[dict[str, Any]], config: Config) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "runner",
        "image": config.step_image,
        "imagePullPolicy": "IfNotPresent",
        "command": list(config.runner_command),
        "ports": [{"name": "runner", "containerPort": config.runner_port, "protocol": "TCP"}],
        "env": [
            {
                "name": "FLUJO_RUNNER_HOST",
                "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}},
            },
            {"name": "FLUJO_RUNNER_PORT", "value": str(config.runner_port)},
            {"name": "FLUJO_RUNNER_TOKEN", "value": token},
            {"name": "FLUJO_RUNNER_IDLE_SECONDS", "value": str(config.runner_idle_seconds)},
            {"name": "HOME", "value": "/tmp"},
            *({"name": k, "value": v} for k, v in config.otel.items()),
            *extra_env,
        ],
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
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
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
    }
    if config.step_service_account:
        spec["serviceAccountName"] = config.step_service_account
    if config.node_selector:
        spec["nodeSelector"] = dict(config.node_selector)
    if config.tolerations:
        spec["tolerations"] = list(config.tolerations)
    return spec


def runner_token(pod: Mapping[str, Any]) -> str:
    """The bearer token a runner pod was started with (its spec: the operator wrote it)."""
    env = ((pod.get("spec") or {}).get("containers") or [{}])[0].get("env") or []
    return next((e.get("value", "") for e in env if e.get("name") == "FLUJO_RUNNER_TOKEN"), "")


def build_result_config_maps(
    run: RunRef, path: str, attempt: int, body: bytes
) -> list[dict[str, Any]]:
    """A large result event's canonical JSON in ConfigMaps of at most 700 KB each."""
    stem = pod_name(run.name, path, attempt)
    chunks = [body[i : i + RESULT_CHUNK_BYTES] for i in range(0, len(body), RESULT_CHUNK_BYTES)]
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": f"{stem}-result-{i}",
                "namespace": run.namespace,
                "labels": {LABEL_RUN: run.name, LABEL_COMPONENT: "result"},
                "ownerReferences": [owner_reference(run)],
            },
            "binaryData": {"result": base64.b64encode(chunk).decode("ascii")},
        }
        for i, chunk in enumerate(chunks or [b""])
    ]


def join_result_chunks(config_maps: list[dict[str, Any]], sha256: str, size: int) -> bytes:
    """The body back from its ConfigMaps, verified against its digest and size."""
    body = b"".join(
        base64.b64decode((cm.get("binaryData") or {}).get("result", "")) for cm in config_maps
    )
    if len(body) != size or hashlib.sha256(body).hexdigest() != sha256:
        raise ValueError("the stored result does not match its digest")
    return body
