"""Where the balanced decision's time goes: its parts, timed on ``bench_solver``'s cases.

    .venv/bin/python -m tests.benchmarks.profile_solver [--calls 100] [--agents 1000]
        [--repeats 20]

Builds the seeded snapshot and calls of one ``bench_solver`` cell, then runs
``router.engine.decide`` under ``BALANCED`` ``--repeats`` times with a timer around each
part of the batch plan (screening, scoring, ranking, the flow solves, score parts,
explanations, the agent columns). Prints the median wall time per decision, the screenings
built per decision (calls alike in every rule share one) and, per part, its mean time per
decision and its share. The timers add a few per cent; the parts do not sum to the whole
(the rest is the plan's own loop).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from router import balanced, eligibility
from scoring import match
from tests.benchmarks.bench_solver import make_case, run

BUILT = "screenings built"
"""The part counted, not shown: one per distinct screening."""

PARTS: tuple[tuple[object, str, str], ...] = (
    (balanced, "Columns", "agent columns (per decision)"),
    (eligibility.AgentColumns, "screen", "screening"),
    (match.ScoreColumns, "totals", "score totals"),
    (balanced, "_top", "ranking (top candidates)"),
    (balanced, "solve_flow_arrays", "flow solves (OR-Tools)"),
    (balanced, "_slot_table", "slot costs"),
    (match.ScoreColumns, "parts", "score parts (the chosen agents)"),
    (balanced, "explain", "explanations"),
    (balanced, "queue_order", "queue order"),
    (eligibility.AgentColumns, "_screening", BUILT),
)
"""(owner, attribute, label) of each timed part."""


def timed_parts(
    spent: defaultdict[str, float], counts: defaultdict[str, int]
) -> list[tuple[object, str, Any]]:
    """Wrap every part with a timer adding to ``spent`` and ``counts``; returns what to put
    back."""
    originals: list[tuple[object, str, Any]] = []
    for owner, name, label in PARTS:
        original = getattr(owner, name)
        originals.append((owner, name, original))

        def timer(
            *args: Any, _original: Callable[..., Any] = original, _label: str = label, **kw: Any
        ) -> Any:
            started = time.perf_counter()
            try:
                return _original(*args, **kw)
            finally:
                spent[_label] += time.perf_counter() - started
                counts[_label] += 1

        setattr(owner, name, timer)
    return originals


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--calls", type=int, default=100, help="waiting calls in the batch")
    parser.add_argument("--agents", type=int, default=1000, help="agents in the snapshot")
    parser.add_argument("--repeats", type=int, default=20, help="timed decisions")
    args = parser.parse_args(argv)

    snapshot, calls = make_case(args.calls, args.agents)
    run(snapshot, calls)  # warm-up: imports, zone look-ups, the agent table
    spent: defaultdict[str, float] = defaultdict(float)
    counts: defaultdict[str, int] = defaultdict(int)
    originals = timed_parts(spent, counts)
    try:
        walls: list[float] = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            run(snapshot, calls)
            walls.append(time.perf_counter() - started)
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)
    total = sum(walls)
    print(
        f"{args.calls} calls x {args.agents:,} agents, {args.repeats} decisions: "
        f"median {statistics.median(walls) * 1000:.2f} ms per decision; "
        f"{counts[BUILT] / args.repeats:.0f} screenings built per decision\n"
    )
    del spent[BUILT]
    print("| part | ms per decision | share |")
    print("|---|---:|---:|")
    for label, seconds in sorted(spent.items(), key=lambda item: -item[1]):
        print(f"| {label} | {seconds / args.repeats * 1000:.2f} | {seconds / total:.0%} |")


if __name__ == "__main__":
    main()
