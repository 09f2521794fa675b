"""The simulator against Ciw on one M/M/c queue, and the 1,000-agent day.

    .venv/bin/python -m tests.benchmarks.bench_simulator [--quick] [--repeats 3] [--seeds 5]

The same M/M/c queue (default 20 agents, 340 calls/h, 180 s exponential handle time: offered
load 17 Erlangs, 85 % occupancy; no abandonment; a day of arrivals, the first hour as warm-up)
is simulated in one process, interleaved per seed and repeat, by:

- **Ciw** (the public discrete-event queueing library), arrivals stopped at the end of the
  day, run until the last call is served;
- **our simulator** with the longest-idle and the balanced policy (the queue is a day any
  free agent may take any call, which ``simulations.pooled`` runs with the event loop's very
  result), and both through the event loop (``shortcut=False``: each call through
  ``router.engine.decide``'s rules, as the service decides it; a same-run baseline for the
  shortcut).

Speed is calls simulated per wall-clock second (trace generation, set-up, the run and the
per-call records included for both tools; a full garbage collection before each run, so the
tool that runs after Ciw does not pay for Ciw's leftover objects), and events per second
(Ciw: arrivals plus service ends; ours: the events its loop handled), median over repeats,
with the ratio to Ciw taken within each repeat. CPU-time rates are shown too: the machine
is shared, and process time is less disturbed by other work than wall time.

Answers: P(wait), service level within the target and mean wait (ASA) over calls arriving
after the warm-up, mean over seeds with a 95 % Student-t confidence interval, next to
Erlang C (``simulations.erlang``); "agrees" means within three standard errors, the
project's validation rule (``tests/simulation/test_validation.py``).

Then the 1,000-agent day (``simulations/scenarios/thousand_agents.yaml``, seed 1): wall time
of ``simulate`` (median over ``--day-repeats``), calls and events.

Targets: longest-idle at least 3x Ciw's calls/s, balanced at least Ciw's, the 1,000-agent day
under 30 s. A second table splits our wall time per call into drawing the calls and the rest
of the run, next to the time per call each target allows, with the part of the run spent on the KPI
document (``kpis.json``: service level, waits, occupancy, fairness, a timeline; ours only,
Ciw computes none), and the garbage collector's passes per run and generation (median):
what each tool's objects per call cost it in collections.
Prints markdown tables; never fails on timing.
"""

from __future__ import annotations

import argparse
import gc
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ciw  # type: ignore[import-untyped]  # no stubs or py.typed

from router import logs
from simulations.erlang import ErlangFigures, erlang_c
from simulations.scenario import Scenario, load_scenario, parse_scenario
from simulations.simulator import simulate
from simulations.trace import generate_trace
from tests.benchmarks import results

ROOT = Path(__file__).resolve().parents[2]
DAY_SCENARIO = ROOT / "simulations" / "scenarios" / "thousand_agents.yaml"
TOOLS = (
    "Ciw",
    "ours: longest-idle",
    "ours: longest-idle, event loop",
    "ours: balanced",
    "ours: balanced, event loop",
)
T_975 = {
    1: 12.706,
    2: 4.303,
    3: 3.182,
    4: 2.776,
    5: 2.571,
    6: 2.447,
    7: 2.365,
    8: 2.306,
    9: 2.262,
    10: 2.228,
}
"""Two-sided 95 % Student-t quantiles by degrees of freedom (1.96 beyond)."""


@dataclass(frozen=True, slots=True)
class Queue:
    """The M/M/c queue both tools simulate."""

    agents: int
    rate_per_hour: float
    aht_s: float
    target_s: float
    duration_s: float
    warmup_s: float

    @property
    def erlang(self) -> ErlangFigures:
        return erlang_c(self.rate_per_hour / 3600, self.aht_s, self.agents, self.target_s)


@dataclass(frozen=True, slots=True)
class Run:
    """One tool, one seed: timings, work done and the per-call waits after the warm-up."""

    wall_s: float
    cpu_s: float
    calls: int
    events: int
    waits: list[float]
    trace_s: float = 0.0
    """Wall time spent drawing the calls (ours; part of ``wall_s``)."""
    collections: tuple[int, int, int] = (0, 0, 0)
    """Garbage collections during the run, per generation (young, middle, full)."""
    kpis_s: float = 0.0
    """Wall time spent computing the KPI document (ours; part of ``wall_s``)."""


