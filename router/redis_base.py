"""The plumbing the parts of ``RedisStore`` share, declared without importing the driver.

``RedisStore`` (``router.redis_store``, the one module that imports ``redis``) implements the
abstract methods; ``redis_agents``, ``redis_routing`` and ``redis_calls`` hold the store
methods as mixins on top of them.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, cast

from router import codec
from router import store_common as rules
from router.domain import AgentSnapshot, Policy
from router.index_mirror import IndexMirror
from router.memo import TextMemo
from router.redis_cache import AgentCache, PartiesCache, found_map
from router.redis_schema import Keys, agent_from_hash, pairs, text, texts
from router.store import KnownPolicy


def add_agent_reads(pipe: Any, k: Keys, ids: Sequence[str], min_end: int) -> None:
    """Queue, on ``pipe``, each agent's hash and its work spans ending at ``min_end`` or later."""
    for agent_id in ids:
        pipe.hgetall(k.agent(agent_id))
        pipe.zrangebyscore(k.work(agent_id), min_end, "+inf")


def agents_from_replies(replies: Sequence[Any], now: int, min_end: int) -> list[AgentSnapshot]:
    """The agents read by ``add_agent_reads`` that still exist, as of ``now``."""
    return [
        agent_from_hash(texts(fields), [text(m) for m in spans], min_end, now)
        for fields, spans in zip(replies[::2], replies[1::2], strict=True)
        if fields
    ]


def aging_ms(policy: Policy | None) -> int:
    """What one priority level is worth in the queue score, in ms."""
    return (policy or Policy()).aging_s_per_priority * 1000


POLICY_MEMO_BYTES = 16 * 2**20
"""Decoded policies kept (``_decoded``, the oldest dropped first): texts and their
``memo.ENTRY_OVERHEAD``, 16 MiB (some 5,000 tenants' policies of a typical size)."""
_TENANTS_KEPT = 65_536
"""Tenants whose last read policy a store keeps (``known_policy``); past it, it starts over."""


def _decode(stored: str) -> KnownPolicy:
    """A stored policy JSON ("": none stored) decoded, tagged with the SHA-1 of that text (a
    ``Policy`` is immutable, so every reader may share one)."""
    policy = codec.decode_policy(stored) if stored else Policy()
    return KnownPolicy(policy, hashlib.sha1(stored.encode()).hexdigest())


_decoded: TextMemo[KnownPolicy] = TextMemo(_decode, POLICY_MEMO_BYTES)
"""``_decode`` memoised."""


