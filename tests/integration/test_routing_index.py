"""The routing index (``idx:ready``, ``idx:rev``) and ``load_candidates``.

- After every step of seeded random walks over every operation that changes an agent
  (create, update, delete, presence, heartbeat, commit, accept, decline, time-outs, finish
  with and without wrap-up, release, cancel, reclaim, policy changes, time passing), the
  index equals a recomputation from the agent hashes, and ``load_candidates`` equals
  ``load_snapshot`` filtered to the agents that are AVAILABLE with room (on both stores: the
  Redis one through its decoded-agent cache), with the same counts on both stores.
- The decision on the candidates is the decision on the full snapshot.
- ``load_queue`` (the dispatcher's read, through the same cache) equals a cold read.
- A stale or forged index entry (an absent or full agent listed as ready) never yields a
  wrong assignment: the commit refuses it and the Assign re-plans on a full snapshot.
- Data written before the index existed is indexed on first use.
"""

from __future__ import annotations

import dataclasses
import gc
import random

import pytest
import redis

from router import codec, local_redis
from router.assigner import Assigner, Outcome, rng_for
from router.domain import (
    AGENT_UNIT_BUDGET,
    AgentProfile,
    AgentSnapshot,
    Assignment,
    AssignmentState,
    Call,
    CallStatus,
    Channel,
    Exclusion,
    Policy,
    Presence,
    SkillRequirement,
    Snapshot,
)
from router.engine import decide
from router.errors import NotFoundError, RouterError
from router.memory_store import MemoryStore
from router.redis_store import RedisStore
from router.store import Candidates, Claim, CommitResult, Replayed, Store
from tests.helpers import FakeClock, retries, sample

T = "acme"
PREFIX = "rt:v1:{acme}:"
AGENTS = ("a", "b", "c", "d", "e")
SKILLS = ("billing", "tech")
CHANNELS = (Channel.VOICE, Channel.CHAT, Channel.EMAIL)
PRESENCES = (Presence.AVAILABLE, Presence.AVAILABLE, Presence.BREAK, Presence.OFFLINE)
POLICIES = (
    Policy(heartbeat_timeout_s=3600),
    Policy(
        offer_timeout_s={Channel.CHAT: 30},
        wrap_up_s={Channel.VOICE: 20, Channel.CHAT: 10},
        max_missed_offers=2,
    ),
    Policy(
        channel_units={Channel.VOICE: 100, Channel.CHAT: 50, Channel.EMAIL: 40},
        heartbeat_timeout_s=3600,
    ),
)
STEPS = 150


def _ready_from_hashes(client: redis.Redis) -> dict[str, float]:
    """What ``idx:ready`` must hold, recomputed from every agent hash."""
    expected: dict[str, float] = {}
    for agent_id in client.zrange(PREFIX + "agents", 0, -1):
        key = PREFIX + "agent:" + str(agent_id)
        fields: dict[str, str] = client.hgetall(key)  # type: ignore[assignment]
        if fields.get("presence") != "available":
            continue
        units = 0
        for name, value in fields.items():
            if name.startswith("a:"):
                parts = value.split("|")
                if int(parts[4]) == 0:
                    units += int(parts[1])
        expected[str(agent_id)] = float(units)
    return expected


def _check_index(client: redis.Redis) -> None:
    ready = dict(client.zrange(PREFIX + "idx:ready", 0, -1, withscores=True))  # type: ignore[arg-type]
    assert ready == _ready_from_hashes(client)
    scored: list[tuple[str, float]] = client.zrange(PREFIX + "idx:revs", 0, -1, withscores=True)  # type: ignore[assignment]
    revs = {agent_id: str(int(score)) for agent_id, score in scored}
    agents = [str(a) for a in client.zrange(PREFIX + "agents", 0, -1)]
    for agent_id in agents:
        assert client.hget(f"{PREFIX}agent:{agent_id}", "rev") == revs[agent_id]
    # Deleted agents stay (for 10 min), at the rev of their deletion: none above the counter.
    assert all(int(rev) <= int(revs[""]) for agent_id, rev in revs.items() if agent_id)
    # The heartbeat index holds existing agents only: a deletion takes the agent out.
    for log in ("idx:beats", "idx:beatlog"):
        members = {str(m) for m in client.zrange(PREFIX + log, 0, -1)} - {""}
        assert members <= set(agents), log


