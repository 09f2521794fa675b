"""Unit tests for ``router.widening`` and the widened hard rules in decisions."""

from __future__ import annotations

import dataclasses

import pytest

from router import eligibility
from router.domain import (
    Call,
    Channel,
    Exclusion,
    Policy,
    Presence,
    SkillRequirement,
    Strategy,
    WideningStep,
)
from router.widening import WidenedRequirements, applied_steps, requirements, widen
from tests.unit.factories import NOW, chosen, make_agent, make_call, run

STEPS = (
    WideningStep(after_s=60, level_drop=1),
    WideningStep(after_s=120, teams=("overflow",)),
    WideningStep(after_s=300, level_drop=2, teams=("night",), any_region=True),
)
POLICY = Policy(widening=STEPS, sla={})
"""Three bullseye steps; no SLA targets, so nothing is ever overdue and only waits count."""


@pytest.mark.parametrize(
    ("waited_s", "expected"),
    [(0, 0), (59, 0), (60, 1), (119, 1), (120, 2), (299, 2), (300, 3), (10_000, 3)],
)
def test_applied_steps_count_the_thresholds_reached(waited_s: int, expected: int) -> None:
    """A step applies from the moment the wait reaches its ``after_s`` (inclusive)."""
    call = make_call("c", enqueued_ms=NOW - waited_s * 1000)
    assert applied_steps(call, NOW, POLICY) == expected


def test_applied_steps_use_enqueued_then_created_and_zero_origin_waits_nothing() -> None:
    """The age counts from ``enqueued_ms``, else ``created_ms``; with neither, no wait."""
    old_created = make_call("c", created_ms=NOW - 400_000)
    requeued = make_call("c", created_ms=NOW - 400_000, enqueued_ms=NOW - 70_000)
    no_origin = make_call("c", created_ms=0)
    assert applied_steps(old_created, NOW, POLICY) == 3
    assert applied_steps(requeued, NOW, POLICY) == 1
    assert applied_steps(no_origin, NOW, POLICY) == 0
    assert applied_steps(old_created, NOW, Policy()) == 0


def test_widen_accumulates_levels_teams_and_region() -> None:
    """Each step adds its level drop and overflow teams; any_region sticks once reached."""
    call = make_call("c", min_level=4, team="support")
    assert widen(call, 0, POLICY) == WidenedRequirements(
        step=0,
        levels=(SkillRequirement("billing", 4),),
        teams=frozenset({"support"}),
        any_region=False,
    )
    assert widen(call, 2, POLICY) == WidenedRequirements(
        step=2,
        levels=(SkillRequirement("billing", 3),),
        teams=frozenset({"support", "overflow"}),
        any_region=False,
    )
    widest = widen(call, 3, POLICY)
    assert widest.levels == (SkillRequirement("billing", 1),)
    assert widest.teams == {"support", "overflow", "night"}
    assert widest.any_region
    # Asking for more steps than exist applies them all.
    assert widen(call, 9, POLICY) == widest


def test_widen_never_goes_below_level_one_nor_invents_a_team() -> None:
    """Level drops stop at 1; a call without a team stays open to every team."""
    call = make_call("c", min_level=2)
    widened = widen(call, 3, POLICY)
    assert widened.levels == (SkillRequirement("billing", 1),)
    assert widened.teams == frozenset()


def test_widen_reads_steps_in_after_s_order() -> None:
    """Steps given out of order still apply nearest-threshold first."""
    shuffled = Policy(widening=(STEPS[2], STEPS[0], STEPS[1]), sla={})
    call = make_call("c", min_level=4, team="support", enqueued_ms=NOW - 61_000)
    assert requirements(call, NOW, shuffled) == requirements(call, NOW, POLICY)
    assert requirements(call, NOW, shuffled).levels == (SkillRequirement("billing", 3),)


@pytest.mark.parametrize("strategy", list(Strategy))
def test_overflow_team_takes_the_call_after_the_wait_threshold(strategy: Strategy) -> None:
    """A support call goes only to support agents until it has waited 120 s; then the
    overflow team may take it and the explanation says which step applied."""
    agents = [
        make_agent("over", team="overflow"),
        make_agent("sup", team="support", presence=Presence.BREAK),
    ]
    policy = Policy(strategy=strategy, widening=STEPS, sla={})
    fresh = make_call("c", team="support", enqueued_ms=NOW - 100_000)
    decision = run(agents, [fresh], policy)
    assert chosen(decision) == [None]
    assert decision.placements[0].explanation.widening_step == 1
    assert decision.placements[0].explanation.excluded == {
        Exclusion.NOT_AVAILABLE: 1,
        Exclusion.WRONG_TEAM: 1,
    }
    waited = make_call("c", team="support", enqueued_ms=NOW - 120_000)
    decision = run(agents, [waited], policy)
    assert chosen(decision) == ["over"]
    assert decision.placements[0].explanation.widening_step == 2


