"""The Kubernetes API emulator and the local kubelet, checked against documented API semantics.

Why: the operator integration tests trust this harness to behave like a real
API server and kubelet. Each test states one documented behaviour and checks it
through the real ``kubernetes`` client or the real ``kubectl``; the last test runs
a real kopf operator against the emulator.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import kmock
import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from tests.k8s.apimachinery import merge_patch, now_rfc3339, strategic_merge_patch
from tests.k8s.emulator import EmulatorServer
from tests.k8s.fixtures import Kubectl
from tests.k8s.kubelet import LocalKubelet

T = TypeVar("T")
NS = "default"
GROUP, VERSION, PLURAL = "example.com", "v1", "widgets"

WIDGET_CRD = textwrap.dedent(
    """
    apiVersion: apiextensions.k8s.io/v1
    kind: CustomResourceDefinition
    metadata:
      name: widgets.example.com
    spec:
      group: example.com
      scope: Namespaced
      names:
        plural: widgets
        singular: widget
        kind: Widget
        shortNames: [wdg]
        categories: [gadgets]
      versions:
        - name: v1
          served: true
          storage: true
          subresources:
            status: {}
          additionalPrinterColumns:
            - {name: Phase, type: string, jsonPath: .status.phase}
            - {name: Size, type: integer, jsonPath: .spec.size}
          schema:
            openAPIV3Schema:
              type: object
              properties:
                spec:
                  type: object
                  properties:
                    size: {type: integer}
                    items: {type: array, items: {type: string}}
                status:
                  type: object
                  x-kubernetes-preserve-unknown-fields: true
    """
)


def widget(name: str, size: int = 1, **metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Widget",
        "metadata": {"name": name, **metadata},
        "spec": {"size": size},
    }


def wait_until(probe: Callable[[], T | None], what: str, timeout: float = 10.0) -> T:
    """Poll ``probe`` until it returns a truthy value; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def status_of(exc: pytest.ExceptionInfo[ApiException]) -> tuple[int, str]:
    body = json.loads(exc.value.body)
    return exc.value.status, body["reason"]


@pytest.fixture
def core(k8s_client: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(k8s_client)


@pytest.fixture
def custom(k8s_client: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(k8s_client)


@pytest.fixture
def widgets(kubectl: Kubectl, custom: client.CustomObjectsApi) -> client.CustomObjectsApi:
    """The Widget CRD applied with kubectl; the custom-objects API to use it."""
    kubectl.apply(WIDGET_CRD)
    return custom


def get_widget(custom: client.CustomObjectsApi, name: str) -> dict[str, Any]:
    result: dict[str, Any] = custom.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name)
    return result


def merge(
    custom: client.CustomObjectsApi, name: str, body: Any, status: bool = False
) -> dict[str, Any]:
    call = (
        custom.patch_namespaced_custom_object_status
        if status
        else custom.patch_namespaced_custom_object
    )
    result: dict[str, Any] = call(GROUP, VERSION, NS, PLURAL, name, body)
    return result


# --- object lifecycle ---------------------------------------------------------------------------


def test_create_answers_201_with_server_owned_metadata(core: client.CoreV1Api) -> None:
    created, code, _ = core.create_namespaced_config_map_with_http_info(
        NS, {"metadata": {"generateName": "cfg-"}, "data": {"a": "1"}}
    )
    assert code == 201
    meta = created.metadata
    assert meta.name.startswith("cfg-") and len(meta.name) == len("cfg-") + 5
    assert meta.uid and meta.resource_version and meta.generation == 1
    assert meta.creation_timestamp is not None and meta.namespace == NS


def test_duplicate_create_is_409_already_exists(core: client.CoreV1Api) -> None:
    core.create_namespaced_config_map(NS, {"metadata": {"name": "dup"}})
    with pytest.raises(ApiException) as exc:
        core.create_namespaced_config_map(NS, {"metadata": {"name": "dup"}})
    assert status_of(exc) == (409, "AlreadyExists")


def test_stale_resource_version_is_409_and_failed_json_patch_test_is_422(
    core: client.CoreV1Api,
) -> None:
    first = core.create_namespaced_config_map(NS, {"metadata": {"name": "cc"}, "data": {"v": "1"}})
    stale = first.metadata.resource_version
    core.patch_namespaced_config_map("cc", NS, {"data": {"v": "2"}})
    first.data = {"v": "3"}
    with pytest.raises(ApiException) as exc:
        core.replace_namespaced_config_map("cc", NS, first)
    assert status_of(exc) == (409, "Conflict")
    with pytest.raises(ApiException) as exc:
        core.patch_namespaced_config_map(
            "cc", NS, {"metadata": {"resourceVersion": stale}, "data": {"v": "4"}}
        )
    assert status_of(exc) == (409, "Conflict")
    with pytest.raises(ApiException) as exc:  # kopf's finalizer patches rely on this 422
        core.patch_namespaced_config_map(
            "cc",
            NS,
            [
                {"op": "test", "path": "/metadata/resourceVersion", "value": stale},
                {"op": "replace", "path": "/data/v", "value": "5"},
            ],
        )
    assert exc.value.status == 422
    current = core.read_namespaced_config_map("cc", NS)
    current.data = {"v": "6"}
    assert core.replace_namespaced_config_map("cc", NS, current).data == {"v": "6"}


def test_status_subresource_separation_generation_and_no_op_writes(
    widgets: client.CustomObjectsApi,
) -> None:
    body = widget("w1", size=1) | {"status": {"phase": "Forged"}}
    created = widgets.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, body)
    assert "status" not in created and created["metadata"]["generation"] == 1

    main = merge(widgets, "w1", {"spec": {"size": 2}, "status": {"phase": "Ignored"}})
    assert (
        main["spec"]["size"] == 2 and "status" not in main and main["metadata"]["generation"] == 2
    )

    status = merge(
        widgets, "w1", {"spec": {"size": 99}, "status": {"phase": "Running"}}, status=True
    )
    assert status["status"] == {"phase": "Running"} and status["spec"]["size"] == 2
    assert status["metadata"]["generation"] == 2

    labelled = merge(widgets, "w1", {"metadata": {"labels": {"team": "a"}}})
    assert labelled["metadata"]["generation"] == 2
    assert int(labelled["metadata"]["resourceVersion"]) > int(status["metadata"]["resourceVersion"])

    again = merge(widgets, "w1", {"metadata": {"labels": {"team": "a"}}})
    assert again["metadata"]["resourceVersion"] == labelled["metadata"]["resourceVersion"]

    pruned = merge(widgets, "w1", {"spec": {"size": 3, "unknown": "dropped"}})
    assert pruned["spec"] == {"size": 3}


