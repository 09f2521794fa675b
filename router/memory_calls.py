"""The call reads and call-level writes of ``MemoryStore``: the queue view, a call's record,
timeline and history, cancel, SLA flags and callbacks (each as its Lua script does it)."""

from __future__ import annotations

from collections.abc import Mapping

from router import store_common as rules
from router.domain import (
    Assignment,
    AssignmentState,
    CallRecord,
    CallStatus,
    Channel,
    Policy,
    Snapshot,
    frozen_map,
)
from router.memory_state import MemoryBase
from router.store import Event, HistoryEntry, QueueView, Waiting


class MemoryCalls(MemoryBase):
    """Store methods about one call or the queue; ``MemoryStore`` mixes them in."""

    def queue_depth(self, tenant: str) -> int:
        """Calls in the tenant's queue."""
        rules.check_tenant(tenant)
        with self._lock:
            return len(self._tenant(tenant).queue)

    def load_queue(self, tenant: str, limit: int, *, offset: int = 0) -> QueueView:
        """Policy, time, every agent, ``limit`` queued calls after ``offset`` (with the traces
        that created them) and whether an offer expired."""
        rules.check_tenant(tenant)
        with self._lock:
            t, now = self._tenant(tenant), self._clock()
            policy = t.policy or Policy()
            cutoff = now - policy.occupancy_window_s * 1000
            agents = tuple(t.agents[a].view(now, cutoff) for a in sorted(t.agents))
            start = max(offset, 0)
            queued = [t.calls[c] for _, c in t.queue[start : start + max(limit, 0)]]
            traces = {rec.call.call_id: rec.trace for rec in queued if rec.trace}
            calls = tuple(rec.current() for rec in queued)
            due = t.offers_due(now)
            return QueueView(
                Snapshot(now, policy, agents), calls, len(t.queue), due, frozen_map(traces)
            )

    def due_waits(
        self, tenant: str, max_wait_s: Mapping[Channel, int], now_ms: int, limit: int
    ) -> list[Waiting]:
        """The queued calls past their channel's limit, by a look at each (Redis answers it
        from an index, ``queue:waits``)."""
        rules.check_tenant(tenant)
        with self._lock:
            t = self._tenant(tenant)
            waits = sorted(
                (rec.handed_back or rec.origin, call_id, rec.call.channel)
                for _, call_id in t.queue
                for rec in (t.calls[call_id],)
            )
        due: list[Waiting] = []
        for channel, seconds in max_wait_s.items():
            if seconds > 0:
                cutoff = now_ms - seconds * 1000
                past = [(s, c) for s, c, ch in waits if ch is channel and s <= cutoff]
                due += [Waiting(c, channel, since) for since, c in past[: max(limit, 0)]]
        return due

    def get_call(self, tenant: str, call_id: str) -> CallRecord:
        """A call's record with its queue position."""
        return self.call_with_timeline(tenant, call_id)[0]

    def get_assignment(self, tenant: str, assignment_id: str) -> Assignment:
        """One assignment unless unknown or expired."""
        rules.check_tenant(tenant)
        with self._lock:
            asg = self._tenant(tenant).assignment(assignment_id, self._clock())
            if asg is None:
                raise rules.assignment_not_found(assignment_id)
            return asg

    def find_request(self, tenant: str, request_id: str) -> tuple[str, CallRecord] | None:
        """The fingerprint stored for ``request_id`` and its call as it is now."""
        rules.check_tenant(tenant)
        with self._lock:
            t, now = self._tenant(tenant), self._clock()
            entry = t.requests.get(request_id)
            if entry is None or now > entry[2]:
                t.requests.pop(request_id, None)
                return None
            rec = t.call(entry[1], now)
            return None if rec is None else (entry[0], self._record(t, rec, now))

    def call_timeline(self, tenant: str, call_id: str) -> list[Event]:
        """The call's events (the latest ``TIMELINE_MAX``)."""
        return self.call_with_timeline(tenant, call_id)[1]

    def call_with_timeline(self, tenant: str, call_id: str) -> tuple[CallRecord, list[Event]]:
        """``get_call`` and ``call_timeline`` under one lock."""
        rules.check_tenant(tenant)
        with self._lock:
            t, now = self._tenant(tenant), self._clock()
            rec = t.known_call(call_id, now)
            return self._record(t, rec, now), list(rec.timeline)

    def completions(self, tenant: str, since_ms: int) -> Mapping[Channel, int]:
        """Counted in the history: ``completed`` entries at or after ``since_ms``."""
        return frozen_map(rules.count_completions(self.history(tenant, since_ms), since_ms))

    def history(self, tenant: str, since_ms: int) -> list[HistoryEntry]:
        """Entries at or after ``since_ms`` and not older than two hours."""
        rules.check_tenant(tenant)
        with self._lock:
            t, now = self._tenant(tenant), self._clock()
            oldest = max(since_ms, now - rules.HISTORY_MS)
            return [entry for at, _, entry in t.history if at >= oldest]

    def cancel_call(self, tenant: str, call_id: str) -> CallRecord:
        """``cancel_call.lua``."""
        rules.check_tenant(tenant)
        with self._lock:
            t, now = self._tenant(tenant), self._clock()
            rec = t.known_call(call_id, now)
            if rec.status == CallStatus.COMPLETED:
                raise rules.call_finished(call_id, rec.status.value)
            asg = t.assignment(rec.assignment_id, now) if rec.assignment_id else None
            agent_id, data = "", {}
            if rec.status in (CallStatus.QUEUED, CallStatus.OFFERED):
                if (
                    rec.status == CallStatus.OFFERED
                    and asg
                    and asg.state == AssignmentState.OFFERED
                ):
                    t.end_assignment(asg, AssignmentState.CANCELLED, now)
                    t.free_slot(asg, now)
                    agent_id = asg.agent_id
                    data = {"assignment_id": asg.assignment_id, "token": str(asg.token)}
                t.queue_remove(call_id)
                rec.status, rec.updated = CallStatus.ABANDONED, now
                t.emit_call(rec, "ABANDONED", now, agent_id, data)
                wait = max(0, now - rec.origin)
                t.add_history("abandoned", rec.call.channel, now, wait, call_id)
                rec.settle(True, now, t.record_ttl_ms)
                rules.count_abandoned(tenant, rec.call.channel, wait)
            elif rec.status == CallStatus.ASSIGNED and asg and asg.state == AssignmentState.ACTIVE:
                t.end_assignment(asg, AssignmentState.CANCELLED, now)
                t.free_slot(asg, now)
                data = {"assignment_id": asg.assignment_id, "token": str(asg.token)}
                rec.status, rec.updated = CallStatus.CANCELLED, now
                t.emit_call(rec, "CANCELLED", now, asg.agent_id, data)
                rec.settle(True, now, t.record_ttl_ms)
            return self._record(t, rec, now)

    def expire_call(
        self,
        tenant: str,
        call_id: str,
        *,
        max_wait_s: int,
        policy_version: int,
        found: Waiting | None = None,
    ) -> bool:
        """``expire_call.lua`` (no index: ``found`` has nothing to mend)."""
        rules.check_tenant(tenant)
        with self._lock:
            t, now = self._tenant(tenant), self._clock()
            rec = t.known_call(call_id, now)
            wait = max(0, now - (rec.handed_back or rec.origin))
            stored = t.policy.version if t.policy else 0
            if (
                rec.status != CallStatus.QUEUED
                or stored != policy_version
                or max_wait_s <= 0
                or wait < max_wait_s * 1000
            ):
                return False
            t.queue_remove(call_id)
            rec.status, rec.updated = CallStatus.EXPIRED, now
            data = {"channel": rec.call.channel.value, "max_wait_s": str(max_wait_s)}
            t.emit_call(rec, "EXPIRED", now, data=data)
            t.add_history("expired", rec.call.channel, now, wait, call_id)
            rec.settle(True, now, t.record_ttl_ms)
            return True

    def mark_sla(self, tenant: str, call_id: str, *, breached: bool, policy: Policy) -> bool:
        """``mark_sla.lua``."""
        rules.check_tenant(tenant)
        with self._lock:
            t, now = self._tenant(tenant), self._clock()
            rec = t.known_call(call_id, now)
            flagged = rec.breached if breached else rec.at_risk
            if rec.status != CallStatus.QUEUED or flagged:
                return False
            data = {"group": policy.escalation_group, "channel": rec.call.channel.value}
            rec.updated = now
            if breached:
                rec.breached = True
                t.emit_call(rec, "SLA_BREACHED", now, data=data)
            else:
                rec.at_risk = True
                rec.priority = rules.boosted(rec.priority, policy.escalation_priority_boost)
                score = rules.queue_score(rec.origin, rec.priority, policy.aging_s_per_priority)
                t.queue_put(call_id, score)
                t.emit_call(rec, "SLA_AT_RISK", now, data=data)
            rec.settle(False, now, t.record_ttl_ms)
            return True

    def request_callback(self, tenant: str, call_id: str) -> CallRecord:
        """``request_callback.lua``."""
        rules.check_tenant(tenant)
        with self._lock:
            t, now = self._tenant(tenant), self._clock()
            rec = t.known_call(call_id, now)
            if rec.status != CallStatus.QUEUED:
                raise rules.call_finished(call_id, rec.status.value)
            if not rec.callback:
                rec.callback, rec.updated = True, now
                t.emit_call(rec, "CALLBACK_REQUESTED", now)
                rec.settle(False, now, t.record_ttl_ms)
            return self._record(t, rec, now)
