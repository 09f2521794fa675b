"""``router.redis_cache.AgentCache``: the per-tenant view answers as the per-agent checks do."""

from __future__ import annotations

import random
import sys
import threading
from dataclasses import replace

import pytest

from router import codec
from router.domain import AgentProfile, AgentSnapshot
from router.redis_cache import AgentCache, found_map
from router.redis_schema import ACTIVE_PREFIX, agent_from_hash

T = "acme"
IDS = [f"a{i}" for i in range(8)]


def get_many(
    cache: AgentCache, ids: list[str], revs: list[str], now: int, window: int
) -> tuple[dict[str, AgentSnapshot], list[str]]:
    """``get_listed``'s answer for tenant ``T`` as a map by id (``found_map``), and the ids
    to read."""
    listed, missing = cache.get_listed(T, ids, revs, now, window)
    return found_map(ids, listed), missing


def _fields(agent_id: str, rev: int, rng: random.Random, now: int) -> dict[str, str]:
    """An agent hash at ``rev``: maybe a chat in progress, maybe one in wrap-up."""
    fields = {
        "profile": codec.encode_profile(AgentProfile(agent_id)),
        "version": "1",
        "presence": "available",
        "heartbeat": str(now - rng.randrange(0, 5_000)),
        "seq": str(rev),
        "rev": str(rev),
    }
    if rng.random() < 0.5:
        start = now - rng.randrange(1, 60_000)
        wrap = 0 if rng.random() < 0.5 else now + rng.randrange(-2_000, 4_000)
        fields[f"{ACTIVE_PREFIX}w{rev}"] = f"chat|25|{start}|0|{wrap}"
    return fields


def _members(rng: random.Random, now: int) -> list[str]:
    """Finished spans, some about to leave a short window."""
    spans = []
    for k in range(rng.randrange(0, 3)):
        end = now - rng.randrange(0, 9_000)
        spans.append(f"s{k}|{end - 1_000}|{end}|25")
    return spans


def _next_read(rng: random.Random, team: list[str], last: set[str], ordered: bool) -> set[str]:
    """The agents of a read: as the routing index asks (``ordered``), mostly the last read's
    with a few in or out; else any of the team."""
    if ordered and rng.random() < 0.7:
        return (last ^ set(rng.sample(team, rng.randrange(0, 4)))) or {team[0]}
    return set(rng.sample(team, rng.randrange(1, len(team) + 1)))


