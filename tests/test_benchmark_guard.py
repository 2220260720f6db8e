"""The benchmark regression guard's logic: comparison, baseline file, retry, exit code.

No timing is asserted here: measurements are replaced by fixed ratios wherever the
verdict depends on them.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from benchmarks import guard
from benchmarks.peers import overhead_common as oc


def test_compare_flags_a_2_5x_regression_and_passes_1_5x() -> None:
    verdicts = guard.compare({"chain": 250.0, "loop": 150.0}, {"chain": 100.0, "loop": 100.0}, 2.0)
    by_name = {v.workload: v for v in verdicts}
    assert not by_name["chain"].ok
    assert by_name["chain"].factor == pytest.approx(2.5)
    assert by_name["loop"].ok
    assert by_name["loop"].factor == pytest.approx(1.5)


def test_compare_threshold_is_strict_and_configurable() -> None:
    assert guard.compare({"chain": 20.0}, {"chain": 10.0}, 2.0)[0].ok  # exactly 2x passes
    assert not guard.compare({"chain": 20.1}, {"chain": 10.0}, 2.0)[0].ok
    assert not guard.compare({"chain": 15.0}, {"chain": 10.0}, 1.4)[0].ok
    assert guard.compare({"chain": 15.0}, {"chain": 10.0}, 3.0)[0].ok
    # getting faster never fails
    assert guard.compare({"chain": 1.0}, {"chain": 10.0}, 2.0)[0].ok


def test_a_workload_without_a_baseline_fails_with_a_hint() -> None:
    (verdict,) = guard.compare({"fanout": 5.0}, {"chain": 10.0}, 2.0)
    assert not verdict.ok
    assert "--update" in verdict.message()


def test_failure_message_names_ratio_baseline_and_factor() -> None:
    (verdict,) = guard.compare({"loop": 300.0}, {"loop": 120.0}, 2.0)
    message = verdict.message()
    assert message.startswith("loop: REGRESSION")
    assert "300" in message and "120" in message and "2.50x" in message and "2x" in message


def test_committed_baseline_is_complete_and_valid() -> None:
    ratios = guard.load_baseline()
    assert set(ratios) == set(guard.WORKLOADS) == {"chain", "loop", "fanout"}
    assert all(r > 0 for r in ratios.values())
    data = json.loads(guard.BASELINE_PATH.read_text())
    assert data["created"] and data["machine"]["cpu_count"] and data["machine"]["python"]
    for w in guard.WORKLOADS:
        entry = data["workloads"][w]
        # the ratio is what the two committed per-step times say (rounding aside)
        assert entry["ours_us_per_step"] / entry["baseline_us_per_step"] == pytest.approx(
            entry["ratio"], rel=0.01
        )


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        json.dumps({"workloads": {"chain": {"ratio": 1.0}, "loop": {"ratio": 2.0}}}),
        json.dumps(
            {"workloads": {"chain": {"ratio": 1}, "loop": {"ratio": 0}, "fanout": {"ratio": 3}}}
        ),
        json.dumps(
            {
                "workloads": {
                    "chain": {"ratio": 1},
                    "loop": {"ratio": "2"},
                    "fanout": {"ratio": 3},
                }
            }
        ),
        json.dumps({"ratios": {}}),
    ],
)
def test_an_invalid_or_incomplete_baseline_is_refused(tmp_path: Path, content: str) -> None:
    path = tmp_path / "baseline.json"
    path.write_text(content)
    with pytest.raises(guard.BaselineError):
        guard.load_baseline(path)


def test_a_missing_baseline_is_refused(tmp_path: Path) -> None:
    with pytest.raises(guard.BaselineError):
        guard.load_baseline(tmp_path / "absent.json")


@pytest.mark.parametrize("workload", oc.WORKLOADS)
def test_the_asyncio_baseline_does_the_same_work_as_the_workload(workload: str) -> None:
    elapsed = asyncio.run(guard.timed(guard.BASELINES[workload], workload))
    assert elapsed > 0  # timed() checked the output and the number of step executions


def test_a_wrong_run_is_caught() -> None:
    async def wrong() -> int:
        return oc.inc(0)

    with pytest.raises(guard.WrongRunError):
        asyncio.run(guard.timed(wrong, "chain"))


def _fake_measure(ratios_per_call: list[dict[str, float]], calls: list[tuple[str, ...]]) -> Any:
    def measure(workloads: tuple[str, ...], rounds: int) -> dict[str, dict[str, Any]]:
        calls.append(workloads)
        ratios = ratios_per_call[len(calls) - 1]
        return {
            w: {
                "ratio": ratios[w],
                "ours_us_per_step": ratios[w],
                "baseline_us_per_step": 1.0,
                "median_ratio": ratios[w],
            }
            for w in workloads
        }

    return measure


def _baseline_file(tmp_path: Path, ratios: dict[str, float]) -> Path:
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps({"workloads": {w: {"ratio": r} for w, r in ratios.items()}}))
    return path


def test_main_retries_a_regression_once_and_passes_if_it_was_noise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[tuple[str, ...]] = []
    first = {"chain": 250.0, "loop": 100.0, "fanout": 5.0}
    monkeypatch.setattr(guard, "measure", _fake_measure([first, {"chain": 110.0}], calls))
    base = _baseline_file(tmp_path, {"chain": 100.0, "loop": 100.0, "fanout": 5.0})
    code = guard.main(["--baseline", str(base), "--output", str(tmp_path / "out.json")])
    assert code == 0
    assert calls == [guard.WORKLOADS, ("chain",)]  # only the failing workload is re-measured
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["workloads"]["chain"]["ratio"] == 110.0
    assert "chain" in out["retried"]
    assert "benchmark guard: ok" in capsys.readouterr().out


def test_main_fails_on_a_confirmed_regression_with_one_line_per_workload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[tuple[str, ...]] = []
    first = {"chain": 250.0, "loop": 300.0, "fanout": 5.0}
    again = {"chain": 240.0, "loop": 310.0}
    monkeypatch.setattr(guard, "measure", _fake_measure([first, again], calls))
    base = _baseline_file(tmp_path, {"chain": 100.0, "loop": 100.0, "fanout": 5.0})
    code = guard.main(
        ["--baseline", str(base), "--output", str(tmp_path / "out.json"), "--threshold", "2"]
    )
    assert code == 1
    assert calls == [guard.WORKLOADS, ("chain", "loop")]
    failures = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("benchmark")]
    assert len(failures) == 2
    assert failures[0].startswith("benchmark guard: FAIL: chain: REGRESSION")
    assert "2.40x" in failures[0]
    assert failures[1].startswith("benchmark guard: FAIL: loop: REGRESSION")


def test_update_rewrites_the_baseline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, ...]] = []
    ratios = {"chain": 70.0, "loop": 130.0, "fanout": 5.5}
    monkeypatch.setattr(guard, "measure", _fake_measure([ratios], calls))
    path = tmp_path / "baseline.json"
    code = guard.main(["--update", "--baseline", str(path), "--output", str(tmp_path / "o.json")])
    assert code == 0
    assert guard.load_baseline(path) == ratios
    assert json.loads(path.read_text())["machine"]["cpu_count"]
