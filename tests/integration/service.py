"""A running service for API tests: real redis-server, real gRPC server, real channel.

The store's clock is injectable so tests can move time (heartbeat expiry, absences,
occupancy windows) without sleeping; everything else is the production code path.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import grpc
import pytest
import redis
from google.protobuf import field_mask_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from router import local_redis
from router.redis_store import RedisStore, single_client
from router.server import RunningServer, create_server
from router.settings import Settings
from router.v1 import admin_pb2, admin_pb2_grpc, routing_pb2, routing_pb2_grpc
from router.v1 import types_pb2 as pb
from tests.helpers import FakeClock, keyspace


@dataclass
class Service:
    """Stubs on a live server plus helpers that keep tests short."""

    channel: grpc.Channel
    client: redis.Redis
    clock: FakeClock
    running: RunningServer
    tenant: str = "acme"

    def __post_init__(self) -> None:
        self.routing = routing_pb2_grpc.RoutingServiceStub(self.channel)
        self.admin = admin_pb2_grpc.AgentAdminServiceStub(self.channel)
        self.policies = admin_pb2_grpc.PolicyServiceStub(self.channel)

    def kill(self) -> None:
        """Stop this replica at once (no grace): what a crash looks like to the others."""
        self.running.stop(0)

    def dump(self) -> dict[bytes | str, object]:
        """Every key with its serialized value: equal dumps mean nothing was written."""
        return {
            key: value
            for key, value in keyspace(self.client).items()
            if ":lease:" not in str(key)  # the dispatcher's own lease and tick marker
        }

    # --- admin helpers -----------------------------------------------------------------------

    def agent(
        self,
        agent_id: str,
        *,
        skills: Mapping[str, int],
        presence: pb.Presence.ValueType = pb.PRESENCE_AVAILABLE,
        chat_capacity: int | None = None,
        max_occupancy: float | None = None,
    ) -> pb.Agent:
        """Create an agent and set its presence."""
        agent = pb.Agent(agent_id=agent_id, name=agent_id.title(), skills=dict(skills))
        if chat_capacity is not None:
            agent.capacity.append(
                pb.ChannelCapacity(channel=pb.CHANNEL_CHAT, max_items=chat_capacity)
            )
        if max_occupancy is not None:
            agent.max_occupancy = max_occupancy
        self.admin.CreateAgent(admin_pb2.CreateAgentRequest(tenant=self.tenant, agent=agent))
        return self.presence(agent_id, presence)

    def presence(
        self, agent_id: str, presence: pb.Presence.ValueType, reason: str = ""
    ) -> pb.Agent:
        """SetPresence."""
        return self.admin.SetPresence(
            admin_pb2.SetPresenceRequest(
                tenant=self.tenant, agent_id=agent_id, presence=presence, reason=reason
            )
        )

    def heartbeat(self, agent_id: str) -> None:
        """Heartbeat."""
        self.admin.Heartbeat(admin_pb2.HeartbeatRequest(tenant=self.tenant, agent_id=agent_id))

    def get_agent(self, agent_id: str) -> pb.Agent:
        """GetAgent."""
        return self.admin.GetAgent(admin_pb2.GetAgentRequest(tenant=self.tenant, agent_id=agent_id))

    def patch_skills(
        self,
        agent_id: str,
        *,
        set: Mapping[str, int] | None = None,
        remove: list[str] | None = None,
    ) -> pb.Agent:
        """PatchSkills."""
        return self.admin.PatchSkills(
            admin_pb2.PatchSkillsRequest(
                tenant=self.tenant,
                agent_id=agent_id,
                set=[admin_pb2.SkillLevel(skill=k, level=v) for k, v in (set or {}).items()],
                remove=remove or [],
            )
        )

    def set_policy(self, **seconds: int) -> pb.Policy:
        """Update duration fields given as ``<field>_s`` (e.g. ``occupancy_window_s=600``)."""
        policy = pb.Policy()
        paths = []
        for name, value in seconds.items():
            field = name.removesuffix("_s")
            getattr(policy, field).seconds = value
            paths.append(field)
        return self.policies.UpdatePolicy(
            admin_pb2.UpdatePolicyRequest(
                tenant=self.tenant, policy=policy, update_mask=field_mask_pb2.FieldMask(paths=paths)
            )
        )

    # --- routing helpers ---------------------------------------------------------------------

    def assign(
        self,
        call_id: str,
        *,
        skills: Mapping[str, int] | None = None,
        channel: pb.Channel.ValueType = pb.CHANNEL_VOICE,
        request_id: str = "",
        no_queue: bool = False,
        metadata: tuple[tuple[str, str], ...] = (),
        **fields: object,
    ) -> routing_pb2.AssignResponse:
        """Assign a call needing ``skills`` (default billing >= 1), sent with ``metadata``;
        ``fields`` are set on the call (``priority``, ``team``, ``expected_handle_time``,
        ...)."""
        required = [
            pb.SkillRequirement(skill=k, min_level=v) for k, v in (skills or {"billing": 1}).items()
        ]
        return self.routing.Assign(
            routing_pb2.AssignRequest(
                tenant=self.tenant,
                request_id=request_id or f"req-{call_id}",
                call=pb.Call(
                    call_id=call_id,
                    channel=channel,
                    required_skills=required,
                    **fields,  # type: ignore[arg-type]  # checked by protobuf at run time
                ),
                no_queue=no_queue,
            ),
            metadata=metadata,
        )

    def complete(
        self, assignment: pb.Assignment, *, csat: int = 0, resolved: bool | None = None
    ) -> pb.Assignment:
        """Complete with the assignment's token."""
        outcome = pb.Outcome(csat=csat)
        if resolved is not None:
            outcome.resolved = resolved
        return self.routing.Complete(
            routing_pb2.CompleteRequest(
                tenant=self.tenant,
                assignment_id=assignment.assignment_id,
                fencing_token=assignment.fencing_token,
                outcome=outcome,
            )
        ).assignment

    def get_call(self, call_id: str) -> pb.CallInfo:
        """GetCall."""
        return self.routing.GetCall(
            routing_pb2.GetCallRequest(tenant=self.tenant, call_id=call_id)
        ).call

    def wait_for_call(
        self, call_id: str, status: pb.CallStatus.ValueType, timeout_s: float = 10.0
    ) -> pb.CallInfo:
        """Poll GetCall until the call reaches ``status`` (the dispatcher works in the
        background); fails the test after ``timeout_s``."""
        return self.wait_until(call_id, lambda call: call.status == status, timeout_s)

    def wait_until(
        self, call_id: str, done: Callable[[pb.CallInfo], bool], timeout_s: float = 10.0
    ) -> pb.CallInfo:
        """Poll GetCall until ``done(call)``; fails the test after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            call = self.get_call(call_id)
            if done(call):
                return call
            if time.monotonic() > deadline:
                status = pb.CallStatus.Name(call.status)
                raise AssertionError(f"{call_id} still {status} after {timeout_s}s: {call}")
            time.sleep(0.02)

    # --- malformed requests for the bad-input table ------------------------------------------

    def assign_raw(
        self,
        *,
        tenant: str = "acme",
        request_id: str = "r",
        call_id: str = "c",
        channel: pb.Channel.ValueType = pb.CHANNEL_VOICE,
        level: int = 1,
        priority: int = 0,
        language: str = "",
    ) -> object:
        """Assign with one field spoiled."""
        return self.routing.Assign(
            routing_pb2.AssignRequest(
                tenant=tenant,
                request_id=request_id,
                call=pb.Call(
                    call_id=call_id,
                    channel=channel,
                    required_skills=[pb.SkillRequirement(skill="billing", min_level=level)],
                    priority=priority,
                    language=language,
                ),
            )
        )

    def create_raw(
        self,
        *,
        agent_id: str = "new",
        skills: Mapping[str, int] | None = None,
        capacity: int = 1,
        timezone: str = "",
        name: str = "",
    ) -> object:
        """CreateAgent with one field spoiled."""
        return self.admin.CreateAgent(
            admin_pb2.CreateAgentRequest(
                tenant=self.tenant,
                agent=pb.Agent(
                    agent_id=agent_id,
                    name=name,
                    skills=dict(skills or {"billing": 3}),
                    timezone=timezone,
                    capacity=[pb.ChannelCapacity(channel=pb.CHANNEL_VOICE, max_items=capacity)],
                ),
            )
        )

    def complete_raw(self, assignment_id: str, token: int) -> object:
        """Complete an arbitrary assignment id."""
        return self.routing.Complete(
            routing_pb2.CompleteRequest(
                tenant=self.tenant, assignment_id=assignment_id, fencing_token=token
            )
        )

    def cancel_raw(self, call_id: str) -> object:
        """Cancel an arbitrary call id."""
        return self.routing.Cancel(routing_pb2.CancelRequest(tenant=self.tenant, call_id=call_id))

    def update_mask_raw(self, paths: list[str]) -> object:
        """UpdateAgent of ``existing`` with the given mask."""
        return self.admin.UpdateAgent(
            admin_pb2.UpdateAgentRequest(
                tenant=self.tenant,
                agent=pb.Agent(agent_id="existing", skills={"tech": 2}),
                update_mask=field_mask_pb2.FieldMask(paths=paths),
            )
        )

    def schedule_absence(
        self,
        agent_id: str,
        start_s: int,
        end_s: int,
        *,
        absence_id: str = "",
        kind: pb.AbsenceKind.ValueType = pb.ABSENCE_KIND_OTHER,
        note: str = "",
        version: int = 0,
    ) -> pb.Agent:
        """ScheduleAbsence from ``start_s`` to ``end_s`` (epoch seconds)."""
        return self.admin.ScheduleAbsence(
            admin_pb2.ScheduleAbsenceRequest(
                tenant=self.tenant,
                agent_id=agent_id,
                absence=pb.Absence(
                    absence_id=absence_id,
                    kind=kind,
                    start_time=Timestamp(seconds=start_s),
                    end_time=Timestamp(seconds=end_s),
                    note=note,
                ),
                expected_version=version,
            )
        )

    def absence_raw(self, *, end_before_start: bool) -> object:
        """ScheduleAbsence with the end before the start."""
        start = self.clock.now_ms // 1000
        end = start - 60 if end_before_start else start + 60
        return self.admin.ScheduleAbsence(
            admin_pb2.ScheduleAbsenceRequest(
                tenant=self.tenant,
                agent_id="existing",
                absence=pb.Absence(
                    kind=pb.ABSENCE_KIND_TRAINING,
                    start_time=Timestamp(seconds=start),
                    end_time=Timestamp(seconds=end),
                ),
            )
        )

    def cancel_absence_raw(self, absence_id: str) -> object:
        """CancelAbsence of an arbitrary id."""
        return self.admin.CancelAbsence(
            admin_pb2.CancelAbsenceRequest(
                tenant=self.tenant, agent_id="existing", absence_id=absence_id
            )
        )

    def list_raw(self, *, page_token: str = "", page_size: int = 10) -> object:
        """ListAgents with arbitrary paging."""
        return self.admin.ListAgents(
            admin_pb2.ListAgentsRequest(
                tenant=self.tenant, page_token=page_token, page_size=page_size
            )
        )


def start_service(url: str, clock: FakeClock, raw: redis.Redis, **settings: int) -> Service:
    """A server over the Redis at ``url`` on ``clock`` (``settings`` override the tests'
    defaults), with a channel to it; ``raw`` is the tests' own client."""
    store = RedisStore(single_client(url, decode_responses=True), clock=clock)
    fields: dict[str, int | float] = {"port": 0, "workers": 32, "dispatch_tick_s": 0.05}
    running = create_server(Settings(**{**fields, **settings}), store)  # type: ignore[arg-type]
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    return Service(channel, raw, clock, running)


def _close(replica: Service) -> None:
    replica.channel.close()
    replica.running.stop(0)


@pytest.fixture
def service(redis_server: local_redis.LocalRedis) -> Iterator[Service]:
    """A fresh server over an empty Redis, with a fake clock."""
    client = redis.Redis.from_url(redis_server.url, decode_responses=False)
    client.flushall()
    replica = start_service(redis_server.url, FakeClock(), client)
    try:
        yield replica
    finally:
        _close(replica)
        client.close()


@pytest.fixture
def second_replica(service: Service, redis_server: local_redis.LocalRedis) -> Iterator[Service]:
    """Another server process-equivalent over the same Redis and clock as ``service``."""
    replica = start_service(redis_server.url, service.clock, service.client)
    try:
        yield replica
    finally:
        _close(replica)
