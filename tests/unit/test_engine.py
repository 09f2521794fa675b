"""Unit tests for the decision core: hard eligibility, strategies and explanations."""

from __future__ import annotations

import dataclasses
import random
import subprocess
import sys
from collections import Counter

import pytest

from router import eligibility
from router.balanced import tie_key
from router.board import Board
from router.domain import (
    Absence,
    AbsenceKind,
    ActiveWork,
    AgentSnapshot,
    Call,
    Channel,
    Decision,
    Exclusion,
    Policy,
    Presence,
    Snapshot,
    Strategy,
    WideningStep,
    WorkSpan,
)
from router.engine import decide
from scoring.load import occupancy
from tests.unit.factories import (
    HOUR_MS,
    NOW,
    chosen,
    make_agent,
    make_call,
    placed,
    run,
    stats,
    work,
)

ALL_STRATEGIES = list(Strategy)


# --- hard eligibility ---------------------------------------------------------------------------

_VACATION = Absence("v1", AbsenceKind.VACATION, NOW - HOUR_MS, NOW + HOUR_MS)
_TRAINING_SOON = Absence("t1", AbsenceKind.TRAINING, NOW + 120_000, NOW + HOUR_MS)

RULE_CASES = [
    (Exclusion.NOT_AVAILABLE, make_agent("bad", presence=Presence.BREAK), make_call("c1")),
    (Exclusion.HEARTBEAT_EXPIRED, make_agent("bad", heartbeat_ms=NOW - 121_000), make_call("c1")),
    (Exclusion.SCHEDULED_ABSENCE, make_agent("bad", absences=(_VACATION,)), make_call("c1")),
    (Exclusion.MISSING_SKILL, make_agent("bad", skills={"tech": 9}), make_call("c1")),
    (Exclusion.SKILL_TOO_LOW, make_agent("bad", skills={"billing": 2}), make_call("c1")),
    (Exclusion.LANGUAGE, make_agent("bad", languages=frozenset({"pt"})), make_call("c1")),
    (
        Exclusion.CHANNEL_NOT_SERVED,
        make_agent("bad", capacity={Channel.VOICE: 0}),
        make_call("c1"),
    ),
    (Exclusion.AT_CAPACITY, make_agent("bad", active=(work(Channel.VOICE, 100),)), make_call("c1")),
    (
        Exclusion.OCCUPANCY_CAP,
        make_agent("bad", recent=(WorkSpan(NOW - HOUR_MS, NOW - 1000, 100),)),
        make_call("c1"),
    ),
    (Exclusion.AT_CAPACITY, make_agent("bad", active=(work(Channel.CHAT, 25),)), make_call("c1")),
    (Exclusion.LANGUAGE, make_agent("bad"), make_call("c1", language="fr")),
    (Exclusion.SKILL_TOO_LOW, make_agent("bad"), make_call("c1", min_level=6)),
    (Exclusion.NOT_AVAILABLE, make_agent("bad", presence=Presence.NOT_RESPONDING), make_call("c1")),
    (Exclusion.DECLINED, make_agent("bad"), make_call("c1", excluded_agents=("x", "bad"))),
    (Exclusion.WRONG_TEAM, make_agent("bad", team="sales"), make_call("c1", team="support")),
    (Exclusion.WRONG_TEAM, make_agent("bad"), make_call("c1", team="support")),
    (
        Exclusion.REGION,
        make_agent("bad", region="us-east"),
        make_call("c1", region="EU-West", region_required=True),
    ),
    # Voice is expected to take 300 s: a shift ending in 4 minutes is too short.
    (Exclusion.SHIFT_ENDING, make_agent("bad", shift_end_ms=NOW + 240_000), make_call("c1")),
    (Exclusion.SHIFT_ENDING, make_agent("bad", absences=(_TRAINING_SOON,)), make_call("c1")),
]
"""(reason, agent, call): each pair differs from the passing default pair in one way."""


@pytest.mark.parametrize(("reason", "bad", "call"), RULE_CASES)
def test_each_hard_rule_excludes_with_its_reason(
    reason: Exclusion, bad: AgentSnapshot, call: Call
) -> None:
    """Breaking one rule excludes the agent for exactly that reason, in every strategy."""
    # The default pair passes, so the one change is what excludes.
    assert eligibility.check(make_call("c1"), make_agent("good"), NOW, Policy()) is None
    assert eligibility.check(call, bad, NOW, Policy()) == reason
    for strategy in ALL_STRATEGIES:
        decision = run([bad], [call], Policy(strategy=strategy))
        placement = decision.placements[0]
        assert placement.agent_id is None
        assert placement.explanation.excluded == {reason: 1}
        assert placement.explanation.candidates == 0


