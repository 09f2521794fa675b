"""Hard eligibility: may this agent take this call at all?

The rules run in this order and the first that fails is the reason reported
(``router.domain.Exclusion``):

1. ``NOT_AVAILABLE``       presence is not AVAILABLE (NOT_RESPONDING included)
2. ``HEARTBEAT_EXPIRED``   heartbeat_timeout_s > 0 and now - heartbeat_ms > timeout
3. ``SCHEDULED_ABSENCE``   one of the profile's absences covers now
4. ``DECLINED``            the agent is in ``call.excluded_agents`` (rejected, missed, released)
5. ``WRONG_TEAM``          the call names a team and the agent's team is neither it nor an
                           overflow team of an applied widening step
6. ``REGION``              ``call.region_required`` (with a non-empty ``call.region``) and the
                           agent's region differs (case-insensitive), until a step says
                           ``any_region``
7. ``MISSING_SKILL``       a required skill is absent from the profile
8. ``SKILL_TOO_LOW``       a required skill is below its widened minimum level
                           (``router.widening``: ``max(1, min_level - sum(level_drop))``)
9. ``LANGUAGE``            the call names a language the agent does not speak (case-insensitive)
10. ``SHIFT_ENDING``       the work would outlast the agent: with
                           ``end = now + policy.reserved_s_for(call) * 1000`` (the
                           expected handle time, after an offer's time-out if offered),
                           ``0 < shift_end_ms < end``, or an absence starts in ``(now, end)``
11. ``CHANNEL_NOT_SERVED`` the agent's capacity on the call's channel is 0
12. ``AT_CAPACITY``        the channel is full, or the item's units do not fit the budget
13. ``OCCUPANCY_CAP``      rolling occupancy >= the agent's cap

Presence and absence come first so an agent who is away is reported as away, whatever else
is true of them; a declined call is then the most specific reason. One exception, for speed:
an Assign reads only the agents holding every required skill (the store's skill index), so
the agents it never read are all counted under ``MISSING_SKILL`` (and those the routing index
shows full, under ``AT_CAPACITY``) whatever else is true of them; the dispatcher's passes,
which read every agent, report each agent's first failing rule. Team and region are the
coarse partitions of the workforce, skills and language the finer ones. The shift rule is
about the future, capacity about the present; occupancy comes last because it is the only
rule about the recent past. Widening (``router.widening``) is worked out once per call and
reported in the screening.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from router.domain import (
    AGENT_UNIT_BUDGET,
    AgentProfile,
    AgentSnapshot,
    Call,
    Channel,
    Exclusion,
    Policy,
    Presence,
    frozen_map,
)
from router.widening import WidenedRequirements, requirements
from scoring.load import (
    ABSENT,
    F_MAX_OCCUPANCY,
    I_ABSENCES,
    I_AVAILABLE,
    I_CAPACITY,
    I_HAS_CAP,
    I_HEARTBEAT,
    I_LANGUAGES,
    I_LOAD,
    I_REGION,
    I_SHIFT_END,
    I_TEAM,
    I_UNITS,
    AgentTable,
)
from scoring.load import occupancy as rolling_occupancy


@dataclass(frozen=True, slots=True)
class Screening:
    """The agents that passed every hard rule for one call, and why the others did not."""

    eligible: tuple[AgentSnapshot, ...]
    excluded: Mapping[Exclusion, int]
    """Exclusion -> number of agents it refused (only non-zero counts)."""
    widening_step: int = 0
    """Widening steps applied to the call's requirements."""


def check(
    call: Call,
    agent: AgentSnapshot,
    now_ms: int,
    policy: Policy,
    occupancy: float | None = None,
    *,
    widened: WidenedRequirements | None = None,
) -> Exclusion | None:
    """The first hard rule ``agent`` fails for ``call``, or ``None`` when eligible.

    ``occupancy`` is the agent's rolling occupancy and ``widened`` the call's requirements at
    now (``router.widening.requirements``) when the caller already has them; otherwise they
    are computed here.
    """
    if widened is None:
        widened = requirements(call, now_ms, policy)
    return (
        absence_reason(agent, now_ms, policy)
        or declined_reason(call, agent)
        or fit_reason(call, agent, widened)
        or shift_reason(agent, now_ms, policy.reserved_s_for(call))
        or capacity_reason(call, agent, now_ms, policy, occupancy)
    )