def _room(agent: AgentSnapshot, policy: Policy, channel: Channel) -> bool:
    in_progress = sum(w.units for w in agent.active if w.wrap_until_ms == 0)
    return in_progress + policy.units_for(channel) <= AGENT_UNIT_BUDGET


def _check_candidates(store: Store, call: Call) -> Candidates:
    """``load_candidates`` is ``load_snapshot`` filtered, agent for agent."""
    fast = store.load_candidates(T, call)
    full = store.load_snapshot(T, call)
    policy = full.policy
    assert fast.snapshot.policy == policy
    assert fast.snapshot.now_ms == full.now_ms
    assert fast.snapshot.queued == full.queued
    assert fast.snapshot.unindexed_missing_skill == full.unindexed_missing_skill
    available = [a for a in full.agents if a.presence == Presence.AVAILABLE]
    with_room = [a for a in available if _room(a, policy, call.channel)]
    assert fast.snapshot.agents == tuple(with_room)
    assert fast.not_available == len(full.agents) - len(available)
    assert fast.no_room == len(available) - len(with_room)
    for attempt in (1, 2):  # the decision on the candidates is the full decision
        rng = f"r:{call.call_id}:{attempt}"
        quick = decide(fast.snapshot, [call], rng=rng_for(rng)).placements[0]
        slow = decide(full, [call], rng=rng_for(rng)).placements[0]
        if quick.agent_id is not None or slow.agent_id is not None:
            assert quick.agent_id == slow.agent_id
            assert quick.explanation.score == slow.explanation.score
            assert quick.explanation.candidates == slow.explanation.candidates
    return fast


class Walk:
    """One store driven by the random walk, with the work it holds."""

    def __init__(self, store: Store) -> None:
        self.store = store
        store.put_policy(T, POLICIES[0])
        for n, agent_id in enumerate(AGENTS):
            skills = {SKILLS[n % 2]: 3 + n, SKILLS[(n + 1) % 2]: 1 + n % 3}
            store.create_agent(T, AgentProfile(agent_id, skills=skills))
            store.set_presence(T, agent_id, Presence.AVAILABLE)
        self.assigner = Assigner(store)
        self.live: dict[int, Assignment] = {}
        """By token (minted in the same order by both stores)."""
        self.calls = 0

    def step(self, rng: random.Random, clock: FakeClock) -> object:  # noqa: PLR0911, PLR0912  # one branch per operation
        store, policy = self.store, self.store.get_policy(T)
        agent_id = rng.choice(AGENTS)
        op = rng.randrange(16)
        if op == 0 or (op == 2 and rng.random() < 0.6):
            op = 0 if rng.random() < 0.5 else 3  # creating and presence more often than deleting
        try:
            if op == 0:
                skills = {s: rng.randint(1, 10) for s in SKILLS if rng.random() < 0.7}
                capacity = {ch: rng.randint(0, 3) for ch in CHANNELS if rng.random() < 0.2}
                return store.create_agent(
                    T, AgentProfile(agent_id, skills=skills, capacity=capacity)
                )
            if op == 1:
                level = rng.randint(1, 10)
                return store.update_agent(
                    T,
                    agent_id,
                    lambda p: dataclasses.replace(
                        p, skills={**p.skills, rng.choice(SKILLS): level}
                    ),
                )
            if op == 2:
                store.delete_agent(T, agent_id)
                return "deleted"
            if op in {3, 4}:
                return store.set_presence(T, agent_id, rng.choice(PRESENCES))
            if op == 5:
                return store.heartbeat(T, agent_id)
            if op in {6, 7, 8, 13, 14}:
                self.calls += 1
                call = Call(
                    f"c{self.calls}",
                    rng.choice(CHANNELS),
                    required_skills=(SkillRequirement(rng.choice(SKILLS), rng.randint(1, 5)),),
                )
                result = self.assigner.assign(T, f"r{self.calls}", call, queue=False)
                if result.assignment is not None:
                    self.live[result.assignment.token] = result.assignment
                return result.outcome
            if op in {9, 15} and self.live:
                asg = self.live.pop(rng.choice(sorted(self.live)))
                end = rng.choice(
                    (AssignmentState.COMPLETED, AssignmentState.RELEASED, AssignmentState.CANCELLED)
                )
                if asg.state == AssignmentState.OFFERED:
                    if rng.random() < 0.5:
                        self.live[asg.token] = store.accept_offer(T, asg.assignment_id, asg.token)
                        return "accepted"
                    return store.decline_offer(
                        T, asg.assignment_id, asg.token, timed_out=rng.random() < 0.5, policy=policy
                    )
                return store.finish_assignment(
                    T,
                    asg.assignment_id,
                    asg.token,
                    end,
                    wrap_up_s=policy.wrap_up_s.get(asg.channel, 0),
                    policy=policy,
                )
            if op == 10 and self.live:
                asg = self.live.pop(rng.choice(sorted(self.live)))
                return store.cancel_call(T, asg.call_id)
            if op == 11:
                taken = store.reclaim(T, agent_id, channels=policy.reclaim_channels, policy=policy)
                for asg in taken:
                    self.live.pop(asg.token, None)
                return taken
            if op == 12:
                if rng.random() < 0.3:
                    return store.put_policy(T, rng.choice(POLICIES))
                clock.advance(rng.choice((1_000, 15_000, 60_000)))
                return "tick"
        except RouterError as err:
            return type(err).__name__
        return None


