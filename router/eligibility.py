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
                           ``end = now + policy.handle_s_for(call) * 1000``,
                           ``0 < shift_end_ms < end``, or an absence starts in ``(now, end)``
11. ``CHANNEL_NOT_SERVED`` the agent's capacity on the call's channel is 0
12. ``AT_CAPACITY``        the channel is full, or the item's units do not fit the budget
13. ``OCCUPANCY_CAP``      rolling occupancy >= the agent's cap

Presence and absence come first so an agent who is away is reported as away, whatever else
is true of them; a declined call is then the most specific reason. Team and region are the
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
        or shift_reason(agent, now_ms, policy.handle_s_for(call))
        or capacity_reason(call, agent, now_ms, policy, occupancy)
    )


def absence_reason(agent: AgentSnapshot, now_ms: int, policy: Policy) -> Exclusion | None:
    """Rules 1-3: why the agent is not at their desk now, or ``None`` when present."""
    if agent.presence != Presence.AVAILABLE:
        return Exclusion.NOT_AVAILABLE
    timeout_ms = policy.heartbeat_timeout_s * 1000
    if timeout_ms > 0 and now_ms - agent.heartbeat_ms > timeout_ms:
        return Exclusion.HEARTBEAT_EXPIRED
    if any(absence.covers(now_ms) for absence in agent.profile.absences):
        return Exclusion.SCHEDULED_ABSENCE
    return None


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
"""One exclusion code per agent: 0 when eligible, else ``CODES.index(reason) + 1``."""
Mask = npt.NDArray[np.bool_]
Indexes = npt.NDArray[np.intp]

CODES: tuple[Exclusion, ...] = tuple(Exclusion)
"""Exclusions in declaration order; a reason's code is its position here plus one."""


def code_of(reason: Exclusion) -> int:
    """The code ``AgentColumns`` uses for ``reason``."""
    return CODES.index(reason) + 1