def absence_reason(agent: AgentSnapshot, now_ms: int, policy: Policy) -> Exclusion | None:
    """Rules 1-3: why the agent is not at their desk now, or ``None`` when present."""
    if agent.presence != Presence.AVAILABLE:
        return Exclusion.NOT_AVAILABLE
    return _off_duty(agent, now_ms, policy)


def _off_duty(agent: AgentSnapshot, now_ms: int, policy: Policy) -> Exclusion | None:
    """Rules 2-3, whatever the presence: a lapsed heartbeat, a scheduled absence now."""
    timeout_ms = policy.heartbeat_timeout_s * 1000
    if timeout_ms > 0 and now_ms - agent.heartbeat_ms > timeout_ms:
        return Exclusion.HEARTBEAT_EXPIRED
    if any(absence.covers(now_ms) for absence in agent.profile.absences):
        return Exclusion.SCHEDULED_ABSENCE
    return None


_LEFT = {
    Exclusion.HEARTBEAT_EXPIRED: "heartbeat expired",
    Exclusion.SCHEDULED_ABSENCE: "agent is on a scheduled absence",
}


KEEPS_ACCEPTED = frozenset({Presence.BUSY, Presence.BREAK, Presence.NOT_RESPONDING})
"""Presences that take no new work (offers included) but keep work already accepted: an
agent in a meeting, on a coffee break or who missed offers is still at work."""


def left_reason(agent: AgentSnapshot, now_ms: int, policy: Policy) -> str:
    """Why the agent has left work offered to them ('' when not): rules 1-3, or a shift that
    has ended. The dispatcher takes offers back for it (``dispatcher.must_reclaim``) and
    Accept refuses an offer (``accept_offer.lua`` says the same)."""
    if agent.presence != Presence.AVAILABLE:
        return f"agent is {agent.presence.value}"
    return _away(agent, now_ms, policy)


def gone_reason(agent: AgentSnapshot, now_ms: int, policy: Policy) -> str:
    """Why the agent has left work they accepted ('' when not): as ``left_reason``, except
    that a presence of ``KEEPS_ACCEPTED`` is no reason (offline and away are; so are a
    lapsed heartbeat, an absence and the shift's end, whatever the presence). The
    dispatcher takes accepted work on ``reclaim_channels`` back for it."""
    if agent.presence in KEEPS_ACCEPTED:
        return _away(agent, now_ms, policy)
    return left_reason(agent, now_ms, policy)


def _away(agent: AgentSnapshot, now_ms: int, policy: Policy) -> str:
    """``left_reason`` with the presence left out."""
    excluded = _off_duty(agent, now_ms, policy)
    if excluded is not None:
        return _LEFT[excluded]
    if 0 < agent.profile.shift_end_ms <= now_ms:
        return "agent's shift has ended"
    return ""


def is_present(agent: AgentSnapshot, now_ms: int, policy: Policy) -> bool:
    """True when the agent is available, alive and not scheduled away (routable in principle)."""
    return absence_reason(agent, now_ms, policy) is None


def declined_reason(call: Call, agent: AgentSnapshot) -> Exclusion | None:
    """Rule 4: the agent already rejected, missed or released this call."""
    return Exclusion.DECLINED if agent.agent_id in call.excluded_agents else None