def test_metadata_is_validated_like_the_api_server(core: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as exc:  # '/' is not allowed in a label value
        core.create_namespaced_config_map(
            NS, {"metadata": {"name": "l", "labels": {"step": "refine/iter-3"}}}
        )
    assert status_of(exc) == (422, "Invalid")
    with pytest.raises(ApiException) as exc:
        core.create_namespaced_config_map(NS, {"metadata": {"name": "Upper_Case"}})
    assert status_of(exc) == (422, "Invalid")
    big = {"metadata": {"name": "big", "annotations": {"input": "x" * (256 * 1024)}}}
    with pytest.raises(ApiException) as exc:
        core.create_namespaced_config_map(NS, big)
    assert status_of(exc) == (422, "Invalid")
    huge = {"metadata": {"name": "huge"}, "data": {"blob": "x" * (2 * 1024 * 1024)}}
    with pytest.raises(ApiException) as exc:
        core.create_namespaced_config_map(NS, huge)
    assert exc.value.status == 500 and "too large" in exc.value.body


def test_namespaces_are_listed_required_and_cascade(core: client.CoreV1Api) -> None:
    assert {"default", "kube-system"} <= {n.metadata.name for n in core.list_namespace().items}
    with pytest.raises(ApiException) as exc:
        core.create_namespaced_config_map("nowhere", {"metadata": {"name": "c"}})
    assert exc.value.status == 404
    core.create_namespace({"metadata": {"name": "team-a"}})
    assert core.read_namespace("team-a").status.phase == "Active"
    core.create_namespaced_config_map("team-a", {"metadata": {"name": "c"}})
    core.delete_namespace("team-a")
    assert core.list_namespaced_config_map("team-a").items == []


def test_discovery_serves_core_v1_and_registered_crds(
    k8s_emulator: EmulatorServer, widgets: client.CustomObjectsApi
) -> None:
    def get(path: str) -> Any:
        with urllib.request.urlopen(k8s_emulator.url + path) as response:
            return json.load(response)

    core_v1 = get("/api/v1")
    assert core_v1["groupVersion"] == "v1"
    assert {"pods", "pods/log", "pods/status", "secrets", "events", "namespaces"} <= {
        r["name"] for r in core_v1["resources"]
    }
    assert "example.com" in {g["name"] for g in get("/apis")["groups"]}
    (entry,) = [r for r in get("/apis/example.com/v1")["resources"] if r["name"] == "widgets"]
    assert entry["namespaced"] is True and entry["kind"] == "Widget"
    assert entry["shortNames"] == ["wdg"] and entry["categories"] == ["gadgets"]
    assert any(r["name"] == "widgets/status" for r in get("/apis/example.com/v1")["resources"])


def test_events_are_accepted_in_both_api_groups(
    k8s_client: client.ApiClient, core: client.CoreV1Api
) -> None:
    core.create_namespaced_event(
        NS,
        {
            "metadata": {"name": "e1"},
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": NS},
            "reason": "Started",
            "message": "hello",
            "type": "Normal",
        },
    )
    client.EventsV1Api(k8s_client).create_namespaced_event(
        NS,
        {
            "metadata": {"name": "e2"},
            "eventTime": "2026-01-01T00:00:00.000000Z",
            "reason": "Started",
            "action": "Run",
            "reportingController": "flujo",
            "reportingInstance": "flujo-0",
            "type": "Normal",
            "regarding": {"kind": "Pod", "name": "p", "namespace": NS},
        },
    )
    assert [e.metadata.name for e in core.list_namespaced_event(NS).items] == ["e1"]


# --- selectors, watches, finalizers, garbage collection -----------------------------------------


def test_label_and_field_selectors(core: client.CoreV1Api) -> None:
    for name, labels in (
        ("a", {"app": "x", "tier": "web"}),
        ("b", {"app": "y"}),
        ("c", {"app": "z"}),
    ):
        core.create_namespaced_config_map(NS, {"metadata": {"name": name, "labels": labels}})

    def names(**selectors: str) -> list[str]:
        return sorted(
            c.metadata.name for c in core.list_namespaced_config_map(NS, **selectors).items
        )

    assert names(label_selector="app=x") == ["a"]
    assert names(label_selector="app!=x") == ["b", "c"]
    assert names(label_selector="app in (x, y)") == ["a", "b"]
    assert names(label_selector="app notin (x),!tier") == ["b", "c"]
    assert names(label_selector="tier") == ["a"]
    assert names(label_selector="app,tier=web") == ["a"]
    assert names(field_selector="metadata.name=b") == ["b"]
    assert names(field_selector="metadata.namespace=default,metadata.name!=a") == ["b", "c"]


def test_watch_streams_events_resumes_and_expires(
    k8s_emulator: EmulatorServer, core: client.CoreV1Api
) -> None:
    start = core.list_namespaced_config_map(NS).metadata.resource_version
    core.create_namespaced_config_map(NS, {"metadata": {"name": "w", "labels": {"watched": "yes"}}})
    core.patch_namespaced_config_map("w", NS, {"data": {"k": "v"}})
    core.patch_namespaced_config_map("w", NS, {"metadata": {"labels": {"watched": "no"}}})
    core.delete_namespaced_config_map("w", NS)

    def events(limit: int, **kwargs: Any) -> list[tuple[str, str]]:
        seen: list[tuple[str, str]] = []
        stream = watch.Watch().stream(
            core.list_namespaced_config_map, NS, timeout_seconds=5, **kwargs
        )
        for event in stream:
            seen.append((event["type"], event["object"].metadata.resource_version))
            if len(seen) == limit:
                break
        return seen

    everything = events(4, resource_version=start)
    assert [kind for kind, _ in everything] == ["ADDED", "MODIFIED", "MODIFIED", "DELETED"]
    versions = [int(rv) for _, rv in everything]
    assert versions == sorted(versions) and versions[0] > int(start)
    # An object that stops matching a selector is DELETED for that watch.
    selected = events(3, resource_version=start, label_selector="watched=yes")
    assert [kind for kind, _ in selected] == ["ADDED", "MODIFIED", "DELETED"]
    k8s_emulator.emulator.watch_history = 2  # forget all but the last two events
    core.create_namespaced_config_map(NS, {"metadata": {"name": "later"}})
    with pytest.raises(ApiException) as exc:
        events(1, resource_version=start)
    assert exc.value.status == 410  # "too old resource version": the client must re-list


def test_finalizers_hold_deletion_until_removed(widgets: client.CustomObjectsApi) -> None:
    widgets.create_namespaced_custom_object(
        GROUP, VERSION, NS, PLURAL, widget("f", finalizers=["example.com/hold"])
    )
    widgets.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "f")
    held = get_widget(widgets, "f")
    assert (
        held["metadata"]["deletionTimestamp"]
        and held["metadata"]["deletionGracePeriodSeconds"] == 0
    )
    with pytest.raises(ApiException) as exc:
        merge(widgets, "f", {"metadata": {"finalizers": ["example.com/hold", "example.com/late"]}})
    assert exc.value.status == 422
    merge(widgets, "f", {"metadata": {"finalizers": None}})
    with pytest.raises(ApiException) as exc:
        get_widget(widgets, "f")
    assert exc.value.status == 404


