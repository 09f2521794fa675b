"""The balanced choice of a lone call over many free agents: the bounds that screen them on
columns never change the answer of scoring every free agent one at a time."""

from __future__ import annotations

import random
from typing import Any

import pytest

from simulations.model import SIM_EPOCH_MS
from simulations.pool_choice import COLUMNS_FROM, BalancedChoice
from simulations.scenario import parse_scenario
from simulations.trace import generate_trace

AGENTS = 60


def _choice(seed: int, policy: dict[str, Any]) -> BalancedChoice:
    """Sixty agents in a few groups (equal agents tie), billing calls of two kinds."""
    rng = random.Random(seed)
    agents = [
        {
            "id": f"agent-{n:02d}",
            "skills": {"billing": (8, 6, 5, 3)[n % 4]},
            "region": "eu" if n % 3 else "us",
            "channels": {"voice": 1},
        }
        for n in rng.sample(range(AGENTS), AGENTS)
    ]
    raw: dict[str, Any] = {
        "agents": agents,
        "arrivals": [
            {"name": "eu", "channel": "voice", "rate_per_hour": 200, "handle": 180,
             "skills": {"billing": 2}, "region": "eu"},
            {"name": "any", "channel": "voice", "rate_per_hour": 200, "handle": 180,
             "skills": {"billing": 5}},
        ],
        "duration_s": 3600,
        "policy": {
            "strategy": "balanced",
            "occupancy_window_s": 0,
            "escalation_priority_boost": 0,
            **policy,
        },
        "sla": {"voice": 20},
    }  # fmt: skip
    scenario = parse_scenario(raw, name="choice")
    return BalancedChoice(scenario, scenario.policy, generate_trace(scenario, seed), seed)


POLICIES = [
    {},  # the defaults: top_k 50, a 14-day half-life, a 900 s idle horizon
    {"top_k": 3, "performance_half_life_s": 7200, "idle_horizon_s": 300},
    {"top_k": 1, "performance_half_life_s": 3600, "idle_horizon_s": 0},
    {"top_k": 0, "performance_half_life_s": 0, "performance_prior_weight": 0},
    {"top_k": 7, "performance_prior": 0.1, "weights": {"idle": 0, "performance": 5}},
    {"top_k": 40, "weights": {"skill": 0, "region": 0}, "idle_horizon_s": 60},
]


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("policy", POLICIES)
def test_the_screened_choice_is_the_scalar_one(
    seed: int, policy: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    choice = _choice(seed, policy)
    columns = choice.columns
    assert columns is not None
    screened = []
    screen = type(columns).screen

    def spy(self: Any, kind: int, index: Any, now: int) -> Any:
        near, rest = screen(self, kind, index, now)
        screened.append(near is not None)
        return near, rest

    monkeypatch.setattr(type(columns), "screen", spy)
    rng = random.Random(seed)
    now = SIM_EPOCH_MS
    for step in range(400):
        now += rng.choice((0, 1, 10, 1_000, 30_000, 120_000))
        # Some agents finish a call (an outcome folded in) and come free again later; a few
        # never do, so agents with no outcome stay among the free.
        for k in rng.sample(range(AGENTS), rng.randint(0, 8)):
            if k % 10 == 0:
                continue
            start = max(choice.perf_updated[k], now - rng.randint(1_000, 900_000))
            done = max(start + rng.randint(1, 600_000), choice.perf_updated[k])
            if done > now:
                continue
            choice.fold(k, f"call-{step}-{k}", rng.random(), start, done)
            choice.freed(k, rng.randint(done, now))
        free = rng.sample(range(AGENTS), rng.randint(COLUMNS_FROM, AGENTS))
        kind = rng.randrange(len(choice.head))
        call_id = f"c{step}"
        assert columns.lone(call_id, kind, free, now) == choice.lone_scalar(
            call_id, kind, free, now
        ), (step, now)
    # The bounds decided many of these calls (else this compares the exact columns only).
    assert sum(screened) >= 100
