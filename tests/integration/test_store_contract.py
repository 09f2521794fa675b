"""The store contract: every test runs against ``MemoryStore`` and ``RedisStore`` (real server).

Time is a ``FakeClock`` that both stores read, so expiry and decay are tested by moving it.
"Nothing written" is checked on a full dump (every Redis key's type, value and TTL flag;
every memory record).
"""

from __future__ import annotations

import base64
import dataclasses
import random
import threading

import pytest

from router import eligibility, tracing
from router.domain import (
    AgentProfile,
    Assignment,
    AssignmentState,
    Call,
    CallRecord,
    CallStatus,
    Channel,
    Exclusion,
    Explanation,
    PerformanceStats,
    Policy,
    Presence,
    SkillRequirement,
    Strategy,
    WorkSpan,
    frozen_map,
)
from router.errors import (
    AlreadyExistsError,
    ContentionError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    VersionConflictError,
)
from router.store import AgentQuery, Claim, Committed, Conflict, Finished, Gone, Replayed, Store
from router.store_common import MAX_CAS_ATTEMPTS
from scoring import performance
from tests.helpers import retries
from tests.integration.conftest import StoreHarness

T = "acme"
EXPLANATION = Explanation(
    strategy=Strategy.BALANCED,
    candidates=3,
    excluded=frozen_map({Exclusion.AT_CAPACITY: 2, Exclusion.MISSING_SKILL: 1}),
    score_parts=frozen_map({"skill": 1.5, "idle": 0.1 + 0.2}),
    score=1.8,
    runner_up_agent_id="b",
    runner_up_score=1.25,
)


def profile(agent_id: str, *skills: str, team: str = "", region: str = "") -> AgentProfile:
    """A profile with ``skills`` at level 5."""
    return AgentProfile(
        agent_id=agent_id,
        name=agent_id.title(),
        team=team,
        region=region,
        skills=frozen_map(dict.fromkeys(skills, 5)),
        languages=frozenset({"en", "pt-br"}),
        capacity=frozen_map({Channel.CHAT: 2}),
        max_occupancy=0.75,
    )


def make_call(call_id: str, *skills: str) -> Call:
    """A chat needing ``skills``."""
    return Call(
        call_id=call_id,
        channel=Channel.CHAT,
        required_skills=tuple(SkillRequirement(s, 3) for s in skills),
        language="en",
        priority=2,
        attributes=frozen_map({"vip": "yes"}),
        created_ms=1_700_000_000_000,
    )


def available(store: Store, agent_id: str, *skills: str) -> int:
    """Create an AVAILABLE agent; returns its seq."""
    store.create_agent(T, profile(agent_id, *skills))
    return store.set_presence(T, agent_id, Presence.AVAILABLE).seq


def claim(
    call: Call,
    agent_id: str,
    seq: int,
    request_id: str = "",
    *,
    fingerprint: str = "fp",
    hb: int = 0,
) -> Claim:
    """A claim of ``call`` for ``agent_id`` seen at ``seq``."""
    return Claim(
        request_id=request_id or f"req-{call.call_id}",
        fingerprint=fingerprint,
        call=call,
        agent_id=agent_id,
        expected_seq=seq,
        units=25,
        heartbeat_timeout_s=hb,
        explanation=EXPLANATION,
    )


def placing(base: Claim) -> Claim:
    """``base`` as the dispatcher sends it: a queued call, no request id."""
    return dataclasses.replace(base, request_id="", from_queue=True)


def assign(store: Store, call_id: str, agent_id: str) -> Assignment:
    """Commit ``call_id`` to ``agent_id`` at its current seq; must succeed."""
    seq = store.get_agent(T, agent_id).seq
    result = store.commit_assignment(T, claim(make_call(call_id), agent_id, seq))
    assert isinstance(result, Committed)
    return result.assignment


# --- agents ----------------------------------------------------------------------------------


def test_agent_round_trip(harness: StoreHarness) -> None:
    """Create, get, update and delete an agent; every field survives storage."""
    store, now = harness.store, harness.clock.now_ms
    created = store.create_agent(T, profile("a", "billing", team="Sales", region="EU"))
    assert created.profile == dataclasses.replace(
        profile("a", "billing", team="Sales", region="EU"), version=1
    )
    assert (created.presence, created.seq, created.presence_since_ms) == (Presence.OFFLINE, 1, now)
    assert (created.heartbeat_ms, created.active, created.recent) == (0, (), ())
    assert created.performance == PerformanceStats()
    assert store.get_agent(T, "a") == created

    updated = store.update_agent(T, "a", lambda p: dataclasses.replace(p, name="Ann"), 1)
    assert (updated.profile.name, updated.profile.version, updated.seq) == ("Ann", 2, 2)
    assert store.get_agent(T, "a") == updated

    store.delete_agent(T, "a", 2)
    with pytest.raises(NotFoundError, match="agent a not found"):
        store.get_agent(T, "a")
    assert store.list_agents(T, AgentQuery(), 10) == ([], "")


