"""A replica's mirror of one tenant's routing index, kept current from its change log.

Redis holds the index (``router/lua/_lib.lua``, ``index_agent``): ``idx:ready`` scores every
AVAILABLE agent by the units of its work, and ``idx:revs`` scores every agent by its ``rev``,
which every change takes anew (strictly increasing per tenant, from the server's clock); a
deleted agent stays at the rev of its deletion until a later deletion prunes it (after
``router.redis_agents.TOMBSTONES_KEPT_S``, raising the floor in ``idx:gone``). So the
members of ``idx:revs`` above a rev at or past the floor are exactly the agents changed or
deleted since, and the ``index_changes`` script sends a replica only those (with their
units in ``idx:ready``, or none), or the whole of ``idx:ready`` when the mirror is new, too
far behind, below the floor, ahead of the counter (a failover to a node whose clock lags)
or due for its periodic full read.

The mirror holds the ready agents (rev, units) and the skills of each one's decoded profile,
so ``candidates`` answers "ready, holding these skills, with this much room" from memory
instead of Redis intersecting skill sets and sending every candidate's rev on every Assign.
After ``apply``, the state is the index as of the reply's head rev: the same candidates the
old full read gave. Changes are applied only forward (per agent, by rev), so concurrent
requests may apply their replies in any order; no lock is held during a round trip.

Pure: no driver, no clock (callers pass ``monotonic`` seconds).
"""

from __future__ import annotations

import bisect
import operator
import threading
from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from itertools import chain, filterfalse, pairwise

FULL_READ_EVERY_S = 60.0
"""Longest time between full reads of a tenant's index (a backstop: revs are never reissued,
but a change log rewritten by hand, or a node whose clock lags, would otherwise go unseen)."""
MAX_DELTA = 5_000
"""Most changed agents the script sends as a delta; further behind, it sends everything."""
_FEW_FULL = 32
"""``candidates`` copies the revs of every ready agent, leaving out the ones without room by
bisection, while at most one in this many has no room (else it looks up each rev)."""

_REV = operator.itemgetter(0)


@dataclass(frozen=True, slots=True)
class Pick:
    """``IndexMirror.candidates``: the ready agents for one call."""

    ids: list[str]
    """Ready agents holding every required skill with room for the call, in id order."""
    revs: list[str]
    """Their revs (for the decoded-agent cache)."""
    in_ready: int
    """Ready agents holding every required skill (with room or not)."""


