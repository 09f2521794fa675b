"""The queueing contract of the stores: every test runs on ``MemoryStore`` and ``RedisStore``.

Queue order, dispatch from the queue, offers (accept, reject, timeout), wrap-up, release,
reclaim, cancel, SLA flags, callbacks, timelines, history, tenants, leases and event reads.
Time is the ``FakeClock`` both stores read: tests move it instead of sleeping. Every refused
operation is also checked to write nothing (``harness.dump()`` before and after).
"""

from __future__ import annotations

import dataclasses
import functools
import random
import threading
import time

import pytest

from router import tracing
from router.dispatcher import must_reclaim
from router.domain import (
    Absence,
    AbsenceKind,
    ActiveWork,
    AgentProfile,
    AgentSnapshot,
    Assignment,
    AssignmentState,
    Call,
    CallRecord,
    CallStatus,
    Channel,
    Explanation,
    Policy,
    Presence,
    SkillRequirement,
    SlaTarget,
    Strategy,
    frozen_map,
)
from router.errors import (
    ContentionError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PolicyChangedError,
    ResourceExhaustedError,
)
from router.ordering import limit_from_ms
from router.store import (
    Claim,
    Committed,
    Conflict,
    Event,
    Gone,
    HistoryEntry,
    PassGrant,
    Replayed,
    Store,
    Waiting,
    queue_score,
)
from router.store_common import RATE_WINDOW_MS
from tests.helpers import sample
from tests.integration.conftest import StoreHarness

T = "acme"
EXPLANATION = Explanation(strategy=Strategy.BALANCED, candidates=1, score=1.0)
POLICY = Policy(aging_s_per_priority=60, max_missed_offers=3, escalation_priority_boost=2)
"""The policy every test passes (and stores, where the store reads it back)."""
PROBE = Call("probe", Channel.CHAT)
"""A call with no requirements: ``load_snapshot`` returns every agent for it."""


# --- helpers ---------------------------------------------------------------------------------


def make_call(
    call_id: str, created_ms: int, *, priority: int = 0, channel: Channel = Channel.CHAT
) -> Call:
    """A call created at ``created_ms`` (tests enqueue it at that same instant)."""
    return Call(
        call_id=call_id,
        channel=channel,
        required_skills=(SkillRequirement("billing", 2),),
        language="en",
        priority=priority,
        attributes=frozen_map({"vip": "no"}),
        created_ms=created_ms,
    )


def enqueue(
    harness: StoreHarness,
    call_id: str,
    *,
    priority: int = 0,
    channel: Channel = Channel.CHAT,
    policy: Policy = POLICY,
    tenant: str = T,
) -> CallRecord:
    """Queue a new call created now (request ``req-<call_id>``, fingerprint ``fp``)."""
    call = make_call(call_id, harness.clock.now_ms, priority=priority, channel=channel)
    result = harness.store.enqueue(tenant, f"req-{call_id}", "fp", call, policy=policy)
    assert isinstance(result, CallRecord), result
    return result


def available(store: Store, agent_id: str) -> AgentSnapshot:
    """Create an AVAILABLE agent with the ``billing`` skill."""
    store.create_agent(
        T,
        AgentProfile(
            agent_id=agent_id,
            skills=frozen_map({"billing": 5}),
            languages=frozenset({"en"}),
        ),
    )
    return store.set_presence(T, agent_id, Presence.AVAILABLE)


def waiting(store: Store, call_id: str, tenant: str = T) -> Call:
    """The queued call as ``load_queue`` shows it (enqueued_ms, priority, exclusions)."""
    for call in store.load_queue(tenant, 1000).calls:
        if call.call_id == call_id:
            return call
    raise AssertionError(f"call {call_id} is not in the queue")


def queue_ids(store: Store, tenant: str = T) -> list[str]:
    """Ids of every queued call in queue order."""
    return [call.call_id for call in store.load_queue(tenant, 1000).calls]


def dispatch_claim(
    call: Call, agent_id: str, seq: int, *, offer_s: int = 0, units: int = 25
) -> Claim:
    """The dispatcher's claim of queued ``call`` for ``agent_id`` seen at ``seq``."""
    return Claim(
        request_id="",
        fingerprint="",
        call=call,
        agent_id=agent_id,
        expected_seq=seq,
        units=units,
        heartbeat_timeout_s=0,
        explanation=EXPLANATION,
        offer_timeout_s=offer_s,
        from_queue=True,
    )


def dispatch(
    store: Store, call_id: str, agent_id: str, *, offer_s: int = 0, units: int = 25
) -> Assignment:
    """Place queued ``call_id`` with ``agent_id`` (an offer when ``offer_s`` > 0); must commit."""
    call = waiting(store, call_id)
    seq = store.get_agent(T, agent_id).seq
    result = store.commit_assignment(
        T, dispatch_claim(call, agent_id, seq, offer_s=offer_s, units=units)
    )
    assert isinstance(result, Committed), result
    return result.assignment


def direct_claim(call: Call, agent_id: str, seq: int, request_id: str, fp: str = "fp") -> Claim:
    """An Assign's claim of a new call (not from the queue)."""
    return Claim(
        request_id=request_id,
        fingerprint=fp,
        call=call,
        agent_id=agent_id,
        expected_seq=seq,
        units=25,
        heartbeat_timeout_s=0,
        explanation=EXPLANATION,
    )


def held(store: Store, agent_id: str) -> tuple[ActiveWork, ...]:
    """The work holding ``agent_id``'s capacity now, as ``load_snapshot`` reports it."""
    for agent in store.load_snapshot(T, PROBE).agents:
        if agent.agent_id == agent_id:
            return agent.active
    raise AssertionError(f"agent {agent_id} is not in the snapshot")


def all_events(store: Store, tenant: str = T) -> list[Event]:
    """Every event of the tenant."""
    return store.read_events(tenant, "0", limit=10_000)


def abandoned(le: str = "+Inf") -> float:
    """Calls of tenant ``T`` abandoned on chat, within ``le`` seconds of their wait
    (``router_call_abandoned_wait_seconds``, both stores alike)."""
    return sample("router_call_abandoned_wait_seconds_bucket", tenant=T, channel="chat", le=le)


def events_of(store: Store, kind: str, call_id: str = "") -> list[Event]:
    """The tenant's events of type ``kind`` (of ``call_id`` when given)."""
    return [
        e for e in all_events(store) if e.type == kind and (not call_id or e.call_id == call_id)
    ]


# --- enqueue and queue order -----------------------------------------------------------------


def test_enqueue_queues_in_arrival_order(harness: StoreHarness) -> None:
    """A new call waits as QUEUED with its 1-based place; each later call queues behind it,
    a ``QUEUED`` event is appended per call, and ``get_call`` reports the same places."""
    store, clock = harness.store, harness.clock
    records = []
    for call_id in ("c1", "c2", "c3"):
        records.append((clock.now_ms, enqueue(harness, call_id)))
        clock.advance(1000)
    for n, (at, record) in enumerate(records, start=1):
        assert (record.status, record.position, record.assignment) == (CallStatus.QUEUED, n, None)
        assert (record.call.call_id, record.updated_ms) == (f"c{n}", at)
        assert (record.callback_requested, record.sla_at_risk, record.sla_breached) == (
            False,
            False,
            False,
        )
    assert [store.get_call(T, f"c{n}").position for n in (1, 2, 3)] == [1, 2, 3]
    assert {store.get_call(T, f"c{n}").status for n in (1, 2, 3)} == {CallStatus.QUEUED}
    assert queue_ids(store) == ["c1", "c2", "c3"]
    assert [e.call_id for e in events_of(store, "QUEUED")] == ["c1", "c2", "c3"]


def test_priority_is_worth_aging_seconds(harness: StoreHarness) -> None:
    """Queue order is ``queue_score``: older first, one priority level worth
    ``aging_s_per_priority`` seconds. A priority-1 call arriving 59 s after a priority-0
    call goes ahead of it; one arriving 61 s after stays behind (the older call has waited
    longer than its priority is worth). Another tenant's policy (10 s a level) orders the
    same arrivals by age only."""
    store, clock = harness.store, harness.clock
    slow = dataclasses.replace(POLICY, aging_s_per_priority=10)
    t0 = clock.now_ms
    enqueue(harness, "old-p0")
    enqueue(harness, "old-p0", tenant="beta", policy=slow)
    clock.advance(59_000)
    enqueue(harness, "new-p1-59s", priority=1)
    enqueue(harness, "new-p1-59s", priority=1, tenant="beta", policy=slow)
    clock.advance(2_000)
    enqueue(harness, "new-p1-61s", priority=1)
    enqueue(harness, "new-p1-61s", priority=1, tenant="beta", policy=slow)
    clock.advance(1_000)
    enqueue(harness, "newest-p0")
    enqueue(harness, "newest-p0", tenant="beta", policy=slow)

    assert queue_ids(store) == ["new-p1-59s", "old-p0", "new-p1-61s", "newest-p0"]
    assert [store.get_call(T, c).position for c in queue_ids(store)] == [1, 2, 3, 4]
    calls = store.load_queue(T, 10).calls
    scores = [queue_score(call, POLICY) for call in calls]
    assert scores == sorted(scores)
    assert scores[:2] == [t0 - 1_000, t0]
    assert queue_ids(store, "beta") == ["old-p0", "new-p1-59s", "new-p1-61s", "newest-p0"]


def test_full_queue_is_resource_exhausted(harness: StoreHarness) -> None:
    """Once ``policy.max_queue`` calls wait, Assign's enqueue is RESOURCE_EXHAUSTED and
    writes nothing; when one stops waiting there is room again."""
    store, clock = harness.store, harness.clock
    full = dataclasses.replace(POLICY, max_queue=2)
    enqueue(harness, "c1", policy=full)
    enqueue(harness, "c2", policy=full)
    before = harness.dump()
    with pytest.raises(ResourceExhaustedError):
        store.enqueue(T, "req-c3", "fp", make_call("c3", clock.now_ms), policy=full)
    assert harness.dump() == before
    with pytest.raises(NotFoundError):
        store.get_call(T, "c3")
    assert store.find_request(T, "req-c3") is None

    store.cancel_call(T, "c1")
    assert enqueue(harness, "c3", policy=full).position == 2
    assert store.load_queue(T, 10).depth == 2


def test_enqueue_replay_and_reused_request_id(harness: StoreHarness) -> None:
    """Retrying an Assign that queued (same request id and fingerprint) is ``Replayed`` and
    writes nothing, whether the retry enqueues or commits; another fingerprint under the same
    request id is INVALID_ARGUMENT on ``request_id`` and writes nothing."""
    store, clock = harness.store, harness.clock
    call = make_call("c1", clock.now_ms)
    first = store.enqueue(T, "r1", "fp", call, policy=POLICY)
    assert isinstance(first, CallRecord)
    seq = available(store, "a").seq
    clock.advance(5_000)
    before = harness.dump()
    assert store.enqueue(T, "r1", "fp", call, policy=POLICY) == Replayed()
    assert store.commit_assignment(T, direct_claim(call, "a", seq, "r1")) == Replayed()
    with pytest.raises(InvalidArgumentError) as enqueued:
        store.enqueue(T, "r1", "other", call, policy=POLICY)
    assert enqueued.value.field == "request_id"
    with pytest.raises(InvalidArgumentError) as committed:
        store.commit_assignment(T, direct_claim(call, "a", seq, "r1", fp="other"))
    assert committed.value.field == "request_id"
    assert harness.dump() == before
    assert store.load_queue(T, 10).depth == 1


def test_existing_call_id_is_refused(harness: StoreHarness) -> None:
    """A new request for a call id that is already queued or assigned is FAILED_PRECONDITION
    (enqueue or direct commit) and writes nothing."""
    store, clock = harness.store, harness.clock
    seq = available(store, "a").seq
    enqueue(harness, "c1")
    assigned = store.commit_assignment(
        T, direct_claim(make_call("c2", clock.now_ms), "a", seq, "r2")
    )
    assert isinstance(assigned, Committed)
    seq = store.get_agent(T, "a").seq
    before = harness.dump()
    for call_id in ("c1", "c2"):
        with pytest.raises(FailedPreconditionError):
            store.enqueue(T, f"new-{call_id}", "fp", make_call(call_id, 0), policy=POLICY)
        with pytest.raises(FailedPreconditionError):
            store.commit_assignment(T, direct_claim(make_call(call_id, 0), "a", seq, "x"))
    assert harness.dump() == before