def test_create_taken_id_is_refused(store: Store) -> None:
    """A second create with the same id is ALREADY_EXISTS and keeps the first agent."""
    store.create_agent(T, profile("a", "billing"))
    with pytest.raises(AlreadyExistsError):
        store.create_agent(T, profile("a", "tech"))
    assert set(store.get_agent(T, "a").profile.skills) == {"billing"}


def test_unknown_agent_is_not_found(store: Store) -> None:
    """Every agent method answers NOT_FOUND for an unknown id."""
    with pytest.raises(NotFoundError):
        store.get_agent(T, "ghost")
    with pytest.raises(NotFoundError):
        store.update_agent(T, "ghost", lambda p: p)
    with pytest.raises(NotFoundError):
        store.delete_agent(T, "ghost")
    with pytest.raises(NotFoundError):
        store.set_presence(T, "ghost", Presence.AVAILABLE)
    with pytest.raises(NotFoundError):
        store.heartbeat(T, "ghost")


def test_stale_version_is_aborted_and_nothing_changes(harness: StoreHarness) -> None:
    """A stale ``expected_version`` on update or delete is a VersionConflictError (ABORTED)
    that names both versions, and writes nothing."""
    store = harness.store
    store.create_agent(T, profile("a", "billing"))
    store.update_agent(T, "a", lambda p: dataclasses.replace(p, name="v2"))
    before = harness.dump()
    with pytest.raises(VersionConflictError, match="agent a: version 1 is stale, current is 2"):
        store.update_agent(T, "a", lambda p: dataclasses.replace(p, name="lost"), 1)
    with pytest.raises(VersionConflictError, match="version 3 is stale, current is 2"):
        store.delete_agent(T, "a", 3)
    assert harness.dump() == before
    assert store.update_agent(T, "a", lambda p: p, 0).profile.version == 3


def test_failing_change_writes_nothing(harness: StoreHarness) -> None:
    """When ``change`` raises (validation), the error propagates and nothing is written."""
    store = harness.store
    store.create_agent(T, profile("a", "billing"))
    before = harness.dump()

    def invalid(_: AgentProfile) -> AgentProfile:
        raise InvalidArgumentError("agent.skills", "too many")

    with pytest.raises(InvalidArgumentError, match="too many"):
        store.update_agent(T, "a", invalid)
    with pytest.raises(InvalidArgumentError, match=r"agent\.agent_id"):
        store.update_agent(T, "a", lambda p: dataclasses.replace(p, agent_id="b"))
    assert harness.dump() == before


def test_unconditional_update_retries_then_gives_up(store: Store) -> None:
    """With ``expected_version`` 0 a write that races in makes the store re-read and re-apply
    ``change``; after ``MAX_CAS_ATTEMPTS`` lost races it is ContentionError; with a version
    the first lost race is a VersionConflictError."""
    store.create_agent(T, profile("a"))
    seen: list[int] = []
    retried = retries("version")

    def racing(current: AgentProfile) -> AgentProfile:
        seen.append(current.version)
        if len(seen) <= 2:  # someone else writes between our read and our write
            store.update_agent(T, "a", lambda p: dataclasses.replace(p, name=f"other{len(seen)}"))
        return dataclasses.replace(current, team="won")

    result = store.update_agent(T, "a", racing)
    assert seen == [1, 2, 3]
    assert (result.profile.version, result.profile.team, result.profile.name) == (
        4,
        "won",
        "other2",
    )

    def always_racing(current: AgentProfile) -> AgentProfile:
        store.update_agent(T, "a", lambda p: p)
        return current

    with pytest.raises(ContentionError):
        store.update_agent(T, "a", always_racing)
    assert store.get_agent(T, "a").profile.version == 4 + MAX_CAS_ATTEMPTS
    assert retries("version") - retried == 2 + MAX_CAS_ATTEMPTS  # every lost race, counted
    version = store.get_agent(T, "a").profile.version
    with pytest.raises(VersionConflictError, match=f"version {version} is stale"):
        store.update_agent(T, "a", always_racing, version)


def test_skill_index_follows_skill_changes(store: Store) -> None:
    """``load_snapshot`` for a skill returns exactly the agents holding it, through adds,
    removals and deletes, and counts the others as ``unindexed_missing_skill``."""
    for agent_id, skills in (("a", ["billing"]), ("b", ["billing", "tech"]), ("c", ["tech"])):
        store.create_agent(T, profile(agent_id, *skills))

    def ids(*skills: str) -> tuple[list[str], int]:
        snapshot = store.load_snapshot(T, make_call("x", *skills))
        return [a.agent_id for a in snapshot.agents], snapshot.unindexed_missing_skill

    assert ids("billing") == (["a", "b"], 1)
    assert ids("billing", "tech") == (["b"], 2)
    assert ids() == (["a", "b", "c"], 0)
    assert ids("french") == ([], 3)

    swap = {"tech": 7, "french": 2}
    store.update_agent(T, "a", lambda p: dataclasses.replace(p, skills=frozen_map(swap)))
    assert ids("billing") == (["b"], 2)
    assert ids("tech") == (["a", "b", "c"], 0)
    assert ids("french") == (["a"], 2)

    store.delete_agent(T, "b")
    assert ids("billing") == ([], 2)
    assert ids("tech") == (["a", "c"], 0)


