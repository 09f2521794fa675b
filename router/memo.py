"""Memos of values decoded from stored texts, bounded by the texts' size.

A stored agent profile or policy is immutable text: decoding the same text again gives an
equal value, so readers share one. Every write is a new text, though, and a memo bounded by
its count of entries grows with the texts' length (2,000 updates of a 260 KB profile held
1 GB): these memos drop the least recently used entries past a budget in bytes, counting
each entry as its text's length plus ``ENTRY_OVERHEAD`` for the decoded objects.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Hashable
from operator import itemgetter
from typing import Generic, TypeVar

from cachetools import LRUCache

V = TypeVar("V")

ENTRY_OVERHEAD = 1024
"""Bytes counted per entry on top of its text (the decoded objects, the key)."""


class TextMemo(Generic[V]):
    """``decode(text, *rest)`` memoised on its arguments, at most ``max_bytes`` kept.

    Thread-safe; two threads missing the same entry may both decode it (equal values)."""

    __slots__ = ("_cache", "_decode", "_lock")

    def __init__(self, decode: Callable[..., V], max_bytes: int) -> None:
        self._decode = decode
        self._cache: LRUCache[tuple[Hashable, ...], tuple[V, int]] = LRUCache(
            max_bytes, getsizeof=itemgetter(1)
        )
        self._lock = threading.Lock()

    def __call__(self, text: str, *rest: Hashable) -> V:
        """The decoded value of ``text`` (and ``rest``), from the memo or decoded now."""
        key = (text, *rest)
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None:
            return hit[0]
        value = self._decode(text, *rest)
        with self._lock, contextlib.suppress(ValueError):  # larger than the whole memo
            self._cache[key] = (value, len(text) + ENTRY_OVERHEAD)
        return value

    @property
    def size(self) -> int:
        """Bytes counted for the entries kept."""
        return int(self._cache.currsize)

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._cache.clear()
