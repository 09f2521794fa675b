"""Estimated wait and SLA state of queued calls (pure: completions and agents are arguments).

Service rate of a channel, from its completions of the last ``RATE_WINDOW_S`` seconds
(``Store.completions``)::

    observed_rate = #{completed entries on the channel with now - window <= at <= now} / window_s

Estimated wait of the call at ``position`` (1 = next) among the waiting calls of its
``channel`` (``channel_position``: calls of other channels ahead in the tenant's queue wait for
other agents)::

    present(a)  = available, heartbeat fresh, not scheduled away (eligibility.is_present)
    slots(a)    = items of the channel a present agent can hold at once
                  = min(capacity, AGENT_UNIT_BUDGET // units)
    free(a)     = scoring.load.free_slots(a) when present and under the occupancy cap, else 0
    handle_s    = policy.expected_handle_s[channel], else FALLBACK_HANDLE_S
    staffed     = max(1, sum(slots(a)))
    rate        = max(observed_rate, staffed / handle_s)          completions per second
    ahead       = position - sum(free(a))
    ewt         = 0 if ahead <= 0 else ahead / rate

Free slots absorb the first calls at once (so the next call waits 0 while an agent is free);
every later call waits for ``ahead`` completions at ``rate``. ``staffed / handle_s`` is the
throughput of the present agents when all are busy: it stands in while there is little
history (a quiet start, a new channel) and keeps the estimate finite; ``max(1, ...)`` assumes
one agent will turn up when none is there. The estimate is an upper bound on the answer rate
(hence optimistic), non-decreasing in ``position`` and never negative. Callers pass only the
agents who could take the call (``agents_for``: skills, language, team, region, not
declined), so a free agent without the skill does not make the wait look short.

SLA state of a waiting call with target ``T`` (``policy.sla_for(channel)``)::

    breached = waited > T
    at_risk  = waited + ewt > T  or  waited >= policy.sla_at_risk * T

A channel without a target (or with target 0) is never at risk nor breached.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import TypeAlias

from router.domain import AGENT_UNIT_BUDGET, AgentSnapshot, Call, Channel, Policy
from router.eligibility import declined_reason, fit_reason, is_present
from router.ordering import waited_ms
from router.widening import requirements
from scoring.load import free_slots, occupancy

RATE_WINDOW_S = 900
"""The window of the observed service rate (``store_common.RATE_WINDOW_MS``)."""

FALLBACK_HANDLE_S = 300
"""Handle time assumed for a channel the policy gives no expected handle time."""


def agents_for(
    call: Call, agents: Sequence[AgentSnapshot], now_ms: int, policy: Policy
) -> list[AgentSnapshot]:
    """The agents whose skills, languages, team and region fit ``call`` (widening included)
    and who have not declined it: the pool its wait depends on."""
    widened = requirements(call, now_ms, policy)
    return [
        agent
        for agent in agents
        if declined_reason(call, agent) is None and fit_reason(call, agent, widened) is None
    ]


def staffed_slots(agents: Sequence[AgentSnapshot], channel: Channel, policy: Policy) -> int:
    """Items of ``channel`` ``agents`` could hold at once, all together (full capacity,
    whatever they hold now)."""
    units = policy.units_for(channel)
    total = 0
    for agent in agents:
        capacity = max(0, policy.capacity_for(agent.profile, channel))
        total += capacity if units <= 0 else min(capacity, AGENT_UNIT_BUDGET // units)
    return total


def present_agents(
    agents: Sequence[AgentSnapshot], now_ms: int, policy: Policy
) -> list[AgentSnapshot]:
    """The agents who could take work at ``now_ms`` in principle."""
    return [agent for agent in agents if is_present(agent, now_ms, policy)]


def free_now(agents: Sequence[AgentSnapshot], channel: Channel, policy: Policy, now_ms: int) -> int:
    """Free slots on ``channel`` among ``agents`` (present ones), skipping agents at their
    occupancy cap."""
    free = 0
    for agent in agents:
        busy = occupancy(agent, now_ms, policy.occupancy_window_s)
        if busy < policy.occupancy_cap_for(agent.profile):
            free += free_slots(agent, channel, policy)
    return free


# The assigner calls this positionally; the six inputs are all needed.
def estimated_wait_s(  # noqa: PLR0917
    position: int,
    channel: Channel,
    completed: Mapping[Channel, int],
    agents: Sequence[AgentSnapshot],
    policy: Policy,
    now_ms: int,
) -> float:
    """Seconds the call at ``position`` (1 = next) on ``channel`` should still wait, with
    ``completed`` the completions per channel of the last ``RATE_WINDOW_S`` (see the module
    docstring)."""
    return wait_at(position, pool_terms(channel, completed, agents, policy, now_ms))


PoolTerms: TypeAlias = tuple[int, float]
"""What the wait of any call served by one pool of agents depends on besides its place:
the pool's free slots now and its completions per second (``pool_terms``)."""


def pool_terms(
    channel: Channel,
    completed: Mapping[Channel, int],
    agents: Sequence[AgentSnapshot],
    policy: Policy,
    now_ms: int,
) -> PoolTerms:
    """``(sum(free(a)), rate)`` of the pool ``agents`` on ``channel`` (module docstring)."""
    present = present_agents(agents, now_ms, policy)
    free = free_now(present, channel, policy, now_ms)
    handle_s = policy.expected_handle_s.get(channel, 0) or FALLBACK_HANDLE_S
    fallback = max(1, staffed_slots(present, channel, policy)) / handle_s
    return free, max(completed.get(channel, 0) / RATE_WINDOW_S, fallback)


def wait_at(position: int, terms: PoolTerms) -> float:
    """Seconds the call at ``position`` of its channel waits, served by a pool of ``terms``."""
    free, rate = terms
    ahead = position - free
    return 0.0 if ahead <= 0 else ahead / rate


def pool_key(call: Call, now_ms: int, policy: Policy) -> Hashable:
    """Everything ``agents_for`` and ``pool_terms`` depend on about ``call``: calls with equal
    keys have the same pool, so a pass over many waiting calls works each pool out once."""
    region = call.region.lower() if call.region_required else ""
    widened = requirements(call, now_ms, policy)
    return (call.channel, widened, call.excluded_agents, region, call.language.lower())


def channel_position(queued: Sequence[Call], call_id: str, channel: Channel, position: int) -> int:
    """The call's place (1 = next) among the waiting calls of ``channel``: counted in
    ``queued`` (the first waiting calls in queue order) up to the call; a call past them at
    the tenant-wide ``position`` gets the channel's share of them for the calls in between."""
    same = 0
    for call in queued:
        if call.channel == channel:
            same += 1
        if call.call_id == call_id:
            return same
    if not queued:
        return max(1, position)
    between = max(0, position - 1 - len(queued))
    return same + round(between * same / len(queued)) + 1


def sla_state(call: Call, now_ms: int, ewt_s: float, policy: Policy) -> tuple[bool, bool]:
    """``(at_risk, breached)`` of a waiting call expected to wait ``ewt_s`` more seconds."""
    target = policy.sla_for(call.channel)
    if target is None or target.target_s <= 0:
        return False, False
    target_ms = target.target_s * 1000
    waited = waited_ms(call, now_ms)
    breached = waited > target_ms
    at_risk = waited + ewt_s * 1000 > target_ms or waited >= policy.sla_at_risk * target_ms
    return at_risk, breached
