"""``flujo ui`` in a real browser: Debian's Chromium driven by Playwright.

The server is a ``flujo ui`` subprocess reading a run store that runs in this
process write to (as ``flujo run`` in another shell would); pages are opened,
clicked and watched as a person would. Every wait is for something the page
shows (a node's class, a badge's text) and bounded by :data:`WAIT_MS`.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from flujo import (
    AgentContext,
    AgentOutput,
    BaseAgent,
    ConditionalStep,
    Flujo,
    LoopStep,
    ParallelStep,
    Pipeline,
    Step,
)
from flujo.domain.usage import Usage
from flujo.runtime.store import RunStore

from tests.uikit import DOCS_IMG, WAIT_MS, chromium, expect, ui_server


class Priced(BaseAgent):
    """Answers at once, with usage that grows with the call (it stands for a model call)."""

    def __init__(self) -> None:
        self.calls = 0

    async def run(self, data: Any, context: AgentContext) -> AgentOutput:
        self.calls += 1
        tokens = 180 + 37 * self.calls
        usage = Usage(input_tokens=tokens, output_tokens=tokens // 4, cost_usd=tokens * 1.1e-5)
        return AgentOutput(f"{data} (reviewed)", usage)


class Gates(BaseAgent):
    """An agent whose call at each step path waits until the test opens that path's gate."""

    def __init__(self) -> None:
        self.gates: dict[str, threading.Event] = {}
        self.lock = threading.Lock()

    def gate(self, path: str) -> threading.Event:
        with self.lock:
            return self.gates.setdefault(path, threading.Event())

    async def run(self, data: Any, context: AgentContext) -> AgentOutput:
        gate = self.gate(context.step_path)
        for _ in range(3000):  # at most a minute; a cancelled call stops at once
            if gate.is_set():
                break
            await asyncio.sleep(0.02)
        assert gate.is_set(), f"the test never opened {context.step_path}"
        usage = Usage(input_tokens=120, output_tokens=30, cost_usd=0.0021)
        return AgentOutput(f"{context.step_path} done with {data}", usage)


def upper(x: Any) -> Any:
    return str(x).upper()


def xss(_: Any) -> Any:
    return "<script>window.pwned = 1</script><img src=x onerror='window.pwned = 2'>"


def plus_one(x: Any) -> Any:
    return x + 1 if isinstance(x, int) else 1


@pytest.fixture
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "runs.db"


def run_in_thread(flujo: Flujo, value: Any, run_id: str) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def go() -> None:
        out["result"] = flujo.run(value, run_id=run_id)

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    return thread, out


def run_now(flujo: Flujo, value: Any, run_id: str) -> Any:
    """A whole run, in a thread: Playwright's sync API holds an event loop in this one."""
    thread, out = run_in_thread(flujo, value, run_id)
    thread.join(120)
    assert not thread.is_alive()
    return out["result"]


def live_pipeline(gates: Gates) -> Pipeline:
    return Pipeline(
        [
            Step("outline", gates),
            ParallelStep(
                "research", {"web": Step("search", gates), "notes": Step("recall", gates)}
            ),
            Step("write", gates),
            Step("shout", upper),
        ],
        name="article",
    )


def node(page: Any, name: str, phase: str) -> None:
    """Wait until the node of step ``name`` shows ``phase`` (its class)."""
    page.wait_for_selector(f"#n-{name}.phase-{phase}", state="attached", timeout=WAIT_MS)


