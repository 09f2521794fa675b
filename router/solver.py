"""The assignment solve: one min-cost max-flow over calls, candidate agents and free slots.

Graph (all capacities 1)::

    source ──▶ call i ──(pair cost)──▶ agent j ══(one arc per free slot k, cost slot_k)══▶ sink

The source supplies every call and the sink absorbs them; ``solve_max_flow_with_min_cost``
first places as many calls as the graph allows, then minimises the total cost among those
maximum placements. Slot costs per agent must be non-decreasing in k (``scoring.load`` makes
them strictly increasing): the flow then fills an agent's cheaper slots first, so a convex
load cost is modelled exactly by parallel unit arcs.

This module knows nothing about agents or calls: it takes integer costs and returns which
agent index each call index got. ``router.balanced`` builds the costs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from ortools.graph.python.min_cost_flow import SimpleMinCostFlow


@dataclass(frozen=True, slots=True)
class FlowSolution:
    """Result of ``solve_flow``."""

    agent_of: tuple[int | None, ...]
    """Agent index each call index was given, ``None`` when unplaced."""
    cost: int
    """Total cost of the placement (pair costs plus the slot costs it uses)."""


class SolverError(RuntimeError):
    """OR-Tools could not solve the flow: a cost range overflow, so a bug, not a user error.

    Deliberately outside ``router.errors`` (which imports grpc): the engine stays pure, and
    the error interceptor reports any unexpected exception as INTERNAL.
    """


def solve_flow(
    n_calls: int,
    edge_calls: npt.ArrayLike,
    edge_agents: npt.ArrayLike,
    edge_costs: npt.ArrayLike,
    slot_costs: Sequence[Sequence[int]],
) -> FlowSolution:
    """Place calls ``0..n_calls-1`` on agents ``0..len(slot_costs)-1`` at least total cost.

    ``edge_*`` are parallel arrays: call ``edge_calls[e]`` may go to agent ``edge_agents[e]``
    at cost ``edge_costs[e]``. ``slot_costs[j]`` lists the cost of each successive item agent
    ``j`` can still take (its length is the agent's free slots). All costs are integers >= 0.
    """
    slot_agents = np.repeat(
        np.arange(len(slot_costs), dtype=np.int32), [len(c) for c in slot_costs]
    )
    slot_cost_array = np.fromiter(
        (cost for costs in slot_costs for cost in costs), dtype=np.int64, count=len(slot_agents)
    )
    return solve_flow_arrays(
        n_calls,
        len(slot_costs),
        edge_calls=edge_calls,
        edge_agents=edge_agents,
        edge_costs=edge_costs,
        slot_agents=slot_agents,
        slot_costs=slot_cost_array,
    )


def solve_flow_arrays(
    n_calls: int,
    n_agents: int,
    *,
    edge_calls: npt.ArrayLike,
    edge_agents: npt.ArrayLike,
    edge_costs: npt.ArrayLike,
    slot_agents: npt.ArrayLike,
    slot_costs: npt.ArrayLike,
) -> FlowSolution:
    """``solve_flow`` with the slots as parallel arrays too (the same graph, arc for arc).

    ``slot_agents[s]`` is the agent of slot ``s`` and ``slot_costs[s]`` its cost; an agent's
    slots are consecutive, in the order they fill, and agents come in index order.
    """
    calls = np.asarray(edge_calls, dtype=np.int32)
    agents = np.asarray(edge_agents, dtype=np.int32)
    pair_costs = np.asarray(edge_costs, dtype=np.int64)
    slot_agents = np.asarray(slot_agents, dtype=np.int32)
    slot_cost_array = np.asarray(slot_costs, dtype=np.int64)
    source, sink = 0, n_calls + n_agents + 1

    def call_node(index: npt.NDArray[np.int32]) -> npt.NDArray[np.int32]:
        """Node ids of call indexes (node 0 is the source)."""
        return index + 1

    def agent_node(index: npt.NDArray[np.int32]) -> npt.NDArray[np.int32]:
        """Node ids of agent indexes (after the calls; the last node is the sink)."""
        return index + 1 + n_calls

    all_calls = np.arange(n_calls, dtype=np.int32)
    tails = np.concatenate(
        [np.full(n_calls, source, np.int32), call_node(calls), agent_node(slot_agents)]
    )
    heads = np.concatenate(
        [call_node(all_calls), agent_node(agents), np.full(len(slot_agents), sink, np.int32)]
    )
    costs = np.concatenate([np.zeros(n_calls, np.int64), pair_costs, slot_cost_array])

    flow = SimpleMinCostFlow()
    if len(tails):
        flow.add_arcs_with_capacity_and_unit_cost(
            tails.astype(np.int32), heads.astype(np.int32), np.ones(len(tails), np.int64), costs
        )
    flow.set_nodes_supplies(
        np.array([source, sink], dtype=np.int32), np.array([n_calls, -n_calls], dtype=np.int64)
    )
    status = flow.solve_max_flow_with_min_cost()
    if status != SimpleMinCostFlow.OPTIMAL:
        raise SolverError(f"min-cost flow returned {status}")

    agent_of: list[int | None] = [None] * n_calls
    if len(calls):
        # Pair arcs were added right after the n_calls source arcs, in edge order.
        used = flow.flows(np.arange(n_calls, n_calls + len(calls), dtype=np.int32)) > 0
        for call, agent in zip(calls[used].tolist(), agents[used].tolist(), strict=True):
            agent_of[call] = agent
    return FlowSolution(agent_of=tuple(agent_of), cost=int(flow.optimal_cost()))