@pytest.mark.parametrize("seed", range(6))
def test_index_stays_exact_through_random_walks(
    redis_client: redis.Redis, clock: FakeClock, seed: int
) -> None:
    rng_redis, rng_memory = random.Random(seed), random.Random(seed)
    # deletions pruned from the change log at once: the other replica must cope (idx:gone)
    redis_walk = Walk(RedisStore(redis_client, clock, tombstones_kept_s=0))
    memory_walk = Walk(MemoryStore(clock))
    other_replica = RedisStore(redis_client, clock)  # writes nothing: learns from the log
    probe_rng = random.Random(seed + 1000)
    for step in range(STEPS):
        answer = redis_walk.step(rng_redis, clock)
        twin = memory_walk.step(rng_memory, clock)
        assert type(answer) is type(twin), (step, answer, twin)
        _check_index(redis_client)
        probe = Call(
            f"probe{step}",
            probe_rng.choice(CHANNELS),
            required_skills=tuple(
                SkillRequirement(s, probe_rng.randint(1, 4))
                for s in SKILLS
                if probe_rng.random() < 0.6
            ),
        )
        # the dispatcher's read through the decoded-agent cache is a cold read
        warm = redis_walk.store.load_queue(T, 50)
        cold = RedisStore(redis_client, clock).load_queue(T, 50)
        assert warm == cold
        if step % 4 == seed % 4:  # a replica that reads now and then, many changes apart
            assert other_replica.load_queue(T, 50) == cold
        twin_view = memory_walk.store.load_queue(T, 50)  # assignment ids differ: compare ids
        assert [a.agent_id for a in warm.snapshot.agents] == [
            a.agent_id for a in twin_view.snapshot.agents
        ]
        on_redis = _check_candidates(redis_walk.store, probe)
        if step % 3 == seed % 3:
            assert _check_candidates(other_replica, probe) == on_redis
        on_memory = _check_candidates(memory_walk.store, probe)
        assert [a.agent_id for a in on_redis.snapshot.agents] == [
            a.agent_id for a in on_memory.snapshot.agents
        ]
        assert (on_redis.not_available, on_redis.no_room) == (
            on_memory.not_available,
            on_memory.no_room,
        )