_NOT_AVAILABLE = code_of(Exclusion.NOT_AVAILABLE)
_HEARTBEAT = code_of(Exclusion.HEARTBEAT_EXPIRED)
_ABSENCE = code_of(Exclusion.SCHEDULED_ABSENCE)
_DECLINED = code_of(Exclusion.DECLINED)
_TEAM = code_of(Exclusion.WRONG_TEAM)
_REGION = code_of(Exclusion.REGION)
_MISSING = code_of(Exclusion.MISSING_SKILL)
_LOW = code_of(Exclusion.SKILL_TOO_LOW)
_LANGUAGE = code_of(Exclusion.LANGUAGE)
_SHIFT = code_of(Exclusion.SHIFT_ENDING)
_NOT_SERVED = code_of(Exclusion.CHANNEL_NOT_SERVED)
_AT_CAPACITY = code_of(Exclusion.AT_CAPACITY)
_OCCUPANCY = code_of(Exclusion.OCCUPANCY_CAP)
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
    rule is evaluated for every agent with array operations, and the first failing rule's
    code wins. The per-agent inputs come from ``scoring.load.AgentTable`` (memoised per agent
    snapshot); columns derived from them are built lazily (a skill's levels when a call first
    needs the skill, capacity when a call first uses the channel, occupancy when an agent
    first passes every other rule) and cached for the decision. ``place`` records work given
    during the decision, as ``router.board.Board.place`` does.
    """

    __slots__ = (
        "_bases",
        "_capacity",
        "_capped",
        "_fit",
        "_index",
        "_languages",
        "_load",
        "_next_absence",
        "_occupancy",
        "_occupancy_cap",
        "_open",
        "_regions",
        "_rooms",
        "_screens",
        "_shift",
        "_skills",
        "_teams",
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
        presence = np.where(ints[:, I_AVAILABLE] == 1, 0, _NOT_AVAILABLE).astype(np.int8)
        timeout_ms = policy.heartbeat_timeout_s * 1000
        if timeout_ms > 0:
            heartbeat = ints[:, I_HEARTBEAT]
            presence[(presence == 0) & (now_ms - heartbeat > timeout_ms)] = _HEARTBEAT
        self._next_absence = np.full(n, _NEVER, np.int64)
        if ints[:, I_ABSENCES].any():
            owners, absences = table.absences()
            start, end = absences[:, 0], absences[:, 1]
            away = np.zeros(n, np.bool_)
            away[owners[(start <= now_ms) & (now_ms < end)]] = True  # Absence.covers
            presence[(presence == 0) & away] = _ABSENCE
            later = start > now_ms
            np.minimum.at(self._next_absence, owners[later], start[later])
        self.presence = presence
        self._open: Mask = presence == 0
        self._capped: Mask | None = None
        self._bases: dict[tuple[int, Channel], Codes] = {}
        self.units_used = ints[:, I_UNITS].copy()
        self._load = {channel: table.channel(I_LOAD, channel).copy() for channel in Channel}
        self._capacity: dict[Channel, npt.NDArray[np.int64]] = {}
        self._occupancy: npt.NDArray[np.float64] | None = None
        self._occupancy_cap: npt.NDArray[np.float64] | None = None
        self._skills: dict[str, tuple[Mask, npt.NDArray[np.int64]]] = {}
        self._languages: dict[str, Mask] = {}
        self._teams: dict[frozenset[str], Mask] = {}
        self._regions: dict[str, Mask] = {}
        self._fit: dict[tuple[object, ...], Codes] = {}
        self._shift: dict[int, Codes] = {}
        self._rooms: dict[Channel, Codes] = {}
        self._screens: dict[tuple[object, ...], tuple[Codes, npt.NDArray[np.int64]]] = {}

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
        return self._load[channel]

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

    def _team_mask(self, teams: frozenset[str]) -> Mask:
        if teams not in self._teams:
            names = list(self.table.memo.teams.values)
            member = np.fromiter((name in teams for name in names), np.bool_, len(names))
            self._teams[teams] = member[self.table.ints[:, I_TEAM]]
        return self._teams[teams]

    def _region_mask(self, region: str) -> Mask:
        """Agents whose region differs from lower-case ``region``."""
        if region not in self._regions:
            names = list(self.table.memo.regions.values)
            other = np.fromiter((name != region for name in names), np.bool_, len(names))
            self._regions[region] = other[self.table.ints[:, I_REGION]]
        return self._regions[region]

    def _language_mask(self, language: str) -> Mask:
        """Agents who do not speak lower-case ``language``."""
        if language not in self._languages:
            sets = list(self.table.memo.languages.values)
            mute = np.fromiter(
                (language not in {tag.lower() for tag in tags} for tags in sets),
                np.bool_,
                len(sets),
            )
            self._languages[language] = mute[self.table.ints[:, I_LANGUAGES]]
        return self._languages[language]

    def fit(self, call: Call, widened: WidenedRequirements) -> Codes:
        """Rules 5-9 per agent (``fit_reason``'s code, 0 when the agent fits)."""
        key = (widened, call.region_required, call.region.lower(), call.language.lower())
        if key in self._fit:
            return self._fit[key]
        codes = np.zeros(self.size, np.int8)
        rules: list[tuple[Mask, int]] = []
        if widened.teams:
            rules.append((~self._team_mask(widened.teams), _TEAM))
        if call.region_required and call.region and not widened.any_region:
            rules.append((self._region_mask(call.region.lower()), _REGION))
        if widened.levels:
            missing = np.zeros(self.size, np.bool_)
            low = np.zeros(self.size, np.bool_)
            for req in widened.levels:
                has, level = self.skill(req.skill)
                missing |= ~has
                low |= level < req.min_level
            rules.append((missing, _MISSING))
            rules.append((low, _LOW))
        if call.language:
            rules.append((self._language_mask(call.language.lower()), _LANGUAGE))
        # Last rule first, so an earlier failing rule overwrites a later one.
        for mask, code in reversed(rules):
            codes[mask] = code
        self._fit[key] = codes
        return codes

    def shift(self, handle_s: int) -> Codes:
        """Rule 10 per agent (``shift_reason``'s code)."""
        if handle_s not in self._shift:
            end_ms = self.now_ms + handle_s * 1000
            shift_end = self.table.ints[:, I_SHIFT_END]
            ending = ((shift_end > 0) & (end_ms > shift_end)) | (self._next_absence < end_ms)
            self._shift[handle_s] = np.where(ending, _SHIFT, 0).astype(np.int8)
        return self._shift[handle_s]

    def _base(self, handle_s: int, channel: Channel) -> Codes:
        """The codes of every rule but rules 5-9 (``fit``): presence (rules 1-4) where it
        fails, else shift (10), room (11-12), then the occupancy cap (13), for all calls
        with this handle time and channel."""
        key = (handle_s, channel)
        if key not in self._bases:
            rest = np.where(self._over_cap(), _OCCUPANCY, 0).astype(np.int8)
            room = self._room(channel)
            rest = np.where(room != 0, room, rest)
            shift = self.shift(handle_s)
            rest = np.where(shift != 0, shift, rest)
            self._bases[key] = np.where(self._open, rest, self.presence)
        return self._bases[key]

    def _over_cap(self) -> Mask:
        """Agents at or over their occupancy cap (``occupancy >= cap``)."""
        if self._capped is None:
            self._capped = self.occupancy(np.arange(self.size)) >= self.occupancy_cap()
        return self._capped

    def _room(self, channel: Channel) -> Codes:
        """Rules 11-12 per agent (channel served, room on it and in the budget)."""
        if channel not in self._rooms:
            self._rooms[channel] = self._room_codes(channel)
        return self._rooms[channel]

    def _room_codes(self, channel: Channel) -> Codes:
        capacity = self.capacity(channel)
        units = self.policy.units_for(channel)
        full = (self.load(channel) >= capacity) | (self.units_used + units > AGENT_UNIT_BUDGET)
        codes = np.where(full, _AT_CAPACITY, 0).astype(np.int8)
        codes[capacity <= 0] = _NOT_SERVED
        return codes

    def screen(self, call: Call) -> ColumnScreening:
        """Screen every agent for ``call`` (``router.board.Board.screen`` on columns)."""
        widened = requirements(call, self.now_ms, self.policy)
        handle_s = self.policy.handle_s_for(call)
        key = (widened, call.region_required, call.region.lower(), call.language.lower())
        screen_key = (key, handle_s, call.channel)
        if screen_key not in self._screens:
            fit = self.fit(call, widened)
            # The presence code where there is one, else the first failing rule of the call.
            codes = np.where((fit != 0) & self._open, fit, self._base(handle_s, call.channel))
            counts = np.bincount(codes, minlength=len(CODES) + 1).astype(np.int64)
            self._screens[screen_key] = (codes, counts)
        codes, counts = self._screens[screen_key]
        declined = [
            self.index[agent_id] for agent_id in set(call.excluded_agents) if agent_id in self.index
        ]
        declined = [i for i in declined if self.presence[i] == 0]
        if declined:
            counts = counts.copy()
            np.subtract.at(counts, codes[declined], 1)
            counts[_DECLINED] += len(declined)
            codes = codes.copy()
            codes[declined] = _DECLINED
        excluded = counts[1:].tolist()
        if self.unindexed > 0:
            excluded[_MISSING - 1] += self.unindexed
        ordered = {reason: count for reason, count in zip(CODES, excluded, strict=True) if count}
        return ColumnScreening(
            eligible=np.flatnonzero(codes == 0),
            excluded=frozen_map(ordered),
            widening_step=widened.step,
        )
