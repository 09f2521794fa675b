"""Unit tests for ``router.solver``: the min-cost flow against an exhaustive oracle."""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Sequence

import pytest

from router.balanced import place, place_batch, prioritise
from router.solver import FlowSolution, SolverError, solve_flow

Edge = tuple[int, int, int]


def placement_cost(
    agent_of: Sequence[int | None], edges: Sequence[Edge], slot_costs: Sequence[Sequence[int]]
) -> int | None:
    """Total cost of a placement, or ``None`` if it uses a missing edge or too many slots."""
    pair = {(c, a): cost for c, a, cost in edges}
    taken = Counter(agent for agent in agent_of if agent is not None)
    if any(taken[agent] > len(slot_costs[agent]) for agent in taken):
        return None
    total = 0
    for call, agent in enumerate(agent_of):
        if agent is None:
            continue
        if (call, agent) not in pair:
            return None
        total += pair[(call, agent)]
    # An agent given k items pays its k cheapest slots, which are its first k (non-decreasing).
    return total + sum(sum(slot_costs[agent][:k]) for agent, k in taken.items())


def exhaustive(
    n_calls: int, edges: Sequence[Edge], slot_costs: Sequence[Sequence[int]]
) -> tuple[int, int]:
    """(most calls placed, least cost among those) over every possible placement."""
    options = [[None, *(a for c, a, _ in edges if c == call)] for call in range(n_calls)]
    best: tuple[int, int] | None = None
    for agent_of in itertools.product(*options):
        cost = placement_cost(agent_of, edges, slot_costs)
        if cost is None:
            continue
        placed = sum(agent is not None for agent in agent_of)
        if best is None or (placed, -cost) > (best[0], -best[1]):
            best = (placed, cost)
    assert best is not None  # placing nothing is always feasible
    return best


def random_instance(
    rng: random.Random, n_calls: int, n_agents: int
) -> tuple[list[Edge], list[list[int]]]:
    """Sparse random pair costs and per-agent increasing slot costs (0 to 3 slots)."""
    edges = [
        (call, agent, rng.randint(0, 60))
        for call in range(n_calls)
        for agent in range(n_agents)
        if rng.random() < 0.6
    ]
    slot_costs = []
    for _ in range(n_agents):
        slots = rng.randint(0, 3)
        costs = sorted(rng.randint(0, 40) for _ in range(slots))
        slot_costs.append([cost + k for k, cost in enumerate(costs)])
    return edges, slot_costs


def solve(n_calls: int, edges: Sequence[Edge], slot_costs: Sequence[Sequence[int]]) -> FlowSolution:
    """Run the solver on edge tuples."""
    return solve_flow(
        n_calls,
        [c for c, _, _ in edges],
        [a for _, a, _ in edges],
        [cost for _, _, cost in edges],
        slot_costs,
    )


@pytest.mark.parametrize("seed", range(30))
def test_flow_matches_exhaustive_optimum(seed: int) -> None:
    """On small random instances the flow places the most calls at the least total cost."""
    rng = random.Random(seed)
    n_calls, n_agents = 5, 6
    edges, slot_costs = random_instance(rng, n_calls, n_agents)
    solution = solve(n_calls, edges, slot_costs)
    placed, cost = exhaustive(n_calls, edges, slot_costs)
    assert sum(agent is not None for agent in solution.agent_of) == placed
    assert solution.cost == cost
    # The placement the solver reports really has that cost and respects every slot count.
    assert placement_cost(solution.agent_of, edges, slot_costs) == cost


def test_flow_prefers_more_placements_over_cheaper_ones() -> None:
    """Max flow first: two placed calls beat one cheap one."""
    edges = [(0, 0, 0), (0, 1, 900), (1, 0, 900)]
    solution = solve(2, edges, [[0], [0]])
    assert solution.agent_of == (1, 0)
    assert solution.cost == 1800


def test_flow_uses_cheaper_slots_first() -> None:
    """Parallel slot arcs model a convex load cost: the second item on an agent costs more."""
    edges = [(0, 0, 10), (1, 0, 10), (0, 1, 25), (1, 1, 25)]
    solution = solve(2, edges, [[0, 20], [0, 20]])
    # Both on agent 0 would cost 10 + 10 + 0 + 20 = 40; splitting costs 10 + 25 = 35.
    assert sorted(a for a in solution.agent_of if a is not None) == [0, 1]
    assert solution.cost == 35


def test_flow_handles_empty_and_unconnected_inputs() -> None:
    """No calls, no agents or no edges give an empty placement, not an error."""
    assert solve(0, [], []) == FlowSolution(agent_of=(), cost=0)
    assert solve(2, [], [[0, 1]]) == FlowSolution(agent_of=(None, None), cost=0)
    assert solve(1, [(0, 0, 5)], [[]]) == FlowSolution(agent_of=(None,), cost=0)


