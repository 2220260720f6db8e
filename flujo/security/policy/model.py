"""The security policy's model: its fields, its two profiles, a policy file's shape.

:class:`SecurityPolicy` is what pipelines and agents may do, with the
*embedded* defaults (:meth:`SecurityPolicy.embedded`) and the *cluster* ones
(:meth:`SecurityPolicy.cluster`); :class:`PolicyOverrides` is some of its
fields; :class:`PolicyConfig` is a policy file (a profile, defaults,
per-namespace overrides).  Reading one from a file or the environment is
:mod:`flujo.security.policy.loading`; what a policy refuses is decided in
:mod:`~flujo.security.policy.endpoints`, :mod:`~flujo.security.policy.findings`
and :mod:`~flujo.security.policy.data`.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Literal

from pydantic import Field, field_validator

from flujo.domain.templates import TemplateLimits
from flujo.spec.agent import AGENT_TYPES
from flujo.spec.base import SpecModel

__all__ = [
    "PolicyConfig",
    "PolicyError",
    "PolicyOverrides",
    "PolicyViolation",
    "Profile",
    "SecurityPolicy",
]

Profile = Literal["embedded", "cluster"]


class PolicyError(ValueError):
    """A policy file or variable is malformed; the message names it."""


class PolicyViolation(ValueError):
    """Data or configuration refused by the policy; the message is one line."""


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
        description="Agent types that may be used (openai, http, builtin, scripted, mcp).",
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
    max_template_bytes: int = Field(
        64 << 10, ge=1, description="Largest source of one template or expression (UTF-8 bytes)."
    )
    max_template_tokens: int = Field(
        10_000, ge=1, description="Most lexical tokens in one template (its compiled size)."
    )
    max_template_nesting: int = Field(
        32, ge=1, description="Deepest nesting of brackets, block tags and operators in a template."
    )
    max_pipeline_template_bytes: int = Field(
        256 << 10, ge=1, description="Largest total source of a pipeline's templates (UTF-8 bytes)."
    )
    max_pipeline_template_tokens: int = Field(
        50_000, ge=1, description="Most lexical tokens in all templates of a pipeline."
    )
    max_template_compile_ms: int = Field(
        2_000, ge=0, description="Deadline for parsing and compiling one template (ms; 0: none)."
    )
    max_template_render_ms: int = Field(
        5_000, ge=0, description="Deadline for one render of a step's templates (ms; 0: none)."
    )
    max_template_render_chars: int = Field(
        16 << 20, ge=1, description="Most characters one render may produce (its memory)."
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
            "max_template_bytes": 32 << 10,
            "max_template_tokens": 5_000,
            "max_pipeline_template_bytes": 128 << 10,
            "max_pipeline_template_tokens": 20_000,
            "max_template_compile_ms": 1_000,
            "max_template_render_ms": 2_000,
            "max_template_render_chars": 4 << 20,
        }
        return cls.model_validate({**base, **changes})

    @classmethod
    def for_profile(cls, profile: Profile) -> SecurityPolicy:
        return cls.cluster() if profile == "cluster" else cls.embedded()

    def template_limits(self) -> TemplateLimits:
        """The bounds on templates and expressions this policy sets."""
        return TemplateLimits(
            max_template_bytes=self.max_template_bytes,
            max_template_tokens=self.max_template_tokens,
            max_template_nesting=self.max_template_nesting,
            max_pipeline_template_bytes=self.max_pipeline_template_bytes,
            max_pipeline_template_tokens=self.max_pipeline_template_tokens,
            max_compile_ms=self.max_template_compile_ms,
            max_render_ms=self.max_template_render_ms,
            max_render_chars=self.max_template_render_chars,
        )

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
    max_template_bytes: int | None = Field(None, ge=1)
    max_template_tokens: int | None = Field(None, ge=1)
    max_template_nesting: int | None = Field(None, ge=1)
    max_pipeline_template_bytes: int | None = Field(None, ge=1)
    max_pipeline_template_tokens: int | None = Field(None, ge=1)
    max_template_compile_ms: int | None = Field(None, ge=0)
    max_template_render_ms: int | None = Field(None, ge=0)
    max_template_render_chars: int | None = Field(None, ge=1)


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
