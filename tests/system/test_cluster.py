"""The service on a real Redis Cluster: 3 primaries, 3 replicas on loopback (``cluster.py``).

Three router servers (in-process gRPC servers, each with its own cluster-mode ``RedisStore``
found by ``RedisStore.from_url``) take concurrent Assigns and Completes for three tenants whose
hash tags live on three different primaries. Mid-run, ``CLUSTER FAILOVER`` on the replica of
one tenant's primary switches that primary over while the traffic goes on. Every request
answers OK or UNAVAILABLE (a client retries UNAVAILABLE with the same request id), the
service resumes by itself, and afterwards every acknowledged assignment is in Redis, no call
was assigned twice and no agent ever held more than its capacity.

The measured numbers are printed (``pytest -s``) and quoted in ``docs/redis-cluster.md``.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial

import grpc
import pytest
import redis

from router.domain import AgentProfile, AssignmentState, Presence
from router.errors import NotFoundError, StoreUnavailableError
from router.redis_store import RedisStore
from router.server import RunningServer, create_server
from router.settings import Settings
from router.store import AgentQuery
from router.v1 import admin_pb2, admin_pb2_grpc, routing_pb2, routing_pb2_grpc
from router.v1 import types_pb2 as pb
from tests.helpers import retries
from tests.system import cluster as harness

pytestmark = pytest.mark.timeout(180)

AGENTS = 8
"""Agents per tenant; four chats each (the default chat capacity)."""
CHAT_CAPACITY = 4
WORKERS_PER_TENANT = 2
LIVE_PER_WORKER = 3
"""A worker completes its oldest assignment once it holds more than this many."""
RUN_S = 12.0
FAILOVER_AT_S = 4.0
RPC_TIMEOUT_S = 10.0
OK_RESULTS = {
    routing_pb2.AssignResponse.RESULT_ASSIGNED,
    routing_pb2.AssignResponse.RESULT_QUEUED,
    routing_pb2.AssignResponse.RESULT_OFFERED,
}


@pytest.fixture(scope="module")
def local_cluster() -> Iterator[harness.LocalCluster]:
    """Six nodes (3 primaries, 3 replicas) for this module."""
    if harness.binaries() is None:
        pytest.skip("redis-server and redis-cli are needed for the cluster test")
    running = harness.start()
    try:
        yield running
    finally:
        running.stop()


def _tenants_on_distinct_primaries(cluster: harness.LocalCluster, prefix: str) -> list[str]:
    """One tenant per primary: the first names ``<prefix>-<n>`` whose slot each owns."""
    chosen: dict[int, str] = {}
    for n in itertools.count():
        name = f"{prefix}-{n}"
        chosen.setdefault(cluster.primary_of_slot(harness.slot_of_tenant(name)), name)
        if len(chosen) == 3:
            return sorted(chosen.values())
    raise AssertionError("unreachable")


@dataclass
class Attempt:
    """One RPC attempt as a client saw it."""

    tenant: str
    kind: str
    started: float
    ended: float
    code: grpc.StatusCode


@dataclass
class Acked:
    """An assignment a client got back from Assign."""

    tenant: str
    call_id: str
    assignment_id: str
    agent_id: str
    token: int
    completed: bool = False


@dataclass
class Run:
    """Everything the workers saw."""

    attempts: list[Attempt] = field(default_factory=list)
    acked: list[Acked] = field(default_factory=list)
    queued: list[tuple[str, str]] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    lossy: bool = False
    """A crash may lose acknowledged writes: a Complete may then be NOT_FOUND."""
    lost: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, attempt: Attempt) -> None:
        with self.lock:
            self.attempts.append(attempt)


def _with_retries(
    run: Run, tenant: str, kind: str, send: Callable[[], object], deadline: float
) -> object:
    """Send until OK (retrying UNAVAILABLE, as clients must), recording every attempt. Any
    other status ends the attempts; it is recorded as unexpected unless it is a Complete's
    NOT_FOUND while ``run.lossy`` (an acknowledged assignment lost with a crashed primary)."""
    while True:
        started = time.monotonic()
        try:
            reply = send()
        except grpc.RpcError as err:
            code = err.code()
            run.note(Attempt(tenant, kind, started, time.monotonic(), code))
            if code == grpc.StatusCode.NOT_FOUND and kind == "complete" and run.lossy:
                with run.lock:
                    run.lost.append(f"{tenant}: {err.details()}")
                return None
            if code != grpc.StatusCode.UNAVAILABLE:
                with run.lock:
                    run.unexpected.append(f"{kind} {tenant}: {code} {err.details()}")
                return None
            if time.monotonic() > deadline:
                with run.lock:
                    run.unexpected.append(f"{kind} {tenant}: still UNAVAILABLE at the deadline")
                return None
            time.sleep(0.05)
            continue
        run.note(Attempt(tenant, kind, started, time.monotonic(), grpc.StatusCode.OK))
        return reply


def _worker(
    run: Run,
    tenant: str,
    worker: int,
    stubs: list[routing_pb2_grpc.RoutingServiceStub],
    stop: threading.Event,
) -> None:
    live: list[Acked] = []
    for n in itertools.count():
        if stop.is_set():
            return
        stub = stubs[(worker + n) % len(stubs)]  # spread over the router replicas
        call_id = f"{tenant}-w{worker}-c{n}"
        request = routing_pb2.AssignRequest(
            tenant=tenant,
            request_id=f"req-{call_id}",
            call=pb.Call(
                call_id=call_id,
                channel=pb.CHANNEL_CHAT,
                required_skills=[pb.SkillRequirement(skill="support", min_level=1)],
            ),
        )
        deadline = time.monotonic() + 30
        reply = _with_retries(
            run, tenant, "assign", partial(stub.Assign, request, timeout=RPC_TIMEOUT_S), deadline
        )
        if not isinstance(reply, routing_pb2.AssignResponse):
            continue
        if reply.result not in OK_RESULTS:
            with run.lock:
                run.unexpected.append(f"assign {call_id}: result {reply.result}")
            continue
        if reply.result != routing_pb2.AssignResponse.RESULT_ASSIGNED:
            with run.lock:
                run.queued.append((tenant, call_id))
            continue
        got = reply.assignment
        acked = Acked(tenant, call_id, got.assignment_id, got.agent_id, got.fencing_token)
        with run.lock:
            run.acked.append(acked)
        live.append(acked)
        if len(live) > LIVE_PER_WORKER:
            oldest = live.pop(0)
            complete = routing_pb2.CompleteRequest(
                tenant=tenant,
                assignment_id=oldest.assignment_id,
                fencing_token=oldest.token,
                outcome=pb.Outcome(csat=5, resolved=True),
            )
            done = _with_retries(
                run,
                tenant,
                "complete",
                partial(stub.Complete, complete, timeout=RPC_TIMEOUT_S),
                time.monotonic() + 30,
            )
            oldest.completed = done is not None


def _seed(channel: grpc.Channel, tenants: list[str]) -> None:
    admin = admin_pb2_grpc.AgentAdminServiceStub(channel)
    for tenant in tenants:
        for i in range(AGENTS):
            agent_id = f"agent-{i}"
            admin.CreateAgent(
                admin_pb2.CreateAgentRequest(
                    tenant=tenant, agent=pb.Agent(agent_id=agent_id, skills={"support": 5})
                )
            )
            admin.SetPresence(
                admin_pb2.SetPresenceRequest(
                    tenant=tenant, agent_id=agent_id, presence=pb.PRESENCE_AVAILABLE
                )
            )


def _max_concurrent_chats(store: RedisStore, tenant: str) -> dict[str, int]:
    """Per agent, the most chats held at once according to the event stream (ASSIGNED opens,
    a COMPLETED / RELEASED / CANCELLED closes). Without wrap-up this is the real load."""
    held: Counter[str] = Counter()
    peak: Counter[str] = Counter()
    owner: dict[str, str] = {}
    for event in store.read_events(tenant, "0", limit=1_000_000):
        if event.type == "ASSIGNED":
            owner[event.call_id] = event.agent_id
            held[event.agent_id] += 1
            peak[event.agent_id] = max(peak[event.agent_id], held[event.agent_id])
        elif event.type in {"COMPLETED", "RELEASED", "CANCELLED"} and event.call_id in owner:
            held[owner.pop(event.call_id)] -= 1
    return dict(peak)


def _outage(attempts: list[Attempt], after: float) -> tuple[float, float]:
    """(longest time between two consecutive OK answers after ``after``, slowest OK)."""
    oks = sorted(a.ended for a in attempts if a.code == grpc.StatusCode.OK and a.ended >= after)
    gaps = [b - a for a, b in itertools.pairwise(oks)]
    slowest = max(
        (a.ended - a.started for a in attempts if a.code == grpc.StatusCode.OK), default=0.0
    )
    return max(gaps, default=0.0), slowest


@dataclass
class Traffic:
    """What one run under a disruption produced."""

    tenants: list[str]
    victim: str
    run: Run
    disrupted_at: float
    promoted_s: float
    settled_s: float
    checker: RedisStore


@contextmanager
def _traffic(
    cluster: harness.LocalCluster, prefix: str, disrupt: Callable[[int, int], float], lossy: bool
) -> Iterator[Traffic]:
    """Three router servers, three tenants (one per primary), the workers; after
    ``FAILOVER_AT_S`` ``disrupt(primary, replica)`` on the first tenant's primary (returns
    the seconds until the replica was promoted); traffic until ``RUN_S``. Yields the result
    with a checker store, then stops everything."""
    tenants = _tenants_on_distinct_primaries(cluster, prefix)
    stores = [RedisStore.from_url(cluster.url, timeout_s=1.0) for _ in range(3)]
    assert all(store.cluster_mode for store in stores)
    assert all(store._packs_text for store in stores)  # the nodes' connections take _Packer
    servers: list[RunningServer] = [
        create_server(Settings(port=0, metrics_port=0, health_interval_s=0.2), store)
        for store in stores
    ]
    channels = [grpc.insecure_channel(f"127.0.0.1:{s.port}") for s in servers]
    checker = RedisStore.from_url(cluster.url, timeout_s=2.0)
    try:
        _seed(channels[0], tenants)
        assert set(tenants) <= set(checker.tenants())
        stubs = [routing_pb2_grpc.RoutingServiceStub(c) for c in channels]
        run, stop = Run(lossy=lossy), threading.Event()
        threads = [
            threading.Thread(target=_worker, args=(run, tenant, w, stubs, stop), daemon=True)
            for tenant in tenants
            for w in range(WORKERS_PER_TENANT)
        ]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        time.sleep(FAILOVER_AT_S)
        victim = tenants[0]
        primary = cluster.primary_of_slot(harness.slot_of_tenant(victim))
        replica = cluster.replica_of(primary)
        disrupted_at = time.monotonic()
        promoted = disrupt(primary, replica)
        settled = time.monotonic() - disrupted_at
        assert cluster.primary_of_slot(harness.slot_of_tenant(victim)) == replica
        time.sleep(max(0.0, RUN_S - (time.monotonic() - started)))
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
            assert not thread.is_alive(), "a worker hung"
        yield Traffic(tenants, victim, run, disrupted_at, promoted, settled, checker)
    finally:
        for channel in channels:
            channel.close()
        for server in servers:
            server.stop(0)
        for store in [*stores, checker]:
            store.close()


def _check_answers_and_resumption(traffic: Traffic) -> None:
    """Only OK or UNAVAILABLE answers (and, after a crash, NOT_FOUND for a lost assignment);
    the disrupted tenant answers again after the switch."""
    run = traffic.run
    assert run.unexpected == []
    codes = Counter(a.code for a in run.attempts if a.kind == "assign")
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, codes
    resumed = [
        a
        for a in run.attempts
        if a.tenant == traffic.victim
        and a.started > traffic.disrupted_at + traffic.settled_s
        and a.code == grpc.StatusCode.OK
    ]
    assert len(resumed) >= 10, "the disrupted tenant did not resume"


def _check_no_double_and_capacity(traffic: Traffic) -> None:
    """No call has two ASSIGNED events, no agent ever held more chats than its capacity,
    every agent's live load fits its 100 units."""
    checker = traffic.checker
    acked_calls = Counter((a.tenant, a.call_id) for a in traffic.run.acked)
    assert max(acked_calls.values()) == 1
    for tenant in traffic.tenants:
        assigned = Counter(
            event.call_id
            for event in checker.read_events(tenant, "0", limit=1_000_000)
            if event.type == "ASSIGNED"
        )
        assert max(assigned.values()) == 1, "a call was assigned twice"
        peaks = _max_concurrent_chats(checker, tenant)
        assert max(peaks.values()) <= CHAT_CAPACITY, peaks
        for agent in checker.list_agents(tenant, AgentQuery(), 100)[0]:
            assert sum(w.units for w in agent.active) <= 100


