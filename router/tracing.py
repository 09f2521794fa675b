"""Distributed tracing: the caller's W3C trace context in, OpenTelemetry spans out.

A caller instrumented with OpenTelemetry (or any W3C trace-context propagator) sends the
trace its request belongs to as ``traceparent`` metadata. Always, whether or not tracing is
on, the RPC's log lines and the events it writes carry that trace's id (bound for the
stores with ``bind_request_trace``), and a sampled trace's id marks the RPC's latency bucket
as a Prometheus exemplar. An invalid header is ignored, as the W3C recommendation asks, and
never fails the RPC. A call the request queues keeps the trace (the stores keep the bound
``traceparent`` with it), and its placement by the dispatcher later continues it
(``queued_work``).

With ``ROUTER_TRACING=1`` (``configure``), each unary RPC is also a server span (a child of
the caller's span when there is one), with a client span per Redis round trip and a span per
routing decision inside it, exported over OTLP (gRPC or HTTP) as the standard ``OTEL_*``
variables say (protocol, endpoint, headers, sampler, service name). The log lines then name
the router's own span. Child spans open only inside a recording span, so background work
(the dispatcher's ticks, the health probe) and unsampled requests cost one check each; the
one span background work makes is a queued call's placement, in the trace that queued it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from router.settings import SettingsError

if TYPE_CHECKING:  # the SDK is imported when tracing is turned on (configure)
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

Metadata = Sequence[tuple[str, str | bytes]]
Attributes = Mapping[str, str | int | float | bool]

PROTOCOLS = ("grpc", "http/protobuf")
"""The OTLP transports spans can be exported over; the first is the default."""
MAX_HEADER = 512
"""Longer ``traceparent`` values are ignored unread (a version 00 header is 55 characters)."""
SERVICE_NAME = "agent-router"
"""``service.name`` of the spans unless ``OTEL_SERVICE_NAME`` (or the resource variable)
names the service."""
SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
"""The codes that mark a server span as failed (OpenTelemetry's gRPC conventions: the others
are the caller's errors, not the server's)."""
UNTRACED = ("/grpc.health.v1.Health/", "/grpc.reflection.")
"""Methods that get no span: health probes (every few seconds from each load balancer and
orchestrator) and reflection would each start a trace of their own."""


@dataclass(frozen=True, slots=True)
class TraceContext:
    """A span's place in its trace, as text: the caller's span as the caller sent it, or a
    span of the router's own."""

    trace_id: str
    """32 lower-case hex digits."""
    span_id: str
    """16 lower-case hex digits."""
    sampled: bool
    """Whether the trace is recorded (the ``sampled`` flag)."""

    @classmethod
    def of(cls, context: trace.SpanContext) -> TraceContext:
        """The text form of an OpenTelemetry span context."""
        return cls(
            format(context.trace_id, "032x"),
            format(context.span_id, "016x"),
            context.trace_flags.sampled,
        )

    @property
    def traceparent(self) -> str:
        """The context as a W3C ``traceparent`` value (version 00)."""
        return f"00-{self.trace_id}-{self.span_id}-{'01' if self.sampled else '00'}"


class _MetadataGetter(Getter[Metadata]):
    """Reads gRPC invocation metadata for the propagator: keys without case, text only
    (``-bin`` entries carry bytes), values of at most ``MAX_HEADER`` characters."""

    def get(self, carrier: Metadata, key: str) -> list[str] | None:
        found = [
            value
            for name, value in carrier
            if name.lower() == key and isinstance(value, str) and len(value) <= MAX_HEADER
        ]
        return found or None

    def keys(self, carrier: Metadata) -> list[str]:
        return [name for name, _ in carrier]


_GETTER = _MetadataGetter()
_PROPAGATOR = TraceContextTextMapPropagator()
_tracer: trace.Tracer | None = None
_provider: TracerProvider | None = None
_request_trace: ContextVar[str] = ContextVar("router_request_trace", default="")


def extract(metadata: Metadata | None) -> tuple[otel_context.Context, TraceContext | None]:
    """The OpenTelemetry context of a request's invocation metadata (its W3C ``traceparent``
    and ``tracestate``, the first of each), and the caller's trace as text (``None`` when
    absent or invalid)."""
    if not metadata:
        return otel_context.Context(), None
    parent = _PROPAGATOR.extract(metadata, getter=_GETTER)
    span_context = trace.get_current_span(parent).get_span_context()
    if not span_context.is_valid:
        return parent, None
    caller = TraceContext.of(span_context)
    return parent, caller


