"""pytest options of the golden-transcript tests (listed in tests/conftest.py).

Why a plugin module: ``--update-goldens`` must be known to pytest before
tests are collected, which only a ``pytest_addoption`` hook in a plugin or
conftest can do.
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("golden transcripts")
    group.addoption(
        "--update-goldens",
        action="store_true",
        default=False,
        help="Rewrite golden/*.txt from this run instead of comparing (review `git diff golden/`).",
    )
