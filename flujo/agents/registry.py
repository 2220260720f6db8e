"""AgentRegistry: the names a pipeline may use, and where each came from.

Pipelines refer to agents by name; the registry resolves names to agent
objects and remembers each entry's version and provenance (code, file,
cluster resource, built-in) for audit and transcripts.  Agents declared by
manifest are built lazily, on first use, so validating a pipeline never
opens a connection or reads a credential.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from flujo.agents.base import Agent, CallableAgent, as_agent
from flujo.agents.builtin import PRESET_PREFIX, BuiltinAgent, builtin_names
from flujo.agents.scripted import ScriptedAgent
from flujo.resilience.breaker import BreakerRegistry
from flujo.spec.agent import AgentManifest, AgentSpec

if TYPE_CHECKING:
    from flujo.agents.tools import ToolTarget

__all__ = ["AgentEntry", "AgentRegistry", "Provenance", "UnknownAgentError"]

Provenance = Literal["code", "file", "cluster", "builtin"]


class UnknownAgentError(KeyError):
    """Raised with every missing name at once."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = sorted(set(names))
        super().__init__(self.names)

    def __str__(self) -> str:
        return (
            "unknown agent"
            + ("s " if len(self.names) > 1 else " ")
            + ", ".join(repr(n) for n in self.names)
        )


@dataclass
class AgentEntry:
    """One registered agent with its metadata."""

    name: str
    provenance: Provenance
    source: str = ""
    version: str | None = None
    description: str | None = None
    registered_at: str = ""
    spec: AgentSpec | None = None
    agent: Agent | None = field(default=None, repr=False)
    max_cost_per_call: float | None = None
    """Declared worst-case cost of one call (a manifest's ``pricing.maxCostPerCall``,
    or :meth:`AgentRegistry.register`'s argument): turns on budget reservation."""

    @property
    def type(self) -> str:
        return self.spec.type if self.spec is not None else "python"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class AgentRegistry:
    """Name → agent, with metadata. ``AgentRegistry()`` includes the built-ins."""

    def __init__(
        self,
        *,
        builtins: bool = True,
        clock: Callable[[], str] = _now,
        breakers: BreakerRegistry | None = None,
    ) -> None:
        self._entries: dict[str, AgentEntry] = {}
        self._clock = clock
        self._remote: Any = None
        self.breakers = breakers or BreakerRegistry()
        """One circuit breaker per remote agent, shared by every run of this registry."""
        if builtins:
            for name in builtin_names(presets_only=True):
                self._entries[PRESET_PREFIX + name] = AgentEntry(
                    name=PRESET_PREFIX + name,
                    provenance="builtin",
                    source="flujo",
                    registered_at="",
                    spec=AgentSpec(type="builtin", builtin=name),
                )

    # --- registration ---------------------------------------------------

    def register(
        self,
        name: str,
        agent: Any,
        *,
        version: str | None = None,
        provenance: Provenance = "code",
        source: str = "",
        description: str | None = None,
        max_cost_per_call: float | None = None,
    ) -> AgentEntry:
        """Register an agent object or a plain callable under ``name``.

        ``max_cost_per_call`` declares what one call can cost at most, as
        ``pricing.maxCostPerCall`` does for manifests: under a ``maxCostUsd``
        limit, launches then wait for budget instead of overshooting it.
        """
        if max_cost_per_call is not None and not max_cost_per_call >= 0:
            raise ValueError("max_cost_per_call must be a number not below 0")
        entry = AgentEntry(
            name=name,
            provenance=provenance,
            source=source,
            version=version,
            description=description,
            registered_at=self._clock(),
            agent=as_agent(agent, name),
            max_cost_per_call=max_cost_per_call,
        )
        self._entries[name] = entry
        return entry

    def register_manifest(
        self, manifest: AgentManifest, *, source: str = "", provenance: Provenance = "file"
    ) -> AgentEntry:
        spec = manifest.spec
        entry = AgentEntry(
            name=manifest.metadata.name,
            provenance=provenance,
            source=source,
            version=spec.version,
            description=spec.description,
            registered_at=self._clock(),
            spec=spec,
        )
        self._entries[entry.name] = entry
        return entry

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    # --- lookup ---------------------------------------------------------

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def names(self) -> builtins.list[str]:
        return sorted(self._entries)

    def list(self) -> builtins.list[AgentEntry]:
        return [self._entries[n] for n in sorted(self._entries)]

    def entry(self, name: str) -> AgentEntry:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownAgentError([name]) from None

    def missing(self, names: Iterable[str]) -> builtins.list[str]:
        return sorted({n for n in names if n not in self._entries})

    def require(self, names: Iterable[str]) -> None:
        """Raise :class:`UnknownAgentError` naming every missing agent at once."""
        missing = self.missing(names)
        if missing:
            raise UnknownAgentError(missing)

    def get(self, name: str) -> Agent:
        """The agent object, built from its manifest on first use."""
        entry = self.entry(name)
        if entry.agent is None:
            assert entry.spec is not None
            entry.agent = self._build(name, entry.spec)
        return entry.agent

    def _build(self, name: str, spec: AgentSpec) -> Agent:
        if spec.type == "builtin":
            return BuiltinAgent(spec.builtin or "", spec.config)
        if spec.type == "scripted":
            scripted = ScriptedAgent(spec.responses, name)
            if not spec.tools:
                return scripted
            from flujo.agents.tools import ToolLoopAgent

            scripted.who = f"scripted agent {name!r}"
            return ToolLoopAgent(name, spec, scripted, scripted, self.tool_target)
        from flujo.agents.remote import RemoteResources

        if self._remote is None:
            # A fresh connection pool per session (httpx clients belong to one
            # event loop); breakers persist, so failures seen by one run
            # protect the next.
            self._remote = RemoteResources(breakers=self.breakers)
        if spec.type == "mcp":
            from flujo.agents.mcp import McpAgent

            governed: Agent = self._remote.govern(name, spec, McpAgent(name, spec))
            return governed
        built: Agent = self._remote.build(name, spec)
        if spec.type == "openai" and spec.tools:
            from flujo.agents.tools import ToolLoopAgent

            return ToolLoopAgent(name, spec, built, _innermost(built), self.tool_target)
        return built

    def tool_target(self, name: str) -> ToolTarget:
        """An agent offered to a model as a tool: governed as every agent call is.

        Raises :class:`UnknownAgentError` (a ``KeyError``) for an unknown name.
        """
        from flujo.agents.tools import ToolTarget
        from flujo.security.policy import OutputGuard, active_policy

        entry = self.entry(name)
        agent = self.get(name)
        policy = active_policy()
        inner = _innermost(agent)
        return ToolTarget(
            agent=OutputGuard(agent, name, policy) if policy is not None else agent,
            spec=entry.spec,
            description=entry.description,
            function=inner.fn if isinstance(inner, CallableAgent) else None,
            mcp=inner if entry.spec is not None and entry.spec.type == "mcp" else None,
        )

    async def aclose(self) -> None:
        """Close pooled connections of remote agents; the registry stays usable."""
        resources, self._remote = self._remote, None
        for entry in self._entries.values():
            if entry.spec is not None and entry.spec.type in ("openai", "http", "mcp"):
                entry.agent = None
        if resources is not None:
            await resources.aclose()


def _innermost(agent: Any) -> Any:
    """The agent inside its wrappers (rate limiter and breaker, output guard)."""
    while True:
        inner = getattr(agent, "inner", None) or getattr(agent, "agent", None)
        if inner is None or not hasattr(inner, "run"):
            return agent
        agent = inner
