"""Redis goes away and comes back: requests fail fast with UNAVAILABLE, health reports
NOT_SERVING, and the service recovers by itself. Real redis-server, real gRPC server."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from router import local_redis
from router.redis_store import RedisStore
from router.server import RunningServer, create_server
from router.settings import Settings
from router.v1 import admin_pb2, admin_pb2_grpc
from router.v1 import types_pb2 as pb

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _eventually(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


@pytest.fixture
def outage() -> Iterator[tuple[local_redis.LocalRedis, RunningServer, grpc.Channel]]:
    """A service on its own private redis-server, probing health every 100 ms."""
    redis_server = local_redis.start()
    store = RedisStore.from_url(redis_server.url, timeout_s=0.5)
    running = create_server(Settings(port=0, health_interval_s=0.1, metrics_port=0), store)
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        yield redis_server, running, channel
    finally:
        channel.close()
        running.stop(0)
        redis_server.stop()


def test_outage_fails_fast_reports_not_serving_and_recovers(
    outage: tuple[local_redis.LocalRedis, RunningServer, grpc.Channel],
) -> None:
    """Kill redis-server: Assign-path RPCs answer UNAVAILABLE well inside their deadline and
    health turns NOT_SERVING; start it again on the same port: SERVING, and writes work
    (scripts are reloaded after the restart emptied Redis' script cache)."""
    redis_server, _, channel = outage
    health = health_pb2_grpc.HealthStub(channel)
    admin = admin_pb2_grpc.AgentAdminServiceStub(channel)

    def status() -> int:
        reply = health.Check(health_pb2.HealthCheckRequest(service=""))  # type: ignore[attr-defined]  # untyped stub
        return int(reply.status)

    create = admin_pb2.CreateAgentRequest(
        tenant="acme", agent=pb.Agent(agent_id="a1", skills={"billing": 3})
    )
    admin.CreateAgent(create)
    assert status() == SERVING
    redis_server.process.kill()
    redis_server.process.wait()
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as err:
        admin.GetAgent(admin_pb2.GetAgentRequest(tenant="acme", agent_id="a1"), timeout=3)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert time.monotonic() - started < 3
    _eventually(lambda: status() == NOT_SERVING)
    restarted = local_redis.start(port=redis_server.port)
    try:
        _eventually(lambda: status() == SERVING)
        admin.CreateAgent(create)  # the data went with the old server (no persistence here)
        agent = admin.GetAgent(admin_pb2.GetAgentRequest(tenant="acme", agent_id="a1"))
        assert agent.version == 1
    finally:
        restarted.stop()


def test_a_replica_is_not_serving_until_its_first_probe_passes() -> None:
    """A replica started while Redis is paused answers NOT_SERVING from the moment it listens
    (the first probe is still waiting for Redis), never SERVING, and SERVING once Redis
    answers again."""
    redis_server = local_redis.start()
    port = _free_port()
    os.kill(redis_server.process.pid, signal.SIGSTOP)
    store = RedisStore.from_url(redis_server.url, timeout_s=2.0)
    settings = Settings(port=port, health_interval_s=0.1, metrics_port=0)
    started: list[RunningServer] = []
    starter = threading.Thread(target=lambda: started.append(create_server(settings, store)))
    starter.start()
    fast = [("grpc.initial_reconnect_backoff_ms", 20), ("grpc.max_reconnect_backoff_ms", 50)]
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=fast)
    health = health_pb2_grpc.HealthStub(channel)
    seen: list[int] = []
    refused: list[grpc.StatusCode] = []
    try:
        while starter.is_alive():
            try:
                reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=0.5)  # type: ignore[attr-defined]  # untyped stub
                seen.append(int(reply.status))
            except grpc.RpcError as err:  # not listening yet
                refused.append(err.code())
            time.sleep(0.02)
        assert seen, "no health answer while the first probe waited"
        assert set(refused) <= {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
        assert set(seen) == {NOT_SERVING}
        os.kill(redis_server.process.pid, signal.SIGCONT)
        _eventually(
            lambda: health.Check(health_pb2.HealthCheckRequest(service="")).status == SERVING  # type: ignore[attr-defined]  # untyped stub
        )
    finally:
        os.kill(redis_server.process.pid, signal.SIGCONT)
        channel.close()
        starter.join(10)
        for running in started:
            running.stop(0)
        redis_server.stop()


def _free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
