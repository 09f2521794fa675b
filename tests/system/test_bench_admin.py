"""The admin benchmark writes the rows it prints, for the HTML report."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.benchmarks import bench_admin, results


def test_the_admin_benchmark_writes_each_phase(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "admin.json"
    bench_admin.main(["--agents", "30", "--seconds", "0.5", "--json", str(path)])
    printed = capsys.readouterr().out
    (document,) = results.read([path])
    assert (document["bench"], document["quick"]) == ("bench_admin", False)
    phases = {record["phase"]: record for record in document["records"]}
    assert list(phases) == ["admin alone", "Assign alone", "admin + Assign"]
    alone, assign, both = phases.values()
    assert alone["updates_per_s"] > 0
    assert alone["pairs_per_s"] is None
    assert assign["updates_per_s"] is None
    assert assign["pairs_per_s"] > 0
    assert both["updates_per_s"] > 0
    assert both["pairs_per_s"] > 0
    assert all(record["errors"] == 0 for record in phases.values())
    assert f"| admin alone | {alone['updates_per_s']:,.0f} |" in printed
