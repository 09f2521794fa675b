"""The agent and policy side of ``RedisStore``: profiles, presence, heartbeats, the skill
index, the routing index, policy versions and the routing snapshot.

A mixin on ``RedisBase`` (no driver import); key schema in the ``router.redis_store`` docstring.
``update_agent``, ``delete_agent`` and ``put_policy`` read, then compare-and-set in a script
(re-reading on a lost race when the caller gave no version).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from typing import Any

import structlog

from router import codec, metrics
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
from router.errors import AlreadyExistsError
from router.index_mirror import FULL_READ_EVERY_S, MAX_DELTA, IndexMirror
from router.redis_base import RedisBase, add_agent_reads, agents_from_replies
from router.redis_schema import Keys, agent_from_view, text
from router.store import AgentQuery, Candidates

log = structlog.get_logger(__name__)

_SCAN_CHUNK = 200
INDEX_VERSION = "3"
"""The routing index (``idx:ready``, ``idx:revs``, ``idx:beats``) these scripts keep; a tenant whose
``idx:version`` differs (data written before the index existed) is indexed on its first
``load_candidates``."""
TOMBSTONES_KEPT_S = 10 * FULL_READ_EVERY_S
"""How long a deleted agent stays in ``idx:revs`` (the change log) before a later deletion
prunes it: ten times ``FULL_READ_EVERY_S``, so a mirror in use still reads the deletion as a
change; an older mirror reads the whole index instead (``idx:gone``)."""
_INDEX_CHUNK = 500
"""Agents per ``reindex`` script (each one a short atomic step)."""


class RedisAgents(RedisBase):
    """Store methods about agents and the policy; ``RedisStore`` mixes them in."""

    @staticmethod
    def _cas_loop(what: str, expected_version: int, attempt: Callable[[], int | None]) -> None:
        """Run a compare-and-set ``attempt`` (``None`` when applied, else the version that
        moved in meanwhile): a conditional write fails at once, an unconditional one re-reads
        up to ``MAX_CAS_ATTEMPTS`` times."""
        for _ in range(rules.MAX_CAS_ATTEMPTS):
            moved_to = attempt()
            if moved_to is None:
                return
            if expected_version > 0:
                raise rules.stale_version(what, expected_version, moved_to)
            metrics.RETRIES.labels("version").inc()
        raise rules.contention(what)

    # --- agents ------------------------------------------------------------------------------

    def create_agent(self, tenant: str, profile: AgentProfile) -> AgentSnapshot:
        """Store a new agent (presence OFFLINE; version and seq 1, or one past those of a
        deleted agent of its id) with its index entries."""
        k, agent_id = Keys(tenant), profile.agent_id
        skills = [k.skill(s) for s in sorted(profile.skills)]
        self._register_tenant(tenant)
        reply = self._run(
            "create_agent",
            [
                k.agent(agent_id),
                k.work(agent_id),
                k.agents,
                k.events,
                k.ready,
                k.revs,
                k.retired,
                *skills,
            ],
            [agent_id, codec.encode_profile(profile), self._events_maxlen, rules.WORK_RETENTION_MS],
        )
        if reply[0] == "exists":
            raise AlreadyExistsError(f"agent {agent_id} already exists")
        return agent_from_view(reply[1])

    def _read_profile(self, k: Keys, agent_id: str) -> AgentProfile:
        raw, version = self._hmget(k.agent(agent_id), "profile", "version")
        if raw is None or version is None:
            raise rules.agent_not_found(agent_id)
        return codec.decode_profile(raw, int(version))

    def update_agent(
        self,
        tenant: str,
        agent_id: str,
        change: Callable[[AgentProfile], AgentProfile],
        expected_version: int = 0,
    ) -> AgentSnapshot:
        """Read, apply ``change``, compare-and-set on the version (re-read on a race when
        ``expected_version`` is 0)."""
        k, what = Keys(tenant), f"agent {agent_id}"
        result: list[AgentSnapshot] = []

        def attempt() -> int | None:
            current = self._read_profile(k, agent_id)
            if expected_version > 0 and expected_version != current.version:
                raise rules.stale_version(what, expected_version, current.version)
            changed = rules.checked_change(change, current)
            removed = sorted(current.skills.keys() - changed.skills.keys())
            added = sorted(changed.skills.keys() - current.skills.keys())
            reply = self._run(
                "update_agent",
                [k.agent(agent_id), k.work(agent_id), k.events, k.ready, k.revs]
                + [k.skill(s) for s in (*removed, *added)],
                [
                    current.version,
                    codec.encode_profile(changed),
                    len(removed),
                    agent_id,
                    self._events_maxlen,
                    rules.WORK_RETENTION_MS,
                ],
            )
            if reply[0] == "missing":
                raise rules.agent_not_found(agent_id)
            if reply[0] == "moved":
                return int(reply[1])
            result.append(agent_from_view(reply[1]))
            return None

        self._cas_loop(what, expected_version, attempt)
        return result[0]

    def delete_agent(self, tenant: str, agent_id: str, expected_version: int = 0) -> None:
        """Remove an idle agent, its work spans and its index entries (heartbeats included)."""
        k, what = Keys(tenant), f"agent {agent_id}"

        def attempt() -> int | None:
            current = self._read_profile(k, agent_id)
            if expected_version > 0 and expected_version != current.version:
                raise rules.stale_version(what, expected_version, current.version)
            reply = self._run(
                "delete_agent",
                [
                    k.agent(agent_id),
                    k.work(agent_id),
                    k.agents,
                    k.events,
                    k.ready,
                    k.revs,
                    k.beats,
                    k.beat_log,
                    k.gone,
                    k.retired,
                    *(k.skill(s) for s in sorted(current.skills)),
                ],
                [current.version, agent_id, self._events_maxlen, self._tombstones_kept_us],
            )
            if reply[0] == "missing":
                raise rules.agent_not_found(agent_id)
            if reply[0] == "busy":
                raise rules.agent_busy(agent_id, int(reply[1]))
            if reply[0] == "moved":
                return int(reply[1])
            return None

        self._cas_loop(what, expected_version, attempt)

    def get_agent(self, tenant: str, agent_id: str) -> AgentSnapshot:
        """One agent with live state; ``recent`` covers the last 24 h."""
        _, agents = self._read_agents(Keys(tenant), [agent_id])
        if not agents:
            raise rules.agent_not_found(agent_id)
        return agents[0]

    def _ids_after(self, k: Keys, start: str, count: int) -> list[str]:
        """Up to ``count`` agent ids from the lexical bound ``start`` (``-`` or ``(<id>``)."""

        def read(pipe: Any) -> None:
            pipe.zrange(k.agents, start, "+", bylex=True, offset=0, num=count)

        _, (reply,) = self._multi(k, read)
        return [text(agent_id) for agent_id in reply]

    def list_agents(
        self, tenant: str, query: AgentQuery, page_size: int, page_token: str = ""
    ) -> tuple[list[AgentSnapshot], str]:
        """Scan the ``agents`` ZSET by id from the cursor, filtering, until the page is full
        and one more match proves there is a next page."""
        k = Keys(tenant)
        after = rules.decode_page_token(page_token) if page_token else None
        start = "-" if after is None else "(" + after
        found: list[AgentSnapshot] = []
        chunk = min(_SCAN_CHUNK, page_size + 1)  # doubled while a filter leaves it unfilled
        while len(found) <= page_size:
            ids = self._ids_after(k, start, chunk)
            if not ids:
                break
            _, agents = self._read_agents(k, ids)
            found.extend(agent for agent in agents if rules.matches(query, agent))
            start = "(" + ids[-1]
            if len(ids) < chunk:
                break
            chunk = min(_SCAN_CHUNK, 2 * chunk)
        page = found[:page_size]
        more = len(found) > page_size
        return page, rules.encode_page_token(page[-1].agent_id) if more else ""

    def set_presence(
        self, tenant: str, agent_id: str, presence: Presence, reason: str = ""
    ) -> AgentSnapshot:
        """Change presence; counts as a heartbeat; bumps ``seq``; appends an event."""
        k = Keys(tenant)
        reply = self._run(
            "set_presence",
            [k.agent(agent_id), k.work(agent_id), k.events, k.ready, k.revs],
            [presence.value, reason, agent_id, self._events_maxlen, rules.WORK_RETENTION_MS],
        )
        if reply[0] == "missing":
            raise rules.agent_not_found(agent_id)
        return agent_from_view(reply[1])

    def heartbeat(self, tenant: str, agent_id: str) -> int:
        """Record a heartbeat (no ``seq`` bump); returns store time."""
        k = Keys(tenant)
        reply = self._run("heartbeat", [k.agent(agent_id), k.beats, k.beat_log], [agent_id])
        if reply[0] == "missing":
            raise rules.agent_not_found(agent_id)
        return int(reply[1])

    # --- policy ------------------------------------------------------------------------------

    def get_policy(self, tenant: str) -> Policy:
        """The stored policy or ``Policy()`` (version 0)."""
        k = Keys(tenant)
        _, (raw,) = self._multi(k, lambda pipe: pipe.get(k.policy))
        return self._policy(raw, tenant)

    def put_policy(
        self, tenant: str, policy: Policy, expected_version: int | None = None
    ) -> Policy:
        """Store ``policy`` as the next version: one script's compare-and-set on the version
        read (on ``expected_version`` when given, 0 included: a conflict is final; else
        re-read and tried again, bounded)."""
        k = Keys(tenant)
        result: list[Policy] = []

        def attempt() -> int | None:
            read = self.get_policy(tenant).version
            if expected_version is not None and expected_version != read:
                raise rules.stale_version("policy", expected_version, read)
            stored = dataclasses.replace(policy, version=read + 1)
            encoded = codec.encode_policy(stored)
            reply = self._run(
                "put_policy", [k.policy, k.events], [read, encoded, self._events_maxlen]
            )
            if reply[0] == "moved":
                if expected_version is not None:
                    raise rules.stale_version("policy", expected_version, int(reply[1]))
                return int(reply[1])
            self._policy(encoded, tenant)  # what this replica knows from now on
            result.append(stored)
            return None

        self._cas_loop("policy", 0, attempt)  # a conditional attempt raises on its own
        return result[0]

    # --- routing snapshot --------------------------------------------------------------------

    def load_snapshot(self, tenant: str, call: Call) -> Snapshot:
        """Two ``MULTI`` round trips: policy, time, candidate ids (``SINTER`` of the required
        skills' indexes), the agent count and the queue depth; then the candidates' hashes
        and the work spans inside the policy's occupancy window."""
        k = Keys(tenant)
        skills = sorted({req.skill for req in call.required_skills})

        def first(pipe: Any) -> None:
            pipe.get(k.policy)
            if skills:
                pipe.sinter([k.skill(s) for s in skills])
            else:
                pipe.zrange(k.agents, 0, -1)
            pipe.zcard(k.agents)
            pipe.zcard(k.queue)

        now, (raw, raw_ids, total, queued) = self._multi(k, first, now=True)
        policy = self._policy(raw, tenant)
        candidates = sorted(text(agent_id) for agent_id in raw_ids)
        min_end = now - policy.occupancy_window_s * 1000
        agents: list[AgentSnapshot] = []
        if candidates:
            _, replies = self._multi(k, lambda pipe: add_agent_reads(pipe, k, candidates, min_end))
            agents = agents_from_replies(replies, now, min_end)
        return Snapshot(now, policy, tuple(agents), int(total) - len(candidates), int(queued))

    def load_candidates(self, tenant: str, call: Call, request_id: str = "") -> Candidates:
        """One read-only script (``index_changes``): time, policy, agent count, queue depth,
        whether ``request_id`` was seen, how many agents hold the call's skills, and what
        changed in the routing index since this replica's mirror of it (``index_mirror``)
        was current. The mirror then names the ready agents with those skills and room for
        the call's channel; they come from the agent cache, the others (and any ready agent
        whose skills are not known at its rev) are read in one ``MULTI`` and cached. An
        index never built by this version (older data) is built first."""
        k = Keys(tenant)
        skills = sorted({req.skill for req in call.required_skills})
        keys = [k.policy, k.agents, k.queue, k.ready, k.revs, k.index_version, k.req(request_id)]
        keys += [k.beats, k.beat_log, k.gone, *(k.skill(s) for s in skills)]
        mirror = self._mirror(tenant)
        for _ in range(rules.MAX_CAS_ATTEMPTS):
            since, epoch = mirror.since(time.monotonic())
            args: list[str | int] = [
                request_id,
                INDEX_VERSION,
                since,
                MAX_DELTA,
                mirror.beat_since(),
            ]
            reply = self._run("index_changes", keys, args)
            if reply[0] == "unindexed":
                self.build_index(tenant)
                metrics.RETRIES.labels("index").inc()
                continue
            return self._candidates(tenant, call, skills, (mirror, epoch), reply)
        raise rules.contention(f"tenant {tenant} routing index")

    def _mirror(self, tenant: str) -> IndexMirror:
        """This replica's mirror of ``tenant``'s routing index."""
        mirror = self._mirrors.get(tenant)
        if mirror is None:
            mirror = self._mirrors.setdefault(tenant, IndexMirror())
        return mirror

    def _candidates(
        self,
        tenant: str,
        call: Call,
        skills: list[str],
        asked: tuple[IndexMirror, int],
        reply: list[Any],
    ) -> Candidates:
        """Apply an ``index_changes`` reply to the mirror (``asked``: it and the epoch of
        the request), learn the skills of the ready agents it does not know yet, and read
        the candidates for ``call``."""
        _, now_text, raw_policy, total, queued, seen, skilled, head, mode, flat, *beats = reply
        metrics.INDEX_READS.labels(text(mode)).inc()
        policy = self._policy(raw_policy, tenant)
        now, window = int(now_text), policy.occupancy_window_s * 1000
        mirror, epoch = asked
        # Interned, as the agent cache's revs are: its rev comparisons find the same objects.
        changes = [sys.intern(text(x)) for x in flat]
        mirror.apply(text(mode), int(float(head)), changes, time.monotonic(), epoch)
        raw_head, raw_mode, beat_flat = beats
        beat_head, beat_mode = int(float(raw_head)), text(raw_mode)
        beat_ids = [text(beat_flat[i]) for i in range(0, len(beat_flat), 3)]
        self._agent_cache.beat(
            tenant,
            [
                (agent_id, int(float(beat_flat[i + 1])), int(float(beat_flat[i + 2])))
                for agent_id, i in zip(beat_ids, range(0, len(beat_flat), 3), strict=True)
                if beat_flat[i + 2]
            ],
        )
        if beat_mode == "all":
            self._agent_cache.forget_beats(tenant, set(beat_ids), beat_head)
        mirror.beats_read(beat_mode, beat_head)
        ids, revs = mirror.unlearned()
        if ids:
            agents, _ = self._cached_agents(tenant, ids, revs, now=now, window=window)
            read = {a.agent_id: frozenset(a.profile.skills) for a in agents}
            pairs = list(zip(ids, revs, strict=True))
            mirror.learn(
                [(agent_id, rev, read[agent_id]) for agent_id, rev in pairs if agent_id in read],
                [(agent_id, rev) for agent_id, rev in pairs if agent_id not in read],
            )
        pick = mirror.candidates(skills, AGENT_UNIT_BUDGET - policy.units_for(call.channel))
        agents, _ = self._cached_agents(
            tenant, pick.ids, pick.revs, now=now, window=window, ordered=True
        )
        snapshot = Snapshot(now, policy, tuple(agents), int(total) - int(skilled), int(queued))
        return Candidates(
            snapshot,
            # The skilled count is this request's; the mirror may have moved on meanwhile.
            not_available=max(0, int(skilled) - pick.in_ready),
            no_room=pick.in_ready - len(pick.ids),
            request_seen=bool(seen),
        )

    def build_index(self, tenant: str) -> int:
        """(Re)build the tenant's routing index from every agent hash, ``_INDEX_CHUNK``
        agents per script, the last one marking it built; returns the agents indexed. Needed
        once for data written before the index existed (``load_candidates`` calls it); safe
        to run at any time, also while other replicas route (each step is atomic and the
        scripts keep the index from then on). The version 1 rev hash goes first."""
        k = Keys(tenant)
        self._multi(k, lambda pipe: pipe.delete(k.legacy_revs))
        start, done = "-", 0
        while True:
            ids = self._ids_after(k, start, _INDEX_CHUNK)
            last = len(ids) < _INDEX_CHUNK
            self._run(
                "reindex",
                [k.ready, k.revs, k.index_version, *(k.agent(a) for a in ids)],
                [INDEX_VERSION, "1" if last else "0", *ids],
            )
            done += len(ids)
            if last:
                break
            start = "(" + ids[-1]
        log.info("routing_index_built", tenant=tenant, agents=done)
        return done