def owned_by(owner: dict[str, Any]) -> list[dict[str, Any]]:
    meta = owner["metadata"]
    return [
        {
            "apiVersion": owner["apiVersion"],
            "kind": owner["kind"],
            "name": meta["name"],
            "uid": meta["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def test_owner_reference_garbage_collection(
    widgets: client.CustomObjectsApi, core: client.CoreV1Api
) -> None:
    owner = widgets.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, widget("owner"))
    for name in ("child-1", "child-2"):
        core.create_namespaced_config_map(
            NS, {"metadata": {"name": name, "ownerReferences": owned_by(owner)}}
        )
    core.create_namespaced_config_map(NS, {"metadata": {"name": "bystander"}})
    widgets.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "owner")
    assert [c.metadata.name for c in core.list_namespaced_config_map(NS).items] == ["bystander"]

    orphaning = widgets.create_namespaced_custom_object(
        GROUP, VERSION, NS, PLURAL, widget("orphaning")
    )
    core.create_namespaced_config_map(
        NS, {"metadata": {"name": "kept", "ownerReferences": owned_by(orphaning)}}
    )
    widgets.delete_namespaced_custom_object(
        GROUP, VERSION, NS, PLURAL, "orphaning", propagation_policy="Orphan"
    )
    assert core.read_namespaced_config_map("kept", NS).metadata.owner_references is None

    # Foreground: the owner waits (foregroundDeletion finalizer) for a dependent's own finalizer.
    parent = widgets.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, widget("parent"))
    blocked = {"name": "blocked", "ownerReferences": owned_by(parent), "finalizers": ["x.io/hold"]}
    core.create_namespaced_config_map(NS, {"metadata": blocked})
    widgets.delete_namespaced_custom_object(
        GROUP, VERSION, NS, PLURAL, "parent", propagation_policy="Foreground"
    )
    assert "foregroundDeletion" in get_widget(widgets, "parent")["metadata"]["finalizers"]
    core.patch_namespaced_config_map("blocked", NS, {"metadata": {"finalizers": None}})
    assert widgets.list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL)["items"] == []


