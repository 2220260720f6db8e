"""The pages of ``flujo ui``, rendered by Jinja2 (autoescaped) from the runs' view records.

Kept apart from the routes (:mod:`flujo.ui.app`) so that what a page shows
is plain functions of a source and a run: ``runs_page``, ``run_page``, a
node's details (``step_fragment``), the actions box, the live payload
(``changes``) and the actions themselves (``act``).
"""

from __future__ import annotations

import asyncio
import getpass
import json
import time
from collections.abc import AsyncGenerator, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from jinja2 import Environment, PackageLoader, select_autoescape

from flujo.transcript.values import natural_order
from flujo.ui.cluster import ClusterRuns
from flujo.ui.graph import Graph, layout, node_statuses
from flujo.ui.local import LocalRuns, step_lines
from flujo.ui.view import MISSING, ActionError, RunView, StepInfo, css_class

__all__ = ["PAGE_SIZE", "Pages", "Source"]

Source = LocalRuns | ClusterRuns
PAGE_SIZE = 25
VALUE_CHARS = 20_000
"""A value longer than this (as indented JSON) is cut in the page, with a note."""
SHOWN_INSTANCES = 10
POLL_SECONDS = 0.25
PHASES = ["running", "awaiting approval", "succeeded", "failed", "cancelled", "interrupted"]


