"""``router.board``'s index of the snapshot's agents, carried from one decision to the next.

A board's agents must be the snapshot's, by id and in id order, whether its index was built
anew or carried over from the last one with the changed agents put in; and a placement on
one board must never reach another board through the shared index.
"""

from __future__ import annotations

import dataclasses
import random

import pytest

from router import board as board_module
from router.board import Board
from router.domain import AgentSnapshot, Channel, Presence, Snapshot
from tests.unit.factories import NOW, make_call
from tests.unit.test_engine import BOARD_POLICY, random_agent


def snapshot_of(agents: list[AgentSnapshot]) -> Snapshot:
    return Snapshot(now_ms=NOW, policy=BOARD_POLICY, agents=tuple(agents))


def by_id(agents: list[AgentSnapshot]) -> list[tuple[str, AgentSnapshot]]:
    """What a board's agents must be: the agents by id, in id order."""
    return [(agent.agent_id, agent) for agent in sorted(agents, key=lambda a: a.agent_id)]


def same_items(board: Board, agents: list[AgentSnapshot]) -> bool:
    """The board holds the very objects of ``agents`` (identity), by id, in id order."""
    got, want = list(board.agents.items()), by_id(agents)
    return len(got) == len(want) and all(
        g_id == w_id and g is w for (g_id, g), (w_id, w) in zip(got, want, strict=True)
    )


def changed(agent: AgentSnapshot, rng: random.Random) -> AgentSnapshot:
    """A new snapshot of the same agent (as the store reads an agent that changed)."""
    return dataclasses.replace(
        agent,
        presence=rng.choice([Presence.AVAILABLE, Presence.BREAK]),
        last_free_ms=NOW - rng.randint(0, 600_000),
    )


def carries(last: board_module._Index | None, agents: list[AgentSnapshot]) -> bool:
    """Whether the index should be carried: the same ids at the same places, at most one
    agent in eight a new object."""
    if last is None or not agents or len(last.agents) != len(agents):
        return False
    moved = [i for i, agent in enumerate(agents) if agent is not last.agents[i]]
    return len(moved) * 8 <= len(agents) and all(agents[i].agent_id == last.ids[i] for i in moved)


@pytest.mark.parametrize("seed", range(20))
def test_a_board_carried_from_the_last_holds_what_one_built_anew_holds(seed: int) -> None:
    """A run of snapshots as a store reads them: the same agents, a few of them changed each
    time; now and then another team, another order, an agent swapped for another, many
    changed. Every board holds the snapshot's very agents by id in id order, and the index
    is carried exactly when few changed at the same places."""
    rng = random.Random(seed)
    board_module._LAST_INDEX[0] = None
    agents = [random_agent(rng, i) for i in range(40)]
    rng.shuffle(agents)  # any order: the board sorts by id
    carried = 0
    for _ in range(30):
        kind = rng.choice(["few"] * 6 + ["none", "many", "swap", "shuffle", "size", "other"])
        if kind == "few":
            for i in rng.sample(range(len(agents)), rng.randint(1, 3)):
                agents[i] = changed(agents[i], rng)
        elif kind == "many":
            for i in rng.sample(range(len(agents)), len(agents) // 2):
                agents[i] = changed(agents[i], rng)
        elif kind == "swap":  # another agent where one stood
            agents[rng.randrange(len(agents))] = random_agent(rng, 100 + rng.randrange(50))
        elif kind == "shuffle":
            rng.shuffle(agents)
        elif kind == "size":
            agents = agents[: rng.randint(max(1, len(agents) - 5), len(agents))] + [
                random_agent(rng, 200 + rng.randrange(50)) for _ in range(rng.randint(0, 5))
            ]
        elif kind == "other":  # another team's decision in between
            Board(snapshot_of([random_agent(rng, 300 + n) for n in range(len(agents))]))
        agents = list({agent.agent_id: agent for agent in agents}.values())  # ids are unique
        last = board_module._LAST_INDEX[0]
        board = Board(snapshot_of(agents))
        assert same_items(board, agents), kind
        index = board_module._LAST_INDEX[0]
        assert index is not None
        assert index.by_id is board.agents
        was_carried = last is not None and index.ids is last.ids
        assert was_carried == carries(last, agents), kind
        carried += was_carried
    assert carried >= 5  # the carry was exercised, not only the rebuild


def test_few_changes_at_the_same_places_carry_the_index() -> None:
    """The same ids at the same places with one agent changed: the last index's ids, a new
    dict with the one agent replaced; the last index itself is untouched."""
    rng = random.Random(7)
    board_module._LAST_INDEX[0] = None
    agents = sorted((random_agent(rng, i) for i in range(16)), key=lambda a: a.agent_id)
    first = Board(snapshot_of(agents))
    first_index = board_module._LAST_INDEX[0]
    assert first_index is not None
    first_ids = first_index.ids
    before = list(first.agents.items())
    agents[5] = changed(agents[5], rng)
    second = Board(snapshot_of(agents))
    assert second.agents is not first.agents
    carried = board_module._LAST_INDEX[0]
    assert carried is not None
    assert carried.ids is first_ids
    assert list(first.agents.items()) == before
    assert same_items(second, agents)
    # An agent swapped for another at the same place is not carried over.
    agents[9] = dataclasses.replace(
        agents[9], profile=dataclasses.replace(agents[9].profile, agent_id="r99")
    )
    third = Board(snapshot_of(agents))
    assert same_items(third, agents)
    third_index = board_module._LAST_INDEX[0]
    assert third_index is not None
    assert third_index.ids is not first_ids
    assert "r99" in third.agents
    assert list(third.agents) == sorted(third.agents)


def test_a_placement_never_reaches_the_shared_index() -> None:
    """A board that places work copies the index first: the next board from the same agents
    (sharing the index) sees them as the snapshot has them."""
    rng = random.Random(3)
    board_module._LAST_INDEX[0] = None
    agents = [random_agent(rng, i) for i in range(12)]
    snapshot = snapshot_of(agents)
    first = Board(snapshot)
    index = board_module._LAST_INDEX[0]
    assert index is not None
    agent_id = sorted(a.agent_id for a in agents)[4]
    first.place(make_call("c1", Channel.CHAT), agent_id)
    assert len(first.agents[agent_id].active) == len(index.by_id[agent_id].active) + 1
    second = Board(snapshot)
    assert same_items(second, agents)
    assert second.agents[agent_id] is next(a for a in agents if a.agent_id == agent_id)
