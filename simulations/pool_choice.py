"""The balanced policy's choice on a pooled day (``simulations.pooled``), as the engine makes it.

On a day any free agent may take any call, the event loop's passes hand ``router.balanced``
either one call and the free agents, or the first calls of each queue and the free agents.
``BalancedChoice`` makes the same choice from what it keeps per agent: per kind of call the
score parts the clock does not move (skill; region, with no time zone to weigh), the load
cost of a first slot, the performance sums (each outcome folded in as the loop's completion
folds it) and when the agent last freed (the idle clock). Costs, the ``top_k`` cut and ties
are ``router.balanced``'s; a batch goes to its ``place_batch``.

A lone call over many free agents is scored on numpy columns (``performance.score_array``
and ``match.idle_array``, the very floats of the scalar functions, added in the same order);
over a few, one agent at a time. ``tests/simulation/test_pooled.py`` checks both against the
event loop.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from router.balanced import SCORE_SCALE, Edge, place_batch, tie_key
from router.domain import Policy
from scoring import performance
from scoring.load import marginal_cost
from scoring.match import (
    idle_array,
    idle_share,
    max_total,
    region_affinity,
    skill_fit,
    weight_vector,
)
from simulations import outcomes
from simulations.model import SIM_EPOCH_MS, Scenario
from simulations.trace import TraceCall, as_call
from simulations.waiting import bucket_key
from simulations.workforce import SimAgent

COLUMNS_FROM = 24
"""Free agents from which a lone call is scored on numpy columns."""


def _kind(tc: TraceCall) -> tuple[object, ...]:
    """What tells calls apart to the engine, besides their id and arrival."""
    return (tc.skills, tc.preferred_skills, tc.language, tc.region, tc.team, tc.region_required)


class BalancedChoice:
    """The balanced policy's view of a pooled day: per kind of call and agent the parts of
    the score the clock does not move; per agent the load cost of a first slot, the
    performance sums and when it last freed; costs and ties as ``router.balanced`` computes
    them."""

    def __init__(
        self, scenario: Scenario, policy: Policy, trace: Sequence[TraceCall], seed: int
    ) -> None:
        self.policy, self.seed = policy, seed
        indexes: dict[tuple[object, ...], int] = {}
        self.kind_of = [indexes.setdefault(_kind(tc), len(indexes)) for tc in trace]
        """Per call: the index of its kind (``_kind``), in order of first appearance."""
        kinds = [trace[self.kind_of.index(n)] for n in range(len(indexes))]
        self.weights = weights = weight_vector(policy.weights)
        self.ceiling = max_total(policy.weights)
        channel = kinds[0].channel
        self.target_s = policy.expected_handle_s.get(channel, 0)
        self.half_life_s = policy.performance_half_life_s
        units = policy.units_for(channel)
        specs = scenario.agents
        self.ids = [spec.agent_id for spec in specs]
        calls = [as_call(tc) for tc in kinds]  # no time zone: see ``pooled.obstacle``
        self.bucket = [bucket_key(call) for call in calls]
        """Per kind: the loop's queue for it."""
        self.head = [
            [0.0 + skill_fit(call, spec.skills) * weights[0] for spec in specs] for call in calls
        ]
        """Per kind and agent: ``weighted_total``'s first addition (its sum starts at 0.0),
        the skill part."""
        # No time zone on one side: the region part is the regions' match alone.
        self.region_part = [
            [region_affinity(call.region, None, spec.region, None) * weights[2] for spec in specs]
            for call in calls
        ]
        self.previous_part = 0.0 * weights[3]  # no call names a previous agent
        self.load = [
            marginal_cost(
                0,
                units,
                1,
                occupancy=0.0,  # no occupancy window
                cap=policy.occupancy_cap_for(SimAgent(spec).profile),
                weight=policy.weights.load,
            )
            for spec in specs
        ]
        self.slot = [round(cost * SCORE_SCALE) for cost in self.load]
        n = len(specs)
        self.perf_sum, self.perf_weight, self.perf_updated = [0.0] * n, [0.0] * n, [0] * n
        """Per agent: its performance sums (``PerformanceStats``' fields)."""
        self.free_since = [SIM_EPOCH_MS] * len(specs)
        """When each agent last freed (its idle clock)."""
        self.columns = _Columns(self) if len(specs) >= COLUMNS_FROM else None
        """The same facts as numpy columns, kept where a lone call may meet enough free
        agents to use them."""

    def fold(self, k: int, call_id: str, quality: float, start: int, done: int) -> None:
        """Agent ``k`` finished ``call_id`` at ``done``: its outcome joins the performance
        sums, as the event loop's completion does."""
        u1, u2 = outcomes.call_uniforms(self.seed, call_id)
        value = performance.value_of(
            outcomes.draw_csat(quality, u2), u1 < quality, (done - start) / 1000, self.target_s
        )
        if value is not None:
            sums, weights = self.perf_sum, self.perf_weight
            sums[k], weights[k] = performance.fold_sums(
                sums[k], weights[k], self.perf_updated[k], value, done, half_life_s=self.half_life_s
            )
            self.perf_updated[k] = done
            if self.columns is not None:
                self.columns.folded(k, sums[k], weights[k], done)

    def freed(self, k: int, since: int) -> None:
        """Agent ``k`` is free and at its desk from ``since`` (its idle clock starts)."""
        self.free_since[k] = since
        if self.columns is not None:
            self.columns.since[k] = since

    def totals(self, kind: int, agents: Sequence[int], now: int) -> list[float]:
        """The soft score of each of ``agents`` (free) for calls of ``kind`` at ``now``:
        ``scoring.match.weighted_total``'s additions in its order, the parts the clock does
        not move (skill, region, no previous agent) weighted once."""
        policy, since, score_of = self.policy, self.free_since, performance.score_of
        sums, weights, updated = self.perf_sum, self.perf_weight, self.perf_updated
        head, region, previous = self.head[kind], self.region_part[kind], self.previous_part
        w_performance, w_idle = self.weights[1], self.weights[4]
        horizon_s = policy.idle_horizon_s
        return [
            head[k]
            + score_of(sums[k], weights[k], updated[k], now, policy) * w_performance
            + region[k]
            + previous
            + idle_share(since[k], now, horizon_s) * w_idle
            for k in agents
        ]

    def _cost(self, total: float) -> int:
        """A pair's integer cost (``router.balanced``)."""
        cost = round((self.ceiling - total) * SCORE_SCALE)
        return cost if cost > 0 else 0  # max(0, cost)

    def _ranked(
        self, agents: Sequence[int], totals: Sequence[float], keep: int | None
    ) -> list[int]:
        """Positions in ``agents`` by net value (score minus first-slot load), ties by id,
        the first ``keep``: a call's candidates."""
        load, ids = self.load, self.ids
        ranked = sorted(
            range(len(agents)), key=lambda x: (load[agents[x]] - totals[x], ids[agents[x]])
        )
        return ranked[:keep]

    def lone(self, call_id: str, kind: int, agents: Sequence[int], now: int) -> int:
        """The agent a lone call goes to: the cheapest candidate, ties by ``tie_key``."""
        if self.columns is not None and len(agents) >= COLUMNS_FROM:
            return self.columns.lone(call_id, kind, agents, now)
        totals = self.totals(kind, agents, now)
        top_k = self.policy.top_k
        kept: Sequence[int] = range(len(agents))
        if 0 < top_k < len(agents):
            kept = self._ranked(agents, totals, top_k)
        cost_of, slot = self._cost, self.slot
        least, cheapest = 0, list[int]()  # the least cost so far, and the candidates at it
        for x in kept:  # one pass, no dict of costs: this runs for half the calls of a day
            k = agents[x]
            cost = cost_of(totals[x]) + slot[k]
            if not cheapest or cost < least:
                least, cheapest = cost, [k]
            elif cost == least:
                cheapest.append(k)
        if len(cheapest) == 1:
            return cheapest[0]
        ids = self.ids
        return min(cheapest, key=lambda k: tie_key(call_id, ids[k]))

    def batch(
        self, calls: Sequence[tuple[str, int]], agents: Sequence[int], now: int
    ) -> list[int | None]:
        """The agents of ``calls`` (``(call id, kind)`` in queue order) placed together, with
        ``router.balanced.place_batch`` on the very candidates ``router.balanced`` builds
        (agents in id order); ``None`` for a call left waiting (more calls than agents)."""
        ids = self.ids
        agents = sorted(agents, key=lambda k: ids[k])
        top_k = self.policy.top_k
        keep = None if top_k <= 0 else max(top_k, len(calls))
        edges: dict[int, list[tuple[int, int]]] = {}  # kind -> (agent column, cost), best first
        for _, kind in calls:
            if kind not in edges:
                totals = self.totals(kind, agents, now)
                ranked = self._ranked(agents, totals, keep)
                edges[kind] = [(j, self._cost(totals[j])) for j in ranked]
        candidates: list[list[Edge]] = [
            [(c, j, cost) for j, cost in edges[kind]] for c, (_, kind) in enumerate(calls)
        ]
        slot_ints = [(self.slot[k],) for k in agents]  # one free slot each
        first = calls[0][0]
        placed = place_batch(
            candidates, top_k, slot_ints, prefer=lambda j: tie_key(first, ids[agents[j]])
        )
        return [None if j is None else agents[j] for j in placed]