def _team(store: Store) -> None:
    for agent_id, level in (("ann", 9), ("bob", 5)):
        store.create_agent(
            T, AgentProfile(agent_id, skills={"billing": level}, capacity={Channel.VOICE: 1})
        )
        store.set_presence(T, agent_id, Presence.AVAILABLE)


def _voice(call_id: str) -> Call:
    return Call(call_id, Channel.VOICE, required_skills=(SkillRequirement("billing", 1),))


def test_a_forged_entry_for_an_absent_agent_cannot_win(
    redis_client: redis.Redis, clock: FakeClock
) -> None:
    """``carl`` is offline but listed as ready by a stale entry whose cached rev is current:
    he looks like the best candidate, the commit refuses him, the re-plan picks ``ann``."""
    store = RedisStore(redis_client, clock)
    _team(store)
    store.create_agent(T, AgentProfile("carl", skills={"billing": 10}, capacity={Channel.VOICE: 1}))
    store.set_presence(T, "carl", Presence.AVAILABLE)
    store.load_candidates(T, _voice("warm"))  # carl cached as available
    rev = redis_client.zscore(PREFIX + "idx:revs", "carl")
    assert rev is not None
    store.set_presence(T, "carl", Presence.OFFLINE)
    redis_client.zadd(PREFIX + "idx:ready", {"carl": 0})
    redis_client.zadd(PREFIX + "idx:revs", {"carl": rev})  # the index lies about him
    store._mirrors.clear()  # the lie reaches this replica in a full read
    fast = store.load_candidates(T, _voice("x"))
    carl = next(a for a in fast.snapshot.agents if a.agent_id == "carl")
    assert carl.presence == Presence.AVAILABLE  # the stale view the first decision sees
    result = Assigner(store).assign(T, "r1", _voice("c1"))
    assert result.outcome == Outcome.ASSIGNED
    assert result.assignment is not None
    assert result.assignment.agent_id == "ann"
    assert result.attempts == 2
    assert store.get_agent(T, "carl").active == ()


def test_a_forged_entry_for_a_full_agent_cannot_overfill_them(
    redis_client: redis.Redis, clock: FakeClock
) -> None:
    """The only agent is on a voice call; the index (score and rev) says she is free as
    she was before it, to a replica that cached her then (the replica that assigned the
    call keeps her as the commit left her). The next voice call is refused by the commit
    and answered NO_AGENT from the full snapshot."""
    store, other = RedisStore(redis_client, clock), RedisStore(redis_client, clock)
    _team(store)
    store.delete_agent(T, "bob")
    other.load_candidates(T, _voice("warm"))  # ann cached while free
    rev = redis_client.zscore(PREFIX + "idx:revs", "ann")
    assert rev is not None
    first = Assigner(store).assign(T, "r1", _voice("c1"))
    assert first.assignment is not None
    redis_client.zadd(PREFIX + "idx:ready", {"ann": 0})
    redis_client.zadd(PREFIX + "idx:revs", {"ann": rev})
    other._mirrors.clear()  # the lie reaches that replica in a full read
    assert other.load_candidates(T, _voice("x")).snapshot.agents[0].active == ()
    second = Assigner(other).assign(T, "r2", _voice("c2"), queue=False)
    assert second.outcome == Outcome.NO_AGENT
    assert second.explanation.excluded == {Exclusion.AT_CAPACITY: 1}
    (held,) = store.get_agent(T, "ann").active
    assert held.assignment_id == first.assignment.assignment_id


class _RacedStore(RedisStore):
    """A Redis store where another replica's Assign of ``c0`` lands on the chosen agent
    just before this store's first commit (a lost race), and full reads are counted."""

    full_reads = 0
    raced = False

    def commit_assignment(self, tenant: str, claim: Claim) -> CommitResult:
        if not self.raced:
            self.raced = True
            other = Assigner(RedisStore(self._client, self._clock))
            assert other.assign(tenant, "other", _voice("c0")).assignment is not None
        return super().commit_assignment(tenant, claim)

    def load_snapshot(self, tenant: str, call: Call) -> Snapshot:
        self.full_reads += 1
        return super().load_snapshot(tenant, call)


