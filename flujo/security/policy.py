"""The security policy: what pipelines and agents are allowed to do.

Why a policy at all: a pipeline file is code written by someone who may not
be trusted with the machine that runs it (a teammate's pull request, a
tenant of a shared cluster).  The schema bounds what is *expressible*; the
policy bounds what is *allowed here*, and is set by whoever operates the
runtime — the developer for ``flujo run``, the cluster administrator for the
operator.  One model serves both, with two sets of defaults
(:meth:`SecurityPolicy.embedded`, :meth:`SecurityPolicy.cluster`).

What it decides, and where:

- at **validation** (``flujo validate``, ``Flujo(...)``, the operator's
  admission of Pipelines and runs): agent types, Python callables, endpoint
  URLs checked *statically* (scheme, host globs, literal addresses, cloud
  metadata names), credential file locations, and the bounds on retries,
  loop iterations, parallel branches and map items —
  :func:`check_pipeline_policy`, :func:`check_agent_policy`;
- when a remote agent is **built**: the endpoint again, this time with its
  host *resolved* (``socket.getaddrinfo``) so a name pointing at a metadata,
  loopback or private address is refused — :func:`endpoint_problems`, called
  by :mod:`flujo.agents.transport` under the policy made active with
  :func:`use_policy`;
- on **data**: the run's input and every agent's output against size caps,
  and text against UTF-8 validity — :func:`check_input`, :func:`check_output`,
  :class:`OutputGuard`.

Known limit (documented in ``docs/security.md``): a name is resolved when
the agent is built and again, independently, when the HTTP client connects.
A DNS server that answers differently the second time (DNS rebinding) is not
stopped here; in the cluster the chart's egress NetworkPolicy is the control
that holds regardless of DNS.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
import os
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator

from flujo.domain.agent import Agent, AgentContext, AgentOutput
from flujo.domain.errors import PERMANENT, AgentError
from flujo.domain.templates import TemplateProblem, private_attributes
from flujo.domain.validation import Finding, Loc, agent_references, walk_steps
from flujo.spec.agent import AGENT_TYPES, AgentSpec, CredentialSpec
from flujo.spec.base import SpecModel
from flujo.spec.loader import format_loc
from flujo.spec.pipeline import PipelineSpec, StepSpec

__all__ = [
    "ALWAYS_DENIED_NETWORKS",
    "METADATA_HOSTS",
    "POLICY_ENV",
    "PROFILE_ENV",
    "PolicyConfig",
    "PolicyError",
    "PolicyOverrides",
    "PolicyViolation",
    "Resolver",
    "SecurityPolicy",
    "active_policy",
    "agent_policy_findings",
    "check_agent_policy",
    "check_input",
    "check_output",
    "check_pipeline_policy",
    "credential_file_problems",
    "endpoint_problems",
    "enforce_input",
    "load_policy",
    "parse_input",
    "policy_from_env",
    "use_policy",
]

Profile = Literal["embedded", "cluster"]
POLICY_ENV = "FLUJO_SECURITY_POLICY"
"""A policy file (YAML or JSON), or inline JSON when the value starts with ``{``."""
PROFILE_ENV = "FLUJO_SECURITY_PROFILE"
"""``embedded`` or ``cluster``: which defaults a policy starts from."""
FIELD_ENV_PREFIX = "FLUJO_SECURITY_"
"""Single fields: ``FLUJO_SECURITY_REQUIRE_HTTPS=false``, ``…_ALLOWED_HOSTS=a,b``."""
MAX_DATA_DEPTH = 100
"""Nesting of input and output values (JSON arrays and objects)."""

METADATA_HOSTS = frozenset(
    {
        "metadata.google.internal",
        "metadata.goog",
        "metadata",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.azure.internal",
        "metadata.tencentyun.com",
        "metadata.platformequinix.com",
    }
)
"""Names of cloud instance-metadata services; always refused."""


def _networks(*cidrs: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


ALWAYS_DENIED_NETWORKS = _networks(
    "169.254.0.0/16",  # IPv4 link-local: AWS, GCP, Azure, OCI metadata at .169.254
    "fe80::/10",  # IPv6 link-local
    "fd00:ec2::254/128",  # AWS metadata over IPv6
    "100.100.100.200/32",  # Alibaba Cloud metadata
    "0.0.0.0/8",  # "this host": 0.0.0.0 reaches local services on Linux
    "::/128",  # unspecified
    "224.0.0.0/4",  # multicast
    "ff00::/8",
    "240.0.0.0/4",  # reserved, broadcast
)
"""Addresses no agent endpoint may reach, whatever the policy says."""

LOOPBACK_NETWORKS = _networks("127.0.0.0/8", "::1/128")
PRIVATE_NETWORKS = _networks(
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",  # carrier-grade NAT, used by some cluster networks
    "198.18.0.0/15",
    "fc00::/7",  # unique local
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]
"""``(host, port) -> addresses``; the default uses :func:`socket.getaddrinfo`."""


class PolicyError(ValueError):
    """A policy file or variable is malformed; the message names it."""


class PolicyViolation(ValueError):
    """Data or configuration refused by the policy; the message is one line."""


# --- the model ---------------------------------------------------------------


def _valid_types(value: list[str] | None) -> list[str] | None:
    for item in value or []:
        if item not in AGENT_TYPES:
            raise ValueError(f"unknown agent type {item!r} (known: {', '.join(AGENT_TYPES)})")
    return value


def _valid_cidrs(value: list[str] | None) -> list[str] | None:
    for item in value or []:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"{item!r} is not a network (CIDR)") from None
    return value


class SecurityPolicy(SpecModel):
    """What pipelines and agents may do. Field defaults are the *embedded* profile.

    See ``docs/security.md`` for every field with both profiles' defaults.
    """

    _types = field_validator("allowed_agent_types")(_valid_types)
    _cidrs = field_validator("allowed_cidrs")(_valid_cidrs)

    allowed_agent_types: list[str] = Field(
        default_factory=lambda: list(AGENT_TYPES),
        description="Agent types that may be used (openai, http, builtin, scripted).",
    )
    allow_python_callables: bool = Field(
        True, description="Agents registered from Python code (embedded only)."
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Endpoint host globs (api.openai.com, *.svc.cluster.local). Empty: any "
        "host. A host named here may resolve to private addresses.",
    )
    allowed_cidrs: list[str] = Field(
        default_factory=list,
        description="Networks endpoints may resolve into, trusted even when private.",
    )
    denied_hosts: list[str] = Field(
        default_factory=list, description="Endpoint host globs always refused."
    )
    require_https: bool = Field(True, description="Endpoints must use https.")
    allow_http_loopback: bool = Field(
        True, description="With requireHttps, still allow http to loopback (local servers)."
    )
    allow_loopback: bool = Field(True, description="Endpoints may reach 127.0.0.0/8 and ::1.")
    allow_private_networks: bool = Field(
        True, description="Endpoints may reach RFC 1918, CGNAT and unique-local addresses."
    )
    resolve_hosts: bool = Field(
        True, description="Resolve endpoint names when an agent is built, to check addresses."
    )
    allow_credential_files: bool = Field(
        True, description="Credentials may come from files (apiKey.file, valueFrom.file)."
    )
    credential_dirs: list[str] = Field(
        default_factory=list,
        description="Directories credential files must be inside. Empty: anywhere.",
    )
    max_attempts: int = Field(10, ge=1, description="Cap on retry.maxAttempts.")
    max_loop_iterations: int = Field(10_000, ge=1, description="Cap on loop.maxIterations.")
    max_parallel_branches: int = Field(64, ge=1, description="Cap on branches of a parallel.")
    max_map_items: int = Field(10_000, ge=1, description="Cap on map.maxItems.")
    max_input_bytes: int = Field(1 << 20, ge=0, description="Largest run input (UTF-8 bytes).")
    max_output_bytes: int = Field(
        16 << 20, ge=0, description="Largest output of one agent call (UTF-8 bytes)."
    )

    @classmethod
    def embedded(cls, **changes: Any) -> SecurityPolicy:
        """The defaults of ``flujo run`` and ``Flujo(...)``: a developer's own machine."""
        return cls.model_validate(changes)

    @classmethod
    def cluster(cls, **changes: Any) -> SecurityPolicy:
        """The operator's defaults: many tenants, pods next to cloud metadata."""
        base = {
            "allow_python_callables": False,
            "allow_http_loopback": False,
            "allow_loopback": False,
            "allow_private_networks": False,
            "allow_credential_files": False,
            "denied_hosts": [
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.*",
            ],
            "max_attempts": 10,
            "max_loop_iterations": 1000,
            "max_parallel_branches": 32,
            "max_map_items": 1000,
            "max_output_bytes": 1 << 20,
        }
        return cls.model_validate({**base, **changes})

    @classmethod
    def for_profile(cls, profile: Profile) -> SecurityPolicy:
        return cls.cluster() if profile == "cluster" else cls.embedded()

    def merged(self, overrides: PolicyOverrides | None) -> SecurityPolicy:
        """This policy with every field ``overrides`` sets replaced (lists replace, not add)."""
        if overrides is None:
            return self
        changes = overrides.model_dump(exclude_none=True)
        return self.model_validate({**self.model_dump(), **changes})


class PolicyOverrides(SpecModel):
    """Some fields of a :class:`SecurityPolicy`; unset fields inherit."""

    _types = field_validator("allowed_agent_types")(_valid_types)
    _cidrs = field_validator("allowed_cidrs")(_valid_cidrs)

    allowed_agent_types: list[str] | None = None
    allow_python_callables: bool | None = None
    allowed_hosts: list[str] | None = None
    allowed_cidrs: list[str] | None = None
    denied_hosts: list[str] | None = None
    require_https: bool | None = None
    allow_http_loopback: bool | None = None
    allow_loopback: bool | None = None
    allow_private_networks: bool | None = None
    resolve_hosts: bool | None = None
    allow_credential_files: bool | None = None
    credential_dirs: list[str] | None = None
    max_attempts: int | None = Field(None, ge=1)
    max_loop_iterations: int | None = Field(None, ge=1)
    max_parallel_branches: int | None = Field(None, ge=1)
    max_map_items: int | None = Field(None, ge=1)
    max_input_bytes: int | None = Field(None, ge=0)
    max_output_bytes: int | None = Field(None, ge=0)


class PolicyConfig(SpecModel):
    """A policy file: a profile, defaults over it, and per-namespace overrides.

    ::

        profile: cluster            # embedded (default) or cluster
        defaults:                   # every namespace (or the whole process)
          allowedHosts: ["api.openai.com", "*.svc.cluster.local"]
        namespaces:
          research:
            maxLoopIterations: 5000

    A file holding only policy fields is read as ``defaults``.
    """

    profile: Profile = "embedded"
    defaults: PolicyOverrides = Field(default_factory=PolicyOverrides)
    namespaces: dict[str, PolicyOverrides] = Field(default_factory=dict)

    def policy(self, namespace: str | None = None) -> SecurityPolicy:
        """Profile defaults, then ``defaults``, then the namespace's overrides, field by field."""
        base = SecurityPolicy.for_profile(self.profile).merged(self.defaults)
        if namespace is not None:
            base = base.merged(self.namespaces.get(namespace))
        return base


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


# --- the active policy --------------------------------------------------------

_active: ContextVar[SecurityPolicy | None] = ContextVar("flujo_security_policy", default=None)


def active_policy() -> SecurityPolicy | None:
    """The policy agents are built under, or None (no checks) when none is active."""
    return _active.get()


@contextmanager
def use_policy(policy: SecurityPolicy | None) -> Iterator[SecurityPolicy | None]:
    """Make ``policy`` the one agents are built under, for this context and its tasks.

    A context variable rather than a parameter threaded through the registry:
    asyncio copies it into every task a run creates, and concurrent runs
    with different policies (the operator's namespaces) never see each
    other's.
    """
    token = _active.set(policy)
    try:
        yield policy
    finally:
        _active.reset(token)


# --- endpoints ----------------------------------------------------------------


def _host_matches(host: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(host, p.lower().rstrip(".")) for p in patterns)


def _literal_address(host: str) -> IPAddress | None:
    """``host`` as an address, accepting the forms C resolvers accept (``2852039166``)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if host and all(c in "0123456789abcdefx." for c in host) and host[0].isdigit():
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _embedded_v4(address: IPAddress) -> list[IPAddress]:
    """The address and any IPv4 address it carries (mapped, 6to4, Teredo, NAT64)."""
    found: list[IPAddress] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            found.append(address.ipv4_mapped)
        if address.sixtofour is not None:
            found.append(address.sixtofour)
        if address.teredo is not None:
            found.append(address.teredo[1])
        if address in _NAT64:
            found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def _in(address: IPAddress, networks: Sequence[Any]) -> bool:
    return any(address.version == n.version and address in n for n in networks)


def _allowed_networks(policy: SecurityPolicy) -> list[Any]:
    out = []
    for cidr in policy.allowed_cidrs:
        try:
            out.append(ipaddress.ip_network(cidr, strict=False))
        except ValueError:
            continue  # reported by check_agent_policy's config check
    return out


def _address_problem(
    address: IPAddress, policy: SecurityPolicy, named: bool, host: str
) -> str | None:
    """Why ``address`` may not be reached, or None. ``named``: the host is in allowedHosts."""
    candidates = _embedded_v4(address)
    shown = f"{host} ({address})" if host != str(address) else str(address)
    if any(_in(a, ALWAYS_DENIED_NETWORKS) for a in candidates):
        return f"{shown} is a link-local, metadata or reserved address; always refused"
    if named or any(_in(a, _allowed_networks(policy)) for a in candidates):
        return None
    if any(_in(a, LOOPBACK_NETWORKS) for a in candidates) and not policy.allow_loopback:
        return f"{shown} is a loopback address; the policy sets allowLoopback: false"
    if any(_in(a, PRIVATE_NETWORKS) for a in candidates) and not policy.allow_private_networks:
        return (
            f"{shown} is a private address; the policy sets allowPrivateNetworks: false "
            "(name the host in allowedHosts or its network in allowedCidrs)"
        )
    return None


def _system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def _split_url(url: str) -> tuple[str, str, int, bool] | str:
    """(scheme, host, port, has_userinfo), or a problem."""
    import httpx  # the client's own parser: checks see the host it will connect to

    try:
        parsed = httpx.URL(url)
    except Exception:
        return "is not a valid URL"
    if parsed.scheme not in ("http", "https") or not parsed.host:
        return "is not an absolute http(s) URL"
    host = parsed.host.lower().rstrip(".")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return parsed.scheme, host, port, bool(parsed.userinfo)


def endpoint_problems(
    url: str,
    policy: SecurityPolicy,
    *,
    resolve: bool | None = None,
    resolver: Resolver | None = None,
) -> list[str]:
    """Why ``url`` may not be an agent endpoint under ``policy``; empty when it may.

    ``resolve`` (default: the policy's ``resolveHosts``) looks host names up;
    without it only literal addresses, ``localhost`` and metadata names are
    classified.  Messages name the host, never the path, query or user info.
    """
    split = _split_url(url)
    if isinstance(split, str):
        return [f"endpoint {split}"]
    scheme, host, port, userinfo = split
    problems: list[str] = []
    if userinfo:
        problems.append("endpoint embeds credentials (user:password@); use apiKey or secretHeaders")
    if host in METADATA_HOSTS:
        return [*problems, f"{host} is a cloud metadata service; always refused"]
    if _host_matches(host, policy.denied_hosts):
        return [*problems, f"host {host} is in the policy's deniedHosts"]
    named = _host_matches(host, policy.allowed_hosts)
    literal = _literal_address(host)
    addresses: list[IPAddress] = []
    if literal is not None:
        addresses = [literal]
    elif host == "localhost" or host.endswith(".localhost"):
        addresses = [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    if (resolve if resolve is not None else policy.resolve_hosts) and literal is None:
        try:
            found = (resolver or _system_resolver)(host, port)
        except (OSError, UnicodeError) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            return [
                *problems,
                f"cannot resolve {host} to check it against the security policy ({reason})",
            ]
        addresses = [ipaddress.ip_address(a.split("%")[0]) for a in found] or addresses
    if (policy.allowed_hosts or policy.allowed_cidrs) and not named:
        networks = _allowed_networks(policy)
        inside = bool(addresses) and all(
            any(_in(a, networks) for a in _embedded_v4(x)) for x in addresses
        )
        if not inside and (addresses or not policy.allowed_cidrs):
            lists = " or ".join(
                n
                for n, v in (("allowedHosts", policy.allowed_hosts), ("allowedCidrs", networks))
                if v
            )
            return [*problems, f"host {host} is not in the policy's {lists}"]
    for address in addresses:
        problem = _address_problem(address, policy, named, host)
        if problem is not None:
            problems.append(problem)
            break
    loopback = bool(addresses) and all(
        any(_in(a, LOOPBACK_NETWORKS) for a in _embedded_v4(x)) for x in addresses
    )
    if scheme == "http" and policy.require_https and not (policy.allow_http_loopback and loopback):
        where = "to loopback only" if policy.allow_http_loopback else "nowhere"
        problems.append(f"http is not allowed (requireHttps: true; http {where}); use https")
    return problems


def _dirs_problem(path: str, policy: SecurityPolicy) -> str | None:
    if not policy.allow_credential_files:
        return "credential files are not allowed by the security policy (use env or secretKeyRef)"
    if not policy.credential_dirs:
        return None
    real = Path(os.path.realpath(path))
    for directory in policy.credential_dirs:
        root = Path(os.path.realpath(directory))
        if real == root or root in real.parents:
            return None
    return f"{path!r} is outside the policy's credentialDirs ({', '.join(policy.credential_dirs)})"


def _credentials(spec: AgentSpec) -> Iterator[tuple[Loc, CredentialSpec]]:
    if spec.api_key is not None:
        yield ("spec", "apiKey"), spec.api_key
    for i, header in enumerate(spec.secret_headers):
        yield ("spec", "secretHeaders", i, "valueFrom"), header.value_from


def credential_file_problems(spec: AgentSpec, policy: SecurityPolicy) -> list[tuple[Loc, str]]:
    """Credential files of ``spec`` the policy refuses (symlinks resolved now)."""
    out = []
    for loc, cred in _credentials(spec):
        if cred.file:
            problem = _dirs_problem(cred.file, policy)
            if problem is not None:
                out.append(((*loc, "file"), problem))
    return out


def agent_policy_findings(
    spec: AgentSpec, policy: SecurityPolicy, *, resolve: bool = False
) -> list[Finding]:
    """Problems of one Agent manifest, located in it (``spec.endpoint``)."""
    found: list[Finding] = []
    if spec.type not in policy.allowed_agent_types:
        allowed = ", ".join(policy.allowed_agent_types) or "none"
        found.append(
            Finding(
                ("spec", "type"),
                f"agent type {spec.type!r} is not allowed by the security policy "
                f"(allowed: {allowed})",
            )
        )
    if spec.type in ("openai", "http") and spec.endpoint and "${" not in spec.endpoint:
        problems = endpoint_problems(spec.endpoint, policy, resolve=resolve)
        if problems:
            found.append(Finding(("spec", "endpoint"), "; ".join(problems)))
    if spec.retry is not None and spec.retry.max_attempts > policy.max_attempts:
        found.append(
            Finding(
                ("spec", "retry", "maxAttempts"),
                f"{spec.retry.max_attempts} exceeds the security policy's maxAttempts "
                f"({policy.max_attempts})",
            )
        )
    found += [Finding(loc, msg) for loc, msg in credential_file_problems(spec, policy)]
    return found


def check_agent_policy(name: str, spec: AgentSpec, policy: SecurityPolicy) -> list[str]:
    """One-line problems of agent ``name``, each starting with its field path."""
    return [f"{format_loc(f.loc)}: {f.message}" for f in agent_policy_findings(spec, policy)]


# --- pipelines ----------------------------------------------------------------


def _step_templates(step: StepSpec, loc: Loc) -> Iterator[tuple[Any, bool, Loc]]:
    if step.input is not None:
        yield step.input, False, (*loc, "input")
    if step.loop is not None and step.loop.exit_when:
        yield step.loop.exit_when, True, (*loc, "loop", "exitWhen")
    if step.conditional is not None:
        yield step.conditional.condition, True, (*loc, "conditional", "condition")
    if step.map is not None:
        yield step.map.items, True, (*loc, "map", "items")


def _over(value: int, cap: int, field: str) -> str:
    return f"{value} exceeds the security policy's {field} ({cap})"


def check_pipeline_policy(
    spec: PipelineSpec,
    agents: Mapping[str, AgentSpec | None],
    policy: SecurityPolicy,
) -> list[Finding]:
    """Everything in a pipeline the policy refuses, located like validation findings.

    ``agents`` maps the names the registry knows to their manifests; ``None``
    is a built-in preset (``builtin.*``) or an agent registered from Python
    code.  Names missing from ``agents`` are left to ``check_agents``.
    Each agent's own problems are reported once, at its first reference.
    """
    found: list[Finding] = []
    for step, loc, _ in walk_steps(spec.steps):
        if step.loop is not None and step.loop.max_iterations > policy.max_loop_iterations:
            found.append(
                Finding(
                    (*loc, "loop", "maxIterations"),
                    _over(
                        step.loop.max_iterations, policy.max_loop_iterations, "maxLoopIterations"
                    ),
                )
            )
        if step.parallel is not None and len(step.parallel.branches) > policy.max_parallel_branches:
            found.append(
                Finding(
                    (*loc, "parallel", "branches"),
                    f"{len(step.parallel.branches)} branches exceed the security policy's "
                    f"maxParallelBranches ({policy.max_parallel_branches})",
                )
            )
        if step.map is not None and step.map.max_items > policy.max_map_items:
            found.append(
                Finding(
                    (*loc, "map", "maxItems"),
                    _over(step.map.max_items, policy.max_map_items, "maxMapItems"),
                )
            )
        if step.retry is not None and step.retry.max_attempts > policy.max_attempts:
            found.append(
                Finding(
                    (*loc, "retry", "maxAttempts"),
                    _over(step.retry.max_attempts, policy.max_attempts, "maxAttempts"),
                )
            )
        for source, expression, at in _step_templates(step, loc):
            try:
                private = private_attributes(source, expression)
            except TemplateProblem:
                continue  # reported by check_pipeline
            if private:
                names = ", ".join(repr(a) for a in sorted(private))
                plural = "s" if len(private) > 1 else ""
                found.append(
                    Finding(at, f"template reads private attribute{plural} {names}; refused")
                )
    seen: set[str] = set()
    for name, loc in agent_references(spec):
        if name in seen or name not in agents:
            continue
        seen.add(name)
        agent = agents[name]
        if agent is None:
            kind = "builtin" if name.startswith("builtin.") else "python"
            if kind == "builtin" and "builtin" not in policy.allowed_agent_types:
                found.append(Finding(loc, f"agent {name!r}: builtin agents are not allowed"))
            elif kind == "python" and not policy.allow_python_callables:
                found.append(
                    Finding(
                        loc,
                        f"agent {name!r} is Python code; the security policy sets "
                        "allowPythonCallables: false",
                    )
                )
            continue
        for problem in check_agent_policy(name, agent, policy):
            found.append(Finding(loc, f"agent {name!r}: {problem}"))
    return found


# --- data ---------------------------------------------------------------------


def _data_problem(value: Any, limit: int, what: str) -> str | None:
    """Size (UTF-8 bytes, as JSON would carry it), UTF-8 validity and nesting of ``value``."""
    total = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DATA_DEPTH:
            return f"{what} is nested deeper than {MAX_DATA_DEPTH} levels"
        if isinstance(item, str):
            try:
                total += len(item.encode("utf-8")) + 2
            except UnicodeEncodeError as exc:
                return f"{what} is not valid UTF-8 text (invalid character at index {exc.start})"
        elif item is None or isinstance(item, bool | int | float):
            total += len(repr(item)) if isinstance(item, int | float) else 5
        elif isinstance(item, bytes | bytearray):
            total += len(item)
        elif isinstance(item, Mapping):
            total += 2
            for key, val in item.items():
                stack.append((key, depth + 1))
                stack.append((val, depth + 1))
        elif isinstance(item, list | tuple | set | frozenset):
            total += 2 + len(item)
            stack.extend((v, depth + 1) for v in item)
        else:
            total += len(repr(item))
        if total > limit:
            return f"{what} is larger than the security policy's limit of {limit} bytes"
    return None


def check_input(data: Any, policy: SecurityPolicy) -> list[str]:
    """Problems of a run's input: size over ``maxInputBytes``, invalid UTF-8, deep nesting."""
    problem = _data_problem(data, policy.max_input_bytes, "input")
    return [problem] if problem else []


def check_output(data: Any, policy: SecurityPolicy, *, what: str = "output") -> list[str]:
    """Problems of one agent output: size over ``maxOutputBytes``, invalid UTF-8, nesting."""
    problem = _data_problem(data, policy.max_output_bytes, what)
    return [problem] if problem else []


def enforce_input(data: Any, policy: SecurityPolicy) -> None:
    """Raise :class:`PolicyViolation` if the input is refused."""
    problems = check_input(data, policy)
    if problems:
        raise PolicyViolation(problems[0])


def parse_input(
    raw: bytes | str, policy: SecurityPolicy, *, as_json: bool = False, source: str = "input"
) -> Any:
    """Decode a run input the way the CLI reads it, every failure one line.

    Size is checked before decoding, bytes must be UTF-8, JSON is parsed
    without letting deep nesting reach Python's recursion limit.
    """
    size = len(raw) if isinstance(raw, bytes) else len(raw.encode("utf-8", "surrogatepass"))
    if size > policy.max_input_bytes:
        raise PolicyViolation(f"{source}: larger than {policy.max_input_bytes} bytes")
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PolicyViolation(f"{source}: not UTF-8 (byte {exc.start})") from None
    else:
        text = raw
    if not as_json:
        problems = check_input(text, policy)
        if problems:
            raise PolicyViolation(f"{source}: {problems[0]}")
        return text
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PolicyViolation(f"{source} is not JSON: {exc.msg} at {exc.pos}") from None
    except RecursionError:
        raise PolicyViolation(f"{source}: JSON nested too deeply") from None
    problems = check_input(value, policy)
    if problems:
        raise PolicyViolation(f"{source}: {problems[0]}")
    return value


class OutputGuard:
    """An agent whose outputs are checked against ``maxOutputBytes`` before anyone sees them.

    An output over the cap becomes ``AgentError(permanent)`` carrying the
    call's usage (the tokens were spent), so the engine's retry and fallback
    rules apply as to any other permanent failure.
    """

    def __init__(self, agent: Agent, name: str, policy: SecurityPolicy) -> None:
        self.agent = agent
        self.name = name
        self.policy = policy
        self.supports_sync = agent.supports_sync

    def _checked(self, out: AgentOutput) -> AgentOutput:
        problems = check_output(out.output, self.policy)
        if problems:
            raise AgentError(PERMANENT, f"agent {self.name!r}: {problems[0]}", usage=out.usage)
        return out

    async def run(self, data: Any, context: AgentContext) -> AgentOutput:
        return self._checked(await self.agent.run(data, context))

    def run_sync(self, data: Any, context: AgentContext) -> AgentOutput:
        return self._checked(self.agent.run_sync(data, context))

    async def aclose(self) -> None:
        await self.agent.aclose()

    def __repr__(self) -> str:
        return f"OutputGuard({self.agent!r})"
