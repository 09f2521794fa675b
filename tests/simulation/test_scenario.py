"""Scenario files: every mistake is refused with the path of the bad field, and the fields a
scenario states reach the simulation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from router.domain import Channel, Policy
from router.policies import policy_from_pb, policy_to_pb
from router.v1 import admin_pb2
from simulations.replay_plan import compress_policy
from simulations.scenario import ScenarioError, load_scenario, parse_scenario
from simulations.simulator import simulate
from simulations.trace import COLUMNS, TraceCall, generate_trace, read_trace, write_trace

VOICE = {"channel": "voice", "rate_per_hour": 30, "skills": {"billing": 3}, "handle": 200}
BASE: dict[str, Any] = {
    "duration_s": 3600,
    "agents": [{"id_prefix": "a", "count": 4, "skills": {"billing": 5}}],
    "arrivals": [VOICE],
}


def _agent(**fields: Any) -> dict[str, Any]:
    return {"agents": [{"id": "x", "skills": {"billing": 5}, **fields}]}


def _stream(**fields: Any) -> dict[str, Any]:
    return {"arrivals": [{**VOICE, **fields}]}


BAD: list[tuple[str, dict[str, Any]]] = [
    ("duration_s", {"duration_s": -1}),
    ("durration_s", {"durration_s": 5}),
    ("warmup_s", {"warmup_s": 3600}),
    ("agents[0].skills.billing", _agent(skills={"billing": 11})),
    ("agents[0].channels.fax", _agent(channels={"fax": 1})),
    ("agents[0].shift.start", _agent(shift={"start": "25:00", "end": "17:00"})),
    ("agents[0].quality", _agent(quality=1.5)),
    ("agents[0].absences[0].kind", _agent(absences=[{"start": 0, "end": 10, "kind": "party"}])),
    ("agents[0].timezone", _agent(timezone="Mars/Base")),
    ("arrivals[0].handle.distribution", _stream(handle={"distribution": "gamma", "mean_s": 3})),
    ("arrivals[0].rate_per_hour", _stream(rate_per_hour=-1)),
    ("arrivals[0].team", _stream(team="biling")),
    ("duration_s", {"duration_s": 1e15}),  # would run for ever
    ("arrivals[0].rate_per_hour", _stream(rate_per_hour=1e12)),  # would draw for ever
    (
        "arrivals[0].handle.sd_s",
        _stream(handle={"distribution": "lognormal", "mean_s": 300, "sd_s": 1e200}),
    ),
    ("arrivals[0].channel", _stream(channel="pigeon")),
    ("arrivals[0].priority", _stream(priority=11)),
    ("arrivals[0].profile", _stream(profile={"99:00": 1})),
    ("arrivals[0].mix[0].weight", _stream(mix=[{"weight": -1}])),
    ("arrivals[0].trace", {"arrivals": [{"trace": "no-such-trace.csv"}]}),
    ("policy.strategy", {"policy": {"strategy": "fastest"}}),
    ("policy.weights.skil", {"policy": {"weights": {"skil": 1}}}),
    ("policy.max_occupancy", {"policy": {"max_occupancy": 1.5}}),
    ("policy.widening[0].after_s", {"policy": {"widening": [{"after_s": -5}]}}),
    ("policy.offer_timeout_s.chat", {"policy": {"offer_timeout_s": {"chat": 601}}}),
    ("policy.max_wait_s.voice", {"policy": {"max_wait_s": {"voice": -1}}}),
    ("policy.max_wait_s.fax", {"policy": {"max_wait_s": {"fax": 60}}}),
    ("sla.voice.goal", {"sla": {"voice": {"target_s": 20, "goal": 2}}}),
    ("sick_leave.fraction", {"sick_leave": {"fraction": 1.5}}),
    ("variants.flu.durration_s", {"variants": {"flu": {"durration_s": 3}}}),
    ("arrivals", {"pool": {"agents": 2, "rate_per_hour": 5, "mean_handle_s": 60}}),
]


@pytest.mark.parametrize(("path", "bad"), BAD, ids=[path for path, _ in BAD])
def test_a_bad_field_is_refused_by_name(path: str, bad: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario({**BASE, **bad}, name="bad", base=tmp_path)
    message = str(caught.value)
    assert message.startswith(path) or f"{path}:" in message or f"'{path}'" in message, message


def test_a_typo_gets_a_suggestion() -> None:
    with pytest.raises(ScenarioError, match="did you mean 'duration_s'"):
        parse_scenario({**BASE, "durration_s": 5})


def test_a_single_skill_pool_is_three_lines(tmp_path: Path) -> None:
    path = tmp_path / "pool.yaml"
    path.write_text(
        "pool: {agents: 3, rate_per_hour: 40, mean_handle_s: 180, mean_patience_s: 120}\n"
        "duration_s: 3600\n"
    )
    scenario = load_scenario(path)
    assert len(scenario.agents) == 3
    result = simulate(scenario, seed=1)
    assert result.kpis["overall"]["offered"] > 20
    assert result.kpis["overall"]["abandoned"] > 0, "patience makes callers hang up"


def test_live_only_policy_fields_are_read() -> None:
    scenario = parse_scenario(
        {**BASE, "policy": {"offer_timeout_s": {"chat": 30}, "max_missed_offers": 2}}
    )
    assert scenario.policy.offer_timeout_s[Channel.CHAT] == 30
    assert scenario.policy.max_missed_offers == 2


def test_a_queue_time_limit_is_read_per_channel_up_to_thirty_days() -> None:
    """``max_wait_s`` is written as ``wrap_up_s`` is, ``{channel: seconds}``, and reaches the
    policy the simulation runs; 0 is no limit, more than 30 days (the service's longest) is
    refused with the field and the bound named."""
    scenario = parse_scenario({**BASE, "policy": {"max_wait_s": {"voice": 90, "chat": 0}}})
    assert dict(scenario.policy.max_wait_s) == {Channel.VOICE: 90, Channel.CHAT: 0}
    longest = parse_scenario({**BASE, "policy": {"max_wait_s": {"voice": 30 * 86400}}})
    assert longest.policy.max_wait_s[Channel.VOICE] == 2_592_000
    with pytest.raises(ScenarioError) as caught:
        parse_scenario({**BASE, "policy": {"max_wait_s": {"voice": 30 * 86400 + 1}}})
    assert str(caught.value) == (
        "policy.max_wait_s.voice: 2592001 s is longer than the longest queue time limit, "
        "30 days (2592000 s)"
    )
    with pytest.raises(ScenarioError, match=r"^policy\.max_wait_s\.voice: expected an integer"):
        parse_scenario({**BASE, "policy": {"max_wait_s": {"voice": "1 min"}}})
    with pytest.raises(ScenarioError, match=r"^policy\.max_wait_s: expected a mapping"):
        parse_scenario({**BASE, "policy": {"max_wait_s": 60}})


def test_expected_handle_times_given_for_some_channels_keep_the_others_defaults() -> None:
    """``expected_handle_s`` names channels one by one: the ones it leaves out keep what they
    would have without it (the mean handle time of the channel's streams, else the
    default), so the policy a replay sends the service sets every channel within its bounds
    (the service refuses an expected handle time of 0)."""
    chat = {"channel": "chat", "rate_per_hour": 10, "skills": {"billing": 3}, "handle": 500}
    spec = {**BASE, "arrivals": [VOICE, chat], "policy": {"expected_handle_s": {"voice": 90}}}
    handle = parse_scenario(spec).policy.expected_handle_s
    assert handle[Channel.VOICE] == 90
    assert handle[Channel.CHAT] == 500
    assert handle[Channel.EMAIL] == Policy().expected_handle_s[Channel.EMAIL]
    assert set(handle) == set(Channel)
    sent, _ = compress_policy(parse_scenario(spec).policy, 10)
    update = admin_pb2.UpdatePolicyRequest(policy=policy_to_pb(sent)).policy
    assert policy_from_pb(update, ["channels"], Policy()).expected_handle_s[Channel.EMAIL] > 0


def test_a_staggered_break_spreads_the_group() -> None:
    """``spread_s`` starts the group's breaks evenly over that window, so a team never goes
    on break all at once (offsets are rounded to whole minutes)."""
    group = {
        "id_prefix": "a",
        "count": 4,
        "skills": {"billing": 5},
        "breaks": [{"start": "01:00", "duration_s": 600, "spread_s": 1800}],
    }
    scenario = parse_scenario({**BASE, "agents": [group]})
    starts = sorted(agent.breaks[0][0] for agent in scenario.agents)
    assert starts == [3600, 3600 + 480, 3600 + 900, 3600 + 1320]  # 1800 * k / 4 on whole minutes


def test_an_unchosen_variant_does_not_change_the_scenario() -> None:
    raw = {**BASE, "variants": {"busy": {"arrival_scale": 2.0}}}
    plain, busy = parse_scenario(raw), parse_scenario(raw, variant="busy")
    assert plain.arrival_scale == 1.0
    assert busy.arrival_scale == 2.0
    assert busy.name.endswith(":busy")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "twice.yaml",
            "name: a\nduration_s: 3600\nduration_s: 7200\n",
            "'duration_s' is given twice",
        ),
        ("twice.json", '{"name": "a", "name": "b"}', "'name' is given twice"),
        ("latin.yaml", "name: caf\xe9\n".encode("latin-1"), "is not UTF-8 text"),
    ],
)
def test_a_file_that_cannot_be_read_as_written_is_refused(
    name: str, content: str | bytes, message: str, tmp_path: Path
) -> None:
    """A key given twice (the last would silently win) or text that is not UTF-8: a clear
    ``ScenarioError``, not a scenario that is not what the file says, nor a traceback."""
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(ScenarioError, match=message):
        load_scenario(path)


def test_a_trace_that_is_not_a_file_is_refused(tmp_path: Path) -> None:
    """A directory or a Latin-1 file given as a trace: ``ScenarioError`` naming it."""
    with pytest.raises(ScenarioError, match="cannot read"):
        read_trace(tmp_path)
    latin = tmp_path / "day.csv"
    latin.write_bytes("call_id,arrival_s\nc\xe9,1\n".encode("latin-1"))
    with pytest.raises(ScenarioError, match="is not UTF-8 text"):
        read_trace(latin)


def test_a_scenario_of_recorded_calls_expects_their_mean_handle_time(tmp_path: Path) -> None:
    """A channel no stream gives expects the mean handle time of its calls in the
    scenario's traces (those it takes: arriving before duration_s), not the service's
    default (voice 300 s); a stream's mean and a stated expected_handle_s come first, and a
    channel with neither keeps the default."""
    write_trace(
        tmp_path / "day.csv",
        [
            TraceCall(0.0, "v1", Channel.VOICE, handle_s=100.0),
            TraceCall(5.0, "v2", Channel.VOICE, handle_s=200.0),
            TraceCall(10.0, "c1", Channel.CHAT, handle_s=50.0),
            TraceCall(3600.0, "late", Channel.VOICE, handle_s=10_000.0),
        ],
    )
    raw: dict[str, Any] = {
        "duration_s": 3600,
        "agents": [{"id": "ana", "channels": ["voice", "chat"]}],
        "arrivals": [{"trace": "day.csv"}],
    }
    expected = parse_scenario(raw, base=tmp_path).policy.expected_handle_s
    assert (expected[Channel.VOICE], expected[Channel.CHAT]) == (150, 50)
    assert expected[Channel.EMAIL] == Policy().expected_handle_s[Channel.EMAIL]
    chat = {"channel": "chat", "rate_per_hour": 10, "handle": 400}
    streamed = parse_scenario({**raw, "arrivals": [{"trace": "day.csv"}, chat]}, base=tmp_path)
    assert streamed.policy.expected_handle_s[Channel.CHAT] == 400
    stated = {**raw, "policy": {"expected_handle_s": {"voice": 240}}}
    assert parse_scenario(stated, base=tmp_path).policy.expected_handle_s[Channel.VOICE] == 240


@pytest.mark.parametrize("suffix", ["csv", "jsonl"])
def test_a_trace_saved_with_a_byte_order_mark_reads_as_without(tmp_path: Path, suffix: str) -> None:
    """A trace starting with UTF-8's byte order mark (Excel's "CSV UTF-8") reads as the
    same file without it, not as one missing its first column."""
    calls = [
        TraceCall(1.5, "c1", Channel.VOICE, skills=(("billing", 3),), handle_s=120.0),
        TraceCall(9.0, "c2", Channel.CHAT, language="en", handle_s=300.0, patience_s=60.0),
    ]
    plain = tmp_path / f"plain.{suffix}"
    write_trace(plain, calls)
    marked = tmp_path / f"excel.{suffix}"
    marked.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    assert read_trace(marked) == read_trace(plain) == calls


@pytest.mark.parametrize(
    ("row", "fields"),
    [("1.5,c2,voice,,en,,0,120,60,extra", 10), ("1.5,c2,voice,,en,,0,120", 8)],
    ids=["one field too many", "one field short"],
)
def test_a_csv_row_of_another_width_than_the_header_is_refused(
    tmp_path: Path, row: str, fields: int
) -> None:
    """A CSV row with a field more or less than the header is refused naming the file, its
    line and both counts: neither an unknown column called None nor a call whose last
    column (here its patience) is silently empty. A blank line counts as a line."""
    trace = tmp_path / "day.csv"
    first = "1,c1,voice,,en,,0,120,60"
    for lines, line in (([first, row], 3), (["", first, row], 4)):
        trace.write_text("\n".join([",".join(COLUMNS), *lines]) + "\n")
        with pytest.raises(ScenarioError) as refused:
            read_trace(trace)
        assert str(refused.value) == f"day.csv:{line}: {fields} fields where the header has 9"


def test_every_drawn_call_arrives_before_the_end() -> None:
    """Arrivals are drawn on the millisecond clock in ``[0, duration_s)``: one in the run's
    last half millisecond does not round up to its end (where a trace read back would
    drop it)."""
    scenario = parse_scenario(
        {
            "duration_s": 2,
            "agents": [{"id_prefix": "a", "count": 3, "channels": {"voice": 1}}],
            "arrivals": [{"channel": "voice", "rate_per_hour": 3_600_000, "handle": 0.5}],
        }
    )
    calls = generate_trace(scenario, seed=8)
    assert len(calls) > 1_000
    assert max(call.arrival_s for call in calls) < 2


@pytest.mark.parametrize("shortcut", [True, False], ids=["pooled", "event loop"])
@pytest.mark.parametrize("strategy", ["longest_idle", "best_skill"])
def test_agents_off_sick_take_no_call_all_run(shortcut: bool, strategy: str) -> None:
    """Everyone off sick: no call is answered, not even at the run's last instant (the
    absence runs past the horizon, so nobody comes back as the run ends)."""
    raw = {
        "duration_s": 600,
        "drain_s": 300,
        "pool": {"agents": 3, "rate_per_hour": 120, "mean_handle_s": 60},
        "policy": {"strategy": strategy},
        "sick_leave": {"fraction": 1.0},
    }
    scenario = parse_scenario(raw, name="all_sick")
    for spec in scenario.agents:
        assert spec.absences[0].end_s > scenario.horizon_s
    result = simulate(scenario, seed=1, shortcut=shortcut)
    assert result.records
    assert [r.call_id for r in result.records if r.answered_s is not None] == []
    assert result.kpis["overall"]["answered"] == 0
    assert all(a["handled"] == 0 for a in result.kpis["agents"].values())