def test_writes_are_counted_and_kmock_reactions_inject_faults(
    k8s_emulator: EmulatorServer, core: client.CoreV1Api
) -> None:
    failure = {"kind": "Status", "apiVersion": "v1", "code": 503, "reason": "ServiceUnavailable"}
    k8s_emulator.emulator["post", kmock.resource("v1/configmaps")][:1] << 503 << failure
    with pytest.raises(ApiException) as exc:
        core.create_namespaced_config_map(NS, {"metadata": {"name": "c"}})
    assert exc.value.status == 503
    core.create_namespaced_config_map(NS, {"metadata": {"name": "c"}})
    core.patch_namespaced_config_map("c", NS, {"data": {"a": "1"}})
    core.delete_namespaced_config_map("c", NS)
    core.list_namespaced_config_map(NS)  # reads are not writes
    assert k8s_emulator.writes == {
        ("configmaps", "create"): 2,
        ("configmaps", "patch"): 1,
        ("configmaps", "delete"): 1,
    }


# --- kubectl --------------------------------------------------------------------------------------


def test_kubectl_works_with_custom_resources(kubectl: Kubectl) -> None:
    assert "created" in kubectl.apply(WIDGET_CRD)
    kubectl("wait", "--for=condition=Established", "crd/widgets.example.com", "--timeout=5s")
    manifest = yaml_widget("k1", size=3)
    assert "widget.example.com/k1 created" in kubectl.apply(manifest)
    assert "configured" in kubectl.apply(manifest.replace("size: 3", "size: 4"))
    table = kubectl("get", "widgets").stdout.splitlines()
    # Printer columns replace the default AGE column, exactly as for a real CRD.
    assert [row.split() for row in table] == [["NAME", "PHASE", "SIZE"], ["k1", "4"]]
    assert kubectl("get", "wdg", "-o", "name").stdout.strip() == "widget.example.com/k1"
    assert kubectl("get", "gadgets", "-o", "name").stdout.strip() == "widget.example.com/k1"
    kubectl(
        "patch",
        "widget",
        "k1",
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status":{"phase":"Done"}}',
    )
    kubectl("wait", "--for=jsonpath={.status.phase}=Done", "widget/k1", "--timeout=5s")
    failed = kubectl("patch", "widget", "k1", "-p", '{"spec":{"size":5}}', check=False)  # strategic
    assert "strategic-merge-patch+json is not supported" in failed.stderr  # as for any CRD
    assert "serverside-applied" in kubectl.apply(
        manifest.replace("size: 3", "size: 6"), "--server-side"
    )
    assert kubectl("get", "widget", "k1", "-o", "jsonpath={.spec.size}").stdout == "6"
    assert "deleted" in kubectl("delete", "widget", "k1").stdout
    assert kubectl("get", "widgets", "-o", "name").stdout == ""


def yaml_widget(name: str, size: int) -> str:
    header = f"apiVersion: {GROUP}/{VERSION}\nkind: Widget\n"
    return header + f"metadata: {{name: {name}}}\nspec: {{size: {size}}}\n"


# --- managedFields ------------------------------------------------------------------------------

CRDS = Path(__file__).resolve().parent.parent / "crds"
RFC3339_SECONDS = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


def yaml_agent(name: str, output: str) -> str:
    return (
        f"apiVersion: flujo.dev/v1alpha1\nkind: Agent\nmetadata: {{name: {name}}}\n"
        f"spec: {{type: scripted, responses: [{{output: {output}}}]}}\n"
    )


def shown_managed_fields(kubectl: Kubectl, *what: str) -> list[dict[str, Any]]:
    """``managedFields`` as ``kubectl get -o json --show-managed-fields`` prints them."""
    shown = json.loads(kubectl("get", *what, "-o", "json", "--show-managed-fields").stdout)
    entries: list[dict[str, Any]] = shown["metadata"]["managedFields"]
    return entries


def by_writer(entries: list[dict[str, Any]]) -> dict[tuple[str, str, str | None], dict[str, Any]]:
    return {(e["manager"], e["operation"], e.get("subresource")): e for e in entries}


