"""Per-tenant token buckets: ``ROUTER_RATE_LIMIT`` requests per second, ``ROUTER_RATE_BURST``
at once.

The buckets live in this process only, so each replica admits its own share: N replicas
behind a load balancer admit up to N times the configured rate per tenant. That is on
purpose: a shared limit would cost a Redis round trip on every RPC, on the hot path of
``Assign``, to protect the very Redis it would add load to. Size the limit per replica.

The clock is injected (seconds, monotonic), so tests move time instead of sleeping.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

MAX_KEYS = 10_000
"""Buckets kept at most; the least recently used goes first (it has most likely refilled,
and a full bucket is the same as a new one)."""


@dataclass(slots=True)
class TokenBucket:
    """``tokens`` available at ``updated`` (clock seconds); refills at ``rate`` per second up
    to ``burst``."""

    rate: float
    burst: float
    tokens: float
    updated: float

    def take(self, now: float) -> float:
        """Take one token if there is one: 0.0. Otherwise take nothing and return the
        seconds until one will be there."""
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class RateLimiter:
    """One ``TokenBucket`` per key (the tenant), created full on first use. Thread-safe."""

    def __init__(
        self,
        rate: float,
        burst: int = 0,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = MAX_KEYS,
    ) -> None:
        """``rate`` tokens per second (> 0); ``burst`` tokens at most (0: one second's
        worth, ``ceil(rate)``, at least 1)."""
        if rate <= 0:
            raise ValueError(f"rate must be positive, not {rate}")
        if burst < 0:
            raise ValueError(f"burst must not be negative, not {burst}")
        self.rate = rate
        self.burst = float(burst or max(1, math.ceil(rate)))
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._lock = threading.Lock()

    def acquire(self, key: str) -> float:
        """Admit one request for ``key``: 0.0 if admitted, else the seconds to wait before
        the next one would be (nothing is taken from the bucket then)."""
        with self._lock:
            now = self._clock()
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = TokenBucket(self.rate, self.burst, self.burst, now)
                self._buckets[key] = bucket
                if len(self._buckets) > self._max_keys:
                    self._buckets.popitem(last=False)
            else:
                self._buckets.move_to_end(key)
            return bucket.take(now)

    def __len__(self) -> int:
        """Buckets currently kept."""
        return len(self._buckets)
