"""KPIs of one run, from flat per-call records and per-agent intervals, and the output files.

Calls count when they arrive in ``[warmup_s, duration_s)`` (the *measured* calls); agent time
counts inside the same window. ``kpis.json`` (sorted keys, indent 2, floats rounded to 6
digits, ``null`` where a figure is undefined, no wall-clock values)::

    scenario, policy (strategy), seed, duration_s, warmup_s
    calls            calls simulated (warm-up included)
    events           events processed
    overall, channels.<channel>:
        offered          measured calls
        answered         taken by an agent
        abandoned        caller hung up while waiting
        abandon_rate     abandoned / offered
        service_level    answered within the channel's SLA target / offered
                         (abandoned and never-answered calls are misses)
        asa_s            mean wait of answered calls
        wait_p50_s, wait_p90_s, wait_p99_s   percentiles of the answered calls' waits
        sla_breaches     calls that waited longer than the target (answered late, abandoned
                         late, or still waiting past it at the end)
    agents.<id>:
        handled          measured calls the agent completed
        occupancy        busy / logged-in time in the window; busy time is unit-weighted
                         (one chat of 25 units counts a quarter), wrap-up included; logged-in
                         time is the available time plus work past a shift end or into a break
        peak_occupancy   highest rolling occupancy (the engine's definition, over the
                         policy's occupancy window, 1 h if it has none) sampled every 60 s
        top_performer    flagged in the scenario, else among the top 10 % by true quality
    fairness:        over agents with logged-in time: occupancy_mean, occupancy_std,
                     occupancy_gini, handled_gini
    top_performers:  share_of_calls (of completed measured calls), mean_occupancy,
                     peak_occupancy (the highest among them)
    quality:         skill_match_mean (scoring.match.skill_fit of who handled each call),
                     estimated_csat, estimated_resolution (simulations.outcomes expectations)
    timeline:        bucket_s and per bucket of the whole run from 0 to duration_s:
                     arrivals, service_level (of calls arriving in the bucket; null if none),
                     queue_max (most calls waiting at once), occupancy_mean (busy / logged-in
                     time of all agents; null if nobody was logged in)

``records.csv`` has one row per call (warm-up included) in arrival order::

    call_id, channel, arrival_s, answered_s, wait_s, abandoned (0/1), agent_id, handle_s,
    end_s, skill_match, within_sla (0/1), priority

Empty cells for what did not happen (never answered: no answered_s, agent_id, handle_s,
end_s, skill_match). Times have 3 decimals (the millisecond clock).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from router.domain import AGENT_UNIT_BUDGET, Policy
from simulations.model import Scenario
from simulations.outcomes import expected_csat

if TYPE_CHECKING:
    from simulations.simulator import AgentResult, CallResult

DIGITS = 6
PEAK_STEP_S = 60
TOP_SHARE = 0.1
"""Share of agents (by true quality) that are top performers when none is flagged."""
RECORD_COLUMNS = (
    "call_id",
    "channel",
    "arrival_s",
    "answered_s",
    "wait_s",
    "abandoned",
    "agent_id",
    "handle_s",
    "end_s",
    "skill_match",
    "within_sla",
    "priority",
)


def compute_kpis(
    *,
    scenario: Scenario,
    policy: Policy,
    seed: int,
    records: Sequence[CallResult],
    agents: Mapping[str, AgentResult],
    events: int,
    queue_trace: Sequence[tuple[float, int]],
) -> dict[str, Any]:
    """The ``kpis.json`` document (see the module docstring)."""
    start, end = scenario.warmup_s, scenario.duration_s
    measured = [r for r in records if start <= r.arrival_s < end]
    targets = {c: float(t.target_s) for c, t in policy.sla.items()}
    channels = sorted({r.channel for r in measured} | {s.channel for s in scenario.streams})
    tops = top_performers(agents)
    logged = {a: _union([*_pairs(r.staffed), *_pairs(r.busy)]) for a, r in agents.items()}
    handled = dict.fromkeys(agents, 0)
    completed = by_tops = 0
    skill_matches: list[float] = []
    qualities: list[float] = []
    for r in measured:  # one pass over the completed calls: who took them, and how well
        agent_id = r.agent_id
        if agent_id:
            handled[agent_id] += 1
            completed += 1
            by_tops += agent_id in tops
            if r.skill_match is not None:
                skill_matches.append(r.skill_match)
            if r.quality is not None:
                qualities.append(r.quality)
    window_s = float(policy.occupancy_window_s or 3600)
    per_agent: dict[str, dict[str, Any]] = {}
    worked: list[str] = []
    for agent_id, result in agents.items():
        busy = _busy_units_s(result.busy, start, end) / AGENT_UNIT_BUDGET
        present = _length(logged[agent_id], start, end)
        occ = min(1.0, busy / present) if present > 0 else 0.0
        if present > 0:
            worked.append(agent_id)
        per_agent[agent_id] = {
            "handled": handled[agent_id],
            "occupancy": occ,
            "peak_occupancy": _peak(result.busy, start, end, window_s),
            "top_performer": agent_id in tops,
        }
    occupancies = [per_agent[a]["occupancy"] for a in worked]
    counts = [float(per_agent[a]["handled"]) for a in worked]
    top_ids = [a for a in agents if a in tops]
    overall = _service(measured, targets)
    kpis: dict[str, Any] = {
        "scenario": scenario.name,
        "policy": policy.strategy.value,
        "seed": seed,
        "duration_s": end,
        "warmup_s": start,
        "calls": len(records),
        "events": events,
        "overall": overall,
        "channels": {  # one channel: every measured call is on it, so its figures are overall's
            c.value: (
                dict(overall)
                if len(channels) == 1
                else _service([r for r in measured if r.channel == c], targets)
            )
            for c in channels
        },
        "agents": per_agent,
        "fairness": {
            "occupancy_mean": _mean(occupancies),
            "occupancy_std": float(np.std(occupancies)) if occupancies else None,
            "occupancy_gini": gini(occupancies),
            "handled_gini": gini(counts),
        },
        "top_performers": {
            "share_of_calls": by_tops / completed if completed else None,
            "mean_occupancy": _mean([per_agent[a]["occupancy"] for a in top_ids]),
            "peak_occupancy": max((per_agent[a]["peak_occupancy"] for a in top_ids), default=None),
        },
        "quality": {
            "skill_match_mean": _mean(skill_matches),
            "estimated_csat": _mean([expected_csat(q) for q in qualities]),
            "estimated_resolution": _mean(qualities),
        },
        "timeline": _timeline(
            scenario=scenario,
            records=records,
            targets=targets,
            agents=agents,
            logged=logged,
            queue_trace=queue_trace,
        ),
    }
    document: dict[str, Any] = rounded(kpis)
    return document


def top_performers(agents: Mapping[str, AgentResult]) -> set[str]:
    """Flagged agents, else the top ``TOP_SHARE`` by true quality (at least one)."""
    flagged = {a for a, r in agents.items() if r.top_performer}
    if flagged or not agents:
        return flagged
    ranked = sorted(agents.values(), key=lambda r: (-r.quality, r.agent_id))
    return {r.agent_id for r in ranked[: max(1, math.ceil(TOP_SHARE * len(ranked)))]}


def _service(calls: Sequence[CallResult], targets: Mapping[Any, float]) -> dict[str, Any]:
    offered = len(calls)
    answered_waits: list[float] = []
    abandoned = breaches = within = 0
    for r in calls:  # one pass: the counts, and the waits of answered calls
        if r.answered_s is not None:
            answered_waits.append(r.wait_s)
        abandoned += r.abandoned
        breaches += r.wait_s > targets.get(r.channel, math.inf)
        within += r.within_sla
    waits = np.array(answered_waits, dtype=float)

    def pct(q: float) -> float | None:
        return float(np.percentile(waits, q)) if len(waits) else None

    return {
        "offered": offered,
        "answered": len(answered_waits),
        "abandoned": abandoned,
        "abandon_rate": abandoned / offered if offered else None,
        "service_level": within / offered if offered else None,
        "asa_s": float(waits.mean()) if len(waits) else None,
        "wait_p50_s": pct(50),
        "wait_p90_s": pct(90),
        "wait_p99_s": pct(99),
        "sla_breaches": breaches,
    }


def gini(values: Sequence[float]) -> float | None:
    """Gini coefficient of non-negative ``values`` (0: all equal); ``None`` when empty."""
    if not values:
        return None
    x = np.sort(np.asarray(values, dtype=float))
    total = float(x.sum())
    if total <= 0:
        return 0.0
    n = len(x)
    ranks = np.arange(1, n + 1)
    return float(((2 * ranks - n - 1) * x).sum() / (n * total))


def _mean(values: Sequence[float]) -> float | None:
    return float(sum(values) / len(values)) if values else None


def _pairs(intervals: Iterable[tuple[Any, ...]]) -> list[tuple[float, float]]:
    return [(float(i[0]), float(i[1])) for i in intervals]


def _union(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Sorted, merged intervals."""
    merged: list[tuple[float, float]] = []
    for lo, hi in sorted(intervals):
        if hi <= lo:
            continue
        if merged and lo <= merged[-1][1]:
            if hi > merged[-1][1]:  # max(merged[-1][1], hi)
                merged[-1] = (merged[-1][0], hi)
        else:
            merged.append((lo, hi))
    return merged


