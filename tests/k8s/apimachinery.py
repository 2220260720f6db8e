"""Pure Kubernetes API-machinery rules used by the emulator: patches, selectors, validation.

Why a separate module: these are the parts of the API server's behaviour that a
real operator silently depends on (how a strategic-merge patch merges a list,
that an invalid label value is rejected, that unknown CRD fields are pruned),
and they are easier to read and reason about as small pure functions than
inside the HTTP plumbing of ``emulator.py``. Nothing here does I/O.
"""

from __future__ import annotations

import base64
import copy
import datetime
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = [
    "ANNOTATIONS_MAX_BYTES",
    "ApiError",
    "FieldSelector",
    "LabelSelector",
    "apply_json_patch",
    "decode_protobuf",
    "jsonpath_get",
    "merge_patch",
    "normalize_secret",
    "now_rfc3339",
    "prune",
    "strategic_merge_patch",
    "validate_metadata",
]

Obj = dict[str, Any]

# https://kubernetes.io/docs/concepts/overview/working-with-objects/annotations/#syntax-and-character-set
ANNOTATIONS_MAX_BYTES = 256 * 1024

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


class ApiError(Exception):
    """An API failure rendered as a ``Status`` object with the given HTTP code and reason."""

    def __init__(
        self, code: int, reason: str, message: str, details: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = dict(details or {})

    def status(self) -> Obj:
        """The ``v1 Status`` body, as the API server returns it."""
        body: Obj = {
            "apiVersion": "v1",
            "kind": "Status",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body


def now_rfc3339(offset_seconds: float = 0) -> str:
    """A timestamp in the second-precision RFC 3339 form Kubernetes uses in metadata."""
    moment = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=offset_seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# --- patches -----------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: maps merge recursively, ``null`` deletes, the rest replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result: Obj = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def apply_json_patch(target: Obj, operations: Any) -> Obj:
    """RFC 6902 JSON patch; a failed ``test`` or a bad path is a 422, as in Kubernetes."""
    import jsonpatch  # a dependency of kmock

    if not isinstance(operations, list):
        raise ApiError(400, "BadRequest", "a JSON patch must be a list of operations")
    try:
        result = jsonpatch.apply_patch(target, operations)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
        raise ApiError(422, "Invalid", f"the server rejected our request: {exc}") from exc
    if not isinstance(result, dict):
        raise ApiError(422, "Invalid", "a JSON patch must keep the object a JSON object")
    return result


# Merge keys of the built-in list fields that kubectl patches strategically (patchMergeKey).
# Lists not named here are atomic (replaced), exactly like `merge_patch`.
_MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "conditions": "type",
    "ownerReferences": "uid",
    "hostAliases": "ip",
    "resourceClaims": "name",
    "topologySpreadConstraints": "topologyKey",
}
# Primitive lists with patchStrategy=merge (set union).
_MERGED_PRIMITIVE_LISTS = {"finalizers"}


def _merge_key(field: str, items: Iterable[Any]) -> str | None:
    if field == "ports":  # containers[].ports merge on containerPort, Service ports on port
        return (
            "containerPort"
            if any("containerPort" in i for i in items if isinstance(i, dict))
            else "port"
        )
    return _MERGE_KEYS.get(field)


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """A strategic-merge patch good enough for kubectl's client-side ``apply`` and ``patch``.

    Lists named in ``_MERGE_KEYS`` merge item-by-item on their merge key; the
    ``$patch`` (replace/delete/merge), ``$retainKeys``, ``$setElementOrder/…`` and
    ``$deleteFromPrimitiveList/…`` directives are honoured. Custom resources have
    no Go struct tags, so the API server (and this emulator) reject strategic
    merge for them; see the emulator.
    """
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    result: Obj = copy.deepcopy(target) if isinstance(target, dict) else {}
    retain = patch.get("$retainKeys")
    orders: dict[str, list[Any]] = {}
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys"):
            continue
        if key.startswith("$setElementOrder/"):
            orders[key.split("/", 1)[1]] = value
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            if isinstance(result.get(field), list):
                result[field] = [i for i in result[field] if i not in value]
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list):
            result[key] = _merge_list(key, result.get(key), value)
        elif isinstance(value, dict):
            merged = strategic_merge_patch(result.get(key), value)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        else:
            result[key] = value
    for field, order in orders.items():
        result[field] = _reorder(field, result.get(field), order)
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _merge_list(field: str, current: Any, patch: list[Any]) -> list[Any]:
    old = current if isinstance(current, list) else []
    if field in _MERGED_PRIMITIVE_LISTS:
        return list(old) + [i for i in patch if i not in old]
    key = _merge_key(field, [*old, *patch])
    if key is None or not all(isinstance(i, dict) for i in patch):
        return copy.deepcopy([i for i in patch if not (isinstance(i, dict) and "$patch" in i)])
    if any(isinstance(i, dict) and i.get("$patch") == "replace" for i in patch):
        return copy.deepcopy([i for i in patch if "$patch" not in i])
    merged = copy.deepcopy(old)
    for item in patch:
        index = next(
            (
                n
                for n, o in enumerate(merged)
                if isinstance(o, dict) and o.get(key) == item.get(key)
            ),
            None,
        )
        if item.get("$patch") == "delete":
            if index is not None:
                del merged[index]
        elif index is None:
            merged.append(strategic_merge_patch({}, item))
        else:
            merged[index] = strategic_merge_patch(merged[index], item)
    return merged


