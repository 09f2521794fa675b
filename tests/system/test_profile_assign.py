"""The Assign profile splits a pair's CPU by step before its call tree."""

from __future__ import annotations

import re

import pytest

from router import assigner
from tests.benchmarks import profile_assign


@pytest.mark.timeout(120)
def test_the_profile_prints_each_steps_cpu_and_puts_the_functions_back(
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = {name: getattr(assigner, name) for name in ("decide", "fingerprint")}
    profile_assign.main(["--agents", "40", "--pairs", "30"])
    printed = capsys.readouterr().out
    rows = re.findall(r"^\| ([a-z ()A-Z]+) \| ([\d.]+) ms \| (\d+) % \|$", printed, re.M)
    names = [name for name, _, _ in rows]
    assert names == [name for name, _ in profile_assign.STEPS] + ["rest"]
    assert all(float(ms) > 0 for name, ms, _ in rows if name != "rest")
    assert 95 <= sum(int(share) for _, _, share in rows) <= 105  # rounded shares of one total
    assert {name: getattr(assigner, name) for name in before} == before  # put back
