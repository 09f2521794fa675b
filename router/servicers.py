"""gRPC servicers: validate, convert, call the store or the assigner, convert back.

No try/except for status mapping here: errors raised below are mapped by
``router.interceptors.ErrorInterceptor``.
"""

from __future__ import annotations

import dataclasses
import uuid

import grpc
from google.protobuf.empty_pb2 import Empty

from router import convert
from router.assigner import Assigner
from router.convert import PRESENCES
from router.domain import AgentProfile, AgentSnapshot, AssignmentState, Outcome, frozen_map
from router.errors import (
    ContentionError,
    InvalidArgumentError,
    NotFoundError,
    VersionConflictError,
)
from router.policies import POLICY_FIELDS, policy_from_pb, policy_to_pb
from router.store import AgentQuery, Store
from router.v1 import admin_pb2, admin_pb2_grpc, routing_pb2, routing_pb2_grpc
from router.v1 import types_pb2 as pb
from scoring import performance

MAX_PAGE = 1000
DEFAULT_PAGE = 100
MAX_ABSENCES = 100
MAX_POLICY_RETRIES = 5


def _mask(paths: list[str], allowed: tuple[str, ...]) -> tuple[str, ...]:
    if not paths:
        return allowed
    if len(set(paths)) != len(paths):
        raise InvalidArgumentError("update_mask", "lists a field twice")
    return tuple(paths)


def _version(field: str, value: int) -> int:
    if value < 0:
        raise InvalidArgumentError(field, "must be >= 0")
    return value


class RoutingServicer(routing_pb2_grpc.RoutingServiceServicer):
    """Assign, Complete, Release, Cancel, GetCall."""

    def __init__(self, store: Store, assigner: Assigner) -> None:
        self._store = store
        self._assigner = assigner

    def Assign(  # noqa: N802  # gRPC method names are CamelCase
        self, request: routing_pb2.AssignRequest, context: grpc.ServicerContext
    ) -> routing_pb2.AssignResponse:
        """See the RPC's documentation in ``proto/router/v1/routing.proto``."""
        tenant = convert.tenant(request.tenant)
        request_id = convert.identifier("request_id", request.request_id)
        if not request.HasField("call"):
            raise InvalidArgumentError("call", "is required")
        call = convert.call_from_pb(request.call)
        result = self._assigner.assign(tenant, request_id, call)
        response = routing_pb2.AssignResponse(
            explanation=convert.explanation_to_pb(result.explanation), replayed=result.replayed
        )
        if result.assignment is None:
            response.result = routing_pb2.AssignResponse.RESULT_NO_AGENT
        else:
            response.result = routing_pb2.AssignResponse.RESULT_ASSIGNED
            response.assignment.CopyFrom(convert.assignment_to_pb(result.assignment))
        return response

    def _finish(
        self,
        request: routing_pb2.CompleteRequest | routing_pb2.ReleaseRequest,
        end: AssignmentState,
        outcome_value: float | None,
    ) -> pb.Assignment:
        tenant = convert.tenant(request.tenant)
        assignment_id = convert.identifier("assignment_id", request.assignment_id)
        if request.fencing_token <= 0:
            raise InvalidArgumentError("fencing_token", "is required (from the assignment)")
        policy = self._store.get_policy(tenant) if outcome_value is not None else None
        finished = self._store.finish_assignment(
            tenant,
            assignment_id,
            request.fencing_token,
            end,
            outcome_value=outcome_value,
            half_life_s=policy.performance_half_life_s if policy else 0,
        )
        return convert.assignment_to_pb(finished)

    def Complete(  # noqa: N802
        self, request: routing_pb2.CompleteRequest, context: grpc.ServicerContext
    ) -> routing_pb2.CompleteResponse:
        """See ``proto/router/v1/routing.proto``."""
        outcome = request.outcome
        if not 0 <= outcome.csat <= 5:
            raise InvalidArgumentError("outcome.csat", f"{outcome.csat} is not in 0..5")
        handle_s = convert.seconds(outcome.handle_time)
        if not 0 <= handle_s <= 7 * 86400:
            raise InvalidArgumentError("outcome.handle_time", "must be between 0 and 7 days")
        value = performance.outcome_value(
            Outcome(
                handle_time_s=handle_s,
                csat=outcome.csat,
                resolved=outcome.resolved if outcome.HasField("resolved") else None,
            ),
            target_handle_s=0,
        )
        finished = self._finish(request, AssignmentState.COMPLETED, value)
        return routing_pb2.CompleteResponse(assignment=finished)

    def Release(  # noqa: N802
        self, request: routing_pb2.ReleaseRequest, context: grpc.ServicerContext
    ) -> routing_pb2.ReleaseResponse:
        """See ``proto/router/v1/routing.proto``."""
        convert.text("reason", request.reason, max_len=convert.MAX_NAME)
        finished = self._finish(request, AssignmentState.RELEASED, None)
        return routing_pb2.ReleaseResponse(assignment=finished)

    def Cancel(  # noqa: N802
        self, request: routing_pb2.CancelRequest, context: grpc.ServicerContext
    ) -> routing_pb2.CancelResponse:
        """See ``proto/router/v1/routing.proto``."""
        tenant = convert.tenant(request.tenant)
        call_id = convert.identifier("call_id", request.call_id)
        convert.text("reason", request.reason, max_len=convert.MAX_NAME)
        record = self._store.cancel_call(tenant, call_id)
        return routing_pb2.CancelResponse(call=convert.call_record_to_pb(record))

    def GetCall(  # noqa: N802
        self, request: routing_pb2.GetCallRequest, context: grpc.ServicerContext
    ) -> routing_pb2.GetCallResponse:
        """See ``proto/router/v1/routing.proto``."""
        tenant = convert.tenant(request.tenant)
        record = self._store.get_call(tenant, convert.identifier("call_id", request.call_id))
        return routing_pb2.GetCallResponse(call=convert.call_record_to_pb(record))


