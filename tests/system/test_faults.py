"""Faults against real processes: ``python -m router`` replicas over a redis-server this test
controls. Redis killed and restarted, paused (SIGSTOP), its script cache flushed, slowed
(``DEBUG SLEEP``); a replica SIGKILLed while it holds the dispatcher lease; SIGTERM with
calls in flight. Every wait is bounded; measured times are printed (``-s``) and quoted in
RELIABILITY.md.
"""

from __future__ import annotations

import re
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from router import local_redis
from router.v1 import routing_pb2
from router.v1 import types_pb2 as pb
from tests.system import fleet
from tests.system.fleet import NOT_SERVING, SERVING, Replica

FAST = {"redis_timeout_s": 0.5, "health_interval_s": 0.2}
"""Replica settings for fault tests: detect an outage within a fraction of a second."""
DEBUG = ("--enable-debug-command", "local")
OK_OR_RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
RESULT = routing_pb2.AssignResponse


@pytest.fixture
def redis_server() -> Iterator[local_redis.LocalRedis]:
    """A private redis-server with AOF (fsync always) and DEBUG allowed from loopback."""
    if not local_redis.available():
        pytest.skip("redis-server is not installed")
    server = local_redis.start(appendonly=True, appendfsync="always", extra_args=DEBUG)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def client(redis_server: local_redis.LocalRedis) -> Iterator[redis.Redis]:
    """A decoding client on the test's redis-server."""
    raw = fleet.raw_client(redis_server)
    try:
        yield raw
    finally:
        raw.close()


def _team(replica: Replica, count: int = 12, *, voice_only: bool = False) -> list[str]:
    channels: dict[pb.Channel.ValueType, int] = {pb.CHANNEL_VOICE: 1}
    if not voice_only:
        channels[pb.CHANNEL_CHAT] = 2
    agents = [fleet.agent_pb(f"a{i:02d}", {"billing": 5}, channels) for i in range(count)]
    fleet.seed_agents(replica, agents, workers=4)
    return [a.agent_id for a in agents]


def _assign(
    replica: Replica,
    n: int,
    *,
    timeout_s: float = 5.0,
    channel: pb.Channel.ValueType = pb.CHANNEL_CHAT,
) -> routing_pb2.AssignResponse:
    request = fleet.assign_request(f"req-{n}", f"call-{n}", "billing", channel)
    return replica.routing.Assign(request, timeout=timeout_s)


def _fail_code(replica: Replica, n: int, timeout_s: float) -> tuple[grpc.StatusCode, float]:
    """Send one Assign expected to fail; its status code and how long it took."""
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as err:
        _assign(replica, n, timeout_s=timeout_s)
    return err.value.code(), time.monotonic() - started


def _check_stored(client: redis.Redis, answers: dict[str, routing_pb2.AssignResponse]) -> None:
    """Every acknowledged assignment is in Redis as it was answered."""
    stored = fleet.assignments(client, [a.assignment.assignment_id for a in answers.values()])
    for call_id, answer in answers.items():
        asg = stored[answer.assignment.assignment_id]
        assert asg, f"{call_id}: acknowledged assignment lost"
        assert asg["call_id"] == call_id
        assert asg["agent_id"] == answer.assignment.agent_id
        assert int(asg["token"]) == answer.assignment.fencing_token


def _live_per_call(client: redis.Redis) -> dict[str, int]:
    """Live (active or offered) assignments per call id, from every stored assignment."""
    return fleet.live_per_call(client)