def test_a_lost_race_replans_on_fresh_candidates(
    redis_client: redis.Redis, clock: FakeClock
) -> None:
    """Concurrent Assigns that chose the same agent: the loser re-plans on the candidates
    (which no longer list the agent now full) and takes the next best, without reading
    every agent."""
    store = _RacedStore(redis_client, clock)
    _team(store)
    retried = retries("commit")
    result = Assigner(store).assign(T, "r1", _voice("c1"))
    assert result.assignment is not None
    assert (result.assignment.agent_id, result.attempts) == ("bob", 2)
    assert retries("commit") - retried == 1
    assert store.get_agent(T, "ann").active[0].assignment_id != result.assignment.assignment_id
    assert store.full_reads == 0


def test_explanations_count_the_agents_left_out(
    redis_client: redis.Redis, clock: FakeClock
) -> None:
    """An ASSIGNED answer counts agents not available and agents without room."""
    for store in (RedisStore(redis_client, clock), MemoryStore(clock)):
        _team(store)
        store.create_agent(T, AgentProfile("cy", skills={"billing": 9}))
        store.create_agent(T, AgentProfile("dee", skills={"tech": 9}))
        assigner = Assigner(store)
        assert assigner.assign(T, "r1", _voice("c1")).assignment is not None
        result = assigner.assign(T, "r2", _voice("c2"))
        assert result.assignment is not None
        assert result.explanation.excluded == {
            Exclusion.NOT_AVAILABLE: 1,
            Exclusion.MISSING_SKILL: 1,
            Exclusion.AT_CAPACITY: 1,
        }


def test_data_from_before_the_index_is_indexed_on_first_use(
    redis_client: redis.Redis, clock: FakeClock
) -> None:
    store = RedisStore(redis_client, clock)
    _team(store)
    assert Assigner(store).assign(T, "r1", _voice("c1")).assignment is not None
    for name in ("idx:ready", "idx:revs", "idx:version"):
        redis_client.delete(PREFIX + name)
    for agent_id in ("ann", "bob"):
        redis_client.hdel(f"{PREFIX}agent:{agent_id}", "rev")
    redis_client.hset(PREFIX + "idx:rev", mapping={"": "7", "ann": "3"})  # index version 1
    fresh = RedisStore(redis_client, clock)
    rebuilt = retries("index")
    fast = _check_candidates(fresh, _voice("x"))
    assert retries("index") - rebuilt == 1  # built, then read again
    assert len(fast.snapshot.agents) == 1
    _check_index(redis_client)
    assert redis_client.get(PREFIX + "idx:version") == "3"
    assert not redis_client.exists(PREFIX + "idx:rev")
    assert Assigner(fresh).assign(T, "r2", _voice("c2")).assignment is not None


def _index_reads(mode: str) -> float:
    return sample("router_routing_index_reads_total", mode=mode)


def test_replicas_read_the_index_whole_once_then_only_changes(
    redis_client: redis.Redis, clock: FakeClock
) -> None:
    """A new replica reads the whole index, then only what changed; when the counter is found
    behind its mirror (a failover lost writes) it starts over, and its candidates stay exact."""
    store = RedisStore(redis_client, clock)
    _team(store)
    before = {mode: _index_reads(mode) for mode in ("all", "delta", "reset")}
    _check_candidates(store, _voice("x1"))
    _check_candidates(store, _voice("x2"))
    store.set_presence(T, "bob", Presence.BREAK)
    assert [a.agent_id for a in _check_candidates(store, _voice("x3")).snapshot.agents] == ["ann"]
    assert _index_reads("all") - before["all"] == 1
    assert _index_reads("delta") - before["delta"] == 2
    # A primary whose clock ran 1,000 s ahead issues revs from it; the mirror follows.
    head = redis_client.zscore(PREFIX + "idx:revs", "")
    assert head is not None
    redis_client.zadd(PREFIX + "idx:revs", {"": head + 1_000_000_000})
    store.set_presence(T, "bob", Presence.AVAILABLE)
    _check_candidates(store, _voice("x4"))
    # After a failover to a primary with the right time the counter is behind the mirror:
    # the mirror starts over, and its candidates stay exact.
    redis_client.zadd(PREFIX + "idx:revs", {"": head})
    store.set_presence(T, "bob", Presence.BREAK)
    fast = _check_candidates(store, _voice("x5"))
    assert [a.agent_id for a in fast.snapshot.agents] == ["ann"]
    assert _index_reads("reset") - before["reset"] == 1
    assert _index_reads("all") - before["all"] == 1


