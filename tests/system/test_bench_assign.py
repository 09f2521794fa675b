"""The Assign benchmark measures decisions (every fixed-load phase routes calls of its own) and
says where the service's CPU went."""

from __future__ import annotations

import re

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
    # Each phase says how fast the machine was just before it.
    calibs = [re.findall(r"\| calib (\S+) ms", line) for line in offered]
    assert all(len(found) == 1 and float(found[0]) > 0 for found in calibs)


def test_the_service_processes_cpu_is_split_into_user_and_kernel_time(
    capsys: pytest.CaptureFixture[str],
) -> None:
    sizes = ["--agents", "20", "--calls", "5", "--seconds", "0.5", "--threads", "2"]
    bench_assign.main([*sizes, "--server", "process", "--rate", "40", "--rate-seconds", "0.5"])
    out = capsys.readouterr().out
    budgets = re.findall(
        r"service (\S+) ms \(user (\S+), kernel (\S+); (\d+) context switches\)", out
    )
    assert len(budgets) == 2  # the throughput phase and the fixed load
    for service, user, kernel, switches in budgets:
        assert float(service) > 0
        assert float(kernel) >= 0
        assert abs(float(user) + float(kernel) - float(service)) <= 0.02  # rounding only
        # Two RPCs a pair at least hand a request between the server's threads.
        assert int(switches) >= 2
