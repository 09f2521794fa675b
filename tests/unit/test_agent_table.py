"""``scoring.load.AgentTable`` and the vectorised formulas built on it, against the scalar ones.

Performance, idle and occupancy must be the very floats (bit for bit) of
``scoring.performance.score``, ``scoring.match.idle_value`` and ``scoring.load.occupancy``;
the memo must give a row only for the very snapshot object it was computed from.
"""

from __future__ import annotations

import dataclasses
import gc
import operator
import random
import sys
import threading

import numpy as np
import pytest

from router.domain import (
    Absence,
    AbsenceKind,
    ActiveWork,
    AgentProfile,
    AgentSnapshot,
    Channel,
    PerformanceStats,
    Policy,
    Presence,
    WorkSpan,
    frozen_map,
)
from scoring import load, performance
from scoring.load import (
    F_WEIGHT,
    F_WEIGHTED_SUM,
    I_ACTIVE,
    I_FREE_SINCE,
    I_UPDATED,
    AgentTable,
    occupancy,
)
from scoring.match import idle_array, idle_value
from tests.unit.factories import HOUR_MS, NOW

CHANNELS = (Channel.VOICE, Channel.CHAT, Channel.EMAIL)


def random_agent(rng: random.Random, index: int) -> AgentSnapshot:
    """An agent with random work in progress, finished spans, history and idle clock."""
    active = tuple(
        ActiveWork(
            f"w{index}-{n}",
            rng.choice(CHANNELS),
            rng.choice([0, 20, 25, 100]),
            NOW - rng.randint(-HOUR_MS, 3 * HOUR_MS),
        )
        for n in range(rng.choice([0, 0, 0, 1, 2]))
    )
    recent = []
    for _ in range(rng.choice([0, 0, 1, 2, 5])):
        start = NOW - rng.randint(-HOUR_MS, 3 * HOUR_MS)
        recent.append(WorkSpan(start, start + rng.randint(0, HOUR_MS), rng.choice([20, 25, 100])))
    count = rng.choice([0, 0, 1, 3, 30, 1000])
    stats = PerformanceStats(
        weighted_sum=count * rng.random() * rng.choice([1.0, 1.0, -1.0, 3.0]),
        weight=float(count) * rng.choice([1.0, 1.0, -1.0, 0.5]),
        updated_ms=rng.choice([0, NOW, NOW - rng.randint(0, 10**11), NOW + rng.randint(0, 10**6)]),
    )
    return AgentSnapshot(
        profile=AgentProfile(
            agent_id=f"a{index:04d}",
            skills=frozen_map({"billing": rng.randint(1, 10)} if rng.random() < 0.5 else {}),
            timezone=rng.choice(["", "Europe/London"]),
            capacity=frozen_map({Channel.CHAT: rng.randint(0, 4)} if rng.random() < 0.5 else {}),
            max_occupancy=rng.choice([None, 0.5, 1]),
            absences=tuple(random_absences(rng)),
        ),
        presence=rng.choice(list(Presence)),
        heartbeat_ms=NOW - rng.randint(0, 300_000),
        active=active,
        recent=tuple(recent),
        performance=stats,
        last_free_ms=rng.choice([0, NOW - rng.randint(-60_000, 2 * HOUR_MS)]),
    )


def random_absences(rng: random.Random) -> list[Absence]:
    """None mostly; else absences over, under way and to come around ``NOW``."""
    absences = []
    for n in range(rng.choice([0, 0, 0, 1, 3])):
        start = NOW + rng.randint(-3 * HOUR_MS, 2 * HOUR_MS)
        end = start + rng.choice([1, 60_000, HOUR_MS])
        absences.append(Absence(f"x{n}", AbsenceKind.OTHER, start, end))
    return absences


def random_policy(rng: random.Random) -> Policy:
    """Policies with edge values for every knob the formulas read."""
    return Policy(
        performance_half_life_s=rng.choice([14 * 24 * 3600, 3600, 60, 0, -5]),
        performance_prior=rng.choice([0.6, 0.0, 1.0, 1.5, -0.2]),
        performance_prior_weight=rng.choice([5.0, 0.0, -1.0, 2, 0.3]),
        idle_horizon_s=rng.choice([900, 1, 0, -1, 7]),
        occupancy_window_s=rng.choice([3600, 60, 1, 0, -1]),
    )