def test_first_failing_rule_wins() -> None:
    """An offline agent who also lacks the skill is reported as not available."""
    agent = make_agent("a", presence=Presence.OFFLINE, skills={}, languages=frozenset())
    assert eligibility.check(make_call("c"), agent, NOW, Policy()) == Exclusion.NOT_AVAILABLE
    away = make_agent("b", heartbeat_ms=0, absences=(_VACATION,))
    assert eligibility.check(make_call("c"), away, NOW, Policy()) == Exclusion.HEARTBEAT_EXPIRED


def test_language_and_heartbeat_edges() -> None:
    """Languages compare case-insensitively; a zero heartbeat timeout disables that rule."""
    agent = make_agent("a", languages=frozenset({"PT-BR"}), heartbeat_ms=0)
    call = make_call("c", language="pt-BR")
    assert eligibility.check(call, agent, NOW, Policy(heartbeat_timeout_s=0)) is None
    assert eligibility.check(call, agent, NOW, Policy()) == Exclusion.HEARTBEAT_EXPIRED
    assert (
        eligibility.check(
            make_call("c", language=""), make_agent("b", languages=frozenset()), NOW, Policy()
        )
        is None
    )


def test_absence_window_is_half_open() -> None:
    """An absence blocks from its start up to, not including, its end."""
    starts_now = Absence("a", AbsenceKind.TRAINING, NOW, NOW + HOUR_MS)
    ended_now = Absence("b", AbsenceKind.SICK_LEAVE, NOW - HOUR_MS, NOW)
    call = make_call("c")
    blocked = make_agent("x", absences=(starts_now,))
    back = make_agent("y", absences=(ended_now,))
    assert eligibility.check(call, blocked, NOW, Policy()) == Exclusion.SCHEDULED_ABSENCE
    assert eligibility.check(call, back, NOW, Policy()) is None
    assert eligibility.is_present(back, NOW, Policy())
    assert not eligibility.is_present(blocked, NOW, Policy())


@pytest.mark.parametrize("strategy", ALL_STRATEGIES)
def test_absent_agents_are_never_chosen(strategy: Strategy) -> None:
    """Agents away, silent or on leave lose every call, however good they are."""
    star = stats(1.0, 200)
    absent = [
        make_agent("a-away", presence=Presence.AWAY, performance=star, skills={"billing": 10}),
        make_agent("a-dead", heartbeat_ms=NOW - HOUR_MS, performance=star, skills={"billing": 10}),
        make_agent("a-leave", absences=(_VACATION,), performance=star, skills={"billing": 10}),
    ]
    present = [make_agent(f"p{i}", capacity={Channel.CHAT: 4}) for i in range(3)]
    calls = [make_call(f"c{i}", Channel.CHAT) for i in range(12)]
    decision = run(absent + present, calls, Policy(strategy=strategy))
    assert set(chosen(decision)) <= {"p0", "p1", "p2"}
    assert Counter(chosen(decision)) == {"p0": 4, "p1": 4, "p2": 4}
    excluded = decision.placements[0].explanation.excluded
    assert excluded == {
        Exclusion.NOT_AVAILABLE: 1,
        Exclusion.HEARTBEAT_EXPIRED: 1,
        Exclusion.SCHEDULED_ABSENCE: 1,
    }


# --- capacity and occupancy ---------------------------------------------------------------------


