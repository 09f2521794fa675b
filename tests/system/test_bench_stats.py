"""The GetStats benchmark prints one row per rate, both ways timed."""

from __future__ import annotations

import re

import pytest

from tests.benchmarks import bench_stats


def test_the_stats_benchmark_prints_each_rate(capsys: pytest.CaptureFixture[str]) -> None:
    bench_stats.main(["--rates", "1", "--reads", "2"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| calls/s | history entries |")
    row = re.fullmatch(
        r"\| 1 \| ([\d,]+) \| ([\d.,]+) ms \| ([\d.,]+) ms \| ([\d.]+)x \|", lines[2]
    )
    assert row is not None, lines
    assert int(row[1].replace(",", "")) >= 2 * 7_200  # an answered and a completed entry a call
