"""Unit tests for the queueing hard rules: declined agents and work outlasting a shift."""

from __future__ import annotations

import random

import pytest

from router import eligibility
from router.domain import (
    Absence,
    AbsenceKind,
    AgentSnapshot,
    Call,
    Channel,
    Exclusion,
    Policy,
    Presence,
    Strategy,
    frozen_map,
)
from tests.unit.factories import (
    HOUR_MS,
    MINUTE_MS,
    NOW,
    chosen,
    make_agent,
    make_call,
    run,
    stats,
    work,
)

ALL_STRATEGIES = list(Strategy)


@pytest.mark.parametrize("strategy", ALL_STRATEGIES)
def test_declined_agent_is_never_chosen(strategy: Strategy) -> None:
    """The agent who rejected a call never gets it back, even as the best and previous agent
    and the only one left; the explanation counts them as DECLINED."""
    star = make_agent("star", skills={"billing": 10}, performance=stats(1.0, 100))
    other = make_agent("other", skills={"billing": 3})
    call = make_call("c", Channel.CHAT, preferred_agent_id="star", excluded_agents=("star",))
    policy = Policy(strategy=strategy)
    for seed in range(5):
        decision = run([star, other], [call], policy, seed=seed)
        assert chosen(decision) == ["other"]
    assert decision.placements[0].explanation.excluded == {Exclusion.DECLINED: 1}
    alone = run([star], [call], policy)
    assert chosen(alone) == [None]
    assert alone.placements[0].explanation.excluded == {Exclusion.DECLINED: 1}
    # In a batch the declined agent still takes the other calls.
    batch = run([star], [call, make_call("d", Channel.CHAT)], policy)
    assert chosen(batch) == [None, "star"]


SHIFT_20_MIN = NOW + 20 * MINUTE_MS
LONG_EMAIL = Policy(expected_handle_s=frozen_map({Channel.EMAIL: 7200, Channel.VOICE: 300}))
"""Emails are expected to take 2 hours, voice calls 5 minutes."""


def test_long_email_is_not_given_to_an_agent_leaving_in_20_minutes() -> None:
    """A 2-hour email would outlast a shift ending in 20 minutes; a 5-minute call would not."""
    leaving = make_agent("leaving", shift_end_ms=SHIFT_20_MIN)
    staying = make_agent("staying", skills={"billing": 3}, shift_end_ms=NOW + 8 * HOUR_MS)
    email = make_call("e", Channel.EMAIL)
    assert eligibility.check(email, leaving, NOW, LONG_EMAIL) == Exclusion.SHIFT_ENDING
    assert eligibility.check(email, staying, NOW, LONG_EMAIL) is None
    decision = run([leaving, staying], [email], LONG_EMAIL)
    assert chosen(decision) == ["staying"]
    assert decision.placements[0].explanation.excluded == {Exclusion.SHIFT_ENDING: 1}
    # The better-skilled leaving agent still takes the short voice call.
    assert chosen(run([leaving, staying], [make_call("v")], LONG_EMAIL)) == ["leaving"]


def test_the_calls_own_estimate_overrides_the_channel_default() -> None:
    """``call.expected_handle_s`` replaces the policy's per-channel expected handle time."""
    leaving = make_agent("leaving", shift_end_ms=SHIFT_20_MIN)
    quick_email = make_call("e", Channel.EMAIL, expected_handle_s=600)
    assert eligibility.check(quick_email, leaving, NOW, LONG_EMAIL) is None
    long_chat = make_call("c", Channel.CHAT, expected_handle_s=2 * 3600)
    assert eligibility.check(long_chat, leaving, NOW, Policy()) == Exclusion.SHIFT_ENDING
    # The default policy expects an email to take 30 minutes: too long for 20.
    assert (
        eligibility.check(make_call("e", Channel.EMAIL), leaving, NOW, Policy())
        == Exclusion.SHIFT_ENDING
    )


def test_shift_end_edges() -> None:
    """Work ending exactly at shift end fits; a shift already over refuses everything;
    an unknown shift end (0) never refuses."""
    call = make_call("v", expected_handle_s=600)
    exact = make_agent("a", shift_end_ms=NOW + 600_000)
    short = make_agent("b", shift_end_ms=NOW + 599_999)
    over = make_agent("c", shift_end_ms=NOW - 1)
    unknown = make_agent("d", shift_end_ms=0)
    policy = Policy()
    assert eligibility.check(call, exact, NOW, policy) is None
    assert eligibility.check(call, short, NOW, policy) == Exclusion.SHIFT_ENDING
    assert eligibility.check(call, over, NOW, policy) == Exclusion.SHIFT_ENDING
    assert eligibility.check(call, unknown, NOW, policy) is None


