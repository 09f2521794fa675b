"""The vectorised balanced plan against the one-agent-at-a-time reference, on random snapshots.

``router.balanced.plan_balanced`` screens with ``router.eligibility.AgentColumns``, scores with
``scoring.match.ScoreColumns`` and prices slots with ``scoring.load.slot_cost_matrix``; each
piece must give exactly (bit for bit) what the scalar functions give, and the whole plan
exactly the placements and explanations of ``plan_balanced_reference``.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence

import numpy as np
import pytest

from router import balanced, eligibility
from router.balanced import (
    SMALL_PLAN,
    _top,
    plan_balanced,
    plan_balanced_columns,
    plan_balanced_reference,
    prioritise,
)
from router.board import Board
from router.domain import (
    Absence,
    AbsenceKind,
    ActiveWork,
    AgentProfile,
    AgentSnapshot,
    Call,
    Channel,
    PerformanceStats,
    Placement,
    Policy,
    Presence,
    SkillRequirement,
    Snapshot,
    Weights,
    WideningStep,
    WorkSpan,
    frozen_map,
)
from router.solver import solve_flow
from scoring.load import occupancy, slot_cost_matrix, slot_costs
from scoring.match import ScoreColumns
from tests.unit.factories import HOUR_MS, MINUTE_MS, NOW, make_agent, make_call

SKILLS = ("billing", "tech", "sales")
ZONES = ("", "Europe/London", "America/New_York", "Asia/Kolkata", "Not/AZone")
CHANNELS = (Channel.VOICE, Channel.CHAT, Channel.EMAIL)
UNITS = {Channel.VOICE: 100, Channel.CHAT: 25, Channel.EMAIL: 20}


def random_agent(rng: random.Random, index: int, *, alike: bool) -> AgentSnapshot:
    """An agent with random presence, skills, languages, team, region, zone, load and history.

    ``alike`` agents share every score input, so equal scores (ties) are common.
    """
    active = tuple(
        ActiveWork(f"w{index}-{n}", channel, UNITS[channel], NOW - rng.randint(0, HOUR_MS))
        for n, channel in enumerate(rng.sample(CHANNELS, rng.randint(0, 2)))
    )
    soon = Absence("s", AbsenceKind.TRAINING, NOW + rng.randint(1, 90) * MINUTE_MS, NOW + HOUR_MS)
    now_away = Absence("n", AbsenceKind.VACATION, NOW - HOUR_MS, NOW + HOUR_MS)
    recent = () if alike else (WorkSpan(NOW - HOUR_MS, NOW - rng.randint(0, HOUR_MS), 100),)
    count = 0 if alike else rng.randint(0, 30)
    return AgentSnapshot(
        profile=AgentProfile(
            agent_id=f"r{index:03d}",
            team=rng.choice(["", "support", "sales", "overflow"]),
            skills=frozen_map(
                {"billing": 5, "tech": 5}
                if alike
                else {s: rng.randint(1, 10) for s in rng.sample(SKILLS, rng.randint(0, 3))}
            ),
            languages=frozenset(rng.sample(["en", "PT", "fr", "En"], rng.randint(0, 2))),
            region=rng.choice(["", "eu", "US", "EU"]),
            timezone="Europe/London" if alike else rng.choice(ZONES),
            capacity=frozen_map(
                {channel: rng.randint(0, 4) for channel in rng.sample(CHANNELS, rng.randint(0, 3))}
            ),
            max_occupancy=rng.choice([None, None, 0.5, 0.95]),
            absences=rng.choice([(), (), (), (soon,), (now_away,)]),
            shift_end_ms=rng.choice([0, 0, 0, NOW + rng.randint(1, 120) * MINUTE_MS]),
        ),
        presence=rng.choice([Presence.AVAILABLE] * 6 + [Presence.BREAK, Presence.OFFLINE]),
        heartbeat_ms=NOW - rng.choice([0, 0, 0, 120_000, 120_001, 200_000]),  # 120 s: the edge
        active=active,
        recent=recent,
        performance=PerformanceStats(
            count * rng.random(), float(count), NOW - rng.randint(0, 10**9)
        ),
        last_free_ms=NOW - (60_000 if alike else rng.randint(0, HOUR_MS)),
    )


def random_call(rng: random.Random, index: int, agents: int) -> Call:
    """A call with random needs, age, priority, team, region, zone and declined agents."""
    required = tuple(
        SkillRequirement(skill, rng.randint(1, 7))
        for skill in rng.sample(SKILLS, rng.randint(0, 2))
    )
    return Call(
        call_id=f"c{index:03d}",
        channel=rng.choice(CHANNELS),
        required_skills=required,
        preferred_skills=tuple(rng.sample(SKILLS, rng.randint(0, 2))),
        language=rng.choice(["en", "pt", "", "EN"]),
        region=rng.choice(["", "EU", "us"]),
        timezone=rng.choice(ZONES),
        priority=rng.choice([0, 0, 1, 5]),
        preferred_agent_id=rng.choice(["", "", f"r{rng.randrange(max(1, agents)):03d}"]),
        team=rng.choice(["", "", "support", "sales"]),
        region_required=rng.random() < 0.3,
        expected_handle_s=rng.choice([0, 0, 60, 3600]),
        created_ms=NOW - rng.randint(0, 180) * 1000,
        excluded_agents=tuple(
            f"r{rng.randrange(max(1, agents)):03d}" for _ in range(rng.choice([0, 0, 2]))
        ),
    )


def random_policy(rng: random.Random) -> Policy:
    """The default policy with random widening, top-k, heartbeat rule and weights."""
    return Policy(
        widening=rng.choice(
            [
                (),
                (
                    WideningStep(after_s=30, level_drop=2),
                    WideningStep(after_s=90, teams=("overflow",), any_region=True),
                ),
            ]
        ),
        top_k=rng.choice([50, 3, 1, 0]),
        heartbeat_timeout_s=rng.choice([120, 0]),
        weights=rng.choice([Weights(), Weights(load=0.0), Weights(skill=1.0, idle=0.0)]),
    )


def random_case(seed: int) -> tuple[Snapshot, list[Call]]:
    """A seeded snapshot (sometimes of look-alike agents) and a batch of calls."""
    rng = random.Random(seed)
    alike = seed % 3 == 0
    n_agents = rng.randint(0, 40)
    agents = tuple(random_agent(rng, i, alike=alike) for i in range(n_agents))
    calls = [random_call(rng, i, n_agents) for i in range(rng.choice([1, 1, 2, 5, 12]))]
    snapshot = Snapshot(
        now_ms=NOW,
        policy=random_policy(rng),
        agents=agents,
        unindexed_missing_skill=rng.choice([0, 3]),
    )
    return snapshot, calls


@pytest.mark.parametrize("seed", range(150))
def test_fast_plan_equals_the_reference(seed: int) -> None:
    """Same placements and explanations as the scalar plan, on random snapshots and batches."""
    snapshot, calls = random_case(seed)
    fast = plan_balanced_columns(Board(snapshot), calls)
    reference = plan_balanced_reference(Board(snapshot), calls)
    assert fast == reference


@pytest.mark.parametrize("seed", range(20))
def test_column_screening_equals_the_scalar_rules(seed: int) -> None:
    """Every call's eligible agents and exclusion counts, also after placements."""
    snapshot, calls = random_case(seed)
    board = Board(snapshot)
    columns = eligibility.AgentColumns(
        list(board.agents.values()),
        NOW,
        snapshot.policy,
        unindexed_missing_skill=snapshot.unindexed_missing_skill,
    )
    rng = random.Random(seed)
    for call in calls * 3:
        expected = board.screen(call)
        got = columns.screen(call)
        assert [columns.agents[i].agent_id for i in got.eligible] == [
            agent.agent_id for agent in expected.eligible
        ]
        assert got.excluded == expected.excluded
        assert list(got.excluded) == list(expected.excluded)
        assert got.widening_step == expected.widening_step
        if expected.eligible:
            agent_id = rng.choice(expected.eligible).agent_id
            board.place(call, agent_id)
            columns.place(columns.index[agent_id], call.channel)


