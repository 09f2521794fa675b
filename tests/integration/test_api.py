"""The gRPC API end to end: a real server on a loopback port over a real redis-server."""

from __future__ import annotations

import gc
import re
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent import futures
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2  # type: ignore[import-untyped]  # no py.typed
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status  # type: ignore[import-untyped]  # no py.typed

from router import admin_api, local_redis, metrics, routing_api, server
from router.domain import AgentSnapshot
from router.redis_schema import Keys
from router.redis_store import RedisStore
from router.store import AgentQuery
from router.v1 import admin_pb2, routing_pb2
from router.v1 import types_pb2 as pb
from tests.helpers import log_lines, sample
from tests.integration.service import Service

ASSIGNED = routing_pb2.AssignResponse.RESULT_ASSIGNED
NO_AGENT = routing_pb2.AssignResponse.RESULT_NO_AGENT
QUEUED = routing_pb2.AssignResponse.RESULT_QUEUED
BAD = grpc.StatusCode.INVALID_ARGUMENT
MISSING = grpc.StatusCode.NOT_FOUND
TAKEN = grpc.StatusCode.ALREADY_EXISTS


def test_health_and_reflection_answer(service: Service) -> None:
    """Standard tools work: health says SERVING and reflection lists our services."""
    health = health_pb2_grpc.HealthStub(service.channel)
    for name in ("", "router.v1.RoutingService", "router.v1.AgentAdminService"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=name))  # type: ignore[attr-defined]  # stubs omit the stub's methods
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(service.channel)
    replies = stub.ServerReflectionInfo(  # type: ignore[operator]  # stubs leave it untyped
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names = {s.name for reply in replies for s in reply.list_services_response.service}
    assert {"router.v1.RoutingService", "router.v1.PolicyService"} <= names


def test_assign_picks_an_available_skilled_agent_and_explains(service: Service) -> None:
    """An Assign goes to the only agent with the skill and says who was excluded and why."""
    service.agent("a1", skills={"billing": 7})
    service.agent("a2", skills={"tech": 9})
    service.agent("a3", skills={"billing": 9}, presence=pb.PRESENCE_BREAK)
    reply = service.assign("c1", skills={"billing": 5})
    assert reply.result == ASSIGNED
    assert reply.assignment.agent_id == "a1"
    assert reply.assignment.fencing_token > 0
    excluded = {e.reason: e.count for e in reply.explanation.excluded}
    assert excluded == {
        pb.EXCLUSION_REASON_MISSING_SKILL: 1,
        pb.EXCLUSION_REASON_NOT_AVAILABLE: 1,
    }
    assert {p.name for p in reply.explanation.score_parts} >= {"skill", "performance"}
    call = service.routing.GetCall(routing_pb2.GetCallRequest(tenant=service.tenant, call_id="c1"))
    assert call.call.status == pb.CALL_STATUS_ASSIGNED
    assert call.call.assignment.agent_id == "a1"


def test_skill_change_is_obeyed_by_the_very_next_assign(service: Service) -> None:
    """Removing a skill excludes the agent at once; adding it back includes them at once."""
    service.agent("a1", skills={"billing": 7})
    service.patch_skills("a1", remove=["billing"])
    assert service.assign("c1", skills={"billing": 1}, no_queue=True).result == NO_AGENT
    service.patch_skills("a1", set={"billing": 4})
    assert service.assign("c2", skills={"billing": 5}, no_queue=True).result == NO_AGENT
    reply = service.assign("c3", skills={"billing": 4})
    assert reply.assignment.agent_id == "a1"


def test_presence_change_is_obeyed_by_the_very_next_assign(service: Service) -> None:
    """An agent going on break gets nothing; back to available, they get the next call."""
    service.agent("a1", skills={"billing": 7})
    service.presence("a1", pb.PRESENCE_BREAK, reason="lunch")
    reply = service.assign("c1", skills={"billing": 1}, no_queue=True)
    assert reply.result == NO_AGENT
    assert {e.reason for e in reply.explanation.excluded} == {pb.EXCLUSION_REASON_NOT_AVAILABLE}
    service.presence("a1", pb.PRESENCE_AVAILABLE)
    assert service.assign("c2", skills={"billing": 1}).assignment.agent_id == "a1"


def test_absences_ended_over_a_day_ago_make_room_for_new_ones(service: Service) -> None:
    """An agent keeps at most 100 absences, but those ended more than a day ago do not
    count: after 100 weekly trainings, all over, next week's sick leave is scheduled (the
    older ones are dropped, the last day's kept); 100 kept are the limit again."""
    service.agent("a1", skills={"billing": 5})
    week_s, now_s = 7 * 86_400, service.clock.now_ms // 1000

    def schedule(absence_id: str, start_s: int) -> pb.Agent:
        return service.schedule_absence(
            "a1", start_s, start_s + 3600, absence_id=absence_id, kind=pb.ABSENCE_KIND_TRAINING
        )

    for n in range(100):  # the last one ended an hour ago, the others weeks ago
        schedule(f"t{n}", now_s - (99 - n) * week_s - 7200)
    agent = schedule("sick", now_s + week_s)
    assert [a.absence_id for a in agent.absences] == ["t99", "sick"]
    for n in range(98):
        schedule(f"next{n}", now_s + (n + 2) * week_s)
    with pytest.raises(grpc.RpcError) as err:
        schedule("one-too-many", now_s + 200 * week_s)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "at most 100" in (err.value.details() or "")


def _lunch_and_desk(service: Service) -> int:
    """Longest-idle, no heartbeat timeout, and two agents: "lunch", then "desk" a minute
    later (so "lunch" has been idle the longest); the time now, in seconds."""
    service.policies.UpdatePolicy(
        admin_pb2.UpdatePolicyRequest(
            tenant=service.tenant,
            policy=pb.Policy(strategy=pb.STRATEGY_LONGEST_IDLE),
            update_mask=field_mask_pb2.FieldMask(paths=["strategy"]),
        )
    )
    service.set_policy(heartbeat_timeout_s=0)
    service.agent("lunch", skills={"billing": 5})
    service.clock.advance(60_000)
    service.agent("desk", skills={"billing": 5})
    return service.clock.now_ms // 1000


def test_longest_idle_counts_idle_time_from_the_end_of_an_absence(service: Service) -> None:
    """An agent back from an hour's scheduled absence has been idle since its end, not
    since before it: under longest-idle the agent who sat at the desk meanwhile gets the
    call, and the one back from lunch the next."""
    now_s = _lunch_and_desk(service)
    service.schedule_absence("lunch", now_s + 60, now_s + 3600)
    service.clock.advance(3_660_000)  # the absence ended a minute ago
    assert service.assign("c1").assignment.agent_id == "desk"
    assert service.assign("c2").assignment.agent_id == "lunch"


def test_cancelling_an_absence_under_way_ends_it_now(service: Service) -> None:
    """CancelAbsence ends an absence under way now (kept, so its end still restarts the
    agent's idle clock: back from a cancelled lunch, the agent does not jump the
    longest-idle line) and removes one still to come; one already over is left as it is, so
    a retry after the first attempt ended the absence (with the version that attempt was
    checked against, too) answers the agent unchanged and keeps the end."""
    now_s = _lunch_and_desk(service)

    def cancel(absence_id: str, version: int = 0) -> pb.Agent:
        return service.admin.CancelAbsence(
            admin_pb2.CancelAbsenceRequest(
                tenant=service.tenant,
                agent_id="lunch",
                absence_id=absence_id,
                expected_version=version,
            )
        )

    service.schedule_absence("lunch", now_s + 60, now_s + 3600, absence_id="lunch")
    service.schedule_absence("lunch", now_s + 7200, now_s + 9000, absence_id="later")
    service.clock.advance(1_860_000)  # half an hour into lunch
    checked = service.admin.GetAgent(
        admin_pb2.GetAgentRequest(tenant=service.tenant, agent_id="lunch")
    ).version
    cut = cancel("lunch", checked)
    ended = [("lunch", service.clock.now_ms // 1000)]
    assert [(a.absence_id, a.end_time.seconds) for a in cut.absences] == [
        *ended,
        ("later", now_s + 9000),
    ]
    left = cancel("later")
    assert [(a.absence_id, a.end_time.seconds) for a in left.absences] == ended
    service.clock.advance(60_000)
    for version in (0, checked, left.version):  # retries of the first cancel, or a late one
        assert cancel("lunch", version) == left  # over: as it is
    assert service.assign("c1").assignment.agent_id == "desk"


def test_a_retried_absence_with_its_own_id_is_scheduled_once(service: Service) -> None:
    """An absence sent with the client's id can be retried safely: the same absence again
    returns the agent as it is (scheduled once, no new version), also when the retry
    carries the version the first attempt was checked against; the same id for another
    absence is ALREADY_EXISTS and changes nothing."""
    service.agent("a1", skills={"billing": 5})
    now_s = service.clock.now_ms // 1000

    def schedule(end_s: int, version: int = 0) -> pb.Agent:
        return service.schedule_absence(
            "a1", now_s + 3600, end_s, absence_id="dentist", note="back at 11", version=version
        )

    first = schedule(now_s + 7200, version=service.get_agent("a1").version)
    before = service.dump()
    for version in (0, first.version - 1):  # the version the first attempt was sent with
        again = schedule(now_s + 7200, version=version)
        assert again.version == first.version
        assert [a.absence_id for a in again.absences] == ["dentist"]
        assert service.dump() == before
    with pytest.raises(grpc.RpcError) as err:
        schedule(now_s + 9000)
    assert err.value.code() == TAKEN
    assert "dentist" in (err.value.details() or "")
    assert service.dump() == before
    service.clock.advance(3 * 86_400_000)  # over for more than a day: a retry still finds it
    again = schedule(now_s + 7200)
    assert (again.version, service.dump()) == (first.version, before)
    with pytest.raises(grpc.RpcError) as err:
        schedule(now_s + 9000)
    assert err.value.code() == TAKEN


def test_scheduled_absence_and_heartbeat_expiry_exclude(service: Service) -> None:
    """Agents inside an absence or with a stale heartbeat never get work."""
    service.agent("away", skills={"billing": 9})
    service.agent("stale", skills={"billing": 9})
    service.agent("ok", skills={"billing": 2})
    now = service.clock.now_ms
    service.schedule_absence(
        "away", now // 1000 - 60, now // 1000 + 3600, kind=pb.ABSENCE_KIND_SICK_LEAVE
    )
    service.clock.advance(200_000)  # past the 120 s heartbeat timeout for everyone...
    for agent_id in ("away", "ok"):  # ...but these two keep heartbeating
        service.admin.Heartbeat(
            admin_pb2.HeartbeatRequest(tenant=service.tenant, agent_id=agent_id)
        )
    reply = service.assign("c1", skills={"billing": 1})
    assert reply.assignment.agent_id == "ok"
    excluded = {e.reason: e.count for e in reply.explanation.excluded}
    assert excluded == {
        pb.EXCLUSION_REASON_SCHEDULED_ABSENCE: 1,
        pb.EXCLUSION_REASON_HEARTBEAT_EXPIRED: 1,
    }
    agent = service.admin.GetAgent(
        admin_pb2.GetAgentRequest(tenant=service.tenant, agent_id="away")
    )
    assert not agent.status.routable
    done = service.admin.UpdateAgent(  # "ok"'s shift ends now: not routable any more
        admin_pb2.UpdateAgentRequest(
            tenant=service.tenant,
            agent=pb.Agent(
                agent_id="ok", shift_end=Timestamp(seconds=service.clock.now_ms // 1000)
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["shift_end"]),
        )
    )
    assert done.status.presence == pb.PRESENCE_AVAILABLE
    assert not done.status.routable


def test_capacity_per_channel_is_never_exceeded(service: Service) -> None:
    """Two chat slots take two chats; the third call waits; a voice call cannot join."""
    service.agent("a1", skills={"billing": 5}, chat_capacity=2)
    first = service.assign("c1", channel=pb.CHANNEL_CHAT)
    second = service.assign("c2", channel=pb.CHANNEL_CHAT)
    assert first.assignment.agent_id == second.assignment.agent_id == "a1"
    third = service.assign("c3", channel=pb.CHANNEL_CHAT, no_queue=True)
    assert third.result == NO_AGENT
    assert {e.reason for e in third.explanation.excluded} == {pb.EXCLUSION_REASON_AT_CAPACITY}
    assert service.assign("c4", channel=pb.CHANNEL_VOICE, no_queue=True).result == NO_AGENT
    service.complete(first.assignment)
    assert service.assign("c5", channel=pb.CHANNEL_CHAT).assignment.agent_id == "a1"


def test_hundred_concurrent_assigns_on_one_agent_give_exactly_one(service: Service) -> None:
    """100 simultaneous Assigns for 100 calls against one single-capacity agent: one wins."""
    service.agent("solo", skills={"billing": 5})
    barrier = threading.Barrier(20)

    def one(i: int) -> routing_pb2.AssignResponse:
        if i < 20:
            barrier.wait(timeout=10)
        return service.assign(f"c{i}", skills={"billing": 1}, no_queue=i % 2 == 0)

    with futures.ThreadPoolExecutor(max_workers=20) as pool:
        replies = list(pool.map(one, range(100)))
    results = Counter(r.result for r in replies)
    assert results[ASSIGNED] == 1
    assert results[NO_AGENT] + results[QUEUED] == 99
    assert results[QUEUED] > 0
    agent = service.admin.GetAgent(
        admin_pb2.GetAgentRequest(tenant=service.tenant, agent_id="solo")
    )
    assert agent.status.units_used == 100


def test_retried_request_gets_the_identical_answer(service: Service) -> None:
    """Same request_id and payload: same assignment, marked replayed, no second agent."""
    service.agent("a1", skills={"billing": 5})
    service.agent("a2", skills={"billing": 5})
    first = service.assign("c1", request_id="r-1")
    again = service.assign("c1", request_id="r-1")
    assert again.replayed
    assert not first.replayed
    assert again.assignment == first.assignment
    assert again.explanation == first.explanation
    loads = [service.get_agent(a).status.units_used for a in ("a1", "a2")]
    assert sorted(loads) == [0, 100]


def test_concurrent_retries_of_one_request_assign_once(service: Service) -> None:
    """Ten copies of one request racing each other all get the same single assignment."""
    for i in range(5):
        service.agent(f"a{i}", skills={"billing": 5})
    with futures.ThreadPoolExecutor(max_workers=10) as pool:
        replies = list(pool.map(lambda _: service.assign("c1", request_id="same"), range(10)))
    assert len({r.assignment.assignment_id for r in replies}) == 1
    busy = [service.get_agent(f"a{i}").status.units_used for i in range(5)]
    assert sorted(busy) == [0, 0, 0, 0, 100]


def test_a_retry_after_the_caller_hung_up_is_a_failed_precondition(service: Service) -> None:
    """A retried Assign of a call abandoned since (the caller hung up while it waited, or
    while it was offered) is FAILED_PRECONDITION saying so, not the QUEUED or ASSIGNED it
    once was; a retry after the call was completed shows its assignment, completed."""
    service.agent("a1", skills={"billing": 5})
    held = service.assign("c0", request_id="r-0")
    queued = service.assign("c1", request_id="r-1")
    assert queued.result == routing_pb2.AssignResponse.RESULT_QUEUED
    service.routing.Cancel(routing_pb2.CancelRequest(tenant=service.tenant, call_id="c1"))
    with pytest.raises(grpc.RpcError) as err:
        service.assign("c1", request_id="r-1")
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "c1 was abandoned" in (err.value.details() or "")
    service.complete(held.assignment)
    again = service.assign("c0", request_id="r-0")
    assert again.replayed
    assert again.assignment.assignment_id == held.assignment.assignment_id
    assert again.assignment.state == pb.ASSIGNMENT_STATE_COMPLETED


def test_a_retry_asking_not_to_queue_is_another_request(service: Service) -> None:
    """``no_queue`` is part of the request: the same request_id with the other choice is
    INVALID_ARGUMENT, whatever became of the call (a queued call must not be answered QUEUED
    to a no_queue request)."""
    service.agent("a1", skills={"billing": 5})
    service.assign("c0", request_id="r-0")
    with pytest.raises(grpc.RpcError) as placed:
        service.assign("c0", request_id="r-0", no_queue=True)
    assert placed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert service.assign("c1", request_id="r-1").result == routing_pb2.AssignResponse.RESULT_QUEUED
    with pytest.raises(grpc.RpcError) as err:
        service.assign("c1", request_id="r-1", no_queue=True)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "request_id" in (err.value.details() or "")


def test_reused_request_id_with_other_payload_is_invalid(service: Service) -> None:
    """A request_id reused for a different call is INVALID_ARGUMENT and assigns nothing."""
    service.agent("a1", skills={"billing": 5})
    service.agent("a2", skills={"billing": 5})
    service.assign("c1", request_id="r-1")
    with pytest.raises(grpc.RpcError) as err:
        service.assign("c2", request_id="r-1")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "request_id" in (err.value.details() or "")
    assert (
        service.get_agent("a2").status.units_used + service.get_agent("a1").status.units_used == 100
    )


def test_complete_with_stale_token_is_refused(service: Service) -> None:
    """Complete needs the assignment's fencing token; a wrong one changes nothing."""
    service.agent("a1", skills={"billing": 5})
    assignment = service.assign("c1").assignment
    before = service.dump()
    with pytest.raises(grpc.RpcError) as err:
        service.routing.Complete(
            routing_pb2.CompleteRequest(
                tenant=service.tenant,
                assignment_id=assignment.assignment_id,
                fencing_token=assignment.fencing_token + 1,
            )
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert service.dump() == before
    done = service.complete(assignment, csat=5, resolved=True)
    assert done.state == pb.ASSIGNMENT_STATE_COMPLETED
    assert service.complete(assignment, csat=5, resolved=True) == done  # idempotent retry
    agent = service.get_agent("a1")
    assert agent.status.units_used == 0
    assert agent.status.performance_score > 0.6  # above the prior after a perfect outcome


def test_release_requeues_to_another_agent_and_cancel_frees_the_agent(service: Service) -> None:
    """Release puts the call back with its age and never back to the same agent; Cancel
    ends it and frees capacity; a cancelled call cannot be assigned again."""
    service.agent("a1", skills={"billing": 9})
    first = service.assign("c1", request_id="r1").assignment
    assert first.agent_id == "a1"
    service.agent("a2", skills={"billing": 2})
    released = service.routing.Release(
        routing_pb2.ReleaseRequest(
            tenant=service.tenant,
            assignment_id=first.assignment_id,
            fencing_token=first.fencing_token,
            reason="needs a supervisor",
        )
    )
    assert released.assignment.state == pb.ASSIGNMENT_STATE_RELEASED
    call = service.wait_for_call("c1", pb.CALL_STATUS_ASSIGNED)
    assert call.assignment.agent_id == "a2"  # a1 released it: never given back to a1
    assert call.assignment.fencing_token > first.fencing_token
    cancelled = service.routing.Cancel(
        routing_pb2.CancelRequest(tenant=service.tenant, call_id="c1", reason="hung up")
    )
    assert cancelled.call.status == pb.CALL_STATUS_CANCELLED
    assert service.get_agent("a2").status.units_used == 0
    with pytest.raises(grpc.RpcError) as err:
        service.assign("c1", request_id="r3")
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_stale_version_update_is_aborted_and_changes_nothing(service: Service) -> None:
    """Two admins: the second write with the version both read is ABORTED."""
    agent = service.agent("a1", skills={"billing": 5})
    service.admin.UpdateAgent(
        admin_pb2.UpdateAgentRequest(
            tenant=service.tenant,
            agent=pb.Agent(agent_id="a1", team="red", version=agent.version),
            update_mask=field_mask_pb2.FieldMask(paths=["team"]),
        )
    )
    before = service.dump()
    with pytest.raises(grpc.RpcError) as err:
        service.admin.UpdateAgent(
            admin_pb2.UpdateAgentRequest(
                tenant=service.tenant,
                agent=pb.Agent(agent_id="a1", team="blue", version=agent.version),
                update_mask=field_mask_pb2.FieldMask(paths=["team"]),
            )
        )
    assert err.value.code() == grpc.StatusCode.ABORTED
    assert service.dump() == before
    assert service.get_agent("a1").team == "red"


def test_an_update_without_a_mask_changes_what_it_sets(service: Service) -> None:
    """AIP-134 field masks: with no mask, UpdateAgent changes the fields the request sets
    (a name alone renames and keeps the skills, which an empty mask once cleared), and
    UpdatePolicy likewise (each weight it sets alone); ``*`` replaces them all; a request
    that sets nothing to change is INVALID_ARGUMENT and writes nothing."""
    service.agent("a1", skills={"billing": 5})

    def update(agent: pb.Agent, *paths: str) -> pb.Agent:
        mask = field_mask_pb2.FieldMask(paths=list(paths))
        request = admin_pb2.UpdateAgentRequest(tenant=service.tenant, agent=agent)
        if paths:
            request.update_mask.CopyFrom(mask)
        return service.admin.UpdateAgent(request)

    renamed = update(pb.Agent(agent_id="a1", name="Renamed"))
    assert (renamed.name, dict(renamed.skills)) == ("Renamed", {"billing": 5})
    before = service.dump()
    with pytest.raises(grpc.RpcError) as err:
        update(pb.Agent(agent_id="a1"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (err.value.details() or "").startswith("update_mask: is empty")
    with pytest.raises(grpc.RpcError) as err:
        update(pb.Agent(agent_id="a1", name="X"), "name", "*")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert service.dump() == before
    replaced = update(pb.Agent(agent_id="a1", name="Only"), "*")
    assert (replaced.name, dict(replaced.skills)) == ("Only", {})
    policy = service.policies.UpdatePolicy(
        admin_pb2.UpdatePolicyRequest(tenant=service.tenant, policy=pb.Policy(top_k=7))
    )
    assert (policy.top_k, policy.strategy) == (7, pb.STRATEGY_BALANCED)
    assert policy.occupancy_window.seconds > 0  # left as it was, not refused as 0
    weighted = service.policies.UpdatePolicy(
        admin_pb2.UpdatePolicyRequest(
            tenant=service.tenant, policy=pb.Policy(weights=pb.Weights(skill=5))
        )
    )
    assert weighted.weights.skill == 5
    assert weighted.weights.load == policy.weights.load > 0  # the weights not set stay
    read = service.policies.GetPolicy(admin_pb2.GetPolicyRequest(tenant=service.tenant))
    read.weights.previous_agent = 0  # read, change, write back: a 0 is a value set
    written = service.policies.UpdatePolicy(
        admin_pb2.UpdatePolicyRequest(tenant=service.tenant, policy=read)
    )
    assert (written.weights.previous_agent, written.weights.skill) == (0, 5)


def test_list_agents_filters_and_pages(service: Service) -> None:
    """25 agents, pages of 10, filtered by skill and presence, each agent exactly once."""
    for i in range(25):
        service.agent(f"a{i:02d}", skills={"billing" if i % 2 else "tech": 3})
    seen: list[str] = []
    token = ""
    while True:
        page = service.admin.ListAgents(
            admin_pb2.ListAgentsRequest(tenant=service.tenant, page_size=10, page_token=token)
        )
        seen.extend(a.agent_id for a in page.agents)
        token = page.next_page_token
        if not token:
            break
    assert seen == [f"a{i:02d}" for i in range(25)]
    billing = service.admin.ListAgents(
        admin_pb2.ListAgentsRequest(tenant=service.tenant, skill="billing", page_size=100)
    )
    assert [a.agent_id for a in billing.agents] == [f"a{i:02d}" for i in range(1, 25, 2)]


def test_a_page_of_agents_stops_before_the_message_limit(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page asked of 1,000 agents stops before ``admin_api.PAGE_BYTES`` of agents (the
    server sends at most four times ``MAX_MESSAGE_BYTES``), its token continuing after its
    last agent: every agent comes exactly once, whatever their size. Here the limit is
    lowered to about three large agents."""
    assert admin_api.PAGE_BYTES < 4 * server.MAX_MESSAGE_BYTES - 64 * 1024
    for i in range(8):
        service.agent(f"a{i}", skills={f"skill-{n}": 3 for n in range(40 if i % 3 == 0 else 1)})
    large = service.admin.GetAgent(
        admin_pb2.GetAgentRequest(tenant=service.tenant, agent_id="a0")
    ).ByteSize()
    monkeypatch.setattr(admin_api, "PAGE_BYTES", 3 * large)
    pages: list[list[str]] = []
    token = ""
    while True:
        page = service.admin.ListAgents(
            admin_pb2.ListAgentsRequest(tenant=service.tenant, page_size=1000, page_token=token)
        )
        assert sum(agent.ByteSize() for agent in page.agents) <= 3 * large
        pages.append([a.agent_id for a in page.agents])
        token = page.next_page_token
        if not token:
            break
    assert [agent_id for page in pages for agent_id in page] == [f"a{i}" for i in range(8)]
    assert len(pages) > 1


def test_a_page_that_fills_by_size_reads_few_agents_more_than_it_sends(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page asked of 1,000 agents that fills by size after ten reads only a store page
    more from Redis than it sends (it read 1,001 whole agents first: 266 MB from Redis for
    32 of the largest agents sent, and paging through 1,000 of them read 4.5 GB)."""
    for i in range(120):
        service.agent(f"a{i:03d}", skills={"billing": 3})
    one = service.get_agent("a000").ByteSize()
    monkeypatch.setattr(admin_api, "PAGE_BYTES", 10 * one + one // 2)
    read: list[str] = []
    original = RedisStore._read_agents

    def counted(store: RedisStore, k: Keys, ids: Sequence[str]) -> object:
        read.extend(ids)
        return original(store, k, ids)

    monkeypatch.setattr(RedisStore, "_read_agents", counted)
    page = service.admin.ListAgents(
        admin_pb2.ListAgentsRequest(tenant=service.tenant, page_size=1000)
    )
    assert [a.agent_id for a in page.agents] == [f"a{i:03d}" for i in range(10)]
    assert page.next_page_token
    assert len(read) <= 10 + admin_api.STORE_PAGE + 1


def test_a_page_of_small_agents_takes_one_or_two_store_reads(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page of 1,000 small agents reads the store once at the first size, then for all
    the room left (not a store page at a time: 32 reads of 64 round trips)."""
    for i in range(150):
        service.agent(f"a{i:03d}", skills={"billing": 3})
    calls: list[int] = []
    original = RedisStore.list_agents

    def counted(
        store: RedisStore, tenant: str, query: AgentQuery, size: int, token: str = ""
    ) -> tuple[list[AgentSnapshot], str]:
        calls.append(size)
        return original(store, tenant, query, size, token)

    monkeypatch.setattr(RedisStore, "list_agents", counted)
    page = service.admin.ListAgents(
        admin_pb2.ListAgentsRequest(tenant=service.tenant, page_size=1000)
    )
    assert [a.agent_id for a in page.agents] == [f"a{i:03d}" for i in range(150)]
    assert not page.next_page_token
    assert calls == [admin_api.STORE_PAGE, 1000 - admin_api.STORE_PAGE]


def test_policy_update_validates_and_switches_strategy(service: Service) -> None:
    """A bad policy is refused naming the field; a good one switches the strategy."""
    with pytest.raises(grpc.RpcError) as err:
        service.policies.UpdatePolicy(
            admin_pb2.UpdatePolicyRequest(
                tenant=service.tenant,
                policy=pb.Policy(max_occupancy=1.5),
                update_mask=field_mask_pb2.FieldMask(paths=["max_occupancy"]),
            )
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "policy.max_occupancy" in (err.value.details() or "")
    updated = service.policies.UpdatePolicy(
        admin_pb2.UpdatePolicyRequest(
            tenant=service.tenant,
            policy=pb.Policy(strategy=pb.STRATEGY_LONGEST_IDLE),
            update_mask=field_mask_pb2.FieldMask(paths=["strategy"]),
        )
    )
    assert updated.strategy == pb.STRATEGY_LONGEST_IDLE
    assert updated.version == 1
    service.agent("a1", skills={"billing": 5})
    reply = service.assign("c1")
    assert reply.explanation.strategy == pb.STRATEGY_LONGEST_IDLE


def test_top_performer_stays_under_cap_over_thousands_of_cycles(service: Service) -> None:
    """Thousands of assign/complete cycles on simulated time: the star takes more than the
    average agent but its rolling occupancy never passes its cap."""
    service.set_policy(occupancy_window_s=600, heartbeat_timeout_s=0)
    service.agent("star", skills={"billing": 10}, max_occupancy=0.6)
    for i in range(4):
        service.agent(f"avg{i}", skills={"billing": 6})
    # Give the star a track record so the objective prefers it.
    for i in range(20):
        reply = service.assign(f"warm{i}")
        service.complete(reply.assignment, csat=5 if reply.assignment.agent_id == "star" else 3)
    holding: list[tuple[int, pb.Assignment]] = []
    handled: Counter[str] = Counter()
    peak = 0.0
    for i in range(1500):
        service.clock.advance(20_000)
        now = service.clock.now_ms
        for ends, assignment in [h for h in holding if h[0] <= now]:
            holding.remove((ends, assignment))
            service.complete(assignment, csat=5 if assignment.agent_id == "star" else 3)
        if i % 2 == 0:  # 1.5 calls a minute of 60 s each: 30 % average occupancy
            reply = service.assign(f"load{i}", no_queue=True)
            if reply.result == ASSIGNED:
                handled[reply.assignment.agent_id] += 1
                holding.append((now + 60_000, reply.assignment))
        if i % 25 == 0:
            peak = max(peak, service.get_agent("star").status.occupancy)
    average = sum(handled.values()) / 5
    assert handled["star"] > 1.5 * average
    assert peak <= 0.6 + 60_000 / 600_000  # the cap, plus at most one call admitted below it


@pytest.mark.parametrize(
    ("make", "code", "field"),
    [
        (lambda s: s.assign_raw(tenant=""), BAD, "tenant"),
        (lambda s: s.assign_raw(request_id=""), BAD, "request_id"),
        (lambda s: s.assign_raw(call_id=""), BAD, "call.call_id"),
        (lambda s: s.assign_raw(channel=0), BAD, "call.channel"),
        (lambda s: s.assign_raw(channel=99), BAD, "call.channel"),
        (
            lambda s: s.assign_raw(level=11),
            BAD,
            "call.required_skills[0].min_level",
        ),
        (lambda s: s.assign_raw(priority=-1), BAD, "call.priority"),
        (lambda s: s.assign_raw(call_id="x" * 500), BAD, "call.call_id"),
        (lambda s: s.assign_raw(language="english!"), BAD, "call.language"),
        (lambda s: s.create_raw(skills={"billing": 0}), BAD, "agent.skills"),
        (lambda s: s.create_raw(capacity=-1), BAD, "agent.capacity[0].max_items"),
        (lambda s: s.create_raw(capacity=10_000), BAD, "agent.capacity[0].max_items"),
        (lambda s: s.create_raw(timezone="Mars/Olympus"), BAD, "agent.timezone"),
        (lambda s: s.create_raw(name="a\x00b"), BAD, "agent.name"),
        (lambda s: s.create_raw(agent_id="existing"), TAKEN, "existing"),
        (lambda s: s.get_agent("ghost"), MISSING, "ghost"),
        (lambda s: s.presence("ghost", pb.PRESENCE_AVAILABLE), MISSING, "ghost"),
        (lambda s: s.presence("existing", 0), BAD, "presence"),
        (lambda s: s.patch_skills("existing", set={"x": 12}), BAD, "set"),
        (lambda s: s.complete_raw("nope", 1), MISSING, "nope"),
        (lambda s: s.complete_raw("nope", 0), BAD, "fencing_token"),
        (lambda s: s.cancel_raw("nope"), MISSING, "nope"),
        (lambda s: s.update_mask_raw(["skills", "bogus"]), BAD, "update_mask"),
        (lambda s: s.absence_raw(end_before_start=True), BAD, "absence.end_time"),
        (lambda s: s.cancel_absence_raw("nope"), MISSING, "nope"),
        (lambda s: s.list_raw(page_token="garbage"), BAD, "page_token"),
        (lambda s: s.list_raw(page_size=5000), BAD, "page_size"),
    ],
)  # fmt: skip
def test_bad_input_gets_a_clear_status_and_changes_nothing(
    service: Service, make: Callable[[Service], object], code: grpc.StatusCode, field: str
) -> None:
    """Each malformed request gets the right status naming the field; Redis is unchanged.
    An INVALID_ARGUMENT also carries the field as ``google.rpc.BadRequest`` in its rich
    details, for clients in any language, beside the request id."""
    service.agent("existing", skills={"billing": 5})
    before = service.dump()
    with pytest.raises(grpc.RpcError) as err:
        make(service)
    assert err.value.code() == code
    assert field in (err.value.details() or "")
    assert service.dump() == before
    if code == BAD:
        status = rpc_status.from_call(err.value)
        (detail,) = status.details
        bad = error_details_pb2.BadRequest()
        assert detail.Unpack(bad)
        (violation,) = bad.field_violations
        assert field in violation.field
        assert err.value.details() == f"{violation.field}: {violation.description}"
        assert _request_id(err.value)


def test_every_rpc_logs_one_canonical_line(service: Service) -> None:
    """One ``rpc_finished`` line per RPC, with method, status code, tenant and ids bound."""
    with log_lines() as entries:
        service.assign("c1")
        with pytest.raises(grpc.RpcError):
            service.get_agent("ghost")
    finished = [line for line in entries if line["event"] == "rpc_finished"]
    assert [(line["method"].rsplit("/", 1)[1], line["code"]) for line in finished] == [
        ("Assign", "OK"),
        ("GetAgent", "NOT_FOUND"),
    ]
    assert finished[0]["call_id"] == "c1"
    assert finished[0]["tenant"] == "acme"


def _request_id(call: Any) -> str:
    """The ``x-request-id`` trailer of an answer (or of an ``RpcError``)."""
    return str(next(item.value for item in call.trailing_metadata() if item.key == "x-request-id"))


def test_every_rpc_has_a_request_id_for_support_on_its_lines_and_in_its_answer(
    service: Service,
) -> None:
    """The caller's ``x-request-id`` when valid, else one made per RPC, is on the RPC's log
    lines (``x_request_id``) and comes back in its trailers, errors included."""
    stats = routing_pb2.GetStatsRequest(tenant=service.tenant)
    sent = (("x-request-id", "support-42"),)
    with log_lines() as entries:
        _, own = service.routing.GetStats.with_call(stats, metadata=sent)
        _, made = service.routing.GetStats.with_call(stats)
        _, again = service.routing.GetStats.with_call(stats)
        _, bad = service.routing.GetStats.with_call(stats, metadata=(("x-request-id", "a b"),))
        _, long = service.routing.GetStats.with_call(stats, metadata=(("x-request-id", "x" * 129),))
        with pytest.raises(grpc.RpcError) as err:
            service.admin.GetAgent(
                admin_pb2.GetAgentRequest(tenant=service.tenant, agent_id="ghost"),
                metadata=(("x-request-id", "support-43"),),
            )
    answered = [_request_id(call) for call in (own, made, again, bad, long, err.value)]
    assert answered[0] == "support-42"
    assert answered[5] == "support-43"
    for generated in answered[1:5]:
        assert re.fullmatch("[0-9a-f]{16}", str(generated))
    assert len(set(answered)) == len(answered)
    lines = [line for line in entries if line["event"] == "rpc_finished"]
    assert [line["x_request_id"] for line in lines] == answered


TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


def _traced_assign(service: Service, call_id: str, traceparent: str) -> None:
    service.agent(f"agent-{call_id}", skills={"billing": 5})
    reply = service.assign(call_id, metadata=(("traceparent", traceparent),))
    assert reply.result == routing_pb2.AssignResponse.RESULT_ASSIGNED


def test_the_callers_trace_is_on_the_rpcs_log_lines(service: Service) -> None:
    """A W3C ``traceparent`` in the metadata puts its trace and span ids on the RPC's lines;
    an invalid one is ignored (the RPC is served, no trace fields), and the next RPC's lines
    carry no trace of the one before."""
    with log_lines() as entries:
        _traced_assign(service, "traced", f"00-{TRACE_ID}-{CALLER_SPAN}-01")
        _traced_assign(service, "broken", f"00-{TRACE_ID.upper()}-{CALLER_SPAN}-01")
        service.assign("plain")
    assigns = [
        line
        for line in entries
        if line["event"] == "rpc_finished" and line["method"].endswith("/Assign")
    ]
    assert [line["call_id"] for line in assigns] == ["traced", "broken", "plain"]
    assert assigns[0]["trace_id"] == TRACE_ID
    assert assigns[0]["parent_span_id"] == CALLER_SPAN
    for line in assigns[1:]:
        assert "trace_id" not in line
        assert "parent_span_id" not in line


def test_the_callers_trace_is_on_the_events_its_request_wrote(service: Service) -> None:
    """The call's timeline (and the event stream) name the trace of the request that wrote
    each event; a request without one leaves none."""
    _traced_assign(service, "traced", f"00-{TRACE_ID}-{CALLER_SPAN}-01")
    service.agent("spare", skills={"billing": 5})
    service.assign("plain")
    (assigned,) = service.get_call("traced").timeline
    assert (assigned.type, assigned.data["trace_id"]) == ("ASSIGNED", TRACE_ID)
    (plain,) = service.get_call("plain").timeline
    assert plain.type == "ASSIGNED"
    assert "trace_id" not in plain.data


def test_a_queued_calls_placement_carries_the_trace_that_queued_it(service: Service) -> None:
    """A call that waited is placed later by the dispatcher (here inline, in an Assign of
    another trace): its ASSIGNED event, and every other event about it, names the trace of
    the Assign that queued it; the other Assign's own events name its own trace."""
    other = "2" * 32  # not other tests'
    service.agent("a1", skills={"billing": 5}, presence=pb.PRESENCE_OFFLINE)
    queued = service.assign("waits", metadata=(("traceparent", f"00-{TRACE_ID}-{CALLER_SPAN}-01"),))
    assert queued.result == QUEUED
    service.running.dispatcher.stop()  # the placement happens in the next Assign's pass
    service.presence("a1", pb.PRESENCE_AVAILABLE)
    service.clock.advance(1_000)  # first in the queue
    later = service.assign("later", metadata=(("traceparent", f"00-{other}-{CALLER_SPAN}-01"),))
    assert later.result == QUEUED
    timeline = service.wait_for_call("waits", pb.CALL_STATUS_ASSIGNED).timeline
    assert (timeline[0].type, timeline[-1].type) == ("QUEUED", "ASSIGNED")
    assert {e.data["trace_id"] for e in timeline} == {TRACE_ID}  # with SLA marks between
    timeline = service.get_call("later").timeline
    assert timeline[0].type == "QUEUED"
    assert {e.data["trace_id"] for e in timeline} == {other}


def test_a_call_keeps_its_trace_as_the_service_writes_it_not_as_the_caller_sent_it(
    service: Service,
) -> None:
    """The call hash keeps a version-00 ``traceparent`` built from the parsed ids: a later
    version's extra fields, reserved flag bits and the ``tracestate`` are not stored; a call
    without a trace keeps none."""
    service.agent("a1", skills={"billing": 5}, presence=pb.PRESENCE_OFFLINE)
    sent = (
        ("traceparent", f"cc-{TRACE_ID}-{CALLER_SPAN}-03-what-comes"),
        ("tracestate", "vendor=" + "x" * 200),
    )
    assert (
        service.routing.Assign(
            routing_pb2.AssignRequest(
                tenant=service.tenant,
                request_id="req-kept",
                call=pb.Call(
                    call_id="kept",
                    channel=pb.CHANNEL_VOICE,
                    required_skills=[pb.SkillRequirement(skill="billing", min_level=1)],
                ),
            ),
            metadata=sent,
        ).result
        == QUEUED
    )
    assert service.assign("plain").result == QUEUED
    assert service.client.hget(Keys(service.tenant).call("kept"), "trace") == (
        f"00-{TRACE_ID}-{CALLER_SPAN}-01".encode()
    )
    assert service.client.hget(Keys(service.tenant).call("plain"), "trace") is None


def _waits(le: str, channel: str = "voice") -> float:
    return sample("router_call_wait_seconds_bucket", tenant="acme", channel=channel, le=le)


def test_each_placement_records_how_long_its_call_waited(service: Service) -> None:
    """``router_call_wait_seconds`` (per tenant and channel, on the store's clock): a call an
    Assign places at once waited 0 s; one the dispatcher places from the queue, its whole
    wait. A replayed Assign places nothing and records nothing."""
    instant, within_5, total = _waits("0.01"), _waits("5.0"), _waits("+Inf")
    chats = _waits("+Inf", channel="chat")
    service.agent("a1", skills={"billing": 5})
    assert service.assign("at-once").result == routing_pb2.AssignResponse.RESULT_ASSIGNED
    assert service.assign("at-once").result == routing_pb2.AssignResponse.RESULT_ASSIGNED
    assert (_waits("0.01"), _waits("+Inf")) == (instant + 1, total + 1)
    assert service.assign("waits").result == QUEUED  # a1 holds its one voice call
    service.clock.advance(4_000)
    service.agent("a2", skills={"billing": 5})
    service.wait_for_call("waits", pb.CALL_STATUS_ASSIGNED)
    deadline = time.monotonic() + 10  # observed just after the dispatcher's commit
    while _waits("+Inf") < total + 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert (_waits("0.01"), _waits("5.0"), _waits("+Inf")) == (
        instant + 1,
        within_5 + 2,
        total + 2,
    )
    assert _waits("+Inf", channel="chat") == chats


def _exemplars(port: int) -> list[str]:
    """The Assign latency buckets' exemplars on ``/metrics`` in OpenMetrics format."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/metrics",
        headers={"Accept": "application/openmetrics-text; version=1.0.0; charset=utf-8"},
    )
    with urllib.request.urlopen(request, timeout=5) as reply:
        body = reply.read().decode()
    return [
        line.split(" # ", 1)[1]
        for line in body.splitlines()
        if line.startswith("router_rpc_duration_seconds_bucket{")
        and 'method="Assign"' in line
        and " # " in line
    ]


def test_a_sampled_trace_is_the_latency_samples_exemplar(service: Service) -> None:
    """The trace id of a sampled trace marks its RPC's latency bucket (OpenMetrics
    exemplars, for a dashboard to link a slow bucket to a trace); an unsampled trace,
    whose spans the caller does not keep, does not."""
    port = local_redis.free_port()
    metrics.serve("127.0.0.1", port)
    unsampled, sampled = "1" * 32, "0af7651916cd43dd8448eb211c80319c"  # not other tests'
    _traced_assign(service, "unsampled", f"00-{unsampled}-{CALLER_SPAN}-00")
    assert not any(unsampled in exemplar for exemplar in _exemplars(port))
    _traced_assign(service, "sampled", f"00-{sampled}-{CALLER_SPAN}-01")
    found = [exemplar for exemplar in _exemplars(port) if sampled in exemplar]
    assert len(found) == 1
    assert found[0].startswith(f'{{trace_id="{sampled}"}} ')


def test_metrics_time_the_garbage_collectors_pauses() -> None:
    """Each collection is timed into ``router_gc_pause_seconds`` by generation, once the
    replica watches (``python -m router`` does when it serves metrics), and a second watch
    adds no second hook."""
    metrics.GC_PAUSES.watch()
    metrics.GC_PAUSES.watch()
    hooks = [hook for hook in gc.callbacks if hook == metrics.GC_PAUSES._timed]
    assert len(hooks) == 1
    # No automatic collection (of any thread the earlier tests left) between the samples:
    # only the two asked for here are counted.
    gc.disable()
    try:
        before = sample("router_gc_pause_seconds_count", generation="2")
        took = sample("router_gc_pause_seconds_sum", generation="2")
        young = sample("router_gc_pause_seconds_count", generation="0")
        gc.collect()
        gc.collect(0)
        assert sample("router_gc_pause_seconds_count", generation="2") == before + 1
        assert sample("router_gc_pause_seconds_sum", generation="2") > took
        assert sample("router_gc_pause_seconds_count", generation="0") == young + 1
        every = sample("router_gc_pause_seconds_bucket", generation="2", le="+Inf")
    finally:
        gc.enable()
    assert every == before + 1
    assert sample("router_gc_pause_seconds_bucket", generation="2", le="1.0") <= every


def test_metrics_count_rpcs_and_assign_results(service: Service) -> None:
    """Prometheus series move with traffic, and /metrics serves them over HTTP."""
    before = _rpcs("Assign", "OK")
    assigned = sample(
        "router_assign_results_total", tenant="acme", result="assigned", strategy="balanced"
    )
    service.agent("a1", skills={"billing": 5})
    service.assign("c1")
    assert service.assign("c1").replayed  # a retry: answered again, not counted again
    after = _rpcs("Assign", "OK")
    assert after == before + 2
    assert sample(
        "router_assign_results_total", tenant="acme", result="assigned", strategy="balanced"
    ) == (assigned + 1)
    port = local_redis.free_port()
    metrics.serve("127.0.0.1", port)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        body = reply.read().decode()
    assert "router_rpc_duration_seconds_bucket" in body
    assert "router_queue_depth" in body or "router_decide_duration_seconds" in body


def _rpcs(method: str, code: str, service: str = server.ROUTING_SERVICE) -> float:
    """``router_rpc_duration_seconds_count`` of one service's method and code."""
    return sample("router_rpc_duration_seconds_count", service=service, method=method, code=code)


def _rpcs_by_code(service: str, method: str) -> dict[str, float]:
    """The RPCs of one service's method so far, by status code."""
    return {
        found.labels["code"]: found.value
        for family in metrics.REGISTRY.collect()
        for found in family.samples
        if found.name == "router_rpc_duration_seconds_count"
        and (found.labels["service"], found.labels["method"]) == (service, method)
    }


def test_rpcs_are_counted_by_service_and_the_code_their_handler_set(service: Service) -> None:
    """The health service's Watch and the routing service's are apart (label ``service``),
    and a health Check of a service nobody serves counts as the NOT_FOUND it answered (the
    health servicer sets the code on its context rather than raising)."""
    health_service = "grpc.health.v1.Health"
    health = health_pb2_grpc.HealthStub(service.channel)
    missing = _rpcs("Check", "NOT_FOUND", service=health_service)
    with pytest.raises(grpc.RpcError) as err:
        health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))  # type: ignore[attr-defined]  # stubs omit the stub's methods
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert _rpcs("Check", "NOT_FOUND", service=health_service) == missing + 1
    routing_watches = _rpcs_by_code(server.ROUTING_SERVICE, "Watch")
    health_watches = sum(_rpcs_by_code(health_service, "Watch").values())
    stream = health.Watch(health_pb2.HealthCheckRequest())  # type: ignore[attr-defined]  # stubs omit the stub's methods
    assert next(stream).status == health_pb2.HealthCheckResponse.SERVING
    stream.cancel()
    deadline = time.monotonic() + 10
    while sum(_rpcs_by_code(health_service, "Watch").values()) == health_watches:
        assert time.monotonic() < deadline, "the health Watch was not counted"
        time.sleep(0.01)
    assert _rpcs_by_code(server.ROUTING_SERVICE, "Watch") == routing_watches


def test_a_watch_ended_from_outside_counts_as_its_client_saw_it_end(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Watch its client cancels while no event comes, one whose deadline passes and one
    open when the server stops count as CANCELLED, DEADLINE_EXCEEDED and UNAVAILABLE (not
    OK), not as a store error, each line at info with what ended it, the last one written
    before the stop returns: the stream ends by itself at its next read (here 50 ms),
    telling its client to resume elsewhere, before the grace period is over."""
    monkeypatch.setattr(routing_api, "WATCH_BLOCK_MS", 50)  # each read notices sooner
    counted, wait_until_counted = _watch_counts()
    store_errors = sample("router_store_unavailable_total")
    request = routing_pb2.WatchRequest(tenant=service.tenant)
    with log_lines() as entries:
        idle = service.routing.Watch(request)
        idle.initial_metadata()  # open, waiting for events
        idle.cancel()
        wait_until_counted("CANCELLED")
        with pytest.raises(grpc.RpcError) as err:
            list(service.routing.Watch(request, timeout=0.2))
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        wait_until_counted("DEADLINE_EXCEEDED")
        cut = service.routing.Watch(request)
        cut.initial_metadata()
        service.running.stop(0.1)
        assert counted("UNAVAILABLE") == 1
        with pytest.raises(grpc.RpcError) as err:
            list(cut)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert {code: counted(code) for code in ("OK", "CANCELLED", "DEADLINE_EXCEEDED")} == {
        "OK": 0,
        "CANCELLED": 1,
        "DEADLINE_EXCEEDED": 1,
    }
    assert sample("router_store_unavailable_total") == store_errors
    lines = [line for line in entries if line["event"] == "rpc_finished"]
    assert [(line["code"], line["log_level"], line["details"]) for line in lines] == [
        ("CANCELLED", "info", "cancelled by the client"),
        ("DEADLINE_EXCEEDED", "info", "the client's deadline passed"),
        ("UNAVAILABLE", "info", STOPPING),
    ]
    assert err.value.details() == STOPPING


STOPPING = (
    "this replica is stopping: watch again, after the last event id received, to resume on another"
)


def test_a_stop_does_not_wait_out_its_grace_period_for_an_idle_watch(service: Service) -> None:
    """A replica stopping with a Watch open and no event coming stops within about a read
    (a second), not its grace period (30 s here): the stream ends by itself, and its client
    gets UNAVAILABLE with what to do. One still in its read when a shorter grace period
    ends is cut, and its line says so."""
    counted, _ = _watch_counts()
    request = routing_pb2.WatchRequest(tenant=service.tenant)
    with log_lines() as entries:
        idle = service.routing.Watch(request)
        idle.initial_metadata()
        started = time.monotonic()
        service.running.stop(30)
        assert time.monotonic() - started < 10
        with pytest.raises(grpc.RpcError) as err:
            list(idle)
    assert (err.value.code(), err.value.details()) == (grpc.StatusCode.UNAVAILABLE, STOPPING)
    assert counted("UNAVAILABLE") == 1
    (line,) = [line for line in entries if line["event"] == "rpc_finished"]
    assert (line["log_level"], line["details"]) == ("info", STOPPING)


def test_a_watch_in_its_read_when_the_grace_period_ends_is_cut(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop whose grace period (0.1 s) ends while a Watch waits in its read (5 s here):
    gRPC cuts it, its client gets UNAVAILABLE, and its line says it was cut."""
    monkeypatch.setattr(routing_api, "WATCH_BLOCK_MS", 5_000)
    counted, wait_until_counted = _watch_counts()
    with log_lines() as entries:
        cut = service.routing.Watch(routing_pb2.WatchRequest(tenant=service.tenant))
        cut.initial_metadata()
        service.running.stop(0.1)
        with pytest.raises(grpc.RpcError) as err:
            list(cut)
        wait_until_counted("UNAVAILABLE")  # once its read is over
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert counted("UNAVAILABLE") == 1
    (line,) = [line for line in entries if line["event"] == "rpc_finished"]
    assert (line["log_level"], line["details"]) == ("info", "cut by the server's stop")


def _watch_counts() -> tuple[Callable[[str], float], Callable[[str], None]]:
    """Watches counted by code from now on, and a wait until one is counted with a code."""
    before = _rpcs_by_code(server.ROUTING_SERVICE, "Watch")

    def counted(code: str) -> float:
        return _rpcs_by_code(server.ROUTING_SERVICE, "Watch").get(code, 0) - before.get(code, 0)

    def wait_until_counted(code: str) -> None:
        deadline = time.monotonic() + 10
        while not counted(code):
            assert time.monotonic() < deadline, f"no Watch counted {code}"
            time.sleep(0.01)

    return counted, wait_until_counted


def test_a_watch_counts_how_its_call_ended_not_when_its_read_noticed(service: Service) -> None:
    """Watch notices that its call ended only after its blocking read (a second): a client
    that cancels before its deadline still counts CANCELLED, for the time it was open, and
    one whose deadline passed before the server's stop began counts DEADLINE_EXCEEDED (not
    the stop's UNAVAILABLE)."""
    counted, wait_until_counted = _watch_counts()
    request = routing_pb2.WatchRequest(tenant=service.tenant)
    with log_lines() as entries:
        early = service.routing.Watch(request, timeout=1.0)
        early.initial_metadata()
        time.sleep(0.2)
        early.cancel()  # the handler's read still waits until about 1 s
        wait_until_counted("CANCELLED")
        with pytest.raises(grpc.RpcError) as err:
            list(service.routing.Watch(request, timeout=0.3))
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        service.running.stop(0.3)  # cut at 0.6 s, before that Watch's read notices (1 s)
    assert {code: counted(code) for code in ("CANCELLED", "DEADLINE_EXCEEDED")} == {
        "CANCELLED": 1,
        "DEADLINE_EXCEEDED": 1,
    }
    assert counted("UNAVAILABLE") == 0
    lines = [line for line in entries if line["event"] == "rpc_finished"]
    assert [line["code"] for line in lines] == ["CANCELLED", "DEADLINE_EXCEEDED"]
    assert lines[0]["duration_ms"] < 700


def test_metrics_give_the_replicas_own_cpu_and_memory() -> None:
    """The standard ``process_*`` series come from this process: its CPU seconds grow with
    work done, its resident memory is that of a running interpreter, and /metrics serves
    them next to the router's own."""
    cpu = sample("process_cpu_seconds_total")
    spin = time.process_time() + 0.05
    while time.process_time() < spin:  # 50 ms of CPU (clock ticks are 10 ms)
        pass
    assert sample("process_cpu_seconds_total") >= cpu + 0.03
    assert sample("process_resident_memory_bytes") > 10 * 2**20
    assert sample("process_open_fds") > 0
    port = local_redis.free_port()
    metrics.serve("127.0.0.1", port)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        body = reply.read().decode()
    assert "\nprocess_cpu_seconds_total " in body
    assert "\n# HELP router_" in body
