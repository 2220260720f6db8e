"""Fixtures of the real-cluster tier (marker ``realcluster``).

One control plane per session (``control_plane``: etcd, kube-apiserver with
``--authorization-mode=Node,RBAC`` and Pod Security admission, kube-controller-manager
with the garbage collector, namespace and service-account controllers), one local
kubelet bound to it (``real_kubelet``), the Flujo CRDs applied with the real kubectl
(``real_crds``). Each test gets a namespace of its own (``real_namespace``), deleted
afterwards, so tests share the server but no objects.

The whole tier skips, with the reason, when the control plane is not built
(``bash scripts/control-plane.sh build``; scripts/test.sh does it) or there is no Go.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.operatorkit import wait_for
from tests.realcluster.controlplane import ROOT, ControlPlane, KubeletThread, RealKubectl, bin_dir

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.realcluster)


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    _, reason = bin_dir()
    if reason is not None:
        if os.environ.get("FLUJO_REQUIRE_REAL_CLUSTER") == "1":
            pytest.fail(f"the real-cluster tier is required here: {reason}")
        pytest.skip(reason)
    plane = ControlPlane(tmp_path_factory.mktemp("control-plane"))
    plane.start()
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def admin_kubectl(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> RealKubectl:
    """kubectl as a cluster admin (system:masters), default namespace ``default``."""
    return RealKubectl(
        control_plane.kubectl_binary,
        control_plane.kubeconfig,
        tmp_path_factory.mktemp("kubectl-cache"),
    )


@pytest.fixture(scope="session")
def real_kubelet(control_plane: ControlPlane) -> Iterator[KubeletThread]:
    kubelet = KubeletThread(control_plane, max_pods=8)
    kubelet.start()
    try:
        yield kubelet
    finally:
        kubelet.stop()


@pytest.fixture(scope="session")
def real_crds(admin_kubectl: RealKubectl) -> RealKubectl:
    """The CRDs of crds/, applied with the real kubectl (client-side validation on)."""
    admin_kubectl("apply", "-f", str(ROOT / "crds"))
    admin_kubectl(
        "wait", "--for=condition=Established", "crd", "--all", "--timeout=60s", timeout=90
    )
    return admin_kubectl


@pytest.fixture
def real_namespace(admin_kubectl: RealKubectl, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, deleted (without waiting) afterwards."""
    name = f"rc-{uuid.uuid4().hex[:8]}"
    admin_kubectl("create", "namespace", name)
    # Pods are admitted only once the ServiceAccount controller made `default` here.
    wait_for(
        lambda: admin_kubectl("-n", name, "get", "sa", "default", check=False).returncode == 0,
        30,
        f"the default ServiceAccount in {name}",
    )
    try:
        yield name
    finally:
        admin_kubectl("delete", "namespace", name, "--wait=false", check=False)
