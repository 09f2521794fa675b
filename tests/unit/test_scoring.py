"""Unit tests for ``scoring``: performance, load and match formulas."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from router.domain import (
    Absence,
    AbsenceKind,
    ActiveWork,
    AgentProfile,
    AgentSnapshot,
    Call,
    Channel,
    Outcome,
    PerformanceStats,
    Policy,
    Presence,
    SkillRequirement,
    Weights,
    WorkSpan,
    frozen_map,
)
from scoring import load, match, performance

NOW = 1_700_000_000_000
"""2023-11-14T22:13:20Z: northern winter, so Lisbon is UTC+0 and New York UTC-5."""
HOUR_MS = 3_600_000
DAY_S = 86_400


def make_agent(
    agent_id: str = "a1",
    *,
    skills: dict[str, int] | None = None,
    region: str = "",
    timezone: str = "",
    active: tuple[ActiveWork, ...] = (),
    recent: tuple[WorkSpan, ...] = (),
    last_free_ms: int = NOW,
    capacity: dict[Channel, int] | None = None,
    absences: tuple[Absence, ...] = (),
) -> AgentSnapshot:
    """An available agent with the given profile details."""
    return AgentSnapshot(
        profile=AgentProfile(
            agent_id=agent_id,
            skills=frozen_map(skills or {}),
            region=region,
            timezone=timezone,
            capacity=frozen_map(capacity or {}),
            absences=absences,
        ),
        presence=Presence.AVAILABLE,
        heartbeat_ms=NOW,
        active=active,
        recent=recent,
        last_free_ms=last_free_ms,
    )


def chat(start_ms: int, units: int = 25) -> ActiveWork:
    """A chat in progress since ``start_ms``."""
    return ActiveWork(
        assignment_id=f"w{start_ms}", channel=Channel.CHAT, units=units, start_ms=start_ms
    )


# --- performance --------------------------------------------------------------------------------


def test_outcome_value_perfect_and_poor() -> None:
    """A perfect call is worth 1; a poor one only gets the smooth handle-time credit."""
    perfect = Outcome(handle_time_s=200, csat=5, resolved=True)
    assert performance.outcome_value(perfect, target_handle_s=300) == 1.0
    poor = Outcome(handle_time_s=600, csat=1, resolved=False)
    # csat 0 * 0.5 + resolved 0 * 0.3 + handle (300/600) * 0.2 over weight 1.0
    assert performance.outcome_value(poor, target_handle_s=300) == pytest.approx(0.1)


def test_outcome_value_ignores_missing_parts() -> None:
    """Unknown parts are left out of the mean rather than counted as zero."""
    assert performance.outcome_value(Outcome(csat=3), target_handle_s=0) == pytest.approx(0.5)
    assert performance.outcome_value(Outcome(resolved=False), target_handle_s=0) == 0.0
    handle_only = Outcome(handle_time_s=400)
    assert performance.outcome_value(handle_only, target_handle_s=200) == pytest.approx(0.5)
    # Without a target the handle time says nothing either.
    assert performance.outcome_value(handle_only, target_handle_s=0) is None
    assert performance.outcome_value(Outcome(), target_handle_s=300) is None


def test_fold_formula_exact_values() -> None:
    """fold decays by 2 ** (-elapsed / half-life) and adds the value, exactly as the Lua does."""
    half_life_s = 3600
    first = performance.fold(PerformanceStats(), 0.8, NOW, half_life_s)
    assert first == PerformanceStats(weighted_sum=0.8, weight=1.0, updated_ms=NOW)
    second = performance.fold(first, 1.0, NOW + half_life_s * 1000, half_life_s)
    assert second == PerformanceStats(weighted_sum=1.4, weight=1.5, updated_ms=NOW + HOUR_MS)
    quarter = performance.fold(first, 0.0, NOW + 2 * half_life_s * 1000, half_life_s)
    assert quarter.weighted_sum == 0.2
    assert quarter.weight == 1.25
    odd = performance.fold(first, 0.5, NOW + 1234, half_life_s)
    factor = 2 ** (-(1234) / 1000 / half_life_s)
    assert odd.weighted_sum == 0.8 * factor + 0.5
    assert odd.weight == 1.0 * factor + 1.0


def test_fold_without_decay() -> None:
    """A zero half-life, or sums never updated, add without decaying."""
    stats = PerformanceStats(weighted_sum=2.0, weight=3.0, updated_ms=NOW)
    assert performance.fold(stats, 1.0, NOW + 10 * HOUR_MS, 0) == PerformanceStats(
        3.0, 4.0, NOW + 10 * HOUR_MS
    )
    fresh = PerformanceStats(weighted_sum=2.0, weight=3.0, updated_ms=0)
    assert performance.fold(fresh, 1.0, NOW, 3600) == PerformanceStats(3.0, 4.0, NOW)


def test_score_of_new_agent_is_the_prior() -> None:
    """An agent without outcomes scores the policy prior."""
    policy = Policy(performance_prior=0.6)
    assert performance.score(PerformanceStats(), NOW, policy) == pytest.approx(0.6)


def test_three_perfect_outcomes_do_not_make_a_star() -> None:
    """Shrinkage: three perfect calls land well below 1; many perfect calls approach it."""
    policy = Policy(performance_prior=0.6, performance_prior_weight=5.0)
    stats = PerformanceStats()
    for _ in range(3):
        stats = performance.fold(stats, 1.0, NOW, policy.performance_half_life_s)
    three = performance.score(stats, NOW, policy)
    assert three == pytest.approx((0.6 * 5 + 3) / 8)
    assert three < 0.8
    for _ in range(47):
        stats = performance.fold(stats, 1.0, NOW, policy.performance_half_life_s)
    assert 0.9 < performance.score(stats, NOW, policy) < 1.0


def test_three_bad_outcomes_do_not_make_a_failure() -> None:
    """Three zero-valued calls pull the score down, but not near zero."""
    policy = Policy(performance_prior=0.6, performance_prior_weight=5.0)
    stats = PerformanceStats()
    for _ in range(3):
        stats = performance.fold(stats, 0.0, NOW, policy.performance_half_life_s)
    assert performance.score(stats, NOW, policy) == pytest.approx(3 / 8)


def test_score_decays_toward_the_prior() -> None:
    """Old outcomes lose weight: the score drifts back to the prior as time passes."""
    policy = Policy(performance_prior=0.6, performance_half_life_s=DAY_S)
    stats = PerformanceStats()
    for _ in range(20):
        stats = performance.fold(stats, 1.0, NOW, policy.performance_half_life_s)
    fresh = performance.score(stats, NOW, policy)
    later = performance.score(stats, NOW + DAY_S * 1000, policy)
    much_later = performance.score(stats, NOW + 20 * DAY_S * 1000, policy)
    assert fresh > later > much_later > 0.6
    assert much_later == pytest.approx(0.6, abs=1e-3)
    # One half-life halves the data weight: (3 + 10) / (5 + 10).
    assert later == pytest.approx(13 / 15)


def _score_as_written(stats: PerformanceStats, now_ms: int, policy: Policy) -> float:
    """The module docstring's score, with ``decay_factor``, ``max`` and ``min`` as written."""
    factor = performance.decay_factor(stats.updated_ms, now_ms, policy.performance_half_life_s)
    prior_weight = max(0.0, policy.performance_prior_weight)
    denominator = prior_weight + stats.weight * factor
    if denominator <= 0.0:
        return min(1.0, max(0.0, policy.performance_prior))
    numerator = policy.performance_prior * prior_weight + stats.weighted_sum * factor
    return min(1.0, max(0.0, numerator / denominator))