def _length(intervals: Iterable[tuple[float, float]], start: float, end: float) -> float:
    total = 0.0
    for lo, hi in intervals:  # sum(max(0.0, min(hi, end) - max(lo, start))), in that order
        span = (end if end < hi else hi) - (start if start > lo else lo)
        total += span if span > 0.0 else 0.0
    return total


def _busy_units_s(busy: Iterable[tuple[float, float, int]], start: float, end: float) -> float:
    total = 0.0
    for lo, hi, units in busy:  # the sum of units * overlap with [start, end], in that order
        span = (end if end < hi else hi) - (start if start > lo else lo)
        total += units * (span if span > 0.0 else 0.0)
    return total


def _triples(items: Iterable[tuple[float, float, float]]) -> np.ndarray:
    """``(start, end, weight)`` items as an ``(n, 3)`` float array: the floats
    ``np.asarray(items, dtype=float)`` gives, read in one flat pass (about half its time)."""
    return np.fromiter(chain.from_iterable(items), float).reshape(-1, 3)


def _cumulative(
    intervals: Sequence[tuple[float, float, float]] | np.ndarray, at: np.ndarray
) -> np.ndarray:
    """``sum(weight * overlap(interval, [0, t]))`` at every ``t`` in ``at`` (piecewise linear);
    ``(start, end, units)`` items as they are (their int units read as floats)."""
    if len(intervals) == 0:
        return np.zeros(len(at))
    arr = intervals if isinstance(intervals, np.ndarray) else _triples(intervals)
    times = np.concatenate([arr[:, 0], arr[:, 1]])
    slopes = np.concatenate([arr[:, 2], -arr[:, 2]])
    order = np.argsort(times, kind="stable")
    times, slopes = times[order], slopes[order]
    rate = np.cumsum(slopes)  # slope after each breakpoint
    values = np.concatenate([[0.0], np.cumsum(rate[:-1] * np.diff(times))])
    result: np.ndarray = np.interp(at, times, values, left=0.0, right=float(values[-1]))
    return result


