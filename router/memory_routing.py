"""The routing writes of ``MemoryStore``: commit, enqueue, offers, endings and reclaim.

Each method repeats its Lua script (``router/lua/<method>.lua``) step for step under the
store's lock, with the helpers of ``router.memory_state``.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping, Sequence

from router import store_common as rules
from router import tracing
from router.domain import (
    AGENT_UNIT_BUDGET,
    ActiveWork,
    AgentSnapshot,
    Assignment,
    AssignmentState,
    Call,
    CallRecord,
    CallStatus,
    Channel,
    Policy,
    Presence,
    frozen_map,
)
from router.eligibility import left_reason
from router.errors import FailedPreconditionError, PolicyChangedError
from router.memory_state import AgentState, CallState, MemoryBase, TenantState, policy_tag_of
from router.store import (
    ChannelTerms,
    Claim,
    CommitResult,
    Committed,
    Conflict,
    Finished,
    Gone,
    Replayed,
)
from scoring import performance


def _policy_moved(t: TenantState, claim: Claim) -> Conflict | None:
    """The claim was decided on another policy than the one stored (``policy_version``)."""
    stored = t.policy.version if t.policy else 0
    if claim.policy_version >= 0 and claim.policy_version != stored:
        return Conflict("policy changed")
    return None


def _recheck(agent: AgentState | None, claim: Claim, now: int) -> Conflict | None:
    """The agent-side checks of a commit, in the order the Lua script makes them."""
    if agent is None:
        return Conflict("agent deleted")
    if claim.capacity > 0 and agent.profile.version != claim.expected_version:
        return Conflict("agent profile changed")
    if claim.capacity <= 0 and agent.seq != claim.expected_seq:
        return Conflict("agent changed")
    if agent.presence != Presence.AVAILABLE:
        return Conflict(f"agent is {agent.presence.value}")
    return _in_time(agent, claim, now) or _room(agent, claim, now)


def _in_time(agent: AgentState, claim: Claim, now: int) -> Conflict | None:
    """A heartbeat within the claim's timeout, and the commit by the claim's latest time."""
    timeout_ms = claim.heartbeat_timeout_s * 1000
    if timeout_ms > 0 and now - agent.heartbeat > timeout_ms:
        return Conflict("heartbeat expired")
    if 0 < claim.until_ms < now:
        return Conflict("agent leaving")
    return None


def _room(agent: AgentState, claim: Claim, now: int) -> Conflict | None:
    """Capacity mode: the agent must still have a slot on the channel and budget units."""
    if claim.capacity <= 0:
        return None
    holding = [work for work in agent.work.values() if work.holds(now)]
    items = sum(1 for work in holding if work.channel == claim.call.channel)
    units = sum(work.units for work in holding)
    if items >= claim.capacity or units + claim.units > AGENT_UNIT_BUDGET:
        return Conflict("agent full")
    return None


def _check_request(t: TenantState, request_id: str, fingerprint: str, now: int) -> bool:
    """True when ``request_id`` was already used with this fingerprint (replay)."""
    entry = t.requests.get(request_id) if request_id else None
    if entry is not None and now > entry[2]:
        del t.requests[request_id]
        entry = None
    if entry is None:
        return False
    if entry[0] != fingerprint:
        raise rules.request_reused()
    return True


def _exists(call_id: str, rec: CallState) -> FailedPreconditionError:
    if rec.status in (CallStatus.ASSIGNED, CallStatus.OFFERED):
        return rules.call_assigned(call_id, rec.assignment_id)
    return rules.call_finished(call_id, rec.status.value)


def _data(asg: Assignment) -> dict[str, str]:
    return {"assignment_id": asg.assignment_id, "token": str(asg.token)}


class MemoryRouting(MemoryBase):
    """Store methods that route and end work; ``MemoryStore`` mixes them in."""

    def commit_assignment(self, tenant: str, claim: Claim) -> CommitResult:
        """``commit_assignment.lua``."""
        rules.check_tenant(tenant)
        with self._lock:
            t, now, call = self._tenant(tenant), self._clock(), claim.call
            if _check_request(t, claim.request_id, claim.fingerprint, now):
                return Replayed()
            rec = t.call(call.call_id, now)
            if claim.from_queue:
                if rec is None:
                    raise rules.call_not_found(call.call_id)
                if rec.status != CallStatus.QUEUED:
                    return Gone(rec.status.value)
                if claim.agent_id in rec.excluded:  # it left them since the queue was read
                    return Conflict("agent excluded")
            elif rec is not None:
                raise _exists(call.call_id, rec)
            conflict = _policy_moved(t, claim) or _recheck(t.agents.get(claim.agent_id), claim, now)
            if conflict is not None:
                return conflict
            agent = t.agents[claim.agent_id]
            offer_ms = max(claim.offer_timeout_s, 0) * 1000
            t.fence += 1
            asg = Assignment(
                assignment_id=uuid.uuid4().hex,
                call_id=call.call_id,
                agent_id=claim.agent_id,
                channel=call.channel,
                units=claim.units,
                token=t.fence,
                state=AssignmentState.OFFERED if offer_ms else AssignmentState.ACTIVE,
                created_ms=now,
                explanation=claim.explanation,
                offer_expires_ms=now + offer_ms if offer_ms else 0,
            )
            status = CallStatus.OFFERED if offer_ms else CallStatus.ASSIGNED
            t.assignments[asg.assignment_id] = (asg, None)
            agent.sweep(now)
            agent.work[asg.assignment_id] = ActiveWork(
                asg.assignment_id, asg.channel, asg.units, now, offered=bool(offer_ms)
            )
            agent.last_assigned = now
            agent.seq += 1
            if rec is not None:  # from the queue
                t.queue_remove(call.call_id)
                rec.status, rec.assignment_id, rec.updated = status, asg.assignment_id, now
            else:
                origin = rules.age_origin(call.enqueued_ms, call.created_ms, now)
                rec = CallState(
                    call,
                    status,
                    asg.assignment_id,
                    now,
                    origin=origin,
                    enqueued=call.enqueued_ms,
                    priority=call.priority,
                    excluded=list(call.excluded_agents),
                    trace=tracing.request_trace(),
                )
                t.calls[call.call_id] = rec
            if claim.request_id:
                t.requests[claim.request_id] = (
                    claim.fingerprint,
                    call.call_id,
                    now + rules.REQUEST_TTL_MS,
                )
            if offer_ms:
                t.offers[asg.assignment_id] = asg.offer_expires_ms
                data = _data(asg) | {"expires_ms": str(asg.offer_expires_ms)}
                t.emit_call(rec, "OFFERED", now, claim.agent_id, data)
            else:
                t.emit_call(rec, "ASSIGNED", now, claim.agent_id, _data(asg))
                wait = max(0, now - rec.origin)
                t.add_history("answered", rec.call.channel, now, wait, call.call_id)
            rec.settle(False, now, t.record_ttl_ms)
            return Committed(asg)

    def enqueue(
        self, tenant: str, request_id: str, fingerprint: str, call: Call, *, policy: Policy
    ) -> CallRecord | Replayed:
        """``enqueue.lua`` (the tenant is registered first, like the Redis ``SADD``)."""
        rules.check_tenant(tenant)
        with self._lock:
            t, now = self._tenant(tenant), self._clock()
            t.registered = True
            if _check_request(t, request_id, fingerprint, now):
                return Replayed()
            rec = t.call(call.call_id, now)
            if rec is not None:
                raise _exists(call.call_id, rec)
            if len(t.queue) >= policy.max_queue:
                raise rules.queue_full(tenant, len(t.queue))
            origin = rules.age_origin(call.enqueued_ms, call.created_ms, now)
            rec = CallState(
                call,
                CallStatus.QUEUED,
                "",
                now,
                origin=origin,
                enqueued=origin,
                priority=call.priority,
                excluded=list(call.excluded_agents),
                trace=tracing.request_trace(),
            )
            t.calls[call.call_id] = rec
            score = rules.queue_score(origin, call.priority, policy.aging_s_per_priority)
            t.queue_put(call.call_id, score)
            if request_id:
                t.requests[request_id] = (fingerprint, call.call_id, now + rules.REQUEST_TTL_MS)
            position = (t.rank(call.call_id) or 0) + 1
            t.emit_call(rec, "QUEUED", now, data={"position": str(position)})
            return self._record(t, rec, now)

    # --- offers and endings -----------------------------------------------------------------

    @staticmethod
    def _held(t: TenantState, assignment_id: str, token: int, now: int) -> Assignment:
        asg = t.assignment(assignment_id, now)
        if asg is None:
            raise rules.assignment_not_found(assignment_id)
        if asg.token != token:
            raise rules.stale_token(token, assignment_id)
        return asg

    def accept_offer(
        self,
        tenant: str,
        assignment_id: str,
        token: int,
        *,
        policy: Policy | None = None,
        heartbeat_grace: bool = False,
        policy_tag: str = "",
    ) -> Assignment:
        """``accept_offer.lua``."""
        rules.check_tenant(tenant)
        with self._lock:
            t, now = self._tenant(tenant), self._clock()
            asg = self._held(t, assignment_id, token, now)
            if asg.state == AssignmentState.ACTIVE:
                if asg.offer_expires_ms <= 0:
                    raise rules.not_an_offer(assignment_id)
                return asg
            if asg.state != AssignmentState.OFFERED:
                raise rules.already_ended(assignment_id, asg.state.value)
            if now >= asg.offer_expires_ms:
                raise rules.offer_expired(assignment_id)
            if policy_tag and policy_tag != policy_tag_of(t.policy):
                raise PolicyChangedError(f"tenant {tenant}: the policy changed since it was read")
            agent = t.agents.get(asg.agent_id)
            if agent is not None and policy is not None and policy.reclaim_on_absence:
                rules_now = (
                    dataclasses.replace(policy, heartbeat_timeout_s=0)
                    if heartbeat_grace
                    else policy
                )
                away = left_reason(agent.view(now, now), now, rules_now)
                if away:
                    raise rules.agent_away(assignment_id, away)
            accepted = dataclasses.replace(asg, state=AssignmentState.ACTIVE)
            t.assignments[assignment_id] = (accepted, None)
            t.offers.pop(assignment_id, None)
            if agent is not None and assignment_id in agent.work:
                agent.work[assignment_id] = dataclasses.replace(
                    agent.work[assignment_id], offered=False
                )
                agent.missed = 0
            rec = t.call(asg.call_id, now)
            if rec is not None and rec.assignment_id == assignment_id:
                rec.status, rec.updated = CallStatus.ASSIGNED, now
                wait = max(0, now - rec.origin)
                target = policy.sla_for(rec.call.channel) if policy is not None else None
                if target is not None and 0 < target.target_s * 1000 < wait and not rec.breached:
                    rec.breached = True  # passed while it was offered
                    channel = rec.call.channel.value
                    data = {"group": policy.escalation_group if policy else "", "channel": channel}
                    t.emit_call(rec, "SLA_BREACHED", now, data=data)
                    rules.count_breached(tenant)
                t.emit_call(rec, "ACCEPTED", now, asg.agent_id, _data(asg))
                t.add_history("answered", rec.call.channel, now, wait, asg.call_id)
                rec.settle(False, now, t.record_ttl_ms)
            return accepted

    def decline_offer(
        self,
        tenant: str,
        assignment_id: str,
        token: int,
        *,
        timed_out: bool,
        policy: Policy,
        count_missed: bool = True,
    ) -> Assignment:
        """``decline_offer.lua``."""
        rules.check_tenant(tenant)
        state = AssignmentState.TIMED_OUT if timed_out else AssignmentState.REJECTED
        with self._lock:
            t, now = self._tenant(tenant), self._clock()
            asg = self._held(t, assignment_id, token, now)
            if asg.state == state:
                return asg
            if asg.state != AssignmentState.OFFERED:
                raise rules.already_ended(assignment_id, asg.state.value)
            if not timed_out and now >= asg.offer_expires_ms:
                raise rules.offer_expired(assignment_id)
            ended = t.end_assignment(asg, state, now)
            t.free_slot(asg, now)
            rec = t.call(asg.call_id, now)
            # a time-out is the dispatcher's work on the call: in the call's kept trace
            with tracing.call_work(rec.trace if rec is not None and timed_out else ""):
                kind = "OFFER_TIMED_OUT" if timed_out else "REJECTED"
                self._emit_for(t, rec, kind, now, asg)
                if rec is not None:
                    if rec.assignment_id == assignment_id:
                        t.requeue(
                            rec, asg.agent_id, now, policy.aging_s_per_priority, answered=False
                        )
                    rec.settle(False, now, t.record_ttl_ms)
                agent = t.agents.get(asg.agent_id)
                if timed_out and count_missed and agent is not None:
                    self._count_missed(t, agent, asg.agent_id, now, policy)
            return ended

    @staticmethod
    def _count_missed(
        t: TenantState, agent: AgentState, agent_id: str, now: int, policy: Policy
    ) -> None:
        """A missed offer; NOT_RESPONDING at ``policy.max_missed_offers``."""
        agent.missed += 1
        limit = policy.max_missed_offers
        if limit > 0 and agent.missed >= limit and agent.presence == Presence.AVAILABLE:
            reason = rules.missed_reason(agent.missed)
            agent.presence, agent.reason, agent.since = Presence.NOT_RESPONDING, reason, now
            agent.seq += 1
            data = {"presence": Presence.NOT_RESPONDING.value, "reason": reason}
            t.emit("PRESENCE_CHANGED", now, agent_id=agent_id, data=data)

    @staticmethod
    def _emit_for(
        t: TenantState, rec: CallState | None, kind: str, now: int, asg: Assignment
    ) -> None:
        """An assignment event: on the call's timeline too while the call exists."""
        if rec is None:
            t.emit(kind, now, asg.call_id, asg.agent_id, _data(asg))
        else:
            t.emit_call(rec, kind, now, asg.agent_id, _data(asg))

    def call_traces(self, tenant: str, call_ids: Sequence[str]) -> Mapping[str, str]:
        """The calls' kept ``trace``."""
        rules.check_tenant(tenant)
        with self._lock:
            t, now = self._tenant(tenant), self._clock()
            records = ((c, t.call(c, now)) for c in call_ids)
            return frozen_map({c: rec.trace for c, rec in records if rec is not None and rec.trace})

    def expired_offers(self, tenant: str, limit: int = 100) -> list[Assignment]:
        """The first ``limit`` offers whose expiry has passed (the ``offers`` ZSET order:
        expiry, then id), returned by expiry, then token."""
        rules.check_tenant(tenant)
        if limit <= 0:
            return []
        with self._lock:
            t, now = self._tenant(tenant), self._clock()
            due = sorted((expires, a) for a, expires in t.offers.items() if expires <= now)
            found = [t.assignment(a, now) for _, a in due[:limit]]
            offers = [a for a in found if a is not None and a.state == AssignmentState.OFFERED]
            return sorted(offers, key=lambda a: (a.offer_expires_ms, a.token))

    def finish_assignment(
        self,
        tenant: str,
        assignment_id: str,
        token: int,
        end: AssignmentState,
        *,
        outcome_value: float | None = None,
        half_life_s: int = 0,
        wrap_up_s: int = 0,
        policy: Policy | None = None,
        channel_terms: Mapping[Channel, ChannelTerms] | None = None,
        policy_tag: str = "",
    ) -> Finished:
        """``finish_assignment.lua``."""
        rules.check_tenant(tenant)
        rules.check_ending(end, outcome_value, channel_terms)
        with self._lock:
            t, now = self._tenant(tenant), self._clock()
            asg = self._held(t, assignment_id, token, now)
            if asg.state != AssignmentState.ACTIVE:
                if asg.state == end:
                    return Finished(asg, len(t.queue))
                if asg.state == AssignmentState.OFFERED:
                    raise rules.not_active(assignment_id)
                raise rules.already_ended(assignment_id, asg.state.value)
            if policy_tag and policy_tag != policy_tag_of(t.policy):
                raise PolicyChangedError(f"tenant {tenant}: the policy changed since it was read")
            outcome_value, wrap_up_s = rules.terms_for(
                asg.channel, channel_terms, outcome_value, wrap_up_s
            )
            ended = t.end_assignment(asg, end, now)
            agent = t.agents.get(asg.agent_id)
            if end == AssignmentState.COMPLETED and wrap_up_s > 0 and agent is not None:
                agent.sweep(now)
                work = agent.work.get(assignment_id)
                if work is not None:
                    wrap_until = now + wrap_up_s * 1000
                    agent.work[assignment_id] = dataclasses.replace(
                        work, offered=False, wrap_until_ms=wrap_until
                    )
                agent.seq += 1
                agent.mark_free(now)
            else:
                t.free_slot(asg, now)
            if agent is not None and outcome_value is not None:
                agent.performance = performance.fold(
                    agent.performance, outcome_value, now, half_life_s
                )
            rec = t.call(asg.call_id, now)
            self._emit_for(t, rec, end.value.upper(), now, asg)
            if end == AssignmentState.COMPLETED:
                t.add_history("completed", asg.channel, now, now - asg.created_ms, asg.call_id)
            if rec is not None and rec.assignment_id == assignment_id:
                if end == AssignmentState.RELEASED:
                    aging_s = (policy or Policy()).aging_s_per_priority
                    t.requeue(rec, asg.agent_id, now, aging_s, answered=True)
                    rec.settle(False, now, t.record_ttl_ms)
                else:
                    rec.status = CallStatus(end.value)
                    rec.updated = now
                    rec.settle(True, now, t.record_ttl_ms)
            return Finished(ended, len(t.queue))

    def reclaim(
        self,
        tenant: str,
        agent_id: str,
        *,
        channels: frozenset[Channel],
        policy: Policy,
        seen: AgentSnapshot | None = None,
    ) -> list[Assignment]:
        """``reclaim.lua`` over the agent's work in token (creation) order."""
        rules.check_tenant(tenant)
        with self._lock:
            t, now = self._tenant(tenant), self._clock()
            agent = t.agents.get(agent_id)
            if agent is None:
                raise rules.agent_not_found(agent_id)
            if seen is not None and (seen.seq, seen.heartbeat_ms) != (agent.seq, agent.heartbeat):
                return []  # changed since the caller saw them gone: maybe back
            taken: list[Assignment] = []
            found = [t.assignment(asg_id, now) for asg_id in agent.work]
            for asg in sorted((a for a in found if a is not None), key=lambda a: a.token):
                asg_id = asg.assignment_id
                if asg.agent_id != agent_id or asg_id not in agent.work:
                    continue
                offered = asg.state == AssignmentState.OFFERED
                if not offered and not (
                    asg.state == AssignmentState.ACTIVE and asg.channel in channels
                ):
                    continue
                taken.append(t.end_assignment(asg, AssignmentState.RECLAIMED, now))
                t.free_slot(asg, now)
                rec = t.call(asg.call_id, now)
                with tracing.call_work(rec.trace if rec is not None else ""):
                    self._emit_for(t, rec, "RECLAIMED", now, asg)
                    if rec is not None:
                        if rec.assignment_id == asg_id:
                            t.requeue(
                                rec,
                                agent_id,
                                now,
                                policy.aging_s_per_priority,
                                answered=not offered,
                            )
                        rec.settle(False, now, t.record_ttl_ms)
            return taken
