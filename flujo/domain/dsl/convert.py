"""Spec → DSL: the inverse of every ``to_spec``, used by ``Pipeline.from_spec``.

Each step class converts itself (``from_spec``, beside the ``to_spec`` it
inverts); :func:`step_from_spec` dispatches on the spec's kind.
"""

from flujo.domain.dsl.base import step_from_spec, steps_from_spec

__all__ = ["step_from_spec", "steps_from_spec"]
