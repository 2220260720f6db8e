"""Prometheus for real: alert rules under promtool, a live Prometheus scraping an embedded
runtime, and the dashboard and rules cross-checked against the metric catalogue."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from flujo import Flujo
from flujo.observability import agent_infos
from flujo.observability.metrics import ALLOWED_LABELS, FlujoMetrics, MetricsObserver, serve_metrics

from tests.test_observability import SCRIPTED, load, load_example

DOCS = Path(__file__).resolve().parent.parent / "docs"
RULES = DOCS / "prometheus" / "rules.yaml"
RULES_TEST = DOCS / "prometheus" / "rules_test.yaml"
DASHBOARD = DOCS / "grafana" / "flujo-dashboard.json"

PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus") or (
    "/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None
)
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not found: apt-get install prometheus (it ships promtool)"
)
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None, reason="the prometheus binary is not installed: apt-get install prometheus"
)


# --- promtool ----------------------------------------------------------------------------


@needs_promtool
def test_promtool_accepts_the_rules() -> None:
    assert PROMTOOL is not None
    done = subprocess.run(
        [PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


@needs_promtool
def test_promtool_unit_tests_of_the_rules_pass() -> None:
    assert PROMTOOL is not None
    done = subprocess.run(
        [PROMTOOL, "test", "rules", str(RULES_TEST)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=RULES_TEST.parent,
    )
    assert done.returncode == 0, done.stdout + done.stderr


# --- cross-checks against the catalogue -------------------------------------------------------


def rule_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return groups


def dashboard_exprs() -> list[str]:
    def walk(panels: list[dict[str, Any]]) -> Iterator[str]:
        for panel in panels:
            yield from (t["expr"] for t in panel.get("targets", []))
            yield from walk(panel.get("panels", []))

    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = list(walk(board["panels"]))
    exprs += [v["definition"] for v in board["templating"]["list"] if "definition" in v]
    return exprs


def rule_exprs() -> list[str]:
    return [str(rule["expr"]) for group in rule_groups() for rule in group["rules"]]


_NAME = re.compile(r"\b(flujo[a-zA-Z0-9_:]*)")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*\"")
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
_FUNCTION_LABELS = re.compile(r"label_values\([^,]+,\s*([a-zA-Z_]+)\)")


def metric_names(expr: str) -> set[str]:
    expr = re.sub(r"#.*", "", expr)  # PromQL comments (the rules' parameter marks)
    return set(_NAME.findall(expr))


def label_names(expr: str) -> set[str]:
    found = set(_MATCHER.findall(expr)) | set(_FUNCTION_LABELS.findall(expr))
    for group in _GROUPING.findall(expr):
        found |= {name.strip() for name in group.split(",") if name.strip()}
    return found


def test_every_metric_in_the_dashboard_and_rules_is_one_flujo_exports() -> None:
    exported = FlujoMetrics().sample_names()
    recorded = {r["record"] for g in rule_groups() for r in g["rules"] if "record" in r}
    known = exported | recorded
    used = {name for expr in dashboard_exprs() + rule_exprs() for name in metric_names(expr)}
    assert used, "no metric found: the parser is broken"
    assert used <= known, sorted(used - known)
    # And everything important is on the dashboard.
    on_board = {n for e in dashboard_exprs() for n in metric_names(e)}
    for must in (
        "flujo_runs_finished_total",
        "flujo_cost_usd_total",
        "flujo_tokens_total",
        "flujo_step_duration_seconds_bucket",
        "flujo_circuit_state",
        "flujo_operator_reconcile_duration_seconds_bucket",
        "flujo_operator_runs_pending",
    ):
        assert must in on_board, must


def test_queries_group_and_match_only_on_allowed_labels() -> None:
    allowed = ALLOWED_LABELS | {"le", "severity"}
    for expr in dashboard_exprs() + rule_exprs():
        assert label_names(expr) <= allowed, (expr, label_names(expr) - allowed)


def test_every_alert_is_documented_labelled_and_unit_tested() -> None:
    alerts = [r for g in rule_groups() for r in g["rules"] if "alert" in r]
    assert len(alerts) >= 6
    tested = {
        case["alertname"]
        for test in yaml.safe_load(RULES_TEST.read_text(encoding="utf-8"))["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    docs = (DOCS / "observability.md").read_text(encoding="utf-8")
    for alert in alerts:
        assert alert["labels"]["severity"] in ("info", "warning", "critical")
        assert alert["annotations"]["summary"] and alert["annotations"]["description"]
        assert alert["alert"] in tested, f"{alert['alert']} never fires in rules_test.yaml"
        assert alert["alert"] in docs, f"{alert['alert']} is not in docs/observability.md"


def test_the_dashboard_is_well_formed() -> None:
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert board["uid"] and board["title"] == "Flujo"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in board["templating"]["list"]}
    assert variables == {"datasource", "pipeline"}
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}"
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs))
    titles = " ".join(p["title"].lower() for p in board["panels"])
    for topic in ("success", "cost", "token", "latency", "circuit", "reconcile", "pending"):
        assert topic in titles, topic


# --- a real Prometheus --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def poll(what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
    """Call ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (httpx.HTTPError, KeyError, IndexError, ValueError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.25)
    pytest.fail(f"timed out waiting for {what}; last answer: {last!r}")


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, promql: str) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5)
        answer.raise_for_status()
        body = answer.json()
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def scalar(self, promql: str) -> float | None:
        result = self.query(promql)
        return float(result[0]["value"][1]) if result else None

    def wait_for(self, promql: str, expected: float, timeout: float = 60.0) -> float:
        def check() -> float | None:
            got = self.scalar(promql)
            return got if got is not None and abs(got - expected) < 1e-9 else None

        found: float = poll(f"{promql} == {expected}", check, timeout)
        return found


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[Prometheus, FlujoMetrics]]:
    assert PROMETHEUS is not None
    metrics = FlujoMetrics()
    server = serve_metrics(0, metrics.registry)
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(RULES)],
                "scrape_configs": [
                    {
                        "job_name": "flujo",
                        "static_configs": [{"targets": [f"127.0.0.1:{server.port}"]}],
                    }
                ],
            }
        ),
        encoding="utf-8",
    )
    log = (tmp_path / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1h",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"prometheus exited: {(tmp_path / 'prometheus.log').read_text()}")
            return httpx.get(f"{url}/-/ready", timeout=2).status_code == 200

        poll("prometheus to be ready", ready, timeout=60)
        yield Prometheus(url), metrics
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()
        server.close()


@needs_prometheus
def test_a_real_prometheus_scrapes_runs_of_an_embedded_runtime(
    prometheus: tuple[Prometheus, FlujoMetrics],
) -> None:
    prom, metrics = prometheus
    review, review_agents = load(SCRIPTED)
    linear, linear_agents = load_example("linear.yaml")
    review_runner = Flujo(
        review,
        agent_registry=review_agents,
        observers=[MetricsObserver(metrics, "review", agents=agent_infos(review_agents))],
    )
    linear_runner = Flujo(
        linear, agent_registry=linear_agents, observers=[MetricsObserver(metrics, "linear")]
    )
    # The target is up and scraped before anything ran.
    prom.wait_for('up{job="flujo"}', 1)
    assert review_runner.run("first").success
    prom.wait_for('sum(flujo_runs_finished_total{pipeline="review"})', 1)
    # More runs once the first was scraped, so rates have something to compare.
    for i in range(4):
        assert review_runner.run(f"draft {i}").success
    for i in range(3):
        assert linear_runner.run(f"hello {i}").success
    prom.wait_for('sum(flujo_runs_finished_total{outcome="succeeded"})', 8)
    prom.wait_for('sum by (pipeline) (flujo_runs_finished_total{pipeline="linear"})', 3)
    # Tokens as the governor counted them: 5 runs x (100 + 50 + 10 + 5).
    prom.wait_for('sum(flujo_tokens_total{pipeline="review"})', 5 * 165)
    prom.wait_for('sum(flujo_tokens_total{pipeline="review",direction="input"})', 5 * 110)
    cost = prom.scalar('sum(flujo_cost_usd_total{pipeline="review"})')
    assert cost == pytest.approx(5 * 0.011)
    # Business metrics in PromQL: tokens per run, and a recording rule evaluated by
    # this Prometheus from docs/prometheus/rules.yaml.
    per_run = prom.scalar(
        'sum(flujo_run_tokens_sum{pipeline="review"})'
        ' / sum(flujo_run_tokens_count{pipeline="review"})'
    )
    assert per_run == 165
    prom.wait_for('flujo:run_success_ratio:rate1h{pipeline="review"}', 1)
    step = prom.query(
        'flujo_step_duration_seconds_count{pipeline="review",agent="writer",outcome="succeeded"}'
    )
    assert [float(s["value"][1]) for s in step] == [5]
    rules = httpx.get(f"{prom.url}/api/v1/rules", timeout=5).json()["data"]["groups"]
    assert {g["name"] for g in rules} == {"flujo.recording", "flujo.alerts"}
