"""A minimal kopf operator for the emulator's end-to-end smoke test.

Why: the emulator is only useful if a real kopf operator runs against it
unchanged. This operator exercises what flujo's operator will rely on: watching a
custom resource, patching its status subresource, creating an owned child with
``kopf.adopt`` (uid-based ownerReferences, garbage-collected with the owner) and
a deletion handler (kopf's finalizer: JSON-patch with a resourceVersion test).

Run with ``KUBECONFIG=... python -m kopf run -m tests.k8s.kopf_smoke_operator --standalone``.
"""

from __future__ import annotations

from typing import Any

import kopf
from kubernetes import client, config

GROUP, VERSION, PLURAL = "example.com", "v1", "widgets"


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.watching.server_timeout = 30
    settings.persistence.finalizer = "example.com/smoke-finalizer"
    config.load_kube_config()


@kopf.on.create(GROUP, VERSION, PLURAL)
def create_child(
    spec: kopf.Spec, name: str, namespace: str, body: kopf.Body, patch: kopf.Patch, **_: Any
) -> None:
    child = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{name}-child"},
        "data": {"size": str(spec.get("size", 0))},
    }
    kopf.adopt(child, owner=body)
    client.CoreV1Api().create_namespaced_config_map(namespace, child)
    patch.status["phase"] = "Ready"
    patch.status["size"] = spec.get("size", 0)


@kopf.on.update(GROUP, VERSION, PLURAL, field="spec.size")
def resize(new: Any, patch: kopf.Patch, **_: Any) -> None:
    patch.status["size"] = new


@kopf.on.delete(GROUP, VERSION, PLURAL)
def cleanup(name: str, logger: kopf.Logger, **_: Any) -> None:
    logger.info(f"widget {name} is going away")
