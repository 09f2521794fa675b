"""The working state of one decision, shared by every strategy.

A ``Board`` starts from the snapshot and records each placement the engine makes while it
works through a batch, so a later call in the same batch sees the capacity an earlier one
took. It lives only inside one ``engine.decide`` call. What outlives it is the index of the
snapshot's agents by id (never changed once built): the next decision's index is that one
with the agents that changed put in, as ``scoring.load.AgentTable`` patches its columns.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Iterable, Mapping, Sequence

from router.domain import (
    ActiveWork,
    AgentSnapshot,
    Call,
    Channel,
    Exclusion,
    Explanation,
    Snapshot,
    Strategy,
    frozen_map,
)
from router.eligibility import (
    ColumnScreening,
    Screening,
    absence_reason,
    capacity_reason,
    declined_reason,
    fit_reason,
    shift_reason,
    tally,
)
from router.widening import requirements
from scoring.load import few_changed, occupancy
from scoring.match import (
    AgentFacts,
    ScoreCard,
    agent_facts,
    part_values,
    skill_fit,
    utc_offset_hours,
    weight_vector,
    weighted_total,
)
from scoring.match import card as make_card

PLANNED_PREFIX = "planned:"
"""Assignment id of work placed earlier in the same batch (the store mints the real id)."""

DECIMALS = 4
"""Explanations round scores to this many decimals (stable, readable output)."""

_AGENT_ID = operator.attrgetter("profile.agent_id")


class _Index:
    """A snapshot's agents by id, in id order: built once, never changed (boards copy it
    before their first placement), so boards on other threads may share it."""

    __slots__ = ("agents", "by_id", "ids")

    def __init__(
        self, agents: Sequence[AgentSnapshot], ids: list[str], by_id: dict[str, AgentSnapshot]
    ) -> None:
        self.agents = agents
        """The agents as the snapshot lists them."""
        self.ids = ids
        """Their ids, in that order."""
        self.by_id = by_id
        """Agent id -> agent, in id order."""


_LAST_INDEX: list[_Index | None] = [None]
"""The index built last. A store's next snapshot lists the same agents in the same order,
most of them the very same objects (the agent cache keeps an unchanged agent's snapshot), so
its index is this one with the changed agents put in."""


def _index(agents: Sequence[AgentSnapshot]) -> _Index:
    """``agents`` by id, in id order: the last index with the agents that changed put in,
    when the same ids stand at the same places and few changed; else built anew."""
    last = _LAST_INDEX[0]
    changed = None if last is None else few_changed(agents, last.agents)
    if last is not None and changed is not None and len(last.by_id) == len(last.agents):
        ids = last.ids
        if all(agents[i].profile.agent_id == ids[i] for i in changed):
            by_id = last.by_id.copy()
            for i in changed:
                by_id[ids[i]] = agents[i]
            index = _LAST_INDEX[0] = _Index(agents, ids, by_id)
            return index
    ids = list(map(_AGENT_ID, agents))
    if ids == sorted(ids):  # as the stores read them: no second sort
        by_id = dict(zip(ids, agents, strict=True))
    else:
        ordered = sorted(agents, key=_AGENT_ID)
        by_id = dict(zip(map(_AGENT_ID, ordered), ordered, strict=True))
    index = _LAST_INDEX[0] = _Index(agents, ids, by_id)
    return index


class Board:
    """Agents as the snapshot and the placements made so far leave them.

    Everything derived is computed lazily and cached for the length of the decision, keyed by
    what it depends on: presence per agent, occupancy and score facts per agent (work placed
    during the batch starts now, so it adds no occupancy), team, region, skill and language
    fit per (widened requirements, region, language), the shift rule per expected handle
    time, capacity per channel (forgotten for an agent when it is given work), skill fit per
    (required, preferred), UTC offset per zone. A batch of calls with the same needs
    therefore costs little more than one call.
    """

    __slots__ = (
        "_capacity",
        "_facts",
        "_fit",
        "_occupancy",
        "_offsets",
        "_placed",
        "_placements",
        "_presence",
        "_shared",
        "_shift",
        "_skill",
        "_weights",
        "agents",
        "now_ms",
        "policy",
        "unindexed",
    )

    def __init__(self, snapshot: Snapshot) -> None:
        """Index the snapshot's agents by id (sorted, so ties break by agent id)."""
        self.now_ms = snapshot.now_ms
        self.policy = snapshot.policy
        self.unindexed = snapshot.unindexed_missing_skill
        self.agents: dict[str, AgentSnapshot] = _index(snapshot.agents).by_id
        """Agent id -> the agent with this board's placements, in id order (the shared
        index until the first placement, which copies it)."""
        self._shared = True
        self._weights = weight_vector(self.policy.weights)
        self._presence: dict[str, Exclusion | None] = {}
        self._occupancy: dict[str, float] = {}
        self._facts: dict[str, AgentFacts] = {}
        self._fit: dict[tuple[object, ...], dict[str, Exclusion | None]] = {}
        self._capacity: dict[Channel, dict[str, Exclusion | None]] = {}
        self._shift: dict[int, dict[str, Exclusion | None]] = {}
        self._skill: dict[tuple[object, ...], dict[str, float]] = {}
        self._offsets: dict[str, float | None] = {}
        self._placed: dict[str, int] = {}
        self._placements = 0

    def placed_rank(self, agent_id: str) -> int:
        """0 for an agent given nothing in this batch, else 1 + the index of its latest placement.

        Placements in one batch share the timestamp "now"; this orders them so round-robin
        and longest-idle keep rotating through agents within a batch.
        """
        return self._placed.get(agent_id, 0)

    def occupancy(self, agent_id: str) -> float:
        """Rolling occupancy of the agent at now."""
        if agent_id not in self._occupancy:
            agent = self.agents[agent_id]
            self._occupancy[agent_id] = occupancy(
                agent, self.now_ms, self.policy.occupancy_window_s
            )
        return self._occupancy[agent_id]

    def screen(self, call: Call) -> Screening:
        """Hard-rule screening of every agent for ``call`` in the board's current state.

        Same rules, order and result as ``router.eligibility.screen``, with cached parts.
        """
        widened = requirements(call, self.now_ms, self.policy)
        fit_key = (widened, call.region_required, call.region.lower(), call.language.lower())
        fit = self._fit.setdefault(fit_key, {})
        handle_s = self.policy.reserved_s_for(call)
        shift = self._shift.setdefault(handle_s, {})
        room = self._capacity.setdefault(call.channel, {})
        eligible: list[AgentSnapshot] = []
        reasons: list[Exclusion] = []
        for agent_id, agent in self.agents.items():
            if agent_id not in self._presence:
                self._presence[agent_id] = absence_reason(agent, self.now_ms, self.policy)
            reason = self._presence[agent_id] or declined_reason(call, agent)
            if reason is None:
                if agent_id not in fit:
                    fit[agent_id] = fit_reason(call, agent, widened)
                reason = fit[agent_id]
            if reason is None:
                if agent_id not in shift:
                    shift[agent_id] = shift_reason(agent, self.now_ms, handle_s)
                reason = shift[agent_id]
            if reason is None:
                if agent_id not in room:
                    occ = self.occupancy(agent_id)
                    room[agent_id] = capacity_reason(call, agent, self.now_ms, self.policy, occ)
                reason = room[agent_id]
            if reason is None:
                eligible.append(agent)
            else:
                reasons.append(reason)
        return tally(eligible, reasons, self.unindexed, widening_step=widened.step)

    def values(self, call: Call, agent_id: str) -> tuple[float, ...]:
        """Unweighted soft-score parts of ``agent_id`` for ``call`` (``PART_NAMES`` order)."""
        if agent_id not in self._facts:
            agent = self.agents[agent_id]
            offset = self.utc_offset(agent.profile.timezone)
            self._facts[agent_id] = agent_facts(agent, self.now_ms, self.policy, offset)
        skills = self._skill.setdefault((call.required_skills, call.preferred_skills), {})
        facts = self._facts[agent_id]
        if agent_id not in skills:
            skills[agent_id] = skill_fit(call, facts.skills)
        return part_values(call, facts, self.utc_offset(call.timezone), skills[agent_id])

    def utc_offset(self, zone: str) -> float | None:
        """UTC offset of ``zone`` at now (looked up once per zone per decision)."""
        if zone not in self._offsets:
            self._offsets[zone] = utc_offset_hours(zone, self.now_ms)
        return self._offsets[zone]

    def total(self, call: Call, agent_id: str) -> float:
        """Soft score of ``agent_id`` for ``call`` (equal to ``card(...).total``)."""
        return self.total_of(self.values(call, agent_id))

    def total_of(self, values: tuple[float, ...]) -> float:
        """Weighted total of part values from ``values``."""
        return weighted_total(values, self._weights)

    def card(self, call: Call, agent_id: str) -> ScoreCard:
        """Soft score card of ``agent_id`` for ``call``, with named parts."""
        return make_card(self.values(call, agent_id), self._weights)

    def place(self, call: Call, agent_id: str) -> None:
        """Record that ``agent_id`` takes ``call`` now (load, units and both routing clocks)."""
        if self._shared:
            self.agents, self._shared = dict(self.agents), False
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
        for room in self._capacity.values():
            room.pop(agent_id, None)
        if agent_id in self._facts:
            self._facts[agent_id] = dataclasses.replace(self._facts[agent_id], idle=0.0)
        self._placements += 1
        self._placed[agent_id] = self._placements


def explain(
    strategy: Strategy,
    screening: Screening | ColumnScreening,
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
        widening_step=screening.widening_step,
    )
