"""``router.index_mirror``: a replica's mirror of the routing index against a model of it.

The model plays Redis: agents change (ready or not, units, skills, deleted), each change
takes the next rev, and a reply is what ``index_changes`` would send for a mirror at some rev
("delta") or for none ("all"). Replies taken at different moments are applied in random
order, as concurrent requests may: the mirror must always equal the index as of the newest
reply applied.
"""

from __future__ import annotations

import gc
import random
from dataclasses import dataclass, field

import pytest

from router.index_mirror import IndexMirror, _leave_out

SKILLS = ("billing", "tech", "sales")


@dataclass
class Index:
    """What Redis holds: rev per agent (deleted ones too), units of the ready ones, and
    each agent's skills."""

    counter: int = 1_000
    revs: dict[str, int] = field(default_factory=dict)
    ready: dict[str, int] = field(default_factory=dict)
    skills: dict[str, frozenset[str]] = field(default_factory=dict)

    def change(self, rng: random.Random) -> None:
        agent_id = f"a{rng.randrange(12):02d}"
        self.counter += 1
        self.revs[agent_id] = self.counter
        roll = rng.random()
        if roll < 0.15:
            self.ready.pop(agent_id, None)
            self.skills.pop(agent_id, None)  # deleted
            return
        if agent_id not in self.skills or roll < 0.3:
            self.skills[agent_id] = frozenset(rng.sample(SKILLS, rng.randint(0, 3)))
        if rng.random() < 0.7:
            self.ready[agent_id] = rng.choice((0, 25, 50, 100))
        else:
            self.ready.pop(agent_id, None)

    def reply(self, since: str) -> tuple[str, int, list[str]]:
        """What ``index_changes`` sends for a mirror at ``since``."""
        if since and int(since) <= self.counter:
            flat: list[str] = []
            for agent_id, rev in sorted(self.revs.items(), key=lambda item: item[1]):
                if rev > int(since):
                    units = self.ready.get(agent_id)
                    flat += [agent_id, str(rev), "" if units is None else str(units)]
            return "delta", self.counter, flat
        flat = []
        for agent_id, units in self.ready.items():
            flat += [agent_id, str(self.revs[agent_id]), str(units)]
        return "reset" if since else "all", self.counter, flat

    def candidates(self, skills: tuple[str, ...], room: int) -> tuple[list[str], int]:
        holders = [a for a in self.ready if set(skills) <= self.skills[a]]
        return sorted(a for a in holders if self.ready[a] <= room), len(holders)


def learn_all(mirror: IndexMirror, index: Index) -> None:
    """What ``load_candidates`` does after ``apply``: read the pending agents' skills."""
    ids, revs = mirror.unlearned()
    pairs = list(zip(ids, revs, strict=True))
    known = [(a, r, index.skills[a]) for a, r in pairs if a in index.skills]
    mirror.learn(known, [(a, r) for a, r in pairs if a not in index.skills])


def check(mirror: IndexMirror, index: Index) -> None:
    for skills in ((), ("billing",), ("tech", "sales"), SKILLS):
        for room in (0, 50, 100):
            pick = mirror.candidates(skills, room)
            assert (pick.ids, pick.in_ready) == index.candidates(skills, room), (skills, room)
            assert pick.revs == [str(index.revs[a]) for a in pick.ids]


@pytest.mark.parametrize("seed", range(40))
def test_replies_in_any_order_leave_the_newest_state(seed: int) -> None:
    rng = random.Random(seed)
    index, mirror = Index(), IndexMirror()
    now = 0.0
    for _ in range(30):
        # Two requests ask at the mirror's current rev, Redis changes in between, and their
        # replies come back in either order.
        first_since, first_epoch = mirror.since(now)
        for _ in range(rng.randint(0, 4)):
            index.change(rng)
        first = (*index.reply(first_since), first_epoch)
        second_since, second_epoch = mirror.since(now)
        for _ in range(rng.randint(0, 4)):
            index.change(rng)
        second = (*index.reply(second_since), second_epoch)
        replies = [first, second]
        rng.shuffle(replies)
        for mode, head, flat, epoch in replies:
            mirror.apply(mode, head, flat, now, epoch)
            learn_all(mirror, index)
        check(mirror, index)
        assert mirror.head == index.counter
        now += rng.choice((1.0, 30.0, 61.0))  # past 60 s the next read is a full one


