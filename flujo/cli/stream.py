"""``flujo run --stream``: model steps' answers on stderr as they arrive.

Each model step's streamed text is written to stderr under a ``[path]``
header as its pieces arrive; stdout keeps exactly what the run prints without
``--stream`` (the output, at the end), so redirecting it gives the same file
either way.  Secrets are redacted before anything is written: the printer
holds back the end of a step's text while it could be the beginning of a
secret, until more arrives or the step's answer ends, so a secret split
across two pieces is still caught whole.
"""

from __future__ import annotations

from typing import TextIO

from flujo.security.redaction import Redactor

__all__ = ["TokenPrinter"]


class TokenPrinter:
    """The token callback of ``flujo run --stream`` (``Flujo(on_token=...)``)."""

    def __init__(self, redactor: Redactor, out: TextIO) -> None:
        self.redactor = redactor
        self.out = out
        self.path: str | None = None
        self.held = ""

    def __call__(self, path: str, text: str) -> None:
        if path != self.path:
            self.close()
            self.out.write(f"[{path}] ")
            self.path = path
        clean = self.redactor.redact(self.held + text)
        cut = len(clean) - self.redactor.pending(clean)
        self.out.write(clean[:cut])
        self.held = clean[cut:]
        self.out.flush()

    def close(self) -> None:
        """End the current step's text (written whole, redacted)."""
        if self.path is None:
            return
        self.out.write(self.redactor.redact(self.held) + "\n")
        self.out.flush()
        self.path, self.held = None, ""