def test_deletions_leave_the_change_log_after_a_while_and_mirrors_stay_exact(
    redis_client: redis.Redis, clock: FakeClock
) -> None:
    """A deletion prunes the older deletions from ``idx:revs`` (here at once), so the change
    log does not keep every agent ever deleted; a replica whose mirror is older than the
    pruned deletions reads the whole index, and its candidates stay exact; an id created
    again is an agent, not a deletion, and stays."""
    store = RedisStore(redis_client, clock, tombstones_kept_s=0)
    other = RedisStore(redis_client, clock)
    for agent_id in ("cid", "dan", "eve"):
        store.create_agent(
            T, AgentProfile(agent_id, skills={"billing": 3}, capacity={Channel.VOICE: 1})
        )
        store.set_presence(T, agent_id, Presence.AVAILABLE)
    _team(store)
    _check_candidates(other, _voice("x1"))  # the other replica's mirror, as of now
    store.delete_agent(T, "cid")
    store.delete_agent(T, "dan")  # prunes cid's tombstone
    revs = {str(m) for m in redis_client.zrange(PREFIX + "idx:revs", 0, -1)}
    assert "cid" not in revs
    assert "dan" in revs
    assert redis_client.zscore(PREFIX + "idx:gone", "") is not None
    whole = _index_reads("all")
    fast = _check_candidates(other, _voice("x2"))
    assert [a.agent_id for a in fast.snapshot.agents] == ["ann", "bob", "eve"]
    assert _index_reads("all") - whole == 1
    # dan comes back under the same id: the next deletion prunes nothing of him
    store.create_agent(T, AgentProfile("dan", skills={"billing": 4}, capacity={Channel.VOICE: 1}))
    store.delete_agent(T, "eve")
    revs = {str(m) for m in redis_client.zrange(PREFIX + "idx:revs", 0, -1)}
    assert {"dan", "eve"} <= revs
    assert {str(m) for m in redis_client.zrange(PREFIX + "idx:gone", 0, -1)} == {"", "eve"}
    _check_index(redis_client)
    assert [a.agent_id for a in _check_candidates(other, _voice("x3")).snapshot.agents] == [
        "ann",
        "bob",
    ]


def test_remembered_parties_never_stand_in_for_the_assignment(
    redis_client: redis.Redis, clock: FakeClock
) -> None:
    """The replica that committed an assignment remembers its agent and call (they never
    change); another replica reads them. Either way the script decides: an assignment gone
    from Redis is NOT_FOUND even where its parties are remembered."""
    store, other = RedisStore(redis_client, clock), RedisStore(redis_client, clock)
    _team(store)
    first = Assigner(store).assign(T, "r1", _voice("c1")).assignment
    second = Assigner(store).assign(T, "r2", _voice("c2")).assignment
    assert first is not None
    assert second is not None
    done = other.finish_assignment(T, first.assignment_id, first.token, AssignmentState.COMPLETED)
    assert done.assignment.state == AssignmentState.COMPLETED
    redis_client.delete(f"{PREFIX}asg:{second.assignment_id}")
    with pytest.raises(NotFoundError):
        store.finish_assignment(T, second.assignment_id, second.token, AssignmentState.COMPLETED)


