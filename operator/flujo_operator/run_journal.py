"""A run's journal: the events it records, and how each is read back.

The journal is the ordered list of references to the events applied to a
run (``start``; ``pod`` = the result in that step pod's log; ``ev`` = an
event written out whole, such as a pod-level failure; ``deadline``).  It is
persisted, compressed, in the run's status (:mod:`flujo_operator.run_status`);
after an operator restart each entry is turned back into its event here —
results are read from the step pods, which are the run's result store — and
replayed through :func:`flujo.engine.advance`.
"""

from __future__ import annotations

import logging
from typing import Any

from flujo.domain import errors
from flujo.engine import DeadlineReached, Event, RunStarted, StepFailed, event_adapter
from flujo.runtime.envelope import EnvelopeError, decode_result, inline_result
from flujo.spec.run import PipelineRunSpec

from flujo_operator.builders import RunRef, decode_journal, pod_failure, pod_name, terminated
from flujo_operator.kube import Kube
from flujo_operator.run_session import Session
from flujo_operator.runner_pods import join_result_chunks

__all__ = ["event_entry", "journal_event", "pod_event", "run_events"]

log = logging.getLogger("flujo_operator.runs")


def event_entry(event: StepFailed) -> dict[str, Any]:
    """The journal entry of an event decided by the operator (it is kept whole)."""
    return {"t": "ev", "p": event.path, "a": event.attempt, "e": event.model_dump(mode="json")}


async def journal_event(
    kube: Kube, ref: RunRef, spec: PipelineRunSpec, entry: dict[str, Any]
) -> Event | None:
    """The event a journal entry stands for; results are read back from step pods."""
    kind = entry.get("t")
    if kind == "start":
        return RunStarted(input=spec.input, seed=spec.seed)
    if kind == "deadline":
        return DeadlineReached()
    if kind == "ev":
        return event_adapter.validate_python(entry["e"])
    if kind == "cm":  # a runner's large result, in ConfigMaps of the run
        try:
            found = [
                await kube.get_config_map(ref.namespace, f"{stem}-result-{i}")
                for stem in [pod_name(ref.name, entry["p"], entry["a"])]
                for i in range(int(entry["n"]))
            ]
            body = join_result_chunks([f or {} for f in found], entry["s"], int(entry["z"]))
            return event_adapter.validate_json(body)
        except Exception as exc:
            return StepFailed(
                path=entry["p"],
                attempt=entry["a"],
                error_class=errors.INTERNAL,
                message=f"the stored result of {entry['p']} is lost: {exc}",
            )
    if kind == "pod":
        name = pod_name(ref.name, entry["p"], entry["a"])
        try:
            pod = await kube.get_pod(ref.namespace, name)
            message = str((terminated(pod or {}) or {}).get("message", ""))
            event = inline_result(message)
            if event is None:
                event = decode_result(message, await kube.pod_log(ref.namespace, name))
            return event
        except Exception as exc:
            return StepFailed(
                path=entry["p"],
                attempt=entry["a"],
                error_class=errors.INTERNAL,
                message=f"the result of pod {name} is lost: {exc}",
            )
    return None


async def run_events(kube: Kube, run: dict[str, Any]) -> list[Event]:
    """A PipelineRun's event log, rebuilt from its status journal and its pods.

    This is what makes an operator run's transcript comparable with an
    embedded one: the same events, replayed by the same machine.
    """
    meta = run["metadata"]
    ref = RunRef(meta["name"], meta["namespace"], meta.get("uid", ""))
    spec = PipelineRunSpec.model_validate(run.get("spec") or {})
    events: list[Event] = []
    for entry in decode_journal((run.get("status") or {}).get("journal")):
        event = await journal_event(kube, ref, spec, entry)
        if event is not None:
            events.append(event)
    return events


async def pod_event(
    kube: Kube, session: Session, kind: str, pod: dict[str, Any], path: str, attempt: int
) -> tuple[Event, dict[str, Any]] | None:
    """The event a step pod's watch event reports, with its journal entry; None if none yet.

    A finished pod's result is its termination message (or its log, when too
    big for the envelope); a pod that failed on its own is deleted so it stops
    holding capacity.
    """
    name = pod["metadata"]["name"]
    done = terminated(pod)
    if done is not None and done.get("message"):
        try:
            event = inline_result(done["message"])
            if event is None:  # too big for the envelope: read it from the log
                text = await kube.pod_log(session.ref.namespace, name)
                event = decode_result(done["message"], text)
            return event, {"t": "pod", "p": path, "a": attempt}
        except EnvelopeError:
            pass
        except Exception as exc:  # the log may be gone with the node
            log.warning("pod %s: cannot read its log: %s", name, exc)
    failure = pod_failure(pod, path, attempt)
    if failure is None and kind == "DELETED":
        if name in session.deleting:
            return None
        failure = StepFailed(
            path=path,
            attempt=attempt,
            error_class=errors.TRANSIENT,
            message=f"step pod {name} was deleted before it finished",
        )
    if failure is None:
        return None
    if done is None and kind != "DELETED":
        await kube.delete_pod(session.ref.namespace, name)
    return failure, event_entry(failure)