@pytest.mark.parametrize(
    ("team", "ordered", "seeds", "steps"),
    [(8, False, 40, 300), (8, True, 40, 300), (700, True, 3, 150)],
)
def test_the_view_serves_exact_agents_and_misses_nothing_the_checks_serve(
    team: int, ordered: bool, seeds: int, steps: int
) -> None:
    """Random puts (at moving, sometimes out-of-order times), heartbeats and reads (now and
    then from further back than ``REORDER_MS``) with current or stale revs and two windows.
    Every agent ``get_listed`` serves, in the place of its id, is exactly the agent decoded
    from the hash of the asked rev at the asked time (heartbeats patched in); it serves every
    agent that a twin cache taking only the per-agent path serves, and names each other one
    as missing (``None`` in its place), in the order asked. ``ordered``: the reads are the
    routing index's (sorted ids), mostly the last read's ids with a few in or out, which the
    view answers from its memo of the last read; 700 agents take runs of several hundred."""
    team_ids = IDS if team == len(IDS) else [f"a{i:04d}" for i in range(team)]
    for seed in range(seeds):
        rng = random.Random(seed)
        cache, twin = AgentCache(), AgentCache()
        revs = dict.fromkeys(team_ids, 0)
        stored: dict[tuple[str, str], tuple[dict[str, str], list[str], int, int]] = {}
        beats: dict[str, int] = {}
        now = 1_000_000
        beat_rev = 0
        last: set[str] = set(team_ids)
        for agent_id in team_ids if team > len(IDS) else ():  # a team this size starts cached
            revs[agent_id] += 1
            fields = _fields(agent_id, revs[agent_id], rng, now)
            stored[(agent_id, fields["rev"])] = (fields, [], now, 10_000)
            for c in (cache, twin):
                c.put(T, fields, [], now, 10_000)
        for _ in range(steps):
            now += rng.choice((0, 1, 5, 300, 700, 2_000))
            window = rng.choice((10_000, 10_000, 10_000, 4_000))
            op = rng.random()
            if op < 0.3:
                agent_id = rng.choice(team_ids)
                revs[agent_id] += 1
                read_at = now - rng.choice((0, 0, 0, 3))  # a request still in flight
                fields = _fields(agent_id, revs[agent_id], rng, read_at)
                members = _members(rng, read_at)
                stored[(agent_id, fields["rev"])] = (fields, members, read_at, window)
                for c in (cache, twin):
                    c.put(T, fields, members, read_at, window)
            elif op < 0.4:
                beat_rev += 1
                agent_id = rng.choice(team_ids)
                beats[agent_id] = now
                for c in (cache, twin):
                    c.beat(T, [(agent_id, 10**9 + beat_rev, now)])
            else:
                last = _next_read(rng, team_ids, last, ordered)
                ids = sorted(last)
                asked = [
                    str(revs[a] - (1 if revs[a] > 1 and rng.random() < 0.1 else 0)) for a in ids
                ]
                # now and then a request from before the reorder allowance (1 s)
                at = now - rng.choice((0, 0, 0, 0, 2, rng.randrange(500, 2_500)))
                listed, missing = cache.get_listed(T, ids, asked, at, window, ordered=ordered)
                assert [a for a, agent in zip(ids, listed, strict=True) if agent is None] == (
                    missing
                ), seed
                assert all(a is None or a.agent_id == i for a, i in zip(listed, ids, strict=True))
                found = found_map(ids, listed)
                expected, _ = twin._get_each(T, ids, asked, at, window)
                assert expected.keys() <= found.keys(), seed
                assert [a for a in ids if a not in found] == missing, seed
                assert list(found) == [a for a in ids if a in found], seed  # in ids order
                for agent_id, rev in zip(ids, asked, strict=True):
                    if agent_id not in found:
                        continue
                    fields, members, read_at, read_window = stored[(agent_id, rev)]
                    assert at - window >= read_at - read_window, seed  # its spans were read
                    truth = agent_from_hash(fields, members, at - window, at)
                    heartbeat = max(truth.heartbeat_ms, beats.get(agent_id, 0))
                    assert found[agent_id] == replace(truth, heartbeat_ms=heartbeat), seed


def test_a_full_hit_returns_every_agent_in_order() -> None:
    """Once the view is built, a read of unchanged agents serves all of them."""
    cache, rng = AgentCache(), random.Random(1)
    now = 5_000_000
    for i, agent_id in enumerate(IDS):
        cache.put(T, _fields(agent_id, i + 1, rng, now), [], now, 60_000)
    revs = [str(i + 1) for i in range(len(IDS))]
    first, _ = get_many(cache, IDS, revs, now + 10, 60_000)  # builds the view
    found, missing = get_many(cache, IDS, revs, now + 20, 60_000)
    assert missing == []
    assert list(found) == IDS
    assert [a.agent_id for a in found.values()] == IDS
    assert first.keys() == found.keys()


def _idle(agent_id: str, rev: int, now: int) -> dict[str, str]:
    """An agent hash at ``rev`` with no work."""
    return {
        "profile": codec.encode_profile(AgentProfile(agent_id)),
        "version": "1",
        "presence": "available",
        "heartbeat": str(now),
        "seq": str(rev),
        "rev": str(rev),
    }