@pytest.mark.parametrize("seed", range(60))
def test_vectorised_formulas_are_bit_identical(seed: int) -> None:
    """Performance, idle and occupancy columns equal the scalar functions float for float."""
    rng = random.Random(seed)
    agents = [random_agent(rng, i) for i in range(rng.randint(0, 200))]
    table = AgentTable(agents)
    for _ in range(5):
        policy = random_policy(rng)
        now = NOW + rng.randint(-HOUR_MS, HOUR_MS)
        ints, floats = table.ints, table.floats
        scores = performance.score_array(
            floats[:, F_WEIGHTED_SUM], floats[:, F_WEIGHT], ints[:, I_UPDATED], now, policy
        )
        idle = idle_array(ints[:, I_ACTIVE], table.free_since(now), now, policy.idle_horizon_s)
        occ = table.occupancy(now, policy.occupancy_window_s)
        expected_scores = [performance.score(a.performance, now, policy) for a in agents]
        expected_idle = [idle_value(a, now, policy.idle_horizon_s) for a in agents]
        expected_occ = [occupancy(a, now, policy.occupancy_window_s) for a in agents]
        # Compare bit patterns: equal floats and the same sign of zero.
        assert _bits(scores) == _bits(expected_scores)
        assert _bits(idle) == _bits(expected_idle)
        assert _bits(occ) == _bits(expected_occ)


def test_many_random_decay_factors_match_python_pow() -> None:
    """Scores over a wide spread of ages (the decay power is the delicate step)."""
    rng = random.Random(99)
    policy = Policy(performance_half_life_s=rng.randint(1, 10**7))
    n = 20_000
    weighted = np.array([rng.random() * 50 for _ in range(n)])
    weight = np.array([rng.random() * 60 for _ in range(n)])
    updated = np.array([NOW - rng.randint(1, 10**12) for _ in range(n)], np.int64)
    got = performance.score_array(weighted, weight, updated, NOW, policy)
    expected = [
        performance.score(PerformanceStats(float(s), float(w), int(u)), NOW, policy)
        for s, w, u in zip(weighted, weight, updated, strict=True)
    ]
    assert _bits(got) == _bits(expected)


def test_skill_and_channel_columns() -> None:
    """Skill levels, loads and capacities per agent, as the profiles and work give them."""
    rng = random.Random(3)
    agents = [random_agent(rng, i) for i in range(100)]
    table = AgentTable(agents)
    has, levels = table.skill("billing")
    assert has.tolist() == ["billing" in a.profile.skills for a in agents]
    assert levels.tolist() == [a.profile.skills.get("billing", 0) for a in agents]
    has, levels = table.skill("never-seen")
    assert not has.any()
    assert not levels.any()
    for channel in Channel:
        assert table.channel(load.I_LOAD, channel).tolist() == [a.load(channel) for a in agents]
        capacity = table.channel(load.I_CAPACITY, channel).tolist()
        assert capacity == [a.profile.capacity.get(channel, load.ABSENT) for a in agents]
    assert table.ints[:, load.I_UNITS].tolist() == [a.units_used for a in agents]
    assert table.ids == [a.agent_id for a in agents]


def test_rows_are_memoised_per_snapshot_object() -> None:
    """The same object reuses its row; an equal-looking new object gets its own."""
    rng = random.Random(5)
    agents = [random_agent(rng, i) for i in range(20)]
    first = AgentTable(agents)
    again = AgentTable(list(reversed(agents)))
    assert all(
        mine is theirs for mine, theirs in zip(first._rows, reversed(again._rows), strict=True)
    )
    changed = dataclasses.replace(agents[3], last_free_ms=NOW - 5, active=())
    assert changed.derived == ()  # replace starts the derived values anew
    assert changed == dataclasses.replace(agents[3], last_free_ms=NOW - 5, active=())
    table = AgentTable([*agents[:3], changed, *agents[4:]])
    assert table.ints[3, I_FREE_SINCE] == max([NOW - 5, *(span.end_ms for span in changed.recent)])
    assert table.ints[3, I_ACTIVE] == 0
    assert id(table._rows[3]) == id(changed.derived)
    assert repr(changed) == repr(dataclasses.replace(changed))  # not shown


