"""The Assign benchmark measures decisions: every fixed-load phase routes calls of its own."""

from __future__ import annotations

import pytest

from tests.benchmarks import bench_assign


def test_two_fixed_loads_decide_every_call_and_print_both(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Two phases at the same rate: had the second reused the first one's request ids, its
    # Assigns would come back as replays and the run would stop with an error.
    sizes = ["--agents", "20", "--calls", "5", "--seconds", "0.2", "--threads", "2"]
    bench_assign.main([*sizes, "--rate", "40,40", "--rate-seconds", "0.5"])
    out = capsys.readouterr().out
    offered = [line for line in out.splitlines() if "offered 40 Assign+Complete/s" in line]
    assert len(offered) == 2
    assert all("dropped 0" in line for line in offered)
