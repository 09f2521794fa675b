"""``python -m router`` with ``ROUTER_TRACING=1`` exports its spans over OTLP/gRPC to a
collector (here a real OTLP trace receiver on loopback), as the ``OTEL_*`` variables say."""

from __future__ import annotations

import gzip
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from router import local_redis
from router.v1 import admin_pb2, routing_pb2
from router.v1 import types_pb2 as pb
from tests.benchmarks import bench_tracing
from tests.benchmarks.bench_tracing import Receiver
from tests.system import fleet

CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"


@contextmanager
def http_receiving() -> Iterator[tuple[Receiver, int]]:
    """An OTLP/HTTP trace receiver (``POST /v1/traces``, protobuf) on a free loopback port."""
    receiver = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # the standard library's name
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            if self.path != "/v1/traces":
                self.send_error(404)
                return
            receiver.keep(trace_service_pb2.ExportTraceServiceRequest.FromString(body))
            reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: object) -> None:
            return  # quiet

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def collector() -> Iterator[tuple[Receiver, int]]:
    """An OTLP trace receiver on a free loopback port, keeping what it is sent."""
    with bench_tracing.receiving() as listening:
        yield listening


@pytest.mark.timeout(60)
def test_the_service_exports_an_assigns_spans_over_otlp(
    redis_server: local_redis.LocalRedis,
    collector: tuple[Receiver, int],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An Assign sent with a sampled ``traceparent`` reaches the collector as a server span
    of the caller's trace under the caller's span, with the Redis and decision spans inside,
    under the service name ``OTEL_SERVICE_NAME`` gives; the spans still pending at SIGTERM
    are exported before the process ends."""
    receiver, port = collector
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "router-under-test")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "60000")  # exported at the stop, not before
    node = fleet.start_replica(redis_server.url, tmp_path, "traced", tracing=1)
    try:
        node.wait_serving()
        agents = [fleet.agent_pb(f"a{i}", {"billing": 5}, {pb.CHANNEL_CHAT: 2}) for i in range(3)]
        fleet.seed_agents(node, agents, workers=2)
        node.routing.Assign(fleet.assign_request("warm", "warm", "billing"), timeout=10)
        reply = node.routing.Assign(
            fleet.assign_request("req-1", "call-1", "billing"),
            metadata=(("traceparent", f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"),),
            timeout=10,
        )
        assert reply.assignment.agent_id
        assert not receiver.named("router.v1.RoutingService/Assign")  # still in the batch
        fleet.eventually(lambda: any(line.get("call_id") == "call-1" for line in node.logs()))
        lines = node.logs()
    finally:
        code = node.stop()
    assert code == 0
    traced = [
        (service, s)
        for service, s in receiver.named("router.v1.RoutingService/Assign")
        if s.trace_id.hex() == CALLER_TRACE
    ]
    assert len(traced) == 1
    service, server_span = traced[0]
    assert service == "router-under-test"
    assert server_span.parent_span_id.hex() == CALLER_SPAN
    assert server_span.kind == trace_pb2.Span.SPAN_KIND_SERVER
    children = sorted(
        (s for _, s in receiver.spans if s.parent_span_id == server_span.span_id),
        key=lambda s: s.start_time_unix_nano,
    )
    assert [s.name for s in children] == [
        "EVALSHA index_changes",
        "decide",
        "EVALSHA commit_assignment",
    ]
    assert all(s.trace_id == server_span.trace_id for s in children)
    (line,) = [
        line
        for line in lines
        if line.get("event") == "rpc_finished" and line.get("call_id") == "call-1"
    ]
    assert line["trace_id"] == CALLER_TRACE
    assert line["span_id"] == server_span.span_id.hex()
    (started,) = [line for line in lines if line.get("event") == "server_started"]
    assert started["tracing"] is True


@pytest.mark.timeout(90)
def test_a_call_queued_on_one_replica_and_placed_by_another_stays_in_its_trace(
    redis_server: local_redis.LocalRedis,
    collector: tuple[Receiver, int],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The trace crosses replicas through Redis: one replica answers an Assign QUEUED and
    stops; when an agent becomes free, the other replica's dispatcher places the call, and
    its ``dispatch`` span reaches the collector in the caller's trace, a child of the first
    replica's Assign span."""
    receiver, port = collector
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    with fleet.replicas(redis_server.url, tmp_path, 2, tracing=1) as (first, second):
        agent = fleet.agent_pb("a0", {"billing": 5}, {pb.CHANNEL_CHAT: 1})
        first.admin.CreateAgent(admin_pb2.CreateAgentRequest(tenant=fleet.TENANT, agent=agent))
        reply = first.routing.Assign(
            fleet.assign_request("req-1", "call-1", "billing"),
            metadata=(("traceparent", f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"),),
            timeout=10,
        )
        assert reply.result == routing_pb2.AssignResponse.RESULT_QUEUED
        assert first.stop() == 0  # its pending spans exported on the way out
        second.admin.SetPresence(
            admin_pb2.SetPresenceRequest(
                tenant=fleet.TENANT, agent_id="a0", presence=pb.PRESENCE_AVAILABLE
            ),
            timeout=10,
        )
        fleet.eventually(lambda: bool(receiver.named("dispatch")), 20)
    ((_, assign),) = [
        (service, s)
        for service, s in receiver.named("router.v1.RoutingService/Assign")
        if s.trace_id.hex() == CALLER_TRACE
    ]
    ((_, placed),) = receiver.named("dispatch")
    assert placed.trace_id.hex() == CALLER_TRACE
    assert placed.parent_span_id == assign.span_id
    attributes = {kv.key: kv.value for kv in placed.attributes}
    assert attributes["router.call_id"].string_value == "call-1"
    assert attributes["router.agent_id"].string_value == "a0"
    assert attributes["router.result"].string_value == "placed"
    children = [s.name for _, s in receiver.spans if s.parent_span_id == placed.span_id]
    assert children == ["EVALSHA commit_assignment"]


@pytest.mark.timeout(60)
def test_with_the_collector_down_requests_are_served_and_the_log_stays_json(
    redis_server: local_redis.LocalRedis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spans go out on a background thread: an unreachable collector costs requests nothing,
    the exporter's complaints come out as JSON lines like the service's own, and SIGTERM
    still ends the process within ``ROUTER_GRACE_S`` (the exporter would retry for 10 s)."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{local_redis.free_port()}")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    node = fleet.start_replica(redis_server.url, tmp_path, "orphan", tracing=1, grace_s=1)
    stopped_in = float("inf")
    try:
        node.wait_serving()
        fleet.seed_agents(node, [fleet.agent_pb("a0", {"billing": 5}, {pb.CHANNEL_CHAT: 4})])
        for n in range(3):
            reply = node.routing.Assign(
                fleet.assign_request(f"req-{n}", f"call-{n}", "billing"), timeout=5
            )
            assert reply.assignment.agent_id == "a0"

        def complained() -> bool:
            return any(
                str(line.get("logger", "")).startswith("opentelemetry") for line in node.logs()
            )

        fleet.eventually(complained, 20)
        node.routing.Assign(fleet.assign_request("req-last", "call-last", "billing"), timeout=5)
        started = time.monotonic()
        node.signal(signal.SIGTERM)
        code = node.process.wait(timeout=30)
        stopped_in = time.monotonic() - started
        assert code == 0
    finally:
        node.stop()
    assert stopped_in < 1 + 3  # the grace, and the interpreter's own exit
    lines = node.log_path.read_text().splitlines()
    assert lines
    for line in lines:
        parsed = json.loads(line)  # every line, the exporter's too
        assert "event" in parsed
        assert "level" in parsed


@pytest.mark.timeout(60)
def test_spans_go_over_otlp_http_when_the_protocol_says_so(
    redis_server: local_redis.LocalRedis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf`` sends the same spans to an OTLP/HTTP
    collector (``/v1/traces`` under the endpoint)."""
    with http_receiving() as (receiver, port):
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
        node = fleet.start_replica(redis_server.url, tmp_path, "http", tracing=1)
        try:
            node.wait_serving()
            fleet.seed_agents(node, [fleet.agent_pb("a0", {"billing": 5}, {pb.CHANNEL_CHAT: 4})])
            node.routing.Assign(
                fleet.assign_request("req-1", "call-1", "billing"),
                metadata=(("traceparent", f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"),),
                timeout=5,
            )
            fleet.eventually(lambda: bool(receiver.named("router.v1.RoutingService/Assign")), 20)
        finally:
            node.stop()
    ((service, span),) = receiver.named("router.v1.RoutingService/Assign")
    assert service == "agent-router"
    assert span.trace_id.hex() == CALLER_TRACE
    assert span.parent_span_id.hex() == CALLER_SPAN


@pytest.mark.parametrize(
    ("variable", "value"),
    [("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"), ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "udp")],
)
def test_an_unsupported_otlp_protocol_stops_start_up(
    variable: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exit status 2 and the variable named, before anything listens."""
    monkeypatch.setenv(variable, value)
    monkeypatch.setenv("ROUTER_TRACING", "1")
    done = subprocess.run(
        [sys.executable, "-m", "router", "--port", "0"],
        cwd=fleet.ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert f"{variable}: {value!r} is not supported; use grpc or http/protobuf" in done.stderr
