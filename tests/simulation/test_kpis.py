"""The KPI document's interval and timeline figures, against one-item-at-a-time references.

``simulations.kpis`` reads each agent's busy items once into an array and works on arrays;
the references below are the plain loops those figures are defined by. The document must
equal theirs float for float (the golden files hold it to the byte on the bundled scenarios;
these tests reach the edges: items outside the staffed span, several spans, unsorted or
empty items, changes before the first and after the last bucket).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from simulations.kpis import (
    QueueLevels,
    _busy_units_s,
    _logged,
    _per_bucket,
    _queue_max,
    _triples,
)
from simulations.scenario import parse_scenario
from simulations.simulator import simulate

Span = tuple[float, float]
Item = tuple[float, float, int]


def reference_logged(staffed: Sequence[Span], busy: Sequence[Item]) -> list[Span]:
    """Sorted, merged union of the staffed spans and the busy items' spans."""
    merged: list[Span] = []
    for lo, hi in sorted(
        [(float(a), float(b)) for a, b in staffed] + [(float(i[0]), float(i[1])) for i in busy]
    ):
        if hi <= lo:
            continue
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def reference_busy_units(busy: Sequence[Item], start: float, end: float) -> float:
    """Units times overlap with ``[start, end]``, summed item by item."""
    total = 0.0
    for lo, hi, units in busy:
        total += units * max(0.0, min(hi, end) - max(lo, start))
    return total