class IndexMirror:
    """One tenant's ``idx:ready`` as of rev ``head``, with each ready agent's skills."""

    def __init__(self) -> None:
        """An empty mirror: its first read is a full one."""
        self._lock = threading.Lock()
        self.head = -1
        """Every change up to this rev is applied (-1: nothing read yet)."""
        self._full_at = float("-inf")
        """When the last full read was applied (or asked for: one at a time)."""
        self.epoch = 0
        """Bumped when the mirror starts over: replies asked for before are dropped."""
        self.beat_head = -1
        """The heartbeat log's rev up to which heartbeats were passed on (-1: none yet)."""
        self._seen: dict[str, int] = {}
        """Agent id -> the highest rev applied for it (ready or not)."""
        self._floor = -1
        """Revs up to this one are reflected for every agent (the last full read's head)."""
        self._ready: dict[str, tuple[str, int]] = {}
        """Ready agent id -> (rev, units of its work)."""
        self._loaded: dict[str, int] = {}
        """Ready agents with work -> its units (the only ones a call may find without room)."""
        self._skills: dict[str, tuple[str, tuple[str, ...]]] = {}
        """Ready agent id -> (rev its skills were read at, skill names). Tuples of strings,
        which the garbage collector stops tracking (a set per agent would cost every full
        collection two objects per agent)."""
        self._by_skill: dict[str, set[str]] = {}
        self._order: list[str] = []
        """The ready agents' ids, sorted."""
        self._order_revs: list[str] = []
        """Their revs, place for place (``candidates`` copies a run of both, where looking
        up each agent's rev would cost a call per agent)."""
        self._pending: set[str] = set()
        """Ready agents whose skills are not known at their current rev."""

    def since(self, now_s: float) -> tuple[str, int]:
        """ARGV for ``index_changes`` (the head rev, or ``""`` for a full read: always while
        the mirror is empty, else once a minute, one request at a time) and the epoch to
        hand back to ``apply`` with the reply."""
        with self._lock:
            if self.head >= 0 and now_s - self._full_at < FULL_READ_EVERY_S:
                return str(self.head), self.epoch
            self._full_at = now_s  # the others keep asking for deltas meanwhile
            return "", self.epoch

    def beat_since(self) -> str:
        """ARGV for ``index_changes``: the heartbeat log's rev passed on so far, or ``""``."""
        with self._lock:
            return "" if self.beat_head < 0 else str(self.beat_head)

    def beats_read(self, mode: str, head: int) -> None:
        """The heartbeats of a reply were passed on: ``delta`` up to ``head``, or ``all``
        of them as of ``head`` (heartbeats only ever raise a cached time, so replies may
        come in any order: at worst a later request is sent some again)."""
        with self._lock:
            self.beat_head = max(self.beat_head, head) if mode == "delta" else head

    def apply(self, mode: str, head: int, flat: Sequence[str], now_s: float, epoch: int) -> None:
        """Apply an ``index_changes`` reply: its ``mode``, head rev, flat
        ``[agent id, rev, units or "", ...]``, and the ``epoch`` ``since`` gave its request.

        ``delta`` entries apply per agent only when newer than what the mirror has for it, so
        concurrent replies may come in any order. ``all`` replaces the mirror when it is at
        least as new as the mirror (an older one, from a request that raced with a newer
        one, is dropped); ``reset`` (the counter is behind the mirror: writes were lost, or
        the keys rewritten) replaces it in any case and starts a new epoch, so replies
        asked for before it (from the old state) are dropped. Skills already read at an
        agent's rev are kept."""
        triples = [(flat[i], flat[i + 1], flat[i + 2]) for i in range(0, len(flat), 3)]
        with self._lock:
            if epoch != self.epoch:
                return
            if mode == "delta":
                self._apply_delta(triples)
                self.head = max(self.head, head)
            elif mode == "reset" or head >= self.head:
                self._replace(triples, head)
                self.head = head
                self._full_at = now_s
                if mode == "reset":
                    self.epoch += 1

    def _apply_delta(self, triples: Sequence[tuple[str, str, str]]) -> None:
        for agent_id, rev, units in triples:
            number = int(rev)
            if number <= self._seen.get(agent_id, self._floor):
                continue  # already applied, or older than what is known
            self._seen[agent_id] = number
            if units:
                at = bisect.bisect_left(self._order, agent_id)
                if agent_id in self._ready:
                    self._order_revs[at] = rev
                else:
                    self._order.insert(at, agent_id)
                    self._order_revs.insert(at, rev)
                used = int(float(units))
                self._ready[agent_id] = (rev, used)
                if used:
                    self._loaded[agent_id] = used
                else:
                    self._loaded.pop(agent_id, None)
                if self._skills.get(agent_id, ("", ()))[0] != rev:
                    self._pending.add(agent_id)
            else:
                self._drop(agent_id)

    def _replace(self, triples: Sequence[tuple[str, str, str]], head: int) -> None:
        skills = self._skills
        # An agent ready without a rev (an index written by another version, or edited by
        # hand) is taken as of this read; its hash is read for its skills like any other.
        self._seen = {agent_id: int(rev) if rev else head for agent_id, rev, _ in triples}
        self._floor = head  # every agent's state up to here is in this read
        self._ready = {agent_id: (rev, int(float(units))) for agent_id, rev, units in triples}
        self._loaded = {agent_id: used for agent_id, (_, used) in self._ready.items() if used}
        self._order = sorted(self._ready)
        self._order_revs = [self._ready[agent_id][0] for agent_id in self._order]
        self._skills, self._by_skill, self._pending = {}, {}, set()
        for agent_id, (rev, _) in self._ready.items():
            known = skills.get(agent_id)
            if known is not None and known[0] == rev:
                self._skills[agent_id] = known
                for name in known[1]:
                    self._by_skill.setdefault(name, set()).add(agent_id)
            else:
                self._pending.add(agent_id)

    def unlearned(self) -> tuple[list[str], list[str]]:
        """Ready agents whose skills are not known at their current rev, with those revs."""
        with self._lock:
            ids = sorted(self._pending)
            revs = [self._ready[agent_id][0] for agent_id in ids]
        return ids, revs

    def learn(
        self,
        known: Iterable[tuple[str, str, frozenset[str]]],
        gone: Iterable[tuple[str, str]],
    ) -> None:
        """Record the skills read for agents that ``unlearned`` named: (agent id, the rev
        ``unlearned`` gave, skill names); ``gone``: (agent id, that rev) of those whose hash
        no longer exists (deleted after the index was read). Either only while the agent is
        still at that rev in the mirror: a newer change has its own read."""
        with self._lock:
            for agent_id, rev in gone:
                current = self._ready.get(agent_id)
                if current is not None and current[0] == rev:
                    self._drop(agent_id)
            for agent_id, rev, skills in known:
                current = self._ready.get(agent_id)
                if current is None or current[0] != rev:
                    continue  # left the index meanwhile, or a newer change is applied
                old = self._skills.get(agent_id)
                if old is not None:
                    for name in old[1]:
                        if name not in skills:
                            self._by_skill[name].discard(agent_id)
                for name in skills:
                    self._by_skill.setdefault(name, set()).add(agent_id)
                self._skills[agent_id] = (rev, tuple(skills))
                self._pending.discard(agent_id)

    def candidates(self, skills: Sequence[str], room: int) -> Pick:
        """The ready agents holding every skill of ``skills`` whose units leave ``room``
        (at most ``room`` units in use), in id order."""
        # C-level filters over the ids (a team of 10,000 is read on every Assign); only the
        # agents with work are looked at one by one for room.
        with self._lock:
            ready, order = self._ready, self._order
            ids: Sequence[str] = order
            count = len(order)
            if skills:
                sets = sorted((self._by_skill.get(name, set()) for name in skills), key=len)
                holders = sets[0].intersection(*sets[1:]) if len(sets) > 1 else sets[0]
                count = len(holders)
                if 4 * count < len(order):
                    ids = sorted(holders)
                elif count < len(order):  # else every ready agent (``holders`` are ready)
                    ids = list(filter(holders.__contains__, order))
            full = {agent_id for agent_id, used in self._loaded.items() if used > room}
            if ids is order and len(full) * _FEW_FULL <= len(order):
                # Every ready agent may take the call but a few: their revs are a copy of
                # ``_order_revs`` with those few left out.
                return Pick(*_leave_out(order, self._order_revs, full), count)
            picked = list(filterfalse(full.__contains__, ids)) if full else list(ids)
            revs = list(map(_REV, map(ready.__getitem__, picked)))
        return Pick(picked, revs, count)

    def _drop(self, agent_id: str) -> None:
        self._loaded.pop(agent_id, None)
        if self._ready.pop(agent_id, None) is not None:
            at = bisect.bisect_left(self._order, agent_id)
            del self._order[at]
            del self._order_revs[at]
        self._pending.discard(agent_id)
        known = self._skills.pop(agent_id, None)
        if known is not None:
            for name in known[1]:
                self._by_skill[name].discard(agent_id)


def _leave_out(
    ids: list[str], revs: list[str], left_out: AbstractSet[str]
) -> tuple[list[str], list[str]]:
    """Copies of ``ids`` (sorted, distinct) and their ``revs`` without the agents of
    ``left_out`` (few): each found by bisection, the rest copied as the runs between them."""
    places = []
    for agent_id in left_out:
        at = bisect.bisect_left(ids, agent_id)
        if at < len(ids) and ids[at] == agent_id:
            places.append(at)
    if not places:
        return list(ids), list(revs)
    runs = list(pairwise([-1, *sorted(places), len(ids)]))
    return (
        list(chain.from_iterable(ids[start + 1 : stop] for start, stop in runs)),
        list(chain.from_iterable(revs[start + 1 : stop] for start, stop in runs)),
    )