def test_find_request_follows_the_call(harness: StoreHarness) -> None:
    """``find_request`` answers a retried Assign with the fingerprint and the call's current
    state: QUEUED (with its place) while waiting, ASSIGNED once the dispatcher placed it."""
    store = harness.store
    available(store, "a")
    enqueue(harness, "c0")
    enqueue(harness, "c1")
    found = store.find_request(T, "req-c1")
    assert found is not None
    fingerprint, record = found
    assert (fingerprint, record.status, record.position, record.assignment) == (
        "fp",
        CallStatus.QUEUED,
        2,
        None,
    )
    assert found == ("fp", store.get_call(T, "c1"))

    asg = dispatch(store, "c1", "a")
    found = store.find_request(T, "req-c1")
    assert found is not None
    assert (found[0], found[1].status, found[1].position, found[1].assignment) == (
        "fp",
        CallStatus.ASSIGNED,
        0,
        asg,
    )
    assert found == ("fp", store.get_call(T, "c1"))
    assert store.find_request(T, "req-none") is None


# --- load_queue ------------------------------------------------------------------------------


def test_load_queue_gives_the_first_calls_and_every_agent(harness: StoreHarness) -> None:
    """``load_queue`` returns the first ``limit`` calls in queue order with ``enqueued_ms``,
    priority and exclusions, the full depth, and a snapshot of every agent (no skill
    pruning) with the stored policy and store time."""
    store, clock = harness.store, harness.clock
    policy = store.put_policy(T, POLICY)
    empty = store.load_queue(T, 10)
    assert (empty.calls, empty.depth) == ((), 0)

    available(store, "a")
    store.create_agent(T, AgentProfile(agent_id="b", skills=frozen_map({"tech": 3})))
    store.create_agent(T, AgentProfile(agent_id="c"))
    t0 = clock.now_ms
    enqueue(harness, "c1")
    clock.advance(1_000)
    enqueue(harness, "c2", priority=3)
    clock.advance(1_000)
    enqueue(harness, "c3", priority=1, channel=Channel.EMAIL)
    clock.advance(1_000)
    enqueue(harness, "c4")
    offer = dispatch(store, "c1", "a", offer_s=30)
    store.decline_offer(T, offer.assignment_id, offer.token, timed_out=False, policy=POLICY)

    view = store.load_queue(T, 2)
    assert view.calls == (
        dataclasses.replace(make_call("c2", t0 + 1_000, priority=3), enqueued_ms=t0 + 1_000),
        dataclasses.replace(
            make_call("c3", t0 + 2_000, priority=1, channel=Channel.EMAIL),
            enqueued_ms=t0 + 2_000,
        ),
    )
    assert view.depth == 4
    assert [a.agent_id for a in view.snapshot.agents] == ["a", "b", "c"]
    assert (view.snapshot.now_ms, view.snapshot.policy) == (clock.now_ms, policy)

    nothing = store.load_queue(T, 0)
    assert (nothing.calls, nothing.depth) == ((), 4)

    everything = store.load_queue(T, 10)
    assert [c.call_id for c in everything.calls] == ["c2", "c3", "c1", "c4"]
    assert everything.calls[2] == dataclasses.replace(
        make_call("c1", t0), enqueued_ms=t0, excluded_agents=("a",)
    )
    assert everything.depth == 4


# --- dispatch from the queue -----------------------------------------------------------------


def test_dispatch_takes_the_call_off_the_queue(harness: StoreHarness) -> None:
    """The dispatcher's commit assigns a queued call: it leaves the queue (the others move
    up), the call is ASSIGNED with the assignment, the agent holds the work, and an
    ``answered`` entry records the time the caller waited."""
    store, clock = harness.store, harness.clock
    available(store, "a")
    t0 = clock.now_ms
    enqueue(harness, "c1")
    clock.advance(1)
    enqueue(harness, "c2")
    clock.advance(11_999)
    asg = dispatch(store, "c1", "a")
    now = clock.now_ms
    assert (asg.call_id, asg.agent_id, asg.state, asg.created_ms, asg.units) == (
        "c1",
        "a",
        AssignmentState.ACTIVE,
        now,
        25,
    )
    assert (asg.ended_ms, asg.offer_expires_ms, asg.explanation) == (0, 0, EXPLANATION)
    record = store.get_call(T, "c1")
    assert (record.status, record.position, record.assignment) == (CallStatus.ASSIGNED, 0, asg)
    assert queue_ids(store) == ["c2"]
    assert store.load_queue(T, 10).depth == 1
    assert store.get_call(T, "c2").position == 1
    assert held(store, "a") == (ActiveWork(asg.assignment_id, Channel.CHAT, 25, now),)
    assert store.history(T, 0) == [HistoryEntry("answered", Channel.CHAT, now, now - t0, "c1")]
    assert [(e.call_id, e.agent_id) for e in events_of(store, "ASSIGNED")] == [("c1", "a")]


def test_dispatch_of_an_abandoned_call_is_gone(harness: StoreHarness) -> None:
    """A dispatcher that planned on a call the customer abandoned meanwhile gets ``Gone``
    and nothing is written (the agent stays free)."""
    store = harness.store
    available(store, "a")
    enqueue(harness, "c1")
    view = store.load_queue(T, 10)
    (call,) = view.calls
    (agent,) = view.snapshot.agents
    store.cancel_call(T, "c1")
    before = harness.dump()
    assert store.commit_assignment(T, dispatch_claim(call, "a", agent.seq)) == Gone("abandoned")
    assert harness.dump() == before
    assert store.get_call(T, "c1").status == CallStatus.ABANDONED
    assert held(store, "a") == ()


def test_second_dispatcher_is_gone(harness: StoreHarness) -> None:
    """Two dispatchers solving on the same queue view both try to place the call: the first
    commit wins, the second is ``Gone`` and writes nothing. Never two assignments."""
    store = harness.store
    available(store, "a")
    available(store, "b")
    enqueue(harness, "c1")
    view = store.load_queue(T, 10)
    (call,) = view.calls
    seqs = {agent.agent_id: agent.seq for agent in view.snapshot.agents}
    first = store.commit_assignment(T, dispatch_claim(call, "a", seqs["a"]))
    assert isinstance(first, Committed)
    before = harness.dump()
    assert store.commit_assignment(T, dispatch_claim(call, "b", seqs["b"])) == Gone("assigned")
    assert harness.dump() == before
    assert held(store, "b") == ()
    assert store.get_call(T, "c1").assignment == first.assignment
    assert len(events_of(store, "ASSIGNED", "c1")) == 1


def test_concurrent_dispatchers_place_a_call_once(harness: StoreHarness) -> None:
    """Twenty threads commit the same queued call to twenty different agents at once:
    exactly one commit wins, every other is ``Gone``."""
    store = harness.store
    agents = [f"agent-{i:02d}" for i in range(20)]
    for agent_id in agents:
        available(store, agent_id)
    enqueue(harness, "c1")
    view = store.load_queue(T, 10)
    (call,) = view.calls
    seqs = {agent.agent_id: agent.seq for agent in view.snapshot.agents}
    barrier = threading.Barrier(len(agents), timeout=30)
    results: list[object] = [None] * len(agents)

    def worker(i: int) -> None:
        barrier.wait()
        results[i] = store.commit_assignment(T, dispatch_claim(call, agents[i], seqs[agents[i]]))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(agents))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    committed = [r for r in results if isinstance(r, Committed)]
    assert len(committed) == 1
    assert results.count(Gone("assigned")) == len(agents) - 1
    assert sum(len(held(store, agent_id)) for agent_id in agents) == 1
    assert store.load_queue(T, 10).depth == 0


def test_dispatch_on_a_stale_seq_conflicts(harness: StoreHarness) -> None:
    """A dispatch planned on an older agent ``seq`` is a ``Conflict``, writes nothing and
    leaves the call waiting in its place."""
    store = harness.store
    available(store, "a")
    enqueue(harness, "c1")
    view = store.load_queue(T, 10)
    (call,) = view.calls
    (agent,) = view.snapshot.agents
    store.set_presence(T, "a", Presence.AVAILABLE)
    before = harness.dump()
    assert store.commit_assignment(T, dispatch_claim(call, "a", agent.seq)) == Conflict(
        "agent changed"
    )
    assert harness.dump() == before
    record = store.get_call(T, "c1")
    assert (record.status, record.position) == (CallStatus.QUEUED, 1)
    assert store.load_queue(T, 10).depth == 1


def test_a_dispatch_planned_before_the_call_left_an_agent_never_goes_back_to_it(
    harness: StoreHarness,
) -> None:
    """A dispatch planned on a queue read from before the call left an agent (rejected,
    timed out, released, reclaimed) is a ``Conflict`` when it names that agent, in capacity
    mode too (where the agent's ``seq`` is not compared), and writes nothing; another agent
    still takes the call."""
    store = harness.store
    for agent_id in ("a", "b", "c"):
        available(store, agent_id)
    enqueue(harness, "c1")
    (stale,) = store.load_queue(T, 10).calls  # read before the call reached "a" and "b"
    assert stale.excluded_agents == ()
    for agent_id, timed_out in (("a", False), ("b", True)):
        offer = dispatch(store, "c1", agent_id, offer_s=30)
        store.decline_offer(T, offer.assignment_id, offer.token, timed_out=timed_out, policy=POLICY)
        seq = store.get_agent(T, agent_id).seq
        before = harness.dump()
        for capacity in (0, 1):
            claim = dataclasses.replace(dispatch_claim(stale, agent_id, seq), capacity=capacity)
            assert store.commit_assignment(T, claim) == Conflict("agent excluded")
        assert harness.dump() == before
    assert waiting(store, "c1").excluded_agents == ("a", "b")
    seq = store.get_agent(T, "c").seq
    placed = store.commit_assignment(T, dispatch_claim(stale, "c", seq))
    assert isinstance(placed, Committed)
    assert placed.assignment.agent_id == "c"


# --- offers ----------------------------------------------------------------------------------


def test_offer_holds_capacity(harness: StoreHarness) -> None:
    """Committing with ``offer_timeout_s`` makes an OFFERED assignment expiring after that
    long; the call is OFFERED (off the queue), the agent's slot is taken by offered work, an
    ``OFFERED`` event is appended and nobody is counted as answered yet."""
    store, clock = harness.store, harness.clock
    available(store, "a")
    enqueue(harness, "c1")
    clock.advance(5_000)
    asg = dispatch(store, "c1", "a", offer_s=30)
    now = clock.now_ms
    assert (asg.state, asg.created_ms, asg.offer_expires_ms, asg.ended_ms) == (
        AssignmentState.OFFERED,
        now,
        now + 30_000,
        0,
    )
    record = store.get_call(T, "c1")
    assert (record.status, record.position, record.assignment) == (CallStatus.OFFERED, 0, asg)
    assert held(store, "a") == (ActiveWork(asg.assignment_id, Channel.CHAT, 25, now, offered=True),)
    assert store.load_queue(T, 10).depth == 0
    assert store.history(T, 0) == []
    assert [(e.call_id, e.agent_id) for e in events_of(store, "OFFERED")] == [("c1", "a")]
    assert events_of(store, "ASSIGNED") == []


def test_accept_makes_the_offer_active(harness: StoreHarness) -> None:
    """Accepting an offer makes it ACTIVE (same id and token), the call ASSIGNED, the work no
    longer an offer, an ``answered`` entry with the wait up to the accept and an
    ``ACCEPTED`` event; accepting again returns it unchanged and writes nothing."""
    store, clock = harness.store, harness.clock
    available(store, "a")
    t0 = clock.now_ms
    enqueue(harness, "c1")
    clock.advance(5_000)
    offer = dispatch(store, "c1", "a", offer_s=30)
    clock.advance(10_000)
    accepted = store.accept_offer(T, offer.assignment_id, offer.token)
    now = clock.now_ms
    assert (accepted.assignment_id, accepted.token, accepted.state, accepted.ended_ms) == (
        offer.assignment_id,
        offer.token,
        AssignmentState.ACTIVE,
        0,
    )
    assert (accepted.call_id, accepted.agent_id, accepted.units) == ("c1", "a", 25)
    record = store.get_call(T, "c1")
    assert (record.status, record.assignment) == (CallStatus.ASSIGNED, accepted)
    (work,) = held(store, "a")
    assert (work.assignment_id, work.offered, work.wrap_until_ms) == (
        offer.assignment_id,
        False,
        0,
    )
    assert store.history(T, 0) == [HistoryEntry("answered", Channel.CHAT, now, now - t0, "c1")]
    assert [(e.call_id, e.agent_id) for e in events_of(store, "ACCEPTED")] == [("c1", "a")]

    clock.advance(1_000)
    before = harness.dump()
    assert store.accept_offer(T, offer.assignment_id, offer.token) == accepted
    assert harness.dump() == before


