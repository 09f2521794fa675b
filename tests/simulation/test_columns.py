"""The simulator's per-call columns: the queue trace, the queue changes of the pooled
shortcut, and the arrival-order check that spares a sort."""

from __future__ import annotations

import random

from router.domain import Channel
from simulations import pooled
from simulations.call_log import QueueTrace
from simulations.trace import TraceCall, arrival_ordered, in_arrival_order


def test_a_queue_trace_keeps_the_last_size_of_each_millisecond() -> None:
    queue = QueueTrace()
    for at, size in [(5, 1), (5, 2), (7, 1), (9, 0), (9, 1), (9, 0)]:
        queue.record(at, size)
    assert (queue.times, queue.sizes) == ([5, 7, 9], [2, 1, 0])


def test_queue_changes_as_ints_sum_as_the_tuples_would() -> None:
    """The pooled shortcut's int-encoded changes against the plain ``(time, +1/-1)`` sum."""
    rng = random.Random(7)
    for _ in range(50):
        changes: list[tuple[int, int]] = []
        waiting = 0
        for _ in range(rng.randint(0, 40)):
            at = rng.randint(0, 30)
            arrived = waiting == 0 or rng.random() < 0.5
            changes.append((at, 1 if arrived else -1))
            waiting += 1 if arrived else -1
        expected = QueueTrace()
        size = 0
        for at, delta in sorted(changes):
            size += delta
            expected.record(at, size)
        encoded = [pooled._arrived(at) if d > 0 else pooled._left(at) for at, d in changes]
        assert pooled._queue_trace(encoded) == expected


def _call(arrival_s: float, call_id: str) -> TraceCall:
    return TraceCall(arrival_s, call_id, Channel.VOICE)


def test_arrival_order_is_by_arrival_then_call_id() -> None:
    ordered = [_call(0.5, "b"), _call(1.0, "a"), _call(1.0, "c"), _call(2.0, "a")]
    assert in_arrival_order(ordered)
    assert arrival_ordered(ordered) is ordered  # no copy, no sort
    assert in_arrival_order([])
    assert in_arrival_order(ordered[:1])
    ties_out_of_order = [_call(1.0, "c"), _call(1.0, "a")]
    assert not in_arrival_order(ties_out_of_order)
    assert [c.call_id for c in arrival_ordered(ties_out_of_order)] == ["a", "c"]
    late_first = [ordered[3], *ordered[:3]]
    assert not in_arrival_order(late_first)
    assert arrival_ordered(late_first) == ordered
