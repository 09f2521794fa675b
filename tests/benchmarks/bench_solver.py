"""The balanced decision alone (no gRPC, no Redis): ``router.engine.decide`` on a snapshot.

    .venv/bin/python -m tests.benchmarks.bench_solver [--repeats 20] [--quick]
        [--calls 1,10,100,1000] [--agents 100,1000,10000]

For each (waiting calls, agents) cell, builds one realistic snapshot (seeded: six skills with
levels, five languages, four regions and time zones, per-channel capacity, agents busy, on
break, away, offline or with an expired heartbeat, work in progress, recent spans,
performance history, absences and shift ends) and a batch of mixed-channel calls, then times
``decide`` under the ``BALANCED`` policy, the same entry point the service's Assign (one
call) and dispatcher (a batch) and the simulator use. One call is what an Assign decides.

Baselines measured in the same run, so ratios survive a noisy shared machine:

- ``calib``: a fixed pure-Python loop (the machine's speed right now), timed between cells;
- ``longest idle``: ``decide`` under ``LONGEST_IDLE`` on the same snapshot and calls (the
  industry default; it screens and scores like the balanced plan but needs no solve). Skipped
  for cells above ``--idle-limit`` calls x agents (it is slow there and adds nothing).

Prints a markdown table: median, p99 and max per cell, and the ratios to both baselines.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import gc
import random
import statistics
import time
from collections.abc import Callable, Sequence

from router import engine
from router.balanced import plan_balanced_reference
from router.domain import (
    Absence,
    AbsenceKind,
    ActiveWork,
    AgentProfile,
    AgentSnapshot,
    Call,
    Channel,
    PerformanceStats,
    Policy,
    Presence,
    SkillRequirement,
    Snapshot,
    Strategy,
    WorkSpan,
    frozen_map,
)
from router.engine import decide
from tests.benchmarks import results

NOW = 1_700_000_000_000
MINUTE = 60_000
SKILLS = ("billing", "tech", "payments", "sales", "retention", "claims")
LANGUAGES = ("es", "pt", "de", "fr")
REGIONS = (
    ("eu-west", "Europe/London"),
    ("eu-south", "Europe/Madrid"),
    ("us-east", "America/New_York"),
    ("sa-east", "America/Sao_Paulo"),
)
TEAMS = ("billing", "tech", "generalists")
UNITS = {Channel.VOICE: 100, Channel.CHAT: 25, Channel.EMAIL: 20, Channel.WHATSAPP: 25}
TARGETS = {(100, 1000): 10.0, (1000, 10000): 150.0}
"""Issue targets (p99 ms) per (calls, agents)."""


def make_agent(rng: random.Random, index: int) -> AgentSnapshot:
    """One agent of a mixed contact centre."""
    region, zone = rng.choice(REGIONS)
    skills = {name: rng.randint(1, 10) for name in rng.sample(SKILLS, rng.randint(2, 4))}
    languages = {"en"} | ({rng.choice(LANGUAGES)} if rng.random() < 0.5 else set())
    capacity = {
        Channel.VOICE: 1 if rng.random() < 0.9 else 0,
        Channel.CHAT: rng.randint(2, 4),
        Channel.EMAIL: rng.randint(3, 5),
        Channel.WHATSAPP: rng.randint(0, 3),
    }
    roll = rng.random()
    presence = (
        Presence.AVAILABLE
        if roll < 0.75
        else Presence.BUSY
        if roll < 0.85
        else Presence.BREAK
        if roll < 0.9
        else Presence.AWAY
        if roll < 0.95
        else Presence.OFFLINE
    )
    heartbeat = NOW - (rng.randint(0, 60_000) if rng.random() < 0.98 else 10 * MINUTE)
    active: list[ActiveWork] = []
    roll = rng.random()
    if roll < 0.1 and capacity[Channel.VOICE]:
        active.append(
            ActiveWork(f"w{index}v", Channel.VOICE, 100, NOW - rng.randint(1, 9) * MINUTE)
        )
    elif roll < 0.5:
        for n in range(rng.randint(1, 2)):
            channel = rng.choice((Channel.CHAT, Channel.EMAIL))
            active.append(
                ActiveWork(
                    f"w{index}-{n}", channel, UNITS[channel], NOW - rng.randint(1, 20) * MINUTE
                )
            )
    recent = []
    end = NOW - rng.randint(0, 10) * MINUTE
    for _ in range(rng.randint(0, 4)):
        start = end - rng.randint(3, 15) * MINUTE
        recent.append(WorkSpan(start, end, rng.choice((100, 25, 20))))
        end = start - rng.randint(0, 5) * MINUTE
    absences: tuple[Absence, ...] = ()
    roll = rng.random()
    if roll < 0.03:
        absences = (Absence(f"x{index}", AbsenceKind.TRAINING, NOW - MINUTE, NOW + 60 * MINUTE),)
    elif roll < 0.05:
        start = NOW + rng.randint(1, 30) * MINUTE
        absences = (Absence(f"x{index}", AbsenceKind.OTHER, start, start + 60 * MINUTE),)
    shift_end = NOW + rng.randint(1, 10) * MINUTE if rng.random() < 0.05 else 0
    count = rng.randint(0, 200)
    return AgentSnapshot(
        profile=AgentProfile(
            agent_id=f"a{index:05d}",
            team=rng.choice(TEAMS),
            skills=frozen_map(skills),
            languages=frozenset(languages),
            region=region,
            timezone=zone,
            capacity=frozen_map(capacity),
            max_occupancy=rng.choice((None, None, 0.8, 0.9)),
            absences=absences,
            shift_end_ms=shift_end,
        ),
        presence=presence,
        heartbeat_ms=heartbeat,
        active=tuple(active),
        recent=tuple(recent),
        performance=PerformanceStats(
            weighted_sum=count * rng.uniform(0.3, 0.95),
            weight=float(count),
            updated_ms=NOW - rng.randint(0, 7 * 24 * 60) * MINUTE,
        ),
        last_free_ms=NOW - rng.randint(0, 30 * 60_000),
        last_assigned_ms=NOW - rng.randint(0, 60 * 60_000),
    )


def make_call(rng: random.Random, index: int, agents: int) -> Call:
    """One waiting call: mostly voice and chat, one or two required skills, some regions."""
    roll = rng.random()
    channel = (
        Channel.VOICE
        if roll < 0.4
        else Channel.CHAT
        if roll < 0.8
        else Channel.EMAIL
        if roll < 0.95
        else Channel.WHATSAPP
    )
    required = tuple(
        SkillRequirement(name, rng.randint(1, 6))
        for name in rng.sample(SKILLS, 1 if rng.random() < 0.8 else 2)
    )
    preferred = (rng.choice(SKILLS),) if rng.random() < 0.3 else ()
    roll = rng.random()
    language = "en" if roll < 0.7 else "es" if roll < 0.85 else rng.choice(LANGUAGES)
    region, zone = rng.choice(REGIONS) if rng.random() < 0.5 else ("", "")
    return Call(
        call_id=f"c{index:05d}",
        channel=channel,
        required_skills=required,
        preferred_skills=preferred,
        language=language,
        region=region,
        timezone=zone,
        priority=rng.choice((0, 0, 0, 0, 1, 2, 5)),
        preferred_agent_id=f"a{rng.randrange(agents):05d}" if rng.random() < 0.05 else "",
        created_ms=NOW - rng.randint(0, 5 * 60_000),
    )


def make_case(n_calls: int, n_agents: int, seed: int = 1) -> tuple[Snapshot, list[Call]]:
    """A seeded snapshot of ``n_agents`` and ``n_calls`` waiting calls."""
    rng = random.Random(f"{seed}:{n_calls}:{n_agents}")
    agents = tuple(make_agent(rng, i) for i in range(n_agents))
    calls = [make_call(rng, i, n_agents) for i in range(n_calls)]
    return Snapshot(now_ms=NOW, policy=Policy(), agents=agents), calls


def calibration() -> None:
    """A fixed pure-Python workload (~10 ms): the machine's speed at this moment."""
    total = 0
    for i in range(300_000):
        total += i * i % 7
    if total < 0:
        raise AssertionError


