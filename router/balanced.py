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

Candidates per call, by net value (score minus the agent's next-slot load cost), solved in
up to two rounds:

1. each call's ``policy.top_k`` best (``top_k <= 0`` keeps all), without the rank terms.
   When this flow places every call, the placed set is trivially the maximum one and all
   rank terms would add the same constant, so its least-cost placement is the answer (the
   usual case when agents are plentiful: a smaller graph with small costs, several times
   faster to solve). Skipped when the candidates' free slots cannot hold every call.
2. otherwise each call's ``max(policy.top_k, n_calls)`` best, with the rank terms above.
   Keeping at least ``n_calls`` keeps the set of placeable calls exact: a pruned call still
   has more candidates than there are other calls, so one of them is always free for it.

A single call (every ``Assign``) skips the flow: its optimum is simply the cheapest of all its
eligible agents (``top_k`` bounds only the flow's graph) on its first slot. Equally cheap
candidates are told apart by ``tie_key(call id, agent id)``, a stable hash: deterministic, yet
a different order for every call, so equally good agents share the calls (rather than the
lowest agent ids taking every one after a lull, however many tie) and concurrent Assigns on
one snapshot seldom pick the same agent. In a batch, exactly equal-cost optima are
settled by the flow solver, deterministically because arcs are always added in agent-id order.

After each channel's solve the placements go on the board, so the next channel sees the units
they took (a voice call never joins an agent just given a chat). Explanations list the load
cost of the slot the call took as a negative ``load`` part; the runner-up is the best other
eligible agent by the same net value.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from router.board import Board, explain
from router.domain import Call, Channel, Placement, Strategy
from router.eligibility import AgentColumns, ColumnScreening
from router.ordering import queue_order
from router.solver import solve_flow, solve_flow_arrays
from scoring.load import AgentTable, free_slots, slot_cost_matrix, slot_costs
from scoring.match import ScoreColumns, max_total

SCORE_SCALE = 1000
"""Integer cost units per weighted score point."""

Edge = tuple[int, int, int]
"""(call column, agent column, integer cost) of one candidate pair."""

LOAD = "load"
"""Explanation part holding the (negative) load cost of the slot the call took."""


def tie_key(call_id: str, agent_id: str) -> tuple[int, str]:
    """Order of equally cheap candidates for a lone call: CRC-32 of the pair, then agent id."""
    return zlib.crc32(f"{call_id}\x00{agent_id}".encode()), agent_id


def channel_order(calls: Sequence[Call], order: Sequence[int]) -> list[Channel]:
    """Channels of ``calls`` in solve order: as their first call appears in ``order``."""
    return list(dict.fromkeys(calls[index].channel for index in order))


SMALL_PLAN = 128
"""Calls x agents up to which ``plan_balanced`` takes the one-agent-at-a-time path: without
the array set-up it is several times faster there (a lone call over a few agents: ~25 us
against ~200 us), and both paths give the same placements and explanations."""


def plan_balanced(board: Board, calls: Sequence[Call]) -> list[Placement]:
    """Place ``calls`` with the balanced model; placements in input order.

    Screens and scores with numpy columns (``Columns``); the result is exactly that of
    ``plan_balanced_reference`` (same flow graph, arc for arc, hence the same placements and
    explanations), which tests check on random snapshots. Small decisions (``SMALL_PLAN``)
    go to the reference itself.
    """
    if len(calls) * len(board.agents) <= SMALL_PLAN:
        return plan_balanced_reference(board, calls)
    return plan_balanced_columns(board, calls)


def plan_balanced_columns(board: Board, calls: Sequence[Call]) -> list[Placement]:
    """``plan_balanced`` on numpy columns, whatever the size."""
    placements: list[Placement | None] = [None] * len(calls)
    order = queue_order(calls, board.now_ms, board.policy)
    columns = Columns(board)
    for channel in channel_order(calls, order):
        group = [index for index in order if calls[index].channel == channel]
        for index, placement in _solve_channel_fast(board, columns, calls, group, channel):
            placements[index] = placement
    return [placement for placement in placements if placement is not None]


def plan_balanced_reference(board: Board, calls: Sequence[Call]) -> list[Placement]:
    """``plan_balanced`` one agent and one pair at a time: the yardstick of the fast path."""
    placements: list[Placement | None] = [None] * len(calls)
    order = queue_order(calls, board.now_ms, board.policy)
    for channel in channel_order(calls, order):
        group = [index for index in order if calls[index].channel == channel]
        for index, placement in _solve_channel(board, calls, group, channel):
            placements[index] = placement
    return [placement for placement in placements if placement is not None]


class Columns:
    """The board's agents as numpy columns: hard rules (``router.eligibility.AgentColumns``)
    and score facts (``scoring.match.ScoreColumns``), in agent-id order, kept in step with
    the board's placements."""

    __slots__ = ("rules", "scores")

    def __init__(self, board: Board) -> None:
        """Columns of every agent on ``board`` (the board holds them in agent-id order)."""
        agents = list(board.agents.values())
        table = AgentTable(agents)
        self.rules = AgentColumns(
            agents,
            board.now_ms,
            board.policy,
            unindexed_missing_skill=board.unindexed,
            table=table,
        )
        self.scores = ScoreColumns(agents, board.now_ms, board.policy, table=table)

    def levels(self, name: str) -> npt.NDArray[np.int64]:
        """Level of skill ``name`` per agent, 0 without it."""
        return self.rules.skill(name)[1]

    def place(self, index: int, channel: Channel) -> None:
        """The agent at ``index`` takes an item on ``channel`` now."""
        self.rules.place(index, channel)
        self.scores.placed(index)


def _top(net: npt.NDArray[np.float64], keep: int | None) -> npt.NDArray[np.intp]:
    """Positions of the ``keep`` best ``net`` values, best first, ties in position order
    (``sorted`` by ``(-net, agent id)`` with positions in agent-id order, then cut)."""
    cost = -net
    if keep is None or len(net) <= keep:
        return np.argsort(cost, kind="stable")
    # The keep-th best value; every value above it is kept, and as many equal to it as fit,
    # the first ones in position order (a stable sort would put those first).
    threshold = np.partition(cost, keep - 1)[keep - 1]
    above = np.flatnonzero(cost < threshold)
    tied = np.flatnonzero(cost == threshold)[: keep - len(above)]
    chosen = np.concatenate([above, tied])
    chosen.sort()
    return chosen[np.argsort(cost[chosen], kind="stable")]


def _solve_channel_fast(
    board: Board, columns: Columns, calls: Sequence[Call], group: list[int], channel: Channel
) -> list[tuple[int, Placement]]:
    """``_solve_channel`` on numpy columns (same graph, same placements, same explanations)."""
    policy = board.policy
    rules, scores = columns.rules, columns.scores
    n_calls = len(group)
    screenings = [rules.screen(calls[index]) for index in group]
    members = _members(screenings, rules.size)
    column = np.full(rules.size, -1, np.intp)
    column[members] = np.arange(len(members))

    load_matrix, slot_int_matrix, filled = _slot_table(rules, members, channel, n_calls)
    first_load = np.full(rules.size, np.nan)
    if len(members):
        first_load[members] = load_matrix[:, 0]

    ceiling = max_total(policy.weights)
    keep = None if policy.top_k <= 0 else max(policy.top_k, n_calls)
    # The first round's candidates (each call's top_k); the second round's only if needed.
    first_keep = policy.top_k if 0 < policy.top_k < n_calls else keep
    eligibles = [screening.eligible for screening in screenings]
    totals = [
        scores.totals(calls[index], eligible, columns.levels)
        for index, eligible in zip(group, eligibles, strict=True)
    ]
    nets = [total - first_load[eligible] for total, eligible in zip(totals, eligibles, strict=True)]

    def pairs(rankings: Sequence[npt.NDArray[np.intp]]) -> Pairs:
        chosen = list(zip(eligibles, totals, rankings, strict=True))
        values = np.concatenate([total[ranked] for _, total, ranked in chosen])
        return Pairs(
            np.repeat(np.arange(n_calls), [len(ranked) for ranked in rankings]),
            column[np.concatenate([eligible[ranked] for eligible, _, ranked in chosen])],
            np.maximum(0, np.rint((ceiling - values) * SCORE_SCALE)).astype(np.int64),
        )

    first_call = calls[group[0]].call_id
    ids = scores.ids

    def prefer(column_index: int) -> tuple[int, str]:
        return tie_key(first_call, ids[int(members[column_index])])

    agent_of: tuple[int | None, ...]
    if n_calls == 1:  # among all its agents, not its top_k; the best two for the runner-up
        firsts = [_top(nets[0], 2)]
        lone = _lone(totals[0], slot_int_matrix[:, 0], ceiling, prefer) if len(members) else None
        agent_of = (lone,)
    else:
        firsts = [_top(net, first_keep) for net in nets]
        narrow = pairs(firsts)

        def wide() -> Pairs:
            return narrow if first_keep == keep else pairs([_top(net, keep) for net in nets])

        agent_of = _choose(n_calls, narrow, wide, slot_int_matrix, filled)

    # Score parts first, placements after: a placement changes the agent's idle part.
    chosen = [None if j is None else int(members[j]) for j in agent_of]
    parts_of = [
        None if i is None else scores.parts(calls[index], i)
        for i, index in zip(chosen, group, strict=True)
    ]
    taken = [0] * len(members)
    results: list[tuple[int, Placement]] = []
    for c, index in enumerate(group):
        i, chosen_parts, screening = chosen[c], parts_of[c], screenings[c]
        chosen_id = None if i is None else ids[i]
        parts: dict[str, float] = {}
        if i is not None and chosen_parts is not None:
            j = int(column[i])
            parts = {**chosen_parts, LOAD: -float(load_matrix[j, taken[j]])}
            taken[j] += 1
            columns.place(i, channel)
        runner_up = _runner_up(screening, nets[c], firsts[c], i, ids)
        explanation = explain(Strategy.BALANCED, screening, chosen_id, parts, runner_up)
        results.append((index, Placement(calls[index].call_id, chosen_id, explanation)))
    return results


def _members(screenings: Sequence[ColumnScreening], size: int) -> npt.NDArray[np.intp]:
    """Agents eligible for any of the calls, in position (agent-id) order (of ``size``)."""
    if len(screenings) == 1:
        return screenings[0].eligible  # flatnonzero's positions: sorted, distinct
    anyone = np.zeros(size, np.bool_)
    for screening in screenings:
        anyone[screening.eligible] = True
    return np.flatnonzero(anyone)


def _slot_table(
    rules: AgentColumns, members: npt.NDArray[np.intp], channel: Channel, n_calls: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """Load cost (score points) and integer slot cost of each free slot of each candidate
    (``_load_costs`` and ``slot_ints``), one row per candidate, and which entries are real
    slots (a row is padded past the agent's free slots)."""
    policy = rules.policy
    slots = _slot_counts(rules, members, channel, n_calls)
    width = int(slots.max()) if len(slots) else 0
    load_matrix = slot_cost_matrix(
        rules.units_used[members],
        policy.units_for(channel),
        width,
        occupancy=rules.occupancy(members),
        cap=rules.occupancy_cap()[members],
        weight=policy.weights.load,
    )
    slot_int_matrix = np.rint(load_matrix * SCORE_SCALE).astype(np.int64) + np.arange(width)
    return load_matrix, slot_int_matrix, np.arange(width)[None, :] < slots[:, None]


def _slot_counts(
    rules: AgentColumns, members: npt.NDArray[np.intp], channel: Channel, n_calls: int
) -> npt.NDArray[np.int64]:
    """Free slots of each candidate, at most ``n_calls`` (no agent takes more in one solve)."""
    return np.minimum(rules.free_slots(channel, members), n_calls)


@dataclasses.dataclass(frozen=True, slots=True)
class Pairs:
    """Candidate pairs as parallel columns, grouped by call (queue order), best first."""

    calls: npt.NDArray[np.intp]
    agents: npt.NDArray[np.intp]
    """Candidate column of each pair."""
    costs: npt.NDArray[np.int64]
    """Pair cost without the rank term."""


def _lone(
    total: npt.NDArray[np.float64],
    first_slots: npt.NDArray[np.int64],
    ceiling: float,
    prefer: Callable[[int], tuple[int, str]],
) -> int:
    """A lone call's agent (its place among the candidates, ``total``'s order): the least
    pair cost plus first-slot cost over all of them (``top_k`` bounds only a batch's graph),
    ties by ``prefer``."""
    pair = np.maximum(0, np.rint((ceiling - total) * SCORE_SCALE)).astype(np.int64)
    cost = pair + first_slots
    cheapest = np.flatnonzero(cost == cost.min()).tolist()
    return int(cheapest[0]) if len(cheapest) == 1 else min(cheapest, key=prefer)


def _choose(
    n_calls: int,
    narrow: Pairs,
    wide: Callable[[], Pairs],
    slot_int_matrix: npt.NDArray[np.int64],
    filled: npt.NDArray[np.bool_],
) -> tuple[int | None, ...]:
    """``place_batch`` of two calls or more on arrays (the same rounds, graphs and arcs; a
    lone call is ``_lone``'s): ``narrow`` holds the first round's pairs (each call's
    ``top_k`` best), ``wide()`` the second round's; ``filled`` marks the real slots of
    ``slot_int_matrix``."""
    slot_ints = slot_int_matrix[filled]
    slot_agents = np.nonzero(filled)[0]
    narrow_agents = np.zeros(len(filled), np.bool_)
    narrow_agents[narrow.agents] = True
    reached = filled & narrow_agents[:, None]  # slots no narrow edge reaches are left out
    if np.bincount(narrow.calls, minlength=n_calls).all() and int(reached.sum()) >= n_calls:
        first = solve_flow_arrays(
            n_calls,
            len(slot_int_matrix),
            edge_calls=narrow.calls,
            edge_agents=narrow.agents,
            edge_costs=narrow.costs,
            slot_agents=np.nonzero(reached)[0],
            slot_costs=slot_int_matrix[reached],
        ).agent_of
        if None not in first:
            return first
    pairs = wide()
    widest_pair = int(pairs.costs.max()) if len(pairs.costs) else 0
    widest_slot = int(slot_ints.max()) if len(slot_ints) else 0
    step = n_calls * (widest_pair + widest_slot) + 1
    # Call c (queue rank c) has priority n - 1 - c: its edges cost c * step more.
    return solve_flow_arrays(
        n_calls,
        len(slot_int_matrix),
        edge_calls=pairs.calls,
        edge_agents=pairs.agents,
        edge_costs=pairs.costs + pairs.calls.astype(np.int64) * step,
        slot_agents=slot_agents,
        slot_costs=slot_ints,
    ).agent_of


def _runner_up(
    screening: ColumnScreening,
    net: npt.NDArray[np.float64],
    ranked: npt.NDArray[np.intp],
    chosen: int | None,
    ids: list[str],
) -> list[tuple[str, float]]:
    """The best eligible agent other than ``chosen`` by net value, ties to the lowest id
    (the one entry of the ranking ``explain`` would pick from all of them); ``ranked`` is
    ``_top(net, ...)``, the best positions in that very order."""
    eligible = screening.eligible
    for position in ranked[:2].tolist():
        if eligible[position] != chosen:
            return [(ids[int(eligible[position])], float(net[position]))]
    if len(ranked) == len(eligible):
        return []
    others = eligible != chosen
    eligible, net = eligible[others], net[others]
    best = int(np.argmax(net))
    return [(ids[int(eligible[best])], float(net[best]))]


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
    candidates: list[list[Edge]] = []
    for c, (index, screening) in enumerate(zip(group, screenings, strict=True)):
        call_totals = {
            a.agent_id: board.total(calls[index], a.agent_id) for a in screening.eligible
        }
        totals.append(call_totals)
        ranked = sorted(
            call_totals,
            key=lambda aid: (-(call_totals[aid] - loads[column[aid]][0]), aid),
        )
        kept = ranked if len(group) == 1 else ranked[:keep]  # a lone call: all (ties count)
        costs = [max(0, round((ceiling - call_totals[aid]) * SCORE_SCALE)) for aid in kept]
        candidates.append([(c, column[aid], cost) for aid, cost in zip(kept, costs, strict=True)])
    first_call = calls[group[0]].call_id
    agent_of = place_batch(
        candidates,
        policy.top_k,
        slot_ints,
        prefer=lambda j: tie_key(first_call, agent_ids[j]),
    )

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


def place_batch(
    candidates: Sequence[Sequence[Edge]],
    top_k: int,
    slot_ints: Sequence[Sequence[int]],
    *,
    prefer: Callable[[int], tuple[int, str]] | None = None,
) -> tuple[int | None, ...]:
    """Agent column per call in the two rounds of the module docstring.

    ``candidates[c]`` are call ``c``'s edges (queue order), best first, at least
    ``max(top_k, n)`` of them when it has that many (all when ``top_k <= 0``). ``prefer``
    orders a lone call's equally cheap candidates (``place``).
    """
    n_calls = len(candidates)
    edges = [edge for call_edges in candidates for edge in call_edges]
    if n_calls == 1:
        return place(1, edges, slot_ints, prefer=prefer)
    cut = top_k if 0 < top_k < n_calls else None
    narrow = [edge for call_edges in candidates for edge in call_edges[:cut]]
    reached = {j for _, j, _ in narrow}
    if (
        len({c for c, _, _ in narrow}) == n_calls
        and sum(len(slot_ints[j]) for j in reached) >= n_calls
    ):
        # Slots of agents no narrow edge reaches cannot take flow: left out of the graph.
        reachable = [slots if j in reached else () for j, slots in enumerate(slot_ints)]
        first = place(n_calls, narrow, reachable)
        if None not in first:
            return first
    # Earlier in queue order = higher weight; distinct weights make the choice greedy.
    weights = [n_calls - 1 - c for c in range(n_calls)]
    return place(n_calls, prioritise(edges, weights, slot_ints), slot_ints)


def place(
    n_calls: int,
    edges: Sequence[Edge],
    slot_ints: Sequence[Sequence[int]],
    *,
    prefer: Callable[[int], tuple[int, str]] | None = None,
) -> tuple[int | None, ...]:
    """Agent column per call: the flow for a batch, a direct minimum for a single call.

    One call (every ``Assign``) needs no flow: its optimum is the cheapest candidate with the
    agent's first slot; equally cheap candidates go by ``prefer(column)`` (the lowest column
    without it).
    """
    if n_calls == 1:
        options = {j: cost + slot_ints[j][0] for _, j, cost in edges if slot_ints[j]}
        if not options:
            return (None,)
        least = min(options.values())
        cheapest = [j for j, cost in options.items() if cost == least]
        return (min(cheapest, key=prefer) if prefer is not None else min(cheapest),)
    solution = solve_flow(
        n_calls,
        [c for c, _, _ in edges],
        [j for _, j, _ in edges],
        [cost for _, _, cost in edges],
        slot_ints,
    )
    return solution.agent_of