def test_accept_is_refused_for_a_stale_token_or_an_expired_offer(harness: StoreHarness) -> None:
    """Accept with a token that is not the offer's, after the offer expired, or for an offer
    already declined is FAILED_PRECONDITION and writes nothing; an unknown id is NOT_FOUND."""
    store, clock = harness.store, harness.clock
    available(store, "a")
    available(store, "b")
    enqueue(harness, "c1")
    enqueue(harness, "c2")
    offer = dispatch(store, "c1", "a", offer_s=30)
    before = harness.dump()
    with pytest.raises(FailedPreconditionError):
        store.accept_offer(T, offer.assignment_id, offer.token + 1)
    assert harness.dump() == before
    clock.advance(30_001)
    with pytest.raises(FailedPreconditionError):
        store.accept_offer(T, offer.assignment_id, offer.token)
    assert harness.dump() == before
    assert store.get_call(T, "c1").status == CallStatus.OFFERED
    with pytest.raises(NotFoundError):
        store.accept_offer(T, "no-such-assignment", 1)

    declined = dispatch(store, "c2", "b", offer_s=30)
    store.decline_offer(T, declined.assignment_id, declined.token, timed_out=False, policy=POLICY)
    before = harness.dump()
    with pytest.raises(FailedPreconditionError):
        store.accept_offer(T, declined.assignment_id, declined.token)
    assert harness.dump() == before


def test_reject_requeues_with_the_original_age(harness: StoreHarness) -> None:
    """Rejecting an offer ends it REJECTED, frees the slot and puts the call back in the
    queue with its original ``enqueued_ms`` (so ahead of calls that came later) and the agent
    in ``excluded_agents``; rejecting again is idempotent, timing it out instead is refused
    and writes nothing. A rejection is not a missed offer."""
    store, clock = harness.store, harness.clock
    available(store, "a")
    available(store, "b")
    t0 = clock.now_ms
    enqueue(harness, "c1")
    clock.advance(1_000)
    enqueue(harness, "c2")
    clock.advance(4_000)
    offer = dispatch(store, "c1", "a", offer_s=30)
    assert queue_ids(store) == ["c2"]
    clock.advance(3_000)
    rejected = store.decline_offer(
        T, offer.assignment_id, offer.token, timed_out=False, policy=POLICY
    )
    assert rejected == dataclasses.replace(
        offer,
        state=AssignmentState.REJECTED,
        ended_ms=clock.now_ms,
        offer_expires_ms=rejected.offer_expires_ms,
    )
    record = store.get_call(T, "c1")
    assert (record.status, record.position) == (CallStatus.QUEUED, 1)
    assert queue_ids(store) == ["c1", "c2"]
    call = waiting(store, "c1")
    assert (call.enqueued_ms, call.excluded_agents) == (t0, ("a",))
    assert held(store, "a") == ()
    agent = store.get_agent(T, "a")
    assert (agent.missed_offers, agent.presence) == (0, Presence.AVAILABLE)
    assert [(e.call_id, e.agent_id) for e in events_of(store, "REJECTED")] == [("c1", "a")]

    before = harness.dump()
    again = store.decline_offer(T, offer.assignment_id, offer.token, timed_out=False, policy=POLICY)
    assert again == rejected
    with pytest.raises(FailedPreconditionError):
        store.decline_offer(T, offer.assignment_id, offer.token, timed_out=True, policy=POLICY)
    with pytest.raises(FailedPreconditionError):
        store.decline_offer(T, offer.assignment_id, offer.token + 1, timed_out=False, policy=POLICY)
    assert harness.dump() == before

    second = dispatch(store, "c1", "b", offer_s=30)
    store.decline_offer(T, second.assignment_id, second.token, timed_out=False, policy=POLICY)
    call = waiting(store, "c1")
    assert call.enqueued_ms == t0
    assert sorted(call.excluded_agents) == ["a", "b"]


def test_a_queued_call_keeps_the_trace_of_the_request_that_queued_it(
    harness: StoreHarness,
) -> None:
    """A call queued while a request's trace is bound (the request's W3C ``traceparent``)
    keeps it: the queue view names it for the dispatcher, whose placement continues that
    trace, through an offer declined under another request's trace and back. A call queued
    outside a trace has none."""
    store = harness.store
    available(store, "a")
    queued_by = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    with tracing.continuing(queued_by):
        enqueue(harness, "c1")
    enqueue(harness, "c2")
    assert dict(store.load_queue(T, 10).traces) == {"c1": queued_by}
    assert dict(store.load_queue(T, 1).traces) == {"c1": queued_by}
    offer = dispatch(store, "c1", "a", offer_s=30)
    assert dict(store.load_queue(T, 10).traces) == {}
    declined_by = "0af7651916cd43dd8448eb211c80319c"
    with tracing.continuing(f"00-{declined_by}-b7ad6b7169203331-01"):
        store.decline_offer(T, offer.assignment_id, offer.token, timed_out=False, policy=POLICY)
    assert dict(store.load_queue(T, 10).traces) == {"c1": queued_by}
    assert dict(store.call_traces(T, ["c1", "c2", "unknown"])) == {"c1": queued_by}
    assert dict(store.call_traces(T, [])) == {}
    queued = events_of(store, "QUEUED", "c1")  # each by the request that wrote it
    assert [e.data["trace_id"] for e in queued] == [queued_by[3:35], declined_by]


def test_background_work_on_a_call_continues_the_trace_it_kept(harness: StoreHarness) -> None:
    """With no request being served (the dispatcher's offer time-outs and reclaims), the
    events written about a call carry the trace the call kept: the time-out, the call's
    return to the queue, the agent's NOT_RESPONDING it caused, a reclaim. A request's own
    trace still wins, and a call that kept none gets none; an agent's Reject is a request,
    not background work: without its own trace its events carry none."""
    store = harness.store
    for agent_id in ("a", "b", "c", "d", "e"):
        available(store, agent_id)
    policy = dataclasses.replace(POLICY, max_missed_offers=1)
    queued_by = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    trace_id = queued_by[3:35]
    with tracing.continuing(queued_by):
        enqueue(harness, "c1")
    enqueue(harness, "c2")

    def traces_since(mark: str) -> list[tuple[str, str, str | None]]:
        return [(e.type, e.call_id, e.data.get("trace_id")) for e in store.read_events(T, mark)]

    mark = all_events(store)[-1].event_id
    first = dispatch(store, "c1", "a", offer_s=30)
    other = dispatch(store, "c2", "b", offer_s=30)
    for offer in (first, other):
        store.decline_offer(T, offer.assignment_id, offer.token, timed_out=True, policy=policy)
    assert traces_since(mark)[2:] == [
        ("OFFER_TIMED_OUT", "c1", trace_id),
        ("QUEUED", "c1", trace_id),
        ("PRESENCE_CHANGED", "", trace_id),  # "a" missed its one allowed offer: c1's doing
        ("OFFER_TIMED_OUT", "c2", None),
        ("QUEUED", "c2", None),
        ("PRESENCE_CHANGED", "", None),
    ]
    assert [e.data.get("trace_id") for e in store.call_timeline(T, "c1")][-2:] == [
        trace_id,
        trace_id,
    ]

    mark = all_events(store)[-1].event_id
    offer = dispatch(store, "c1", "e", offer_s=30)
    store.decline_offer(T, offer.assignment_id, offer.token, timed_out=False, policy=policy)
    assert traces_since(mark)[1:] == [("REJECTED", "c1", None), ("QUEUED", "c1", None)]

    mark = all_events(store)[-1].event_id
    offer = dispatch(store, "c1", "c", offer_s=30)
    store.reclaim(T, "c", channels=frozenset(), policy=policy)
    assert traces_since(mark)[1:] == [("RECLAIMED", "c1", trace_id), ("QUEUED", "c1", trace_id)]

    mark = all_events(store)[-1].event_id
    offer = dispatch(store, "c1", "d", offer_s=30)
    reclaimed_by = "0af7651916cd43dd8448eb211c80319c"
    with tracing.continuing(f"00-{reclaimed_by}-b7ad6b7169203331-01"):
        store.reclaim(T, "d", channels=frozenset(), policy=policy)
    assert traces_since(mark)[1:] == [
        ("RECLAIMED", "c1", reclaimed_by),
        ("QUEUED", "c1", reclaimed_by),
    ]
    assert offer.call_id == "c1"
    assert dict(store.load_queue(T, 10).traces) == {"c1": queued_by}


def test_expired_offers_appear_once_the_clock_passes_expiry(harness: StoreHarness) -> None:
    """``expired_offers`` lists an OFFERED assignment only after store time passes its
    expiry, oldest first, at most ``limit``; an accepted offer is never listed."""
    store, clock = harness.store, harness.clock
    for agent_id in ("a", "b", "c"):
        available(store, agent_id)
    for call_id in ("c1", "c2", "c3"):
        enqueue(harness, call_id)
    first = dispatch(store, "c1", "a", offer_s=10)
    clock.advance(2_000)
    second = dispatch(store, "c2", "b", offer_s=10)
    accepted = dispatch(store, "c3", "c", offer_s=10)
    store.accept_offer(T, accepted.assignment_id, accepted.token)
    clock.advance(7_999)  # 1 ms before the first expiry
    assert store.expired_offers(T) == []
    clock.advance(2)
    assert store.expired_offers(T) == [first]
    clock.advance(2_000)
    assert store.expired_offers(T) == [first, second]
    assert store.expired_offers(T, limit=1) == [first]
    store.decline_offer(T, first.assignment_id, first.token, timed_out=True, policy=POLICY)
    assert store.expired_offers(T) == [second]


def test_a_wake_up_pass_opens_while_calls_wait_or_an_offer_has_expired(
    harness: StoreHarness,
) -> None:
    """``open_pass`` without a tick (a dispatcher wake-up) takes the lease exactly while a
    call waits or an offer's expiry has passed; otherwise it answers IDLE and writes
    nothing."""
    store, clock = harness.store, harness.clock
    available(store, "a")

    def wake() -> PassGrant:
        before = harness.dump()
        grant = store.open_pass(T, "A", 1_000, 0)
        if grant is PassGrant.IDLE:
            assert harness.dump() == before
        else:
            assert store.acquire_lease(T, "B", 1_000) is False  # "A" holds it
            store.release_lease(T, "A")
        return grant

    assert wake() is PassGrant.IDLE
    assert store.open_pass("other", "A", 1_000, 0) is PassGrant.IDLE
    enqueue(harness, "c1")
    assert wake() is PassGrant.WAKE
    offer = dispatch(store, "c1", "a", offer_s=10)
    assert wake() is PassGrant.IDLE  # the only call is offered, not yet expired
    clock.advance(9_999)
    assert wake() is PassGrant.IDLE
    clock.advance(1)
    assert wake() is PassGrant.WAKE
    store.decline_offer(T, offer.assignment_id, offer.token, timed_out=True, policy=POLICY)
    assert wake() is PassGrant.WAKE  # the call waits again
    store.cancel_call(T, "c1")
    assert wake() is PassGrant.IDLE


def test_the_queue_view_says_when_an_offer_has_expired(harness: StoreHarness) -> None:
    """``load_queue``'s ``offers_due`` is true exactly from an offer's expiry on, until it
    is timed out (what tells a dispatcher pass to call ``expired_offers``)."""
    store, clock = harness.store, harness.clock
    available(store, "a")
    available(store, "b")
    enqueue(harness, "c1")
    enqueue(harness, "c2")
    assert not store.load_queue(T, 10).offers_due
    first = dispatch(store, "c1", "a", offer_s=10)
    clock.advance(1_000)
    dispatch(store, "c2", "b", offer_s=10)
    clock.advance(8_999)
    assert not store.load_queue(T, 10).offers_due
    clock.advance(1)
    assert store.load_queue(T, 10).offers_due
    store.decline_offer(T, first.assignment_id, first.token, timed_out=True, policy=POLICY)
    assert not store.load_queue(T, 10).offers_due  # the other expires 1 s later
    clock.advance(1_000)
    assert store.load_queue(T, 10).offers_due


