"""The call reads and call-level writes of ``RedisStore``: the queue view, a call's record,
timeline and history, expired offers, cancel, SLA flags and callbacks.

A mixin on ``RedisBase`` (no driver import); key schema in the ``router.redis_store``
docstring.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter
from typing import Any

import structlog

from router import metrics
from router import store_common as rules
from router.domain import (
    Assignment,
    AssignmentState,
    Call,
    CallRecord,
    CallStatus,
    Channel,
    Policy,
    Snapshot,
    frozen_map,
)
from router.errors import ContentionError, NotFoundError
from router.history_mirror import HistoryMirrors
from router.index_mirror import FULL_READ_EVERY_S
from router.redis_agents import INDEX_VERSION
from router.redis_base import RedisBase, aging_ms
from router.redis_schema import (
    Keys,
    assignment_from_hash,
    call_from_hash,
    event_from_json,
    history_from_member,
    pairs,
    record_from_hash,
    text,
    text_or_none,
    texts,
)
from router.store import Event, HistoryEntry, QueueView, Waiting

log = structlog.get_logger(__name__)

_WAITS_CHUNK = 500
"""Queued calls per ``index_waits`` script (each one a short atomic step)."""
WAITS_REBUILD_S = 60.0
"""How often at most a replica mends a tenant's ``queue:waits`` whose size is not the
queue's."""
WAITS_AUDIT_S = 3600.0
"""How often a replica mends a tenant's ``queue:waits`` whatever its size."""
SNAPSHOT_READS = 3
"""Reads of a call whose assignment keeps changing before ``call_with_timeline`` gives up."""


@dataclass(frozen=True, slots=True)
class AgentLists:
    """A tenant's agents as ``load_queue`` last read them, and what vouches for them."""

    heads: tuple[object, ...]
    """The index version and the heads of ``idx:revs`` and ``idx:beatlog`` as read with them."""
    ids: list[str]
    """Every agent id, as the ``agents`` set lists them."""
    revs: list[str]
    """Their revs (``""``: not in ``idx:revs``)."""
    read_at: float
    """``time.monotonic()`` of the read."""


