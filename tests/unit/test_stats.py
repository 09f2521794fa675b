"""Unit tests for ``router.stats`` on a small hand-made tenant."""

from __future__ import annotations

import random

import pytest

from router import stats_api
from router.domain import (
    AgentProfile,
    Call,
    CallRecord,
    CallStatus,
    Channel,
    Policy,
    Presence,
    SkillRequirement,
    WorkSpan,
)
from router.memory_store import MemoryStore
from router.stats import TenantStats, live_stats
from router.store import HistoryEntry
from tests.helpers import FakeClock
from tests.unit.factories import HOUR_MS, MINUTE_MS, NOW, make_agent, work


def record(call: Call, status: CallStatus = CallStatus.QUEUED) -> CallRecord:
    """A stored call in ``status``."""
    return CallRecord(call=call, status=status, assignment=None, updated_ms=NOW)


def entry(kind: str, channel: Channel, minutes_ago: int, wait_s: int) -> HistoryEntry:
    """A history entry ``minutes_ago`` before now."""
    return HistoryEntry(
        kind=kind,
        channel=channel,
        at_ms=NOW - minutes_ago * MINUTE_MS,
        wait_ms=wait_s * 1000,
        call_id=f"{kind}-{minutes_ago}",
    )


def in_order(history: list[HistoryEntry]) -> list[HistoryEntry]:
    """``history`` in time order (oldest first), as the stores return it."""
    return sorted(history, key=lambda e: e.at_ms)


CALLS = [
    record(
        Call(
            "q1",
            Channel.VOICE,
            required_skills=(SkillRequirement("billing"), SkillRequirement("tech")),
            created_ms=NOW - 40_000,
            enqueued_ms=NOW - 30_000,
        )
    ),
    record(Call("q2", Channel.VOICE, (SkillRequirement("billing"),), created_ms=NOW - 10_000)),
    record(
        Call(
            "q3",
            Channel.CHAT,
            (SkillRequirement("tech"),),
            created_ms=NOW - 200_000,
            enqueued_ms=NOW - 90_000,
        )
    ),
    record(Call("done", Channel.VOICE, created_ms=NOW - 500_000), CallStatus.ASSIGNED),
]
"""Three queued calls (voice 30 s and 10 s, chat 90 s) and one already assigned."""

