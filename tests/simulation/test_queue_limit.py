"""The queue time limit (the policy's ``max_wait_s``) in the simulator and its outputs.

A call still waiting when it has waited its channel's limit leaves the queue as expired, as
the service's dispatcher takes it off: never answered after its limit, counted in
``expired`` / ``expire_rate`` per channel and overall, a miss of the service level with no
grace, flagged in the ``expired`` column of ``records.csv``, shown by the console table, the
HTML report and the comparison. Without a limit nothing of it appears (the golden outputs
pin that).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from router.domain import Channel
from simulations import console, report
from simulations.compare import run_comparison
from simulations.kpis import RECORD_COLUMNS
from simulations.scenario import Scenario, parse_scenario
from simulations.simulator import CallResult, SimulationResult, simulate
from simulations.trace import TraceCall, generate_trace

LIMIT_S = 60


def _short_handed(**policy: Any) -> dict[str, Any]:
    """Three agents for about 7.5 Erlangs of voice calls: most callers wait, some hang up
    within five minutes. No rule that changes with the clock alone: a day the pooled
    shortcut runs."""
    return {
        "pool": {"agents": 3, "rate_per_hour": 150, "mean_handle_s": 180, "mean_patience_s": 300},
        "duration_s": 2 * 3600,
        "drain_s": 3600,
        "policy": {
            "strategy": "longest_idle",
            "occupancy_window_s": 0,
            "escalation_priority_boost": 0,
            **policy,
        },
        "sla": {"voice": 20},
    }


def _limited() -> Scenario:
    return parse_scenario(_short_handed(max_wait_s={"voice": LIMIT_S}), name="limited")


def _outcome_counts(records: list[CallResult]) -> dict[str, int]:
    return {
        "answered": sum(r.answered_s is not None for r in records),
        "abandoned": sum(r.abandoned for r in records),
        "expired": sum(r.expired for r in records),
        "within": sum(r.within_sla for r in records),
    }


@pytest.mark.parametrize("shortcut", [True, False], ids=["pooled", "event loop"])
def test_calls_nobody_answers_within_the_limit_expire_at_it(shortcut: bool) -> None:
    """Too few agents and a one-minute limit: calls expire exactly at the limit, none is
    answered after it, none is both answered and expired, and the service level counts
    every expired call as a miss (answered within target / offered, no grace)."""
    result = simulate(_limited(), seed=2, shortcut=shortcut)
    loop = "event loop (the shortcut switched off)"
    assert result.engine == ("pooled shortcut" if shortcut else loop)
    records = result.records
    counts = _outcome_counts(records)
    assert counts["expired"] > 20, counts
    assert counts["abandoned"] > 0, counts
    for r in records:
        assert not (r.expired and r.abandoned), r
        if r.expired:
            assert r.answered_s is None, r
            assert r.wait_s == LIMIT_S, r
            assert not r.within_sla
            assert (r.agent_id, r.end_s, r.handle_s) == ("", None, None)
        elif r.answered_s is not None:
            assert r.wait_s < LIMIT_S, r  # at the limit itself the call expires first
        elif r.abandoned:
            assert r.wait_s <= LIMIT_S, r  # hung up before the limit (or at it: first)
    overall = result.kpis["overall"]
    offered = overall["offered"]
    assert offered == len(records) == counts["answered"] + counts["abandoned"] + counts["expired"]
    assert overall["expired"] == counts["expired"]
    assert overall["expire_rate"] == round(counts["expired"] / offered, 6)
    assert overall["service_level"] == round(counts["within"] / offered, 6)
    assert result.kpis["channels"]["voice"]["expired"] == counts["expired"]


def test_without_a_limit_the_same_callers_wait_longer_and_nothing_expires() -> None:
    """The same day with no limit: calls are answered after a minute's wait, and the KPIs
    have no expired figures at all."""
    scenario = parse_scenario(_short_handed(), name="unlimited")
    result = simulate(scenario, seed=2)
    assert any(r.answered_s is not None and r.wait_s > LIMIT_S for r in result.records)
    assert not any(r.expired for r in result.records)
    assert "expired" not in result.kpis["overall"]
    assert "expire_rate" not in result.kpis["channels"]["voice"]


def test_the_limit_applies_per_channel() -> None:
    """A limit on voice only, agents on voice and chat (the event loop): voice calls expire,
    chat calls wait as long as it takes; both channels report their expired count."""
    raw = {
        "duration_s": 2 * 3600,
        "drain_s": 3600,
        "policy": {"strategy": "longest_idle", "max_wait_s": {"voice": 30, "chat": 0}},
        "sla": {"voice": 20, "chat": 60},
        "agents": [{"id_prefix": "a", "count": 3, "channels": {"voice": 1, "chat": 1}}],
        "arrivals": [
            {"channel": "voice", "rate_per_hour": 60, "handle": 200},
            {"channel": "chat", "rate_per_hour": 40, "handle": 300},
        ],
    }
    result = simulate(parse_scenario(raw, name="two channels"), seed=1)
    assert result.engine.startswith("event loop")
    voice = [r for r in result.records if r.channel == Channel.VOICE]
    chat = [r for r in result.records if r.channel == Channel.CHAT]
    assert sum(r.expired for r in voice) > 0
    assert all(r.wait_s < 30 for r in voice if r.answered_s is not None)
    assert not any(r.expired for r in chat)
    assert any(r.answered_s is not None and r.wait_s > 30 for r in chat)
    channels = result.kpis["channels"]
    assert channels["voice"]["expired"] == sum(r.expired for r in voice)
    assert channels["chat"]["expired"] == 0
    assert result.kpis["overall"]["expired"] == channels["voice"]["expired"]


def test_a_call_taken_back_counts_toward_its_limit_again() -> None:
    """Work taken back from agents who leave (``reclaim_on_absence``) keeps its age for the
    queue's order, but, as in the service, counts toward the queue time limit again from
    the reclaim: both calls taken back at 100 s expire at 100 s + the limit if nobody takes
    them meanwhile, however long ago they arrived."""
    raw = {
        "duration_s": 300,
        "drain_s": 300,
        "policy": {
            "strategy": "longest_idle",
            "max_wait_s": {"voice": LIMIT_S},
            "reclaim_on_absence": True,
            "reclaim_channels": ["voice"],
            "expected_handle_s": {"voice": 10},
        },
        "agents": [
            {"id": "ana", "channels": ["voice"], "absences": [{"start": 100, "end": 400}]},
            {"id": "bob", "channels": ["voice"], "absences": [{"start": 100, "end": 400}]},
        ],
        "arrivals": [{"channel": "voice", "rate_per_hour": 1, "handle": 500}],
    }
    calls = [
        TraceCall(0.0, "old", Channel.VOICE, handle_s=500.0),  # taken back at 100, aged 100
        TraceCall(80.0, "young", Channel.VOICE, handle_s=500.0),  # taken back at 100, aged 20
    ]
    result = simulate(parse_scenario(raw, name="reclaim"), seed=1, calls=calls)
    by_id = {r.call_id: r for r in result.records}
    assert (by_id["old"].answered_s, by_id["young"].answered_s) == (0.0, 80.0)
    for r in by_id.values():
        assert r.reclaimed == 1
        assert r.expired
        assert r.agent_id == ""
    assert result.kpis["overall"]["expired"] == 2
    levels = dict(zip(result.queue_trace.times_s, result.queue_trace.sizes, strict=True))
    assert levels[100.0] == 2  # both back in the queue
    assert levels[100.0 + LIMIT_S] == 0  # both expired, the limit after the reclaim


def test_records_csv_and_kpis_json_carry_the_expired_calls(tmp_path: Path) -> None:
    """``records.csv`` gets a trailing ``expired`` column (0/1) and ``kpis.json`` the
    expired figures when the policy sets a limit; without one, neither."""
    result = simulate(_limited(), seed=2)
    result.write(tmp_path / "limited")
    with (tmp_path / "limited" / "records.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == [*RECORD_COLUMNS, "expired"]
    assert [row["expired"] for row in rows] == [str(int(r.expired)) for r in result.records]
    assert {row["expired"] for row in rows} == {"0", "1"}
    kpis = json.loads((tmp_path / "limited" / "kpis.json").read_text())
    assert kpis["overall"]["expired"] == sum(r.expired for r in result.records)
    plain = simulate(parse_scenario(_short_handed(), name="unlimited"), seed=2)
    plain.write(tmp_path / "plain")
    header = (tmp_path / "plain" / "records.csv").read_text().splitlines()[0]
    assert header == ",".join(RECORD_COLUMNS)


def _run_report(result: SimulationResult, out: Path) -> str:
    result.write(out)
    return report.write_run_report(out).read_text()


def test_the_console_and_the_report_show_expired_calls(tmp_path: Path) -> None:
    """The printed table gets an ``expired`` column and the HTML report an Expired card
    (and the count in its subtitle) when the policy sets a limit; not otherwise."""
    limited = simulate(_limited(), seed=2)
    expired = limited.kpis["overall"]["expired"]
    table = console.kpi_table(limited.kpis)
    header, _, *rows = table.splitlines()[:4]
    assert header.split()[:5] == ["channel", "offered", "answered", "abandoned", "expired"]
    assert rows[0].split()[4] == str(expired)
    text = _run_report(limited, tmp_path / "limited")
    assert ">Expired<" in text
    assert f"{expired} calls reached the queue time limit" in text
    assert f"abandoned, {expired} expired" in text
    plain = simulate(parse_scenario(_short_handed(), name="unlimited"), seed=2)
    assert "expired" not in console.kpi_table(plain.kpis)
    assert ">Expired<" not in _run_report(plain, tmp_path / "plain")


def test_a_comparison_reports_the_expire_rate_when_a_limit_is_set() -> None:
    """``compare`` lists the expire rate next to abandonment, only when a limit is set."""
    limited = run_comparison(_limited(), ["longest_idle", "round_robin"], [1, 2])
    paths = [m.path for m in limited.metrics]
    assert paths.index("overall.expire_rate") == paths.index("overall.abandon_rate") + 1
    summary = limited.to_json()["metrics"]["overall.expire_rate"]["policies"]["longest_idle"]
    assert summary["n"] == 2
    assert summary["mean"] > 0
    plain = run_comparison(parse_scenario(_short_handed(), name="plain"), ["longest_idle"], [1])
    assert "overall.expire_rate" not in [m.path for m in plain.metrics]


def test_a_generated_day_with_a_limit_is_reproducible() -> None:
    """Same scenario, seed and policy: the same expired calls (the limit adds no draws)."""
    scenario = _limited()
    first, second = simulate(scenario, seed=4), simulate(scenario, seed=4)
    assert first.records == second.records
    assert first.kpis == second.kpis
    plain = parse_scenario(_short_handed(), name="unlimited")
    assert generate_trace(scenario, 4) == generate_trace(plain, 4)