def test_the_list_shows_runs_with_phase_and_totals_and_filters_and_pages(
    browser: Any, store_path: Path, tmp_path: Path
) -> None:
    priced = Priced()
    names = ["triage", "summarise", "translate"]
    with RunStore(store_path) as store:
        for i in range(27):
            pipeline = Pipeline([Step("review", priced), Step("shout", upper)], name=names[i % 3])
            run_now(Flujo(pipeline, store=store), f"hello {i}", f"ok-{i:02d}")
        failing = Pipeline([Step("boom", lambda _: 1 / 0)], name="divider")
        run_now(Flujo(failing, store=store), 0, "broken")
    with ui_server(["--store", str(store_path)], tmp_path) as ui:
        page = browser.new_page(viewport={"width": 1100, "height": 700})
        page.goto(ui.url + "/")
        rows = page.locator("#runs tbody tr")
        assert rows.count() == 25  # one page
        first = page.locator("#runs tbody tr").first
        assert first.get_attribute("data-run") == "broken"
        assert first.locator(".badge").inner_text() == "failed"
        assert "divider" in first.inner_text()
        last = page.locator('tr[data-run="ok-26"]').inner_text()
        assert "2/2" in last and "translate" in last and "1,473" in last  # 1,179 + 294 tokens
        page.screenshot(path=str(DOCS_IMG / "ui-runs.png"))
        page.click("text=older →")
        assert page.locator("#runs tbody tr").count() == 3
        page.goto(ui.url + "/")
        page.select_option("select[name=status]", "failed")
        page.click("button:text('filter')")
        page.wait_for_url("**status=failed**", timeout=WAIT_MS)
        assert [r.get_attribute("data-run") for r in page.locator("#runs tbody tr").all()] == [
            "broken"
        ]
        page.fill("input[name=q]", "ok-2")
        page.select_option("select[name=status]", "")
        page.click("button:text('filter')")
        page.wait_for_url("**q=ok-2**", timeout=WAIT_MS)
        shown = [r.get_attribute("data-run") for r in page.locator("#runs tbody tr").all()]
        assert shown == [f"ok-{i}" for i in range(26, 19, -1)]
        page.click("text=ok-26")
        page.wait_for_url("**/runs/local/ok-26", timeout=WAIT_MS)
        assert page.locator("#run-phase").inner_text() == "succeeded"


def test_a_running_pipeline_turns_nodes_from_running_to_succeeded_without_a_reload(
    browser: Any, store_path: Path, tmp_path: Path
) -> None:
    gates = Gates()
    with RunStore(store_path) as store, ui_server(["--store", str(store_path)], tmp_path) as ui:
        thread, out = run_in_thread(Flujo(live_pipeline(gates), store=store), "tides", "live")
        page = browser.new_page(viewport={"width": 1280, "height": 820})
        page.goto(ui.url + "/runs/local/live")
        node(page, "outline", "running")
        page.evaluate("window.sameDocument = 'yes'")  # gone if the page ever reloads
        assert page.locator("#n-search").get_attribute("class").endswith("phase-pending")
        gates.gate("outline").set()
        node(page, "outline", "succeeded")
        node(page, "search", "running")
        node(page, "recall", "running")
        gates.gate("research/web/search").set()
        node(page, "search", "succeeded")
        expect(page.locator("#run-progress")).to_have_text(
            "2/3", timeout=WAIT_MS
        )  # of the steps started so far
        page.click("#n-outline")  # a finished step's details, while the run goes on
        page.wait_for_selector(".step-detail[data-node=outline]", timeout=WAIT_MS)
        assert "outline done with tides" in page.locator("#detail pre.output").inner_text()
        assert "150 tokens" in page.locator("#detail").inner_text()
        gates.gate("research/notes/recall").set()
        node(page, "recall", "succeeded")
        node(page, "write", "running")
        gates.gate("write").set()
        node(page, "write", "succeeded")
        node(page, "shout", "succeeded")
        expect(page.locator("#run-phase")).to_have_text("succeeded", timeout=WAIT_MS)
        expect(page.locator("#run")).to_have_attribute("data-live", "ended", timeout=WAIT_MS)
        assert page.evaluate("window.sameDocument") == "yes"
        assert int(page.locator("#run").get_attribute("data-updates")) >= 4
        assert page.locator("#run-tokens").inner_text() == "600"
        thread.join(30)
        assert out["result"].success


