"""``flujo ui --cluster``: the same pages for a PipelineRun, read with the real kubectl.

The API emulator (tests/k8s/), the real operator as a subprocess, the local
kubelet running step pods, and ``flujo ui`` given the test's kubeconfig and
kubectl: nothing but what a user's shell would have.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.k8s.fixtures import KUBECTL
from tests.operatorkit import ROOT, running_operator
from tests.uikit import WAIT_MS, chromium, expect, ui_server

SLOW = """
apiVersion: flujo.dev/v1alpha1
kind: Agent
metadata: {name: thinker}
spec:
  type: scripted
  responses: [{output: "an idea", delaySeconds: 6}]
---
apiVersion: flujo.dev/v1alpha1
kind: Pipeline
metadata: {name: brainstorm}
spec:
  steps:
    - {name: think, agent: thinker}
    - name: spread
      parallel:
        branches:
          - name: loud
            steps: [{name: shout, agent: builtin.upper}]
          - name: quiet
            steps: [{name: whisper, agent: builtin.lower}]
---
apiVersion: flujo.dev/v1alpha1
kind: PipelineRun
metadata: {name: brainstorm-1}
spec:
  pipelineRef: {name: brainstorm}
  input: "<script>window.pwned = 1</script>"
"""


@pytest.fixture
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


@pytest.fixture
def cluster(kubeconfig: Path, kubectl: Any, local_kubelet: Any) -> Any:
    kubectl("apply", "-f", str(ROOT / "crds"))
    return kubectl


def test_a_pipelinerun_has_the_same_live_run_page(
    browser: Any, cluster: Any, kubeconfig: Path, tmp_path: Path
) -> None:
    args = ["--cluster", "--namespace", "default", "--kubectl", str(KUBECTL)]
    env = {"KUBECONFIG": str(kubeconfig)}
    with (
        running_operator(kubeconfig, tmp_path) as op,
        ui_server(args, tmp_path, env) as ui,
    ):
        cluster.apply(SLOW)
        page = browser.new_page(viewport={"width": 1100, "height": 720})
        page.goto(ui.url + "/")
        row = page.locator('tr[data-run="default/brainstorm-1"]')
        expect(row).to_have_count(1, timeout=WAIT_MS)
        assert "brainstorm" in row.inner_text()
        page.click("text=default/brainstorm-1")
        page.wait_for_url("**/runs/cluster/default/brainstorm-1", timeout=WAIT_MS)
        assert page.locator("#run").get_attribute("data-finished") == "false", op.log()[-3000:]
        page.evaluate("window.sameDocument = 'yes'")
        page.wait_for_selector("#n-think.phase-running", state="attached", timeout=WAIT_MS)
        for name in ("think", "spread", "shout", "whisper"):
            page.wait_for_selector(f"#n-{name}.phase-succeeded", state="attached", timeout=60_000)
        expect(page.locator("#run-phase")).to_have_text("Succeeded", timeout=WAIT_MS)
        expect(page.locator("#run-progress")).to_have_text("3/3", timeout=WAIT_MS)
        assert page.evaluate("window.sameDocument") == "yes"  # live, never reloaded
        page.click("#n-think")
        page.wait_for_selector(".step-detail[data-node=think]", timeout=WAIT_MS)
        detail = page.locator("#detail").inner_text()
        assert "thinker" in detail and "brainstorm-1-" in detail  # the step's pod
        assert page.locator("form.cancel").count() == 0  # a PipelineRun is deleted instead
        assert "<script>window.pwned = 1</script>" in page.locator("section.io").inner_text()
        assert page.evaluate("typeof window.pwned") == "undefined"


def test_a_namespace_kubectl_may_not_read_is_one_line_on_the_page(
    browser: Any, cluster: Any, kubeconfig: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-kubeconfig"
    args = ["--cluster", "--namespace", "default", "--kubectl", str(KUBECTL)]
    with ui_server(args, tmp_path, {"KUBECONFIG": str(missing)}) as ui:
        page = browser.new_page()
        page.goto(ui.url + "/")
        error = page.locator("p.error")
        expect(error).to_have_count(1, timeout=WAIT_MS)
        assert error.inner_text().startswith("error: ")
        assert "\n" not in error.inner_text()


REVIEWED = """
apiVersion: flujo.dev/v1alpha1
kind: Pipeline
metadata: {name: reviewed}
spec:
  steps:
    - {name: draft, agent: builtin.upper}
    - name: review
      approval: {message: "Publish {{ previous_step }}?"}
    - {name: send, agent: builtin.lower}
---
apiVersion: flujo.dev/v1alpha1
kind: PipelineRun
metadata: {name: reviewed-yes}
spec: {pipelineRef: {name: reviewed}, input: hi}
---
apiVersion: flujo.dev/v1alpha1
kind: PipelineRun
metadata: {name: reviewed-no}
spec: {pipelineRef: {name: reviewed}, input: hi}
"""


def test_approve_and_reject_a_pipelinerun_from_its_page(
    browser: Any, cluster: Any, kubeconfig: Path, tmp_path: Path
) -> None:
    args = ["--cluster", "--namespace", "default", "--kubectl", str(KUBECTL)]
    with (
        running_operator(kubeconfig, tmp_path) as op,
        ui_server(args, tmp_path, {"KUBECONFIG": str(kubeconfig)}) as ui,
    ):
        cluster.apply(REVIEWED)
        page = browser.new_page(viewport={"width": 1100, "height": 720})
        page.goto(ui.url + "/runs/cluster/default/reviewed-yes")
        expect(page.locator("#run-phase")).to_have_text("AwaitingApproval", timeout=60_000)
        page.wait_for_selector("#n-review.phase-awaiting", state="attached", timeout=WAIT_MS)
        expect(page.locator(".approval code")).to_have_text("review", timeout=WAIT_MS)
        page.fill(".approval input[name=input]", "Edited")
        page.click(".approval button.approve")
        page.wait_for_selector(".notice", timeout=WAIT_MS)
        assert "kubectl patch" in page.locator(".notice").inner_text()
        expect(page.locator("#run-phase")).to_have_text("Succeeded", timeout=60_000)
        page.wait_for_selector("#n-send.phase-succeeded", state="attached", timeout=WAIT_MS)
        run = json.loads(cluster("get", "pipelinerun", "reviewed-yes", "-o", "json").stdout)
        assert run["spec"]["approvals"] == [
            {"step": "review", "decision": "approve", "input": "Edited"}
        ]
        assert run["status"]["output"]["value"] == "edited", op.log()[-3000:]

        page.goto(ui.url + "/runs/cluster/default/reviewed-no")
        expect(page.locator("#run-phase")).to_have_text("AwaitingApproval", timeout=60_000)
        page.fill(".approval input[name=reason]", "off-brand")
        page.click(".approval button.reject")
        page.wait_for_selector(".notice", timeout=WAIT_MS)
        expect(page.locator("#run-phase")).to_have_text("Failed", timeout=60_000)
        page.wait_for_selector("#n-review.phase-failed", state="attached", timeout=WAIT_MS)
        assert "off-brand" in page.locator("#run-message").inner_text()