class _Columns:
    """``BalancedChoice``'s per-agent facts as numpy columns, for a lone call over many free
    agents: the same floats, added in the same order, the same cut and ties."""

    def __init__(self, choice: BalancedChoice) -> None:
        self.choice = choice
        n = len(choice.ids)
        self.head = [np.array(head) for head in choice.head]
        self.region = [np.array(region) for region in choice.region_part]
        self.load = np.array(choice.load)
        self.slot = np.array(choice.slot, np.int64)
        rank = np.empty(n, np.int64)
        rank[sorted(range(n), key=lambda k: choice.ids[k])] = np.arange(n)
        self.rank = rank
        """Each agent's place in agent-id order."""
        self.sums = np.zeros(n)
        self.weights = np.zeros(n)
        self.updated = np.zeros(n, np.int64)
        self.since = np.full(n, SIM_EPOCH_MS, np.int64)

    def folded(self, k: int, weighted_sum: float, weight: float, updated_ms: int) -> None:
        """Agent ``k``'s performance sums are now these (``PerformanceStats``' fields)."""
        self.sums[k], self.weights[k], self.updated[k] = weighted_sum, weight, updated_ms

    def totals(self, kind: int, index: npt.NDArray[np.intp], now: int) -> npt.NDArray[np.float64]:
        """``BalancedChoice.totals`` of the agents at ``index``."""
        choice = self.choice
        policy, weights = choice.policy, choice.weights
        score = performance.score_array(
            self.sums[index], self.weights[index], self.updated[index], now, policy
        )
        idle = idle_array(
            np.zeros(len(index), np.int64), self.since[index], now, policy.idle_horizon_s
        )
        total: npt.NDArray[np.float64] = (
            self.head[kind][index]
            + score * weights[1]
            + self.region[kind][index]
            + choice.previous_part
            + idle * weights[4]
        )
        return total

    def lone(self, call_id: str, kind: int, agents: Sequence[int], now: int) -> int:
        """``BalancedChoice.lone`` on columns."""
        choice = self.choice
        index = np.array(agents, np.intp)
        total = self.totals(kind, index, now)
        top_k = choice.policy.top_k
        if 0 < top_k < len(index):
            # by net value (load minus score, ascending), ties by agent id: the first top_k
            kept = np.lexsort((self.rank[index], self.load[index] - total))[:top_k]
            index, total = index[kept], total[kept]
        scaled = np.rint((choice.ceiling - total) * SCORE_SCALE)
        cost = np.where(scaled > 0, scaled, 0).astype(np.int64) + self.slot[index]
        cheapest = index[cost == cost.min()].tolist()
        if len(cheapest) == 1:
            return int(cheapest[0])
        ids = choice.ids
        return int(min(cheapest, key=lambda k: tie_key(call_id, ids[k])))
