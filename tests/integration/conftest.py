"""Fixtures for the store contract suite: a private redis-server and both stores.

The server is started once per session on a free loopback port (no persistence) and flushed
before every test. Nothing is skipped: without ``redis-server`` the Redis tests fail with a
message saying so. Both stores run on a ``FakeClock`` (the Redis store uses it instead of
Redis ``TIME``), so tests move time instead of sleeping; TTLs still follow Redis time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import redis

from router import local_redis
from router.memory_store import MemoryStore
from router.redis_store import RedisStore, single_client
from router.store import EVENT_TYPES, Store
from tests.helpers import FakeClock, keyspace


@dataclass
class StoreHarness:
    """A store under test with its clock and a way to see every byte it holds."""

    kind: str
    store: Store
    clock: FakeClock
    dump: Callable[[], object]
    """A value that is equal before and after an operation that wrote nothing."""
    raw: redis.Redis | None = None
    """A bytes client on the same server (Redis only), for schema checks."""


@pytest.fixture(scope="session")
def redis_server() -> Iterator[local_redis.LocalRedis]:
    """A private, throw-away redis-server on a free 127.0.0.1 port for this session."""
    try:
        server = local_redis.start()
    except local_redis.LocalRedisError as exc:
        pytest.fail(f"the store tests need a local redis-server: {exc}", pytrace=False)
    yield server
    server.stop()


@pytest.fixture
def redis_client(redis_server: local_redis.LocalRedis) -> Iterator[redis.Redis]:
    """A ``decode_responses=True`` client on an empty server (FLUSHALL before the test),
    packing commands as the service's does (``single_client``)."""
    client = single_client(redis_server.url, decode_responses=True)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def raw_client(redis_server: local_redis.LocalRedis) -> Iterator[redis.Redis]:
    """A bytes client on the same server, to inspect keys byte for byte."""
    client = redis.Redis.from_url(redis_server.url, decode_responses=False)
    yield client
    client.close()


@pytest.fixture
def clock() -> FakeClock:
    """A fresh fake clock."""
    return FakeClock()


@pytest.fixture(params=["memory", "redis"])
def harness(request: pytest.FixtureRequest, clock: FakeClock) -> Iterator[StoreHarness]:
    """Each contract test runs once on ``MemoryStore`` and once on ``RedisStore``; after it,
    every event the store wrote has one of the documented types (``EVENT_TYPES``)."""
    if request.param == "memory":
        memory = MemoryStore(clock)
        # repr covers every field of every record, so equal reprs mean nothing was written.
        harness = StoreHarness("memory", memory, clock, lambda: repr(memory._tenants))
    else:
        client: redis.Redis = request.getfixturevalue("redis_client")
        raw: redis.Redis = request.getfixturevalue("raw_client")
        store = RedisStore(client, clock)
        harness = StoreHarness("redis", store, clock, lambda: keyspace(raw), raw)
    yield harness
    for tenant in harness.store.tenants():
        written = {event.type for event in harness.store.read_events(tenant, "0", 100_000)}
        assert written <= EVENT_TYPES, f"undocumented event types: {written - EVENT_TYPES}"


@pytest.fixture
def store(harness: StoreHarness) -> Store:
    """The store of the current ``harness``."""
    return harness.store