def test_reads_after_the_first_take_the_view_not_the_per_agent_checks() -> None:
    """The per-agent path runs only for what the view cannot serve: after a read builds
    it, reads of unchanged agents skip it, also once another agent's wrap-up has ended
    (that agent alone is checked, once, when next asked for), and an agent read again
    since it changed is served by the view."""
    cache = AgentCache()
    now = 5_000_000
    for i, agent_id in enumerate(IDS):
        cache.put(T, _idle(agent_id, i + 1, now), [], now, 60_000)
    wrapping = _idle("a9", 1, now)
    wrapping[f"{ACTIVE_PREFIX}w"] = f"chat|25|{now - 5_000}|0|{now + 1_000}"
    cache.put(T, wrapping, [], now, 60_000)
    checked: list[list[str]] = []
    per_agent = cache._get_each

    def counting(tenant: str, ids: list[str], *rest: int | list[str]) -> object:
        checked.append(list(ids))
        return per_agent(tenant, ids, *rest)  # type: ignore[arg-type]

    cache._get_each = counting  # type: ignore[method-assign,assignment]
    revs = [str(i + 1) for i in range(len(IDS))]
    get_many(cache, [*IDS, "a9"], [*revs, "1"], now + 10, 60_000)  # builds the view
    get_many(cache, IDS, revs, now + 20, 60_000)
    get_many(cache, IDS, revs, now + 2_000, 60_000)  # a9's wrap-up has ended
    get_many(cache, IDS, revs, now + 2_010, 60_000)
    assert checked == [[*IDS, "a9"]]
    found, _ = get_many(cache, [*IDS, "a9"], [*revs, "1"], now + 2_020, 60_000)
    assert found["a9"].active == ()  # rebuilt at the later time: the wrap-up is over
    get_many(cache, [*IDS, "a9"], [*revs, "1"], now + 2_030, 60_000)
    assert checked[1:] == [["a9"]]
    cache.put(T, _idle("a3", 40, now + 2_030), [], now + 2_030, 60_000)
    revs[3] = "40"
    found, missing = get_many(cache, IDS, revs, now + 2_040, 60_000)
    assert (missing, len(found), len(checked)) == ([], len(IDS), 2)


def test_a_full_heartbeat_read_forgets_the_deleted_agents_beats() -> None:
    """Heartbeats remembered for agents missing from a full read of the log (deleted: a
    deletion takes them out) are forgotten, so they no longer patch an agent read under that
    id; heartbeats logged after the read are kept."""
    cache, rng, now = AgentCache(), random.Random(3), 1_000_000
    cache.beat(T, [("kept", 10**9 + 5, now), ("gone", 10**9 + 6, now), ("late", 10**9 + 9, now)])
    cache.forget_beats(T, kept={"kept"}, as_of=10**9 + 6)
    for agent_id, patched in (("kept", True), ("gone", False), ("late", True)):
        fields = {**_fields(agent_id, 10**9 + 1, rng, now), "heartbeat": "0"}
        read = cache.put(T, fields, [], now, 10_000)
        assert read.heartbeat_ms == (now if patched else 0), agent_id


def test_a_put_decodes_only_the_work_members_it_has_not_seen_for_that_agent() -> None:
    """After a write, an agent comes back with the finished spans read before plus a new one:
    those read before are the very spans already decoded, the new one is decoded, and the
    agent is exactly the one decoded from the hash afresh."""
    cache = AgentCache()
    now, window = 1_000_000, 3_600_000
    fields = {
        "profile": codec.encode_profile(AgentProfile("a1")),
        "version": "1",
        "presence": "available",
        "seq": "1",
        "rev": "1",
    }
    old = [f"x{k}|{now - 9_000 + k}|{now - 5_000 + k}|25" for k in range(3)]
    first = cache.put(T, fields, old, now, window)
    later, new = now + 10, f"x9|{now - 100}|{now}|25"
    again = cache.put(T, {**fields, "rev": "2"}, [*old, new], later, window)
    assert again == agent_from_hash({**fields, "rev": "2"}, [*old, new], later - window, later)
    reused = [span for span in again.recent if span in first.recent]
    assert len(reused) == 3
    assert all(any(span is seen for seen in first.recent) for span in reused)
    # The oldest span left the window and two more ended: the rest are still the same spans.
    last, newer = later + 10, [f"x7|{later - 50}|{later}|25", f"x8|{later - 20}|{later}|25"]
    members = [*old[1:], new, *newer]
    third = cache.put(T, {**fields, "rev": "3"}, members, last, window)
    assert third == agent_from_hash({**fields, "rev": "3"}, members, last - window, last)
    assert sum(any(span is seen for seen in again.recent) for span in third.recent) == 3
    # A span filed between older ones (members follow end times, not arrival): the agent is
    # still decoded exactly.
    between = f"x5|{now - 8_000}|{now - 4_500}|25"
    members = [old[1], between, old[2], new, *newer]
    fourth = cache.put(T, {**fields, "rev": "4"}, members, last, window)
    assert fourth == agent_from_hash({**fields, "rev": "4"}, members, last - window, last)
    # Another agent's spans are never taken for this one's, even with the same members.
    other = cache.put(
        T, {**fields, "profile": codec.encode_profile(AgentProfile("a2"))}, old, now, window
    )
    assert all(not any(span is seen for seen in first.recent) for span in other.recent)