def test_managed_fields_record_each_writer_like_the_api_server(
    kubectl: Kubectl, custom: client.CustomObjectsApi
) -> None:
    kubectl("apply", "-f", str(CRDS))
    kubectl("wait", "--for=condition=Established", "crd/agents.flujo.dev", "--timeout=5s")
    assert "agent.flujo.dev/a created" in kubectl.apply(yaml_agent("a", "x"))

    [created] = shown_managed_fields(kubectl, "agent", "a")
    assert created == {
        "manager": "kubectl-client-side-apply",  # kubectl's own fieldManager
        "operation": "Update",
        "apiVersion": "flujo.dev/v1alpha1",
        "time": created["time"],
        "fieldsType": "FieldsV1",
        "fieldsV1": {},
    }
    assert re.fullmatch(RFC3339_SECONDS, created["time"])
    # kubectl hides them by default: only the flag above shows that they are served.
    plain = json.loads(kubectl("get", "agent", "a", "-o", "json").stdout)
    assert "managedFields" not in plain["metadata"]

    def status_patch(attempt: int) -> dict[str, Any]:
        body = {"status": {"attempt": attempt}}
        result: dict[str, Any] = custom.patch_namespaced_custom_object_status(
            "flujo.dev", "v1alpha1", NS, "agents", "a", body, field_manager="flujo-operator"
        )
        return result

    patched = status_patch(1)
    entries = by_writer(patched["metadata"]["managedFields"])
    assert entries.keys() == {
        ("kubectl-client-side-apply", "Update", None),
        ("flujo-operator", "Update", "status"),
    }
    assert entries["kubectl-client-side-apply", "Update", None] == created  # kept as it was
    assert entries["flujo-operator", "Update", "status"]["apiVersion"] == "flujo.dev/v1alpha1"
    # A no-op write records nothing: same resourceVersion, same entries.
    assert status_patch(1)["metadata"] == patched["metadata"]
    assert "unchanged" in kubectl.apply(yaml_agent("a", "x"))
    assert shown_managed_fields(kubectl, "agent", "a") == patched["metadata"]["managedFields"]

    # Without fieldManager the manager is the User-Agent's product, as the server derives it.
    labelled = custom.patch_namespaced_custom_object(
        "flujo.dev", "v1alpha1", NS, "agents", "a", {"metadata": {"labels": {"team": "t"}}}
    )
    assert ("OpenAPI-Generator", "Update", None) in by_writer(labelled["metadata"]["managedFields"])

    # A changed apply refreshes kubectl's entry (the time has a resolution of one second).
    wait_until(lambda: now_rfc3339() > created["time"], "the next second")
    before = labelled["metadata"]["resourceVersion"]
    assert "agent.flujo.dev/a configured" in kubectl.apply(yaml_agent("a", "y"))
    refreshed = by_writer(shown_managed_fields(kubectl, "agent", "a"))
    kubectl_entry = refreshed.pop(("kubectl-client-side-apply", "Update", None))
    assert kubectl_entry == created | {"time": kubectl_entry["time"]}
    assert kubectl_entry["time"] > created["time"]
    assert refreshed == {  # the other managers' entries are kept unchanged
        key: entry
        for key, entry in by_writer(labelled["metadata"]["managedFields"]).items()
        if key[0] != "kubectl-client-side-apply"
    }

    # GET, LIST and watch events present them too.
    got = custom.get_namespaced_custom_object("flujo.dev", "v1alpha1", NS, "agents", "a")
    assert got["metadata"]["managedFields"] == shown_managed_fields(kubectl, "agent", "a")
    listed = custom.list_namespaced_custom_object("flujo.dev", "v1alpha1", NS, "agents")
    assert listed["items"][0]["metadata"]["managedFields"] == got["metadata"]["managedFields"]
    stream = watch.Watch().stream(
        custom.list_namespaced_custom_object,
        "flujo.dev",
        "v1alpha1",
        NS,
        "agents",
        resource_version=before,
        timeout_seconds=5,
    )
    event = next(iter(stream))
    assert event["type"] == "MODIFIED"
    assert event["object"]["metadata"]["managedFields"] == got["metadata"]["managedFields"]


def test_server_side_apply_is_recorded_as_apply_and_needs_a_field_manager(
    k8s_emulator: EmulatorServer, kubectl: Kubectl
) -> None:
    kubectl("apply", "-f", str(CRDS))
    kubectl("wait", "--for=condition=Established", "crd/agents.flujo.dev", "--timeout=5s")
    assert "serverside-applied" in kubectl.apply(yaml_agent("s", "x"), "--server-side")
    [applied] = shown_managed_fields(kubectl, "agent", "s")
    assert (applied["manager"], applied["operation"]) == ("kubectl", "Apply")
    assert "subresource" not in applied
    # A server-side dry run stores nothing.
    kubectl.apply(yaml_agent("s", "changed"), "--server-side", "--dry-run=server")
    assert shown_managed_fields(kubectl, "agent", "s") == [applied]
    # The real server refuses an apply patch without fieldManager (it never uses the User-Agent).
    request = urllib.request.Request(
        f"{k8s_emulator.url}/apis/flujo.dev/v1alpha1/namespaces/{NS}/agents/s",
        data=yaml_agent("s", "y").encode(),
        method="PATCH",
        headers={"Content-Type": "application/apply-patch+yaml"},
    )
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(request, timeout=5)
    assert exc.value.code == 422 and "fieldManager" in json.loads(exc.value.read())["message"]