AGENTS = [
    make_agent("a1", recent=(WorkSpan(NOW - HOUR_MS, NOW - HOUR_MS // 2, 100),)),
    make_agent("a2", presence=Presence.BREAK),
    make_agent("a3", active=(work(Channel.CHAT, 25, NOW - HOUR_MS),)),
]
"""Occupancy over the last hour: 0.5 (voice for half of it), 0, 0.25 (one chat all along)."""

HISTORY = [  # newest first: ``in_order`` sorts it as the stores give it
    entry("answered", Channel.VOICE, 1, 5),  # within 20 s
    entry("answered", Channel.VOICE, 5, 30),  # late
    entry("abandoned", Channel.VOICE, 6, 3),  # short abandon: not in the service level
    entry("abandoned", Channel.VOICE, 10, 40),
    entry("answered", Channel.VOICE, 30, 10),  # 60-minute window only
    entry("abandoned", Channel.VOICE, 50, 50),  # 60-minute window only
    entry("answered", Channel.VOICE, 70, 1),  # outside both windows
    entry("answered", Channel.CHAT, 2, 45),  # within 60 s
    entry("completed", Channel.CHAT, 3, 600),  # work, not a wait
]


def test_queue_and_agent_numbers() -> None:
    """Depth, longest waits, presence counts and occupancy of the hand-made tenant."""
    stats = live_stats(CALLS, AGENTS, in_order(HISTORY), Policy(), NOW)
    assert stats.now_ms == NOW
    assert stats.queue_depth == 3
    assert stats.queue_depth_by_channel == {
        Channel.VOICE: 2,
        Channel.CHAT: 1,
        Channel.EMAIL: 0,
        Channel.WHATSAPP: 0,
        Channel.SOCIAL: 0,
    }
    assert stats.queue_depth_by_skill == {"billing": 2, "tech": 2}
    assert stats.longest_wait_ms == 90_000
    assert stats.longest_wait_ms_by_channel[Channel.VOICE] == 30_000
    assert stats.longest_wait_ms_by_channel[Channel.CHAT] == 90_000
    assert stats.longest_wait_ms_by_channel[Channel.EMAIL] == 0
    assert stats.agents_by_presence[Presence.AVAILABLE] == 2
    assert stats.agents_by_presence[Presence.BREAK] == 1
    assert sum(stats.agents_by_presence.values()) == 3
    assert stats.occupancy == {
        "a1": pytest.approx(0.5),
        "a2": 0.0,
        "a3": pytest.approx(0.25),
    }


def test_service_numbers() -> None:
    """Service level, average speed of answer and abandons over 15 and 60 minutes."""
    stats = live_stats(CALLS, AGENTS, in_order(HISTORY), Policy(), NOW)
    # 15 min voice: answered 5 s (in) and 30 s (late), one abandon after 40 s -> 1 / 3.
    assert stats.service_level_15m[Channel.VOICE] == pytest.approx(1 / 3)
    # 60 min voice: adds 10 s (in) and an abandon after 50 s -> 2 / 5.
    assert stats.service_level_60m[Channel.VOICE] == pytest.approx(0.4)
    assert stats.service_level_15m[Channel.CHAT] == 1.0
    assert stats.service_level_60m[Channel.CHAT] == 1.0
    assert stats.service_level_15m[Channel.EMAIL] is None
    assert stats.average_answer_s_15m[Channel.VOICE] == pytest.approx(17.5)
    assert stats.average_answer_s_15m[Channel.CHAT] == pytest.approx(45.0)
    assert stats.average_answer_s_15m[Channel.EMAIL] is None
    assert stats.abandoned_15m == 2
    assert stats.abandoned_60m == 3


def test_a_call_answered_twice_counts_once() -> None:
    """A call answered, back in the queue (released, reclaimed, rejected) and answered again
    is one call answered, on its first answer's wait: the service level, the average speed of
    answer and the per-channel counts count calls, not answers. A call answered and later
    abandoned in the queue was answered; its abandon still counts among the abandons."""

    def again(kind: str, call_id: str, minutes_ago: int, wait_s: int) -> HistoryEntry:
        return HistoryEntry(
            kind, Channel.VOICE, NOW - minutes_ago * MINUTE_MS, wait_s * 1000, call_id
        )

    history = [
        again("answered", "c1", 9, 1),  # at once
        again("answered", "c1", 7, 121),  # again after a release: the same call
        again("answered", "c2", 8, 30),  # late
        again("answered", "c3", 6, 2),
        again("abandoned", "c3", 4, 60),  # back in the queue, then hung up
    ]
    stats = live_stats([], [], in_order(history), Policy(), NOW)
    # c1 and c3 within 20 s, c2 late: 2 / 3 (answers alone: 2 / 5 with c3's abandon).
    assert stats.service_level_15m[Channel.VOICE] == pytest.approx(2 / 3)
    assert stats.average_answer_s_15m[Channel.VOICE] == pytest.approx(11.0)
    assert stats.answered_15m_by_channel[Channel.VOICE] == 3
    assert stats.abandoned_15m_by_channel[Channel.VOICE] == 1
    assert stats.abandoned_15m == 1


def test_a_call_answered_again_counts_in_the_window_of_its_first_answer() -> None:
    """A call answered in 5 s, released 20 minutes later and answered again: at 21 minutes
    it is not one of the last 15 minutes' answered calls (its first answer is older), nor
    does its second wait (the first handling included) count against the service level."""
    history = [
        HistoryEntry("answered", Channel.VOICE, NOW - 21 * MINUTE_MS, 5_000, "c1"),
        HistoryEntry("answered", Channel.VOICE, NOW - MINUTE_MS, 1_200_000, "c1"),
        HistoryEntry("answered", Channel.VOICE, NOW - 2 * MINUTE_MS, 3_000, "c2"),
    ]
    stats = live_stats([], [], in_order(history), Policy(), NOW)
    assert stats.answered_15m_by_channel[Channel.VOICE] == 1
    assert stats.service_level_15m[Channel.VOICE] == 1.0
    assert stats.average_answer_s_15m[Channel.VOICE] == pytest.approx(3.0)
    assert stats.service_level_60m[Channel.VOICE] == 1.0  # both first answers within 20 s


def test_expired_calls_count_against_the_service_level() -> None:
    """A call that left the queue at the channel's limit counts against the service level,
    however short the limit (no grace, unlike a caller hanging up), and in the per-channel
    expiries of its windows; not among the abandons. One answered before it went back to
    the queue and expired counts as answered in the service level, and still as expired."""

    def at(kind: str, call_id: str, minutes_ago: int, wait_s: int) -> HistoryEntry:
        return HistoryEntry(
            kind, Channel.CHAT, NOW - minutes_ago * MINUTE_MS, wait_s * 1000, call_id
        )

    history = [
        at("answered", "c1", 9, 10),  # within 60 s
        at("expired", "c2", 8, 3),  # a 3 s limit
        at("answered", "c3", 7, 5),
        at("expired", "c3", 5, 300),  # released, then expired: answered at first
        at("expired", "c4", 40, 120),  # 60-minute window only
    ]
    stats = live_stats([], [], in_order(history), Policy(), NOW)
    assert stats.service_level_15m[Channel.CHAT] == pytest.approx(2 / 3)
    assert stats.service_level_60m[Channel.CHAT] == pytest.approx(2 / 4)
    assert stats.expired_15m_by_channel[Channel.CHAT] == 2
    assert stats.expired_60m_by_channel[Channel.CHAT] == 3
    assert stats.expired_15m_by_channel[Channel.VOICE] == 0
    assert stats.abandoned_15m == stats.abandoned_60m == 0
    assert stats.answered_15m_by_channel[Channel.CHAT] == 2


def test_empty_tenant_and_channels_without_target() -> None:
    """Nothing queued and no history give zeros and Nones; a channel without an SLA target
    has no service level even with answered calls."""
    empty = live_stats([], [], [], Policy(), NOW)
    assert empty.queue_depth == 0
    assert empty.longest_wait_ms == 0
    assert empty.queue_depth_by_skill == {}
    assert all(level is None for level in empty.service_level_60m.values())
    assert empty.occupancy == {}
    no_targets = live_stats([], [], in_order(HISTORY), Policy(sla={}), NOW)
    assert no_targets.service_level_15m[Channel.VOICE] is None
    assert no_targets.average_answer_s_15m[Channel.VOICE] == pytest.approx(17.5)


def _reference(history: list[HistoryEntry], policy: Policy, now: int) -> dict[str, object]:
    """The module docstring's history figures, worked out the plain way: each call's first
    outcome (its first answer, else its first abandon or expiry) over the whole history,
    then every window and channel counted on its own."""
    first: dict[str, HistoryEntry] = {}
    for e in history:
        if e.at_ms > now or e.kind not in ("answered", "abandoned", "expired"):
            continue
        seen = first.get(e.call_id)
        if seen is None or (seen.kind != "answered" and e.kind == "answered"):
            first[e.call_id] = e

    def window(entries: list[HistoryEntry], minutes: int) -> list[HistoryEntry]:
        return [e for e in entries if now - minutes * MINUTE_MS <= e.at_ms <= now]

    def level(minutes: int, channel: Channel) -> float | None:
        target = policy.sla_for(channel)
        if target is None or target.target_s <= 0:
            return None
        calls = [e for e in window(list(first.values()), minutes) if e.channel == channel]
        answered = [e for e in calls if e.kind == "answered"]
        within = [e for e in answered if e.wait_ms <= target.target_s * 1000]
        against = [
            e for e in calls if e.kind == "expired" or (e.kind == "abandoned" and e.wait_ms >= 5000)
        ]
        offered = len(answered) + len(against)
        return len(within) / offered if offered else None

    def ended(kind: str, minutes: int, least_ms: int, channel: Channel) -> int:
        entries = window(history, minutes)
        return sum(
            1 for e in entries if e.kind == kind and e.channel == channel and e.wait_ms >= least_ms
        )

    short = [e for e in window(list(first.values()), 15) if e.kind == "answered"]
    out: dict[str, object] = {
        "abandoned_15m": sum(1 for e in window(history, 15) if e.kind == "abandoned"),
        "abandoned_60m": sum(1 for e in window(history, 60) if e.kind == "abandoned"),
    }
    for ch in Channel:
        waits = [e.wait_ms for e in short if e.channel == ch]
        out[f"{ch.value} level 15"] = level(15, ch)
        out[f"{ch.value} level 60"] = level(60, ch)
        out[f"{ch.value} asa"] = sum(waits) / len(waits) / 1000 if waits else None
        out[f"{ch.value} answered"] = len(waits)
        out[f"{ch.value} abandoned 15"] = ended("abandoned", 15, 5000, ch)
        out[f"{ch.value} abandoned 60"] = ended("abandoned", 60, 5000, ch)
        out[f"{ch.value} expired 15"] = ended("expired", 15, 0, ch)
        out[f"{ch.value} expired 60"] = ended("expired", 60, 0, ch)
    return out


def _figures(stats: TenantStats) -> dict[str, object]:
    """``stats``' history figures, keyed as ``_reference``'s."""
    out: dict[str, object] = {
        "abandoned_15m": stats.abandoned_15m,
        "abandoned_60m": stats.abandoned_60m,
    }
    for ch in Channel:
        out[f"{ch.value} level 15"] = stats.service_level_15m[ch]
        out[f"{ch.value} level 60"] = stats.service_level_60m[ch]
        out[f"{ch.value} asa"] = stats.average_answer_s_15m[ch]
        out[f"{ch.value} answered"] = stats.answered_15m_by_channel[ch]
        out[f"{ch.value} abandoned 15"] = stats.abandoned_15m_by_channel[ch]
        out[f"{ch.value} abandoned 60"] = stats.abandoned_60m_by_channel[ch]
        out[f"{ch.value} expired 15"] = stats.expired_15m_by_channel[ch]
        out[f"{ch.value} expired 60"] = stats.expired_60m_by_channel[ch]
    return out


@pytest.mark.parametrize("seed", range(40))
def test_the_history_figures_match_the_plain_count(seed: int) -> None:
    """On random histories (calls answered, answered again, hung up or expired after an
    answer, several entries at one time, entries at the windows' edges, after ``now`` and
    two hours back; a policy with a channel without target), every history figure is the
    one the plain count of the module docstring gives."""
    rng = random.Random(seed)
    edges = [NOW - 15 * MINUTE_MS, NOW - HOUR_MS, NOW, NOW + 1, NOW - 2 * HOUR_MS]
    history: list[HistoryEntry] = []
    for n in range(rng.randrange(1, 400)):
        at = rng.choice(edges) if rng.random() < 0.1 else NOW - rng.randrange(2 * HOUR_MS)
        channel = rng.choice(list(Channel))
        for step in range(rng.choice((1, 1, 1, 2, 3))):
            kind = rng.choice(("answered", "answered", "abandoned", "expired", "completed"))
            wait = rng.choice((0, 4_999, 5_000, 20_000, 20_001, rng.randrange(600_000)))
            when = min(at + step * rng.randrange(0, 30 * MINUTE_MS), NOW + 1)
            history.append(HistoryEntry(kind, channel, when, wait, f"c{n}"))
    sla = dict(Policy().sla)
    sla.pop(rng.choice(list(sla)), None)
    policy = Policy(sla=sla)
    stats = live_stats([], [], in_order(history), policy, NOW)
    assert _figures(stats) == pytest.approx(_reference(in_order(history), policy, NOW))


def test_get_stats_lists_the_deepest_skills_and_the_first_agents_and_counts_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The answer's skill and agent lists are bounded (a queue of calls each needing its own
    skills, or a huge team, once made it larger than any gRPC client takes): the deepest
    skills first, ties by name; agents in id order; what is left out is counted."""
    monkeypatch.setattr(stats_api, "MAX_SKILLS", 2)
    monkeypatch.setattr(stats_api, "MAX_AGENTS", 2)
    store = MemoryStore(FakeClock())
    for agent_id in ("c", "a", "b"):
        store.create_agent("t", AgentProfile(agent_id))
    needs = {"q1": ("x", "y"), "q2": ("y", "z"), "q3": ("w",), "q4": ("y", "w")}
    for call_id, skills in needs.items():
        required = tuple(SkillRequirement(skill, 1) for skill in skills)
        store.enqueue("t", call_id, "fp", Call(call_id, Channel.CHAT, required), policy=Policy())
    answer = stats_api.stats_to_pb(store, "t")
    assert [(s.skill, s.queued) for s in answer.skills] == [("y", 3), ("w", 2)]
    assert answer.skills_omitted == 2  # x and z, one call each
    assert [a.agent_id for a in answer.agents] == ["a", "b"]
    assert answer.agents_omitted == 1
    monkeypatch.setattr(stats_api, "MAX_SKILLS", 1_000)
    monkeypatch.setattr(stats_api, "MAX_AGENTS", 10_000)
    whole = stats_api.stats_to_pb(store, "t")
    assert (len(whole.skills), whole.skills_omitted, len(whole.agents), whole.agents_omitted) == (
        4,
        0,
        3,
        0,
    )
