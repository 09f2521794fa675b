"""The routing writes of ``RedisStore``: commit, enqueue, offers, endings and reclaim.

A mixin on ``RedisBase`` (no driver import). Each method is one script (``router/lua/``),
after at most one read that finds the keys the script must declare (Redis Cluster rule); the
key schema is in the ``router.redis_store`` docstring.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Mapping
from typing import Any

from router import codec
from router import store_common as rules
from router.domain import (
    AgentSnapshot,
    Assignment,
    AssignmentState,
    Call,
    CallRecord,
    CallStatus,
    Channel,
    Policy,
)
from router.errors import PolicyChangedError
from router.redis_base import RedisBase, aging_ms
from router.redis_schema import Keys, assignment_from_hash, pairs, text
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

_LIVE = ("assigned", "offered")


def _excluded_json(call: Call) -> str:
    return json.dumps(list(call.excluded_agents))


class RedisRouting(RedisBase):
    """Store methods that route and end work; ``RedisStore`` mixes them in."""

    # --- new calls --------------------------------------------------------------------------

    @staticmethod
    def _refused(reply: list[Any], call_id: str) -> Replayed | None:
        """The request and call checks shared by commit and enqueue."""
        status = reply[0]
        if status == "replayed":
            return Replayed()
        if status == "fingerprint":
            raise rules.request_reused()
        if status == "exists":
            if reply[1] in _LIVE:
                raise rules.call_assigned(call_id, reply[2])
            raise rules.call_finished(call_id, reply[1])
        return None

    def commit_assignment(self, tenant: str, claim: Claim) -> CommitResult:
        """One script re-checks request, call and agent, then writes everything."""
        k, call, asg_id = Keys(tenant), claim.call, uuid.uuid4().hex
        offer_ms = max(claim.offer_timeout_s, 0) * 1000
        window = self._cache_window(tenant)
        reply = self._run(
            "commit_assignment",
            [
                k.req(claim.request_id),
                k.call(call.call_id),
                k.agent(claim.agent_id),
                k.work(claim.agent_id),
                k.asg(asg_id),
                k.fence,
                k.events,
                k.queue,
                k.offers,
                k.history,
                k.timeline(call.call_id),
                k.ready,
                k.revs,
                k.policy,
                k.waits,
            ],
            [
                claim.request_id,
                claim.fingerprint,
                call.call_id,
                claim.agent_id,
                claim.expected_seq,
                claim.units,
                claim.heartbeat_timeout_s * 1000,
                asg_id,
                codec.encode_call(call),
                codec.encode_explanation(claim.explanation),
                call.channel.value,
                rules.REQUEST_TTL_MS,
                self._events_maxlen,
                "1" if claim.from_queue else "0",
                offer_ms,
                call.enqueued_ms or call.created_ms,
                call.priority,
                _excluded_json(call),
                call.enqueued_ms,
                rules.WORK_RETENTION_MS,
                claim.expected_version,
                claim.capacity,
                window,
                claim.policy_version,
                claim.until_ms,
            ],
        )
        refused = self._refused(reply, call.call_id)
        if refused is not None:
            return refused
        if reply[0] == "missing":
            raise rules.call_not_found(call.call_id)
        if reply[0] == "gone":
            return Gone(reply[1])
        if reply[0] == "conflict":
            return Conflict(reply[1])
        self._parties_seen.remember(k.prefix, asg_id, (claim.agent_id, call.call_id))
        self._cache_agent(tenant, reply[4], int(reply[2]), window)
        return Committed(
            Assignment(
                assignment_id=asg_id,
                call_id=call.call_id,
                agent_id=claim.agent_id,
                channel=call.channel,
                units=claim.units,
                token=int(reply[1]),
                state=AssignmentState.OFFERED if offer_ms else AssignmentState.ACTIVE,
                created_ms=int(reply[2]),
                explanation=claim.explanation,
                offer_expires_ms=int(reply[3]),
            )
        )

    def enqueue(
        self, tenant: str, request_id: str, fingerprint: str, call: Call, *, policy: Policy
    ) -> CallRecord | Replayed:
        """Register the tenant, then one script checks request, call and depth and queues."""
        k = Keys(tenant)
        self._register_tenant(tenant)
        reply = self._run(
            "enqueue",
            [
                k.req(request_id),
                k.call(call.call_id),
                k.queue,
                k.events,
                k.timeline(call.call_id),
                k.waits,
            ],
            [
                request_id,
                fingerprint,
                call.call_id,
                codec.encode_call(call),
                call.channel.value,
                call.enqueued_ms or call.created_ms,
                call.priority,
                _excluded_json(call),
                aging_ms(policy),
                policy.max_queue,
                rules.REQUEST_TTL_MS,
                self._events_maxlen,
            ],
        )
        refused = self._refused(reply, call.call_id)
        if refused is not None:
            return refused
        if reply[0] == "full":
            raise rules.queue_full(tenant, int(reply[1]))
        _, position, now, origin = reply
        queued = dataclasses.replace(call, enqueued_ms=int(origin))
        return CallRecord(queued, CallStatus.QUEUED, None, int(now), position=int(position))

    # --- offers and endings -----------------------------------------------------------------

    def _parties(self, k: Keys, assignment_id: str) -> tuple[str, str]:
        """The assignment's agent and call: they never change, so this replica remembers
        the ones it committed or read (the script re-checks that the assignment exists)."""
        known = self._parties_seen.get(k.prefix, assignment_id)
        if known is not None:
            return known
        agent_id, call_id = self._hmget(k.asg(assignment_id), "agent_id", "call_id")
        if agent_id is None or call_id is None:
            raise rules.assignment_not_found(assignment_id)
        self._parties_seen.remember(k.prefix, assignment_id, (agent_id, call_id))
        return agent_id, call_id

    @staticmethod
    def _ended(reply: list[Any], assignment_id: str, token: int) -> Assignment:
        """An assignment script's reply as the assignment, or its refusal as an error."""
        status = reply[0]
        if status == "missing":
            raise rules.assignment_not_found(assignment_id)
        if status == "stale":
            raise rules.stale_token(token, assignment_id)
        if status == "already":
            raise rules.already_ended(assignment_id, reply[1])
        if status == "expired":
            raise rules.offer_expired(assignment_id)
        if status == "offered":
            raise rules.not_active(assignment_id)
        return assignment_from_hash(assignment_id, pairs(reply[1]))

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
        """The offer's agent and call (remembered, else read), then one script accepts it."""
        k = Keys(tenant)
        agent_id, call_id = self._parties(k, assignment_id)
        reply = self._run(
            "accept_offer",
            [
                k.asg(assignment_id),
                k.agent(agent_id),
                k.call(call_id),
                k.events,
                k.offers,
                k.history,
                k.timeline(call_id),
                k.ready,
                k.revs,
                k.policy,
            ],
            [
                assignment_id,
                token,
                self._events_maxlen,
                0 if policy is None or heartbeat_grace else policy.heartbeat_timeout_s * 1000,
                rules.sla_targets_ms(policy) if policy is not None else "{}",
                policy.escalation_group if policy is not None else "",
                int(policy is not None and policy.reclaim_on_absence),
                policy_tag,
            ],
        )
        if reply[0] == "policy":
            raise PolicyChangedError(f"tenant {tenant}: the policy changed since it was read")
        if reply[0] == "away":
            raise rules.agent_away(assignment_id, reply[1])
        if reply[0] == "not_offer":
            raise rules.not_an_offer(assignment_id)
        if reply[0] == "ok" and reply[2] == "1":
            rules.count_breached(tenant)
        return self._ended(reply, assignment_id, token)

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
        """The offer's agent and call (remembered, else read), then one script declines it
        and requeues."""
        k = Keys(tenant)
        agent_id, call_id = self._parties(k, assignment_id)
        end = AssignmentState.TIMED_OUT if timed_out else AssignmentState.REJECTED
        reply = self._run(
            "decline_offer",
            [
                k.asg(assignment_id),
                k.agent(agent_id),
                k.work(agent_id),
                k.call(call_id),
                k.events,
                k.offers,
                k.queue,
                k.timeline(call_id),
                k.ready,
                k.revs,
                k.waits,
            ],
            [
                assignment_id,
                token,
                end.value,
                aging_ms(policy),
                policy.max_missed_offers,
                rules.WORK_RETENTION_MS,
                self._record_ttl_ms,
                self._events_maxlen,
                int(count_missed),
            ],
        )
        return self._ended(reply, assignment_id, token)

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
        """The assignment's agent and call (remembered, else read), then one script ends it
        (it picks the assignment's channel's terms, and checks the policy tag: the SHA-1 of
        the policy JSON, ``RedisBase._policy``)."""
        rules.check_ending(end, outcome_value, channel_terms)
        terms: list[str | int] = []
        for channel, (value, wrap_s) in (channel_terms or {}).items():
            terms += [
                channel.value,
                "" if value is None else repr(float(value)),
                max(wrap_s, 0) * 1000,
            ]
        k = Keys(tenant)
        agent_id, call_id = self._parties(k, assignment_id)
        window = self._cache_window(tenant)
        reply = self._run(
            "finish_assignment",
            [
                k.asg(assignment_id),
                k.agent(agent_id),
                k.work(agent_id),
                k.call(call_id),
                k.events,
                k.queue,
                k.offers,
                k.history,
                k.timeline(call_id),
                k.ready,
                k.revs,
                k.policy,
                k.waits,
                k.done_since,
                *(k.done(channel) for channel in Channel),
            ],
            [
                assignment_id,
                token,
                end.value,
                "" if outcome_value is None else repr(float(outcome_value)),
                half_life_s,
                rules.WORK_RETENTION_MS,
                self._record_ttl_ms,
                self._events_maxlen,
                max(wrap_up_s, 0) * 1000,
                aging_ms(policy),
                window,
                policy_tag,
                *terms,
            ],
        )
        if reply[0] == "policy":
            raise PolicyChangedError(f"tenant {tenant}: the policy changed since it was read")
        ended = self._ended(reply, assignment_id, token)
        if reply[0] == "ok":
            self._cache_agent(tenant, reply[3], int(reply[2]), window)
        return Finished(ended, int(reply[-1]))

    def reclaim(
        self,
        tenant: str,
        agent_id: str,
        *,
        channels: frozenset[Channel],
        policy: Policy,
        seen: AgentSnapshot | None = None,
    ) -> list[Assignment]:
        """Read the agent's work and each assignment's token and call, then one script takes
        back what still qualifies, oldest first (work that arrives in between stays; the
        caller may reclaim again), unless the agent changed since ``seen``."""
        k = Keys(tenant)
        _, (raw,) = self._multi(k, lambda pipe: pipe.hkeys(k.agent(agent_id)))
        fields = [text(name) for name in raw]
        if not fields:
            raise rules.agent_not_found(agent_id)
        asg_ids = [name[2:] for name in fields if name.startswith("a:")]
        _, found_ids = self._multi(
            k, lambda pipe: [pipe.hmget(k.asg(a), ["token", "call_id"]) for a in asg_ids]
        )
        # In token (creation) order, so events and queue positions do not depend on ids.
        found = [
            (a, text(call_id))
            for _, a, call_id in sorted(
                (int(token), a, call_id)
                for a, (token, call_id) in zip(asg_ids, found_ids, strict=True)
                if token is not None and call_id is not None
            )
        ]
        keys = [
            *(k.agent(agent_id), k.work(agent_id), k.events, k.queue, k.offers),
            *(k.ready, k.revs, k.waits),
        ]
        for asg_id, call_id in found:
            keys += [k.asg(asg_id), k.call(call_id), k.timeline(call_id)]
        reply = self._run(
            "reclaim",
            keys,
            [
                agent_id,
                "," + ",".join(sorted(ch.value for ch in channels)) + ",",
                aging_ms(policy),
                rules.WORK_RETENTION_MS,
                self._record_ttl_ms,
                self._events_maxlen,
                "" if seen is None else seen.seq,
                "" if seen is None else seen.heartbeat_ms,
                *(asg_id for asg_id, _ in found),
            ],
        )
        if reply[0] == "missing":
            raise rules.agent_not_found(agent_id)
        if reply[0] == "changed":
            return []
        return [assignment_from_hash(a, pairs(flat)) for a, flat in reply[1]]