def _reorder(field: str, items: Any, order: list[Any]) -> Any:
    if not isinstance(items, list):
        return items
    key = _merge_key(field, items)

    def identity(item: Any) -> Any:
        return item.get(key) if key is not None and isinstance(item, dict) else item

    wanted = [identity(o) for o in order]
    rank = {value: n for n, value in enumerate(wanted) if isinstance(value, str | int)}
    return sorted(items, key=lambda item: rank.get(identity(item), len(rank)))


# --- selectors ---------------------------------------------------------------------------------


def _split_requirements(text: str) -> list[str]:
    """Split on commas that are not inside ``in (a,b)`` parentheses."""
    parts: list[str] = []
    depth = 0
    current = ""
    for char in text:
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


_SET_REQUIREMENT = re.compile(r"^(?P<key>\S+)\s+(?P<op>in|notin)\s*\((?P<values>[^)]*)\)$")
_EQ_REQUIREMENT = re.compile(r"^(?P<key>[^!=\s]+)\s*(?P<op>==|=|!=)\s*(?P<value>\S*)$")


class LabelSelector:
    """A parsed ``labelSelector``: ``a=b``, ``a!=b``, ``a in (x,y)``, ``a notin (x)``, ``a``, ``!a``

    Set-based and equality requirements, comma-separated (an AND), as kubectl ``-l`` takes them.
    """

    def __init__(self, text: str | None) -> None:
        self.requirements: list[Callable[[Mapping[str, str]], bool]] = []
        for part in _split_requirements(text or ""):
            self.requirements.append(self._parse(part))

    @staticmethod
    def _parse(part: str) -> Callable[[Mapping[str, str]], bool]:
        if match := _SET_REQUIREMENT.match(part):
            key = match["key"]
            values = {v.strip() for v in match["values"].split(",") if v.strip()}
            if match["op"] == "in":
                return lambda labels: labels.get(key) in values
            return lambda labels: labels.get(key) not in values
        if match := _EQ_REQUIREMENT.match(part):
            key, value = match["key"], match["value"]
            if match["op"] == "!=":
                return lambda labels: labels.get(key) != value
            return lambda labels: labels.get(key) == value
        if part.startswith("!") and _QUALIFIED_KEY.match(part[1:]):
            return lambda labels: part[1:] not in labels
        if _QUALIFIED_KEY.match(part):
            return lambda labels: part in labels
        raise ApiError(400, "BadRequest", f"unable to parse requirement: {part!r}")

    def matches(self, obj: Mapping[str, Any]) -> bool:
        labels = obj.get("metadata", {}).get("labels") or {}
        return all(requirement(labels) for requirement in self.requirements)


_QUALIFIED_KEY = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?$")


class FieldSelector:
    """A parsed ``fieldSelector``: ``path=value`` / ``path==value`` / ``path!=value`` on any dotted
    field (the real server supports a per-kind subset: metadata.name, metadata.namespace,
    status.phase and spec.nodeName for pods, …; this emulator accepts every field path)."""

    def __init__(self, text: str | None) -> None:
        self.requirements: list[tuple[str, bool, str]] = []
        for part in _split_requirements(text or ""):
            match = _EQ_REQUIREMENT.match(part)
            if match is None:
                raise ApiError(400, "BadRequest", f"invalid field selector: {part!r}")
            self.requirements.append((match["key"], match["op"] != "!=", match["value"]))

    def matches(self, obj: Mapping[str, Any]) -> bool:
        for path, equal, value in self.requirements:
            actual: Any = obj
            for step in path.split("."):
                actual = actual.get(step) if isinstance(actual, Mapping) else None
            actual_text = "" if actual is None else str(actual)
            if (actual_text == value) != equal:
                return False
        return True


