"""The balanced policy's choice on a pooled day (``simulations.pooled``), as the engine makes it.

On a day any free agent may take any call, the event loop's passes hand ``router.balanced``
either one call and the free agents, or the first calls of each queue and the free agents.
``BalancedChoice`` makes the same choice from what it keeps per agent: per kind of call the
score parts the clock does not move (skill; region, with no time zone to weigh), the load
cost of a first slot, the performance sums (each outcome folded in as the loop's completion
folds it) and when the agent last freed (the idle clock). Costs, the ``top_k`` cut (of a
batch: a lone call is chosen among all its agents) and ties are ``router.balanced``'s; a
batch goes to its ``place_batch``.

A lone call over many free agents is first screened on numpy columns: bounds on each free
agent's net value (the score moves monotonically from its value at the agent's last outcome
towards the prior as it decays, by at most a known amount per agent) leave the few agents
that can be the answer, scored one at a time with the scalar functions. When no bound
applies, every free agent is scored on columns
(``performance.score_array`` and ``match.idle_array``, the very floats of the scalar
functions, added in the same order). Over a few free agents, one agent at a time.
``tests/simulation/test_pooled.py`` checks every path against the event loop, and
``tests/simulation/test_pool_choice.py`` the screen against the scalar choice.
"""

from __future__ import annotations

