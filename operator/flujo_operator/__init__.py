"""The Flujo Kubernetes operator (kopf): Agent, Pipeline and PipelineRun resources.

This package lives in the ``operator/`` source folder, which is deliberately
*not* a package: a top-level ``operator`` package would shadow Python's
standard-library ``operator`` module.
"""

__all__: list[str] = []
