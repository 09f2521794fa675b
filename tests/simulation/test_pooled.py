"""The pooled shortcut (``simulations.pooled``) against the event loop it stands in for.

A day that qualifies must give the very same result either way: every record, every agent's
intervals, the KPIs, the events handled, the queue trace, and byte-identical output files.
The cases cover what the shortcut models, under longest-idle, round-robin and balanced:
patience (calls hanging up, timers of answered calls), a queue time limit (calls expiring,
before or after their caller's patience), wrap-up, agents of different speeds,
overload past the end of arrivals, a horizon that cuts off work in progress and calls still
waiting; and for balanced, performance scores that drift apart, calls placed together by the
engine's flow, and candidates cut to ``top_k``.
"""

from __future__ import annotations

import copy
import dataclasses
import random
from pathlib import Path
from typing import Any

import pytest

from router.domain import Channel
from simulations import pooled
from simulations.model import Scenario
from simulations.pool_choice import BalancedChoice
from simulations.scenario import load_scenario, parse_scenario
from simulations.simulator import SimulationResult, simulate
from simulations.trace import TraceCall, generate_trace

SCENARIOS = Path(__file__).resolve().parents[2] / "simulations" / "scenarios"


def _pool(**changes: Any) -> dict[str, Any]:
    """A longest-idle pool with no rule that changes with the clock (Erlang's model)."""
    raw: dict[str, Any] = {
        "pool": {"agents": 6, "rate_per_hour": 110, "mean_handle_s": 180},
        "duration_s": 4 * 3600,
        "warmup_s": 600,
        "drain_s": 3600,
        "policy": {
            "strategy": "longest_idle",
            "occupancy_window_s": 0,
            "escalation_priority_boost": 0,
        },
        "sla": {"voice": 20},
    }
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return raw


def _groups_pool(
    groups: list[dict[str, Any]],
    patience: float,
    *,
    rate: float = 100,
    handle: float = 180,
    **changes: Any,
) -> dict[str, Any]:
    """Agent ``groups`` (billing 5 and one voice slot unless they say otherwise) on one queue
    of billing calls, ``rate`` an hour, ``handle`` s on average, callers waiting up to
    ``patience``."""
    raw = _pool(**changes)
    del raw["pool"]
    raw["agents"] = [{"skills": {"billing": 5}, "channels": {"voice": 1}, **g} for g in groups]
    raw["arrivals"] = [
        {
            "name": "in",
            "channel": "voice",
            "rate_per_hour": rate,
            "handle": handle,
            "skills": {"billing": 1},
            "patience": patience,
        },
    ]
    return raw


def _whole_seconds(
    kinds: list[TraceCall],
    seed: int,
    count: int = 300,
    *,
    gaps: tuple[int, ...] = (0, 0, 0, 1, 2, 5, 20, 60),
    handles: tuple[int, ...] = (30, 60, 90, 120, 180),
    patiences: tuple[int | None, ...] = (None, 30, 60, 120),
) -> list[TraceCall]:
    """``count`` calls like ``kinds`` (one drawn for each), arriving ``gaps`` seconds apart,
    with whole-second handle times and patience: calls that arrive, free agents and hang up
    in one millisecond all day."""
    rng = random.Random(seed)
    calls, at = [], 0
    for n in range(count):
        at += rng.choice(gaps)
        patience = rng.choice(patiences)
        calls.append(
            dataclasses.replace(
                rng.choice(kinds),
                arrival_s=float(at),
                call_id=f"call-{n:03d}",
                handle_s=float(rng.choice(handles)),
                patience_s=None if patience is None else float(patience),
            )
        )
    return calls


def _same(fast: SimulationResult, loop: SimulationResult, tmp_path: Path) -> None:
    assert fast.records == loop.records
    assert fast.agents == loop.agents
    assert fast.kpis == loop.kpis
    assert (fast.events, fast.queue_trace, fast.end_s) == (
        loop.events,
        loop.queue_trace,
        loop.end_s,
    )
    fast.write(tmp_path / "fast")
    loop.write(tmp_path / "loop")
    for name in ("kpis.json", "records.csv"):
        assert (tmp_path / "fast" / name).read_bytes() == (tmp_path / "loop" / name).read_bytes()


def _as_the_loop(scenario: Scenario, calls: list[TraceCall], tmp_path: Path) -> SimulationResult:
    """The pooled run of hand-made ``calls`` (which must qualify), checked against the loop's."""
    assert pooled.qualifies(scenario, scenario.policy, calls, escalate=True)
    fast = simulate(scenario, seed=1, calls=calls)
    _same(fast, simulate(scenario, seed=1, calls=calls, shortcut=False), tmp_path)
    return fast