def _peak(
    busy: Sequence[tuple[float, float, int]], start: float, end: float, window_s: float
) -> float:
    """Highest rolling occupancy over ``window_s`` sampled every ``PEAK_STEP_S`` in the run."""
    if not busy:
        return 0.0
    grid = np.arange(max(start, 0.0) + PEAK_STEP_S, end + PEAK_STEP_S / 2, PEAK_STEP_S)
    if len(grid) == 0:
        grid = np.array([end])
    items = _triples(busy)  # once for both ends of the window
    rolling = _cumulative(items, grid) - _cumulative(items, grid - window_s)
    return float(min(1.0, max(0.0, rolling.max() / (window_s * AGENT_UNIT_BUDGET))))


def _timeline(
    *,
    scenario: Scenario,
    records: Sequence[CallResult],
    targets: Mapping[Any, float],
    agents: Mapping[str, AgentResult],
    logged: Mapping[str, list[tuple[float, float]]],
    queue_trace: Sequence[tuple[float, int]],
) -> dict[str, Any]:
    bucket = float(scenario.timeline_bucket_s)
    count = max(1, math.ceil(scenario.duration_s / bucket))
    arrivals = [0] * count
    within = [0] * count
    for r in records:
        b = int(r.arrival_s // bucket)
        if 0 <= b < count:
            arrivals[b] += 1
            within[b] += r.within_sla
    # the most calls waiting at once: the level entering the bucket and every change in it
    queue_max = [0] * count
    level, i, changes = 0, 0, len(queue_trace)
    for b in range(count):
        peak = level
        edge = (b + 1) * bucket
        while i < changes:
            at, size = queue_trace[i]
            if at >= edge:
                break
            level = size
            peak = size if size > peak else peak  # max(peak, size), without the call
            i += 1
        queue_max[b] = peak
    edges = np.arange(count + 1, dtype=float) * bucket
    busy = [item for r in agents.values() for item in r.busy]
    present = [(lo, hi, float(AGENT_UNIT_BUDGET)) for spans in logged.values() for lo, hi in spans]
    busy_per = np.diff(_cumulative(busy, edges))
    present_per = np.diff(_cumulative(present, edges))
    occupancy = [
        min(1.0, float(b) / float(p)) if p > 0 else None
        for b, p in zip(busy_per, present_per, strict=True)
    ]
    return {
        "bucket_s": int(bucket),
        "arrivals": arrivals,
        "service_level": [w / a if a else None for w, a in zip(within, arrivals, strict=True)],
        "queue_max": queue_max,
        "occupancy_mean": occupancy,
    }


def rounded(value: Any) -> Any:
    """``value`` with every float rounded to ``DIGITS`` (and -0.0 made 0.0)."""
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return round(value, DIGITS) + 0.0
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [rounded(v) for v in value]
    return value


def kpis_json(kpis: Mapping[str, Any]) -> str:
    """The exact text of ``kpis.json``."""
    return json.dumps(kpis, sort_keys=True, indent=2, allow_nan=False) + "\n"


def records_csv(records: Iterable[CallResult]) -> str:
    """The exact text of ``records.csv``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(RECORD_COLUMNS)
    for r in records:
        writer.writerow(
            [
                r.call_id,
                r.channel.value,
                f"{r.arrival_s:.3f}",
                "" if r.answered_s is None else f"{r.answered_s:.3f}",
                f"{r.wait_s:.3f}",
                int(r.abandoned),
                r.agent_id,
                "" if r.handle_s is None else f"{r.handle_s:.3f}",
                "" if r.end_s is None else f"{r.end_s:.3f}",
                "" if r.skill_match is None else f"{r.skill_match:.6f}",
                int(r.within_sla),
                r.priority,
            ]
        )
    return buffer.getvalue()


def write_outputs(out_dir: Path, kpis: Mapping[str, Any], records: Iterable[CallResult]) -> None:
    """Write ``kpis.json`` and ``records.csv`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "kpis.json").write_text(kpis_json(kpis), encoding="utf-8")
    (out_dir / "records.csv").write_text(records_csv(records), encoding="utf-8")