def fit_reason(call: Call, agent: AgentSnapshot, widened: WidenedRequirements) -> Exclusion | None:
    """Rules 5-9: team, region, skills and language under the widened requirements
    (depends on ``widened``, the call's region and language only)."""
    profile = agent.profile
    if widened.teams and profile.team not in widened.teams:
        return Exclusion.WRONG_TEAM
    if (
        call.region_required
        and call.region
        and not widened.any_region
        and profile.region.lower() != call.region.lower()
    ):
        return Exclusion.REGION
    if any(req.skill not in profile.skills for req in widened.levels):
        return Exclusion.MISSING_SKILL
    if any(profile.skills[req.skill] < req.min_level for req in widened.levels):
        return Exclusion.SKILL_TOO_LOW
    if call.language and call.language.lower() not in {lang.lower() for lang in profile.languages}:
        return Exclusion.LANGUAGE
    return None


def shift_reason(agent: AgentSnapshot, now_ms: int, handle_s: int) -> Exclusion | None:
    """Rule 10: work of ``handle_s`` seconds started now would outlast the agent's shift or
    run into a scheduled absence (one covering now is rule 3)."""
    end_ms = now_ms + handle_s * 1000
    profile = agent.profile
    if profile.shift_end_ms > 0 and end_ms > profile.shift_end_ms:
        return Exclusion.SHIFT_ENDING
    if any(now_ms < absence.start_ms < end_ms for absence in profile.absences):
        return Exclusion.SHIFT_ENDING
    return None


def eligible_until_ms(profile: AgentProfile, now_ms: int, handle_s: int) -> int:
    """The latest time at which rules 3 and 10 still let work of ``handle_s`` seconds, which
    they let start at ``now_ms``, start with the agent (0: no bound): before the first later
    absence's start less the work's length, and the shift's end less it. A commit made
    after it (a slow pass) would start the work into an absence or past the shift."""
    handle_ms = handle_s * 1000
    bounds = [a.start_ms - max(handle_ms, 1) for a in profile.absences if a.start_ms > now_ms]
    if profile.shift_end_ms > 0:
        bounds.append(profile.shift_end_ms - handle_ms)
    return max(1, min(bounds)) if bounds else 0


def capacity_reason(
    call: Call, agent: AgentSnapshot, now_ms: int, policy: Policy, occupancy: float | None
) -> Exclusion | None:
    """Rules 11-13: channel served, room on the channel and in the budget, occupancy cap
    (depends on the call's channel only)."""
    capacity = policy.capacity_for(agent.profile, call.channel)
    if capacity <= 0:
        return Exclusion.CHANNEL_NOT_SERVED
    units = policy.units_for(call.channel)
    if agent.load(call.channel) >= capacity or agent.units_used + units > AGENT_UNIT_BUDGET:
        return Exclusion.AT_CAPACITY
    if occupancy is None:
        occupancy = rolling_occupancy(agent, now_ms, policy.occupancy_window_s)
    if occupancy >= policy.occupancy_cap_for(agent.profile):
        return Exclusion.OCCUPANCY_CAP
    return None


def screen(
    call: Call,
    agents: Iterable[AgentSnapshot],
    now_ms: int,
    policy: Policy,
    *,
    unindexed_missing_skill: int = 0,
) -> Screening:
    """Split ``agents`` into the eligible ones and per-rule exclusion counts for ``call``.

    ``unindexed_missing_skill`` (agents the store pruned with its skill index) is added to
    the ``MISSING_SKILL`` count so the explanation covers every agent of the tenant.
    """
    widened = requirements(call, now_ms, policy)
    eligible: list[AgentSnapshot] = []
    reasons: list[Exclusion] = []
    for agent in agents:
        reason = check(call, agent, now_ms, policy, widened=widened)
        if reason is None:
            eligible.append(agent)
        else:
            reasons.append(reason)
    return tally(eligible, reasons, unindexed_missing_skill, widening_step=widened.step)


def tally(
    eligible: Iterable[AgentSnapshot],
    reasons: Iterable[Exclusion],
    unindexed_missing_skill: int = 0,
    *,
    widening_step: int = 0,
) -> Screening:
    """Build a ``Screening`` from the eligible agents and the refused agents' reasons."""
    excluded = Counter(reasons)
    if unindexed_missing_skill > 0:
        excluded[Exclusion.MISSING_SKILL] += unindexed_missing_skill
    # Declaration order keeps explanations (and their serialised form) stable.
    ordered = {reason: excluded[reason] for reason in Exclusion if excluded[reason] > 0}
    return Screening(
        eligible=tuple(eligible), excluded=frozen_map(ordered), widening_step=widening_step
    )