@pytest.mark.timeout(90)
def test_redis_killed_and_restarted_loses_nothing(
    redis_server: local_redis.LocalRedis, client: redis.Redis, tmp_path: Path
) -> None:
    """SIGKILL redis-server (AOF, fsync always): Assigns fail fast with UNAVAILABLE, health
    goes NOT_SERVING; restarted on the same port and data it is SERVING again by itself and
    every acknowledged assignment is still there (a retry replays it)."""
    with fleet.replicas(redis_server.url, tmp_path, 1, **FAST) as (node,):
        _team(node)
        answers = {f"call-{n}": _assign(node, n) for n in range(10)}
        assert {a.result for a in answers.values()} == {RESULT.RESULT_ASSIGNED}
        client.close()
        redis_server.kill()
        killed = time.monotonic()
        fail_fast = [_fail_code(node, 100 + n, timeout_s=3.0) for n in range(5)]
        assert {code for code, _ in fail_fast} == {grpc.StatusCode.UNAVAILABLE}
        worst = max(took for _, took in fail_fast)
        assert worst < 1.0, "UNAVAILABLE should come at once when Redis refuses connections"
        fleet.eventually(lambda: node.health() == NOT_SERVING, 5)
        detected = time.monotonic() - killed
        time.sleep(1.0)  # an outage of a little over a second
        restarted = local_redis.start(
            port=redis_server.port, appendonly=True, directory=redis_server.directory
        )
        redis_server.process = restarted.process  # the fixture stops the new one
        back = time.monotonic()
        recovery = fleet.eventually(lambda: node.health() == SERVING, 10)
        first_ok = _assign(node, 200)  # scripts reloaded after the restart emptied the cache
        served = time.monotonic() - back
        assert first_ok.result == RESULT.RESULT_ASSIGNED
        with fleet.raw_client(redis_server) as fresh:
            _check_stored(fresh, answers)
            replay = _assign(node, 3)
            assert replay.replayed
            assert replay.assignment.assignment_id == answers["call-3"].assignment.assignment_id
        print(
            f"\nredis killed: UNAVAILABLE in max {worst * 1000:.0f} ms, NOT_SERVING after "
            f"{detected:.2f} s; restarted: SERVING after {recovery:.2f} s, first Assign OK "
            f"{served:.2f} s after the restart; {len(answers)} acknowledged assignments kept"
        )


@pytest.mark.timeout(90)
def test_redis_paused_requests_are_bounded_and_recover(
    redis_server: local_redis.LocalRedis, client: redis.Redis, tmp_path: Path
) -> None:
    """SIGSTOP redis-server for 3 s: Assigns end within their deadline with UNAVAILABLE or
    DEADLINE_EXCEEDED (never hang), health goes NOT_SERVING; after SIGCONT it serves again,
    and retrying each failed request with its request_id never assigns a call twice (a
    command sent before the pause may have been applied after it: the retry replays it)."""
    with fleet.replicas(redis_server.url, tmp_path, 1, **FAST) as (node,):
        _team(node)
        _assign(node, 0)
        redis_server.process.send_signal(signal.SIGSTOP)
        paused = time.monotonic()
        try:
            with futures.ThreadPoolExecutor(8) as pool:
                outcomes = list(pool.map(lambda n: _fail_code(node, n, 2.0), range(1, 9)))
            fleet.eventually(lambda: node.health() == NOT_SERVING, 5)
            detected = time.monotonic() - paused
            assert {code for code, _ in outcomes} <= OK_OR_RETRYABLE
            worst = max(took for _, took in outcomes)
            assert worst < 2.5, "a request outlived its deadline"
            time.sleep(max(0.0, 3.0 - (time.monotonic() - paused)))
        finally:
            redis_server.process.send_signal(signal.SIGCONT)
        resumed = time.monotonic()
        recovery = fleet.eventually(lambda: node.health() == SERVING, 10)
        retried = {f"call-{n}": _assign(node, n) for n in range(1, 9)}
        assert all(r.result == RESULT.RESULT_ASSIGNED for r in retried.values())
        _check_stored(client, retried)
        assert all(k == 1 for k in _live_per_call(client).values())
        codes = sorted({code.name for code, _ in outcomes})
        print(
            f"\nredis paused: requests ended in max {worst * 1000:.0f} ms with {codes}, "
            f"NOT_SERVING after {detected:.2f} s; SERVING {recovery:.2f} s after SIGCONT "
            f"({time.monotonic() - resumed:.2f} s until 8 retries answered)"
        )