class RedisBase(ABC):
    """Scripts, transactions and time, as the store methods use them."""

    _events_maxlen: int
    _record_ttl_ms: int
    """Approximate cap of the event stream (``MAXLEN ~``)."""
    _tombstones_kept_us: int
    """How long (in revs: µs of Redis time) a deleted agent stays in ``idx:revs``."""
    _agent_cache: AgentCache
    """Decoded agents by ``rev`` (``load_candidates``)."""
    _known_policies: dict[str, KnownPolicy]
    """Tenant -> the policy this replica read last (``known_policy``)."""
    _parties_seen: PartiesCache
    """Agent and call of the assignments this replica committed or read."""
    _mirrors: dict[str, IndexMirror]
    """Tenant -> this replica's mirror of its routing index (``load_candidates``)."""
    _waits_built: dict[str, float]
    """Tenant -> ``time.monotonic()`` of this replica's last ``build_waits``."""

    @abstractmethod
    def _run(self, name: str, keys: Sequence[str], args: Sequence[str | int]) -> list[Any]:
        """Run script ``name`` (store time or the test clock goes in as ``ARGV[1]``)."""

    @abstractmethod
    def _multi(
        self, k: Keys, build: Callable[[Any], object], *, now: bool = False
    ) -> tuple[int, list[Any]]:
        """One ``MULTI`` of the commands ``build`` queues on a pipeline, all on keys of ``k``
        (on a cluster it runs on the primary of that tenant's slot): (store time read in the
        same transaction when ``now``, else 0; the replies)."""

    @abstractmethod
    def _hmget(self, key: str, *names: str) -> list[str | None]:
        """``HMGET`` as text."""

    @abstractmethod
    def _register_tenant(self, tenant: str) -> None:
        """Add ``tenant`` to the global tenants set (outside any script)."""

    def _policy(self, raw: object, tenant: str) -> Policy:
        """``tenant``'s stored policy JSON (``None`` or "": none stored) decoded, memoised by
        its text (a ``Policy`` is immutable, so every reader may share one); it becomes the
        tenant's ``known_policy``, tagged with the SHA-1 of that text (what
        ``finish_assignment.lua`` compares)."""
        known = _decoded("" if raw is None else text(raw))
        if len(self._known_policies) >= _TENANTS_KEPT and tenant not in self._known_policies:
            self._known_policies.clear()
        self._known_policies[tenant] = known
        return known.policy

    def known_policy(self, tenant: str, *, fresh: bool = False) -> KnownPolicy:
        """``Store.known_policy``: the policy this replica last read for ``tenant`` (by any
        read that returns it), or ``get_policy`` now."""
        known = None if fresh else self._known_policies.get(tenant)
        if known is None:
            self.get_policy(tenant)
            known = self._known_policies[tenant]
        return known

    @abstractmethod
    def get_policy(self, tenant: str) -> Policy:
        """``Store.get_policy``."""

    def _cached_agents(
        self,
        tenant: str,
        ids: Sequence[str],
        revs: Sequence[str],
        *,
        now: int,
        window: int,
        also: Sequence[str] = (),
        ordered: bool = False,
    ) -> tuple[list[AgentSnapshot], list[Any]]:
        """The agents ``ids`` at ``now`` (spans of the last ``window`` ms), sorted by id:
        those whose rev in ``revs`` (read at ``now``) is cached come from the agent cache,
        the others are read in one ``MULTI`` and cached; agents deleted since are left out.
        The same ``MULTI`` also reads the hashes ``also`` (none: no round trip when every
        agent is cached); their replies come second. ``ordered``: ``ids`` are in id order
        already (the routing index's candidates), so they are not checked."""
        k, cache = Keys(tenant), self._agent_cache
        listed, missing = cache.get_listed(tenant, ids, revs, now, window, ordered=ordered)
        if not missing and not also and ordered:  # all served, in ``ids`` order
            return cast(list[AgentSnapshot], listed), []
        found = found_map(ids, listed)
        if not missing and not also:
            names = list(found)
            if names == sorted(names):  # ids in id order, all served: no second pass
                return list(found.values()), []
            return [found[agent_id] for agent_id in sorted(found)], []

        def read(pipe: Any) -> None:
            add_agent_reads(pipe, k, missing, now - window)
            for key in also:
                pipe.hgetall(key)

        _, replies = self._multi(k, read)
        split = 2 * len(missing)
        for fields, spans in zip(replies[:split:2], replies[1:split:2], strict=True):
            if fields:
                agent = cache.put(tenant, texts(fields), [text(m) for m in spans], now, window)
                found[agent.agent_id] = agent
        if ordered or list(ids) == sorted(ids):  # the agents in ``ids`` order, deleted ones out
            return list(filter(None, map(found.get, ids))), replies[split:]
        return [found[agent_id] for agent_id in sorted(found)], replies[split:]

    def _cache_window(self, tenant: str) -> int:
        """The occupancy window (ms) this replica's agent cache serves ``tenant``'s reads
        for, -1 if none yet: a write script returns the agent it changed for that window
        (``agent_after`` in ``_lib.lua``) and ``_cache_agent`` keeps it, so the next read
        needs no round trip for it."""
        window = self._agent_cache.window(tenant)
        return -1 if window is None else window

    def _cache_agent(self, tenant: str, after: Sequence[Any], now: int, window: int) -> None:
        """Cache the agent a write script returned (``[hash, spans]`` at ``now`` for the
        ``window`` from ``_cache_window``; nothing when that was -1 or the agent is gone)."""
        if window < 0 or len(after) != 2 or not after[0]:
            return
        flat, spans = after
        self._agent_cache.put(tenant, pairs(flat), spans, now, window)  # decoded replies

    def _read_agents(self, k: Keys, ids: Sequence[str]) -> tuple[int, list[AgentSnapshot]]:
        """Store time and the agents ``ids`` that still exist, with the spans of the last
        24 h, in one ``MULTI`` round trip."""
        now, replies = self._multi(
            k,
            lambda pipe: add_agent_reads(pipe, k, ids, 0),  # trimmed below, as of `now`
            now=True,
        )
        return now, agents_from_replies(replies, now, now - rules.WORK_RETENTION_MS)