def _named(agent_id: str, rev: int, now: int) -> dict[str, str]:
    """An idle agent hash at ``rev`` whose profile names the rev (``r<rev>``)."""
    return {
        "profile": codec.encode_profile(AgentProfile(agent_id, name=f"r{rev}")),
        "version": "1",
        "presence": "available",
        "heartbeat": str(now),
        "seq": str(rev),
        "rev": str(rev),
    }


def test_threads_sharing_the_cache_are_served_only_the_revs_they_ask_for() -> None:
    """Request threads share one cache: writers cache agents at new revs (as write scripts
    return them) while readers ask for the routing index's candidates (ordered, mostly the
    last ones) at the revs they saw. Every agent served, through the view's memo or not, is
    the one of the rev asked for, in the place of its id."""
    cache = AgentCache()
    team = [f"a{i:04d}" for i in range(300)]
    revs = dict.fromkeys(team, 1)
    clock = iter(range(5_000_000, 10**9))
    state = threading.Lock()
    for agent_id in team:
        cache.put(T, _named(agent_id, 1, 5_000_000), [], 5_000_000, 60_000)
    errors: list[str] = []

    def write(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(400):
            agent_id = rng.choice(team)
            with state:
                revs[agent_id] += 1
                rev, now = revs[agent_id], next(clock)
            cache.put(T, _named(agent_id, rev, now), [], now, 60_000)

    def read(seed: int) -> None:
        rng = random.Random(seed)
        left_out: set[str] = set()
        for _ in range(300):
            left_out ^= set(rng.sample(team, 2))
            ids = [a for a in team if a not in left_out]
            with state:
                asked, now = [str(revs[a]) for a in ids], next(clock)
            listed, _ = cache.get_listed(T, ids, asked, now, 60_000, ordered=True)
            for agent_id, rev, agent in zip(ids, asked, listed, strict=True):
                if agent is not None and (agent.agent_id, agent.profile.name) != (
                    agent_id,
                    f"r{rev}",
                ):
                    errors.append(f"{agent_id} at rev {rev}: served {agent.profile.name}")

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # interleave the threads finely
    try:
        threads = [threading.Thread(target=write, args=(k,)) for k in range(2)]
        threads += [threading.Thread(target=read, args=(10 + k,)) for k in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == []


def test_deleted_agents_are_forgotten_and_a_full_cache_drops_other_tenants_first() -> None:
    """A full read listing a tenant's agents drops the cached ones it does not list (they
    were deleted); a full cache drops other tenants, those cached first first, down to
    three quarters of its bound, and keeps the tenant being cached."""
    now = 5_000_000
    cache = AgentCache(max_entries=8)
    for agent_id in ("a1", "a2", "a3"):
        cache.put(T, _named(agent_id, 1, now), [], now, 60_000)
    cache.forget(T, {"a1", "a3"})
    assert len(cache) == 2
    assert cache.get(T, "a2", "1", now, 60_000) is None
    assert cache.get(T, "a1", "1", now, 60_000) is not None
    for n in range(3):
        cache.put("old", _named(f"o{n}", 1, now), [], now, 60_000)
    for n in range(4):  # the cache fills: "acme" (cached first) goes, "old" and "new" stay
        cache.put("new", _named(f"n{n}", 1, now), [], now, 60_000)
    assert cache.get(T, "a1", "1", now, 60_000) is None
    assert all(cache.get("old", f"o{n}", "1", now, 60_000) for n in range(3))
    assert all(cache.get("new", f"n{n}", "1", now, 60_000) for n in range(4))
    assert len(cache) == 7
