"""What the stores keep and for how long, on both stores: every field of the new records
round-trips, wrap-up counts as work for occupancy, timelines keep the latest 200 events,
history two hours, and a cursor into trimmed events is OUT_OF_RANGE."""

from __future__ import annotations

import dataclasses

import pytest
import redis

from router.domain import (
    AgentProfile,
    AssignmentState,
    Call,
    CallStatus,
    Channel,
    Exclusion,
    Explanation,
    Policy,
    Presence,
    SkillRequirement,
    SlaTarget,
    Strategy,
    WideningStep,
    WorkSpan,
    frozen_map,
)
from router.errors import OutOfRangeError
from router.memory_store import MemoryStore
from router.redis_store import RedisStore
from router.store import Claim, Committed, Store
from router.store_common import HISTORY_MS, TIMELINE_MAX
from tests.helpers import FakeClock
from tests.integration.conftest import StoreHarness

T = "acme"
POLICY = Policy()
EXPLANATION = Explanation(
    Strategy.BALANCED, candidates=2, excluded=frozen_map({Exclusion.DECLINED: 1}), widening_step=2
)


def claim(call: Call, agent_id: str, seq: int, *, from_queue: bool = False) -> Claim:
    """A claim of ``call`` (a queued one when ``from_queue``)."""
    return Claim(
        request_id="" if from_queue else f"req-{call.call_id}",
        fingerprint="fp",
        call=call,
        agent_id=agent_id,
        expected_seq=seq,
        units=25,
        heartbeat_timeout_s=0,
        explanation=EXPLANATION,
        from_queue=from_queue,
    )


def commit(store: Store, call: Call, agent_id: str, *, from_queue: bool = False) -> Committed:
    """Commit ``call`` at the agent's current seq; must succeed."""
    seq = store.get_agent(T, agent_id).seq
    result = store.commit_assignment(T, claim(call, agent_id, seq, from_queue=from_queue))
    assert isinstance(result, Committed)
    return result


def test_new_fields_round_trip(store: Store) -> None:
    """Every new field of a policy, a profile, a call and an explanation comes back as
    stored."""
    policy = Policy(
        offer_timeout_s=frozen_map({Channel.VOICE: 15}),
        wrap_up_s=frozen_map({Channel.VOICE: 30, Channel.CHAT: 0}),
        expected_handle_s=frozen_map({Channel.EMAIL: 7200}),
        sla=frozen_map({Channel.VOICE: SlaTarget(30, 0.9)}),
        sla_at_risk=0.7,
        escalation_priority_boost=4,
        escalation_group="night",
        widening=(WideningStep(30, level_drop=1), WideningStep(90, teams=("b",), any_region=True)),
        aging_s_per_priority=45,
        max_missed_offers=0,
        callback_threshold_s=0,
        reclaim_on_absence=False,
        reclaim_channels=frozenset({Channel.CHAT}),
        max_queue=7,
    )
    assert store.get_policy(T) == Policy()
    assert store.put_policy(T, policy) == dataclasses.replace(policy, version=1)
    assert store.get_policy(T) == dataclasses.replace(policy, version=1)
    profile = AgentProfile("a", skills=frozen_map({"billing": 3}), shift_end_ms=1_800_000_000_000)
    assert store.create_agent(T, profile).profile == dataclasses.replace(profile, version=1)
    store.set_presence(T, "a", Presence.AVAILABLE)
    call = Call(
        "c1",
        Channel.EMAIL,
        required_skills=(SkillRequirement("billing", 2),),
        team="support",
        region="EU",
        region_required=True,
        expected_handle_s=5400,
        created_ms=1_700_000_000_000,
        excluded_agents=("x", "y"),
    )
    asg = commit(store, call, "a").assignment
    record = store.get_call(T, "c1")
    assert (record.call, record.assignment) == (call, asg)
    assert asg.explanation == EXPLANATION


def test_wrap_up_counts_as_work_until_it_ends(harness: StoreHarness) -> None:
    """During wrap-up the work is held (``active``, with ``wrap_until_ms``) and no span is
    recorded; once it ends, its span runs to the wrap-up end, so occupancy counts the whole
    handle time (work plus wrap-up) without a gap or a double count; the agent is free from
    then (``last_free_ms``)."""
    store, clock = harness.store, harness.clock
    store.create_agent(T, AgentProfile("a"))
    store.set_presence(T, "a", Presence.AVAILABLE)
    asg = commit(store, Call("c1", Channel.CHAT), "a").assignment
    start = clock.now_ms
    clock.advance(60_000)
    store.finish_assignment(
        T, asg.assignment_id, asg.token, AssignmentState.COMPLETED, wrap_up_s=30
    )
    wrap_until = clock.now_ms + 30_000
    agent = store.get_agent(T, "a")
    assert [(w.start_ms, w.wrap_until_ms) for w in agent.active] == [(start, wrap_until)]
    assert (agent.recent, agent.last_free_ms) == ((), wrap_until)
    clock.advance(30_000)
    after = store.get_agent(T, "a")
    assert (after.active, after.recent) == ((), (WorkSpan(start, wrap_until, 25),))
    snapshot = store.load_snapshot(T, Call("probe", Channel.CHAT))
    assert snapshot.agents[0].recent == (WorkSpan(start, wrap_until, 25),)
    store.delete_agent(T, "a")  # an ended wrap-up holds nothing