class RedisCalls(RedisBase):
    """Store methods about one call or the queue; ``RedisStore`` mixes them in."""

    _agent_lists: dict[str, AgentLists]
    """Tenant -> its agents as this replica's last ``load_queue`` read them."""
    _histories: HistoryMirrors
    """This replica's mirrors of the tenants' history (``history``)."""

    # --- reads ------------------------------------------------------------------------------

    def queue_depth(self, tenant: str) -> int:
        """``ZCARD`` of the queue."""
        k = Keys(tenant)
        _, (depth,) = self._multi(k, lambda pipe: pipe.zcard(k.queue))
        return int(depth)

    def load_queue(self, tenant: str, limit: int, *, offset: int = 0) -> QueueView:
        """Policy, time, ``limit`` queued ids after ``offset``, the depth, the first offer's expiry
        and the heads of the agents' change logs (``idx:revs``, ``idx:beatlog``) in one
        ``MULTI``; with them, unless the heads are those of this replica's last read, the
        agent ids, their revs and every agent's latest heartbeat (a heartbeat takes no rev:
        ``AgentCache.beat``). Then, in a second ``MULTI``, the queued calls and the agents
        not in the decoded-agent cache at their rev (none at all when nothing waits or
        changed).

        Every change to an agent takes a new rev and every heartbeat a new heartbeat rev, so
        equal heads mean equal lists: an idle tenant's tick then moves no list of every agent
        (one more round trip when the heads moved, and a full read at least every
        ``FULL_READ_EVERY_S``, as the routing index's mirror does)."""
        k = Keys(tenant)
        queued_ids = max(limit, 0)

        def brief(pipe: Any) -> None:
            pipe.get(k.policy)
            pipe.zrangebyscore(k.queue, "-inf", "+inf", start=max(offset, 0), num=queued_ids)
            pipe.zcard(k.queue)
            pipe.zrange(k.offers, 0, 0, withscores=True)
            pipe.get(k.index_version)
            pipe.zscore(k.revs, "")
            pipe.zscore(k.beat_log, "")

        def whole(pipe: Any) -> None:
            brief(pipe)
            pipe.zrange(k.agents, 0, -1)
            # WITHSCORES as plain arguments: the client hands the reply over as it came, and
            # ``_scored`` turns all its scores into numbers at once (a per-score cast
            # function costs three Python calls per agent, a pass under load reads 3N).
            for key in (k.revs, k.beats, k.beat_log):
                pipe.execute_command("ZRANGE", key, 0, -1, "WITHSCORES")

        known = self._agent_lists.get(tenant)
        if known is not None and time.monotonic() - known.read_at >= FULL_READ_EVERY_S:
            known = None
        if known is not None:
            now, replies = self._multi(k, brief, now=True)
            raw_policy, raw_queued, depth, first_offer, *heads = replies
            if tuple(heads) != known.heads:
                known = None
        if known is None:
            read_at = time.monotonic()
            now, replies = self._multi(k, whole, now=True)
            raw_policy, raw_queued, depth, first_offer, version, *rest = replies
            rev_head, beat_head, raw_ids, raw_revs, raw_beats, raw_beat_revs = rest
            self._beats_read(tenant, raw_beats, raw_beat_revs)
            # without revs (an index not built yet: load_candidates builds it) every agent
            # is read, and nothing is kept
            rev_ids, rev_numbers = _scored(raw_revs)
            revs = dict(zip(rev_ids, map(str, rev_numbers), strict=True))
            ids: list[str] = raw_ids
            if ids:
                text(ids[0])  # one check: the client decodes replies
            self._agent_cache.forget(tenant, set(ids))  # the others cached were deleted
            known = AgentLists(
                (version, rev_head, beat_head), ids, list(map(revs.get, ids, repeat(""))), read_at
            )
            if version == INDEX_VERSION and rev_head is not None:
                self._agent_lists[tenant] = known
            else:
                self._agent_lists.pop(tenant, None)
        policy = self._policy(raw_policy, tenant)
        queued = [text(c) for c in raw_queued]
        agents, raw_calls = self._cached_agents(
            tenant,
            known.ids,
            known.revs,
            now=now,
            window=policy.occupancy_window_s * 1000,
            also=[k.call(call_id) for call_id in queued],
        )
        calls: list[Call] = []
        traces: dict[str, str] = {}
        for fields in map(texts, raw_calls):
            if fields.get("status") == CallStatus.QUEUED.value:
                calls.append(call_from_hash(fields))
                if fields.get("trace"):
                    traces[calls[-1].call_id] = fields["trace"]
        due = any(float(expires) <= now for _, expires in first_offer)
        return QueueView(
            Snapshot(now, policy, tuple(agents)),
            tuple(calls),
            int(depth),
            due,
            frozen_map(traces),
            _agents_rev(known.heads),
        )

    def due_waits(
        self, tenant: str, max_wait_s: Mapping[Channel, int], now_ms: int, limit: int
    ) -> list[Waiting]:
        """One ``MULTI``: the queue's and ``queue:waits``' sizes, and a ``ZRANGEBYLEX`` of
        the index per channel with a limit. The index is mended first (``build_waits``)
        the first time this store reads it for the tenant, when it counts other than the
        queue (calls queued, or taken off the queue, by a replica of an earlier version;
        at most once per ``WAITS_REBUILD_S``), and every ``WAITS_AUDIT_S`` (the two can be
        off by as many each way); an entry left for a call no longer waiting in between is
        dropped when ``expire_call`` meets it."""
        k, wanted = Keys(tenant), max(limit, 0)
        limits = [(channel, s) for channel, s in max_wait_s.items() if s > 0]
        if not limits or not wanted:
            return []

        def read(pipe: Any) -> None:
            pipe.zcard(k.queue)
            pipe.zcard(k.waits)
            for channel, seconds in limits:
                cutoff = now_ms - seconds * 1000  # due: since <= cutoff
                stop = f"({channel.value}|{cutoff + 1:015d}"
                pipe.zrangebylex(k.waits, f"[{channel.value}|", stop, start=0, num=wanted)

        _, (queued, indexed, *ranges) = self._multi(k, read)
        last = self._waits_built.get(tenant)
        age = math.inf if last is None else time.monotonic() - last
        if age >= WAITS_AUDIT_S or (queued != indexed and age >= WAITS_REBUILD_S):
            self.build_waits(tenant)
            _, (_, _, *ranges) = self._multi(k, read)
        due = []
        for (channel, _), members in zip(limits, ranges, strict=True):
            for member in members:
                _, since, call_id = text(member).split("|", 2)
                due.append(Waiting(call_id, channel, int(since)))
        return due

    def build_waits(self, tenant: str) -> tuple[int, int]:
        """Mend ``queue:waits``: add the queued calls it lacks, then drop the entries no
        waiting call matches, ``_WAITS_CHUNK`` a script; (added, dropped). Needed for calls
        queued before the index existed, and for what replicas of an earlier version did
        during an upgrade (``due_waits`` calls it); safe at any time, also while other
        replicas route (each step is atomic, and the scripts keep the index). A call or an
        entry the queue or the index moves past a look by rank is seen by a later one."""
        k = Keys(tenant)
        self._waits_built[tenant] = time.monotonic()
        added = looked_at = 0
        while True:
            _, (ids,) = self._multi(
                k, functools.partial(_slice, k.queue, looked_at, looked_at + _WAITS_CHUNK - 1)
            )
            if ids:
                calls = [text(i) for i in ids]
                reply = self._run(
                    "index_waits", [k.waits, k.queue, *(k.call(c) for c in calls)], calls
                )
                added += int(reply[1])
            looked_at += len(ids)
            if len(ids) < _WAITS_CHUNK:
                break
        dropped = start = 0
        while True:
            _, (raw,) = self._multi(
                k, functools.partial(_slice, k.waits, start, start + _WAITS_CHUNK - 1)
            )
            members = [text(m) for m in raw]
            if members:
                keys = [k.call(m.split("|", 2)[-1]) for m in members]
                gone = int(self._run("prune_waits", [k.waits, *keys], members)[1])
                dropped, start = dropped + gone, start + len(members) - gone
            if len(members) < _WAITS_CHUNK:
                break
        mended = {"added": added, "dropped": dropped, "queued": looked_at}
        log.info("waits_index_mended", tenant=tenant, **mended)
        return added, dropped

    def _beats_read(self, tenant: str, raw_beats: list[Any], raw_beat_revs: list[Any]) -> None:
        """Every agent's latest heartbeat and its rev, as a full read found them, to the
        agent cache (``AgentCache.beat``)."""
        beat_revs = dict(zip(*_scored(raw_beat_revs), strict=True))
        beats = zip(*_scored(raw_beats), strict=True)
        self._agent_cache.beat(tenant, [(a, beat_revs[a], ms) for a, ms in beats if a in beat_revs])

    def get_call(self, tenant: str, call_id: str) -> CallRecord:
        """The call hash and its queue rank in one ``MULTI``, then its assignment."""
        k = Keys(tenant)
        _, (raw, rank) = self._multi(
            k, lambda pipe: (pipe.hgetall(k.call(call_id)), pipe.zrank(k.queue, call_id))
        )
        fields = texts(raw)
        if not fields:
            raise rules.call_not_found(call_id)
        asg_id = fields.get("assignment_id", "")
        asg: dict[str, str] = {}
        if asg_id:
            _, (raw_asg,) = self._multi(k, lambda pipe: pipe.hgetall(k.asg(asg_id)))
            asg = texts(raw_asg)
        return record_from_hash(fields, asg, None if rank is None else int(rank))

    def get_assignment(self, tenant: str, assignment_id: str) -> Assignment:
        """``HGETALL asg:<id>``."""
        k = Keys(tenant)
        _, (raw,) = self._multi(k, lambda pipe: pipe.hgetall(k.asg(assignment_id)))
        fields = texts(raw)
        if not fields:
            raise rules.assignment_not_found(assignment_id)
        return assignment_from_hash(assignment_id, fields)

    def find_request(self, tenant: str, request_id: str) -> tuple[str, CallRecord] | None:
        """The ``req`` hash, then ``get_call`` on its call."""
        fingerprint, call_id = self._hmget(Keys(tenant).req(request_id), "fingerprint", "call_id")
        if fingerprint is None or call_id is None:
            return None
        try:
            return fingerprint, self.get_call(tenant, call_id)
        except NotFoundError:
            return None

    def call_timeline(self, tenant: str, call_id: str) -> list[Event]:
        """The ``timeline:<call>`` list (and whether the call exists) in one ``MULTI``."""
        k = Keys(tenant)
        _, (exists, items) = self._multi(
            k, lambda pipe: (pipe.exists(k.call(call_id)), pipe.lrange(k.timeline(call_id), 0, -1))
        )
        if not exists:
            raise rules.call_not_found(call_id)
        return [event_from_json(text(item)) for item in items]

    def call_with_timeline(self, tenant: str, call_id: str) -> tuple[CallRecord, list[Event]]:
        """The call hash, its queue rank, its timeline and its assignment in one ``MULTI``;
        the assignment is the one the last read named, so it is read again (up to
        ``SNAPSHOT_READS`` times) while the call names another."""
        k = Keys(tenant)
        asg_id = self._hmget(k.call(call_id), "assignment_id")[0] or ""
        for _ in range(SNAPSHOT_READS):
            named = asg_id
            _, (raw, rank, items, *raw_asg) = self._multi(
                k, functools.partial(_read_call, k, call_id, named)
            )
            fields = texts(raw)
            if not fields:
                raise rules.call_not_found(call_id)
            asg_id = fields.get("assignment_id", "")
            if asg_id == named:
                asg = texts(raw_asg[0]) if raw_asg else {}
                record = record_from_hash(fields, asg, None if rank is None else int(rank))
                return record, [event_from_json(text(item)) for item in items]
        raise ContentionError(f"call {call_id} kept changing while it was read; retry")

    def completions(self, tenant: str, since_ms: int) -> Mapping[Channel, int]:
        """``ZCOUNT`` of each channel's ``done`` set in one ``MULTI``, with ``done:since``;
        when the sets started counting after ``since_ms`` (the first minutes after an
        upgrade from a version without them), the completed entries of the history instead."""
        k = Keys(tenant)

        def read(pipe: Any) -> None:
            pipe.get(k.done_since)
            for channel in Channel:
                pipe.zcount(k.done(channel), since_ms, "+inf")

        _, (started, *counts) = self._multi(k, read)
        if started is None or int(started) > since_ms:
            return frozen_map(rules.count_completions(self.history(tenant, since_ms), since_ms))
        return frozen_map(dict(zip(Channel, map(int, counts), strict=True)))

    def history(self, tenant: str, since_ms: int) -> list[HistoryEntry]:
        """This replica's mirror of the history (``router.history_mirror``), brought up to
        date in one ``MULTI`` (what was written since its last read), or in a second reading
        it all when it is new or Redis disagrees with it; entries older than two hours are
        left out even before a write trims them."""
        k = Keys(tenant)
        mirror = self._histories.get(tenant)
        with mirror.lock:
            current, last = mirror.read, mirror.last
            if current:  # from the newest entry held (from the start when none is)
                since, below = ("-inf", "-inf") if last is None else (last, f"({last}")
                now, (oldest, held_below, members) = self._multi(
                    k,
                    lambda pipe: (
                        pipe.zrange(k.history, 0, 0, withscores=True),
                        pipe.zcount(k.history, "-inf", below),
                        pipe.zrangebyscore(k.history, since, "+inf", withscores=True),
                    ),
                    now=True,
                )
                first = float(oldest[0][1]) if oldest else None
                members = _texts(members)
                current = mirror.extend(first, int(held_below), members, history_from_member)
            if not current:
                now, (members,) = self._multi(
                    k,
                    lambda pipe: pipe.zrangebyscore(k.history, "-inf", "+inf", withscores=True),
                    now=True,
                )
                mirror.reset(_texts(members), history_from_member)
            metrics.HISTORY_READS.labels("delta" if current else "all").inc()
            entries = mirror.since(max(since_ms, now - rules.HISTORY_MS))
        self._histories.trim()
        return entries

    def call_traces(self, tenant: str, call_ids: Sequence[str]) -> Mapping[str, str]:
        """The calls' ``trace`` fields in one ``MULTI``."""
        if not call_ids:
            return frozen_map({})
        k = Keys(tenant)
        _, found = self._multi(k, lambda pipe: [pipe.hget(k.call(c), "trace") for c in call_ids])
        return frozen_map({c: text(t) for c, t in zip(call_ids, found, strict=True) if t})

    def expired_offers(self, tenant: str, limit: int = 100) -> list[Assignment]:
        """The first ``limit`` members of ``offers`` with time (expired ones form a prefix),
        then their assignment hashes."""
        if limit <= 0:
            return []
        k = Keys(tenant)
        now, (members,) = self._multi(
            k, lambda pipe: pipe.zrange(k.offers, 0, limit - 1, withscores=True), now=True
        )
        due = [text(m) for m, expires in members if float(expires) <= now]
        if not due:
            return []
        _, hashes = self._multi(k, lambda pipe: [pipe.hgetall(k.asg(a)) for a in due])
        found = [assignment_from_hash(a, texts(h)) for a, h in zip(due, hashes, strict=True) if h]
        offers = [asg for asg in found if asg.state == AssignmentState.OFFERED]
        # Ties in expiry by token (creation order), not by the random id.
        return sorted(offers, key=lambda asg: (asg.offer_expires_ms, asg.token))

    # --- the call ---------------------------------------------------------------------------

    def cancel_call(self, tenant: str, call_id: str) -> CallRecord:
        """Read the call's assignment and agent, then one script cancels (re-read if the call
        moved on in between, bounded)."""
        k = Keys(tenant)
        for _ in range(rules.MAX_CAS_ATTEMPTS):
            status, asg_id = self._hmget(k.call(call_id), "status", "assignment_id")
            if status is None:
                raise rules.call_not_found(call_id)
            asg_id = asg_id or ""
            agent_id = (self._hmget(k.asg(asg_id), "agent_id")[0] or "") if asg_id else ""
            reply = self._run(
                "cancel_call",
                [
                    k.call(call_id),
                    k.asg(asg_id),
                    k.agent(agent_id),
                    k.work(agent_id),
                    k.events,
                    k.queue,
                    k.offers,
                    k.history,
                    k.timeline(call_id),
                    k.ready,
                    k.revs,
                    k.waits,
                ],
                [
                    asg_id,
                    rules.WORK_RETENTION_MS,
                    self._record_ttl_ms,
                    self._events_maxlen,
                    call_id,
                ],
            )
            if reply[0] == "missing":
                raise rules.call_not_found(call_id)
            if reply[0] == "completed":
                raise rules.call_finished(call_id, CallStatus.COMPLETED.value)
            if reply[0] == "ok":
                record = record_from_hash(pairs(reply[1]), pairs(reply[2]), None)
                if int(reply[3]) >= 0:  # this Cancel abandoned the call
                    rules.count_abandoned(tenant, record.call.channel, int(reply[3]))
                return record
            metrics.RETRIES.labels("call").inc()
        raise rules.contention(f"call {call_id}")

    def mark_sla(self, tenant: str, call_id: str, *, breached: bool, policy: Policy) -> bool:
        """One script: flag once, boost and re-score when at risk."""
        k = Keys(tenant)
        reply = self._run(
            "mark_sla",
            [k.call(call_id), k.queue, k.events, k.timeline(call_id)],
            [
                call_id,
                "breached" if breached else "at_risk",
                policy.escalation_priority_boost,
                aging_ms(policy),
                policy.escalation_group,
                self._events_maxlen,
            ],
        )
        if reply[0] == "missing":
            raise rules.call_not_found(call_id)
        return bool(reply[0] == "ok")

    def expire_call(
        self,
        tenant: str,
        call_id: str,
        *,
        max_wait_s: int,
        policy_version: int,
        found: Waiting | None = None,
    ) -> bool:
        """One script: re-checks the status, the policy's version and the wait on Redis'
        clock, and drops ``found``'s ``queue:waits`` member if it is stale."""
        k = Keys(tenant)
        member = "" if found is None or found.call_id != call_id else _wait_member(found)
        reply = self._run(
            "expire_call",
            [
                k.call(call_id),
                k.queue,
                k.events,
                k.timeline(call_id),
                k.history,
                k.policy,
                k.waits,
            ],
            [
                call_id,
                max(0, max_wait_s) * 1000,
                max_wait_s,
                self._record_ttl_ms,
                self._events_maxlen,
                policy_version,
                member,
            ],
        )
        if reply[0] == "missing":
            raise rules.call_not_found(call_id)
        return bool(reply[0] == "ok")

    def request_callback(self, tenant: str, call_id: str) -> CallRecord:
        """One script flags the call; then ``get_call``."""
        k = Keys(tenant)
        reply = self._run(
            "request_callback",
            [k.call(call_id), k.events, k.timeline(call_id)],
            [call_id, self._events_maxlen],
        )
        if reply[0] == "missing":
            raise rules.call_not_found(call_id)
        if reply[0] == "status":
            raise rules.call_finished(call_id, text_or_none(reply[1]) or "unknown")
        return self.get_call(tenant, call_id)


