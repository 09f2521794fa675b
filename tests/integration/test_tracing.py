"""Spans of RPCs served over a real channel, on real Redis, with tracing on (the spans kept in
memory instead of exported; ``tests/system/test_tracing.py`` exports them over OTLP)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.protobuf.duration_pb2 import Duration
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from router import metrics, tracing
from router.v1 import admin_pb2, routing_pb2
from router.v1 import types_pb2 as pb
from tests.helpers import log_lines
from tests.integration.service import Service

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
ASSIGN = "router.v1.RoutingService/Assign"
QUEUED = routing_pb2.AssignResponse.RESULT_QUEUED


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on for the test, every ended span kept in the exporter."""
    exporter = InMemorySpanExporter()
    tracing.configure(processor=SimpleSpanProcessor(exporter))
    try:
        yield exporter
    finally:
        tracing.shutdown()


def _assign(service: Service, call_id: str, traceparent: str = "") -> None:
    metadata = (("traceparent", traceparent),) if traceparent else ()
    reply = service.assign(call_id, metadata=metadata)
    assert reply.result == routing_pb2.AssignResponse.RESULT_ASSIGNED


def _queue(service: Service, call_id: str, traceparent: str) -> None:
    reply = service.assign(call_id, metadata=(("traceparent", traceparent),))
    assert reply.result == QUEUED


def _finished(exporter: InMemorySpanExporter, name: str, count: int) -> list[ReadableSpan]:
    """The ``count`` ended spans called ``name``, waiting up to 10 s for the background
    thread that ends them."""
    deadline = time.monotonic() + 10
    while True:
        found = [s for s in exporter.get_finished_spans() if s.name == name]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.01)


def _hex(number: int, digits: int) -> str:
    return format(number, f"0{digits}x")