@pytest.mark.parametrize("seed", range(20))
def test_column_scores_are_bit_identical(seed: int) -> None:
    """``ScoreColumns.totals`` and ``parts`` give the very floats ``Board`` gives."""
    snapshot, calls = random_case(seed)
    board = Board(snapshot)
    agents = list(board.agents.values())
    columns = eligibility.AgentColumns(agents, NOW, snapshot.policy)
    scores = ScoreColumns(agents, NOW, snapshot.policy)
    everyone = np.arange(len(agents))
    for call in calls:
        totals = scores.totals(call, everyone, lambda name: columns.skill(name)[1])
        assert totals.tolist() == [board.total(call, agent.agent_id) for agent in agents]
        for i, agent in enumerate(agents):
            card = board.card(call, agent.agent_id)
            assert scores.parts(call, i) == dict(card.parts)
            assert totals[i] == card.total


@pytest.mark.parametrize("seed", range(10))
def test_slot_cost_matrix_is_bit_identical(seed: int) -> None:
    """Each row equals ``slot_costs`` for that agent, float for float."""
    rng = random.Random(seed)
    n, width, units = 30, 4, rng.choice([100, 25, 20, 0])
    used = np.array([rng.choice([0, 20, 25, 50, 75]) for _ in range(n)], np.int64)
    occ = np.array([rng.random() for _ in range(n)])
    cap = np.array([rng.choice([0.0, 0.5, 0.85, 1.0]) for _ in range(n)])
    weight = rng.choice([2.0, 0.0, 1.3])
    matrix = slot_cost_matrix(used, units, width, occupancy=occ, cap=cap, weight=weight)
    for i in range(n):
        expected = slot_costs(
            int(used[i]), units, width, occupancy=float(occ[i]), cap=float(cap[i]), weight=weight
        )
        assert tuple(matrix[i].tolist()) == expected