def _missing(traffic: Traffic) -> tuple[list[Acked], list[Acked]]:
    """Acknowledged assignments that are not in Redis, and acknowledged completions that are
    not (the assignment is still active); anything else must be as acknowledged."""
    missing, reverted = [], []
    for acked in traffic.run.acked:
        try:
            stored = traffic.checker.get_assignment(acked.tenant, acked.assignment_id)
        except NotFoundError:
            missing.append(acked)
            continue
        assert (stored.call_id, stored.agent_id) == (acked.call_id, acked.agent_id)
        if acked.completed and stored.state == AssignmentState.ACTIVE:
            reverted.append(acked)
        else:
            want = AssignmentState.COMPLETED if acked.completed else AssignmentState.ACTIVE
            assert stored.state == want, acked
        record = traffic.checker.get_call(acked.tenant, acked.call_id)
        assert record.assignment is not None
        assert record.assignment.assignment_id == acked.assignment_id
    return missing, reverted


def _report(title: str, traffic: Traffic) -> str:
    run, victim = traffic.run, traffic.victim
    on_victim = [a for a in run.attempts if a.tenant == victim]
    gap_before, _ = _outage([a for a in on_victim if a.ended < traffic.disrupted_at], 0.0)
    gap_during, slowest = _outage(on_victim, traffic.disrupted_at - 1.0)
    unavailable = [a for a in run.attempts if a.code == grpc.StatusCode.UNAVAILABLE]
    line = (
        f"\n{title}: replica promoted after {traffic.promoted_s * 1000:.0f} ms, live nodes"
        f" agreed after {traffic.settled_s * 1000:.0f} ms; requests {len(run.attempts)}"
        f" (assigned {len(run.acked)}, queued {len(run.queued)}); UNAVAILABLE answers"
        f" {len(unavailable)} ({sum(a.tenant == victim for a in unavailable)} on the"
        f" disrupted tenant); longest gap between OK answers on that tenant: before"
        f" {gap_before * 1000:.0f} ms, around the switch {gap_during * 1000:.0f} ms;"
        f" slowest OK {slowest * 1000:.0f} ms"
    )
    print(line)
    return line


