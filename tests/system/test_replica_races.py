"""Two replicas racing over one Redis with everything that sends a call back to the queue.

Each replica is its own ``RedisStore``, ``Dispatcher`` (ticking every 50 ms, so passes
overlap with the Assigns' inline passes) and ``Assigner``, in this process. Eight client
threads, for at most ``WALL_S``, Assign new calls (some sent to both replicas at once with
the same request id), accept or reject offers (which time out after 1 s when left), complete
(with a 1 s wrap-up) or release work, cancel calls, and flip agents between available and
offline (which reclaims offers and email). Then the tenant's keys must hold every rule:

- a waiting call is in the queue and nowhere else; a placed call has exactly one live
  assignment, whose agent holds its slot; no ended assignment holds a slot;
- the offers index holds exactly the offered assignments, the ready index exactly the
  available agents with their units in progress; no agent over its capacity on a channel;
- no call was placed while it was placed, nor ever again with an agent it left (rejected,
  missed, released, reclaimed);
- the same request sent to both replicas got one assignment.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable

import redis

from router import local_redis
from router.assigner import Assigner
from router.dispatcher import Dispatcher
from router.domain import (
    AgentProfile,
    AssignmentState,
    Call,
    Channel,
    Policy,
    Presence,
    SkillRequirement,
    frozen_map,
)
from router.errors import RouterError
from router.redis_store import RedisStore, single_client
from tests.system import fleet

T = "acme"
AGENTS = [f"agent-{i}" for i in range(5)]
CLIENTS = 8
WALL_S = 5.0
MAX_OPERATIONS = 6_000
POLICY = Policy(
    offer_timeout_s=frozen_map({Channel.CHAT: 1}),
    wrap_up_s=frozen_map({Channel.CHAT: 1}),
    heartbeat_timeout_s=0,
    max_missed_offers=0,
    reclaim_channels=frozenset({Channel.EMAIL}),
    channel_capacity=frozen_map({Channel.CHAT: 2, Channel.VOICE: 1, Channel.EMAIL: 2}),
    max_occupancy=1.0,
)
LEFT = {"REJECTED", "OFFER_TIMED_OUT", "RELEASED", "RECLAIMED"}
ENDED = LEFT | {"COMPLETED", "CANCELLED", "ABANDONED"}
PREFIX = "rt:v1:{acme}:"


class Replica:
    """One replica's store, dispatcher and assigner."""

    def __init__(self, url: str, owner: str) -> None:
        self.store = RedisStore(single_client(url, decode_responses=True, socket_timeout=5))
        self.dispatcher = Dispatcher(self.store, tick_s=0.05, owner=owner, lease_ms=2_000)
        self.assigner = Assigner(self.store, dispatcher=self.dispatcher)


