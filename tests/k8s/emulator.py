"""A Kubernetes API emulator on 127.0.0.1 for operator integration tests (DESIGN.md §6, tier 2).

Why: ``kind`` needs Docker, which these machines lack, yet the operator must be
tested with the real ``kubernetes`` client, the real ``kubectl`` and the real
kopf. ``kmock`` (pinned at 0.8) supplies the plumbing: request parsing into
Kubernetes terms, the request log and its filter DSL (``emulator['patch',
kmock.resource('v1/pods')]`` for assertions and fault injection such as
``emulator['post', kmock.resource('v1/pods')][:1] << 500``), the versioned object
store (``emulator.objects[...]`` with ``.history``) and the bundled discovery
data of the built-in resources. What plain kmock 0.8 lacks for a real operator is
implemented here, in :class:`Emulator`, by serving every request that no test
reaction intercepts with the API server's documented semantics:

* metadata the server owns: ``uid``, ``resourceVersion``, ``generation`` (bumped only
  on non-metadata changes; status excluded when the status subresource exists),
  ``creationTimestamp``, ``generateName``, ``deletionTimestamp`` and
  ``deletionGracePeriodSeconds``; create answers 201; no-op writes change nothing;
* ``managedFields``: every write that changes an object (create, PUT, any PATCH,
  server-side apply; also in dry-run answers) sets or refreshes the entry of its manager
  (``fieldManager``, else the User-Agent up to its first "/", as the server derives it)
  with operation ``Update`` or ``Apply``, the request's apiVersion, the time and
  ``subresource: status`` for status writes; other managers' entries stay, sorted like
  the server's. ``fieldsV1`` is always ``{}`` (no field ownership) and what clients send
  in ``managedFields`` is ignored; apply without ``fieldManager`` is 422;
* 409 ``AlreadyExists`` on create, 409 ``Conflict`` on a stale ``resourceVersion``
  (PUT, merge/strategic/apply patches, delete preconditions); 422 when a JSON-patch
  ``test`` fails (kopf relies on it) or on invalid names/labels/annotations
  (including the 256 KiB annotation budget) and objects over etcd's 1.5 MiB;
* PUT, JSON/merge/strategic-merge patches, server-side apply (create-or-merge, no
  field ownership or apply conflicts); strategic merge is refused for custom resources (415)
  exactly like the real server;
* status-subresource separation for CRDs and pods; Secret ``stringData`` folding;
  pruning of fields a CRD's structural schema does not declare;
* label and field selectors on list, watch and delete-collection;
* watches that resume from a ``resourceVersion`` (410 when it is too old), send
  ADDED/MODIFIED/DELETED (and DELETED/ADDED when an object leaves/enters a
  selector), the ``sendInitialEvents`` bookmark and honour ``timeoutSeconds``;
* finalizers, graceful pod deletion (a bound, running pod waits for its kubelet),
  ownerReference garbage collection (background, foreground and orphan);
* CRDs become discoverable (``/apis``), with scope, shortNames and categories;
  their printer columns are served as ``Table`` so ``kubectl get`` shows them;
* ``GET /api/v1/namespaces``, namespace existence checks and cascading deletion;
* ``pods/log`` (text stored by the local kubelet), ``pods/binding`` and ``pods/eviction``.

Every write request (POST/PUT/PATCH/DELETE) is counted per resource (with the
subresource, e.g. ``pipelineruns/status``) and verb in :attr:`Emulator.writes`;
the local kubelet's own writes go to :attr:`Emulator.kubelet_writes` so that
benchmarks see only what the operator (and the test) did.

Known simplifications: no authentication/authorisation, no admission webhooks,
no OpenAPI (``kubectl --validate=false``), no CRD schema validation or defaulting
(pruning only), no field ownership in ``managedFields`` (so kubectl never upgrades
client-side to server-side apply: it finds the owners through ``fieldsV1``) and no
rewriting of them by clients (the real server allows it), no conversion between CRD
versions (the ``apiVersion`` is rewritten), field selectors accept any field path,
and garbage collection runs synchronously inside the deleting request.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import copy
import datetime
import json
import random
import re
import threading
import uuid
import warnings
from collections.abc import Coroutine, Iterator, Mapping
from typing import Any, ClassVar, TypeVar

import aiohttp.web
import attrs
import kmock
import yaml
from kmock._internal import apps, rendering

from tests.k8s.apimachinery import (
    ApiError,
    FieldSelector,
    LabelSelector,
    apply_json_patch,
    decode_protobuf,
    jsonpath_get,
    merge_patch,
    normalize_secret,
    now_rfc3339,
    prune,
    strategic_merge_patch,
    validate_metadata,
)
from tests.k8s.faults import Faults

__all__ = ["KUBELET_USER_AGENT", "Emulator", "EmulatorServer", "Served"]

Obj = dict[str, Any]
T = TypeVar("T")

# Requests with a User-Agent starting with this are counted in `kubelet_writes`, not `writes`.
KUBELET_USER_AGENT = "flujo-local-kubelet"

ETCD_OBJECT_LIMIT = 1_572_864  # etcd's default --max-request-bytes (1.5 MiB)
REQUEST_BODY_LIMIT = 3 * 1024 * 1024  # the API server's request-body limit
ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
SUBRESOURCE_VERBS = {
    "status": ["get", "patch", "update"],
    "log": ["get"],
    "binding": ["create"],
    "eviction": ["create"],
    "scale": ["get", "patch", "update"],
}
_NAME_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # the API server's generateName alphabet
_WRITE_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
_FIELD_MANAGER_MAX_LENGTH = 128  # bytes, as the API server validates and truncates


@attrs.frozen
class ApiPath:
    """A resource URL split into Kubernetes parts (kmock 0.8 fails on ``/api/v1/namespaces``)."""

    group: str
    version: str
    plural: str | None = None
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None

    @classmethod
    def parse(cls, path: str) -> ApiPath | None:
        parts = [p for p in path.split("/") if p]
        if len(parts) >= 2 and parts[0] == "api":
            group, version, rest = "", parts[1], parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return None
        namespace = None
        if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] not in ("status", "finalize"):
            namespace, rest = rest[1], rest[2:]
        plural = rest[0] if rest else None
        name = rest[1] if len(rest) > 1 else None
        subresource = "/".join(rest[2:]) or None
        return cls(group, version, plural, namespace, name, subresource)


@attrs.frozen
class Served:
    """A resource as a request addresses it: where it is stored and how it is presented."""

    key: kmock.resource  # the storage key: (group, storage version, plural)
    api_version: str  # as requested: "v1" or "group/version"
    kind: str
    plural: str
    namespaced: bool
    status_subresource: bool
    custom: bool  # defined by a CustomResourceDefinition
    subresources: frozenset[str] = frozenset()


@attrs.frozen
class Writer:
    """Whom a write is recorded for in ``metadata.managedFields``: one entry per writer.

    Why: clients read who changed an object, and how, from these entries (kubectl's
    client-side to server-side apply upgrade, ``flujo.security.audit.field_manager_of``),
    so the emulator keeps them as the API server's field manager does.
    """

    manager: str
    operation: str = "Update"  # "Apply" for server-side apply
    subresource: str | None = None  # "status" for writes to the status subresource

    def entry(self, api_version: str) -> Obj:
        """The ``ManagedFieldsEntry`` of this write, stamped now (field order as the server's)."""
        entry: Obj = {
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": api_version,
            "time": now_rfc3339(),
            "fieldsType": "FieldsV1",
            "fieldsV1": {},  # no field ownership is tracked (see the module docstring)
        }
        if self.subresource:
            entry["subresource"] = self.subresource
        return entry


# The writer of what the API server does by itself (default namespaces, CRD status).
_SERVER = Writer("kube-apiserver")


@attrs.frozen
class WatchEvent:
    rv: int
    key: kmock.resource
    type: str
    obj: Obj
    old: Obj | None


@attrs.define(kw_only=True)
class Emulator(kmock.KubernetesEmulator):
    """kmock's Kubernetes emulator with the API server semantics a real operator needs.

    Serve it with :class:`EmulatorServer`. Tests may still declare kmock reactions
    on it (they take precedence), and read ``objects``, ``writes`` and the request log.
    """

    history_limit: int = 100  # object versions kept in `objects[...].history`
    watch_history: int = 10_000  # watch events kept to resume from; older ones get 410 Gone

    writes: collections.Counter[tuple[str, str]] = attrs.field(
        factory=collections.Counter, init=False
    )
    kubelet_writes: collections.Counter[tuple[str, str]] = attrs.field(
        factory=collections.Counter, init=False
    )
    pod_logs: dict[tuple[str, str], bytearray] = attrs.field(factory=dict, init=False)
    faults: Faults | None = None  # fault injection (tests/k8s/faults.py), off by default

    _rv: int = attrs.field(default=0, init=False)
    _log: list[WatchEvent] = attrs.field(factory=list, init=False)
    _changed: asyncio.Condition | None = attrs.field(default=None, init=False)
    _closing: bool = attrs.field(default=False, init=False)
    _crds: dict[tuple[str, str], Obj] = attrs.field(factory=dict, init=False)
    _uids: dict[str, tuple[kmock.resource, str | None, str]] = attrs.field(factory=dict, init=False)

    def __attrs_post_init__(self) -> None:
        # Deliberately not calling kmock's: its fallback reactions are replaced by `_serve`.
        with warnings.catch_warnings():  # kmock 0.8 calls the deprecated read_binary()
            warnings.simplefilter("ignore", DeprecationWarning)
            self.resources.load_bundled()
        for name in ("default", "kube-system", "kube-public", "kube-node-lease"):
            served = self._resolve("", "v1", "namespaces")
            assert served is not None
            self._create(served, None, {"metadata": {"name": name}}, {}, writer=_SERVER)

    # --- the request entry point -------------------------------------------------------------

    async def __call__(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        body = await raw.read()
        request = self._parse_request(raw, body)
        self._requests.append(request)
        self._count_write(raw, request)
        fault = (
            None
            if self.faults is None or request.resource is None
            else self.faults.write_fault(raw.method, raw.headers.get("User-Agent", ""))
        )
        if fault is not None and self.faults is not None:
            code, status = fault
            return aiohttp.web.json_response(status, status=code, headers=self.faults.headers(code))
        try:
            if self._payloads:  # reactions declared by a test take precedence
                try:
                    return await apps.RawHandler._handle(self, request)
                except NotImplementedError:
                    pass
            return await self._serve(request, raw)
        except rendering.StreamingError as exc:
            cause = exc.__cause__ or exc
            # A watcher that went away mid-stream (a killed ``kubectl --watch``, a closed
            # client) is the client's doing, as on a real server: not an emulator failure.
            if not isinstance(cause, ConnectionResetError):
                self._remember(cause)
            response: aiohttp.web.StreamResponse = exc.args[0]
            return response
        except Exception as exc:
            if not isinstance(exc, ConnectionResetError):  # the client left: not a failure
                self._remember(exc)
            error = ApiError(500, "InternalError", f"emulator failure: {exc!r}")
            return aiohttp.web.json_response(error.status(), status=500)

    def _remember(self, exc: BaseException) -> None:
        if not self._errors:
            raise exc
        if isinstance(exc, Exception):
            self._errors[-1].append(exc)

    def _parse_request(self, raw: aiohttp.web.BaseRequest, body: bytes) -> rendering.Request:
        text = body.decode("utf-8", errors="replace")
        try:
            data = json.loads(text) if text else None
        except ValueError:
            data = None
        api = ApiPath.parse(raw.path)
        action: kmock.action | None = None
        if api is not None and api.plural is not None:
            if raw.method == "GET":
                action = (
                    kmock.action.WATCH
                    if raw.query.get("watch") in ("true", "1")
                    else kmock.action.LIST
                    if api.name is None
                    else kmock.action.FETCH
                )
            elif raw.method == "POST":
                action = kmock.action.CREATE
            elif raw.method in ("PUT", "PATCH"):
                action = kmock.action.UPDATE
            elif raw.method == "DELETE":
                action = kmock.action.DELETE
        return rendering.Request(
            id=len(self._requests),
            raw_request=raw,
            url=raw.url,
            method=raw.method,
            params=dict(raw.query),
            headers=dict(raw.headers),
            cookies=dict(raw.cookies),
            body=body,
            text=text,
            data=data,
            action=action,
            resource=None if api is None else kmock.resource(api.group, api.version, api.plural),
            namespace=None if api is None else api.namespace,
            name=None if api is None else api.name,
            subresource=None if api is None else api.subresource,
        )

    def _count_write(self, raw: aiohttp.web.BaseRequest, request: rendering.Request) -> None:
        verb = _WRITE_VERBS.get(raw.method)
        if verb is None or request.resource is None or request.resource.plural is None:
            return
        if verb == "delete" and request.name is None:
            verb = "deletecollection"
        what = request.resource.plural + (f"/{request.subresource}" if request.subresource else "")
        agent = raw.headers.get("User-Agent", "")
        counter = self.kubelet_writes if agent.startswith(KUBELET_USER_AGENT) else self.writes
        counter[what, verb] += 1

    async def _serve(
        self, request: rendering.Request, raw: aiohttp.web.BaseRequest
    ) -> aiohttp.web.StreamResponse:
        try:
            content_type = raw.headers.get("Content-Type", "")
            if "protobuf" in content_type:
                request = attrs.evolve(request, data=decode_protobuf(request.body))
            elif "cbor" in content_type:
                raise ApiError(
                    415, "UnsupportedMediaType", "only JSON bodies are supported by this server"
                )
            if len(request.body) > REQUEST_BODY_LIMIT:
                raise ApiError(413, "RequestEntityTooLarge", f"limit is {REQUEST_BODY_LIMIT}")
            path = raw.path.rstrip("/") or "/"
            if path in ("/version", "/api", "/apis", "/"):
                return _json(self._discovery_root(path, raw))
            if match := re.fullmatch(r"/apis/([^/]+)", path):
                return _json(self._discovery_group(match[1]))
            api = ApiPath.parse(path)
            if api is None:
                raise _not_found_url()
            if api.plural is None:
                return _json(self._discovery_version(api.group, api.version))
            served = self._resolve(api.group, api.version, api.plural)
            if served is None:
                raise _not_found_url()
            if served.namespaced and api.name is not None and api.namespace is None:
                raise _not_found_url()
            if not served.namespaced and api.namespace is not None:
                raise _not_found_url()
            return await self._serve_resource(request, raw, api, served)
        except ApiError as exc:
            return _json(exc.status(), status=exc.code)

    async def _serve_resource(
        self, request: rendering.Request, raw: aiohttp.web.BaseRequest, api: ApiPath, served: Served
    ) -> aiohttp.web.StreamResponse:
        ns, name, sub = api.namespace, api.name, api.subresource
        params = dict(raw.query)
        if sub is not None and sub not in served.subresources:
            raise _not_found_url()
        method = raw.method
        if method in ("PUT", "PATCH") and sub not in (None, "status"):
            raise ApiError(405, "MethodNotAllowed", f"{method} is not supported on {sub}")
        if method == "GET" and params.get("watch") in ("true", "1"):
            return await self._watch(raw, served, ns, name, params)
        if method == "GET" and sub == "log" and name is not None:
            return await self._serve_log(raw, served, ns, name, params)
        if method == "GET" and name is None:
            items = self._select(served, ns, params)
            if _wants_table(raw):
                return _json(self._table(served, items))
            return _json(
                {
                    "apiVersion": served.api_version,
                    "kind": f"{served.kind}List",
                    "metadata": {"resourceVersion": str(self._rv)},
                    "items": [self._present(served, obj) for obj in items],
                }
            )
        if method == "GET" and name is not None:
            obj = self._require(served, ns, name)
            if _wants_table(raw) and sub is None:
                return _json(self._table(served, [obj]))
            return _json(self._present(served, obj))
        dry_run = params.get("dryRun") == "All"
        writer = Writer(
            _field_manager(params, raw), subresource="status" if sub == "status" else None
        )
        if method == "POST" and name is None:
            data = _body_object(request)
            obj = self._create(served, ns, data, params, dry_run=dry_run, writer=writer)
            return await self._after_write(obj, served, 201)
        if method == "POST" and sub == "binding" and name is not None:
            return await self._after_write(
                self._bind(served, ns, name, _body_object(request)), served, 201
            )
        if method == "POST" and sub == "eviction" and name is not None:
            options = _body_object(request).get("deleteOptions") or {}
            return await self._after_write(self._delete(served, ns, name, options, params), served)
        if method == "PUT" and name is not None:
            data = _body_object(request)
            obj = self._update(served, ns, name, sub, data, dry_run=dry_run, writer=writer)
            return await self._after_write(obj, served)
        if method == "PATCH" and name is not None:
            obj, created = self._patch(
                served, ns, name, sub, request, params, dry_run=dry_run, writer=writer
            )
            return await self._after_write(obj, served, 201 if created else 200)
        if method == "DELETE" and name is not None:
            options = request.data if isinstance(request.data, dict) else {}
            obj = self._delete(served, ns, name, options, params, dry_run=dry_run)
            return await self._after_write(obj, served)
        if method == "DELETE" and name is None:
            options = request.data if isinstance(request.data, dict) else {}
            deleted = [
                self._delete(
                    served,
                    obj["metadata"].get("namespace"),
                    obj["metadata"]["name"],
                    options,
                    params,
                )
                for obj in self._select(served, ns, params)
            ]
            listing = {
                "apiVersion": served.api_version,
                "kind": f"{served.kind}List",
                "metadata": {"resourceVersion": str(self._rv)},
                "items": deleted,
            }
            return await self._after_write(listing, served)
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported here")

    async def _after_write(
        self, obj: Obj, served: Served, code: int = 200
    ) -> aiohttp.web.StreamResponse:
        await self._notify()
        return _json(self._present(served, obj) if obj.get("kind") == served.kind else obj, code)

    # --- discovery -----------------------------------------------------------------------------

    def _discovery_root(self, path: str, raw: aiohttp.web.BaseRequest) -> Obj:
        if path == "/version":
            return {
                "major": "1",
                "minor": "36",
                "gitVersion": "v1.36.0-flujo-emulator",
                "gitCommit": "0" * 40,
                "gitTreeState": "clean",
                "buildDate": "2026-01-01T00:00:00Z",
                "goVersion": "go1.25",
                "compiler": "gc",
                "platform": "linux/amd64",
            }
        if path == "/api":
            return {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": raw.host}
                ],
            }
        groups = self._groups()
        if path == "/apis":
            return {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [self._group_doc(g, vs) for g, vs in sorted(groups.items()) if g],
            }
        paths = {"/api", "/api/v1", "/apis", "/version"}
        for group, versions in groups.items():
            if group:
                paths |= {f"/apis/{group}"} | {f"/apis/{group}/{v}" for v in versions}
        return {"paths": sorted(paths)}

    def _groups(self) -> dict[str, list[str]]:
        groups: dict[str, set[str]] = collections.defaultdict(set)
        for res in self._registered():
            if res.group is not None and res.version is not None:
                groups[res.group].add(res.version)
        return {g: sorted(vs, key=_version_priority) for g, vs in groups.items()}

    @staticmethod
    def _group_doc(group: str, versions: list[str]) -> Obj:
        docs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {"name": group, "versions": docs, "preferredVersion": docs[0]}

    def _registered(self) -> list[kmock.resource]:
        return [kmock.resource(res) for res in self.resources]

    def _discovery_group(self, group: str) -> Obj:
        groups = self._groups()
        if group not in groups:
            raise _not_found_url()
        return {"kind": "APIGroup", "apiVersion": "v1", **self._group_doc(group, groups[group])}

    def _discovery_version(self, group: str, version: str) -> Obj:
        resources: list[Obj] = []
        for res in sorted(self._registered(), key=lambda r: r.plural or ""):
            if res.group != group or res.version != version:
                continue
            info = self.resources[res]
            entry: Obj = {
                "name": res.plural,
                "singularName": info.singular or "",
                "namespaced": bool(info.namespaced),
                "kind": info.kind,
                "verbs": sorted(info.verbs),
            }
            if info.shortnames:
                entry["shortNames"] = sorted(info.shortnames)
            if info.categories:
                entry["categories"] = sorted(info.categories)
            resources.append(entry)
            for sub in sorted(info.subresources):
                resources.append(
                    {
                        "name": f"{res.plural}/{sub}",
                        "singularName": "",
                        "namespaced": bool(info.namespaced),
                        "kind": info.kind,
                        "verbs": SUBRESOURCE_VERBS.get(sub, ["get"]),
                    }
                )
        if not resources and group:
            raise _not_found_url()
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": resources,
        }

    def _resolve(self, group: str, version: str, plural: str) -> Served | None:
        crd = self._crds.get((group, plural))
        res = kmock.resource(group, version, plural)
        if res not in self.resources:
            return None
        info = self.resources[res]
        if crd is not None:
            storage = next(
                (v["name"] for v in crd["spec"]["versions"] if v.get("storage")), version
            )
            key = kmock.resource(group, storage, plural)
        else:
            key = res
        return Served(
            key=key,
            api_version=f"{group}/{version}" if group else version,
            kind=info.kind or plural.capitalize(),
            plural=plural,
            namespaced=bool(info.namespaced),
            status_subresource="status" in info.subresources,
            custom=crd is not None,
            subresources=frozenset(info.subresources),
        )

    @staticmethod
    def _validate_crd(crd: Obj) -> None:
        spec = crd.get("spec") or {}
        group, names = spec.get("group", ""), spec.get("names") or {}
        plural, kind = names.get("plural"), names.get("kind")
        versions = spec.get("versions") or []
        if (
            not group
            or not plural
            or not kind
            or crd["metadata"]["name"] != f"{plural}.{group}"
            or sum(1 for v in versions if v.get("storage")) != 1
        ):
            raise ApiError(
                422,
                "Invalid",
                f'CustomResourceDefinition "{crd["metadata"]["name"]}" is invalid: '
                'metadata.name must be spec.names.plural+"."+spec.group; group, plural, kind '
                "and exactly one storage version are required",
            )

    def _register_crd(self, crd: Obj, old: Obj | None = None) -> None:
        self._unregister_crd(old if old is not None else crd)
        spec = crd["spec"]
        group, names = spec["group"], spec["names"]
        plural, kind = names["plural"], names["kind"]
        for version in spec.get("versions") or []:
            if not version.get("served", True):
                continue
            subresources = version.get("subresources") or {}
            self.resources[kmock.resource(group, version["name"], plural)] = kmock.ResourceInfo(
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                kind=kind,
                singular=names.get("singular") or kind.lower(),
                verbs=ALL_VERBS,
                shortnames=names.get("shortNames") or [],
                categories=names.get("categories") or [],
                subresources=[s for s in ("status", "scale") if s in subresources],
            )
        self._crds[group, plural] = crd

    def _unregister_crd(self, crd: Obj) -> None:
        spec = crd.get("spec") or {}
        group, plural = str(spec.get("group", "")), str((spec.get("names") or {}).get("plural"))
        if self._crds.pop((group, plural), None) is None:
            return
        for res in self._registered():
            if res.group == group and res.plural == plural:
                del self.resources[res]

    def _crd_schema(self, served: Served) -> Mapping[str, Any] | None:
        crd = self._crds.get((served.key.group or "", served.plural))
        for version in (crd or {}).get("spec", {}).get("versions") or []:
            if version["name"] == served.key.version:
                schema: Mapping[str, Any] | None = (version.get("schema") or {}).get(
                    "openAPIV3Schema"
                )
                return schema
        return None

    # --- reading -------------------------------------------------------------------------------

    def _get(self, served: Served, ns: str | None, name: str) -> Obj | None:
        key = (served.key, ns if served.namespaced else None, name)
        if key not in self._objects:
            return None
        obj = self._objects[key]
        return None if obj.deleted else obj.raw

    def _require(self, served: Served, ns: str | None, name: str) -> Obj:
        obj = self._get(served, ns, name)
        if obj is None:
            raise _not_found(served, name)
        return obj

    def _live(self) -> Iterator[tuple[tuple[kmock.resource, str | None, str], Obj]]:
        for key, obj in list(self._objects.items()):
            if not obj.deleted:
                yield key, obj.raw

    def _select(self, served: Served, ns: str | None, params: Mapping[str, str]) -> list[Obj]:
        labels = LabelSelector(params.get("labelSelector"))
        fields = FieldSelector(params.get("fieldSelector"))
        return [
            obj
            for (res, obj_ns, _), obj in self._live()
            if res == served.key
            and (ns is None or obj_ns == ns)
            and labels.matches(obj)
            and fields.matches(obj)
        ]

    def _present(self, served: Served, obj: Obj) -> Obj:
        if obj.get("apiVersion") == served.api_version:
            return obj
        return {**obj, "apiVersion": served.api_version}

    # --- writing -------------------------------------------------------------------------------

    def _commit(self, served: Served, event: str, obj: Obj, old: Obj | None) -> Obj:
        """Store a new version (or the deletion), assign the resourceVersion, log the event."""
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        meta = obj["metadata"]
        key = (served.key, meta.get("namespace") if served.namespaced else None, meta["name"])
        if event == "DELETED":
            self._objects[key].history.append(obj)  # the last state stays visible in the history
            self._objects[key].delete()
            self._uids.pop(meta.get("uid", ""), None)
        elif key in self._objects:
            history = self._objects[key].history
            history.append(obj)
            if self.history_limit and len(history) > self.history_limit:
                del history[: len(history) - self.history_limit]
        else:
            self._objects[key] = obj
        if event != "DELETED":
            self._uids[meta["uid"]] = key
        self._log.append(WatchEvent(self._rv, served.key, event, obj, old))
        if len(self._log) > self.watch_history:
            del self._log[: len(self._log) - self.watch_history]
        return obj

    async def _notify(self) -> None:
        if self._changed is None:
            self._changed = asyncio.Condition()
        async with self._changed:
            self._changed.notify_all()

    def _create(
        self,
        served: Served,
        ns: str | None,
        data: Obj,
        params: Mapping[str, str],
        *,
        dry_run: bool = False,
        writer: Writer | None = None,
    ) -> Obj:
        obj = copy.deepcopy(data)
        meta = obj.setdefault("metadata", {})
        if obj.get("kind") not in (None, served.kind):
            raise ApiError(
                400, "BadRequest", f"the object kind {obj['kind']!r} does not match {served.kind!r}"
            )
        if served.namespaced:
            if meta.get("namespace") not in (None, "", ns):
                raise ApiError(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match "
                    "the namespace sent on the request",
                )
            if ns is None:
                raise _not_found_url()
            meta["namespace"] = ns
            if self._namespace_missing(ns):
                raise ApiError(
                    404,
                    "NotFound",
                    f'namespaces "{ns}" not found',
                    {"name": ns, "kind": "namespaces"},
                )
        else:
            meta.pop("namespace", None)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + "".join(
                random.choices(_NAME_SUFFIX_ALPHABET, k=5)
            )
        group, version = served.key.group, served.key.version
        obj["apiVersion"], obj["kind"] = f"{group}/{version}" if group else version, served.kind
        for field in (
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "managedFields",
            "selfLink",
        ):
            meta.pop(field, None)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=now_rfc3339(), generation=1)
        if served.custom and served.status_subresource:
            obj.pop("status", None)
        self._prepare(served, obj, None)
        if self._get(served, ns, meta["name"]) is not None:
            raise ApiError(
                409,
                "AlreadyExists",
                f'{_qualified(served)} "{meta["name"]}" already exists',
                {"name": meta["name"], "group": served.key.group, "kind": served.plural},
            )
        if writer is not None:  # a dry run answers with the entry it would record, too
            _record_manager(obj, writer, served)
        if dry_run:
            return obj
        obj = self._commit(served, "ADDED", obj, None)
        if served.key == _CRDS:
            self._register_crd(obj)
            established = self._established(obj)
            # The API server's own CRD controller writes the status, as on a real cluster.
            _record_manager(established, attrs.evolve(_SERVER, subresource="status"), served)
            obj = self._commit(served, "MODIFIED", established, obj)
        return obj

    def _prepare(self, served: Served, obj: Obj, old: Obj | None) -> None:
        """Kind-specific defaulting, normalisation and validation common to every write."""
        meta = obj["metadata"]
        for field in ("finalizers", "labels", "annotations", "ownerReferences"):
            if field in meta and not meta[field]:
                del meta[field]  # the API server drops empty lists/maps (kopf expects it)
        if served.key == _SECRETS:
            normalize_secret(obj)
        if served.key == _PODS and old is None:
            obj["status"] = {"phase": "Pending", "qosClass": _qos_class(obj)}
        if served.key == _NAMESPACES and old is None:
            obj["status"] = {"phase": "Active"}
        if served.key == _CRDS:
            self._validate_crd(obj)
        if served.custom:
            schema = self._crd_schema(served)
            pruned = prune(obj, schema, root=True)
            obj.clear()
            obj.update(pruned)
        validate_metadata(obj, served.kind, dns_label_name=served.key == _NAMESPACES)
        if len(json.dumps(obj)) > ETCD_OBJECT_LIMIT:
            raise ApiError(500, "InternalError", "etcdserver: request is too large")

    def _established(self, crd: Obj) -> Obj:
        new = copy.deepcopy(crd)
        names = new["spec"]["names"]
        accepted = {
            **names,
            "singular": names.get("singular") or names["kind"].lower(),
            "listKind": names.get("listKind") or f"{names['kind']}List",
        }
        now = now_rfc3339()
        new["status"] = {
            "acceptedNames": accepted,
            "storedVersions": [
                v["name"] for v in new["spec"].get("versions", []) if v.get("storage")
            ],
            "conditions": [
                {"type": t, "status": "True", "reason": r, "message": m, "lastTransitionTime": now}
                for t, r, m in (
                    ("NamesAccepted", "NoConflicts", "no conflicts found"),
                    ("Established", "InitialNamesAccepted", "the initial names have been accepted"),
                )
            ],
        }
        return new

    def _namespace_missing(self, ns: str) -> bool:
        key = (_NAMESPACES, None, ns)
        return key not in self._objects or self._objects[key].deleted

    def _update(
        self,
        served: Served,
        ns: str | None,
        name: str,
        sub: str | None,
        data: Obj,
        *,
        dry_run: bool = False,
        writer: Writer | None = None,
    ) -> Obj:
        current = self._require(served, ns, name)
        meta = data.get("metadata") or {}
        if meta.get("name") not in (None, name):
            raise ApiError(
                400, "BadRequest", "the name of the object does not match the name on the URL"
            )
        self._check_version(served, current, meta.get("resourceVersion"))
        return self._write(served, current, data, sub, dry_run=dry_run, writer=writer)

    def _patch(
        self,
        served: Served,
        ns: str | None,
        name: str,
        sub: str | None,
        request: rendering.Request,
        params: Mapping[str, str],
        *,
        dry_run: bool = False,
        writer: Writer | None = None,
    ) -> tuple[Obj, bool]:
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
        current = self._get(served, ns, name)
        if content_type == "application/apply-patch+yaml":
            if not params.get("fieldManager"):  # never derived from the User-Agent for apply
                raise ApiError(
                    422,
                    "Invalid",
                    'PatchOptions.meta.k8s.io "" is invalid: '
                    "fieldManager: Required value: is required for apply patch",
                    {"group": "meta.k8s.io", "kind": "PatchOptions"},
                )
            if writer is not None:
                writer = attrs.evolve(writer, operation="Apply")
            try:
                data = yaml.safe_load(request.text)
            except yaml.YAMLError as exc:
                raise ApiError(400, "BadRequest", f"invalid apply configuration: {exc}") from exc
            if not isinstance(data, dict):
                raise ApiError(400, "BadRequest", "an apply configuration must be an object")
            if current is None:
                if sub is not None:
                    raise _not_found(served, name)
                created = self._create(served, ns, data, params, dry_run=dry_run, writer=writer)
                return created, True
            self._check_version(
                served, current, (data.get("metadata") or {}).get("resourceVersion")
            )
            merge = merge_patch if served.custom else strategic_merge_patch
            merged = merge(current, data)
            return self._write(served, current, merged, sub, dry_run=dry_run, writer=writer), False
        if current is None:
            raise _not_found(served, name)
        if content_type == "application/json-patch+json":
            patched = apply_json_patch(copy.deepcopy(current), request.data)
        elif content_type == "application/merge-patch+json":
            patched = merge_patch(current, _body_object(request))
        elif content_type == "application/strategic-merge-patch+json":
            if served.custom:
                raise _unsupported_patch()
            patched = strategic_merge_patch(current, _body_object(request))
        else:
            raise _unsupported_patch()
        self._check_version(served, current, (patched.get("metadata") or {}).get("resourceVersion"))
        return self._write(served, current, patched, sub, dry_run=dry_run, writer=writer), False

    def _check_version(self, served: Served, current: Obj, wanted: Any) -> None:
        if wanted not in (None, "") and str(wanted) != current["metadata"]["resourceVersion"]:
            raise _conflict(served, current["metadata"]["name"])

    def _write(
        self,
        served: Served,
        current: Obj,
        data: Obj,
        sub: str | None,
        *,
        dry_run: bool = False,
        writer: Writer | None = None,
    ) -> Obj:
        """Turn a client's intended object into the stored one: the update half of PUT and PATCH."""
        new = copy.deepcopy(data)
        if sub == "status":
            status = new.get("status")
            new = copy.deepcopy(current)
            new.pop("status", None)
            if status is not None:
                new["status"] = status
        else:
            meta = new.setdefault("metadata", {})
            if not isinstance(meta, dict):
                raise ApiError(422, "Invalid", "metadata must be an object")
            cmeta = current["metadata"]
            for field in (
                "uid",
                "creationTimestamp",
                "generation",
                "resourceVersion",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "namespace",
                "name",
                "managedFields",  # the server's record, whatever a client sends
            ):
                if field in cmeta:
                    meta[field] = cmeta[field]
                else:
                    meta.pop(field, None)
            meta.pop("selfLink", None)
            new["apiVersion"], new["kind"] = current["apiVersion"], current["kind"]
            if served.status_subresource:
                new.pop("status", None)
                if "status" in current:
                    new["status"] = copy.deepcopy(current["status"])
        return self._store_update(served, current, new, dry_run=dry_run, writer=writer)

    def _store_update(
        self,
        served: Served,
        current: Obj,
        new: Obj,
        *,
        dry_run: bool = False,
        writer: Writer | None = None,
    ) -> Obj:
        """Store a changed object, recording ``writer`` (None: the server's own bookkeeping)."""
        self._prepare(served, new, current)
        meta, cmeta = new["metadata"], current["metadata"]
        if cmeta.get("deletionTimestamp"):
            added = set(meta.get("finalizers") or []) - set(cmeta.get("finalizers") or [])
            if added:
                raise ApiError(
                    422,
                    "Invalid",
                    f'{served.kind} "{cmeta["name"]}" is invalid: metadata.finalizers: Forbidden: '
                    f"no new finalizers can be added if the object is being deleted, found new "
                    f"finalizers {sorted(added)!r}",
                )
        if _spec_of(new, served) != _spec_of(current, served):
            meta["generation"] = int(cmeta.get("generation", 1)) + 1
        if new == current:
            return current  # a no-op write: no new resourceVersion, no event, same managedFields
        if writer is not None:
            _record_manager(new, writer, served)
        if dry_run:
            return new
        stored = self._commit(served, "MODIFIED", new, current)
        if served.key == _CRDS:
            self._register_crd(stored, current)
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self._remove(served, stored)
        return stored

    def _bind(self, served: Served, ns: str | None, name: str, binding: Obj) -> Obj:
        pod = self._require(served, ns, name)
        target = (binding.get("target") or {}).get("name")
        if not target:
            raise ApiError(422, "Invalid", "Binding.target.name is required")
        if pod.get("spec", {}).get("nodeName"):
            raise ApiError(
                409,
                "Conflict",
                f'pod {name} is already assigned to node "{pod["spec"]["nodeName"]}"',
            )
        new = copy.deepcopy(pod)
        new.setdefault("spec", {})["nodeName"] = target
        conditions = new.setdefault("status", {}).setdefault("conditions", [])
        conditions.append(
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now_rfc3339()}
        )
        self._store_update(served, pod, new)
        return {
            "apiVersion": "v1",
            "kind": "Status",
            "metadata": {},
            "status": "Success",
            "code": 201,
        }

    def _delete(
        self,
        served: Served,
        ns: str | None,
        name: str,
        options: Mapping[str, Any],
        params: Mapping[str, str],
        *,
        dry_run: bool = False,
    ) -> Obj:
        current = self._require(served, ns, name)
        meta = current["metadata"]
        preconditions = options.get("preconditions") or {}
        if preconditions.get("uid") not in (None, meta["uid"]):
            raise _conflict(served, name, "the UID in the precondition does not match")
        self._check_version(served, current, preconditions.get("resourceVersion"))
        policy = options.get("propagationPolicy") or params.get("propagationPolicy") or "Background"
        if options.get("orphanDependents") is True:
            policy = "Orphan"
        grace_text = options.get("gracePeriodSeconds", params.get("gracePeriodSeconds"))
        grace = 0
        if served.key == _PODS:
            spec, phase = current.get("spec") or {}, (current.get("status") or {}).get("phase")
            default = spec.get("terminationGracePeriodSeconds", 30)
            grace = int(grace_text) if grace_text is not None else int(default)
            if not spec.get("nodeName") or phase in ("Succeeded", "Failed"):
                grace = 0
        if dry_run:
            return current
        if policy == "Orphan":
            self._orphan_dependents(meta["uid"])
        new = copy.deepcopy(current)
        nmeta = new["metadata"]
        if policy == "Foreground" and self._dependents(meta["uid"]):
            nmeta["finalizers"] = [*(nmeta.get("finalizers") or []), "foregroundDeletion"]
        if grace > 0 or nmeta.get("finalizers"):
            deadline = now_rfc3339(grace)
            if not nmeta.get("deletionTimestamp") or grace < int(
                nmeta.get("deletionGracePeriodSeconds", 0)
            ):
                nmeta["deletionTimestamp"] = deadline
                nmeta["deletionGracePeriodSeconds"] = grace
                nmeta["generation"] = int(nmeta.get("generation", 1)) + 1
            if new == current:
                return current
            # Not `_store_update`: its "no new finalizers" rule does not bind the server itself.
            self._prepare(served, new, current)
            stored = self._commit(served, "MODIFIED", new, current)
            if policy == "Foreground":
                for dependent in self._dependents(meta["uid"]):
                    self._delete_internal(dependent, "Background")
            return stored
        return self._remove(served, current)

    def _remove(self, served: Served, obj: Obj) -> Obj:
        """Really delete: the DELETED event, then what depends on the object."""
        gone = copy.deepcopy(obj)
        self._commit(served, "DELETED", gone, obj)
        meta = gone["metadata"]
        if served.key == _PODS:
            self.pod_logs.pop((meta.get("namespace", ""), meta["name"]), None)
        if served.key == _CRDS:
            self._unregister_crd(gone)
            spec = gone.get("spec") or {}
            plural = (spec.get("names") or {}).get("plural")
            for key, instance in list(self._live()):
                if key[0].group == spec.get("group") and key[0].plural == plural:
                    self._remove(
                        self._served_for(key[0]), instance
                    )  # finalizers are not waited for
        if served.key == _NAMESPACES:
            for key, instance in list(self._live()):
                if key[1] == meta["name"]:
                    self._delete_internal(instance, "Background", key[0])
        for dependent in self._dependents(meta["uid"]):
            owners = [ref.get("uid") for ref in dependent["metadata"].get("ownerReferences", [])]
            if not any(uid in self._uids for uid in owners):
                self._delete_internal(dependent, "Background")
        self._release_foreground_owners(obj)
        return gone

    def _served_for(self, key: kmock.resource) -> Served:
        served = self._resolve(key.group or "", key.version or "", key.plural or "")
        if served is None:  # e.g. the CRD is already unregistered
            return Served(
                key=key,
                api_version=f"{key.group}/{key.version}" if key.group else key.version or "",
                kind="",
                plural=key.plural or "",
                namespaced=True,
                status_subresource=False,
                custom=True,
            )
        return served

    def _delete_internal(self, obj: Obj, policy: str, res: kmock.resource | None = None) -> None:
        meta = obj["metadata"]
        key = res if res is not None else self._uids.get(meta["uid"], (None, None, None))[0]
        if key is None:
            return
        served = self._served_for(key)
        with contextlib.suppress(ApiError):
            self._delete(
                served, meta.get("namespace"), meta["name"], {"propagationPolicy": policy}, {}
            )

    def _dependents(self, uid: str) -> list[Obj]:
        return [
            obj
            for _, obj in self._live()
            if any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences") or [])
        ]

    def _orphan_dependents(self, uid: str) -> None:
        for dependent in self._dependents(uid):
            served = self._served_for(self._uids[dependent["metadata"]["uid"]][0])
            new = copy.deepcopy(dependent)
            refs = [r for r in new["metadata"].get("ownerReferences", []) if r.get("uid") != uid]
            new["metadata"]["ownerReferences"] = refs
            self._store_update(served, dependent, new)

    def _release_foreground_owners(self, obj: Obj) -> None:
        for ref in obj["metadata"].get("ownerReferences") or []:
            key = self._uids.get(ref.get("uid", ""))
            if key is None:
                continue
            owner = self._objects[key].raw
            finalizers = owner["metadata"].get("finalizers") or []
            if "foregroundDeletion" in finalizers and not self._dependents(ref["uid"]):
                new = copy.deepcopy(owner)
                new["metadata"]["finalizers"] = [f for f in finalizers if f != "foregroundDeletion"]
                self._store_update(self._served_for(key[0]), owner, new)

    # --- watching ------------------------------------------------------------------------------

    async def _watch(
        self,
        raw: aiohttp.web.BaseRequest,
        served: Served,
        ns: str | None,
        name: str | None,
        params: Mapping[str, str],
    ) -> aiohttp.web.StreamResponse:
        labels = LabelSelector(params.get("labelSelector"))
        fields = FieldSelector(params.get("fieldSelector"))
        if name is not None:
            fields.requirements.append(("metadata.name", True, name))

        def matches(obj: Obj | None) -> bool:
            if obj is None:
                return False
            obj_ns = obj["metadata"].get("namespace")
            return (ns is None or obj_ns == ns) and labels.matches(obj) and fields.matches(obj)

        timeout = float(params["timeoutSeconds"]) if params.get("timeoutSeconds") else None
        agent = raw.headers.get("User-Agent", "")
        dropped = None if self.faults is None else self.faults.watch_lifetime(agent)
        if dropped is not None:  # injected: this stream is dropped early
            timeout = dropped if timeout is None else min(timeout, dropped)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(raw)

        since = params.get("resourceVersion") or ""
        last_sent = [since]

        async def send(kind: str, obj: Obj) -> None:
            line = json.dumps({"type": kind, "object": obj}) + "\n"
            await response.write(line.encode())
            last_sent[0] = (obj.get("metadata") or {}).get("resourceVersion") or last_sent[0]

        initial = since in ("", "0") or params.get("sendInitialEvents") == "true"
        if initial:
            position = self._rv
            for obj in [o for (res, _, _), o in self._live() if res == served.key and matches(o)]:
                await send("ADDED", self._present(served, obj))
            if params.get("sendInitialEvents") == "true":
                await send(
                    "BOOKMARK",
                    {
                        "apiVersion": served.api_version,
                        "kind": served.kind,
                        "metadata": {
                            "resourceVersion": str(position),
                            "annotations": {"k8s.io/initial-events-end": "true"},
                        },
                    },
                )
        else:
            try:
                position = int(since)
            except ValueError:
                position = -1
            oldest = self._log[0].rv if self._log else self._rv + 1
            stale = self.faults is not None and self.faults.resume_gone(agent, since)
            if stale or position < oldest - 1 or position > self._rv:
                gone = ApiError(410, "Expired", f"too old resource version: {since} ({oldest - 1})")
                await send("ERROR", gone.status())
                return response
        if self._changed is None:
            self._changed = asyncio.Condition()
        changed = self._changed

        def progressed() -> bool:
            return self._rv > position or self._closing

        try:
            while not self._closing:
                first = self._log[0].rv if self._log else self._rv + 1
                if position < first - 1:  # this watcher fell behind the retained history
                    await send(
                        "ERROR", ApiError(410, "Expired", "too old resource version").status()
                    )
                    break
                for event in self._log[position + 1 - first :]:
                    position = event.rv
                    if event.key != served.key:
                        continue
                    now, before = matches(event.obj), matches(event.old)
                    kind = event.type
                    if kind == "MODIFIED" and now != before:
                        kind = "ADDED" if now else "DELETED"
                    if now or (before and kind == "DELETED"):
                        await send(kind, self._present(served, event.obj))
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    if dropped is not None and self.faults is not None:
                        self.faults.note_drop(last_sent[0])
                    break
                if raw.transport is None or raw.transport.is_closing():
                    break
                wait = 1.0 if remaining is None else min(1.0, remaining)
                async with changed:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(changed.wait_for(progressed), wait)
            await response.write_eof()
        except ConnectionError:
            pass  # the client went away
        return response

    async def close(self) -> None:
        """End every watch stream (used when the server stops)."""
        self._closing = True
        await self._notify()

    # --- pods/log ------------------------------------------------------------------------------

    async def _serve_log(
        self,
        raw: aiohttp.web.BaseRequest,
        served: Served,
        ns: str | None,
        name: str,
        params: Mapping[str, str],
    ) -> aiohttp.web.StreamResponse:
        pod = self._require(served, ns, name)
        key = (ns or "", name)
        if key not in self.pod_logs:
            container = ((pod.get("spec") or {}).get("containers") or [{}])[0].get("name", "")
            raise ApiError(
                400,
                "BadRequest",
                f'container "{container}" in pod "{name}" is waiting to start: ContainerCreating',
            )
        if params.get("follow") not in ("true", "1"):
            data = bytes(self.pod_logs.get(key, b""))
            if params.get("tailLines"):
                lines = data.splitlines(keepends=True)
                data = (
                    b"".join(lines[-int(params["tailLines"]) :])
                    if int(params["tailLines"])
                    else b""
                )
            if params.get("limitBytes"):
                data = data[: int(params["limitBytes"])]
            return aiohttp.web.Response(body=data, content_type="text/plain")
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(raw)
        sent = 0
        with contextlib.suppress(ConnectionError):
            while not self._closing:
                buffer = self.pod_logs.get(key)
                if buffer is not None and len(buffer) > sent:
                    await response.write(bytes(buffer[sent:]))
                    sent = len(buffer)
                current = self._get(served, ns, name)
                phase = ((current or {}).get("status") or {}).get("phase")
                if current is None or (
                    phase in ("Succeeded", "Failed") and len(self.pod_logs.get(key, b"")) == sent
                ):
                    break
                await asyncio.sleep(0.05)
            await response.write_eof()
        return response

    # --- tables for kubectl get ----------------------------------------------------------------

    def _table(self, served: Served, items: list[Obj]) -> Obj:
        columns: list[tuple[str, str, str, str]] = [("Name", "string", "name", ".metadata.name")]
        crd = self._crds.get((served.key.group or "", served.plural))
        printer: list[Obj] = []
        for version in (crd or {}).get("spec", {}).get("versions") or []:
            if version["name"] == served.key.version:
                printer = version.get("additionalPrinterColumns") or []
        if served.key == _PODS:
            columns += [
                ("Ready", "string", "", ""),
                ("Status", "string", "", ".status.phase"),
                ("Restarts", "integer", "", ""),
                ("Age", "string", "", ".metadata.creationTimestamp"),
            ]
        elif printer:
            columns += [
                (c["name"], c.get("type", "string"), c.get("format", ""), c["jsonPath"])
                for c in printer
            ]
        else:
            columns.append(("Age", "date", "", ".metadata.creationTimestamp"))
        rows = []
        for obj in items:
            cells: list[Any] = []
            for title, kind, _, path in columns:
                value = jsonpath_get(obj, path) if path else None
                if served.key == _PODS and title == "Ready":
                    statuses = (obj.get("status") or {}).get("containerStatuses") or []
                    total = len((obj.get("spec") or {}).get("containers") or [])
                    value = f"{sum(1 for s in statuses if s.get('ready'))}/{total}"
                elif served.key == _PODS and title == "Restarts":
                    value = sum(
                        s.get("restartCount", 0)
                        for s in (obj.get("status") or {}).get("containerStatuses") or []
                    )
                elif served.key == _PODS and title == "Status":
                    value = _pod_status_word(obj)
                elif kind == "date" or title == "Age":
                    value = _age(value) if value else "<unknown>"
                cells.append(value)
            rows.append(
                {
                    "cells": cells,
                    "object": {
                        "apiVersion": "meta.k8s.io/v1",
                        "kind": "PartialObjectMetadata",
                        "metadata": obj["metadata"],
                    },
                }
            )
        return {
            "apiVersion": "meta.k8s.io/v1",
            "kind": "Table",
            "metadata": {"resourceVersion": str(self._rv)},
            "columnDefinitions": [
                {
                    "name": title,
                    "type": "string" if kind == "date" else kind,
                    "format": fmt,
                    "description": "",
                    "priority": 0,
                }
                for title, kind, fmt, _ in columns
            ],
            "rows": rows,
        }

    # --- helpers for tests and the kubelet -----------------------------------------------------

    def append_log(self, namespace: str, name: str, data: bytes) -> None:
        """Store container output of a pod (the local kubelet does this), served by ``pods/log``."""
        self.pod_logs.setdefault((namespace, name), bytearray()).extend(data)

    def reset_writes(self) -> None:
        self.writes.clear()
        self.kubelet_writes.clear()


