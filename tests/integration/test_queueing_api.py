"""Queueing, offers, SLA escalation, reclaiming and events, end to end over gRPC and Redis.

The store's clock is fake (moved by the tests); the dispatcher runs in the server as in
production, ticking every 50 ms of real time, so tests poll with ``wait_for_call``.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
import redis
from google.protobuf import field_mask_pb2
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from router import local_redis
from router.v1 import admin_pb2, routing_pb2
from router.v1 import types_pb2 as pb
from tests.helpers import FakeClock, log_lines, retries, sample
from tests.integration.service import Service, start_service

ASSIGNED = routing_pb2.AssignResponse.RESULT_ASSIGNED
QUEUED = routing_pb2.AssignResponse.RESULT_QUEUED
OFFERED = routing_pb2.AssignResponse.RESULT_OFFERED


def _channels(service: Service, *settings: pb.ChannelSetting) -> pb.Policy:
    return service.policies.UpdatePolicy(
        admin_pb2.UpdatePolicyRequest(
            tenant=service.tenant,
            policy=pb.Policy(channels=list(settings)),
            update_mask=field_mask_pb2.FieldMask(paths=["channels"]),
        )
    )


def _voice(**fields: object) -> pb.ChannelSetting:
    return pb.ChannelSetting(channel=pb.CHANNEL_VOICE, default_capacity=1, **fields)  # type: ignore[arg-type]


def _events(service: Service, after: str = "0", **filters: object) -> Iterator[pb.Event]:
    request = routing_pb2.WatchRequest(tenant=service.tenant, after_event_id=after, **filters)  # type: ignore[arg-type]
    stream = service.routing.Watch(request, timeout=10)
    try:
        yield from stream
    finally:
        stream.cancel()


def _headers(stream: Any) -> dict[str, str | bytes]:
    """A stream's response headers, waited for at most 5 s (none by then: empty)."""
    headers: list[tuple[str, str | bytes]] = []
    waiter = threading.Thread(target=lambda: headers.extend(stream.initial_metadata()))
    waiter.start()
    waiter.join(timeout=5)
    return dict(headers)


def _id(event_id: str) -> tuple[int, ...]:
    return tuple(int(part) for part in event_id.split("-"))


def _counted(name: str, expected: float, **labels: str) -> float:
    """``sample(name, **labels)`` once it reaches ``expected`` (the dispatcher counts after
    its pass, which may end after the test sees the pass's effect), or after 5 s."""
    deadline = time.monotonic() + 5
    while (value := sample(name, **labels)) < expected and time.monotonic() < deadline:
        time.sleep(0.01)
    return value


def test_busy_agents_queue_the_call_with_position_and_wait(service: Service) -> None:
    """Nobody free: QUEUED with its place and an estimated wait; freed capacity takes it."""
    service.agent("a1", skills={"billing": 5})
    first = service.assign("c1")
    assert first.result == ASSIGNED
    second = service.assign("c2")
    third = service.assign("c3")
    assert (second.result, second.position) == (QUEUED, 1)
    assert (third.result, third.position) == (QUEUED, 2)
    assert third.estimated_wait.ToSeconds() >= second.estimated_wait.ToSeconds() > 0
    assert service.get_call("c3").position == 2
    placed = sample("router_dispatch_placed_total", tenant="acme")
    service.complete(first.assignment)
    call = service.wait_for_call("c2", pb.CALL_STATUS_ASSIGNED)
    assert call.assignment.agent_id == "a1"
    assert service.get_call("c3").position == 1
    assert _counted("router_dispatch_placed_total", placed + 1, tenant="acme") == placed + 1


def test_queue_order_uses_priority_and_age(service: Service) -> None:
    """A higher-priority call jumps a newer one, but not one waiting much longer."""
    service.agent("a1", skills={"billing": 5})
    busy = service.assign("c0").assignment
    service.assign("old", priority=0)
    service.clock.advance(600_000)  # ten minutes: worth ten priority levels at 60 s each
    service.assign("new_low", priority=0)
    service.assign("new_high", priority=5)
    order = [service.get_call(c).position for c in ("old", "new_high", "new_low")]
    assert order == [1, 2, 3]
    service.heartbeat("a1")  # ten minutes passed: the agent's desktop is still alive
    service.complete(busy)
    assert service.wait_for_call("old", pb.CALL_STATUS_ASSIGNED).assignment.agent_id == "a1"


