"""The history mirror: what a read from its last score adds, drops, or refuses."""

from __future__ import annotations

from router.domain import Channel
from router.history_mirror import HistoryMirror, HistoryMirrors
from router.store import HistoryEntry


def decode(member: str, score: float) -> HistoryEntry:
    """``<n>|<kind>``: a stand-in for ``history_from_member``."""
    n, kind = member.split("|")
    return HistoryEntry(kind, Channel.CHAT, int(score), 0, f"c{n}")


def zset(*entries: tuple[int, int]) -> list[tuple[str, float]]:
    """Members ``<n>|answered`` at scores, in ZSET order (score, then member)."""
    return sorted(((f"{n:03d}|answered", float(at)) for n, at in entries), key=lambda m: m[::-1])


def ids(entries: list[HistoryEntry]) -> list[str]:
    return [entry.call_id for entry in entries]


def read_from_last(mirror: HistoryMirror, members: list[tuple[str, float]]) -> bool:
    """Apply what Redis holding ``members`` answers a read from ``mirror.last``."""
    last = mirror.last
    assert last is not None
    oldest = members[0][1] if members else None
    below = sum(1 for _, score in members if score < last)
    return mirror.extend(oldest, below, [m for m in members if m[1] >= last], decode)


def test_a_read_adds_what_was_written_since_even_at_the_same_time() -> None:
    """Entries written after the last read, including more at its last score, are added
    once; the ones held are not added again."""
    mirror = HistoryMirror()
    mirror.reset(zset((1, 100), (2, 200), (3, 200)), decode)
    assert mirror.last == 200
    assert read_from_last(mirror, zset((1, 100), (2, 200), (3, 200), (4, 200), (5, 300)))
    assert ids(mirror.since(0)) == ["c001", "c002", "c003", "c004", "c005"]
    assert read_from_last(mirror, zset((1, 100), (2, 200), (3, 200), (4, 200), (5, 300)))
    assert len(mirror) == 5
    assert ids(mirror.since(200)) == ["c002", "c003", "c004", "c005"]


def test_entries_the_writers_trimmed_are_dropped() -> None:
    """Redis trimmed whole scores below its oldest member: the mirror drops them too, also
    when every entry it held is gone, and when the history is empty."""
    mirror = HistoryMirror()
    mirror.reset(zset((1, 100), (2, 200), (3, 300)), decode)
    assert read_from_last(mirror, zset((2, 200), (3, 300), (4, 400)))
    assert ids(mirror.since(0)) == ["c002", "c003", "c004"]
    assert read_from_last(mirror, zset((5, 500)))
    assert ids(mirror.since(0)) == ["c005"]
    assert read_from_last(mirror, [])
    assert (len(mirror), mirror.last) == (0, None)


def test_a_history_that_disagrees_is_refused() -> None:
    """An entry written below the last score (a clock stepped back) or a history replaced
    (a flush, a failover) shows as another count below it, or as entries held at the last
    score missing: ``extend`` refuses, changing nothing."""
    mirror = HistoryMirror()
    mirror.reset(zset((1, 100), (2, 200), (3, 300)), decode)
    assert not read_from_last(mirror, zset((1, 100), (2, 200), (9, 250), (3, 300)))
    assert not read_from_last(mirror, zset((7, 50), (8, 60), (9, 70), (3, 300)))
    assert not mirror.extend(None, 0, zset((4, 400)), decode)
    assert ids(mirror.since(0)) == ["c001", "c002", "c003"]
    assert mirror.last == 300
    alone = HistoryMirror()  # rewritten within the millisecond of its last read
    alone.reset(zset((1, 200)), decode)
    assert not read_from_last(alone, zset((5, 200), (6, 200)))
    assert ids(alone.since(0)) == ["c001"]


def test_the_mirrors_keep_the_most_recently_read_tenants() -> None:
    """Past the entry budget the least recently read tenants' mirrors go; past the tenant
    budget too; a tenant whose history alone is over the budget is not kept."""
    mirrors = HistoryMirrors(entries_kept=4, tenants_kept=2)
    for tenant, count in (("a", 2), ("b", 2), ("c", 1)):
        mirrors.get(tenant).reset(zset(*((n, n) for n in range(count))), decode)
        mirrors.trim()
    assert len(mirrors.get("b")) == 2  # kept, and now the most recent
    assert len(mirrors.get("a")) == 0  # dropped: a new, empty mirror
    big = mirrors.get("big")
    big.reset(zset(*((n, n) for n in range(10))), decode)
    mirrors.trim()
    assert len(mirrors.get("big")) == 0  # read in full again next time
    assert len(mirrors.get("b")) == 0
