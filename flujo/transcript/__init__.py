"""Golden transcripts: a deterministic, reviewable rendering of a run.

A transcript replays a run's event log through the state machine and prints
every decision it made; golden transcripts checked into ``golden/`` turn any
behaviour change of the engine or of a recipe into a readable diff.  See
``docs/transcripts.md``.
"""

from flujo.transcript.render import (
    FORMAT_VERSION,
    canonical_json,
    digest,
    iter_transcript,
    preview,
    render_transcript,
    transcript_of,
)

__all__ = [
    "FORMAT_VERSION",
    "canonical_json",
    "digest",
    "iter_transcript",
    "preview",
    "render_transcript",
    "transcript_of",
]