@pytest.mark.parametrize("half_life_s", [0, 1, 3600, DAY_S])
@pytest.mark.parametrize("prior_weight", [0.0, 0.5, 5.0])
def test_score_is_the_formula_to_the_last_bit(half_life_s: int, prior_weight: float) -> None:
    """``score`` (through ``score_of``, which spells out the decay and the clamps) gives the
    very floats of the formula as written, also for sums outside [0, 1] (clamped), no
    outcomes yet (``updated_ms`` 0), a clock behind the update and a zero denominator."""
    rng = random.Random(half_life_s * 10 + int(prior_weight * 2))
    policy = Policy(performance_half_life_s=half_life_s, performance_prior_weight=prior_weight)
    cases = [
        PerformanceStats(rng.uniform(-3, 30), rng.uniform(-1, 25), rng.choice([0, NOW - 5]))
        for _ in range(400)
    ]
    cases += [PerformanceStats(0.0, 0.0, 0), PerformanceStats(2.0, 1.0, NOW + 9_000)]
    for stats in cases:
        for now in (NOW, NOW + rng.randrange(1, 40 * DAY_S * 1000)):
            got = performance.score(stats, now, policy)
            assert got == _score_as_written(stats, now, policy), (stats, now)
            assert 0.0 <= got <= 1.0


