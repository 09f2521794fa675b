"""W3C trace context: which ``traceparent`` headers are taken, and what is read from them."""

from __future__ import annotations

import grpc
import pytest
from opentelemetry.context import Context
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from router import tracing
from router.settings import SettingsError
from router.tracing import Metadata, TraceContext, extract

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


def parse_traceparent(value: str) -> TraceContext | None:
    return from_metadata((("traceparent", value),))


def from_metadata(metadata: Metadata | None) -> TraceContext | None:
    return extract(metadata)[1]


def test_a_version_00_header_gives_its_trace_parent_and_sampled_flag() -> None:
    assert parse_traceparent(f"00-{TRACE}-{PARENT}-01") == TraceContext(TRACE, PARENT, True)
    assert parse_traceparent(f"00-{TRACE}-{PARENT}-00") == TraceContext(TRACE, PARENT, False)
    # Only the lowest bit is the sampled flag; the others are reserved and kept out.
    assert parse_traceparent(f"00-{TRACE}-{PARENT}-02") == TraceContext(TRACE, PARENT, False)
    assert parse_traceparent(f"00-{TRACE}-{PARENT}-03") == TraceContext(TRACE, PARENT, True)


def test_surrounding_whitespace_is_allowed() -> None:
    assert parse_traceparent(f" \t00-{TRACE}-{PARENT}-01 ") == TraceContext(TRACE, PARENT, True)


def test_a_later_version_is_read_by_its_first_four_fields() -> None:
    """A version this code does not know may append fields after the four it does."""
    assert parse_traceparent(f"01-{TRACE}-{PARENT}-01") == TraceContext(TRACE, PARENT, True)
    assert parse_traceparent(f"cc-{TRACE}-{PARENT}-01-what-comes") == TraceContext(
        TRACE, PARENT, True
    )


@pytest.mark.parametrize(
    "header",
    [
        "",
        "garbage",
        f"00-{TRACE}-{PARENT}",  # no flags
        f"00-{TRACE}-{PARENT}-01-extra",  # version 00 has exactly four fields
        f"ff-{TRACE}-{PARENT}-01",  # version ff is forbidden
        f"0-{TRACE}-{PARENT}-01",
        f"00-{TRACE.upper()}-{PARENT}-01",  # lower-case hex only
        f"00-{TRACE}-{PARENT.upper()}-01",
        f"00-{'0' * 32}-{PARENT}-01",  # an all-zero trace id is invalid
        f"00-{TRACE}-{'0' * 16}-01",  # so is an all-zero parent id
        f"00-{TRACE[:-1]}-{PARENT}-01",
        f"00-{TRACE}0-{PARENT}-01",
        f"00-{TRACE}-{PARENT[:-1]}-01",
        f"00-{TRACE}-{PARENT}-1",
        f"00-{TRACE}-{PARENT}-0g",
        f"00_{TRACE}_{PARENT}_01",
        f"01-{TRACE}-{PARENT}-01x",  # a later version's extra fields follow a dash
        f"00-{TRACE[:-1]}\u0661-{PARENT}-01",  # an Arabic-Indic digit is not hex
        f"00-{TRACE}-{PARENT}-01" + " " * 500,  # over 512 characters in all
        "x" * 10_000,
    ],
)
def test_an_invalid_header_is_ignored(header: str) -> None:
    assert parse_traceparent(header) is None


def test_metadata_gives_the_first_traceparent_whatever_its_case() -> None:
    """gRPC metadata keys are lower case on the wire; the first value counts (W3C: a
    request with several ``traceparent`` headers may be treated as having none, or the
    first; the first keeps a relayed request traced)."""
    first, second = f"00-{TRACE}-{PARENT}-01", f"00-{'1' * 32}-{PARENT}-00"
    metadata = (("user-agent", "grpc-go"), ("traceparent", first), ("traceparent", second))
    assert from_metadata(metadata) == TraceContext(TRACE, PARENT, True)
    assert from_metadata((("TraceParent", first),)) == TraceContext(TRACE, PARENT, True)
    assert from_metadata((("traceparent", "broken"),)) is None
    assert from_metadata((("authorization", "Bearer x"),)) is None
    assert from_metadata(None) is None
    assert from_metadata(()) is None


def test_a_binary_value_is_ignored() -> None:
    """Keys ending in ``-bin`` carry bytes; a ``traceparent`` value is text."""
    assert from_metadata((("traceparent", f"00-{TRACE}-{PARENT}-01".encode()),)) is None


def test_tracestate_rides_along_with_a_valid_traceparent() -> None:
    """The caller's ``tracestate`` reaches the context the router's span starts from."""
    from opentelemetry import trace  # noqa: PLC0415

    parent, caller = extract(
        (("traceparent", f"00-{TRACE}-{PARENT}-01"), ("tracestate", "vendor=opaque"))
    )
    assert caller == TraceContext(TRACE, PARENT, True)
    state = trace.get_current_span(parent).get_span_context().trace_state
    assert state.get("vendor") == "opaque"


def test_a_context_is_kept_as_a_version_00_traceparent() -> None:
    """What the stores keep with a queued call: version 00 and the sampled bit alone, whatever
    version and flags the caller sent (the Lua prelude reads exactly this form)."""
    caller = parse_traceparent(f"cc-{TRACE}-{PARENT}-03-what-comes")
    assert caller is not None
    assert caller.traceparent == f"00-{TRACE}-{PARENT}-01"
    assert TraceContext(TRACE, PARENT, False).traceparent == f"00-{TRACE}-{PARENT}-00"