class Clients:
    """The client threads' shared record: calls made, errors, double answers."""

    def __init__(self, replicas: list[Replica]) -> None:
        self.replicas = replicas
        self.calls: list[str] = []
        self.lock = threading.Lock()
        self.errors: Counter[str] = Counter()
        self.doubles: list[str] = []
        self.operations = 0
        self.until = time.monotonic() + WALL_S

    def running(self) -> bool:
        with self.lock:
            self.operations += 1
            return self.operations <= MAX_OPERATIONS and time.monotonic() < self.until

    def some_call(self, rng: random.Random) -> str | None:
        with self.lock:
            return rng.choice(self.calls) if self.calls else None

    def assign(self, rng: random.Random, replica: Replica, call_id: str) -> None:
        channel = rng.choice([Channel.CHAT, Channel.VOICE, Channel.EMAIL])
        call = Call(
            call_id,
            channel,
            (SkillRequirement("billing", 2),),
            created_ms=time.time_ns() // 1_000_000,
        )
        request_id = f"r-{call_id}"
        if rng.random() < 0.4:  # the same request to both replicas at once
            answers: list[str] = []

            def send(other: Replica) -> None:
                result = other.assigner.assign(T, request_id, call)
                if result.assignment is not None:
                    answers.append(result.assignment.assignment_id)

            threads = [threading.Thread(target=send, args=(r,)) for r in self.replicas]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            if len(set(answers)) > 1:
                self.doubles.append(call_id)
        else:
            replica.assigner.assign(T, request_id, call)
        with self.lock:
            self.calls.append(call_id)

    def work_on(self, rng: random.Random, replica: Replica) -> None:
        call_id = self.some_call(rng)
        if call_id is None:
            return
        store = replica.store
        assignment = store.get_call(T, call_id).assignment
        if assignment is None:
            return
        roll = rng.random()
        if assignment.state == AssignmentState.OFFERED:
            if roll < 0.7:
                store.accept_offer(T, assignment.assignment_id, assignment.token)
            else:
                store.decline_offer(
                    T, assignment.assignment_id, assignment.token, timed_out=False, policy=POLICY
                )
        elif assignment.state == AssignmentState.ACTIVE and roll < 0.8:
            end = AssignmentState.COMPLETED if roll < 0.6 else AssignmentState.RELEASED
            store.finish_assignment(
                T,
                assignment.assignment_id,
                assignment.token,
                end,
                wrap_up_s=POLICY.wrap_up_s.get(assignment.channel, 0),
                policy=POLICY,
                policy_tag=store.known_policy(T).tag,
            )
        replica.dispatcher.wake(T)

    def client(self, number: int) -> None:
        rng = random.Random(number)
        replica = self.replicas[number % len(self.replicas)]
        made = 0
        while self.running():
            roll = rng.random()
            try:
                if roll < 0.12:
                    made += 1
                    self.assign(rng, replica, f"c{number}-{made}")
                elif roll < 0.85:
                    self.work_on(rng, replica)
                elif roll < 0.93:
                    call_id = self.some_call(rng)
                    if call_id is not None:
                        replica.store.cancel_call(T, call_id)
                else:
                    presence = rng.choice([Presence.AVAILABLE, Presence.OFFLINE])
                    replica.store.set_presence(T, rng.choice(AGENTS), presence)
                    replica.dispatcher.wake(T)
            except RouterError as err:  # refusals of moves the call has passed: expected
                self.errors[type(err).__name__] += 1
            time.sleep(rng.random() * 0.01)


def _hash(raw: redis.Redis, key: str) -> dict[str, str]:
    """A hash as text (the client decodes)."""
    return {str(name): str(value) for name, value in raw.hgetall(key).items()}


def _violations(raw: redis.Redis, calls: list[str]) -> list[tuple[object, ...]]:
    """Every rule of the module docstring that the tenant's keys break."""
    assignments = {
        str(key)[len(PREFIX) + 4 :]: _hash(raw, str(key)) for key in raw.scan_iter(PREFIX + "asg:*")
    }
    agents = {agent_id: _hash(raw, PREFIX + "agent:" + agent_id) for agent_id in AGENTS}
    found = _call_violations(raw, calls, assignments, agents)
    for agent_id, fields in agents.items():
        found += _agent_violations(raw, agent_id, fields, assignments)
    return found


def _call_violations(
    raw: redis.Redis,
    calls: list[str],
    assignments: dict[str, dict[str, str]],
    agents: dict[str, dict[str, str]],
) -> list[tuple[object, ...]]:
    """The queue, the offers index, and each call against its assignments and timeline."""
    found: list[tuple[object, ...]] = []
    queue = set(raw.zrange(PREFIX + "queue", 0, -1))
    offers = set(raw.zrange(PREFIX + "offers", 0, -1))
    live: defaultdict[str, list[str]] = defaultdict(list)
    for asg_id, asg in assignments.items():
        if asg["state"] in ("offered", "active"):
            live[asg["call_id"]].append(asg_id)
        if (asg["state"] == "offered") != (asg_id in offers):
            found.append(("offers index", asg_id, asg["state"]))
    for call_id in calls:
        call = _hash(raw, PREFIX + "call:" + call_id)
        status = call.get("status", "")
        if (status == "queued") != (call_id in queue):
            found.append(("queue", call_id, status))
        if len(live[call_id]) > 1:
            found.append(("two live assignments", call_id, live[call_id]))
        if status in ("offered", "assigned"):
            asg = assignments.get(call.get("assignment_id", ""), {})
            if asg.get("state") != ("offered" if status == "offered" else "active"):
                found.append(("call and assignment", call_id, status, asg.get("state")))
            elif "a:" + call["assignment_id"] not in agents[asg["agent_id"]]:
                found.append(("slot not held", call_id))
        elif live[call_id]:
            found.append(("live assignment of a call not placed", call_id, status))
        found += _timeline_violations(raw, call_id)
    return found