def test_the_memo_keeps_no_snapshot_alive_and_its_rows_cost_the_collector_nothing() -> None:
    """A row lives on its snapshot and goes with it: a busy service makes new snapshots all
    the time, and the memo must not keep the old ones. Rows and profile parts hold no
    object the garbage collector tracks, so it stops tracking them: each full collection
    walks every tracked object, and a cached agent should cost it as few as can be."""
    rng = random.Random(11)
    load._LAST[0] = None  # the last table holds its agents for the next one
    agents = [random_agent(rng, i) for i in range(50)]
    counts = [sys.getrefcount(agent) for agent in agents]
    AgentTable(agents)
    load._LAST[0] = None
    assert [sys.getrefcount(agent) for agent in agents] == counts
    gc.collect()
    gc.collect()  # a tuple is untracked once the tuples it holds are, at a later collection
    assert not any(gc.is_tracked(agent.derived) for agent in agents)
    assert not any(gc.is_tracked(agent.profile.derived) for agent in agents)


def test_a_row_of_an_earlier_generation_is_computed_anew(monkeypatch: pytest.MonkeyPatch) -> None:
    """Codes are per generation: a snapshot whose row was computed in an earlier one (whose
    codes may mean other names now) gets a new row, exact under the new codes."""
    rng = random.Random(9)
    agents = [random_agent(rng, i) for i in range(10)]
    old = AgentTable(agents)
    load._restart(old.memo)
    new = AgentTable(agents)
    assert new.memo is not old.memo
    assert not any(mine is theirs for mine, theirs in zip(old._rows, new._rows, strict=True))
    zones = [new.memo.zones.values[code] for code in new.ints[:, load.I_ZONE].tolist()]
    assert zones == [a.profile.timezone for a in agents]