_CRDS = kmock.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
_PODS = kmock.resource("", "v1", "pods")
_SECRETS = kmock.resource("", "v1", "secrets")
_NAMESPACES = kmock.resource("", "v1", "namespaces")


def _json(body: Any, status: int = 200) -> aiohttp.web.Response:
    return aiohttp.web.Response(
        text=json.dumps(body), status=status, content_type="application/json"
    )


def _body_object(request: rendering.Request) -> Obj:
    if not isinstance(request.data, dict):
        raise ApiError(400, "BadRequest", "the request body must be a JSON object")
    return request.data


def _field_manager(params: Mapping[str, str], raw: aiohttp.web.BaseRequest) -> str:
    """The manager a write is recorded under: ``fieldManager``, else the User-Agent's product.

    Why: the API server names writers that send no ``fieldManager`` after the
    User-Agent up to its first "/" (``kubectl/v1.35.0 (linux/amd64) ...`` → ``kubectl``,
    the python client's ``OpenAPI-Generator/35.0.0/python`` → ``OpenAPI-Generator``),
    dropping unprintable characters and keeping at most 128 bytes.
    """
    if params.get("fieldManager"):
        return params["fieldManager"]
    manager = ""
    for char in raw.headers.get("User-Agent", "").split("/")[0]:
        if not char.isprintable():
            continue
        if len((manager + char).encode()) > _FIELD_MANAGER_MAX_LENGTH:
            break
        manager += char
    return manager