@pytest.mark.timeout(60)
def test_script_flush_mid_run_reloads_scripts(
    redis_server: local_redis.LocalRedis, client: redis.Redis, tmp_path: Path
) -> None:
    """``SCRIPT FLUSH`` between requests: the next ones (Assign, Complete, Cancel) succeed
    (NOSCRIPT makes the client load the script again)."""
    with fleet.replicas(redis_server.url, tmp_path, 2) as nodes:
        _team(nodes[0])
        for n in range(20):
            if n % 5 == 0:
                assert client.script_flush() is True
            reply = _assign(nodes[n % 2], n)
            assert reply.result == RESULT.RESULT_ASSIGNED
            if n % 2:
                nodes[(n + 1) % 2].routing.Complete(
                    routing_pb2.CompleteRequest(
                        tenant=fleet.TENANT,
                        assignment_id=reply.assignment.assignment_id,
                        fencing_token=reply.assignment.fencing_token,
                    ),
                    timeout=5,
                )
            else:
                nodes[n % 2].routing.Cancel(
                    routing_pb2.CancelRequest(tenant=fleet.TENANT, call_id=f"call-{n}"),
                    timeout=5,
                )


@pytest.mark.timeout(60)
def test_slow_redis_is_bounded(
    redis_server: local_redis.LocalRedis, client: redis.Redis, tmp_path: Path
) -> None:
    """``DEBUG SLEEP`` blocks Redis: under the replica's socket timeout (0.5 s) requests just
    wait and succeed; beyond it they fail with UNAVAILABLE after about that timeout, well
    inside the client's deadline, and everything works again once Redis answers."""
    with fleet.replicas(redis_server.url, tmp_path, 1, **FAST) as (node,):
        _team(node)
        _assign(node, 0)

        def sleep_redis(seconds: float) -> threading.Thread:
            def run() -> None:
                with fleet.raw_client(redis_server) as other:
                    other.execute_command("DEBUG", "SLEEP", str(seconds))

            thread = threading.Thread(target=run, daemon=True)
            thread.start()
            time.sleep(0.05)
            return thread

        sleeper = sleep_redis(0.3)
        started = time.monotonic()
        assert _assign(node, 1).result == RESULT.RESULT_ASSIGNED
        short = time.monotonic() - started
        sleeper.join(5)
        sleeper = sleep_redis(2.0)
        code, long = _fail_code(node, 2, timeout_s=3.0)
        assert code == grpc.StatusCode.UNAVAILABLE
        assert long < 1.5
        sleeper.join(5)
        assert _assign(node, 2, timeout_s=5).result == RESULT.RESULT_ASSIGNED
        print(
            f"\nDEBUG SLEEP 0.3: Assign OK in {short * 1000:.0f} ms; DEBUG SLEEP 2 "
            f"(timeout 0.5 s): UNAVAILABLE in {long * 1000:.0f} ms"
        )


def _learn_owner(client: redis.Redis, timeout_s: float = 10.0) -> str:
    """The owner id of the only dispatcher running (polls the lease, bounded)."""
    seen: list[str] = []

    def held() -> bool:
        value = fleet.lease_value(client)
        if value:
            seen.append(value.split("|", 1)[1])
        return bool(value)

    fleet.eventually(held, timeout_s, step_s=0.001)
    return seen[-1]


def _kill_holding_lease(client: redis.Redis, victim: Replica, owner: str) -> int:
    """SIGKILL ``victim`` while it holds the tenant's lease; returns the lease expiry (Redis
    ms). Stops it first, checks the lease is still its own, then kills (bounded tries)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        value = fleet.lease_value(client)
        if not value or not value.endswith(f"|{owner}"):
            time.sleep(0.0005)
            continue
        victim.signal(signal.SIGSTOP)
        still = fleet.lease_value(client)
        if still == value:
            victim.process.kill()
            victim.process.wait(10)
            return int(value.split("|", 1)[0])
        victim.signal(signal.SIGCONT)
    raise AssertionError("never caught the victim holding the lease")


def _redis_ms(client: redis.Redis) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


LEASE_S = 3
"""``ROUTER_DISPATCH_LEASE_S`` of the lease test's replicas (shorter than the default 10 s)."""