def test_the_region_filter_compares_as_routing_does(store: Store) -> None:
    """The region filter lists the agents routing counts in the region (both lower-cased),
    no more: ``casefold`` made "STRASSE" list an agent in "Straße", whom a call for
    "STRASSE" with ``region_required`` does not reach."""
    store.create_agent(T, profile("a", region="Straße"))
    store.create_agent(T, profile("b", region="EU-West"))

    def ids(region: str) -> list[str]:
        return [a.agent_id for a in store.list_agents(T, AgentQuery(region=region), 10)[0]]

    assert ids("eu-west") == ["b"]
    assert ids("STRAßE") == ["a"]
    assert ids("STRASSE") == []
    store.set_presence(T, "a", Presence.AVAILABLE)
    agent, now = store.get_agent(T, "a"), store.now_ms()
    for region, expected in (("STRASSE", Exclusion.REGION), ("STRAßE", None)):
        call = Call("c", Channel.CHAT, region=region, region_required=True)
        assert eligibility.check(call, agent, now, Policy()) == expected


def test_pagination_returns_every_agent_once_in_order(store: Store) -> None:
    """25 agents created in random order come back 10 + 10 + 5, sorted by id, each once."""
    ids = [f"agent-{i:02d}" for i in range(25)]
    for agent_id in random.Random(7).sample(ids, len(ids)):
        store.create_agent(T, profile(agent_id))
    seen: list[str] = []
    token, sizes = "", []
    while True:
        page, token = store.list_agents(T, AgentQuery(), 10, token)
        sizes.append(len(page))
        seen += [a.agent_id for a in page]
        if not token:
            break
    assert (seen, sizes) == (ids, [10, 10, 5])


def test_last_full_page_has_no_token(store: Store) -> None:
    """When the agents fill the last page exactly, its token is already empty."""
    for i in range(20):
        store.create_agent(T, profile(f"a{i:02d}"))
    first, token = store.list_agents(T, AgentQuery(), 10)
    second, end = store.list_agents(T, AgentQuery(), 10, token)
    assert (len(first), len(second), end) == (10, 10, "")


def test_invalid_page_token_is_refused(store: Store) -> None:
    """A token the store did not issue is INVALID_ARGUMENT on ``page_token``."""
    store.create_agent(T, profile("a"))
    for token in ("%%%", base64.urlsafe_b64encode(b"other:a").decode(), "YQ"):
        with pytest.raises(InvalidArgumentError) as info:
            store.list_agents(T, AgentQuery(), 10, token)
        assert info.value.field == "page_token"


def test_list_filters(store: Store) -> None:
    """Skill (any level), team and region (case-insensitive) and presence filters, alone,
    combined and across pages."""
    store.create_agent(T, profile("a1", "billing", team="Sales", region="EU"))
    store.create_agent(T, profile("a2", "tech", team="support", region="us"))
    store.create_agent(T, profile("a3", "billing", "tech", team="sales", region="US"))
    store.set_presence(T, "a3", Presence.AVAILABLE)

    def ids(query: AgentQuery) -> list[str]:
        return [a.agent_id for a in store.list_agents(T, query, 100)[0]]

    assert ids(AgentQuery(skill="tech")) == ["a2", "a3"]
    assert ids(AgentQuery(team="SALES")) == ["a1", "a3"]
    assert ids(AgentQuery(region="us")) == ["a2", "a3"]
    assert ids(AgentQuery(presence=Presence.AVAILABLE)) == ["a3"]
    assert ids(AgentQuery(presence=Presence.OFFLINE, skill="billing")) == ["a1"]
    assert ids(AgentQuery(team="sales", skill="tech")) == ["a3"]
    assert ids(AgentQuery(skill="french")) == []
    first, token = store.list_agents(T, AgentQuery(team="sales"), 1)
    second, end = store.list_agents(T, AgentQuery(team="sales"), 1, token)
    assert ([a.agent_id for a in first + second], end) == (["a1", "a3"], "")


