"""Unit tests for ``router.forecast``: service rate, estimated wait and SLA state."""

from __future__ import annotations

import dataclasses
import itertools
import random
from collections.abc import Mapping

import pytest

from router.domain import (
    Call,
    Channel,
    Policy,
    Presence,
    SlaTarget,
    WideningStep,
    WorkSpan,
    frozen_map,
)
from router.forecast import (
    RATE_WINDOW_S,
    agents_for,
    channel_position,
    estimated_wait_s,
    pool_key,
    pool_terms,
    sla_state,
)
from router.store import HistoryEntry
from router.store_common import count_completions
from tests.unit.factories import HOUR_MS, NOW, make_agent, make_call, work


def completions_in(
    history: list[HistoryEntry], now_ms: int, window_s: int = RATE_WINDOW_S
) -> Mapping[Channel, int]:
    """``Store.completions`` over the last ``window_s`` of ``history``."""
    return count_completions(history, now_ms - window_s * 1000, now_ms)


def done(channel: Channel, ago_s: int, kind: str = "completed") -> HistoryEntry:
    """A history entry ``ago_s`` seconds before now."""
    return HistoryEntry(
        kind=kind, channel=channel, at_ms=NOW - ago_s * 1000, wait_ms=60_000, call_id="x"
    )


def test_completions_count_the_channel_in_the_window() -> None:
    """Only ``completed`` entries of the channel within [now - window, now] count (the
    service rate is that count over the window: ``RATE_WINDOW_S``)."""
    history = [
        done(Channel.VOICE, 10),
        done(Channel.VOICE, 900),  # on the window's edge: counts
        done(Channel.VOICE, 901),  # too old
        done(Channel.VOICE, -5),  # in the future: ignored
        done(Channel.VOICE, 20, kind="answered"),
        done(Channel.VOICE, 30, kind="abandoned"),
        done(Channel.CHAT, 40),
    ]
    window = completions_in(history, NOW)
    assert (window[Channel.VOICE], window[Channel.CHAT], window[Channel.EMAIL]) == (2, 1, 0)
    assert completions_in(history, NOW, 60)[Channel.VOICE] == 1
    assert completions_in(history, NOW, 0)[Channel.VOICE] == 0


BUSY = (work(Channel.VOICE, 100),)
POLICY = Policy(expected_handle_s=frozen_map({Channel.VOICE: 300, Channel.CHAT: 600}))


def test_wait_is_zero_while_an_agent_is_free() -> None:
    """Position 1 waits nothing with one free agent; position 2 waits for a completion."""
    agents = [make_agent("free"), make_agent("busy", active=BUSY)]
    assert estimated_wait_s(1, Channel.VOICE, {}, agents, POLICY, NOW) == 0.0
    # Two agents serve voice, 300 s each: one completion every 150 s.
    assert estimated_wait_s(2, Channel.VOICE, {}, agents, POLICY, NOW) == pytest.approx(150.0)


def test_wait_uses_the_fallback_rate_without_history() -> None:
    """All busy, no history: position / (staffed slots / handle time)."""
    agents = [make_agent(f"a{i}", active=BUSY) for i in range(3)]
    assert estimated_wait_s(1, Channel.VOICE, {}, agents, POLICY, NOW) == pytest.approx(100.0)
    assert estimated_wait_s(6, Channel.VOICE, {}, agents, POLICY, NOW) == pytest.approx(600.0)
    # Chat slots count: each agent may hold 3 chats (and they are full of voice here).
    assert estimated_wait_s(9, Channel.CHAT, {}, agents, POLICY, NOW) == pytest.approx(600.0)


def test_wait_uses_the_observed_rate_when_faster() -> None:
    """A history faster than the fallback (short calls) shortens the estimate."""
    agents = [make_agent("a", active=BUSY)]
    history = [done(Channel.VOICE, ago) for ago in range(0, 900, 30)]  # 30 in 15 min
    assert estimated_wait_s(
        3, Channel.VOICE, completions_in(history, NOW), agents, POLICY, NOW
    ) == pytest.approx(90.0)
    slow = history[:1]  # slower than the fallback: the fallback stands
    assert estimated_wait_s(
        3, Channel.VOICE, completions_in(slow, NOW), agents, POLICY, NOW
    ) == pytest.approx(900.0)


def test_absent_agents_neither_serve_nor_count_as_free() -> None:
    """Agents on a break, silent, or at their occupancy cap are not free; with nobody present
    the estimate stays finite (one agent assumed)."""
    capped = make_agent("capped", recent=(WorkSpan(NOW - HOUR_MS, NOW - 1000, 100),))
    agents = [
        make_agent("break", presence=Presence.BREAK),
        make_agent("silent", heartbeat_ms=NOW - HOUR_MS),
        capped,
    ]
    # Only "capped" is present: one voice slot staffed, none free.
    assert estimated_wait_s(1, Channel.VOICE, {}, agents, POLICY, NOW) == pytest.approx(300.0)
    assert estimated_wait_s(2, Channel.VOICE, {}, [], POLICY, NOW) == pytest.approx(600.0)
    # A channel the policy has no handle time for falls back to 300 s.
    bare = Policy(expected_handle_s=frozen_map({}))
    assert estimated_wait_s(1, Channel.EMAIL, {}, [], bare, NOW) == pytest.approx(300.0)