def test_heartbeats_reach_cached_agents_without_a_new_rev(
    redis_client: redis.Redis, clock: FakeClock
) -> None:
    """A heartbeat takes no rev, so a replica does not read the agent again; yet its cached
    agent carries the new heartbeat, in Assign's read and in the dispatcher's, and an agent
    whose heartbeats stopped still expires on time."""
    store, other = RedisStore(redis_client, clock), RedisStore(redis_client, clock)
    _team(store)
    store.set_presence(T, "ann", Presence.AVAILABLE)
    policy = Policy(heartbeat_timeout_s=60)
    store.put_policy(T, policy)
    other.heartbeat(T, "ann")
    other.heartbeat(T, "bob")
    _check_candidates(store, _voice("x1"))  # both cached
    revs = redis_client.zrange(PREFIX + "idx:revs", 0, -1, withscores=True)
    for _ in range(3):  # ann keeps beating from the other replica, bob stops
        clock.advance(25_000)
        other.heartbeat(T, "ann")
    assert redis_client.zrange(PREFIX + "idx:revs", 0, -1, withscores=True) == revs
    fast = _check_candidates(store, _voice("x2"))  # equal to a full read, agent for agent
    ann = next(a for a in fast.snapshot.agents if a.agent_id == "ann")
    assert ann.heartbeat_ms == clock()
    placement = decide(fast.snapshot, [_voice("x2")], rng=rng_for("x2")).placements[0]
    assert placement.agent_id == "ann"
    assert placement.explanation.excluded == {Exclusion.HEARTBEAT_EXPIRED: 1}
    queued = store.enqueue(T, "q1", "fp", _voice("q1"), policy=policy)
    assert not isinstance(queued, Replayed)
    assert queued.status == CallStatus.QUEUED
    view = store.load_queue(T, 10)
    assert {a.agent_id: a.heartbeat_ms for a in view.snapshot.agents}["ann"] == clock()


def _calls(client: redis.Redis, command: str = "multi") -> int:
    """How many times the server has run ``command`` (``INFO commandstats``)."""
    stats: dict[str, dict[str, int]] = client.info("commandstats")
    return stats.get(f"cmdstat_{command}", {}).get("calls", 0)


def test_a_replica_keeps_the_agents_it_changed_without_reading_them_again(
    redis_client: redis.Redis, clock: FakeClock
) -> None:
    """Commit and finish return the agent they changed (for the window the replica's cache
    serves), so the replica's next Assign reads the index changes and no agent: one script,
    no MULTI, and its candidates stay those of a full read. Another replica reads the
    changed agent once."""
    store, other = RedisStore(redis_client, clock), RedisStore(redis_client, clock)
    _team(store)
    for replica in (store, other):
        _check_candidates(replica, _voice("warm"))
    assigned = Assigner(store).assign(T, "r1", _voice("c1")).assignment
    assert assigned is not None
    multis = _calls(redis_client)
    store.load_candidates(T, _voice("x1"))
    assert _calls(redis_client) == multis
    clock.advance(2_000)
    store.finish_assignment(T, assigned.assignment_id, assigned.token, AssignmentState.COMPLETED)
    multis = _calls(redis_client)
    store.load_candidates(T, _voice("x2"))
    assert _calls(redis_client) == multis
    other.load_candidates(T, _voice("x3"))
    assert _calls(redis_client) == multis + 1
    for replica in (store, other):
        _check_candidates(replica, _voice("x4"))


@pytest.mark.parametrize("protocol", [2, 3])
def test_the_dispatcher_reads_the_same_agents_over_either_protocol(
    redis_server: local_redis.LocalRedis, redis_client: redis.Redis, clock: FakeClock, protocol: int
) -> None:
    """``load_queue``'s full read of the agent lists takes the sorted sets' scores as the
    server sends them, flat (RESP2) or in pairs (RESP3): both give every agent at its rev,
    with its latest heartbeat, exactly as the agents read one by one."""
    writer = RedisStore(redis_client, clock)
    _team(writer)
    writer.create_agent(T, AgentProfile("cid", skills={"billing": 2}))
    _check_candidates(writer, _voice("warm"))  # builds the index: its revs are read
    writer.heartbeat(T, "ann")
    clock.advance(1_500)
    writer.heartbeat(T, "bob")
    client = redis.Redis.from_url(redis_server.url, decode_responses=True, protocol=protocol)
    try:
        view = RedisStore(client, clock).load_queue(T, 10)
    finally:
        client.close()
    expected = {a: RedisStore(redis_client, clock).get_agent(T, a) for a in ("ann", "bob", "cid")}
    assert {agent.agent_id: agent for agent in view.snapshot.agents} == expected
    assert expected["ann"].heartbeat_ms == expected["bob"].heartbeat_ms - 1_500 > 0


