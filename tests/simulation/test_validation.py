"""The simulator against queueing theory, and its determinism.

On a single-skill pool every work-conserving policy gives the M/M/c queue (Erlang C), or with
exponential patience the M/M/c+M queue (Erlang A): the simulated figures must match the
analytic ones within the statistical error of the runs (three standard errors over seeds).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import yaml

from simulations.erlang import erlang_a, erlang_c
from simulations.scenario import load_scenario, parse_scenario
from simulations.simulator import simulate

SCENARIOS = Path(__file__).resolve().parents[2] / "simulations" / "scenarios"
SEEDS = (1, 2, 3, 4)


def _within(values: list[float], expected: float, floor: float) -> bool:
    """|mean - expected| within three standard errors of the seeds' mean (or ``floor``)."""
    mean = statistics.fmean(values)
    error = statistics.stdev(values) / len(values) ** 0.5
    return bool(abs(mean - expected) <= max(3 * error, floor))


def _pool(patience_s: float | None) -> dict[str, object]:
    raw = yaml.safe_load((SCENARIOS / "erlang_check.yaml").read_text())
    assert isinstance(raw, dict)
    raw["duration_s"] = 6 * 3600
    if patience_s is not None:
        pool = raw["pool"]
        assert isinstance(pool, dict)
        pool["mean_patience_s"] = patience_s
    return raw


@pytest.mark.parametrize("shortcut", [True, False], ids=["pooled", "event loop"])
def test_single_skill_pool_matches_erlang_c(shortcut: bool) -> None:
    """20 agents, 340 calls/h of 180 s: P(wait), service level in 20 s and ASA agree with
    Erlang C, through the pooled shortcut and through the event loop."""
    scenario = parse_scenario(_pool(None), name="erlang_c")
    runs = [simulate(scenario, seed=seed, shortcut=shortcut).kpis["overall"] for seed in SEEDS]
    analytic = erlang_c(340 / 3600, 180, 20, 20)
    assert _within([r["service_level"] for r in runs], analytic.service_level, 0.02)
    assert _within([r["asa_s"] for r in runs], analytic.asa_s, 2.0)


@pytest.mark.parametrize("shortcut", [True, False], ids=["pooled", "event loop"])
def test_single_skill_pool_with_patience_matches_erlang_a(shortcut: bool) -> None:
    """The same pool with 300 s mean patience: service level, ASA and abandonment agree with
    Erlang A, through the pooled shortcut and through the event loop."""
    scenario = parse_scenario(_pool(300), name="erlang_a")
    runs = [simulate(scenario, seed=seed, shortcut=shortcut).kpis["overall"] for seed in SEEDS]
    analytic = erlang_a(340 / 3600, 180, 20, 20, 300)
    assert _within([r["service_level"] for r in runs], analytic.service_level, 0.02)
    assert _within([r["asa_s"] for r in runs], analytic.asa_s, 2.0)
    assert _within([r["abandon_rate"] for r in runs], analytic.p_abandon, 0.01)


def test_same_seed_gives_byte_identical_kpis(tmp_path: Path) -> None:
    """Two runs of one scenario and seed write identical kpis.json; another seed differs."""
    scenario = load_scenario(SCENARIOS / "star_agents.yaml")
    first, second, other = (tmp_path / name for name in ("a", "b", "c"))
    simulate(scenario, seed=7).write(first)
    simulate(scenario, seed=7).write(second)
    simulate(scenario, seed=8).write(other)
    assert (first / "kpis.json").read_bytes() == (second / "kpis.json").read_bytes()
    assert (first / "records.csv").read_bytes() == (second / "records.csv").read_bytes()
    assert (first / "kpis.json").read_bytes() != (other / "kpis.json").read_bytes()
    assert json.loads((first / "kpis.json").read_text())["seed"] == 7