def _user() -> str:
    """Who answers: the user running ``flujo ui``, as ``flujo approve`` records it."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


def _when(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _json_text(value: Any) -> str:
    if value is MISSING:
        return ""
    text = (
        value
        if isinstance(value, str)
        else json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True, default=str)
    )
    if len(text) > VALUE_CHARS:
        return text[:VALUE_CHARS] + f"\n… ({len(text):,} characters, first {VALUE_CHARS:,} shown)"
    return text


class Pages:
    def __init__(self, sources: Mapping[str, Source], token: str) -> None:
        self.sources = dict(sources)
        self.token = token
        self.env = Environment(
            loader=PackageLoader("flujo.ui", "templates"),
            autoescape=select_autoescape(["html", "svg"], default=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["json_text"] = _json_text
        self.env.filters["when"] = _when
        self.env.filters["phase_class"] = css_class
        self.env.globals.update(run_url=self.run_url, url=self.url, token=token, quote=quote)
        self._graphs: dict[str, Graph] = {}
        for name in self.env.list_templates():  # compiled now, not on a first request
            self.env.get_template(name)

    # --- addresses ----------------------------------------------------------------

    def target(self, params: Mapping[str, Any]) -> tuple[str, str]:
        source, key = str(params["source"]), str(params["key"])
        if source not in self.sources:
            raise ActionError(f"no {source} runs here (flujo ui --cluster shows PipelineRuns)")
        return source, key

    @staticmethod
    def url(kind: str, source: str, key: str) -> str:
        return f"/{kind}/{source}/{quote(key, safe='/')}"

    def run_url(self, source: str, key: str) -> str:
        return self.url("runs", source, key)

    # --- pages --------------------------------------------------------------------

    def _render(self, template: str, **context: Any) -> str:
        return self.env.get_template(template).render(**context)

    def error_page(self, message: str) -> str:
        return self._render("error.html", message=message, title="not found")

    def runs_page(self, query: Mapping[str, str]) -> str:
        source = query.get("source") or next(iter(self.sources))
        if source not in self.sources:
            raise ActionError(f"no {source} runs here")
        try:
            offset = max(0, int(query.get("offset", "0") or 0))
        except ValueError:
            offset = 0
        status = query.get("status") or None
        text = query.get("q", "")
        error = ""
        try:
            rows, more = self.sources[source].list(
                status=status, query=text, offset=offset, limit=PAGE_SIZE
            )
        except Exception as exc:  # a store or kubectl failure: shown, not a traceback
            rows, more, error = [], False, str(exc).splitlines()[0] if str(exc) else repr(exc)

        def page(at: int) -> str:
            args = {"source": source, "status": status or "", "q": text, "offset": at}
            return "/?" + urlencode({k: v for k, v in args.items() if v not in ("", None)})

        return self._render(
            "runs.html",
            title="runs",
            source=source,
            sources=list(self.sources),
            rows=rows,
            status=status or "",
            phases=PHASES,
            q=text,
            error=error,
            newer=page(max(0, offset - PAGE_SIZE)) if offset else None,
            older=page(offset + PAGE_SIZE) if more else None,
            offset=offset,
            now=time.time(),
        )

    def view(self, source: str, key: str) -> RunView:
        return self.sources[source].view(key)

    def exists(self, source: str, key: str) -> None:
        """Raises (a 404) when there is no such run; reads no journal."""
        runs = self.sources[source]
        if isinstance(runs, LocalRuns):
            runs.record(key)
        else:
            runs.get(key)

    def graph(self, view: RunView) -> Graph:
        digest = view.spec.model_dump_json()
        graph = self._graphs.get(digest)
        if graph is None:
            if len(self._graphs) > 32:
                self._graphs.clear()
            graph = self._graphs[digest] = layout(view.spec)
        return graph

    def payload(self, view: RunView) -> dict[str, Any]:
        """What the page's script applies on each change: the totals and each node's phase."""
        statuses = node_statuses(self.graph(view), view.steps, view.summary.phase)
        return {
            "summary": view.summary.as_json(),
            "nodes": {
                node: {"phase": css_class(s.phase), "label": s.phase, "note": s.note}
                for node, s in statuses.items()
            },
        }

    def run_page(self, source: str, key: str, query: Mapping[str, str]) -> str:
        """The page; a run not replayed yet is sent at once as its graph, coloured by the stream.

        Replaying a long journal takes a while (the state machine goes through
        every event): the page does not wait for it, its first event brings
        the phases, totals and output.
        """
        node = query.get("node", "")
        runs = self.sources[source]
        shell = False
        if isinstance(runs, LocalRuns) and not node:
            fresh = runs.fresh(key)
            shell = fresh is None
            view = runs.head(key) if fresh is None else fresh
        else:
            view = self.view(source, key)
        graph = self.graph(view)
        statuses = node_statuses(graph, view.steps, "running" if shell else view.summary.phase)
        return self._render(
            "run.html",
            title=f"{view.summary.pipeline} {view.summary.key}",
            run=view.summary,
            view=view,
            source=source,
            key=key,
            graph=graph,
            statuses=statuses,
            notice=query.get("notice", ""),
            error=query.get("error", ""),
            detail=self._step(source, key, view, node) if node else "",
            actions=self._actions(source, view),
            shell=shell,
        )

    def io_fragment(self, source: str, key: str) -> str:
        """The run's input and (once finished) output."""
        view = self.view(source, key)
        return self._render("io.html", view=view, run=view.summary)

    def _instances(self, view: RunView, name: str) -> list[StepInfo]:
        found = [s for s in view.steps.values() if s.name == name]
        found.sort(key=lambda s: natural_order(s.path), reverse=True)
        return found

    def _step(self, source: str, key: str, view: RunView, name: str) -> str:
        step = next((s for s in view.spec_steps() if s.name == name), None)
        if step is None:
            raise ActionError(f"no step {name!r} in this pipeline")
        instances = self._instances(view, name)
        lines: list[str] = []
        runs = self.sources[source]
        if instances and isinstance(runs, LocalRuns):
            lines = step_lines(runs.transcript(key), instances[0].path)
        return self._render(
            "step.html",
            name=name,
            step=step,
            instances=instances[:SHOWN_INSTANCES],
            hidden=max(0, len(instances) - SHOWN_INSTANCES),
            lines=lines,
            cluster=source == "cluster",
            namespace=key.partition("/")[0],
        )

    def step_fragment(self, source: str, key: str, name: str) -> str:
        return self._step(source, key, self.view(source, key), name)

    def _actions(self, source: str, view: RunView) -> str:
        return self._render(
            "actions.html",
            run=view.summary,
            source=source,
            can_cancel=source == "local" and not view.summary.finished,
        )

    def actions_fragment(self, source: str, key: str) -> str:
        return self._actions(source, self.view(source, key))

    # --- live ---------------------------------------------------------------------

    async def changes(self, source: str, key: str) -> AsyncGenerator[dict[str, Any] | None]:
        """The payload each time the run may have changed; ``None`` when nothing did."""
        runs = self.sources[source]
        if isinstance(runs, ClusterRuns):
            obj = await asyncio.to_thread(runs.get, key)
            spec = await asyncio.to_thread(runs.pipeline_of, obj)
            yield self.payload(runs.view_of(obj, spec))
            async for obj in runs.watch(key):
                yield self.payload(runs.view_of(obj, spec))
            return
        seen: Any = None
        while True:
            started = time.monotonic()
            version = await asyncio.to_thread(runs.version, key)
            if version != seen:
                seen = version
                view = await asyncio.to_thread(runs.view, key)
                yield self.payload(view)
            else:
                yield None
            # A long journal takes a while to replay: never spend more than a third of the time.
            await asyncio.sleep(max(POLL_SECONDS, 2 * (time.monotonic() - started)))

    # --- actions ------------------------------------------------------------------

    def act(self, verb: str, source: str, key: str, form: Mapping[str, str]) -> str:
        runs = self.sources[source]
        reason = form.get("reason", "").strip()
        if verb == "cancel":
            if not isinstance(runs, LocalRuns):
                raise ActionError("a PipelineRun is stopped with kubectl delete")
            return runs.cancel(key, reason or "cancelled from flujo ui")
        if verb in ("approve", "reject"):
            if verb == "reject" and not reason:
                raise ActionError("a rejection needs a reason")
            step = form.get("step") or None
            if isinstance(runs, LocalRuns):
                given = form.get("input", "")
                return runs.answer(
                    key,
                    approved=verb == "approve",
                    step=step,
                    input=given if given and verb == "approve" else None,
                    reason=reason or None,
                    by=_user(),
                )
            return runs.answer(
                key,
                approved=verb == "approve",
                step=step,
                input=form.get("input") or None if verb == "approve" else None,
                reason=reason or None,
            )
        raise ActionError(f"unknown action {verb!r}")
