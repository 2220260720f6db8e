"""Engine-overhead workloads on Flujo 0.6.11 from PyPI (a different project also named ``flujo``).

Runs inside ``.bench/flujo0611`` (made by ``benchmarks/peers/setup.sh``; Python >= 3.12,
opentelemetry-api/-sdk 1.39.1) and prints one JSON object on stdout; progress and
Flujo 0.6.11's own logging go to stderr.  Run it from an empty scratch directory:
its default configuration writes ``flujo_ops.db`` (and a lock file) into the cwd.
``benchmarks/engine_overhead.py`` does all of that for you.

The trivial step is the shared :func:`overhead_common.ainc` wrapped with
``Step.from_callable`` (0.6.11 wraps async callables only).  Pipelines:

- chain: ``Pipeline.model_validate({"steps": [...]})`` (what ``>>`` builds, without
  the quadratic re-copying);
- loop: ``Step.loop_until(body, exit_condition_callable=lambda out, ctx: out >= 1000,
  max_loops=1000)``;
- fanout: ``Step.parallel(branches={...}, reduce=<first branch's result>)``; 0.6.11's
  native parallel output is ``{branch: output}`` and ``reduce`` is its hook to merge.

Configurations (``--variants``):

- ``in-memory``: ``Flujo(pipeline, persist_state=False)`` (run state kept in memory,
  nothing serialised or persisted), parallel steps with ``merge_strategy=NO_MERGE`` (the
  default ``CONTEXT_UPDATE`` diffs every pair of branch contexts, ~20x slower here, and the
  workload needs no context merge), and the ``flujo`` logger at WARNING, as 0.6.11 itself
  sets it in CI/test mode (at INFO it logs a governance line per step): its fastest
  configuration that still runs the workload as defined;
- ``default``: ``Flujo(pipeline)`` and ``Step.parallel`` defaults: SQLite state backend
  (``./flujo_ops.db``), context merging, INFO logging; it serialises the whole run state
  after every step, so its per-step cost grows with run length and long runs are cut by
  ``--budget-s`` (reported as a lower bound);
- ``memory-backend`` (not run unless asked): ``Flujo(pipeline,
  state_backend=InMemoryBackend())``, the same serialisation into a dict.

Each run gets a fresh ``Flujo`` runner (built untimed): a runner caches step results,
so re-running one with the same input would skip every step.  Each configuration is
timed through ``Flujo.run()`` (sync) and, for ``in-memory``, also ``await
Flujo.run_result_async()`` in one event loop; the faster mode is reported.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import overhead_common as oc
from flujo import Flujo, Pipeline, Step
from flujo.domain.dsl.loop import LoopStep
from flujo.domain.dsl.parallel import ParallelStep
from flujo.domain.dsl.step import MergeStrategy
from flujo.state.backends.memory import InMemoryBackend

VARIANTS: dict[str, str] = {
    "in-memory": (
        "Flujo(pipeline, persist_state=False): state in memory only, no persistence; "
        "parallel merge_strategy=NO_MERGE; 'flujo' logger at WARNING"
    ),
    "default": (
        "Flujo(pipeline) as shipped: SQLite state backend (flujo_ops.db in a scratch cwd), "
        "parallel merge_strategy=CONTEXT_UPDATE, tracing on, INFO logging"
    ),
    "memory-backend": (
        "Flujo(pipeline, state_backend=InMemoryBackend()): state serialised after every "
        "step into a dict; parallel merge_strategy=NO_MERGE; 'flujo' logger at WARNING"
    ),
}
DEFAULT_VARIANTS = ("in-memory", "default")


def _first_branch(results: list[Any], _context: object) -> Any:
    """Parallel reducer: the first branch's StepResult (branch order is declaration order)."""
    return results[0]


