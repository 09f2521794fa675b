"""The records ``MemoryStore`` keeps, and the steps its methods share.

Each helper repeats one function of ``router/lua/_lib.lua`` (same name, same order of steps),
so the two stores cannot drift apart. Call everything here with the store's lock held.
"""

from __future__ import annotations

import bisect
import dataclasses
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from router import store_common as rules
from router import tracing
from router.domain import (
    ActiveWork,
    AgentProfile,
    AgentSnapshot,
    Assignment,
    AssignmentState,
    Call,
    CallRecord,
    CallStatus,
    Channel,
    PerformanceStats,
    Policy,
    Presence,
    WorkSpan,
    frozen_map,
)
from router.store import Event, HistoryEntry


@dataclass
class AgentState:
    """The ``agent:<id>`` hash and ``work:<id>`` ZSET of one agent."""

    profile: AgentProfile
    presence: Presence = Presence.OFFLINE
    reason: str = ""
    since: int = 0
    heartbeat: int = 0
    seq: int = 1
    last_free: int = 0
    last_assigned: int = 0
    performance: PerformanceStats = field(default_factory=PerformanceStats)
    missed: int = 0
    work: dict[str, ActiveWork] = field(default_factory=dict)
    """The ``a:<assignment_id>`` fields: work holding capacity, or a wrap-up not swept yet."""
    spans: list[tuple[int, str, WorkSpan]] = field(default_factory=list)
    """Finished spans sorted like the Redis ZSET: (end_ms, member, span)."""

    def view(self, now: int, cutoff: int) -> AgentSnapshot:
        """The agent at ``now`` with the spans ending at ``cutoff`` or later."""
        active, ended = rules.split_work(list(self.work.values()), now)
        spans = [span for _, _, span in self.spans] + ended
        return AgentSnapshot(
            profile=self.profile,
            presence=self.presence,
            presence_reason=self.reason,
            presence_since_ms=self.since,
            heartbeat_ms=self.heartbeat,
            active=active,
            recent=rules.recent_spans(spans, cutoff),
            performance=self.performance,
            last_free_ms=self.last_free,
            last_assigned_ms=self.last_assigned,
            missed_offers=self.missed,
            seq=self.seq,
        )

    def add_span(self, asg_id: str, start: int, end: int, units: int, now: int) -> None:
        """``add_span``: record a finished span, drop those older than the retention."""
        member = f"{asg_id}|{start}|{end}|{units}"
        bisect.insort(self.spans, (end, member, WorkSpan(start, end, units)))
        del self.spans[: bisect.bisect_left(self.spans, (now - rules.WORK_RETENTION_MS,))]

    def held(self, now: int) -> tuple[int, bool, int]:
        """``held``: (pieces of work held, any in progress or offered, latest wrap-up end)."""
        count, busy, latest = 0, False, 0
        for work in self.work.values():
            if work.wrap_until_ms == 0:
                count, busy = count + 1, True
            elif work.wrap_until_ms > now:
                count, latest = count + 1, max(latest, work.wrap_until_ms)
        return count, busy, latest

    def units_in_progress(self) -> int:
        """What ``index_agent`` scores the agent by in ``idx:ready``: the units of work in
        progress or offered (wrap-ups not counted)."""
        return sum(work.units for work in self.work.values() if work.wrap_until_ms == 0)

    def sweep(self, now: int) -> None:
        """``sweep``: move wrap-ups that have ended into the spans."""
        for asg_id, work in list(self.work.items()):
            if 0 < work.wrap_until_ms <= now:
                del self.work[asg_id]
                self.add_span(asg_id, work.start_ms, work.wrap_until_ms, work.units, now)

    def mark_free(self, now: int) -> None:
        """``mark_free``: once nothing is in progress, free when the last wrap-up ends."""
        _, busy, latest = self.held(now)
        if not busy:
            self.last_free = max(now, latest)

    def free_slot(self, asg: Assignment, now: int) -> None:
        """``free_slot``: give back the assignment's capacity, record its span."""
        self.sweep(now)
        self.work.pop(asg.assignment_id, None)
        self.add_span(asg.assignment_id, asg.created_ms, now, asg.units, now)
        self.seq += 1
        self.mark_free(now)


@dataclass
class CallState:
    """The ``call:<id>`` hash and its ``timeline:<id>`` list."""

    call: Call
    """As it arrived."""
    status: CallStatus
    assignment_id: str
    updated: int
    origin: int
    enqueued: int
    priority: int
    excluded: list[str]
    handed_back: int = 0
    """When an agent last handed it back after holding it (``requeue``'s ``answered``)."""
    callback: bool = False
    at_risk: bool = False
    breached: bool = False
    trace: str = ""
    """The ``traceparent`` of the request that created the call (``remember_trace``)."""
    timeline: list[Event] = field(default_factory=list)
    expires: int | None = None

    def current(self) -> Call:
        """The call as it is now (``redis_schema.call_from_hash``)."""
        return dataclasses.replace(
            self.call,
            priority=self.priority,
            enqueued_ms=self.enqueued,
            excluded_agents=tuple(self.excluded),
            handed_back_ms=self.handed_back,
        )

    def settle(self, finished: bool, now: int, ttl_ms: int) -> None:
        """``settle_call``: a finished call expires ``ttl_ms`` after its last change."""
        self.expires = now + ttl_ms if finished else None