def test_upcoming_absence_refuses_work_that_would_reach_it() -> None:
    """An absence starting within the expected handle time refuses the work (SHIFT_ENDING);
    one starting just as the work ends does not; one covering now stays SCHEDULED_ABSENCE."""
    training = Absence("t", AbsenceKind.TRAINING, NOW + 30 * MINUTE_MS, NOW + 2 * HOUR_MS)
    agent = make_agent("a", absences=(training,))
    email = make_call("e", Channel.EMAIL)
    assert eligibility.check(email, agent, NOW, LONG_EMAIL) == Exclusion.SHIFT_ENDING
    assert eligibility.check(make_call("v"), agent, NOW, LONG_EMAIL) is None
    just_fits = make_call("e", Channel.EMAIL, expected_handle_s=30 * 60)
    assert eligibility.check(just_fits, agent, NOW, LONG_EMAIL) is None
    inside = NOW + 31 * MINUTE_MS
    alive = make_agent("a", absences=(training,), heartbeat_ms=inside)
    assert eligibility.check(make_call("v"), alive, inside, LONG_EMAIL) == (
        Exclusion.SCHEDULED_ABSENCE
    )
    decision = run([agent, make_agent("b", skills={"billing": 3})], [email], LONG_EMAIL)
    assert chosen(decision) == ["b"]
    assert decision.placements[0].explanation.excluded == {Exclusion.SHIFT_ENDING: 1}


FIRST_FAILING = [
    (
        Exclusion.SCHEDULED_ABSENCE,
        make_agent("a", absences=(Absence("v", AbsenceKind.VACATION, NOW - 1, NOW + 1),), team="x"),
        make_call("c", excluded_agents=("a",), team="y"),
    ),
    (
        Exclusion.DECLINED,
        make_agent("a", team="x", skills={}),
        make_call("c", excluded_agents=("a",), team="y"),
    ),
    (
        Exclusion.WRONG_TEAM,
        make_agent("a", team="x", region="us", skills={}),
        make_call("c", team="y", region="eu", region_required=True),
    ),
    (
        Exclusion.REGION,
        make_agent("a", region="us", skills={}),
        make_call("c", region="eu", region_required=True),
    ),
    (
        Exclusion.LANGUAGE,
        make_agent("a", languages=frozenset({"fr"}), shift_end_ms=NOW + 1),
        make_call("c"),
    ),
    (
        Exclusion.SHIFT_ENDING,
        make_agent("a", shift_end_ms=NOW + 1, active=(work(Channel.VOICE, 100),)),
        make_call("c"),
    ),
]
"""(reason, agent, call): the agent fails several rules; the earliest in the order wins."""


@pytest.mark.parametrize(("reason", "agent", "call"), FIRST_FAILING)
def test_new_rules_take_their_place_in_the_order(
    reason: Exclusion, agent: AgentSnapshot, call: Call
) -> None:
    """The queueing rules slot into the documented order: absence, declined, team, region,
    skills, language, shift, capacity."""
    assert eligibility.check(call, agent, NOW, Policy()) == reason


def test_not_responding_agents_get_nothing_but_status_is_unchanged() -> None:
    """NOT_RESPONDING is simply not AVAILABLE: not present and refused as NOT_AVAILABLE."""
    agent = make_agent("a", presence=Presence.NOT_RESPONDING)
    assert not eligibility.is_present(agent, NOW, Policy())
    assert eligibility.check(make_call("c"), agent, NOW, Policy()) == Exclusion.NOT_AVAILABLE


@pytest.mark.parametrize("seed", range(40))
def test_eligible_until_is_when_the_time_rules_first_refuse(seed: int) -> None:
    """For an agent the absence and shift rules let take work of ``handle_s`` at ``NOW``,
    ``eligible_until_ms`` is the last millisecond they still do: every time up to it
    passes, the next one fails (or no bound: none fails). Random absences and shifts."""
    rng = random.Random(seed)
    policy = Policy(heartbeat_timeout_s=0)
    handle_s = rng.choice([0, 1, 60, 600])
    absences = tuple(
        Absence(f"x{i}", AbsenceKind.TRAINING, start, start + rng.randint(1, 3) * MINUTE_MS)
        for i, start in enumerate(
            NOW + rng.randint(-2, 90) * MINUTE_MS + rng.randint(0, 999) for _ in range(3)
        )
    )
    shift_end = rng.choice([0, NOW + rng.randint(10, 120) * MINUTE_MS])
    agent = make_agent("a", absences=absences, shift_end_ms=shift_end)

    def passes(now_ms: int) -> bool:
        return (
            eligibility.absence_reason(agent, now_ms, policy) is None
            and eligibility.shift_reason(agent, now_ms, handle_s) is None
        )

    if not passes(NOW):
        return
    until = eligibility.eligible_until_ms(agent.profile, NOW, handle_s)
    if until == 0:
        assert all(passes(NOW + step * MINUTE_MS) for step in range(200))
        return
    assert passes(until)
    assert not passes(until + 1)
    assert all(passes(t) for t in range(NOW, until, max(1, (until - NOW) // 500)))
