"""Hard eligibility: may this agent take this call at all?

The rules run in this order and the first that fails is the reason reported
(``router.domain.Exclusion``):

1. ``NOT_AVAILABLE``       presence is not AVAILABLE (NOT_RESPONDING included)
2. ``HEARTBEAT_EXPIRED``   heartbeat_timeout_s > 0 and now - heartbeat_ms > timeout
3. ``SCHEDULED_ABSENCE``   one of the profile's absences covers now
4. ``DECLINED``            the agent is in ``call.excluded_agents`` (rejected, missed, released)
5. ``WRONG_TEAM``          the call names a team and the agent's team is neither it nor an
                           overflow team of an applied widening step
6. ``REGION``              ``call.region_required`` (with a non-empty ``call.region``) and the
                           agent's region differs (case-insensitive), until a step says
                           ``any_region``
7. ``MISSING_SKILL``       a required skill is absent from the profile
8. ``SKILL_TOO_LOW``       a required skill is below its widened minimum level
                           (``router.widening``: ``max(1, min_level - sum(level_drop))``)
9. ``LANGUAGE``            the call names a language the agent does not speak (case-insensitive)
10. ``SHIFT_ENDING``       the work would outlast the agent: with
                           ``end = now + policy.handle_s_for(call) * 1000``,
                           ``0 < shift_end_ms < end``, or an absence starts in ``(now, end)``
11. ``CHANNEL_NOT_SERVED`` the agent's capacity on the call's channel is 0
12. ``AT_CAPACITY``        the channel is full, or the item's units do not fit the budget
13. ``OCCUPANCY_CAP``      rolling occupancy >= the agent's cap

Presence and absence come first so an agent who is away is reported as away, whatever else
is true of them; a declined call is then the most specific reason. Team and region are the
coarse partitions of the workforce, skills and language the finer ones. The shift rule is
about the future, capacity about the present; occupancy comes last because it is the only
rule about the recent past. Widening (``router.widening``) is worked out once per call and
reported in the screening.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from router.domain import (
    AGENT_UNIT_BUDGET,
    AgentSnapshot,
    Call,
    Exclusion,
    Policy,
    Presence,
    frozen_map,
)
from router.widening import WidenedRequirements, requirements
from scoring.load import occupancy as rolling_occupancy


@dataclass(frozen=True, slots=True)
class Screening:
    """The agents that passed every hard rule for one call, and why the others did not."""

    eligible: tuple[AgentSnapshot, ...]
    excluded: Mapping[Exclusion, int]
    """Exclusion -> number of agents it refused (only non-zero counts)."""
    widening_step: int = 0
    """Widening steps applied to the call's requirements."""


def check(
    call: Call,
    agent: AgentSnapshot,
    now_ms: int,
    policy: Policy,
    occupancy: float | None = None,
    *,
    widened: WidenedRequirements | None = None,
) -> Exclusion | None:
    """The first hard rule ``agent`` fails for ``call``, or ``None`` when eligible.

    ``occupancy`` is the agent's rolling occupancy and ``widened`` the call's requirements at
    now (``router.widening.requirements``) when the caller already has them; otherwise they
    are computed here.
    """
    if widened is None:
        widened = requirements(call, now_ms, policy)
    return (
        absence_reason(agent, now_ms, policy)
        or declined_reason(call, agent)
        or fit_reason(call, agent, widened)
        or shift_reason(agent, now_ms, policy.handle_s_for(call))
        or capacity_reason(call, agent, now_ms, policy, occupancy)
    )


def absence_reason(agent: AgentSnapshot, now_ms: int, policy: Policy) -> Exclusion | None:
    """Rules 1-3: why the agent is not at their desk now, or ``None`` when present."""
    if agent.presence != Presence.AVAILABLE:
        return Exclusion.NOT_AVAILABLE
    timeout_ms = policy.heartbeat_timeout_s * 1000
    if timeout_ms > 0 and now_ms - agent.heartbeat_ms > timeout_ms:
        return Exclusion.HEARTBEAT_EXPIRED
    if any(absence.covers(now_ms) for absence in agent.profile.absences):
        return Exclusion.SCHEDULED_ABSENCE
    return None


def is_present(agent: AgentSnapshot, now_ms: int, policy: Policy) -> bool:
    """True when the agent is available, alive and not scheduled away (routable in principle)."""
    return absence_reason(agent, now_ms, policy) is None