def _server_spans(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def _children(exporter: InMemorySpanExporter, parent: ReadableSpan) -> list[ReadableSpan]:
    spans = exporter.get_finished_spans()
    return [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]


def test_an_assign_is_a_server_span_under_the_callers_with_its_work_inside(
    service: Service, spans: InMemorySpanExporter
) -> None:
    """The Assign's server span continues the caller's trace under the caller's span, holds
    its Redis round trips and its decision as children, and records its answer; its log
    line names the router's span."""
    service.agent("a0", skills={"billing": 9})
    service.agent("a1", skills={"billing": 5})
    _assign(service, "c0")  # the tenant's first Assign builds its routing index
    spans.clear()
    with log_lines() as entries:
        _assign(service, "c1", f"00-{CALLER_TRACE}-{CALLER_SPAN}-01")
    (server,) = _server_spans(spans, ASSIGN)
    assert server.kind == SpanKind.SERVER
    assert _hex(server.context.trace_id, 32) == CALLER_TRACE
    assert server.parent is not None
    assert server.parent.is_remote
    assert _hex(server.parent.span_id, 16) == CALLER_SPAN
    attributes = dict(server.attributes or {})
    assert attributes["rpc.system"] == "grpc"
    assert attributes["rpc.service"] == "router.v1.RoutingService"
    assert attributes["rpc.method"] == "Assign"
    assert attributes["rpc.grpc.status_code"] == 0
    assert attributes["router.tenant"] == "acme"
    assert attributes["router.call_id"] == "c1"
    assert attributes["router.request_id"] == "req-c1"
    assert attributes["router.result"] == "assigned"
    assert attributes["router.assigned_agent_id"] == "a1"
    assert server.status.status_code == StatusCode.UNSET
    children = _children(spans, server)
    names = [child.name for child in sorted(children, key=lambda s: s.start_time or 0)]
    assert names == ["EVALSHA index_changes", "decide", "EVALSHA commit_assignment"]
    redis_span = children[0] if children[0].name.startswith("EVALSHA") else children[1]
    assert redis_span.kind == SpanKind.CLIENT
    assert dict(redis_span.attributes or {})["db.system.name"] == "redis"
    (decide,) = [child for child in children if child.name == "decide"]
    assert dict(decide.attributes or {})["router.decision"] == "single"
    (line,) = [e for e in entries if e["event"] == "rpc_finished"]
    assert line["trace_id"] == CALLER_TRACE
    assert line["span_id"] == _hex(server.context.span_id, 16)
    assert line["parent_span_id"] == CALLER_SPAN


def test_a_request_without_a_trace_starts_one(
    service: Service, spans: InMemorySpanExporter
) -> None:
    """No ``traceparent``: the server span is a root (the default sampler keeps roots), and
    an invalid header counts as none."""
    service.agent("a1", skills={"billing": 5})
    service.agent("a2", skills={"billing": 5})
    spans.clear()
    _assign(service, "c1")
    _assign(service, "c2", f"00-{CALLER_TRACE.upper()}-{CALLER_SPAN}-01")
    roots = _server_spans(spans, ASSIGN)
    assert len(roots) == 2
    assert all(root.parent is None for root in roots)
    assert roots[0].context.trace_id != roots[1].context.trace_id
    assert all(_hex(root.context.trace_id, 32) != CALLER_TRACE for root in roots)


def test_a_trace_the_caller_does_not_sample_records_nothing(
    service: Service, spans: InMemorySpanExporter
) -> None:
    """The caller's ``sampled`` flag off: no span of the request is exported, and its log
    line carries the caller's trace id and span, not a span of its own."""
    service.agent("a1", skills={"billing": 5})
    spans.clear()
    with log_lines() as entries:
        _assign(service, "c1", f"00-{CALLER_TRACE}-{CALLER_SPAN}-00")
    assert spans.get_finished_spans() == ()
    (line,) = [e for e in entries if e["event"] == "rpc_finished"]
    assert line["trace_id"] == CALLER_TRACE
    assert line["parent_span_id"] == CALLER_SPAN
    assert "span_id" not in line


def test_a_refused_request_is_the_callers_error_not_the_servers(
    service: Service, spans: InMemorySpanExporter
) -> None:
    """NOT_FOUND is recorded as the status code; the span is not marked failed (OpenTelemetry's
    gRPC conventions: only server-side codes such as UNAVAILABLE or INTERNAL are)."""
    with pytest.raises(grpc.RpcError):
        service.get_agent("ghost")
    (server,) = _server_spans(spans, "router.v1.AgentAdminService/GetAgent")
    assert (
        dict(server.attributes or {})["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    )
    assert server.status.status_code == StatusCode.UNSET


def test_background_work_outside_requests_makes_no_spans(
    service: Service, spans: InMemorySpanExporter
) -> None:
    """The dispatcher's passes and the health probe run outside any request: their Redis
    round trips are not spans (else each tick would start a trace)."""
    service.agent("a1", skills={"billing": 5})
    spans.clear()
    service.running.dispatcher.run_once(service.tenant)
    service.running.probe.check()
    assert spans.get_finished_spans() == ()


def test_a_queued_call_placed_later_is_a_span_in_the_trace_that_queued_it(
    service: Service, spans: InMemorySpanExporter
) -> None:
    """An Assign that finds nobody free queues its call; when the dispatcher places it later
    (here in its background pass, outside any request), the placement is a ``dispatch`` span
    in the caller's trace, a child of that Assign's server span, holding the commit's Redis
    round trip and naming the call, the agent, its wait and the outcome."""
    service.agent("a1", skills={"billing": 5}, presence=pb.PRESENCE_OFFLINE)
    spans.clear()
    _queue(service, "c1", f"00-{CALLER_TRACE}-{CALLER_SPAN}-01")
    (assign,) = _server_spans(spans, ASSIGN)
    service.clock.advance(4_000)  # the store's clock, on which waits are measured
    service.presence("a1", pb.PRESENCE_AVAILABLE)
    service.wait_for_call("c1", pb.CALL_STATUS_ASSIGNED)
    (placed,) = _finished(spans, "dispatch", 1)
    assert placed.context.trace_id == assign.context.trace_id
    assert placed.parent is not None
    assert placed.parent.span_id == assign.context.span_id
    assert placed.kind == SpanKind.INTERNAL
    assert not placed.links  # the background pass runs in no request
    assert dict(placed.attributes or {}) == {
        "router.tenant": "acme",
        "router.call_id": "c1",
        "router.agent_id": "a1",
        "router.waited_ms": 4_000,
        "router.result": "placed",
    }
    assert [child.name for child in _children(spans, placed)] == ["EVALSHA commit_assignment"]


def test_a_placement_in_another_requests_pass_links_that_request(
    service: Service, spans: InMemorySpanExporter
) -> None:
    """A pass run inline by an Assign places the calls queued before it in their own traces;
    each ``dispatch`` span links the Assign whose pass made it. A call queued in a trace its
    caller does not sample is placed without a span."""
    service.agent("a1", skills={"billing": 5}, presence=pb.PRESENCE_OFFLINE)
    service.agent("a2", skills={"billing": 5}, presence=pb.PRESENCE_OFFLINE)
    _queue(service, "c1", f"00-{CALLER_TRACE}-{CALLER_SPAN}-01")
    _queue(service, "c2", f"00-{'1' * 32}-{CALLER_SPAN}-00")
    service.running.dispatcher.stop()  # the placements happen in the next Assign's pass
    service.presence("a1", pb.PRESENCE_AVAILABLE)
    service.presence("a2", pb.PRESENCE_AVAILABLE)
    spans.clear()
    _queue(service, "c3", f"00-{'3' * 32}-{CALLER_SPAN}-01")
    assert service.get_call("c2").status == pb.CALL_STATUS_ASSIGNED
    (later,) = _server_spans(spans, ASSIGN)
    (placed,) = _server_spans(spans, "dispatch")
    assert _hex(placed.context.trace_id, 32) == CALLER_TRACE
    assert placed.parent is not None
    assert placed.parent.span_id != later.context.span_id
    assert [link.context.span_id for link in placed.links] == [later.context.span_id]
    assert dict(placed.attributes or {})["router.call_id"] == "c1"


def _offers(service: Service, seconds: int) -> None:
    """Chat calls start as offers that time out after ``seconds``."""
    setting = pb.ChannelSetting(
        channel=pb.CHANNEL_CHAT, default_capacity=1, offer_timeout=Duration(seconds=seconds)
    )
    service.policies.UpdatePolicy(
        admin_pb2.UpdatePolicyRequest(
            tenant=service.tenant,
            policy=pb.Policy(channels=[setting]),
            update_mask=field_mask_pb2.FieldMask(paths=["channels"]),
        )
    )


def _child_work(span: ReadableSpan, assign: ReadableSpan, agent_id: str) -> dict[str, Any]:
    """Check ``span`` is the dispatcher's work on call c1 with ``agent_id``, a child of the
    ``assign`` server span; its attributes."""
    assert span.context.trace_id == assign.context.trace_id
    assert span.parent is not None
    assert span.parent.span_id == assign.context.span_id
    attributes: dict[str, Any] = dict(span.attributes or {})
    assert (attributes["router.call_id"], attributes["router.agent_id"]) == ("c1", agent_id)
    return attributes


def test_an_offer_timed_out_and_a_reclaim_are_spans_in_the_calls_trace(
    service: Service, spans: InMemorySpanExporter
) -> None:
    """The dispatcher's time-out of an offer and its reclaim of one (the agent went offline)
    are spans in the trace of the Assign that made the call, children of its server span,
    holding the script's round trip (a time-out) or timed around it (a reclaim)."""
    _offers(service, 10)
    service.agent("a1", skills={"billing": 5})
    service.agent("a2", skills={"billing": 5}, presence=pb.PRESENCE_OFFLINE)
    spans.clear()
    reply = service.assign(
        "c1",
        channel=pb.CHANNEL_CHAT,
        metadata=(("traceparent", f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"),),
    )
    assert reply.result == routing_pb2.AssignResponse.RESULT_OFFERED
    (assign,) = _server_spans(spans, ASSIGN)
    service.clock.advance(11_000)
    service.wait_for_call("c1", pb.CALL_STATUS_QUEUED)
    (timed_out,) = _finished(spans, "offer_timeout", 1)
    attributes = _child_work(timed_out, assign, "a1")
    assert attributes["router.result"] == "timed_out"
    assert [child.name for child in _children(spans, timed_out)] == ["EVALSHA decline_offer"]
    service.presence("a2", pb.PRESENCE_AVAILABLE)  # takes c1 (a1 missed it), as an offer
    call = service.wait_for_call("c1", pb.CALL_STATUS_OFFERED)
    assert call.assignment.agent_id == "a2"
    service.presence("a2", pb.PRESENCE_OFFLINE)
    service.wait_for_call("c1", pb.CALL_STATUS_QUEUED)
    (reclaimed,) = _finished(spans, "reclaim", 1)
    _child_work(reclaimed, assign, "a2")
    assert reclaimed.start_time is not None
    assert reclaimed.end_time is not None
    assert reclaimed.start_time <= reclaimed.end_time


def test_the_routers_own_sampled_trace_is_the_latency_exemplar(
    service: Service, spans: InMemorySpanExporter
) -> None:
    """With tracing on, a request that came without a trace still leaves an exemplar: the
    trace its own root span started."""
    service.agent("a1", skills={"billing": 5})
    spans.clear()
    _assign(service, "c1")
    (root,) = _server_spans(spans, ASSIGN)
    marked = {
        sample.exemplar.labels["trace_id"]
        for family in metrics.REGISTRY.collect()
        if family.name == "router_rpc_duration_seconds"
        for sample in family.samples
        if sample.labels.get("method") == "Assign" and sample.exemplar is not None
    }
    assert _hex(root.context.trace_id, 32) in marked


def test_health_checks_make_no_spans(service: Service, spans: InMemorySpanExporter) -> None:
    """Probes every few seconds from each load balancer would each start a trace."""
    health = health_pb2_grpc.HealthStub(service.channel)
    reply = health.Check(health_pb2.HealthCheckRequest())  # type: ignore[attr-defined]  # untyped stub
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert spans.get_finished_spans() == ()
