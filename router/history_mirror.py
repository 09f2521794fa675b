"""A replica's mirror of tenants' history (``Keys.history``), read forward from where it left.

The history ZSET holds a tenant's answered, abandoned, expired and completed entries of the
last two hours, scored by time, each member ``<padded event id>|...`` (so members at one
score sort in the order they were written). Writers only add entries at the store's
current time and trim whole scores below ``now - 2 h``. So a replica that holds the entries
up to score ``last`` needs, on its next read, only:

- the oldest member left (``ZRANGE 0 0``): its entries scored below it were trimmed;
- how many members score below ``last`` (``ZCOUNT -inf (last``): equal to what it holds
  below ``last``, nothing it missed was written there (a clock stepped back, a flush or a
  failover would show as a difference, and the mirror starts over with a full read);
- the members scored ``last`` or later (``ZRANGEBYSCORE last +inf``): those at ``last`` it
  already holds (by member) are skipped, the rest are new; one it held at ``last`` missing
  means the history was rewritten (a full read then).

At 10 answered calls a second a tenant's history is about 144,000 entries, half a second to
read and decode; with the mirror a GetStats reads what was written since the last one. The
mirrors keep at most ``ENTRIES_KEPT`` entries in all, dropping the least recently read
tenants' first; a tenant whose history alone is larger is not kept (it is read in full each
time).

Pure: no driver (the store does the reads, under the tenant's ``lock``).
"""

from __future__ import annotations

import bisect
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence

from router.store import HistoryEntry

ENTRIES_KEPT = 400_000
"""Entries the mirrors of one store hold in all: an entry takes about 230 bytes with
32-character call ids (the decoded entry, its numbers and call id), so about 90 MB; a
tenant answering 10 calls a second has about 144,000."""
TENANTS_KEPT = 4_096
"""Tenants mirrored at once."""

Decode = Callable[[str, float], HistoryEntry]
"""Turns a ZSET member and its score into an entry (``redis_schema.history_from_member``)."""


class HistoryMirror:
    """One tenant's history as of its last read: entries in ZSET order."""

    def __init__(self) -> None:
        """Empty: the first read is a full one."""
        self.lock = threading.Lock()
        """Held by the store through a read and its ``extend`` or ``reset``."""
        self._entries: list[HistoryEntry] = []
        self._times: list[int] = []
        """Each entry's score (time), for bisection."""
        self.read = False
        """Whether it holds a read at all (else the next read is a full one)."""
        self.last: int | None = None
        """Score of the newest member held (None: none held)."""
        self._at_last: set[str] = set()
        """The members scored ``last``, held."""

    def __len__(self) -> int:
        """Entries held."""
        return len(self._entries)

    def reset(self, members: Sequence[tuple[str, float]], decode: Decode) -> None:
        """Hold exactly ``members`` (a full read, in ZSET order)."""
        self._entries, self._times, self.last, self._at_last = [], [], None, set()
        self.read = True
        self._append(members, decode)

    def extend(
        self,
        oldest: float | None,
        below: int,
        members: Sequence[tuple[str, float]],
        decode: Decode,
    ) -> bool:
        """Apply a read made from ``last``: ``oldest`` the score of the oldest member left
        (None: the ZSET is empty), ``below`` how many members score below ``last``,
        ``members`` those scored ``last`` or later. False, changing nothing, when Redis
        disagrees with what is held (read in full then)."""
        if oldest is None:
            if members:
                return False
            self.reset((), decode)
            return True
        cut = bisect.bisect_left(self._times, oldest)
        held_below = bisect.bisect_left(self._times, self.last) if self.last is not None else 0
        if held_below - min(cut, held_below) != below:
            return False
        at_last = {m for m, s in members if s == self.last}
        if self.last is not None and oldest <= self.last and not self._at_last <= at_last:
            return False  # what it held at ``last`` is gone: rewritten since
        del self._entries[:cut], self._times[:cut]
        if not self._entries:
            self.last, self._at_last = None, set()
        self._append(
            [(m, s) for m, s in members if m not in at_last or m not in self._at_last], decode
        )
        return True

    def since(self, since_ms: int) -> list[HistoryEntry]:
        """The entries scored ``since_ms`` or later, in order."""
        return self._entries[bisect.bisect_left(self._times, since_ms) :]

    def _append(self, members: Sequence[tuple[str, float]], decode: Decode) -> None:
        for member, score in members:
            entry = decode(member, score)
            self._entries.append(entry)
            self._times.append(entry.at_ms)
            if entry.at_ms != self.last:
                self.last, self._at_last = entry.at_ms, set()
            self._at_last.add(member)


class HistoryMirrors:
    """The mirrors of one store's tenants, at most ``ENTRIES_KEPT`` entries in all."""

    def __init__(self, entries_kept: int = ENTRIES_KEPT, tenants_kept: int = TENANTS_KEPT) -> None:
        """No tenant mirrored yet."""
        self._lock = threading.Lock()
        self._mirrors: OrderedDict[str, HistoryMirror] = OrderedDict()
        self._kept = entries_kept
        self._tenants = tenants_kept

    def get(self, tenant: str) -> HistoryMirror:
        """``tenant``'s mirror (a new, empty one the first time), now the most recent."""
        with self._lock:
            mirror = self._mirrors.get(tenant)
            if mirror is None:
                mirror = self._mirrors[tenant] = HistoryMirror()
            self._mirrors.move_to_end(tenant)
            return mirror

    def trim(self) -> None:
        """Drop the least recently read tenants' mirrors while more than ``entries_kept``
        entries or ``tenants_kept`` tenants are held (the most recent one too, if it alone
        holds more)."""
        with self._lock:
            held = sum(len(mirror) for mirror in self._mirrors.values())
            while self._mirrors and (held > self._kept or len(self._mirrors) > self._tenants):
                _, dropped = self._mirrors.popitem(last=False)
                held -= len(dropped)
