"""What only the Redis store has: the key schema on the server, TTLs, server time, scripts
reloading after a flush and the mapping of driver failures to the error tree."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.retry import Retry

from router import local_redis
from router.domain import (
    AgentProfile,
    AssignmentState,
    Call,
    Channel,
    Explanation,
    Presence,
    Strategy,
)
from router.errors import RouterError, StoreUnavailableError
from router.redis_store import RedisStore
from router.store import AgentQuery, Claim, Committed
from router.store_common import RECORD_TTL_MS, REQUEST_TTL_MS
from tests.helpers import FakeClock

T = "acme"
PREFIX = "rt:v1:{acme}:"


def _claim(call_id: str, seq: int, heartbeat_timeout_s: int = 0) -> Claim:
    return Claim(
        request_id=f"req-{call_id}",
        fingerprint="fp",
        call=Call(call_id=call_id, channel=Channel.CHAT),
        agent_id="a",
        expected_seq=seq,
        units=25,
        heartbeat_timeout_s=heartbeat_timeout_s,
        explanation=Explanation(strategy=Strategy.BALANCED),
    )


def _busy_tenant(store: RedisStore) -> str:
    """Create an agent, a policy, one finished and one active assignment; return the
    finished assignment id."""
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
    return asg.assignment_id


def test_keys_follow_the_schema(redis_client: redis.Redis, clock: FakeClock) -> None:
    """Every key carries the tenant hash tag (one cluster slot) and has the documented type;
    the agent hash derives load from its ``a:<assignment_id>`` fields."""
    finished = _busy_tenant(RedisStore(redis_client, clock))
    keys = {str(key): str(redis_client.type(key)) for key in redis_client.keys("*")}
    assert all(key.startswith(PREFIX) for key in keys)
    assert {key_slot(key.encode()) for key in keys} == {key_slot(b"{acme}")}
    types = {key.removeprefix(PREFIX).split(":")[0]: kind for key, kind in keys.items()}
    assert types == {
        "agent": "hash",
        "work": "zset",
        "agents": "zset",
        "idx": "set",
        "policy": "string",
        "asg": "hash",
        "call": "hash",
        "req": "hash",
        "fence": "string",
        "events": "stream",
    }
    agent = redis_client.hgetall(PREFIX + "agent:a")
    (field,) = [name for name in agent if str(name).startswith("a:")]
    assert agent[field] == f"chat|25|{clock.now_ms}"
    assert redis_client.smembers(PREFIX + "idx:skill:billing") == {"a"}
    assert redis_client.zrange(PREFIX + "work:a", 0, -1) == [
        f"{finished}|{clock.now_ms}|{clock.now_ms}|25"
    ]
    assert redis_client.get(PREFIX + "fence") == "2"


def test_records_expire_on_redis_time(redis_client: redis.Redis, clock: FakeClock) -> None:
    """Idempotency records live 24 h; ended assignments and finished calls 7 days; active
    ones and agents do not expire."""
    finished = _busy_tenant(RedisStore(redis_client, clock))

    def ttl(key: str) -> int:
        return int(redis_client.pttl(PREFIX + key))

    assert REQUEST_TTL_MS - 60_000 < ttl("req:req-c1") <= REQUEST_TTL_MS
    assert RECORD_TTL_MS - 60_000 < ttl(f"asg:{finished}") <= RECORD_TTL_MS
    assert RECORD_TTL_MS - 60_000 < ttl("call:c1") <= RECORD_TTL_MS
    assert ttl("call:c2") == -1
    assert ttl("agent:a") == -1


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
    calls: list[Callable[[], object]] = [
        store.now_ms,
        lambda: store.get_agent(T, "a"),
        lambda: store.list_agents(T, AgentQuery(), 10),
        lambda: store.create_agent(T, AgentProfile("a")),
        lambda: store.load_snapshot(T, Call(call_id="c", channel=Channel.CHAT)),
        lambda: store.commit_assignment(T, _claim("c", 1)),
        lambda: store.finish_assignment(T, "x", 1, AssignmentState.COMPLETED),
        lambda: store.read_events(T),
    ]
    try:
        for call in calls:
            with pytest.raises(StoreUnavailableError, match="redis unavailable"):
                call()
    finally:
        client.close()
