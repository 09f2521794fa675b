"""What only the Redis store has: the key schema on the server, TTLs, server time, scripts
reloading after a flush and the mapping of driver failures to the error tree."""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import grpc
import pytest
import redis
from grpc_health.v1 import health_pb2
from grpc_health.v1.health import HealthServicer
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.retry import Retry

from router import codec, local_redis, redis_calls, tracing
from router.dispatcher import Dispatcher
from router.domain import (
    AgentProfile,
    AssignmentState,
    Call,
    CallStatus,
    Channel,
    Explanation,
    Policy,
    Presence,
    Strategy,
    WorkSpan,
    frozen_map,
)
from router.errors import NotFoundError, OutOfRangeError, RouterError, StoreUnavailableError
from router.probe import NOT_SERVING, SERVING, StoreProbe
from router.redis_schema import Keys
from router.redis_store import RedisStore, _driver_errors
from router.store import AgentQuery, Claim, Committed, PassGrant
from router.store_common import RATE_WINDOW_MS, RECORD_TTL_MS, REQUEST_TTL_MS
from tests.helpers import FakeClock, log_lines, sample

T = "acme"
PREFIX = "rt:v1:{acme}:"
TENANTS = "rt:v1:tenants"


def _claim(call_id: str, seq: int, heartbeat_timeout_s: int = 0, offer_s: int = 0) -> Claim:
    return Claim(
        request_id=f"req-{call_id}",
        fingerprint="fp",
        call=Call(call_id=call_id, channel=Channel.CHAT),
        agent_id="a",
        expected_seq=seq,
        units=25,
        heartbeat_timeout_s=heartbeat_timeout_s,
        explanation=Explanation(strategy=Strategy.BALANCED),
        offer_timeout_s=offer_s,
    )


def _busy_tenant(store: RedisStore) -> str:
    """Create an agent, a policy, one finished and one active assignment, an offer, a queued
    call, the dispatcher lease and tick marker; return the finished assignment id."""
    store.create_agent(T, AgentProfile("a", skills={"billing": 3}))
    store.put_policy(T, store.get_policy(T))
    seq = store.set_presence(T, "a", Presence.AVAILABLE).seq
    done = store.commit_assignment(T, _claim("c1", seq))
    assert isinstance(done, Committed)
    asg = done.assignment
    store.finish_assignment(
        T,
        asg.assignment_id,
        asg.token,
        AssignmentState.COMPLETED,
        outcome_value=1.0,
        half_life_s=60,
    )
    active = store.commit_assignment(T, _claim("c2", store.get_agent(T, "a").seq))
    assert isinstance(active, Committed)
    offer = store.commit_assignment(T, _claim("c3", store.get_agent(T, "a").seq, offer_s=30))
    assert isinstance(offer, Committed)
    store.enqueue(T, "req-c4", "fp", Call("c4", Channel.VOICE, created_ms=1), policy=Policy())
    assert store.open_pass(T, "me", 10_000, 2_000) is PassGrant.FULL
    return asg.assignment_id


def test_keys_follow_the_schema(redis_client: redis.Redis, clock: FakeClock) -> None:
    """Every key but the tenants set carries the tenant hash tag (one cluster slot) and has
    the documented type; the agent hash derives load from its ``a:<assignment_id>`` fields."""
    finished = _busy_tenant(RedisStore(redis_client, clock))
    keys = {str(key): str(redis_client.type(key)) for key in redis_client.keys("*")}
    assert keys.pop(TENANTS) == "set"
    assert redis_client.smembers(TENANTS) == {T}
    assert all(key.startswith(PREFIX) for key in keys)
    assert {key_slot(key.encode()) for key in keys} == {key_slot(b"{acme}")}
    names = {key: key.removeprefix(PREFIX).split(":") for key in keys}
    types = {
        ":".join(
            names[key][:2]
            if names[key][0] == "idx" or names[key][-1] == "since"
            else names[key][:1]
        ): kind
        for key, kind in keys.items()
    }
    assert types == {
        "agent": "hash",
        "work": "zset",
        "agents": "zset",
        "idx:skill": "set",
        "idx:ready": "zset",
        "idx:revs": "zset",
        "policy": "string",
        "asg": "hash",
        "call": "hash",
        "req": "hash",
        "fence": "string",
        "events": "stream",
        "timeline": "list",
        "queue": "zset",
        "offers": "zset",
        "history": "zset",
        "done": "zset",
        "done:since": "string",
        "lease": "string",
    }
    now = clock.now_ms
    agent: dict[str, str] = redis_client.hgetall(PREFIX + "agent:a")  # type: ignore[assignment]
    assert sorted(value for name, value in agent.items() if name.startswith("a:")) == [
        f"chat|25|{now}|0|0",
        f"chat|25|{now}|1|0",
    ]
    assert redis_client.smembers(PREFIX + "idx:skill:billing") == {"a"}
    assert redis_client.zrange(PREFIX + "work:a", 0, -1) == [f"{finished}|{now}|{now}|25"]
    assert redis_client.get(PREFIX + "fence") == "3"
    assert redis_client.zcard(PREFIX + "done:chat") == 1  # the completed one
    assert redis_client.zrange(PREFIX + "queue", 0, -1, withscores=True) == [("c4", 1.0)]
    assert redis_client.zrange(PREFIX + "queue:waits", 0, -1, withscores=True) == [
        ("voice|000000000000001|c4", 0.0)
    ]
    offers: list[tuple[str, float]] = redis_client.zrange(  # type: ignore[assignment]
        PREFIX + "offers", 0, -1, withscores=True
    )
    ((offer, expires),) = offers
    assert (redis_client.hget(PREFIX + f"asg:{offer}", "state"), expires) == (
        "offered",
        now + 30_000,
    )
    history: list[tuple[str, float]] = redis_client.zrange(  # type: ignore[assignment]
        PREFIX + "history", 0, -1, withscores=True
    )
    kinds = [(member.split("|", 1)[1], score) for member, score in history]
    assert kinds == [
        ("answered|chat|0|c1", now),
        ("completed|chat|0|c1", now),
        ("answered|chat|0|c2", now),
    ]
    assert redis_client.get(PREFIX + "lease:dispatch") == f"{now + 10_000}|me"
    assert redis_client.get(PREFIX + "lease:tick") == f"{now + 2_000}|me"
    timeline = [json.loads(item) for item in redis_client.lrange(PREFIX + "timeline:c1", 0, -1)]
    assert [item[1:5] for item in timeline] == [
        ["ASSIGNED", str(now), "c1", "a"],
        ["COMPLETED", str(now), "c1", "a"],
    ]
    call = redis_client.hgetall(PREFIX + "call:c4")
    assert call | {"call": ""} == {
        "call": "",
        "channel": "voice",
        "status": "queued",
        "assignment_id": "",
        "updated": str(now),
        "origin": "1",
        "enqueued": "1",
        "priority": "0",
        "excluded": "[]",
        "callback": "0",
        "at_risk": "0",
        "breached": "0",
    }
    assert redis_client.hgetall(PREFIX + "req:req-c4") == {"fingerprint": "fp", "call_id": "c4"}