def test_cancel_while_queued_is_abandoned(service: Service) -> None:
    """A caller hanging up while queued is ABANDONED and leaves the queue; their wait is
    the time until they hung up."""
    service.agent("a1", skills={"billing": 5})
    service.assign("c1")
    service.assign("c2")
    service.assign("c3")
    service.clock.advance(7_000)
    reply = service.routing.Cancel(routing_pb2.CancelRequest(tenant=service.tenant, call_id="c2"))
    assert reply.call.status == pb.CALL_STATUS_ABANDONED
    assert service.get_call("c3").position == 1
    service.clock.advance(3_000)
    assert service.get_call("c2").waited.ToSeconds() == 7  # until the caller hung up


def test_a_call_nobody_takes_expires_at_its_channels_max_wait(service: Service) -> None:
    """A voice call needing a skill nobody has, under a 90 s voice limit: at 90 s it leaves
    the queue as EXPIRED with an EXPIRED event, counted in GetStats and against the service
    level; a retried Assign is FAILED_PRECONDITION, a Cancel returns it as it is. The policy
    reads the limit back; one over 30 days is INVALID_ARGUMENT naming the field."""
    policy = _channels(service, _voice(max_wait=Duration(seconds=90)))
    voice = next(c for c in policy.channels if c.channel == pb.CHANNEL_VOICE)
    assert voice.max_wait.ToSeconds() == 90
    with pytest.raises(grpc.RpcError) as refused:
        _channels(service, _voice(max_wait=Duration(seconds=31 * 86400)))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "policy.channels[0].max_wait" in (refused.value.details() or "")
    service.agent("a1", skills={"billing": 5})
    assert service.assign("c1", skills={"french": 1}).result == QUEUED
    service.clock.advance(89_000)
    assert service.get_call("c1").status == pb.CALL_STATUS_QUEUED
    service.clock.advance(1_000)
    call = service.wait_for_call("c1", pb.CALL_STATUS_EXPIRED)
    assert (call.position, call.waited.ToSeconds()) == (0, 90)
    (event,) = [e for e in call.timeline if e.type == "EXPIRED"]
    assert dict(event.data) == {"channel": "voice", "max_wait_s": "90"}
    with pytest.raises(grpc.RpcError) as retried:
        service.assign("c1", skills={"french": 1})
    assert retried.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "expired" in (retried.value.details() or "")
    reply = service.routing.Cancel(routing_pb2.CancelRequest(tenant=service.tenant, call_id="c1"))
    assert reply.call.status == pb.CALL_STATUS_EXPIRED
    stats = service.routing.GetStats(routing_pb2.GetStatsRequest(tenant=service.tenant))
    counts = next(c for c in stats.channels if c.channel == pb.CHANNEL_VOICE)
    assert (counts.queued, counts.expired_15m, counts.expired_60m) == (0, 1, 1)
    assert counts.service_level_15m == 0.0


def test_offer_accept_and_reject_never_reoffers_to_the_same_agent(service: Service) -> None:
    """With offers on, Assign answers OFFERED; Accept makes it ACTIVE; a rejected call goes
    to someone else with its original age."""
    _channels(service, _voice(offer_timeout=Duration(seconds=20)))
    service.agent("a1", skills={"billing": 9})
    offer = service.assign("c1")
    assert offer.result == OFFERED
    assert offer.assignment.state == pb.ASSIGNMENT_STATE_OFFERED
    accepted = service.routing.Accept(
        routing_pb2.AcceptRequest(
            tenant=service.tenant,
            assignment_id=offer.assignment.assignment_id,
            fencing_token=offer.assignment.fencing_token,
        )
    )
    assert accepted.assignment.state == pb.ASSIGNMENT_STATE_ACTIVE
    service.agent("a2", skills={"billing": 8})
    second = service.assign("c2")
    assert second.assignment.agent_id == "a2"
    service.agent("a3", skills={"billing": 2})
    rejected = service.routing.Reject(
        routing_pb2.RejectRequest(
            tenant=service.tenant,
            assignment_id=second.assignment.assignment_id,
            fencing_token=second.assignment.fencing_token,
            reason="wrong account",
        )
    )
    assert rejected.assignment.state == pb.ASSIGNMENT_STATE_REJECTED
    again = service.wait_for_call("c2", pb.CALL_STATUS_OFFERED)
    assert again.assignment.agent_id == "a3"
    assert again.waited.ToMilliseconds() >= 0


