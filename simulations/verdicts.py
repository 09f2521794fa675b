"""When hard-rule verdicts change with time alone, and caches that know it.

Most hard rules (``router.eligibility``) only change when the agent changes (a new ``seq``):
presence, skills, language, team, region, capacity. Three change with the clock:

- the rolling-occupancy cap: ``scoring.load.occupancy`` is piecewise linear in time, with
  breakpoints where a work span or an item's start enters or leaves the window, so the next
  moment it crosses the cap is found exactly (``crossing``);
- the shift rule: work of ``h`` seconds is refused once ``now + h`` passes the shift end,
  or a scheduled absence's start;
- widening steps and SLA risk, which belong to the call, not the agent
  (``simulations.escalation``).

``Verdicts`` caches, for one group of identical calls, which free agents the rules accepted
or refused and until when the verdict holds; ``OccupancyClock`` caches, per agent state, the
next time its occupancy crosses its cap.
"""

from __future__ import annotations

import math

from router.domain import AGENT_UNIT_BUDGET, AgentProfile, AgentSnapshot, Policy
from scoring.load import occupancy
from simulations.workforce import SimAgent


def crossing(snap: AgentSnapshot, now: int, window_s: int, cap: float, *, under: bool) -> float:
    """First millisecond ``>= now`` at which ``occupancy < cap`` is ``under`` (``inf`` if not
    within one window).

    Occupancy is linear between breakpoints: find the first breakpoint on the wanted side,
    then bisect the linear (so monotone) piece before it."""
    if window_s <= 0:
        return now if under else math.inf

    def wanted(at: int) -> bool:
        return (occupancy(snap, at, window_s) < cap) == under

    if wanted(now):
        return now
    window_ms = window_s * 1000
    points = {now + window_ms}
    for span in snap.recent:
        points.update((span.start_ms + window_ms, span.end_ms + window_ms))
    for work in snap.active:
        points.add(work.start_ms + window_ms)
    lo = now
    for point in sorted(p for p in points if now < p <= now + window_ms):
        if wanted(point):
            hi = point
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if wanted(mid):
                    hi = mid
                else:
                    lo = mid
            return hi
        lo = point
    return math.inf


def shift_flip(profile: AgentProfile, now: int, handle_ms: int) -> float:
    """First millisecond after ``now`` at which ``router.eligibility.shift_reason`` starts
    refusing work of ``handle_ms`` (``inf``: not before the agent changes)."""
    at = math.inf
    if profile.shift_end_ms > 0:
        at = profile.shift_end_ms - handle_ms + 1
    for absence in profile.absences:
        if absence.start_ms > now:
            at = min(at, absence.start_ms - handle_ms + 1)
    return max(at, now + 1)


class OccupancyClock:
    """When an agent's occupancy is under its cap, and when that may change.

    Idle, occupancy only falls: the moment it goes under the cap is exact (``crossing``)
    and computed once per agent state. With work in hand it moves both ways, but never
    faster than a window's worth per window going down, nor faster than the items in hand
    going up: the answers are then the earliest moments a change is possible, and whoever
    asks looks again then."""

    def __init__(self, policy: Policy, window_ms: int) -> None:
        self.policy = policy
        self.window_ms = window_ms

    def under_cap(self, agent: SimAgent, now: int) -> bool:
        """Rolling occupancy under the agent's cap at ``now``."""
        if self.window_ms <= 0:
            return True  # no window: occupancy is 0, every cap is above it
        if agent.work:
            return self._busy(agent, now) < self.policy.occupancy_cap_for(agent.profile)
        return self.release_at(agent, now) <= now

    def release_at(self, agent: SimAgent, now: int) -> float:
        """When the occupancy may be under the cap again (exact while idle; a past moment
        means it has been under since)."""
        if self.window_ms <= 0:
            return now
        if agent.work:
            excess = self._busy(agent, now) - self.policy.occupancy_cap_for(agent.profile)
            return now if excess < 0 else now + max(1, math.floor(excess * self.window_ms))
        cached = agent.release
        if cached is not None and cached[0] == agent.seq:
            return cached[1]
        cap = self.policy.occupancy_cap_for(agent.profile)
        snap = agent.snapshot(now, self.window_ms)
        at = crossing(snap, now, self.policy.occupancy_window_s, cap, under=True)
        agent.release = (agent.seq, at)
        return at

    def rise_at(self, agent: SimAgent, now: int) -> float:
        """The earliest moment the occupancy may reach the cap (``inf`` while idle)."""
        if not agent.work or self.window_ms <= 0:
            return math.inf
        room = self.policy.occupancy_cap_for(agent.profile) - self._busy(agent, now)
        if room <= 0:
            return now
        rate = agent.units_used / AGENT_UNIT_BUDGET / self.window_ms  # per ms, at most
        return now + max(1, math.floor(room / rate))

    def _busy(self, agent: SimAgent, now: int) -> float:
        snap = agent.snapshot(now, self.window_ms)
        return occupancy(snap, now, self.policy.occupancy_window_s)


class Verdicts:
    """Cached hard-rule verdicts on free, capable agents for one (bucket, widening step)."""

    __slots__ = ("_accept_lapse", "accepted", "expiry", "refused", "until")

    def __init__(self) -> None:
        self.refused: set[str] = set()
        self.expiry: dict[str, float] = {}
        """Refusals that lapse at a known time (the occupancy cap)."""
        self.accepted: set[str] = set()
        self.until: dict[str, float] = {}
        """Accepted agent -> until when (exclusive) the acceptance holds."""
        self._accept_lapse = math.inf
        """No acceptance lapses before this (a lower bound)."""

    def refuse(self, agent_id: str, until: float) -> None:
        self.refused.add(agent_id)
        if until < math.inf:
            self.expiry[agent_id] = until

    def accept(self, agent_id: str, until: float) -> None:
        self.accepted.add(agent_id)
        self.until[agent_id] = until
        self._accept_lapse = min(self._accept_lapse, until)

    def forget(self, agent_id: str) -> None:
        self.refused.discard(agent_id)
        self.expiry.pop(agent_id, None)
        self.accepted.discard(agent_id)
        self.until.pop(agent_id, None)

    def expire(self, now: int) -> float:
        """Drop lapsed verdicts; the earliest refusal lapse still to come (``inf``: none)."""
        if now >= self._accept_lapse:
            for agent_id, at in list(self.until.items()):
                if at <= now:
                    self.accepted.discard(agent_id)
                    del self.until[agent_id]
            self._accept_lapse = min(self.until.values(), default=math.inf)
        soonest = math.inf
        for agent_id, at in list(self.expiry.items()):
            if at <= now:
                self.refused.discard(agent_id)
                del self.expiry[agent_id]
            elif at < soonest:  # min(soonest, at), without the call: once per refusal and pass
                soonest = at
        return soonest
