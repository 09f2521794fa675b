"""The working state of one decision, shared by every strategy.

A ``Board`` starts from the snapshot and records each placement the engine makes while it
works through a batch, so a later call in the same batch sees the capacity an earlier one
took. It lives only inside one ``engine.decide`` call: nothing here outlives the decision.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

from router.domain import (
    ActiveWork,
    AgentSnapshot,
    Call,
    Explanation,
    Snapshot,
    Strategy,
    frozen_map,
)
from router.eligibility import Screening, screen
from scoring.load import occupancy
from scoring.match import AgentFacts, ScoreCard, agent_facts, score_card, utc_offset_hours

PLANNED_PREFIX = "planned:"
"""Assignment id of work placed earlier in the same batch (the store mints the real id)."""

DECIMALS = 4
"""Explanations round scores to this many decimals (stable, readable output)."""


class Board:
    """Agents as the snapshot and the placements made so far leave them."""

    __slots__ = ("_facts", "_occupancy", "_offsets", "agents", "now_ms", "policy", "unindexed")

    def __init__(self, snapshot: Snapshot) -> None:
        """Index the snapshot's agents by id (sorted, so ties break by agent id)."""
        self.now_ms = snapshot.now_ms
        self.policy = snapshot.policy
        self.unindexed = snapshot.unindexed_missing_skill
        ordered = sorted(snapshot.agents, key=lambda agent: agent.agent_id)
        self.agents: dict[str, AgentSnapshot] = {agent.agent_id: agent for agent in ordered}
        # Occupancy and facts are per agent, not per call: compute them once per decision.
        # Work placed during the batch starts now, so it adds no occupancy.
        window = self.policy.occupancy_window_s
        self._occupancy = {aid: occupancy(a, self.now_ms, window) for aid, a in self.agents.items()}
        self._facts = {
            aid: agent_facts(a, self.now_ms, self.policy) for aid, a in self.agents.items()
        }
        self._offsets: dict[str, float | None] = {}

    def occupancy(self, agent_id: str) -> float:
        """Rolling occupancy of the agent at now."""
        return self._occupancy[agent_id]

    def screen(self, call: Call) -> Screening:
        """Hard-rule screening of every agent for ``call`` in the board's current state."""
        return screen(
            call,
            self.agents.values(),
            self.now_ms,
            self.policy,
            occupancies=self._occupancy,
            unindexed_missing_skill=self.unindexed,
        )

    def card(self, call: Call, agent_id: str) -> ScoreCard:
        """Soft score of ``agent_id`` for ``call``."""
        zone = call.timezone
        if zone not in self._offsets:
            self._offsets[zone] = utc_offset_hours(zone, self.now_ms)
        facts: AgentFacts = self._facts[agent_id]
        return score_card(call, facts, self.policy.weights, self._offsets[zone])

    def place(self, call: Call, agent_id: str) -> None:
        """Record that ``agent_id`` takes ``call`` now (load, units and both routing clocks)."""
        agent = self.agents[agent_id]
        work = ActiveWork(
            assignment_id=PLANNED_PREFIX + call.call_id,
            channel=call.channel,
            units=self.policy.units_for(call.channel),
            start_ms=self.now_ms,
        )
        # Both clocks move so longest-idle and round-robin pass to the next agent in a batch.
        self.agents[agent_id] = dataclasses.replace(
            agent,
            active=(*agent.active, work),
            last_free_ms=self.now_ms,
            last_assigned_ms=self.now_ms,
        )
        self._facts[agent_id] = dataclasses.replace(self._facts[agent_id], idle=0.0)


def explain(
    strategy: Strategy,
    screening: Screening,
    chosen: str | None,
    parts: Mapping[str, float],
    values: Iterable[tuple[str, float]],
) -> Explanation:
    """Build the explanation of one placement.

    ``parts`` are the chosen agent's weighted score parts (ignored when ``chosen`` is None);
    ``values`` pairs every eligible agent with the score the runner-up is ranked by, on the
    same scale as the sum of ``parts``.
    """
    runner_id, runner_score = "", 0.0
    for agent_id, value in values:
        if agent_id == chosen:
            continue
        better = value > runner_score or (value == runner_score and agent_id < runner_id)
        if not runner_id or better:
            runner_id, runner_score = agent_id, value
    rounded = {name: round(value, DECIMALS) for name, value in parts.items()}
    if chosen is None:
        rounded = {}
    return Explanation(
        strategy=strategy,
        candidates=len(screening.eligible),
        excluded=screening.excluded,
        score_parts=frozen_map(rounded),
        score=round(sum(parts.values()), DECIMALS) if chosen is not None else 0.0,
        runner_up_agent_id=runner_id,
        runner_up_score=round(runner_score, DECIMALS),
    )
