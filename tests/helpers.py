"""Test helpers shared by the store and API suites."""

from __future__ import annotations

import time
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

import redis
import structlog

from router import logs, metrics


@contextmanager
def log_lines(level: str = "info") -> Iterator[list[MutableMapping[str, Any]]]:
    """The log events written meanwhile, at ``level`` and above, each with the context bound
    to it (method, tenant, ids, trace), whatever level an earlier test left configured."""
    capture = structlog.testing.LogCapture()
    logs.silence(level=level)
    structlog.configure(processors=[structlog.contextvars.merge_contextvars, capture])
    try:
        yield capture.entries
    finally:
        logs.silence(level="info")


def sample(name: str, **labels: str) -> float:
    """The current value of one of the router's Prometheus series (0 before its first use)."""
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def retries(reason: str) -> float:
    """``router_store_retries_total`` for ``reason``."""
    return sample("router_store_retries_total", reason=reason)


class FakeClock:
    """A controllable epoch-millisecond clock, starting at real time."""

    def __init__(self) -> None:
        """Start at the current wall-clock time."""
        self.now_ms = time.time_ns() // 1_000_000

    def __call__(self) -> int:
        """The current fake time."""
        return self.now_ms

    def advance(self, ms: int) -> None:
        """Move time forward by ``ms``."""
        self.now_ms += ms


def key_content(client: redis.Redis, key: bytes | str) -> object:
    """A key's full value, by type. (``DUMP`` is not used: a hashtable-encoded hash may
    serialize its fields in another order after a mere read triggers incremental rehashing.)"""
    kind = client.type(key)
    if kind == b"hash":
        return sorted(client.hgetall(key).items())
    if kind == b"zset":
        return client.zrange(key, 0, -1, withscores=True)
    if kind == b"set":
        return sorted(client.smembers(key))
    if kind == b"stream":
        return client.xrange(key)
    if kind == b"list":
        return client.lrange(key, 0, -1)
    return client.get(key)


def keyspace(client: redis.Redis) -> dict[bytes | str, object]:
    """Every key with its content and whether it has a TTL: equal means nothing was written.
    ``client`` must return bytes (``decode_responses=False``)."""
    return {
        key: (key_content(client, key), client.pttl(key) > 0) for key in sorted(client.keys("*"))
    }