def test_an_idle_dispatcher_read_sends_no_agent_lists(
    redis_client: redis.Redis, clock: FakeClock
) -> None:
    """While the change logs' heads stand still, ``load_queue`` reuses the agent ids, revs
    and heartbeats it read before (no list of every agent crosses the wire), yet answers what
    a cold read answers, also as time alone expires a heartbeat or the policy changes. Any
    change to an agent (a heartbeat, a presence change, a new agent) is read at once."""
    store = RedisStore(redis_client, clock)
    _team(store)
    policy = Policy(heartbeat_timeout_s=60)
    store.put_policy(T, policy)
    store.heartbeat(T, "ann")
    store.load_queue(T, 10)  # no index built yet (the first Assign builds it): nothing kept
    _check_candidates(store, _voice("warm"))

    def check(*, lists_read: bool) -> None:
        before = _calls(redis_client, "zrange")
        warm = store.load_queue(T, 10)
        # one ZRANGE reads the first offer; the lists are four more
        assert (_calls(redis_client, "zrange") - before > 1) == lists_read
        assert warm == RedisStore(redis_client, clock).load_queue(T, 10)

    check(lists_read=True)
    check(lists_read=False)
    clock.advance(61_000)  # ann's heartbeat expires with no write at all
    check(lists_read=False)
    store.heartbeat(T, "ann")
    check(lists_read=True)
    check(lists_read=False)
    store.set_presence(T, "bob", Presence.BREAK)
    check(lists_read=True)
    store.create_agent(T, AgentProfile("cid", skills={"billing": 2}))
    check(lists_read=True)
    store.put_policy(T, Policy(heartbeat_timeout_s=30))  # the policy is read every time
    check(lists_read=False)
    store.enqueue(T, "q1", "fp", _voice("q1"), policy=policy)
    check(lists_read=False)  # a queued call changes no agent
    assert [c.call_id for c in store.load_queue(T, 10).calls] == ["q1"]


def test_a_cached_agent_costs_the_collector_few_objects(
    redis_client: redis.Redis, clock: FakeClock
) -> None:
    """A replica keeps every agent it routes to: the decoded snapshot in its agent cache,
    the agent's row for the decision, its entry in the routing index's mirror. The garbage
    collector's full passes walk every object it tracks, every thread stopped meanwhile, so
    those should be few per agent: 500 agents of a team, decided on twice, leave fewer than
    eight each, start-up included (6.4 measured; 21.4 while rows, mirror entries and like
    profile parts were objects of their own)."""
    writer = RedisStore(redis_client, clock)
    for i in range(500):
        writer.create_agent(
            T,
            AgentProfile(
                f"a{i:03d}",
                skills={"billing": 1 + i % 3},
                languages=frozenset({"en"}),
                capacity={Channel.CHAT: 3},
            ),
        )
        writer.set_presence(T, f"a{i:03d}", Presence.AVAILABLE)
    call = Call("c", Channel.CHAT, required_skills=(SkillRequirement("billing", 1),))
    codec.decode_profile.clear()
    gc.collect()
    before = len(gc.get_objects())
    store = RedisStore(redis_client, clock)  # another replica
    for attempt in range(2):
        candidates = store.load_candidates(T, call)
        assert len(candidates.snapshot.agents) == 500
        assert decide(candidates.snapshot, [call], rng=rng_for(f"c:{attempt}")).placements
    gc.collect()
    gc.collect()  # a tuple is untracked once the tuples it holds are, at a later collection
    assert (len(gc.get_objects()) - before) / 500 < 8
