"""Where audit lines go: a text stream (stdout, stderr) or an append-only file.

A sink that fails raises; the embedded runtime then disables the observer
with one warning (observers never fail a run).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import IO, Protocol

__all__ = ["AuditSink", "FileSink", "StreamSink"]


class AuditSink(Protocol):
    def write(self, line: str) -> None: ...

    def close(self) -> None: ...


class StreamSink:
    """JSON lines on a text stream (stdout by default); flushed per line."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream

    def write(self, line: str) -> None:
        stream = self.stream if self.stream is not None else sys.stdout
        stream.write(line + "\n")
        stream.flush()

    def close(self) -> None:
        """The stream belongs to its opener."""


class FileSink:
    """JSON lines appended to a file created with mode 0600 (audit data is sensitive)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._file: IO[str] | None = os.fdopen(fd, "a", encoding="utf-8")

    def write(self, line: str) -> None:
        if self._file is None:
            raise ValueError(f"audit log {self.path} is closed")
        self._file.write(line + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
