"""The validation worker: a child process that checks tenants' Pipelines for the operator.

Parsing a Pipeline, its checks (:func:`flujo.domain.validation.check_pipeline`,
``check_agents``, ``check_tools``), the security policy's findings and
compiling its templates are tenant-controlled work: a 200 KB template
compiles for many seconds and hundreds of MB.  The operator's event loop also
answers probes and reconciles every namespace, so none of that runs there.
It runs here, in ``python -m flujo_operator.worker``: one request at a time,
under an address-space limit (``RLIMIT_AS``, set after the imports: the
allowance is on top of the worker's own baseline) and at a lower CPU
priority, while the operator's pool (:mod:`flujo_operator.validation_pool`)
holds the wall-clock bound and kills and replaces a worker that breaches it.

The protocol is one JSON document per line on stdin and stdout.  A request::

    {"spec": {...}, "agents": {"name": {...} | null}, "policy": {...}}

is answered with the checks' one-line messages (the callers compose them as
before) and the time compiling the templates took; ``compileMs`` lets the
operator refuse a Pipeline whose templates would take too long to compile
when the state machine renders them on the event loop.  A ``MemoryError``
is answered ``{"breach": "memory"}`` and the worker then exits.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import sys
import time
from typing import Any

from flujo.domain.templates import is_template
from flujo.domain.templates.sandbox import env
from flujo.domain.validation import (
    _templates,
    check_agents,
    check_pipeline,
    check_tools,
    walk_steps,
)
from flujo.security.policy import SecurityPolicy, check_pipeline_policy
from flujo.spec.agent import AgentSpec
from flujo.spec.loader import format_loc
from flujo.spec.pipeline import PipelineSpec
from pydantic import ValidationError

from flujo_operator.builders import first_error

__all__ = ["check", "main"]


def _compile(value: Any, expression: bool) -> None:
    """Compile as the state machine will (it memoises compiled templates by source)."""
    if isinstance(value, str):
        if expression:
            env.compile_expression(value, undefined_to_none=False)
        elif is_template(value):
            env.from_string(value)
    elif isinstance(value, dict):
        for item in value.values():
            _compile(item, expression)
    elif isinstance(value, list):
        for item in value:
            _compile(item, expression)


def compile_seconds(spec: PipelineSpec) -> float:
    """CPU time compiling every template and expression of a valid pipeline.

    CPU, not wall time: it is what the operator's loop would spend, whatever else
    the node is running while this worker (at a lower priority) measures it.
    """
    started = time.process_time()
    for step, loc, _ in walk_steps(spec.steps):
        for source, expression, _at in _templates(step, loc):
            try:
                _compile(source, expression)
            except MemoryError:
                raise
            except Exception:  # check_pipeline reported it already
                continue
    return time.process_time() - started


def check(request: dict[str, Any]) -> dict[str, Any]:
    """Every check of one Pipeline against its namespace's Agents and policy."""
    try:
        spec = PipelineSpec.model_validate(request.get("spec") or {})
    except ValidationError as exc:
        return {"specError": first_error(exc)}
    agents: dict[str, AgentSpec | None] = {
        name: None if body is None else AgentSpec.model_validate(body)
        for name, body in (request.get("agents") or {}).items()
    }
    policy = SecurityPolicy.model_validate(request.get("policy") or {})
    pipeline = [f.message for f in check_pipeline(spec)]
    found: dict[str, Any] = {
        "pipeline": pipeline,
        "agents": [f.message for f in check_agents(spec, agents)],
        "tools": [f.message for f in check_tools(spec, agents)],
        "denied": [],
        "compileMs": 0.0,
    }
    if not pipeline:
        denied = check_pipeline_policy(spec, agents, policy)
        found["denied"] = [
            {"where": format_loc(f.loc), "message": f"{format_loc(f.loc)}: {f.message}"}
            for f in denied
        ]
        if not denied:  # a refused Pipeline is never compiled: its bomb may be the refusal
            found["compileMs"] = round(compile_seconds(spec) * 1000, 3)
    return found


def _vm_size() -> int:
    """This process's address space now, in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _limit_memory(allowance: int) -> None:
    if allowance <= 0:
        return
    with contextlib.suppress(OSError, ValueError):
        limit = _vm_size() + allowance
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def main() -> int:
    """Serve requests on stdin until it closes; ``argv[1]``: the memory allowance in bytes."""
    allowance = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    with contextlib.suppress(OSError, ValueError):
        os.nice(10)  # the operator's event loop comes first on a busy node
    _limit_memory(allowance)
    out = sys.stdout
    out.write('{"ready": true}\n')
    out.flush()
    for line in sys.stdin:
        try:
            answer = check(json.loads(line))
        except MemoryError:
            answer = {"breach": "memory"}
        except RecursionError:
            answer = {"breach": "depth"}
        except Exception as exc:
            answer = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0][:500]}
        try:
            out.write(json.dumps(answer) + "\n")
            out.flush()
        except MemoryError:
            return 3
        if "breach" in answer:
            return 3  # the heap may be fragmented or half-freed: a fresh worker takes over
    return 0


if __name__ == "__main__":
    sys.exit(main())
