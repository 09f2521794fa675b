"""An exact shortlist of agents for a one-call ``BALANCED`` decision.

``router.balanced`` places a lone call on the eligible agent with the least integer cost::

    cost = round((ceiling - total) * 1000) + round(load_1 * 1000)   ties: balanced.tie_key

where ``total`` is the soft score (``scoring.match``) and ``load_1`` the cost of the agent's
next slot (``scoring.load.marginal_cost``). Both roundings together move a cost by less than
one unit, so an agent whose *net* value ``total - load_1`` is more than ``MARGIN`` below the
best net can never be chosen. The engine's work per agent is large (screening, facts, score
card, load costs), so when one call meets many free agents the simulator first bounds every
agent's net cheaply, computes the exact net (with the engine's own functions) in bound order
until no bound can reach the best, and passes ``decide`` only the agents within ``MARGIN`` of
the best. ``decide`` then makes the same choice it would have made among all of them.

Bounds, per agent, from values cached when the agent last changed (``seq``):

- performance: the decay only moves the score toward the prior, so it is at most
  ``max(score then, prior)``;
- occupancy: it falls by at most one window's worth per window, so it is at least
  ``occupancy then - elapsed / window`` (a lower occupancy means a cheaper slot);
- skill fit, region affinity and previous agent are exact, cached per agent and call needs
  (time-zone offsets per 15 minutes, the finest step at which any zone changes its
  offset); the idle part is exact (``scoring.match.idle_value``'s formula from the moment
  the agent's idle clock started).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from router.domain import Call, Policy, SkillRequirement
from scoring import performance
from scoring.load import marginal_cost, occupancy
from scoring.match import (
    agent_facts,
    free_since,
    part_values,
    region_affinity,
    skill_fit,
    utc_offset_hours,
    weight_vector,
    weighted_total,
)
from simulations.workforce import SimAgent

MARGIN = 0.0025
"""Net-value distance (score points) beyond which an agent cannot be the engine's choice."""
MIN_AGENTS = 4
"""Below this many agents the engine is cheaper than the shortlist."""
_ZONE_STEP_MS = 15 * 60 * 1000
_MAX_NEEDS = 5_000
"""Call needs remembered before the static-part cache is dropped."""

SkillKey = tuple[str, tuple[SkillRequirement, ...], tuple[str, ...]]
_State = tuple[int, int, float, float, float, int | None, int]
"""(seq, when, weighted performance bound, occupancy then, cap, idle since or None, units
used): what bounds an agent's net value from its last change on."""