def test_an_offer_is_either_acceptable_or_expired(harness: StoreHarness) -> None:
    """At every instant an offer is exactly one of: acceptable, or listed by
    ``expired_offers``. 1 ms before its expiry it is accepted; from its expiry on it is
    listed and an accept is refused, writing nothing."""
    store, clock = harness.store, harness.clock
    available(store, "a")
    available(store, "b")
    enqueue(harness, "c1")
    enqueue(harness, "c2")
    early = dispatch(store, "c1", "a", offer_s=10)
    late = dispatch(store, "c2", "b", offer_s=10)
    clock.advance(9_999)
    assert store.expired_offers(T) == []
    assert store.accept_offer(T, early.assignment_id, early.token).state == AssignmentState.ACTIVE
    clock.advance(1)  # exactly at the expiry
    assert store.expired_offers(T) == [late]
    before = harness.dump()
    with pytest.raises(FailedPreconditionError):
        store.accept_offer(T, late.assignment_id, late.token)
    assert harness.dump() == before


def test_missed_offers_make_the_agent_not_responding(harness: StoreHarness) -> None:
    """Each timed-out offer ends TIMED_OUT, requeues the call with the agent excluded and
    counts a missed offer; at ``policy.max_missed_offers`` (3) the agent becomes
    NOT_RESPONDING with a presence event. Setting AVAILABLE again resets the count."""
    store, clock = harness.store, harness.clock
    available(store, "a")
    for call_id in ("c1", "c2", "c3"):
        enqueue(harness, call_id)
    for n, call_id in enumerate(("c1", "c2", "c3"), start=1):
        offer = dispatch(store, call_id, "a", offer_s=10)
        clock.advance(10_001)
        assert store.expired_offers(T) == [offer]
        missed = store.decline_offer(
            T, offer.assignment_id, offer.token, timed_out=True, policy=POLICY
        )
        assert (missed.state, missed.ended_ms) == (AssignmentState.TIMED_OUT, clock.now_ms)
        assert store.expired_offers(T) == []
        assert waiting(store, call_id).excluded_agents == ("a",)
        agent = store.get_agent(T, "a")
        expected = Presence.NOT_RESPONDING if n == 3 else Presence.AVAILABLE
        assert (agent.missed_offers, agent.presence) == (n, expected)
    assert queue_ids(store) == ["c1", "c2", "c3"]
    for call_id in ("c1", "c2", "c3"):
        timeline = store.call_timeline(T, call_id)
        kinds = [e.type for e in timeline]
        assert kinds[:2] + kinds[3:] == ["QUEUED", "OFFERED", "QUEUED"]
        assert "TIMED_OUT" in kinds[2]  # the timeout's own event (its name is not "REJECTED")
        assert timeline[2].agent_id == "a"
    changes = [
        dict(e.data)["presence"] for e in events_of(store, "PRESENCE_CHANGED") if e.agent_id == "a"
    ]
    assert changes == ["available", "not_responding"]

    enqueue(harness, "c4")  # a call "a" has not missed
    stuck = store.get_agent(T, "a")
    before = harness.dump()
    refused = store.commit_assignment(T, dispatch_claim(waiting(store, "c4"), "a", stuck.seq))
    assert refused == Conflict("agent is not_responding")
    assert harness.dump() == before

    back = store.set_presence(T, "a", Presence.AVAILABLE)
    assert (back.presence, back.missed_offers) == (Presence.AVAILABLE, 0)
    assert store.get_agent(T, "a").missed_offers == 0


def test_a_time_out_not_counted_as_missed(harness: StoreHarness) -> None:
    """An offer timed out with ``count_missed=False`` (the store was unavailable lately:
    the agent's answer may have failed with it) ends TIMED_OUT and requeues the call as
    any time-out, but counts no missed offer: the agent stays AVAILABLE at the limit."""
    store, clock = harness.store, harness.clock
    available(store, "a")
    enqueue(harness, "c1")
    offer = dispatch(store, "c1", "a", offer_s=10)
    clock.advance(10_001)
    policy = dataclasses.replace(POLICY, max_missed_offers=1)
    ended = store.decline_offer(
        T, offer.assignment_id, offer.token, timed_out=True, policy=policy, count_missed=False
    )
    assert ended.state == AssignmentState.TIMED_OUT
    assert waiting(store, "c1").excluded_agents == ("a",)
    agent = store.get_agent(T, "a")
    assert (agent.missed_offers, agent.presence) == (0, Presence.AVAILABLE)
    assert events_of(store, "PRESENCE_CHANGED")[-1].data["presence"] == "available"


_LEAVINGS = ["offline", "heartbeat", "absence", "shift"]


@pytest.mark.parametrize("leaving", _LEAVINGS)
def test_an_agent_who_left_cannot_accept_an_offer(harness: StoreHarness, leaving: str) -> None:
    """An offer made to an agent who then left (offline, a lapsed heartbeat, a scheduled
    absence starting, their shift's end) cannot be accepted: FAILED_PRECONDITION naming
    why, nothing written (the dispatcher takes the offer back); back at their desk, they
    can accept it."""
    store, clock = harness.store, harness.clock
    available(store, "a")
    enqueue(harness, "c1")
    offer = dispatch(store, "c1", "a", offer_s=600)
    clock.advance(1_000)
    policy = dataclasses.replace(POLICY, heartbeat_timeout_s=5)
    now = clock.now_ms
    if leaving == "offline":
        store.set_presence(T, "a", Presence.OFFLINE)
    elif leaving == "heartbeat":
        clock.advance(5_001)
    else:
        away = Absence("sick", AbsenceKind.SICK_LEAVE, now, now + 3_600_000)
        store.update_agent(
            T,
            "a",
            lambda p: (
                dataclasses.replace(p, absences=(away,))
                if leaving == "absence"
                else dataclasses.replace(p, shift_end_ms=now)
            ),
        )
    before = harness.dump()
    reason = {"offline": "offline", "heartbeat": "heartbeat", "absence": "absence"}
    with pytest.raises(FailedPreconditionError, match=reason.get(leaving, "shift")):
        store.accept_offer(T, offer.assignment_id, offer.token, policy=policy)
    assert harness.dump() == before
    store.update_agent(T, "a", lambda p: dataclasses.replace(p, absences=(), shift_end_ms=0))
    store.set_presence(T, "a", Presence.AVAILABLE)  # back, with a heartbeat
    accepted = store.accept_offer(T, offer.assignment_id, offer.token, policy=policy)
    assert accepted.state == AssignmentState.ACTIVE


def test_a_commit_after_the_claims_latest_time_is_refused(harness: StoreHarness) -> None:
    """A claim names the latest time its commit may happen (the agent's next absence or
    shift end less the work's length): a commit after it (a slow pass) is a conflict
    ('agent leaving') and writes nothing; at it, the commit is made."""
    store, clock = harness.store, harness.clock
    available(store, "a")
    enqueue(harness, "c1")
    seq = store.get_agent(T, "a").seq
    late = dataclasses.replace(
        dispatch_claim(waiting(store, "c1"), "a", seq), until_ms=clock.now_ms - 1
    )
    before = harness.dump()
    assert store.commit_assignment(T, late) == Conflict("agent leaving")
    assert harness.dump() == before
    in_time = dataclasses.replace(late, until_ms=clock.now_ms)
    assert isinstance(store.commit_assignment(T, in_time), Committed)


def test_an_offer_accepted_past_the_sla_target_flags_the_breach(harness: StoreHarness) -> None:
    """A call that passes its SLA target while offered (the dispatcher flags waiting calls
    only) is flagged breached when the offer is accepted: SLA_BREACHED, then ACCEPTED, the
    call's flag, the breach counter; an accepted offer within the target flags nothing."""
    store, clock = harness.store, harness.clock
    policy = dataclasses.replace(POLICY, sla=frozen_map({Channel.CHAT: SlaTarget(2)}))
    available(store, "a")
    for call_id in ("late", "quick"):
        enqueue(harness, call_id)
    late = dispatch(store, "late", "a", offer_s=30)
    quick = dispatch(store, "quick", "a", offer_s=30)
    clock.advance(1_000)
    store.accept_offer(T, quick.assignment_id, quick.token, policy=policy)
    breaches = sample("router_sla_events_total", tenant=T, kind="breached")
    clock.advance(3_500)
    store.accept_offer(T, late.assignment_id, late.token, policy=policy)
    store.accept_offer(T, late.assignment_id, late.token, policy=policy)  # a retry
    assert [e.type for e in store.call_timeline(T, "late")][-2:] == ["SLA_BREACHED", "ACCEPTED"]
    assert dict(events_of(store, "SLA_BREACHED")[-1].data) == {
        "group": policy.escalation_group,
        "channel": "chat",
    }
    assert store.get_call(T, "late").sla_breached
    assert not store.get_call(T, "quick").sla_breached
    assert "SLA_BREACHED" not in [e.type for e in store.call_timeline(T, "quick")]
    assert sample("router_sla_events_total", tenant=T, kind="breached") == breaches + 1


def test_a_call_and_its_timeline_are_read_as_of_one_moment(harness: StoreHarness) -> None:
    """``call_with_timeline`` while another thread assigns and releases the call over and
    over (a bounded 150 rounds): the status always matches the timeline's last event and
    the assignment it names; unknown calls are NOT_FOUND. A read that finds the call
    changed between each of its tries may give up (``ContentionError``, ABORTED: retry),
    never answer a mix."""
    store = harness.store
    for n in range(150):  # one per round: an agent who released the call is not given it
        available(store, f"a{n}")
    enqueue(harness, "c1")
    stop = threading.Event()

    def churn() -> None:
        for n in range(150):
            if stop.is_set():
                return
            asg = dispatch(store, "c1", f"a{n}")
            store.finish_assignment(
                T, asg.assignment_id, asg.token, AssignmentState.RELEASED, policy=POLICY
            )

    worker = threading.Thread(target=churn)
    worker.start()
    try:
        last = {CallStatus.QUEUED: "QUEUED", CallStatus.ASSIGNED: "ASSIGNED"}
        answered = 0
        while worker.is_alive() or not answered:
            try:
                record, timeline = store.call_with_timeline(T, "c1")
            except ContentionError:
                continue
            answered += 1
            assert timeline[-1].type == last[record.status], (record.status, timeline[-1])
            if record.status == CallStatus.ASSIGNED:
                assert record.assignment is not None
                assert timeline[-1].data["assignment_id"] == record.assignment.assignment_id
    finally:
        stop.set()
        worker.join(10)
    with pytest.raises(NotFoundError):
        store.call_with_timeline(T, "unknown")


@pytest.mark.parametrize("why", ["grace", "no_reclaim"])
def test_an_offer_nobody_takes_back_can_be_accepted(harness: StoreHarness, why: str) -> None:
    """Accept refuses an agent who left only when the dispatcher would take the offer back:
    a lapsed heartbeat within the grace after an outage (``heartbeat_grace``), or any
    leaving under a policy that leaves work with agents (``reclaim_on_absence`` off), is
    accepted, so the offer does not just run out as a missed one."""
    store, clock = harness.store, harness.clock
    available(store, "a")
    enqueue(harness, "c1")
    offer = dispatch(store, "c1", "a", offer_s=600)
    policy = dataclasses.replace(POLICY, heartbeat_timeout_s=5)
    clock.advance(5_001)  # the heartbeat lapsed
    if why == "no_reclaim":
        store.set_presence(T, "a", Presence.OFFLINE)
        policy = dataclasses.replace(policy, reclaim_on_absence=False)
    grace = why == "grace"
    accepted = store.accept_offer(
        T, offer.assignment_id, offer.token, policy=policy, heartbeat_grace=grace
    )
    assert accepted.state == AssignmentState.ACTIVE


