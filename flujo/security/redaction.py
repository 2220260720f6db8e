"""Scrubbing known secret values out of everything Flujo prints, writes or logs.

Why values and not patterns: a credential has no recognisable shape (an
Ollama token, a webhook's shared secret), but the process knows exactly
which values are secret — the ones its agents' credential references
resolve to.  A :class:`Redactor` is given those values and replaces every
occurrence with ``***`` in text, in JSON-like data and in log records.

It is the *last* line of defence.  The first is not to put secrets in
messages at all: credentials are resolved per call and only placed in
request headers (:mod:`flujo.security.credentials`), and the transport
already redacts a server's echo of the key from its error messages.  The
redactor catches what slips through anyway — a server echoing the key in a
successful answer, a library logging a header at DEBUG, a traceback.

Also redacted: the JSON-escaped, ``repr``, bytes-``repr`` and URL-encoded
forms of each value (the forms it takes inside a JSON document, an exception
message such as ``Illegal header value b'Bearer …'``, or a query string).  Values shorter
than :data:`MIN_SECRET_LENGTH` characters are ignored: masking every ``a``
would destroy output, and no real credential is that short.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from flujo.security.credentials import secret_env_name
from flujo.spec.agent import AgentSpec, CredentialSpec

__all__ = [
    "MASK",
    "MIN_SECRET_LENGTH",
    "SECRET_ENV_PATTERNS",
    "RedactingFilter",
    "Redactor",
    "install_log_redaction",
]

MASK = "***"
MIN_SECRET_LENGTH = 6
SECRET_ENV_PATTERNS = (
    "FLUJO_SECRET_*",
    "*_API_KEY",
    "*_APIKEY",
    "*_TOKEN",
    "*_SECRET",
    "*_SECRET_KEY",
    "*PASSWORD*",
)
"""Environment variable names whose values :meth:`Redactor.from_environment` treats as secret."""
_MAX_CREDENTIAL_FILE = 64 << 10


def _variants(value: str) -> set[str]:
    """The forms a value takes in plain text, JSON strings, reprs and URLs."""
    forms = {value, json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}
    forms.add(repr(value)[1:-1])
    forms.add(repr(value.encode("utf-8", "surrogatepass"))[2:-1])  # as in b'…' messages
    forms.add(quote(value, safe=""))
    return {f for f in forms if f}


def _credential_refs(spec: AgentSpec) -> Iterable[CredentialSpec]:
    if spec.api_key is not None:
        yield spec.api_key
    for header in spec.secret_headers:
        yield header.value_from


class Redactor:
    """Replaces known secret values with ``***``; thread-safe, cheap when empty."""

    def __init__(self, secrets: Iterable[str] = (), *, min_length: int = MIN_SECRET_LENGTH) -> None:
        self.min_length = min_length
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()
        self.add(*secrets)

    def add(self, *values: str) -> None:
        """Know more secret values (with their JSON- and URL-encoded forms)."""
        with self._lock:
            before = len(self._values)
            for value in values:
                value = value.strip() if isinstance(value, str) else ""
                if len(value) >= self.min_length:
                    self._values |= _variants(value)
            if len(self._values) != before:
                ordered = sorted(self._values, key=len, reverse=True)
                self._pattern = re.compile("|".join(re.escape(v) for v in ordered))

    def __len__(self) -> int:
        return len(self._values)

    def pending(self, text: str) -> int:
        """How many characters at the end of ``text`` could begin a secret.

        A text streamed piece by piece holds these back until the next piece
        (or its end), so a secret split across two pieces is still redacted
        whole; everything before them can be shown at once.
        """
        with self._lock:
            values = list(self._values)
        longest = 0
        for value in values:
            for k in range(min(len(value) - 1, len(text)), longest, -1):
                if text.endswith(value[:k]):
                    longest = k
                    break
        return longest

    def __bool__(self) -> bool:
        return bool(self._values)

    # --- where the values come from ----------------------------------------------

    def add_agent_specs(
        self,
        specs: Iterable[AgentSpec],
        *,
        environ: Mapping[str, str] | None = None,
        read_files: bool = True,
    ) -> Redactor:
        """Know the values the agents' credential references resolve to right now.

        The same sources, in the same way, as
        :func:`flujo.security.credentials.resolve_credential`: the variable a
        ``secretKeyRef`` reaches a step pod as, ``env``, and ``file``.
        Missing sources are skipped silently: the call will report them.
        """
        env = os.environ if environ is None else environ
        for spec in specs:
            for ref in _credential_refs(spec):
                names = [secret_env_name(ref.secret_key_ref)] if ref.secret_key_ref else []
                names += [ref.env] if ref.env else []
                self.add(*(env.get(n, "") for n in names))
                if ref.file and read_files:
                    self.add(_read_small(ref.file))
        return self

    @classmethod
    def from_agent_specs(
        cls,
        specs: Iterable[AgentSpec],
        *,
        environ: Mapping[str, str] | None = None,
        read_files: bool = True,
    ) -> Redactor:
        return cls().add_agent_specs(specs, environ=environ, read_files=read_files)

    def add_environment(
        self,
        environ: Mapping[str, str] | None = None,
        patterns: Iterable[str] = SECRET_ENV_PATTERNS,
    ) -> Redactor:
        """Know the values of variables whose *names* say they are secret (``*_API_KEY``)."""
        env = os.environ if environ is None else environ
        globs = [p.upper() for p in patterns]
        for name, value in env.items():
            if any(fnmatch.fnmatchcase(name.upper(), g) for g in globs):
                self.add(value)
        return self

    # --- scrubbing ----------------------------------------------------------------

    def redact(self, text: str) -> str:
        """``text`` with every known secret (in any of its forms) replaced by ``***``."""
        pattern = self._pattern
        if pattern is None or not text:
            return text
        return pattern.sub(MASK, text)

    def redact_data(self, value: Any) -> Any:
        """A copy of a JSON-like value with secrets scrubbed from every string and key."""
        if self._pattern is None:
            return value
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, Mapping):
            return {
                (self.redact(k) if isinstance(k, str) else k): self.redact_data(v)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self.redact_data(v) for v in value]
        return value

    def redact_exception(self, exc: BaseException) -> str:
        """``Type: message`` of an exception, first line only, scrubbed."""
        text = str(exc).strip().splitlines()
        return self.redact(f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": "))

    def log_filter(self) -> RedactingFilter:
        return RedactingFilter(self)


def _read_small(path: str) -> str:
    try:
        with Path(path).open("rb") as handle:
            return handle.read(_MAX_CREDENTIAL_FILE).decode("utf-8", "replace").strip()
    except OSError:
        return ""


class RedactingFilter(logging.Filter):
    """A logging filter that scrubs a record's message, traceback and stack.

    The message is formatted with its arguments first (a secret may be an
    argument), so the record leaves with ``args`` cleared.  Attach it to
    *handlers* (a logger's filters do not see records propagated from child
    loggers), or use :func:`install_log_redaction` to cover every record.
    """

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        scrub(record, self.redactor)
        return True


def scrub(record: logging.LogRecord, redactor: Redactor) -> logging.LogRecord:
    """Scrub one log record in place (message, traceback text, stack)."""
    if not redactor:
        return record
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: keep what there is, scrubbed
        message = f"{record.msg} {record.args}"
    record.msg = redactor.redact(message)
    record.args = None
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redactor.redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redactor.redact(record.stack_info)
    return record


def install_log_redaction(redactor: Redactor) -> Callable[[], None]:
    """Scrub every log record this process creates; returns a function that undoes it.

    Uses the log-record factory, so records are scrubbed when created,
    before any handler or formatter — whatever logger, handler or library.
    """
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        return scrub(previous(*args, **kwargs), redactor)

    logging.setLogRecordFactory(factory)

    def uninstall() -> None:
        if logging.getLogRecordFactory() is factory:
            logging.setLogRecordFactory(previous)

    return uninstall
