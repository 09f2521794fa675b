"""The records benchmark prints bytes per call of each kind of key, and their lifetimes."""

from __future__ import annotations

import re

import pytest

from tests.benchmarks import bench_records


def test_the_records_benchmark_prints_each_kind_of_key(capsys: pytest.CaptureFixture[str]) -> None:
    bench_records.main(["--pairs", "20", "--attributes", "0"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| attributes | key | bytes per call | kept |"
    rows = {
        found[1]: (int(found[2].replace(",", "")), found[3])
        for line in lines[2:]
        if (found := re.fullmatch(r"\| 0 \| `?([\w:]+)`? \| ([\d,]+) \| ([^|]*) \|", line))
    }
    assert rows["call"][1].strip() == rows["asg"][1].strip() == "168 h"  # a week, the default
    assert rows["req"][1].strip() == "24 h"
    assert rows["all"][0] >= rows["call"][0] + rows["asg"][0] + rows["timeline"][0] > 0