def test_an_offer_stands_when_the_agent_loses_the_skill(harness: StoreHarness) -> None:
    """A profile change counts from the next routing decision: an offer made before the
    call's skill was taken from the agent can still be accepted, and the dispatcher does
    not take it back (``must_reclaim``: only an agent who left)."""
    store, clock = harness.store, harness.clock
    available(store, "a")
    enqueue(harness, "c1")
    offer = dispatch(store, "c1", "a", offer_s=600)
    store.update_agent(T, "a", lambda p: dataclasses.replace(p, skills={}, languages=frozenset()))
    clock.advance(1_000)
    agent = store.get_agent(T, "a")
    assert not agent.profile.skills
    assert not must_reclaim(agent, clock.now_ms, POLICY)
    accepted = store.accept_offer(T, offer.assignment_id, offer.token, policy=POLICY)
    assert accepted.state == AssignmentState.ACTIVE


def test_completions_per_channel_over_the_rate_window(harness: StoreHarness) -> None:
    """``completions`` counts completed work per channel since a time within the rate
    window (the service rate's input, read without the history): releases and cancels do
    not count; 15 minutes on, none does."""
    store, clock = harness.store, harness.clock
    for agent_id in ("a", "b", "c"):
        available(store, agent_id)
    for call_id in ("c1", "c2", "c3"):
        enqueue(harness, call_id)
    ends = [AssignmentState.COMPLETED, AssignmentState.COMPLETED, AssignmentState.RELEASED]
    for call_id, agent_id, end in zip(("c1", "c2", "c3"), ("a", "b", "c"), ends, strict=True):
        asg = dispatch(store, call_id, agent_id)
        clock.advance(1_000)
        store.finish_assignment(T, asg.assignment_id, asg.token, end, policy=POLICY)
    since = clock.now_ms - RATE_WINDOW_MS
    assert dict(store.completions(T, since)) == {
        ch: 2 if ch == Channel.CHAT else 0 for ch in Channel
    }
    assert store.completions(T, clock.now_ms - 1_500)[Channel.CHAT] == 1  # the last one only
    clock.advance(RATE_WINDOW_MS)
    assert sum(store.completions(T, clock.now_ms - RATE_WINDOW_MS).values()) == 0


def test_an_assignment_never_offered_cannot_be_accepted(harness: StoreHarness) -> None:
    """Accept of an assignment made directly (no offer) is FAILED_PRECONDITION, not an
    accepted offer's idempotent answer; nothing written."""
    store = harness.store
    available(store, "a")
    enqueue(harness, "c1")
    direct = dispatch(store, "c1", "a")
    before = harness.dump()
    with pytest.raises(FailedPreconditionError, match="was not an offer"):
        store.accept_offer(T, direct.assignment_id, direct.token)
    assert harness.dump() == before


def test_accept_resets_missed_offers(harness: StoreHarness) -> None:
    """Missed offers count in a row: an accepted offer sets the count back to 0."""
    store, clock = harness.store, harness.clock
    available(store, "a")
    enqueue(harness, "c1")
    enqueue(harness, "c2")
    offer = dispatch(store, "c1", "a", offer_s=10)
    clock.advance(10_001)
    store.decline_offer(T, offer.assignment_id, offer.token, timed_out=True, policy=POLICY)
    assert store.get_agent(T, "a").missed_offers == 1
    taken = dispatch(store, "c2", "a", offer_s=10)
    store.accept_offer(T, taken.assignment_id, taken.token)
    assert store.get_agent(T, "a").missed_offers == 0


# --- wrap-up, release, reclaim ---------------------------------------------------------------


def test_wrap_up_holds_the_slot_until_it_ends(harness: StoreHarness) -> None:
    """Completing with ``wrap_up_s`` keeps the agent's slot taken (the work shows
    ``wrap_until_ms``) until store time reaches it, then the slot is free without any write;
    a ``completed`` entry records the handle time and the call is COMPLETED."""
    store, clock = harness.store, harness.clock
    available(store, "a")
    enqueue(harness, "c1")
    asg = dispatch(store, "c1", "a")
    t1 = clock.now_ms
    clock.advance(120_000)
    done = store.finish_assignment(
        T, asg.assignment_id, asg.token, AssignmentState.COMPLETED, wrap_up_s=30, policy=POLICY
    )
    t2 = clock.now_ms
    assert (done.assignment.state, done.assignment.ended_ms) == (AssignmentState.COMPLETED, t2)
    assert done.calls_waiting == 0
    assert held(store, "a") == (
        ActiveWork(asg.assignment_id, Channel.CHAT, 25, t1, wrap_until_ms=t2 + 30_000),
    )
    assert store.get_call(T, "c1").status == CallStatus.COMPLETED
    completed = [h for h in store.history(T, 0) if h.kind == "completed"]
    assert completed == [HistoryEntry("completed", Channel.CHAT, t2, 120_000, "c1")]
    clock.advance(29_999)
    assert [w.assignment_id for w in held(store, "a")] == [asg.assignment_id]
    clock.advance(1)
    assert held(store, "a") == ()


def test_channel_terms_apply_the_assignments_channel(harness: StoreHarness) -> None:
    """Given every channel's terms, finishing takes those of the assignment's channel (chat
    here): its outcome value is folded in and its wrap-up holds the slot, so ``Complete``
    need not read the assignment first. A non-finite value on any channel is refused with
    nothing written."""
    store, clock = harness.store, harness.clock
    available(store, "a")
    enqueue(harness, "c1")
    asg = dispatch(store, "c1", "a")
    clock.advance(60_000)
    terms = {Channel.VOICE: (0.0, 0), Channel.CHAT: (1.0, 30), Channel.EMAIL: (None, 5)}
    before = harness.dump()
    with pytest.raises(InvalidArgumentError):
        store.finish_assignment(
            T,
            asg.assignment_id,
            asg.token,
            AssignmentState.COMPLETED,
            channel_terms={**terms, Channel.WHATSAPP: (float("nan"), 0)},
        )
    assert harness.dump() == before
    store.finish_assignment(
        T, asg.assignment_id, asg.token, AssignmentState.COMPLETED, channel_terms=terms
    )
    t2 = clock.now_ms
    assert [w.wrap_until_ms for w in held(store, "a")] == [t2 + 30_000]
    performance = store.get_agent(T, "a").performance
    assert (performance.weighted_sum, performance.weight) == (1.0, 1.0)


def test_a_stale_policy_tag_writes_nothing(harness: StoreHarness) -> None:
    """``known_policy``'s tag names the policy read: once the policy changes, finishing with
    the old tag is refused (``PolicyChangedError``) with nothing written; the fresh tag
    works, and an assignment already ended answers as before whatever the tag."""
    store = harness.store
    available(store, "a")
    enqueue(harness, "c1")
    asg = dispatch(store, "c1", "a")
    old = store.known_policy(T)
    assert store.known_policy(T) == old  # no change, same tag
    store.put_policy(T, dataclasses.replace(POLICY, wrap_up_s=frozen_map({Channel.CHAT: 10})))
    before = harness.dump()
    with pytest.raises(PolicyChangedError):
        store.finish_assignment(
            T, asg.assignment_id, asg.token, AssignmentState.COMPLETED, policy_tag=old.tag
        )
    assert harness.dump() == before
    fresh = store.known_policy(T, fresh=True)
    assert fresh.tag != old.tag
    assert fresh.policy.wrap_up_s == {Channel.CHAT: 10}
    done = store.finish_assignment(
        T, asg.assignment_id, asg.token, AssignmentState.COMPLETED, policy_tag=fresh.tag
    )
    again = store.finish_assignment(
        T, asg.assignment_id, asg.token, AssignmentState.COMPLETED, policy_tag=old.tag
    )
    assert again.assignment == done.assignment


def test_accepting_with_a_stale_policy_tag_writes_nothing(harness: StoreHarness) -> None:
    """Accept under a policy that changed since its tag was read is refused
    (``PolicyChangedError``) with nothing written; with the fresh tag the offer is taken."""
    store = harness.store
    available(store, "a")
    enqueue(harness, "c1")
    offer = dispatch(store, "c1", "a", offer_s=60)
    assert offer.state == AssignmentState.OFFERED
    old = store.known_policy(T)
    store.put_policy(T, dataclasses.replace(old.policy, max_queue=50))
    before = harness.dump()
    with pytest.raises(PolicyChangedError):
        store.accept_offer(
            T, offer.assignment_id, offer.token, policy=old.policy, policy_tag=old.tag
        )
    assert harness.dump() == before
    fresh = store.known_policy(T, fresh=True)
    accepted = store.accept_offer(
        T, offer.assignment_id, offer.token, policy=fresh.policy, policy_tag=fresh.tag
    )
    assert accepted.state == AssignmentState.ACTIVE


def test_release_requeues_with_the_original_age(harness: StoreHarness) -> None:
    """An agent releasing unfinished work frees the slot; the call goes back to the queue
    with its original ``enqueued_ms`` (ahead of later calls) and the agent excluded."""
    store, clock = harness.store, harness.clock
    available(store, "a")
    t0 = clock.now_ms
    enqueue(harness, "c1")
    clock.advance(1_000)
    enqueue(harness, "c2")
    clock.advance(4_000)
    asg = dispatch(store, "c1", "a")
    clock.advance(60_000)
    released = store.finish_assignment(
        T, asg.assignment_id, asg.token, AssignmentState.RELEASED, policy=POLICY
    )
    ended = released.assignment
    assert (ended.state, ended.ended_ms) == (AssignmentState.RELEASED, clock.now_ms)
    assert released.calls_waiting == 2  # c1 back in the queue, and c2
    record = store.get_call(T, "c1")
    assert (record.status, record.position) == (CallStatus.QUEUED, 1)
    assert queue_ids(store) == ["c1", "c2"]
    call = waiting(store, "c1")
    assert (call.enqueued_ms, call.excluded_agents) == (t0, ("a",))
    assert held(store, "a") == ()
    assert [(e.call_id, e.agent_id) for e in events_of(store, "RELEASED")] == [("c1", "a")]


def test_reclaim_takes_back_offers_and_movable_work(harness: StoreHarness) -> None:
    """When an agent leaves, ``reclaim`` ends their offer and their active work on the given
    channels as RECLAIMED and requeues those calls (original age, agent excluded), with a
    ``RECLAIMED`` event each; work on other channels stays. A second reclaim moves nothing
    and writes nothing."""
    store, clock = harness.store, harness.clock
    available(store, "a")
    t0 = clock.now_ms
    enqueue(harness, "email", channel=Channel.EMAIL)
    clock.advance(1_000)
    enqueue(harness, "voice", channel=Channel.VOICE)
    clock.advance(1_000)
    enqueue(harness, "chat")
    clock.advance(1_000)
    email = dispatch(store, "email", "a", units=20)
    voice = dispatch(store, "voice", "a", units=50)
    offer = dispatch(store, "chat", "a", offer_s=60)
    clock.advance(5_000)

    moved = store.reclaim(T, "a", channels=frozenset({Channel.EMAIL}), policy=POLICY)
    assert sorted((m.call_id, m.assignment_id, m.state, m.ended_ms) for m in moved) == [
        ("chat", offer.assignment_id, AssignmentState.RECLAIMED, clock.now_ms),
        ("email", email.assignment_id, AssignmentState.RECLAIMED, clock.now_ms),
    ]
    assert [w.assignment_id for w in held(store, "a")] == [voice.assignment_id]
    assert store.get_call(T, "voice").status == CallStatus.ASSIGNED
    assert queue_ids(store) == ["email", "chat"]
    assert [(c.enqueued_ms, c.excluded_agents) for c in store.load_queue(T, 10).calls] == [
        (t0, ("a",)),
        (t0 + 2_000, ("a",)),
    ]
    assert sorted(e.call_id for e in events_of(store, "RECLAIMED")) == ["chat", "email"]

    before = harness.dump()
    assert store.reclaim(T, "a", channels=frozenset({Channel.EMAIL}), policy=POLICY) == []
    assert harness.dump() == before