class Shortlist:
    """Caches across decisions; one per simulation run."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.weights = weight_vector(policy.weights)
        self._skill: dict[SkillKey, float] = {}
        self._statics: dict[tuple[object, ...], dict[str, float]] = {}
        """Call needs -> agent -> skill + region + previous-agent parts."""
        self._states: dict[str, _State] = {}
        self._loads: dict[int, dict[int, tuple[float, float]]] = {}
        """Units of the call -> units in use -> load terms."""
        self._offsets: dict[tuple[str, int], float | None] = {}

    def offset(self, zone: str, now_ms: int) -> float | None:
        """``scoring.match.utc_offset_hours``, cached per zone and 15 minutes."""
        key = (zone, now_ms // _ZONE_STEP_MS)
        if key not in self._offsets:
            self._offsets[key] = utc_offset_hours(zone, now_ms)
        return self._offsets[key]

    def agents_for(
        self, call: Call, agents: Sequence[SimAgent], now_ms: int, window_ms: int
    ) -> list[SimAgent]:
        """The agents among ``agents`` (all eligible for ``call``) that the balanced
        engine could choose for ``call`` alone."""
        if len(agents) < MIN_AGENTS:
            return list(agents)
        policy = self.policy
        weight_idle = policy.weights.idle
        horizon_ms = policy.idle_horizon_s * 1000
        call_offset = self.offset(call.timezone, now_ms)
        statics = self._statics_for(call, now_ms)
        states = self._states
        units = policy.units_for(call.channel)
        loads = self._loads.setdefault(units, {})
        bounded: list[tuple[float, str, SimAgent]] = []
        append = bounded.append
        # The hot loop of large runs: min() and max() are spelled out as comparisons.
        for agent in agents:
            agent_id = agent.agent_id
            state = states.get(agent_id)
            if state is None or state[0] != agent.seq:
                state = states[agent_id] = self._state(agent, now_ms, window_ms)
            _, since, bound, busy, cap, free_since, used = state
            static = statics.get(agent_id)
            if static is None:
                static = statics[agent_id] = self._static(call, agent, now_ms, call_offset)
            bound += static
            if free_since is not None:
                elapsed = now_ms - free_since
                idle = 1.0 if horizon_ms <= 0 else (elapsed if elapsed > 0 else 0) / horizon_ms
                bound += weight_idle * (idle if idle < 1.0 else 1.0)
            if window_ms > 0:
                busy -= (now_ms - since) / window_ms
            # min(1.0, busy / cap) for cap > 0
            ratio = 1.0 if cap <= 0 or busy >= cap else (busy / cap if busy > 0 else 0.0)
            load = loads.get(used)
            if load is None:
                load = loads[used] = self._load_terms(used, units)
            append((load[0] + load[1] * ratio * ratio - bound, agent_id, agent))
        bounded.sort()
        best = -math.inf
        exact: list[tuple[float, SimAgent]] = []
        for negative_bound, _, agent in bounded:
            if -negative_bound < best - MARGIN:
                break
            net = self._net(call, agent, now_ms, window_ms, call_offset)
            exact.append((net, agent))
            best = max(best, net)
        return [agent for net, agent in exact if net >= best - MARGIN]

    def _statics_for(self, call: Call, now_ms: int) -> dict[str, float]:
        """Agent -> skill + region + previous-agent parts for calls like ``call`` (same
        skills, region, previous agent, and zone offsets)."""
        key = (
            call.required_skills,
            call.preferred_skills,
            call.region,
            call.timezone,
            call.preferred_agent_id,
            now_ms // _ZONE_STEP_MS,
        )
        statics = self._statics.get(key)
        if statics is None:
            if len(self._statics) > _MAX_NEEDS:  # bound memory on long runs
                self._statics.clear()
            statics = self._statics[key] = {}
        return statics

    def _static(self, call: Call, agent: SimAgent, now_ms: int, call_offset: float | None) -> float:
        weights = self.policy.weights
        region = region_affinity(
            call.region, call_offset, agent.spec.region, self.offset(agent.spec.timezone, now_ms)
        )
        previous = 1.0 if call.preferred_agent_id == agent.agent_id else 0.0
        return (
            weights.skill * self._skill_fit(call, agent)
            + weights.region * region
            + weights.previous_agent * previous
        )

    def _state(self, agent: SimAgent, now_ms: int, window_ms: int) -> _State:
        policy = self.policy
        snap = agent.snapshot(now_ms, window_ms)
        score = performance.score(agent.performance, now_ms, policy)
        since = None if snap.active else free_since(snap, now_ms)
        return (
            agent.seq,
            now_ms,
            # the decay only moves the score toward the prior
            policy.weights.performance * max(score, policy.performance_prior),
            occupancy(snap, now_ms, policy.occupancy_window_s),
            policy.occupancy_cap_for(agent.profile),
            since,
            snap.units_used,
        )

    def _load_terms(self, units_used: int, units: int) -> tuple[float, float]:
        """``marginal_cost`` of the next slot as ``fixed + slope * ratio ** 2`` (``ratio``:
        occupancy over cap, clamped to 1), taken from the function at ratios 0 and 1."""
        weight = self.policy.weights.load
        fixed = marginal_cost(units_used, units, 1, occupancy=0.0, cap=1.0, weight=weight)
        full = marginal_cost(units_used, units, 1, occupancy=1.0, cap=1.0, weight=weight)
        return fixed, full - fixed

    def _skill_fit(self, call: Call, agent: SimAgent) -> float:
        key = (agent.agent_id, call.required_skills, call.preferred_skills)
        fit = self._skill.get(key)
        if fit is None:
            fit = self._skill[key] = skill_fit(call, agent.spec.skills)
        return fit

    def _net(
        self, call: Call, agent: SimAgent, now_ms: int, window_ms: int, call_offset: float | None
    ) -> float:
        """``total - load_1`` as ``router.board`` and ``router.balanced`` compute them."""
        policy = self.policy
        snap = agent.snapshot(now_ms, window_ms)
        facts = agent_facts(snap, now_ms, policy, self.offset(agent.spec.timezone, now_ms))
        total = weighted_total(
            part_values(call, facts, call_offset, self._skill_fit(call, agent)), self.weights
        )
        load = marginal_cost(
            snap.units_used,
            policy.units_for(call.channel),
            1,
            occupancy=occupancy(snap, now_ms, policy.occupancy_window_s),
            cap=policy.occupancy_cap_for(agent.profile),
            weight=policy.weights.load,
        )
        return total - load
