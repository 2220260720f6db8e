"""``flujo ui``: a web view of runs — the list, a run's graph live, its steps, approvals.

A layer of its own, above the runtime and the transcripts and below the CLI.
Its libraries (Starlette, uvicorn, grandalf: the ``ui`` extra) are imported
only by the modules that serve pages, never by ``import flujo``; the command
checks them first with :func:`missing_dependencies` and says
``pip install 'flujo[ui]'`` when one is absent.
"""

from __future__ import annotations

import importlib.util

__all__ = ["UI_DEPENDENCIES", "missing_dependencies"]

UI_DEPENDENCIES = ("starlette", "uvicorn", "grandalf", "jinja2")
"""The modules the web view needs (``pip install 'flujo[ui]'``)."""


def missing_dependencies() -> list[str]:
    """Which of :data:`UI_DEPENDENCIES` cannot be imported here."""
    return [name for name in UI_DEPENDENCIES if importlib.util.find_spec(name) is None]