# --- Vectorised screening -------------------------------------------------------------------

Codes = npt.NDArray[np.int8]
"""One rule rank per agent: the number (1-13, in the order above) of the first rule the agent
fails, ``PASS`` when it fails none. The first failing rule is then simply the smallest rank."""
Mask = npt.NDArray[np.bool_]
Indexes = npt.NDArray[np.intp]

RULES: tuple[Exclusion, ...] = (
    Exclusion.NOT_AVAILABLE,
    Exclusion.HEARTBEAT_EXPIRED,
    Exclusion.SCHEDULED_ABSENCE,
    Exclusion.DECLINED,
    Exclusion.WRONG_TEAM,
    Exclusion.REGION,
    Exclusion.MISSING_SKILL,
    Exclusion.SKILL_TOO_LOW,
    Exclusion.LANGUAGE,
    Exclusion.SHIFT_ENDING,
    Exclusion.CHANNEL_NOT_SERVED,
    Exclusion.AT_CAPACITY,
    Exclusion.OCCUPANCY_CAP,
)
"""The rules in the order they run; a reason's rank is its position here plus one."""
PASS = len(RULES) + 1
"""The rank of an agent that fails no rule (above every rule's rank)."""


def rank_of(reason: Exclusion) -> int:
    """The rank ``AgentColumns`` uses for ``reason``."""
    return RULES.index(reason) + 1


_REPORTED = tuple((reason, rank_of(reason) - 1) for reason in Exclusion)
"""(reason, rank - 1) in ``Exclusion``'s order, the order screenings report exclusions in."""
# The ranks of the rules, in ``RULES`` order.
(
    _NOT_AVAILABLE,
    _HEARTBEAT,
    _ABSENCE,
    _DECLINED,
    _TEAM,
    _REGION,
    _MISSING,
    _LOW,
    _LANGUAGE,
    _SHIFT,
    _NOT_SERVED,
    _AT_CAPACITY,
    _OCCUPANCY,
) = map(rank_of, RULES)
_NEVER = np.iinfo(np.int64).max


@dataclass(frozen=True, slots=True)
class ColumnScreening:
    """``Screening`` of one call by ``AgentColumns``: agent indexes instead of snapshots."""

    eligible: Indexes
    """Indexes (into ``AgentColumns.agents``, ascending: agent-id order) of eligible agents."""
    excluded: Mapping[Exclusion, int]
    widening_step: int = 0


