"""A small async facade over the official ``kubernetes`` client.

The client is synchronous; calls run in worker threads.  Every method is one
API request, which keeps write counting (API economy) honest: the only
writes the operator makes are pod create/delete, ConfigMap create (large
inputs only), Events and status patches.

Every request first takes a slot from the operator's API budget (requests per
second with a burst, like client-go's ``--kube-api-qps``/``--kube-api-burst``),
and pod creations also from a pod-creation budget: a burst of PipelineRuns
then queues inside the operator instead of hammering the API server and the
scheduler.  Time spent waiting for a slot, and requests that fail, are
metrics.  kopf's own watch streams are long-lived connections, outside the
budget.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from typing import Any

from flujo.observability.metrics import FlujoMetrics
from flujo.resilience.ratelimit import RateLimiter
from flujo.spec.base import API_GROUP
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

__all__ = ["Budget", "Kube", "connect"]

VERSION = "v1alpha1"
_MISSING = object()


def connect() -> client.ApiClient:
    """In-cluster credentials when running in a pod, else the kubeconfig."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    return client.ApiClient()


def _call(method: Any, *args: Any, **kwargs: Any) -> None:
    """A write whose answer we do not need: skip deserialising it into client models,
    which costs more CPU than the request itself."""
    response = method(*args, _preload_content=False, **kwargs)
    response.release_conn()


class Budget:
    """Requests per second with a burst; ``qps`` 0 means no limit."""

    def __init__(self, qps: float, burst: int) -> None:
        self.qps = qps
        self.burst = max(1, burst)
        self._limiter = RateLimiter(requests_per_second=qps, burst=self.burst) if qps > 0 else None

    async def take(self) -> float:
        """Wait for a slot; returns the seconds waited (0.0: none)."""
        if self._limiter is None:
            return 0.0
        return await self._limiter.acquire()


class Kube:
    def __init__(
        self,
        api: client.ApiClient,
        *,
        api_budget: Budget | None = None,
        pod_budget: Budget | None = None,
        metrics: FlujoMetrics | None = None,
    ) -> None:
        # Typed as Any: we pass plain dicts, which the client accepts and serialises.
        self.core: Any = client.CoreV1Api(api)
        self.custom: Any = client.CustomObjectsApi(api)
        self.api_budget = api_budget or Budget(0, 1)
        self.pod_budget = pod_budget or Budget(0, 1)
        self.metrics = metrics

    async def _request(
        self,
        verb: str,
        fn: Callable[..., Any],
        *args: Any,
        ok: Collection[int] = (),
        **kwargs: Any,
    ) -> Any:
        """One API request within the budget; a status in ``ok`` returns ``_MISSING``."""
        waited = await self.api_budget.take()
        if waited and self.metrics is not None:
            self.metrics.api_throttled(verb, waited)
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except ApiException as exc:
            if exc.status in ok:
                return _MISSING
            if self.metrics is not None:
                self.metrics.api_error(verb, exc.status or None)
            raise
        except Exception:
            if self.metrics is not None:
                self.metrics.api_error(verb, None)
            raise

    async def served_resources(self) -> set[str]:
        """Plural names the API server serves in flujo.dev/v1alpha1 (discovery, no RBAC)."""
        found = await asyncio.to_thread(self.custom.get_api_resources, API_GROUP, VERSION)
        return {r.name for r in found.resources}

    async def create_pod(self, body: dict[str, Any]) -> bool:
        """Create; False when it already exists (an idempotent repeat)."""
        waited = await self.pod_budget.take()
        if waited and self.metrics is not None:
            self.metrics.api_throttled("create", waited)
        namespace = body["metadata"]["namespace"]
        result = await self._request(
            "create", _call, self.core.create_namespaced_pod, namespace, body, ok=(409,)
        )
        return result is not _MISSING

    async def create_config_map(self, body: dict[str, Any]) -> None:
        namespace = body["metadata"]["namespace"]
        await self._request(
            "create", _call, self.core.create_namespaced_config_map, namespace, body, ok=(409,)
        )

    async def get_config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        found = await self._request(
            "get", self.core.read_namespaced_config_map, name, namespace, ok=(404,)
        )
        if found is _MISSING:
            return None
        data: dict[str, Any] = self.core.api_client.sanitize_for_serialization(found)
        return data

    async def create_event(self, body: dict[str, Any]) -> None:
        namespace = body["metadata"]["namespace"]
        await self._request("create", _call, self.core.create_namespaced_event, namespace, body)

    async def delete_pod(self, namespace: str, name: str) -> None:
        await self._request(
            "delete",
            _call,
            self.core.delete_namespaced_pod,
            name,
            namespace,
            grace_period_seconds=5,
            ok=(404,),
        )

    async def delete_pods(self, namespace: str, selector: str) -> None:
        await self._request(
            "delete",
            self.core.delete_collection_namespaced_pod,
            namespace,
            label_selector=selector,
        )

    async def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        pod = await self._request("get", self.core.read_namespaced_pod, name, namespace, ok=(404,))
        if pod is _MISSING:
            return None
        data: dict[str, Any] = self.core.api_client.sanitize_for_serialization(pod)
        return data

    async def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        found = await self._request(
            "list", self.core.list_namespaced_pod, namespace, label_selector=selector
        )
        data: dict[str, Any] = self.core.api_client.sanitize_for_serialization(found)
        return list(data.get("items") or [])

    async def patch_pod(self, namespace: str, name: str, patch: dict[str, Any]) -> bool:
        """A JSON merge patch of a pod's metadata; False when the pod is gone or changed
        (404, or 409 against the ``resourceVersion`` the patch names): never retried."""
        result = await self._request(
            "patch",
            _call,
            self.core.patch_namespaced_pod,
            name,
            namespace,
            patch,
            _content_type="application/merge-patch+json",
            ok=(404, 409),
        )
        return result is not _MISSING

    async def pod_log(self, namespace: str, name: str) -> str:
        text: str = await self._request(
            "log", self.core.read_namespaced_pod_log, name, namespace, container="step"
        )
        return text

    async def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        obj = await self._request(
            "get",
            self.custom.get_namespaced_custom_object,
            API_GROUP,
            VERSION,
            namespace,
            plural,
            name,
            ok=(404,),
        )
        if obj is _MISSING:
            return None
        found: dict[str, Any] = obj
        return found

    async def list(self, plural: str, namespace: str) -> list[dict[str, Any]]:
        result = await self._request(
            "list",
            self.custom.list_namespaced_custom_object,
            API_GROUP,
            VERSION,
            namespace,
            plural,
        )
        items: list[dict[str, Any]] = result.get("items", [])
        return items

    async def patch_status(
        self, plural: str, namespace: str, name: str, status: dict[str, Any]
    ) -> None:
        # 404: deleted meanwhile, nothing to record.
        await self._request(
            "patch",
            _call,
            self.custom.patch_namespaced_custom_object_status,
            API_GROUP,
            VERSION,
            namespace,
            plural,
            name,
            {"status": status},
            ok=(404,),
        )
