"""The Assign benchmark measures decisions (every fixed-load phase routes calls of its own) and
says where the service's CPU went."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.benchmarks import bench_assign, results


def test_two_fixed_loads_decide_every_call_and_print_both(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Two phases at the same rate: had the second reused the first one's request ids, its
    # Assigns would come back as replays and the run would stop with an error.
    sizes = ["--agents", "20", "--calls", "5", "--seconds", "0.2", "--threads", "2"]
    path = tmp_path / "assign.json"
    bench_assign.main([*sizes, "--rate", "40,40", "--rate-seconds", "0.5", "--json", str(path)])
    out = capsys.readouterr().out
    offered = [line for line in out.splitlines() if "offered 40 Assign+Complete/s" in line]
    assert len(offered) == 2
    assert all("dropped 0" in line for line in offered)
    # Each phase says how fast the machine was just before it.
    calibs = [re.findall(r"\| calib (\S+) ms", line) for line in offered]
    assert all(len(found) == 1 and float(found[0]) > 0 for found in calibs)
    # The JSON document holds the printed figures, for the HTML report.
    (document,) = results.read([path])
    assert document["quick"] is True  # phases under 2 s: a smoke run
    kinds = [record["kind"] for record in document["records"]]
    assert kinds == ["saturation", "fixed_load", "fixed_load"]
    saturation, *loads = document["records"]
    assert saturation["agents"] == 20
    assert saturation["ratio_to_noop"] == pytest.approx(
        2 * saturation["pairs_per_s"] / saturation["noop_per_s"]
    )
    for load, line in zip(loads, offered, strict=True):
        assert (load["offered_per_s"], load["dropped"]) == (40, 0)
        assert f"p99 {load['p99_ms']:7.2f} ms" in line


def test_the_service_processes_cpu_and_own_assign_time_are_reported(
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
    # How much of the Assign time is the service's own, and the request-slot waits.
    shares = re.findall(r"own Assign time within 5 / 10 / 25 ms: (\S+) / (\S+) / (\S+) %", out)
    waits = re.findall(r"request slot waits (\d+) \((\S+) ms each\)", out)
    assert len(shares) == 2
    assert len(waits) == 2
    for within in shares:
        five, ten, twenty_five = map(float, within)
        assert 0 <= five <= ten <= twenty_five <= 100
        assert twenty_five > 0  # read from the replica's histogram, not a default


def test_only_the_ok_assigns_buckets_are_read_whatever_the_label_order() -> None:
    text = "\n".join(
        [
            'router_rpc_duration_seconds_bucket{method="Assign",code="OK",le="0.005"} 7.0',
            'router_rpc_duration_seconds_bucket{le="0.01",code="OK",method="Assign"} 9.0',
            'router_rpc_duration_seconds_bucket{method="Assign",code="OK",le="+Inf"} 12.0',
            'router_rpc_duration_seconds_bucket{method="Assign",code="UNAVAILABLE",le="0.025"} 3.0',
            'router_rpc_duration_seconds_bucket{method="Complete",code="OK",le="0.025"} 5.0',
        ]
    )
    # 5 ms, 10 ms, 25 ms (none of the OK Assigns' lines: 0), all.
    assert bench_assign._assign_buckets(text) == [7.0, 9.0, 0.0, 12.0]
