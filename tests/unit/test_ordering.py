"""Unit tests for ``router.ordering`` and the queue order batch decisions follow."""

from __future__ import annotations

import random

import pytest

from router import forecast
from router.domain import Channel, Policy, SlaTarget, Strategy, frozen_map
from router.ordering import order_key, overdue, queue_order, waited_ms
from tests.unit.factories import NOW, chosen, make_agent, make_call, run

NO_SLA = Policy(sla={})
"""Aging only: no SLA target, so no call is ever overdue."""

ALL_STRATEGIES = list(Strategy)


def test_order_key_is_origin_minus_priority_worth() -> None:
    """Key = (enqueued or created) - priority * aging_s_per_priority * 1000, lowest first."""
    policy = Policy(aging_s_per_priority=60)
    assert order_key(make_call("c", created_ms=NOW, priority=0), policy) == NOW
    assert order_key(make_call("c", created_ms=NOW, priority=3), policy) == NOW - 180_000
    requeued = make_call("c", created_ms=NOW - 9_000, enqueued_ms=NOW - 5_000, priority=1)
    assert order_key(requeued, policy) == NOW - 65_000
    # No origin: the plain formula gives 0; inside a decision the call counts as arriving now.
    no_origin = make_call("c", created_ms=0, priority=1)
    assert order_key(no_origin, policy) == -60_000
    assert order_key(no_origin, policy, now_ms=NOW) == NOW - 60_000
    assert waited_ms(no_origin, NOW) == 0
    assert waited_ms(requeued, NOW) == 5_000


def test_overdue_from_the_sla_target() -> None:
    """Overdue once the wait reaches sla_at_risk of the target (or passes the target); never
    without a target."""
    policy = Policy(sla=frozen_map({Channel.VOICE: SlaTarget(20)}), sla_at_risk=0.8)
    assert not overdue(make_call("c", created_ms=NOW - 15_999), NOW, policy)
    assert overdue(make_call("c", created_ms=NOW - 16_000), NOW, policy)
    assert not overdue(make_call("c", Channel.CHAT, created_ms=NOW - 999_000), NOW, policy)
    assert not overdue(make_call("c", created_ms=0), NOW, policy)
    lax = Policy(sla=frozen_map({Channel.VOICE: SlaTarget(20)}), sla_at_risk=1.0)
    assert not overdue(make_call("c", created_ms=NOW - 19_999), NOW, lax)
    assert overdue(make_call("c", created_ms=NOW - 20_000), NOW, lax)


@pytest.mark.parametrize("seed", range(5))
def test_overdue_is_sla_state_without_an_estimated_wait(seed: int) -> None:
    """``overdue`` equals ``forecast.sla_state`` with ewt 0 (at risk or breached)."""
    rng = random.Random(seed)
    for _ in range(50):
        policy = Policy(sla_at_risk=rng.choice([0.5, 0.8, 1.0]))
        call = make_call(
            "c",
            rng.choice(list(Channel)),
            created_ms=rng.choice([0, NOW - rng.randint(0, 200_000)]),
        )
        assert overdue(call, NOW, policy) == any(forecast.sla_state(call, NOW, 0.0, policy))


def test_queue_order_puts_overdue_first_then_key_then_voice_then_id() -> None:
    """Overdue calls lead; the rest follow by key; equal keys put voice first, then call id."""
    policy = Policy(sla=frozen_map({Channel.VOICE: SlaTarget(20)}))
    calls = [
        make_call("urgent", priority=5, created_ms=NOW - 1_000),  # key NOW - 301 s
        make_call("late", priority=0, created_ms=NOW - 17_000),  # overdue (>= 16 s)
        make_call("chat-b", Channel.CHAT, created_ms=NOW - 5_000),
        make_call("chat-a", Channel.CHAT, created_ms=NOW - 5_000),
        make_call("voice", created_ms=NOW - 5_000),
    ]
    ordered = [calls[i].call_id for i in queue_order(calls, NOW, policy)]
    assert ordered == ["late", "urgent", "voice", "chat-a", "chat-b"]


@pytest.mark.parametrize("strategy", ALL_STRATEGIES)
def test_old_low_priority_call_beats_new_high_priority_call(strategy: Strategy) -> None:
    """One agent, two calls: priority 2 is worth 120 s, so a call 190 s older wins it;
    one only 90 s older loses it."""
    policy = Policy(strategy=strategy, sla={}, aging_s_per_priority=60)
    agent = [make_agent("a")]
    urgent = make_call("urgent", priority=2, created_ms=NOW - 10_000)
    old = make_call("old", preferred_agent_id="a", created_ms=NOW - 200_000)
    assert chosen(run(agent, [urgent, old], policy)) == [None, "a"]
    newer = make_call("newer", preferred_agent_id="a", created_ms=NOW - 100_000)
    assert chosen(run(agent, [urgent, newer], policy)) == ["a", None]


