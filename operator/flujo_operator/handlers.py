"""Thin kopf handlers: Kubernetes changes in, controller calls out.

Only *event* handlers are used: they keep no per-object handler state, so
kopf writes nothing to our objects (no progress annotations, no finalizers)
and the operator's API writes are exactly the pods and status patches the
controllers make.  Deleting a PipelineRun deletes its pods through their
ownerReferences.

Run with ``python -m flujo_operator`` or ``kopf run -m flujo_operator.handlers``.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf
from flujo.observability.metrics import FlujoMetrics, serve_metrics
from flujo.security.audit import open_audit_log
from flujo.spec.base import API_GROUP

from flujo_operator.builders import LABEL_RUN
from flujo_operator.config import Config
from flujo_operator.kube import Budget, connect
from flujo_operator.resources import ResourceController
from flujo_operator.runner_pods import LABEL_POOL
from flujo_operator.runs import RunController
from flujo_operator.tenancy import FairKube, tenant
from flujo_operator.validation_pool import ValidationPool

VERSION = "v1alpha1"


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config = Config.from_env()
    settings.posting.level = logging.WARNING
    settings.persistence.finalizer = "flujo.dev/finalizer"
    settings.watching.server_timeout = 300
    settings.networking.error_backoffs = [1, 2, 5]
    if config.namespaces:
        # Namespaced installs have no cluster-wide RBAC: don't scan CRDs or namespaces.
        settings.scanning.disabled = True
    metrics = FlujoMetrics()
    kube = FairKube(
        connect(),
        api_budget=Budget(config.api_qps, config.api_burst),
        pod_budget=Budget(config.pod_create_qps, config.pod_create_burst),
        metrics=metrics,
    )
    if config.metrics_port:
        memo.metrics_server = serve_metrics(config.metrics_port, metrics.registry, addr="0.0.0.0")
    audit = None
    if config.audit_log != "off":
        try:
            audit = open_audit_log(config.audit_log, include_content=config.audit_content)
        except OSError as exc:
            raise kopf.PermanentError(
                f"FLUJO_AUDIT_LOG: cannot open {config.audit_log}: {exc.strerror or exc}"
            ) from None
    memo.audit = audit
    runs = RunController(kube, config, metrics=metrics, audit=audit)
    # Tenants' Pipelines are checked in bounded worker processes, not on this loop.
    runs.admission.validator = memo.validator = ValidationPool.from_config(config)
    await memo.validator.warm()  # ready before the probes say so: runs need not wait for it
    memo.runs = runs
    memo.kube = kube
    for namespace in config.namespaces:  # elsewhere, a namespace's pool starts with its first run
        runs.runners.pool.keep(namespace)
    memo.resources = ResourceController(kube, runs, audit=audit)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    audit = memo.get("audit")
    if audit is not None:
        audit.close()
    validator = memo.get("validator")
    if validator is not None:
        await validator.close()


def _serving(event: kopf.RawEvent) -> None:
    """This handler's task (and the tasks it starts) works for the object's namespace."""
    tenant.set((event["object"].get("metadata") or {}).get("namespace") or "")


@kopf.on.event(API_GROUP, VERSION, "pipelineruns")
async def pipelinerun_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    _serving(event)
    with memo.runs.metrics.reconcile("pipelinerun"):
        await memo.runs.on_run(event["type"] or "", dict(event["object"]))


@kopf.on.event("", "v1", "pods", labels={LABEL_RUN: kopf.PRESENT})
async def pod_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    _serving(event)
    with memo.runs.metrics.reconcile("pod"):
        await memo.runs.on_pod(event["type"] or "", dict(event["object"]))


@kopf.on.event("", "v1", "pods", labels={LABEL_POOL: kopf.PRESENT})
async def pool_pod_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    _serving(event)
    with memo.runs.metrics.reconcile("pod"):
        memo.runs.runners.pool.observe(event["type"] or "", dict(event["object"]))


@kopf.on.event(API_GROUP, VERSION, "agents")
async def agent_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    _serving(event)
    with memo.runs.metrics.reconcile("agent"):
        await memo.resources.on_agent(event["type"] or "", dict(event["object"]))


@kopf.on.event(API_GROUP, VERSION, "pipelines")
async def pipeline_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    _serving(event)
    with memo.runs.metrics.reconcile("pipeline"):
        await memo.resources.on_pipeline(event["type"] or "", dict(event["object"]))


NEEDED = {"agents", "pipelines", "pipelineruns"}


@kopf.on.probe(id="api")
async def api_probe(memo: kopf.Memo, **_: Any) -> str:
    """Readiness: the API server answers and serves the Flujo CRDs (else the probe fails)."""
    try:
        served = await memo.kube.served_resources()
    except Exception as exc:  # 404: the group is not served at all
        served = set()
        if getattr(exc, "status", None) != 404:
            raise kopf.PermanentError(f"API server unreachable: {exc}") from None
    missing = NEEDED - served
    if missing:
        # Permanent: a probe must answer now, not be retried by kopf.
        raise kopf.PermanentError(f"CRDs not installed: {', '.join(sorted(missing))}")
    return "ok"


@kopf.on.probe(id="runs")
def runs_probe(memo: kopf.Memo, **_: Any) -> int:
    """Readiness detail: runs in progress (the endpoint answering means the loop is alive)."""
    runs: RunController = memo.runs
    return len(runs.sessions)
