"""``Pipeline``: an ordered sequence of steps, and the unit that runs.

``a >> b >> c`` builds one; ``Pipeline.from_yaml`` loads one.  Conversion to
the declarative :class:`~flujo.spec.PipelineManifest` is lossless, so
DSL → spec → YAML → DSL gives back an equal pipeline.  The class lives in
:mod:`flujo.domain.dsl.base`, beside the step base it composes.
"""

from flujo.domain.dsl.base import Body, Pipeline, as_steps

__all__ = ["Body", "Pipeline", "as_steps"]