def test_a_full_memo_starts_over(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past ``MAX_CODES`` a new generation begins; tables stay exact across the switch."""
    monkeypatch.setattr(load, "MAX_CODES", 5)
    rng = random.Random(8)
    agents = [random_agent(rng, i) for i in range(12)]
    table = AgentTable(agents)
    assert table.ids == [a.agent_id for a in agents]
    assert table.ints[:, load.I_UNITS].tolist() == [a.units_used for a in agents]
    assert load._MEMO[0] is not table.memo
    again = AgentTable(agents)
    # Codes are per generation: decode them with each table's own memo.
    for built in (table, again):
        zones = [built.memo.zones.values[code] for code in built.ints[:, load.I_ZONE].tolist()]
        assert zones == [a.profile.timezone for a in agents]
        assert built.skill("billing")[1].tolist() == [
            a.profile.skills.get("billing", 0) for a in agents
        ]
    assert again.ints[:, : load.I_ZONE].tolist() == table.ints[:, : load.I_ZONE].tolist()


def test_tables_built_concurrently_decode_their_codes() -> None:
    """Threads meeting new names at once each get one code per name (a race only recomputes)."""
    agents = [
        AgentSnapshot(
            AgentProfile(
                f"t{i:04d}",
                skills=frozen_map({f"skill-{i % 37}": 1 + i % 10}),
                region=f"Region-{i % 11}",
                timezone=f"Zone/{i % 13}",
            )
        )
        for i in range(400)
    ]
    tables: list[AgentTable] = []

    def build(part: list[AgentSnapshot]) -> None:
        tables.append(AgentTable(part))

    threads = [
        threading.Thread(target=build, args=(agents[k::3] + agents[: 50 * k],)) for k in range(6)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(tables) == len(threads)
    for table in tables:
        zones = [table.memo.zones.values[c] for c in table.ints[:, load.I_ZONE].tolist()]
        regions = [table.memo.regions.values[c] for c in table.ints[:, load.I_REGION].tolist()]
        assert zones == [a.profile.timezone for a in table.agents]
        assert regions == [a.profile.region.lower() for a in table.agents]
        for k in range(37):
            has, levels = table.skill(f"skill-{k}")
            expected = [a.profile.skills.get(f"skill-{k}", 0) for a in table.agents]
            assert levels.tolist() == expected
            assert has.tolist() == [f"skill-{k}" in a.profile.skills for a in table.agents]


def test_empty_table() -> None:
    """No agents: empty columns of the right shapes."""
    table = AgentTable([])
    assert table.ints.shape == (0, load.INT_WIDTH)
    assert table.occupancy(NOW, 3600).tolist() == []
    assert table.skill("billing")[0].tolist() == []


def _bits(values: object) -> list[int]:
    """The float64 bit patterns of ``values``."""
    bits: list[int] = np.asarray(values, np.float64).view(np.int64).tolist()
    return bits


@pytest.mark.parametrize(
    ("seed", "size"), [(seed, 64) for seed in range(20)] + [(1, 700), (2, 700)]
)
def test_a_table_patched_from_the_last_one_equals_a_fresh_one(seed: int, size: int) -> None:
    """A decision's agents are mostly the last decision's snapshots: the table copies the
    last table's columns and rebuilds the rows of the few that changed (here, in place and
    swapped for other agents), and equals a table built from scratch, column for column;
    a different team size, or many changes, builds from scratch. Skill columns the last
    table built are carried over, patched too."""
    rng = random.Random(seed)
    agents = [random_agent(rng, i) for i in range(size)]
    last = AgentTable(agents)
    if seed % 2:
        last.skill("billing")
    changed = list(agents)
    for i in rng.sample(range(size), rng.randint(1, 8)):
        changed[i] = random_agent(rng, 100 + i) if rng.random() < 0.3 else random_agent(rng, i)
    patched = AgentTable(changed)
    load._LAST[0] = None
    fresh = AgentTable(changed)
    assert patched._patched
    assert patched.ids == fresh.ids
    assert np.array_equal(patched.ints, fresh.ints)
    assert np.array_equal(patched.floats, fresh.floats)
    assert ("billing" in patched._skill_columns) == bool(seed % 2)
    for name in ("billing", "other"):
        for mine, theirs in zip(patched.skill(name), fresh.skill(name), strict=True):
            assert np.array_equal(mine, theirs)
            assert not mine.flags.writeable or not mine.any()  # shared: read-only
    for window in (3600, 60):
        assert np.array_equal(patched.occupancy(NOW, window), fresh.occupancy(NOW, window))
    owners, spans = patched.absences()
    assert np.array_equal(owners, fresh.absences()[0])
    assert np.array_equal(spans, fresh.absences()[1])
    shorter = AgentTable(changed[:-1])
    assert shorter.ids == [a.agent_id for a in changed[:-1]]


@pytest.mark.parametrize("seed", range(30))
def test_busy_time_carried_from_table_to_table_is_the_scalar_occupancy(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Decision after decision, a patched table carries each agent's busy time as a line and
    works it out again only for the agents that changed or whose line ran out (the window
    passing a span's start or end, work finishing): at every step, in steps of a millisecond
    to an hour, forwards and (a replica's clock) backwards, and when the window changes, the
    occupancy equals the scalar function's, bit for bit, also on a breakpoint and just
    past one; with the lines worked out in numpy or in a loop."""
    rng = random.Random(seed)
    # Lines worked out with numpy, or in a loop, whatever the size.
    monkeypatch.setattr(load, "_LOOP_SPANS", 0 if seed % 2 else 10**6)
    make = random_agent if seed % 3 else _gridded_agent
    agents = [make(rng, i) for i in range(rng.randint(1, 80))]
    load._LAST[0] = None
    now, window = NOW, rng.choice([3600, 60, 1])
    carried = 0
    for _ in range(40):
        if rng.random() < 0.3:  # some agents changed since the last decision
            for i in rng.sample(range(len(agents)), min(len(agents), rng.randint(1, 3))):
                agents[i] = make(rng, i)
        now += rng.choice([0, 1, 999, 60_000, HOUR_MS, -rng.randint(1, 5_000)])
        last = load._LAST[0]
        if last is not None and last._busy is not None and rng.random() < 0.5:
            ends = [t for t in last._busy[1][load.UNTIL].tolist() if now < t < now + 10 * HOUR_MS]
            if ends:  # onto an agent's breakpoint, or just past it
                now = rng.choice(ends) + rng.choice([0, 1])
        if rng.random() < 0.05:
            window = rng.choice([3600, 60, 1])
        table = AgentTable(agents)
        carried += table._busy is not None and table._busy[0] == window * 1000
        occ = table.occupancy(now, window)
        assert _bits(occ) == _bits([occupancy(a, now, window) for a in agents])
    assert carried > 10, "most tables must carry the last one's busy time"


