"""Live statistics of one tenant, for supervisors' dashboards (pure: everything is an argument).

From the QUEUED call records (others are ignored)::

    queue depth by channel        calls waiting per channel (every channel listed, 0 allowed)
    queue depth by skill          calls waiting per required skill (skills present only)
    longest wait                  max(now - (enqueued_ms or created_ms)), overall and per channel

From the agents: counts per presence (as set; every presence listed) and each agent's rolling
occupancy (``scoring.load.occupancy`` over ``policy.occupancy_window_s``).

From the history, over the windows ``[now - 15 min, now]`` and ``[now - 60 min, now]``, per
channel with SLA target ``T`` (``policy.sla_for``), each call once, on its first outcome in
the two hours read (``HISTORY_READ_MS``): its first answer, when in the window; else its
first abandon or expiry, when in the window (a call back in the queue after a
release, reclaim or rejection and answered again is one answered call, on its first wait, in
the window of its first answer only)::

    service level  = answered with wait_ms <= T
                     / (answered + (abandoned with wait_ms >= ABANDON_GRACE_MS) + expired)
                     (None when the denominator is 0 or the channel has no target)
    ASA (15 min)   = mean wait_ms / 1000 of the answered calls (None when none)
    answered       = answered calls per channel (15 min)
    abandoned      = abandons (a call abandons once, also one answered before it went back to
                     the queue), all channels (15 and 60 min), and per channel those after
                     ABANDON_GRACE_MS (15 and 60 min)

Callers who hang up within ``ABANDON_GRACE_MS`` count neither for nor against the service
level (the usual contact-centre convention for short abandons).
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from router.domain import (
    AgentSnapshot,
    CallRecord,
    CallStatus,
    Channel,
    Policy,
    Presence,
    frozen_map,
)
from router.ordering import waited_ms
from router.store import HistoryEntry
from scoring.load import occupancy

ANSWERED = "answered"
ABANDONED = "abandoned"
EXPIRED = "expired"
"""The call waited its channel's ``max_wait_s`` and left the queue (``Store.expire_call``)."""
_UNANSWERED = (ABANDONED, EXPIRED)
_OUTCOMES = frozenset({ANSWERED, *_UNANSWERED})

ABANDON_GRACE_MS = 5_000
"""Abandons shorter than this do not count against the service level."""

SHORT_WINDOW_MS = 15 * 60 * 1000
LONG_WINDOW_MS = 60 * 60 * 1000
HISTORY_READ_MS = 2 * LONG_WINDOW_MS
"""History GetStats reads (all the stores keep): a call's first answer up to an hour before
the long window is seen, so answering it again in the window does not count it there."""


@dataclass(frozen=True, slots=True)
class TenantStats:
    """A tenant's queue, agents and recent service at ``now_ms``."""

    now_ms: int
    queue_depth: int
    queue_depth_by_channel: Mapping[Channel, int]
    queue_depth_by_skill: Mapping[str, int]
    """Required skill -> queued calls needing it (a call counts once per skill)."""
    longest_wait_ms: int
    longest_wait_ms_by_channel: Mapping[Channel, int]
    agents_by_presence: Mapping[Presence, int]
    service_level_15m: Mapping[Channel, float | None]
    service_level_60m: Mapping[Channel, float | None]
    average_answer_s_15m: Mapping[Channel, float | None]
    """Average speed of answer in seconds."""
    abandoned_15m: int
    abandoned_60m: int
    answered_15m_by_channel: Mapping[Channel, int]
    abandoned_15m_by_channel: Mapping[Channel, int]
    """Abandoned after ``ABANDON_GRACE_MS``, like the service level's."""
    abandoned_60m_by_channel: Mapping[Channel, int]
    expired_15m_by_channel: Mapping[Channel, int]
    """Calls that left the queue at their channel's ``max_wait_s`` (each once)."""
    expired_60m_by_channel: Mapping[Channel, int]
    occupancy: Mapping[str, float]
    """Agent id -> rolling occupancy in [0, 1]."""


@dataclass(frozen=True, slots=True)
class _Tally:
    """One channel's calls whose first outcome is in a window."""

    answered: int
    answer_wait_ms: int
    """Sum of the answered calls' waits."""
    within: int
    """Answered within the channel's SLA target."""
    against: int
    """Expired, or abandoned after ``ABANDON_GRACE_MS``: unanswered in the service level."""

    @classmethod
    def of(cls, waits: Sequence[int], against: int, target_ms: int) -> _Tally:
        """The tally of answers after ``waits`` and ``against`` unanswered calls."""
        within = sum(1 for wait in waits if wait <= target_ms)
        return cls(len(waits), sum(waits), within, against)

    def level(self) -> float | None:
        """Share answered within the target (None: nothing counted)."""
        offered = self.answered + self.against
        return self.within / offered if offered else None

    def average_answer_s(self) -> float | None:
        """Mean time to answer in seconds (None: nothing answered)."""
        return self.answer_wait_ms / self.answered / 1000 if self.answered else None