def test_timeline_keeps_the_latest_events(store: Store) -> None:
    """A call's timeline keeps its latest ``TIMELINE_MAX`` events, in order."""
    rounds = TIMELINE_MAX // 3 + 5
    agents = [f"a{n}" for n in range(rounds)]  # a released call never goes back to its agent
    for agent_id in agents:
        store.create_agent(T, AgentProfile(agent_id))
        store.set_presence(T, agent_id, Presence.AVAILABLE)
    store.enqueue(T, "r1", "fp", Call("c1", Channel.CHAT, created_ms=1), policy=Policy())
    for agent_id in agents:  # ASSIGNED, RELEASED, QUEUED per round
        queued = store.load_queue(T, 1).calls[0]
        asg = commit(store, queued, agent_id, from_queue=True).assignment
        store.finish_assignment(T, asg.assignment_id, asg.token, AssignmentState.RELEASED)
    timeline = store.call_timeline(T, "c1")
    every = [e for e in store.read_events(T, "0", 10_000) if e.call_id == "c1"]
    assert len(every) == 1 + 3 * rounds
    assert timeline == every[-TIMELINE_MAX:]
    assert store.get_call(T, "c1").call.excluded_agents == tuple(agents)


def test_history_is_kept_two_hours(harness: StoreHarness) -> None:
    """History entries leave reads two hours after they were written, and the next write
    trims them."""
    store, clock = harness.store, harness.clock
    store.enqueue(
        T, "r1", "fp", Call("c1", Channel.VOICE, created_ms=clock.now_ms), policy=Policy()
    )
    clock.advance(5_000)
    store.cancel_call(T, "c1")
    (entry,) = store.history(T, 0)
    assert (entry.kind, entry.wait_ms, entry.call_id) == ("abandoned", 5_000, "c1")
    clock.advance(HISTORY_MS)
    assert store.history(T, 0) == [entry]  # exactly two hours: still kept
    clock.advance(1)
    assert store.history(T, 0) == []
    store.enqueue(
        T, "r2", "fp", Call("c2", Channel.VOICE, created_ms=clock.now_ms), policy=Policy()
    )
    store.cancel_call(T, "c2")
    assert [h.call_id for h in store.history(T, 0)] == ["c2"]
    if harness.raw is not None:
        assert harness.raw.zcard("rt:v1:{acme}:history") == 1


@pytest.fixture(params=["memory", "redis"])
def short_stream(request: pytest.FixtureRequest, clock: FakeClock) -> Store:
    """A store whose event stream keeps about 10 events."""
    if request.param == "memory":
        return MemoryStore(clock, events_maxlen=10)
    client: redis.Redis = request.getfixturevalue("redis_client")
    return RedisStore(client, clock, events_maxlen=10)


def test_cursor_into_trimmed_events_is_out_of_range(short_stream: Store) -> None:
    """After trimming, a cursor older than the oldest event kept is OUT_OF_RANGE; "0" reads
    from the oldest kept, newer cursors and ``last_event_id`` work as before."""
    store = short_stream
    assert store.last_event_id(T) == "0-0"
    store.create_agent(T, AgentProfile("a"))
    (first,) = store.read_events(T)
    assert store.read_events(T, first.event_id) == []  # not trimmed yet
    for _ in range(300):
        store.set_presence(T, "a", Presence.AVAILABLE)
    kept = store.read_events(T, "0", 1_000)
    assert 10 <= len(kept) < 300
    assert store.last_event_id(T) == kept[-1].event_id
    with pytest.raises(OutOfRangeError, match=f"events after {first.event_id} were trimmed"):
        store.read_events(T, first.event_id)
    assert store.read_events(T, kept[0].event_id, 1_000) == kept[1:]
    assert store.read_events(T, kept[-1].event_id) == []


def test_cursor_ahead_of_the_newest_event_is_out_of_range(store: Store) -> None:
    """A cursor after the newest event the stream has made (made up, or from a stream that
    was lost: a Redis failover to a copy that missed the last writes) is OUT_OF_RANGE at
    once, also when asked to wait, up to the largest id; the newest event's own id waits
    for the next, and "0" and "0-0" read a tenant without events."""
    assert store.read_events(T, "0") == []
    assert store.read_events(T, "0-0", block_ms=1) == []
    for ahead in ("1", "5-0"):
        with pytest.raises(OutOfRangeError, match=f"events after {ahead}: the newest is 0-0"):
            store.read_events(T, ahead)
    store.create_agent(T, AgentProfile("a"))
    (newest,) = store.read_events(T)
    ms, seq = (int(part) for part in newest.event_id.split("-"))
    assert store.read_events(T, newest.event_id, block_ms=1) == []
    largest = f"{2**64 - 1}-{2**64 - 1}"
    for ahead in (f"{ms}-{seq + 1}", f"{ms + 1}", largest):
        with pytest.raises(OutOfRangeError, match=f"the newest is {newest.event_id}"):
            store.read_events(T, ahead, block_ms=60_000)


def test_call_status_after_every_ending(store: Store) -> None:
    """COMPLETED and CANCELLED end the call; RELEASED puts it back in the queue (position 1)
    with its age; the record's flags start false."""
    store.create_agent(T, AgentProfile("a"))
    store.set_presence(T, "a", Presence.AVAILABLE)
    statuses = {}
    for end in (AssignmentState.COMPLETED, AssignmentState.CANCELLED, AssignmentState.RELEASED):
        call = Call(f"c-{end.value}", Channel.CHAT, created_ms=1_000)
        asg = commit(store, call, "a").assignment
        store.finish_assignment(T, asg.assignment_id, asg.token, end, policy=Policy())
        record = store.get_call(T, call.call_id)
        statuses[end] = (record.status, record.position, record.call.enqueued_ms)
        assert (record.callback_requested, record.sla_at_risk, record.sla_breached) == (
            False,
            False,
            False,
        )
    assert statuses == {
        AssignmentState.COMPLETED: (CallStatus.COMPLETED, 0, 0),
        AssignmentState.CANCELLED: (CallStatus.CANCELLED, 0, 0),
        AssignmentState.RELEASED: (CallStatus.QUEUED, 1, 1_000),
    }