def exporter_protocol(env: Mapping[str, str] | None = None) -> str:
    """The OTLP transport ``env`` (default ``os.environ``) asks for:
    ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL``, else ``OTEL_EXPORTER_OTLP_PROTOCOL``, else
    ``grpc``; ``SettingsError`` for one this service does not speak."""
    env = os.environ if env is None else env
    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        value = env.get(name, "").strip()
        if value:
            if value not in PROTOCOLS:
                raise SettingsError(
                    f"{name}: {value!r} is not supported; use {' or '.join(PROTOCOLS)}"
                )
            return value
    return PROTOCOLS[0]


def configure(processor: SpanProcessor | None = None) -> None:
    """Turn spans on for this process, ended spans going to ``processor`` (default: in
    batches to OTLP, over gRPC or HTTP as ``exporter_protocol`` says, configured by the
    ``OTEL_EXPORTER_OTLP_*`` and ``OTEL_BSP_*`` variables). The sampler is the SDK's, from
    ``OTEL_TRACES_SAMPLER`` (default: follow the caller's choice, sample roots)."""
    global _tracer, _provider
    from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415

    resource = Resource.create()
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
    # Not at exit: ``shutdown`` flushes within a bound; the SDK's own exit hook would wait
    # for an unreachable collector for as long as its exporter retries.
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    if processor is None:
        from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415

        processor = BatchSpanProcessor(_exporter(exporter_protocol()))
    provider.add_span_processor(processor)
    _provider, _tracer = provider, provider.get_tracer("router")


def _exporter(protocol: str) -> SpanExporter:
    """The OTLP span exporter for ``protocol`` (imported only when used: each brings a client
    stack of its own)."""
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter as HttpExporter,
        )

        return HttpExporter()
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter as GrpcExporter,
    )

    return GrpcExporter()


def shutdown(timeout_s: float = 5.0) -> None:
    """Turn spans off and export what is pending, waiting at most ``timeout_s`` (the
    process is stopping; an unreachable collector must not hold it)."""
    global _tracer, _provider
    provider, _provider, _tracer = _provider, None, None
    if provider is not None:
        flush = threading.Thread(target=provider.shutdown, name="trace-flush", daemon=True)
        flush.start()
        flush.join(timeout_s)


def enabled() -> bool:
    """Whether spans are exported."""
    return _tracer is not None


def server_span(
    method: str, parent: otel_context.Context, attributes: Attributes
) -> trace.Span | None:
    """Start the server span of RPC ``method`` (``/package.Service/Method``) under the
    caller's context ``parent``; ``None`` when tracing is off, and for ``UNTRACED``
    methods."""
    if _tracer is None or method.startswith(UNTRACED):
        return None
    name = method.lstrip("/")
    service, _, rpc_method = name.rpartition("/")
    return _tracer.start_span(
        name,
        context=parent,
        kind=SpanKind.SERVER,
        attributes={
            "rpc.system": "grpc",
            "rpc.service": service,
            "rpc.method": rpc_method,
            **attributes,
        },
    )


def end_server_span(span: trace.Span, code: grpc.StatusCode) -> None:
    """Record the RPC's status ``code`` on its server span and end it."""
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code in SERVER_ERRORS:
        span.set_status(Status(StatusCode.ERROR, code.name))
    span.end()


def activate(span: trace.Span) -> object:
    """Make ``span`` the current span of this thread (the parent of the spans ``span()``
    opens); pass the token to ``deactivate``."""
    return otel_context.attach(trace.set_span_in_context(span))


def deactivate(token: object) -> None:
    """Undo ``activate``."""
    otel_context.detach(token)  # type: ignore[arg-type]  # the token activate returned


def sampled_trace(span: trace.Span | None, caller: TraceContext | None) -> str | None:
    """The trace id worth an exemplar: the router's span's if sampled, else the caller's if
    the caller samples it; ``None`` otherwise."""
    traced = caller if span is None else TraceContext.of(span.get_span_context())
    return traced.trace_id if traced is not None and traced.sampled else None