def _record_manager(obj: Obj, writer: Writer, served: Served) -> None:
    """Set or refresh ``writer``'s ``managedFields`` entry of an object that a write changed.

    Entries are identified like the API server's: manager, operation and subresource,
    plus the apiVersion for ``Update`` (an applier keeps one entry across versions).
    Other writers' entries are kept; the list is sorted as the server sorts it.
    """
    entry = writer.entry(served.api_version)
    meta = obj["metadata"]
    kept = [
        e
        for e in meta.get("managedFields") or []
        if _manager_identity(e) != _manager_identity(entry)
    ]
    meta["managedFields"] = sorted(
        [*kept, entry],
        key=lambda e: (
            e.get("operation", ""),
            e.get("time", ""),  # RFC 3339 in seconds: the text orders like the time
            e.get("manager", ""),
            e.get("subresource", ""),
            e.get("apiVersion", ""),
        ),
    )


def _manager_identity(entry: Mapping[str, Any]) -> tuple[str, str, str, str]:
    operation = entry.get("operation", "")
    api_version = entry.get("apiVersion", "") if operation == "Update" else ""
    return (entry.get("manager", ""), operation, entry.get("subresource", ""), api_version)


def _wants_table(raw: aiohttp.web.BaseRequest) -> bool:
    return "as=Table" in raw.headers.get("Accept", "")