CASES = {
    "plain": _pool(),
    "patience": _pool(pool={"mean_patience_s": 60}),
    "overloaded, short drain": _pool(
        pool={"rate_per_hour": 160, "mean_patience_s": 240}, drain_s=300
    ),
    "wrap-up": _pool(policy={"wrap_up_s": {"voice": 30}}),
    "wrap-up, patience, no drain": _pool(
        pool={"rate_per_hour": 140, "mean_patience_s": 100},
        policy={"wrap_up_s": {"voice": 45}},
        drain_s=0,
    ),
    "two agents": _pool(pool={"agents": 2, "rate_per_hour": 30}),
    "queue time limit": _pool(pool={"rate_per_hour": 150}, policy={"max_wait_s": {"voice": 60}}),
    "queue time limit, patience, wrap-up, no drain": _pool(
        pool={"rate_per_hour": 160, "mean_patience_s": 90},
        policy={"max_wait_s": {"voice": 45}, "wrap_up_s": {"voice": 30}},
        drain_s=0,
    ),
}


STRATEGIES = ["longest_idle", "round_robin", "balanced"]


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_pooled_day_is_the_event_loops_day(
    case: str, seed: int, strategy: str, tmp_path: Path
) -> None:
    scenario = parse_scenario(CASES[case], name=case).with_policy(strategy)
    assert pooled.qualifies(
        scenario, scenario.policy, generate_trace(scenario, seed), escalate=True
    )
    _same(
        simulate(scenario, seed=seed),
        simulate(scenario, seed=seed, shortcut=False),
        tmp_path,
    )


def test_agents_of_different_speeds_and_skills_on_one_pool(tmp_path: Path) -> None:
    """Agents are told apart by speed (handle time), skill fit and quality, and ties for the
    longest idle go by agent id."""
    raw = _groups_pool(
        [
            {
                "count": 3,
                "id_prefix": "fast",
                "skills": {"billing": 9},
                "speed": 1.5,
                "quality": 0.9,
            },
            {"count": 4, "id_prefix": "slow", "skills": {"billing": 2}, "speed": 0.8},
        ],
        90,
        rate=120,
        handle=200,
    )
    for strategy, seed in [
        ("longest_idle", 4),
        ("longest_idle", 5),
        ("round_robin", 4),
        ("balanced", 4),
        ("balanced", 5),
    ]:
        scenario = parse_scenario(raw, name="mixed").with_policy(strategy)
        trace = generate_trace(scenario, seed)
        assert pooled.qualifies(scenario, scenario.policy, trace, escalate=True)
        _same(
            simulate(scenario, seed=seed), simulate(scenario, seed=seed, shortcut=False), tmp_path
        )


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"policy": {"strategy": "best_skill"}}, "the best_skill strategy"),
        ({"policy": {"strategy": "random"}}, "the random strategy"),
        ({"policy": {"escalation_priority_boost": 2}}, "SLA escalation boosts"),
        ({"policy": {"occupancy_window_s": 3600}}, "a rolling-occupancy window"),
        ({"policy": {"widening": [{"after_s": 30, "level_drop": 1}]}}, "widening steps"),
    ],
)
def test_days_the_shortcut_cannot_model_run_through_the_loop(
    change: dict[str, Any], why: str
) -> None:
    """Rules the shortcut does not model: the day runs through the loop, which says why."""
    scenario = parse_scenario(_pool(**change), name=why)
    trace = generate_trace(scenario, 1)
    assert pooled.obstacle(scenario, scenario.policy, trace, escalate=True) == why
    loop = simulate(scenario, seed=1)
    assert loop.engine == f"event loop ({why})"
    assert loop.records == simulate(scenario, seed=1, shortcut=False).records


def test_agents_or_calls_that_break_the_pool_run_through_the_loop() -> None:
    scenario = parse_scenario(_pool(), name="pool")
    trace = generate_trace(scenario, 1)
    policy = scenario.policy
    urgent = [*trace[:5], dataclasses.replace(trace[5], priority=3), *trace[6:]]
    assert pooled.obstacle(scenario, policy, urgent, escalate=True) == "calls of 2 priorities"
    skill = trace[5].skills[0][0]
    expert = [*trace[:5], dataclasses.replace(trace[5], skills=((skill, 9),))]
    assert pooled.obstacle(scenario, policy, expert, escalate=True) == (
        f"agent agent-001 cannot take every call (skill_too_low for calls needing {skill} 9)"
    )
    chat = [*trace[:5], dataclasses.replace(trace[5], channel=Channel.CHAT), *trace[6:]]
    assert pooled.obstacle(scenario, policy, chat, escalate=True) == (
        "calls on 2 channels (chat, voice)"
    )
    assert pooled.qualifies(scenario, policy, trace, escalate=True)
    assert simulate(scenario, seed=1, calls=trace).engine == "pooled shortcut"
    assert simulate(scenario, seed=1, calls=trace, shortcut=False).engine == (
        "event loop (the shortcut switched off)"
    )
    assert pooled.obstacle(scenario, policy, [], escalate=True) == "no calls"