class AgentAdminServicer(admin_pb2_grpc.AgentAdminServiceServicer):
    """Agent management: profile, skills, presence, heartbeats, absences."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def _agent_pb(self, tenant: str, agent: AgentSnapshot) -> pb.Agent:
        return convert.agent_to_pb(agent, self._store.get_policy(tenant), self._store.now_ms())

    def CreateAgent(  # noqa: N802
        self, request: admin_pb2.CreateAgentRequest, context: grpc.ServicerContext
    ) -> pb.Agent:
        """See ``proto/router/v1/admin.proto``."""
        tenant = convert.tenant(request.tenant)
        if not request.HasField("agent"):
            raise InvalidArgumentError("agent", "is required")
        profile = convert.agent_from_pb(request.agent)
        return self._agent_pb(tenant, self._store.create_agent(tenant, profile))

    def UpdateAgent(  # noqa: N802
        self, request: admin_pb2.UpdateAgentRequest, context: grpc.ServicerContext
    ) -> pb.Agent:
        """See ``proto/router/v1/admin.proto``."""
        tenant = convert.tenant(request.tenant)
        if not request.HasField("agent"):
            raise InvalidArgumentError("agent", "is required")
        agent_id = convert.identifier("agent.agent_id", request.agent.agent_id)
        paths = _mask(list(request.update_mask.paths), convert.AGENT_FIELDS)
        values = convert.agent_fields_from_pb(request.agent, paths)
        version = _version("agent.version", request.agent.version)
        updated = self._store.update_agent(
            tenant,
            agent_id,
            lambda profile: dataclasses.replace(profile, **values),  # type: ignore[arg-type]
            version,
        )
        return self._agent_pb(tenant, updated)

    def PatchSkills(  # noqa: N802
        self, request: admin_pb2.PatchSkillsRequest, context: grpc.ServicerContext
    ) -> pb.Agent:
        """See ``proto/router/v1/admin.proto``."""
        tenant = convert.tenant(request.tenant)
        agent_id = convert.identifier("agent_id", request.agent_id)
        changes = convert.skills_from_pb("set", {s.skill: s.level for s in request.set})
        if len(changes) != len(request.set):
            raise InvalidArgumentError("set", "lists a skill twice")
        removals = {convert.skill_name(f"remove[{i}]", s) for i, s in enumerate(request.remove)}
        if both := removals & changes.keys():
            raise InvalidArgumentError("remove", f"{sorted(both)[0]!r} is also in set")

        def patch(profile: AgentProfile) -> AgentProfile:
            skills = {k: v for k, v in profile.skills.items() if k not in removals} | changes
            if len(skills) > convert.MAX_SKILLS:
                raise InvalidArgumentError(
                    "set", f"the agent would have over {convert.MAX_SKILLS} skills"
                )
            return dataclasses.replace(profile, skills=frozen_map(dict(sorted(skills.items()))))

        version = _version("expected_version", request.expected_version)
        return self._agent_pb(tenant, self._store.update_agent(tenant, agent_id, patch, version))

    def DeleteAgent(  # noqa: N802
        self, request: admin_pb2.DeleteAgentRequest, context: grpc.ServicerContext
    ) -> Empty:
        """See ``proto/router/v1/admin.proto``."""
        tenant = convert.tenant(request.tenant)
        agent_id = convert.identifier("agent_id", request.agent_id)
        version = _version("expected_version", request.expected_version)
        self._store.delete_agent(tenant, agent_id, version)
        return Empty()

    def GetAgent(  # noqa: N802
        self, request: admin_pb2.GetAgentRequest, context: grpc.ServicerContext
    ) -> pb.Agent:
        """See ``proto/router/v1/admin.proto``."""
        tenant = convert.tenant(request.tenant)
        agent_id = convert.identifier("agent_id", request.agent_id)
        return self._agent_pb(tenant, self._store.get_agent(tenant, agent_id))

    def ListAgents(  # noqa: N802
        self, request: admin_pb2.ListAgentsRequest, context: grpc.ServicerContext
    ) -> admin_pb2.ListAgentsResponse:
        """See ``proto/router/v1/admin.proto``."""
        tenant = convert.tenant(request.tenant)
        if not 0 <= request.page_size <= MAX_PAGE:
            raise InvalidArgumentError("page_size", f"{request.page_size} is not in 0..{MAX_PAGE}")
        if request.presence and request.presence not in PRESENCES:
            raise InvalidArgumentError("presence", f"unknown value {request.presence}")
        query = AgentQuery(
            skill=convert.skill_name("skill", request.skill) if request.skill else "",
            team=convert.text("team", request.team, max_len=convert.MAX_LABEL),
            region=convert.text("region", request.region, max_len=convert.MAX_LABEL),
            presence=PRESENCES[request.presence] if request.presence else None,
        )
        token = convert.text("page_token", request.page_token, max_len=1024)
        policy, now = self._store.get_policy(tenant), self._store.now_ms()
        agents, next_token = self._store.list_agents(
            tenant, query, request.page_size or DEFAULT_PAGE, token
        )
        return admin_pb2.ListAgentsResponse(
            agents=[convert.agent_to_pb(a, policy, now) for a in agents],
            next_page_token=next_token,
        )

    def SetPresence(  # noqa: N802
        self, request: admin_pb2.SetPresenceRequest, context: grpc.ServicerContext
    ) -> pb.Agent:
        """See ``proto/router/v1/admin.proto``."""
        tenant = convert.tenant(request.tenant)
        agent_id = convert.identifier("agent_id", request.agent_id)
        presence = convert.enum_value("presence", request.presence, PRESENCES)
        reason = convert.text("reason", request.reason, max_len=convert.MAX_LABEL)
        return self._agent_pb(tenant, self._store.set_presence(tenant, agent_id, presence, reason))

    def Heartbeat(  # noqa: N802
        self, request: admin_pb2.HeartbeatRequest, context: grpc.ServicerContext
    ) -> admin_pb2.HeartbeatResponse:
        """See ``proto/router/v1/admin.proto``."""
        tenant = convert.tenant(request.tenant)
        agent_id = convert.identifier("agent_id", request.agent_id)
        now = self._store.heartbeat(tenant, agent_id)
        timeout = self._store.get_policy(tenant).heartbeat_timeout_s
        return admin_pb2.HeartbeatResponse(
            server_time=convert.timestamp(now), timeout_seconds=timeout
        )

    def ScheduleAbsence(  # noqa: N802
        self, request: admin_pb2.ScheduleAbsenceRequest, context: grpc.ServicerContext
    ) -> pb.Agent:
        """See ``proto/router/v1/admin.proto``."""
        tenant = convert.tenant(request.tenant)
        agent_id = convert.identifier("agent_id", request.agent_id)
        if not request.HasField("absence"):
            raise InvalidArgumentError("absence", "is required")
        absence_id = (
            convert.identifier("absence.absence_id", request.absence.absence_id)
            if request.absence.absence_id
            else uuid.uuid4().hex
        )
        absence = convert.absence_from_pb(request.absence, absence_id)

        def add(profile: AgentProfile) -> AgentProfile:
            if any(a.absence_id == absence_id for a in profile.absences):
                raise InvalidArgumentError("absence.absence_id", f"{absence_id!r} already exists")
            if len(profile.absences) >= MAX_ABSENCES:
                raise InvalidArgumentError("absence", f"an agent has at most {MAX_ABSENCES}")
            absences = sorted(
                (*profile.absences, absence), key=lambda a: (a.start_ms, a.absence_id)
            )
            return dataclasses.replace(profile, absences=tuple(absences))

        version = _version("expected_version", request.expected_version)
        return self._agent_pb(tenant, self._store.update_agent(tenant, agent_id, add, version))

    def CancelAbsence(  # noqa: N802
        self, request: admin_pb2.CancelAbsenceRequest, context: grpc.ServicerContext
    ) -> pb.Agent:
        """See ``proto/router/v1/admin.proto``."""
        tenant = convert.tenant(request.tenant)
        agent_id = convert.identifier("agent_id", request.agent_id)
        absence_id = convert.identifier("absence_id", request.absence_id)

        def remove(profile: AgentProfile) -> AgentProfile:
            kept = tuple(a for a in profile.absences if a.absence_id != absence_id)
            if len(kept) == len(profile.absences):
                raise NotFoundError(f"agent {agent_id} has no absence {absence_id}")
            return dataclasses.replace(profile, absences=kept)

        version = _version("expected_version", request.expected_version)
        return self._agent_pb(tenant, self._store.update_agent(tenant, agent_id, remove, version))


class PolicyServicer(admin_pb2_grpc.PolicyServiceServicer):
    """Per-tenant routing policy."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def GetPolicy(  # noqa: N802
        self, request: admin_pb2.GetPolicyRequest, context: grpc.ServicerContext
    ) -> pb.Policy:
        """See ``proto/router/v1/admin.proto``."""
        return policy_to_pb(self._store.get_policy(convert.tenant(request.tenant)))

    def UpdatePolicy(  # noqa: N802
        self, request: admin_pb2.UpdatePolicyRequest, context: grpc.ServicerContext
    ) -> pb.Policy:
        """See ``proto/router/v1/admin.proto``."""
        tenant = convert.tenant(request.tenant)
        if not request.HasField("policy"):
            raise InvalidArgumentError("policy", "is required")
        paths = _mask(list(request.update_mask.paths), POLICY_FIELDS)
        version = _version("policy.version", request.policy.version)
        for _ in range(MAX_POLICY_RETRIES):
            current = self._store.get_policy(tenant)
            updated = policy_from_pb(request.policy, paths, current)
            try:
                return policy_to_pb(
                    self._store.put_policy(tenant, updated, version or current.version)
                )
            except VersionConflictError:
                if version:  # the caller asked for their version: let them re-read
                    raise
        raise ContentionError("policy kept changing; retry")
