"""Several replicas over one Redis: three ``python -m router`` processes, 300 agents and
thousands of concurrent Assigns spread round-robin over the replicas.

Checked while it runs (consistent ``MULTI`` cuts of every agent's hash) and after: no agent
ever holds more than its capacity per channel or more than its 100-unit budget, no call ever
has two live assignments, every acknowledged answer is in Redis as answered, and the same
request retried on another replica (after the answer, or at the same time) gets the same
assignment. Prints the throughput (``-s`` shows it; RELIABILITY.md quotes it).
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
import redis

from router import local_redis
from router.v1 import routing_pb2
from router.v1 import types_pb2 as pb
from tests.system import fleet

AGENTS = 300
CALLS = 3000
CLIENTS = 24
WALL_S = 40.0
"""No new Assign starts after this long; the test then checks what was done."""
HOLD = 8
"""Assignments each client holds before completing its oldest."""
SKILLS = ("billing", "sales", "tech", "returns", "vip")
RESULT = routing_pb2.AssignResponse


def _agents() -> list[pb.Agent]:
    """300 agents, two skills each; chat capacity 1-3, voice 1; "vip" is scarce."""
    rng = random.Random(7)
    agents = []
    for i in range(AGENTS):
        skills = {SKILLS[i % 4]: rng.randint(3, 9), SKILLS[(i + 1) % 4]: rng.randint(1, 6)}
        if i % 30 == 0:
            skills["vip"] = 8
        capacity = {pb.CHANNEL_CHAT: 1 + i % 3, pb.CHANNEL_VOICE: 1}
        agents.append(fleet.agent_pb(f"agent-{i:03d}", skills, capacity))
    return agents


CAPACITY = {
    f"agent-{i:03d}": {"chat": 1 + i % 3, "voice": 1} for i in range(AGENTS)
}  # mirrors _agents


@dataclass
class Ledger:
    """What the clients were told, shared by the client threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    answers: dict[str, routing_pb2.AssignResponse] = field(default_factory=dict)
    """call id -> the first OK answer."""
    codes: Counter[str] = field(default_factory=Counter)
    results: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    replays: int = 0
    replay_mismatches: list[str] = field(default_factory=list)
    queued: set[str] = field(default_factory=set)
    completed: int = 0