def _qualified(served: Served) -> str:
    return f"{served.plural}.{served.key.group}" if served.key.group else served.plural


def _not_found(served: Served, name: str) -> ApiError:
    return ApiError(
        404,
        "NotFound",
        f'{_qualified(served)} "{name}" not found',
        {"name": name, "group": served.key.group, "kind": served.plural},
    )


def _not_found_url() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource")


def _conflict(served: Served, name: str, why: str = "") -> ApiError:
    message = (
        why
        or "the object has been modified; please apply your changes to the latest version "
        "and try again"
    )
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {_qualified(served)} "{name}": {message}',
        {"name": name, "group": served.key.group, "kind": served.plural},
    )


def _unsupported_patch() -> ApiError:
    return ApiError(
        415,
        "UnsupportedMediaType",
        "the body of the request was in an unknown format - accepted media types include: "
        "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
    )


def _pod_status_word(pod: Obj) -> str:
    """The STATUS column of ``kubectl get pods``: a container's reason beats the phase."""
    if pod["metadata"].get("deletionTimestamp"):
        return "Terminating"
    status = pod.get("status") or {}
    word: str = status.get("reason") or status.get("phase") or "Unknown"
    for container in status.get("containerStatuses") or []:
        state = container.get("state") or {}
        for key in ("waiting", "terminated"):
            if (state.get(key) or {}).get("reason"):
                word = state[key]["reason"]
    return status.get("reason") or word