def test_presence_bumps_seq_and_reaches_the_snapshot(harness: StoreHarness) -> None:
    """Presence changes bump ``seq``, set since/heartbeat (and ``last_free`` when becoming
    available while idle) and show in the next snapshot; a heartbeat moves only itself."""
    store, clock = harness.store, harness.clock
    store.create_agent(T, profile("a", "billing"))
    clock.advance(1000)
    agent = store.set_presence(T, "a", Presence.AVAILABLE, "shift start")
    t1 = clock.now_ms
    assert (agent.presence, agent.presence_reason, agent.seq) == (
        Presence.AVAILABLE,
        "shift start",
        2,
    )
    assert (agent.presence_since_ms, agent.heartbeat_ms, agent.last_free_ms) == (t1, t1, t1)
    (seen,) = store.load_snapshot(T, make_call("c", "billing")).agents
    assert seen == agent

    clock.advance(5000)
    assert store.heartbeat(T, "a") == clock.now_ms
    after = store.get_agent(T, "a")
    assert (after.heartbeat_ms, after.seq, after.presence_since_ms) == (clock.now_ms, 2, t1)

    clock.advance(1000)
    store.set_presence(T, "a", Presence.AVAILABLE, "again")
    assert store.get_agent(T, "a").last_free_ms == t1  # already available: idle clock kept
    busy = store.set_presence(T, "a", Presence.BREAK, "lunch")
    assert (busy.seq, busy.presence, busy.last_free_ms) == (4, Presence.BREAK, t1)
    snapshot = store.load_snapshot(T, make_call("c", "billing"))
    assert (snapshot.agents[0].presence, snapshot.agents[0].seq) == (Presence.BREAK, 4)


def test_policy_versions(store: Store) -> None:
    """No policy means ``Policy()`` v0; puts number versions; a stale version is ABORTED;
    the stored policy is what snapshots see."""
    assert store.get_policy(T) == Policy()
    first = store.put_policy(T, Policy(strategy=Strategy.LONGEST_IDLE, max_occupancy=0.7))
    assert (first.version, first.strategy) == (1, Strategy.LONGEST_IDLE)
    custom = Policy(
        top_k=7,
        occupancy_window_s=600,
        channel_capacity=frozen_map({Channel.CHAT: 4}),
        performance_prior=0.1 + 0.2,
    )
    second = store.put_policy(T, custom, expected_version=1)
    assert second == dataclasses.replace(custom, version=2)
    with pytest.raises(VersionConflictError, match="policy: version 1 is stale, current is 2"):
        store.put_policy(T, Policy(), expected_version=1)
    assert store.get_policy(T) == second
    assert store.load_snapshot(T, make_call("c")).policy == second
    assert store.put_policy(T, Policy()).version == 3  # no version given: the latest wins
    # Version 0 is "none stored yet": a first write built on the defaults must find none.
    assert store.put_policy("other", Policy(top_k=7), expected_version=0).version == 1
    with pytest.raises(VersionConflictError, match="policy: version 0 is stale, current is 1"):
        store.put_policy("other", Policy(max_missed_offers=9), expected_version=0)
    assert store.get_policy("other").top_k == 7


def test_tenants_are_isolated(store: Store) -> None:
    """Agents, policies and events of one tenant are invisible to another."""
    store.create_agent(T, profile("a"))
    store.put_policy(T, Policy(top_k=3))
    assert store.list_agents("other", AgentQuery(), 10) == ([], "")
    assert store.get_policy("other") == Policy()
    assert store.read_events("other") == []
    with pytest.raises(InvalidArgumentError):
        store.get_policy("bad{tag}")


# --- commit ----------------------------------------------------------------------------------


def test_commit_happy_path(harness: StoreHarness) -> None:
    """Commits mint increasing tokens and record assignment, agent load, call and request."""
    store, now = harness.store, harness.clock.now_ms
    seq = available(store, "a", "billing")
    first = store.commit_assignment(T, claim(make_call("c1", "billing"), "a", seq))
    assert isinstance(first, Committed)
    asg = first.assignment
    assert (asg.call_id, asg.agent_id, asg.channel, asg.units) == ("c1", "a", Channel.CHAT, 25)
    assert (asg.state, asg.created_ms, asg.ended_ms, asg.explanation, asg.offer_expires_ms) == (
        AssignmentState.ACTIVE,
        now,
        0,
        EXPLANATION,
        0,
    )
    harness.clock.advance(1)
    second = assign(store, "c2", "a")
    assert second.token > asg.token > 0

    agent = store.get_agent(T, "a")
    assert [w.assignment_id for w in agent.active] == [asg.assignment_id, second.assignment_id]
    assert (agent.seq, agent.last_assigned_ms, agent.units_used) == (seq + 2, now + 1, 50)
    record = store.get_call(T, "c1")
    assert record == CallRecord(make_call("c1", "billing"), CallStatus.ASSIGNED, asg, now)
    assert store.find_request(T, "req-c1") == ("fp", record)
    assert store.find_request(T, "req-none") is None


def test_stale_seq_conflicts_and_writes_nothing(harness: StoreHarness) -> None:
    """A claim made on an older ``seq`` is a Conflict and leaves every key untouched."""
    store = harness.store
    seq = available(store, "a")
    store.heartbeat(T, "a")
    store.set_presence(T, "a", Presence.AVAILABLE)
    before = harness.dump()
    result = store.commit_assignment(T, claim(make_call("c1"), "a", seq))
    assert result == Conflict("agent changed")
    assert harness.dump() == before
    with pytest.raises(NotFoundError):
        store.get_call(T, "c1")