# --- validation and defaulting -------------------------------------------------------------------


def _invalid(kind: str, name: str, field: str, message: str) -> ApiError:
    return ApiError(
        422,
        "Invalid",
        f'{kind} "{name}" is invalid: {field}: {message}',
        {"name": name, "kind": kind, "causes": [{"field": field, "message": message}]},
    )


def validate_metadata(obj: Obj, kind: str, *, dns_label_name: bool = False) -> None:
    """The API server's metadata validation: name syntax, label syntax, annotation size."""
    meta = obj.get("metadata") or {}
    name = str(meta.get("name") or "")
    pattern, limit = (_DNS1123_LABEL, 63) if dns_label_name else (_DNS1123_SUBDOMAIN, 253)
    if not name:
        raise _invalid(
            kind, name, "metadata.name", "Required value: name or generateName is required"
        )
    if len(name) > limit or not pattern.match(name):
        raise _invalid(
            kind,
            name,
            "metadata.name",
            f"Invalid value: {name!r}: a lowercase RFC 1123 "
            f"{'label' if dns_label_name else 'subdomain'} must consist of lower case "
            "alphanumeric characters, '-' or '.', and must start and end with an alphanumeric "
            f"character (at most {limit} characters)",
        )
    for key, value in (meta.get("labels") or {}).items():
        _validate_qualified_key(kind, name, "metadata.labels", key)
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            raise _invalid(
                kind,
                name,
                "metadata.labels",
                f"Invalid value: {value!r}: a valid label must be an empty string or consist of "
                "alphanumeric characters, '-', '_' or '.', and must start and end with an "
                "alphanumeric character (at most 63 characters)",
            )
    annotations = meta.get("annotations") or {}
    total = 0
    for key, value in annotations.items():
        _validate_qualified_key(kind, name, "metadata.annotations", key)
        if not isinstance(value, str):
            raise _invalid(kind, name, "metadata.annotations", f"Invalid value for {key!r}")
        total += len(key.encode()) + len(value.encode())
    if total > ANNOTATIONS_MAX_BYTES:
        raise _invalid(
            kind,
            name,
            "metadata.annotations",
            f"Too long: must have at most {ANNOTATIONS_MAX_BYTES} bytes",
        )


def _validate_qualified_key(kind: str, name: str, field: str, key: str) -> None:
    prefix, _, local = key.rpartition("/")
    ok = bool(local) and len(local) <= 63 and _QUALIFIED_NAME.match(local) is not None
    if prefix:
        ok = ok and len(prefix) <= 253 and _DNS1123_SUBDOMAIN.match(prefix) is not None
    if not ok:
        raise _invalid(kind, name, field, f"Invalid value: {key!r}: not a qualified name")


def normalize_secret(obj: Obj) -> None:
    """Fold ``stringData`` into base64 ``data``, as the API server does on every Secret write."""
    string_data = obj.pop("stringData", None) or {}
    if string_data:
        data = obj.setdefault("data", {})
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()


def prune(value: Any, schema: Mapping[str, Any] | None, *, root: bool = False) -> Any:
    """Drop fields a structural CRD schema does not declare (the API server's pruning).

    ``x-kubernetes-preserve-unknown-fields`` and ``additionalProperties`` keep
    unknown fields; ``apiVersion``/``kind``/``metadata`` are always kept at the root.
    """
    if not schema:
        return value
    if isinstance(value, dict):
        props: Mapping[str, Any] = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        keep_unknown = bool(schema.get("x-kubernetes-preserve-unknown-fields")) or extra is True
        result: Obj = {}
        for key, item in value.items():
            if root and key in ("apiVersion", "kind", "metadata"):
                result[key] = item
            elif key in props:
                result[key] = prune(item, props[key])
            elif isinstance(extra, dict):
                result[key] = prune(item, extra)
            elif keep_unknown or (not props and extra is None and schema.get("type") != "object"):
                result[key] = item
        return result
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [prune(item, schema["items"]) for item in value]
    return value


# --- JSONPath (the subset used by printer columns) ----------------------------------------------

_JSONPATH_STEP = re.compile(r"\.([A-Za-z0-9_\-$]+)|\[(\d+)\]|\['([^']*)'\]|\[\"([^\"]*)\"\]")


