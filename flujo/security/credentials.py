"""Turning a credential *reference* into its value, at call time only.

Manifests hold references (:class:`~flujo.spec.agent.CredentialSpec`), never
values.  A value is read when an agent is about to call its endpoint, used
for that request's headers and dropped: it is never stored on the agent,
logged, or put in an error message.  Reading it per call also means a
rotated key (a re-mounted Secret file, a changed variable) is picked up
without a restart.

Sources are tried in the order the spec documents, and the first one that
yields a value wins:

1. ``secretKeyRef`` — in the cluster the operator never reads a Secret; the
   step pod gets it as an environment variable named by
   :func:`secret_env_name`.  Embedded, export that variable to use the same
   manifest.
2. ``env`` — an environment variable.
3. ``file`` — a file's content, surrounding whitespace stripped (Secret files
   often end with a newline).

A missing credential is an ``auth`` failure whose message names the agent and
every place looked at, so the fix is obvious.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from flujo.domain.errors import AUTH, AgentError
from flujo.spec.agent import CredentialSpec, SecretKeyRef

__all__ = ["SECRET_ENV_PREFIX", "redact", "resolve_credential", "secret_env_name"]

SECRET_ENV_PREFIX = "FLUJO_SECRET_"
_NOT_ALNUM = re.compile(r"[^A-Za-z0-9]")


def secret_env_name(ref: SecretKeyRef) -> str:
    """The environment variable a ``secretKeyRef`` reaches a step pod as.

    ``FLUJO_SECRET_<NAME>_<KEY>``, upper-cased, every character that is not
    an ASCII letter or digit replaced by ``_``.  For example
    ``{name: openai-creds, key: api.key}`` becomes
    ``FLUJO_SECRET_OPENAI_CREDS_API_KEY``.  The operator builds the step pod's
    ``env`` with this same function, so the two sides cannot drift.
    """
    return _NOT_ALNUM.sub("_", f"{SECRET_ENV_PREFIX}{ref.name}_{ref.key}").upper()


def resolve_credential(
    spec: CredentialSpec,
    *,
    agent: str,
    purpose: str = "credential",
    environ: Mapping[str, str] | None = None,
) -> str:
    """The credential's value, or ``AgentError(auth)`` naming where it was looked for.

    ``purpose`` says what the value is for ("API key", "header X-Token") in the
    error message; ``environ`` defaults to :data:`os.environ`.
    """
    env = os.environ if environ is None else environ
    looked: list[str] = []
    for name in _env_names(spec):
        value = env.get(name, "").strip()
        if value:
            return value
        looked.append(f"environment variable {name} is {'empty' if name in env else 'not set'}")
    if spec.file:
        path = Path(spec.file)
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            looked.append(f"file {spec.file} cannot be read ({exc.strerror or type(exc).__name__})")
        else:
            if value:
                return value
            looked.append(f"file {spec.file} is empty")
    raise AgentError(
        AUTH,
        f"agent {agent!r}: {purpose} not found: {'; '.join(looked)}; "
        "set it or fix the agent's credential reference",
    )


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of a secret value replaced by ``***``.

    Servers sometimes echo the key they rejected; this keeps such echoes out
    of error messages.
    """
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _env_names(spec: CredentialSpec) -> list[str]:
    names = []
    if spec.secret_key_ref is not None:
        names.append(secret_env_name(spec.secret_key_ref))
    if spec.env:
        names.append(spec.env)
    return names