@dataclass
class TenantState:
    """Every key of one tenant."""

    notify: Callable[[], None] = field(repr=False, compare=False)
    """Wakes blocked ``read_events`` calls (the store's condition)."""
    events_maxlen: int = rules.EVENTS_MAXLEN
    record_ttl_ms: int = rules.RECORD_TTL_MS
    """How long a finished call's records are kept (``ROUTER_RECORD_RETENTION_S``)."""
    agents: dict[str, AgentState] = field(default_factory=dict)
    retired: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Deleted agent id -> (version, seq) of its last life: the ``idx:retired`` HASH."""
    policy: Policy | None = None
    assignments: dict[str, tuple[Assignment, int | None]] = field(default_factory=dict)
    calls: dict[str, CallState] = field(default_factory=dict)
    requests: dict[str, tuple[str, str, int]] = field(default_factory=dict)
    """request_id -> (fingerprint, call_id, expires_ms)."""
    fence: int = 0
    events: list[Event] = field(default_factory=list)
    event_keys: list[tuple[int, int]] = field(default_factory=list)
    trimmed: bool = False
    """Events were dropped from the front (``entries-added > length`` in Redis)."""
    queue: list[tuple[float, str]] = field(default_factory=list)
    """(score, call_id) sorted: the ``queue`` ZSET."""
    scores: dict[str, float] = field(default_factory=dict)
    """call_id -> its score in ``queue``."""
    offers: dict[str, int] = field(default_factory=dict)
    """assignment_id -> expiry: the ``offers`` ZSET."""
    history: list[tuple[int, int, HistoryEntry]] = field(default_factory=list)
    """(at_ms, write order, entry) sorted: the ``history`` ZSET."""
    writes: int = 0
    lease: tuple[str, int] | None = None
    """(owner, expires_ms)."""
    tick: tuple[str, int] | None = None
    """(owner, expires_ms): who makes the full pass of the tick."""
    registered: bool = False
    """In ``tenants()`` (set by create_agent and enqueue, like the Redis SADD)."""

    # --- the dispatcher's lease and tick marker ------------------------------------------------

    def offers_due(self, now: int) -> bool:
        """An offer's expiry has passed."""
        return any(expires <= now for expires in self.offers.values())

    @staticmethod
    def taken(mark: tuple[str, int] | None, owner: str, now: int) -> bool:
        """Another owner's lease or tick marker that has not expired."""
        return mark is not None and mark[0] != owner and mark[1] > now

    # --- events -----------------------------------------------------------------------------

    def emit(
        self,
        kind: str,
        now: int,
        call_id: str = "",
        agent_id: str = "",
        data: dict[str, str] | None = None,
    ) -> Event:
        """``emit``: ids like Redis stream ids (``<ms>-<n>``, strictly increasing even if the
        clock steps back); trimmed in blocks of 100, like ``MAXLEN ~``; the trace id of the
        request being served, if any, in ``data`` as ``trace_id``."""
        trace = tracing.request_trace_id()
        if trace:
            data = {**(data or {}), "trace_id": trace}
        last_ms, last_n = self.event_keys[-1] if self.event_keys else (-1, 0)
        key = (now, 0) if now > last_ms else (last_ms, last_n + 1)
        event = Event(f"{key[0]}-{key[1]}", kind, now, call_id, agent_id, frozen_map(data))
        self.event_keys.append(key)
        self.events.append(event)
        excess = len(self.events) - self.events_maxlen
        if excess >= 100:
            drop = excess - excess % 100
            del self.events[:drop], self.event_keys[:drop]
            self.trimmed = True
        self.notify()
        return event

    def emit_call(
        self,
        rec: CallState,
        kind: str,
        now: int,
        agent_id: str = "",
        data: dict[str, str] | None = None,
    ) -> Event:
        """``emit_call``: the stream and the call's timeline (the latest ``TIMELINE_MAX``)."""
        event = self.emit(kind, now, rec.call.call_id, agent_id, data)
        rec.timeline.append(event)
        del rec.timeline[: -rules.TIMELINE_MAX]
        return event

    def add_history(self, kind: str, channel: Channel, now: int, wait: int, call_id: str) -> None:
        """``add_history``: one entry, then drop those older than two hours."""
        self.writes += 1
        entry = HistoryEntry(kind, channel, now, wait, call_id)
        bisect.insort(self.history, (now, self.writes, entry))
        del self.history[: bisect.bisect_left(self.history, (now - rules.HISTORY_MS,))]

    # --- the queue --------------------------------------------------------------------------

    def queue_put(self, call_id: str, score: float) -> None:
        """``ZADD queue``."""
        self.queue_remove(call_id)
        bisect.insort(self.queue, (score, call_id))
        self.scores[call_id] = score

    def queue_remove(self, call_id: str) -> None:
        """``ZREM queue``."""
        index = self.rank(call_id)
        if index is not None:
            del self.queue[index]
            del self.scores[call_id]

    def rank(self, call_id: str) -> int | None:
        """``ZRANK queue`` (0-based), ``None`` if absent."""
        score = self.scores.get(call_id)
        return None if score is None else bisect.bisect_left(self.queue, (score, call_id))

    def requeue(
        self, rec: CallState, agent_id: str, now: int, aging_s: int, *, answered: bool
    ) -> int:
        """``requeue``: back in the queue with its original age, ``agent_id`` excluded;
        QUEUED event; ``answered`` (the agent held it): the queue time limit counts again
        from now. Returns the 1-based position."""
        if agent_id not in rec.excluded:
            rec.excluded.append(agent_id)
        if answered:
            rec.handed_back = now
        rec.status, rec.enqueued, rec.updated = CallStatus.QUEUED, rec.origin, now
        self.queue_put(rec.call.call_id, rules.queue_score(rec.origin, rec.priority, aging_s))
        position = (self.rank(rec.call.call_id) or 0) + 1
        self.emit_call(rec, "QUEUED", now, data={"position": str(position)})
        return position

    # --- records ----------------------------------------------------------------------------

    def assignment(self, assignment_id: str, now: int) -> Assignment | None:
        """An assignment unless unknown or expired (expired ones vanish when read)."""
        entry = self.assignments.get(assignment_id)
        if entry is None:
            return None
        if entry[1] is not None and now > entry[1]:
            del self.assignments[assignment_id]
            return None
        return entry[0]

    def call(self, call_id: str, now: int) -> CallState | None:
        """A call unless unknown or expired."""
        rec = self.calls.get(call_id)
        if rec is not None and rec.expires is not None and now > rec.expires:
            del self.calls[call_id]
            return None
        return rec

    def known_call(self, call_id: str, now: int) -> CallState:
        """``call``, or ``NotFoundError`` (the scripts' ``{'missing'}``)."""
        rec = self.call(call_id, now)
        if rec is None:
            raise rules.call_not_found(call_id)
        return rec

    def end_assignment(self, asg: Assignment, state: AssignmentState, now: int) -> Assignment:
        """``end_assignment``: record the end, keep it ``record_ttl_ms``, drop the offer."""
        ended = dataclasses.replace(asg, state=state, ended_ms=now)
        self.assignments[asg.assignment_id] = (ended, now + self.record_ttl_ms)
        self.offers.pop(asg.assignment_id, None)
        return ended

    def free_slot(self, asg: Assignment, now: int) -> None:
        """``free_slot`` on the assignment's agent, if it still exists."""
        agent = self.agents.get(asg.agent_id)
        if agent is not None:
            agent.free_slot(asg, now)


