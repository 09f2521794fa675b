"""Load: rolling occupancy, free slots and the convex load cost the solver balances with.

Occupancy is the unit-weighted share of an agent's budget that was busy over the rolling
window ``[now - window_s, now]``::

    busy      = sum(units * overlap(span, window))       finished spans (agent.recent)
              + sum(units * (now - max(start, window_start)))   work in progress (agent.active)
    occupancy = busy / (window_s * 1000 * AGENT_UNIT_BUDGET)     clamped to [0, 1]

so one voice call (100 units) for the whole window is 1.0, and one chat (25 units) is 0.25.

Free slots on a channel are bounded by both the channel capacity and the unit budget::

    free_slots = min(capacity - load(channel), (AGENT_UNIT_BUDGET - units_used) // units)

The marginal cost of the k-th extra item (k = 1, 2, ...) given the units already in use,
with ``u`` the utilisation fraction of the budget and ``d = units / AGENT_UNIT_BUDGET``::

    u_before = (units_used + (k - 1) * units) / AGENT_UNIT_BUDGET
    u_after  = u_before + d
    r        = min(1, occupancy / cap)                    (1 when cap <= 0)
    cost_k   = w_load * ((u_after ** 2 - u_before ** 2) + d * r ** 2)

``u_after ** 2 - u_before ** 2 = 2 * d * u_before + d ** 2`` grows by ``2 * d ** 2`` per slot,
so with ``w_load > 0`` the costs are strictly increasing in k: the total load cost is convex
and a min-cost flow with one unit-capacity arc per slot takes the slots in order, which makes
the flow model exact. The occupancy term charges an agent who has been busy lately (relative
to their own cap) for each item, in proportion to the item's share of the budget, so equally
good agents share the work and top performers are not drained up to their cap first.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from router.domain import AGENT_UNIT_BUDGET, AgentSnapshot, Channel, Policy


def occupancy(agent: AgentSnapshot, now_ms: int, window_s: int) -> float:
    """Unit-weighted busy share of ``agent``'s budget over the last ``window_s`` seconds."""
    if window_s <= 0:
        return 0.0
    window_ms = window_s * 1000
    window_start = now_ms - window_ms
    busy = 0
    for span in agent.recent:
        overlap = min(span.end_ms, now_ms) - max(span.start_ms, window_start)
        if overlap > 0:
            busy += overlap * span.units
    for work in agent.active:
        running = now_ms - max(work.start_ms, window_start)
        if running > 0:
            busy += running * work.units
    return min(1.0, max(0.0, busy / (window_ms * AGENT_UNIT_BUDGET)))


def free_slots(agent: AgentSnapshot, channel: Channel, policy: Policy) -> int:
    """Items of ``channel`` the agent could still take now (channel capacity and unit budget)."""
    by_capacity = policy.capacity_for(agent.profile, channel) - agent.load(channel)
    units = policy.units_for(channel)
    if units <= 0:
        # A free channel (0 units) is bounded by its item capacity alone.
        return max(0, by_capacity)
    by_budget = (AGENT_UNIT_BUDGET - agent.units_used) // units
    return max(0, min(by_capacity, by_budget))


def marginal_cost(
    units_used: int, units: int, k: int, *, occupancy: float, cap: float, weight: float
) -> float:
    """Cost of the ``k``-th extra item (k >= 1) of ``units`` on top of ``units_used``."""
    share = units / AGENT_UNIT_BUDGET
    before = (units_used + (k - 1) * units) / AGENT_UNIT_BUDGET
    after = before + share
    ratio = 1.0 if cap <= 0 else min(1.0, max(0.0, occupancy / cap))
    return weight * ((after * after - before * before) + share * ratio * ratio)


def slot_costs(
    units_used: int, units: int, slots: int, *, occupancy: float, cap: float, weight: float
) -> tuple[float, ...]:
    """Marginal costs of the next ``slots`` items, non-decreasing (see the module docstring)."""
    return tuple(
        marginal_cost(units_used, units, k, occupancy=occupancy, cap=cap, weight=weight)
        for k in range(1, slots + 1)
    )


def slot_cost_matrix(
    units_used: npt.NDArray[np.int64],
    units: int,
    width: int,
    *,
    occupancy: npt.NDArray[np.float64],
    cap: npt.NDArray[np.float64],
    weight: float,
) -> npt.NDArray[np.float64]:
    """``marginal_cost`` of items ``k = 1..width`` for many agents at once, shape (agents, width).

    Row ``i`` is agent ``i``'s ``slot_costs`` (padded to ``width``); every value is the float
    ``marginal_cost`` returns, operation for operation (tests compare them bit for bit).
    """
    share = units / AGENT_UNIT_BUDGET
    steps = np.arange(width, dtype=np.int64) * units
    before = (units_used[:, None] + steps[None, :]) / AGENT_UNIT_BUDGET
    after = before + share
    with np.errstate(divide="ignore", invalid="ignore"):
        raw = occupancy / cap
    ratio = np.where(cap <= 0, 1.0, np.minimum(1.0, np.maximum(0.0, raw)))
    occupancy_term = share * ratio * ratio
    return weight * ((after * after - before * before) + occupancy_term[:, None])