def test_the_erlang_check_scenario_takes_the_shortcut() -> None:
    """What ``bench_simulator`` and ``tests/simulation/test_validation.py`` run."""
    scenario = load_scenario(SCENARIOS / "erlang_check.yaml")
    assert pooled.qualifies(scenario, scenario.policy, generate_trace(scenario, 1), escalate=True)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_calls_rounded_into_one_millisecond_queue_by_call_id(strategy: str, tmp_path: Path) -> None:
    """Arrivals a fraction of a millisecond apart land in one millisecond of the clock, where
    the queue goes by call id, not by the order of the trace; a trace given out of arrival
    order is put in it first. Both engines agree, whichever order the calls come in."""
    raw = _pool(pool={"agents": 2}, duration_s=100, warmup_s=0, drain_s=60)
    scenario = parse_scenario(raw, name="sub-millisecond").with_policy(strategy)
    skills = generate_trace(scenario, 1)[0].skills
    calls = [
        TraceCall(1.0001, "d", Channel.VOICE, skills, handle_s=20.0),
        TraceCall(1.0002, "c", Channel.VOICE, skills, handle_s=20.0, patience_s=15.0),
        TraceCall(1.0004, "b", Channel.VOICE, skills, handle_s=20.0),
        TraceCall(1.0006, "a", Channel.VOICE, skills, handle_s=20.0),
        TraceCall(3.0, "e", Channel.VOICE, skills, handle_s=5.0),
    ]
    fast = _as_the_loop(scenario, calls, tmp_path)
    by_id = {record.call_id: record for record in fast.records}
    # b, c and d arrive in millisecond 1000 and queue in id order; a comes a millisecond on.
    assert (by_id["b"].answered_s, by_id["c"].answered_s) == (1.0, 1.0)
    assert (by_id["d"].answered_s, by_id["a"].answered_s) == (21.0, 21.0)
    assert not any(record.abandoned for record in fast.records)
    shuffled = [calls[4], calls[2], calls[0], calls[3], calls[1]]
    again = simulate(scenario, seed=1, calls=shuffled)
    _same(again, fast, tmp_path / "shuffled")


def _shifted_agents() -> dict[str, Any]:
    return {
        "agents": [
            {
                "count": 4,
                "skills": {"billing": 5},
                "channels": {"voice": 1},
                "shift": {"start": "00:00", "end": "02:00"},
            },
        ],
        "arrivals": [
            {
                "name": "in",
                "channel": "voice",
                "rate_per_hour": 60,
                "handle": 180,
                "skills": {"billing": 1},
            },
        ],
    }


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_ties_at_one_millisecond_go_as_in_the_loop(strategy: str, tmp_path: Path) -> None:
    """Hand-made calls on the edges: a caller whose patience ends the very millisecond an
    agent frees hangs up (the loop handles hang-ups before its pass); an abandonment timer
    at the very end of arrivals is not handled once nothing waits; two agents free at once
    go by id; every agent busy past the horizon leaves later callers waiting."""
    raw = _pool(pool={"agents": 2}, duration_s=100, warmup_s=0, drain_s=60)
    scenario = parse_scenario(raw, name="edges").with_policy(strategy)
    skills = generate_trace(scenario, 1)[0].skills
    calls = [
        TraceCall(0.0, "a", Channel.VOICE, skills, handle_s=10.0),
        TraceCall(0.0, "b", Channel.VOICE, skills, handle_s=10.0),
        TraceCall(1.0, "c", Channel.VOICE, skills, handle_s=5.0, patience_s=9.0),
        TraceCall(2.0, "d", Channel.VOICE, skills, handle_s=30.0, patience_s=98.0),
        TraceCall(3.0, "e", Channel.VOICE, skills, handle_s=200.0),
        TraceCall(4.0, "f", Channel.VOICE, skills, handle_s=200.0, patience_s=20.0),
        TraceCall(5.0, "g", Channel.VOICE, skills, handle_s=200.0),
        TraceCall(6.0, "h", Channel.VOICE, skills, handle_s=1.0),
    ]
    fast = _as_the_loop(scenario, calls, tmp_path)
    by_id = {record.call_id: record for record in fast.records}
    assert by_id["c"].abandoned
    assert by_id["h"].answered_s is None
    quiet = [TraceCall(0.0, "a", Channel.VOICE, skills, handle_s=50.0, patience_s=100.0)]
    _same(
        simulate(scenario, seed=1, calls=quiet),
        simulate(scenario, seed=1, calls=quiet, shortcut=False),
        tmp_path,
    )


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_calls_meet_the_queue_time_limit_as_in_the_loop(strategy: str, tmp_path: Path) -> None:
    """Hand-made calls on the limit's edges: a caller whose patience ends at the limit hangs
    up; a call whose limit falls the very millisecond an agent frees expires (the loop
    expires calls before its pass); one a millisecond younger is answered; with every agent
    busy past the horizon calls expire, and one whose limit lies past it is still waiting."""
    raw = _pool(
        pool={"agents": 2},
        duration_s=200,
        warmup_s=0,
        drain_s=5,
        policy={"max_wait_s": {"voice": 10}},
    )
    scenario = parse_scenario(raw, name="limit edges").with_policy(strategy)
    skills = generate_trace(scenario, 1)[0].skills
    calls = [
        TraceCall(0.0, "a", Channel.VOICE, skills, handle_s=10.0),
        TraceCall(0.0, "b", Channel.VOICE, skills, handle_s=10.0),
        TraceCall(0.0, "c", Channel.VOICE, skills, handle_s=5.0, patience_s=10.0),
        TraceCall(0.0, "d", Channel.VOICE, skills, handle_s=5.0),
        TraceCall(0.001, "e", Channel.VOICE, skills, handle_s=5.0),
        TraceCall(1.0, "f", Channel.VOICE, skills, handle_s=5.0),
        TraceCall(2.0, "g", Channel.VOICE, skills, handle_s=1.0, patience_s=5.0),
        TraceCall(5.0, "h", Channel.VOICE, skills, handle_s=1.0),
        TraceCall(80.0, "i", Channel.VOICE, skills, handle_s=400.0),
        TraceCall(80.0, "j", Channel.VOICE, skills, handle_s=400.0),
        TraceCall(150.0, "k", Channel.VOICE, skills, handle_s=1.0, patience_s=30.0),
        TraceCall(199.0, "l", Channel.VOICE, skills, handle_s=1.0),
    ]
    fast = _as_the_loop(scenario, calls, tmp_path)
    by_id = {record.call_id: record for record in fast.records}
    assert by_id["c"].abandoned
    assert not by_id["c"].expired
    assert by_id["d"].expired
    assert by_id["d"].wait_s == 10.0
    assert (by_id["e"].answered_s, by_id["f"].answered_s) == (10.0, 10.0)
    assert by_id["g"].abandoned
    assert by_id["h"].expired
    assert by_id["k"].expired
    assert by_id["k"].wait_s == 10.0
    assert (by_id["l"].expired, by_id["l"].abandoned, by_id["l"].answered_s) == (False, False, None)
    assert fast.kpis["overall"]["expired"] == 3


