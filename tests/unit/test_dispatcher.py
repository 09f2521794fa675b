"""The dispatcher on the in-memory store: batch placement, leases, timers."""

from __future__ import annotations

import dataclasses
import threading
from collections import Counter
from typing import Any, cast

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from router import deadline, forecast, metrics
from router.dispatcher import (
    TICK_BATCHES,
    Dispatcher,
    DispatchReport,
    must_reclaim,
    reclaim_channels,
    reclaim_due_ms,
    widen_for_risk,
)
from router.domain import (
    Absence,
    AbsenceKind,
    ActiveWork,
    AgentProfile,
    AgentSnapshot,
    AssignmentState,
    Call,
    CallStatus,
    Channel,
    Policy,
    Presence,
    SkillRequirement,
    SlaTarget,
    WideningStep,
    frozen_map,
)
from router.errors import StoreUnavailableError
from router.forecast import PoolTerms
from router.memory_store import MemoryStore
from router.store import Store
from tests.helpers import FakeClock, log_lines, sample

T = "acme"


def _store() -> tuple[MemoryStore, FakeClock]:
    clock = FakeClock()
    store = MemoryStore(clock)
    # A one-hour chat target: no SLA escalation reorders these small queues.
    sla = frozen_map({Channel.CHAT: SlaTarget(3600)})
    store.put_policy(T, dataclasses.replace(Policy(), heartbeat_timeout_s=0, sla=sla))
    return store, clock


def _agent(store: MemoryStore, agent_id: str, chats: int = 1) -> None:
    profile = AgentProfile(
        agent_id,
        skills=frozen_map({"billing": 5}),
        capacity=frozen_map({Channel.CHAT: chats}),
    )
    store.create_agent(T, profile)
    store.set_presence(T, agent_id, Presence.AVAILABLE)


def _queue(store: MemoryStore, clock: FakeClock, call_id: str, skill: str = "billing") -> None:
    call = Call(
        call_id,
        Channel.CHAT,
        (SkillRequirement(skill, 1),),
        created_ms=clock.now_ms,
    )
    store.enqueue(T, f"r-{call_id}", "fp", call, policy=store.get_policy(T))


def test_one_pass_places_every_call_that_fits() -> None:
    """Five waiting chats, two agents with two slots each: one pass places four, in queue
    order, and leaves the youngest waiting."""
    store, clock = _store()
    for i in range(5):
        _queue(store, clock, f"c{i}")
        clock.advance(1000)
    _agent(store, "a1", chats=2)
    _agent(store, "a2", chats=2)
    report = Dispatcher(store).run_once(T)
    assert (report.placed, report.queued, report.conflicts, report.escalated) == (4, 1, 0, 0)
    assert store.get_call(T, "c4").status == CallStatus.QUEUED
    assert {store.get_call(T, f"c{i}").status for i in range(4)} == {CallStatus.ASSIGNED}


def test_a_tick_reads_past_a_first_batch_nobody_can_take() -> None:
    """The first batch of waiting calls (``batch_size``) holds only calls nobody can take (a
    skill nobody has); an agent free for a call further back gets it on the tick, which reads
    on a batch at a time (up to ``TICK_BATCHES``) while agents have room. A wake-up's pass
    reads the first batch only."""
    store, clock = _store()
    for i in range(2 * TICK_BATCHES - 1):
        _queue(store, clock, f"vip{i}", skill="vip")
        clock.advance(1_000)
    _queue(store, clock, "c1")  # the last place of the tick's last batch of two
    _agent(store, "a1")
    dispatcher = Dispatcher(store, batch_size=2, owner="me")
    assert dispatcher.run_once(T, full=False).placed == 0
    assert dispatcher.run_tick(T).placed == 1
    assert store.get_call(T, "c1").status == CallStatus.ASSIGNED