class AgentColumns:
    """The agents of one decision as numpy columns, for screening many calls at once.

    Same rules, order and counts as ``screen`` (tests compare them on random snapshots): each
    rule is a column of ranks (``Codes``) for every agent, cached for the decision, and a
    call's screening is the element-wise minimum of the columns of its rules, so the first
    failing rule wins with one array operation per rule. The per-agent inputs come from
    ``scoring.load.AgentTable`` (memoised per agent snapshot); columns derived from them are
    built lazily (a skill's levels when a call first needs the skill, capacity when a call
    first uses the channel) and cached for the decision. ``place`` records work given during
    the decision, as ``router.board.Board.place`` does.
    """

    __slots__ = (
        "_bases",
        "_capacity",
        "_capped",
        "_fit",
        "_index",
        "_levels",
        "_load",
        "_next_absence",
        "_occupancy",
        "_occupancy_cap",
        "_rooms",
        "_screens",
        "_shift",
        "_skills",
        "agents",
        "now_ms",
        "policy",
        "presence",
        "size",
        "table",
        "unindexed",
        "units_used",
    )

    def __init__(
        self,
        agents: Sequence[AgentSnapshot],
        now_ms: int,
        policy: Policy,
        *,
        unindexed_missing_skill: int = 0,
        table: AgentTable | None = None,
    ) -> None:
        """Index ``agents`` (in the order given: pass them in agent-id order).

        ``table`` is ``scoring.load.AgentTable(agents)`` when the caller already has it.
        """
        self.agents = list(agents)
        self.now_ms = now_ms
        self.policy = policy
        self.unindexed = unindexed_missing_skill
        self.size = n = len(self.agents)
        self.table = table = AgentTable(self.agents) if table is None else table
        self._index: dict[str, int] | None = None
        ints = table.ints
        available = ints[:, I_AVAILABLE] == 1
        presence = np.full(n, _NOT_AVAILABLE, np.int8)
        timeout_ms = policy.heartbeat_timeout_s * 1000
        if timeout_ms > 0:
            presence[available] = _HEARTBEAT
            # now - heartbeat <= timeout, exact on ints
            presence[available & (ints[:, I_HEARTBEAT] >= now_ms - timeout_ms)] = PASS
        else:
            presence[available] = PASS
        self._next_absence = np.full(n, _NEVER, np.int64)
        if ints[:, I_ABSENCES].any():
            owners, absences = table.absences()
            start, end = absences[:, 0], absences[:, 1]
            away = np.zeros(n, np.bool_)
            away[owners[(start <= now_ms) & (now_ms < end)]] = True  # Absence.covers
            presence[(presence == PASS) & away] = _ABSENCE
            later = start > now_ms
            np.minimum.at(self._next_absence, owners[later], start[later])
        self.presence = presence
        """Rules 1-3 per agent (``PASS`` when present)."""
        self._capped: Mask | None = None
        self._bases: dict[tuple[int, Channel], Codes] = {}
        self.units_used = ints[:, I_UNITS].copy()
        self._load: dict[Channel, npt.NDArray[np.int64]] = {}
        """Per channel, copied from the table when first asked (placements change it)."""
        self._capacity: dict[Channel, npt.NDArray[np.int64]] = {}
        self._occupancy: npt.NDArray[np.float64] | None = None
        self._occupancy_cap: npt.NDArray[np.float64] | None = None
        self._skills: dict[str, tuple[Mask, npt.NDArray[np.int64]]] = {}
        self._fit: dict[tuple[str, object], Codes] = {}
        self._levels: dict[tuple[str, int], Codes] = {}
        self._shift: dict[int, Codes] = {}
        self._rooms: dict[Channel, Codes] = {}
        self._screens: dict[tuple[object, ...], tuple[Codes, ColumnScreening]] = {}

    @property
    def index(self) -> dict[str, int]:
        """Agent id -> index (built on first use)."""
        if self._index is None:
            self._index = dict(zip(self.table.ids, range(self.size), strict=True))
        return self._index

    # Columns -----------------------------------------------------------------------------

    def skill(self, name: str) -> tuple[Mask, npt.NDArray[np.int64]]:
        """(has the skill, level or 0) per agent."""
        if name not in self._skills:
            self._skills[name] = self.table.skill(name)
        return self._skills[name]

    def load(self, channel: Channel) -> npt.NDArray[np.int64]:
        """Items taking capacity on ``channel`` per agent (placements included)."""
        load = self._load.get(channel)
        if load is None:
            load = self._load[channel] = self.table.channel(I_LOAD, channel).copy()
        return load

    def capacity(self, channel: Channel) -> npt.NDArray[np.int64]:
        """``policy.capacity_for`` per agent."""
        if channel not in self._capacity:
            default = self.policy.channel_capacity.get(channel, 0)
            raw = self.table.channel(I_CAPACITY, channel)
            self._capacity[channel] = np.where(raw == ABSENT, default, raw).astype(np.int64)
        return self._capacity[channel]

    def occupancy(self, indexes: Indexes) -> npt.NDArray[np.float64]:
        """Rolling occupancy (``scoring.load.occupancy``) of the agents at ``indexes``."""
        if self._occupancy is None:
            self._occupancy = self.table.occupancy(self.now_ms, self.policy.occupancy_window_s)
        return self._occupancy[indexes]

    def occupancy_cap(self) -> npt.NDArray[np.float64]:
        """``policy.occupancy_cap_for`` per agent."""
        if self._occupancy_cap is None:
            own = self.table.floats[:, F_MAX_OCCUPANCY]
            has_own = self.table.ints[:, I_HAS_CAP] == 1
            self._occupancy_cap = np.where(has_own, own, float(self.policy.max_occupancy))
        return self._occupancy_cap

    def free_slots(self, channel: Channel, indexes: Indexes) -> npt.NDArray[np.int64]:
        """``scoring.load.free_slots`` of the agents at ``indexes`` on ``channel``."""
        by_capacity = self.capacity(channel)[indexes] - self.load(channel)[indexes]
        units = self.policy.units_for(channel)
        if units > 0:
            by_budget = (AGENT_UNIT_BUDGET - self.units_used[indexes]) // units
            by_capacity = np.minimum(by_capacity, by_budget)
        free: npt.NDArray[np.int64] = np.maximum(0, by_capacity)
        return free

    def place(self, index: int, channel: Channel) -> None:
        """Record that the agent at ``index`` takes an item on ``channel`` now."""
        self.load(channel)[index] += 1
        self.units_used[index] += self.policy.units_for(channel)
        self._screens.clear()
        self._rooms.clear()
        self._bases.clear()

    # Rules -------------------------------------------------------------------------------

    def _team_ranks(self, teams: frozenset[str]) -> Codes:
        """Rule 5 per agent for a call for ``teams``."""
        key = ("team", teams)
        if key not in self._fit:
            names = list(self.table.memo.teams.values)
            member = np.fromiter((name in teams for name in names), np.bool_, len(names))
            ranks = np.where(member, PASS, _TEAM).astype(np.int8)
            self._fit[key] = ranks[self.table.ints[:, I_TEAM]]
        return self._fit[key]

    def _region_ranks(self, region: str) -> Codes:
        """Rule 6 per agent for a call that requires lower-case ``region``."""
        key = ("region", region)
        if key not in self._fit:
            names = list(self.table.memo.regions.values)
            ranks = np.fromiter(
                (PASS if name == region else _REGION for name in names), np.int8, len(names)
            )
            self._fit[key] = ranks[self.table.ints[:, I_REGION]]
        return self._fit[key]

    def _language_ranks(self, language: str) -> Codes:
        """Rule 9 per agent for a call in lower-case ``language``."""
        key = ("language", language)
        if key not in self._fit:
            sets = list(self.table.memo.languages.values)
            ranks = np.fromiter(
                (PASS if language in {tag.lower() for tag in tags} else _LANGUAGE for tags in sets),
                np.int8,
                len(sets),
            )
            self._fit[key] = ranks[self.table.ints[:, I_LANGUAGES]]
        return self._fit[key]

    def _level_ranks(self, skill: str, min_level: int) -> Codes:
        """Rules 7-8 per agent for one required skill at a (widened) minimum level."""
        key = (skill, min_level)
        if key not in self._levels:
            has, level = self.skill(skill)
            ranks = np.where(level < min_level, _LOW, PASS).astype(np.int8)
            ranks[~has] = _MISSING
            self._levels[key] = ranks
        return self._levels[key]

    def fit(self, call: Call, widened: WidenedRequirements) -> list[Codes]:
        """Rules 5-9 for ``call``: one rank column per rule that applies (``PASS`` where the
        agent meets it); the first failing one is their element-wise minimum."""
        columns: list[Codes] = []
        if widened.teams:
            columns.append(self._team_ranks(widened.teams))
        if call.region_required and call.region and not widened.any_region:
            columns.append(self._region_ranks(call.region.lower()))
        columns.extend(self._level_ranks(req.skill, req.min_level) for req in widened.levels)
        if call.language:
            columns.append(self._language_ranks(call.language.lower()))
        return columns

    def shift(self, handle_s: int) -> Codes:
        """Rule 10 per agent (``shift_reason``'s rank)."""
        if handle_s not in self._shift:
            end_ms = self.now_ms + handle_s * 1000
            shift_end = self.table.ints[:, I_SHIFT_END]
            ending = ((shift_end > 0) & (end_ms > shift_end)) | (self._next_absence < end_ms)
            self._shift[handle_s] = np.where(ending, _SHIFT, PASS).astype(np.int8)
        return self._shift[handle_s]

    def _base(self, handle_s: int, channel: Channel) -> Codes:
        """The ranks of every rule but rules 4-9 (``fit`` and declines): presence (rules
        1-3), shift (10), room (11-12) and the occupancy cap (13), for all calls with this
        handle time and channel."""
        key = (handle_s, channel)
        if key not in self._bases:
            base = np.where(self._over_cap(), _OCCUPANCY, PASS).astype(np.int8)
            np.minimum(base, self._room(channel), out=base)
            np.minimum(base, self.shift(handle_s), out=base)
            np.minimum(base, self.presence, out=base)
            self._bases[key] = base
        return self._bases[key]

    def _over_cap(self) -> Mask:
        """Agents at or over their occupancy cap (``occupancy >= cap``)."""
        if self._capped is None:
            self._capped = self.occupancy(np.arange(self.size)) >= self.occupancy_cap()
        return self._capped

    def _room(self, channel: Channel) -> Codes:
        """Rules 11-12 per agent (channel served, room on it and in the budget)."""
        if channel not in self._rooms:
            self._rooms[channel] = self._room_ranks(channel)
        return self._rooms[channel]

    def _room_ranks(self, channel: Channel) -> Codes:
        capacity = self.capacity(channel)
        units = self.policy.units_for(channel)
        full = (self.load(channel) >= capacity) | (self.units_used + units > AGENT_UNIT_BUDGET)
        ranks = np.where(full, _AT_CAPACITY, PASS).astype(np.int8)
        ranks[capacity <= 0] = _NOT_SERVED
        return ranks

    def screen(self, call: Call) -> ColumnScreening:
        """Screen every agent for ``call`` (``router.board.Board.screen`` on columns); calls
        alike in every rule (and declining no one) share one screening."""
        widened = requirements(call, self.now_ms, self.policy)
        handle_s = self.policy.reserved_s_for(call)
        key = (
            widened,
            call.region_required,
            call.region.lower(),
            call.language.lower(),
            handle_s,
            call.channel,
        )
        cached = self._screens.get(key)
        if cached is None:
            ranks = self._base(handle_s, call.channel).copy()
            for column in self.fit(call, widened):
                np.minimum(ranks, column, out=ranks)
            counts = np.bincount(ranks.view(np.uint8), minlength=PASS + 1)
            cached = self._screens[key] = (ranks, self._screening(ranks, counts, widened.step))
        ranks, screening = cached
        if not call.excluded_agents:
            return screening
        declined = [
            self.index[agent_id] for agent_id in set(call.excluded_agents) if agent_id in self.index
        ]
        # A decline outranks rules 5-13 but not presence (rules 1-3).
        declined = [i for i in declined if ranks[i] > _DECLINED]
        if not declined:
            return screening
        ranks = ranks.copy()
        ranks[declined] = _DECLINED
        counts = np.bincount(ranks.view(np.uint8), minlength=PASS + 1)
        return self._screening(ranks, counts, widened.step)

    def _screening(self, ranks: Codes, counts: npt.NDArray[np.intp], step: int) -> ColumnScreening:
        """The screening ``ranks`` (with ``counts``, their histogram) stand for."""
        excluded = counts[1:PASS].tolist()
        if self.unindexed > 0:
            excluded[_MISSING - 1] += self.unindexed
        ordered = {reason: excluded[at] for reason, at in _REPORTED if excluded[at]}
        return ColumnScreening(
            eligible=np.flatnonzero(ranks == PASS),
            excluded=frozen_map(ordered),
            widening_step=step,
        )
