"""Decoded agents kept between routing snapshots, keyed by the ``rev`` of their hash.

Every script that changes an agent's hash or work spans bumps the hash's ``rev`` field and
its copy in the tenant's ``idx:revs`` set in the same atomic step (``index_agent`` in
``router/lua/_lib.lua``). ``load_candidates`` knows the revs of its candidates from the
replica's mirror of the index (``router.index_mirror``), kept current in its first round
trip, and fetches only the agents whose rev is not the one cached here, so an agent is
read and decoded again only after it changed: equal revs mean equal stored state, and a
snapshot built from this cache is exactly the one a full read would give at the same time.
The one field a change may leave the rev alone for is ``heartbeat``: the heartbeat script
records it in ``idx:beats`` instead, and readers pass the heartbeats they read to ``beat``.

What depends on time alone (work holding capacity vs. a wrap-up that has ended, spans
leaving the occupancy window) is recomputed from the cached parts at each snapshot's "now";
the built ``AgentSnapshot`` itself is reused while none of those instants has passed.
Pure: no driver, no clock.
"""

from __future__ import annotations

import bisect
import dataclasses
import heapq
import operator
import sys
import threading
from collections.abc import Collection, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from router import codec
from router import store_common as rules
from router.domain import ActiveWork, AgentSnapshot, WorkSpan
from router.errors import RouterError
from router.redis_schema import agent_from_work, agent_work
from scoring.load import differing, shared_runs

MAX_ENTRIES = 200_000
"""Cached agents across tenants; past it the tenants cached first are dropped, whole, down
to three quarters of it (a cold read is still exact)."""

_NEVER = 2**63


@dataclass(frozen=True, slots=True)
class _Entry:
    rev: str
    min_end: int
    """Finished spans were read from this end time on: valid for cutoffs at or after it."""
    works: tuple[ActiveWork, ...]
    spans: tuple[WorkSpan, ...]
    """Finished spans (the ``work`` ZSET) ending at ``min_end`` or later."""
    members: tuple[str, ...]
    """The ``work`` members ``spans`` were decoded from, in the same order."""
    snapshot: AgentSnapshot
    built_ms: int
    window_ms: int
    stable_until_ms: int
    """``snapshot`` is the agent at any now in [built_ms, stable_until_ms) for window_ms."""


def _stable_until(works: Sequence[ActiveWork], snap: AgentSnapshot, now: int, window: int) -> int:
    """The first instant after ``now`` at which the time-dependent parts change: a wrap-up
    ends, or a recent span leaves the window (a span ending at e counts while now <= e + window)."""
    ends = [w.wrap_until_ms for w in works if w.wrap_until_ms > now]
    if snap.recent:  # in ``span_order``: the first ends first
        ends.append(snap.recent[0].end_ms + window + 1)
    return min(ends, default=_NEVER)


def _valid_from(entry: _Entry) -> int:
    """The first now at which ``entry.snapshot`` may be served (built by then, and its spans
    read from a cutoff at or before ``now - window``)."""
    return max(entry.built_ms, entry.min_end + entry.window_ms)


REORDER_MS = 1_000
"""How far (store time) the reads of concurrent requests may arrive out of order and still
be answered by a view built for a later one."""

_MEMO_MISSES = 32
"""``_View.listed`` aligns the candidates with the last ones while they differ by at most
this many agents, plus one in ``_MEMO_MISS_SHARE`` (else it looks each one up)."""
_MEMO_MISS_SHARE = 256
_MEMO_TOUCHED_SHARE = 8
"""``_View.listed`` drops its memo when more than one in this many of its agents changed
since it was taken (patching them would cost more than a fresh lookup)."""


@dataclass(slots=True)
class _Memo:
    """``_View.listed``'s last ordered answer: sorted ids and their revs and snapshots."""

    ids: list[str]
    revs: list[str | None]
    snapshots: list[AgentSnapshot | None]