def test_a_reclaim_moves_nothing_once_the_agent_changed_since_it_was_seen(
    harness: StoreHarness,
) -> None:
    """``reclaim`` with ``seen`` (the agent as the caller's read showed it gone) moves nothing
    and writes nothing once the agent changed since: back to available, a heartbeat, new
    work. On the agent as last seen it takes the work back."""
    store, clock = harness.store, harness.clock
    available(store, "a")
    enqueue(harness, "email", channel=Channel.EMAIL)
    enqueue(harness, "later", channel=Channel.EMAIL)
    email = dispatch(store, "email", "a", units=20)
    emails = frozenset({Channel.EMAIL})

    def seen() -> AgentSnapshot:
        (agent,) = [a for a in store.load_snapshot(T, PROBE).agents if a.agent_id == "a"]
        return agent

    store.set_presence(T, "a", Presence.OFFLINE)
    clock.advance(1_000)
    gone = seen()
    store.set_presence(T, "a", Presence.AVAILABLE)  # back before the reclaim runs
    before = harness.dump()
    assert store.reclaim(T, "a", channels=emails, policy=POLICY, seen=gone) == []
    assert harness.dump() == before

    store.set_presence(T, "a", Presence.OFFLINE)
    gone = seen()
    clock.advance(1_000)
    store.heartbeat(T, "a")
    before = harness.dump()
    assert store.reclaim(T, "a", channels=emails, policy=POLICY, seen=gone) == []
    assert harness.dump() == before

    gone = seen()
    store.set_presence(T, "a", Presence.AVAILABLE)
    dispatch(store, "later", "a", units=20)  # work that came after the read
    store.set_presence(T, "a", Presence.OFFLINE)
    before = harness.dump()
    assert store.reclaim(T, "a", channels=emails, policy=POLICY, seen=gone) == []
    assert harness.dump() == before

    moved = store.reclaim(T, "a", channels=emails, policy=POLICY, seen=seen())
    assert sorted(m.call_id for m in moved) == ["email", "later"]
    assert email.assignment_id in {m.assignment_id for m in moved}


# --- cancel ----------------------------------------------------------------------------------


def test_cancel_a_queued_call_abandons_it(harness: StoreHarness) -> None:
    """A caller hanging up while queued: the call is ABANDONED and off the queue (the others
    move up), an ``abandoned`` entry records how long they waited, and so does the abandoned
    wait histogram (once); cancelling again returns the same record and writes nothing."""
    store, clock = harness.store, harness.clock
    within_5, within_10 = abandoned("5.0"), abandoned("10.0")
    t0 = clock.now_ms
    enqueue(harness, "c1")
    clock.advance(1)
    enqueue(harness, "c2")
    clock.advance(6_999)
    record = store.cancel_call(T, "c1")
    now = clock.now_ms
    assert (record.status, record.position, record.assignment, record.updated_ms) == (
        CallStatus.ABANDONED,
        0,
        None,
        now,
    )
    assert queue_ids(store) == ["c2"]
    assert store.load_queue(T, 10).depth == 1
    assert store.get_call(T, "c2").position == 1
    assert store.history(T, 0) == [HistoryEntry("abandoned", Channel.CHAT, now, now - t0, "c1")]
    assert (abandoned("5.0"), abandoned("10.0")) == (within_5, within_10 + 1)  # after 7 s
    clock.advance(1_000)
    before = harness.dump()
    assert store.cancel_call(T, "c1") == record
    assert harness.dump() == before
    assert store.get_call(T, "c1") == record
    assert abandoned("10.0") == within_10 + 1


def test_cancel_an_offered_call_abandons_it(harness: StoreHarness) -> None:
    """A caller hanging up during an offer: the call is ABANDONED, the offer ends CANCELLED,
    the agent's slot is free and an ``abandoned`` entry records the wait; idempotent."""
    store, clock = harness.store, harness.clock
    available(store, "a")
    t0, within_5 = clock.now_ms, abandoned("5.0")
    enqueue(harness, "c1")
    clock.advance(3_000)
    offer = dispatch(store, "c1", "a", offer_s=30)
    clock.advance(2_000)
    record = store.cancel_call(T, "c1")
    now = clock.now_ms
    assert record.status == CallStatus.ABANDONED
    assert record.assignment is not None
    assert (record.assignment.assignment_id, record.assignment.state) == (
        offer.assignment_id,
        AssignmentState.CANCELLED,
    )
    assert record.assignment.ended_ms == now
    assert held(store, "a") == ()
    assert store.expired_offers(T) == []
    assert store.history(T, 0) == [HistoryEntry("abandoned", Channel.CHAT, now, now - t0, "c1")]
    assert abandoned("5.0") == within_5 + 1  # after 5 s
    before = harness.dump()
    assert store.cancel_call(T, "c1") == record
    assert harness.dump() == before
    assert abandoned("5.0") == within_5 + 1
    clock.advance(30_000)
    assert store.expired_offers(T) == []


def test_cancel_an_assigned_call(harness: StoreHarness) -> None:
    """The platform withdrawing an assigned call: CANCELLED with its assignment ended
    CANCELLED and the slot free (not abandoned); idempotent. A completed call is
    FAILED_PRECONDITION and an unknown one NOT_FOUND, writing nothing."""
    store, clock = harness.store, harness.clock
    total = abandoned()
    available(store, "a")
    enqueue(harness, "c1")
    enqueue(harness, "c2")
    asg = dispatch(store, "c1", "a")
    clock.advance(10_000)
    record = store.cancel_call(T, "c1")
    assert record.status == CallStatus.CANCELLED
    assert record.assignment == dataclasses.replace(
        asg, state=AssignmentState.CANCELLED, ended_ms=clock.now_ms
    )
    assert held(store, "a") == ()
    before = harness.dump()
    assert store.cancel_call(T, "c1") == record
    assert harness.dump() == before

    done = dispatch(store, "c2", "a")
    store.finish_assignment(T, done.assignment_id, done.token, AssignmentState.COMPLETED)
    before = harness.dump()
    with pytest.raises(FailedPreconditionError):
        store.cancel_call(T, "c2")
    with pytest.raises(NotFoundError):
        store.cancel_call(T, "nope")
    assert harness.dump() == before
    assert store.get_call(T, "c2").status == CallStatus.COMPLETED
    assert abandoned() == total


# --- queue time limit ------------------------------------------------------------------------


def test_a_call_that_waited_its_limit_expires(harness: StoreHarness) -> None:
    """``expire_call`` takes a queued call that has waited the limit (from its age origin,
    which a reject keeps) off the queue as EXPIRED: an ``EXPIRED`` event naming the limit in
    its timeline, an ``expired`` history entry with the wait; the others move up. Before the
    limit, or once expired, it returns False and writes nothing; an unknown call is
    NOT_FOUND."""
    store, clock = harness.store, harness.clock
    available(store, "a")
    t0 = clock.now_ms
    enqueue(harness, "c1")
    clock.advance(1)
    enqueue(harness, "c2")
    clock.advance(10_000)
    offer = dispatch(store, "c1", "a", offer_s=30)
    store.decline_offer(T, offer.assignment_id, offer.token, timed_out=False, policy=POLICY)
    clock.advance(49_998)  # c1 has waited 59.998 s
    before = harness.dump()
    assert store.expire_call(T, "c1", max_wait_s=60, policy_version=0) is False
    assert harness.dump() == before
    clock.advance(2)
    now = clock.now_ms
    assert store.expire_call(T, "c1", max_wait_s=60, policy_version=0) is True
    record = store.get_call(T, "c1")
    assert (record.status, record.position, record.updated_ms) == (CallStatus.EXPIRED, 0, now)
    assert queue_ids(store) == ["c2"]
    assert store.load_queue(T, 10).depth == 1
    assert store.get_call(T, "c2").position == 1
    (event,) = events_of(store, "EXPIRED")
    assert (event.call_id, event.agent_id, event.data) == (
        "c1",
        "",
        {"channel": "chat", "max_wait_s": "60"},
    )
    assert store.call_timeline(T, "c1")[-1] == event
    assert store.history(T, now) == [HistoryEntry("expired", Channel.CHAT, now, now - t0, "c1")]
    before = harness.dump()
    assert store.expire_call(T, "c1", max_wait_s=60, policy_version=0) is False
    assert store.cancel_call(T, "c1") == record  # already out of the queue: left as it is
    with pytest.raises(NotFoundError):
        store.expire_call(T, "nope", max_wait_s=60, policy_version=0)
    assert harness.dump() == before


def test_the_limit_counts_again_from_an_agent_handing_the_call_back(
    harness: StoreHarness,
) -> None:
    """A call an agent held and handed back (a Release, or accepted work reclaimed) is not
    expired for the time it spent with them: the limit counts again from then (its age for
    the queue's order stays), and its ``expired`` entry records that wait. An offer that
    came back (a reject, a reclaimed offer) does not reset it."""
    store, clock = harness.store, harness.clock
    available(store, "a")
    available(store, "b")
    t0 = clock.now_ms
    enqueue(harness, "released")
    enqueue(harness, "reclaimed", channel=Channel.EMAIL)
    enqueue(harness, "rejected")
    clock.advance(5_000)
    talk = dispatch(store, "released", "a")
    dispatch(store, "reclaimed", "b", units=20)
    offer = dispatch(store, "rejected", "a", offer_s=30)
    store.decline_offer(T, offer.assignment_id, offer.token, timed_out=False, policy=POLICY)
    clock.advance(300_000)  # a five-minute conversation
    store.finish_assignment(
        T, talk.assignment_id, talk.token, AssignmentState.RELEASED, policy=POLICY
    )
    store.set_presence(T, "b", Presence.OFFLINE)
    assert [
        a.call_id for a in store.reclaim(T, "b", channels=frozenset({Channel.EMAIL}), policy=POLICY)
    ] == ["reclaimed"]
    back = clock.now_ms
    assert waiting(store, "released").enqueued_ms == t0  # still first in line by age
    assert (
        waiting(store, "released").handed_back_ms,
        waiting(store, "rejected").handed_back_ms,
    ) == (back, 0)
    expire = functools.partial(store.expire_call, T, max_wait_s=120, policy_version=0)
    assert expire("rejected") is True  # waited 305 s unanswered
    before = harness.dump()
    assert expire("released") is False
    assert expire("reclaimed") is False
    assert harness.dump() == before
    clock.advance(120_000)
    assert expire("released") is True
    assert expire("reclaimed") is True
    now = clock.now_ms
    assert [e for e in store.history(T, now) if e.kind == "expired"] == [
        HistoryEntry("expired", Channel.CHAT, now, 120_000, "released"),
        HistoryEntry("expired", Channel.EMAIL, now, 120_000, "reclaimed"),
    ]


def test_a_limit_read_from_another_policy_expires_nothing(harness: StoreHarness) -> None:
    """``expire_call`` names the policy version its limit came from: once the stored policy
    is another (the limit may have been raised or turned off), it writes nothing."""
    store, clock = harness.store, harness.clock
    enqueue(harness, "c1")
    clock.advance(61_000)
    stored = store.put_policy(T, POLICY).version
    before = harness.dump()
    assert store.expire_call(T, "c1", max_wait_s=60, policy_version=stored - 1) is False
    assert harness.dump() == before
    assert store.expire_call(T, "c1", max_wait_s=60, policy_version=stored) is True