def test_agent_checks_at_commit(harness: StoreHarness) -> None:
    """Deleted, unavailable and heartbeat-expired agents are Conflicts that write nothing;
    a heartbeat exactly at the timeout still passes."""
    store, clock = harness.store, harness.clock
    seq = available(store, "a")
    before = harness.dump()
    assert store.commit_assignment(T, claim(make_call("c"), "ghost", 1)) == Conflict(
        "agent deleted"
    )
    clock.advance(30_001)
    assert store.commit_assignment(T, claim(make_call("c"), "a", seq, hb=30)) == Conflict(
        "heartbeat expired"
    )
    assert harness.dump() == before
    away = store.set_presence(T, "a", Presence.AWAY).seq
    assert store.commit_assignment(T, claim(make_call("c"), "a", away)) == Conflict("agent is away")
    fresh = store.set_presence(T, "a", Presence.AVAILABLE).seq
    clock.advance(30_000)
    assert isinstance(
        store.commit_assignment(T, claim(make_call("c"), "a", fresh, hb=30)), Committed
    )


def test_replayed_request_is_answered_from_the_record(harness: StoreHarness) -> None:
    """The same request id and fingerprint is ``Replayed`` (even on a stale seq, even for
    another call id) without writing, and ``find_request`` gives the call as it is now;
    another fingerprint is INVALID_ARGUMENT on ``request_id``."""
    store = harness.store
    seq = available(store, "a")
    original = store.commit_assignment(T, claim(make_call("c1"), "a", seq, "r1"))
    assert isinstance(original, Committed)
    before = harness.dump()
    assert store.commit_assignment(T, claim(make_call("c1"), "a", seq, "r1")) == Replayed()
    assert store.commit_assignment(T, claim(make_call("c9"), "a", seq, "r1")) == Replayed()
    with pytest.raises(InvalidArgumentError, match="already used for a different request") as info:
        store.commit_assignment(T, claim(make_call("c1"), "a", seq, "r1", fingerprint="other"))
    assert info.value.field == "request_id"
    assert harness.dump() == before
    asg = original.assignment
    store.finish_assignment(T, asg.assignment_id, asg.token, AssignmentState.COMPLETED)
    found = store.find_request(T, "r1")
    assert found is not None
    assert (found[0], found[1].status) == ("fp", CallStatus.COMPLETED)
    assert found[1].assignment == store.get_call(T, "c1").assignment


def test_call_status_gates_commit(harness: StoreHarness) -> None:
    """A direct claim is only for a new call id: an assigned, queued or completed call is
    FAILED_PRECONDITION. A released call waits in the queue and only a ``from_queue`` claim
    places it; once it stopped waiting, that claim is ``Gone`` and writes nothing."""
    store = harness.store
    available(store, "a")
    available(store, "b")
    first = assign(store, "c1", "a")
    seq_b = store.get_agent(T, "b").seq
    with pytest.raises(
        FailedPreconditionError,
        match=f"call c1 is already assigned \\(assignment {first.assignment_id}\\)",
    ):
        store.commit_assignment(T, claim(make_call("c1"), "b", seq_b, "r-other"))
    store.finish_assignment(
        T, first.assignment_id, first.token, AssignmentState.RELEASED, policy=Policy()
    )
    assert store.get_call(T, "c1").status == CallStatus.QUEUED
    with pytest.raises(FailedPreconditionError, match="call c1 is queued"):
        store.commit_assignment(T, claim(make_call("c1"), "b", seq_b, "r-direct"))
    queued = store.get_call(T, "c1").call
    again = store.commit_assignment(T, placing(claim(queued, "b", seq_b)))
    assert isinstance(again, Committed)
    record = store.get_call(T, "c1")
    assert (record.status, record.assignment) == (CallStatus.ASSIGNED, again.assignment)
    store.finish_assignment(
        T, again.assignment.assignment_id, again.assignment.token, AssignmentState.COMPLETED
    )
    seq_a = store.get_agent(T, "a").seq
    with pytest.raises(FailedPreconditionError, match="call c1 is completed"):
        store.commit_assignment(T, claim(make_call("c1"), "a", seq_a, "r3"))
    before = harness.dump()
    assert store.commit_assignment(T, placing(claim(queued, "a", seq_a))) == Gone("completed")
    with pytest.raises(NotFoundError, match="call nope not found"):
        store.commit_assignment(T, placing(claim(make_call("nope"), "a", seq_a)))
    assert harness.dump() == before