@pytest.mark.timeout(90)
def test_replica_killed_holding_the_lease(
    redis_server: local_redis.LocalRedis, client: redis.Redis, tmp_path: Path
) -> None:
    """Replica A is SIGKILLed while it holds the dispatcher lease, with offers outstanding
    and calls queued. Replica B takes the lease once it expires in Redis time (not before),
    times out A's stale offers, places the queued calls, and fencing tokens from A's
    assignments stay correct: a stale token is FAILED_PRECONDITION, the right one works."""
    lease = {"dispatch_tick_s": 0.1, "dispatch_lease_s": LEASE_S}
    a = fleet.start_replica(redis_server.url, tmp_path, "a", **lease, **FAST)
    b: Replica | None = None
    try:
        a.wait_serving()
        # long enough that A's offers outlive B's start-up and the kill on a loaded machine
        # (B accepts some of them), short enough that B times the rest out after taking over
        fleet.set_policy(a, offer_timeout_s={pb.CHANNEL_VOICE: 8})
        agents = _team(a, 8, voice_only=True)
        answers = [_assign(a, n, channel=pb.CHANNEL_VOICE) for n in range(20)]
        offers = [r for r in answers if r.result == RESULT.RESULT_OFFERED]
        assert len(offers) == len(agents)
        assert sum(r.result == RESULT.RESULT_QUEUED for r in answers) == 20 - len(agents)
        owner = _learn_owner(client)
        b = fleet.start_replica(redis_server.url, tmp_path, "b", **lease, **FAST)
        b.wait_serving()
        expires_ms = _kill_holding_lease(client, a, owner)
        killed_ms = _redis_ms(client)
        killed = time.monotonic()
        # the lease lives ROUTER_DISPATCH_LEASE_S from its last acquisition (default: 10 s)
        assert expires_ms - killed_ms <= LEASE_S * 1000
        # accept half of A's offers through B (no lease needed), complete two of them
        accepted = []
        for offer in offers[:4]:
            got = b.routing.Accept(
                routing_pb2.AcceptRequest(
                    tenant=fleet.TENANT,
                    assignment_id=offer.assignment.assignment_id,
                    fencing_token=offer.assignment.fencing_token,
                ),
                timeout=5,
            )
            assert got.assignment.state == pb.ASSIGNMENT_STATE_ACTIVE
            accepted.append(got.assignment)
        with pytest.raises(grpc.RpcError) as stale:
            b.routing.Complete(
                routing_pb2.CompleteRequest(
                    tenant=fleet.TENANT,
                    assignment_id=accepted[0].assignment_id,
                    fencing_token=accepted[1].fencing_token,  # another assignment's token
                ),
                timeout=5,
            )
        assert stale.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        for done in accepted[:2]:
            b.routing.Complete(
                routing_pb2.CompleteRequest(
                    tenant=fleet.TENANT,
                    assignment_id=done.assignment_id,
                    fencing_token=done.fencing_token,
                ),
                timeout=5,
            )
        queued_ids = [
            f"call-{n}" for n, r in enumerate(answers) if r.result == RESULT.RESULT_QUEUED
        ]

        def placed() -> list[str]:
            records = fleet.calls(client, queued_ids)
            return [c for c, r in records.items() if r.get("status") != "queued"]

        fleet.eventually(lambda: len(placed()) >= 2, 25, step_s=0.05)
        takeover = time.monotonic() - killed
        first = fleet.assignments(
            client, [fleet.calls(client, [c])[c]["assignment_id"] for c in placed()]
        )
        created = min(int(h["created"]) for h in first.values())
        assert created >= expires_ms, "B dispatched before A's lease expired in Redis time"
        # A's offers that nobody accepted timed out (B's dispatcher) and were re-offered
        stale_offers = offers[4:]

        def timed_out() -> bool:
            stored = fleet.assignments(client, [o.assignment.assignment_id for o in stale_offers])
            return all(h["state"] == "timed_out" for h in stored.values())

        fleet.eventually(timed_out, 10)
        for offer in stale_offers:
            with pytest.raises(grpc.RpcError) as late:
                b.routing.Accept(
                    routing_pb2.AcceptRequest(
                        tenant=fleet.TENANT,
                        assignment_id=offer.assignment.assignment_id,
                        fencing_token=offer.assignment.fencing_token,
                    ),
                    timeout=5,
                )
            assert late.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert all(k == 1 for k in _live_per_call(client).values())
        print(
            f"\nreplica killed holding the lease: lease expired {expires_ms - killed_ms} ms "
            f"after the kill (Redis time); B placed queued calls {takeover:.2f} s after it"
        )
    finally:
        if b is not None:
            b.stop()
        a.signal(signal.SIGCONT)
        a.stop()