def test_strategic_merge_patch_follows_merge_keys_and_directives() -> None:
    pod = {
        "metadata": {"finalizers": ["a"], "labels": {"x": "1", "y": "2"}},
        "spec": {
            "containers": [
                {"name": "a", "image": "a:1", "env": [{"name": "K", "value": "1"}]},
                {"name": "b", "image": "b:1"},
            ],
            "tolerations": [{"key": "t1"}],
        },
    }
    patch = {
        "metadata": {"finalizers": ["b"], "labels": {"y": None}},
        "spec": {
            "$setElementOrder/containers": [{"name": "c"}, {"name": "a"}],
            "containers": [
                {"name": "a", "env": [{"name": "L", "value": "2"}]},
                {"name": "b", "$patch": "delete"},
                {"name": "c", "image": "c:1"},
            ],
            "tolerations": [{"key": "t2"}],  # no merge key: the list is replaced
        },
    }
    merged = strategic_merge_patch(pod, patch)
    assert merged["metadata"] == {"finalizers": ["a", "b"], "labels": {"x": "1"}}
    assert merged["spec"] == {
        "containers": [
            {"name": "c", "image": "c:1"},
            {
                "name": "a",
                "image": "a:1",
                "env": [{"name": "K", "value": "1"}, {"name": "L", "value": "2"}],
            },
        ],
        "tolerations": [{"key": "t2"}],
    }
    trimmed = strategic_merge_patch(
        merged, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}
    )
    assert trimmed["metadata"]["finalizers"] == ["b"]
    assert merge_patch(pod, {"spec": {"containers": []}})["spec"]["containers"] == []


def test_kubectl_strategic_merge_and_typed_commands(
    kubectl: Kubectl, core: client.CoreV1Api
) -> None:
    deployment = textwrap.dedent(
        """
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: d}
        spec:
          selector: {matchLabels: {app: d}}
          template:
            metadata: {labels: {app: d}}
            spec:
              containers:
                - {name: a, image: "a:1", env: [{name: X, value: "1"}]}
        """
    )
    kubectl.apply(deployment)
    kubectl(
        "patch",
        "deployment",
        "d",
        "-p",
        '{"spec":{"template":{"spec":{"containers":[{"name":"b","image":"b:1"}]}}}}',
    )
    kubectl.apply(deployment.replace('value: "1"', 'value: "2"'))
    containers = json.loads(kubectl("get", "deployment", "d", "-o", "json").stdout)["spec"][
        "template"
    ]["spec"]["containers"]
    assert [(c["name"], c.get("env")) for c in containers] == [
        ("a", [{"name": "X", "value": "2"}]),
        ("b", None),
    ]
    kubectl(
        "create", "secret", "generic", "creds", "--from-literal=api-key=s3cr3t"
    )  # protobuf body
    assert core.read_namespaced_secret("creds", NS).data == {"api-key": "czNjcjN0"}
    kubectl("create", "namespace", "made-by-kubectl")
    assert core.read_namespace("made-by-kubectl").status.phase == "Active"


# --- the local kubelet ----------------------------------------------------------------------------


def python_pod(name: str, code: str, **spec: Any) -> dict[str, Any]:
    container = {"name": "main", "image": "python:3.11", "command": [sys.executable, "-c", code]}
    container.update(spec.pop("container", {}))
    return {
        "metadata": {"name": name, **spec.pop("metadata", {})},
        "spec": {"restartPolicy": "Never", "containers": [container], **spec},
    }


def finished(core: client.CoreV1Api, name: str, timeout: float = 10.0) -> client.V1Pod:
    def probe() -> client.V1Pod | None:
        pod = core.read_namespaced_pod(name, NS)
        return pod if pod.status.phase in ("Succeeded", "Failed") else None

    return wait_until(probe, f"pod {name} to finish", timeout)


def gone(core: client.CoreV1Api, name: str) -> bool:
    try:
        core.read_namespaced_pod(name, NS)
    except ApiException as exc:
        return exc.status == 404
    return False


STEP_CODE = textwrap.dedent(
    """
    import os, sys
    print("input:", open("/etc/flujo/input/payload").read())
    print("key:", os.environ["API_KEY"], "pod:", os.environ["POD_NAME"], "run:", os.environ["RUN"])
    home = os.environ["HOME"]
    print("config:", open("/etc/flujo/config/model").read(), "home:", os.path.isdir(home))
    open(os.path.join(home, "scratch"), "w").write("writable")
    print("oops", file=sys.stderr)
    with open(os.environ["RESULT_PATH"], "w") as out:
        out.write("M" * 5000)
    """
)