def test_work_on_a_queued_call_carries_its_trace_and_then_the_requests_again() -> None:
    """``queued_work`` binds the trace that queued the call (or none) for the events written
    meanwhile and restores the request's own after; with tracing off it makes no span."""
    request = f"00-{'2' * 32}-{PARENT}-01"
    token = tracing.bind_request_trace(request)
    try:
        with tracing.queued_work(f"00-{TRACE}-{PARENT}-01", {}) as span:
            assert span is None
            assert tracing.request_trace_id() == TRACE
        with tracing.queued_work("", {}):
            assert tracing.request_trace_id() == ""
        assert tracing.request_trace() == request
    finally:
        tracing.unbind_request_trace(token)
    assert tracing.request_trace() == ""


@pytest.mark.parametrize("queued_by", ["", "garbage", f"00-{'0' * 32}-{PARENT}-01"])
def test_a_queued_call_without_a_valid_trace_is_placed_without_a_span(queued_by: str) -> None:
    exporter = InMemorySpanExporter()
    tracing.configure(processor=SimpleSpanProcessor(exporter))
    try:
        with tracing.queued_work(queued_by, {"router.call_id": "c1"}) as span:
            assert span is None
    finally:
        tracing.shutdown()
    assert exporter.get_finished_spans() == ()


def test_a_queued_call_in_an_unsampled_trace_is_placed_without_a_recorded_span() -> None:
    exporter = InMemorySpanExporter()
    tracing.configure(processor=SimpleSpanProcessor(exporter))
    try:
        with tracing.queued_work(f"00-{TRACE}-{PARENT}-00", {}) as span:
            assert span is None
        with tracing.queued_work(f"00-{TRACE}-{PARENT}-01", {"router.call_id": "c1"}) as span:
            assert span is not None
    finally:
        tracing.shutdown()
    (placed,) = exporter.get_finished_spans()
    assert (placed.name, format(placed.context.trace_id, "032x")) == ("dispatch", TRACE)
    assert placed.parent is not None
    assert format(placed.parent.span_id, "016x") == PARENT


def test_a_call_placed_by_its_own_requests_pass_is_not_linked_to_it() -> None:
    """An Assign that queued its call and placed it in its own pass: the ``dispatch`` span is
    that request's child, with no link back to it; another request's span is linked."""
    exporter = InMemorySpanExporter()
    tracing.configure(processor=SimpleSpanProcessor(exporter))
    try:
        request = tracing.server_span("/router.v1.RoutingService/Assign", Context(), {})
        assert request is not None
        token = tracing.activate(request)
        try:
            own = TraceContext.of(request.get_span_context()).traceparent
            with tracing.queued_work(own, {"router.call_id": "own"}):
                pass
            with tracing.queued_work(f"00-{TRACE}-{PARENT}-01", {"router.call_id": "other"}):
                pass
        finally:
            tracing.deactivate(token)
            tracing.end_server_span(request, grpc.StatusCode.OK)
    finally:
        tracing.shutdown()
    placed = {
        dict(s.attributes or {})["router.call_id"]: s
        for s in exporter.get_finished_spans()
        if s.name == "dispatch"
    }
    assert placed["own"].parent is not None
    assert placed["own"].parent.span_id == request.get_span_context().span_id
    assert not placed["own"].links
    (link,) = placed["other"].links
    assert link.context.span_id == request.get_span_context().span_id


@pytest.mark.parametrize(
    ("code", "failed"),
    [
        (grpc.StatusCode.OK, False),
        (grpc.StatusCode.NOT_FOUND, False),
        (grpc.StatusCode.INVALID_ARGUMENT, False),
        (grpc.StatusCode.ABORTED, False),
        (grpc.StatusCode.UNAVAILABLE, True),
        (grpc.StatusCode.INTERNAL, True),
        (grpc.StatusCode.DEADLINE_EXCEEDED, True),
    ],
)
def test_only_server_side_codes_mark_a_server_span_failed(
    code: grpc.StatusCode, failed: bool
) -> None:
    exporter = InMemorySpanExporter()
    tracing.configure(processor=SimpleSpanProcessor(exporter))
    try:
        span = tracing.server_span("/router.v1.RoutingService/Assign", Context(), {})
        assert span is not None
        tracing.end_server_span(span, code)
    finally:
        tracing.shutdown()
    (ended,) = exporter.get_finished_spans()
    assert ended.name == "router.v1.RoutingService/Assign"
    assert dict(ended.attributes or {})["rpc.grpc.status_code"] == code.value[0]
    assert (ended.status.status_code == StatusCode.ERROR) is failed


def test_with_tracing_off_nothing_is_started() -> None:
    assert not tracing.enabled()
    assert tracing.server_span("/router.v1.RoutingService/Assign", Context(), {}) is None
    with tracing.span("decide") as child:
        assert child is None


def test_the_traces_protocol_variable_wins_over_the_general_one() -> None:
    assert tracing.exporter_protocol({}) == "grpc"
    assert tracing.exporter_protocol({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}) == (
        "http/protobuf"
    )
    both = {
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": " grpc ",
    }
    assert tracing.exporter_protocol(both) == "grpc"
    # An empty traces variable counts as unset.
    assert tracing.exporter_protocol(
        {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
    ) == ("http/protobuf")


def test_a_protocol_this_service_does_not_speak_is_refused() -> None:
    with pytest.raises(SettingsError, match="OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json'"):
        tracing.exporter_protocol({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})