def test_concurrent_claims_on_one_agent_commit_once(store: Store) -> None:
    """100 threads snapshot the same agent, then commit 100 different calls with the seq they
    saw: exactly one commit wins, the other 99 are Conflicts."""
    available(store, "a", "billing")
    barrier = threading.Barrier(100, timeout=30)
    results: list[object] = [None] * 100

    def worker(i: int) -> None:
        call = make_call(f"call-{i}", "billing")
        (agent,) = store.load_snapshot(T, call).agents
        barrier.wait()
        results[i] = store.commit_assignment(T, claim(call, "a", agent.seq))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(100)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=45)
    committed = [r for r in results if isinstance(r, Committed)]
    assert len(committed) == 1
    assert results.count(Conflict("agent changed")) == 99
    assert len(store.get_agent(T, "a").active) == 1


# --- finish and cancel -----------------------------------------------------------------------


def test_finish_frees_capacity_records_work_and_folds_performance(harness: StoreHarness) -> None:
    """Finishing frees the slot, records the span, sets the call status, resets the idle clock
    only once no work is left, and folds outcomes with the decay of ``scoring.performance``."""
    store, clock = harness.store, harness.clock
    available(store, "a")
    free_before = store.get_agent(T, "a").last_free_ms
    one = assign(store, "c1", "a")
    two = assign(store, "c2", "a")
    clock.advance(60_000)
    done = store.finish_assignment(
        T,
        one.assignment_id,
        one.token,
        AssignmentState.COMPLETED,
        outcome_value=1.0,
        half_life_s=3600,
    )
    t1 = clock.now_ms
    ended = dataclasses.replace(one, state=AssignmentState.COMPLETED, ended_ms=t1)
    assert done == Finished(ended, calls_waiting=0)
    agent = store.get_agent(T, "a")
    assert [w.assignment_id for w in agent.active] == [two.assignment_id]
    assert agent.recent == (WorkSpan(one.created_ms, t1, 25),)
    assert agent.last_free_ms == free_before  # still busy with c2
    assert agent.performance == PerformanceStats(1.0, 1.0, t1)
    assert store.get_call(T, "c1").status == CallStatus.COMPLETED

    clock.advance(3_600_000)  # one half-life
    store.finish_assignment(
        T,
        two.assignment_id,
        two.token,
        AssignmentState.COMPLETED,
        outcome_value=0.3,
        half_life_s=3600,
    )
    t2 = clock.now_ms
    agent = store.get_agent(T, "a")
    expected = performance.fold(PerformanceStats(1.0, 1.0, t1), 0.3, t2, 3600)
    assert agent.performance == expected  # bit-identical in both stores
    assert agent.performance.weighted_sum == pytest.approx(0.8)
    assert agent.performance.weight == pytest.approx(1.5)
    assert (agent.active, agent.last_free_ms, agent.seq) == ((), t2, 6)
    assert agent.recent == (WorkSpan(one.created_ms, t1, 25), WorkSpan(two.created_ms, t2, 25))
    clock.advance(1)  # the first span ended 1 h + 1 ms ago: outside the 1 h window
    snapshot = store.load_snapshot(T, make_call("x"))
    assert snapshot.agents[0].recent == (WorkSpan(two.created_ms, t2, 25),)


def test_finish_is_idempotent_and_fenced(harness: StoreHarness) -> None:
    """Re-finishing the same way returns the assignment unchanged without writing; another
    way, a stale token or a bad end state is refused and writes nothing."""
    store = harness.store
    available(store, "a")
    asg = assign(store, "c1", "a")
    with pytest.raises(
        FailedPreconditionError, match=f"token 999 is stale for assignment {asg.assignment_id}"
    ):
        store.finish_assignment(T, asg.assignment_id, 999, AssignmentState.COMPLETED)
    done = store.finish_assignment(
        T,
        asg.assignment_id,
        asg.token,
        AssignmentState.COMPLETED,
        outcome_value=0.5,
        half_life_s=60,
    )
    before = harness.dump()
    assert (
        store.finish_assignment(
            T,
            asg.assignment_id,
            asg.token,
            AssignmentState.COMPLETED,
            outcome_value=0.5,
            half_life_s=60,
        )
        == done
    )
    with pytest.raises(
        FailedPreconditionError, match=f"assignment {asg.assignment_id} is already completed"
    ):
        store.finish_assignment(T, asg.assignment_id, asg.token, AssignmentState.RELEASED)
    with pytest.raises(FailedPreconditionError, match="is stale"):
        store.finish_assignment(T, asg.assignment_id, asg.token + 1, AssignmentState.COMPLETED)
    with pytest.raises(InvalidArgumentError, match="end"):
        store.finish_assignment(T, asg.assignment_id, asg.token, AssignmentState.ACTIVE)
    with pytest.raises(NotFoundError):
        store.finish_assignment(T, "nope", 1, AssignmentState.COMPLETED)
    assert harness.dump() == before
    assert store.get_agent(T, "a").performance.weight == 1.0


