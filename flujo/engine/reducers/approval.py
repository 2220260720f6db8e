"""Approval steps: wait for a person, then go on, take the failure path, or time out.

Starting one renders its input and message and emits ``AwaitApproval``; the
step stays ``running`` and is listed in ``RunState.awaiting`` (not in
``running``: no call is in flight, nothing is spent, nothing is relaunched
after a crash).  Its end is an event the executor injects:

- ``ApprovalAnswered(approved=True)``: the answer's input, else the step's
  input, is the step's output;
- ``ApprovalAnswered(approved=False)``: the step fails with error class
  ``rejected`` — its ``fallback`` agent is called with the step's input if it
  names one, otherwise the failure takes the usual path (the owning
  parallel's or map's failure policy, else the run fails);
- ``ApprovalTimedOut``: as ``approval.onTimeout`` says (reject, approve, or
  fail with error class ``timeout`` and no fallback).

The clock is the executor's: the machine never decides that time has passed.
"""

from __future__ import annotations

from typing import Any

from flujo.domain import errors
from flujo.domain.templates import TemplateProblem, render_value
from flujo.engine.commands import AwaitApproval
from flujo.engine.events import ApprovalAnswered, ApprovalTimedOut
from flujo.engine.reducers import agent
from flujo.engine.reducers.batch import Batch
from flujo.engine.reducers.scope import scope_vars
from flujo.engine.reducers.walk import node_done, node_failed
from flujo.engine.state import StepState
from flujo.spec.pipeline import StepSpec

__all__ = ["answered", "start", "timed_out"]


def start(b: Batch, s: StepState, spec: StepSpec, data: Any) -> None:
    approval = spec.approval
    assert approval is not None
    scope = scope_vars(b, s.path, data)
    try:
        if spec.input is not None:
            s.input = render_value(spec.input, scope)
        message = str(render_value(approval.message, {**scope, "input": s.input}))
    except TemplateProblem as exc:
        node_failed(b, s, errors.TEMPLATE, str(exc), s.path)
        return
    b.state.awaiting[s.path] = message
    b.approvals[s.path] = AwaitApproval.model_construct(
        type="AwaitApproval",
        path=s.path,
        step=s.name,
        message=message,
        input=s.input,
        schema_=approval.input_schema,
        timeout_seconds=approval.timeout_seconds,
    )


def _waiting(b: Batch, path: str) -> StepState | None:
    st = b.state
    if st.finished or path not in st.awaiting:
        st.ignored_events += 1  # an answer to nothing (a duplicate, a withdrawn wait)
        return None
    del st.awaiting[path]
    return st.steps[path]


def answered(b: Batch, ev: ApprovalAnswered) -> None:
    s = _waiting(b, ev.path)
    if s is None:
        return
    if ev.approved:
        node_done(b, s, ev.input if ev.input is not None else s.input)
        return
    who = f" by {ev.by}" if ev.by else ""
    _reject(b, s, f"rejected{who}: {ev.reason}" if ev.reason else f"rejected{who}")


def timed_out(b: Batch, ev: ApprovalTimedOut) -> None:
    s = _waiting(b, ev.path)
    if s is None:
        return
    approval = b.plan.nodes[s.name].spec.approval
    assert approval is not None
    seconds = f" within {approval.timeout_seconds:g}s" if approval.timeout_seconds else ""
    if approval.on_timeout == "approve":
        node_done(b, s, s.input)
    elif approval.on_timeout == "fail":
        node_failed(b, s, errors.TIMEOUT, f"no answer{seconds}", s.path)
    else:
        _reject(b, s, f"rejected: no answer{seconds}")


def _reject(b: Batch, s: StepState, message: str) -> None:
    spec = b.plan.nodes[s.name].spec
    s.error_class = errors.REJECTED
    s.message = message
    if spec.fallback:
        s.fallback_used = True
        agent.launch(b, s, spec.fallback, 0.0, spec)
    else:
        node_failed(b, s, errors.REJECTED, message, s.path)
