"""``BALANCED``: the whole batch in one min-cost flow per channel.

Calls are ranked in service order (``router.ordering.queue_order``: overdue calls first, then
by the aging key ``origin - priority * aging_s_per_priority``). Channels are solved in the
order their first call appears in that ranking (voice first on ties). For each channel,
screen every call, score every eligible pair, keep the best candidates per call and solve one
flow (``router.solver``) with integer costs; with ``rank`` the call's 0-based place among the
channel's ``n`` calls::

    pair cost  = round((max_total(weights) - score.total) * 1000) + rank * rank_step
    slot cost  = round(scoring.load.marginal_cost(k-th item) * 1000) + (k - 1)

Weighted score points and load cost share one scale (1000 per point). ``+ (k - 1)`` keeps
slot costs strictly increasing after rounding even when ``weights.load`` is 0, so equally
good agents still share the work. ``rank_step = n * (max pair cost + max slot cost) + 1``
exceeds any difference the other terms can make between two placements of the same size, so
among the maximum placements the flow minimises the sum of the placed calls' ranks first.
The calls that can be placed together form a (transversal) matroid, and with distinct
weights a maximum-weight basis is exactly the greedy one: the flow places the earliest call
in queue order that can be placed at all, then the earliest of the rest that still fits, and
so on. An older call therefore beats a newer call of the same priority, a call that waited
``priority difference * aging_s_per_priority`` longer beats a more urgent one, and an overdue
call beats both. Only then do the soft score and load decide who takes which call. Across
channels the order is kept per channel, not per call: a channel is solved whole when its
first call's turn comes, so a later call of an earlier channel may take an agent an earlier
call of a later channel could have used (agents serving several channels are the only link).

Candidates per call: the ``max(policy.top_k, n_calls)`` best by net value (score minus the
agent's next-slot load cost; ``top_k <= 0`` keeps all). Keeping at least ``n_calls`` keeps the
set of placeable calls exact: a pruned call still has more candidates than there are other
calls, so one of them is always free for it.

A single call (every ``Assign``) skips the flow: its optimum is simply the cheapest candidate
on its first slot, ties broken by agent id. In a batch, exactly equal-cost optima are settled by
the flow solver, deterministically because arcs are always added in agent-id order.

After each channel's solve the placements go on the board, so the next channel sees the units
they took (a voice call never joins an agent just given a chat). Explanations list the load
cost of the slot the call took as a negative ``load`` part; the runner-up is the best other
eligible agent by the same net value.
"""

from __future__ import annotations

from collections.abc import Sequence

from router.board import Board, explain
from router.domain import Call, Channel, Placement, Strategy
from router.ordering import queue_order
from router.solver import solve_flow
from scoring.load import free_slots, slot_costs
from scoring.match import max_total

SCORE_SCALE = 1000
"""Integer cost units per weighted score point."""

Edge = tuple[int, int, int]
"""(call column, agent column, integer cost) of one candidate pair."""

LOAD = "load"
"""Explanation part holding the (negative) load cost of the slot the call took."""


def channel_order(calls: Sequence[Call], order: Sequence[int]) -> list[Channel]:
    """Channels of ``calls`` in solve order: as their first call appears in ``order``."""
    return list(dict.fromkeys(calls[index].channel for index in order))


def plan_balanced(board: Board, calls: Sequence[Call]) -> list[Placement]:
    """Place ``calls`` with the balanced model; placements in input order."""
    placements: list[Placement | None] = [None] * len(calls)
    order = queue_order(calls, board.now_ms, board.policy)
    for channel in channel_order(calls, order):
        group = [index for index in order if calls[index].channel == channel]
        for index, placement in _solve_channel(board, calls, group, channel):
            placements[index] = placement
    return [placement for placement in placements if placement is not None]