def live_stats(
    calls: Sequence[CallRecord],
    agents: Sequence[AgentSnapshot],
    history: Sequence[HistoryEntry],
    policy: Policy,
    now_ms: int,
) -> TenantStats:
    """Compute the tenant's live statistics (see the module docstring); ``history`` in time
    order, as ``Store.history`` returns it."""
    queued = [record.call for record in calls if record.status == CallStatus.QUEUED]
    depth = Counter(call.channel for call in queued)
    skills = Counter(skill for call in queued for skill in {r.skill for r in call.required_skills})
    longest = dict.fromkeys(Channel, 0)
    for call in queued:
        longest[call.channel] = max(longest[call.channel], waited_ms(call, now_ms))
    presence = Counter(agent.presence for agent in agents)
    outcomes = _Outcomes(history, policy, now_ms)
    return TenantStats(
        now_ms=now_ms,
        queue_depth=len(queued),
        queue_depth_by_channel=frozen_map({channel: depth[channel] for channel in Channel}),
        queue_depth_by_skill=frozen_map(dict(sorted(skills.items()))),
        longest_wait_ms=max(longest.values()),
        longest_wait_ms_by_channel=frozen_map(longest),
        agents_by_presence=frozen_map({state: presence[state] for state in Presence}),
        service_level_15m=outcomes.levels(outcomes.short),
        service_level_60m=outcomes.levels(outcomes.long),
        average_answer_s_15m=frozen_map(
            {channel: outcomes.short[channel].average_answer_s() for channel in Channel}
        ),
        abandoned_15m=sum(outcomes.ended(ABANDONED, SHORT_WINDOW_MS).values()),
        abandoned_60m=sum(outcomes.ended(ABANDONED, LONG_WINDOW_MS).values()),
        answered_15m_by_channel=frozen_map(
            {channel: outcomes.short[channel].answered for channel in Channel}
        ),
        abandoned_15m_by_channel=outcomes.ended(ABANDONED, SHORT_WINDOW_MS, ABANDON_GRACE_MS),
        abandoned_60m_by_channel=outcomes.ended(ABANDONED, LONG_WINDOW_MS, ABANDON_GRACE_MS),
        expired_15m_by_channel=outcomes.ended(EXPIRED, SHORT_WINDOW_MS),
        expired_60m_by_channel=outcomes.ended(EXPIRED, LONG_WINDOW_MS),
        occupancy=frozen_map(
            {
                agent.agent_id: occupancy(agent, now_ms, policy.occupancy_window_s)
                for agent in sorted(agents, key=lambda agent: agent.agent_id)
            }
        ),
    )


def _at(entry: HistoryEntry) -> int:
    return entry.at_ms


class _Outcomes:
    """The history's outcomes over the two windows up to ``now_ms``: each call's first one
    tallied per channel, and the hour's abandons and expiries (each
    entry: a call answered before it went back to the queue and hung up counts too).

    Only the hour is walked entry by entry; the hour before it is looked at for the calls
    whose first outcome it holds (two set comprehensions), and the history is in time order
    (as the stores return it), so the windows are cut by bisection."""

    def __init__(self, history: Sequence[HistoryEntry], policy: Policy, now_ms: int) -> None:
        """Tally ``history`` (in time order) as of ``now_ms`` under ``policy``'s targets."""
        self._now = now_ms
        upto = bisect.bisect_right(history, now_ms, key=_at)
        start = bisect.bisect_left(history, now_ms - LONG_WINDOW_MS, 0, upto, key=_at)
        hour = [entry for entry in history[start:upto] if entry.kind in _OUTCOMES]
        earlier = history[:start]
        answered_before = {e.call_id for e in earlier if e.kind == ANSWERED}
        ended_before = {e.call_id for e in earlier if e.kind in _UNANSWERED}
        # Each call's earliest answer in the hour, else its earliest abandon or expiry; a
        # call answered before the hour, or ended before it and not answered in it, has its
        # first outcome there.
        answers = {e.call_id: e for e in reversed(hour) if e.kind == ANSWERED}
        ends = {e.call_id: e for e in reversed(hour) if e.kind != ANSWERED}
        self._targets = targets = {channel: _target_ms(policy, channel) for channel in Channel}
        short_since = now_ms - SHORT_WINDOW_MS
        recent: dict[Channel, list[int]] = {channel: [] for channel in Channel}
        older: dict[Channel, list[int]] = {channel: [] for channel in Channel}
        for call_id, entry in answers.items():  # the answered calls' waits, by window
            if call_id not in answered_before:
                (recent if entry.at_ms >= short_since else older)[entry.channel].append(
                    entry.wait_ms
                )
        before = answered_before | ended_before
        against = [
            entry
            for call_id, entry in ends.items()
            if call_id not in answers
            and call_id not in before
            and (entry.kind == EXPIRED or entry.wait_ms >= ABANDON_GRACE_MS)
        ]
        against_short = Counter(e.channel for e in against if e.at_ms >= short_since)
        against_long = Counter(e.channel for e in against)
        self.short = {ch: _Tally.of(recent[ch], against_short[ch], targets[ch]) for ch in Channel}
        self.long = {
            ch: _Tally.of(recent[ch] + older[ch], against_long[ch], targets[ch]) for ch in Channel
        }
        self._ended = [entry for entry in hour if entry.kind != ANSWERED]

    def levels(self, tallies: Mapping[Channel, _Tally]) -> Mapping[Channel, float | None]:
        """Service level per channel of one window's ``tallies`` (None without a target)."""
        return frozen_map(
            {
                channel: tallies[channel].level() if self._targets[channel] else None
                for channel in Channel
            }
        )

    def ended(self, kind: str, window_ms: int, least_wait_ms: int = 0) -> Mapping[Channel, int]:
        """The window's ``kind`` entries (abandons, expiries) that waited ``least_wait_ms``
        or longer, per channel (every channel listed)."""
        since = self._now - window_ms
        counts = Counter(
            e.channel
            for e in self._ended
            if e.kind == kind and e.at_ms >= since and e.wait_ms >= least_wait_ms
        )
        return frozen_map({channel: counts[channel] for channel in Channel})


def _target_ms(policy: Policy, channel: Channel) -> int:
    """The channel's SLA target in ms (0: none)."""
    target = policy.sla_for(channel)
    return target.target_s * 1000 if target is not None and target.target_s > 0 else 0
