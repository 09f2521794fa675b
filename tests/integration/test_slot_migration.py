"""The write scripts while the tenant's cluster slot is being migrated (``CLUSTER SETSLOT
<slot> MIGRATING`` on the node that holds it, ``IMPORTING`` on the target, no key moved yet).

The source then runs a script only if every key it declares exists there, and inside it any
command on a key that does not exist (one the script emptied or deleted a moment before)
fails with "Script attempted to access a non local key": the script stops, and what it wrote
until then stays. Each scenario below builds a tenant where every key the script declares
exists, so the script runs on the source, and reaches a step that empties a key the script
would touch again; it must then run to its end (or, refused, write nothing)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

from router import local_redis
from router.domain import (
    AgentProfile,
    Assignment,
    AssignmentState,
    Call,
    Channel,
    Explanation,
    Policy,
    Presence,
    Strategy,
)
from router.redis_schema import Keys
from router.redis_store import RedisStore
from router.store import Claim, Committed
from router.store_common import WORK_RETENTION_MS
from tests.helpers import FakeClock, keyspace

T = "acme"
K = Keys(T)
POLICY = Policy()


@dataclass
class TwoNodes:
    """A Redis Cluster of two primaries on loopback: ``source`` serves every slot, ``target``
    none (the other end of a migration)."""

    source: int
    target: int
    bus: dict[int, int]
    """Each node's cluster bus port."""

    @property
    def url(self) -> str:
        """The source node's URL (a client's entry point)."""
        return f"redis://127.0.0.1:{self.source}/0"

    def node(self, port: int, *, decode: bool = True) -> redis.Redis:
        """A plain client on one node (the caller closes it)."""
        return redis.Redis(host="127.0.0.1", port=port, decode_responses=decode)

    def node_id(self, port: int) -> str:
        """The cluster id of the node on ``port``."""
        with self.node(port) as client:
            return str(client.execute_command("CLUSTER", "MYID"))

    @contextmanager
    def migrating(self, tenant: str) -> Iterator[None]:
        """``tenant``'s slot MIGRATING from the source to the target (IMPORTING there) while
        in the block; STABLE again after."""
        slot = key_slot(tenant.encode())
        source_id, target_id = self.node_id(self.source), self.node_id(self.target)
        with self.node(self.source) as source, self.node(self.target) as target:
            target.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
            source.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
            try:
                yield
            finally:
                source.execute_command("CLUSTER", "SETSLOT", slot, "STABLE")
                target.execute_command("CLUSTER", "SETSLOT", slot, "STABLE")


