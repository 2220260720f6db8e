"""What telemetry knows of an agent, and the warning it raises when it cannot deliver.

Shared by the metrics and tracing adapters, so it sits below both.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flujo.agents.registry import AgentRegistry

__all__ = ["AgentInfo", "ObservabilityWarning", "agent_infos"]


class ObservabilityWarning(RuntimeWarning):
    """Telemetry could not be delivered; the run goes on without it."""


@dataclass(frozen=True, slots=True)
class AgentInfo:
    """What telemetry needs to know about an agent: its kind and model.

    ``type`` is the agent kind (``openai``, ``http``, ``builtin``,
    ``scripted``, ``python`` for in-code callables); ``model`` the model name
    of LLM agents.  Both end up in metric labels and GenAI span attributes,
    so they come from configuration, never from call data.
    """

    type: str
    model: str | None = None

    @classmethod
    def of(cls, value: AgentInfo | tuple[str, str | None] | Mapping[str, Any]) -> AgentInfo:
        """Accept an ``AgentInfo``, a ``(type, model)`` pair or a ``{"type", "model"}`` dict."""
        if isinstance(value, AgentInfo):
            return value
        if isinstance(value, tuple):
            return cls(str(value[0]), None if value[1] is None else str(value[1]))
        model = value.get("model")
        return cls(str(value.get("type", "python")), None if model is None else str(model))


def agent_infos(registry: AgentRegistry) -> dict[str, AgentInfo]:
    """Agent name → kind and model, from a registry, without building any agent.

    ``${VAR}`` references in model names are expanded as the agent would
    expand them; an unset variable leaves the reference as written.
    """
    from flujo.agents.remote import expand_env
    from flujo.domain.errors import AgentError

    found: dict[str, AgentInfo] = {}
    for entry in registry.list():
        model = entry.spec.model if entry.spec is not None else None
        if model is not None and "${" in model:
            with suppress(AgentError):
                model = expand_env(entry.name, "model", model)
        found[entry.name] = AgentInfo(entry.type, model)
    return found