def reference_per_bucket(
    calls: Sequence[tuple[float, bool]], bucket: float, count: int
) -> tuple[list[int], list[int]]:
    """Per bucket: calls arriving in it, and of them those answered within the SLA."""
    arrivals, within = [0] * count, [0] * count
    for arrival_s, within_sla in calls:
        b = int(arrival_s // bucket)
        if 0 <= b < count:
            arrivals[b] += 1
            within[b] += within_sla
    return arrivals, within


def levels(queue_trace: Sequence[tuple[float, int]]) -> QueueLevels:
    return QueueLevels([at for at, _ in queue_trace], [size for _, size in queue_trace])


def reference_queue_max(
    queue_trace: Sequence[tuple[float, int]], bucket: float, count: int
) -> list[int]:
    """Per bucket: the level entering it and the highest level any change in it left."""
    peaks, level, i = [], 0, 0
    for b in range(count):
        peak = level
        while i < len(queue_trace) and queue_trace[i][0] < (b + 1) * bucket:
            level = queue_trace[i][1]
            peak = max(peak, level)
            i += 1
        peaks.append(peak)
    return peaks


times = st.integers(min_value=-50, max_value=400).map(lambda t: t / 4)
items = st.lists(st.tuples(times, times, st.integers(min_value=1, max_value=100)), max_size=30).map(
    sorted
)
spans = st.lists(st.tuples(times, times), max_size=4)


@settings(max_examples=400, deadline=None)
@given(staffed=spans, busy=items)
def test_logged_time_is_the_union_of_staffed_spans_and_busy_items(
    staffed: list[Span], busy: list[Item]
) -> None:
    assert _logged(staffed, _triples(busy)) == reference_logged(staffed, busy)


@settings(max_examples=200, deadline=None)
@given(lo=times, length=st.integers(min_value=1, max_value=200), busy=items)
def test_one_staffed_span_holding_every_item_is_the_logged_time(
    lo: float, length: int, busy: list[Item]
) -> None:
    staffed = [(lo, lo + length)]
    inside = [(max(a, lo), min(max(a, lo), lo + length), u) for a, _, u in busy]
    assert _logged(staffed, _triples(inside)) == reference_logged(staffed, inside) == staffed


def test_unsorted_items_and_items_past_the_span() -> None:
    busy = [(50.0, 70.0, 1), (10.0, 20.0, 1), (95.0, 130.0, 2), (-5.0, -1.0, 1)]
    staffed = [(0.0, 100.0)]
    assert _logged(staffed, _triples(busy)) == [(-5.0, -1.0), (0.0, 130.0)]
    assert _logged(staffed, _triples(busy)) == reference_logged(staffed, busy)
    assert _logged([], _triples([])) == []
    assert _logged([(5.0, 5.0)], _triples([(1.0, 2.0, 1)])) == [(1.0, 2.0)]


@settings(max_examples=400, deadline=None)
@given(busy=items, start=times, length=st.integers(min_value=0, max_value=400))
def test_busy_units_are_summed_item_by_item(busy: list[Item], start: float, length: int) -> None:
    end = start + length / 4
    got = _busy_units_s(_triples(busy), start, end)
    assert got == reference_busy_units(busy, start, end)
    assert math.copysign(1.0, got) == 1.0


def test_busy_units_of_no_items_and_of_uneven_sums() -> None:
    assert _busy_units_s(_triples([]), 0.0, 10.0) == 0.0
    # A hundred tenths added one by one come to 9.99999999999998; numpy's pairwise sum
    # gives 9.999999999999998: the figure keeps the loop's rounding.
    tenths = [(0.0, 0.1, 1)] * 100
    assert _busy_units_s(_triples(tenths), 0.0, 1.0) == reference_busy_units(tenths, 0.0, 1.0)
    assert reference_busy_units(tenths, 0.0, 1.0) != float(np.sum(_triples(tenths)[:, 1]))


changes = st.lists(
    st.tuples(st.integers(min_value=-20, max_value=700).map(lambda t: t / 2), st.integers(0, 40)),
    max_size=60,
).map(sorted)


@settings(max_examples=400, deadline=None)
@given(
    queue_trace=changes,
    bucket=st.sampled_from([1.0, 7.5, 60.0, 1000.0]),
    count=st.integers(min_value=1, max_value=40),
)
def test_queue_max_per_bucket(
    queue_trace: list[tuple[float, int]], bucket: float, count: int
) -> None:
    got = _queue_max(levels(queue_trace), bucket, count)
    assert got == reference_queue_max(queue_trace, bucket, count)
    assert all(type(level) is int for level in got)


def test_queue_max_edges() -> None:
    trace = [(-1.0, 3), (0.0, 1), (10.0, 5), (10.0, 2), (25.0, 0), (40.0, 9)]
    # Bucket 0 holds the change before it; a change on an edge opens the next bucket; the
    # level carries through a bucket without changes; changes past the last bucket are left.
    assert _queue_max(levels(trace), 10.0, 4) == [3, 5, 2, 0]
    assert _queue_max(QueueLevels(), 10.0, 3) == [0, 0, 0]


@settings(max_examples=400, deadline=None)
@given(
    calls=st.lists(
        st.tuples(st.floats(min_value=-100.0, max_value=5000.0), st.booleans()), max_size=80
    ),
    bucket=st.sampled_from([0.1, 1.0, 7.5, 60.0, 900.0]),
    count=st.integers(min_value=1, max_value=40),
)
def test_arrivals_and_within_sla_per_bucket(
    calls: list[tuple[float, bool]], bucket: float, count: int
) -> None:
    arrival = np.array([a for a, _ in calls], dtype=float)
    within_sla = np.array([w for _, w in calls], dtype=bool)
    got = _per_bucket(arrival, within_sla, bucket, count)
    assert got == reference_per_bucket(calls, bucket, count)
    assert all(type(n) is int for counts in got for n in counts)


def test_arrivals_on_bucket_edges() -> None:
    # 0.3 // 0.1 is 2.0 in floats: the call counts in the third bucket, as the loop's does.
    calls = [(-0.5, True), (0.0, True), (0.1, False), (0.3, True), (0.4, True), (0.5, True)]
    arrival = np.array([a for a, _ in calls])
    within_sla = np.array([w for _, w in calls])
    assert _per_bucket(arrival, within_sla, 0.1, 5) == ([1, 1, 1, 0, 2], [1, 0, 1, 0, 2])
    assert _per_bucket(arrival, within_sla, 0.1, 5) == reference_per_bucket(calls, 0.1, 5)


def test_top_performers_occupancy_counts_those_who_worked() -> None:
    """A flagged top performer away all day (sick leave) is not a 0 % in the top
    performers' mean occupancy, as they are left out of the fairness figures."""
    agents: list[dict[str, Any]] = [
        {"id": "star-a", "channels": {"voice": 1}, "top_performer": True},
        {"id_prefix": "a", "count": 3, "channels": {"voice": 1}},
    ]
    one_star: dict[str, Any] = {
        "name": "tops",
        "duration_s": 7200,
        "policy": {"strategy": "longest_idle", "occupancy_window_s": 0},
        "agents": agents,
        "arrivals": [{"channel": "voice", "rate_per_hour": 40, "handle": 240}],
    }
    away: dict[str, Any] = {"id": "star-b", "channels": {"voice": 1}, "top_performer": True}
    away["absences"] = [{"start": 0, "end": "1d 00:00", "kind": "sick_leave"}]
    two_stars = {**one_star, "agents": [*agents, away]}
    alone = simulate(parse_scenario(one_star), seed=1).kpis
    with_away = simulate(parse_scenario(two_stars), seed=1).kpis
    assert with_away["agents"]["star-b"]["occupancy"] == 0.0
    mean = with_away["top_performers"]["mean_occupancy"]
    assert mean == with_away["agents"]["star-a"]["occupancy"] > 0
    assert alone["top_performers"]["mean_occupancy"] == alone["agents"]["star-a"]["occupancy"]