@contextmanager
def span(
    name: str, attributes: Attributes | None = None, *, kind: SpanKind = SpanKind.INTERNAL
) -> Iterator[trace.Span | None]:
    """A child span of the current recording span (its error, if one escapes, recorded); a
    no-op yielding ``None`` when tracing is off or nothing is being recorded."""
    if _tracer is None or not trace.get_current_span().is_recording():
        yield None
        return
    with _tracer.start_as_current_span(name, kind=kind, attributes=attributes) as child:
        yield child


def annotate(attributes: Attributes) -> None:
    """Set ``attributes`` on the current span, if one is being recorded."""
    if _tracer is None:
        return
    current = trace.get_current_span()
    if current.is_recording():
        current.set_attributes(attributes)


def bind_request_trace(traceparent: str) -> Token[str]:
    """Name the request this thread serves by its W3C ``traceparent`` (its trace and, as the
    parent of work it leaves for later, its span; ``""`` for none): the events the stores
    write meanwhile carry its trace id, and a call it queues keeps it. Pass the token to
    ``unbind_request_trace``."""
    return _request_trace.set(traceparent)


def unbind_request_trace(token: Token[str]) -> None:
    """Undo ``bind_request_trace``."""
    _request_trace.reset(token)


def request_trace() -> str:
    """The ``traceparent`` of the request being served (``bind_request_trace``), or ``""``."""
    return _request_trace.get()


def request_trace_id() -> str:
    """The trace id (32 hex digits) of the request being served, or ``""``."""
    return _request_trace.get()[3:35]


@contextmanager
def continuing(traceparent: str) -> Iterator[None]:
    """Work on a call after the request that created it has ended (``traceparent``: that
    request's, as the store kept it; ``""``: none): the events written meanwhile carry its
    trace id, or none."""
    token = _request_trace.set(traceparent)
    try:
        yield
    finally:
        _request_trace.reset(token)


@contextmanager
def call_work(kept: str) -> Iterator[None]:
    """Work on a call while no request is served (the dispatcher's offer time-outs and
    reclaims): ``continuing`` the trace the call kept (``kept``, as the store kept it). While a
    request is served its own trace stays (``continue_call_trace`` in ``_lib.lua``)."""
    if _request_trace.get():
        yield
        return
    with continuing(kept):
        yield


@contextmanager
def queued_work(
    queued_by: str, attributes: Attributes, name: str = "dispatch"
) -> Iterator[trace.Span | None]:
    """The dispatcher's work on a call (its placement from the queue: ``dispatch``; an offer
    it times out: ``offer_timeout``), ``continuing`` the trace of the request that created
    it (``queued_by``): with tracing on, a span ``name`` in that trace, a child of that
    request's span, linked to the current span (the Assign whose pass does the work, if
    another request's pass does) and made current, so the work's Redis round trips are its
    children. Yields the span (``None`` when none records)."""
    with continuing(queued_by):
        parent, links = _continued(queued_by)
        if _tracer is None or parent is None:
            yield None
            return
        with _tracer.start_as_current_span(
            name, context=parent, attributes=attributes, links=links
        ) as work:
            yield work if work.is_recording() else None


def finished_work(
    queued_by: str, name: str, attributes: Attributes, start_ns: int, end_ns: int
) -> None:
    """``queued_work`` told after the fact: a span ``name`` from ``start_ns`` to ``end_ns``
    (``time.time_ns``) in the trace of the request that created the call (the dispatcher's
    reclaim: one script for all of an agent's work, whose calls come back with it)."""
    parent, links = _continued(queued_by)
    if _tracer is None or parent is None:
        return
    span = _tracer.start_span(
        name, context=parent, attributes=attributes, links=links, start_time=start_ns
    )
    span.end(end_time=end_ns)


def _continued(queued_by: str) -> tuple[otel_context.Context | None, list[trace.Link] | None]:
    """The context of the request that created a call (``None``: tracing off, no trace kept)
    and a link to the current span, the request whose work this is, if another's."""
    if _tracer is None or not queued_by:
        return None, None
    parent = _PROPAGATOR.extract({"traceparent": queued_by})
    queued_in = trace.get_current_span(parent).get_span_context()
    if not queued_in.is_valid:
        return None, None
    current = trace.get_current_span().get_span_context()
    own = (current.trace_id, current.span_id) == (queued_in.trace_id, queued_in.span_id)
    return parent, [trace.Link(current)] if current.is_valid and not own else None
