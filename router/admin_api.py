"""Admin gRPC servicers: agents, skills, presence, absences and policy.

No try/except for status mapping here: errors raised below are mapped by
``router.interceptors.ErrorInterceptor``.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable

import grpc
from google.protobuf.empty_pb2 import Empty

from router import convert
from router import store_common as rules
from router.convert import PRESENCES
from router.domain import AgentProfile, AgentSnapshot, frozen_map
from router.errors import (
    AlreadyExistsError,
    ContentionError,
    InvalidArgumentError,
    NotFoundError,
    VersionConflictError,
)
from router.policies import POLICY_FIELDS, policy_from_pb, policy_to_pb, set_paths
from router.store import AgentQuery, Store
from router.v1 import admin_pb2, admin_pb2_grpc
from router.v1 import types_pb2 as pb

MAX_PAGE = 1000
DEFAULT_PAGE = 100
STORE_PAGE = 32
"""Agents a page reads from the store first; then as many as their average size leaves
room for, so a page of small agents takes one or two reads and one of the largest reads
about a store page more than it sends."""
PAGE_BYTES = 3 << 20
"""A page of agents stops before this many bytes (the server sends at most 4 MiB): at their
largest (128-character ids, 50 skills, 20 languages, 100 absences with 200-character notes:
about 100 KB) some 30 agents."""
MAX_ABSENCES = 100
"""Absences an agent keeps at most (scheduled, current, and those ended within
``ENDED_ABSENCE_KEPT_MS``)."""
ENDED_ABSENCE_KEPT_MS = 24 * 3600 * 1000
"""How long an ended absence stays on the agent: scheduling another drops older ones."""
MAX_POLICY_RETRIES = 5


class _Unchanged(Exception):  # noqa: N818  # a signal, not an error
    """Nothing to write: a ``ScheduleAbsence`` retried (the very absence is there), a
    ``CancelAbsence`` of an absence already over (a retry after the first attempt ended it)."""


def _mask(paths: list[str], allowed: tuple[str, ...], implied: list[str]) -> tuple[str, ...]:
    """The fields an update changes (AIP-134): those ``paths`` name; with ``*`` every one
    of ``allowed`` (a full replacement); with none, ``implied``: the ones the request sets
    (so a request that sets a name changes the name, not the skills it left empty),
    refused when it sets none."""
    if paths == ["*"]:
        return allowed
    if "*" in paths:
        raise InvalidArgumentError("update_mask", "'*' must be its only path")
    if not paths:
        paths = implied
        if not paths:
            raise InvalidArgumentError(
                "update_mask", "is empty and the request sets no field to change"
            )
    if len(set(paths)) != len(paths):
        raise InvalidArgumentError("update_mask", "lists a field twice")
    return tuple(paths)


def _version(field: str, value: int) -> int:
    if value < 0:
        raise InvalidArgumentError(field, "must be >= 0")
    return value


class AgentAdminServicer(admin_pb2_grpc.AgentAdminServiceServicer):
    """Agent management: profile, skills, presence, heartbeats, absences. Every change that
    can free or add capacity wakes the dispatcher for the tenant."""

    def __init__(self, store: Store, wake: Callable[[str], None]) -> None:
        self._store = store
        self._wake = wake

    def _changed(self, tenant: str, agent: AgentSnapshot) -> pb.Agent:
        self._wake(tenant)
        return self._agent_pb(tenant, agent)

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
        return self._changed(tenant, self._store.create_agent(tenant, profile))

    def UpdateAgent(  # noqa: N802
        self, request: admin_pb2.UpdateAgentRequest, context: grpc.ServicerContext
    ) -> pb.Agent:
        """See ``proto/router/v1/admin.proto``."""
        tenant = convert.tenant(request.tenant)
        if not request.HasField("agent"):
            raise InvalidArgumentError("agent", "is required")
        agent_id = convert.identifier("agent.agent_id", request.agent.agent_id)
        fields = convert.AGENT_FIELDS
        implied = [field.name for field, _ in request.agent.ListFields() if field.name in fields]
        paths = _mask(list(request.update_mask.paths), fields, implied)
        values = convert.agent_fields_from_pb(request.agent, paths)
        version = _version("agent.version", request.agent.version)
        updated = self._store.update_agent(
            tenant,
            agent_id,
            lambda profile: dataclasses.replace(profile, **values),  # type: ignore[arg-type]
            version,
        )
        return self._changed(tenant, updated)

    def PatchSkills(  # noqa: N802
        self, request: admin_pb2.PatchSkillsRequest, context: grpc.ServicerContext
    ) -> pb.Agent:
        """See ``proto/router/v1/admin.proto``."""
        tenant = convert.tenant(request.tenant)
        agent_id = convert.identifier("agent_id", request.agent_id)
        changes = convert.skills_from_pb("set", {s.skill: s.level for s in request.set})
        if len(changes) != len(request.set):
            raise InvalidArgumentError("set", "lists a skill twice")
        if len(request.remove) > convert.MAX_SKILLS:
            raise InvalidArgumentError("remove", f"more than {convert.MAX_SKILLS} skills")
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
        return self._changed(tenant, self._store.update_agent(tenant, agent_id, patch, version))

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
        return self._page(tenant, query, request.page_size or DEFAULT_PAGE, token)

    def _page(
        self, tenant: str, query: AgentQuery, wanted: int, token: str
    ) -> admin_pb2.ListAgentsResponse:
        """Up to ``wanted`` agents after ``token``, stopping before ``PAGE_BYTES``: read from
        the store ``STORE_PAGE`` at first, then as many as the agents' average size so far
        leaves room for (one more than fits, to find the cut)."""
        policy, now = self._store.get_policy(tenant), self._store.now_ms()
        page: list[pb.Agent] = []
        size = 0
        ask = min(STORE_PAGE, wanted)
        while True:
            agents, token = self._store.list_agents(tenant, query, ask, token)
            for agent in agents:
                item = convert.agent_to_pb(agent, policy, now)
                size += item.ByteSize()
                if size > PAGE_BYTES and page:  # the rest on the next page, after the last sent
                    return admin_pb2.ListAgentsResponse(
                        agents=page, next_page_token=rules.encode_page_token(page[-1].agent_id)
                    )
                page.append(item)
            if not token or len(page) >= wanted:
                return admin_pb2.ListAgentsResponse(agents=page, next_page_token=token)
            room = (PAGE_BYTES - size) * len(page) // max(size, 1)
            ask = max(1, min(wanted - len(page), room + 1))

    def SetPresence(  # noqa: N802
        self, request: admin_pb2.SetPresenceRequest, context: grpc.ServicerContext
    ) -> pb.Agent:
        """See ``proto/router/v1/admin.proto``."""
        tenant = convert.tenant(request.tenant)
        agent_id = convert.identifier("agent_id", request.agent_id)
        presence = convert.enum_value("presence", request.presence, PRESENCES)
        reason = convert.text("reason", request.reason, max_len=convert.MAX_LABEL)
        return self._changed(tenant, self._store.set_presence(tenant, agent_id, presence, reason))

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
        cutoff = self._store.now_ms() - ENDED_ABSENCE_KEPT_MS

        def add(profile: AgentProfile) -> AgentProfile:
            for held in profile.absences:
                if held.absence_id == absence_id:
                    if held == absence:  # a retry: nothing to write
                        raise _Unchanged
                    raise AlreadyExistsError(
                        f"agent {agent_id} already has an absence {absence_id} (another one)"
                    )
            kept = [a for a in profile.absences if a.end_ms > cutoff]  # older ones dropped
            if len(kept) >= MAX_ABSENCES:
                raise InvalidArgumentError("absence", f"an agent has at most {MAX_ABSENCES}")
            absences = sorted((*kept, absence), key=lambda a: (a.start_ms, a.absence_id))
            return dataclasses.replace(profile, absences=tuple(absences))

        version = _version("expected_version", request.expected_version)
        return self._update_once(
            tenant, agent_id, add, version, lambda profile: absence in profile.absences
        )

    def CancelAbsence(  # noqa: N802
        self, request: admin_pb2.CancelAbsenceRequest, context: grpc.ServicerContext
    ) -> pb.Agent:
        """See ``proto/router/v1/admin.proto``."""
        tenant = convert.tenant(request.tenant)
        agent_id = convert.identifier("agent_id", request.agent_id)
        absence_id = convert.identifier("absence_id", request.absence_id)
        now = self._store.now_ms()

        def over(profile: AgentProfile) -> bool:
            """Whether the absence is there and already over."""
            return any(a.absence_id == absence_id and a.end_ms <= now for a in profile.absences)

        def cancel(profile: AgentProfile) -> AgentProfile:
            """End an absence under way now (kept: its end restarts the agent's idle clock,
            as any absence's does); remove one still to come; leave one over as it is."""
            found = [a for a in profile.absences if a.absence_id == absence_id]
            if not found:
                raise NotFoundError(f"agent {agent_id} has no absence {absence_id}")
            if over(profile):
                raise _Unchanged
            absences = [a for a in profile.absences if a.absence_id != absence_id]
            if found[0].covers(now):
                absences.append(dataclasses.replace(found[0], end_ms=now))
                absences.sort(key=lambda a: (a.start_ms, a.absence_id))
            return dataclasses.replace(profile, absences=tuple(absences))

        version = _version("expected_version", request.expected_version)
        return self._update_once(tenant, agent_id, cancel, version, over)

    def _update_once(
        self,
        tenant: str,
        agent_id: str,
        change: Callable[[AgentProfile], AgentProfile],
        version: int,
        done: Callable[[AgentProfile], bool],
    ) -> pb.Agent:
        """``update_agent`` for a change safe to retry: one that finds nothing to write
        (``_Unchanged``), or whose version is stale while the profile shows it ``done`` (a
        retry after the first attempt wrote it), answers the agent as it is."""
        try:
            agent = self._store.update_agent(tenant, agent_id, change, version)
        except _Unchanged:
            return self._agent_pb(tenant, self._store.get_agent(tenant, agent_id))
        except VersionConflictError:
            current = self._store.get_agent(tenant, agent_id)
            if not done(current.profile):
                raise
            return self._agent_pb(tenant, current)
        return self._changed(tenant, agent)


class PolicyServicer(admin_pb2_grpc.PolicyServiceServicer):
    """Per-tenant routing policy."""

    def __init__(self, store: Store, wake: Callable[[str], None]) -> None:
        self._store = store
        self._wake = wake

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
        paths = _mask(list(request.update_mask.paths), POLICY_FIELDS, set_paths(request.policy))
        version = _version("policy.version", request.policy.version)
        for _ in range(MAX_POLICY_RETRIES):
            current = self._store.get_policy(tenant)
            updated = policy_from_pb(request.policy, paths, current)
            try:
                stored = self._store.put_policy(tenant, updated, version or current.version)
            except VersionConflictError:
                if version:  # the caller asked for their version: let them re-read
                    raise
            else:
                self._wake(tenant)
                return policy_to_pb(stored)
        raise ContentionError("policy kept changing; retry")
