"""``MemoryStore`` behaviour the contract suite cannot show on Redis without waiting for real
time: record expiry follows the injected clock, and event ids stay ordered if it steps back."""

from __future__ import annotations

import dataclasses
import time

import pytest

from router.domain import (
    AgentProfile,
    AssignmentState,
    Call,
    Channel,
    Explanation,
    Presence,
    Strategy,
)
from router.errors import NotFoundError
from router.memory_store import MemoryStore
from router.store import Claim, Committed
from router.store_common import RECORD_TTL_MS, REQUEST_TTL_MS

T = "acme"


class Clock:
    """A settable epoch-millisecond clock."""

    def __init__(self, now_ms: int) -> None:
        """Start at ``now_ms``."""
        self.now_ms = now_ms

    def __call__(self) -> int:
        """The current time."""
        return self.now_ms


def _commit(store: MemoryStore, call_id: str) -> Committed:
    seq = store.get_agent(T, "a").seq
    claim = Claim(
        request_id=f"req-{call_id}",
        fingerprint="fp",
        call=Call(call_id=call_id, channel=Channel.VOICE),
        agent_id="a",
        expected_seq=seq,
        units=100,
        heartbeat_timeout_s=0,
        explanation=Explanation(strategy=Strategy.RANDOM),
    )
    result = store.commit_assignment(T, claim)
    assert isinstance(result, Committed)
    return result


def test_records_are_kept_as_long_as_the_store_is_told() -> None:
    """``record_ttl_ms``: an hour's retention keeps a finished call an hour, not a week."""
    clock = Clock(1_700_000_000_000)
    store = MemoryStore(clock, record_ttl_ms=3_600_000)
    store.create_agent(T, AgentProfile("a"))
    store.set_presence(T, "a", Presence.AVAILABLE)
    asg = _commit(store, "c1").assignment
    store.finish_assignment(T, asg.assignment_id, asg.token, AssignmentState.COMPLETED)
    clock.now_ms += 3_600_000
    assert store.get_call(T, "c1").assignment is not None
    clock.now_ms += 1
    with pytest.raises(NotFoundError):
        store.get_call(T, "c1")


def test_records_expire_on_the_injected_clock() -> None:
    """The idempotency record lasts 24 h, an ended assignment and its call 7 days, exactly as
    the Redis TTLs do."""
    clock = Clock(1_700_000_000_000)
    store = MemoryStore(clock)
    store.create_agent(T, AgentProfile("a"))
    store.set_presence(T, "a", Presence.AVAILABLE)
    asg = _commit(store, "c1").assignment
    store.finish_assignment(T, asg.assignment_id, asg.token, AssignmentState.COMPLETED)
    t0 = clock.now_ms
    clock.now_ms = t0 + REQUEST_TTL_MS
    assert store.find_request(T, "req-c1") is not None
    clock.now_ms += 1
    assert store.find_request(T, "req-c1") is None
    clock.now_ms = t0 + RECORD_TTL_MS
    ended = dataclasses.replace(asg, state=AssignmentState.COMPLETED, ended_ms=t0)
    assert store.get_call(T, "c1").assignment == ended
    clock.now_ms += 1
    with pytest.raises(NotFoundError):
        store.get_call(T, "c1")
    with pytest.raises(NotFoundError):
        store.finish_assignment(T, asg.assignment_id, asg.token, AssignmentState.COMPLETED)


def test_event_ids_increase_when_the_clock_steps_back() -> None:
    """Like Redis stream ids, ``<ms>-<n>`` ids never go backwards."""
    clock = Clock(2_000)
    store = MemoryStore(clock)
    store.create_agent(T, AgentProfile("a"))
    clock.now_ms = 1_000
    store.heartbeat(T, "a")
    store.set_presence(T, "a", Presence.BUSY)
    store.set_presence(T, "a", Presence.AWAY)
    assert [e.event_id for e in store.read_events(T)] == ["2000-0", "2000-1", "2000-2"]
    assert [e.ts_ms for e in store.read_events(T)] == [2000, 1000, 1000]


def test_default_clock_is_wall_time() -> None:
    """Without a clock the store uses the system time in milliseconds."""
    assert abs(MemoryStore().now_ms() - time.time_ns() // 1_000_000) < 5_000
