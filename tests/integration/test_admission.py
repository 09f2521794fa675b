"""Request slots on a live server (``ROUTER_CONCURRENCY``): a request waits for a free slot
within its deadline and does nothing if it gets none; probes never wait."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import grpc
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from router import local_redis
from router.v1 import routing_pb2
from router.v1 import types_pb2 as pb
from tests.helpers import FakeClock, sample
from tests.integration.service import Service, start_service

SERVING = health_pb2.HealthCheckResponse.SERVING


@pytest.fixture
def one_slot(redis_server: local_redis.LocalRedis) -> Iterator[Service]:
    """A server with one request slot over an empty Redis."""
    client = redis.Redis.from_url(redis_server.url, decode_responses=False)
    client.flushall()
    service = start_service(redis_server.url, FakeClock(), client, concurrency=1)
    try:
        yield service
    finally:
        service.channel.close()
        service.running.stop(0)
        client.close()


def _eventually(done: Callable[[], bool], timeout_s: float = 5.0) -> None:
    stop = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < stop, "condition not reached"
        time.sleep(0.01)


def _waits() -> float:
    return sample("router_admission_wait_seconds_count")


def test_a_request_without_a_slot_in_time_does_nothing(one_slot: Service) -> None:
    """While the only slot is held, an Assign with a 0.3 s deadline ends DEADLINE_EXCEEDED
    and writes nothing, and the wait is measured; health answers meanwhile. Once the slot
    is free the same request assigns the call."""
    service = one_slot
    service.agent("ana", skills={"billing": 3})
    admission = service.running.admission
    assert admission is not None
    assert admission.limit == 1
    before, waits = service.dump(), _waits()
    admission.enter("test")
    try:
        with pytest.raises(grpc.RpcError) as refused:
            service.routing.Assign(
                routing_pb2.AssignRequest(
                    tenant=service.tenant,
                    request_id="r1",
                    call=pb.Call(call_id="c1", channel=pb.CHANNEL_VOICE),
                ),
                timeout=0.3,
            )
        health = health_pb2_grpc.HealthStub(service.channel)
        check = health.Check(health_pb2.HealthCheckRequest(), timeout=2)  # type: ignore[attr-defined]  # untyped stub
        assert check.status == SERVING
        _eventually(lambda: _waits() == waits + 1)  # the server gave up waiting too
    finally:
        admission.leave()
    assert refused.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert service.dump() == before
    assert (
        service.assign("c1", request_id="r1").result == routing_pb2.AssignResponse.RESULT_ASSIGNED
    )