def test_four_chats_fill_an_agent() -> None:
    """With chat capacity 4, four 25-unit chats use the whole budget; a fifth is refused."""
    agent = make_agent("a", capacity={Channel.CHAT: 4})
    chats = [make_call(f"c{i}", Channel.CHAT) for i in range(5)]
    decision = run([agent], chats)
    assert chosen(decision) == ["a", "a", "a", "a", None]
    # The batch solve screened the agent before the others took its slots: still a candidate.
    assert decision.placements[4].explanation.candidates == 1
    one_by_one = run([agent], chats, Policy(strategy=Strategy.LONGEST_IDLE))
    assert chosen(one_by_one) == ["a", "a", "a", "a", None]
    assert one_by_one.placements[4].explanation.excluded == {Exclusion.AT_CAPACITY: 1}
    full = make_agent(
        "a",
        capacity={Channel.CHAT: 9},
        active=tuple(work(Channel.CHAT, 25, NOW - i) for i in range(4)),
    )
    assert (
        eligibility.check(make_call("c", Channel.CHAT), full, NOW, Policy())
        == Exclusion.AT_CAPACITY
    )
    # An email (20 units) does not fit either, though the email channel itself is empty.
    assert (
        eligibility.check(make_call("c", Channel.EMAIL), full, NOW, Policy())
        == Exclusion.AT_CAPACITY
    )


def test_default_chat_capacity_limits_items() -> None:
    """The policy's default chat capacity (3) limits items before the unit budget does."""
    decision = run([make_agent("a")], [make_call(f"c{i}", Channel.CHAT) for i in range(4)])
    assert chosen(decision) == ["a", "a", "a", None]


@pytest.mark.parametrize("strategy", ALL_STRATEGIES)
def test_voice_cannot_join_a_chat_in_the_same_batch(strategy: Strategy) -> None:
    """A chat placed earlier in the batch takes units a later voice call would need."""
    calls = [
        make_call("voice", Channel.VOICE, priority=0),
        make_call("chat", Channel.CHAT, priority=5),
    ]
    decision = run([make_agent("a")], calls, Policy(strategy=strategy))
    assert chosen(decision) == [None, "a"]
    assert decision.placements[0].explanation.excluded == {Exclusion.AT_CAPACITY: 1}
    # Voice first on equal priority: then the chat cannot join the voice call.
    calls = [make_call("chat", Channel.CHAT), make_call("voice", Channel.VOICE)]
    decision = run([make_agent("a")], calls, Policy(strategy=strategy))
    assert chosen(decision) == [None, "a"]