def _queued_chats(store: RedisStore, clock: FakeClock, count: int) -> tuple[int, int]:
    """An available agent ``a`` and ``count`` chats queued a second apart, the first then
    offered to ``a``; when the first was queued, and ``a``'s seq."""
    store.create_agent(T, AgentProfile("a", skills={"billing": 3}))
    seq = store.set_presence(T, "a", Presence.AVAILABLE).seq
    start = clock.now_ms
    for i in range(count):
        store.enqueue(T, f"r{i}", "fp", Call(f"c{i}", Channel.CHAT), policy=Policy())
        clock.advance(1_000)
    placed = store.load_queue(T, 1).calls[0]
    offer = dataclasses.replace(
        _claim(placed.call_id, seq, offer_s=30), call=placed, request_id="", from_queue=True
    )
    done = store.commit_assignment(T, offer)
    assert isinstance(done, Committed)
    return start, store.get_agent(T, "a").seq


def test_calls_queued_before_the_waits_index_are_found(
    redis_client: redis.Redis, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Calls queued by a version without ``queue:waits`` (the index deleted here) are found
    all the same: ``due_waits`` sees fewer calls in it than in the queue and adds them, a
    few calls per script, leaving out a call no longer queued; the reads after it use the
    index as the scripts keep it. It looks again at most once a minute (a replica of the
    earlier version may still be queueing calls)."""
    monkeypatch.setattr(redis_calls, "_WAITS_CHUNK", 3)
    store = RedisStore(redis_client, clock)
    start, _ = _queued_chats(store, clock, 8)
    redis_client.delete(PREFIX + "queue:waits")
    limits = {Channel.CHAT: 1}
    with log_lines() as lines:
        due = store.due_waits(T, limits, clock.now_ms, 10)
        assert [call.call_id for call in store.due_waits(T, limits, clock.now_ms, 10)] == [
            f"c{i}" for i in range(1, 8)
        ]
    assert [call.since_ms for call in due] == [start + i * 1_000 for i in range(1, 8)]
    mended = [line for line in lines if line["event"] == "waits_index_mended"]
    assert [(line["added"], line["dropped"], line["queued"]) for line in mended] == [(7, 0, 7)]
    store.cancel_call(T, "c3")
    assert [call.call_id for call in store.due_waits(T, limits, clock.now_ms, 3)] == [
        "c1",
        "c2",
        "c4",
    ]
    redis_client.delete(PREFIX + "queue:waits")
    assert store.due_waits(T, limits, clock.now_ms, 10) == []  # looked a moment ago
    monkeypatch.setattr(redis_calls, "WAITS_REBUILD_S", 0.0)
    assert len(store.due_waits(T, limits, clock.now_ms, 10)) == 6


def test_an_index_entry_an_earlier_version_left_is_dropped_when_met(
    redis_client: redis.Redis, clock: FakeClock
) -> None:
    """A replica of an earlier version takes calls off the queue without touching
    ``queue:waits`` (mimicked here: entries put back for a call offered, one cancelled and
    one whose record is gone): ``due_waits`` finds them first, and ``expire_call`` drops
    each it is given (expiring nothing; NOT_FOUND for the one without a record); the
    dispatcher's ticks go past such entries and expire the calls behind them."""
    store = RedisStore(redis_client, clock)
    start, _ = _queued_chats(store, clock, 6)
    assert len(store.due_waits(T, {Channel.CHAT: 1}, clock.now_ms, 10)) == 5  # mended once
    store.cancel_call(T, "c1")
    redis_client.delete(PREFIX + "call:c2")
    redis_client.zrem(PREFIX + "queue", "c2")
    stale = {f"chat|{start + i * 1_000:015d}|c{i}": 0 for i in range(3)}
    redis_client.zadd(PREFIX + "queue:waits", stale)
    version = store.put_policy(T, Policy(max_wait_s=frozen_map({Channel.CHAT: 1}))).version
    clock.advance(10_000)
    found = store.due_waits(T, {Channel.CHAT: 1}, clock.now_ms, 10)
    assert [call.call_id for call in found] == [f"c{i}" for i in range(6)]
    expire = functools.partial(store.expire_call, T, max_wait_s=1, policy_version=version)
    assert expire("c0", found=found[0]) is False
    assert expire("c1", found=found[1]) is False
    with pytest.raises(NotFoundError):
        expire("c2", found=found[2])
    assert redis_client.zrange(PREFIX + "queue:waits", 0, -1) == [
        f"chat|{start + i * 1_000:015d}|c{i}" for i in range(3, 6)
    ]
    redis_client.zadd(PREFIX + "queue:waits", stale)
    dispatcher = Dispatcher(store, batch_size=1, owner="me")
    expired = sum(dispatcher.run_tick(T).expired for _ in range(6))
    assert expired == 3
    assert [e.call_id for e in store.history(T, 0) if e.kind == "expired"] == ["c3", "c4", "c5"]


def test_the_index_is_mended_where_its_size_hides_what_is_wrong(
    redis_client: redis.Redis, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Entries an earlier version left for emails no longer waiting, as many as the chats
    it queued without one (the sizes agree): the first read of a store mends the index
    (adds the chats, drops the entries), and so does a read once ``WAITS_AUDIT_S`` has
    passed; the chats are then found past their limit."""
    monkeypatch.setattr(redis_calls, "_WAITS_CHUNK", 2)
    store = RedisStore(redis_client, clock)
    start = clock.now_ms
    for i in range(3):
        store.enqueue(T, f"r{i}", "fp", Call(f"c{i}", Channel.CHAT), policy=Policy())
    stale = {f"email|{start - i:015d}|gone{i}": 0 for i in range(3)}

    def earlier_version() -> None:
        redis_client.delete(PREFIX + "queue:waits")
        redis_client.zadd(PREFIX + "queue:waits", stale)

    earlier_version()
    clock.advance(5_000)
    limits = {Channel.CHAT: 1, Channel.EMAIL: 1}
    fresh = RedisStore(redis_client, clock)
    assert [w.call_id for w in fresh.due_waits(T, limits, clock.now_ms, 10)] == ["c0", "c1", "c2"]
    assert sorted(redis_client.zrange(PREFIX + "queue:waits", 0, -1)) == [
        f"chat|{start:015d}|c{i}" for i in range(3)
    ]
    store.due_waits(T, limits, clock.now_ms, 10)  # this store's first read: mends
    earlier_version()
    assert len(store.due_waits(T, limits, clock.now_ms, 10)) == 3  # within the hour: as is
    monkeypatch.setattr(redis_calls, "WAITS_AUDIT_S", 0.0)
    assert [w.call_id for w in store.due_waits(T, limits, clock.now_ms, 10)] == ["c0", "c1", "c2"]


def test_records_are_kept_as_long_as_the_store_is_told(
    redis_client: redis.Redis, clock: FakeClock
) -> None:
    """``record_ttl_ms`` (``ROUTER_RECORD_RETENTION_S``) sets how long ended assignments,
    finished calls and their timelines live; idempotency records keep their 24 h."""
    hour = 3_600_000
    finished = _busy_tenant(RedisStore(redis_client, clock, record_ttl_ms=hour))

    def ttl(key: str) -> int:
        return int(redis_client.pttl(PREFIX + key))

    for key in (f"asg:{finished}", "call:c1", "timeline:c1"):
        assert hour - 60_000 < ttl(key) <= hour, key
    assert REQUEST_TTL_MS - 60_000 < ttl("req:req-c1") <= REQUEST_TTL_MS


def test_records_expire_on_redis_time(redis_client: redis.Redis, clock: FakeClock) -> None:
    """Idempotency records live 24 h; ended assignments, finished calls and their timelines
    7 days; live calls, their timelines, agents and the queue do not expire."""
    finished = _busy_tenant(RedisStore(redis_client, clock))

    def ttl(key: str) -> int:
        return int(redis_client.pttl(PREFIX + key))

    assert REQUEST_TTL_MS - 60_000 < ttl("req:req-c1") <= REQUEST_TTL_MS
    assert REQUEST_TTL_MS - 60_000 < ttl("req:req-c4") <= REQUEST_TTL_MS
    assert RECORD_TTL_MS - 60_000 < ttl(f"asg:{finished}") <= RECORD_TTL_MS
    assert RECORD_TTL_MS - 60_000 < ttl("call:c1") <= RECORD_TTL_MS
    assert RECORD_TTL_MS - 60_000 < ttl("timeline:c1") <= RECORD_TTL_MS
    for live in ("call:c2", "timeline:c2", "call:c4", "timeline:c4", "agent:a", "queue"):
        assert ttl(live) == -1, live
    assert ttl("lease:dispatch") == -1  # under a test clock the stored expiry decides
    assert ttl("lease:tick") == -1


def test_server_time_without_a_clock(redis_client: redis.Redis) -> None:
    """Without an override clock every time is Redis ``TIME``: reads, script writes and the
    heartbeat check at commit agree with the wall clock."""
    store = RedisStore(redis_client)
    before = time.time_ns() // 1_000_000
    assert abs(store.now_ms() - before) < 5_000
    store.create_agent(T, AgentProfile("a"))
    agent = store.set_presence(T, "a", Presence.AVAILABLE)
    assert abs(agent.heartbeat_ms - before) < 5_000
    result = store.commit_assignment(T, _claim("c1", agent.seq, heartbeat_timeout_s=30))
    assert isinstance(result, Committed)
    assert abs(result.assignment.created_ms - before) < 5_000
    snapshot = store.load_snapshot(T, Call(call_id="c2", channel=Channel.CHAT))
    assert snapshot.now_ms >= result.assignment.created_ms
    assert [e.ts_ms >= before for e in store.read_events(T)] == [True, True, True]


def test_scripts_reload_after_a_flush(redis_client: redis.Redis, clock: FakeClock) -> None:
    """After ``SCRIPT FLUSH`` (a restart or failover) the scripts load again by themselves."""
    store = RedisStore(redis_client, clock)
    store.create_agent(T, AgentProfile("a"))
    redis_client.script_flush()
    assert store.set_presence(T, "a", Presence.AVAILABLE).seq == 2


def test_passes_opened_together_survive_a_script_flush(
    redis_client: redis.Redis, clock: FakeClock
) -> None:
    """The tick opens its passes in one pipeline; after ``SCRIPT FLUSH`` each is opened
    again alone (EVAL of the script's source), and every tenant gets its grant."""
    store = RedisStore(redis_client, clock)
    redis_client.script_flush()
    grants = store.open_passes(["t1", "t2", "t3"], "A", 1_000, 2_000)
    assert grants == [PassGrant.FULL] * 3
    assert store.open_passes(["t1", "t2"], "B", 1_000, 2_000) == [PassGrant.IDLE] * 2  # A's ticks


def test_a_tick_with_nothing_changed_since_an_idle_full_pass_is_quiet(
    redis_client: redis.Redis, clock: FakeClock
) -> None:
    """The tick's full pass of a tenant whose last one found nothing to do is QUIET while
    nothing is queued or offered and no agent changed since (the head ``load_queue`` gave):
    the tick stays the owner's and no lease is taken. A heartbeat changes nothing; a call
    waiting, or an agent changing, makes it a full pass again."""
    store = RedisStore(redis_client, clock)
    store.create_agent(T, AgentProfile("a", skills={"billing": 3}))
    store.set_presence(T, "a", Presence.AVAILABLE)
    store.load_candidates(T, Call("warm", Channel.CHAT))  # builds the routing index
    head = store.load_queue(T, 10).agents_rev
    assert head
    assert store.open_pass(T, "A", 1_000, 2_000, quiet_at=head) is PassGrant.QUIET
    assert store.open_pass(T, "B", 1_000, 2_000) is PassGrant.IDLE  # A keeps the tick
    assert store.acquire_lease(T, "B", 1_000)  # and took no lease
    store.release_lease(T, "B")
    store.heartbeat(T, "a")
    assert store.load_queue(T, 10).agents_rev == head
    assert store.open_pass(T, "A", 1_000, 2_000, quiet_at=head) is PassGrant.QUIET
    store.enqueue(T, "r1", "fp", Call("c1", Channel.CHAT), policy=Policy())
    assert store.open_pass(T, "A", 1_000, 2_000, quiet_at=head) is PassGrant.FULL
    store.release_lease(T, "A")
    store.cancel_call(T, "c1")
    store.set_presence(T, "a", Presence.BREAK)
    assert store.open_pass(T, "A", 1_000, 2_000, quiet_at=head) is PassGrant.FULL
    store.release_lease(T, "A")
    assert store.open_passes([T], "A", 1_000, 2_000, {T: head}) == [PassGrant.FULL]
    store.release_lease(T, "A")
    moved = store.load_queue(T, 10).agents_rev
    assert moved != head
    assert store.open_passes([T], "A", 1_000, 2_000, {T: moved}) == [PassGrant.QUIET]


def _counted_ticks(store: RedisStore, monkeypatch: pytest.MonkeyPatch) -> Callable[[], int]:
    """A dispatcher's tick over ``T``, as a function answering the queue reads it made."""
    dispatcher = Dispatcher(store, owner="me")
    reads = 0
    real = store.load_queue

    def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal reads
        reads += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(store, "load_queue", counted)

    def tick() -> int:
        nonlocal reads
        reads = 0
        dispatcher._sweep([T])
        return reads

    return tick


def test_the_dispatchers_ticks_skip_full_passes_while_nothing_changes(
    redis_client: redis.Redis, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ticks over an idle tenant: the first makes the full pass (the queue read), the next
    ones are QUIET (no read); a call queued meanwhile is placed by the next tick, and while
    its agent holds it (a chat, which never moves) the ticks after one full pass are quiet
    again; once it is completed, quiet again after one full pass."""
    store = RedisStore(redis_client, clock)
    store.create_agent(T, AgentProfile("a", skills={"billing": 3}))
    store.set_presence(T, "a", Presence.AVAILABLE)
    store.load_candidates(T, Call("warm", Channel.CHAT))  # builds the routing index
    tick = _counted_ticks(store, monkeypatch)

    assert tick() >= 1
    assert (tick(), tick()) == (0, 0)
    store.enqueue(T, "r1", "fp", Call("c1", Channel.CHAT), policy=Policy())
    assert tick() >= 1
    record = store.get_call(T, "c1")
    assert record.status == CallStatus.ASSIGNED
    assert (tick() >= 1, tick(), tick()) == (True, 0, 0)  # the agent holds a chat
    assert record.assignment is not None
    store.finish_assignment(
        T, record.assignment.assignment_id, record.assignment.token, AssignmentState.COMPLETED
    )
    assert tick() >= 1
    assert tick() == 0


def test_a_quiet_tick_with_agents_holding_work_lasts_until_its_time_on_its_policy(
    redis_client: redis.Redis, clock: FakeClock
) -> None:
    """``quiet_at``'s longer form (agents hold work): QUIET while store time is before its
    ``until`` (0: no bound) and the policy is at its version; FULL at ``until``, once the
    policy changed, or once an agent changed."""
    store = RedisStore(redis_client, clock)
    store.create_agent(T, AgentProfile("a", skills={"billing": 3}))
    store.load_candidates(T, Call("warm", Channel.CHAT))  # builds the routing index
    head = store.load_queue(T, 10).agents_rev
    version = store.get_policy(T).version
    until = clock.now_ms + 5_000

    def opened(at: str) -> PassGrant:
        grant = store.open_pass(T, "A", 1_000, 2_000, quiet_at=at)
        store.release_lease(T, "A")
        return grant

    assert opened(f"{head}|{until}|{version}") is PassGrant.QUIET
    assert opened(f"{head}|0|{version}") is PassGrant.QUIET
    assert store.open_passes([T], "A", 1_000, 2_000, {T: f"{head}|{until}|{version}"}) == [
        PassGrant.QUIET
    ]
    assert opened(f"{head}|{until}|{version + 1}") is PassGrant.FULL
    clock.advance(4_999)
    assert opened(f"{head}|{until}|{version}") is PassGrant.QUIET
    clock.advance(1)
    assert opened(f"{head}|{until}|{version}") is PassGrant.FULL
    assert opened(f"{head}|0|{version}") is PassGrant.QUIET
    store.put_policy(T, dataclasses.replace(store.get_policy(T), max_queue=100))
    assert opened(f"{head}|0|{version}") is PassGrant.FULL
    assert opened(f"{head}|0|{version + 1}") is PassGrant.QUIET
    store.set_presence(T, "a", Presence.AVAILABLE)
    assert opened(f"{head}|0|{version + 1}") is PassGrant.FULL


def test_ticks_over_agents_holding_work_are_quiet_until_one_could_leave_with_it(
    redis_client: redis.Redis, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An agent holds an email (work that moves when its holder leaves): the ticks after a
    full pass are quiet until the agent's heartbeat would lapse; the tick at that moment
    makes the full pass and takes the email back. A policy change ends the quiet at once
    (here: email no longer moves, so the ticks are quiet with no end)."""
    store = RedisStore(redis_client, clock)
    policy = dataclasses.replace(Policy(), heartbeat_timeout_s=30)
    store.put_policy(T, policy)
    store.create_agent(T, AgentProfile("a", capacity=frozen_map({Channel.EMAIL: 1})))
    store.set_presence(T, "a", Presence.AVAILABLE)
    store.create_agent(T, AgentProfile("b", capacity=frozen_map({Channel.EMAIL: 1})))
    store.load_candidates(T, Call("warm", Channel.EMAIL))
    tick = _counted_ticks(store, monkeypatch)

    store.enqueue(T, "r1", "fp", Call("c1", Channel.EMAIL), policy=store.get_policy(T))
    assert tick() >= 1
    assert store.get_call(T, "c1").status == CallStatus.ASSIGNED
    assert tick() >= 1  # the full pass after the placement: quiet from here
    clock.advance(10_000)
    store.heartbeat(T, "a")  # pushes the lapse later; the quiet ends at the earlier one
    assert (tick(), tick()) == (0, 0)
    clock.advance(20_000)  # 30 s after the heartbeat the pass read: not lapsed yet
    assert tick() == 0
    clock.advance(1)  # the quiet's end: a full pass, which finds the heartbeat fresh
    assert tick() >= 1
    assert store.get_call(T, "c1").status == CallStatus.ASSIGNED
    assert tick() == 0
    clock.advance(30_001)  # the heartbeat read lapses: the email goes back to the queue
    assert tick() >= 1
    assert store.get_call(T, "c1").status == CallStatus.QUEUED  # nobody else is available
    store.set_presence(T, "b", Presence.AVAILABLE)
    store.heartbeat(T, "b")
    assert tick() >= 1
    record = store.get_call(T, "c1")
    assert record.status == CallStatus.ASSIGNED
    assert record.assignment is not None
    assert record.assignment.agent_id == "b"
    assert tick() >= 1  # the full pass after the placement
    assert tick() == 0
    store.put_policy(T, dataclasses.replace(store.get_policy(T), reclaim_channels=frozenset()))
    assert tick() >= 1
    clock.advance(120_000)  # b's heartbeat lapsed, but email no longer moves
    assert (tick(), tick()) == (0, 0)


def test_a_script_the_node_lost_is_sent_to_that_node_alone(
    redis_client: redis.Redis, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After ``SCRIPT FLUSH`` (a restart, a failover to a replica that never ran it) a
    script runs by ``EVAL`` of its source on the node that answered NOSCRIPT, which keeps it
    again; never by ``SCRIPT LOAD``, which a cluster client sends to every primary (one of
    them down failed every tenant's request)."""
    store = RedisStore(redis_client, clock)
    store.create_agent(T, AgentProfile("a"))
    redis_client.script_flush()

    def refused(*args: Any, **kwargs: Any) -> Any:
        raise redis.ConnectionError("a primary is down")

    monkeypatch.setattr(redis_client, "script_load", refused)
    assert store.set_presence(T, "a", Presence.AVAILABLE).seq == 2
    assert redis_client.script_exists(store._scripts["set_presence"].sha) == [True]
    store.check_writable()


def test_a_redis_refusing_writes_is_unavailable(
    redis_server: local_redis.LocalRedis, redis_client: redis.Redis, clock: FakeClock
) -> None:
    """A Redis that refuses writes for now (``min-replicas-to-write`` with too few replicas:
    NOREPLICAS; MISCONF and MASTERDOWN alike) answers UNAVAILABLE, so clients retry, and
    writes nothing; once it takes writes again they pass."""
    store = RedisStore(redis_client, clock)
    store.create_agent(T, AgentProfile("a"))
    admin = redis.Redis.from_url(redis_server.url, decode_responses=True)
    health = HealthServicer()
    probe = StoreProbe(store, health, ("",))
    try:
        admin.config_set("min-replicas-to-write", "1")
        assert store.now_ms() > 0  # it still answers reads...
        assert probe.check() is False  # ...but cannot serve: health is NOT_SERVING
        assert _health(health) == NOT_SERVING
        with pytest.raises(StoreUnavailableError, match="NOREPLICAS"):
            store.set_presence(T, "a", Presence.AVAILABLE)
        with pytest.raises(StoreUnavailableError, match="NOREPLICAS"):
            store.enqueue(T, "r1", "fp", Call("c1", Channel.CHAT, created_ms=1), policy=Policy())
    finally:
        admin.config_set("min-replicas-to-write", "0")
        admin.close()
    assert store.get_agent(T, "a").presence == Presence.OFFLINE
    with pytest.raises(NotFoundError):
        store.get_call(T, "c1")
    assert probe.check() is True
    assert _health(health) == SERVING
    assert store.set_presence(T, "a", Presence.AVAILABLE).seq == 2


def _health(servicer: HealthServicer) -> int:
    """The overall status ``servicer`` answers."""
    request = health_pb2.HealthCheckRequest(service="")
    return servicer.Check(request, cast(grpc.ServicerContext, None)).status


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        ("MISCONF Errors writing to the AOF file", StoreUnavailableError),
        ("MASTERDOWN Link with MASTER is down", StoreUnavailableError),
        ("NOREPLICAS Not enough good replicas to write.", StoreUnavailableError),
        (
            "ERR Script attempted to access a non local key in a cluster node script",
            StoreUnavailableError,
        ),
        ("ERR wrong number of arguments", RouterError),
    ],
)
def test_refusals_map_to_the_error_tree(reply: str, error: type[RouterError]) -> None:
    """Replies of a Redis refusing writes for now are UNAVAILABLE; other refusals stay
    internal errors."""
    with pytest.raises(error) as raised, _driver_errors():
        raise redis.ResponseError(reply)
    assert type(raised.value) is error


def test_many_tenants_policies_stay_decoded(
    redis_client: redis.Redis, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """300 tenants with a policy each, read twice over (as a replica's dispatcher sweeps
    them): each policy is decoded once, and each tenant's last read one stays known (past
    256 tenants both memos used to start over, decoding every policy on every sweep)."""
    store = RedisStore(redis_client, clock)
    tenants = [f"t{n:03d}" for n in range(300)]
    for n, tenant in enumerate(tenants):
        store.put_policy(tenant, Policy(max_missed_offers=n % 50 + 1, aging_s_per_priority=n + 1))
    decoded: list[str] = []
    decode = codec.decode_policy

    def counted(text: str) -> Policy:
        decoded.append(text)
        return decode(text)

    monkeypatch.setattr(codec, "decode_policy", counted)
    for _ in range(2):
        for tenant in tenants:
            store.get_policy(tenant)
    assert len(decoded) <= len(tenants)  # some may be decoded already, by put_policy
    assert all(store._known_policies[tenant] for tenant in tenants)


def test_a_filter_matching_few_agents_reads_in_growing_chunks(
    redis_client: redis.Redis, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page of one agent whose filter matches only the last of 1,000 scans in chunks that
    double up to ``_SCAN_CHUNK`` (a chunk of the page's size took 500 round trips)."""
    store = RedisStore(redis_client, clock)
    for i in range(1000):
        skills = {"rare": 1} if i == 999 else {"billing": 1}
        store.create_agent(T, AgentProfile(f"a{i:04d}", skills=frozen_map(skills)))
    chunks: list[int] = []
    original = RedisStore._ids_after

    def counted(self: RedisStore, k: Keys, start: str, count: int) -> list[str]:
        chunks.append(count)
        return original(self, k, start, count)

    monkeypatch.setattr(RedisStore, "_ids_after", counted)
    page, token = store.list_agents(T, AgentQuery(skill="rare"), 1)
    assert ([a.agent_id for a in page], token) == (["a0999"], "")
    assert chunks[:8] == [2, 4, 8, 16, 32, 64, 128, 200]
    assert len(chunks) <= 12


def test_a_deleted_agent_leaves_the_agent_cache(
    redis_client: redis.Redis, clock: FakeClock
) -> None:
    """The queue's next full read of a tenant's agents drops the cached ones deleted since
    (they were kept for good before)."""
    store = RedisStore(redis_client, clock)
    for agent_id in ("a", "b", "c"):
        store.create_agent(T, AgentProfile(agent_id))
        store.set_presence(T, agent_id, Presence.AVAILABLE)
    store.load_queue(T, 10)
    assert len(store._agent_cache) == 3
    store.delete_agent(T, "b")
    assert [a.agent_id for a in store.load_queue(T, 10).snapshot.agents] == ["a", "c"]
    assert len(store._agent_cache) == 2


def test_completions_count_the_history_until_their_sets_cover_the_window(
    redis_client: redis.Redis, clock: FakeClock
) -> None:
    """Completions written by a version without the per-channel sets (here: the sets
    deleted) are counted from the history until the sets have counted for a whole rate
    window; then from the sets alone."""
    store = RedisStore(redis_client, clock)
    store.create_agent(T, AgentProfile("a", capacity={Channel.CHAT: 4}))
    seq = store.set_presence(T, "a", Presence.AVAILABLE).seq

    def complete(call_id: str) -> None:
        done = store.commit_assignment(T, _claim(call_id, store.get_agent(T, "a").seq))
        assert isinstance(done, Committed)
        asg = done.assignment
        store.finish_assignment(T, asg.assignment_id, asg.token, AssignmentState.COMPLETED)

    assert seq
    complete("c1")
    complete("c2")
    redis_client.delete(*redis_client.keys(PREFIX + "done:*"))  # as an older version left it
    window = clock.now_ms - RATE_WINDOW_MS
    assert store.completions(T, window)[Channel.CHAT] == 2
    clock.advance(1_000)
    complete("c3")  # the sets start counting now: the window still needs the history
    assert store.completions(T, clock.now_ms - RATE_WINDOW_MS)[Channel.CHAT] == 3
    clock.advance(RATE_WINDOW_MS)
    complete("c4")
    redis_client.delete(PREFIX + "history")  # from here on, the sets alone are read
    assert store.completions(T, clock.now_ms - RATE_WINDOW_MS)[Channel.CHAT] == 2


def test_the_history_mirror_reads_what_a_fresh_read_would(
    redis_client: redis.Redis, clock: FakeClock
) -> None:
    """A store that keeps reading a tenant's history (its mirror: only what was written
    since its last read) answers as a store reading it for the first time would, through
    entries written at the time of its last read, the writers' trimming after two hours,
    and a history deleted and written anew (read in full again); the reads are counted by
    mode."""
    store = RedisStore(redis_client, clock)
    calls = 0

    def abandon(count: int = 1) -> None:
        nonlocal calls
        for _ in range(count):
            calls += 1
            call = Call(f"c{calls}", Channel.CHAT, created_ms=clock.now_ms)
            store.enqueue(T, f"r{calls}", "fp", call, policy=Policy())
            store.cancel_call(T, call.call_id)

    def agrees(since_ms: int = 0) -> int:
        """The mirror's answer equals a fresh store's; how many entries."""
        mine = store.history(T, since_ms)
        assert mine == RedisStore(redis_client, clock).history(T, since_ms)
        return len(mine)

    reads = {mode: sample("router_history_reads_total", mode=mode) for mode in ("all", "delta")}
    assert agrees() == 0
    abandon(3)
    assert agrees() == 3
    abandon(2)  # at the same time as the last read
    clock.advance(60_000)
    abandon()
    assert agrees() == 6
    assert agrees(clock.now_ms) == 1
    clock.advance(2 * 3_600_000 + 1)
    abandon()  # trims everything older than two hours
    assert agrees() == 1
    redis_client.delete(PREFIX + "history")
    abandon(2)
    assert agrees() == 2
    # the mirror's first read and the one after the rewrite, and each fresh store's read,
    # are full ones
    assert sample("router_history_reads_total", mode="delta") == reads["delta"] + 4
    assert sample("router_history_reads_total", mode="all") == reads["all"] + 2 + 6


def test_client_must_decode_responses(redis_server: local_redis.LocalRedis) -> None:
    """A bytes client is refused up front rather than failing on the first reply."""
    client = redis.Redis.from_url(redis_server.url)
    try:
        with pytest.raises(RouterError, match="decode_responses"):
            RedisStore(client)
    finally:
        client.close()


def test_corrupt_key_is_an_internal_error(redis_client: redis.Redis, clock: FakeClock) -> None:
    """A key of the wrong type is a server fault (RouterError, INTERNAL), never a driver
    exception leaking out."""
    redis_client.set(PREFIX + "agent:a", "not a hash")
    store = RedisStore(redis_client, clock)
    with pytest.raises(RouterError, match="WRONGTYPE") as info:
        store.get_agent(T, "a")
    assert type(info.value) is RouterError


def test_unreachable_server_is_unavailable() -> None:
    """Every kind of call on a server that refuses connections is StoreUnavailableError."""
    port = local_redis.free_port()  # nothing listens there
    client = redis.Redis(
        host="127.0.0.1",
        port=port,
        socket_connect_timeout=0.5,
        socket_timeout=0.5,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )
    store = RedisStore(client)
    assert not store.unavailable_within(3600, T)
    calls: list[Callable[[], object]] = [
        store.now_ms,
        store.check_writable,
        lambda: store.get_agent(T, "a"),
        lambda: store.list_agents(T, AgentQuery(), 10),
        lambda: store.create_agent(T, AgentProfile("a")),
        lambda: store.load_snapshot(T, Call(call_id="c", channel=Channel.CHAT)),
        lambda: store.commit_assignment(T, _claim("c", 1)),
        lambda: store.finish_assignment(T, "x", 1, AssignmentState.COMPLETED),
        lambda: store.read_events(T),
        lambda: store.read_events(T, "$", block_ms=100),
        lambda: store.enqueue(T, "r", "fp", Call("c", Channel.CHAT), policy=Policy()),
        lambda: store.load_queue(T, 10),
        lambda: store.get_call(T, "c"),
        lambda: store.accept_offer(T, "x", 1),
        lambda: store.reclaim(T, "a", channels=frozenset(), policy=Policy()),
        lambda: store.history(T, 0),
        store.tenants,
        lambda: store.acquire_lease(T, "me", 1000),
    ]
    failed = sample("router_redis_errors_total", kind="unavailable")
    try:
        for call in calls:
            with pytest.raises(StoreUnavailableError, match="redis unavailable") as err:
                call()
            # the client learns the kind of failure, never the server's address
            assert err.value.message == "redis unavailable: ConnectionError"
            assert f":{port}" in err.value.cause
            assert f":{port}" in err.value.logged
    finally:
        client.close()
    assert sample("router_redis_errors_total", kind="unavailable") - failed == len(calls)
    assert store.unavailable_within(60, T)  # the dispatcher's grace after an outage
    assert store.unavailable_within(60, "other")  # one server: every tenant's outage


@pytest.fixture(scope="module")
def cluster_url() -> Iterator[str]:
    """A one-node Redis Cluster (all 16384 slots on one server): it refuses a script whose
    declared keys span slots, and a script that touches a key of another slot than the ones
    it declared."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("the single-slot test needs redis-server", pytrace=False)
    port = local_redis.free_port()
    with tempfile.TemporaryDirectory(prefix="router-cluster-") as directory:
        process = subprocess.Popen(
            [
                binary,
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", directory,
                "--cluster-enabled", "yes",
                # The bus port defaults to port + 10000, out of range for high free ports.
                "--cluster-port", str(local_redis.free_port()),
                "--cluster-config-file", str(Path(directory) / "nodes.conf"),
                "--enable-debug-command", "local",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            client = redis.Redis(port=port, decode_responses=True)
            deadline = time.monotonic() + 10
            while True:
                try:
                    client.execute_command(  # type: ignore[no-untyped-call]
                        "CLUSTER", "ADDSLOTSRANGE", 0, 16383
                    )
                    break
                except redis.ConnectionError:
                    assert process.poll() is None, "the cluster redis-server exited"
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            while client.cluster("INFO").get("cluster_state") != "ok":
                assert time.monotonic() < deadline, "the one-node cluster did not come up"
                time.sleep(0.05)
            client.close()
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.terminate()
            process.wait(timeout=10)


@pytest.mark.parametrize("kind", ["plain", "cluster"])
def test_a_write_answered_after_the_timeout_is_not_sent_again(cluster_url: str, kind: str) -> None:
    """A script whose reply comes after ``timeout_s`` (Redis stalled: a failover, a long
    command) fails UNAVAILABLE having run at most once, on a single server and on a
    cluster alike: the caller decides whether to retry. The cluster client's own retries
    sent it again, so it could run twice and answer for the second run (a presence change
    written twice; an agent created and answered ALREADY_EXISTS; an update applied and
    answered ABORTED). (Redis may also drop the first one, unread, with its closed socket.)"""
    server = None
    if kind == "plain":
        server = local_redis.start(extra_args=("--enable-debug-command", "local"))
    url = server.url if server is not None else cluster_url
    client = redis.Redis.from_url(url, decode_responses=True)
    client.flushall()
    store = RedisStore.from_url(url, timeout_s=0.3)
    try:
        assert store.cluster_mode is (kind == "cluster")
        store.create_agent(T, AgentProfile("a"))
        stall = threading.Thread(target=client.execute_command, args=("DEBUG", "SLEEP", "0.8"))
        stall.start()
        time.sleep(0.1)  # Redis asleep: the script waits in its socket
        with pytest.raises(StoreUnavailableError):
            store.set_presence(T, "a", Presence.AVAILABLE)
        stall.join()
        time.sleep(0.5)  # a resend would have gone out by now
        events = store.read_events(T, limit=100)
        assert [e.type for e in events].count("PRESENCE_CHANGED") <= 1  # (or 0: see below)
    finally:
        store.close()
        client.close()
        if server is not None:
            server.stop()


def test_a_tick_looks_at_each_tenant_alone_when_a_cluster_node_is_away(
    cluster_url: str, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a cluster the tick's look goes out in one pipeline; when that fails as a whole (a
    node away), each tenant is looked at alone, so the tenants of the other nodes keep
    their ticks, and only the failing tenant's outage is noted (its grace, not every
    tenant's). On one server the failed pipeline is the whole look's error."""
    client = RedisCluster.from_url(cluster_url, decode_responses=True)
    client.flushall()
    store = RedisStore(client, clock)
    real = store._eval

    def away(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise redis.ConnectionError("a node is away")

    def run(script: Any, keys: Any, args: Any) -> Any:
        if "{down}" in str(keys[0]):
            raise redis.ConnectionError("the node of {down} is away")
        return real(script, keys, args)

    monkeypatch.setattr("redis.cluster.ClusterPipeline.execute", away)
    monkeypatch.setattr(store, "_eval", run)
    try:
        grants = store.open_passes(["up", "down", "other"], "A", 1_000, 2_000)
    finally:
        client.close()
    assert grants[0] == grants[2] == PassGrant.FULL
    assert isinstance(grants[1], StoreUnavailableError)
    assert store.unavailable_within(60, "down")
    assert not store.unavailable_within(60, "up")


def test_a_tick_look_on_one_server_fails_as_a_whole(
    redis_client: redis.Redis, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On one server a pipeline that fails is Redis away for every tenant: the look raises
    UNAVAILABLE (the dispatcher waits for the next tick) instead of trying each tenant."""
    store = RedisStore(redis_client, clock)

    def away(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise redis.ConnectionError("redis is away")

    monkeypatch.setattr("redis.client.Pipeline.execute", away)
    with pytest.raises(StoreUnavailableError):
        store.open_passes(["t1", "t2"], "A", 1_000, 2_000)


def test_cluster_mode_is_detected(cluster_url: str, redis_server: local_redis.LocalRedis) -> None:
    """``from_url`` asks ``INFO cluster``: a cluster node gives a cluster-mode store, a plain
    server a single-server one; ``redis+cluster://`` skips the question."""
    stores = [
        RedisStore.from_url(cluster_url),
        RedisStore.from_url(redis_server.url),
        RedisStore.from_url(cluster_url.replace("redis://", "redis+cluster://")),
    ]
    try:
        assert [store.cluster_mode for store in stores] == [True, False, True]
        assert all(store.now_ms() > 0 for store in stores)
    finally:
        for store in stores:
            store.close()


@pytest.mark.parametrize("kind", ["plain", "cluster"])
def test_every_script_is_single_slot(cluster_url: str, clock: FakeClock, kind: str) -> None:
    """Every store method runs on a one-node Redis Cluster, which refuses a script or
    ``MULTI`` that touches two slots, both through a plain client and in cluster mode (a
    ``RedisCluster`` client: scripts routed by key, transactions sent to the slot's node).
    (The server really checks: our scripts carry the ``#!lua`` shebang, and a probe script
    with it that reads an undeclared key of another slot is refused.)"""
    client = redis.Redis.from_url(cluster_url, decode_responses=True)
    client.flushall()
    with pytest.raises(redis.ResponseError, match="do not hash to the same slot"):
        client.eval("#!lua\nreturn redis.call('GET', 'other')", 1, "rt:v1:{acme}:x")
    if kind == "cluster":
        client.close()
        client = RedisCluster.from_url(cluster_url, decode_responses=True)  # type: ignore[assignment]
    store = RedisStore(client, clock)
    assert store.cluster_mode == (kind == "cluster")
    policy = Policy(max_missed_offers=1)
    store.create_agent(T, AgentProfile("a", skills={"billing": 3}))
    store.update_agent(T, "a", lambda p: dataclasses.replace(p, skills={"tech": 2}))
    store.put_policy(T, policy)
    seq = store.set_presence(T, "a", Presence.AVAILABLE).seq
    store.heartbeat(T, "a")
    first = store.commit_assignment(T, _claim("c1", seq, offer_s=30))
    assert isinstance(first, Committed)
    store.accept_offer(T, first.assignment.assignment_id, first.assignment.token, policy=policy)
    store.finish_assignment(
        T, first.assignment.assignment_id, first.assignment.token, AssignmentState.RELEASED
    )
    store.enqueue(T, "r2", "fp", Call("c2", Channel.CHAT), policy=policy)
    store.mark_sla(T, "c2", breached=False, policy=policy)
    store.mark_sla(T, "c2", breached=True, policy=policy)
    store.request_callback(T, "c2")
    view = store.load_queue(T, 10)
    placed = store.commit_assignment(
        T,
        dataclasses.replace(
            _claim("c2", store.get_agent(T, "a").seq, offer_s=5),
            call=view.calls[0],
            request_id="",
            from_queue=True,
        ),
    )
    assert isinstance(placed, Committed)
    offer = placed.assignment
    clock.advance(6_000)
    assert store.expired_offers(T) == [offer]
    store.decline_offer(T, offer.assignment_id, offer.token, timed_out=True, policy=policy)
    store.set_presence(T, "a", Presence.AVAILABLE)
    again = store.commit_assignment(T, _claim("c3", store.get_agent(T, "a").seq, offer_s=5))
    assert isinstance(again, Committed)
    assert [a.assignment_id for a in store.reclaim(T, "a", channels=frozenset(), policy=policy)]
    store.cancel_call(T, "c1")
    store.cancel_call(T, "c3")
    assert store.get_call(T, "c2").status == CallStatus.QUEUED
    assert store.find_request(T, "r2") is not None
    assert store.call_timeline(T, "c2")
    assert store.history(T, 0)
    assert store.acquire_lease(T, "me", 1_000)
    store.release_lease(T, "me")
    assert store.tenants() == [T]
    assert store.read_events(T, limit=1000)
    store.load_snapshot(T, Call("x", Channel.CHAT))
    store.list_agents(T, AgentQuery(), 10)
    seq = store.set_presence(T, "a", Presence.AVAILABLE).seq
    done = store.commit_assignment(T, _claim("c4", seq))
    assert isinstance(done, Committed)
    store.finish_assignment(
        T, done.assignment.assignment_id, done.assignment.token, AssignmentState.COMPLETED
    )
    store.enqueue(T, "r5", "fp", Call("c5", Channel.CHAT, created_ms=clock.now_ms), policy=policy)
    clock.advance(1_000)
    assert store.expire_call(T, "c5", max_wait_s=1, policy_version=store.get_policy(T).version)
    assert store.history(T, 0)[-1].kind == "expired"  # the mirror read forward
    due = store.due_waits(T, {Channel.CHAT: 1}, clock.now_ms + 1_000, 10)  # builds its index
    assert [call.call_id for call in due] == ["c2"]
    assert store.open_passes([T, "beta", "gamma"], "me", 1_000, 2_000) == [PassGrant.FULL] * 3
    store.delete_agent(T, "a")
    client.close()


def test_a_cluster_is_writable_while_one_primary_is(
    cluster_url: str, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a cluster, health asks each primary until one takes a write: with one of two
    primaries down (here: a node nothing listens on, listed first) the store is writable;
    with none, unavailable."""
    client = RedisCluster.from_url(cluster_url, decode_responses=True)
    try:
        store = RedisStore(client, clock)
        assert store.cluster_mode
        live = client.get_primaries()  # type: ignore[no-untyped-call]
        dead = ClusterNode("127.0.0.1", local_redis.free_port())  # type: ignore[no-untyped-call]
        monkeypatch.setattr(client, "get_primaries", lambda: [dead, *live])
        store.check_writable()
        monkeypatch.setattr(client, "get_primaries", lambda: [dead])
        with pytest.raises(StoreUnavailableError):
            store.check_writable()
    finally:
        client.close()


@pytest.mark.parametrize("kind", ["plain", "cluster"])
def test_an_outage_is_every_tenants_on_one_server_and_its_own_on_a_cluster(
    cluster_url: str, clock: FakeClock, kind: str
) -> None:
    """A request of tenant ``a`` that found Redis unavailable starts the dispatcher's grace
    (``unavailable_within``) for every tenant on one server, but only for ``a`` on a cluster
    (other tenants' slots live on other nodes)."""
    client: redis.Redis | RedisCluster = redis.Redis.from_url(cluster_url, decode_responses=True)
    if kind == "cluster":
        client.close()
        client = RedisCluster.from_url(cluster_url, decode_responses=True)
    try:
        store = RedisStore(client, clock)
        with pytest.raises(StoreUnavailableError), store._errors("MULTI", key=Keys("a").prefix):
            raise redis.ConnectionError("the node of a's slot is down")
        assert store.unavailable_within(60, "a")
        assert store.unavailable_within(60, "b") == (kind == "plain")
    finally:
        client.close()


def test_blocking_read_outlasts_the_socket_timeout(redis_server: local_redis.LocalRedis) -> None:
    """``block_ms`` longer than the client's socket timeout neither fails nor returns early:
    the store blocks in slices. ``$`` waits for events newer than the call."""
    client = redis.Redis.from_url(redis_server.url, decode_responses=True, socket_timeout=0.3)
    client.flushall()
    store = RedisStore(client)
    store.create_agent(T, AgentProfile("a"))
    (created,) = store.read_events(T)
    started = time.monotonic()
    assert store.read_events(T, "$", block_ms=700) == []
    assert 0.6 < time.monotonic() - started < 3

    def later() -> None:
        time.sleep(0.8)
        store.set_presence(T, "a", Presence.AVAILABLE)

    for cursor in (created.event_id, "$"):
        writer = threading.Thread(target=later)
        started = time.monotonic()
        writer.start()
        events = store.read_events(T, cursor, block_ms=5_000)
        writer.join()
        assert [e.type for e in events] == ["PRESENCE_CHANGED"]
        assert 0.7 < time.monotonic() - started < 4
        created = events[0]
    client.close()


def test_trimmed_events_are_out_of_range(redis_client: redis.Redis, clock: FakeClock) -> None:
    """Once ``MAXLEN ~`` trimmed the stream, a cursor older than its first event is
    OUT_OF_RANGE; "0" still reads from the oldest event kept, newer cursors work."""
    store = RedisStore(redis_client, clock, events_maxlen=10)
    store.create_agent(T, AgentProfile("a"))
    (first,) = store.read_events(T)
    for _ in range(300):
        store.set_presence(T, "a", Presence.AVAILABLE)
    kept = store.read_events(T, "0", limit=1000)
    assert 10 <= len(kept) < 300
    with pytest.raises(OutOfRangeError, match=f"events after {first.event_id} were trimmed"):
        store.read_events(T, first.event_id)
    assert store.read_events(T, kept[0].event_id, limit=1000) == kept[1:]
    assert store.read_events(T, kept[-1].event_id, block_ms=10) == []


@pytest.mark.parametrize("trace_id", ["", "4bf92f3577b34da6a3ce929d0e0e4736"])
def test_on_redis_time_a_bound_trace_leaves_the_clock_alone(
    redis_client: redis.Redis, trace_id: str
) -> None:
    """The request's trace rides on the scripts' clock argument (``;<traceparent>`` after an
    empty clock): Redis time still decides, the lease still gets its PX TTL, and events
    are stamped with Redis time."""
    store = RedisStore(redis_client)
    token = tracing.bind_request_trace(trace_id and f"00-{trace_id}-00f067aa0ba902b7-01")
    try:
        assert store.acquire_lease(T, "one", 300)
        store.create_agent(T, AgentProfile("a", skills={"billing": 5}))
    finally:
        tracing.unbind_request_trace(token)
    assert 0 < int(redis_client.pttl(PREFIX + "lease:dispatch")) <= 300
    (created,) = store.read_events(T)
    seconds, micros = redis_client.time()
    assert 0 <= seconds * 1000 + micros // 1000 - created.ts_ms < 5_000
    assert created.data.get("trace_id", "") == trace_id


def test_lease_expires_on_redis_time(redis_client: redis.Redis) -> None:
    """Without a test clock the lease and the tick marker are keys with a PX TTL: they expire
    on Redis time; only the lease's owner extends or releases it."""
    store = RedisStore(redis_client)
    assert store.acquire_lease(T, "one", 300)
    assert not store.acquire_lease(T, "two", 300)
    assert 0 < int(redis_client.pttl(PREFIX + "lease:dispatch")) <= 300
    store.release_lease(T, "two")  # not the owner: no effect
    assert store.acquire_lease(T, "one", 300)  # extended
    time.sleep(0.4)
    assert store.acquire_lease(T, "two", 10_000)
    assert not store.acquire_lease(T, "one", 10_000)
    store.release_lease(T, "two")
    assert redis_client.exists(PREFIX + "lease:dispatch") == 0
    assert store.open_pass(T, "one", 10_000, 300) is PassGrant.FULL
    assert 0 < int(redis_client.pttl(PREFIX + "lease:tick")) <= 300
    store.release_lease(T, "one")
    assert store.open_pass(T, "two", 10_000, 300) is PassGrant.IDLE
    time.sleep(0.4)
    assert store.open_pass(T, "two", 10_000, 300) is PassGrant.FULL


def test_wrap_up_keeps_the_field_until_swept(redis_client: redis.Redis, clock: FakeClock) -> None:
    """A completed assignment with wrap-up keeps its ``a:`` field (with the wrap-up end) and
    writes no span; once it ended, readers count it as a span, and the next script on the
    agent moves it into ``work`` with that end."""
    store = RedisStore(redis_client, clock)
    store.create_agent(T, AgentProfile("a"))
    seq = store.set_presence(T, "a", Presence.AVAILABLE).seq
    done = store.commit_assignment(T, _claim("c1", seq))
    assert isinstance(done, Committed)
    asg, start = done.assignment, clock.now_ms
    clock.advance(1_000)
    store.finish_assignment(
        T, asg.assignment_id, asg.token, AssignmentState.COMPLETED, wrap_up_s=30
    )
    field = f"a:{asg.assignment_id}"
    wrap_until = clock.now_ms + 30_000
    assert redis_client.hget(PREFIX + "agent:a", field) == f"chat|25|{start}|0|{wrap_until}"
    assert redis_client.zcard(PREFIX + "work:a") == 0
    clock.advance(30_000)
    agent = store.get_agent(T, "a")
    assert (agent.active, agent.recent) == ((), (WorkSpan(start, wrap_until, 25),))
    again = store.commit_assignment(T, _claim("c2", agent.seq))
    assert isinstance(again, Committed)
    assert not redis_client.hexists(PREFIX + "agent:a", field)
    assert redis_client.zrange(PREFIX + "work:a", 0, -1) == [
        f"{asg.assignment_id}|{start}|{wrap_until}|25"
    ]
    assert store.get_agent(T, "a").recent == (WorkSpan(start, wrap_until, 25),)