def test_the_calls_past_their_limit_are_found_wherever_they_wait(harness: StoreHarness) -> None:
    """``due_waits``: the queued calls that have waited their channel's limit at a time,
    wherever they are in the queue, each channel's by when its wait began (its age origin,
    or when an agent handed it back): a call exactly at its limit is due, one a millisecond
    short is not; up to ``limit`` of each channel, the channels in the order asked; none on
    a channel without a limit; a call that leaves the queue (placed, cancelled, expired) is
    no longer found, one an offer brings back is again with its old start. It writes
    nothing once it has been asked."""
    store, clock = harness.store, harness.clock
    available(store, "a")
    t0 = clock.now_ms
    enqueue(harness, "c1")
    clock.advance(1_000)
    enqueue(harness, "e2", channel=Channel.EMAIL, priority=5)  # ahead of c1 in the queue
    clock.advance(1_000)
    enqueue(harness, "c3")
    enqueue(harness, "c4")
    enqueue(harness, "v5", channel=Channel.VOICE)
    talk = dispatch(store, "c1", "a")
    clock.advance(5_000)
    store.finish_assignment(
        T, talk.assignment_id, talk.token, AssignmentState.RELEASED, policy=POLICY
    )
    back = clock.now_ms  # c1 waits again from here, behind c3 and c4 by its wait's start
    limits = {Channel.CHAT: 5, Channel.EMAIL: 6, Channel.VOICE: 0}
    store.due_waits(T, limits, back, 10)
    before = harness.dump()
    c1, e2, c3, c4 = (
        Waiting("c1", Channel.CHAT, back),
        Waiting("e2", Channel.EMAIL, t0 + 1_000),
        Waiting("c3", Channel.CHAT, t0 + 2_000),
        Waiting("c4", Channel.CHAT, t0 + 2_000),
    )
    assert store.due_waits(T, limits, t0 + 6_999, 10) == []
    assert store.due_waits(T, limits, t0 + 7_000, 10) == [c3, c4, e2]
    assert store.due_waits(T, {Channel.EMAIL: 6, Channel.CHAT: 5}, t0 + 7_000, 10) == [
        e2,
        c3,
        c4,
    ]
    assert store.due_waits(T, limits, back + 5_000, 1) == [c3, e2]
    assert store.due_waits(T, limits, back + 5_000, 10) == [c3, c4, c1, e2]
    assert store.due_waits(T, {Channel.VOICE: 0}, back + 10**9, 10) == []
    assert harness.dump() == before
    store.cancel_call(T, "c3")
    dispatch(store, "e2", "a", units=20)
    offer = dispatch(store, "c4", "a", offer_s=30)
    assert store.due_waits(T, limits, back + 5_000, 10) == [c1]
    store.decline_offer(T, offer.assignment_id, offer.token, timed_out=False, policy=POLICY)
    assert store.expire_call(T, "c1", max_wait_s=5, policy_version=0) is False  # not yet
    clock.advance(5_000)
    assert store.expire_call(T, "c1", max_wait_s=5, policy_version=0) is True
    assert store.due_waits(T, limits, back + 5_000, 10) == [c4]


class _Churn:
    """Random steps through everything that moves a call in or out of the queue."""

    def __init__(self, harness: StoreHarness, rng: random.Random) -> None:
        self.harness, self.store, self.rng = harness, harness.store, rng
        self.offered: list[Assignment] = []
        self.active: list[Assignment] = []
        self.moves = [
            self.arrive,
            self.place,
            self.place,
            self.decline,
            self.accept,
            self.finish,
            self.reclaim,
            self.cancel,
            self.escalate,
            self.expire,
            self.wait,
        ]

    def step(self, n: int) -> None:
        queued = self.store.load_queue(T, 10_000).calls
        move = self.rng.choice(self.moves) if queued else self.arrive
        move(n, queued)

    def arrive(self, n: int, queued: tuple[Call, ...]) -> None:
        channel = self.rng.choice(list(Channel))
        enqueue(self.harness, f"n{n}", channel=channel, priority=self.rng.randrange(3))

    def place(self, n: int, queued: tuple[Call, ...]) -> None:
        agent_id, call = self.rng.choice(("a", "b")), self.rng.choice(queued)
        seq = self.store.get_agent(T, agent_id).seq
        claim = dispatch_claim(call, agent_id, seq, offer_s=self.rng.choice((0, 30)), units=1)
        done = self.store.commit_assignment(T, claim)
        if isinstance(done, Committed):
            (self.offered if claim.offer_timeout_s else self.active).append(done.assignment)

    def decline(self, n: int, queued: tuple[Call, ...]) -> None:
        if self.offered:
            offer = self.offered.pop(self.rng.randrange(len(self.offered)))
            timed_out = self.rng.random() < 0.5
            self.store.decline_offer(
                T, offer.assignment_id, offer.token, timed_out=timed_out, policy=POLICY
            )

    def accept(self, n: int, queued: tuple[Call, ...]) -> None:
        if self.offered:
            offer = self.offered.pop(self.rng.randrange(len(self.offered)))
            self.active.append(self.store.accept_offer(T, offer.assignment_id, offer.token))

    def finish(self, n: int, queued: tuple[Call, ...]) -> None:
        if self.active:
            work = self.active.pop(self.rng.randrange(len(self.active)))
            end = self.rng.choice((AssignmentState.RELEASED, AssignmentState.COMPLETED))
            self.store.finish_assignment(T, work.assignment_id, work.token, end, policy=POLICY)

    def reclaim(self, n: int, queued: tuple[Call, ...]) -> None:
        self.store.reclaim(T, "b", channels=frozenset(Channel), policy=POLICY)
        self._forget_ended()

    def cancel(self, n: int, queued: tuple[Call, ...]) -> None:
        held = [asg.call_id for asg in self.offered + self.active]
        self.store.cancel_call(T, self.rng.choice([call.call_id for call in queued] + held))
        self._forget_ended()

    def escalate(self, n: int, queued: tuple[Call, ...]) -> None:
        self.store.mark_sla(T, self.rng.choice(queued).call_id, breached=False, policy=POLICY)

    def expire(self, n: int, queued: tuple[Call, ...]) -> None:
        call = self.rng.choice(queued)
        self.store.expire_call(T, call.call_id, max_wait_s=2, policy_version=0)

    def wait(self, n: int, queued: tuple[Call, ...]) -> None:
        self.harness.clock.advance(self.rng.randrange(3_000))

    def _forget_ended(self) -> None:
        def state(asg: Assignment) -> AssignmentState:
            return self.store.get_assignment(T, asg.assignment_id).state

        self.offered = [asg for asg in self.offered if state(asg) == AssignmentState.OFFERED]
        self.active = [asg for asg in self.active if state(asg) == AssignmentState.ACTIVE]


def test_the_calls_found_past_their_limit_follow_the_queue_through_every_change(
    harness: StoreHarness,
) -> None:
    """600 random steps (queue, place or offer, accept, reject or time out, release,
    complete, reclaim, cancel, SLA escalation, expiry, time passing): after each,
    ``due_waits`` with every limit passed finds exactly the queued calls, each from the
    start of its wait (``limit_from_ms``); in Redis its index holds nothing else."""
    store, clock = harness.store, harness.clock
    for agent_id in ("a", "b"):
        available(store, agent_id)
    churn = _Churn(harness, random.Random(7))
    everything = dict.fromkeys(Channel, 1)
    order = {channel: i for i, channel in enumerate(everything)}  # the order asked
    for n in range(600):
        churn.step(n)
        calls = store.load_queue(T, 10_000).calls
        expected = sorted((order[c.channel], limit_from_ms(c), c.call_id) for c in calls)
        found = store.due_waits(T, everything, clock.now_ms + 10**9, 10_000)
        assert [(order[w.channel], w.since_ms, w.call_id) for w in found] == expected, n
        if harness.raw is not None:
            assert harness.raw.zcard(f"rt:v1:{{{T}}}:queue:waits") == len(calls), n


def test_only_waiting_calls_expire(harness: StoreHarness) -> None:
    """An offered, assigned or abandoned call never expires, nor does any call under a limit
    of 0: ``expire_call`` returns False and writes nothing."""
    store, clock = harness.store, harness.clock
    available(store, "a")
    available(store, "b")
    for call_id in ("offered", "assigned", "abandoned", "queued"):
        enqueue(harness, call_id)
    dispatch(store, "offered", "a", offer_s=600)
    dispatch(store, "assigned", "b")
    store.cancel_call(T, "abandoned")
    clock.advance(3_600_000)
    before = harness.dump()
    for call_id in ("offered", "assigned", "abandoned"):
        assert store.expire_call(T, call_id, max_wait_s=60, policy_version=0) is False
    assert store.expire_call(T, "queued", max_wait_s=0, policy_version=0) is False
    assert harness.dump() == before
    assert events_of(store, "EXPIRED") == []


# --- SLA flags and callbacks -----------------------------------------------------------------


def test_sla_at_risk_boosts_once(harness: StoreHarness) -> None:
    """Marking a queued call at risk (once) raises its priority by the policy's boost, capped
    at 10, moves it up the queue and appends ``SLA_AT_RISK`` naming the escalation group; a
    second mark changes and writes nothing."""
    store, clock = harness.store, harness.clock
    policy = dataclasses.replace(POLICY, escalation_group="night-supervisors")
    enqueue(harness, "c1")
    clock.advance(100_000)
    enqueue(harness, "c2")
    clock.advance(1_000)
    enqueue(harness, "urgent", priority=9)
    assert queue_ids(store) == ["urgent", "c1", "c2"]

    assert store.mark_sla(T, "c2", breached=False, policy=policy) is True
    record = store.get_call(T, "c2")
    assert (record.status, record.sla_at_risk, record.sla_breached) == (
        CallStatus.QUEUED,
        True,
        False,
    )
    assert waiting(store, "c2").priority == 2
    assert queue_ids(store) == ["urgent", "c2", "c1"]  # 100 s younger, 120 s worth of priority
    assert record.position == 2
    (event,) = events_of(store, "SLA_AT_RISK")
    assert event.call_id == "c2"
    assert "night-supervisors" in event.data.values()

    before = harness.dump()
    assert store.mark_sla(T, "c2", breached=False, policy=policy) is False
    assert harness.dump() == before

    assert store.mark_sla(T, "urgent", breached=False, policy=policy) is True
    assert waiting(store, "urgent").priority == 10


def test_sla_breached_is_flagged_once(harness: StoreHarness) -> None:
    """Marking a queued call breached flags it and appends ``SLA_BREACHED`` once; a second
    mark returns False and writes nothing."""
    store = harness.store
    enqueue(harness, "c1")
    assert store.mark_sla(T, "c1", breached=True, policy=POLICY) is True
    record = store.get_call(T, "c1")
    assert (record.status, record.sla_breached) == (CallStatus.QUEUED, True)
    assert [e.call_id for e in events_of(store, "SLA_BREACHED")] == ["c1"]
    before = harness.dump()
    assert store.mark_sla(T, "c1", breached=True, policy=POLICY) is False
    assert harness.dump() == before


def test_sla_marks_ignore_calls_that_are_not_queued(harness: StoreHarness) -> None:
    """Only waiting calls are flagged: for an assigned or abandoned call ``mark_sla``
    returns False and writes nothing."""
    store = harness.store
    available(store, "a")
    enqueue(harness, "c1")
    enqueue(harness, "c2")
    dispatch(store, "c1", "a")
    store.cancel_call(T, "c2")
    before = harness.dump()
    for call_id in ("c1", "c2"):
        for breached in (False, True):
            assert store.mark_sla(T, call_id, breached=breached, policy=POLICY) is False
    assert harness.dump() == before
    assert not store.get_call(T, "c1").sla_at_risk
    assert events_of(store, "SLA_AT_RISK") == events_of(store, "SLA_BREACHED") == []


def test_callback_request_keeps_the_place(harness: StoreHarness) -> None:
    """A queued caller asking for a callback is flagged, keeps their place and a
    ``CALLBACK_REQUESTED`` event is appended; asking again writes nothing; a call that is
    not queued is FAILED_PRECONDITION and nothing is written."""
    store, clock = harness.store, harness.clock
    available(store, "a")
    enqueue(harness, "c1")
    clock.advance(1_000)
    enqueue(harness, "c2")
    clock.advance(1_000)
    enqueue(harness, "c3")
    record = store.request_callback(T, "c2")
    assert (record.status, record.position, record.callback_requested) == (
        CallStatus.QUEUED,
        2,
        True,
    )
    assert store.get_call(T, "c2").callback_requested is True
    assert queue_ids(store) == ["c1", "c2", "c3"]
    assert [e.call_id for e in events_of(store, "CALLBACK_REQUESTED")] == ["c2"]
    before = harness.dump()
    assert store.request_callback(T, "c2") == record
    assert harness.dump() == before

    dispatch(store, "c1", "a")
    before = harness.dump()
    with pytest.raises(FailedPreconditionError):
        store.request_callback(T, "c1")
    assert harness.dump() == before


# --- timeline, history, tenants --------------------------------------------------------------


