"""Live statistics of one tenant, for supervisors' dashboards (pure: everything is an argument).

From the QUEUED call records (others are ignored)::

    queue depth by channel        calls waiting per channel (every channel listed, 0 allowed)
    queue depth by skill          calls waiting per required skill (skills present only)
    longest wait                  max(now - (enqueued_ms or created_ms)), overall and per channel

From the agents: counts per presence (as set; every presence listed) and each agent's rolling
occupancy (``scoring.load.occupancy`` over ``policy.occupancy_window_s``).

From the history, over the windows ``[now - 15 min, now]`` and ``[now - 60 min, now]``, per
channel with SLA target ``T`` (``policy.sla_for``), each call once (``first_outcomes``: its first
answer, when in the window; else its abandon or expiry; a call back in the queue after a
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

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
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


def service_level(calls: Iterable[HistoryEntry], channel: Channel, target_s: int) -> float | None:
    """Share of the channel's ``calls`` (a window's ``first_outcomes``) answered within
    ``target_s``."""
    answered = within = abandoned = 0
    for entry in calls:
        if entry.channel != channel:
            continue
        if entry.kind == ANSWERED:
            answered += 1
            if entry.wait_ms <= target_s * 1000:
                within += 1
        elif entry.kind == EXPIRED or (
            entry.kind == ABANDONED and entry.wait_ms >= ABANDON_GRACE_MS
        ):
            abandoned += 1
    offered = answered + abandoned
    return within / offered if offered else None


def average_answer_s(calls: Iterable[HistoryEntry], channel: Channel) -> float | None:
    """Mean time to answer (seconds) of the channel's answered ``calls`` (of a window)."""
    waits = [e.wait_ms for e in calls if e.kind == ANSWERED and e.channel == channel]
    return sum(waits) / len(waits) / 1000 if waits else None


def live_stats(
    calls: Sequence[CallRecord],
    agents: Sequence[AgentSnapshot],
    history: Sequence[HistoryEntry],
    policy: Policy,
    now_ms: int,
) -> TenantStats:
    """Compute the tenant's live statistics (see the module docstring)."""
    queued = [record.call for record in calls if record.status == CallStatus.QUEUED]
    depth = Counter(call.channel for call in queued)
    skills = Counter(skill for call in queued for skill in {r.skill for r in call.required_skills})
    longest = dict.fromkeys(Channel, 0)
    for call in queued:
        longest[call.channel] = max(longest[call.channel], waited_ms(call, now_ms))
    presence = Counter(agent.presence for agent in agents)
    waits = [entry for entry in history if entry.kind in _OUTCOMES]  # not work done
    firsts = first_outcomes(waits, now_ms)  # each call once, worked out once
    recent = _window(waits, now_ms - LONG_WINDOW_MS, now_ms)  # what the counts look at
    short = _window(firsts, now_ms - SHORT_WINDOW_MS, now_ms)

    def levels(window_ms: int) -> Mapping[Channel, float | None]:
        """Service level per channel over the last ``window_ms``."""
        calls = _window(firsts, now_ms - window_ms, now_ms)
        out: dict[Channel, float | None] = {}
        for channel in Channel:
            target = policy.sla_for(channel)
            out[channel] = (
                None
                if target is None or target.target_s <= 0
                else service_level(calls, channel, target.target_s)
            )
        return frozen_map(out)

    return TenantStats(
        now_ms=now_ms,
        queue_depth=len(queued),
        queue_depth_by_channel=frozen_map({channel: depth[channel] for channel in Channel}),
        queue_depth_by_skill=frozen_map(dict(sorted(skills.items()))),
        longest_wait_ms=max(longest.values()),
        longest_wait_ms_by_channel=frozen_map(longest),
        agents_by_presence=frozen_map({state: presence[state] for state in Presence}),
        service_level_15m=levels(SHORT_WINDOW_MS),
        service_level_60m=levels(LONG_WINDOW_MS),
        average_answer_s_15m=frozen_map(
            {channel: average_answer_s(short, channel) for channel in Channel}
        ),
        abandoned_15m=_abandoned(recent, now_ms - SHORT_WINDOW_MS, now_ms),
        abandoned_60m=_abandoned(recent, now_ms - LONG_WINDOW_MS, now_ms),
        answered_15m_by_channel=_per_channel(e for e in short if e.kind == ANSWERED),
        abandoned_15m_by_channel=_ended_per_channel(
            recent, SHORT_WINDOW_MS, now_ms, ABANDONED, ABANDON_GRACE_MS
        ),
        abandoned_60m_by_channel=_ended_per_channel(
            recent, LONG_WINDOW_MS, now_ms, ABANDONED, ABANDON_GRACE_MS
        ),
        expired_15m_by_channel=_ended_per_channel(recent, SHORT_WINDOW_MS, now_ms, EXPIRED),
        expired_60m_by_channel=_ended_per_channel(recent, LONG_WINDOW_MS, now_ms, EXPIRED),
        occupancy=frozen_map(
            {
                agent.agent_id: occupancy(agent, now_ms, policy.occupancy_window_s)
                for agent in sorted(agents, key=lambda agent: agent.agent_id)
            }
        ),
    )


def _window(history: Sequence[HistoryEntry], since_ms: int, now_ms: int) -> list[HistoryEntry]:
    """Entries with ``since_ms <= at_ms <= now_ms``."""
    return [entry for entry in history if since_ms <= entry.at_ms <= now_ms]


def first_outcomes(history: Sequence[HistoryEntry], now_ms: int) -> list[HistoryEntry]:
    """Each call's first answer, else its abandon or expiry, up to ``now_ms`` (``history``
    in time order, as the stores return it); other kinds are left out."""
    outcome: dict[str, HistoryEntry] = {}
    for entry in history:
        if entry.at_ms > now_ms or entry.kind not in _OUTCOMES:
            continue
        seen = outcome.get(entry.call_id)
        if seen is None or (seen.kind in _UNANSWERED and entry.kind == ANSWERED):
            outcome[entry.call_id] = entry
    return list(outcome.values())


def _per_channel(entries: Iterable[HistoryEntry]) -> Mapping[Channel, int]:
    """How many of ``entries`` per channel (every channel listed)."""
    counts = Counter(entry.channel for entry in entries)
    return frozen_map({channel: counts[channel] for channel in Channel})


def _ended_per_channel(
    history: Sequence[HistoryEntry],
    window_ms: int,
    now_ms: int,
    kind: str,
    least_wait_ms: int = 0,
) -> Mapping[Channel, int]:
    """The window's ``kind`` entries (abandons, expiries: once per call; a call answered
    before it went back to the queue counts too) that waited ``least_wait_ms`` or longer,
    per channel."""
    return _per_channel(
        entry
        for entry in _window(history, now_ms - window_ms, now_ms)
        if entry.kind == kind and entry.wait_ms >= least_wait_ms
    )


def _abandoned(history: Sequence[HistoryEntry], since_ms: int, now_ms: int) -> int:
    """Abandoned entries since ``since_ms``, all channels."""
    return sum(1 for entry in _window(history, since_ms, now_ms) if entry.kind == ABANDONED)