@dataclass
class Sampler:
    """Reads every agent's load in one MULTI, over and over, and records violations."""

    client: redis.Redis
    agent_ids: list[str]
    samples: int = 0
    over_capacity: list[str] = field(default_factory=list)
    live_sets: list[frozenset[str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        deadline = time.monotonic() + WALL_S + 60
        while not self.stop.wait(0.2) and time.monotonic() < deadline:
            self.check_once()

    def check_once(self) -> None:
        cut = fleet.loads(self.client, self.agent_ids)
        self.samples += 1
        ids: list[str] = []
        for agent_id, load in cut.items():
            ids.extend(load.assignment_ids)
            for channel, items in load.items.items():
                if items > CAPACITY[agent_id].get(channel, 0):
                    self.over_capacity.append(f"{agent_id} {channel} {items}")
            if load.units > 100:
                self.over_capacity.append(f"{agent_id} units {load.units}")
        assert len(ids) == len(set(ids)), "one assignment held by two agents"
        if self.samples % 3 == 0:
            self.live_sets.append(frozenset(ids))


def _complete(replica: fleet.Replica, assignment: pb.Assignment) -> None:
    replica.routing.Complete(
        routing_pb2.CompleteRequest(
            tenant=fleet.TENANT,
            assignment_id=assignment.assignment_id,
            fencing_token=assignment.fencing_token,
            outcome=pb.Outcome(csat=4, resolved=True),
        ),
        timeout=10,
    )


def _same(first: routing_pb2.AssignResponse, again: routing_pb2.AssignResponse) -> bool:
    """Two answers to one request name the same assignment (or one still says QUEUED)."""
    queued = RESULT.RESULT_QUEUED
    if queued in (first.result, again.result):
        return True
    a, b = first.assignment, again.assignment
    return (a.assignment_id, a.agent_id, a.fencing_token) == (
        b.assignment_id,
        b.agent_id,
        b.fencing_token,
    )


@dataclass
class Load:
    """The clients: Assign round-robin over the replicas, hold a few, complete the oldest."""

    nodes: list[fleet.Replica]
    client: redis.Redis
    ledger: Ledger
    stop_at: float
    counter: Iterator[int] = field(default_factory=itertools.count)
    done: threading.Event = field(default_factory=threading.Event)

    def send(self, n: int, req: routing_pb2.AssignRequest) -> routing_pb2.AssignResponse:
        """One Assign on replica ``n % 3``; every 25th also on another replica at once."""
        node = self.nodes[n % 3]
        if n % 25:
            return node.routing.Assign(req, timeout=10)
        twin = self.nodes[(n + 2) % 3].routing.Assign.future(req, timeout=10)
        reply = node.routing.Assign(req, timeout=10)
        other = twin.result()
        with self.ledger.lock:
            self.ledger.replays += 1
            if not _same(reply, other):
                self.ledger.replay_mismatches.append(req.call.call_id)
        return reply

    def assign(self, n: int, rng: random.Random) -> routing_pb2.AssignResponse | None:
        """Assign call ``n``; ABORTED (contention) is retried as is, up to 3 times."""
        skill = rng.choice(SKILLS[:4])
        channel = pb.CHANNEL_VOICE if rng.random() < 0.1 else pb.CHANNEL_CHAT
        req = fleet.assign_request(f"req-{n}", f"call-{n}", skill, channel)
        ledger = self.ledger
        for _attempt in range(3):
            t0 = time.perf_counter()
            try:
                reply = self.send(n, req)
            except grpc.RpcError as err:
                with ledger.lock:
                    ledger.codes[err.code().name] += 1
                    ledger.latencies.append(time.perf_counter() - t0)
                if err.code() != grpc.StatusCode.ABORTED:
                    raise
                continue
            with ledger.lock:
                ledger.latencies.append(time.perf_counter() - t0)
                ledger.codes["OK"] += 1
                ledger.results[RESULT.Result.Name(reply.result)] += 1
                ledger.answers.setdefault(req.call.call_id, reply)
                if reply.result == RESULT.RESULT_QUEUED:
                    ledger.queued.add(req.call.call_id)
            if n % 15 == 0:  # a retry on the next replica: the same answer, replayed
                again = self.nodes[(n + 1) % 3].routing.Assign(req, timeout=10)
                with ledger.lock:
                    ledger.replays += 1
                    if not (again.replayed and _same(reply, again)):
                        ledger.replay_mismatches.append(req.call.call_id)
            return reply
        return None

    def worker(self, seed: int) -> None:
        rng = random.Random(seed)
        held: list[pb.Assignment] = []
        while time.monotonic() < self.stop_at:
            n = next(self.counter)
            if n >= CALLS:
                break
            reply = self.assign(n, rng)
            if reply is not None and reply.result == RESULT.RESULT_ASSIGNED:
                held.append(reply.assignment)
            if len(held) > HOLD:
                _complete(self.nodes[rng.randrange(3)], held.pop(rng.randrange(len(held))))
                with self.ledger.lock:
                    self.ledger.completed += 1
        for assignment in held:
            _complete(self.nodes[0], assignment)

    def janitor(self) -> None:
        """Complete the calls the dispatchers placed from the queue (bounded)."""
        deadline = time.monotonic() + WALL_S + 60
        while not self.done.wait(0.3) and time.monotonic() < deadline:
            with self.ledger.lock:
                waiting = list(self.ledger.queued)
            for call_id, record in fleet.calls(self.client, waiting).items():
                if record.get("status") != "assigned":
                    continue
                asg_id = record["assignment_id"]
                token = int(fleet.assignments(self.client, [asg_id])[asg_id]["token"])
                _complete(self.nodes[0], pb.Assignment(assignment_id=asg_id, fencing_token=token))
                with self.ledger.lock:
                    self.ledger.queued.discard(call_id)
                    self.ledger.completed += 1


@pytest.mark.timeout(180)
def test_three_replicas_never_overbook_never_double_assign(
    redis_server: local_redis.LocalRedis, tmp_path: Path
) -> None:
    """3 replicas, 300 agents, 3,000 Assigns from 24 clients (bounded to WALL_S)."""
    client = fleet.raw_client(redis_server)
    with fleet.replicas(redis_server.url, tmp_path, 3) as nodes:
        fleet.set_policy(nodes[0])
        fleet.seed_agents(nodes[0], _agents())
        ledger = Ledger()
        sampler = Sampler(client, sorted(CAPACITY))
        sampler_thread = threading.Thread(target=sampler.run, daemon=True)
        sampler_thread.start()
        started = time.monotonic()
        load = Load(nodes, client, ledger, started + WALL_S)
        janitor = threading.Thread(target=load.janitor, daemon=True)
        janitor.start()
        with futures.ThreadPoolExecutor(CLIENTS) as pool:
            for done in [pool.submit(load.worker, s) for s in range(CLIENTS)]:
                done.result(timeout=WALL_S + 60)
        elapsed = time.monotonic() - started
        # the dispatchers place what is still queued as capacity frees
        fleet.eventually(lambda: client.zcard(fleet.key("queue")) == 0, 30, 0.2)
        load.done.set()
        sampler.stop.set()
        sampler_thread.join(10)
        janitor.join(10)
        sampler.check_once()
        _verify(client, ledger, sampler)
        assigns = sum(ledger.codes.values())
        latencies = sorted(ledger.latencies)
        print(
            f"\n3 replicas, {AGENTS} agents: {assigns} Assign RPCs ({dict(ledger.codes)}) in "
            f"{elapsed:.1f} s = {assigns / elapsed:.0f}/s; "
            f"p50 {latencies[len(latencies) // 2] * 1000:.0f} ms, "
            f"p99 {latencies[int(len(latencies) * 0.99)] * 1000:.0f} ms; "
            f"results {dict(ledger.results)}; completed {ledger.completed}; "
            f"{ledger.replays} replays; {sampler.samples} load samples"
        )
        assert ledger.codes["OK"] >= 1000, "too little work done to mean anything"
    client.close()


def _verify(client: redis.Redis, ledger: Ledger, sampler: Sampler) -> None:
    assert sampler.over_capacity == [], sampler.over_capacity[:10]
    assert ledger.replay_mismatches == [], ledger.replay_mismatches[:10]
    # every acknowledged answer is in Redis
    stored_calls = fleet.calls(client, ledger.answers)
    ids = [a.assignment.assignment_id for a in ledger.answers.values()]
    stored = fleet.assignments(client, [i for i in ids if i])
    for call_id, answer in ledger.answers.items():
        record = stored_calls[call_id]
        assert record, f"{call_id} was answered OK but is not in Redis"
        if answer.assignment.assignment_id:
            asg = stored[answer.assignment.assignment_id]
            assert asg, f"{call_id}: assignment {answer.assignment.assignment_id} missing"
            assert asg["call_id"] == call_id
            assert asg["agent_id"] == answer.assignment.agent_id
            assert int(asg["token"]) == answer.assignment.fencing_token
            assert record["assignment_id"] == answer.assignment.assignment_id
    # no call had two live assignments in any sampled cut (nor in the stored assignments)
    live_ids = set().union(*sampler.live_sets) if sampler.live_sets else set()
    owner = {aid: h.get("call_id", "") for aid, h in fleet.assignments(client, live_ids).items()}
    for cut in sampler.live_sets:
        per_call = Counter(owner[aid] for aid in cut)
        doubled = [c for c, k in per_call.items() if k > 1]
        assert doubled == [], f"calls with two live assignments: {doubled[:5]}"
    doubled = [c for c, k in fleet.live_per_call(client).items() if k > 1]
    assert doubled == [], f"calls with two live assignments: {doubled[:5]}"