def test_call_timeline(harness: StoreHarness) -> None:
    """A call's timeline is every event of that call in order, across an offer that was
    rejected, a requeue, an assignment and the completion; no other call's events."""
    store, clock = harness.store, harness.clock
    available(store, "a")
    available(store, "b")
    enqueue(harness, "c1")
    enqueue(harness, "other")
    offer = dispatch(store, "c1", "a", offer_s=30)
    dispatch(store, "other", "a")
    clock.advance(1_000)
    store.decline_offer(T, offer.assignment_id, offer.token, timed_out=False, policy=POLICY)
    clock.advance(1_000)
    asg = dispatch(store, "c1", "b")
    clock.advance(1_000)
    store.finish_assignment(T, asg.assignment_id, asg.token, AssignmentState.COMPLETED)

    timeline = store.call_timeline(T, "c1")
    assert [e.type for e in timeline] == [
        "QUEUED",
        "OFFERED",
        "REJECTED",
        "QUEUED",
        "ASSIGNED",
        "COMPLETED",
    ]
    assert {e.call_id for e in timeline} == {"c1"}
    assert [e.agent_id for e in timeline[1:3]] == ["a", "a"]
    assert [e.agent_id for e in timeline[4:]] == ["b", "b"]
    ids = [e.event_id for e in timeline]
    assert ids == [e.event_id for e in all_events(store) if e.call_id == "c1"]
    assert [e.type for e in store.call_timeline(T, "other")] == ["QUEUED", "ASSIGNED"]


def test_history_since(harness: StoreHarness) -> None:
    """``history(since)`` returns the answered, abandoned and completed entries at or after
    ``since`` in time order, nothing earlier."""
    store, clock = harness.store, harness.clock
    available(store, "a")
    t0 = clock.now_ms
    enqueue(harness, "c1")
    enqueue(harness, "c2")
    clock.advance(1_000)
    asg = dispatch(store, "c1", "a")
    clock.advance(4_000)
    store.cancel_call(T, "c2")
    clock.advance(4_000)
    store.finish_assignment(T, asg.assignment_id, asg.token, AssignmentState.COMPLETED)
    answered = HistoryEntry("answered", Channel.CHAT, t0 + 1_000, 1_000, "c1")
    abandoned = HistoryEntry("abandoned", Channel.CHAT, t0 + 5_000, 5_000, "c2")
    completed = HistoryEntry("completed", Channel.CHAT, t0 + 9_000, 8_000, "c1")
    assert store.history(T, 0) == [answered, abandoned, completed]
    assert store.history(T, t0 + 1_000) == [answered, abandoned, completed]
    assert store.history(T, t0 + 1_001) == [abandoned, completed]
    assert store.history(T, t0 + 5_000) == [abandoned, completed]
    assert store.history(T, t0 + 9_000) == [completed]
    assert store.history(T, t0 + 9_001) == []


def test_tenants_lists_tenants_with_agents_or_calls(harness: StoreHarness) -> None:
    """``tenants`` names every tenant holding agents or calls (for the dispatcher's tick);
    tenants that were only read are not listed."""
    store = harness.store
    assert store.tenants() == []
    available(store, "a")
    enqueue(harness, "c1", tenant="beta")
    store.get_policy("gamma")
    store.load_queue("gamma", 10)
    store.read_events("gamma")
    assert sorted(store.tenants()) == [T, "beta"]


# --- leases ----------------------------------------------------------------------------------


def test_lease_is_held_by_one_owner(harness: StoreHarness) -> None:
    """The dispatcher lease: A takes it, B cannot, A extends it; once the TTL passes on the
    store clock B takes it; a release by a non-owner does nothing, by the owner frees it."""
    store, clock = harness.store, harness.clock
    assert store.acquire_lease(T, "A", 1_000) is True
    assert store.acquire_lease(T, "B", 1_000) is False
    clock.advance(800)
    assert store.acquire_lease(T, "A", 1_000) is True  # extended to 1 800
    clock.advance(800)
    assert store.acquire_lease(T, "B", 1_000) is False  # would have expired at 1 000
    clock.advance(201)
    assert store.acquire_lease(T, "B", 1_000) is True
    store.release_lease(T, "A")
    assert store.acquire_lease(T, "A", 1_000) is False
    store.release_lease(T, "B")
    assert store.acquire_lease(T, "A", 1_000) is True


def test_one_owner_keeps_the_full_pass_of_each_tick(harness: StoreHarness) -> None:
    """``open_pass`` with a tick: the first owner gets FULL and, while it renews within the
    tick, keeps it; meanwhile another owner's tick is a wake-up (IDLE, or WAKE while a call
    waits). Once the marker is ``tick_ms`` old the other owner takes it. A live lease
    answers HELD and takes no marker."""
    store, clock = harness.store, harness.clock
    available(store, "a")
    assert store.open_pass(T, "A", 1_000, 2_000) is PassGrant.FULL
    assert store.open_pass(T, "B", 1_000, 2_000) is PassGrant.HELD  # A is in its pass
    store.release_lease(T, "A")
    before = harness.dump()
    assert store.open_pass(T, "B", 1_000, 2_000) is PassGrant.IDLE
    assert harness.dump() == before
    enqueue(harness, "c1")
    assert store.open_pass(T, "B", 1_000, 2_000) is PassGrant.WAKE
    assert store.open_pass(T, "A", 1_000, 2_000) is PassGrant.HELD  # B is in its pass
    store.release_lease(T, "B")
    clock.advance(1_999)
    assert store.open_pass(T, "A", 1_000, 2_000) is PassGrant.FULL  # renewed to 3 999
    store.release_lease(T, "A")
    clock.advance(1_999)
    assert store.open_pass(T, "B", 1_000, 2_000) is PassGrant.WAKE
    store.release_lease(T, "B")
    clock.advance(1)
    assert store.open_pass(T, "B", 1_000, 2_000) is PassGrant.FULL  # A stopped ticking
    store.release_lease(T, "B")
    assert store.open_pass(T, "A", 1_000, 2_000) is PassGrant.WAKE
    store.release_lease(T, "A")
    assert store.open_pass("beta", "A", 1_000, 2_000) is PassGrant.FULL  # per tenant
    assert store.acquire_lease(T, "A", 1_000) is True  # an explicit pass takes no marker
    store.release_lease(T, "A")
    assert store.open_pass(T, "A", 1_000, 2_000) is PassGrant.WAKE


def test_many_passes_open_at_once_as_one_at_a_time(harness: StoreHarness) -> None:
    """``open_passes`` answers for each tenant what ``open_pass`` would grant: a tenant whose
    tick another owner keeps and nothing waits is IDLE (nothing written), with a call
    waiting WAKE, with a live lease HELD; the others FULL (their ticks marked); but it takes
    no lease, so another owner may still open a pass over them; a name no tenant can have is
    refused in its place alone. Bad arguments are refused before anything is written."""
    store = harness.store
    for tenant in ("idle", "waiting", "held"):
        assert store.open_pass(tenant, "B", 1_000, 2_000) is PassGrant.FULL
        store.release_lease(tenant, "B")
    enqueue(harness, "c1", tenant="waiting")
    assert store.acquire_lease("held", "B", 1_000)
    grants = store.open_passes(["idle", "waiting", "held", "new", "{bad}"], "A", 1_000, 2_000)
    assert grants[:4] == [PassGrant.IDLE, PassGrant.WAKE, PassGrant.HELD, PassGrant.FULL]
    assert isinstance(grants[4], InvalidArgumentError)
    assert grants[4].field == "tenant"
    assert store.open_pass("waiting", "B", 1_000, 0) is PassGrant.WAKE  # no lease kept it
    store.release_lease("waiting", "B")
    assert store.open_pass("new", "B", 1_000, 2_000) is PassGrant.IDLE  # A has its tick
    assert store.open_pass("new", "A", 1_000, 2_000) is PassGrant.FULL  # A opens its pass
    store.release_lease("new", "A")
    before = harness.dump()
    assert store.open_passes([], "A", 1_000, 2_000) == []
    with pytest.raises(InvalidArgumentError):
        store.open_passes(["idle", "new"], "", 1_000, 2_000)
    assert harness.dump() == before


@pytest.mark.parametrize(
    ("owner", "ttl_ms", "tick_ms", "field"),
    [("", 1_000, 0, "owner"), ("A", 0, 0, "ttl_ms"), ("A", 1_000, -1, "tick_ms")],
)
def test_open_pass_refuses_bad_arguments(
    harness: StoreHarness, owner: str, ttl_ms: int, tick_ms: int, field: str
) -> None:
    """A bad argument names its field and writes nothing."""
    before = harness.dump()
    with pytest.raises(InvalidArgumentError) as caught:
        harness.store.open_pass(T, owner, ttl_ms, tick_ms)
    assert caught.value.field == field
    assert harness.dump() == before


def test_leases_are_per_tenant(store: Store) -> None:
    """Each tenant has its own dispatcher lease."""
    assert store.acquire_lease(T, "A", 10_000) is True
    assert store.acquire_lease("beta", "B", 10_000) is True
    assert store.acquire_lease("beta", "A", 10_000) is False


# --- events ----------------------------------------------------------------------------------


def test_read_events_after_an_id(store: Store) -> None:
    """Events come strictly after ``after_id``, at most ``limit``; "$" means only new ones."""
    available(store, "a")
    store.set_presence(T, "a", Presence.BUSY)
    store.set_presence(T, "a", Presence.AVAILABLE)
    events = store.read_events(T)
    assert [e.type for e in events] == [
        "AGENT_CREATED",
        "PRESENCE_CHANGED",
        "PRESENCE_CHANGED",
        "PRESENCE_CHANGED",
    ]
    assert store.read_events(T, events[0].event_id) == events[1:]
    assert store.read_events(T, events[0].event_id, limit=2) == events[1:3]
    assert store.read_events(T, events[-1].event_id) == []
    assert store.read_events(T, "$") == []


def test_blocking_read_returns_when_an_event_arrives(store: Store) -> None:
    """A blocking read ("$", up to 2 s) returns as soon as another thread appends an event
    (50 ms later), with that event."""
    available(store, "a")
    timer = threading.Timer(0.05, lambda: store.set_presence(T, "a", Presence.BUSY))
    started = time.monotonic()
    timer.start()
    try:
        events = store.read_events(T, "$", block_ms=2_000)
    finally:
        timer.join()
    elapsed = time.monotonic() - started
    assert elapsed < 1.5
    assert [(e.type, e.agent_id, dict(e.data)["presence"]) for e in events] == [
        ("PRESENCE_CHANGED", "a", "busy")
    ]


def test_blocking_read_returns_empty_after_the_block(store: Store) -> None:
    """With nothing new, a blocking read waits ``block_ms`` and returns no events; with
    events already after ``after_id`` it returns them at once."""
    available(store, "a")
    last = store.read_events(T)[-1].event_id
    started = time.monotonic()
    assert store.read_events(T, last, block_ms=100) == []
    elapsed = time.monotonic() - started
    assert 0.05 <= elapsed < 1.0
    first = store.read_events(T)[0].event_id
    started = time.monotonic()
    assert [e.event_id for e in store.read_events(T, first, block_ms=2_000)] == [last]
    assert time.monotonic() - started < 1.0


def test_last_event_id_is_a_cursor_for_from_now(store: Store) -> None:
    """``last_event_id`` is "0-0" before any event, then the newest event's id: reading after
    it returns only what comes later."""
    assert store.last_event_id(T) == "0-0"
    available(store, "a")
    last = store.last_event_id(T)
    assert last == store.read_events(T)[-1].event_id
    assert store.read_events(T, last) == []
    store.set_presence(T, "a", Presence.BUSY)
    assert [e.type for e in store.read_events(T, last)] == ["PRESENCE_CHANGED"]


def test_get_assignment_follows_the_offer(harness: StoreHarness) -> None:
    """``get_assignment`` returns the assignment as stored through offer, accept and
    completion; an unknown id is NOT_FOUND."""
    store, clock = harness.store, harness.clock
    available(store, "a")
    enqueue(harness, "c1")
    offer = dispatch(store, "c1", "a", offer_s=30)
    assert store.get_assignment(T, offer.assignment_id) == offer
    accepted = store.accept_offer(T, offer.assignment_id, offer.token)
    assert store.get_assignment(T, offer.assignment_id) == accepted
    clock.advance(1_000)
    done = store.finish_assignment(
        T, offer.assignment_id, offer.token, AssignmentState.COMPLETED, policy=POLICY
    )
    assert store.get_assignment(T, offer.assignment_id) == done.assignment
    assert (done.assignment.state, done.assignment.ended_ms) == (
        AssignmentState.COMPLETED,
        clock.now_ms,
    )
    with pytest.raises(NotFoundError):
        store.get_assignment(T, "no-such-assignment")