def test_the_lines_of_rpcs_naming_an_assignment_carry_its_call_id(service: Service) -> None:
    """Accept, Reject, Complete and Release name only an assignment; their lines carry the
    call id too (from the assignment the store returns), so one call's lines are found by
    ``call_id``."""
    _channels(service, _voice(offer_timeout=Duration(seconds=20)))
    service.agent("a1", skills={"billing": 9})

    def offered(call_id: str) -> pb.Assignment:
        reply = service.assign(call_id)
        assert reply.result == OFFERED
        return reply.assignment

    def accept(offer: pb.Assignment) -> pb.Assignment:
        return service.routing.Accept(
            routing_pb2.AcceptRequest(
                tenant=service.tenant,
                assignment_id=offer.assignment_id,
                fencing_token=offer.fencing_token,
            )
        ).assignment

    with log_lines() as entries:
        service.complete(accept(offered("done")))
        rejected = offered("rejected")
        service.routing.Reject(
            routing_pb2.RejectRequest(
                tenant=service.tenant,
                assignment_id=rejected.assignment_id,
                fencing_token=rejected.fencing_token,
            )
        )
        service.agent("a2", skills={"billing": 9})
        service.wait_for_call("rejected", pb.CALL_STATUS_OFFERED)  # to a2: a1 said no
        released = accept(offered("released"))
        service.routing.Release(
            routing_pb2.ReleaseRequest(
                tenant=service.tenant,
                assignment_id=released.assignment_id,
                fencing_token=released.fencing_token,
            )
        )
    named = {"Accept", "Reject", "Complete", "Release"}
    lines = [
        (line["method"].rsplit("/", 1)[1], line.get("call_id"))
        for line in entries
        if line["event"] == "rpc_finished" and line["method"].rsplit("/", 1)[1] in named
    ]
    assert lines == [
        ("Accept", "done"),
        ("Complete", "done"),
        ("Reject", "rejected"),
        ("Accept", "released"),
        ("Release", "released"),
    ]


def test_an_offer_timed_out_by_the_dispatcher_stays_in_the_callers_trace(
    service: Service,
) -> None:
    """The dispatcher times an offer out outside any request; the call's timeline shows the
    time-out and its return to the queue in the trace of the Assign that made the call, and
    the next Assign's own trace only on its own events."""
    _channels(service, _voice(offer_timeout=Duration(seconds=10)))
    service.agent("a1", skills={"billing": 5})
    caller = "4bf92f3577b34da6a3ce929d0e0e4736"
    offer = service.assign("c1", metadata=(("traceparent", f"00-{caller}-00f067aa0ba902b7-01"),))
    assert offer.result == OFFERED
    service.clock.advance(11_000)
    call = service.wait_for_call("c1", pb.CALL_STATUS_QUEUED)
    timeline = [(e.type, e.data.get("trace_id")) for e in call.timeline]
    assert timeline[:3] == [
        ("OFFERED", caller),
        ("OFFER_TIMED_OUT", caller),
        ("QUEUED", caller),
    ]
    assert {trace for _, trace in timeline} == {caller}  # SLA marks since: the same trace
    other = "0af7651916cd43dd8448eb211c80319c"
    second = service.assign("c2", metadata=(("traceparent", f"00-{other}-b7ad6b7169203331-01"),))
    assert (second.result, second.assignment.agent_id) == (OFFERED, "a1")  # c1 excludes a1
    assert {e.data.get("trace_id") for e in service.get_call("c2").timeline} == {other}
    assert {e.data.get("trace_id") for e in service.get_call("c1").timeline} == {caller}