def test_a_run_page_shows_loops_collapsed_the_branch_taken_and_branches_side_by_side(
    browser: Any, store_path: Path, tmp_path: Path
) -> None:
    gates, priced = Gates(), Priced()
    newsletter = Pipeline(
        [
            Step("outline", priced),
            LoopStep(
                "revise",
                [
                    Step("draft", priced),
                    ConditionalStep(
                        "check",
                        "'trim' if previous_step | length > 12 else 'keep'",
                        {"trim": [Step("shorten", upper)], "keep": [Step("pass", upper)]},
                    ),
                ],
                max_iterations=3,
                on_max_iterations="succeed",
            ),
            ParallelStep("publish", {"web": Step("post", gates), "mail": Step("send", priced)}),
            Step("notify", upper),
        ],
        name="newsletter",
    )
    with RunStore(store_path) as store, ui_server(["--store", str(store_path)], tmp_path) as ui:
        thread, out = run_in_thread(Flujo(newsletter, store=store), "spring issue", "spring")
        page = browser.new_page(viewport={"width": 1280, "height": 1160})
        page.goto(ui.url + "/runs/local/spring")
        node(page, "post", "running")
        node(page, "send", "succeeded")
        assert page.locator("#n-revise .note").text_content() == "3 iterations"
        assert page.locator("#n-draft .note").text_content() == "iteration 3"
        assert page.locator("#n-check .note").text_content() == "→ trim"
        node(page, "shorten", "succeeded")
        node(page, "pass", "skipped")  # the branch not taken
        node(page, "notify", "pending")
        post, send = (
            page.locator("#n-post rect").bounding_box(),
            page.locator("#n-send rect").bounding_box(),
        )
        assert post["y"] == send["y"] and post["x"] + post["width"] <= send["x"]  # side by side
        page.click("#n-draft")
        page.wait_for_selector(".step-detail[data-node=draft]", timeout=WAIT_MS)
        paths = page.locator("#detail .instance").evaluate_all(
            "els => els.map(e => e.dataset.path)"
        )
        assert paths == [f"revise/iter-{i}/draft" for i in (3, 2, 1)]  # latest first
        assert (
            "StepSucceeded revise/iter-3/draft"
            in page.locator("#detail pre.transcript").inner_text()
        )
        page.screenshot(path=str(DOCS_IMG / "ui-run.png"), full_page=True)
        gates.gate("publish/web/post").set()
        node(page, "notify", "succeeded")
        thread.join(30)
        assert out["result"].success


def test_a_step_output_opens_and_markup_in_it_renders_as_text(
    browser: Any, store_path: Path, tmp_path: Path
) -> None:
    with RunStore(store_path) as store:
        pipeline = Pipeline([Step("inject", xss), Step("shout", upper)], name="markup")
        run_now(Flujo(pipeline, store=store), "<i>input</i>", "xss")
    with ui_server(["--store", str(store_path)], tmp_path) as ui:
        page = browser.new_page()
        page.goto(ui.url + "/runs/local/xss")
        page.click("#n-inject")
        output = page.locator("#detail pre.output")
        output.wait_for(timeout=WAIT_MS)
        assert output.inner_text() == (
            "<script>window.pwned = 1</script><img src=x onerror='window.pwned = 2'>"
        )
        assert page.locator("#detail script, #detail img, main img").count() == 0
        assert page.locator("main i, main b").count() == 0  # the run's input is text too
        expect(page.locator("section.io")).to_contain_text("<i>input</i>", timeout=WAIT_MS)
        assert page.evaluate("typeof window.pwned") == "undefined"
        # Opened by address (no script): the same details, rendered by the server.
        page.goto(ui.url + "/runs/local/xss?node=shout")
        assert (
            "<SCRIPT>WINDOW.PWNED = 1</SCRIPT>" in page.locator("#detail pre.output").inner_text()
        )
        assert page.evaluate("typeof window.pwned") == "undefined"


