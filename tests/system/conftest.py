"""Fixtures of the system tests (``python -m router`` processes over a private Redis)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from router import local_redis


@pytest.fixture
def redis_server() -> Iterator[local_redis.LocalRedis]:
    """A private redis-server for this test only (a module may define its own instead)."""
    if not local_redis.available():
        pytest.skip("redis-server is not installed")
    server = local_redis.start()
    try:
        yield server
    finally:
        server.stop()
