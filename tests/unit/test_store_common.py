"""``router.store_common.recent_spans``: an agent's spans in the window, in ``span_order``,
whether they come in ZSET order (by end, ties by member), in any order, or with equal ends."""

from __future__ import annotations

import random

import pytest

from router.domain import WorkSpan
from router.store_common import recent_spans, span_order


def reference(spans: list[WorkSpan], cutoff: int) -> tuple[WorkSpan, ...]:
    return tuple(sorted((s for s in spans if s.end_ms >= cutoff), key=span_order))


def random_spans(rng: random.Random, count: int, distinct_ends: bool) -> list[WorkSpan]:
    """Spans as the ``work`` ZSET returns them: by end, ties in a random member order."""
    ends = rng.sample(range(1_000, 1_000 + 10 * count), count) if distinct_ends else None
    spans = []
    for n in range(count):
        end = ends[n] if ends else rng.randint(1_000, 1_000 + count // 3 + 1)
        spans.append(WorkSpan(end - rng.randint(0, 500), end, rng.choice([20, 25, 100])))
    rng.shuffle(spans)
    spans.sort(key=lambda s: s.end_ms)  # stable: equal ends stay in random order
    return spans


@pytest.mark.parametrize("seed", range(30))
def test_recent_spans_are_those_from_the_cutoff_in_span_order(seed: int) -> None:
    rng = random.Random(seed)
    count = rng.choice([0, 1, 2, 5, 40, 300])
    spans = random_spans(rng, count, distinct_ends=rng.random() < 0.5)
    cutoff = rng.choice([0, 1_000 + rng.randint(0, 10 * count + 1), 10**9])
    assert recent_spans(spans, cutoff) == reference(spans, cutoff)
    shuffled = rng.sample(spans, len(spans))
    assert recent_spans(shuffled, cutoff) == reference(shuffled, cutoff)
    # A wrap-up that ended (not yet moved to the ZSET) comes last, whatever its end.
    ended = [*spans, WorkSpan(900, rng.randint(1_000, 2_000), 100)]
    assert recent_spans(ended, cutoff) == reference(ended, cutoff)


def test_equal_ends_are_ordered_by_start_then_units() -> None:
    """Spans with one end in member order (their starts and units reversed): sorted, not
    taken as they come."""
    spans = [WorkSpan(300, 500, 100), WorkSpan(200, 500, 25), WorkSpan(200, 500, 20)]
    assert recent_spans(spans, 0) == (spans[2], spans[1], spans[0])
    assert recent_spans(spans[:1], 0) == (spans[0],)
    assert recent_spans(spans, 501) == ()
