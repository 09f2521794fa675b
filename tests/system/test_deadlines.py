"""Deadlines bound the work of each request (``router.deadline``).

The assigner stops re-planning and never starts a commit once the RPC's deadline has passed;
``DeadlineInterceptor`` binds the client's deadline. The last test shows the gap while
``router/server.py`` does not install that interceptor yet: a real ``python -m router``
still commits an Assign whose client gave up long before (safe, because a retry with the same
request_id replays it, but wasted work that a slow Redis then piles up).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from router import deadline, local_redis
from router.assigner import (
    INLINE_DISPATCH_RESERVE_S,
    INLINE_DISPATCH_WAIT_S,
    Assigner,
    Outcome,
)
from router.dispatcher import Dispatcher
from router.domain import AgentProfile, Call, Channel, Presence, SkillRequirement
from router.errors import ContentionError
from router.interceptors import ErrorInterceptor
from router.memory_store import MemoryStore
from router.redis_store import RedisStore
from router.routing_api import RoutingServicer
from router.store import Claim, CommitResult, Conflict
from router.v1 import routing_pb2, routing_pb2_grpc
from router.v1 import types_pb2 as pb
from tests.system import fleet

DEBUG = ("--enable-debug-command", "local")


class AlwaysConflicts(MemoryStore):
    """Every commit loses a race after 20 ms (agents keep changing)."""

    def commit_assignment(self, tenant: str, claim: Claim) -> CommitResult:
        time.sleep(0.02)
        return Conflict("agent changed")


def _call(call_id: str) -> Call:
    return Call(call_id, Channel.CHAT, required_skills=(SkillRequirement("billing", 1),))


def _store_with_agent(store: MemoryStore) -> MemoryStore:
    profile = AgentProfile("a1", skills={"billing": 5}, capacity={Channel.CHAT: 3})
    store.create_agent("acme", profile)
    store.set_presence("acme", "a1", Presence.AVAILABLE)
    return store


def test_no_deadline_outside_an_rpc() -> None:
    assert deadline.remaining() is None
    assert deadline.allows(10.0)
    deadline.check("anything")  # does not raise
    with deadline.scope(None):
        assert deadline.remaining() is None
    with deadline.scope(deadline.NO_DEADLINE_S * 2):  # gRPC's "no deadline" is huge
        assert deadline.remaining() is None


def test_replanning_stops_at_the_deadline() -> None:
    """Without a deadline the assigner gives up after max_replans (ABORTED); with 200 ms it
    stops at the deadline instead of re-planning 100 times."""
    store = _store_with_agent(AlwaysConflicts())
    assigner = Assigner(store, max_replans=100)
    started = time.monotonic()
    with deadline.scope(0.2), pytest.raises(deadline.DeadlineExceededError):
        assigner.assign("acme", "r1", _call("c1"))
    took = time.monotonic() - started
    assert 0.2 <= took < 0.5
    with pytest.raises(ContentionError, match="agents kept changing"):
        Assigner(store, max_replans=2).assign("acme", "r2", _call("c2"))


def test_no_commit_after_the_deadline() -> None:
    """A deadline that already passed writes nothing; a retry without one assigns."""
    store = _store_with_agent(MemoryStore())
    assigner = Assigner(store)
    with deadline.scope(0.0), pytest.raises(deadline.DeadlineExceededError):
        assigner.assign("acme", "r1", _call("c1"))
    assert store.find_request("acme", "r1") is None
    assert assigner.assign("acme", "r1", _call("c1")).outcome == Outcome.ASSIGNED


def test_inline_dispatch_is_skipped_when_time_is_short() -> None:
    """An Assign that queues with almost no time left leaves placing to the dispatcher; with
    time, its pass waits for one running in this replica at most ``INLINE_DISPATCH_WAIT_S``,
    and within the deadline's reserve."""
    store = _store_with_agent(MemoryStore())
    dispatcher = Dispatcher(store)
    calls = []
    waits: list[float | None] = []

    class Spy:
        def run_once(self, tenant: str, *, wait_s: float | None = 0.0) -> object:
            calls.append(tenant)
            waits.append(wait_s)
            return dispatcher.run_once(tenant, wait_s=wait_s)

    assigner = Assigner(store, dispatcher=Spy())
    for n in range(3):  # capacity 3: the fourth call queues
        assert assigner.assign("acme", f"r{n}", _call(f"c{n}")).outcome == Outcome.ASSIGNED
    with deadline.scope(0.01):
        queued = assigner.assign("acme", "r9", _call("c9"))
    assert queued.outcome == Outcome.QUEUED
    assert calls == []
    assigner.assign("acme", "r10", _call("c10"))
    assert calls == ["acme"]
    with deadline.scope(0.3):
        assigner.assign("acme", "r11", _call("c11"))
    assert waits[0] == INLINE_DISPATCH_WAIT_S
    assert waits[1] is not None
    assert 0 < waits[1] < 0.3 - INLINE_DISPATCH_RESERVE_S