def test_wait_is_monotone_in_position() -> None:
    """Later positions never wait less, in a mixed team with history."""
    agents = [
        make_agent("free", capacity={Channel.CHAT: 4}),
        make_agent("one", active=(work(Channel.CHAT, 25),)),
        make_agent("full", active=BUSY),
        make_agent("away", presence=Presence.AWAY),
    ]
    history = [done(Channel.CHAT, ago) for ago in range(0, 900, 120)]
    waits = [
        estimated_wait_s(position, Channel.CHAT, completions_in(history, NOW), agents, POLICY, NOW)
        for position in range(1, 30)
    ]
    assert waits[0] == 0.0
    assert all(later >= earlier for earlier, later in itertools.pairwise(waits))
    assert waits[-1] > waits[10] > 0


SLA = Policy(sla=frozen_map({Channel.VOICE: SlaTarget(20)}), sla_at_risk=0.8)


@pytest.mark.parametrize(
    ("waited_s", "ewt_s", "expected"),
    [
        (0, 0.0, (False, False)),
        (5, 10.0, (False, False)),  # 15 s predicted: fine
        (5, 15.0, (False, False)),  # exactly the target: still fine
        (5, 15.5, (True, False)),  # predicted past the target
        (16, 0.0, (True, False)),  # waited 80 % of the target
        (20, 0.0, (True, False)),  # on the target: not breached yet
        (21, 0.0, (True, True)),
    ],
)
def test_sla_state(waited_s: int, ewt_s: float, expected: tuple[bool, bool]) -> None:
    """At risk when waited + ewt passes the target or the wait reaches sla_at_risk of it;
    breached once the wait passes the target."""
    call = make_call("c", created_ms=NOW - 60_000, enqueued_ms=NOW - waited_s * 1000)
    assert sla_state(call, NOW, ewt_s, SLA) == expected


def test_sla_state_without_target_or_age() -> None:
    """No target for the channel, or a call that never waited with no estimate: no risk."""
    assert sla_state(make_call("c", Channel.CHAT, created_ms=0), NOW, 1e6, SLA) == (False, False)
    assert sla_state(make_call("c", created_ms=0), NOW, 0.0, SLA) == (False, False)
    assert sla_state(make_call("c", created_ms=0), NOW, 25.0, SLA) == (True, False)


def test_a_calls_place_among_its_channels_waiting_calls() -> None:
    """Counted among the calls read up to the call; past them, the tenant-wide position with
    the channel's share of those read for the calls in between; nothing read: the position."""
    queued = [
        Call("v1", Channel.VOICE),
        Call("c1", Channel.CHAT),
        Call("v2", Channel.VOICE),
        Call("c2", Channel.CHAT),
    ]
    assert channel_position(queued, "c2", Channel.CHAT, 4) == 2
    assert channel_position(queued, "v2", Channel.VOICE, 3) == 2
    # 4 read, half chats; the call is 10th: 5 in between, about half of them chats.
    assert channel_position(queued, "c9", Channel.CHAT, 10) == 2 + 2 + 1
    assert channel_position([], "c9", Channel.CHAT, 7) == 7


def test_calls_with_one_pool_key_have_one_pool() -> None:
    """``pool_key`` holds everything the pool of a call depends on: among 400 random calls
    (channel, level, language, team, region required or not, declined agents, widened by
    their wait), those sharing a key get the same agents and the same pool terms, and the
    keys still tell apart the pools that differ."""
    rng = random.Random(7)
    policy = dataclasses.replace(
        POLICY,
        widening=(WideningStep(after_s=60, level_drop=2, teams=("t2",), any_region=True),),
    )
    agents = [
        make_agent(
            f"a{i}",
            skills={"billing": rng.randint(1, 9)},
            languages=frozenset(rng.sample(["en", "fr", "de"], 2)),
            team=rng.choice(["t1", "t2"]),
            region=rng.choice(["eu", "us"]),
            capacity={Channel.CHAT: 2, Channel.VOICE: 1},
            active=rng.choice([(), BUSY]),
        )
        for i in range(30)
    ]
    calls = [
        make_call(
            f"c{n}",
            rng.choice([Channel.VOICE, Channel.CHAT]),
            min_level=rng.randint(3, 5),
            language=rng.choice(["en", "EN", "fr"]),
            team=rng.choice(["", "t1"]),
            region=rng.choice(["eu", "EU", "us"]),
            region_required=rng.random() < 0.5,
            excluded_agents=tuple(rng.sample(["a1", "a2"], rng.randint(0, 1))),
            created_ms=NOW - rng.choice([1_000, 120_000]),
        )
        for n in range(400)
    ]
    pools: dict[object, tuple[list[str], object]] = {}
    for call in calls:
        pool = agents_for(call, agents, NOW, policy)
        found = ([a.agent_id for a in pool], pool_terms(call.channel, {}, pool, policy, NOW))
        assert pools.setdefault(pool_key(call, NOW, policy), found) == found
    assert 20 < len(pools) < 300  # keys shared, and pools told apart
