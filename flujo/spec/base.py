"""Shared configuration for the manifest models.

Field names are snake_case in Python and camelCase in YAML/JSON, as in every
Kubernetes API; unknown fields are rejected so that a typo never silently
changes behaviour.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

__all__ = ["API_GROUP", "API_VERSION", "NAME_PATTERN", "ObjectMeta", "SpecModel"]

API_GROUP = "flujo.dev"
API_VERSION = f"{API_GROUP}/v1alpha1"
NAME_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$"
"""Step, branch and agent names: usable in step paths, label values and Jinja."""


class SpecModel(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        alias_generator=to_camel,
        validate_default=False,
    )

    def to_data(self) -> dict[str, Any]:
        """The YAML/JSON form: camelCase, without unset optional fields."""
        return self.model_dump(by_alias=True, exclude_none=True, exclude_defaults=True, mode="json")


class ObjectMeta(BaseModel):
    """The subset of Kubernetes metadata Flujo reads; other fields are ignored."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    name: str = Field(
        pattern=r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$",
        description="Object name (a DNS subdomain).",
    )
    namespace: str | None = Field(None, description="Namespace; the default one when unset.")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Annotations.")