def test_assigns_survive_a_manual_failover(local_cluster: harness.LocalCluster) -> None:
    """Concurrent Assigns through three router replicas on three tenants (one per primary);
    ``CLUSTER FAILOVER`` of one tenant's primary mid-run. Only OK or UNAVAILABLE answers; the
    service carries on by itself; afterwards every acknowledged assignment is there (a manual
    failover is lossless), no call has two assignments, no agent ever held more chats than
    its capacity."""
    with _traffic(
        local_cluster, "manual", lambda _, replica: local_cluster.failover(replica), lossy=False
    ) as traffic:
        _check_answers_and_resumption(traffic)
        assert _missing(traffic) == ([], [])
        _check_no_double_and_capacity(traffic)
        _report("manual failover", traffic)


def test_a_moved_reply_switches_a_single_server_store(local_cluster: harness.LocalCluster) -> None:
    """A store that took the cluster for a single server (it could not ask at start) gets
    MOVED for a tenant of another node: that request is UNAVAILABLE, the store switches to
    cluster mode by itself and the retry works."""
    store = RedisStore.from_url(local_cluster.url)
    store._use(redis.Redis.from_url(local_cluster.url, decode_responses=True))
    assert not store.cluster_mode
    assert not store._packs_text  # a plain client: the store encodes its text first
    first = local_cluster.ports[0]
    tenant = next(
        f"moved-{n}"
        for n in itertools.count()
        if local_cluster.primary_of_slot(harness.slot_of_tenant(f"moved-{n}")) != first
    )
    try:
        with pytest.raises(StoreUnavailableError):
            store.queue_depth(tenant)
        assert store.cluster_mode
        assert store._packs_text
        assert store.queue_depth(tenant) == 0
    finally:
        store.close()


