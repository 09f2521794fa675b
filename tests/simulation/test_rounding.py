"""Drawn times are rounded to the millisecond clock as ``round(x, 3)`` does, bit for bit, a
whole array at once (``rounded_ms``)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from simulations.model import epoch_ms, epochs_ms, rounded_ms


def _same(a: float, b: float) -> bool:
    """The very same float (NaN as NaN, -0.0 apart from 0.0)."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)


def _near_halves(rng: random.Random, top: float) -> list[float]:
    """Values at, and a few ulps around, ``(k + 0.5) / 1000``: where a rounding of the
    product could fall on the other side of the half."""
    out: list[float] = []
    for _ in range(3000):
        centre = (rng.randrange(int(top * 1000)) + 0.5) / 1000
        x = centre
        for _ in range(4):
            out.extend((x, math.nextafter(centre, math.inf), math.nextafter(centre, -math.inf)))
            x = math.nextafter(x, math.inf)
        out.append(math.nextafter(x, -math.inf))
    return out


@pytest.mark.parametrize("top", [1.0, 600.0, 86_400.0, 4_294_967.0, 4_294_968.0, 1e9])
def test_rounded_ms_is_round_to_three_places(top: float) -> None:
    rng = random.Random(int(top))
    values = [rng.random() * top for _ in range(20_000)]
    values += [rng.expovariate(1 / top) for _ in range(5_000)]
    values += _near_halves(rng, top)
    for x, got in zip(values, rounded_ms(np.array(values)).tolist(), strict=True):
        assert _same(got, round(x, 3)), x


EDGES = [0.0, -0.0, 5e-324, 0.0005, 0.0015, 0.0025, 1e-4, -1e-4, -0.0005, -1.2345]
EDGES += [2.0**32 / 1000, math.nextafter(2.0**32 / 1000, 0), 1e300, -1e300]
EDGES += [math.inf, -math.inf]


def test_rounded_ms_edges() -> None:
    """Each value as ``round``, whether or not the quick path covers it."""
    for x, got in zip(EDGES, rounded_ms(np.array(EDGES)).tolist(), strict=True):
        assert _same(got, round(x, 3)), x
    assert math.isnan(rounded_ms(np.array([1.0, math.nan]))[1])


@pytest.mark.parametrize("top", [1.0, 86_400.0, 1e9, 1e15])
def test_epochs_ms_is_epoch_ms_of_each_value(top: float) -> None:
    rng = random.Random(int(top))
    values = [rng.random() * top for _ in range(5_000)] + _near_halves(rng, min(top, 1e6))
    values += [-v for v in values[:500]] + [0.0, -0.0, 0.0005, 0.0015, 0.0025, 7, -3]
    values += [(k + 0.5) / 1000 for k in range(1000)]  # the product a half: to even
    assert epochs_ms(values) == [epoch_ms(v) for v in values]
    assert all(type(ms) is int for ms in epochs_ms(values))
    assert epochs_ms([]) == []


def test_epochs_ms_outside_the_array_range_answers_as_epoch_ms() -> None:
    for huge in ([1.0, 4.6e15], [1.0, 1e16], [-1e16], [2.0**61, -(2.0**62)], [1.0, 1e300]):
        assert epochs_ms(huge) == [epoch_ms(v) for v in huge]
    for bad, error in ((math.nan, ValueError), (math.inf, OverflowError)):
        with pytest.raises(error):
            epochs_ms([1.0, bad])