def test_kubelet_runs_a_pod_to_success_with_env_volumes_logs_and_message(
    k8s_emulator: EmulatorServer,
    local_kubelet: LocalKubelet,
    core: client.CoreV1Api,
    kubectl: Kubectl,
) -> None:
    core.create_namespaced_secret(
        NS, {"metadata": {"name": "llm"}, "stringData": {"key": "sk-test"}}
    )
    core.create_namespaced_config_map(NS, {"metadata": {"name": "cfg"}, "data": {"model": "m-1"}})
    pod = python_pod(
        "step-1",
        STEP_CODE,
        metadata={
            "labels": {"flujo.dev/run": "r1"},
            "annotations": {"flujo.dev/input": '{"q": 1}'},
        },
        container={
            "env": [
                {"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": "llm", "key": "key"}}},
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {
                    "name": "RUN",
                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['flujo.dev/run']"}},
                },
                {"name": "RESULT_PATH", "value": "/dev/termination-log"},
                {"name": "HOME", "value": "/tmp"},
            ],
            "volumeMounts": [
                {"name": "input", "mountPath": "/etc/flujo/input", "readOnly": True},
                {"name": "config", "mountPath": "/etc/flujo/config", "readOnly": True},
                {"name": "tmp", "mountPath": "/tmp"},
            ],
        },
        volumes=[
            {"name": "config", "configMap": {"name": "cfg"}},
            {"name": "tmp", "emptyDir": {}},
            {
                "name": "input",
                "projected": {
                    "sources": [
                        {
                            "downwardAPI": {
                                "items": [
                                    {
                                        "path": "payload",
                                        "fieldRef": {
                                            "fieldPath": "metadata.annotations['flujo.dev/input']"
                                        },
                                    }
                                ]
                            }
                        }
                    ]
                },
            },
        ],
    )
    core.create_namespaced_pod(NS, pod)
    done = finished(core, "step-1")
    assert done.status.phase == "Succeeded" and done.spec.node_name == local_kubelet.node_name
    assert local_kubelet.started == ["default/step-1"] and local_kubelet.running == []
    terminated = done.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (0, "Completed")
    assert terminated.message == "M" * 4096  # capped like the kubelet's 4 KiB limit
    assert terminated.started_at <= terminated.finished_at
    ready = {c.type: c.status for c in done.status.conditions}
    assert ready["Ready"] == "False" and ready["PodScheduled"] == "True"
    phases = [
        v["status"]["phase"]
        for v in k8s_emulator.emulator.objects["v1/pods", NS, "step-1"].history
        if v
    ]
    assert phases[0] == "Pending" and "Running" in phases and phases[-1] == "Succeeded"
    logs = core.read_namespaced_pod_log("step-1", NS)
    assert 'input: {"q": 1}' in logs and "key: sk-test pod: step-1 run: r1" in logs
    assert "config: m-1 home: True" in logs and "oops" in logs
    assert kubectl("logs", "step-1").stdout == logs
    # The kubelet's own writes are counted apart from the operator's.
    assert k8s_emulator.writes["pods/status", "patch"] == 0
    assert k8s_emulator.emulator.kubelet_writes["pods/status", "patch"] >= 2


def test_kubelet_reports_a_failing_container(
    local_kubelet: LocalKubelet, core: client.CoreV1Api
) -> None:
    pod = python_pod(
        "fails",
        "import sys; print('bad'); sys.exit(3)",
        container={"terminationMessagePolicy": "FallbackToLogsOnError"},
    )
    core.create_namespaced_pod(NS, pod)
    terminated = finished(core, "fails").status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason, terminated.message) == (3, "Error", "bad\n")


def test_kubelet_waits_for_a_missing_secret(
    local_kubelet: LocalKubelet, core: client.CoreV1Api
) -> None:
    pod = python_pod(
        "needs-secret",
        "import os; print(os.environ['K'])",
        container={
            "env": [{"name": "K", "valueFrom": {"secretKeyRef": {"name": "later", "key": "k"}}}]
        },
    )
    core.create_namespaced_pod(NS, pod)

    def waiting_reason() -> str | None:
        statuses = core.read_namespaced_pod("needs-secret", NS).status.container_statuses or []
        return statuses[0].state.waiting.reason if statuses and statuses[0].state.waiting else None

    assert wait_until(waiting_reason, "a config error") == "CreateContainerConfigError"
    core.create_namespaced_secret(NS, {"metadata": {"name": "later"}, "stringData": {"k": "now"}})
    assert finished(core, "needs-secret").status.phase == "Succeeded"
    assert core.read_namespaced_pod_log("needs-secret", NS) == "now\n"


SLEEPER = (
    "import os, time; open(os.environ['PIDFILE'], 'w').write(str(os.getpid())); time.sleep(60)"
)


def sleeper(name: str, pidfile: Path, **spec: Any) -> dict[str, Any]:
    return python_pod(
        name, SLEEPER, container={"env": [{"name": "PIDFILE", "value": str(pidfile)}]}, **spec
    )


def process_alive(pidfile: Path) -> bool:
    try:
        os.kill(int(pidfile.read_text()), 0)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return False
    return True


def test_deleting_a_running_pod_kills_its_process(
    local_kubelet: LocalKubelet, core: client.CoreV1Api, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pid"
    core.create_namespaced_pod(NS, sleeper("sleeper", pidfile))
    wait_until(lambda: process_alive(pidfile), "the pod's process to start")
    assert local_kubelet.running == ["default/sleeper"]
    core.delete_namespaced_pod("sleeper", NS)
    wait_until(lambda: gone(core, "sleeper"), "the pod to be deleted")
    assert not process_alive(pidfile) and local_kubelet.running == []


def test_owner_deletion_garbage_collects_running_pods(
    local_kubelet: LocalKubelet,
    widgets: client.CustomObjectsApi,
    core: client.CoreV1Api,
    tmp_path: Path,
) -> None:
    owner = widgets.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, widget("run"))
    pidfile = tmp_path / "pid"
    core.create_namespaced_pod(
        NS, sleeper("owned", pidfile, metadata={"ownerReferences": owned_by(owner)})
    )
    wait_until(lambda: process_alive(pidfile), "the owned pod to run")
    widgets.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "run")
    wait_until(lambda: gone(core, "owned"), "the owned pod to be collected")
    assert not process_alive(pidfile)