def test_ticks_read_on_where_the_last_stopped_so_every_call_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A call past what one tick reads (``TICK_BATCHES`` batches) is read by a later tick,
    which reads the first batch and then on from where the last tick stopped (whatever
    one-batch passes ran in between): behind 4 ticks' reading, a call is placed by the 5th
    tick, its estimated wait counting every
    call ahead of it in its channel; the queue read to its end, the next tick starts at the
    head again, and the next call at the back takes 5 ticks too."""
    positions: list[int] = []

    def spied(position: int, terms: PoolTerms) -> float:
        positions.append(position)
        return forecast.wait_at(position, terms)

    monkeypatch.setattr("router.dispatcher.wait_at", spied)
    store, clock = _store()
    stride = 2 * (TICK_BATCHES - 1)  # batches of 2: a tick after the first reads on 3 batches
    for i in range(2 * TICK_BATCHES + 3 * stride):
        _queue(store, clock, f"vip{i}", skill="vip")
        clock.advance(1_000)
    _queue(store, clock, "c1")
    _agent(store, "a1")
    dispatcher = Dispatcher(store, batch_size=2, owner="me")
    for _ in range(4):  # an Assign's inline pass between ticks leaves the ticks' place
        assert dispatcher.run_tick(T).placed == 0
        assert dispatcher.run_once(T).placed == 0
    positions.clear()
    assert dispatcher.run_tick(T).placed == 1
    assert store.get_call(T, "c1").status == CallStatus.ASSIGNED
    assert positions == [1, 2, 2 * TICK_BATCHES + 3 * stride + 1]  # the head, then c1
    _queue(store, clock, "c2")
    _agent(store, "a2")
    assert [dispatcher.run_tick(T).placed for _ in range(5)] == [0, 0, 0, 0, 1]
    assert store.get_call(T, "c2").status == CallStatus.ASSIGNED
    _queue(store, clock, "c3")
    _agent(store, "a3")
    assert dispatcher.run_once(T, full=False).placed == 0  # a wake-up reads the first batch
    assert [dispatcher.run_tick(T).placed for _ in range(4)] == [0, 0, 0, 0]


def test_a_lease_held_elsewhere_skips_the_pass() -> None:
    """While another replica holds the tenant's lease, this one does nothing."""
    store, clock = _store()
    _queue(store, clock, "c1")
    _agent(store, "a1")
    assert store.acquire_lease(T, "other-replica", 10_000)
    report = Dispatcher(store, owner="me").run_once(T)
    assert report.skipped
    assert store.get_call(T, "c1").status == CallStatus.QUEUED
    clock.advance(10_001)  # the other replica died: its lease expires in store time
    assert Dispatcher(store, owner="me").run_once(T).placed == 1


