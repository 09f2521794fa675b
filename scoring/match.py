"""Soft score of an agent for a call: how good a match this is, apart from load.

Every part is a value in [0, 1]; the score card multiplies each by its weight from
``Policy.weights`` and sums them, so ``total`` lies in ``[0, max_total(weights)]``::

    skill           required = mean(level / 10) over call.required_skills
                    preferred = sum(level / 10 for preferred skills the agent has)
                                / len(call.preferred_skills)
                    skill = 0.75 * required + 0.25 * preferred   (both present)
                          = the one present                       (one present)
                          = 1                                      (nothing asked: all fit)
    performance     scoring.performance.score(agent.performance, now, policy)
    region          1 when call.region == profile.region (case-insensitive, non-empty);
                    else 0.5 * max(0, 1 - |utc_offset(call.tz) - utc_offset(agent.tz)| / 12)
                    when both are valid IANA zones (offsets in hours at now);
                    else 0 (unknown or invalid zone names never raise)
    previous_agent  1 when call.preferred_agent_id == agent_id, else 0
    idle            min(1, idle_s / policy.idle_horizon_s), where
                    idle_s = now - max(last_free_ms, end of the latest finished span,
                                       end of the latest scheduled absence over by now)
                    for an agent holding no work, and 0 while the agent holds work

Load is not a match part: it is a cost in the solver (``scoring.load``).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import numpy.typing as npt

from router.domain import (
    SKILL_LEVEL_MAX,
    AgentSnapshot,
    Call,
    Policy,
    Weights,
    frozen_map,
)
from scoring import performance
from scoring.load import (
    F_WEIGHT,
    F_WEIGHTED_SUM,
    I_ACTIVE,
    I_REGION,
    I_UPDATED,
    I_ZONE,
    AgentTable,
)

SKILL = "skill"
PERFORMANCE = "performance"
REGION = "region"
PREVIOUS_AGENT = "previous_agent"
IDLE = "idle"
PART_NAMES = (SKILL, PERFORMANCE, REGION, PREVIOUS_AGENT, IDLE)
"""Names of the score parts, in the order explanations list them."""

# Required skills are what the call is about; preferred ones only refine the choice.
REQUIRED_SHARE = 0.75
PREFERRED_SHARE = 0.25

TIMEZONE_AFFINITY = 0.5
"""Region value of an agent in another region at the same UTC offset."""
OFFSET_SPAN_H = 12.0
"""Offset difference (hours) at which time-zone affinity reaches 0."""


@dataclass(frozen=True, slots=True)
class ScoreCard:
    """An agent's soft score for one call."""

    values: Mapping[str, float]
    """Part name -> unweighted value in [0, 1]."""
    parts: Mapping[str, float]
    """Part name -> weighted contribution (value * weight)."""
    total: float
    """Sum of ``parts``."""


@dataclass(frozen=True, slots=True)
class AgentFacts:
    """The call-independent inputs of an agent's score, computed once per decision."""

    agent_id: str
    skills: Mapping[str, int]
    region: str
    """Lower-case region, "" when unknown."""
    utc_offset_h: float | None
    """UTC offset of the agent's time zone at now, ``None`` when unknown or invalid."""
    performance: float
    idle: float


def add_up(values: Iterable[float]) -> float:
    """Sum left to right with plain float additions.

    What ``sum`` does on Python 3.11; spelled out because Python 3.12 made ``sum`` of floats
    compensated, and the vectorised scoring below (one array addition per term) must give the
    very same floats on every Python version.
    """
    total = 0.0
    for value in values:
        total += value
    return total


def utc_offset_hours(zone: str, now_ms: int) -> float | None:
    """UTC offset of IANA ``zone`` at ``now_ms`` in hours; ``None`` for an empty or bad name."""
    if not zone:
        return None
    try:
        tz = ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        # Names come from admins and callers; a typo must cost affinity, not the request.
        return None
    offset = datetime.fromtimestamp(now_ms / 1000, tz=UTC).astimezone(tz).utcoffset()
    return None if offset is None else offset.total_seconds() / 3600


def skill_fit(call: Call, skills: Mapping[str, int]) -> float:
    """Skill part in [0, 1] (see the module docstring)."""
    required = None
    if call.required_skills:
        levels = [skills.get(req.skill, 0) for req in call.required_skills]
        required = add_up(_level(level) for level in levels) / len(levels)
    preferred = None
    if call.preferred_skills:
        preferred = add_up(_level(skills.get(name, 0)) for name in call.preferred_skills) / len(
            call.preferred_skills
        )
    if required is not None and preferred is not None:
        return REQUIRED_SHARE * required + PREFERRED_SHARE * preferred
    if required is not None:
        return required
    if preferred is not None:
        return preferred
    return 1.0


