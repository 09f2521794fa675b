"""``make demo``: a small team, a few calls, and what the router decided and why.

Starts a throw-away service (private redis-server if installed, else in-memory) on a free
loopback port unless ``--target`` names a running one, then talks to it over real gRPC
exactly as a helpdesk platform would. Each run loads its team into a tenant of its own
(``demo-`` and 8 random hex digits, printed first), so it can be run again and again against
the same service.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import time
from collections.abc import Sequence

import grpc
from google.protobuf import field_mask_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from router import local_redis, logs
from router.memory_store import MemoryStore
from router.redis_store import RedisStore
from router.server import RunningServer, create_server
from router.settings import Settings
from router.store import Store
from router.v1 import admin_pb2, admin_pb2_grpc, routing_pb2, routing_pb2_grpc
from router.v1 import types_pb2 as pb

TEAM = [
    # id, name, skills, languages, region, timezone
    ("ana", "Ana (star)", {"billing": 9, "tech": 7}, ["en", "pt"], "eu-west", "Europe/Lisbon"),
    ("ben", "Ben", {"billing": 6}, ["en"], "eu-west", "Europe/London"),
    ("chloe", "Chloe", {"billing": 5, "tech": 8}, ["en", "fr"], "eu-central", "Europe/Paris"),
    ("dev", "Dev", {"tech": 6}, ["en", "hi"], "apac", "Asia/Kolkata"),
    ("eva", "Eva (on vacation)", {"billing": 8}, ["en", "de"], "eu-central", "Europe/Berlin"),
]
CHANNELS = {"voice": pb.CHANNEL_VOICE, "chat": pb.CHANNEL_CHAT, "email": pb.CHANNEL_EMAIL}


def _call(call_id: str, channel: str, skill: str, level: int, **extra: str) -> pb.Call:
    return pb.Call(
        call_id=call_id,
        channel=CHANNELS[channel],
        required_skills=[pb.SkillRequirement(skill=skill, min_level=level)],
        **extra,  # type: ignore[arg-type]  # language / region / preferred_agent_id strings
    )


def _explain(response: routing_pb2.AssignResponse) -> str:
    e = response.explanation
    excluded = ", ".join(
        f"{pb.ExclusionReason.Name(x.reason).removeprefix('EXCLUSION_REASON_').lower()}={x.count}"
        for x in e.excluded
    )
    parts = ", ".join(f"{p.name} {p.value:+.2f}" for p in e.score_parts)
    if response.result == routing_pb2.AssignResponse.RESULT_NO_AGENT:
        return f"NO_AGENT ({e.candidates} eligible; excluded: {excluded or 'none'})"
    if response.result == routing_pb2.AssignResponse.RESULT_QUEUED:
        wait = response.estimated_wait.ToTimedelta().total_seconds()
        return (
            f"QUEUED at position {response.position}, estimated wait {wait:.0f}s "
            f"(excluded now: {excluded or 'none'})"
        )
    a = response.assignment
    runner = (
        f"; runner-up {e.runner_up_agent_id} {e.runner_up_score:.2f}"
        if e.runner_up_agent_id
        else ""
    )
    return (
        f"-> {a.agent_id} (token {a.fencing_token}; score {e.score:.2f}: {parts}{runner}; "
        f"excluded: {excluded or 'none'})"
    )


def new_tenant() -> str:
    """A tenant no earlier run used: ``demo-`` and 8 random hex digits."""
    return f"demo-{secrets.token_hex(4)}"


def run(channel: grpc.Channel, tenant: str) -> None:
    """Load the team into ``tenant`` (which must have no agents yet), route calls, print what
    happened."""
    admin = admin_pb2_grpc.AgentAdminServiceStub(channel)
    routing = routing_pb2_grpc.RoutingServiceStub(channel)
    print(f"== team (in tenant {tenant}, a new one each run)")
    for agent_id, name, skills, languages, region, tz in TEAM:
        admin.CreateAgent(
            admin_pb2.CreateAgentRequest(
                tenant=tenant,
                agent=pb.Agent(
                    agent_id=agent_id, name=name, team="support", skills=skills,
                    languages=languages, region=region, timezone=tz,
                    capacity=[pb.ChannelCapacity(channel=pb.CHANNEL_CHAT, max_items=2)],
                ),
            )
        )  # fmt: skip
        admin.SetPresence(
            admin_pb2.SetPresenceRequest(
                tenant=tenant, agent_id=agent_id, presence=pb.PRESENCE_AVAILABLE
            )
        )
        print(f"  {agent_id:<6} {name:<20} skills={skills} languages={languages} region={region}")
    vacation = admin.ScheduleAbsence(_vacation_request(tenant))
    print(f"  eva is on vacation until {vacation.absences[0].end_time.ToJsonString()}")

    print("\n== routing")
    calls = [
        ("c1", "voice", "billing", 5, {"region": "eu-west"}),
        ("c2", "chat", "tech", 6, {}),
        ("c3", "chat", "tech", 6, {"language": "fr"}),
        ("c4", "email", "billing", 8, {}),
        ("c5", "chat", "billing", 3, {"preferred_agent_id": "ben"}),
    ]
    assignments: dict[str, pb.Assignment] = {}
    for call_id, channel_name, skill, level, extra in calls:
        response = routing.Assign(
            routing_pb2.AssignRequest(
                tenant=tenant,
                request_id=f"req-{call_id}",
                call=_call(call_id, channel_name, skill, level, **extra),
            )
        )
        need = f"{channel_name} {skill}>={level} {extra or ''}"
        print(f"  {call_id} {need:<42} {_explain(response)}")
        if response.result == routing_pb2.AssignResponse.RESULT_ASSIGNED:
            assignments[call_id] = response.assignment

    print("\n== a retried request gets the same answer, never a second agent")
    retry = routing.Assign(
        routing_pb2.AssignRequest(
            tenant=tenant,
            request_id="req-c1",
            call=_call("c1", "voice", "billing", 5, region="eu-west"),
        )
    )
    print(f"  c1 again: agent {retry.assignment.agent_id}, replayed={retry.replayed}")

    print("\n== Ana completes c1 (happy customer); the dispatcher gives her the waiting email")
    cursor = routing.GetCall(routing_pb2.GetCallRequest(tenant=tenant, call_id="c4"))
    done = assignments["c1"]
    routing.Complete(
        routing_pb2.CompleteRequest(
            tenant=tenant,
            assignment_id=done.assignment_id,
            fencing_token=done.fencing_token,
            outcome=pb.Outcome(csat=5, resolved=True),
        )
    )
    _wait_for(routing, tenant, "c4", after=cursor.call.timeline[-1].event_id)
    info = routing.GetCall(routing_pb2.GetCallRequest(tenant=tenant, call_id="c4")).call
    steps = " -> ".join(f"{e.type}({e.agent_id})" if e.agent_id else e.type for e in info.timeline)
    print(f"  c4 is {pb.CallStatus.Name(info.status)} with {info.assignment.agent_id}: {steps}")

    print("\n== an admin raises Dev's billing skill; the very next call sees it")
    admin.PatchSkills(
        admin_pb2.PatchSkillsRequest(
            tenant=tenant, agent_id="dev", set=[admin_pb2.SkillLevel(skill="billing", level=7)]
        )
    )
    response = routing.Assign(
        routing_pb2.AssignRequest(
            tenant=tenant, request_id="req-c6", call=_call("c6", "voice", "billing", 7)
        )
    )
    print(f"  c6 voice billing>=7 {_explain(response)}")

    print("\n== a German caller: only Eva speaks German, and she is on vacation")
    response = routing.Assign(
        routing_pb2.AssignRequest(
            tenant=tenant,
            request_id="req-c7",
            call=_call("c7", "voice", "billing", 5, language="de"),
        )
    )
    print(f"  c7 voice billing>=5 de {_explain(response)}")
    if response.callback_offered:
        routing.RequestCallback(routing_pb2.RequestCallbackRequest(tenant=tenant, call_id="c7"))
        print("  the caller accepted a callback and keeps their place")

    print("\n== live statistics")
    stats = routing.GetStats(routing_pb2.GetStatsRequest(tenant=tenant))
    presence = ", ".join(
        f"{pb.Presence.Name(p.presence).removeprefix('PRESENCE_').lower()}={p.agents}"
        for p in stats.presence
        if p.agents
    )
    busy = ", ".join(f"{a.agent_id}={a.units_used}" for a in stats.agents if a.units_used)
    print(f"  queued {stats.queued}, longest wait {stats.longest_wait.ToMilliseconds()} ms")
    print(f"  agents: {presence}; units in use: {busy}")

    print("\n== policy")
    policy = routing_policy(channel, tenant)
    print(f"  strategy {pb.Strategy.Name(policy.strategy)}, occupancy cap {policy.max_occupancy}")


def _wait_for(
    routing: routing_pb2_grpc.RoutingServiceStub, tenant: str, call_id: str, after: str
) -> None:
    """Follow the event stream until the call is assigned (bounded to 10 s)."""
    stream = routing.Watch(
        routing_pb2.WatchRequest(
            tenant=tenant, after_event_id=after, call_id=call_id, types=["ASSIGNED"]
        ),
        timeout=10,
    )
    try:
        next(iter(stream))
    finally:
        stream.cancel()


def _vacation_request(tenant: str) -> admin_pb2.ScheduleAbsenceRequest:
    now = int(time.time())
    return admin_pb2.ScheduleAbsenceRequest(
        tenant=tenant,
        agent_id="eva",
        absence=pb.Absence(
            kind=pb.ABSENCE_KIND_VACATION,
            start_time=Timestamp(seconds=now - 3600),
            end_time=Timestamp(seconds=now + 14 * 86400),
            note="two weeks in Crete",
        ),
    )


def routing_policy(channel: grpc.Channel, tenant: str) -> pb.Policy:
    """Read the tenant's policy (and show how an update with a field mask looks)."""
    policies = admin_pb2_grpc.PolicyServiceStub(channel)
    return policies.UpdatePolicy(
        admin_pb2.UpdatePolicyRequest(
            tenant=tenant,
            policy=pb.Policy(max_occupancy=0.8),
            update_mask=field_mask_pb2.FieldMask(paths=["max_occupancy"]),
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo against ``--target`` or a throw-away server."""
    parser = argparse.ArgumentParser(prog="python -m router.demo", description=__doc__)
    parser.add_argument("--target", help="host:port of a running service (default: start one)")
    args = parser.parse_args(argv)
    logs.silence()
    private: local_redis.LocalRedis | None = None
    running: RunningServer | None = None
    target = args.target
    if target is None:
        store: Store
        if local_redis.available():
            private = local_redis.start()
            store = RedisStore.from_url(private.url)
            print(f"(throw-away service on a private redis-server at {private.url})")
        else:
            store = MemoryStore()
            print("(throw-away service on the in-memory store)")
        running = create_server(Settings(port=0), store)
        target = f"127.0.0.1:{running.port}"
    try:
        with grpc.insecure_channel(target) as channel:
            run(channel, new_tenant())
    finally:
        if running is not None:
            running.stop(1.0)
        if private is not None:
            private.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