@pytest.mark.parametrize("seed", range(20))
def test_priorities_win_among_maximum_placements(seed: int) -> None:
    """With priority offsets the flow keeps the most placements, then the highest priority sum,
    then the least base cost: checked against an exhaustive lexicographic search."""
    rng = random.Random(1000 + seed)
    n_calls, n_agents = 5, 4
    edges, slot_costs = random_instance(rng, n_calls, n_agents)
    priorities = [rng.choice([0, 0, 1, 5]) for _ in range(n_calls)]
    agent_of = place(n_calls, prioritise(edges, priorities, slot_costs), slot_costs)

    def rank(choice: Sequence[int | None]) -> tuple[int, int, int] | None:
        """(placed, priority sum, -base cost) of a feasible placement, else None."""
        cost = placement_cost(choice, edges, slot_costs)
        if cost is None:
            return None
        placed = [c for c, agent in enumerate(choice) if agent is not None]
        return (len(placed), sum(priorities[c] for c in placed), -cost)

    options = [[None, *(a for c, a, _ in edges if c == call)] for call in range(n_calls)]
    best = max(r for r in map(rank, itertools.product(*options)) if r is not None)
    assert rank(agent_of) == best


@pytest.mark.parametrize("seed", range(30))
def test_queue_rank_weights_place_calls_greedily_in_queue_order(seed: int) -> None:
    """With queue ranks as priorities (``n - 1 - rank``, as ``plan_balanced`` passes them) the
    flow keeps the most placements, then places calls earliest-in-queue first (the
    lexicographically greatest placed/unplaced vector), then the least base cost: checked
    against an exhaustive search."""
    rng = random.Random(3000 + seed)
    n_calls, n_agents = 5, 4
    edges, slot_costs = random_instance(rng, n_calls, n_agents)
    weights = [n_calls - 1 - c for c in range(n_calls)]
    agent_of = place(n_calls, prioritise(edges, weights, slot_costs), slot_costs)

    def rank(choice: Sequence[int | None]) -> tuple[int, tuple[bool, ...], int] | None:
        """(placed, which calls in queue order are placed, -base cost), else None."""
        cost = placement_cost(choice, edges, slot_costs)
        if cost is None:
            return None
        placed = tuple(agent is not None for agent in choice)
        return (sum(placed), placed, -cost)

    options = [[None, *(a for c, a, _ in edges if c == call)] for call in range(n_calls)]
    best = max(r for r in map(rank, itertools.product(*options)) if r is not None)
    assert rank(agent_of) == best


@pytest.mark.parametrize("seed", range(60))
def test_batch_rounds_keep_the_queue_order_and_the_cheapest_shortlist(seed: int) -> None:
    """``place_batch``: when each call's ``top_k`` best candidates can hold every call, the
    least-cost placement on those; otherwise the queue-ranked flow on all candidates. Either
    way as many calls as any placement (checked against an exhaustive search)."""
    rng = random.Random(4000 + seed)
    n_calls, n_agents = rng.randint(2, 5), rng.randint(1, 5)
    edges, slot_costs = random_instance(rng, n_calls, n_agents)
    # Each call's candidates best first (the plan ranks them by net value; any order will do).
    candidates = [
        sorted((e for e in edges if e[0] == call), key=lambda e: (e[2], e[1]))
        for call in range(n_calls)
    ]
    top_k = rng.choice([0, 1, 2, 3])
    agent_of = place_batch(candidates, top_k, slot_costs)

    cut = top_k if 0 < top_k < n_calls else None
    narrow = [edge for call_edges in candidates for edge in call_edges[:cut]]
    placed, _ = exhaustive(n_calls, edges, slot_costs)
    narrow_placed, narrow_cost = exhaustive(n_calls, narrow, slot_costs)
    if narrow_placed == n_calls:
        assert placement_cost(agent_of, narrow, slot_costs) == narrow_cost
        assert None not in agent_of
    else:
        ranked = [edge for call_edges in candidates for edge in call_edges]
        weights = [n_calls - 1 - c for c in range(n_calls)]
        assert agent_of == place(n_calls, prioritise(ranked, weights, slot_costs), slot_costs)
    assert sum(agent is not None for agent in agent_of) == placed


@pytest.mark.parametrize("seed", range(20))
def test_single_call_shortcut_matches_the_flow(seed: int) -> None:
    """The one-call shortcut finds the flow's optimum cost and breaks ties by agent index."""
    rng = random.Random(2000 + seed)
    edges, slot_costs = random_instance(rng, 1, 6)
    agent_of = place(1, edges, slot_costs)
    flow = solve(1, edges, slot_costs)
    assert placement_cost(agent_of, edges, slot_costs) == flow.cost
    assert (agent_of[0] is None) == (flow.agent_of[0] is None)
    if agent_of[0] is not None:
        totals = {a: cost + slot_costs[a][0] for _, a, cost in edges if slot_costs[a]}
        assert agent_of[0] == min(a for a, total in totals.items() if total == flow.cost)


def test_prioritise_leaves_equal_priorities_alone() -> None:
    """Without differing priorities the costs are unchanged (no needless large numbers)."""
    edges = [(0, 0, 7), (1, 0, 9)]
    assert prioritise(edges, [3, 3], [[1, 2]]) == edges
    shifted = prioritise(edges, [0, 2], [[1, 2]])
    assert shifted[1] == (1, 0, 9)
    assert shifted[0][2] > 2 * (9 + 2)


def test_flow_reports_cost_overflow_as_solver_error() -> None:
    """Costs beyond OR-Tools' range raise SolverError instead of returning a wrong placement."""
    with pytest.raises(SolverError, match="BAD_COST_RANGE"):
        solve(2, [(0, 0, 2**62), (1, 0, 2**62)], [[0, 2**62]])