def test_stale_token_changes_nothing(harness: StoreHarness) -> None:
    """A wrong fencing token on an active assignment writes nothing at all."""
    store = harness.store
    available(store, "a")
    asg = assign(store, "c1", "a")
    before = harness.dump()
    with pytest.raises(FailedPreconditionError):
        store.finish_assignment(T, asg.assignment_id, asg.token - 1, AssignmentState.RELEASED)
    assert harness.dump() == before
    assert store.get_agent(T, "a").active[0].assignment_id == asg.assignment_id


def test_delete_refuses_an_agent_with_work(store: Store) -> None:
    """An agent holding active work cannot be deleted; once free it can."""
    available(store, "a")
    asg = assign(store, "c1", "a")
    with pytest.raises(FailedPreconditionError, match=r"agent a holds 1 assignment\(s\) \(offered"):
        store.delete_agent(T, "a")
    store.finish_assignment(T, asg.assignment_id, asg.token, AssignmentState.COMPLETED)
    store.delete_agent(T, "a")
    with pytest.raises(NotFoundError):
        store.get_agent(T, "a")


def test_an_agent_created_again_continues_the_versions_of_the_deleted_one(
    harness: StoreHarness,
) -> None:
    """An agent deleted and created again under its id starts one past the deleted one's
    version and seq: a decision, a version or a seq read from the deleted agent is stale for
    the new one (a commit conflicts, an update with that version is ABORTED), never taken
    for it. The first life of an id starts at 1."""
    store = harness.store
    available(store, "a", "billing")
    store.update_agent(T, "a", lambda p: dataclasses.replace(p, name="Old"))
    old = store.get_agent(T, "a")
    assert (old.profile.version, old.seq) == (2, 3)
    store.delete_agent(T, "a")
    created = store.create_agent(T, profile("a", "sales"))
    assert (created.profile.version, created.seq) == (3, 4)
    store.set_presence(T, "a", Presence.AVAILABLE)
    created_event = [e for e in store.read_events(T) if e.type == "AGENT_CREATED"][-1]
    assert created_event.data["version"] == "3"
    before = harness.dump()
    for capacity in (0, 1):  # seq compared, or the profile version
        stale = dataclasses.replace(
            claim(make_call("c1"), "a", old.seq), capacity=capacity, expected_version=2
        )
        assert isinstance(store.commit_assignment(T, stale), Conflict)
    with pytest.raises(VersionConflictError):
        store.update_agent(T, "a", lambda p: p, expected_version=2)
    with pytest.raises(VersionConflictError):
        store.delete_agent(T, "a", expected_version=2)
    assert harness.dump() == before
    assert store.create_agent(T, profile("b")).profile.version == 1


def test_a_claim_decided_on_another_policy_conflicts(harness: StoreHarness) -> None:
    """A claim names the policy version its decision read (capacity, offer time-out and
    units come from it): once another policy is stored, or before any is, the commit is a
    ``Conflict`` and writes nothing. Without a version the policy is not compared."""
    store = harness.store
    available(store, "a")
    base = claim(make_call("c1"), "a", store.get_agent(T, "a").seq)
    before = harness.dump()
    ahead = dataclasses.replace(base, policy_version=1)  # none is stored: version 0
    assert store.commit_assignment(T, ahead) == Conflict("policy changed")
    assert harness.dump() == before
    store.put_policy(T, Policy(top_k=7))
    store.put_policy(T, Policy(top_k=8))
    before = harness.dump()
    for read in (0, 1):
        stale = dataclasses.replace(base, policy_version=read)
        assert store.commit_assignment(T, stale) == Conflict("policy changed")
    assert harness.dump() == before
    current = dataclasses.replace(base, policy_version=2)
    assert isinstance(store.commit_assignment(T, current), Committed)
    unchecked = claim(make_call("c2"), "a", store.get_agent(T, "a").seq)
    assert unchecked.policy_version == -1
    assert isinstance(store.commit_assignment(T, unchecked), Committed)


def test_cancel_call(harness: StoreHarness) -> None:
    """Cancelling ends the active assignment as CANCELLED (freeing the agent) and is
    idempotent; a released call (queued again) is abandoned; completed or unknown calls are
    refused."""
    store, now = harness.store, harness.clock.now_ms
    available(store, "a")
    asg = assign(store, "c1", "a")
    record = store.cancel_call(T, "c1")
    cancelled = dataclasses.replace(asg, state=AssignmentState.CANCELLED, ended_ms=now)
    assert (record.status, record.assignment, record.updated_ms) == (
        CallStatus.CANCELLED,
        cancelled,
        now,
    )
    assert store.get_agent(T, "a").active == ()
    before = harness.dump()
    assert store.cancel_call(T, "c1") == record
    assert harness.dump() == before
    assert store.get_call(T, "c1") == record

    released = assign(store, "c2", "a")
    store.finish_assignment(T, released.assignment_id, released.token, AssignmentState.RELEASED)
    record = store.cancel_call(T, "c2")  # released: it waited in the queue again
    assert (record.status, record.position, record.assignment and record.assignment.state) == (
        CallStatus.ABANDONED,
        0,
        AssignmentState.RELEASED,
    )
    done = assign(store, "c3", "a")
    store.finish_assignment(T, done.assignment_id, done.token, AssignmentState.COMPLETED)
    with pytest.raises(FailedPreconditionError, match="call c3 is completed"):
        store.cancel_call(T, "c3")
    with pytest.raises(NotFoundError):
        store.cancel_call(T, "nope")
    with pytest.raises(NotFoundError):
        store.get_call(T, "nope")