@pytest.fixture
def debug_redis() -> Iterator[local_redis.LocalRedis]:
    """A private redis-server that allows DEBUG SLEEP from loopback."""
    if not local_redis.available():
        pytest.skip("redis-server is not installed")
    server = local_redis.start(extra_args=DEBUG)
    try:
        yield server
    finally:
        server.stop()


def _sleep_redis(server: local_redis.LocalRedis, seconds: float) -> threading.Thread:
    def run() -> None:
        with fleet.raw_client(server) as other:
            other.execute_command("DEBUG", "SLEEP", str(seconds))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    time.sleep(0.05)
    return thread


def _late_assign(
    stub: routing_pb2_grpc.RoutingServiceStub, server: local_redis.LocalRedis
) -> routing_pb2.AssignRequest:
    """An Assign with a 200 ms deadline while Redis sleeps for 1 s: DEADLINE_EXCEEDED."""
    request = fleet.assign_request("late", "call-late", "billing")
    sleeper = _sleep_redis(server, 1.0)
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as err:
        stub.Assign(request, timeout=0.2)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 0.5
    sleeper.join(5)
    time.sleep(0.5)  # the server's Assign, if it went on, has finished by now
    return request


def test_interceptor_stops_an_assign_whose_client_gave_up(
    debug_redis: local_redis.LocalRedis,
) -> None:
    """In-process server with ``DeadlineInterceptor`` (as ``router/server.py`` should
    install it): the Assign that outlived its deadline wrote nothing; a retry assigns."""
    store = RedisStore.from_url(debug_redis.url, timeout_s=2.0)
    _store_with_agent_redis(store)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4),
        interceptors=[ErrorInterceptor(), deadline.DeadlineInterceptor()],
    )
    dispatcher = Dispatcher(store)
    assigner = Assigner(store, dispatcher=dispatcher)
    routing_pb2_grpc.add_RoutingServiceServicer_to_server(
        RoutingServicer(store, assigner, dispatcher.wake), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        stub = routing_pb2_grpc.RoutingServiceStub(channel)
        request = _late_assign(stub, debug_redis)
        with fleet.raw_client(debug_redis) as raw:
            assert not raw.exists(fleet.key("call", "call-late"))
            assert not raw.exists(fleet.key("req", "late"))
        retry = stub.Assign(request, timeout=5)
        assert retry.result == routing_pb2.AssignResponse.RESULT_ASSIGNED
        assert not retry.replayed
    finally:
        channel.close()
        server.stop(0)
        store.close()


def _store_with_agent_redis(store: RedisStore) -> None:
    profile = AgentProfile(
        "a1", skills={"billing": 5}, languages=frozenset({"en"}), capacity={Channel.CHAT: 3}
    )
    store.create_agent("acme", profile)
    store.set_presence("acme", "a1", Presence.AVAILABLE)


def test_router_process_does_not_commit_after_the_deadline(
    debug_redis: local_redis.LocalRedis, tmp_path: Path
) -> None:
    """The same against ``python -m router``: today the Assign goes on after its client's
    deadline and commits (a retry then replays it, so nothing is double-booked)."""
    with fleet.replicas(debug_redis.url, tmp_path, 1) as (node,):
        fleet.seed_agents(node, [fleet.agent_pb("a1", {"billing": 5}, {pb.CHANNEL_CHAT: 3})])
        request = _late_assign(node.routing, debug_redis)
        retry = node.routing.Assign(request, timeout=5)
        assert retry.result == routing_pb2.AssignResponse.RESULT_ASSIGNED
        with fleet.raw_client(debug_redis) as raw:
            assert fleet.live_per_call(raw) == {"call-late": 1}
        assert not retry.replayed, "the server committed after the client's deadline"