def region_affinity(
    call_region: str, call_offset_h: float | None, agent_region: str, agent_offset_h: float | None
) -> float:
    """Region part in [0, 1]: same region 1, else a time-zone closeness up to 0.5, else 0."""
    if call_region and call_region.lower() == agent_region.lower():
        return 1.0
    if call_offset_h is None or agent_offset_h is None:
        return 0.0
    gap = abs(call_offset_h - agent_offset_h)
    return TIMEZONE_AFFINITY * max(0.0, 1.0 - gap / OFFSET_SPAN_H)


def free_since(agent: AgentSnapshot, now_ms: int) -> int:
    """When ``agent``, holding nothing, last became free as of ``now_ms``: the latest of
    ``last_free_ms``, the end of its latest finished span and the end of its latest
    scheduled absence over by then (time away is not idle time)."""
    return max(
        [
            agent.last_free_ms,
            agent.profile.back_from_absence_ms(now_ms),
            *(span.end_ms for span in agent.recent),
        ]
    )


def idle_value(agent: AgentSnapshot, now_ms: int, horizon_s: int) -> float:
    """Fairness part in [0, 1]: how long the agent has been without work, saturating."""
    if agent.active:
        return 0.0
    return idle_share(free_since(agent, now_ms), now_ms, horizon_s)


def idle_share(free_since_ms: int, now_ms: int, horizon_s: int) -> float:
    """``idle_value`` of an agent holding no work, free since ``free_since_ms``."""
    gap = now_ms - free_since_ms
    if horizon_s <= 0:
        return 1.0
    share = (gap if gap > 0 else 0) / 1000 / horizon_s  # max(0, gap) / 1000 / horizon_s
    return share if share < 1.0 else 1.0  # min(1.0, share), without the calls


def idle_array(
    active: npt.NDArray[np.int64], free_since: npt.NDArray[np.int64], now_ms: int, horizon_s: int
) -> npt.NDArray[np.float64]:
    """``idle_value`` for many agents: ``active`` items held and ``free_since``
    (``AgentTable.free_since``) per agent; the same floats."""
    gap = now_ms - free_since
    # max(0, gap) / 1000: an exact integer, then one correctly rounded division.
    idle_s = np.where(gap > 0, gap, 0) / 1000
    if horizon_s <= 0:
        values = np.ones(len(gap))
    else:
        share = idle_s / horizon_s
        values = np.where(share < 1.0, share, 1.0)  # min(1.0, share)
    return np.where(active > 0, 0.0, values)


def agent_facts(
    agent: AgentSnapshot, now_ms: int, policy: Policy, utc_offset_h: float | None
) -> AgentFacts:
    """Collect the call-independent parts of ``agent``'s score at ``now_ms``.

    ``utc_offset_h`` is ``utc_offset_hours(agent.profile.timezone, now_ms)``, passed in so a
    decision looks each zone up once however many agents share it.
    """
    profile = agent.profile
    return AgentFacts(
        agent_id=profile.agent_id,
        skills=profile.skills,
        region=profile.region.lower(),
        utc_offset_h=utc_offset_h,
        performance=performance.score(agent.performance, now_ms, policy),
        idle=idle_value(agent, now_ms, policy.idle_horizon_s),
    )


def part_values(
    call: Call, facts: AgentFacts, call_offset_h: float | None, skill: float | None = None
) -> tuple[float, ...]:
    """Unweighted part values in ``PART_NAMES`` order.

    ``skill`` is the agent's ``skill_fit`` for the call when the caller has it cached (calls in
    a batch often share their skill needs); otherwise it is computed here.
    """
    return (
        skill_fit(call, facts.skills) if skill is None else skill,
        facts.performance,
        region_affinity(call.region, call_offset_h, facts.region, facts.utc_offset_h),
        1.0 if call.preferred_agent_id == facts.agent_id else 0.0,
        facts.idle,
    )


def weight_vector(weights: Weights) -> tuple[float, ...]:
    """The weights in ``PART_NAMES`` order."""
    return (
        weights.skill,
        weights.performance,
        weights.region,
        weights.previous_agent,
        weights.idle,
    )


def weighted_total(values: tuple[float, ...], weights: tuple[float, ...]) -> float:
    """Sum of value * weight in ``PART_NAMES`` order (the same float ``card`` reports)."""
    return add_up(value * weight for value, weight in zip(values, weights, strict=True))


def card(values: tuple[float, ...], weights: tuple[float, ...]) -> ScoreCard:
    """The score card of ``part_values`` under ``weight_vector`` weights."""
    parts = {
        name: value * weight
        for name, value, weight in zip(PART_NAMES, values, weights, strict=True)
    }
    return ScoreCard(
        values=frozen_map(dict(zip(PART_NAMES, values, strict=True))),
        parts=frozen_map(parts),
        total=weighted_total(values, weights),
    )