def _solve_channel(
    board: Board, calls: Sequence[Call], group: list[int], channel: Channel
) -> list[tuple[int, Placement]]:
    """Solve one channel's calls (``group``: indexes in queue order) and update the board."""
    policy = board.policy
    screenings = [board.screen(calls[index]) for index in group]
    agent_ids = sorted({agent.agent_id for s in screenings for agent in s.eligible})
    column = {agent_id: j for j, agent_id in enumerate(agent_ids)}
    loads = _load_costs(board, agent_ids, channel, len(group))
    slot_ints = [
        tuple(round(cost * SCORE_SCALE) + k for k, cost in enumerate(costs)) for costs in loads
    ]

    ceiling = max_total(policy.weights)
    keep = None if policy.top_k <= 0 else max(policy.top_k, len(group))
    totals: list[dict[str, float]] = []
    edges: list[Edge] = []
    for c, (index, screening) in enumerate(zip(group, screenings, strict=True)):
        call_totals = {
            a.agent_id: board.total(calls[index], a.agent_id) for a in screening.eligible
        }
        totals.append(call_totals)
        ranked = sorted(
            call_totals,
            key=lambda aid: (-(call_totals[aid] - loads[column[aid]][0]), aid),
        )
        for agent_id in ranked[:keep]:
            base = max(0, round((ceiling - call_totals[agent_id]) * SCORE_SCALE))
            edges.append((c, column[agent_id], base))
    # Earlier in queue order = higher weight; distinct weights make the choice greedy.
    weights = [len(group) - 1 - c for c in range(len(group))]
    agent_of = place(len(group), prioritise(edges, weights, slot_ints), slot_ints)

    # Cards first, placements after: a placement changes the agent's idle part.
    chosen = [None if j is None else agent_ids[j] for j in agent_of]
    cards = [
        None if aid is None else board.card(calls[index], aid)
        for aid, index in zip(chosen, group, strict=True)
    ]
    taken = [0] * len(agent_ids)
    results: list[tuple[int, Placement]] = []
    for c, index in enumerate(group):
        chosen_id, chosen_card = chosen[c], cards[c]
        parts: dict[str, float] = {}
        if chosen_id is not None and chosen_card is not None:
            j = column[chosen_id]
            # Slots go to the agent's calls in queue order; the flow only fixes how many.
            parts = {**chosen_card.parts, LOAD: -loads[j][taken[j]]}
            taken[j] += 1
            board.place(calls[index], chosen_id)
        ranking = [(aid, total - loads[column[aid]][0]) for aid, total in totals[c].items()]
        explanation = explain(Strategy.BALANCED, screenings[c], chosen_id, parts, ranking)
        results.append((index, Placement(calls[index].call_id, chosen_id, explanation)))
    return results


def _load_costs(
    board: Board, agent_ids: list[str], channel: Channel, n_calls: int
) -> list[tuple[float, ...]]:
    """Marginal load cost of each free slot of each agent, in score points."""
    policy = board.policy
    units = policy.units_for(channel)
    loads: list[tuple[float, ...]] = []
    for agent_id in agent_ids:
        agent = board.agents[agent_id]
        # No agent can take more items than there are calls in this solve.
        slots = min(free_slots(agent, channel, policy), n_calls)
        cap = policy.occupancy_cap_for(agent.profile)
        occ = board.occupancy(agent_id)
        weight = policy.weights.load
        loads.append(
            slot_costs(agent.units_used, units, slots, occupancy=occ, cap=cap, weight=weight)
        )
    return loads


def prioritise(
    edges: Sequence[Edge], priorities: Sequence[int], slot_ints: Sequence[Sequence[int]]
) -> list[Edge]:
    """Add ``(max_priority - priority) * step`` to each call's edges (see the module docstring).

    ``step`` exceeds the largest difference pair and slot costs can make between two placements
    of the same size, so among maximum placements a higher priority sum always wins. The
    balanced plan passes queue ranks as priorities (``n - 1 - rank``).
    """
    top = max(priorities, default=0)
    if min(priorities, default=0) == top:
        return list(edges)
    widest_pair = max((cost for _, _, cost in edges), default=0)
    widest_slot = max((max(costs) for costs in slot_ints if costs), default=0)
    step = len(priorities) * (widest_pair + widest_slot) + 1
    return [(c, j, cost + (top - priorities[c]) * step) for c, j, cost in edges]


def place(
    n_calls: int, edges: Sequence[Edge], slot_ints: Sequence[Sequence[int]]
) -> tuple[int | None, ...]:
    """Agent column per call: the flow for a batch, a direct minimum for a single call.

    One call (every ``Assign``) needs no flow: its optimum is the cheapest candidate with the
    agent's first slot, and taking the minimum breaks cost ties by agent id explicitly.
    """
    if n_calls == 1:
        options = [(cost + slot_ints[j][0], j) for _, j, cost in edges if slot_ints[j]]
        return (min(options)[1] if options else None,)
    solution = solve_flow(
        n_calls,
        [c for c, _, _ in edges],
        [j for _, j, _ in edges],
        [cost for _, _, cost in edges],
        slot_ints,
    )
    return solution.agent_of