@pytest.mark.parametrize("seed", range(30))
def test_top_equals_a_sorted_cut(seed: int) -> None:
    """``_top`` keeps what ``sorted(key=(-net, position))[:keep]`` keeps, ties included."""
    rng = random.Random(seed)
    net = np.array([rng.choice([0.5, 0.25, -0.125, 1.0]) for _ in range(rng.randint(0, 30))])
    for keep in (None, 1, 2, 5, 40):
        expected = sorted(range(len(net)), key=lambda p: (-net[p], p))[:keep]
        assert _top(net, keep).tolist() == expected


@pytest.mark.parametrize("seed", range(40))
def test_one_call_closed_form_is_a_flow_optimum(seed: int) -> None:
    """For one call, the cheapest candidate on its first slot (ties to the lowest agent) costs
    what the full flow's optimum costs, and is the flow's own choice when the optimum is unique."""
    rng = random.Random(seed)
    n_agents = rng.randint(1, 8)
    slots = [
        [cost + k for k, cost in enumerate(sorted(rng.randint(0, 5) for _ in range(n)))]
        for n in (rng.randint(1, 3) for _ in range(n_agents))
    ]
    edges = [
        (0, j, rng.randint(0, 6)) for j in rng.sample(range(n_agents), rng.randint(1, n_agents))
    ]
    first = {j: cost + slots[j][0] for _, j, cost in edges}
    best = min(first.values())
    closed = min(j for j, value in first.items() if value == best)
    flow = solve_flow(1, [0] * len(edges), [j for _, j, _ in edges], [c for *_, c in edges], slots)
    assert flow.cost == best
    if sum(value == best for value in first.values()) == 1:
        assert flow.agent_of == (closed,)
    assert prioritise(edges, [0], slots) == edges


def test_occupancy_column_uses_the_scalar_function() -> None:
    """The occupancy column (vectorised in ``scoring.load.AgentTable``) equals
    ``scoring.load.occupancy`` agent for agent."""
    snapshot, _ = random_case(4)
    agents = list(Board(snapshot).agents.values())
    columns = eligibility.AgentColumns(agents, NOW, snapshot.policy)
    everyone = np.arange(len(agents))
    window = snapshot.policy.occupancy_window_s
    assert columns.occupancy(everyone).tolist() == [occupancy(a, NOW, window) for a in agents]


def test_engine_uses_the_fast_plan_without_touching_the_snapshot() -> None:
    """``decide`` on a snapshot leaves it as it was (the plan works on its own columns)."""
    snapshot, calls = random_case(5)
    before = dataclasses.replace(snapshot)
    plan_balanced_columns(Board(snapshot), calls)
    plan_balanced(Board(snapshot), calls)
    assert snapshot == before


@pytest.mark.parametrize("seed", range(30))
def test_each_size_takes_its_path_with_the_same_answer(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Up to ``SMALL_PLAN`` calls x agents the engine runs the reference plan, above it the
    columns; the answer is the same either way."""
    snapshot, calls = random_case(seed)
    expected = plan_balanced_reference(Board(snapshot), calls)
    assert plan_balanced_columns(Board(snapshot), calls) == expected

    def refuse(board: Board, calls: Sequence[Call]) -> list[Placement]:
        raise AssertionError("the other path was taken")

    small = len(calls) * len(snapshot.agents) <= SMALL_PLAN
    other = "plan_balanced_columns" if small else "plan_balanced_reference"
    monkeypatch.setattr(balanced, other, refuse)
    assert plan_balanced(Board(snapshot), calls) == expected


def test_second_round_widens_past_top_k() -> None:
    """When every call's ``top_k`` best is the same agent the first round cannot place them
    all; the second round's wider candidates (``max(top_k, calls)`` each) place every call,
    on the best agents, as the reference does."""
    agents = tuple(
        make_agent(f"a{i:02d}", skills={"billing": 10 - i}, capacity={Channel.VOICE: 1})
        for i in range(8)
    )
    snapshot = Snapshot(now_ms=NOW, policy=Policy(top_k=1), agents=agents)
    calls = [make_call(f"c{i}", min_level=1, created_ms=NOW - 1000 * (3 - i)) for i in range(3)]
    fast = plan_balanced_columns(Board(snapshot), calls)
    assert fast == plan_balanced_reference(Board(snapshot), calls)
    assert sorted(placement.agent_id or "" for placement in fast) == ["a00", "a01", "a02"]