def run(snapshot: Snapshot, calls: list[Call]) -> object:
    """One decision, as the service and the simulator make it."""
    return decide(snapshot, calls, rng=random.Random(7))


def timed(fn: Callable[[], object], repeats: int) -> list[float]:
    """Wall times of ``repeats`` runs of ``fn`` in ms (one untimed warm-up run first)."""
    fn()
    out = []
    for _ in range(repeats):
        gc.collect()
        started = time.perf_counter()
        fn()
        out.append((time.perf_counter() - started) * 1000)
    return out


def p99(values: Sequence[float]) -> float:
    """Nearest-rank 99th percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments (``argv``, else the command line), run every cell, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per cell")
    parser.add_argument("--quick", action="store_true", help="3 repeats, skip the largest cell")
    parser.add_argument("--calls", default="1,10,100,1000", help="batch sizes, comma-separated")
    parser.add_argument("--agents", default="100,1000,10000", help="team sizes, comma-separated")
    parser.add_argument(
        "--idle-limit",
        type=int,
        default=100_000,
        help="time the longest-idle baseline only up to this many calls x agents",
    )
    parser.add_argument(
        "--reference",
        action="store_true",
        help="time the scalar reference plan (router.balanced.plan_balanced_reference, the"
        " path before vectorisation) instead of the engine's",
    )
    results.add_option(parser)
    args = parser.parse_args(argv)
    if args.reference:
        vars(engine)["plan_balanced"] = plan_balanced_reference
    repeats = 3 if args.quick else max(1, args.repeats)
    cells = [(int(c), int(a)) for c in args.calls.split(",") for a in args.agents.split(",")]
    if args.quick:
        cells = [cell for cell in cells if cell[0] * cell[1] < 10_000_000]

    print(f"repeats={repeats} plan={'reference' if args.reference else 'engine'}")
    print(
        "| calls | agents | median ms | p99 ms | max ms | target p99 | calib ms | x calib"
        " | longest-idle ms | x longest-idle |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    records: list[results.Record] = []
    for n_calls, n_agents in cells:
        snapshot, calls = make_case(n_calls, n_agents)
        idle = dataclasses.replace(
            snapshot, policy=dataclasses.replace(snapshot.policy, strategy=Strategy.LONGEST_IDLE)
        )
        times = timed(functools.partial(run, snapshot, calls), repeats)
        calib = statistics.median(timed(calibration, 5))
        median = statistics.median(times)
        idle_cell, idle_ratio = "-", "-"
        if n_calls * n_agents <= args.idle_limit:
            idle_median = statistics.median(timed(functools.partial(run, idle, calls), repeats))
            idle_cell, idle_ratio = f"{idle_median:.2f}", f"{median / idle_median:.2f}"
        target = TARGETS.get((n_calls, n_agents))
        print(
            f"| {n_calls:,} | {n_agents:,} | {median:.2f} | {p99(times):.2f} | {max(times):.2f}"
            f" | {'-' if target is None else f'< {target:g}'} | {calib:.2f}"
            f" | {median / calib:.2f} | {idle_cell} | {idle_ratio} |",
            flush=True,
        )
        records.append(
            {
                "kind": "decision",
                "calls": n_calls,
                "agents": n_agents,
                "repeats": repeats,
                "median_ms": median,
                "p99_ms": p99(times),
                "max_ms": max(times),
                "target_p99_ms": target,
                "calib_ms": calib,
            }
        )
    results.write(args.json, "bench_solver", argv, records, quick=args.quick)


if __name__ == "__main__":
    main()
