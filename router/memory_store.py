"""In-process ``Store`` for the simulator, unit tests and a zero-setup local run.

It keeps exactly the semantics of ``router.redis_store.RedisStore`` (the contract suite in
``tests/integration/test_store_contract.py`` runs against both): the same checks in the same
order, the same error messages, the same retention rules (expired records vanish lazily when
read), event ids shaped like Redis stream ids. One ``threading.Lock`` makes every method
atomic; ``update_agent`` calls the caller's ``change`` outside the lock and writes with a
compare-and-set on the version, like the Redis store does.

Time comes from the injected ``clock`` (epoch ms), so the simulator can run on simulated time.
"""

from __future__ import annotations

import bisect
import dataclasses
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from router import store_common as rules
from router.domain import (
    ActiveWork,
    AgentProfile,
    AgentSnapshot,
    Assignment,
    AssignmentState,
    Call,
    CallRecord,
    CallStatus,
    PerformanceStats,
    Policy,
    Presence,
    Snapshot,
    WorkSpan,
    frozen_map,
)
from router.errors import AlreadyExistsError, NotFoundError
from router.store import AgentQuery, Claim, CommitResult, Committed, Conflict, Event
from scoring import performance


def _system_clock() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class _Agent:
    profile: AgentProfile
    presence: Presence = Presence.OFFLINE
    reason: str = ""
    since: int = 0
    heartbeat: int = 0
    seq: int = 1
    last_free: int = 0
    last_assigned: int = 0
    performance: PerformanceStats = field(default_factory=PerformanceStats)
    active: dict[str, ActiveWork] = field(default_factory=dict)
    work: list[tuple[int, str, WorkSpan]] = field(default_factory=list)
    """Finished spans sorted like the Redis ZSET: (end_ms, member, span)."""

    def view(self, cutoff_ms: int) -> AgentSnapshot:
        return AgentSnapshot(
            profile=self.profile,
            presence=self.presence,
            presence_reason=self.reason,
            presence_since_ms=self.since,
            heartbeat_ms=self.heartbeat,
            active=tuple(sorted(self.active.values(), key=lambda w: (w.start_ms, w.assignment_id))),
            recent=tuple(
                sorted(
                    (span for end, _, span in self.work if end >= cutoff_ms), key=rules.span_order
                )
            ),
            performance=self.performance,
            last_free_ms=self.last_free,
            last_assigned_ms=self.last_assigned,
            seq=self.seq,
        )


@dataclass
class _CallRec:
    call: Call
    status: CallStatus
    assignment_id: str
    updated: int
    expires: int | None = None


@dataclass
class _Tenant:
    agents: dict[str, _Agent] = field(default_factory=dict)
    policy: Policy | None = None
    assignments: dict[str, tuple[Assignment, int | None]] = field(default_factory=dict)
    calls: dict[str, _CallRec] = field(default_factory=dict)
    requests: dict[str, tuple[str, str, int]] = field(default_factory=dict)
    """request_id -> (fingerprint, assignment_id, expires_ms)."""
    fence: int = 0
    events: list[Event] = field(default_factory=list)
    event_keys: list[tuple[int, int]] = field(default_factory=list)