def test_actions_need_the_token_and_no_cors_or_foreign_host_is_served(
    store_path: Path, tmp_path: Path
) -> None:
    gates = Gates()
    with RunStore(store_path) as store, ui_server(["--store", str(store_path)], tmp_path) as ui:
        thread, out = run_in_thread(Flujo(live_pipeline(gates), store=store), "x", "guarded")
        with httpx.Client(base_url=ui.url, timeout=30) as http:
            page = http.get("/runs/local/guarded", headers={"Origin": "http://evil.example"})
            assert page.status_code == 200
            assert not [h for h in page.headers if h.lower().startswith("access-control-")]
            assert "default-src 'self'" in page.headers["content-security-policy"]
            no_token = http.post("/act/cancel/local/guarded", data={"reason": "x"})
            assert no_token.status_code == 403
            wrong = http.post("/act/cancel/local/guarded", data={"csrf": "guess", "reason": "x"})
            assert wrong.status_code == 403
            token = page.text.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
            cross = http.post(
                "/act/cancel/local/guarded",
                data={"csrf": token},
                headers={"Origin": "http://evil.example"},
            )
            assert cross.status_code == 403
            rebound = http.get("/", headers={"Host": "evil.example"})
            assert rebound.status_code == 400  # DNS rebinding: only the loopback names
            assert http.get("/runs/local/guarded").status_code == 200
            assert store.get("guarded").cancel is None  # nothing was done
            assert http.get("/runs/local/nope").status_code == 404
        for path in ("outline", "research/web/search", "research/notes/recall", "write"):
            gates.gate(path).set()
        thread.join(30)
        assert out["result"].success


def test_cancel_from_the_run_page_stops_a_live_run(
    browser: Any, store_path: Path, tmp_path: Path
) -> None:
    gates = Gates()
    with RunStore(store_path) as store, ui_server(["--store", str(store_path)], tmp_path) as ui:
        thread, out = run_in_thread(Flujo(live_pipeline(gates), store=store), "x", "stop-me")
        page = browser.new_page()
        page.goto(ui.url + "/runs/local/stop-me")
        node(page, "outline", "running")
        page.fill("form.cancel input[name=reason]", "changed my mind")
        page.click("form.cancel button")
        page.wait_for_selector(".notice", timeout=WAIT_MS)
        assert "cancellation requested" in page.locator(".notice").inner_text()
        node(page, "outline", "cancelled")
        expect(page.locator("#run-phase")).to_have_text("cancelled", timeout=WAIT_MS)
        assert "changed my mind" in page.locator("#run-message").inner_text()
        # A finished run has no cancel: the actions are fetched again once the phase changes.
        expect(page.locator("form.cancel")).to_have_count(0, timeout=WAIT_MS)
        thread.join(30)
        assert out["result"].status == "cancelled"


APPROVAL = """
apiVersion: flujo.dev/v1alpha1
kind: Pipeline
metadata: {name: publish}
spec:
  steps:
    - {name: draft, agent: builtin.upper}
    - name: review
      approval: {message: "Publish {{ previous_step }}?"}
    - {name: send, agent: builtin.lower}
"""