@pytest.mark.parametrize("strategy", ALL_STRATEGIES)
def test_older_call_beats_newer_call_of_the_same_priority(strategy: Strategy) -> None:
    """At equal priority the older call takes the scarce agent, even when the newer call
    would fit the agent better (the previous-agent bonus)."""
    policy = Policy(strategy=strategy, sla={})
    agent = [make_agent("a")]
    calls = [
        make_call("new", preferred_agent_id="a", created_ms=NOW - 1_000),
        make_call("old", created_ms=NOW - 2_000),
    ]
    assert chosen(run(agent, calls, policy)) == [None, "a"]


@pytest.mark.parametrize("strategy", ALL_STRATEGIES)
def test_at_risk_call_is_ranked_first(strategy: Strategy) -> None:
    """A call past sla_at_risk of its target takes the scarce agent from a more urgent one;
    without SLA targets the urgent call wins again."""
    agent = [make_agent("a")]
    risky = make_call("risky", created_ms=NOW - 17_000)  # voice target 20 s: at risk at 16 s
    urgent = make_call("urgent", priority=5, created_ms=NOW - 1_000)
    assert chosen(run(agent, [urgent, risky], Policy(strategy=strategy))) == [None, "a"]
    no_sla = Policy(strategy=strategy, sla={})
    assert chosen(run(agent, [urgent, risky], no_sla)) == ["a", None]


@pytest.mark.parametrize("strategy", ALL_STRATEGIES)
def test_an_old_chat_is_solved_before_a_new_voice_call(strategy: Strategy) -> None:
    """Channels are served in queue order too: an older chat takes the agent's units before a
    newer voice call (voice only wins ties)."""
    agent = [make_agent("a")]
    calls = [
        make_call("voice", created_ms=NOW - 1_000),
        make_call("chat", Channel.CHAT, created_ms=NOW - 30_000),
    ]
    assert chosen(run(agent, calls, Policy(strategy=strategy, sla={}))) == [None, "a"]


def test_a_call_without_age_does_not_jump_the_queue() -> None:
    """A call with no creation time counts as arriving now, behind calls that have waited."""
    agent = [make_agent("a")]
    calls = [make_call("ageless", created_ms=0), make_call("waiting", created_ms=NOW - 5_000)]
    assert chosen(run(agent, calls, NO_SLA)) == [None, "a"]


def test_batch_places_the_earliest_calls_that_fit() -> None:
    """Two agents, four calls, one of them picky: the two earliest placeable calls in queue
    order are placed, and no placement is lost to the order."""
    agents = [make_agent("a", skills={"billing": 9}), make_agent("b", skills={"billing": 3})]
    calls = [
        make_call("c4", created_ms=NOW - 10_000),
        make_call("c1", created_ms=NOW - 40_000),
        make_call("picky", min_level=8, created_ms=NOW - 30_000),
        make_call("c3", created_ms=NOW - 20_000),
    ]
    decision = run(agents, calls, NO_SLA)
    # c1 first, then picky (only a qualifies), so c1 goes to b.
    assert chosen(decision) == [None, "b", "a", None]
    # A third agent who cannot serve picky: c3 comes next in line, not c4.
    more = [*agents, make_agent("c", skills={"billing": 3})]
    assert sorted(filter(None, chosen(run(more, calls, NO_SLA)))) == ["a", "b", "c"]
    assert chosen(run(more, calls, NO_SLA))[0] is None


@pytest.mark.parametrize("strategy", [Strategy.LONGEST_IDLE, Strategy.ROUND_ROBIN])
def test_baselines_serve_calls_in_queue_order(strategy: Strategy) -> None:
    """Baselines give the first agent in line to the first call in queue order."""
    agents = [
        make_agent("first", last_free_ms=NOW - 90_000, last_assigned_ms=NOW - 90_000),
        make_agent("second", last_free_ms=NOW - 10_000, last_assigned_ms=NOW - 10_000),
    ]
    calls = [
        make_call("newer", priority=1, created_ms=NOW - 1_000),
        make_call("older", created_ms=NOW - 100_000),
    ]
    assert chosen(run(agents, calls, Policy(strategy=strategy, sla={}))) == ["second", "first"]