def _gridded_agent(rng: random.Random, index: int) -> AgentSnapshot:
    """An agent whose spans start and end on whole seconds, or a millisecond either side:
    breakpoints that meet or lie a millisecond apart."""

    def at(second: int) -> int:
        return NOW + 1000 * second + rng.choice([-1, 0, 0, 1])

    recent = []
    for _ in range(rng.choice([0, 1, 2, 5])):
        start = rng.randint(-3700, 60)
        recent.append(WorkSpan(at(start), at(start + rng.randint(0, 120)), 25))
    active = tuple(
        ActiveWork(f"g{index}-{n}", Channel.CHAT, 25, at(rng.randint(-3700, 60)))
        for n in range(rng.choice([0, 1]))
    )
    return dataclasses.replace(random_agent(rng, index), recent=tuple(recent), active=active)


def test_a_line_is_worked_out_again_exactly_when_it_runs_out() -> None:
    """One finished span: the busy time is carried as a line until the window's start
    reaches the span, and worked out again from the spans there."""
    span = WorkSpan(NOW - 30 * 60_000, NOW - 10 * 60_000, 100)
    agents = [dataclasses.replace(random_agent(random.Random(1), 0), active=(), recent=(span,))]
    load._LAST[0] = None
    AgentTable(agents).occupancy(NOW, 3600)  # not patched: reads every span
    first = AgentTable(agents)
    assert first._busy is None
    first.occupancy(NOW, 3600)  # patched: works the line out
    assert first._busy is not None
    since, busy, slope, until = first._busy[1][:, 0].tolist()
    assert (since, busy, slope) == (NOW, 20 * 60_000 * 100, 0)
    assert until == span.start_ms + HOUR_MS  # the window's start reaches the span
    later = AgentTable(agents)
    assert later.occupancy(until, 3600)[0] == occupancy(agents[0], until, 3600)
    assert later._busy is not None
    assert later._busy[1][load.SINCE, 0] == NOW  # still the same line
    past = AgentTable(agents)
    assert past.occupancy(until + 1, 3600)[0] == occupancy(agents[0], until + 1, 3600)
    assert past._busy is not None
    assert past._busy[1][load.SINCE, 0] == until + 1  # worked out again