import math
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
_SLACK = 1e-9
"""Room left around the bounds of ``_Columns.screen`` for the floats' rounding (errors of
about 1e-15 on totals of a few score points)."""
_NEVER = 2**62
"""A time after any run's end: an agent with no outcome yet."""


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
        return self.lone_scalar(call_id, kind, agents, now)

    def lone_scalar(self, call_id: str, kind: int, agents: Sequence[int], now: int) -> int:
        """``lone`` one agent at a time (the yardstick of the columns)."""
        totals = self.totals(kind, agents, now)
        cost_of, slot = self._cost, self.slot
        least, cheapest = 0, list[int]()  # the least cost so far, and the candidates at it
        for x in range(len(agents)):  # one pass, no dict of costs: half the calls of a day
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
    agents: the same floats, added in the same order, the same ties."""

    def __init__(self, choice: BalancedChoice) -> None:
        self.choice = choice
        n = len(choice.ids)
        self.head = [np.array(head) for head in choice.head]
        self.region = [np.array(region) for region in choice.region_part]
        self.load = np.array(choice.load)
        self.slot = np.array(choice.slot, np.int64)
        self.sums = np.zeros(n)
        self.weights = np.zeros(n)
        self.updated = np.zeros(n, np.int64)
        self.since = np.full(n, SIM_EPOCH_MS, np.int64)
        policy, weights = choice.policy, choice.weights
        finite = all(math.isfinite(w) and w >= 0.0 for w in weights)
        heads = zip(self.head, self.region, strict=True)
        most = max(float((head + region).max()) for head, region in heads)
        self.screens = finite and most + choice.previous_part + weights[1] + weights[4] <= (
            choice.ceiling + 0.25 / SCORE_SCALE
        )
        """Whether ``lone`` may screen on bounds (``screen``): weights finite and not
        negative, and no total above the ceiling, so each cost is within 1 of
        ``SCORE_SCALE * (ceiling + net)`` (no cost clamped at 0 far from it)."""
        self.prior = performance.score_of(0.0, 0.0, 0, SIM_EPOCH_MS, policy)
        """The score of an agent with no outcomes."""
        self.fixed = [
            self.load - (head + region + choice.previous_part)
            for head, region in zip(self.head, self.region, strict=True)
        ]
        """Per kind and agent: load cost minus the parts of the total the clock does not move."""
        self.mid = [fixed - self.prior * weights[1] for fixed in self.fixed]
        """Per kind and agent: ``fixed`` minus the performance part at the last fold."""
        self.swing = np.zeros(n)
        """Per agent: how far the performance part may have moved since the last fold, per
        unit of ``(1 - f) / f`` (f the decay factor since then)."""
        self.folded_at = np.full(n, _NEVER, np.int64)
        """Per agent: when its sums last changed (``_NEVER``: no outcome yet)."""
        horizon_s = policy.idle_horizon_s
        self.idle_rate = weights[4] / 1000 / horizon_s if horizon_s > 0 else None
        """Idle part per millisecond free (``None``: the whole idle weight at once)."""

    def folded(self, k: int, weighted_sum: float, weight: float, updated_ms: int) -> None:
        """Agent ``k``'s performance sums are now these (``PerformanceStats``' fields)."""
        self.sums[k], self.weights[k], self.updated[k] = weighted_sum, weight, updated_ms
        policy, w_performance = self.choice.policy, self.choice.weights[1]
        # The score is clamp((P * b + S * f) / (b + W * f)): P the prior, b its weight, S and
        # W the sums, f the decay factor since the fold (1 at the fold). Between f = 1 and
        # any f in (0, 1] it moves by (1 - f) * b * |S - P * W| / ((b + W) * (b + W * f)),
        # at most (1 - f) / f * b * |S - P * W| / (b + W) ** 2 (the clamp moves it no more).
        fresh = performance.score_of(weighted_sum, weight, updated_ms, updated_ms, policy)
        b = policy.performance_prior_weight if policy.performance_prior_weight > 0.0 else 0.0
        spread = b * abs(weighted_sum - policy.performance_prior * weight)
        self.swing[k] = spread / (b + weight) ** 2 * w_performance if b + weight > 0 else 0.0
        self.folded_at[k] = updated_ms
        for fixed, mid in zip(self.fixed, self.mid, strict=True):
            mid[k] = fixed[k] - fresh * w_performance

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
        """``BalancedChoice.lone`` on columns: bounds on each free agent's net value first
        (``screen``), then the exact scores of the agents the bounds cannot rule out."""
        index = np.fromiter(agents, np.intp, len(agents))
        near, rest = self.screen(kind, index, now)
        if near is not None:
            return self.choice.lone_scalar(call_id, kind, near, now)
        return self.exact(call_id, kind, rest, now)

    def screen(
        self, kind: int, index: npt.NDArray[np.intp], now: int
    ) -> tuple[list[int] | None, npt.NDArray[np.intp]]:
        """Which of the free agents at ``index`` can be the lone call's agent, by bounds on
        their net values (load cost minus total), ``_SLACK`` wider than the floats need:

        - each integer cost is within 1 of ``SCORE_SCALE * (ceiling + net)`` (two roundings
          of half a unit, no total above the ceiling), so the cheapest agent's net value is
          at most ``2 / SCORE_SCALE`` above the least upper bound: the agents whose lower
          bound is that close (``near``) hold every possible answer;
        - a lone call is chosen among all its agents (no ``top_k`` cut), so ``near``'s
          cheapest agent (ties by ``tie_key``) is the answer.

        ``near`` is ``None`` also when no bound applies: weights that may not keep totals
        within [0, ceiling], or a decay that may have halved a score's weight since a fold
        (``rest`` is then every free agent).
        """
        choice = self.choice
        horizon_ms = choice.half_life_s * 1000
        oldest = int(self.folded_at[index].min())
        if not self.screens or (horizon_ms > 0 and now - oldest > horizon_ms):
            return None, index
        shrunk = 1.0 if horizon_ms <= 0 or oldest >= now else 2.0 ** ((now - oldest) / horizon_ms)
        # (1 - f) / f for the oldest fold, f = 2 ** -(age / half-life): 1 / f - 1
        spread = self.swing[index] * (shrunk - 1.0) + _SLACK
        mid = self.mid[kind][index]
        if self.idle_rate is None:
            mid = mid - choice.weights[4]
        else:
            idle = np.maximum(now - self.since[index], 0) * self.idle_rate
            mid = mid - np.minimum(idle, choice.weights[4])
        low, high = mid - spread, mid + spread
        close = low <= high.min() + 2 / SCORE_SCALE
        return index[close].tolist(), index

    def exact(self, call_id: str, kind: int, index: npt.NDArray[np.intp], now: int) -> int:
        """``BalancedChoice.lone`` over the agents at ``index``, on exact columns."""
        choice = self.choice
        total = self.totals(kind, index, now)
        scaled = np.rint((choice.ceiling - total) * SCORE_SCALE)
        cost = np.where(scaled > 0, scaled, 0).astype(np.int64) + self.slot[index]
        cheapest = index[cost == cost.min()].tolist()
        if len(cheapest) == 1:
            return int(cheapest[0])
        ids = choice.ids
        return int(min(cheapest, key=lambda k: tie_key(call_id, ids[k])))
