"""How a template's failures read: :class:`TemplateProblem`, in one line.

Every problem — syntax, sandbox violation, work bound, undefined name — is a
:class:`TemplateProblem` whose message is one line, quoting at most the
start of the template.
"""

from __future__ import annotations

__all__ = ["TemplateProblem", "one_line", "quote"]


class TemplateProblem(Exception):
    """A template could not be compiled or rendered; the message is one line."""


def one_line(exc: BaseException) -> str:
    """``ExceptionName: first line of its message``."""
    msg = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {msg[0] if msg else ''}".rstrip(": ")


def quote(text: str, limit: int = 80) -> str:
    """The template text for a message: one line, at most ``limit`` characters."""
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= limit else flat[: limit - 1] + "…")
