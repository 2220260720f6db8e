"""Pytest fixtures for the local protocol servers.

Loaded by ``tests/conftest.py`` with ``pytest_plugins = ["tests.servers.fixtures"]``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers.openai_server import OpenAIServer


@pytest.fixture
def openai_server() -> Iterator[OpenAIServer]:
    """A fresh scripted OpenAI-compatible + webhook server on 127.0.0.1, one per test."""
    with OpenAIServer() as server:
        yield server
