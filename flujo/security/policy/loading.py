"""A policy from a file (YAML or JSON) or from the process's environment.

:func:`load_policy` reads a file, :func:`policy_from_env` the
``FLUJO_SECURITY_*`` variables; every failure is a :class:`PolicyError`
naming the file or variable.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from flujo.security.policy.model import PolicyConfig, PolicyError, PolicyOverrides, Profile

__all__ = [
    "FIELD_ENV_PREFIX",
    "POLICY_ENV",
    "PROFILE_ENV",
    "load_policy",
    "policy_from_env",
]

POLICY_ENV = "FLUJO_SECURITY_POLICY"
"""A policy file (YAML or JSON), or inline JSON when the value starts with ``{``."""
PROFILE_ENV = "FLUJO_SECURITY_PROFILE"
"""``embedded`` or ``cluster``: which defaults a policy starts from."""
FIELD_ENV_PREFIX = "FLUJO_SECURITY_"
"""Single fields: ``FLUJO_SECURITY_REQUIRE_HTTPS=false``, ``…_ALLOWED_HOSTS=a,b``."""


def _first_error(exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in err["loc"])
    return f"{loc}: {err['msg']}" if loc else str(err["msg"])


def _config_from_data(data: Any, source: str) -> PolicyConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise PolicyError(f"{source}: a security policy must be a mapping")
    if not ({"profile", "defaults", "namespaces"} & set(data)):
        data = {"defaults": data}
    try:
        return PolicyConfig.model_validate(data)
    except ValidationError as exc:
        raise PolicyError(f"{source}: {_first_error(exc)}") from None


def load_policy(path: str | Path) -> PolicyConfig:
    """Read a policy file (YAML or JSON); :class:`PolicyError` names the problem."""
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise PolicyError(f"{source}: cannot read: {exc.strerror or exc}") from None
    if len(raw) > 1 << 20:
        raise PolicyError(f"{source}: larger than 1 MiB")
    try:
        data = yaml.safe_load(raw.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PolicyError(f"{source}: not a YAML/JSON document: {first}") from None
    return _config_from_data(data, source)


_FIELD_KINDS: dict[str, str] = {
    name: (
        "list"
        if "list" in str(field.annotation)
        else "bool"
        if "bool" in str(field.annotation)
        else "int"
    )
    for name, field in PolicyOverrides.model_fields.items()
}


def _env_value(name: str, kind: str, raw: str) -> Any:
    text = raw.strip()
    if kind == "list":
        return [part.strip() for part in text.split(",") if part.strip()]
    if kind == "bool":
        lowered = text.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise PolicyError(f"{name} must be true or false, got {raw!r}")
    try:
        return int(text)
    except ValueError:
        raise PolicyError(f"{name} must be an integer, got {raw!r}") from None


def policy_from_env(
    environ: Mapping[str, str] | None = None, *, profile: Profile | None = None
) -> PolicyConfig:
    """The policy a process was configured with through its environment.

    ``FLUJO_SECURITY_PROFILE``, else the file's ``profile``, else ``profile``
    picks the defaults;
    ``FLUJO_SECURITY_POLICY`` names a file (or holds inline JSON); then each
    ``FLUJO_SECURITY_<FIELD>`` variable (``REQUIRE_HTTPS``, ``ALLOWED_HOSTS``
    as a comma-separated list, …) overrides that field for every namespace.
    """
    env = os.environ if environ is None else environ
    source = env.get(POLICY_ENV, "").strip()
    if source.startswith("{"):
        try:
            config = _config_from_data(json.loads(source), POLICY_ENV)
        except json.JSONDecodeError as exc:
            raise PolicyError(f"{POLICY_ENV} is not valid JSON: {exc.msg}") from None
    elif source:
        config = load_policy(source)
    else:
        config = PolicyConfig()
    # The variable wins; then a profile the file names; then the caller's default.
    chosen = env.get(PROFILE_ENV, "").strip() or (
        None if "profile" in config.model_fields_set else profile
    )
    if chosen:
        if chosen not in ("embedded", "cluster"):
            raise PolicyError(f"{PROFILE_ENV} must be embedded or cluster, got {chosen!r}")
        config = config.model_copy(update={"profile": chosen})
    fields: dict[str, Any] = {}
    for name, kind in _FIELD_KINDS.items():
        var = FIELD_ENV_PREFIX + name.upper()
        if var in env:
            fields[name] = _env_value(var, kind, env[var])
    if fields:
        try:
            merged = {**config.defaults.model_dump(exclude_none=True), **fields}
            defaults = PolicyOverrides.model_validate(merged)
        except ValidationError as exc:
            raise PolicyError(f"{FIELD_ENV_PREFIX}*: {_first_error(exc)}") from None
        config = config.model_copy(update={"defaults": defaults})
    return config