def jsonpath_get(obj: Any, path: str) -> Any:
    """Evaluate the simple JSONPaths printer columns use.

    E.g. ``.status.phase``, ``.spec.items[0]``, ``.metadata.labels['a']``; no filters or wildcards.
    """
    value = obj
    for match in _JSONPATH_STEP.finditer(path.strip().lstrip("$")):
        field, index, quoted, dquoted = match.groups()
        if index is not None:
            value = (
                value[int(index)] if isinstance(value, list) and int(index) < len(value) else None
            )
        else:
            key = field if field is not None else quoted if quoted is not None else dquoted
            value = value.get(key) if isinstance(value, dict) else None
        if value is None:
            return None
    return value


# --- protobuf bodies (kubectl's typed commands send them) ---------------------------------------
#
# `kubectl create secret|configmap|namespace` encode built-in objects as protobuf
# (client-go's typed clientset default) and never fall back to JSON. Decoding just
# those kinds keeps such commands usable; other protobuf bodies are refused (415).

_META_FIELDS: dict[int, tuple[str, str]] = {
    1: ("name", "string"),
    2: ("generateName", "string"),
    3: ("namespace", "string"),
    11: ("labels", "map:string"),
    12: ("annotations", "map:string"),
    14: ("finalizers", "list:string"),
}
_PROTOBUF_KINDS: dict[str, dict[int, tuple[str, str]]] = {
    "Secret": {
        1: ("metadata", "meta"),
        2: ("data", "map:bytes"),
        3: ("type", "string"),
        4: ("stringData", "map:string"),
        5: ("immutable", "bool"),
    },
    "ConfigMap": {
        1: ("metadata", "meta"),
        2: ("data", "map:string"),
        3: ("binaryData", "map:bytes"),
        4: ("immutable", "bool"),
    },
    "Namespace": {1: ("metadata", "meta")},
}


def _protobuf_fields(data: bytes) -> Iterable[tuple[int, int | bytes]]:
    position = 0

    def varint() -> int:
        nonlocal position
        value = shift = 0
        while True:
            byte = data[position]
            position += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    while position < len(data):
        tag = varint()
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            yield number, varint()
        elif wire == 2:
            size = varint()
            yield number, data[position : position + size]
            position += size
        elif wire in (1, 5):
            position += 8 if wire == 1 else 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")


def _protobuf_message(data: bytes, schema: Mapping[int, tuple[str, str]]) -> Obj:
    result: Obj = {}
    for number, value in _protobuf_fields(data):
        if number not in schema:
            continue
        name, kind = schema[number]
        if kind == "bool":
            result[name] = bool(value)
        elif isinstance(value, int):
            continue
        elif kind == "string":
            result[name] = value.decode()
        elif kind == "meta":
            result[name] = _protobuf_message(value, _META_FIELDS)
        elif kind == "list:string":
            result.setdefault(name, []).append(value.decode())
        elif kind.startswith("map:"):
            entry = dict(_protobuf_fields(value))
            key, item = entry.get(1, b""), entry.get(2, b"")
            assert isinstance(key, bytes) and isinstance(item, bytes)
            decoded = base64.b64encode(item).decode() if kind == "map:bytes" else item.decode()
            result.setdefault(name, {})[key.decode()] = decoded
    return result


def decode_protobuf(body: bytes) -> Obj:
    """Decode a ``application/vnd.kubernetes.protobuf`` body of a Secret, ConfigMap or Namespace."""
    if not body.startswith(b"k8s\x00"):
        raise ApiError(400, "BadRequest", "a protobuf body must start with the k8s magic number")
    envelope = dict(_protobuf_fields(body[4:]))
    type_meta, raw = envelope.get(1, b""), envelope.get(2, b"")
    assert isinstance(type_meta, bytes) and isinstance(raw, bytes)
    type_fields = dict(_protobuf_fields(type_meta))
    api_version, kind = (
        v.decode() if isinstance(v, bytes) else ""
        for v in (type_fields.get(1, b""), type_fields.get(2, b""))
    )
    if kind not in _PROTOBUF_KINDS:
        raise ApiError(
            415,
            "UnsupportedMediaType",
            f"this emulator decodes protobuf only for {sorted(_PROTOBUF_KINDS)}, not {kind!r}; "
            "send JSON (e.g. kubectl apply -f) instead",
        )
    return {
        "apiVersion": api_version,
        "kind": kind,
        **_protobuf_message(raw, _PROTOBUF_KINDS[kind]),
    }
