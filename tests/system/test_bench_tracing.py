"""The tracing benchmark runs its three modes against the service and prints each."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.benchmarks import bench_tracing, results


@pytest.mark.timeout(120)
def test_the_tracing_benchmark_compares_the_modes_in_a_round(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One short round: each mode's CPU per pair with its ratio to ``off``, printed and
    written as JSON, and the spans the traced modes exported reached the receiver."""
    path = tmp_path / "tracing.json"
    arguments = "--agents 30 --rate 40 --seconds 0.5 --rounds 1 --ratio 0.5 --json"
    bench_tracing.main([*arguments.split(), str(path)])
    printed = capsys.readouterr().out
    (document,) = results.read([path])
    assert (document["bench"], document["quick"]) == ("bench_tracing", False)
    modes = {record["mode"]: record for record in document["records"]}
    assert list(modes) == ["off", "every request traced", "0.5 of requests traced"]
    assert modes["off"]["ratio_to_off"] == 1.0
    assert all(record["cpu_ms_per_pair"] > 0 for record in modes.values())
    (row,) = [line for line in printed.splitlines() if line.startswith("round 1:")]
    assert re.fullmatch(
        r"round 1: off [\d.]+ ms \(1\.00x\), on [\d.]+ ms \([\d.]+x\), ratio [\d.]+ ms \([\d.]+x\)",
        row,
    )
    (median,) = [line for line in printed.splitlines() if line.startswith("median:")]
    spans = int(median.rsplit("spans received ", 1)[1].replace(",", ""))
    # "on" traces every one of at least 100 warm-up pairs: 6 spans a pair (an Assign's
    # server span with three children, a Complete's with one).
    assert spans >= 600


def test_the_tracing_benchmark_refuses_a_ratio_out_of_range() -> None:
    with pytest.raises(SystemExit) as exit_info:
        bench_tracing.main(["--ratio", "1.5"])
    assert exit_info.value.code == 2