# --- load ---------------------------------------------------------------------------------------


def test_occupancy_clips_spans_to_the_window() -> None:
    """Finished spans count only inside the window, weighted by their units."""
    window_start = NOW - HOUR_MS
    agent = make_agent(
        recent=(
            WorkSpan(NOW - HOUR_MS // 2, NOW - HOUR_MS // 4, 100),  # a quarter hour of voice
            WorkSpan(window_start - HOUR_MS, window_start + HOUR_MS // 4, 100),  # 15 min inside
            WorkSpan(window_start - 2 * HOUR_MS, window_start - HOUR_MS, 100),  # before: ignored
            WorkSpan(window_start, NOW, 25),  # a chat all hour
        )
    )
    assert load.occupancy(agent, NOW, 3600) == pytest.approx(0.25 + 0.25 + 0.25)


def test_occupancy_counts_active_work_up_to_now() -> None:
    """Work in progress counts from its start (or the window start) until now."""
    agent = make_agent(active=(chat(NOW - HOUR_MS // 2), chat(NOW - 5 * HOUR_MS)))
    assert load.occupancy(agent, NOW, 3600) == pytest.approx(0.25 * 0.5 + 0.25)
    assert load.occupancy(agent, NOW, 0) == 0.0
    assert load.occupancy(make_agent(), NOW, 3600) == 0.0


def test_occupancy_is_capped_at_one() -> None:
    """Inconsistent overlapping spans cannot push occupancy past 1."""
    spans = tuple(WorkSpan(NOW - HOUR_MS, NOW, 100) for _ in range(3))
    assert load.occupancy(make_agent(recent=spans), NOW, 3600) == 1.0


def test_free_slots_respect_capacity_and_units() -> None:
    """Free slots are bounded by the channel capacity and by the unit budget."""
    policy = Policy()
    roomy = make_agent(capacity={Channel.CHAT: 4})
    assert load.free_slots(roomy, Channel.CHAT, policy) == 4
    full = make_agent(capacity={Channel.CHAT: 4}, active=tuple(chat(NOW - i) for i in range(4)))
    assert load.free_slots(full, Channel.CHAT, policy) == 0
    one_chat = make_agent(active=(chat(NOW),))
    assert load.free_slots(one_chat, Channel.CHAT, policy) == 2  # default chat capacity 3
    assert load.free_slots(one_chat, Channel.VOICE, policy) == 0  # 25 + 100 > 100 units
    assert load.free_slots(one_chat, Channel.EMAIL, policy) == 3  # 75 units left / 20


@pytest.mark.parametrize(
    ("units_used", "units", "occupancy", "weight"),
    [(0, 25, 0.0, 2.0), (50, 25, 0.5, 2.0), (0, 20, 0.84, 0.5), (0, 100, 0.3, 1.0)],
)
def test_marginal_load_cost_is_strictly_increasing(
    units_used: int, units: int, occupancy: float, weight: float
) -> None:
    """Each extra slot costs more than the last, so the flow's parallel arcs are exact."""
    slots = (100 - units_used) // units
    costs = load.slot_costs(units_used, units, slots, occupancy=occupancy, cap=0.85, weight=weight)
    assert len(costs) == slots
    assert all(later > earlier for earlier, later in itertools.pairwise(costs))
    assert all(cost > 0 for cost in costs)


def test_marginal_load_cost_formula_and_occupancy_term() -> None:
    """The cost follows w * (u_after^2 - u_before^2 + d * (occ / cap)^2)."""
    first = load.marginal_cost(0, 25, 1, occupancy=0.0, cap=0.85, weight=2.0)
    assert first == pytest.approx(2.0 * 0.25**2)
    second = load.marginal_cost(0, 25, 2, occupancy=0.0, cap=0.85, weight=2.0)
    assert second == pytest.approx(2.0 * (0.5**2 - 0.25**2))
    busy = load.marginal_cost(0, 100, 1, occupancy=0.425, cap=0.85, weight=2.0)
    assert busy == pytest.approx(2.0 * (1.0 + 0.25))
    assert load.marginal_cost(0, 100, 1, occupancy=0.9, cap=0.85, weight=1.0) == 2.0


# --- match --------------------------------------------------------------------------------------


def test_skill_fit_required_and_preferred() -> None:
    """Required skills average level/10; preferred skills add a quarter share."""
    skills = {"billing": 10, "tech": 6, "french": 8}
    required = Call(
        "c", Channel.VOICE, required_skills=(SkillRequirement("billing"), SkillRequirement("tech"))
    )
    assert match.skill_fit(required, skills) == pytest.approx(0.8)
    both = Call(
        "c",
        Channel.VOICE,
        required_skills=(SkillRequirement("billing"),),
        preferred_skills=("french", "spanish"),
    )
    assert match.skill_fit(both, skills) == pytest.approx(0.75 * 1.0 + 0.25 * 0.4)
    assert match.skill_fit(Call("c", Channel.VOICE, preferred_skills=("tech",)), skills) == 0.6
    assert match.skill_fit(Call("c", Channel.VOICE), skills) == 1.0


def test_region_same_region_is_case_insensitive() -> None:
    """The same region scores 1 whatever the case."""
    assert match.region_affinity("EU-West", None, "eu-west", None) == 1.0
    assert match.region_affinity("", None, "", None) == 0.0


def test_region_falls_back_to_time_zone_offsets() -> None:
    """Other regions score up to 0.5 by how close their UTC offsets are at now."""
    call = Call("c", Channel.VOICE, region="pt", timezone="Europe/Lisbon")
    london = make_agent(region="uk", timezone="Europe/London")
    new_york = make_agent(region="us", timezone="America/New_York")
    tokyo_call = Call("c", Channel.VOICE, timezone="Asia/Tokyo")
    los_angeles = make_agent(timezone="America/Los_Angeles")
    policy = Policy()
    assert match.score(call, london, NOW, policy).values["region"] == 0.5
    assert match.score(call, new_york, NOW, policy).values["region"] == pytest.approx(
        0.5 * (1 - 5 / 12)
    )
    # Tokyo (+9) and Los Angeles (-8) are 17 hours apart: no affinity left.
    assert match.score(tokyo_call, los_angeles, NOW, policy).values["region"] == 0.0


def test_region_offsets_follow_daylight_saving() -> None:
    """Offsets are taken at now: Lisbon and Berlin differ by one hour all year."""
    july = 1_720_000_000_000  # 2024-07-03
    assert match.utc_offset_hours("Europe/Lisbon", july) == 1.0
    assert match.utc_offset_hours("Europe/Lisbon", NOW) == 0.0
    assert match.utc_offset_hours("America/New_York", july) == -4.0


@pytest.mark.parametrize("zone", ["", "Nope/Zone", "Europe", "../etc/passwd", "UTC ", "a\x00b"])
def test_invalid_time_zones_give_no_affinity(zone: str) -> None:
    """Unknown or malformed zone names never raise; they give 0 affinity."""
    assert match.utc_offset_hours(zone, NOW) is None
    call = Call("c", Channel.VOICE, timezone="Europe/Lisbon")
    agent = make_agent(timezone=zone)
    assert match.score(call, agent, NOW, Policy()).values["region"] == 0.0


def test_previous_agent_part() -> None:
    """The customer's previous agent gets the full previous-agent part, others none."""
    call = Call("c", Channel.VOICE, preferred_agent_id="a1")
    assert match.score(call, make_agent("a1"), NOW, Policy()).values["previous_agent"] == 1.0
    assert match.score(call, make_agent("a2"), NOW, Policy()).values["previous_agent"] == 0.0


def test_idle_part_saturates_and_is_zero_while_busy() -> None:
    """Idle time counts from the later of last_free_ms and the last span's end."""
    assert match.idle_value(make_agent(last_free_ms=NOW - 450_000), NOW, 900) == 0.5
    assert match.idle_value(make_agent(last_free_ms=NOW - 5 * HOUR_MS), NOW, 900) == 1.0
    later_span = make_agent(
        last_free_ms=NOW - HOUR_MS, recent=(WorkSpan(NOW - HOUR_MS, NOW - 90_000, 100),)
    )
    assert match.idle_value(later_span, NOW, 900) == pytest.approx(0.1)
    busy = make_agent(last_free_ms=NOW - HOUR_MS, active=(chat(NOW - 1000),))
    assert match.idle_value(busy, NOW, 900) == 0.0


def test_idle_time_counts_from_the_end_of_the_last_absence_over() -> None:
    """An agent back from a scheduled absence has been idle since it ended; an absence still
    to come, or one ended before the agent last freed, changes nothing."""
    lunch = Absence("lunch", AbsenceKind.OTHER, NOW - HOUR_MS, NOW - 90_000)
    later = Absence("later", AbsenceKind.TRAINING, NOW + HOUR_MS, NOW + 2 * HOUR_MS)
    back = make_agent(last_free_ms=NOW - 2 * HOUR_MS, absences=(lunch, later))
    assert match.idle_value(back, NOW, 900) == pytest.approx(0.1)
    assert match.free_since(back, NOW) == NOW - 90_000
    assert match.free_since(back, NOW - 90_001) == NOW - 2 * HOUR_MS
    freed_since = make_agent(last_free_ms=NOW - 45_000, absences=(lunch,))
    assert match.idle_value(freed_since, NOW, 900) == pytest.approx(0.05)
    assert back.profile.back_from_absence_ms(NOW) == NOW - 90_000
    assert back.profile.back_from_absence_ms(NOW + 3 * HOUR_MS) == NOW + 2 * HOUR_MS
    assert back.profile.back_from_absence_ms(NOW - HOUR_MS) == 0


def test_score_card_weights_parts_and_sums_them() -> None:
    """Parts are value * weight under their documented names, and total is their sum."""
    weights = Weights(skill=3.0, performance=2.0, region=1.0, previous_agent=1.5, idle=0.5)
    policy = Policy(weights=weights, performance_prior=0.6)
    agent = make_agent("a1", skills={"billing": 7}, region="pt", last_free_ms=NOW - 450_000)
    call = Call(
        "c",
        Channel.VOICE,
        required_skills=(SkillRequirement("billing", 5),),
        region="PT",
        preferred_agent_id="a1",
    )
    card = match.score(call, agent, NOW, policy)
    assert tuple(card.parts) == match.PART_NAMES
    expected = {
        "skill": 3.0 * 0.7,
        "performance": 2.0 * 0.6,
        "region": 1.0,
        "previous_agent": 1.5,
        "idle": 0.5 * 0.5,
    }
    assert dict(card.parts) == pytest.approx(expected)
    assert card.total == pytest.approx(sum(expected.values()))
    assert card.total <= match.max_total(weights)
    assert all(0.0 <= value <= 1.0 for value in card.values.values())
    assert not math.isclose(card.total, match.max_total(weights))