class MemoryStore:
    """A ``router.store.Store`` held in process memory, for one process."""

    def __init__(self, clock: Callable[[], int] | None = None) -> None:
        """``clock`` returns epoch milliseconds; the system clock when ``None``."""
        self._clock = clock or _system_clock
        self._lock = threading.Lock()
        self._tenants: dict[str, _Tenant] = {}

    def now_ms(self) -> int:
        """The injected clock."""
        return self._clock()

    # --- helpers (call with the lock held) ---------------------------------------------------

    def _tenant(self, tenant: str) -> _Tenant:
        return self._tenants.setdefault(tenant, _Tenant())

    def _agent(self, t: _Tenant, agent_id: str) -> _Agent:
        agent = t.agents.get(agent_id)
        if agent is None:
            raise rules.agent_not_found(agent_id)
        return agent

    def _emit(
        self, t: _Tenant, kind: str, now: int, call_id: str = "", agent_id: str = "", **data: str
    ) -> None:
        # Stream ids like Redis: <ms>-<n>, strictly increasing even if the clock steps back.
        last_ms, last_n = t.event_keys[-1] if t.event_keys else (-1, 0)
        key = (now, 0) if now > last_ms else (last_ms, last_n + 1)
        t.event_keys.append(key)
        t.events.append(Event(f"{key[0]}-{key[1]}", kind, now, call_id, agent_id, frozen_map(data)))
        if len(t.events) > rules.EVENTS_MAXLEN + 1000:  # trimmed approximately, like MAXLEN ~
            del t.events[:1000], t.event_keys[:1000]

    def _assignment(self, t: _Tenant, assignment_id: str, now: int) -> Assignment | None:
        entry = t.assignments.get(assignment_id)
        if entry is None:
            return None
        if entry[1] is not None and now > entry[1]:
            del t.assignments[assignment_id]
            return None
        return entry[0]

    def _call(self, t: _Tenant, call_id: str, now: int) -> _CallRec | None:
        rec = t.calls.get(call_id)
        if rec is not None and rec.expires is not None and now > rec.expires:
            del t.calls[call_id]
            return None
        return rec

    def _end(
        self,
        t: _Tenant,
        *,
        asg: Assignment,
        end: AssignmentState,
        now: int,
        outcome_value: float | None,
        half_life_s: int,
    ) -> Assignment:
        agent = t.agents.get(asg.agent_id)
        if agent is not None:
            agent.active.pop(asg.assignment_id, None)
            member = f"{asg.assignment_id}|{asg.created_ms}|{now}|{asg.units}"
            bisect.insort(agent.work, (now, member, WorkSpan(asg.created_ms, now, asg.units)))
            cutoff = now - rules.WORK_RETENTION_MS
            agent.work = [entry for entry in agent.work if entry[0] >= cutoff]
            agent.seq += 1
            if not agent.active:
                agent.last_free = now
            if outcome_value is not None:
                agent.performance = performance.fold(
                    agent.performance, outcome_value, now, half_life_s
                )
        ended = dataclasses.replace(asg, state=end, ended_ms=now)
        t.assignments[asg.assignment_id] = (ended, now + rules.RECORD_TTL_MS)
        rec = t.calls.get(asg.call_id)
        if rec is not None and rec.assignment_id == asg.assignment_id:
            rec.status, rec.updated = rules.ENDINGS[end], now
            rec.expires = now + rules.RECORD_TTL_MS
        self._emit(
            t,
            end.value.upper(),
            now,
            asg.call_id,
            asg.agent_id,
            assignment_id=asg.assignment_id,
            token=str(asg.token),
        )
        return ended

    # --- agents ------------------------------------------------------------------------------

    def create_agent(self, tenant: str, profile: AgentProfile) -> AgentSnapshot:
        """Store a new agent (version 1, presence OFFLINE, seq 1)."""
        rules.check_tenant(tenant)
        with self._lock:
            t, now = self._tenant(tenant), self._clock()
            if profile.agent_id in t.agents:
                raise AlreadyExistsError(f"agent {profile.agent_id} already exists")
            agent = _Agent(dataclasses.replace(profile, version=1), since=now)
            t.agents[profile.agent_id] = agent
            self._emit(t, "AGENT_CREATED", now, agent_id=profile.agent_id, version="1")
            return agent.view(now - rules.WORK_RETENTION_MS)

    def update_agent(
        self,
        tenant: str,
        agent_id: str,
        change: Callable[[AgentProfile], AgentProfile],
        expected_version: int = 0,
    ) -> AgentSnapshot:
        """Read, apply ``change`` outside the lock, compare-and-set on the version."""
        rules.check_tenant(tenant)
        what = f"agent {agent_id}"
        for _ in range(rules.MAX_CAS_ATTEMPTS):
            with self._lock:
                current = self._agent(self._tenant(tenant), agent_id).profile
            if expected_version > 0 and expected_version != current.version:
                raise rules.stale_version(what, expected_version, current.version)
            changed = rules.checked_change(change, current)
            with self._lock:
                t, now = self._tenant(tenant), self._clock()
                agent = self._agent(t, agent_id)
                if agent.profile.version != current.version:
                    if expected_version > 0:
                        raise rules.stale_version(what, expected_version, agent.profile.version)
                    continue
                version = current.version + 1
                agent.profile = dataclasses.replace(changed, version=version)
                agent.seq += 1
                self._emit(t, "AGENT_UPDATED", now, agent_id=agent_id, version=str(version))
                return agent.view(now - rules.WORK_RETENTION_MS)
        raise rules.contention(what)

    def delete_agent(self, tenant: str, agent_id: str, expected_version: int = 0) -> None:
        """Remove an idle agent."""
        rules.check_tenant(tenant)
        with self._lock:
            t, now = self._tenant(tenant), self._clock()
            agent = self._agent(t, agent_id)
            if expected_version > 0 and expected_version != agent.profile.version:
                raise rules.stale_version(
                    f"agent {agent_id}", expected_version, agent.profile.version
                )
            if agent.active:
                raise rules.agent_busy(agent_id, len(agent.active))
            del t.agents[agent_id]
            self._emit(t, "AGENT_DELETED", now, agent_id=agent_id)

    def get_agent(self, tenant: str, agent_id: str) -> AgentSnapshot:
        """One agent with live state."""
        rules.check_tenant(tenant)
        with self._lock:
            now = self._clock()
            return self._agent(self._tenant(tenant), agent_id).view(now - rules.WORK_RETENTION_MS)

    def list_agents(
        self, tenant: str, query: AgentQuery, page_size: int, page_token: str = ""
    ) -> tuple[list[AgentSnapshot], str]:
        """Agents matching ``query`` in id order, ``page_size`` at a time."""
        rules.check_tenant(tenant)
        after = rules.decode_page_token(page_token) if page_token else None
        with self._lock:
            t, now = self._tenant(tenant), self._clock()
            ids = sorted(t.agents)
            start = bisect.bisect_right(ids, after) if after is not None else 0
            found: list[AgentSnapshot] = []
            for agent_id in ids[start:]:
                view = t.agents[agent_id].view(now - rules.WORK_RETENTION_MS)
                if rules.matches(query, view):
                    found.append(view)
                    if len(found) > page_size:
                        break
        page = found[:page_size]
        more = len(found) > page_size
        return page, rules.encode_page_token(page[-1].agent_id) if more else ""

    def set_presence(
        self, tenant: str, agent_id: str, presence: Presence, reason: str = ""
    ) -> AgentSnapshot:
        """Change presence; counts as a heartbeat; bumps ``seq``."""
        rules.check_tenant(tenant)
        with self._lock:
            t, now = self._tenant(tenant), self._clock()
            agent = self._agent(t, agent_id)
            previous = agent.presence
            agent.presence, agent.reason, agent.since, agent.heartbeat = (
                presence,
                reason,
                now,
                now,
            )
            agent.seq += 1
            if presence == Presence.AVAILABLE and previous != presence and not agent.active:
                agent.last_free = now
            self._emit(
                t,
                "PRESENCE_CHANGED",
                now,
                agent_id=agent_id,
                presence=presence.value,
                reason=reason,
            )
            return agent.view(now - rules.WORK_RETENTION_MS)

    def heartbeat(self, tenant: str, agent_id: str) -> int:
        """Record a heartbeat (no ``seq`` bump); returns store time."""
        rules.check_tenant(tenant)
        with self._lock:
            now = self._clock()
            self._agent(self._tenant(tenant), agent_id).heartbeat = now
            return now

    # --- policy ------------------------------------------------------------------------------

    def get_policy(self, tenant: str) -> Policy:
        """The stored policy or ``Policy()``."""
        rules.check_tenant(tenant)
        with self._lock:
            return self._tenant(tenant).policy or Policy()

    def put_policy(self, tenant: str, policy: Policy, expected_version: int = 0) -> Policy:
        """Store ``policy`` as the next version."""
        rules.check_tenant(tenant)
        with self._lock:
            t, now = self._tenant(tenant), self._clock()
            current = t.policy.version if t.policy else 0
            if expected_version > 0 and expected_version != current:
                raise rules.stale_version("policy", expected_version, current)
            t.policy = dataclasses.replace(policy, version=current + 1)
            self._emit(t, "POLICY_UPDATED", now, version=str(current + 1))
            return t.policy

    # --- routing -----------------------------------------------------------------------------

    def load_snapshot(self, tenant: str, call: Call) -> Snapshot:
        """Policy, time and the agents holding every required skill (any level)."""
        rules.check_tenant(tenant)
        skills = {req.skill for req in call.required_skills}
        with self._lock:
            t, now = self._tenant(tenant), self._clock()
            policy = t.policy or Policy()
            cutoff = now - policy.occupancy_window_s * 1000
            agents = tuple(
                t.agents[agent_id].view(cutoff)
                for agent_id in sorted(t.agents)
                if skills <= t.agents[agent_id].profile.skills.keys()
            )
            return Snapshot(now, policy, agents, len(t.agents) - len(agents))

    def find_request(self, tenant: str, request_id: str) -> tuple[str, Assignment] | None:
        """The fingerprint and assignment stored for ``request_id``."""
        rules.check_tenant(tenant)
        with self._lock:
            t, now = self._tenant(tenant), self._clock()
            entry = t.requests.get(request_id)
            if entry is None or now > entry[2]:
                t.requests.pop(request_id, None)
                return None
            asg = self._assignment(t, entry[1], now)
            return None if asg is None else (entry[0], asg)

    def commit_assignment(self, tenant: str, claim: Claim) -> CommitResult:
        """Re-check and apply ``claim`` atomically (see ``Store.commit_assignment``)."""
        rules.check_tenant(tenant)
        with self._lock:
            t, now = self._tenant(tenant), self._clock()
            entry = t.requests.get(claim.request_id)
            if entry is not None and now <= entry[2]:
                if entry[0] != claim.fingerprint:
                    raise rules.request_reused()
                asg = self._assignment(t, entry[1], now)
                if asg is None:
                    raise NotFoundError(f"assignment {entry[1]} has expired")
                return Committed(asg, replayed=True)
            call_id = claim.call.call_id
            rec = self._call(t, call_id, now)
            if rec is not None and rec.status == CallStatus.ASSIGNED:
                raise rules.call_assigned(call_id, rec.assignment_id)
            if rec is not None and rec.status in (CallStatus.COMPLETED, CallStatus.CANCELLED):
                raise rules.call_finished(call_id, rec.status.value)
            conflict = _recheck(t.agents.get(claim.agent_id), claim, now)
            if conflict is not None:
                return conflict
            agent = t.agents[claim.agent_id]
            t.fence += 1
            asg = Assignment(
                assignment_id=uuid.uuid4().hex,
                call_id=call_id,
                agent_id=claim.agent_id,
                channel=claim.call.channel,
                units=claim.units,
                token=t.fence,
                state=AssignmentState.ACTIVE,
                created_ms=now,
                explanation=claim.explanation,
            )
            t.assignments[asg.assignment_id] = (asg, None)
            agent.active[asg.assignment_id] = ActiveWork(
                asg.assignment_id, asg.channel, asg.units, now
            )
            agent.seq += 1
            agent.last_assigned = now
            t.calls[call_id] = _CallRec(claim.call, CallStatus.ASSIGNED, asg.assignment_id, now)
            t.requests[claim.request_id] = (
                claim.fingerprint,
                asg.assignment_id,
                now + rules.REQUEST_TTL_MS,
            )
            self._emit(
                t,
                "ASSIGNED",
                now,
                call_id,
                claim.agent_id,
                assignment_id=asg.assignment_id,
                token=str(asg.token),
            )
            return Committed(asg)

    def finish_assignment(
        self,
        tenant: str,
        assignment_id: str,
        token: int,
        end: AssignmentState,
        *,
        outcome_value: float | None = None,
        half_life_s: int = 0,
    ) -> Assignment:
        """End an active assignment (see ``Store.finish_assignment``)."""
        rules.check_tenant(tenant)
        rules.check_ending(end, outcome_value)
        with self._lock:
            t, now = self._tenant(tenant), self._clock()
            asg = self._assignment(t, assignment_id, now)
            if asg is None:
                raise NotFoundError(f"assignment {assignment_id} not found")
            if asg.token != token:
                raise rules.stale_token(token, assignment_id)
            if asg.state != AssignmentState.ACTIVE:
                if asg.state == end:
                    return asg
                raise rules.already_ended(assignment_id, asg.state.value)
            return self._end(
                t, asg=asg, end=end, now=now, outcome_value=outcome_value, half_life_s=half_life_s
            )

    def cancel_call(self, tenant: str, call_id: str) -> CallRecord:
        """End the call's active assignment (if any) as CANCELLED and cancel the call."""
        rules.check_tenant(tenant)
        with self._lock:
            t, now = self._tenant(tenant), self._clock()
            rec = self._call(t, call_id, now)
            if rec is None:
                raise NotFoundError(f"call {call_id} not found")
            asg = self._assignment(t, rec.assignment_id, now)
            if rec.status == CallStatus.COMPLETED:
                raise rules.call_finished(call_id, rec.status.value)
            if rec.status == CallStatus.ASSIGNED and asg is not None:
                asg = self._end(
                    t,
                    asg=asg,
                    end=AssignmentState.CANCELLED,
                    now=now,
                    outcome_value=None,
                    half_life_s=0,
                )
            elif rec.status == CallStatus.RELEASED:
                rec.status, rec.updated = CallStatus.CANCELLED, now
                rec.expires = now + rules.RECORD_TTL_MS
                self._emit(t, "CANCELLED", now, call_id)
            return CallRecord(rec.call, rec.status, asg, rec.updated)

    def get_call(self, tenant: str, call_id: str) -> CallRecord:
        """A call's status and its current or last assignment."""
        rules.check_tenant(tenant)
        with self._lock:
            t, now = self._tenant(tenant), self._clock()
            rec = self._call(t, call_id, now)
            if rec is None:
                raise NotFoundError(f"call {call_id} not found")
            asg = self._assignment(t, rec.assignment_id, now)
            return CallRecord(rec.call, rec.status, asg, rec.updated)

    def read_events(self, tenant: str, after_id: str = "0", limit: int = 100) -> list[Event]:
        """Events strictly after ``after_id``, oldest first."""
        rules.check_tenant(tenant)
        after = rules.parse_event_id(after_id)
        with self._lock:
            t = self._tenant(tenant)
            start = bisect.bisect_right(t.event_keys, after)
            return t.events[start : start + max(limit, 0)]


def _recheck(agent: _Agent | None, claim: Claim, now: int) -> Conflict | None:
    """The agent-side checks of a commit, in the order the Lua script makes them."""
    if agent is None:
        return Conflict("agent deleted")
    if agent.seq != claim.expected_seq:
        return Conflict("agent changed")
    if agent.presence != Presence.AVAILABLE:
        return Conflict(f"agent is {agent.presence.value}")
    timeout_ms = claim.heartbeat_timeout_s * 1000
    if timeout_ms > 0 and now - agent.heartbeat > timeout_ms:
        return Conflict("heartbeat expired")
    return None
