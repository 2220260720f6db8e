"""Driving ``flujo ui`` in tests: the server as a subprocess, Debian's Chromium through Playwright.

The browser is the system's ``/usr/bin/chromium`` (scripts/test.sh installs
Debian's package); Playwright never downloads one.  Without it, or without
the ``playwright`` package, the browser tests skip and say why.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path(os.environ.get("FLUJO_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DOCS_IMG = ROOT / "docs" / "img"
WAIT_MS = 30_000
"""How long a browser wait for an observable state may take before the test fails."""


def expect(locator: Any) -> Any:
    """Playwright's assertions (they wait, bounded, without evaluating strings in the page:
    the pages' Content-Security-Policy forbids that)."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium (the system's), or the test skips with the reason."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} missing: install Debian's chromium (scripts/test.sh does)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright missing: pip install -e '.[dev]'")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class UiServer:
    """``flujo ui --port 0 …`` as a subprocess; ``url`` is where it listens."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
        base = {k: v for k, v in os.environ.items() if not k.startswith("FLUJO_")}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "flujo", "ui", "--port", "0", *args],
            cwd=cwd,
            env={**base, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        lines: queue.Queue[str] = queue.Queue()
        assert self.process.stdout is not None
        out = self.process.stdout
        threading.Thread(target=lambda: [lines.put(x) for x in out], daemon=True).start()
        try:
            first = lines.get(timeout=60)
        except queue.Empty:
            self.stop()
            raise AssertionError(f"flujo ui did not start: {self.stderr()}") from None
        assert first.startswith("flujo ui: http://"), first + self.stderr()
        self.url = first.split()[2].rstrip("/")

    def stderr(self) -> str:
        if self.process.poll() is None:
            return ""
        assert self.process.stderr is not None
        return self.process.stderr.read()

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(15)


@contextmanager
def ui_server(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> Iterator[UiServer]:
    server = UiServer(args, cwd, env)
    try:
        yield server
    finally:
        server.stop()
