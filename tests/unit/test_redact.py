"""``RedisStore.redact``: what the service logs of ``REDIS_URL``."""

from __future__ import annotations

import pytest

from router.redis_store import RedisStore


@pytest.mark.parametrize(
    ("url", "logged"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
        ("rediss://app:s3cret@cache:6380/2", "rediss://app:***@cache:6380/2"),
        ("redis://cache:6379/0?password=s3cret", "redis://cache:6379/0?password=***"),
        (
            "redis://cache/0?socket_timeout=2&Password=s3cret&db=1",
            "redis://cache/0?socket_timeout=2&Password=***&db=1",
        ),
        ("unix:///run/redis.sock?password=s3cret&db=3", "unix:///run/redis.sock?password=***&db=3"),
    ],
)
def test_a_password_never_reaches_the_log(url: str, logged: str) -> None:
    """In the user part or as a query parameter, the password is masked; the rest stays."""
    assert RedisStore.redact(url) == logged
    assert "s3cret" not in RedisStore.redact(url)