def score_card(
    call: Call, facts: AgentFacts, weights: Weights, call_offset_h: float | None
) -> ScoreCard:
    """Score ``facts``' agent for ``call``; ``call_offset_h`` is ``call.timezone``'s offset."""
    return card(part_values(call, facts, call_offset_h), weight_vector(weights))


def score(call: Call, agent: AgentSnapshot, now_ms: int, policy: Policy) -> ScoreCard:
    """Score ``agent`` for ``call`` at ``now_ms`` (convenience over ``score_card``)."""
    facts = agent_facts(agent, now_ms, policy, utc_offset_hours(agent.profile.timezone, now_ms))
    return score_card(call, facts, policy.weights, utc_offset_hours(call.timezone, now_ms))


def max_total(weights: Weights) -> float:
    """The highest total a score card can reach under ``weights``."""
    return sum(weight_vector(weights))


def _level(level: int) -> float:
    """A skill level as a fraction of the top level."""
    return min(1.0, max(0.0, level / SKILL_LEVEL_MAX))


# --- Vectorised scoring ---------------------------------------------------------------------

Floats = npt.NDArray[np.float64]
Levels = Callable[[str], npt.NDArray[np.int64]]
"""Skill name -> level per agent (0 without the skill), for the agents being scored."""


def _level_array(levels: npt.NDArray[np.int64]) -> Floats:
    """``_level`` elementwise."""
    return np.minimum(1.0, np.maximum(0.0, levels / SKILL_LEVEL_MAX))


def skill_fit_array(call: Call, fractions: Callable[[str], Floats], size: int) -> Floats:
    """``skill_fit`` for many agents at once (same floats, operation for operation);
    ``fractions(name)`` is ``_level_array`` of the agents' levels of skill ``name``."""
    required = None
    if call.required_skills:
        total = np.zeros(size)
        for req in call.required_skills:
            total = total + fractions(req.skill)
        required = total / len(call.required_skills)
    preferred = None
    if call.preferred_skills:
        total = np.zeros(size)
        for name in call.preferred_skills:
            total = total + fractions(name)
        preferred = total / len(call.preferred_skills)
    if required is not None and preferred is not None:
        return REQUIRED_SHARE * required + PREFERRED_SHARE * preferred
    if required is not None:
        return required
    if preferred is not None:
        return preferred
    return np.ones(size)