def test_a_full_read_is_due_first_and_then_every_minute_one_at_a_time() -> None:
    mirror = IndexMirror()
    assert mirror.since(0.0) == ("", 0)
    assert mirror.since(0.0) == ("", 0)  # nothing to ask a delta from yet
    mirror.apply("all", 7, [], 0.0, 0)
    assert mirror.since(59.0) == ("7", 0)
    assert mirror.since(60.0) == ("", 0)
    assert mirror.since(60.5) == ("7", 0)  # one full read in flight is enough


def test_a_counter_that_went_back_starts_the_mirror_over() -> None:
    """Writes lost in a failover: the counter is below the mirror's head, so the script sends
    everything, and revs the mirror already saw must not hide the new state; a reply asked
    for before that (from the old primary) is dropped."""
    index, mirror = Index(), IndexMirror()
    index.counter = 500
    index.revs, index.ready, index.skills = {"a": 500}, {"a": 0}, {"a": frozenset({"tech"})}
    since, epoch = mirror.since(0.0)
    mirror.apply(*index.reply(since), 0.0, epoch)
    learn_all(mirror, index)
    stale_since, stale_epoch = mirror.since(1.0)
    stale = index.reply(stale_since)  # old primary: nothing new
    # After the failover: the counter is at 400; ``b`` changed at 401, ``a`` left at 402.
    index.counter = 402
    index.revs, index.ready = {"a": 402, "b": 401}, {"b": 25}
    index.skills = {"a": frozenset({"tech"}), "b": frozenset({"tech"})}
    since, epoch = mirror.since(1.0)
    mode, head, flat = index.reply(since)
    assert mode == "reset"
    mirror.apply(mode, head, flat, 1.0, epoch)
    learn_all(mirror, index)
    mirror.apply(*stale, 1.0, stale_epoch)
    check(mirror, index)
    assert mirror.head == 402


def test_skills_read_at_an_older_rev_are_not_kept() -> None:
    """A skill read that raced with a newer change does not overwrite it: the agent stays
    pending until its current rev is read."""
    mirror = IndexMirror()
    mirror.apply("all", 10, ["a", "10", "0"], 0.0, 0)
    mirror.apply("delta", 11, ["a", "11", "0"], 0.0, 0)
    mirror.learn([("a", "10", frozenset({"tech"}))], [])
    assert mirror.unlearned() == (["a"], ["11"])
    assert mirror.candidates(("tech",), 100).ids == []
    mirror.learn([("a", "11", frozenset({"tech"}))], [])
    assert mirror.unlearned() == ([], [])
    assert mirror.candidates(("tech",), 100).ids == ["a"]


def test_an_agent_found_deleted_at_an_old_rev_stays_if_created_again() -> None:
    """One request read ``a``'s hash while ``a`` was deleted (its rev 10 then); meanwhile
    ``a`` was created again and made ready (rev 13). The late ``gone`` must not drop it."""
    mirror = IndexMirror()
    mirror.apply("all", 10, ["a", "10", "0"], 0.0, 0)
    mirror.apply("delta", 13, ["a", "13", "0"], 0.0, 0)
    mirror.learn([("a", "13", frozenset({"tech"}))], [])
    mirror.learn([], [("a", "10")])
    assert mirror.candidates(("tech",), 100).ids == ["a"]
    mirror.learn([], [("a", "13")])
    assert mirror.candidates(("tech",), 100).ids == []


def test_a_ready_agent_without_a_rev_is_read_not_refused() -> None:
    """An index written by another version can list a ready agent without a rev: the mirror
    takes it as of that read and has its hash read like any other's."""
    mirror = IndexMirror()
    mirror.apply("all", 20, ["a", "", "0", "b", "18", "25"], 0.0, 0)
    assert mirror.unlearned() == (["a", "b"], ["", "18"])
    mirror.learn([("a", "", frozenset()), ("b", "18", frozenset())], [])
    assert mirror.candidates((), 100).ids == ["a", "b"]
    mirror.apply("delta", 21, ["a", "21", ""], 0.0, 0)
    assert mirror.candidates((), 100).ids == ["b"]