def _spec_of(obj: Obj, served: Served) -> Obj:
    """What `generation` tracks: everything but metadata (and status, when it is a subresource)."""
    skip = {"metadata", "status"} if served.status_subresource else {"metadata"}
    return {k: v for k, v in obj.items() if k not in skip}


def _qos_class(pod: Obj) -> str:
    containers = (pod.get("spec") or {}).get("containers") or []
    resources = [c.get("resources") or {} for c in containers]
    if not any(r.get("requests") or r.get("limits") for r in resources):
        return "BestEffort"
    guaranteed = all(
        r.get("limits", {}).get(k)
        and r.get("limits", {}).get(k) == r.get("requests", r.get("limits", {})).get(k)
        for r in resources
        for k in ("cpu", "memory")
    )
    return "Guaranteed" if guaranteed else "Burstable"


def _version_priority(version: str) -> tuple[int, int, int]:
    """Kubernetes' version ordering: GA before beta before alpha, higher numbers first."""
    match = re.match(r"^v(\d+)(?:(alpha|beta)(\d+))?$", version)
    if match is None:
        return (3, 0, 0)
    stage = {"": 0, "beta": 1, "alpha": 2}[match[2] or ""]
    return (stage, -int(match[1]), -int(match[3] or 0))


def _age(timestamp: str) -> str:
    try:
        moment = datetime.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=datetime.UTC
        )
    except ValueError:
        return "<invalid>"
    seconds = max(0, int((datetime.datetime.now(datetime.UTC) - moment).total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


class EmulatorServer:
    """Serves an :class:`Emulator` on 127.0.0.1:<ephemeral> from a daemon thread with its own loop.

    Synchronous tests talk to it over HTTP; coroutines that must share the
    emulator's loop (the local kubelet) are scheduled with :meth:`run`/:meth:`submit`.
    kmock's own ``kmock.Server`` is not used because it patches aiohttp's DNS
    resolver process-wide, which would leak into the code under test.
    """

    START_TIMEOUT: ClassVar[float] = 10.0

    def __init__(self, emulator: Emulator | None = None) -> None:
        self.emulator = emulator if emulator is not None else Emulator()
        self.port = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._failure: BaseException | None = None
        self.crashes: list[
            Exception
        ] = []  # internal emulator failures (not API errors), set on stop

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> EmulatorServer:
        self._thread = threading.Thread(target=self._thread_main, name="k8s-emulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(self.START_TIMEOUT) or self._failure is not None:
            raise RuntimeError(f"the Kubernetes emulator did not start: {self._failure!r}")
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.loop is not None and self._stop is not None and self.loop.is_running():
            self.loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout=15)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run a coroutine on the emulator's loop and wait for its result."""
        return self.submit(coro).result(timeout)

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        assert self.loop is not None, "the server is not running"
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to the starting thread
            self._failure = exc
            self._ready.set()

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with self.emulator:
            loop = self.loop

            def request_factory(
                message: Any, payload: Any, protocol: Any, writer: Any, task: Any
            ) -> aiohttp.web.BaseRequest:
                # Accept bodies up to the API server's own limit (aiohttp's default is 1 MiB).
                return aiohttp.web.BaseRequest(
                    message,
                    payload,
                    protocol,
                    writer,
                    task,
                    loop,
                    client_max_size=4 * REQUEST_BODY_LIMIT,
                )

            server = aiohttp.web.Server(
                self.emulator, handler_cancellation=True, request_factory=request_factory
            )
            runner = aiohttp.web.ServerRunner(server, shutdown_timeout=2.0)
            await runner.setup()
            site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.port = runner.addresses[0][1]
            self._ready.set()
            try:
                await self._stop.wait()
            finally:
                await self.emulator.close()
                await runner.cleanup()
                self.crashes = list(self.emulator.errors)

    @property
    def writes(self) -> collections.Counter[tuple[str, str]]:
        """Write requests per (resource[/subresource], verb), excluding the local kubelet's."""
        return self.emulator.writes