def build(workload: str, variant: str) -> Pipeline[Any, Any]:
    """The workload as a Flujo 0.6.11 pipeline."""
    if workload == "chain":
        steps = [Step.from_callable(oc.ainc, name=f"s{i}") for i in range(oc.CHAIN_STEPS)]
        return Pipeline.model_validate({"steps": steps})
    if workload == "loop":
        body = Pipeline.from_step(Step.from_callable(oc.ainc, name="body"))
        loop: LoopStep[Any] = Step.loop_until(
            name="loop",
            loop_body_pipeline=body,
            exit_condition_callable=lambda out, _ctx: out >= oc.LOOP_ITERATIONS,
            max_loops=oc.LOOP_ITERATIONS,
        )
        return Pipeline.from_step(loop)
    if workload == "fanout":
        # CONTEXT_UPDATE is Step.parallel's default.
        merge = MergeStrategy.CONTEXT_UPDATE if variant == "default" else MergeStrategy.NO_MERGE
        parallels: list[ParallelStep[Any]] = [
            Step.parallel(
                name=f"p{j}",
                branches={
                    f"b{i}": Step.from_callable(oc.ainc, name=f"p{j}b{i}")
                    for i in range(oc.FANOUT_WIDTH)
                },
                reduce=_first_branch,
                merge_strategy=merge,
            )
            for j in range(oc.FANOUT_DEPTH)
        ]
        return Pipeline.model_validate({"steps": parallels})
    raise ValueError(workload)


def make_runner(variant: str, pipeline: Pipeline[Any, Any]) -> Flujo[Any, Any, Any]:
    if variant == "in-memory":
        return Flujo(pipeline, persist_state=False)
    if variant == "default":
        return Flujo(pipeline)
    if variant == "memory-backend":
        return Flujo(pipeline, state_backend=InMemoryBackend())
    raise ValueError(variant)


def _log_level(variant: str) -> int:
    return logging.INFO if variant == "default" else logging.WARNING


def _sync_factory(variant: str, pipeline: Pipeline[Any, Any]) -> Callable[[], Callable[[], Any]]:
    def prepare() -> Callable[[], Any]:
        runner = make_runner(variant, pipeline)
        return lambda: runner.run(0).output

    return prepare


def _async_factory(
    variant: str, pipeline: Pipeline[Any, Any]
) -> Callable[[], Callable[[], Awaitable[Any]]]:
    def prepare() -> Callable[[], Awaitable[Any]]:
        runner = make_runner(variant, pipeline)

        async def run() -> Any:
            return (await runner.run_result_async(0)).output

        return run

    return prepare


def measure_variant(variant: str, settings: oc.Settings) -> dict[str, Any]:
    logging.getLogger("flujo").setLevel(_log_level(variant))
    workloads: dict[str, Any] = {}
    for workload in settings.workloads:
        print(f"[flujo 0.6.11] {variant}: {workload}", file=sys.stderr, flush=True)
        pipeline = build(workload, variant)
        modes = {"sync": oc.measure_sync(_sync_factory(variant, pipeline), workload, settings)}
        if variant == "in-memory":
            modes["async"] = oc.measure_async(_async_factory(variant, pipeline), workload, settings)
        workloads[workload] = oc.summarize(modes)
    return {"description": VARIANTS[variant], "workloads": workloads}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    oc.add_common_args(parser)
    parser.add_argument(
        "--variants",
        default=",".join(DEFAULT_VARIANTS),
        help=f"comma-separated subset of {','.join(VARIANTS)}",
    )
    args = parser.parse_args()
    settings = oc.settings_from_args(args)
    variants = [v.strip() for v in str(args.variants).split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s): {', '.join(unknown)}")

    version = importlib.metadata.version("flujo")
    if version != "0.6.11":
        raise SystemExit(f"expected flujo 0.6.11 in this interpreter, found {version}")
    environment = oc.environment()  # before measuring: the load average seen at the start
    results = {v: measure_variant(v, settings) for v in variants}
    oc.emit(
        {
            "engine": "Flujo 0.6.11",
            "package": "flujo",
            "version": version,
            "step": "Step.from_callable(async def ainc(x: int) -> int)",
            "environment": environment,
            "cwd": os.getcwd(),
            "variants": results,
        },
        settings.workloads,
    )


if __name__ == "__main__":
    main()
