"""In-process ``Store`` for the simulator, unit tests and a zero-setup local run.

It keeps exactly the semantics of ``router.redis_store.RedisStore`` (the contract suites in
``tests/integration/`` run against both): the same checks in the same order, the same error
messages, the same retention rules (expired records vanish lazily when read), event ids shaped
like Redis stream ids. Each writing method repeats its Lua script step for step (the helpers
in ``router.memory_state`` mirror ``router/lua/_lib.lua``); the routing and call methods live
in the ``memory_routing`` and ``memory_calls`` mixins. One ``threading.Condition`` makes every
method atomic and wakes blocked ``read_events`` calls; ``update_agent`` calls the caller's
``change`` outside the lock and writes with a compare-and-set on the version, like the Redis
store does.

Time comes from the injected ``clock`` (epoch ms), so the simulator can run on simulated time
(blocking reads still wait in wall-clock time).
"""

from __future__ import annotations

import bisect
import dataclasses
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from router import metrics
from router import store_common as rules
from router.domain import (
    AGENT_UNIT_BUDGET,
    AgentProfile,
    AgentSnapshot,
    Call,
    Policy,
    Presence,
    Snapshot,
)
from router.errors import AlreadyExistsError, RouterError
from router.memory_calls import MemoryCalls
from router.memory_routing import MemoryRouting
from router.memory_state import AgentState, TenantState, policy_tag_of
from router.store import NONE_QUIET, AgentQuery, Candidates, Event, KnownPolicy, PassGrant


def _system_clock() -> int:
    return time.time_ns() // 1_000_000