@pytest.mark.parametrize(
    ("reason", "phase", "exit_code", "pod_reason"),
    [("OOMKilled", "Failed", 137, None), ("Evicted", "Failed", 137, "Evicted")],
)
def test_simulated_kills(
    local_kubelet: LocalKubelet,
    core: client.CoreV1Api,
    tmp_path: Path,
    reason: str,
    phase: str,
    exit_code: int,
    pod_reason: str | None,
) -> None:
    local_kubelet.fail_next({"victim": "yes"}, reason, after=0.1)
    core.create_namespaced_pod(
        NS, sleeper("victim", tmp_path / "pid", metadata={"labels": {"victim": "yes"}})
    )
    pod = finished(core, "victim")
    terminated = pod.status.container_statuses[0].state.terminated
    assert (pod.status.phase, terminated.exit_code, pod.status.reason) == (
        phase,
        exit_code,
        pod_reason,
    )
    assert terminated.reason == ("OOMKilled" if reason == "OOMKilled" else "Error")


def test_simulated_image_pull_error_and_node_loss(
    local_kubelet: LocalKubelet, core: client.CoreV1Api, tmp_path: Path
) -> None:
    local_kubelet.fail_next("pull-*", "ErrImagePull")
    core.create_namespaced_pod(NS, sleeper("pull-me", tmp_path / "never"))

    def waiting() -> str | None:
        statuses = core.read_namespaced_pod("pull-me", NS).status.container_statuses or []
        return statuses[0].state.waiting.reason if statuses and statuses[0].state.waiting else None

    assert wait_until(waiting, "the image pull error") == "ErrImagePull"
    assert core.read_namespaced_pod("pull-me", NS).status.phase == "Pending"
    assert not (tmp_path / "never").exists()
    core.delete_namespaced_pod("pull-me", NS)
    wait_until(lambda: gone(core, "pull-me"), "the pending pod to be deleted")

    pidfile = tmp_path / "lost"
    core.create_namespaced_pod(
        NS,
        sleeper(
            "lost",
            pidfile,
            metadata={
                "annotations": {
                    "test.flujo.dev/simulate-failure": "NodeLost",
                    "test.flujo.dev/simulate-after": "0.2",
                }
            },
        ),
    )
    wait_until(lambda: gone(core, "lost"), "the pod on the lost node to be deleted")
    assert not process_alive(pidfile)


# --- kopf, end to end -----------------------------------------------------------------------------


@pytest.fixture
def kopf_operator(kubeconfig: Path, kubectl: Kubectl, tmp_path: Path) -> Iterator[Path]:
    kubectl.apply(WIDGET_CRD)
    log = tmp_path / "kopf.log"
    with log.open("w") as sink:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kopf",
                "run",
                "-m",
                "tests.k8s.kopf_smoke_operator",
                "--standalone",
                "--namespace",
                NS,
                "--verbose",
            ],
            env={**os.environ, "KUBECONFIG": str(kubeconfig)},
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        try:
            yield log
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_a_real_kopf_operator_runs_against_the_emulator(
    kopf_operator: Path, kubectl: Kubectl, core: client.CoreV1Api, widgets: client.CustomObjectsApi
) -> None:
    kubectl.apply(yaml_widget("smoke", size=3))
    waited = kubectl(
        "wait", "--for=jsonpath={.status.phase}=Ready", "widget/smoke", "--timeout=20s", check=False
    )
    assert waited.returncode == 0, kopf_operator.read_text()
    body = get_widget(widgets, "smoke")
    assert body["status"]["size"] == 3 and body["metadata"]["finalizers"] == [
        "example.com/smoke-finalizer"
    ]
    child = core.read_namespaced_config_map("smoke-child", NS)
    assert child.metadata.owner_references[0].uid == body["metadata"]["uid"]
    merge(widgets, "smoke", {"spec": {"size": 5}})
    wait_until(
        lambda: get_widget(widgets, "smoke")["status"]["size"] == 5, "kopf to handle the update"
    )
    kubectl("delete", "widget", "smoke", "--timeout=20s")  # waits for kopf to release its finalizer
    assert "is going away" in kopf_operator.read_text()
    assert core.list_namespaced_config_map(NS).items == []


def test_kubectl_is_killed_only_after_its_own_timeout() -> None:
    """The fixture's kill deadline follows the command's own --timeout, not a fixed cap."""
    from tests.k8s.fixtures import _GRACE_SECONDS, _own_timeout

    assert _own_timeout(["wait", "--for=delete", "pod/x", "--timeout=120s"]) == 120.0
    assert _own_timeout(["wait", "pod/x", "--timeout", "2m"]) == 120.0
    assert _own_timeout(["get", "pods", "--request-timeout=1500ms"]) == 1.5
    assert _own_timeout(["get", "pods"]) == 30.0
    assert _GRACE_SECONDS >= 30.0