def test_level_drop_lets_a_less_skilled_agent_in() -> None:
    """A level-5 call refuses a level-4 agent until the first step (drop 1) applies."""
    junior = [make_agent("junior", skills={"billing": 4})]
    call = make_call("c", min_level=5, enqueued_ms=NOW - 59_000)
    decision = run(junior, [call], POLICY)
    assert chosen(decision) == [None]
    assert decision.placements[0].explanation.excluded == {Exclusion.SKILL_TOO_LOW: 1}
    later = make_call("c", min_level=5, enqueued_ms=NOW - 60_000)
    decision = run(junior, [later], POLICY)
    assert chosen(decision) == ["junior"]
    assert decision.placements[0].explanation.widening_step == 1


def test_region_required_until_a_step_allows_any_region() -> None:
    """A region-bound call ignores other regions (case-insensitive match) until any_region."""
    agents = [make_agent("us", region="us-east"), make_agent("eu", region="eu-west")]
    call = make_call("c", region="EU-WEST", region_required=True, enqueued_ms=NOW - 1000)
    decision = run(agents, [call], POLICY)
    assert chosen(decision) == ["eu"]
    assert decision.placements[0].explanation.excluded == {Exclusion.REGION: 1}
    only_us = [agents[0]]
    assert chosen(run(only_us, [call], POLICY)) == [None]
    widened = make_call("c", region="EU-WEST", region_required=True, enqueued_ms=NOW - 300_000)
    decision = run(only_us, [widened], POLICY)
    assert chosen(decision) == ["us"]
    assert decision.placements[0].explanation.widening_step == 3
    # Without region_required the region is only a soft preference.
    assert chosen(run(only_us, [make_call("c", region="EU-WEST")], POLICY)) == ["us"]


def test_widened_rules_in_eligibility_check() -> None:
    """``eligibility.check`` applies the widening the call's wait has reached at ``now``."""
    agent = make_agent("a", team="night", skills={"billing": 2}, region="apac")

    def call(waited_s: int, channel: Channel = Channel.VOICE, team: str = "support") -> Call:
        """A level-4, EU-bound call that has waited ``waited_s``."""
        return make_call(
            "c",
            channel,
            min_level=4,
            team=team,
            region="eu",
            region_required=True,
            created_ms=NOW - waited_s * 1000,
        )

    assert eligibility.check(call(0), agent, NOW, POLICY) == Exclusion.WRONG_TEAM
    assert eligibility.check(call(300), agent, NOW, POLICY) is None
    assert eligibility.check(call(0, team=""), agent, NOW, POLICY) == Exclusion.REGION
    assert eligibility.check(call(200, team=""), agent, NOW, POLICY) == Exclusion.REGION
    assert eligibility.check(call(299, team=""), agent, NOW, POLICY) == Exclusion.REGION
    assert eligibility.check(call(300, team=""), agent, NOW, POLICY) is None
    roaming = make_agent("b", skills={"billing": 2}, region="EU")
    email = call(299, Channel.EMAIL, team="")
    assert eligibility.check(email, roaming, NOW, POLICY) == Exclusion.SKILL_TOO_LOW
    assert eligibility.check(call(300, Channel.EMAIL, team=""), roaming, NOW, POLICY) is None


@pytest.mark.parametrize(
    ("team", "levels"),
    [("", ()), ("billing", (("billing", 3),)), ("", (("tech", 1), ("billing", 10)))],
)
def test_without_steps_a_call_keeps_its_own_requirements(
    team: str, levels: tuple[tuple[str, int], ...]
) -> None:
    """No widening steps in the policy: what ``widen`` gives for 0 steps, via the short path."""
    call = dataclasses.replace(
        make_call("c1", team=team),
        required_skills=tuple(SkillRequirement(skill, level) for skill, level in levels),
    )
    policy = Policy(widening=())
    assert requirements(call, NOW, policy) == widen(call, 0, policy)
