"""The local kubelet (tests/k8s/kubelet.py) against the upstream apiserver.

The same kubelet that serves the emulator binds pods through ``pods/binding``, reports
status through ``pods/status`` (which the real server validates) and serves logs on
its node endpoint, which the real apiserver proxies for ``kubectl logs``.
"""

from __future__ import annotations

import json
from typing import Any

from tests.operatorkit import wait_for
from tests.realcluster.controlplane import KubeletThread, RealKubectl


def _pod(name: str, code: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "main",
                    "image": "flujo",
                    "command": ["python", "-c", code],
                    "terminationMessagePath": "/dev/termination-log",
                }
            ],
        },
    }


def _phase(kubectl: RealKubectl, name: str) -> str | None:
    phase = kubectl.json("pod", name).get("status", {}).get("phase")
    return phase if phase in ("Succeeded", "Failed") else None


def test_a_pod_is_bound_run_and_its_log_served_through_the_apiserver(
    admin_kubectl: RealKubectl, real_namespace: str, real_kubelet: KubeletThread
) -> None:
    kubectl = admin_kubectl.bound(real_namespace)
    kubectl.apply([_pod("hello", "print('hello from a real apiserver')")])
    assert wait_for(lambda: _phase(kubectl, "hello"), 60, "the pod to finish") == "Succeeded"
    pod = kubectl.json("pod", "hello")
    assert pod["spec"]["nodeName"] == real_kubelet.kubelet.node_name
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (0, "Completed")
    conditions = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
    assert conditions["PodScheduled"] == "True"
    logs = kubectl("logs", "hello", "-c", "main").stdout
    assert logs == "hello from a real apiserver\n"


def test_a_failing_pod_reports_its_exit_code_and_termination_message(
    admin_kubectl: RealKubectl, real_namespace: str, real_kubelet: KubeletThread
) -> None:
    code = (
        "import sys; open('/dev/termination-log', 'w').write('bad input'); "
        "print('about to fail'); sys.exit(3)"
    )
    kubectl = admin_kubectl.bound(real_namespace)
    kubectl.apply([_pod("fails", code)])
    assert wait_for(lambda: _phase(kubectl, "fails"), 60, "the pod to finish") == "Failed"
    status = kubectl.json("pod", "fails")["status"]
    terminated = status["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (3, "Error")
    assert terminated["message"] == "bad input"
    tail = kubectl("logs", "fails", "--tail=1").stdout
    assert tail == "about to fail\n"


def test_deleting_a_running_pod_stops_its_process(
    admin_kubectl: RealKubectl, real_namespace: str, real_kubelet: KubeletThread
) -> None:
    kubectl = admin_kubectl.bound(real_namespace)
    kubectl.apply([_pod("sleeper", "import time; time.sleep(300)")])
    key = f"{real_namespace}/sleeper"
    wait_for(lambda: key in real_kubelet.kubelet.running, 60, "the process to start")
    # The real server marks a bound pod for graceful deletion; the kubelet ends it.
    kubectl("delete", "pod", "sleeper", "--grace-period=2", "--wait=true", timeout=60)
    assert key not in real_kubelet.kubelet.running
    gone = kubectl("get", "pod", "sleeper", "--ignore-not-found", "-o", "json").stdout
    assert gone.strip() == "" or json.loads(gone) == {}