class _View:
    """One tenant's entries for one window as ``agent id -> (rev, snapshot)``, each exact
    from its start (``valid_from``, or its own in ``late``) until its time-dependent parts
    change (``until``; ``expire`` drops it then, and the per-agent path rebuilds it): the
    common case of ``get_listed`` becomes a rev comparison done by C loops (map, list
    equality) instead of per-agent Python checks."""

    __slots__ = (
        "expiry",
        "late",
        "latest",
        "memo",
        "revs",
        "settling",
        "snapshots",
        "touched",
        "until",
        "valid_from",
        "window_ms",
    )

    def __init__(self, window_ms: int, valid_from: int) -> None:
        self.window_ms = window_ms
        self.revs: dict[str, str] = {}
        self.snapshots: dict[str, AgentSnapshot] = {}
        """The items, as two maps rather than a (rev, snapshot) pair per agent: a dict of
        strings costs the garbage collector nothing, a tuple per agent one more object for
        each full collection to walk."""
        self.valid_from = valid_from
        self.late: dict[str, int] = {}
        """Start of the items that serve only from a later time than ``valid_from`` (read
        at a later now than a request still in flight may ask for), by agent id."""
        self.settling: list[tuple[int, str]] = []
        """Heap of (start, agent id) of ``late``; records whose start changed are skipped."""
        self.latest = valid_from
        """At least the latest start in ``late`` (a request from then on finds all ready)."""
        self.until: dict[str, int] = {}
        """Agent id -> the instant its item stops being exact (``_Entry.stable_until_ms``)."""
        self.expiry: list[tuple[int, str]] = []
        """Heap of (until, agent id); records whose ``until`` changed since are skipped."""
        self.memo: _Memo | None = None
        """The last ordered lookup, kept to answer the next one by slices (``listed``)."""
        self.touched: set[str] = set()
        """Agents whose items changed since ``memo`` was taken (patched in before it serves)."""

    def admit(self, agent_id: str, entry: _Entry) -> None:
        """Serve ``entry`` (of this window) from its start until it changes with time."""
        self.revs[agent_id] = entry.rev
        self.snapshots[agent_id] = entry.snapshot
        if self.memo is not None:
            self.touched.add(agent_id)
        start = _valid_from(entry)
        if start > self.valid_from:
            if self.late.get(agent_id) != start:
                self.late[agent_id] = start
                heapq.heappush(self.settling, (start, agent_id))
                self.latest = max(self.latest, start)
                if len(self.settling) > 4 * len(self.late) + 1024:  # mostly stale records
                    self.settling = [(t, a) for a, t in self.late.items()]
                    heapq.heapify(self.settling)
        else:
            self.late.pop(agent_id, None)
        until = entry.stable_until_ms
        if self.until.get(agent_id) != until:
            self.until[agent_id] = until
            if until < _NEVER:
                heapq.heappush(self.expiry, (until, agent_id))
                if len(self.expiry) > 4 * len(self.until) + 1024:  # mostly stale records
                    self.expiry = [(t, a) for a, t in self.until.items() if t < _NEVER]
                    heapq.heapify(self.expiry)

    def expire(self, now: int) -> None:
        """Drop the items whose time-dependent parts (a wrap-up ending, a span leaving the
        occupancy window) have changed by ``now``."""
        expiry, until = self.expiry, self.until
        while expiry and expiry[0][0] <= now:
            at, agent_id = heapq.heappop(expiry)
            if until.get(agent_id) == at:
                del until[agent_id]
                self.drop(agent_id)
                self.late.pop(agent_id, None)

    def drop(self, agent_id: str) -> None:
        """Serve nothing for ``agent_id`` (its item is of another window, or out of date)."""
        self.revs.pop(agent_id, None)
        self.snapshots.pop(agent_id, None)
        if self.memo is not None:
            self.touched.add(agent_id)

    def listed(
        self, ids: Sequence[str], ordered: bool
    ) -> tuple[list[str | None], list[AgentSnapshot | None]]:
        """The rev and snapshot served for each of ``ids`` (``None`` where none is), as new
        lists. For ``ordered`` ids (sorted, distinct: the routing index's candidates), the
        ones the last ordered lookup had are copied from it a run at a time, so under load,
        where one Assign's candidates are the last one's but for a few, the two maps are
        looked up only for those few and for the agents changed since (``touched``)."""
        revs, snapshots = self.revs, self.snapshots
        memo = self.memo if ordered else None
        runs = None
        if memo is not None and self._patch(memo):
            if ids == memo.ids:  # the last candidates again (one C loop): the memo answers
                return memo.revs[:], memo.snapshots[:]
            runs = shared_runs(ids, memo.ids, _MEMO_MISSES + len(ids) // _MEMO_MISS_SHARE)
        if runs is None:
            cached: list[str | None] = list(map(revs.get, ids))
            found: list[AgentSnapshot | None] = list(map(snapshots.get, ids))
        else:
            assert memo is not None
            cached, found = [], []
            at = 0
            for i, j, n in [*runs, (len(ids), 0, 0)]:
                if at < i:  # not in the memo
                    cached += map(revs.get, ids[at:i])
                    found += map(snapshots.get, ids[at:i])
                cached += memo.revs[j : j + n]
                found += memo.snapshots[j : j + n]
                at = i + n
        if ordered:
            self.memo = _Memo(list(ids), cached[:], found[:])
            self.touched = set()
        return cached, found

    def _patch(self, memo: _Memo) -> bool:
        """Bring ``memo`` up to the maps for the agents ``touched`` since it was taken;
        ``False`` (and no memo) when so many were that a fresh lookup is cheaper."""
        touched, self.touched = self.touched, set()
        if len(touched) * _MEMO_TOUCHED_SHARE > len(memo.ids) + _MEMO_TOUCHED_SHARE:
            self.memo = None
            return False
        for agent_id in touched:
            place = bisect.bisect_left(memo.ids, agent_id)
            if place < len(memo.ids) and memo.ids[place] == agent_id:
                memo.revs[place] = self.revs.get(agent_id)
                memo.snapshots[place] = self.snapshots.get(agent_id)
        return True

    def unready(self, now: int) -> AbstractSet[str]:
        """The agents whose items do not serve ``now`` yet. Items that have served for
        ``REORDER_MS`` leave ``late``, ``valid_from`` moving up to their start."""
        late, settling = self.late, self.settling
        settle = now - REORDER_MS
        while settling and settling[0][0] <= settle:
            start, agent_id = heapq.heappop(settling)
            if late.get(agent_id) == start:
                del late[agent_id]
                self.valid_from = max(self.valid_from, start)
        if self.latest <= now or not late:  # the common case: every late item has started
            return _NOBODY
        unready = {agent_id for agent_id, start in late.items() if start > now}
        if not unready:
            self.latest = max(late.values())
        return unready


_NOBODY: frozenset[str] = frozenset()


def found_map(
    ids: Sequence[str], listed: Sequence[AgentSnapshot | None]
) -> dict[str, AgentSnapshot]:
    """``AgentCache.get_listed``'s answer for ``ids`` as agent id -> snapshot, the agents to
    read left out."""
    return {
        agent_id: agent for agent_id, agent in zip(ids, listed, strict=True) if agent is not None
    }


class AgentCache:
    """Decoded agents per (tenant, agent id), valid for one ``rev``.

    Beside the entries, each tenant has a ``_View`` of the entries of the window last asked
    for; ``get_listed`` answers from it, the agents it cannot serve through the per-agent
    checks, and builds it anew when the window changes or a request's time is before it.
    """

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        """An empty cache holding at most ``max_entries`` agents."""
        self._entries: dict[str, dict[str, _Entry]] = {}
        """Tenant -> agent id -> entry."""
        self._beats: dict[str, dict[str, tuple[int, int]]] = {}
        """Tenant -> agent id -> (rev, time) of the latest heartbeat passed to ``beat``."""
        self._beats_lock = threading.Lock()
        """Held while ``_beats`` changes (requests pass heartbeats on concurrently)."""
        self._views: dict[str, _View] = {}
        """Tenant -> the view of its entries for the window last asked for."""
        self._size = 0
        self._max = max_entries
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """Agents cached."""
        return self._size

    def get(
        self, tenant: str, agent_id: str, rev: str, now: int, window_ms: int
    ) -> AgentSnapshot | None:
        """The agent at ``now`` (spans of the last ``window_ms``) if rev ``rev`` is cached
        with the spans that window needs, else ``None`` (read it, then ``put``)."""
        entry = self._entries.get(tenant, {}).get(agent_id)
        if entry is None or not rev or entry.rev != rev or now - window_ms < entry.min_end:
            return None
        if entry.window_ms == window_ms and entry.built_ms <= now < entry.stable_until_ms:
            return entry.snapshot
        snapshot = self._build(entry.works, entry.spans, entry.snapshot, now, now - window_ms)
        self._store(
            tenant,
            agent_id,
            dataclasses.replace(
                entry,
                snapshot=snapshot,
                built_ms=now,
                window_ms=window_ms,
                stable_until_ms=_stable_until(entry.works, snapshot, now, window_ms),
            ),
        )
        return snapshot

    def window(self, tenant: str) -> int | None:
        """The occupancy window (ms) of ``tenant``'s last ``get_listed``, if any."""
        view = self._views.get(tenant)
        return None if view is None else view.window_ms

    def get_listed(
        self,
        tenant: str,
        ids: Sequence[str],
        revs: Sequence[str],
        now: int,
        window_ms: int,
        *,
        ordered: bool = False,
    ) -> tuple[list[AgentSnapshot | None], list[str]]:
        """``get`` for each agent of ``ids`` at its rev in ``revs``: the agents in ``ids``
        order, ``None`` where one is to be read, and the ids to read (then ``put``). In the
        common case (every rev matches) the answer is the view's own lookup, with no map
        built (``found_map`` makes one). ``ordered``: ``ids`` are sorted and distinct (the
        routing index's candidates), so the view may answer from its last such lookup."""
        with self._lock:  # the view's interval and items as one
            view = self._views.get(tenant)
            usable = view is not None and view.window_ms == window_ms and view.valid_from <= now
            if usable:
                assert view is not None
                view.expire(now)
                unready = view.unready(now)
                cached_revs, snapshots = view.listed(ids, ordered)
        if not usable:
            some, missing = self._get_each(tenant, ids, revs, now, window_ms)
            self._rebuild_view(tenant, now, window_ms)
            return list(map(some.get, ids)), missing
        wanted = list(revs)
        if cached_revs == wanted and (not unready or unready.isdisjoint(ids)):
            # Every rev matched, so every snapshot is there (the two maps change together).
            return snapshots, []
        # Under load a few agents changed since (the ones the last Assigns and Completes
        # touched): found with C-level loops, then checked one by one; the answer keeps
        # the order of ``ids``.
        stale = differing(cached_revs, wanted, operator.ne)
        if unready:  # rare: requests whose store times arrived out of order
            stale = sorted({*stale, *(i for i, agent_id in enumerate(ids) if agent_id in unready)})
        more, missing = self._get_each(
            tenant, [ids[i] for i in stale], [wanted[i] for i in stale], now, window_ms
        )
        for i in stale:
            snapshots[i] = more.get(ids[i])
        return snapshots, missing

    def _get_each(
        self, tenant: str, ids: Sequence[str], revs: Sequence[str], now: int, window_ms: int
    ) -> tuple[dict[str, AgentSnapshot], list[str]]:
        """``get_listed`` agent by agent: the agents found (``ids`` order), the ids to read."""
        found: dict[str, AgentSnapshot] = {}
        missing: list[str] = []
        entries, cutoff = self._entries.get(tenant, {}), now - window_ms
        for agent_id, rev in zip(ids, revs, strict=True):
            # ``get``'s common case inline.
            entry = entries.get(agent_id)
            if (
                entry is not None
                and entry.rev == rev
                and rev
                and entry.window_ms == window_ms
                and entry.built_ms <= now < entry.stable_until_ms
                and cutoff >= entry.min_end
            ):
                found[agent_id] = entry.snapshot
                continue
            snapshot = self.get(tenant, agent_id, rev, now, window_ms)
            if snapshot is None:
                missing.append(agent_id)
            else:
                found[agent_id] = snapshot
        return found, missing

    def _rebuild_view(self, tenant: str, now: int, window_ms: int) -> None:
        """The tenant's view anew: its entries of ``window_ms``, for requests from
        ``REORDER_MS`` before ``now`` on (an entry read later waits in ``late``; one whose
        time-dependent parts changed by then goes at the next ``expire``)."""
        view = _View(window_ms, now - REORDER_MS)
        with self._lock:
            for agent_id, entry in self._entries.get(tenant, {}).items():
                if entry.window_ms == window_ms:
                    view.admit(agent_id, entry)
            self._views[tenant] = view

    def put(
        self,
        tenant: str,
        fields: Mapping[str, str],
        members: Sequence[str],
        now: int,
        window_ms: int,
    ) -> AgentSnapshot:
        """Decode an agent read at ``now`` (hash ``fields``, work ``members`` ending at
        ``now - window_ms`` or later), cache it under the ``rev`` in its hash, return it."""
        cutoff = now - window_ms
        works, spans = agent_work(fields, members, self._decoded(tenant, fields))
        snapshot = agent_from_work(fields, works, spans, cutoff, now)
        # Interned, as the routing index's revs are: equal revs are one object, which list
        # comparisons pass without comparing characters.
        rev = sys.intern(fields.get("rev", ""))
        beat_rev, beat = self._beats.get(tenant, {}).get(snapshot.agent_id, (0, 0))
        if rev and beat_rev > int(rev) and beat > snapshot.heartbeat_ms:
            # read before a heartbeat of this very agent already patched in
            snapshot = dataclasses.replace(snapshot, heartbeat_ms=beat)
        if rev:
            self._store(
                tenant,
                snapshot.agent_id,
                _Entry(
                    rev=rev,
                    min_end=cutoff,
                    works=tuple(works),
                    spans=tuple(spans),
                    members=tuple(members),
                    snapshot=snapshot,
                    built_ms=now,
                    window_ms=window_ms,
                    stable_until_ms=_stable_until(works, snapshot, now, window_ms),
                ),
            )
        return snapshot

    def _decoded(self, tenant: str, fields: Mapping[str, str]) -> dict[str, WorkSpan] | None:
        """The finished spans the cached entry of the agent in ``fields`` (if any) decoded,
        by member: after a write, most of an agent's members are the ones read before."""
        try:
            agent_id = codec.decode_profile(fields["profile"], int(fields["version"])).agent_id
        except (KeyError, ValueError, RouterError):
            return None  # ``agent_from_work`` says what is wrong with the hash
        entry = self._entries.get(tenant, {}).get(agent_id)
        if entry is None or not entry.members:
            return None
        return dict(zip(entry.members, entry.spans, strict=True))

    def beat(self, tenant: str, beats: Iterable[tuple[str, int, int]]) -> None:
        """Heartbeats (agent id, heartbeat rev, time in ms) from ``idx:beatlog`` and
        ``idx:beats``: a heartbeat takes no agent rev, so the cached agent gets the new time
        here: only from a heartbeat logged after the rev it was read at (revs of both logs
        follow the server's clock), so an agent deleted and created again never inherits the
        old one's heartbeats, and never an older time."""
        fresh: list[tuple[str, int, int]] = []
        with self._beats_lock:
            latest = self._beats.setdefault(tenant, {})
            for agent_id, beat_rev, beat in beats:
                if beat_rev > latest.get(agent_id, (0, 0))[0]:
                    latest[agent_id] = (beat_rev, beat)
                    fresh.append((agent_id, beat_rev, beat))
        entries = self._entries.get(tenant, {})
        for agent_id, beat_rev, beat in fresh:
            entry = entries.get(agent_id)
            if (
                entry is not None
                and beat_rev > int(entry.rev)
                and entry.snapshot.heartbeat_ms < beat
            ):
                snapshot = dataclasses.replace(entry.snapshot, heartbeat_ms=beat)
                self._store(tenant, agent_id, dataclasses.replace(entry, snapshot=snapshot))

    def forget_beats(self, tenant: str, kept: Collection[str], as_of: int) -> None:
        """A full read of the heartbeat log as of rev ``as_of`` held only ``kept``: the
        heartbeats remembered for other agents, logged up to then, are of agents deleted
        since (deletion takes an agent out of the log), and are forgotten."""
        with self._beats_lock:
            latest = self._beats.get(tenant, {})
            for agent_id in [a for a, (rev, _) in latest.items() if rev <= as_of]:
                if agent_id not in kept:
                    del latest[agent_id]

    def forget(self, tenant: str, kept: Collection[str]) -> None:
        """A full read of ``tenant``'s agents listed only ``kept``: the others cached were
        deleted since, and are dropped."""
        with self._lock:
            entries = self._entries.get(tenant, {})
            gone = [agent_id for agent_id in entries if agent_id not in kept]
            view = self._views.get(tenant)
            for agent_id in gone:
                del entries[agent_id]
                if view is not None:
                    view.drop(agent_id)
            self._size -= len(gone)

    def _make_room(self, tenant: str) -> None:
        """Full: drop other tenants' entries, those cached first first, down to three
        quarters of the bound (all of them if ``tenant`` alone fills it)."""
        for other in [t for t in self._entries if t != tenant]:
            if self._size <= self._max * 3 // 4:
                return
            self._size -= len(self._entries.pop(other))
            self._views.pop(other, None)
        if self._size >= self._max:
            self._entries.clear()
            self._views.clear()
            self._size = 0

    def _store(self, tenant: str, agent_id: str, entry: _Entry) -> None:
        with self._lock:
            if self._size >= self._max:
                self._make_room(tenant)
            entries = self._entries.setdefault(tenant, {})
            self._size += agent_id not in entries
            entries[agent_id] = entry
            view = self._views.get(tenant)
            if view is not None:
                if entry.window_ms == view.window_ms:
                    view.admit(agent_id, entry)
                else:
                    view.drop(agent_id)

    @staticmethod
    def _build(
        works: Sequence[ActiveWork],
        spans: Sequence[WorkSpan],
        base: AgentSnapshot,
        now: int,
        cutoff: int,
    ) -> AgentSnapshot:
        """``redis_schema.agent_from_hash`` at another ``now`` from the decoded parts."""
        active, ended = rules.split_work(works, now)
        recent = rules.recent_spans((*spans, *ended), cutoff)
        return dataclasses.replace(base, active=active, recent=recent)


class PartiesCache:
    """Assignment id -> (agent id, call id) per key prefix (tenant): an assignment's parties
    never change, so a replica need not read them again before each script on it."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        """An empty cache; past ``max_entries`` it starts over."""
        self._entries: dict[tuple[str, str], tuple[str, str]] = {}
        self._max = max_entries
        self._lock = threading.Lock()

    def get(self, scope: str, assignment_id: str) -> tuple[str, str] | None:
        """The parties remembered for ``assignment_id``, if any."""
        return self._entries.get((scope, assignment_id))

    def remember(self, scope: str, assignment_id: str, parties: tuple[str, str]) -> None:
        """Remember the (agent id, call id) of ``assignment_id``."""
        with self._lock:
            if len(self._entries) >= self._max:
                self._entries.clear()
            self._entries[(scope, assignment_id)] = parties
