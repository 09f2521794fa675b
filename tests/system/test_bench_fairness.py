"""The fairness benchmark prints its one row: acme's GetStats and beta's GetAgent times."""

from __future__ import annotations

import re

import pytest

from tests.benchmarks import bench_fairness


def test_the_fairness_benchmark_prints_its_row(capsys: pytest.CaptureFixture[str]) -> None:
    bench_fairness.main(["--calls", "20", "--skills", "2", "--viewers", "1", "--seconds", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| acme's waiting calls | acme's viewers |")
    ms = r"([\d.]+) ms"
    row = re.fullmatch(rf"\| 20 \| 1 \| {ms} \| {ms} \| {ms} \| {ms} \|", lines[2])
    assert row is not None, lines
    assert float(row[2]) <= float(row[3]) <= float(row[4])