def test_an_older_delta_cannot_bring_back_what_a_newer_full_read_left_out() -> None:
    """A full read at rev 20 lists only ``b``; a delta taken earlier (rev 15) still has ``a``
    ready at rev 12. Applied after the full read, it must not make ``a`` ready again."""
    mirror = IndexMirror()
    mirror.apply("all", 20, ["b", "18", "0"], 0.0, 0)
    mirror.apply("delta", 15, ["a", "12", "0", "b", "11", "25"], 0.0, 0)
    mirror.learn([("b", "18", frozenset())], [])
    pick = mirror.candidates((), 100)
    assert (pick.ids, pick.revs) == (["b"], ["18"])
    assert mirror.head == 20


def test_the_agents_of_a_mirror_cost_the_collector_no_object_each() -> None:
    """A mirror of 1,000 agents with their skills adds a handful of objects the garbage
    collector tracks, not one per agent: each full collection walks every tracked object,
    and a replica keeps a mirror of every agent."""
    gc.collect()
    before = len(gc.get_objects())
    mirror = IndexMirror()
    flat = [value for i in range(1_000) for value in (f"a{i:04d}", "10", "0")]
    mirror.apply("all", 10, flat, 0.0, 0)
    skills = frozenset({"tech", "billing"})
    mirror.learn([(f"a{i:04d}", "10", skills) for i in range(1_000)], [])
    assert len(mirror.candidates(("tech",), 100).ids) == 1_000
    gc.collect()
    gc.collect()  # a tuple is untracked once the tuples it holds are, at a later collection
    assert len(gc.get_objects()) - before < 100


@pytest.mark.parametrize("seed", range(30))
def test_a_large_team_with_a_few_agents_full_keeps_ids_and_revs_together(seed: int) -> None:
    """With every ready agent holding the call's skills and at most one in 32 without room,
    ``candidates`` copies the revs kept beside the sorted ids and leaves the full agents
    out by bisection: after random deltas (new agents between others, revs moving, agents
    leaving, units changing), ids and revs are those of a model, place for place."""
    rng = random.Random(seed)
    mirror = IndexMirror()
    ready: dict[str, tuple[int, int]] = {}  # agent id -> (rev, units)
    rev = 1_000
    for i in range(0, 400, 2):
        rev += 1
        ready[f"a{i:03d}"] = (rev, 0)
    flat = [str(value) for agent_id, (r, u) in ready.items() for value in (agent_id, r, u)]
    mirror.apply("all", rev, flat, 0.0, 0)
    for step in range(40):
        changes: list[str] = []
        for agent_id in rng.sample([f"a{i:03d}" for i in range(400)], rng.randint(1, 8)):
            rev += 1
            if rng.random() < 0.2:
                ready.pop(agent_id, None)
                changes += [agent_id, str(rev), ""]
            else:
                units = 100 if rng.random() < 0.3 else rng.choice((0, 25))
                ready[agent_id] = (rev, units)
                changes += [agent_id, str(rev), str(units)]
        mirror.apply("delta", rev, changes, 0.0, 0)
        ids, revs = mirror.unlearned()
        mirror.learn([(a, r, frozenset({"billing"})) for a, r in zip(ids, revs, strict=True)], [])
        for room in (75, 100):
            full = [a for a, (_, units) in ready.items() if units > room]
            expected = sorted(a for a in ready if a not in full)
            for skills in ((), ("billing",)):
                pick = mirror.candidates(skills, room)
                assert pick.ids == expected, (step, room, skills)
                assert pick.revs == [str(ready[a][0]) for a in expected]
                assert pick.in_ready == len(ready)


def test_leaving_out_agents_not_listed_changes_nothing() -> None:
    """``_leave_out`` leaves out only the agents it finds: one that sorts between two
    listed ones, before them all or after them all is not there to leave out."""
    ids, revs = ["a1", "a3", "a5"], ["11", "13", "15"]
    assert _leave_out(ids, revs, {"a0", "a2", "a9"}) == (ids, revs)
    assert _leave_out(ids, revs, {"a2", "a3"}) == (["a1", "a5"], ["11", "15"])
    kept = _leave_out(ids, revs, set())
    assert kept == (ids, revs)
    assert kept[0] is not ids  # copies: the mirror's own lists change under its lock
