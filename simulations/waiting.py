"""The simulated queue: waiting calls in the store's order, grouped by what they need.

The store keeps one queue per tenant ordered by ``router.ordering.order_key`` (age plus
priority); the dispatcher reads it in that order and computes each call's position from it.
``WaitingQueue.order`` is that list. Calls are also grouped into *buckets* of identical hard
requirements (channel, required skills and levels, language, team, region rule), each in
store order, so a dispatch pass only looks at the buckets some free agent could serve and,
inside them, at the first few calls (``simulations.simulator`` explains why that is the same
decision).
"""

from __future__ import annotations

import bisect
import dataclasses

from router.domain import Call, Channel, Policy, SkillRequirement
from router.ordering import order_key
from simulations.workforce import NeedKey

BucketKey = tuple[Channel, tuple[SkillRequirement, ...], str, str, str, tuple[str, ...]]
"""(channel, required skills, language, team, required region or "", preferred skills).
Preferred skills are no hard rule; they are in the key so that every call of a bucket ranks
agents alike under best-skill routing."""


class Waiting:
    """One waiting call."""

    __slots__ = ("at_risk", "bucket", "call", "index", "key")

    def __init__(self, index: int, call: Call, key: float, bucket: Bucket) -> None:
        self.index = index
        self.call = call
        self.key = key
        self.bucket = bucket
        self.at_risk = False
        """Marked SLA-at-risk (priority boosted once, widened one step in every solve)."""


class Bucket:
    """Waiting calls with identical hard requirements, in store order."""

    __slots__ = ("channel", "items", "key", "need", "uid")

    def __init__(self, key: BucketKey, uid: int) -> None:
        self.key = key
        self.uid = uid
        """Stable small id of the key (survives the bucket emptying and coming back)."""
        self.channel = key[0]
        self.need: NeedKey = (key[0], tuple(sorted(r.skill for r in key[1])), key[2])
        self.items: list[tuple[float, str, Waiting]] = []


def bucket_key(call: Call) -> BucketKey:
    """The hard requirements of ``call``."""
    region = call.region.lower() if call.region_required and call.region else ""
    return (
        call.channel,
        call.required_skills,
        call.language.lower(),
        call.team,
        region,
        call.preferred_skills,
    )


class WaitingQueue:
    """All waiting calls (see the module docstring)."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.buckets: dict[BucketKey, Bucket] = {}
        self.order: list[tuple[float, str]] = []
        self.by_index: dict[int, Waiting] = {}
        self._uids: dict[BucketKey, int] = {}

    def __len__(self) -> int:
        return len(self.by_index)

    def add(self, index: int, call: Call) -> Waiting:
        """Queue ``call`` (the call with trace index ``index``)."""
        key = bucket_key(call)
        bucket = self.buckets.get(key)
        if bucket is None:
            uid = self._uids.setdefault(key, len(self._uids))
            bucket = self.buckets[key] = Bucket(key, uid)
        waiting = Waiting(index, call, order_key(call, self.policy), bucket)
        bisect.insort(bucket.items, (waiting.key, call.call_id, waiting))
        bisect.insort(self.order, (waiting.key, call.call_id))
        self.by_index[index] = waiting
        return waiting

    def remove(self, waiting: Waiting) -> None:
        """Take ``waiting`` out of the queue (placed or abandoned)."""
        del self.by_index[waiting.index]
        self._unlink(waiting)
        if not waiting.bucket.items:
            del self.buckets[waiting.bucket.key]

    def reprioritise(self, waiting: Waiting, priority: int) -> None:
        """Give ``waiting`` a new priority (SLA escalation); its order key moves."""
        self._unlink(waiting)
        waiting.call = dataclasses.replace(waiting.call, priority=priority)
        waiting.key = order_key(waiting.call, self.policy)
        bisect.insort(waiting.bucket.items, (waiting.key, waiting.call.call_id, waiting))
        bisect.insort(self.order, (waiting.key, waiting.call.call_id))

    def position(self, waiting: Waiting) -> int:
        """1-based place of ``waiting`` in store order."""
        return bisect.bisect_left(self.order, (waiting.key, waiting.call.call_id)) + 1

    def _unlink(self, waiting: Waiting) -> None:
        items = waiting.bucket.items
        del items[bisect.bisect_left(items, (waiting.key, waiting.call.call_id))]
        del self.order[bisect.bisect_left(self.order, (waiting.key, waiting.call.call_id))]
