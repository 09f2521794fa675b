"""KPIs of one run, from flat per-call records and per-agent intervals, and the output files.

Calls count when they arrive in ``[warmup_s, duration_s)`` (the *measured* calls); agent time
counts inside the same window. ``kpis.json`` (sorted keys, indent 2, floats rounded to 6
digits, ``null`` where a figure is undefined, no wall-clock values)::

    scenario, policy (strategy), seed, duration_s, warmup_s
    calls            calls simulated (warm-up included)
    events           events processed
    overall, channels.<channel>:
        offered          measured calls
        answered         taken by an agent (at least once)
        abandoned        caller hung up while waiting
        abandon_rate     abandoned / offered
        expired          left the queue at the channel's queue time limit (policy
                         max_wait_s); only when the policy sets one, for every channel
        expire_rate      expired / offered (with expired)
        service_level    answered within the channel's SLA target / offered
                         (calls never answered - abandoned, expired, still waiting -
                         are misses)
        asa_s            mean wait of answered calls
        wait_p50_s, wait_p90_s, wait_p99_s   percentiles of the answered calls' waits
        sla_breaches     calls that waited longer than the target (answered late, abandoned
                         or expired late, or still waiting past it at the end)
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
    top_performers:  share_of_calls (of completed measured calls), mean_occupancy (over
                     those with logged-in time, like fairness), peak_occupancy (the highest
                     among them)
    quality:         skill_match_mean (scoring.match.skill_fit of who handled each call),
                     estimated_csat, estimated_resolution (simulations.outcomes expectations)
    timeline:        bucket_s and per bucket of the whole run from 0 to duration_s:
                     arrivals, service_level (of calls arriving in the bucket; null if none),
                     queue_max (most calls waiting at once), occupancy_mean (busy / logged-in
                     time of all agents; null if nobody was logged in)

A call counts by its first outcome, as the service's GetStats counts it: one an agent answered
is answered, its wait running to that first answer (the service level, ASA, percentiles and
breaches read it), even if it went back to the queue (released, or reclaimed from an agent who
left) and was then answered again, abandoned or expired; then it is also abandoned or expired,
as GetStats counts every abandon and expiry.

``records.csv`` has one row per call (warm-up included) in arrival order::

    call_id, channel, arrival_s, answered_s, wait_s, abandoned (0/1), agent_id, handle_s,
    end_s, skill_match, within_sla (0/1), priority

and, when the policy sets a queue time limit (``max_wait_s``), a trailing column::

    expired (0/1)    the call left the queue at its channel's limit (its wait_s: until then,
                     or until its first answer if an agent had it before a hand-back)

Empty cells for what did not happen (never answered: no answered_s, agent_id, handle_s,
end_s, skill_match). agent_id, handle_s and end_s (and skill_match) are those of the agent who
completed the call: empty for a call not completed by the end of the run, even one an agent
answered and still held then (its answered_s and wait_s are set). Times have 3 decimals (the
millisecond clock).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain, compress, repeat
from operator import attrgetter, is_not
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from router.domain import AGENT_UNIT_BUDGET, Policy
from simulations.model import Scenario, queue_limits_ms
from simulations.outcomes import expected_csat

if TYPE_CHECKING:
    from simulations.simulator import AgentResult, CallResult

_ABANDONED, _AGENT_ID, _ANSWERED, _ARRIVAL, _CHANNEL, _EXPIRED = (
    attrgetter(f)
    for f in ("abandoned", "agent_id", "answered_s", "arrival_s", "channel", "expired")
)
_QUALITY, _SKILL_MATCH, _WAIT, _WITHIN_SLA = (
    attrgetter(f)
    for f in (
        "quality",
        "skill_match",
        "wait_s",
        "within_sla",
    )
)
"""Fields of a ``CallResult``, read for a column of calls at a time."""
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
OPTIONAL_RECORD_COLUMNS = ("expired",)
"""Trailing ``records.csv`` columns, written only when the policy sets a queue time limit
(``max_wait_s``): then ``kpis.json`` has the ``expired`` figures too."""


@dataclass(slots=True)
class QueueLevels:
    """Calls waiting after each change of the queue length, in time order, as two columns
    (no tuple per change for the garbage collector to track)."""

    times_s: list[float] = field(default_factory=list)
    """When the queue changed (seconds of the run)."""
    sizes: list[int] = field(default_factory=list)
    """How many calls waited after that change."""


def compute_kpis(
    *,
    scenario: Scenario,
    policy: Policy,
    seed: int,
    records: Sequence[CallResult],
    agents: Mapping[str, AgentResult],
    events: int,
    queue_trace: QueueLevels,
) -> dict[str, Any]:
    """The ``kpis.json`` document (see the module docstring)."""
    start, end = scenario.warmup_s, scenario.duration_s
    arrival = np.fromiter(map(_ARRIVAL, records), float, len(records))
    measured = list(compress(records, ((arrival >= start) & (arrival < end)).tolist()))
    targets = {c: float(t.target_s) for c, t in policy.sla.items()}
    channels = sorted(set(map(_CHANNEL, measured)) | {s.channel for s in scenario.streams})
    tops = top_performers(agents)
    items = {a: r.busy for a, r in agents.items()}
    logged = {a: _logged(r.staffed, items[a]) for a, r in agents.items()}
    holders = list(map(_AGENT_ID, measured))
    done = list(compress(measured, holders))  # the completed calls: who took them, how well
    handled = dict.fromkeys(agents, 0)
    for agent_id, count in Counter(holders).items():
        if agent_id:
            handled[agent_id] += count
    completed, by_tops = len(done), sum(handled[a] for a in tops)
    skill_matches = [m for m in map(_SKILL_MATCH, done) if m is not None]
    qualities = [q for q in map(_QUALITY, done) if q is not None]
    window_s = float(policy.occupancy_window_s or 3600)
    per_agent: dict[str, dict[str, Any]] = {}
    worked: list[str] = []
    for agent_id in agents:
        busy = _busy_units_s(items[agent_id], start, end) / AGENT_UNIT_BUDGET
        present = _length(logged[agent_id], start, end)
        occ = min(1.0, busy / present) if present > 0 else 0.0
        if present > 0:
            worked.append(agent_id)
        per_agent[agent_id] = {
            "handled": handled[agent_id],
            "occupancy": occ,
            "peak_occupancy": _peak(items[agent_id], start, end, window_s),
            "top_performer": agent_id in tops,
        }
    occupancies = [per_agent[a]["occupancy"] for a in worked]
    counts = [float(per_agent[a]["handled"]) for a in worked]
    top_ids = [a for a in worked if a in tops]  # like the fairness figures: those logged in
    expiring = bool(queue_limits_ms(policy))
    overall = _service(measured, targets, expiring=expiring)
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
                else _service([r for r in measured if r.channel == c], targets, expiring=expiring)
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
            "estimated_csat": _mean(expected_csat(np.array(qualities)).tolist()),
            "estimated_resolution": _mean(qualities),
        },
        "timeline": _timeline(
            scenario=scenario,
            records=records,
            arrival=arrival,
            items=items,
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


def _service(
    calls: Sequence[CallResult], targets: Mapping[Any, float], *, expiring: bool
) -> dict[str, Any]:
    """The service figures of ``calls`` (``expiring``: with the expired ones)."""
    offered = len(calls)
    wait = np.fromiter(map(_WAIT, calls), float, offered)
    target = np.fromiter(map(targets.get, map(_CHANNEL, calls), repeat(math.inf)), float, offered)
    answered = np.fromiter(map(is_not, map(_ANSWERED, calls), repeat(None)), bool, offered)
    waits = wait[answered]  # of the answered calls, in call order
    abandoned, within = sum(map(_ABANDONED, calls)), sum(map(_WITHIN_SLA, calls))

    def pct(q: float) -> float | None:
        return float(np.percentile(waits, q)) if len(waits) else None

    figures: dict[str, Any] = {
        "offered": offered,
        "answered": len(waits),
        "abandoned": abandoned,
        "abandon_rate": abandoned / offered if offered else None,
        "service_level": within / offered if offered else None,
        "asa_s": float(waits.mean()) if len(waits) else None,
        "wait_p50_s": pct(50),
        "wait_p90_s": pct(90),
        "wait_p99_s": pct(99),
        "sla_breaches": int(np.count_nonzero(wait > target)),
    }
    if expiring:
        expired = sum(map(_EXPIRED, calls))
        figures["expired"] = expired
        figures["expire_rate"] = expired / offered if offered else None
    return figures


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


def _logged(staffed: Iterable[tuple[Any, ...]], items: np.ndarray) -> list[tuple[float, float]]:
    """The union of the ``staffed`` spans and the busy ``items`` (``AgentResult.busy``): sorted,
    merged intervals. One staffed span holding every item is the union itself (an agent who
    worked only while available: no item to sort or merge)."""
    spans = _pairs(staffed)
    if len(spans) == 1:
        lo, hi = spans[0]
        if lo < hi and (len(items) == 0 or (items[:, 0].min() >= lo and items[:, 1].max() <= hi)):
            return spans
    return _union([*spans, *zip(items[:, 0].tolist(), items[:, 1].tolist(), strict=True)])


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


def _busy_units_s(items: np.ndarray, start: float, end: float) -> float:
    """The sum of units * overlap with ``[start, end]`` over the busy ``items``
    (``AgentResult.busy``), added in their order as a loop would (``cumsum`` adds one by one)."""
    if len(items) == 0:
        return 0.0
    span = np.minimum(items[:, 1], end) - np.maximum(items[:, 0], start)
    return float(np.cumsum(items[:, 2] * np.where(span > 0.0, span, 0.0))[-1])


def busy_items(items: Iterable[tuple[float, float, float]] | np.ndarray) -> np.ndarray:
    """``(start, end, units)`` items as ``AgentResult.busy`` holds them: a read-only
    ``(n, 3)`` float array, sorted as Python sorts the tuples (start, then end, then units)."""
    rows = items if isinstance(items, np.ndarray) else _triples(items)
    ordered = rows[np.lexsort((rows[:, 2], rows[:, 1], rows[:, 0]))]
    ordered.flags.writeable = False
    return ordered


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
    return _interp(_breakpoints(intervals), at)


def _breakpoints(
    intervals: Sequence[tuple[float, float, float]] | np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """``_cumulative``'s sum at each start and end of the (non-empty) ``intervals``: the
    breakpoints in time order and the values there."""
    arr = intervals if isinstance(intervals, np.ndarray) else _triples(intervals)
    times = np.concatenate([arr[:, 0], arr[:, 1]])
    slopes = np.concatenate([arr[:, 2], -arr[:, 2]])
    order = np.argsort(times, kind="stable")
    times, slopes = times[order], slopes[order]
    rate = np.cumsum(slopes)  # slope after each breakpoint
    return times, np.concatenate([[0.0], np.cumsum(rate[:-1] * np.diff(times))])


def _interp(points: tuple[np.ndarray, np.ndarray], at: np.ndarray) -> np.ndarray:
    """The piecewise linear sum through ``_breakpoints`` at every ``t`` in ``at``."""
    times, values = points
    result: np.ndarray = np.interp(at, times, values, left=0.0, right=float(values[-1]))
    return result


def _peak(items: np.ndarray, start: float, end: float, window_s: float) -> float:
    """Highest rolling occupancy over ``window_s`` sampled every ``PEAK_STEP_S`` in the run
    (``items``: the agent's busy items, ``AgentResult.busy``)."""
    if len(items) == 0:
        return 0.0
    grid = np.arange(max(start, 0.0) + PEAK_STEP_S, end + PEAK_STEP_S / 2, PEAK_STEP_S)
    if len(grid) == 0:
        grid = np.array([end])
    points = _breakpoints(items)  # once for both ends of the window
    rolling = _interp(points, grid) - _interp(points, grid - window_s)
    return float(min(1.0, max(0.0, rolling.max() / (window_s * AGENT_UNIT_BUDGET))))


def _timeline(
    *,
    scenario: Scenario,
    records: Sequence[CallResult],
    arrival: np.ndarray,
    items: Mapping[str, np.ndarray],
    logged: Mapping[str, list[tuple[float, float]]],
    queue_trace: QueueLevels,
) -> dict[str, Any]:
    bucket = float(scenario.timeline_bucket_s)
    count = max(1, math.ceil(scenario.duration_s / bucket))
    within_sla = np.fromiter(map(_WITHIN_SLA, records), bool, len(records))
    arrivals, within = _per_bucket(arrival, within_sla, bucket, count)
    edges = np.arange(count + 1, dtype=float) * bucket
    busy = np.concatenate([np.empty((0, 3)), *items.values()])  # the agents' in their order
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
        "queue_max": _queue_max(queue_trace, bucket, count),
        "occupancy_mean": occupancy,
    }


