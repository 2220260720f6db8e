"""Render a run's event log as a deterministic, human-readable transcript.

Why a transcript is rendered *from the event log* and not from a finished
``RunState``: the log is the one record both executors share (the embedded
runtime and the operator feed the same events to the same
:func:`flujo.engine.advance`), so replaying it gives every intermediate
decision — retries, fallbacks, each loop iteration's exit decision, the branch
a conditional took, cancellations, the governor's breach — and the same log
gives the same transcript whichever executor produced it.  A final state
would only show where the run ended up.

Why the output is byte-stable: transcripts are checked in as golden files and
reviewed as diffs, so nothing in them may depend on the clock, ids, the
Python hash seed or the machine.  The renderer reads no clock, never iterates
a set, and orders what the machine leaves unordered by a natural sort of step
paths; long values appear as a short preview plus a sha256 of their canonical
JSON.  The format is described in ``docs/transcripts.md``.

Where each part is: :mod:`~flujo.transcript.values` (canonical JSON, digests,
previews), :mod:`~flujo.transcript.header` (version, outline, limits),
:mod:`~flujo.transcript.events` (each event and its decisions),
:mod:`~flujo.transcript.footer` (outcome and steps table); this module joins
them into the entry points below.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from flujo.engine import Event, Outcome, event_adapter, new_run
from flujo.spec.limits import UsageLimits
from flujo.spec.pipeline import PipelineSpec
from flujo.transcript.events import EventRenderer
from flujo.transcript.footer import footer
from flujo.transcript.header import FORMAT_VERSION, header
from flujo.transcript.values import PREVIEW_CHARS, canonical_json, digest, preview

if TYPE_CHECKING:
    from flujo.runtime.runner import RunResult

__all__ = [
    "FORMAT_VERSION",
    "PREVIEW_CHARS",
    "canonical_json",
    "digest",
    "iter_transcript",
    "preview",
    "render_transcript",
    "transcript_of",
]


def _as_event(item: Event | Mapping[str, Any]) -> Event:
    if isinstance(item, Mapping):
        return event_adapter.validate_python(dict(item))
    return item


def iter_transcript(
    spec: PipelineSpec,
    events: Iterable[Event | Mapping[str, Any]],
    limits: UsageLimits | None = None,
    *,
    agent_caps: Mapping[str, float] | None = None,
    name: str | None = None,
    recorded: Outcome | None = None,
) -> Iterator[str]:
    """:func:`render_transcript` line by line (each ending in ``\\n``), as events are read.

    Neither the events nor the text are held whole: a long run's transcript can
    be written to a file while its (spilled) event log is streamed.
    """
    state = new_run(spec, limits, agent_caps)
    renderer = EventRenderer(spec, state)
    for line in header(spec, state, name):
        yield line + "\n"
    yield "events\n"
    for n, item in enumerate(events, 1):
        renderer.event(n, _as_event(item))
        for line in renderer.lines:
            yield line + "\n"
        renderer.lines.clear()
    for line in footer(renderer.state, recorded):
        yield line + "\n"


def render_transcript(
    spec: PipelineSpec,
    events: Iterable[Event | Mapping[str, Any]],
    limits: UsageLimits | None = None,
    *,
    agent_caps: Mapping[str, float] | None = None,
    name: str | None = None,
    recorded: Outcome | None = None,
) -> str:
    """Replay ``events`` on a fresh run of ``spec`` and render every decision.

    ``limits`` and ``agent_caps`` must be what the run was started with (the
    governor's decisions depend on them).  ``events`` may be event models or
    their JSON form.  ``recorded``, the outcome the executor reported, adds a
    note when the replay does not reproduce it (a determinism bug).
    """
    return "".join(
        iter_transcript(spec, events, limits, agent_caps=agent_caps, name=name, recorded=recorded)
    )


def transcript_of(result: RunResult, *, name: str | None = None) -> str:
    """The transcript of a finished embedded run, from its recorded event log.

    The log is streamed: a spilled output is read back, previewed and dropped.
    """
    state = result.state
    return render_transcript(
        state.pipeline,
        result.iter_events(),
        state.limits,
        agent_caps=state.agent_caps,
        name=name,
        recorded=result.outcome,
    )