def _wait_member(call: Waiting) -> str:
    """``call``'s ``queue:waits`` member (``_lib.lua``'s ``wait_member``)."""
    return f"{call.channel.value}|{call.since_ms:015d}|{call.call_id}"


def _slice(key: str, first: int, last: int, pipe: Any) -> None:
    """``build_waits``' read: the members of ZSET ``key`` ranked ``first`` to ``last``."""
    pipe.zrange(key, first, last)


def _agents_rev(heads: tuple[object, ...]) -> str:
    """The ``idx:revs`` head agents read with ``heads`` are as of ("" while the index is not
    built: then the agents are read without revs)."""
    version, rev_head, _ = heads
    if version != INDEX_VERSION or not isinstance(rev_head, (int, float, str)):
        return ""
    return f"{float(rev_head):.0f}"


def _texts(members: Sequence[tuple[Any, Any]]) -> list[tuple[str, float]]:
    """A ``WITHSCORES`` reply's (member, score) pairs as text and numbers."""
    return [(text(member), float(score)) for member, score in members]


def _read_call(k: Keys, call_id: str, asg_id: str, pipe: Any) -> None:
    """``call_with_timeline``'s commands: the call, its rank, its timeline, ``asg_id``."""
    pipe.hgetall(k.call(call_id))
    pipe.zrank(k.queue, call_id)
    pipe.lrange(k.timeline(call_id), 0, -1)
    if asg_id:
        pipe.hgetall(k.asg(asg_id))


def _scored(reply: list[Any]) -> tuple[list[str], list[int]]:
    """A ``ZRANGE key 0 -1 WITHSCORES`` reply as it came (flat in RESP2, pairs in RESP3) as
    its members and their scores, whole numbers (revs, times in ms), converted in bulk."""
    if reply and isinstance(reply[0], list):  # RESP3: [member, score as a float] pairs
        members, scores = list(map(_FIRST, reply)), list(map(_SECOND, reply))
    else:
        members, scores = reply[0::2], reply[1::2]
    if members:
        text(members[0])  # one check: the client decodes replies
    return members, list(map(int, map(float, scores)))


_FIRST, _SECOND = itemgetter(0), itemgetter(1)