def test_missed_offers_make_the_agent_not_responding(service: Service) -> None:
    """Offers that time out go back to the queue; after 3 misses the agent gets no work."""
    _channels(service, _voice(offer_timeout=Duration(seconds=10)))
    service.agent("slow", skills={"billing": 5})
    timed_out = sample("router_offers_timed_out_total", tenant="acme")
    for i in range(3):
        offer = service.assign(f"c{i}")
        assert offer.assignment.agent_id == "slow"
        service.clock.advance(11_000)
        service.wait_for_call(f"c{i}", pb.CALL_STATUS_QUEUED)
    agent = service.get_agent("slow")
    assert agent.status.presence == pb.PRESENCE_NOT_RESPONDING
    counted = _counted("router_offers_timed_out_total", timed_out + 3, tenant="acme")
    assert counted == timed_out + 3
    timeline = [e.type for e in service.get_call("c0").timeline]
    assert timeline[:3] == ["OFFERED", "OFFER_TIMED_OUT", "QUEUED"]


def _completes_into_wrap_up(service: Service, assignment: pb.Assignment) -> None:
    """Complete ``assignment`` (of the only agent); its slot returns after a 30 s wrap-up."""
    service.complete(assignment)
    assert service.assign("c2", no_queue=True).result == routing_pb2.AssignResponse.RESULT_NO_AGENT
    service.clock.advance(31_000)
    assert service.assign("c3", no_queue=True).result == ASSIGNED


def _routed_before_a_policy_change(service: Service, other: Service) -> pb.Assignment:
    """Route "c1" to a new agent through ``service`` (which thereby reads the policy), then
    set a 30 s voice wrap-up through ``other``."""
    service.agent("a1", skills={"billing": 5})
    first = service.assign("c1").assignment
    _channels(other, _voice(wrap_up=Duration(seconds=30)))
    return first


def test_wrap_up_holds_the_slot_after_complete(service: Service) -> None:
    """After Complete the agent's slot returns only when wrap-up ends."""
    _channels(service, _voice(wrap_up=Duration(seconds=30)))
    service.agent("a1", skills={"billing": 5})
    _completes_into_wrap_up(service, service.assign("c1").assignment)


@pytest.fixture
def idle_pair(redis_server: local_redis.LocalRedis) -> Iterator[tuple[Service, Service]]:
    """Two replicas over one empty Redis and clock whose dispatchers tick once a minute (the
    longest tick there is), so neither reads the policy behind a test's back: a tick's full
    pass reads it, and which replica makes the pass is a race."""
    client = redis.Redis.from_url(redis_server.url, decode_responses=False)
    client.flushall()
    first = start_service(redis_server.url, FakeClock(), client, dispatch_tick_s=60)
    second = start_service(redis_server.url, first.clock, client, dispatch_tick_s=60)
    try:
        yield first, second
    finally:
        for replica in (first, second):
            replica.channel.close()
            replica.running.stop(0)
        client.close()


def test_complete_follows_a_policy_changed_through_another_replica(
    idle_pair: tuple[Service, Service],
) -> None:
    """Complete ends the assignment under the policy its replica last read, unless the
    policy changed since (the store checks): a wrap-up set through another replica after
    this one routed the call still holds the agent after this one's Complete."""
    service, second_replica = idle_pair
    first = _routed_before_a_policy_change(service, second_replica)
    retried = retries("policy")
    _completes_into_wrap_up(service, first)
    assert retries("policy") - retried == 1  # the stale policy refused, read again


