"""Simulated agents: their live state, the snapshots the engine reads, and the indexes that
keep each decision small.

``SimAgent`` holds what the store keeps for an agent (presence, work in progress with its
wrap-up, finished work spans for rolling occupancy, performance sums, the routing clocks, a
sequence number) and builds the ``AgentSnapshot`` the engine reads, cached until the agent
changes. The rules mirror ``router.memory_state``: a finished item becomes a ``WorkSpan`` from
its start to the end of its wrap-up; ``last_free_ms`` moves when nothing is in progress any
more (to the end of the latest wrap-up) and when the agent becomes available while idle.

``Workforce`` indexes who could take what: the *capable* agents of a need (channel served,
every required skill held, language spoken; static) and the *free* agents per channel
(available, with room on the channel). A decision only ever sees ``capable & free``: agents
that are busy, away or lack a skill are exactly those the engine would refuse anyway, so
leaving them out changes no placement, only the exclusion counts in explanations, which
the simulator does not report.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from router.domain import (
    AGENT_UNIT_BUDGET,
    Absence,
    ActiveWork,
    AgentProfile,
    AgentSnapshot,
    Channel,
    PerformanceStats,
    Policy,
    Presence,
    WorkSpan,
)
from simulations.model import DAY_S, SIM_EPOCH_MS, AgentSpec, epoch_ms

SHIFT_START, SHIFT_END, BREAK_START, BREAK_END, ABSENCE_START, ABSENCE_END = range(6)
"""Kinds of presence change."""

NeedKey = tuple[Channel, tuple[str, ...], str]
"""(channel, required skill names sorted, language): what decides who is capable."""


class Work:
    """One item an agent holds."""

    __slots__ = ("active", "channel", "index", "start_ms", "token", "units", "wrap_until_ms")

    def __init__(self, index: int, channel: Channel, units: int, start_ms: int, token: int) -> None:
        self.index = index
        self.channel = channel
        self.units = units
        self.start_ms = start_ms
        self.token = token
        """Matches the completion event scheduled for this item (a reclaimed item's event is
        stale)."""
        self.wrap_until_ms = 0
        self.active: ActiveWork | None = None


class SimAgent:
    """One agent's live state."""

    __slots__ = (
        "_snapshot",
        "absent",
        "agent_id",
        "busy_log",
        "handled",
        "last_assigned_ms",
        "last_free_ms",
        "load",
        "on_break",
        "on_shift",
        "performance",
        "profile",
        "release",
        "room",
        "seq",
        "spans",
        "spec",
        "staffed_log",
        "units_used",
        "verdicts_in",
        "work",
    )

    def __init__(self, spec: AgentSpec) -> None:
        self.spec = spec
        self.agent_id = spec.agent_id
        absences = tuple(
            Absence(f"{spec.agent_id}/{i}", a.kind, epoch_ms(a.start_s), epoch_ms(a.end_s))
            for i, a in enumerate(spec.absences)
        )
        self.profile = AgentProfile(
            agent_id=spec.agent_id,
            name=spec.agent_id,
            team=spec.team,
            skills=spec.skills,
            languages=spec.languages,
            region=spec.region,
            timezone=spec.timezone,
            capacity=spec.capacity,
            max_occupancy=spec.max_occupancy,
            absences=absences,
            version=1,
        )
        self.on_shift = False
        """Set by the first shift start (at 0 for agents without shifts)."""
        self.on_break = 0
        """Breaks in progress (a count, so overlapping breaks end cleanly)."""
        self.absent = 0
        """Scheduled absences in progress."""
        self.work: dict[int, Work] = {}
        self.load: dict[Channel, int] = dict.fromkeys(Channel, 0)
        self.units_used = 0
        self.spans: list[WorkSpan] = []
        self.performance = PerformanceStats()
        self.last_free_ms = SIM_EPOCH_MS
        self.last_assigned_ms = 0
        self.seq = 1
        self._snapshot: AgentSnapshot | None = None
        self.busy_log: list[int] = []
        """Finished busy intervals (wrap-up included), flat: ``start_ms, end_ms, units`` of
        each in turn (no tuple per interval for the garbage collector to track)."""
        self.staffed_log: list[list[int]] = []
        """Intervals ``[start_ms, end_ms]`` during which the agent was available (``end_ms``
        is -1 while the interval is open)."""
        self.handled = 0
        self.release: tuple[int, float] | None = None
        """``(seq, ms)``: when the rolling occupancy falls under the cap, as of ``seq``
        (``simulations.verdicts.OccupancyClock``, idle agents only)."""
        self.verdicts_in: set[tuple[int, int]] = set()
        """Verdict caches (``simulations.verdicts``) holding this agent; cleared when it
        changes."""
        self.room: dict[Channel, int] = {}
        """Free slots per channel as last counted in ``Workforce.free_total``."""

    @property
    def available(self) -> bool:
        """On shift, not on a break, not in a scheduled absence."""
        return self.on_shift and self.on_break == 0 and self.absent == 0

    @property
    def presence(self) -> Presence:
        """What the agent's presence would say in the service."""
        if not self.on_shift:
            return Presence.OFFLINE
        if self.on_break:
            return Presence.BREAK
        if self.absent:
            return Presence.AWAY
        return Presence.AVAILABLE

    def changed(self) -> None:
        """Something the engine reads changed: new sequence number, snapshot rebuilt."""
        self.seq += 1
        self._snapshot = None

    def snapshot(self, now_ms: int, window_ms: int) -> AgentSnapshot:
        """The agent as the store would load it at ``now_ms`` (cached until ``changed``)."""
        snap = self._snapshot
        if snap is None:
            cutoff = now_ms - window_ms
            if self.spans and self.spans[0].end_ms < cutoff:
                self.spans = [s for s in self.spans if s.end_ms >= cutoff]
            active = tuple(w.active for w in self.work.values() if w.active is not None)
            snap = AgentSnapshot(
                profile=self.profile,
                presence=self.presence,
                presence_since_ms=0,
                heartbeat_ms=now_ms,
                active=active,
                recent=tuple(self.spans),
                performance=self.performance,
                last_free_ms=self.last_free_ms,
                last_assigned_ms=self.last_assigned_ms,
                seq=self.seq,
            )
            self._snapshot = snap
        return snap

    def free_slots(self, channel: Channel, policy: Policy) -> int:
        """Items of ``channel`` the agent could take now (``scoring.load.free_slots``)."""
        by_capacity = self.spec.capacity.get(channel, 0) - self.load[channel]
        units = policy.units_for(channel)
        if units <= 0:
            return max(0, by_capacity)
        return max(0, min(by_capacity, (AGENT_UNIT_BUDGET - self.units_used) // units))

    def in_progress(self) -> bool:
        """Holds work that is not in wrap-up."""
        return any(w.wrap_until_ms == 0 for w in self.work.values())

    def staffed(self, now_ms: int, available: bool) -> None:
        """Log the start or end of an available interval."""
        if available:
            self.staffed_log.append([now_ms, -1])
        elif self.staffed_log and self.staffed_log[-1][1] < 0:
            self.staffed_log[-1][1] = now_ms

    def change_presence(self, kind: int, shift_end_ms: int) -> None:
        """Apply one presence change of ``presence_changes`` (``shift_end_ms``: the end of
        the window a shift start opens, 0 without a shift)."""
        if kind == SHIFT_START:
            self.on_shift = True
            if self.profile.shift_end_ms != shift_end_ms:
                self.profile = replace(self.profile, shift_end_ms=shift_end_ms)
        elif kind == SHIFT_END:
            self.on_shift = False
        elif kind == BREAK_START:
            self.on_break += 1
        elif kind == BREAK_END:
            self.on_break -= 1
        elif kind == ABSENCE_START:
            self.absent += 1
        else:
            self.absent -= 1


class Workforce:
    """All agents, with the capable/free indexes (see the module docstring)."""

    def __init__(self, specs: Iterable[AgentSpec], policy: Policy) -> None:
        self.policy = policy
        self.agents: dict[str, SimAgent] = {s.agent_id: SimAgent(s) for s in specs}
        self.free: dict[Channel, set[str]] = {c: set() for c in Channel}
        self.free_total: dict[Channel, int] = dict.fromkeys(Channel, 0)
        """Per channel: free slots of the available agents (occupancy cap ignored)."""
        self.staffed_slots: dict[Channel, int] = dict.fromkeys(Channel, 0)
        """Per channel: items the available agents could hold at full capacity (the
        forecast's ``staffed_slots``)."""
        self._capable: dict[NeedKey, frozenset[str]] = {}
        self._served: dict[str, tuple[Channel, ...]] = {
            a.agent_id: tuple(c for c in Channel if a.spec.capacity.get(c, 0) > 0)
            for a in self.agents.values()
        }

    def capable(self, key: NeedKey) -> frozenset[str]:
        """Agents serving the channel, holding every skill and speaking the language."""
        found = self._capable.get(key)
        if found is None:
            channel, skills, language = key
            found = frozenset(
                a.agent_id
                for a in self.agents.values()
                if a.spec.capacity.get(channel, 0) > 0
                and all(s in a.spec.skills for s in skills)
                and (not language or language in a.spec.languages)
            )
            self._capable[key] = found
        return found

    def matching(self, key: NeedKey) -> set[str]:
        """Capable agents with room on the channel now."""
        return self.free[key[0]] & self.capable(key)

    def refresh(self, agent: SimAgent) -> None:
        """Re-index ``agent`` after its work or availability changed."""
        agent_id = agent.agent_id
        available = agent.available
        for channel in self._served[agent_id]:
            slots = agent.free_slots(channel, self.policy) if available else 0
            self.free_total[channel] += slots - agent.room.get(channel, 0)
            agent.room[channel] = slots
            if slots > 0:
                self.free[channel].add(agent_id)
            else:
                self.free[channel].discard(agent_id)

    def set_available(self, agent: SimAgent, before: bool, now_ms: int) -> None:
        """Staffing book-keeping after ``agent``'s availability may have changed from
        ``before`` (the caller then marks the agent changed and re-indexes it)."""
        after = agent.available
        if after != before:
            sign = 1 if after else -1
            for channel in self._served[agent.agent_id]:
                units = self.policy.units_for(channel)
                capacity = agent.spec.capacity.get(channel, 0)
                full = capacity if units <= 0 else min(capacity, AGENT_UNIT_BUDGET // units)
                self.staffed_slots[channel] += sign * full
            agent.staffed(now_ms, after)


def shift_windows(shift: tuple[float, float] | None, horizon: float) -> list[tuple[float, float]]:
    """On-duty intervals in ``[0, horizon]`` of a daily ``shift`` (touching ones merged)."""
    if shift is None:
        return [(0.0, horizon)]
    windows: list[tuple[float, float]] = []
    for day in range(-1, int(horizon // DAY_S) + 2):
        lo = max(day * DAY_S + shift[0], 0.0)
        hi = min(day * DAY_S + shift[1], horizon)
        if hi <= lo:
            continue
        if windows and windows[-1][1] >= lo:
            windows[-1] = (windows[-1][0], hi)
        else:
            windows.append((lo, hi))
    return windows


def breaks_within(
    breaks: tuple[tuple[float, float], ...], lo: float, hi: float
) -> list[tuple[float, float]]:
    """The daily ``breaks`` (start, length) that start inside ``[lo, hi)``."""
    found: list[tuple[float, float]] = []
    for day in range(int(lo // DAY_S) - 1, int(hi // DAY_S) + 1):
        for start, length in breaks:
            at = day * DAY_S + start
            if lo <= at < hi:
                found.append((at, length))
    return sorted(found)


def presence_changes(spec: AgentSpec, horizon_s: float) -> list[tuple[int, int, int]]:
    """``(epoch ms, kind, shift end ms)`` of every presence change the event loop schedules
    for ``spec``, in the order it queues them (changes at one millisecond go in this order):
    per on-duty window its start (with the window's end, 0 without a shift) and end (unless
    at the horizon) and the breaks inside it, then the absences starting before the horizon."""
    changes: list[tuple[int, int, int]] = []
    for lo, hi in shift_windows(spec.shift, horizon_s):
        changes.append((epoch_ms(lo), SHIFT_START, 0 if spec.shift is None else epoch_ms(hi)))
        if hi < horizon_s:
            changes.append((epoch_ms(hi), SHIFT_END, 0))
        for at, length in breaks_within(spec.breaks, lo, min(hi, horizon_s)):
            changes.append((epoch_ms(at), BREAK_START, 0))
            changes.append((epoch_ms(at + length), BREAK_END, 0))
    for absence in spec.absences:
        if absence.start_s < horizon_s:
            changes.append((epoch_ms(absence.start_s), ABSENCE_START, 0))
            changes.append((epoch_ms(absence.end_s), ABSENCE_END, 0))
    return changes