def test_occupancy_cap_blocks_and_agent_cap_overrides_policy() -> None:
    """An agent at or over the rolling cap is excluded; a personal cap replaces the policy's."""
    busy = (WorkSpan(NOW - HOUR_MS, NOW - HOUR_MS // 5, 100),)  # 0.8 of the last hour
    call = make_call("c")
    assert eligibility.check(call, make_agent("a", recent=busy), NOW, Policy()) is None
    capped = make_agent("b", recent=busy, max_occupancy=0.8)
    assert eligibility.check(call, capped, NOW, Policy()) == Exclusion.OCCUPANCY_CAP
    strict_policy = Policy(max_occupancy=0.75)
    assert (
        eligibility.check(call, make_agent("a", recent=busy), NOW, strict_policy)
        == Exclusion.OCCUPANCY_CAP
    )
    relaxed = make_agent("c", recent=busy, max_occupancy=0.95)
    assert eligibility.check(call, relaxed, NOW, strict_policy) is None


def test_unindexed_agents_count_as_missing_skill() -> None:
    """Agents the store pruned by its skill index appear as MISSING_SKILL in explanations."""
    decision = run([make_agent("a"), make_agent("b", skills={})], [make_call("c")], unindexed=7)
    assert decision.placements[0].agent_id == "a"
    assert decision.placements[0].explanation.excluded == {Exclusion.MISSING_SKILL: 8}


# --- BALANCED -----------------------------------------------------------------------------------


def test_balanced_spreads_calls_over_equal_agents() -> None:
    """Ten chats over ten equally good agents: the convex load cost gives one each."""
    agents = [make_agent(f"a{i:02d}") for i in range(10)]
    decision = run(agents, [make_call(f"c{i}", Channel.CHAT) for i in range(10)])
    assert placed(decision) == [f"a{i:02d}" for i in range(10)]


def test_lone_calls_share_equally_good_agents() -> None:
    """One call at a time (every Assign) over equally good idle agents: each call's ties go by
    a per-call hash, so the calls spread over all of them (not all to the lowest agent id),
    the same way on every run."""
    agents = [make_agent(f"a{i:02d}") for i in range(10)]
    chosen_ids = [
        placed(run(agents, [make_call(f"call-{n}", Channel.CHAT)]))[0] for n in range(200)
    ]
    counts = Counter(chosen_ids)
    assert set(counts) == {agent.agent_id for agent in agents}
    assert max(counts.values()) < 40  # 20 each on average
    assert chosen_ids == [
        placed(run(agents, [make_call(f"call-{n}", Channel.CHAT)]))[0] for n in range(200)
    ]
    first = min(agents, key=lambda agent: tie_key("call-0", agent.agent_id)).agent_id
    assert chosen_ids[0] == first


@pytest.mark.parametrize(("team", "top_k"), [(12, 3), (200, 50), (10, 1)])
def test_lone_calls_share_equally_good_agents_beyond_top_k(team: int, top_k: int) -> None:
    """More equally good agents than ``top_k`` (idle past the horizon after a lull): a lone
    call is chosen among all of them by its per-call hash, so every one of them gets calls,
    not only the ``top_k`` lowest ids; small teams (one agent at a time) and large ones
    (columns) alike."""
    agents = [make_agent(f"a{i:03d}", last_free_ms=NOW - 3_600_000) for i in range(team)]
    policy = Policy(top_k=top_k)
    chosen_ids = [
        placed(run(agents, [make_call(f"call-{n}", Channel.CHAT)], policy))[0]
        for n in range(10 * team)
    ]
    assert set(chosen_ids) >= {agent.agent_id for agent in agents[-top_k - 2 :]}
    first = min(agents, key=lambda agent: tie_key("call-0", agent.agent_id)).agent_id
    assert chosen_ids[0] == first


def test_balanced_places_exactly_the_capacity() -> None:
    """More calls than slots: exactly as many calls as there are slots are placed."""
    agents = [make_agent(f"a{i}") for i in range(3)] + [make_agent("x", presence=Presence.BUSY)]
    calls = [make_call(f"c{i}") for i in range(5)]
    decision = run(agents, calls)
    placed = [agent for agent in chosen(decision) if agent is not None]
    assert sorted(placed) == ["a0", "a1", "a2"]
    unplaced = [p for p in decision.placements if p.agent_id is None]
    assert len(unplaced) == 2
    for placement in unplaced:
        assert placement.explanation.excluded == {Exclusion.NOT_AVAILABLE: 1}
        assert placement.explanation.candidates == 3
        assert placement.explanation.score_parts == {}


def test_top_k_pruning_keeps_the_maximum_placement() -> None:
    """Even with top_k=1, every call in a batch that fits is placed."""
    agents = [make_agent(f"a{i}", skills={"billing": 10 - i}) for i in range(4)]
    decision = run(agents, [make_call(f"c{i}") for i in range(4)], Policy(top_k=1))
    assert placed(decision) == ["a0", "a1", "a2", "a3"]


def test_previous_agent_wins_ties() -> None:
    """Between equal agents the customer's previous agent gets the call."""
    agents = [make_agent("a"), make_agent("b"), make_agent("c")]
    assert chosen(run(agents, [make_call("c1")])) == ["a"]
    decision = run(agents, [make_call("c1", preferred_agent_id="b")])
    assert chosen(decision) == ["b"]
    explanation = decision.placements[0].explanation
    assert explanation.score_parts["previous_agent"] == 1.5
    assert explanation.runner_up_agent_id == "a"
    assert explanation.score - explanation.runner_up_score == pytest.approx(1.5)


def test_balanced_prefers_the_better_agent() -> None:
    """A single call goes to the more skilled, better performing agent."""
    agents = [
        make_agent("a", skills={"billing": 4}),
        make_agent("b", skills={"billing": 9}, performance=stats(0.95, 50)),
    ]
    decision = run(agents, [make_call("c1")])
    assert chosen(decision) == ["b"]
    explanation = decision.placements[0].explanation
    assert explanation.strategy == Strategy.BALANCED
    assert explanation.candidates == 2
    assert explanation.excluded == {}
    assert set(explanation.score_parts) == {
        "skill",
        "performance",
        "region",
        "previous_agent",
        "idle",
        "load",
    }
    assert explanation.score_parts["load"] < 0
    assert explanation.score == pytest.approx(sum(explanation.score_parts.values()), abs=1e-3)
    assert explanation.runner_up_agent_id == "a"
    assert explanation.runner_up_score < explanation.score


def test_higher_priority_wins_the_scarce_agent() -> None:
    """One agent, two calls: the urgent one is placed even if the other fits better and is
    9 s older (less than the 5 * 60 s its priority is worth, and not near its SLA target)."""
    calls = [
        make_call("normal", preferred_agent_id="a", created_ms=NOW - 10_000),
        make_call("urgent", priority=5),
    ]
    decision = run([make_agent("a")], calls)
    assert chosen(decision) == [None, "a"]
    assert decision.placements[0].explanation.candidates == 1


def test_priority_never_costs_placements() -> None:
    """Priority decides who waits, never how many are placed."""
    agents = [make_agent("a", skills={"billing": 9}), make_agent("b", skills={"billing": 3})]
    calls = [make_call("urgent", priority=9, min_level=1), make_call("picky", min_level=8)]
    # The urgent call could take a, but then the picky call (only a qualifies) would wait.
    assert chosen(run(agents, calls)) == ["b", "a"]


def test_balanced_keeps_load_off_busy_agents() -> None:
    """Between equal agents, the one with recent occupancy closer to its cap waits."""
    recent = (WorkSpan(NOW - HOUR_MS, NOW - HOUR_MS // 4, 100),)  # occupancy 0.75
    agents = [make_agent("a", recent=recent), make_agent("b")]
    assert chosen(run(agents, [make_call("c1")])) == ["b"]


def simulate(policy: Policy, star_cap: float | None = None) -> tuple[Counter[str], float]:
    """Four hours of one voice call a minute, 150 s each, over a star and three peers.

    Returns calls per agent and the star's highest occupancy at the moment it got a call.
    """
    star = make_agent("star", performance=stats(1.0, 100), max_occupancy=star_cap)
    peers = [make_agent(f"peer{i}", performance=stats(0.55, 100)) for i in range(3)]
    agents = {agent.agent_id: agent for agent in [star, *peers]}
    handle_ms = 150_000
    counts: Counter[str] = Counter()
    star_peak = 0.0
    for step in range(240):
        now = NOW + step * 60_000
        for agent_id, agent in agents.items():
            done = tuple(w for w in agent.active if w.start_ms + handle_ms <= now)
            spans = tuple(WorkSpan(w.start_ms, w.start_ms + handle_ms, w.units) for w in done)
            agents[agent_id] = dataclasses.replace(
                agent,
                heartbeat_ms=now,
                active=tuple(w for w in agent.active if w not in done),
                recent=agent.recent + spans,
                last_free_ms=max([agent.last_free_ms, *(span.end_ms for span in spans)]),
            )
        snapshot = Snapshot(now_ms=now, policy=policy, agents=tuple(agents.values()))
        call = make_call(f"c{step}", created_ms=now)
        winner = decide(snapshot, [call], rng=random.Random(step)).placements[0].agent_id
        if winner is None:
            continue
        picked = agents[winner]
        if winner == "star":
            star_peak = max(star_peak, occupancy(picked, now, policy.occupancy_window_s))
        counts[winner] += 1
        agents[winner] = dataclasses.replace(
            picked, active=(*picked.active, work(Channel.VOICE, 100, now))
        )
    return counts, star_peak


def test_top_performer_gets_more_work_than_peers_but_less_than_best_skill() -> None:
    """BALANCED gives the star more calls than any peer, yet fewer than BEST_SKILL does."""
    balanced, _ = simulate(Policy(occupancy_window_s=1800))
    best_skill, _ = simulate(Policy(strategy=Strategy.BEST_SKILL, occupancy_window_s=1800))
    peers = [f"peer{i}" for i in range(3)]
    assert balanced["star"] > max(balanced[p] for p in peers)
    assert min(balanced[p] for p in peers) > 0
    assert balanced["star"] < best_skill["star"]
    assert sum(balanced.values()) == sum(best_skill.values()) == 240


@pytest.mark.parametrize("strategy", [Strategy.BALANCED, Strategy.BEST_SKILL])
def test_top_performer_never_passes_the_occupancy_cap(strategy: Strategy) -> None:
    """A star with a low personal cap is only given calls while under that cap."""
    policy = Policy(strategy=strategy, occupancy_window_s=1800)
    uncapped, _ = simulate(policy)
    counts, star_peak = simulate(policy, star_cap=0.5)
    assert 0.0 < star_peak < 0.5
    assert counts["star"] < uncapped["star"]


@pytest.mark.parametrize("strategy", ALL_STRATEGIES)
def test_decisions_are_deterministic(strategy: Strategy) -> None:
    """The same inputs give the same Decision, whatever order the agents arrive in."""
    agents = [
        make_agent(
            f"a{i}",
            skills={"billing": 3 + i % 5},
            performance=stats(0.5 + i / 40, i),
            last_free_ms=NOW - i * 7_000,
            last_assigned_ms=NOW - (i * 37 % 11) * 1000,
        )
        for i in range(12)
    ]
    calls = [
        make_call(f"c{i}", [Channel.CHAT, Channel.VOICE, Channel.EMAIL][i % 3], priority=i % 4)
        for i in range(15)
    ]
    policy = Policy(strategy=strategy)
    first = run(agents, calls, policy)
    assert run(agents, calls, policy) == first
    assert run(list(reversed(agents)), calls, policy) == first
    assert len(first.placements) == len(calls)
    assert [p.call_id for p in first.placements] == [c.call_id for c in calls]


# --- baselines ----------------------------------------------------------------------------------


def test_longest_idle_picks_the_longest_free_agent() -> None:
    """LONGEST_IDLE takes the smallest last_free_ms, then the next one for the next call."""
    agents = [
        make_agent("a", last_free_ms=NOW - 10_000),
        make_agent("b", last_free_ms=NOW - 90_000),
        make_agent("c", last_free_ms=NOW - 50_000),
    ]
    policy = Policy(strategy=Strategy.LONGEST_IDLE)
    assert chosen(run(agents, [make_call("c1")], policy)) == ["b"]
    chats = [make_call(f"c{i}", Channel.CHAT) for i in range(3)]
    assert chosen(run(agents, chats, policy)) == ["b", "c", "a"]


def test_longest_idle_agrees_between_a_batch_and_assigns_one_at_a_time() -> None:
    """Chats (three slots each): an agent given a call is no longer idle, whether the call
    came in a batch or in an Assign committed before the next (the store moves only
    ``last_assigned_ms`` then, as work is still in progress): both give A, B, C, never A
    three times while B and C sit idle."""
    agents = [
        make_agent("A", last_free_ms=NOW - 30 * 60_000),
        make_agent("B", last_free_ms=NOW - 20 * 60_000),
        make_agent("C", last_free_ms=NOW - 10 * 60_000),
    ]
    policy = Policy(strategy=Strategy.LONGEST_IDLE)
    calls = [make_call(f"c{i}", Channel.CHAT, created_ms=NOW - 1_000 + i) for i in range(3)]
    assert chosen(run(agents, calls, policy)) == ["A", "B", "C"]
    one_by_one = []
    for n, call in enumerate(calls):
        (agent_id,) = chosen(run(agents, [call], policy))
        assert agent_id is not None
        one_by_one.append(agent_id)
        work = ActiveWork(f"asg-{n}", Channel.CHAT, 25, NOW)
        agents = [  # committed as the stores do: the work, last_assigned_ms; last_free_ms stays
            dataclasses.replace(a, active=(*a.active, work), last_assigned_ms=NOW)
            if a.agent_id == agent_id
            else a
            for a in agents
        ]
    assert one_by_one == ["A", "B", "C"]


@pytest.mark.parametrize("strategy", [Strategy.BALANCED, Strategy.LONGEST_IDLE])
def test_time_on_a_scheduled_absence_is_not_idle_time(strategy: Strategy) -> None:
    """Back from an hour's absence a minute ago, an agent who last freed two hours ago has
    been idle a minute: balanced's idle part and longest-idle both prefer the agent free
    for fifteen minutes, call after call."""
    lunch = Absence("lunch", AbsenceKind.OTHER, NOW - HOUR_MS - 60_000, NOW - 60_000)
    agents = [
        make_agent(
            "back",
            last_free_ms=NOW - 2 * HOUR_MS,
            last_assigned_ms=NOW - 3 * HOUR_MS,
            absences=(lunch,),
        ),
        make_agent("desk", last_free_ms=NOW - 15 * 60_000, last_assigned_ms=NOW - HOUR_MS),
    ]
    policy = Policy(strategy=strategy)
    for n in range(8):
        assert chosen(run(agents, [make_call(f"c{n}")], policy)) == ["desk"]


def test_an_absence_restarts_the_idle_clock_of_an_agent_holding_nothing_only() -> None:
    """As becoming AVAILABLE with work in hand leaves the longest-idle clock alone, so does
    the end of an absence the agent worked through: an email taken two hours ago and still
    open keeps its agent first in line for a chat."""
    lunch = Absence("lunch", AbsenceKind.OTHER, NOW - HOUR_MS - 60_000, NOW - 60_000)
    agents = [
        make_agent(
            "back",
            last_free_ms=NOW - 3 * HOUR_MS,
            last_assigned_ms=NOW - 2 * HOUR_MS,
            active=(work(Channel.EMAIL, 20, NOW - 2 * HOUR_MS),),
            absences=(lunch,),
        ),
        make_agent("desk", last_free_ms=NOW - 15 * 60_000, last_assigned_ms=NOW - HOUR_MS),
    ]
    policy = Policy(strategy=Strategy.LONGEST_IDLE)
    assert chosen(run(agents, [make_call("c1", Channel.CHAT)], policy)) == ["back"]


def test_round_robin_picks_the_least_recently_assigned() -> None:
    """ROUND_ROBIN takes the smallest last_assigned_ms, ties by agent id."""
    agents = [
        make_agent("a", last_assigned_ms=NOW - 5_000, last_free_ms=NOW - 99_000),
        make_agent("b", last_assigned_ms=NOW - 80_000),
        make_agent("c", last_assigned_ms=NOW - 80_000),
    ]
    policy = Policy(strategy=Strategy.ROUND_ROBIN)
    assert chosen(run(agents, [make_call("c1")], policy)) == ["b"]
    chats = [make_call(f"c{i}", Channel.CHAT) for i in range(5)]
    # Within a batch the rotation continues in placement order: b, c, a, then b again.
    assert chosen(run(agents, chats, policy)) == ["b", "c", "a", "b", "c"]


def test_best_skill_overloads_the_top_agent() -> None:
    """BEST_SKILL takes the highest skill, then performance, and ignores load."""
    agents = [
        make_agent("a", skills={"billing": 9}, performance=stats(0.6, 10)),
        make_agent("b", skills={"billing": 9}, performance=stats(0.65, 10)),
        make_agent("c", skills={"billing": 6}, performance=stats(1.0, 90)),
    ]
    chats = [make_call(f"c{i}", Channel.CHAT) for i in range(4)]
    decision = run(agents, chats, Policy(strategy=Strategy.BEST_SKILL))
    assert chosen(decision) == ["b", "b", "b", "a"]
    assert decision.placements[0].explanation.strategy == Strategy.BEST_SKILL
    # BALANCED shares the work: the near-equal agent a gets some of b's third chat and more.
    balanced = Counter(chosen(run(agents, chats)))
    assert balanced["b"] <= 2
    assert balanced["a"] >= 1
    assert sum(balanced.values()) == 4


def test_random_picks_only_eligible_agents_reproducibly() -> None:
    """RANDOM draws from the eligible agents with the given rng, the same for the same seed."""
    agents = [make_agent(f"a{i}") for i in range(4)] + [
        make_agent("off", presence=Presence.OFFLINE)
    ]
    policy = Policy(strategy=Strategy.RANDOM)
    picks = {chosen(run(agents, [make_call("c1")], policy, seed=seed))[0] for seed in range(40)}
    assert picks == {"a0", "a1", "a2", "a3"}
    assert run(agents, [make_call("c1")], policy, seed=3) == run(
        agents, [make_call("c1")], policy, seed=3
    )
    expected = random.Random(3).choice(["a0", "a1", "a2", "a3"])
    assert chosen(run(agents, [make_call("c1")], policy, seed=3)) == [expected]


def test_baseline_explanation_lists_runner_up() -> None:
    """Baseline explanations carry the chosen agent's score parts and the best other agent."""
    agents = [
        make_agent("a", last_free_ms=NOW - 1000),
        make_agent("b", skills={"billing": 9}, last_free_ms=NOW - 9000),
        make_agent("z", skills={}),
    ]
    decision = run(agents, [make_call("c1")], Policy(strategy=Strategy.LONGEST_IDLE))
    explanation = decision.placements[0].explanation
    assert decision.placements[0].agent_id == "b"
    assert explanation.candidates == 2
    assert explanation.excluded == {Exclusion.MISSING_SKILL: 1}
    assert set(explanation.score_parts) == {
        "skill",
        "performance",
        "region",
        "previous_agent",
        "idle",
    }
    assert explanation.score_parts["skill"] == pytest.approx(2.7)
    assert explanation.runner_up_agent_id == "a"
    assert explanation.runner_up_score < explanation.score


def test_no_agents_at_all() -> None:
    """An empty snapshot places nothing and explains it with zero candidates."""
    for strategy in ALL_STRATEGIES:
        decision = run(
            [], [make_call("c1"), make_call("c2", Channel.CHAT)], Policy(strategy=strategy)
        )
        assert chosen(decision) == [None, None]
        assert decision.placements[0].explanation.candidates == 0
        assert decision.placements[0].explanation.runner_up_agent_id == ""
    assert run([make_agent("a")], []) == Decision(placements=())


def test_engine_imports_no_io_modules() -> None:
    """The pure core pulls in no gRPC, protobuf or Redis module, even transitively."""
    code = (
        "import sys, router.engine\n"
        "bad = [m for m in sys.modules if m.startswith(('grpc', 'redis', 'google.protobuf'))"
        " or m.endswith('_pb2')]\n"
        "print(','.join(sorted(bad)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""


def random_agent(rng: random.Random, index: int) -> AgentSnapshot:
    """An agent with random presence, skills, languages, team, region, shift, load and work."""
    channels = [Channel.VOICE, Channel.CHAT, Channel.EMAIL]
    active = tuple(
        work(channel, Policy().units_for(channel), NOW - rng.randint(0, HOUR_MS))
        for channel in rng.sample(channels, rng.randint(0, 1))
    )
    soon = Absence("s", AbsenceKind.TRAINING, NOW + rng.randint(1, 90) * 60_000, NOW + 2 * HOUR_MS)
    return make_agent(
        f"r{index:02d}",
        skills={
            skill: rng.randint(1, 10)
            for skill in rng.sample(["billing", "tech"], rng.randint(0, 2))
        },
        languages=frozenset(rng.sample(["en", "PT", "fr"], rng.randint(0, 2))),
        presence=rng.choice([Presence.AVAILABLE] * 4 + [Presence.BREAK]),
        heartbeat_ms=NOW - rng.choice([0, 0, 0, 200_000]),
        active=active,
        recent=(WorkSpan(NOW - HOUR_MS, NOW - rng.randint(0, HOUR_MS), 100),),
        capacity={Channel.CHAT: rng.randint(0, 4)},
        absences=rng.choice([(), (), (soon,)]),
        team=rng.choice(["", "support", "sales", "overflow"]),
        region=rng.choice(["", "eu", "US"]),
        shift_end_ms=rng.choice([0, 0, NOW + rng.randint(1, 120) * 60_000]),
    )


BOARD_POLICY = Policy(
    widening=(
        WideningStep(after_s=30, level_drop=1),
        WideningStep(after_s=90, teams=("overflow",), any_region=True),
    ),
    sla={},
)
"""A policy whose widening steps the random calls below reach at random."""


@pytest.mark.parametrize("seed", range(10))
def test_board_screening_matches_the_reference_rules(seed: int) -> None:
    """The engine's cached screening equals ``eligibility.screen``, also after placements."""
    rng = random.Random(seed)
    agents = [random_agent(rng, i) for i in range(25)]
    board = Board(
        Snapshot(now_ms=NOW, policy=BOARD_POLICY, agents=tuple(agents), unindexed_missing_skill=2)
    )
    for step in range(12):
        call = make_call(
            f"c{step}",
            rng.choice([Channel.VOICE, Channel.CHAT, Channel.EMAIL]),
            min_level=rng.randint(1, 6),
            language=rng.choice(["en", "pt", ""]),
            enqueued_ms=NOW - rng.randint(0, 120) * 1000,
            team=rng.choice(["", "support", "sales"]),
            region=rng.choice(["", "EU", "us"]),
            region_required=rng.random() < 0.5,
            expected_handle_s=rng.choice([0, 60, 3600]),
            excluded_agents=tuple(rng.sample([a.agent_id for a in agents], 3)),
        )
        expected = eligibility.screen(
            call, board.agents.values(), NOW, BOARD_POLICY, unindexed_missing_skill=2
        )
        got = board.screen(call)
        assert got == expected
        assert list(got.excluded) == [reason for reason in Exclusion if reason in got.excluded]
        if got.eligible:
            board.place(call, rng.choice(got.eligible).agent_id)