def test_accept_follows_a_policy_changed_through_another_replica(
    idle_pair: tuple[Service, Service],
) -> None:
    """Accept checks the agent under the policy its replica last read, unless the policy
    changed since (the store checks): with offers taken back from agents who leave turned on
    through another replica, which also sets the agent offline, this replica's Accept is
    FAILED_PRECONDITION, not an accepted chat held by an offline agent."""
    service, other = idle_pair
    chat = pb.ChannelSetting(
        channel=pb.CHANNEL_CHAT, default_capacity=1, offer_timeout=Duration(seconds=120)
    )
    service.policies.UpdatePolicy(
        admin_pb2.UpdatePolicyRequest(
            tenant=service.tenant,
            policy=pb.Policy(channels=[chat], reclaim_on_absence=False),
            update_mask=field_mask_pb2.FieldMask(paths=["channels", "reclaim_on_absence"]),
        )
    )
    service.agent("a1", skills={"billing": 5})
    offer = service.assign("c1", channel=pb.CHANNEL_CHAT).assignment
    assert offer.state == pb.ASSIGNMENT_STATE_OFFERED
    other.policies.UpdatePolicy(
        admin_pb2.UpdatePolicyRequest(
            tenant=service.tenant,
            policy=pb.Policy(reclaim_on_absence=True),
            update_mask=field_mask_pb2.FieldMask(paths=["reclaim_on_absence"]),
        )
    )
    other.presence("a1", pb.PRESENCE_OFFLINE)
    retried = retries("policy")
    with pytest.raises(grpc.RpcError) as err:
        service.routing.Accept(
            routing_pb2.AcceptRequest(
                tenant=service.tenant,
                assignment_id=offer.assignment_id,
                fencing_token=offer.fencing_token,
            )
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "offline" in (err.value.details() or "")
    assert retries("policy") - retried == 1  # the stale policy refused, read again
    assert service.get_call("c1").status == pb.CALL_STATUS_OFFERED


def test_release_after_a_policy_change_on_another_replica_requeues(
    service: Service, second_replica: Service
) -> None:
    """Release, like Complete, reads nothing first: when the policy changed through another
    replica since this one read it, the script refuses the old policy and this replica
    reads it again and retries; the client just sees the call back in the queue."""
    first = _routed_before_a_policy_change(service, second_replica)
    released = service.routing.Release(
        routing_pb2.ReleaseRequest(
            tenant=service.tenant,
            assignment_id=first.assignment_id,
            fencing_token=first.fencing_token,
        )
    ).assignment
    assert released.state == pb.ASSIGNMENT_STATE_RELEASED
    assert service.get_call("c1").status == pb.CALL_STATUS_QUEUED


def test_long_email_is_not_given_to_an_agent_whose_shift_ends(service: Service) -> None:
    """A two-hour email skips the agent leaving in twenty minutes."""
    service.agent("leaving", skills={"billing": 9})
    service.agent("staying", skills={"billing": 3})
    shift_end = Timestamp()
    shift_end.FromMilliseconds(service.clock.now_ms + 20 * 60_000)
    service.admin.UpdateAgent(
        admin_pb2.UpdateAgentRequest(
            tenant=service.tenant,
            agent=pb.Agent(agent_id="leaving", shift_end=shift_end),
            update_mask=field_mask_pb2.FieldMask(paths=["shift_end"]),
        )
    )
    reply = service.assign(
        "mail", channel=pb.CHANNEL_EMAIL, expected_handle_time=Duration(seconds=7200)
    )
    assert reply.assignment.agent_id == "staying"
    excluded = {e.reason: e.count for e in reply.explanation.excluded}
    assert excluded == {pb.EXCLUSION_REASON_SHIFT_ENDING: 1}


def test_an_offer_leaves_room_to_accept_it_before_the_shift_ends(service: Service) -> None:
    """On a channel that offers, a 10 s call skips the agent whose shift ends in 12 s when
    the offer may wait a minute for its Accept: work counts from the offer's time-out."""
    _channels(service, _voice(offer_timeout=Duration(seconds=60)))
    service.agent("leaving", skills={"billing": 9})
    service.agent("staying", skills={"billing": 3})
    shift_end = Timestamp()
    shift_end.FromMilliseconds(service.clock.now_ms + 12_000)
    service.admin.UpdateAgent(
        admin_pb2.UpdateAgentRequest(
            tenant=service.tenant,
            agent=pb.Agent(agent_id="leaving", shift_end=shift_end),
            update_mask=field_mask_pb2.FieldMask(paths=["shift_end"]),
        )
    )
    reply = service.assign("c1", expected_handle_time=Duration(seconds=10))
    assert reply.assignment.agent_id == "staying"
    assert reply.assignment.state == pb.ASSIGNMENT_STATE_OFFERED
    excluded = {e.reason: e.count for e in reply.explanation.excluded}
    assert excluded == {pb.EXCLUSION_REASON_SHIFT_ENDING: 1}


def test_offers_are_reclaimed_when_the_agent_goes_offline(service: Service) -> None:
    """An agent logging off with an open offer: the call moves to someone else."""
    _channels(service, _voice(offer_timeout=Duration(seconds=60)))
    service.agent("a1", skills={"billing": 9})
    offer = service.assign("c1").assignment
    service.agent("a2", skills={"billing": 2})
    reclaimed = sample("router_reclaimed_total", tenant="acme")
    service.presence("a1", pb.PRESENCE_OFFLINE)
    call = service.wait_until("c1", lambda c: c.assignment.agent_id == "a2")
    assert call.status == pb.CALL_STATUS_OFFERED
    assert call.assignment.assignment_id != offer.assignment_id
    types = [e.type for e in call.timeline]
    assert "RECLAIMED" in types
    assert _counted("router_reclaimed_total", reclaimed + 1, tenant="acme") == reclaimed + 1


def test_a_break_keeps_accepted_email_and_logging_off_moves_it(service: Service) -> None:
    """An agent who goes on a break (or busy, or is set not responding) keeps the email they
    accepted: the dispatcher's passes leave it with them; logging off moves it to another
    agent."""
    email = pb.ChannelSetting(channel=pb.CHANNEL_EMAIL, default_capacity=1)
    _channels(service, email)
    service.agent("a1", skills={"billing": 9})
    held = service.assign("c1", channel=pb.CHANNEL_EMAIL).assignment
    assert held.agent_id == "a1"
    service.agent("a2", skills={"billing": 2})
    service.running.dispatcher.stop()  # the passes below are the test's own
    for presence in (pb.PRESENCE_BREAK, pb.PRESENCE_BUSY, pb.PRESENCE_NOT_RESPONDING):
        service.presence("a1", presence)
        service.running.dispatcher.run_once(service.tenant)
        call = service.get_call("c1")
        assert (call.status, call.assignment.assignment_id) == (
            pb.CALL_STATUS_ASSIGNED,
            held.assignment_id,
        )
    service.presence("a1", pb.PRESENCE_OFFLINE)
    service.running.dispatcher.run_once(service.tenant)
    service.running.dispatcher.run_once(service.tenant)  # places it again
    call = service.get_call("c1")
    assert call.assignment.agent_id == "a2"
    assert "RECLAIMED" in [e.type for e in call.timeline]


def test_widening_lets_a_waiting_call_reach_lower_levels(service: Service) -> None:
    """After the widening threshold a call accepts a lower skill level, and says so."""
    service.policies.UpdatePolicy(
        admin_pb2.UpdatePolicyRequest(
            tenant=service.tenant,
            policy=pb.Policy(
                widening=[pb.WideningStep(after=Duration(seconds=30), level_drop=3)],
                sla_at_risk=1.0,
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["widening", "sla_at_risk"]),
        )
    )
    service.agent("junior", skills={"billing": 4})
    email = pb.CHANNEL_EMAIL  # a 24 h target: no SLA escalation, only the widening step
    assert service.assign("c1", skills={"billing": 7}, channel=email).result == QUEUED
    service.clock.advance(31_000)
    call = service.wait_for_call("c1", pb.CALL_STATUS_ASSIGNED)
    assert call.assignment.agent_id == "junior"
    assert call.assignment.explanation.widening_step == 1


def test_sla_at_risk_escalates_and_offers_a_callback(service: Service) -> None:
    """A waiting voice call nearing its 20 s target raises SLA_AT_RISK for the supervisors,
    then SLA_BREACHED; a caller may ask for a callback and keep their place."""
    service.agent("a1", skills={"billing": 5})
    service.assign("c0")
    flagged = {
        kind: sample("router_sla_events_total", tenant="acme", kind=kind)
        for kind in ("at_risk", "breached")
    }
    queued = service.assign("c1")
    assert queued.result == QUEUED
    service.clock.advance(17_000)  # past 80 % of 20 s
    at_risk = next(_events(service, types=["SLA_AT_RISK"], call_id="c1"))
    assert at_risk.data["group"] == "supervisors"
    service.clock.advance(5_000)
    next(_events(service, types=["SLA_BREACHED"], call_id="c1"))
    for kind, before in flagged.items():
        counted = _counted("router_sla_events_total", before + 1, tenant="acme", kind=kind)
        assert counted == before + 1
    call = service.routing.RequestCallback(
        routing_pb2.RequestCallbackRequest(tenant=service.tenant, call_id="c1")
    ).call
    assert call.callback_requested
    assert call.sla_at_risk
    assert call.sla_breached
    assert call.position == 1


def test_watch_from_a_cursor_the_stream_never_made_is_out_of_range(service: Service) -> None:
    """A Watch cursor after the newest event (up to the largest id there is) answers
    OUT_OF_RANGE at once, naming the newest event: the client's cursor is not from this
    stream (lost with a Redis failover, say), so it reads the state again."""
    service.agent("a1", skills={"billing": 5})
    created = next(_events(service, "0", types=["AGENT_CREATED"])).event_id
    ahead = f"{int(created.split('-')[0]) + 60_000}-0"  # a minute after the last event
    for cursor in (f"{2**64 - 1}-{2**64 - 1}", ahead):
        with pytest.raises(grpc.RpcError) as refused:
            next(_events(service, cursor))
        assert refused.value.code() == grpc.StatusCode.OUT_OF_RANGE
        newest = re.search(r"the newest is (\d+)-(\d+);", refused.value.details() or "")
        assert newest is not None
        assert (int(newest[1]), int(newest[2])) >= tuple(int(p) for p in created.split("-"))


def test_watch_resumes_from_a_cursor_without_losing_events(service: Service) -> None:
    """A subscriber that disconnects mid-stream resumes after its last event id and gets
    every later event exactly once."""
    service.agent("a1", skills={"billing": 5})
    start = next(_events(service, types=["AGENT_CREATED"])).event_id
    seen: list[str] = []
    stream = service.routing.Watch(
        routing_pb2.WatchRequest(tenant=service.tenant, after_event_id=start), timeout=10
    )
    service.assign("c1")
    for event in stream:
        seen.append(event.event_id)
        if event.type == "ASSIGNED":
            break
    stream.cancel()  # the client goes away...
    service.assign("c2")  # ...events happen meanwhile...
    service.assign("c3")
    resumed = service.routing.Watch(
        routing_pb2.WatchRequest(tenant=service.tenant, after_event_id=seen[-1]), timeout=10
    )
    later: list[pb.Event] = []
    for event in resumed:
        later.append(event)
        if event.call_id == "c3" and event.type == "QUEUED":
            break
    resumed.cancel()
    ids = seen + [e.event_id for e in later]
    assert len(ids) == len(set(ids))
    assert [e.call_id for e in later if e.type == "QUEUED"] == ["c2", "c3"]


def test_watch_from_now_sends_its_cursor_before_any_event(service: Service) -> None:
    """A Watch "from now" sends its headers before any event, naming the event its stream
    starts after; a client that waits for them sees the events of every change it makes
    after (20 rounds: without the headers' promise a change made right after opening fell
    before the stream's start in some of them)."""
    service.agent("a1", skills={"billing": 5})
    for round_ in range(20):
        stream = service.routing.Watch(
            routing_pb2.WatchRequest(tenant=service.tenant, types=["PRESENCE_CHANGED"]),
            timeout=10,
        )
        cursor = _headers(stream).get("router-watch-cursor")
        assert isinstance(cursor, str)
        assert re.fullmatch(r"\d+-\d+", cursor)
        presence = pb.PRESENCE_BREAK if round_ % 2 else pb.PRESENCE_AVAILABLE
        service.admin.SetPresence(
            admin_pb2.SetPresenceRequest(tenant=service.tenant, agent_id="a1", presence=presence)
        )
        event = next(stream)
        stream.cancel()
        assert event.agent_id == "a1"
        assert _id(event.event_id) > _id(cursor)


def test_watch_rejects_a_bad_cursor(service: Service) -> None:
    """A malformed cursor is INVALID_ARGUMENT naming the field."""
    with pytest.raises(grpc.RpcError) as err:
        next(_events(service, after="yesterday"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "after_event_id" in (err.value.details() or "")


def test_stats_show_queue_presence_and_service_level(service: Service) -> None:
    """Live stats: queue depth by channel and skill, agents by presence, service level."""
    service.agent("a1", skills={"billing": 5})
    service.agent("a2", skills={"billing": 5}, presence=pb.PRESENCE_BREAK)
    busy = service.assign("c1").assignment
    service.assign("c2")
    service.clock.advance(5_000)
    stats = service.routing.GetStats(routing_pb2.GetStatsRequest(tenant=service.tenant))
    assert stats.queued == 1
    assert stats.longest_wait.ToSeconds() == 5
    voice = next(c for c in stats.channels if c.channel == pb.CHANNEL_VOICE)
    assert voice.queued == 1
    assert voice.answered_15m == 1
    assert voice.service_level_15m == 1.0
    assert {s.skill: s.queued for s in stats.skills} == {"billing": 1}
    presence = {p.presence: p.agents for p in stats.presence}
    assert presence[pb.PRESENCE_AVAILABLE] == 1
    assert presence[pb.PRESENCE_BREAK] == 1
    assert [a.agent_id for a in stats.agents] == ["a1", "a2"]
    service.complete(busy)


def test_calls_queued_on_a_dead_replica_are_placed_by_another(
    service: Service, second_replica: Service
) -> None:
    """Two replicas over one Redis: calls queued through the first are placed by the second
    after the first is gone (nothing lost, nothing doubled)."""
    service.agent("a1", skills={"billing": 5})
    busy = service.assign("c0").assignment
    for i in range(1, 4):
        assert service.assign(f"c{i}").result == QUEUED
    service.kill()
    second_replica.complete(busy)
    placed = second_replica.wait_for_call("c1", pb.CALL_STATUS_ASSIGNED)
    assert placed.assignment.agent_id == "a1"
    assert [second_replica.get_call(f"c{i}").position for i in (2, 3)] == [1, 2]


def test_concurrent_assigns_through_two_replicas_never_overfill(
    service: Service, second_replica: Service
) -> None:
    """Sixty calls through two replicas at once against five agents: exactly five assigned,
    every other call queued exactly once."""
    for i in range(5):
        service.agent(f"a{i}", skills={"billing": 5})
    replies: list[routing_pb2.AssignResponse] = []
    lock = threading.Lock()

    def fire(replica: Service, start: int) -> None:
        for i in range(start, start + 30):
            reply = replica.assign(f"c{i}")
            with lock:
                replies.append(reply)

    threads = [
        threading.Thread(target=fire, args=(service, 0)),
        threading.Thread(target=fire, args=(second_replica, 30)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    statuses = [service.get_call(f"c{i}").status for i in range(60)]
    assert statuses.count(pb.CALL_STATUS_ASSIGNED) == 5
    assert statuses.count(pb.CALL_STATUS_QUEUED) == 55
    agents = {service.get_call(f"c{i}").assignment.agent_id for i in range(60)} - {""}
    assert agents == {f"a{i}" for i in range(5)}


def test_new_call_joins_the_batch_when_others_wait(service: Service) -> None:
    """With calls waiting, a new call goes through the batch solve: it gets a free agent the
    waiting calls cannot use, and the waiting calls keep their places."""
    service.agent("biller", skills={"billing": 5})
    service.assign("c0", skills={"billing": 1})
    assert service.assign("c1", skills={"billing": 1}).result == QUEUED
    service.agent("techie", skills={"tech": 5})
    reply = service.assign("c2", skills={"tech": 1})
    assert reply.result == ASSIGNED
    assert reply.assignment.agent_id == "techie"
    assert service.get_call("c1").position == 1
    late = service.assign("c3", skills={"billing": 1})
    assert (late.result, late.position) == (QUEUED, 2)


def test_at_risk_call_jumps_to_the_next_widening_step(service: Service) -> None:
    """A voice call that cannot meet its 20 s target with the agents who fit it is escalated
    at once: it is decided as if it had reached the next widening step."""
    service.policies.UpdatePolicy(
        admin_pb2.UpdatePolicyRequest(
            tenant=service.tenant,
            policy=pb.Policy(widening=[pb.WideningStep(after=Duration(seconds=60), level_drop=3)]),
            update_mask=field_mask_pb2.FieldMask(paths=["widening"]),
        )
    )
    service.agent("junior", skills={"billing": 4})
    reply = service.assign("c1", skills={"billing": 7})
    assert reply.result == ASSIGNED
    assert reply.assignment.explanation.widening_step == 1
    assert service.get_call("c1").sla_at_risk