def _per_bucket(
    arrival: np.ndarray, within_sla: np.ndarray, bucket: float, count: int
) -> tuple[list[int], list[int]]:
    """Calls arriving in each of ``count`` buckets, and of them those answered within the
    SLA (``within_sla``: a flag per call); calls before 0 or past the last bucket count
    nowhere."""
    index = np.floor_divide(arrival, bucket)  # Python's ``//`` on floats, value for value
    inside = (index >= 0) & (index < count)
    index = index[inside].astype(np.int64)
    arrivals: list[int] = np.bincount(index, minlength=count).tolist()
    within: list[int] = np.bincount(index[within_sla[inside]], minlength=count).tolist()
    return arrivals, within


def _queue_max(queue_trace: QueueLevels, bucket: float, count: int) -> list[int]:
    """The most calls waiting at once in each of ``count`` buckets: the level entering the
    bucket and every change in it (a change before 0 counts in the first bucket, one past the
    last bucket nowhere)."""
    if not queue_trace.times_s:
        return [0] * count
    at = np.asarray(queue_trace.times_s, float)
    size = np.asarray(queue_trace.sizes, np.int64)
    ends = np.searchsorted(at, np.arange(1, count + 1, dtype=float) * bucket, side="left")
    begins = np.concatenate([[0], ends[:-1]])  # bucket b: changes begins[b]..ends[b] - 1
    peak = np.where(begins > 0, size[begins - 1], 0)  # the level entering each bucket
    changed = ends > begins
    if changed.any():  # buckets in order, so each changed one's changes end where the next's begin
        highest = np.maximum.reduceat(size[: ends[-1]], begins[changed])
        peak[changed] = np.maximum(peak[changed], highest)
    levels: list[int] = peak.tolist()
    return levels


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


def records_csv(records: Iterable[CallResult], *, expired: bool = False) -> str:
    """The exact text of ``records.csv`` (``expired``: with the ``expired`` column)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow((*RECORD_COLUMNS, *OPTIONAL_RECORD_COLUMNS) if expired else RECORD_COLUMNS)
    for r in records:
        row = [
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
        if expired:
            row.append(int(r.expired))
        writer.writerow(row)
    return buffer.getvalue()


def write_outputs(out_dir: Path, kpis: Mapping[str, Any], records: Iterable[CallResult]) -> None:
    """Write ``kpis.json`` and ``records.csv`` into ``out_dir``; the records carry the
    ``expired`` column when the KPIs count expired calls (the policy sets a queue time
    limit)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    expired = "expired" in kpis.get("overall", {})
    (out_dir / "kpis.json").write_text(kpis_json(kpis), encoding="utf-8")
    (out_dir / "records.csv").write_text(records_csv(records, expired=expired), encoding="utf-8")