def declined_reason(call: Call, agent: AgentSnapshot) -> Exclusion | None:
    """Rule 4: the agent already rejected, missed or released this call."""
    return Exclusion.DECLINED if agent.agent_id in call.excluded_agents else None


def fit_reason(call: Call, agent: AgentSnapshot, widened: WidenedRequirements) -> Exclusion | None:
    """Rules 5-9: team, region, skills and language under the widened requirements
    (depends on ``widened``, the call's region and language only)."""
    profile = agent.profile
    if widened.teams and profile.team not in widened.teams:
        return Exclusion.WRONG_TEAM
    if (
        call.region_required
        and call.region
        and not widened.any_region
        and profile.region.lower() != call.region.lower()
    ):
        return Exclusion.REGION
    if any(req.skill not in profile.skills for req in widened.levels):
        return Exclusion.MISSING_SKILL
    if any(profile.skills[req.skill] < req.min_level for req in widened.levels):
        return Exclusion.SKILL_TOO_LOW
    if call.language and call.language.lower() not in {lang.lower() for lang in profile.languages}:
        return Exclusion.LANGUAGE
    return None


def shift_reason(agent: AgentSnapshot, now_ms: int, handle_s: int) -> Exclusion | None:
    """Rule 10: work of ``handle_s`` seconds started now would outlast the agent's shift or
    run into a scheduled absence (one covering now is rule 3)."""
    end_ms = now_ms + handle_s * 1000
    profile = agent.profile
    if profile.shift_end_ms > 0 and end_ms > profile.shift_end_ms:
        return Exclusion.SHIFT_ENDING
    if any(now_ms < absence.start_ms < end_ms for absence in profile.absences):
        return Exclusion.SHIFT_ENDING
    return None


def capacity_reason(
    call: Call, agent: AgentSnapshot, now_ms: int, policy: Policy, occupancy: float | None
) -> Exclusion | None:
    """Rules 11-13: channel served, room on the channel and in the budget, occupancy cap
    (depends on the call's channel only)."""
    capacity = policy.capacity_for(agent.profile, call.channel)
    if capacity <= 0:
        return Exclusion.CHANNEL_NOT_SERVED
    units = policy.units_for(call.channel)
    if agent.load(call.channel) >= capacity or agent.units_used + units > AGENT_UNIT_BUDGET:
        return Exclusion.AT_CAPACITY
    if occupancy is None:
        occupancy = rolling_occupancy(agent, now_ms, policy.occupancy_window_s)
    if occupancy >= policy.occupancy_cap_for(agent.profile):
        return Exclusion.OCCUPANCY_CAP
    return None


def screen(
    call: Call,
    agents: Iterable[AgentSnapshot],
    now_ms: int,
    policy: Policy,
    *,
    unindexed_missing_skill: int = 0,
) -> Screening:
    """Split ``agents`` into the eligible ones and per-rule exclusion counts for ``call``.

    ``unindexed_missing_skill`` (agents the store pruned with its skill index) is added to
    the ``MISSING_SKILL`` count so the explanation covers every agent of the tenant.
    """
    widened = requirements(call, now_ms, policy)
    eligible: list[AgentSnapshot] = []
    reasons: list[Exclusion] = []
    for agent in agents:
        reason = check(call, agent, now_ms, policy, widened=widened)
        if reason is None:
            eligible.append(agent)
        else:
            reasons.append(reason)
    return tally(eligible, reasons, unindexed_missing_skill, widening_step=widened.step)


def tally(
    eligible: Iterable[AgentSnapshot],
    reasons: Iterable[Exclusion],
    unindexed_missing_skill: int = 0,
    *,
    widening_step: int = 0,
) -> Screening:
    """Build a ``Screening`` from the eligible agents and the refused agents' reasons."""
    excluded = Counter(reasons)
    if unindexed_missing_skill > 0:
        excluded[Exclusion.MISSING_SKILL] += unindexed_missing_skill
    # Declaration order keeps explanations (and their serialised form) stable.
    ordered = {reason: excluded[reason] for reason in Exclusion if excluded[reason] > 0}
    return Screening(
        eligible=tuple(eligible), excluded=frozen_map(ordered), widening_step=widening_step
    )