def _agent_violations(
    raw: redis.Redis,
    agent_id: str,
    fields: dict[str, str],
    assignments: dict[str, dict[str, str]],
) -> list[tuple[object, ...]]:
    """The agent's slots against the assignments, its capacity and the ready index."""
    found: list[tuple[object, ...]] = []
    now = time.time_ns() // 1_000_000
    units, held = 0, Counter[str]()
    for name, value in fields.items():
        if not name.startswith("a:"):
            continue
        channel, item_units, _, _, wrap = value.split("|")
        state = assignments.get(name[2:], {}).get("state")
        if state in ("offered", "active"):
            units += int(item_units)
        elif not (state == "completed" and int(wrap)):
            found.append(("ended work holds a slot", agent_id, name, state))
        if int(wrap) == 0 or int(wrap) > now:
            held[channel] += 1
    for channel, items in held.items():
        if items > POLICY.channel_capacity[Channel(channel)]:
            found.append(("over capacity", agent_id, channel, items))
    ready = raw.zscore(PREFIX + "idx:ready", agent_id)
    if fields.get("presence") == "available" and (ready is None or int(ready) != units):
        found.append(("ready index", agent_id, ready, units))
    if fields.get("presence") != "available" and ready is not None:
        found.append(("ready index lists an absent agent", agent_id))
    return found


def _timeline_violations(raw: redis.Redis, call_id: str) -> list[tuple[object, ...]]:
    """Placed while placed, or placed again with an agent the call left."""
    found: list[tuple[object, ...]] = []
    placed, left = False, set()
    for item in raw.lrange(PREFIX + "timeline:" + call_id, 0, -1):
        _, kind, _, _, agent_id = json.loads(item)[:5]
        if kind in ("OFFERED", "ASSIGNED"):
            if placed:
                found.append(("placed while placed", call_id, kind))
            if agent_id in left:
                found.append(("back with an agent it left", call_id, agent_id, kind))
            placed = True
        elif kind in ENDED:
            placed = False
            if kind in LEFT:
                left.add(agent_id)
    return found


def _run(url: str, *, on_start: Callable[[Replica], None]) -> Clients:
    replicas = [Replica(url, f"replica-{n}") for n in range(2)]
    on_start(replicas[0])
    for replica in replicas:
        replica.dispatcher.start()
    clients = Clients(replicas)
    threads = [threading.Thread(target=clients.client, args=(n,)) for n in range(CLIENTS)]
    try:
        for thread in threads:
            thread.start()
    finally:
        for thread in threads:
            thread.join(WALL_S + 30)
        for replica in replicas:
            replica.dispatcher.stop()
    return clients


def _team(replica: Replica) -> None:
    store = replica.store
    store.put_policy(T, POLICY)
    for agent_id in AGENTS:
        skills = frozen_map({"billing": 5})
        store.create_agent(T, AgentProfile(agent_id, skills=skills))
        store.set_presence(T, agent_id, Presence.AVAILABLE)


def test_two_replicas_racing_keep_every_rule_of_the_queue(
    redis_server: local_redis.LocalRedis,
) -> None:
    """See the module docstring; the run is bounded in time and operations."""
    clients = _run(redis_server.url, on_start=_team)
    assert len(clients.calls) > 50  # enough traffic to mean something
    raw = fleet.raw_client(redis_server)
    time.sleep(0.3)  # the last passes' writes
    assert _violations(raw, clients.calls) == []
    assert clients.doubles == []
    print(f"calls {len(clients.calls)}, refusals {dict(clients.errors)}")