def test_work_spans_are_kept_24_hours(harness: StoreHarness) -> None:
    """Finished spans leave agent reads after 24 h and are trimmed on the next finish."""
    store, clock = harness.store, harness.clock
    available(store, "a")
    old = assign(store, "c1", "a")
    store.finish_assignment(T, old.assignment_id, old.token, AssignmentState.COMPLETED)
    clock.advance(24 * 3600 * 1000)
    assert len(store.get_agent(T, "a").recent) == 1  # exactly 24 h: still kept
    clock.advance(1)
    assert store.get_agent(T, "a").recent == ()
    new = assign(store, "c2", "a")
    store.finish_assignment(T, new.assignment_id, new.token, AssignmentState.COMPLETED)
    assert store.get_agent(T, "a").recent == (WorkSpan(new.created_ms, clock.now_ms, 25),)
    if harness.raw is not None:
        assert harness.raw.zcard("rt:v1:{acme}:work:a") == 1


# --- events ----------------------------------------------------------------------------------


def test_events_in_order(harness: StoreHarness) -> None:
    """Every write appends one typed event; reading resumes strictly after an id."""
    store, now = harness.store, harness.clock.now_ms
    available(store, "a")
    store.put_policy(T, Policy())
    asg = assign(store, "c1", "a")
    store.finish_assignment(T, asg.assignment_id, asg.token, AssignmentState.COMPLETED)
    store.update_agent(T, "a", lambda p: p)
    store.delete_agent(T, "a")
    events = store.read_events(T)
    assert [e.type for e in events] == [
        "AGENT_CREATED",
        "PRESENCE_CHANGED",
        "POLICY_UPDATED",
        "ASSIGNED",
        "COMPLETED",
        "AGENT_UPDATED",
        "AGENT_DELETED",
    ]
    assert all(e.ts_ms == now for e in events)
    assert (events[1].agent_id, dict(events[1].data)) == (
        "a",
        {"presence": "available", "reason": ""},
    )
    assigned = events[3]
    assert (assigned.call_id, assigned.agent_id) == ("c1", "a")
    assert dict(assigned.data) == {"assignment_id": asg.assignment_id, "token": str(asg.token)}
    assert dict(events[5].data) == {"version": "2"}
    assert store.read_events(T, events[2].event_id, limit=2) == events[3:5]
    assert store.read_events(T, events[-1].event_id) == []
    assert store.read_events(T, "0", limit=0) == []
    with pytest.raises(InvalidArgumentError, match="after_id"):
        store.read_events(T, "yesterday")


def test_events_carry_the_trace_of_the_request_that_wrote_them(harness: StoreHarness) -> None:
    """While a request's trace is bound, every event written (stream and call timeline)
    carries its id as ``trace_id``; before and after, none does. The lease script, which
    reads the clock argument the trace rides on, still works with one bound."""
    store, clock = harness.store, harness.clock
    available(store, "a")
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    token = tracing.bind_request_trace(f"00-{trace_id}-00f067aa0ba902b7-01")
    try:
        asg = assign(store, "c1", "a")
        assert store.acquire_lease(T, "me", 5_000)
        store.release_lease(T, "me")
        assert store.acquire_lease(T, "other", 5_000)
        assert not store.acquire_lease(T, "me", 5_000)
    finally:
        tracing.unbind_request_trace(token)
    store.finish_assignment(T, asg.assignment_id, asg.token, AssignmentState.COMPLETED)
    events = store.read_events(T)
    assert [(e.type, e.data.get("trace_id")) for e in events] == [
        ("AGENT_CREATED", None),
        ("PRESENCE_CHANGED", None),
        ("ASSIGNED", trace_id),
        ("COMPLETED", None),
    ]
    assert all(e.ts_ms == clock.now_ms for e in events)  # the clock read past the trace
    assert dict(events[2].data) == {
        "assignment_id": asg.assignment_id,
        "token": str(asg.token),
        "trace_id": trace_id,
    }
    timeline = store.call_timeline(T, "c1")
    assert [(e.type, e.data.get("trace_id")) for e in timeline] == [
        ("ASSIGNED", trace_id),
        ("COMPLETED", None),
    ]
    clock.advance(10_000)
    assert store.acquire_lease(T, "me", 5_000)  # the other's lease expired on the store clock