@pytest.mark.timeout(60)
def test_sigterm_drains_in_flight_calls(
    redis_server: local_redis.LocalRedis, client: redis.Redis, tmp_path: Path
) -> None:
    """SIGTERM while Assigns are in flight (held up by a 1 s ``DEBUG SLEEP``): health turns
    NOT_SERVING at once, the in-flight Assigns finish OK and are in Redis, the process exits
    with code 0 within ROUTER_GRACE_S plus a small margin. (Its ``/metrics`` times the
    garbage collector's pauses, start-up's full collection first.)"""
    grace_s = 3.0
    metrics_port = local_redis.free_port()
    node = fleet.start_replica(
        redis_server.url,
        tmp_path,
        "node",
        metrics_port=metrics_port,
        grace_s=grace_s,
        redis_timeout_s=3.0,
        health_interval_s=0.05,  # a probe is surely waiting on the sleeping Redis
    )
    try:
        node.wait_serving()
        _team(node)
        _assign(node, 0)
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as reply:
            scraped = reply.read().decode()
        full = re.search(r'^router_gc_pause_seconds_count\{generation="2"\} (\S+)$', scraped, re.M)
        assert full is not None
        assert float(full.group(1)) >= 1
        statuses: list[tuple[float, int]] = []
        stub = health_pb2_grpc.HealthStub(node.channel)
        request = health_pb2.HealthCheckRequest(service="")
        watch = stub.Watch(request, timeout=30)  # type: ignore[attr-defined]  # untyped stub

        def follow() -> None:
            try:
                for reply in watch:
                    statuses.append((time.monotonic(), int(reply.status)))
            except grpc.RpcError:
                pass

        follower = threading.Thread(target=follow, daemon=True)
        follower.start()
        fleet.eventually(lambda: bool(statuses), 5)

        def sleep_redis() -> None:
            with fleet.raw_client(redis_server) as other:
                other.execute_command("DEBUG", "SLEEP", "1.0")

        sleeper = threading.Thread(target=sleep_redis, daemon=True)
        sleeper.start()
        time.sleep(0.1)
        in_flight = [
            node.routing.Assign.future(
                fleet.assign_request(f"req-{n}", f"call-{n}", "billing"), timeout=10
            )
            for n in range(1, 7)
        ]
        time.sleep(0.3)
        node.signal(signal.SIGTERM)
        sent = time.monotonic()
        replies = [f.result(timeout=15) for f in in_flight]
        assert all(r.result == RESULT.RESULT_ASSIGNED for r in replies)
        code = node.process.wait(timeout=grace_s + 10)
        exited = time.monotonic() - sent
        watch.cancel()
        follower.join(5)
        sleeper.join(5)
        assert code == 0
        assert exited < grace_s + 2.0
        not_serving = [t for t, s in statuses if s == NOT_SERVING and t >= sent]
        assert not_serving, f"health never said NOT_SERVING: {statuses}"
        delay = not_serving[0] - sent
        assert delay < 0.5, f"NOT_SERVING only {delay:.2f} s after SIGTERM"
        _check_stored(client, {f"call-{n}": r for n, r in enumerate(replies, start=1)})
        events = {line.get("event"): line for line in node.logs()}
        assert "server_stopped" in events
        # Start-up's objects are out of the collector's full passes.
        assert events["server_started"]["frozen_objects"] > 10_000
        print(
            f"\nSIGTERM: NOT_SERVING after {delay * 1000:.0f} ms, {len(replies)} in-flight "
            f"Assigns OK, exit 0 after {exited:.2f} s (grace {grace_s} s)"
        )
    finally:
        node.stop()