def test_a_transaction_follows_a_failover(local_cluster: harness.LocalCluster) -> None:
    """A store whose slot map still names the old primary: its next ``MULTI`` read (sent to
    that node, now a replica, which answers MOVED) and its next script both land on the new
    primary without an error."""
    tenant = "follow-0"
    store = RedisStore.from_url(local_cluster.url)
    try:
        store.create_agent(tenant, AgentProfile("a"))
        assert store.queue_depth(tenant) == 0
        primary = local_cluster.primary_of_slot(harness.slot_of_tenant(tenant))
        local_cluster.failover(local_cluster.replica_of(primary))
        rerouted = retries("route")
        assert store.get_agent(tenant, "a").presence == Presence.OFFLINE  # MULTI first
        assert retries("route") - rerouted >= 1  # sent again to the new primary
        assert store.set_presence(tenant, "a", Presence.AVAILABLE).seq == 2
        local_cluster.failover(primary)  # and back, this time a script first
        assert store.set_presence(tenant, "a", Presence.AWAY).seq == 3
        assert store.get_agent(tenant, "a").presence == Presence.AWAY
    finally:
        store.close()


def test_assigns_survive_a_primary_crash(local_cluster: harness.LocalCluster) -> None:
    """The same traffic, but the tenant's primary is killed (SIGKILL): the cluster promotes
    its replica after ``cluster-node-timeout`` (2 s here). Meanwhile requests on that tenant
    answer UNAVAILABLE, never a wrong answer; the service resumes by itself; no call is
    assigned twice and no agent is over capacity. Acknowledged writes the replica had not
    received yet are lost (asynchronous replication): the test counts them (a Complete of
    one answers NOT_FOUND) rather than forbid them. Runs last: it leaves a node dead."""

    def crash(primary: int, replica: int) -> float:
        local_cluster.kill(primary)
        return local_cluster.wait_promoted(replica)

    with _traffic(local_cluster, "crash", crash, lossy=True) as traffic:
        _check_answers_and_resumption(traffic)
        missing, reverted = _missing(traffic)
        assert all(acked.tenant == traffic.victim for acked in missing + reverted)
        _check_no_double_and_capacity(traffic)
        _report("primary crash", traffic)
        print(
            f"primary crash: acknowledged assignments lost {len(missing)}, acknowledged"
            f" completions lost {len(reverted)}, Completes answered NOT_FOUND"
            f" {len(traffic.run.lost)}"
        )