def _balanced_pool(**policy: Any) -> dict[str, Any]:
    """Balanced routing over agents of different quality: performance scores drift apart
    within minutes (a short half-life), and idle time saturates after a minute."""
    return _groups_pool(
        [
            {"count": 2, "id_prefix": "good", "skills": {"billing": 7}, "quality": 0.95},
            {"count": 2, "id_prefix": "fair", "quality": 0.6, "speed": 1.2},
            {
                "count": 2,
                "id_prefix": "weak",
                "skills": {"billing": 3},
                "quality": 0.3,
                "speed": 0.9,
            },
        ],
        240,
        policy={
            "strategy": "balanced",
            "performance_half_life_s": 1800,
            "idle_horizon_s": 60,
            **policy,
        },
    )


def test_balanced_calls_placed_together_go_as_the_engines_flow_places_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three calls arriving in one millisecond meet six free agents, then three more meet
    the other three; later two agents free in one millisecond while three calls wait, and
    the first two take them. Each such pass places its calls together with the engine's
    flow (``router.balanced.place_batch``), as the loop does."""
    scenario = parse_scenario(_balanced_pool(), name="batches")
    skills = generate_trace(scenario, 1)[0].skills
    calls = (
        [TraceCall(0.0, f"a{n}", Channel.VOICE, skills, handle_s=100.0) for n in range(3)]
        + [TraceCall(10.0, f"b{n}", Channel.VOICE, skills, handle_s=120.0) for n in range(3)]
        + [
            TraceCall(20.0 + n, f"c{n}", Channel.VOICE, skills, handle_s=30.0, patience_s=200.0)
            for n in range(4)
        ]
        + [TraceCall(400.0, "d", Channel.VOICE, skills, handle_s=10.0)]
    )
    assert pooled.qualifies(scenario, scenario.policy, calls, escalate=True)
    batches: list[int] = []
    batch = BalancedChoice.batch

    def spy(self: Any, passed: Any, agents: Any, now: int) -> list[int | None]:
        batches.append(len(passed))
        return batch(self, passed, agents, now)

    monkeypatch.setattr(BalancedChoice, "batch", spy)
    fast = simulate(scenario, seed=1, calls=calls)
    assert batches == [3, 3, 2]  # a*, b*, then c1 and c2 as good-001 and good-002 free
    assert {r.call_id: r.answered_s for r in fast.records if r.call_id[0] == "c"} == {
        "c0": 83.333,
        "c1": 100.0,
        "c2": 100.0,
        "c3": 108.333,
    }
    _same(fast, simulate(scenario, seed=1, calls=calls, shortcut=False), tmp_path)


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("top_k", [1, 2, 0])
def test_balanced_days_with_candidates_cut_to_top_k(seed: int, top_k: int, tmp_path: Path) -> None:
    """Fewer candidates than free agents: a lone call's cheapest agent is among the
    ``top_k`` best by net value (``top_k`` 0 keeps them all)."""
    scenario = parse_scenario(_balanced_pool(top_k=top_k), name="top-k")
    assert pooled.qualifies(
        scenario, scenario.policy, generate_trace(scenario, seed), escalate=True
    )
    _same(simulate(scenario, seed=seed), simulate(scenario, seed=seed, shortcut=False), tmp_path)


def test_balanced_days_the_shortcut_cannot_model() -> None:
    """A region part that moves with the clock (agents in time zones, region weighed) goes
    through the loop."""
    raw = _balanced_pool()
    scenario = parse_scenario(raw, name="balanced")
    trace = generate_trace(scenario, 1)
    zoned = dict(raw, agents=[dict(group, timezone="Europe/Paris") for group in raw["agents"]])
    in_zones = parse_scenario(zoned, name="zoned")
    assert pooled.obstacle(in_zones, in_zones.policy, trace, escalate=True) == (
        "agents in time zones, and the balanced score weighs the region"
    )
    unweighed = parse_scenario(
        dict(zoned, policy={**zoned["policy"], "weights": {"region": 0}}), name="no region"
    )
    assert pooled.qualifies(unweighed, unweighed.policy, trace, escalate=True)


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_balanced_days_of_whole_seconds_meet_the_loop_pass_for_pass(
    seed: int, tmp_path: Path
) -> None:
    """Arrivals, handle times and patience in whole seconds, on agents of one speed: calls
    arrive together and agents free together all day, so passes place several calls at once
    on free agents in every order, with equal costs to break, and callers hang up the very
    millisecond agents free."""
    raw = _balanced_pool()
    for group in raw["agents"]:
        group.pop("speed", None)
    scenario = parse_scenario(raw, name="whole seconds")
    calls = _whole_seconds(generate_trace(scenario, 1)[:1], seed)
    assert pooled.qualifies(scenario, scenario.policy, calls, escalate=True)
    fast = simulate(scenario, seed=seed, calls=calls)
    _same(fast, simulate(scenario, seed=seed, calls=calls, shortcut=False), tmp_path)
    assert sum(r.abandoned for r in fast.records) > 0


@pytest.mark.parametrize("seed", [1, 2])
def test_balanced_days_of_whole_seconds_with_a_queue_time_limit(seed: int, tmp_path: Path) -> None:
    """The same, with a one-minute limit: calls expire the very millisecond others arrive,
    agents free and callers hang up (a patience of a minute too), and passes place calls
    together only among those still waiting."""
    raw = _balanced_pool(max_wait_s={"voice": 60})
    for group in raw["agents"]:
        group.pop("speed", None)
    scenario = parse_scenario(raw, name="whole seconds, limited")
    calls = _whole_seconds(generate_trace(scenario, 1)[:1], seed)
    assert pooled.qualifies(scenario, scenario.policy, calls, escalate=True)
    fast = simulate(scenario, seed=seed, calls=calls)
    _same(fast, simulate(scenario, seed=seed, calls=calls, shortcut=False), tmp_path)
    assert sum(r.expired for r in fast.records) > 0
    assert sum(r.abandoned for r in fast.records) > 0


def _away_pool(away: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """Three agents who take breaks or absences (``away``) and three who stay at their desk,
    of different quality and speed."""
    return _groups_pool(
        [
            {"count": 3, "id_prefix": "away", "quality": 0.8, **away},
            {"count": 3, "id_prefix": "desk", "quality": 0.6, "speed": 1.1},
        ],
        200,
        **changes,
    )


AWAY = {
    "staggered breaks": _away_pool(
        {
            "breaks": [
                {"start": "01:00", "duration_s": 900, "spread_s": 600},
                {"start": "02:30", "duration_s": 1800},
            ]
        }
    ),
    "breaks and wrap-up": _away_pool(
        {"breaks": [{"start": "00:30", "duration_s": 600, "spread_s": 1800}]},
        policy={"wrap_up_s": {"voice": 40}},
    ),
    "an absence": _away_pool({"absences": [{"start": "00:40", "end": "01:50"}]}),
    "away from the start": _away_pool(
        {
            "breaks": [{"start": "00:00", "duration_s": 600}],
            "absences": [{"start": "03:00", "end": "03:30"}],
        }
    ),
    "an absence over the horizon": _away_pool(
        {"absences": [{"start": "03:58", "end": "06:00"}]}, drain_s=600
    ),
    "an absence past the horizon": _away_pool({"absences": [{"start": "05:03", "end": "06:00"}]}),
    "a shift with a break": _away_pool(
        {
            "shift": {"start": "01:00", "end": "03:00"},
            "breaks": [{"start": "02:00", "duration_s": 600}],
        }
    ),
    "night shifts over two days": _away_pool(
        {
            "shift": {"start": "22:00", "end": "06:00"},
            "breaks": [{"start": "02:00", "duration_s": 1200}],
            "absences": [{"start": "1d 12:00", "end": "1d 14:00"}],
        },
        duration_s=30 * 3600,
    ),
    "a shift cut at the horizon": _away_pool(
        {"shift": {"start": "03:00", "end": "09:00"}}, policy={"wrap_up_s": {"voice": 30}}
    ),
    "only shifts, over before the calls": _pool() | _shifted_agents(),
    "breaks and a queue time limit": _away_pool(
        {"breaks": [{"start": "00:30", "duration_s": 900, "spread_s": 1800}]},
        rate=160,
        policy={"max_wait_s": {"voice": 45}},
    ),
}
del AWAY["only shifts, over before the calls"]["pool"]


@pytest.mark.parametrize("case", sorted(AWAY))
@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_agents_who_take_breaks_or_absences_leave_the_pool_as_in_the_loop(
    case: str, seed: int, strategy: str, tmp_path: Path
) -> None:
    """A free agent leaves at a break's start, and when an absence starts within the
    expected handle time (the engine's rule 10); one busy then finishes its call and leaves;
    each comes back at the end with its idle clock restarted. The available intervals, the
    presence events counted and every call are the loop's."""
    scenario = parse_scenario(AWAY[case], name=case).with_policy(strategy)
    assert pooled.qualifies(
        scenario, scenario.policy, generate_trace(scenario, seed), escalate=True
    )
    fast = simulate(scenario, seed=seed)
    _same(fast, simulate(scenario, seed=seed, shortcut=False), tmp_path)
    left = [a for a in fast.agents.values() if a.staffed != [(0.0, fast.end_s)]]
    everyone = case == "only shifts, over before the calls"
    assert len(left) == (0 if case == "an absence past the horizon" else 4 if everyone else 3)


@pytest.mark.parametrize(
    "case", ["a shift with a break", "an absence", "night shifts over two days"]
)
def test_a_scenarios_offer_time_out_changes_no_offline_day(case: str, tmp_path: Path) -> None:
    """Offline, offers are accepted at once (``offer_timeout_s`` is for live replays): rule
    10 reserves no offer's wait, so the loop keeps the shortcut's day and the day of the same
    scenario without offers."""
    raw = copy.deepcopy(AWAY[case])
    raw.setdefault("policy", {})["offer_timeout_s"] = {"voice": 120}
    offered = parse_scenario(raw, name=case)
    loop = simulate(offered, seed=1, shortcut=False)
    _same(simulate(offered, seed=1), loop, tmp_path)
    assert loop.records == simulate(parse_scenario(AWAY[case], name=case), seed=1).records


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_breaks_in_whole_seconds_meet_the_loop(seed: int, strategy: str, tmp_path: Path) -> None:
    """Breaks on whole minutes, calls in whole seconds: agents come back the very
    millisecond calls arrive, others free or hang up."""
    raw = _away_pool(
        {"breaks": [{"start": "00:20", "duration_s": 300, "spread_s": 1200}]},
        duration_s=2 * 3600,
    )
    for group in raw["agents"]:
        group.pop("speed", None)
    scenario = parse_scenario(raw, name="whole seconds").with_policy(strategy)
    calls = _whole_seconds(
        generate_trace(scenario, 1)[:1],
        seed,
        250,
        gaps=(0, 1, 5, 20, 60),
        handles=(60, 120, 180, 240),
        patiences=(None, 60, 120),
    )
    assert pooled.qualifies(scenario, scenario.policy, calls, escalate=True)
    _same(
        simulate(scenario, seed=seed, calls=calls),
        simulate(scenario, seed=seed, calls=calls, shortcut=False),
        tmp_path,
    )


def test_spans_away_that_touch_or_take_work_back_run_through_the_loop() -> None:
    """A break that ends as the next begins, an absence overlapping a break, or a channel
    whose work is taken back from an agent who leaves: the loop's business."""
    touching = _away_pool(
        {
            "breaks": [
                {"start": "01:00", "duration_s": 900},
                {"start": "01:15", "duration_s": 600},
            ]
        }
    )
    overlapping = _away_pool(
        {
            "breaks": [{"start": "01:00", "duration_s": 900}],
            "absences": [{"start": "01:10", "end": "02:00"}],
        }
    )
    soon_after = _away_pool(  # the absence's rule-10 lead reaches back into the break
        {
            "breaks": [{"start": "01:00", "duration_s": 900}],
            "absences": [{"start": "01:17", "end": "02:00"}],
        }
    )
    apart = _away_pool(
        {
            "breaks": [{"start": "01:00", "duration_s": 900}],
            "absences": [{"start": "01:21", "end": "02:00"}],
        }
    )
    email = _away_pool({"breaks": [{"start": "01:00", "duration_s": 900}]})
    for group in email["agents"]:
        group["channels"] = {"email": 1}
    email["arrivals"][0]["channel"] = "email"
    overlap = "agent away-001's time off shift, breaks and absences touch or overlap"
    for raw, why in [
        (touching, overlap),
        (overlapping, overlap),
        (soon_after, overlap),
        (apart, None),
        (email, "email work is taken back from agents who leave"),
    ]:
        scenario = parse_scenario(raw, name="away")
        trace = generate_trace(scenario, 1)
        found = pooled.obstacle(scenario, scenario.policy, trace, escalate=True)
        assert (found or "").startswith(why or "")
        assert (found is None) == (why is None)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_one_agent_away_on_the_edges(strategy: str, tmp_path: Path) -> None:
    """One agent, an absence at 600 s with 300 s expected handle time: a call at exactly
    300 s is answered (the absence starts as the work would end), one a millisecond later
    waits for the absence to end; a break passes while nothing waits, and the next call is
    answered on arrival."""
    raw = _away_pool(
        {
            "count": 1,
            "breaks": [{"start": "01:00", "duration_s": 900}],
            "absences": [{"start": "00:10", "end": "00:20"}],
        },
        policy={"expected_handle_s": {"voice": 300}},
        duration_s=3 * 3600,
    )
    raw["agents"] = raw["agents"][:1]
    scenario = parse_scenario(raw, name="edges").with_policy(strategy)
    skills = generate_trace(scenario, 1)[0].skills
    calls = [
        TraceCall(100.0, "a", Channel.VOICE, skills, handle_s=50.0),
        TraceCall(300.0, "b", Channel.VOICE, skills, handle_s=10.0),
        TraceCall(300.001, "c", Channel.VOICE, skills, handle_s=10.0),
        TraceCall(7200.0, "d", Channel.VOICE, skills, handle_s=10.0),
    ]
    fast = _as_the_loop(scenario, calls, tmp_path)
    assert [r.answered_s for r in fast.records] == [100.0, 300.0, 1200.0, 7200.0]
    assert fast.agents["away-001"].staffed == [(0.0, 600.0), (1200.0, 3600.0), (4500.0, 10800.0)]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_shift_cut_at_the_horizon_still_takes_a_call_there(strategy: str, tmp_path: Path) -> None:
    """With no expected handle time, an agent whose shift runs past the horizon is refused
    only after the horizon (the engine's shift end is the horizon, no presence change takes
    the agent off): a call waiting when the agent frees at the very horizon is answered
    there."""
    raw = _away_pool(
        {"count": 1, "shift": {"start": "00:00", "end": "09:00"}},
        policy={"expected_handle_s": {"voice": 0}},
        duration_s=3600,
        drain_s=600,
    )
    raw["agents"] = raw["agents"][:1]
    scenario = parse_scenario(raw, name="horizon").with_policy(strategy)
    skills = generate_trace(scenario, 1)[0].skills
    calls = [
        TraceCall(100.0, "a", Channel.VOICE, skills, handle_s=4100.0),
        TraceCall(3000.0, "b", Channel.VOICE, skills, handle_s=10.0),
    ]
    fast = _as_the_loop(scenario, calls, tmp_path)
    assert [r.answered_s for r in fast.records] == [100.0, 4200.0]


def _mixed_pool() -> dict[str, Any]:
    """Calls of three kinds every agent fits (two skills, two caller regions, a preferred
    skill): several queues to the loop's passes, and different scores per kind."""
    raw = _balanced_pool()
    raw["agents"] = [
        {
            "count": 3,
            "id_prefix": "eu",
            "region": "eu",
            "skills": {"billing": 8, "support": 3},
            "channels": {"voice": 1},
            "quality": 0.9,
        },
        {
            "count": 3,
            "id_prefix": "us",
            "region": "us",
            "skills": {"billing": 3, "support": 8, "sales": 6},
            "channels": {"voice": 1},
            "quality": 0.6,
            "speed": 1.2,
        },
    ]
    raw["arrivals"] = [
        {
            "name": "billing-eu",
            "channel": "voice",
            "rate_per_hour": 50,
            "handle": 180,
            "skills": {"billing": 2},
            "region": "eu",
            "patience": 240,
        },
        {
            "name": "billing-us",
            "channel": "voice",
            "rate_per_hour": 30,
            "handle": 150,
            "skills": {"billing": 2},
            "region": "us",
        },
        {
            "name": "support",
            "channel": "voice",
            "rate_per_hour": 40,
            "handle": 240,
            "skills": {"support": 3},
            "preferred_skills": ["sales"],
            "patience": 300,
        },
    ]
    return raw


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_calls_of_several_kinds_every_agent_fits(seed: int, strategy: str, tmp_path: Path) -> None:
    scenario = parse_scenario(_mixed_pool(), name="mixed").with_policy(strategy)
    trace = generate_trace(scenario, seed)
    assert len({(tc.skills, tc.region) for tc in trace}) == 3
    assert pooled.qualifies(scenario, scenario.policy, trace, escalate=True)
    _same(simulate(scenario, seed=seed), simulate(scenario, seed=seed, shortcut=False), tmp_path)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_balanced_passes_over_several_queues_in_whole_seconds(
    seed: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Calls of three kinds in whole seconds: passes offer the engine the first calls of
    each queue, as many as there are free agents, and the flow places calls of different
    kinds together."""
    scenario = parse_scenario(_mixed_pool(), name="mixed")
    kinds = [generate_trace(scenario, 1)[0]]
    kinds.append(dataclasses.replace(kinds[0], region="us" if kinds[0].region == "eu" else "eu"))
    kinds.append(
        dataclasses.replace(
            kinds[0], skills=(("support", 3),), region="", preferred_skills=("sales",)
        )
    )
    calls = _whole_seconds(kinds, seed)
    assert pooled.qualifies(scenario, scenario.policy, calls, escalate=True)
    mixed: list[int] = []
    batch = BalancedChoice.batch

    def spy(self: Any, passed: Any, agents: Any, now: int) -> list[int | None]:
        mixed.append(len({kind for _, kind in passed}))
        return batch(self, passed, agents, now)

    monkeypatch.setattr(BalancedChoice, "batch", spy)
    fast = simulate(scenario, seed=seed, calls=calls)
    assert max(mixed) > 1
    _same(fast, simulate(scenario, seed=seed, calls=calls, shortcut=False), tmp_path)


@pytest.mark.parametrize("top_k", [50, 7, 0])
@pytest.mark.parametrize("seed", [1, 2])
def test_balanced_lone_calls_over_many_free_agents(seed: int, top_k: int, tmp_path: Path) -> None:
    """Sixty agents of four qualities and two regions at a low load: most calls meet dozens
    of free agents, scored on numpy columns (``pool_choice.COLUMNS_FROM``), cut to ``top_k``
    or not. Agent ids are not in the scenario's order, and equal agents tie at the cut."""
    order = random.Random(7).sample(range(60), 60)
    groups = [
        {
            "id": f"agent-{order[n]:02d}",
            "quality": (0.9, 0.7, 0.5, 0.3)[n % 4],
            "skills": {"billing": (8, 6, 5, 3)[n % 4]},
            "region": "eu" if n % 3 else "us",
        }
        for n in range(60)
    ]
    raw = _groups_pool(
        groups,
        300,
        rate=400,
        duration_s=3 * 3600,
        policy={
            "strategy": "balanced",
            "top_k": top_k,
            "performance_half_life_s": 3600,
            "idle_horizon_s": 300,
        },
    )
    raw["arrivals"][0]["region"] = "eu"
    scenario = parse_scenario(raw, name="many free")
    assert pooled.qualifies(
        scenario, scenario.policy, generate_trace(scenario, seed), escalate=True
    )
    _same(simulate(scenario, seed=seed), simulate(scenario, seed=seed, shortcut=False), tmp_path)


@pytest.mark.parametrize("strategy", ["longest_idle", "balanced"])
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_a_day_with_nobody_away_runs_as_one_local_loop(
    strategy: str, case: str, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A longest-idle day (one heap of all the agents) and a balanced day (the free and the
    working, the choice ``_balanced``'s) run as one local loop, which logs what a step per
    call logs, to the last field, also with calls in whole seconds that arrive, free agents
    and hang up in one millisecond (for balanced: passes of several calls, placed together
    by the engine's flow)."""
    scenario = parse_scenario(CASES[case], name=case).with_policy(strategy)
    policy = scenario.policy
    kinds = generate_trace(scenario, seed)
    for trace in (kinds, _whole_seconds(kinds[:1], seed)):
        monkeypatch.setattr(pooled._Pool, "_serve", _refused)
        looped = pooled.run(scenario, policy, trace, seed=seed)
        monkeypatch.undo()
        monkeypatch.setattr(pooled._Pool, "_serve_together", pooled._Pool._serve_each)
        assert looped == pooled.run(scenario, policy, trace, seed=seed)
        monkeypatch.undo()


@pytest.mark.parametrize("strategy", ["longest_idle", "round_robin", "balanced"])
def test_round_robin_and_agents_away_serve_call_by_call(
    strategy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The local loops are for longest-idle and balanced days with nobody away: round-robin
    orders the free agents by when they last took a call, and an agent on a break is
    neither free nor working."""
    monkeypatch.setattr(pooled._Pool, "_serve_together", _refused)
    if strategy == "round_robin":
        scenario = parse_scenario(CASES["plain"], name="plain").with_policy(strategy)
        pooled.run(scenario, scenario.policy, generate_trace(scenario, 1), seed=1)
    raw = _pool(pool={"agents": 4, "rate_per_hour": 40}, policy={"strategy": strategy})
    del raw["pool"]
    raw["agents"] = [{"count": 2}, {"count": 2, "breaks": [{"start": "01:00", "duration_s": 900}]}]
    raw["arrivals"] = [{"name": "in", "channel": "voice", "rate_per_hour": 40, "handle": 180}]
    away = parse_scenario(raw, name="away")
    calls = generate_trace(away, 1)
    assert pooled.qualifies(away, away.policy, calls, escalate=True)
    pooled.run(away, away.policy, calls, seed=1)


def _refused(*_args: object) -> None:
    raise AssertionError("this way of serving calls should not run here")


def test_queue_order_is_by_arrival_then_call_id() -> None:
    calls = [TraceCall(arrival_s=0.0, call_id=c, channel=Channel.VOICE) for c in "dcab"]
    assert pooled._queue_order([5, 7, 9, 11], calls) == [0, 1, 2, 3]  # kept as it is
    assert pooled._queue_order([5, 5, 9, 9], calls) == [1, 0, 2, 3]  # "c" before "d"
    assert pooled._queue_order([9, 7, 5, 5], calls) == [2, 3, 1, 0]