class MemoryStore(MemoryRouting, MemoryCalls):
    """A ``router.store.Store`` held in process memory, for one process."""

    def __init__(
        self,
        clock: Callable[[], int] | None = None,
        *,
        events_maxlen: int = rules.EVENTS_MAXLEN,
        record_ttl_ms: int = rules.RECORD_TTL_MS,
    ) -> None:
        """``clock`` returns epoch milliseconds; the system clock when ``None``.
        ``events_maxlen`` caps each event stream (approximately, like Redis);
        ``record_ttl_ms``: how long a finished call's records are kept."""
        self._clock = clock or _system_clock
        self._lock = threading.Condition(threading.Lock())
        self._tenants: dict[str, TenantState] = {}
        self._events_maxlen = events_maxlen
        self._record_ttl_ms = record_ttl_ms

    def now_ms(self) -> int:
        """The injected clock."""
        return self._clock()

    def check_writable(self) -> None:
        """Always writable."""

    def unavailable_within(self, seconds: float, tenant: str) -> bool:
        """Never unavailable."""
        return False

    def _agent(self, t: TenantState, agent_id: str) -> AgentState:
        agent = t.agents.get(agent_id)
        if agent is None:
            raise rules.agent_not_found(agent_id)
        return agent

    # --- agents ------------------------------------------------------------------------------

    def create_agent(self, tenant: str, profile: AgentProfile) -> AgentSnapshot:
        """Store a new agent (presence OFFLINE; version and seq 1, or one past those of a
        deleted agent of its id)."""
        rules.check_tenant(tenant)
        with self._lock:
            t, now = self._tenant(tenant), self._clock()
            t.registered = True  # before the check, like the Redis SADD before its script
            if profile.agent_id in t.agents:
                raise AlreadyExistsError(f"agent {profile.agent_id} already exists")
            version, seq = t.retired.pop(profile.agent_id, (0, 0))
            stored = dataclasses.replace(profile, version=version + 1)
            agent = AgentState(stored, since=now, seq=seq + 1)
            t.agents[profile.agent_id] = agent
            data = {"version": str(version + 1)}
            t.emit("AGENT_CREATED", now, agent_id=profile.agent_id, data=data)
            return agent.view(now, now - rules.WORK_RETENTION_MS)

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
                    metrics.RETRIES.labels("version").inc()
                    continue
                version = current.version + 1
                agent.profile = dataclasses.replace(changed, version=version)
                agent.seq += 1
                t.emit("AGENT_UPDATED", now, agent_id=agent_id, data={"version": str(version)})
                return agent.view(now, now - rules.WORK_RETENTION_MS)
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
            held = agent.held(now)[0]
            if held:
                raise rules.agent_busy(agent_id, held)
            t.retired[agent_id] = (agent.profile.version, agent.seq)
            del t.agents[agent_id]
            t.emit("AGENT_DELETED", now, agent_id=agent_id)

    def get_agent(self, tenant: str, agent_id: str) -> AgentSnapshot:
        """One agent with live state."""
        rules.check_tenant(tenant)
        with self._lock:
            now = self._clock()
            return self._agent(self._tenant(tenant), agent_id).view(
                now, now - rules.WORK_RETENTION_MS
            )

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
                view = t.agents[agent_id].view(now, now - rules.WORK_RETENTION_MS)
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
            if presence == Presence.AVAILABLE:
                agent.missed = 0
                if previous != presence and agent.held(now)[0] == 0:
                    agent.last_free = now
            data = {"presence": presence.value, "reason": reason}
            t.emit("PRESENCE_CHANGED", now, agent_id=agent_id, data=data)
            return agent.view(now, now - rules.WORK_RETENTION_MS)

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

    def known_policy(self, tenant: str, *, fresh: bool = False) -> KnownPolicy:
        """The stored policy (always current here), tagged with its version."""
        rules.check_tenant(tenant)
        with self._lock:
            policy = self._tenant(tenant).policy
            return KnownPolicy(policy or Policy(), policy_tag_of(policy))

    def put_policy(
        self, tenant: str, policy: Policy, expected_version: int | None = None
    ) -> Policy:
        """Store ``policy`` as the next version."""
        rules.check_tenant(tenant)
        with self._lock:
            t, now = self._tenant(tenant), self._clock()
            current = t.policy.version if t.policy else 0
            if expected_version is not None and expected_version != current:
                raise rules.stale_version("policy", expected_version, current)
            t.policy = dataclasses.replace(policy, version=current + 1)
            t.emit("POLICY_UPDATED", now, data={"version": str(current + 1)})
            return t.policy

    # --- routing snapshot --------------------------------------------------------------------

    def load_snapshot(self, tenant: str, call: Call) -> Snapshot:
        """Policy, time and the agents holding every required skill (any level)."""
        rules.check_tenant(tenant)
        skills = {req.skill for req in call.required_skills}
        with self._lock:
            t, now = self._tenant(tenant), self._clock()
            policy = t.policy or Policy()
            cutoff = now - policy.occupancy_window_s * 1000
            agents = tuple(
                t.agents[agent_id].view(now, cutoff)
                for agent_id in sorted(t.agents)
                if skills <= t.agents[agent_id].profile.skills.keys()
            )
            return Snapshot(now, policy, agents, len(t.agents) - len(agents), len(t.queue))

    def load_candidates(self, tenant: str, call: Call, request_id: str = "") -> Candidates:
        """``load_snapshot`` pruned like the Redis routing index prunes: skilled agents that
        are AVAILABLE and whose work in progress or offered leaves room for one item."""
        rules.check_tenant(tenant)
        skills = {req.skill for req in call.required_skills}
        with self._lock:
            t, now = self._tenant(tenant), self._clock()
            policy = t.policy or Policy()
            cutoff = now - policy.occupancy_window_s * 1000
            room = AGENT_UNIT_BUDGET - policy.units_for(call.channel)
            skilled = [
                agent_id
                for agent_id in sorted(t.agents)
                if skills <= t.agents[agent_id].profile.skills.keys()
            ]
            ready = [a for a in skilled if t.agents[a].presence == Presence.AVAILABLE]
            picked = [a for a in ready if t.agents[a].units_in_progress() <= room]
            agents = tuple(t.agents[agent_id].view(now, cutoff) for agent_id in picked)
            entry = t.requests.get(request_id) if request_id else None
            snapshot = Snapshot(now, policy, agents, len(t.agents) - len(skilled), len(t.queue))
            return Candidates(
                snapshot,
                not_available=len(skilled) - len(ready),
                no_room=len(ready) - len(picked),
                request_seen=entry is not None and now <= entry[2],
            )

    # --- tenants and the dispatcher lease ----------------------------------------------------

    def tenants(self) -> list[str]:
        """Tenants that ever had an agent created or a call queued, sorted."""
        with self._lock:
            return sorted(name for name, t in self._tenants.items() if t.registered)

    def acquire_lease(self, tenant: str, owner: str, ttl_ms: int) -> bool:
        """Take the lease if free or expired (store time), extend it if ``owner`` holds it."""
        rules.check_tenant(tenant)
        rules.check_lease(owner, ttl_ms)
        with self._lock:
            t, now = self._tenant(tenant), self._clock()
            if t.taken(t.lease, owner, now):
                return False
            t.lease = (owner, now + ttl_ms)
            return True

    def open_pass(
        self, tenant: str, owner: str, ttl_ms: int, tick_ms: int, quiet_at: str = ""
    ) -> PassGrant:
        """The lease, the tick marker, and whether a call waits or an offer expired (no
        change-log head: never ``QUIET``, whatever ``quiet_at``)."""
        rules.check_lease(owner, ttl_ms, tick_ms)
        return self._open(tenant, owner, ttl_ms, tick_ms, peek=False)

    def _open(self, tenant: str, owner: str, ttl_ms: int, tick_ms: int, *, peek: bool) -> PassGrant:
        """``lease.lua``'s ``open`` (``peek``: no lease taken)."""
        rules.check_tenant(tenant)
        with self._lock:
            t, now = self._tenant(tenant), self._clock()
            if t.taken(t.lease, owner, now):
                return PassGrant.HELD
            grant = PassGrant.WAKE
            if tick_ms > 0 and not t.taken(t.tick, owner, now):
                t.tick, grant = (owner, now + tick_ms), PassGrant.FULL
            elif not t.queue and not t.offers_due(now):
                return PassGrant.IDLE
            if not peek:
                t.lease = (owner, now + ttl_ms)
            return grant

    def open_passes(
        self,
        tenants: Sequence[str],
        owner: str,
        ttl_ms: int,
        tick_ms: int,
        quiet_at: Mapping[str, str] = NONE_QUIET,
    ) -> list[PassGrant | RouterError]:
        """Each tenant's look in turn (no change-log head: never ``QUIET``)."""
        rules.check_lease(owner, ttl_ms, tick_ms)
        grants: list[PassGrant | RouterError] = []
        for tenant in tenants:
            try:
                grants.append(self._open(tenant, owner, ttl_ms, tick_ms, peek=True))
            except RouterError as exc:
                grants.append(exc)
        return grants

    def release_lease(self, tenant: str, owner: str) -> None:
        """Drop the lease if ``owner`` holds it."""
        rules.check_tenant(tenant)
        with self._lock:
            t = self._tenant(tenant)
            if t.lease is not None and t.lease[0] == owner:
                t.lease = None

    # --- events ------------------------------------------------------------------------------

    def last_event_id(self, tenant: str) -> str:
        """The newest event's id ("0-0" before the first event)."""
        rules.check_tenant(tenant)
        with self._lock:
            keys = self._tenant(tenant).event_keys
            return f"{keys[-1][0]}-{keys[-1][1]}" if keys else "0-0"

    def read_events(
        self, tenant: str, after_id: str = "0", limit: int = 100, block_ms: int = 0
    ) -> list[Event]:
        """Events strictly after ``after_id``, oldest first; waits on the condition up to
        ``block_ms`` for the first one. ``OutOfRangeError`` under the rules the Redis store
        applies: the stream was trimmed and the cursor is older than its first event, or the
        cursor is after its newest."""
        rules.check_tenant(tenant)
        deadline = time.monotonic() + max(block_ms, 0) / 1000
        with self._lock:
            t = self._tenant(tenant)
            if after_id == "$":
                if block_ms <= 0:
                    return []
                cursor = t.event_keys[-1] if t.event_keys else rules.EVENTS_START
            else:
                cursor = rules.parse_event_id(after_id)
                trimmed = t.trimmed and cursor != rules.EVENTS_START
                if trimmed and t.event_keys and cursor < t.event_keys[0]:
                    raise rules.events_trimmed(after_id)
                newest = t.event_keys[-1] if t.event_keys else rules.EVENTS_START
                if cursor > newest:
                    raise rules.events_ahead(after_id, newest)
            if limit <= 0:
                return []
            while True:
                start = bisect.bisect_right(t.event_keys, cursor)
                if start < len(t.events):
                    return t.events[start : start + limit]
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                self._lock.wait(left)