@pytest.mark.parametrize("seed", range(20))
def test_lines_worked_out_with_numpy_and_in_a_loop_are_the_same_and_exact(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both ways give each agent the busy time at ``now``, the slope, and as ``until`` the
    first breakpoint after ``now`` of any of its spans; the line meets the busy time
    summed span by span at ``now`` and at ``until``."""
    rng = random.Random(seed)
    agents = [_gridded_agent(rng, i) for i in range(rng.randint(1, 30))]
    table = AgentTable(agents)
    spans, counts = load._spans_of(table._rows), table.ints[:, load.I_SPANS]
    now = NOW + rng.randint(-4000, 100) * 1000 + rng.choice([-1, 0, 1])
    window_ms = rng.choice([3600, 60, 1]) * 1000
    monkeypatch.setattr(load, "_LOOP_SPANS", 0)
    vectorised = load._busy_lines(spans, counts, now, window_ms)
    monkeypatch.setattr(load, "_LOOP_SPANS", 10**6)
    looped = load._busy_lines(spans, counts, now, window_ms)
    assert np.array_equal(vectorised, looped)

    def busy(triples: list[list[int]], t: int) -> int:
        return sum(u * max(0, min(e, t) - max(s, t - window_ms)) for s, e, u in triples)

    at = 0
    for i, count in enumerate(counts.tolist()):
        triples = spans[at : at + count].tolist()
        at += count
        points = [p for s, e, _ in triples for p in (s, e, s + window_ms, e + window_ms)]
        until = min((p for p in points if now < p < load._FOREVER), default=load._FOREVER)
        since, start, slope, last = looped[:, i].tolist()
        assert (since, start, last) == (now, busy(triples, now), until)
        if until < load._FOREVER:
            assert start + slope * (until - now) == busy(triples, until)


class _Thing:
    """An object equal to any other of the same ``value``."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Thing) and other.value == self.value

    __hash__ = None  # type: ignore[assignment]  # mutable-looking, never hashed here


@pytest.mark.parametrize("seed", range(40))
def test_differing_names_the_changed_places_across_runs(seed: int) -> None:
    """``differing`` against a loop over every place: with ``operator.ne``, exactly the
    places of unequal values; with ``is_not``, those and maybe other objects of equal value,
    never the same object; in order, whatever the lengths (runs of ``_RUN`` and a part run)
    and whether the sequences are lists or tuples."""
    rng = random.Random(seed)
    size = rng.choice([0, 1, load._RUN - 1, load._RUN, load._RUN + 1, 3 * load._RUN + 17])
    old = [_Thing(rng.randrange(5)) for _ in range(size)]
    new = list(old)
    for i in rng.sample(range(size), min(size, rng.randint(0, 6))):
        # Another object: of another value, or of the same value (equal, not the same).
        new[i] = _Thing(new[i].value + rng.randint(0, 1))
    unequal = [i for i in range(size) if new[i] != old[i]]
    other = [i for i in range(size) if new[i] is not old[i]]
    for left, right in ((new, old), (tuple(new), old), (tuple(new), tuple(old))):
        assert load.differing(left, right, operator.ne) == unequal
        found = load.differing(left, right)
        assert found == sorted(found)
        assert set(unequal) <= set(found) <= set(other)
    revs = [str(thing.value) for thing in old]
    changed_revs = [str(thing.value) for thing in new]
    assert load.differing(changed_revs, revs, operator.ne) == [
        i for i in range(size) if changed_revs[i] != revs[i]
    ]


def _covered(runs: list[tuple[int, int, int]], new: list[str], old: list[str]) -> list[int]:
    """The places of ``new`` inside ``runs``, each run checked to be an exact match, the
    runs in order and apart."""
    places: list[int] = []
    last_i = last_j = 0
    for i, j, n in runs:
        assert n > 0
        assert i >= last_i
        assert j >= last_j
        assert new[i : i + n] == old[j : j + n]
        places.extend(range(i, i + n))
        last_i, last_j = i + n, j + n
    return places


@pytest.mark.parametrize("seed", range(40))
def test_shared_runs_align_two_sorted_id_lists(seed: int) -> None:
    """``shared_runs`` on a sorted list of ids and the same list with a few ids in or out
    (at the ends, next to each other, across runs of ``_RUN``): the runs are exact matches,
    in order, and cover every id of the new list that the old one holds; ``None`` once the
    places that differ are more than it may meet."""
    rng = random.Random(seed)
    size = rng.choice([0, 1, 5, load._RUN - 1, load._RUN, load._RUN + 1, 3 * load._RUN + 17])
    team = [f"a{i:05d}" for i in range(2 * size + 2)]
    old = sorted(rng.sample(team, size))
    new_set = set(old)
    changes = rng.randint(0, min(8, len(team)))
    for agent_id in rng.sample(team, changes):
        new_set ^= {agent_id}
    new = sorted(new_set)
    runs = load.shared_runs(new, old, most=changes)
    assert runs is not None
    assert _covered(runs, new, old) == [i for i, agent_id in enumerate(new) if agent_id in old]
    if changes and new != old:
        assert load.shared_runs(new, old, most=0) is None
    assert load.shared_runs(old, old, most=0) == ([(0, 0, size)] if size else [])


def test_shared_runs_stay_exact_on_unsorted_lists() -> None:
    """Out of order, the runs are still exact matches (only fewer ids are found)."""
    rng = random.Random(3)
    for _ in range(200):
        old = rng.sample([f"a{i}" for i in range(40)], 30)
        new = [*old]
        rng.shuffle(new)
        runs = load.shared_runs(new, old, most=100)
        assert runs is not None
        _covered(runs, new, old)
    assert load.shared_runs(["a", "b", "c"], ["a", "b", "c", "d", "e", "f"], most=2) is None
