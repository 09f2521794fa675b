"""The layer-by-layer profile times every layer, each over pairs of its own."""

from __future__ import annotations

import re

import pytest

from router.v1 import routing_pb2
from tests.benchmarks import profile_layers


def test_every_layer_gets_a_row_with_one_figure_per_round(
    capsys: pytest.CaptureFixture[str],
) -> None:
    profile_layers.main(["--agents", "20", "--pairs", "5", "--rounds", "2"])
    out = capsys.readouterr().out
    rows = re.findall(
        r"^\| (routing|API|gRPC|two no-op)[^|]*\| (\S+) ms \|.*\| (\S+) / (\S+) \|$", out, re.M
    )
    assert [row[0] for row in rows] == ["routing", "API", "gRPC", "two no-op"]
    for _, median, *rounds in rows:
        assert float(median) > 0
        assert all(float(each) > 0 for each in rounds)


def test_a_pair_that_is_not_assigned_stops_the_run() -> None:
    reply = routing_pb2.AssignResponse(result=routing_pb2.AssignResponse.RESULT_QUEUED)
    with pytest.raises(RuntimeError, match="not assigned"):
        profile_layers.complete_request(reply)


def test_history_pairs_run_first_and_the_header_says_how_many(
    capsys: pytest.CaptureFixture[str],
) -> None:
    profile_layers.main(["--agents", "20", "--pairs", "3", "--rounds", "1", "--history", "15"])
    out = capsys.readouterr().out
    assert "history=15:" in out
    assert out.count("\n| ") >= 5  # the header row and the four layers


def test_a_negative_history_is_refused() -> None:
    with pytest.raises(SystemExit):
        profile_layers.main(["--history", "-1"])


def test_a_pause_adds_the_paced_cpu_and_its_ratio_to_every_row(
    capsys: pytest.CaptureFixture[str],
) -> None:
    profile_layers.main(["--agents", "20", "--pairs", "4", "--rounds", "2", "--pause-ms", "1"])
    out = capsys.readouterr().out
    assert "pause=1 ms:" in out
    assert "| CPU per pair, 1 ms apart | paced ÷ back to back |" in out
    rows = re.findall(
        r"^\| (routing|API|gRPC|two no-op)[^|]*\| (\S+) ms \|.*\| (\S+) ms \| (\S+)x \|$",
        out,
        re.M,
    )
    assert [row[0] for row in rows] == ["routing", "API", "gRPC", "two no-op"]
    for _, back_to_back, paced, ratio in rows:
        assert float(paced) > 0
        # The figures are printed to 0.01 ms, the ratio from the unrounded ones.
        assert float(ratio) == pytest.approx(float(paced) / float(back_to_back), rel=0.1)


def test_without_a_pause_the_table_has_no_paced_columns(
    capsys: pytest.CaptureFixture[str],
) -> None:
    profile_layers.main(["--agents", "20", "--pairs", "3", "--rounds", "1"])
    out = capsys.readouterr().out
    assert "apart" not in out
    assert "pause=" not in out


@pytest.mark.parametrize("pause", ["-1", "1001"])
def test_a_pause_out_of_range_is_refused(pause: str) -> None:
    with pytest.raises(SystemExit):
        profile_layers.main(["--pause-ms", pause])
