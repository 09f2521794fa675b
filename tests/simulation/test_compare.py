"""``compare``'s statistics: every policy against the first one listed, seed by seed (the
paired difference and its 95 % t interval), marks only where that interval excludes zero,
and intervals of bounded KPIs shown within their range."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from router.domain import Channel
from simulations import console, report
from simulations.compare import ComparisonInterrupted, run_comparison, summarize
from simulations.scenario import Scenario, parse_scenario
from simulations.trace import TraceCall, write_trace

SEEDS = (1, 2, 3, 4)
SERVICE = {  # balanced is the baseline
    "balanced": (0.60, 0.80, 0.70, 0.90),
    "longest_idle": (0.62, 0.815, 0.725, 0.915),  # 1.5 to 2.5 points better on every seed
    "best_skill": (0.75, 0.75, 0.60, 1.00),  # the highest mean, but a noisy difference
}
ASA = {
    "balanced": (10.0, 20.0, 15.0, 30.0),
    "longest_idle": (13.0, 23.5, 17.5, 33.0),  # 2.5 to 3.5 s slower on every seed
    "best_skill": (9.0, 21.0, 14.0, 31.0),
}
ABANDON = dict.fromkeys(SERVICE, (0.0, 0.0, 0.01, 0.0))  # an interval reaching below 0


def _kpis(scenario: Scenario, seed: int, policy: str) -> Mapping[str, Any]:
    k = SEEDS.index(seed)
    return {
        "overall": {
            "service_level": SERVICE[policy][k],
            "asa_s": ASA[policy][k],
            "abandon_rate": ABANDON[policy][k],
        }
    }


def _pool(name: str) -> Scenario:
    """A two-agent pool (its calls are never simulated here)."""
    return parse_scenario(
        {"pool": {"agents": 2, "rate_per_hour": 10, "mean_handle_s": 60}}, name=name
    )


@pytest.fixture
def compared() -> dict[str, Any]:
    """compare.json of three policies on four seeds with the KPIs above."""
    comparison = run_comparison(_pool("paired"), list(SERVICE), SEEDS, simulate_fn=_kpis)
    return comparison.to_json()


def test_each_policy_is_compared_with_the_first_seed_by_seed(compared: dict[str, Any]) -> None:
    """compare.json names the baseline and, per KPI and other policy, the mean paired
    difference with its 95 % t interval over the seeds and a verdict: better or worse only
    when the interval excludes zero."""
    assert compared["baseline"] == "balanced"
    level = compared["metrics"]["overall.service_level"]
    assert set(level["vs_baseline"]) == {"longest_idle", "best_skill"}
    paired = level["vs_baseline"]["longest_idle"]
    diffs = [b - a for a, b in zip(SERVICE["balanced"], SERVICE["longest_idle"], strict=True)]
    expected = summarize(diffs)
    assert paired["n"] == 4
    assert paired["mean"] == pytest.approx(expected.mean)
    assert paired["ci_low"] == pytest.approx(expected.ci_low)
    assert paired["ci_high"] == pytest.approx(expected.ci_high)
    assert paired["ci_low"] > 0
    assert paired["verdict"] == "better"
    # the per-policy intervals overlap although the paired one is clear of zero
    mine, theirs = level["policies"]["longest_idle"], level["policies"]["balanced"]
    assert mine["ci_low"] < theirs["ci_high"]
    assert level["vs_baseline"]["best_skill"]["verdict"] == "no clear difference"
    asa = compared["metrics"]["overall.asa_s"]["vs_baseline"]
    assert asa["longest_idle"]["verdict"] == "worse"
    assert asa["best_skill"]["verdict"] == "no clear difference"
    assert level["range"] == [0.0, 1.0]
    assert compared["metrics"]["overall.asa_s"]["range"] == [0.0, None]


def test_one_seed_gives_no_verdict() -> None:
    """With one seed there is no spread to judge a difference by: no interval, no verdict,
    and the printed table says so."""
    data = run_comparison(_pool("one"), ["balanced", "longest_idle"], (1,), simulate_fn=_kpis)
    paired = data.to_json()["metrics"]["overall.service_level"]["vs_baseline"]["longest_idle"]
    assert paired["verdict"] is None
    assert paired["ci_low"] is None
    footer = console.compare_table(data.to_json()).splitlines()[-1]
    assert footer == "(policy minus balanced on the same callers, one seed)"


def _cells(html: str, label: str) -> list[str]:
    """The ``<td>`` tags and text of the first table row whose first cell starts with
    ``label``."""
    row = re.search(rf"<tr><td>{re.escape(label)}[^<]*</td>(.*?)</tr>", html)
    assert row, label
    return re.findall(r"<td[^>]*>[^<]*", row.group(1))


def test_the_report_marks_only_clear_differences(compared: dict[str, Any]) -> None:
    """The HTML marks a policy better or worse than the baseline only when its paired
    interval excludes zero (not the highest mean), tables the paired differences, and no
    longer says overlapping intervals mean luck."""
    html = report.compare_report_html(compared)
    baseline, steady, noisy = _cells(html, "Service level")
    assert 'class="better"' in steady
    assert "better" not in noisy
    assert "worse" not in noisy
    assert 'class=""' in baseline
    assert 'class="worse"' in _cells(html, "Average speed of answer")[1]
    assert "Overlapping intervals mean the difference could be luck" not in html
    assert "Difference from balanced" in html
    assert "+1.9 pts" in html  # the mean paired difference in service level


def test_the_console_tables_the_paired_differences(compared: dict[str, Any]) -> None:
    """The printed comparison adds a table of differences from the baseline, each with its
    interval and verdict."""
    text = console.compare_table(compared)
    assert "vs balanced" in text
    row = next(line for line in text.splitlines() if line.startswith("Service level"))
    assert "better" in text.split("vs balanced")[1]
    assert row.count("±") >= 1


def test_bounded_intervals_are_shown_within_their_range(compared: dict[str, Any]) -> None:
    """A rate's interval reaching below 0 % is shown cut at 0 %; compare.json keeps the raw
    t interval."""
    raw = compared["metrics"]["overall.abandon_rate"]["policies"]["balanced"]
    assert raw["ci_low"] < 0
    text = console.compare_table(compared)
    html = report.compare_report_html(compared)
    for shown in (text, html):
        assert not re.search(r"-\d+(\.\d+)? %", shown)
        assert "0.2 % (0.0 % to 1.0 %)" in shown


@pytest.mark.parametrize(("stop_at", "whole"), [(1, 0), (2, 0), (3, 1), (11, 3)])
def test_ctrl_c_keeps_the_seeds_every_policy_finished(stop_at: int, whole: int) -> None:
    """The runs go seed by seed (every policy on a seed before the next), so Ctrl-C keeps
    whole seeds: the interruption carries the comparison over the seeds every policy
    finished, its runs listed policy by policy, and how many runs of how many were done."""
    done: list[tuple[str, int]] = []

    def stopped(scenario: Scenario, seed: int, policy: str) -> Mapping[str, Any]:
        if len(done) == stop_at:
            raise KeyboardInterrupt
        done.append((policy, seed))
        return _kpis(scenario, seed, policy)

    with pytest.raises(ComparisonInterrupted) as stop:
        run_comparison(_pool("stopped"), list(SERVICE), SEEDS, simulate_fn=stopped)
    assert isinstance(stop.value, KeyboardInterrupt)
    assert (stop.value.done, stop.value.planned) == (stop_at, 12)
    assert done == [(policy, seed) for seed in SEEDS for policy in SERVICE][:stop_at]
    partial = stop.value.partial
    assert partial.seeds == SEEDS[:whole]
    assert [(run.policy, run.seed) for run in partial.runs] == [
        (policy, seed) for policy in SERVICE for seed in SEEDS[:whole]
    ]
    if whole:
        full = run_comparison(_pool("stopped"), list(SERVICE), SEEDS[:whole], simulate_fn=_kpis)
        assert partial.to_json() == full.to_json()


def test_a_comparison_of_recorded_calls_only_warns_that_every_seed_replays_them(
    tmp_path: Path,
) -> None:
    """Every call from a trace file: each seed replays the same calls, so the intervals
    cover only what is drawn per seed, not traffic's variation; compare.json's notes, the
    printed tables and the report say so. Arrivals drawn by a stream (a trace beside it
    or not) draw no such warning."""
    write_trace(tmp_path / "day.csv", [TraceCall(1.0, "c1", Channel.VOICE, handle_s=60.0)])
    raw: dict[str, Any] = {
        "duration_s": 3600,
        "agents": [{"id": "ana", "channels": ["voice"]}],
        "arrivals": [{"trace": "day.csv"}],
    }
    recorded = parse_scenario(raw, name="recorded", base=tmp_path)
    compared = run_comparison(recorded, list(SERVICE), SEEDS, simulate_fn=_kpis).to_json()
    [note] = compared["notes"]
    assert note.startswith(
        "every call comes from trace files (day.csv): each seed replays the same calls, so "
        "the 95 % intervals cover only what is drawn per seed"
    )
    assert console.compare_table(compared).splitlines()[-1] == f"warning: {note}"
    page = report.compare_report_html(compared)
    assert "<h2>Warning</h2>" in page
    assert "every call comes from trace files (day.csv)" in page
    voice = {"channel": "voice", "rate_per_hour": 10, "handle": 60}
    mixed = parse_scenario({**raw, "arrivals": [{"trace": "day.csv"}, voice]}, base=tmp_path)
    for drawn in (mixed, _pool("drawn")):
        plain = run_comparison(drawn, list(SERVICE), SEEDS, simulate_fn=_kpis).to_json()
        assert plain["notes"] == []
        assert "warning" not in console.compare_table(plain)
        assert "<h2>Warning</h2>" not in report.compare_report_html(plain)