def policy_tag_of(policy: Policy | None) -> str:
    """``KnownPolicy.tag`` in memory: the version (``put_policy`` raises it on every write)."""
    return f"v{0 if policy is None else policy.version}"


class MemoryBase:
    """What the parts of ``MemoryStore`` share: one condition (its lock makes every method
    atomic; waiting on it serves blocking ``read_events``), the clock and the tenants."""

    _lock: threading.Condition
    _clock: Callable[[], int]
    _tenants: dict[str, TenantState]
    _events_maxlen: int
    _record_ttl_ms: int

    def _tenant(self, tenant: str) -> TenantState:
        """The tenant's records (created empty on first use)."""
        t = self._tenants.get(tenant)
        if t is None:
            t = TenantState(self._lock.notify_all, self._events_maxlen, self._record_ttl_ms)
            self._tenants[tenant] = t
        return t

    @staticmethod
    def _record(t: TenantState, rec: CallState, now: int) -> CallRecord:
        """``redis_schema.record_from_hash`` on the memory records."""
        asg = t.assignment(rec.assignment_id, now) if rec.assignment_id else None
        rank = t.rank(rec.call.call_id) if rec.status == CallStatus.QUEUED else None
        return CallRecord(
            call=rec.current(),
            status=rec.status,
            assignment=asg,
            updated_ms=rec.updated,
            position=0 if rank is None else rank + 1,
            callback_requested=rec.callback,
            sla_at_risk=rec.at_risk,
            sla_breached=rec.breached,
        )
