"""Credential resolution under the import path agents were written against.

It lives in :mod:`flujo.security.credentials`, beside the redactor that must
know every secret it resolves.
"""

from flujo.security.credentials import (
    SECRET_ENV_PREFIX,
    redact,
    resolve_credential,
    secret_env_name,
)

__all__ = ["SECRET_ENV_PREFIX", "redact", "resolve_credential", "secret_env_name"]
