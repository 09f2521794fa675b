"""``router.routing_api.RoutingServicer`` on the in-memory store: when it wakes the
dispatcher (the gRPC path is covered by the integration tests)."""

from __future__ import annotations

from typing import Any

from router.assigner import Assigner
from router.domain import AgentProfile, Channel, Presence, frozen_map
from router.memory_store import MemoryStore
from router.routing_api import RoutingServicer
from router.v1 import routing_pb2
from router.v1 import types_pb2 as pb
from tests.helpers import FakeClock

T = "acme"


def _servicer() -> tuple[RoutingServicer, list[str]]:
    store = MemoryStore(FakeClock())
    profile = AgentProfile(
        "ana", skills=frozen_map({"billing": 5}), capacity=frozen_map({Channel.CHAT: 1})
    )
    store.create_agent(T, profile)
    store.set_presence(T, "ana", Presence.AVAILABLE)
    woken: list[str] = []
    return RoutingServicer(store, Assigner(store), woken.append), woken


def _assign(servicer: RoutingServicer, call_id: str) -> routing_pb2.AssignResponse:
    call = pb.Call(
        call_id=call_id,
        channel=pb.CHANNEL_CHAT,
        required_skills=[pb.SkillRequirement(skill="billing", min_level=1)],
    )
    request = routing_pb2.AssignRequest(tenant=T, request_id=f"r-{call_id}", call=call)
    context: Any = None  # the servicer never reads it
    return servicer.Assign(request, context)


def _end(servicer: RoutingServicer, assignment: pb.Assignment, *, release: bool) -> None:
    """Release or Complete ``assignment`` with its token."""
    asg_id, token, context = assignment.assignment_id, assignment.fencing_token, None
    if release:
        released = routing_pb2.ReleaseRequest(tenant=T, assignment_id=asg_id, fencing_token=token)
        servicer.Release(released, context)  # type: ignore[arg-type]  # never read
    else:
        done = routing_pb2.CompleteRequest(tenant=T, assignment_id=asg_id, fencing_token=token)
        servicer.Complete(done, context)  # type: ignore[arg-type]  # never read


def test_completing_with_nothing_queued_wakes_no_dispatcher() -> None:
    """A Complete that frees a slot nobody waits for costs no dispatcher pass."""
    servicer, woken = _servicer()
    first = _assign(servicer, "c1")
    _end(servicer, first.assignment, release=False)
    assert woken == []


def test_completing_or_releasing_while_calls_wait_wakes_the_dispatcher() -> None:
    """With a call queued behind the busy agent, Complete wakes the dispatcher for the
    tenant; a Release (its call goes back to the queue) always does."""
    servicer, woken = _servicer()
    first = _assign(servicer, "c1")
    assert _assign(servicer, "c2").result == routing_pb2.AssignResponse.RESULT_QUEUED
    _end(servicer, first.assignment, release=False)
    assert woken == [T]
    servicer_alone, woken_alone = _servicer()
    only = _assign(servicer_alone, "c3")
    _end(servicer_alone, only.assignment, release=True)
    assert woken_alone == [T]