def flujo_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flujo", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_approve_and_reject_a_waiting_step_from_the_run_page(
    browser: Any, store_path: Path, tmp_path: Path
) -> None:
    (tmp_path / "p.yaml").write_text(APPROVAL)
    for run_id in ("yes", "no"):
        started = flujo_cli(
            tmp_path, "run", "p.yaml", "--input", "hi", "--run-id", run_id, "--store", "runs.db"
        )
        assert started.returncode == 0, started.stderr
    with ui_server(["--store", str(store_path)], tmp_path) as ui:
        page = browser.new_page(viewport={"width": 1280, "height": 760})
        page.goto(ui.url + "/runs/local/yes")
        assert page.locator("#run-phase").inner_text() == "awaiting approval"
        node(page, "review", "awaiting")
        assert page.locator(".approval code").inner_text() == "review"
        page.click("#n-review")
        page.wait_for_selector(".step-detail[data-node=review]", timeout=WAIT_MS)
        assert "Publish HI?" in page.locator("#detail").inner_text()
        page.click(".approval button.approve")
        page.wait_for_selector(".notice", timeout=WAIT_MS)
        assert "review approved" in page.locator(".notice").inner_text()
        node(page, "send", "succeeded")
        expect(page.locator("#run-phase")).to_have_text("succeeded", timeout=WAIT_MS)
        expect(page.locator("#run-output")).to_have_text("hi", timeout=WAIT_MS)
        expect(page.locator(".approval")).to_have_count(0, timeout=WAIT_MS)

        page.goto(ui.url + "/runs/local/no")
        node(page, "review", "awaiting")
        page.fill(".approval input[name=reason]", "not <em>now</em>")
        page.click(".approval button.reject")
        page.wait_for_selector(".notice", timeout=WAIT_MS)
        assert "review rejected" in page.locator(".notice").inner_text()
        expect(page.locator("#run-phase")).to_have_text("failed", timeout=WAIT_MS)
        node(page, "review", "failed")
        node(page, "send", "skipped")
        assert "not <em>now</em>" in page.locator("#run-message").inner_text()
    shown = flujo_cli(tmp_path, "runs", "show", "no", "--json", "--store", "runs.db")
    assert json.loads(shown.stdout)["status"] == "failed"
    transcript = flujo_cli(tmp_path, "runs", "show", "no", "--transcript", "--store", "runs.db")
    assert "ApprovalAnswered review rejected by" in transcript.stdout


def test_a_thousand_iteration_loop_page_time_to_interactive(
    browser: Any, store_path: Path, tmp_path: Path, record_property: Any, capsys: Any
) -> None:
    """Measured, reported, not asserted: a timing on a shared 2-core machine is no verdict."""
    loop = LoopStep(
        "refine",
        [
            Step("count", plus_one),
            ConditionalStep(
                "route",
                "'even' if previous_step % 2 == 0 else 'odd'",
                {"even": [Step("halve", plus_one)], "odd": [Step("keep", plus_one)]},
            ),
        ],
        max_iterations=1000,
        on_max_iterations="succeed",
    )
    with RunStore(store_path) as store:
        result = run_now(Flujo(Pipeline([loop], name="thousand"), store=store), 0, "thousand")
    assert result.success and result.state.steps["refine"].iteration == 1000
    with ui_server(["--store", str(store_path)], tmp_path) as ui:
        page = browser.new_page()
        url = ui.url + "/runs/local/thousand"
        timings = []
        for _ in range(3):  # the first open replays the journal (the page does not wait)
            started = time.perf_counter()
            page.goto(url)
            expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=WAIT_MS)
            ready = page.evaluate("window.flujoReady")
            page.wait_for_selector("#n-refine.phase-succeeded", state="attached", timeout=WAIT_MS)
            timings.append((ready, (time.perf_counter() - started) * 1000))
        assert page.locator("#n-refine .note").text_content() == "1000 iterations"
        # count's output is always odd here: the branch taken is `odd`, the other never ran.
        assert page.locator("#n-keep").get_attribute("class").endswith("phase-succeeded")
        assert page.locator("#n-halve").get_attribute("class").endswith("phase-skipped")
        assert page.locator("#n-route .note").text_content() == "→ odd"
        started = time.perf_counter()
        page.click("#n-count")
        page.wait_for_selector(".step-detail[data-node=count]", timeout=WAIT_MS)
        details_ms = (time.perf_counter() - started) * 1000
    (first, first_coloured), warm = timings[0], min(t[0] for t in timings[1:])
    for name, value in (
        ("tti_first_ms", first),
        ("coloured_first_ms", first_coloured),
        ("tti_warm_ms", warm),
        ("details_ms", details_ms),
    ):
        record_property(name, round(value))
    with capsys.disabled():
        print(
            f"\n1000-iteration loop run page: interactive {first:.0f} ms and every node coloured "
            f"{first_coloured:.0f} ms after navigation on first open (the journal replayed), "
            f"interactive {warm:.0f} ms once replayed; a node's details {details_ms:.0f} ms"
        )
