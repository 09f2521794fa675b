"""Memos of values decoded from stored texts, bounded by the texts' size.

A stored agent profile or policy is immutable text: decoding the same text again gives an
equal value, so readers share one. Every write is a new text, though, and a memo bounded by
its count of entries grows with the texts' length (2,000 updates of a 260 KB profile held
1 GB): these memos drop their oldest entries past a budget in bytes, counting each entry as
its text's length plus ``ENTRY_OVERHEAD`` for the decoded objects. Oldest first, not least
recently used: an old text is one the store has written over since, and a hit then stays
one C-level dictionary lookup (the routing reads these memos on every Assign).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")

ENTRY_OVERHEAD = 1024
"""Bytes counted per entry on top of its text (the decoded objects, the key)."""


class TextMemo(Generic[V]):
    """``decode(text, *rest)`` memoised on its arguments, at most ``max_bytes`` kept.

    Thread-safe: a hit is one dictionary lookup; entries are added and dropped under a
    lock. Two threads missing the same entry may both decode it (equal values)."""

    __slots__ = ("_decode", "_entries", "_lock", "_max_bytes", "_size")

    def __init__(self, decode: Callable[..., V], max_bytes: int) -> None:
        self._decode = decode
        self._max_bytes = max_bytes
        self._entries: dict[tuple[Hashable, ...], tuple[V, int]] = {}
        self._size = 0
        self._lock = threading.Lock()

    def __call__(self, text: str, *rest: Hashable) -> V:
        """The decoded value of ``text`` (and ``rest``), from the memo or decoded now."""
        key = (text, *rest)
        hit = self._entries.get(key)
        if hit is not None:
            return hit[0]
        value = self._decode(text, *rest)
        cost = len(text) + ENTRY_OVERHEAD
        if cost <= self._max_bytes:  # else larger than the whole memo: not kept
            with self._lock:
                entries = self._entries
                if key not in entries:
                    entries[key] = (value, cost)
                    self._size += cost
                    while self._size > self._max_bytes:  # the oldest first
                        self._size -= entries.pop(next(iter(entries)))[1]
        return value

    @property
    def size(self) -> int:
        """Bytes counted for the entries kept."""
        return self._size

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._entries.clear()
            self._size = 0
