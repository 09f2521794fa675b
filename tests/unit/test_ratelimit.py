"""The per-tenant token bucket (``router.ratelimit``), on an injected clock."""

from __future__ import annotations

import pytest

from router.ratelimit import RateLimiter, TokenBucket


class Clock:
    """Seconds that move only when told."""

    def __init__(self) -> None:
        """Start at 1000 s."""
        self.now = 1000.0

    def __call__(self) -> float:
        """The current time."""
        return self.now


def test_a_burst_is_admitted_then_the_rate() -> None:
    """Burst 3 at 2/s: three at once, the fourth waits 0.5 s; after 0.5 s one more."""
    clock = Clock()
    limiter = RateLimiter(2.0, 3, clock=clock)
    assert [limiter.acquire("acme") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("acme") == pytest.approx(0.5)
    clock.now += 0.25
    assert limiter.acquire("acme") == pytest.approx(0.25)  # a refused call takes nothing
    clock.now += 0.25
    assert limiter.acquire("acme") == 0.0
    assert limiter.acquire("acme") == pytest.approx(0.5)


def test_refill_stops_at_the_burst() -> None:
    """An hour idle gives back the burst, not 3600 x rate."""
    clock = Clock()
    limiter = RateLimiter(10.0, 5, clock=clock)
    for _ in range(5):
        limiter.acquire("acme")
    clock.now += 3600
    admitted = sum(limiter.acquire("acme") == 0.0 for _ in range(20))
    assert admitted == 5


def test_tenants_have_their_own_buckets() -> None:
    """A tenant that used up its bucket does not take anything from another."""
    clock = Clock()
    limiter = RateLimiter(1.0, 2, clock=clock)
    for _ in range(100):
        limiter.acquire("noisy")
    assert limiter.acquire("noisy") > 0
    assert limiter.acquire("quiet") == 0.0
    assert limiter.acquire("quiet") == 0.0


def test_default_burst_is_one_second_of_rate() -> None:
    """Burst 0 means ceil(rate), at least one."""
    assert RateLimiter(7.5).burst == 8
    assert RateLimiter(0.2).burst == 1
    assert RateLimiter(5, 20).burst == 20


def test_slow_rates_wait_long() -> None:
    """At 0.1/s the next token is 10 s away."""
    clock = Clock()
    limiter = RateLimiter(0.1, 1, clock=clock)
    assert limiter.acquire("acme") == 0.0
    assert limiter.acquire("acme") == pytest.approx(10.0)


def test_a_clock_going_back_gives_nothing() -> None:
    """Time never runs backwards for a bucket: no tokens appear and none vanish."""
    bucket = TokenBucket(rate=1.0, burst=1.0, tokens=0.0, updated=100.0)
    assert bucket.take(50.0) == pytest.approx(1.0)
    assert bucket.take(51.0) == 0.0


def test_buckets_are_bounded() -> None:
    """Beyond ``max_keys`` the least recently used bucket is dropped (it starts full again,
    which is what it would have refilled to)."""
    clock = Clock()
    limiter = RateLimiter(1.0, 1, clock=clock, max_keys=3)
    for tenant in ("a", "b", "c"):
        limiter.acquire(tenant)
    limiter.acquire("a")  # a is now the most recent
    limiter.acquire("d")  # b goes
    assert len(limiter) == 3
    assert limiter.acquire("a") > 0  # still its empty bucket
    assert limiter.acquire("b") == 0.0  # a new, full one


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (1, -1)])
def test_nonsense_is_refused(rate: float, burst: int) -> None:
    """A rate must be positive and a burst not negative."""
    with pytest.raises(ValueError, match="must"):
        RateLimiter(rate, burst)