class _Paused:
    """A store whose first ``load_queue`` waits for ``resume`` (a pass caught half-way)."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.inside = threading.Event()
        self.resume = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def load_queue(self, tenant: str, limit: int) -> Any:
        if not self.inside.is_set():
            self.inside.set()
            assert self.resume.wait(10)
        return self.store.load_queue(tenant, limit)


class _Woken(Dispatcher):
    """A dispatcher that records the wake-ups asked of it."""

    woken: list[str]

    def wake(self, tenant: str) -> None:
        self.woken.append(tenant)
        super().wake(tenant)


def test_a_replicas_passes_over_a_tenant_never_overlap() -> None:
    """The tenant's lease keeps other replicas out, not this replica's other threads: a
    pass that finds another of them running waits for it up to its ``wait_s`` (the loop's:
    as long as it takes), else is skipped and asks for another pass after it (that one may
    have read the queue before the call that brought this one). Two overlapping passes
    could place a call from a stale read, with the agent it has just left since."""
    store, clock = _store()
    _agent(store, "a1")
    _queue(store, clock, "c1")
    paused = _Paused(store)
    dispatcher = _Woken(cast(Store, paused), owner="me")
    dispatcher.woken = []
    reports: list[DispatchReport] = []
    first = threading.Thread(target=lambda: reports.append(dispatcher.run_once(T)))
    first.start()
    assert paused.inside.wait(10)
    assert dispatcher.run_once(T) == DispatchReport(skipped=True)
    assert dispatcher.run_once(T, wait_s=0.05) == DispatchReport(skipped=True)
    assert dispatcher.woken == [T, T]
    turn = threading.Thread(target=lambda: reports.append(dispatcher.run_once(T, wait_s=None)))
    turn.start()
    turn.join(0.2)
    assert turn.is_alive()  # waiting for the first pass
    paused.resume.set()
    first.join(10)
    turn.join(10)
    assert [report.placed for report in reports] == [1, 0]
    assert store.get_call(T, "c1").status == CallStatus.ASSIGNED


def test_a_wake_up_with_an_empty_queue_reads_no_agents() -> None:
    """A wake-up (not a tick) with nothing waiting returns at once."""
    store, _ = _store()
    _agent(store, "a1")
    report = Dispatcher(store).run_once(T, full=False)
    assert report == type(report)()


class _Counting:
    """A store that counts the calls of each of its methods (one replica's view)."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.store, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return method(*args, **kwargs)

        return counted

    def replica(self, owner: str) -> Dispatcher:
        """A dispatcher over this store, as replica ``owner`` with a 1 s tick."""
        return Dispatcher(cast(Store, self), owner=owner, tick_s=1.0)


def test_a_wake_up_with_nothing_to_do_is_one_read() -> None:
    """A wake-up (a Complete freed a slot) when no call waits and no offer has expired
    costs one store call and leaves the lease free; a waiting call is placed."""
    clock = FakeClock()
    store = _Counting(MemoryStore(clock))
    _agent(store.store, "a1")
    dispatcher = store.replica("A")
    assert dispatcher.run_once(T, full=False) == DispatchReport()
    assert store.calls == Counter(open_pass=1)
    assert store.store.acquire_lease(T, "other", 1)
    clock.advance(1)
    _queue(store.store, clock, "c1")
    assert dispatcher.run_once(T, full=False).placed == 1
    assert store.calls["release_lease"] == 1


def test_one_replica_makes_each_tick_full_pass() -> None:
    """Two replicas tick over an idle tenant: one reads the agents each tick, the other only
    checks for work (and shows an empty queue); when the first stops, the second takes the
    full passes over when its marker ends, and a queued call is placed on either's tick."""
    store, clock = _store()
    _agent(store, "a1")
    first, second = _Counting(store), _Counting(store)
    a, b = first.replica("A"), second.replica("B")
    for _ in range(3):
        assert a.run_tick(T) == DispatchReport()
        metrics.QUEUE_DEPTH.labels(T).set(3)  # what B showed from an earlier pass, say
        assert b.run_tick(T) == DispatchReport()
        clock.advance(1_000)
    assert first.calls == Counter(open_pass=3, load_queue=3, release_lease=3)
    assert second.calls == Counter(open_pass=3)
    assert sample("router_queue_depth", tenant=T) == 0
    for _ in range(3):  # A stopped at 2 000; its marker lasts to 4 000
        b.run_tick(T)
        clock.advance(1_000)
    assert second.calls["load_queue"] == 2  # at 4 000 and 5 000
    _queue(store, clock, "c1")
    assert a.run_tick(T).placed == 1  # a wake-up: the call waits


def test_at_risk_calls_are_widened_to_the_next_step() -> None:
    """An at-risk call is decided as if it had waited until the next widening step."""
    policy = dataclasses.replace(
        Policy(), widening=(WideningStep(30, level_drop=1), WideningStep(90, level_drop=2))
    )
    call = Call("c", Channel.VOICE, created_ms=1_000_000)
    widened = widen_for_risk(call, 1_000_000 + 40_000, policy)
    assert widened.enqueued_ms == 1_000_000 + 40_000 - 90_000
    assert widen_for_risk(call, 1_000_000 + 100_000, policy) == call  # no step left


def test_only_movable_work_of_absent_agents_is_reclaimed() -> None:
    """Offers and reclaimable channels move when the agent is gone; voice calls stay."""
    policy = Policy()
    now = 10_000_000
    profile = AgentProfile("a")
    voice = ActiveWork("v", Channel.VOICE, 100, now - 5000)
    email = ActiveWork("e", Channel.EMAIL, 20, now - 5000)
    offer = ActiveWork("o", Channel.CHAT, 25, now - 5000, offered=True)
    gone = AgentSnapshot(profile, presence=Presence.OFFLINE, heartbeat_ms=now)
    here = AgentSnapshot(profile, presence=Presence.AVAILABLE, heartbeat_ms=now)
    assert not must_reclaim(dataclasses.replace(gone, active=(voice,)), now, policy)
    assert must_reclaim(dataclasses.replace(gone, active=(voice, email)), now, policy)
    assert must_reclaim(dataclasses.replace(gone, active=(offer,)), now, policy)
    assert not must_reclaim(dataclasses.replace(here, active=(offer, email)), now, policy)
    ending = dataclasses.replace(
        here, profile=AgentProfile("a", shift_end_ms=now - 1), active=(email,)
    )
    assert must_reclaim(ending, now, policy)
    assert reclaim_channels(ending, now, policy) == policy.reclaim_channels


@pytest.mark.parametrize("presence", [Presence.BUSY, Presence.BREAK, Presence.NOT_RESPONDING])
def test_an_agent_busy_on_a_break_or_not_responding_keeps_accepted_work(
    presence: Presence,
) -> None:
    """Such an agent takes no new work and loses their offers, but an email they accepted
    stays with them (its channel is not reclaimed) unless they also left: a lapsed
    heartbeat, an absence, the shift's end."""
    policy = Policy()
    now = 10_000_000
    email = ActiveWork("e", Channel.EMAIL, 20, now - 5000)
    offer = ActiveWork("o", Channel.CHAT, 25, now - 5000, offered=True)
    agent = AgentSnapshot(AgentProfile("a"), presence=presence, heartbeat_ms=now, active=(email,))
    assert not must_reclaim(agent, now, policy)
    assert reclaim_due_ms(agent, now, policy) == now + policy.heartbeat_timeout_s * 1000 + 1
    offering = dataclasses.replace(agent, active=(email, offer))
    assert must_reclaim(offering, now, policy)
    assert reclaim_channels(offering, now, policy) == frozenset()  # the offer only
    lapsed = dataclasses.replace(agent, heartbeat_ms=now - policy.heartbeat_timeout_s * 1000 - 1)
    assert must_reclaim(lapsed, now, policy)
    assert reclaim_channels(lapsed, now, policy) == policy.reclaim_channels
    for gone in (Presence.OFFLINE, Presence.AWAY):
        left = dataclasses.replace(agent, presence=gone)
        assert must_reclaim(left, now, policy)
        assert reclaim_channels(left, now, policy) == policy.reclaim_channels


NOW = 10_000_000


@st.composite
def _agents(draw: st.DrawFn) -> AgentSnapshot:
    """An agent at ``NOW``: any presence, a heartbeat up to 200 s old, up to three absences
    around ``NOW``, maybe a shift's end, up to three pieces of work of any kind."""
    spans = draw(st.lists(st.tuples(st.integers(-50, 300), st.integers(1, 100)), max_size=3))
    shift_in_s = draw(st.one_of(st.none(), st.integers(-10, 300)))
    works = draw(
        st.lists(
            st.tuples(st.sampled_from(list(Channel)), st.booleans(), st.booleans()), max_size=3
        )
    )
    profile = AgentProfile(
        "a",
        absences=tuple(
            Absence(f"x{i}", AbsenceKind.OTHER, NOW + start * 1000, NOW + (start + length) * 1000)
            for i, (start, length) in enumerate(spans)
        ),
        shift_end_ms=0 if shift_in_s is None else NOW + shift_in_s * 1000,
    )
    active = tuple(
        ActiveWork(f"w{i}", channel, 10, NOW - 5000, offered=offered, wrap_until_ms=wrap * NOW)
        for i, (channel, offered, wrap) in enumerate(works)
    )
    beat_ago_s = draw(st.integers(0, 200))
    presence = draw(st.sampled_from(list(Presence)))
    return AgentSnapshot(
        profile, presence=presence, heartbeat_ms=NOW - beat_ago_s * 1000, active=active
    )


@settings(max_examples=300, deadline=None)
@given(agent=_agents(), timeout_s=st.sampled_from([0, 5, 120]), reclaim=st.booleans())
def test_no_reclaim_is_due_before_reclaim_due_ms(
    agent: AgentSnapshot, timeout_s: int, reclaim: bool
) -> None:
    """An agent as it is never has to give work back before ``reclaim_due_ms`` (what a quiet
    tick rests on), and has to at it; ``None`` when it never would."""
    policy = dataclasses.replace(
        Policy(), heartbeat_timeout_s=timeout_s, reclaim_on_absence=reclaim
    )
    due = reclaim_due_ms(agent, NOW, policy)
    horizon = NOW + 400_000
    moments = sorted({NOW, horizon, *(t + d for t in _edges(agent, policy) for d in (-1, 0, 1))})
    taken = [m for m in moments if NOW <= m <= horizon and must_reclaim(agent, m, policy)]
    if not reclaim:  # the dispatcher takes nothing back, whatever must_reclaim says
        assert due is None
    elif due is None:
        assert taken == []
    else:
        assert taken[0] == due, (taken, due)


def _edges(agent: AgentSnapshot, policy: Policy) -> list[int]:
    """Every time at which the agent's rules can change."""
    profile = agent.profile
    edges = [profile.shift_end_ms, agent.heartbeat_ms + policy.heartbeat_timeout_s * 1000]
    return edges + [t for a in profile.absences for t in (a.start_ms, a.end_ms)]


class _Blipped(MemoryStore):
    """A store that says whether a request found it unavailable lately (``down``)."""

    down = False

    def unavailable_within(self, seconds: float, tenant: str) -> bool:
        return self.down


def test_after_the_store_was_unavailable_lapsed_heartbeats_and_offers_wait() -> None:
    """After an outage of the store (agents' heartbeats and answers may have failed with
    it), a tick takes nothing back from agents whose heartbeats lapsed and counts the
    offers it times out as missed by nobody; once the grace is over, a lapsed heartbeat
    takes the work back as usual."""
    clock = FakeClock()
    store = _Blipped(clock)
    chat = frozen_map({Channel.CHAT: 10})
    policy = dataclasses.replace(
        Policy(),
        heartbeat_timeout_s=5,
        max_missed_offers=1,
        offer_timeout_s=chat,
        reclaim_channels=frozenset({Channel.CHAT}),
    )
    store.put_policy(T, policy)
    _agent(store, "a")
    _queue(store, clock, "c1")
    dispatcher = Dispatcher(store, batch_size=10, owner="me")
    assert dispatcher.run_tick(T).placed == 1
    offer = store.get_call(T, "c1")
    assert offer.status == CallStatus.OFFERED
    clock.advance(20_000)  # the offer expired, the heartbeat lapsed: the store was away
    store.down = True
    assert dispatcher.run_tick(T).timed_out == 1
    agent = store.get_agent(T, "a")
    assert (agent.presence, agent.missed_offers) == (Presence.AVAILABLE, 0)
    _agent(store, "b")
    store.heartbeat(T, "b")
    assert dispatcher.run_tick(T).placed == 1  # c1 offered to b, who accepts
    asg = store.get_call(T, "c1").assignment
    assert asg is not None
    store.accept_offer(T, asg.assignment_id, asg.token)
    clock.advance(6_000)  # b's heartbeat lapsed too, while the store was away
    assert dispatcher.run_tick(T).reclaimed == 0
    store.down = False  # the grace is over: b is gone for real
    assert dispatcher.run_tick(T).reclaimed == 1


def test_a_call_predicted_to_breach_is_escalated_ahead() -> None:
    """With a 60 s chat target, the last of five calls is predicted to wait past it (four
    slots, ten-minute chats): SLA_AT_RISK, a priority boost, and it is placed in this pass
    ahead of an older call that is not predicted to breach."""
    store, clock = _store()
    sla = frozen_map({Channel.CHAT: SlaTarget(60)})
    store.put_policy(T, dataclasses.replace(store.get_policy(T), sla=sla))
    for i in range(5):
        _queue(store, clock, f"c{i}")
        clock.advance(1000)
    _agent(store, "a1", chats=2)
    _agent(store, "a2", chats=2)
    report = Dispatcher(store).run_once(T)
    assert report.escalated == 1
    assert store.get_call(T, "c4").sla_at_risk
    assert [e.type for e in store.read_events(T) if e.call_id == "c4"][-1] == "ASSIGNED"
    assert store.get_call(T, "c3").status == CallStatus.QUEUED


def test_a_failing_tenant_does_not_hold_up_the_others() -> None:
    """The background loop runs each tenant's pass on its own: when one tenant's pass fails
    (here its policy cannot be read), the next tenant's calls are still placed."""
    store, clock = _store()
    _agent(store, "a1")
    _queue(store, clock, "c1")
    real_get_policy = store.get_policy

    def get_policy(tenant: str) -> Policy:
        if tenant == "aaa-broken":
            raise RuntimeError("unreadable policy")
        return real_get_policy(tenant)

    store.get_policy = get_policy  # type: ignore[method-assign]
    store.tenants = lambda: ["aaa-broken", T]  # type: ignore[method-assign]
    dispatcher = Dispatcher(store, tick_s=0.01)
    dispatcher.start()
    try:
        for _ in range(500):  # bounded: at most ~5 s
            if store.get_call(T, "c1").status == CallStatus.ASSIGNED:
                break
            threading.Event().wait(0.01)
    finally:
        dispatcher.stop()
    assert store.get_call(T, "c1").status == CallStatus.ASSIGNED


class _FailingSecondCommit:
    """A store whose second ``commit_assignment`` finds Redis away (a pass failing half-way)."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.commits = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def commit_assignment(self, tenant: str, claim: Any) -> Any:
        self.commits += 1
        if self.commits == 2:
            raise StoreUnavailableError("redis is away")
        return self.store.commit_assignment(tenant, claim)


def test_a_pass_failing_half_way_keeps_what_it_counted() -> None:
    """Placements are counted as they commit: a pass whose second commit fails still counts
    its first placement (the call is placed, the counter says so)."""
    store, clock = _store()
    for i in range(3):
        _queue(store, clock, f"c{i}")
        clock.advance(1_000)
    for agent_id in ("a1", "a2", "a3"):
        _agent(store, agent_id)
    before = sample("router_dispatch_placed_total", tenant=T)
    with pytest.raises(StoreUnavailableError):
        Dispatcher(cast(Store, _FailingSecondCommit(store)), owner="me").run_once(T)
    placed = [i for i in range(3) if store.get_call(T, f"c{i}").status == CallStatus.ASSIGNED]
    assert len(placed) == 1
    assert sample("router_dispatch_placed_total", tenant=T) == before + 1


def test_the_longest_wait_gauge_leaves_out_the_calls_just_placed() -> None:
    """A call that waited ten minutes and is placed by the pass no longer waits: the gauge
    reads the longest wait of the calls still waiting (0 when none)."""
    store, clock = _store()
    _queue(store, clock, "old")
    clock.advance(600_000)
    _agent(store, "a1")
    Dispatcher(store, owner="me").run_once(T)
    assert store.get_call(T, "old").status == CallStatus.ASSIGNED
    assert sample("router_queue_longest_wait_seconds", tenant=T) == 0
    assert sample("router_queue_depth", tenant=T) == 0


def test_calls_that_waited_their_channels_max_wait_leave_the_queue() -> None:
    """With a 60 s chat limit, a pass expires the chats that have waited 60 s (counted on
    ``router_calls_expired_total``) and places the younger one with the free agent; a call
    nobody can take expires too, and the queue gauge no longer counts it. A channel without
    a limit keeps its calls (a voice call nobody can take)."""
    store, clock = _store()
    policy = store.get_policy(T)
    store.put_policy(
        T, dataclasses.replace(policy, max_wait_s=frozen_map({Channel.CHAT: 60}), version=1)
    )
    expired = sample("router_calls_expired_total", tenant=T, channel="chat")
    _queue(store, clock, "old")
    _queue(store, clock, "vip", skill="vip")  # nobody has the skill
    voice = Call("voice", Channel.VOICE, (SkillRequirement("vip", 1),), created_ms=clock.now_ms)
    store.enqueue(T, "r-voice", "fp", voice, policy=store.get_policy(T))
    clock.advance(59_999)
    _queue(store, clock, "young")
    dispatcher = Dispatcher(store)
    assert dispatcher.run_once(T).expired == 0
    clock.advance(1)
    _agent(store, "a1")
    report = dispatcher.run_once(T)
    assert (report.expired, report.placed, report.queued) == (2, 1, 1)
    statuses = {c: store.get_call(T, c).status for c in ("old", "vip", "young", "voice")}
    assert statuses == {
        "old": CallStatus.EXPIRED,
        "vip": CallStatus.EXPIRED,
        "young": CallStatus.ASSIGNED,
        "voice": CallStatus.QUEUED,
    }
    assert sample("router_calls_expired_total", tenant=T, channel="chat") == expired + 2
    assert sample("router_queue_depth", tenant=T) == 1


def test_a_tick_opens_its_tenants_passes_a_batch_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A tick over five tenants with batches of two opens their passes in three store calls
    and places each tenant's waiting call; a tenant whose pass this replica is running
    already (an Assign's inline pass) gets its tick's pass once that one ends."""
    monkeypatch.setattr("router.dispatcher.SWEEP_BATCH", 2)
    clock = FakeClock()
    store = MemoryStore(clock)
    tenants = [f"t{i}" for i in range(5)]
    for tenant in tenants:
        store.create_agent(tenant, AgentProfile("a1", skills=frozen_map({"billing": 5})))
        store.set_presence(tenant, "a1", Presence.AVAILABLE)
        call = Call("c1", Channel.CHAT, (SkillRequirement("billing", 1),), created_ms=clock.now_ms)
        store.enqueue(tenant, "r-c1", "fp", call, policy=store.get_policy(tenant))
    opened: list[list[str]] = []
    real = store.open_passes

    def counted(batch: Any, *args: Any) -> Any:
        opened.append(list(batch))
        return real(batch, *args)

    monkeypatch.setattr(store, "open_passes", counted)
    dispatcher = Dispatcher(store, owner="me")
    busy = dispatcher._running_lock("t3")
    busy.acquire()
    seen: list[object] = []

    def inline_pass_ends() -> None:  # what the tick had done while t3's pass ran
        seen.extend([store.get_call("t2", "c1").status, store.get_call("t3", "c1").status])
        seen.append(len(opened))
        busy.release()

    threading.Timer(0.2, inline_pass_ends).start()
    dispatcher._sweep(tenants)
    assert seen == [CallStatus.ASSIGNED, CallStatus.QUEUED, 2]
    assert opened == [["t0", "t1"], ["t2", "t3"], ["t4"]]
    assert {store.get_call(t, "c1").status for t in tenants} == {CallStatus.ASSIGNED}


def test_a_tick_reads_on_past_a_batch_that_lost_calls_to_the_limit() -> None:
    """The first batch (two calls nobody can take) loses its oldest to the queue time
    limit: the tick still reads on, and the free agent takes the chat further back."""
    store, clock = _store()
    policy = store.get_policy(T)
    store.put_policy(
        T, dataclasses.replace(policy, max_wait_s=frozen_map({Channel.CHAT: 60}), version=1)
    )
    _queue(store, clock, "vip0", skill="vip")  # reaches the limit
    clock.advance(30_000)
    for i in range(1, 4):
        _queue(store, clock, f"vip{i}", skill="vip")  # nobody has the skill
        clock.advance(1_000)
    _queue(store, clock, "c1")  # in the third batch of two
    _agent(store, "a1")
    clock.advance(30_000)
    report = Dispatcher(store, batch_size=2, owner="me").run_tick(T)
    assert (report.expired, report.placed) == (1, 1)
    assert store.get_call(T, "c1").status == CallStatus.ASSIGNED


def test_a_tick_keeps_no_tenant_from_other_replicas_before_its_pass() -> None:
    """Replica A's tick over t0 and t1 waits for A's own pass over t0 (an Assign's inline
    pass); meanwhile replica B's pass over t1 is not kept out: the tick's look took no
    lease, and B places t1's call."""
    clock = FakeClock()
    store = MemoryStore(clock)
    for tenant in ("t0", "t1"):
        store.create_agent(tenant, AgentProfile("a1", skills=frozen_map({"billing": 5})))
        store.set_presence(tenant, "a1", Presence.AVAILABLE)
    a, b = Dispatcher(store, owner="A"), Dispatcher(store, owner="B")
    busy = a._running_lock("t0")
    busy.acquire()
    sweep = threading.Thread(target=a._sweep, args=(["t0", "t1"],))
    sweep.start()
    try:
        for _ in range(500):  # bounded: until A's look marked t1's tick (~5 s at most)
            if store._tenants["t1"].tick is not None:
                break
            threading.Event().wait(0.01)
        call = Call("c1", Channel.CHAT, (SkillRequirement("billing", 1),), created_ms=clock.now_ms)
        store.enqueue("t1", "r-c1", "fp", call, policy=store.get_policy("t1"))
        report = b.run_once("t1", full=False)
        assert (report.skipped, report.placed) == (False, 1)
    finally:
        busy.release()
        sweep.join(10)
    assert store.get_call("t1", "c1").status == CallStatus.ASSIGNED


def test_an_inline_pass_past_its_deadline_expires_nothing_more() -> None:
    """A pass inside an Assign whose client stopped waiting leaves the expiries to a
    background pass (it asks for one), as it does the placements."""
    store, clock = _store()
    policy = store.get_policy(T)
    store.put_policy(
        T, dataclasses.replace(policy, max_wait_s=frozen_map({Channel.CHAT: 60}), version=1)
    )
    _queue(store, clock, "old", skill="vip")
    clock.advance(61_000)
    dispatcher = Dispatcher(store)
    with deadline.scope(0.0):
        assert dispatcher.run_once(T, full=False).expired == 0
    assert store.get_call(T, "old").status == CallStatus.QUEUED
    assert T in dispatcher._pending
    assert dispatcher.run_once(T, full=False).expired == 1


def test_an_inline_pass_logs_under_its_own_name_not_the_assigns_call() -> None:
    """A pass run inside an Assign places other calls: its ``dispatch_finished`` line keeps
    the RPC's method, tenant and support id, not the Assign's call and request ids (its
    calls are not that call); the Assign's own lines after it keep them."""
    store, clock = _store()
    for i in range(2):
        _queue(store, clock, f"c{i}")
    _agent(store, "a1", chats=2)
    ids = {"call_id": "new", "request_id": "r-new", "x_request_id": "support-1"}
    with log_lines() as lines, structlog.contextvars.bound_contextvars(tenant=T, **ids):
        assert Dispatcher(store).run_once(T, full=False).placed == 2
        structlog.get_logger("test").info("assign_answered")
    finished, after = lines[-2], lines[-1]
    assert finished["event"] == "dispatch_finished"
    assert "call_id" not in finished
    assert "request_id" not in finished
    assert finished["x_request_id"] == "support-1"
    assert {key: after[key] for key in ids} == ids


def test_a_chat_behind_older_emails_expires_while_nobody_has_room() -> None:
    """The queue holds four older emails (a day's limit) ahead of a chat (a minute's), and
    no agent has room, so the passes read the first batch only: the tick also looks up the
    calls past their limit wherever they wait, and the chat expires on the first one."""
    store, clock = _store()
    policy = store.get_policy(T)
    limits = frozen_map({Channel.CHAT: 60, Channel.EMAIL: 86_400})
    store.put_policy(T, dataclasses.replace(policy, max_wait_s=limits, version=1))
    for i in range(4):
        email = Call(f"e{i}", Channel.EMAIL, created_ms=clock.now_ms)
        store.enqueue(T, f"r-e{i}", "fp", email, policy=store.get_policy(T))
        clock.advance(1_000)
    _queue(store, clock, "chat")
    clock.advance(60_000)
    dispatcher = Dispatcher(store, batch_size=2, owner="me")
    ticks = [dispatcher.run_tick(T) for _ in range(2)]
    assert [report.expired for report in ticks] == [1, 0]
    assert [report.queued for report in ticks] == [4, 4]
    assert store.get_call(T, "chat").status == CallStatus.EXPIRED
    assert {store.get_call(T, f"e{i}").status for i in range(4)} == {CallStatus.QUEUED}
    assert [dispatcher.run_tick(T).expired for _ in range(3)] == [0, 0, 0]  # round again


def _limited_email_queue(calls: list[tuple[str, Channel, str]]) -> tuple[MemoryStore, FakeClock]:
    """A store whose policy gives chats a minute and emails a day in the queue, with
    ``calls`` (id, channel, required skill) queued 10 ms apart."""
    clock = FakeClock()
    store = MemoryStore(clock)
    limits = frozen_map({Channel.CHAT: 60, Channel.EMAIL: 86_400})
    units = frozen_map({Channel.EMAIL: 100, Channel.CHAT: 100})  # one item fills an agent
    policy = dataclasses.replace(
        Policy(),
        heartbeat_timeout_s=0,
        sla=frozen_map({}),
        max_wait_s=limits,
        channel_units=units,
        version=1,
    )
    store.put_policy(T, policy)
    for call_id, channel, skill in calls:
        call = Call(call_id, channel, (SkillRequirement(skill, 1),), created_ms=clock.now_ms)
        store.enqueue(T, f"r-{call_id}", "fp", call, policy=store.get_policy(T))
        clock.advance(10)
    return store, clock


def test_a_chat_deep_in_the_queue_expires_on_the_first_tick_past_its_limit() -> None:
    """A chat behind 1,500 emails (a day's limit each), three agents taking an email each
    tick at the head, the passes reading 10 calls a batch: the chat is still waiting a
    millisecond before its minute is up and expired by the first tick after, however deep
    it waits (the look behind the batches once went a batch further back each tick, and
    took 150 ticks to reach it)."""
    emails = [(f"e{i}", Channel.EMAIL, "x") for i in range(1_500)]
    after = [(f"f{i}", Channel.EMAIL, "x") for i in range(60)]
    store, clock = _limited_email_queue([*emails, ("chat", Channel.CHAT, "x"), *after])
    for i in range(3):
        capacity = frozen_map({Channel.EMAIL: 1, Channel.CHAT: 0})
        store.create_agent(T, AgentProfile(f"a{i}", skills=frozen_map({"x": 5}), capacity=capacity))
        store.set_presence(T, f"a{i}", Presence.AVAILABLE)
    limit_at = store.get_call(T, "chat").call.created_ms + 60_000
    dispatcher = Dispatcher(store, batch_size=10, owner="me")
    ticks = []
    for now in (limit_at - 1_001, limit_at - 1, limit_at):
        clock.advance(now - clock.now_ms)
        ticks.append(dispatcher.run_tick(T))
        for i in range(3):  # each agent finishes its email before the next tick
            for work in store.get_agent(T, f"a{i}").active:
                asg = store.get_assignment(T, work.assignment_id)
                store.finish_assignment(T, asg.assignment_id, asg.token, AssignmentState.COMPLETED)
    assert [(report.placed, report.expired) for report in ticks] == [(3, 0), (3, 0), (3, 1)]
    assert store.get_call(T, "chat").status == CallStatus.EXPIRED
    (expired,) = [entry for entry in store.history(T, 0) if entry.kind == "expired"]
    assert (expired.call_id, expired.wait_ms) == ("chat", 60_000)


def test_expiries_behind_move_the_placement_scan_back() -> None:
    """Two emails past their limit lie within what the placement scan read last tick: the
    look behind expires them, and the scan's next start moves back by them, so the chat an
    agent can take further back is read (and placed) on the next tick, not a round later."""
    calls = [
        *[(f"v{i}", Channel.CHAT, "vip") for i in range(4)],  # nobody has the skill
        ("m4", Channel.EMAIL, "x"),
        ("m5", Channel.EMAIL, "x"),
        *[(f"v{i}", Channel.CHAT, "vip") for i in range(6, 14)],
        ("c1", Channel.CHAT, "billing"),
        *[(f"v{i}", Channel.CHAT, "vip") for i in range(15, 30)],
    ]
    store, clock = _limited_email_queue(calls)
    policy = store.get_policy(T)
    limits = frozen_map({Channel.EMAIL: 60})
    store.put_policy(T, dataclasses.replace(policy, max_wait_s=limits, version=2))
    store.create_agent(T, AgentProfile("a1", skills=frozen_map({"billing": 5})))
    store.set_presence(T, "a1", Presence.AVAILABLE)
    clock.advance(59_700)  # the emails 0.5 s short of their limit
    dispatcher = Dispatcher(store, batch_size=2, owner="me")
    reports = []
    for _ in range(3):
        reports.append(dispatcher.run_tick(T))
        clock.advance(1_000)
    assert [(r.expired, r.placed) for r in reports] == [(0, 0), (2, 0), (0, 1)]
    assert store.get_call(T, "c1").status == CallStatus.ASSIGNED
