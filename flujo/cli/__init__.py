"""The ``flujo`` command line: run and validate pipelines embedded."""

from flujo.cli.app import app, main

__all__ = ["app", "main"]
