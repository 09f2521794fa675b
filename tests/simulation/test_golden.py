"""Golden traces: a committed scenario, its trace and the expected outputs, diffed byte for byte.

``golden/centre.yaml`` generates ``golden/centre.trace.csv`` (seed 5); its ``recorded`` variant
reads that trace back and is simulated under three policies, and ``kpis.json`` and
``records.csv`` must equal ``golden/expected/<policy>/`` exactly. Any change in trace
generation, the engine's decisions, the simulator's clock or the KPI arithmetic shows up here
as a diff a reviewer can read. After an intended change, regenerate and review::

    UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/simulation/test_golden.py
"""

from __future__ import annotations

import difflib
import os
import shutil
from pathlib import Path

import pytest

from simulations.__main__ import main

GOLDEN = Path(__file__).parent / "golden"
SCENARIO = GOLDEN / "centre.yaml"
TRACE = GOLDEN / "centre.trace.csv"
SEED = 5
POLICIES = ("balanced", "longest_idle", "best_skill")
OUTPUTS = ("kpis.json", "records.csv")
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


def _same_bytes(produced: Path, expected: Path) -> None:
    """Pass if equal; with UPDATE_GOLDEN=1 copy ``produced`` over ``expected`` instead."""
    if UPDATE:
        expected.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(produced, expected)
        return
    assert expected.is_file(), f"{expected} is missing: run with UPDATE_GOLDEN=1"
    got, want = produced.read_text(), expected.read_text()
    if got != want:
        diff = difflib.unified_diff(
            want.splitlines(), got.splitlines(), str(expected), "produced", lineterm="", n=1
        )
        pytest.fail("\n".join(list(diff)[:60]))


def test_the_trace_is_generated_exactly(tmp_path: Path) -> None:
    """The committed trace is what ``trace --seed 5`` writes for the scenario today."""
    out = tmp_path / "centre.trace.csv"
    assert main(["trace", str(SCENARIO), "--seed", str(SEED), "--out", str(out)]) == 0
    _same_bytes(out, TRACE)


@pytest.mark.parametrize("policy", POLICIES)
def test_the_recorded_day_gives_the_expected_outputs(policy: str, tmp_path: Path) -> None:
    """Simulating the committed trace reproduces the committed KPIs and per-call records."""
    code = main(
        [
            "run",
            f"{SCENARIO}#recorded",
            "--policy",
            policy,
            "--seed",
            str(SEED),
            "--quiet",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    for name in OUTPUTS:
        _same_bytes(tmp_path / name, GOLDEN / "expected" / policy / name)


def test_the_golden_outputs_differ_between_policies() -> None:
    """The scenario is loaded enough for the policies to decide differently, so the golden
    files pin each policy's behaviour and not just the trace."""
    records = {p: (GOLDEN / "expected" / p / "records.csv").read_text() for p in POLICIES}
    assert len(set(records.values())) == len(POLICIES)