def _start_node(binary: str, port: int, bus: int, directory: Path) -> subprocess.Popen[bytes]:
    directory.mkdir()
    return subprocess.Popen(
        [
            binary,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(directory),
            "--cluster-enabled", "yes",
            # The bus port defaults to port + 10000, out of range for high free ports.
            "--cluster-port", str(bus),
            "--cluster-config-file", str(directory / "nodes.conf"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.fixture(scope="module")
def two_nodes() -> Iterator[TwoNodes]:
    """Two cluster nodes joined by ``CLUSTER MEET``, every slot on the first."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("the slot migration tests need redis-server", pytrace=False)
    source, target = local_redis.free_port(), local_redis.free_port()
    cluster = TwoNodes(
        source, target, {source: local_redis.free_port(), target: local_redis.free_port()}
    )
    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="router-migrating-") as directory:
        try:
            for port in (cluster.source, cluster.target):
                processes.append(
                    _start_node(binary, port, cluster.bus[port], Path(directory) / str(port))
                )
            deadline = time.monotonic() + 10
            with cluster.node(cluster.source) as source:
                while True:
                    try:
                        source.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
                        source.execute_command(
                            "CLUSTER", "MEET", "127.0.0.1", target, cluster.bus[target]
                        )
                        break
                    except redis.ConnectionError:
                        assert all(p.poll() is None for p in processes), "a node exited"
                        assert time.monotonic() < deadline, "the nodes did not come up"
                        time.sleep(0.05)
            for port in (cluster.source, cluster.target):
                with cluster.node(port) as client:
                    while not (
                        client.cluster("INFO").get("cluster_state") == "ok"
                        and str(client.execute_command("CLUSTER", "NODES")).count("connected") == 2
                    ):
                        assert time.monotonic() < deadline, "the two nodes did not join"
                        time.sleep(0.05)
            yield cluster
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(timeout=10)


# --- building a tenant ----------------------------------------------------------------------


def _give(
    store: RedisStore,
    call_id: str,
    agent_id: str = "a",
    *,
    channel: Channel = Channel.CHAT,
    offer_s: int = 0,
) -> Assignment:
    """Commit ``call_id`` (a new call) to the agent: ACTIVE, or OFFERED for ``offer_s``."""
    claim = Claim(
        request_id=f"req-{call_id}",
        fingerprint="fp",
        call=Call(call_id=call_id, channel=channel),
        agent_id=agent_id,
        expected_seq=store.get_agent(T, agent_id).seq,
        units=10,
        heartbeat_timeout_s=0,
        explanation=Explanation(strategy=Strategy.BALANCED),
        offer_timeout_s=offer_s,
    )
    result = store.commit_assignment(T, claim)
    assert isinstance(result, Committed)
    return result.assignment


def _complete(store: RedisStore, asg: Assignment, wrap_up_s: int = 0) -> None:
    store.finish_assignment(
        T, asg.assignment_id, asg.token, AssignmentState.COMPLETED, wrap_up_s=wrap_up_s
    )


def _team(store: RedisStore, *, offer: bool = True) -> None:
    """Agents ``a`` and ``b``, available, with a heartbeat; a policy; ``a`` completed a call on
    every channel (work spans, history, every channel's completions); a call nobody can take
    waits in the queue, and (``offer``) ``b`` holds an offer."""
    for agent_id in ("a", "b"):
        store.create_agent(T, AgentProfile(agent_id, skills={"billing": 3}))
        store.set_presence(T, agent_id, Presence.AVAILABLE)
        store.heartbeat(T, agent_id)
    store.put_policy(T, POLICY)
    for channel in Channel:
        _complete(store, _give(store, f"done-{channel.value}", channel=channel))
    store.enqueue(T, "req-waits", "fp", Call("waits", Channel.VOICE), policy=POLICY)
    if offer:
        _give(store, "for-b", "b", offer_s=86_400 * 30)


def _reclaim(store: RedisStore, count: int) -> None:
    """Reclaim ``a``'s offers and chats: ``count`` of them."""
    taken = store.reclaim(T, "a", channels=frozenset({Channel.CHAT}), policy=POLICY)
    assert len(taken) == count


def _stale_wrap_up(
    store: RedisStore, clock: FakeClock, *, offer_s: int = 0, calls: int = 1
) -> Assignment:
    """``a`` finishes a call with a minute's wrap-up, is given ``c2`` (an offer for
    ``offer_s``, else active; and ``c3``... up to ``calls`` active ones) during it, and 25 hours
    pass: the wrap-up's span, like every other span of ``a``, ended before the retention
    window, and the next script to sweep ``a``'s ended wrap-ups empties the work key."""
    _team(store)
    _complete(store, _give(store, "c1"), wrap_up_s=60)
    c2 = _give(store, "c2", offer_s=offer_s)
    for n in range(3, calls + 2):
        _give(store, f"c{n}")
    clock.advance(WORK_RETENTION_MS + 3_600_000)
    return c2


# --- the scenarios: each builds its tenant and returns the operation to run -----------------

Scenario = Callable[[RedisStore, FakeClock, redis.Redis], Callable[[], object]]
"""(the store, its clock, a plain client on the source node) -> the operation."""


def reclaim_two(store: RedisStore, clock: FakeClock, node: redis.Redis) -> Callable[[], object]:
    """``a`` holds the only offer and an active chat; reclaiming both ends the offer first
    (its removal empties the offers key), then the chat."""
    _team(store, offer=False)
    _give(store, "c2", offer_s=3_600)
    _give(store, "c3")
    return lambda: _reclaim(store, 2)


def delete_agent(store: RedisStore, clock: FakeClock, node: redis.Redis) -> Callable[[], object]:
    """Deleting ``b`` (who worked before; an agent deleted before leaves the tombstone keys)
    deletes its hash, then updates the routing index for it."""
    _team(store, offer=False)
    _complete(store, _give(store, "by-b", "b"))
    store.create_agent(T, AgentProfile("z", skills={"billing": 1}))
    store.delete_agent(T, "z")
    return lambda: store.delete_agent(T, "b")


def build_index(store: RedisStore, clock: FakeClock, node: redis.Redis) -> Callable[[], object]:
    """A rebuild of an index an older version left (version 1 revs; ``idx:ready`` naming ``a``
    alone, who is offline now): taking ``a`` out empties ``idx:ready`` before ``b``."""
    _team(store, offer=False)
    store.build_index(T)
    store.set_presence(T, "a", Presence.OFFLINE)
    store.set_presence(T, "b", Presence.OFFLINE)
    node.zadd(K.ready, {"a": 0})
    node.hset(K.legacy_revs, "a", 1)
    return lambda: store.build_index(T)


def cancel_call(store: RedisStore, clock: FakeClock, node: redis.Redis) -> Callable[[], object]:
    """Cancelling ``c2`` frees its slot: the sweep first moves the stale wrap-up (emptying the
    work key), then records ``c2``'s span."""
    _stale_wrap_up(store, clock)
    return lambda: store.cancel_call(T, "c2")


def release(store: RedisStore, clock: FakeClock, node: redis.Redis) -> Callable[[], object]:
    """Releasing ``c2``: the same sweep, then ``c2``'s span."""
    c2 = _stale_wrap_up(store, clock)
    return lambda: store.finish_assignment(
        T, c2.assignment_id, c2.token, AssignmentState.RELEASED, policy=POLICY
    )


def complete_with_wrap_up(
    store: RedisStore, clock: FakeClock, node: redis.Redis
) -> Callable[[], object]:
    """Completing ``c2`` with a wrap-up sweeps (emptying the work key), and the reply carries
    the agent's spans for this replica's agent cache (a routing read set its window)."""
    c2 = _stale_wrap_up(store, clock)
    store.load_candidates(T, Call("probe", Channel.CHAT))
    return lambda: _complete(store, c2, wrap_up_s=30)


def reject_offer(store: RedisStore, clock: FakeClock, node: redis.Redis) -> Callable[[], object]:
    """Rejecting the offer of ``c2``: the sweep, then the offer's span."""
    c2 = _stale_wrap_up(store, clock, offer_s=86_400 * 30)
    return lambda: store.decline_offer(
        T, c2.assignment_id, c2.token, timed_out=False, policy=POLICY
    )


def reclaim_after_wrap_up(
    store: RedisStore, clock: FakeClock, node: redis.Redis
) -> Callable[[], object]:
    """Reclaiming ``c2`` (and ``c3``): the sweep, then each assignment's span."""
    _stale_wrap_up(store, clock, calls=2)
    return lambda: _reclaim(store, 2)


SCENARIOS: list[Scenario] = [
    reclaim_two,
    delete_agent,
    build_index,
    cancel_call,
    release,
    complete_with_wrap_up,
    reject_offer,
    reclaim_after_wrap_up,
]


def _migrating_run(two_nodes: TwoNodes, scenario: Scenario) -> Exception | None:
    """Build the scenario's tenant, run its operation with the tenant's slot MIGRATING and
    return what it raised; a failure must have written nothing."""
    with two_nodes.node(two_nodes.source) as source:
        source.flushall()
    clock = FakeClock()
    client = RedisCluster.from_url(two_nodes.url, decode_responses=True)
    store = RedisStore(client, clock)
    raw = two_nodes.node(two_nodes.source, decode=False)
    node = two_nodes.node(two_nodes.source)
    try:
        operation = scenario(store, clock, node)
        before = keyspace(raw)
        error: Exception | None = None
        with two_nodes.migrating(T):
            try:
                operation()
            except Exception as exc:  # any failure: then nothing may be written
                error = exc
        if error is not None:
            after = keyspace(raw)
            changed = sorted(key for key in {*before, *after} if before.get(key) != after.get(key))
            assert not changed, f"failed half-way ({error!r}), having written {changed}"
        return error
    finally:
        raw.close()
        node.close()
        store.close()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
def test_a_script_runs_whole_while_the_slot_migrates(
    two_nodes: TwoNodes, scenario: Scenario
) -> None:
    """The operation, run with the tenant's slot MIGRATING, either completes or writes
    nothing; here every key it declares exists, so it completes."""
    error = _migrating_run(two_nodes, scenario)
    assert error is None, f"refused: {error!r} (the scenario no longer runs its script)"


def new_agent(store: RedisStore, clock: FakeClock, node: redis.Redis) -> Callable[[], object]:
    """Creating an agent (its script deletes the spans an agent of the id may have left)."""
    _team(store)
    return lambda: store.create_agent(T, AgentProfile("c", skills={"billing": 3}))


def new_call_queued(store: RedisStore, clock: FakeClock, node: redis.Redis) -> Callable[[], object]:
    """Queueing a new call (its script starts the call's timeline over)."""
    _team(store)
    return lambda: store.enqueue(T, "req-new", "fp", Call("new", Channel.VOICE), policy=POLICY)


def new_call_assigned(
    store: RedisStore, clock: FakeClock, node: redis.Redis
) -> Callable[[], object]:
    """Giving a new call to ``a`` (a new assignment, and the call's timeline started over)."""
    _team(store)
    return lambda: _give(store, "new")


@pytest.mark.parametrize(
    "scenario", [new_agent, new_call_queued, new_call_assigned], ids=lambda s: s.__name__
)
def test_a_script_creating_a_record_is_refused_whole_while_the_slot_migrates(
    two_nodes: TwoNodes, scenario: Scenario
) -> None:
    """A script that declares a key that does not exist yet (the new record's) is refused
    before it starts (ASK, then TRYAGAIN from the target), so it writes nothing: what it does
    after deleting a key can only happen outside a migration."""
    assert _migrating_run(two_nodes, scenario) is not None
