"""A small async facade over the official ``kubernetes`` client.

The client is synchronous; calls run in worker threads.  Every method is one
API request, which keeps write counting (API economy) honest: the only
writes the operator makes are pod create/delete, ConfigMap create (large
inputs only) and status patches.
"""

from __future__ import annotations

import asyncio
from typing import Any

from flujo.spec.base import API_GROUP
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

__all__ = ["Kube", "connect"]

VERSION = "v1alpha1"


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


class Kube:
    def __init__(self, api: client.ApiClient) -> None:
        # Typed as Any: we pass plain dicts, which the client accepts and serialises.
        self.core: Any = client.CoreV1Api(api)
        self.custom: Any = client.CustomObjectsApi(api)

    async def served_resources(self) -> set[str]:
        """Plural names the API server serves in flujo.dev/v1alpha1 (discovery, no RBAC)."""
        found = await asyncio.to_thread(self.custom.get_api_resources, API_GROUP, VERSION)
        return {r.name for r in found.resources}

    async def create_pod(self, body: dict[str, Any]) -> bool:
        """Create; False when it already exists (an idempotent repeat)."""
        try:
            await asyncio.to_thread(
                _call, self.core.create_namespaced_pod, body["metadata"]["namespace"], body
            )
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    async def create_config_map(self, body: dict[str, Any]) -> None:
        try:
            await asyncio.to_thread(
                _call, self.core.create_namespaced_config_map, body["metadata"]["namespace"], body
            )
        except ApiException as exc:
            if exc.status != 409:
                raise

    async def create_event(self, body: dict[str, Any]) -> None:
        await asyncio.to_thread(
            _call, self.core.create_namespaced_event, body["metadata"]["namespace"], body
        )

    async def delete_pod(self, namespace: str, name: str) -> None:
        try:
            await asyncio.to_thread(
                _call, self.core.delete_namespaced_pod, name, namespace, grace_period_seconds=5
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

    async def delete_pods(self, namespace: str, selector: str) -> None:
        await asyncio.to_thread(
            self.core.delete_collection_namespaced_pod, namespace, label_selector=selector
        )

    async def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            pod = await asyncio.to_thread(self.core.read_namespaced_pod, name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        data: dict[str, Any] = self.core.api_client.sanitize_for_serialization(pod)
        return data

    async def pod_log(self, namespace: str, name: str) -> str:
        text: str = await asyncio.to_thread(
            self.core.read_namespaced_pod_log, name, namespace, container="step"
        )
        return text

    async def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            obj: dict[str, Any] = await asyncio.to_thread(
                self.custom.get_namespaced_custom_object,
                API_GROUP,
                VERSION,
                namespace,
                plural,
                name,
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return obj

    async def list(self, plural: str, namespace: str) -> list[dict[str, Any]]:
        result = await asyncio.to_thread(
            self.custom.list_namespaced_custom_object, API_GROUP, VERSION, namespace, plural
        )
        items: list[dict[str, Any]] = result.get("items", [])
        return items

    async def patch_status(
        self, plural: str, namespace: str, name: str, status: dict[str, Any]
    ) -> None:
        try:
            await asyncio.to_thread(
                _call,
                self.custom.patch_namespaced_custom_object_status,
                API_GROUP,
                VERSION,
                namespace,
                plural,
                name,
                {"status": status},
            )
        except ApiException as exc:
            if exc.status != 404:  # deleted meanwhile: nothing to record
                raise