class ScoreColumns:
    """Call-independent score facts (``AgentFacts``) of a decision's agents as numpy columns.

    Performance and idle are computed for every agent at once from ``scoring.load.AgentTable``
    (``performance.score_array`` and ``idle_array``, the very floats of the scalar functions),
    UTC offsets once per zone; ``totals`` then scores many agents for one call with array
    operations giving exactly the floats ``weighted_total(part_values(...))`` gives (tests
    compare them bit for bit). ``placed`` records that an agent took work during the decision
    (its idle part drops to 0).
    """

    __slots__ = (
        "_filled",
        "_fractions",
        "_heads",
        "_idle",
        "_idle_weighted",
        "_index",
        "_offset",
        "_offsets",
        "_performance",
        "_regions",
        "_weights",
        "agents",
        "ids",
        "now_ms",
        "policy",
        "table",
    )

    def __init__(
        self,
        agents: Sequence[AgentSnapshot],
        now_ms: int,
        policy: Policy,
        *,
        table: AgentTable | None = None,
    ) -> None:
        """Columns for ``agents`` (indexes as in that sequence); ``table`` is
        ``scoring.load.AgentTable(agents)`` when the caller already has it."""
        self.agents = agents
        self.now_ms = now_ms
        self.policy = policy
        self.table = AgentTable(agents) if table is None else table
        n = len(agents)
        self.ids = self.table.ids
        self._weights = weight_vector(policy.weights)
        self._filled = False
        self._performance = np.zeros(n)
        self._idle = np.zeros(n)
        self._idle_weighted = np.zeros(n)
        self._heads: dict[tuple[tuple[str, ...], tuple[str, ...]], Floats] = {}
        self._offset = np.zeros(n)
        self._offsets: dict[str, float | None] = {}
        self._index: dict[str, int] | None = None
        self._fractions: dict[str, Floats] = {}
        self._regions: dict[tuple[str, str], Floats] = {}

    def utc_offset(self, zone: str) -> float | None:
        """``utc_offset_hours`` of ``zone`` at now, looked up once per zone."""
        if zone not in self._offsets:
            self._offsets[zone] = utc_offset_hours(zone, self.now_ms)
        return self._offsets[zone]

    def _fill(self) -> None:
        """Compute the facts of every agent (once per decision)."""
        if self._filled:
            return
        self._filled = True
        table, policy, now_ms = self.table, self.policy, self.now_ms
        ints, floats = table.ints, table.floats
        self._performance = performance.score_array(
            floats[:, F_WEIGHTED_SUM], floats[:, F_WEIGHT], ints[:, I_UPDATED], now_ms, policy
        )
        self._idle = idle_array(
            ints[:, I_ACTIVE], table.free_since(now_ms), now_ms, policy.idle_horizon_s
        )
        self._idle_weighted = self._idle * self._weights[4]
        zones = ints[:, I_ZONE]
        if len(zones):
            names = table.memo.zones.values
            present = np.bincount(zones)  # codes are small and never negative
            by_code = np.full(len(present), np.nan)
            for code in np.flatnonzero(present).tolist():
                offset = self.utc_offset(names[code])
                by_code[code] = np.nan if offset is None else offset
            self._offset = by_code[zones]

    def placed(self, index: int) -> None:
        """The agent at ``index`` took work now: its idle part is 0 from here on."""
        self._fill()
        self._idle[index] = 0.0
        self._idle_weighted[index] = 0.0 * self._weights[4]

    def _region_weighted(self, call: Call) -> Floats:
        """``region_affinity * weights.region`` of every agent for ``call`` (once per call
        timezone and region)."""
        key = (call.timezone, call.region)
        if key not in self._regions:
            self._regions[key] = self._region_column(call) * self._weights[2]
        return self._regions[key]

    def _head(self, call: Call, levels: Levels) -> Floats:
        """``skill * weights.skill + performance * weights.performance`` of every agent for
        ``call``: the first two terms of the total, once per set of required and preferred
        skills (the very floats the terms give on any subset of the agents)."""
        key = (tuple(req.skill for req in call.required_skills), tuple(call.preferred_skills))
        if key not in self._heads:

            def fractions(name: str) -> Floats:
                if name not in self._fractions:
                    self._fractions[name] = _level_array(levels(name))
                return self._fractions[name]

            skill = skill_fit_array(call, fractions, len(self.ids))
            w_skill, w_performance = self._weights[:2]
            self._heads[key] = skill * w_skill + self._performance * w_performance
        return self._heads[key]

    def _region_column(self, call: Call) -> Floats:
        """``region_affinity`` of every agent for ``call``'s timezone and region."""
        indexes = np.arange(len(self.ids))
        call_offset = self.utc_offset(call.timezone)
        if call_offset is None:
            values = np.zeros(len(indexes))
        else:
            gap = np.abs(call_offset - self._offset[indexes])
            with np.errstate(invalid="ignore"):
                near = TIMEZONE_AFFINITY * np.maximum(0.0, 1.0 - gap / OFFSET_SPAN_H)
            values = np.where(np.isnan(gap), 0.0, near)
        if call.region:
            wanted = call.region.lower()
            # Agent regions are compared as ``AgentFacts.region`` holds them (lower-cased).
            names = list(self.table.memo.regions.values)
            same = np.fromiter((name.lower() == wanted for name in names), np.bool_, len(names))
            if same.any():
                values[same[self.table.ints[indexes, I_REGION]]] = 1.0
        return values

    def parts(self, call: Call, index: int) -> dict[str, float]:
        """The weighted score parts of the agent at ``index`` for ``call`` (``Board.card``'s
        ``parts``, from the columns): what an explanation shows."""
        weighted = map(operator.mul, self._values(call, index), self._weights)
        return dict(zip(PART_NAMES, weighted, strict=True))

    def _values(self, call: Call, index: int) -> tuple[float, ...]:
        """``part_values`` of the agent at ``index`` for ``call``."""
        self._fill()
        agent = self.agents[index]
        offset = self._offset[index]
        facts = AgentFacts(
            agent_id=agent.agent_id,
            skills=agent.profile.skills,
            region=agent.profile.region.lower(),
            utc_offset_h=None if np.isnan(offset) else float(offset),
            performance=float(self._performance[index]),
            idle=float(self._idle[index]),
        )
        return part_values(call, facts, self.utc_offset(call.timezone))

    def totals(self, call: Call, indexes: npt.NDArray[np.intp], levels: Levels) -> Floats:
        """Soft score totals of the agents at ``indexes`` for ``call`` (``Board.total``).

        The terms are added left to right as ``weighted_total`` adds them; a term that is 0
        for every agent at ``indexes`` (the previous agent's, when that agent is not among
        them) is skipped, which leaves every float as it is (no total is -0.0: values and
        weights are never negative).
        """
        self._fill()
        total = self._head(call, levels)[indexes] + self._region_weighted(call)[indexes]
        if call.preferred_agent_id:
            if self._index is None:  # built only for a call that names one
                self._index = dict(zip(self.ids, range(len(self.ids)), strict=True))
            favourite = self._index.get(call.preferred_agent_id)
            if favourite is not None:
                previous = indexes == favourite
                if previous.any():
                    total = total + previous * self._weights[3]
        return total + self._idle_weighted[indexes]
