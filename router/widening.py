"""Widening over time (bullseye routing): the longer a call waits, the more agents qualify.

``policy.widening`` lists steps in increasing ``after_s`` (sorted here too). A step applies
once the call has waited that long (``router.ordering.waited_ms``; a call with no age origin
has waited 0)::

    steps    = #{step : step.after_s * 1000 <= waited_ms}

The first ``steps`` steps together give the call's widened requirements::

    drop      = sum(step.level_drop)
    level     = max(min(min_level, 1), min_level - drop)    per required skill (never below 1,
                                                            never above the original)
    teams     = {call.team} | union(step.teams)              only when call.team is set
    any_region = any(step.any_region)                        drops call.region_required

``Explanation.widening_step`` reports ``steps``. An SLA-at-risk call jumps to the next step
before it reaches the engine (``router.dispatcher.widen_for_risk`` moves its age origin), so
the engine only ever reads the wait.
"""

from __future__ import annotations

from dataclasses import dataclass

from router.domain import SKILL_LEVEL_MIN, Call, Policy, SkillRequirement
from router.ordering import waited_ms


@dataclass(frozen=True, slots=True)
class WidenedRequirements:
    """What a call asks of an agent after ``step`` widening steps (hashable: a cache key)."""

    step: int
    """Widening steps applied (0: the call's own requirements)."""
    levels: tuple[SkillRequirement, ...]
    """The call's required skills at their widened minimum levels."""
    teams: frozenset[str]
    """Teams whose agents may take the call; empty when the call names no team (any)."""
    any_region: bool
    """A step dropped the call's region requirement."""


def applied_steps(call: Call, now_ms: int, policy: Policy) -> int:
    """Widening steps the call's wait has reached at ``now_ms``."""
    waited = waited_ms(call, now_ms)
    return sum(1 for step in policy.widening if step.after_s * 1000 <= waited)


def widen(call: Call, steps: int, policy: Policy) -> WidenedRequirements:
    """The call's requirements after the first ``steps`` steps of ``policy.widening``."""
    # Sorted (stably) so "the first steps" are the ones reached first, whatever the input.
    ordered = sorted(policy.widening, key=lambda step: step.after_s)
    applied = ordered[: max(0, steps)]
    drop = sum(step.level_drop for step in applied)
    levels = tuple(
        SkillRequirement(req.skill, max(min(req.min_level, SKILL_LEVEL_MIN), req.min_level - drop))
        for req in call.required_skills
    )
    teams: frozenset[str] = frozenset()
    if call.team:
        teams = frozenset({call.team, *(team for step in applied for team in step.teams)})
    return WidenedRequirements(
        step=len(applied),
        levels=levels,
        teams=teams,
        any_region=any(step.any_region for step in applied),
    )


def requirements(call: Call, now_ms: int, policy: Policy) -> WidenedRequirements:
    """The requirements the hard rules apply to ``call`` at ``now_ms``."""
    if not policy.widening:  # the call's own requirements (``widen(call, 0, policy)``)
        teams = frozenset({call.team}) if call.team else frozenset[str]()
        return WidenedRequirements(0, tuple(call.required_skills), teams, any_region=False)
    return widen(call, applied_steps(call, now_ms, policy), policy)
