"""The benchmarks' JSON documents and the HTML report built from them."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import pytest

from tests.benchmarks import bench_simulator, bench_solver, report, results


def _document(bench: str, records: list[dict[str, Any]], *, quick: bool = False) -> dict[str, Any]:
    return {
        "bench": bench,
        "argv": ["--json", "<script>alert(1)</script>.json"],
        "quick": quick,
        "finished": "2026-12-05T04:30:00+00:00",
        "machine": {"processor": "test CPU", "cores": 2, "python": "3.11", "libraries": {}},
        "records": records,
    }


def _assign(kind: str, **numbers: float) -> dict[str, Any]:
    return {"kind": kind, "agents": 1000, "replicas": 2, "server": "process", **numbers}


DOCUMENTS = [
    _document(
        "bench_assign",
        [
            _assign("saturation", ratio_to_noop=0.17),
            _assign("fixed_load", offered_per_s=300, p50_ms=2.2, p99_ms=4.4, max_ms=9.0),
            _assign("fixed_load", offered_per_s=300, p50_ms=2.9, p99_ms=12.0, max_ms=30.0),
            _assign("fixed_load", offered_per_s=100, p50_ms=2.0, p99_ms=3.0, max_ms=5.0),
            # The service in the load generator's process: shown, not judged (had 0.6
            # counted, the saturation verdict would be "mixed").
            {**_assign("saturation", ratio_to_noop=0.6), "server": "thread"},
            {
                **_assign("fixed_load", offered_per_s=300, p50_ms=3.0, p99_ms=80.0, max_ms=99.0),
                "server": "thread",
            },
        ],
    ),
    _document(
        "bench_solver",
        [
            {
                "kind": "decision",
                "calls": 100,
                "agents": 1000,
                "repeats": 30,
                "median_ms": 6.2,
                "p99_ms": 6.5,
                "max_ms": 6.6,
                "target_p99_ms": 10.0,
            }
        ],
    ),
    _document(
        "bench_simulator",
        [
            {
                "kind": "vs_ciw",
                "simulator": "ours: longest-idle",
                "ratio_to_ciw": 2.9,
                "target_ratio": 3.0,
                "repeats": 1,
            },
            {"kind": "day", "calls": 63616, "wall_s": 12.0, "repeats": 1, "target_s": 30.0},
        ],
        quick=True,
    ),
]


DOCUMENTS.append(
    _document(
        "bench_admin",
        [
            {
                "kind": "admin",
                "agents": 1000,
                "phase": "admin + Assign",
                "updates_per_s": 203.4,
                "update_p99_ms": 31.0,
                "pairs_per_s": 101.2,
                "assign_p99_ms": 44.0,
                "errors": 0,
            }
        ],
    )
)


DOCUMENTS.append(
    _document(
        "bench_tracing",
        [
            {
                "kind": "tracing",
                "agents": 1000,
                "offered_per_s": 150.0,
                "round": 1,
                "mode": "every request traced",
                "cpu_ms_per_pair": 3.36,
                "ratio_to_off": 1.154,
            }
        ],
    )
)


def test_each_target_gets_a_verdict_from_its_full_size_figures() -> None:
    rows = report.rows_of(DOCUMENTS)
    verdicts = {target.name: report.verdict(target, rows) for target in report.TARGETS}
    assert list(verdicts.values()) == [
        "missed",  # saturation 0.17 < 0.5
        "mixed",  # p99 at 300 pairs/s: 4.4 ms meets 10 ms, 12.0 does not; 100 pairs/s not counted
        "met",  # solver 100 x 1,000: 6.5 ms
        "not measured",  # solver 1,000 x 10,000
        "smoke run only",  # longest-idle: only a quick run measured it (2.9x is not judged)
        "not measured",  # balanced
        "smoke run only",  # the day
    ]


def test_the_page_shows_every_target_a_chart_per_measured_one_and_escapes_what_it_quotes() -> None:
    page = report.page(DOCUMENTS)
    for target in report.TARGETS:
        assert html.escape(target.name) in page
        assert target.limits  # each verdict says what limits the figure
        assert html.escape(target.limits) in page
    assert page.count('class="missed"') == 1
    assert page.count('class="mixed"') == 1
    # Five targets measured, plus the latency and the solver charts.
    assert page.count("<img ") == 5 + 2
    assert "<script>" not in page
    assert "&lt;script&gt;" in page
    assert "test CPU" in page
    # The figures without a target: a table per kind, rates without decimals.
    assert "<h3>Admin writes under Assign load</h3>" in page
    assert "<td>admin + Assign</td><td>203</td><td>31.00</td><td>101</td>" in page
    assert "<h3>Assign at fixed offered loads</h3>" in page
    assert "Tracing&#x27;s cost" in page
    assert "<td>150</td><td>1</td><td>every request traced</td><td>3.36</td><td>1.15</td>" in page


def test_the_command_line_reads_a_folder_and_writes_the_page(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for k, document in enumerate(DOCUMENTS):
        (tmp_path / f"{k}.json").write_text(json.dumps(document))
    out = tmp_path / "site" / "report.html"
    report.main([str(tmp_path), "--out", str(out)])
    assert out.read_text().startswith("<!DOCTYPE html>")
    printed = capsys.readouterr().out
    assert "missed  Assign saturation" in printed
    assert "wrote" in printed
    with pytest.raises(SystemExit) as exited:
        report.main([str(tmp_path / "no-such-folder")])
    assert exited.value.code == 2
    assert "not found:" in capsys.readouterr().err


def test_no_documents_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        report.main([str(tmp_path)])
    assert exited.value.code == 2
    assert "no JSON documents" in capsys.readouterr().err


def test_the_solver_benchmark_writes_the_rows_it_prints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "solver.json"
    bench_solver.main(["--quick", "--calls", "1,100", "--agents", "100,1000", "--json", str(path)])
    printed = capsys.readouterr().out
    (document,) = results.read([path])
    assert document["bench"] == "bench_solver"
    assert document["quick"] is True
    assert document["machine"]["cores"] >= 1
    cells = {(r["calls"], r["agents"]): r for r in document["records"]}
    assert set(cells) == {(1, 100), (1, 1000), (100, 100), (100, 1000)}
    assert cells[(100, 1000)]["target_p99_ms"] == 10.0
    assert cells[(1, 100)]["target_p99_ms"] is None
    for (calls, agents), cell in cells.items():
        assert 0 < cell["median_ms"] <= cell["p99_ms"] <= cell["max_ms"]
        # The printed row carries the same p99.
        assert f"| {calls:,} | {agents:,} | {cell['median_ms']:.2f} | {cell['p99_ms']:.2f} |" in (
            printed
        )


def test_the_simulator_benchmark_writes_its_ratios_and_the_day(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "simulator.json"
    bench_simulator.main(["--quick", "--json", str(path)])
    (document,) = results.read([path])
    assert document["quick"] is True
    ratios = {r["simulator"]: r for r in document["records"]}
    assert set(ratios) == {"ours: longest-idle", "ours: balanced"}
    assert ratios["ours: longest-idle"]["target_ratio"] == 3.0
    assert all(r["ratio_to_ciw"] > 0 for r in ratios.values())
    # The day, on a small scenario standing in for the 1,000 agents.
    small = Path(bench_simulator.__file__).parents[2] / "simulations/scenarios/erlang_check.yaml"
    monkeypatch.setattr(bench_simulator, "DAY_SCENARIO", small)
    table, day = bench_simulator.bench_day(1, seed=1)
    assert day["kind"] == "day"
    assert day["target_s"] == 30.0
    assert day["calls"] > 0
    assert f"{day['wall_s']:.1f} s" in table
