"""The queue time limit benchmark prints one row per depth, the chat expired at once."""

from __future__ import annotations

import re

import pytest

from tests.benchmarks import bench_expiry


def test_the_expiry_benchmark_prints_each_depth(capsys: pytest.CaptureFixture[str]) -> None:
    bench_expiry.main(["--depths", "700", "--ticks", "2"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| queued calls | queue µs/call | tick ms | ticks to expire |"
    row = re.fullmatch(r"\| 700 \| ([\d,]+) \| ([\d.,]+) \| (\d+) \|", lines[2])
    assert row is not None, lines
    assert row[3] == "1"  # a chat behind 700 emails expires on the first tick past its limit