@dataclass(slots=True)
class Answers:
    """The three figures of one run."""

    p_wait: float
    service_level: float
    asa_s: float

    @staticmethod
    def of(waits: Sequence[float], target_s: float) -> Answers:
        n = len(waits)
        return Answers(
            p_wait=sum(1 for w in waits if w > 1e-9) / n,
            service_level=sum(1 for w in waits if w <= target_s + 1e-9) / n,
            asa_s=sum(waits) / n,
        )


@dataclass(slots=True)
class Tally:
    """Everything measured for one tool."""

    runs: dict[int, list[Run]] = field(default_factory=dict)
    """Repeat -> one run per seed."""


# --- the two tools -------------------------------------------------------------------------


class Collections:
    """Counts the garbage collector's passes per generation while it is active (a
    ``gc.callbacks`` hook): objects a tool allocates per call show up as collections."""

    def __init__(self) -> None:
        self.counts = [0, 0, 0]

    def __enter__(self) -> Collections:
        gc.callbacks.append(self._seen)
        return self

    def __exit__(self, *_: object) -> None:
        gc.callbacks.remove(self._seen)

    def _seen(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.counts[info["generation"]] += 1

    def per_generation(self) -> tuple[int, int, int]:
        young, middle, full = self.counts
        return young, middle, full


class _ArrivalsUntil(ciw.dists.Exponential):  # type: ignore[misc]  # untyped library
    """Exponential inter-arrival times until ``end``, then none (the day's arrivals only)."""

    def __init__(self, rate: float, end: float) -> None:
        super().__init__(rate)
        self.end = end

    def sample(self, t: float | None = None, ind: object = None) -> float:
        if t is not None and t >= self.end:
            return math.inf
        gap: float = super().sample(t, ind)
        return gap


def run_ciw(queue: Queue, seed: int) -> Run:
    """Ciw: build the network, simulate until the last call is served, read the records."""
    with Collections() as collections:
        started, cpu = time.perf_counter(), time.process_time()
        network = ciw.create_network(
            arrival_distributions=[_ArrivalsUntil(queue.rate_per_hour / 3600, queue.duration_s)],
            service_distributions=[ciw.dists.Exponential(1 / queue.aht_s)],
            number_of_servers=[queue.agents],
        )
        ciw.seed(seed)
        sim = ciw.Simulation(network)
        sim.simulate_until_max_time(queue.duration_s * 10)
        records = sim.get_all_records()
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    waiting = sum(len(node.all_individuals) for node in sim.transitive_nodes)
    served = [r for r in records if r.record_type == "service"]
    waits = [
        r.waiting_time
        for r in served
        if queue.warmup_s <= r.arrival_date < queue.duration_s  # every call is served
    ]
    calls, events = len(served) + waiting, 2 * len(served) + waiting
    return Run(wall, cpu, calls, events, waits, collections=collections.per_generation())


def scenario_for(queue: Queue, strategy: str) -> Scenario:
    """Our pool scenario of ``queue`` (as ``simulations/scenarios/erlang_check.yaml``)."""
    raw: dict[str, Any] = {
        "pool": {
            "agents": queue.agents,
            "rate_per_hour": queue.rate_per_hour,
            "mean_handle_s": queue.aht_s,
        },
        "duration_s": queue.duration_s,
        "warmup_s": queue.warmup_s,
        "drain_s": queue.duration_s,  # until the last call is served, as Ciw
        # Erlang's model: no occupancy cap, no SLA escalation reordering the queue.
        "policy": {
            "strategy": strategy,
            "occupancy_window_s": 0,
            "escalation_priority_boost": 0,
        },
        "sla": {"voice": queue.target_s},
    }
    return parse_scenario(raw, name=f"mmc-{strategy}")


def run_ours(scenario: Scenario, queue: Queue, seed: int, *, shortcut: bool = True) -> Run:
    """Our simulator: trace generation, the run and the KPIs, as ``python -m simulations``
    (``shortcut=False``: through the event loop even where the pooled shortcut applies)."""
    with Collections() as collections:
        started, cpu = time.perf_counter(), time.process_time()
        trace = generate_trace(scenario, seed)  # what ``simulate`` draws for this seed
        traced = time.perf_counter()
        result = simulate(scenario, seed=seed, calls=trace, shortcut=shortcut)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    waits = [
        r.wait_s
        for r in result.records
        if queue.warmup_s <= r.arrival_s < queue.duration_s and r.answered_s is not None
    ]
    unanswered = sum(1 for r in result.records if r.answered_s is None)
    if unanswered:
        raise RuntimeError(f"{unanswered} calls never answered: the drain is too short")
    return Run(
        wall,
        cpu,
        len(result.records),
        result.events,
        waits,
        traced - started,
        collections.per_generation(),
        result.kpis_s,
    )


# --- statistics and tables -----------------------------------------------------------------


def mean_ci(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean, 95 % half-width (Student t over seeds) and standard error."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, math.nan, math.nan
    error = statistics.stdev(values) / math.sqrt(len(values))
    return mean, T_975.get(len(values) - 1, 1.96) * error, error


def rate(
    runs: Sequence[Run], what: Callable[[Run], float], seconds: Callable[[Run], float]
) -> float:
    """Work per second over one repeat's runs (all seeds)."""
    return sum(what(r) for r in runs) / sum(seconds(r) for r in runs)


def speed_table(tallies: dict[str, Tally]) -> str:
    """Calls/s and events/s, median over repeats, and the same-repeat ratio to Ciw."""
    lines = [
        "| simulator | calls/run | calls/s (wall) | events/s (wall) | x Ciw (wall) "
        "| calls/s (CPU) | x Ciw (CPU) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    ciw_runs = tallies["Ciw"].runs
    for tool, tally in tallies.items():
        repeats = sorted(tally.runs)
        calls = [rate(tally.runs[k], lambda r: r.calls, lambda r: r.wall_s) for k in repeats]
        events = [rate(tally.runs[k], lambda r: r.events, lambda r: r.wall_s) for k in repeats]
        cpu = [rate(tally.runs[k], lambda r: r.calls, lambda r: r.cpu_s) for k in repeats]
        ratio = [
            c / rate(ciw_runs[k], lambda r: r.calls, lambda r: r.wall_s)
            for c, k in zip(calls, repeats, strict=True)
        ]
        ratio_cpu = [
            c / rate(ciw_runs[k], lambda r: r.calls, lambda r: r.cpu_s)
            for c, k in zip(cpu, repeats, strict=True)
        ]
        per_run = statistics.median(r.calls for r in tally.runs[repeats[0]])
        lines.append(
            f"| {tool} | {per_run:,.0f} | {statistics.median(calls):,.0f} "
            f"| {statistics.median(events):,.0f} | {statistics.median(ratio):.2f}x "
            f"| {statistics.median(cpu):,.0f} | {statistics.median(ratio_cpu):.2f}x |"
        )
    return "\n".join(lines)


TARGETS = {"ours: longest-idle": 3.0, "ours: balanced": 1.0}
"""Each of our policies' target, in multiples of Ciw's calls/s."""


def cost_table(tallies: dict[str, Tally]) -> str:
    """Wall µs per call (median over repeats): drawing the calls and the rest of the run,
    next to what the speed target allows per call in the same repeats."""

    def per_call(runs: Sequence[Run], seconds: Callable[[Run], float]) -> float:
        return 1e6 * sum(seconds(r) for r in runs) / sum(r.calls for r in runs)

    def collections(runs: dict[int, list[Run]]) -> str:
        every = [r.collections for repeat in runs.values() for r in repeat]
        return " / ".join(f"{statistics.median(c[g] for c in every):g}" for g in range(3))

    ciw_runs = tallies["Ciw"].runs
    lines = [
        "| simulator | µs per call | drawing the calls | the run (events, decisions, records, "
        "KPIs) | of which the KPIs | the target allows "
        "| collections per run (young / middle / full) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for tool, tally in tallies.items():
        repeats = sorted(tally.runs)
        total = statistics.median(per_call(tally.runs[k], lambda r: r.wall_s) for k in repeats)
        passes = collections(tally.runs)
        if tool == "Ciw":
            lines.append(f"| {tool} | {total:.1f} | - | - | - | - | {passes} |")
            continue
        trace = statistics.median(per_call(tally.runs[k], lambda r: r.trace_s) for k in repeats)
        kpis = statistics.median(per_call(tally.runs[k], lambda r: r.kpis_s) for k in repeats)
        allows = "-"
        if tool in TARGETS:
            allowed = statistics.median(
                per_call(ciw_runs[k], lambda r: r.wall_s) / TARGETS[tool] for k in repeats
            )
            allows = f"{allowed:.1f} ({TARGETS[tool]:g}x Ciw)"
        lines.append(
            f"| {tool} | {total:.1f} | {trace:.1f} | {total - trace:.1f} | {kpis:.1f} "
            f"| {allows} | {passes} |"
        )
    return "\n".join(lines)


def answers_table(tallies: dict[str, Tally], queue: Queue) -> str:
    """Each tool's figures over seeds (mean, 95 % CI) next to Erlang C."""
    exact = queue.erlang
    figures = (
        ("P(wait)", "p_wait", exact.p_wait, 4),
        (f"service level ({queue.target_s:g} s)", "service_level", exact.service_level, 4),
        ("ASA (s)", "asa_s", exact.asa_s, 2),
    )
    lines = [
        "| figure | Erlang C | " + " | ".join(tallies) + " |",
        "|---|---:|" + "---:|" * len(tallies),
    ]
    verdicts: list[bool] = []
    for label, attr, expected, digits in figures:
        fmt = f"{{:.{digits}f}}"
        cells = []
        for tally in tallies.values():
            first = min(tally.runs)
            per_seed = [
                getattr(Answers.of(r.waits, queue.target_s), attr) for r in tally.runs[first]
            ]
            mean, half, error = mean_ci(per_seed)
            # A gap below the printed precision is no disagreement: on a queue where nobody
            # waits, every seed gives exactly 0 and the standard error is 0 too.
            agrees = not math.isnan(error) and abs(mean - expected) <= max(
                3 * error, 0.5 * 10**-digits
            )
            verdicts.append(agrees)
            deviation = f"{(mean - expected) / error:+.1f} SE" if error else "SE 0"
            cells.append(
                f"{fmt.format(mean)} ± {fmt.format(half)} ({deviation}{'' if agrees else ', OFF'})"
            )
        lines.append(f"| {label} | {fmt.format(expected)} | " + " | ".join(cells) + " |")
    agreed = sum(verdicts)
    lines.append("")
    lines.append(
        f"{agreed}/{len(verdicts)} figures within 3 standard errors of Erlang C, or within "
        "the printed precision (mean over seeds ± 95 % CI; SE: standard error of that mean)."
    )
    return "\n".join(lines)


# --- the benchmark -------------------------------------------------------------------------


def bench_queue(queue: Queue, seeds: Sequence[int], repeats: int) -> dict[str, Tally]:
    """Every tool on every seed, ``repeats`` times, interleaved so load hits all alike."""
    longest_idle = scenario_for(queue, "longest_idle")
    balanced = scenario_for(queue, "balanced")
    ours = {  # tool -> (scenario, the pooled shortcut where it applies)
        "ours: longest-idle": (longest_idle, True),
        "ours: longest-idle, event loop": (longest_idle, False),
        "ours: balanced": (balanced, True),
        "ours: balanced, event loop": (balanced, False),
    }
    tallies = {tool: Tally() for tool in TOOLS}
    run_ciw(queue, 0)  # warm-up: imports and caches
    for scenario, shortcut in ours.values():
        run_ours(scenario, queue, 0, shortcut=shortcut)
    for repeat in range(repeats):
        for tally in tallies.values():
            tally.runs[repeat] = []
        for seed in seeds:
            gc.collect()  # each run starts on a clean heap: no one pays for another's garbage
            tallies["Ciw"].runs[repeat].append(run_ciw(queue, seed))
            for tool, (scenario, shortcut) in ours.items():
                gc.collect()
                run = run_ours(scenario, queue, seed, shortcut=shortcut)
                tallies[tool].runs[repeat].append(run)
        print(f"  repeat {repeat + 1}/{repeats} done", flush=True)
    return tallies


DAY_TARGET_S = 30.0
"""The 1,000-agent day's target wall time."""


def bench_day(repeats: int, seed: int) -> tuple[str, results.Record]:
    """The 1,000-agent day: wall time of ``simulate`` (median), calls and events, as a
    table and as a record."""
    scenario = load_scenario(DAY_SCENARIO)
    walls, cpus = [], []
    calls = events = 0
    for _ in range(repeats):
        started, cpu = time.perf_counter(), time.process_time()
        result = simulate(scenario, seed=seed)
        walls.append(time.perf_counter() - started)
        cpus.append(time.process_time() - cpu)
        calls, events = len(result.records), result.events
    wall = statistics.median(walls)
    verdict = "met" if wall < DAY_TARGET_S else "MISSED"
    record = {
        "kind": "day",
        "scenario": DAY_SCENARIO.name,
        "seed": seed,
        "agents": len(scenario.agents),
        "calls": calls,
        "events": events,
        "repeats": repeats,
        "wall_s": wall,
        "cpu_s": statistics.median(cpus),
        "target_s": DAY_TARGET_S,
    }
    table = "\n".join(
        [
            "| scenario | agents | calls | events | wall (median) | CPU | calls/s "
            "| target < 30 s |",
            "|---|---:|---:|---:|---:|---:|---:|---|",
            f"| thousand_agents.yaml --seed {seed} | {len(scenario.agents):,} | {calls:,} "
            f"| {events:,} | {wall:.1f} s | {statistics.median(cpus):.1f} s "
            f"| {calls / wall:,.0f} | {verdict} |",
        ]
    )
    return table, record


def ratio_to_ciw(tallies: dict[str, Tally], tool: str) -> float:
    """``tool``'s calls/s over Ciw's, wall clock, median of the same-repeat ratios."""
    ciw_runs, runs = tallies["Ciw"].runs, tallies[tool].runs
    return statistics.median(
        rate(runs[k], lambda r: r.calls, lambda r: r.wall_s)
        / rate(ciw_runs[k], lambda r: r.calls, lambda r: r.wall_s)
        for k in runs
    )


def speed_records(tallies: dict[str, Tally]) -> list[results.Record]:
    """Each of our policies' ratio to Ciw, with its target."""
    return [
        {
            "kind": "vs_ciw",
            "simulator": tool,
            "ratio_to_ciw": ratio_to_ciw(tallies, tool),
            "target_ratio": target,
            "repeats": len(tallies[tool].runs),
        }
        for tool, target in TARGETS.items()
    ]


def targets(tallies: dict[str, Tally]) -> str:
    """The speed targets, from the same-repeat wall-clock ratios."""
    li = ratio_to_ciw(tallies, "ours: longest-idle")
    bal = ratio_to_ciw(tallies, "ours: balanced")
    return (
        f"- longest-idle {li:.2f}x Ciw's calls/s (target >= 3x): "
        f"{'met' if li >= 3 else 'MISSED'}\n"
        f"- balanced {bal:.2f}x Ciw's calls/s (target >= 1x): {'met' if bal >= 1 else 'MISSED'}"
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments, run the queue benchmark and the 1,000-agent day, print tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6 h, 3 seeds, 1 repeat, no day")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (median)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per repeat (for the CIs)")
    parser.add_argument("--agents", type=int, default=20, help="c, the number of agents")
    parser.add_argument("--rate", type=float, default=340, help="arrivals per hour")
    parser.add_argument("--aht", type=float, default=180, help="mean handle time, seconds")
    parser.add_argument("--target", type=float, default=20, help="service-level target, s")
    parser.add_argument("--hours", type=float, default=24, help="simulated hours of arrivals")
    parser.add_argument("--day-repeats", type=int, default=1, help="1,000-agent day runs")
    parser.add_argument("--no-day", action="store_true", help="skip the 1,000-agent day")
    results.add_option(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.hours, args.seeds, args.repeats, args.no_day = 6, 3, 1, True
    if args.repeats < 1 or args.seeds < 2:
        parser.error("need --repeats >= 1 and --seeds >= 2 (a confidence interval)")
    logs.silence()
    queue = Queue(
        agents=args.agents,
        rate_per_hour=args.rate,
        aht_s=args.aht,
        target_s=args.target,
        duration_s=args.hours * 3600,
        warmup_s=min(3600.0, args.hours * 3600 / 4),
    )
    load = queue.rate_per_hour * queue.aht_s / 3600
    print(
        f"M/M/{queue.agents}: {queue.rate_per_hour:g} calls/h, {queue.aht_s:g} s handle time, "
        f"load {load:.2f} Erlangs, rho {load / queue.agents:.3f}; {args.hours:g} h of "
        f"arrivals, warm-up {queue.warmup_s:g} s, seeds 1..{args.seeds}, "
        f"{args.repeats} repeat(s); Ciw {ciw.__version__}",
        flush=True,
    )
    tallies = bench_queue(queue, range(1, args.seeds + 1), args.repeats)
    print()
    print(speed_table(tallies))
    print()
    print(cost_table(tallies))
    print()
    print(answers_table(tallies, queue))
    print()
    print(targets(tallies))
    records = speed_records(tallies)
    if not args.no_day:
        table, day = bench_day(args.day_repeats, seed=1)
        print()
        print(table, flush=True)
        records.append(day)
    results.write(args.json, "bench_simulator", argv, records, quick=args.quick)


if __name__ == "__main__":
    main()
