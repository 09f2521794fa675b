"""The one place that maps errors to gRPC status codes, and writes one log line per RPC.

It also turns a request body that does not parse into INVALID_ARGUMENT (grpcio's own answer
would be INTERNAL "Exception deserializing request!"), and gives ``ResourceExhaustedError``
with a retry delay its ``google.rpc.RetryInfo`` detail and ``retry-after`` trailer.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import grpc
import structlog
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import (  # type: ignore[import-untyped]  # ships .pyi but no py.typed
    error_details_pb2,
    status_pb2,
)
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from router import metrics, tracing
from router.errors import (
    InvalidArgumentError,
    ResourceExhaustedError,
    RouterError,
    StoreUnavailableError,
)
from router.v1 import admin_pb2, routing_pb2

log = structlog.get_logger("router.rpc")

Handler = Callable[[Any, grpc.ServicerContext], Any]
Deserializer = Callable[[bytes], Any]

DETAILS_KEY = "grpc-status-details-bin"
"""Trailer holding the serialized ``google.rpc.Status`` (what ``grpc_status`` reads)."""
LOGGED_FIELDS = {
    "tenant": 64,
    "request_id": 128,
    "agent_id": 128,
    "assignment_id": 128,
    "call_id": 128,
    "reason": 200,
}
"""Request fields bound to the log context, with the characters kept of each."""
REQUEST_ID_HEADER = "x-request-id"
"""Metadata naming an RPC for support: the caller's, if it sends a valid one, else one made
here; bound to the RPC's log lines as ``x_request_id`` and sent back in its trailers."""
_REQUEST_ID = re.compile(r"[0-9A-Za-z._:-]{1,128}")
"""A caller's ``x-request-id`` kept as it is (else one is made): a UUID, a ULID, hex, ..."""
DETAILS_CHARS = 200
"""Characters of the status message sent to the client kept on ``rpc_finished``."""
LEVELS = {
    grpc.StatusCode.DEADLINE_EXCEEDED: logging.WARNING,
    grpc.StatusCode.RESOURCE_EXHAUSTED: logging.WARNING,
    grpc.StatusCode.ABORTED: logging.WARNING,
    grpc.StatusCode.UNAVAILABLE: logging.WARNING,
    grpc.StatusCode.INTERNAL: logging.ERROR,
    grpc.StatusCode.UNKNOWN: logging.ERROR,
    grpc.StatusCode.DATA_LOSS: logging.ERROR,
}
"""``rpc_finished``'s level by status code: the server's own failures, overload and
contention at warning, its bugs at error; the rest (OK, the caller's mistakes and refusals,
CANCELLED, a method the listener does not serve, a refusal of the caller's own quota) at
info."""
KNOWN_METHODS = {
    f"/{service.full_name}/{method.name}": (service.full_name, method.name)
    for module in (routing_pb2, admin_pb2, health_pb2, reflection_pb2)
    for service in module.DESCRIPTOR.services_by_name.values()
    for method in service.methods
}
"""Every method of the services a router listener may serve, by path: its ``service`` and
``method`` labels. A call to one the listener does not serve (an admin RPC on the main port
when ``ROUTER_ADMIN_PORT`` is set) is counted under them; any other path as ``unknown``."""
UNKNOWN = ("unknown", "unknown")
PATH_CHARS = 200
"""Characters of a path no handler serves kept on its ``rpc_finished`` line."""
QUIET_METHODS = frozenset({"/grpc.health.v1.Health/Check"})
"""Methods whose ``OK`` is logged at debug: probes that come every few seconds."""


def printable(value: str, limit: int) -> str:
    """``value`` fit for a log line: at most ``limit`` characters, anything but printable
    ASCII replaced by ``?``, ``...`` appended when clipped."""
    clipped = value[:limit]
    if not (clipped.isascii() and clipped.isprintable()):  # ASCII printable: " " to "~"
        clipped = "".join(c if " " <= c <= "~" else "?" for c in clipped)
    return f"{clipped}..." if len(value) > limit else clipped


def _request_fields(request: Any) -> dict[str, str]:
    """Ids worth binding to the log context, read from the request if present, sanitised
    (``printable``): a hostile id cannot forge or break log lines."""
    fields: dict[str, str] = {}
    for name, limit in LOGGED_FIELDS.items():
        value = getattr(request, name, "")
        if isinstance(value, str) and value:
            fields[name] = printable(value, limit)
    call = getattr(request, "call", None)
    call_id = getattr(call, "call_id", "")
    if isinstance(call_id, str) and call_id:
        fields["call_id"] = printable(call_id, LOGGED_FIELDS["call_id"])
    return fields


def request_id(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    """The RPC's ``x-request-id``: the caller's first one if valid (1 to 128 characters of
    ``0-9 A-Z a-z . _ : -``), else a new one of 16 hex digits."""
    for key, value in metadata or ():
        if key == REQUEST_ID_HEADER:
            if isinstance(value, str) and _REQUEST_ID.fullmatch(value):
                return value
            break
    return os.urandom(8).hex()


def bind_call(call_id: str) -> None:
    """Put ``call_id`` on the current RPC's log lines from now on (its ``rpc_finished``
    included), sanitised as the request's ids: for the RPCs that name only an assignment,
    once the store has returned it."""
    structlog.contextvars.bind_contextvars(call_id=printable(call_id, LOGGED_FIELDS["call_id"]))


class Undecodable:
    """What the request deserializer yields for bytes that do not parse; the handler then
    answers INVALID_ARGUMENT instead of running."""

    __slots__ = ("type_name",)

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name

    def error(self) -> InvalidArgumentError:
        """The error to answer with."""
        return InvalidArgumentError("request", f"cannot be decoded as {self.type_name}")


def _tolerant(deserializer: Deserializer | None) -> Deserializer | None:
    """Wrap ``deserializer`` so a body that does not parse yields ``Undecodable``."""
    if deserializer is None:
        return None
    message_type = getattr(deserializer, "__self__", None)
    descriptor = getattr(message_type, "DESCRIPTOR", None)
    type_name = str(getattr(descriptor, "full_name", "the request message"))

    def run(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:  # DecodeError, and whatever else a parser of hostile bytes raises
            return Undecodable(type_name)

    return run


def _abort_with_retry(
    context: grpc.ServicerContext, error: ResourceExhaustedError, retry_after_s: float
) -> None:
    """Abort with RESOURCE_EXHAUSTED, ``google.rpc.RetryInfo`` and ``retry-after`` (raises)."""
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(max(1, math.ceil(retry_after_s * 1e9)))
    retry_after = ("retry-after", str(max(1, math.ceil(retry_after_s))))
    _abort_with_detail(context, error, error_details_pb2.RetryInfo(retry_delay=delay), retry_after)


def _abort_with_detail(
    context: grpc.ServicerContext,
    error: RouterError,
    detail: Message,
    *trailers: tuple[str, str],
) -> None:
    """Abort with ``error``'s status carrying ``detail`` in its rich details (the
    ``google.rpc.Status`` that ``grpc_status.rpc_status.from_call`` reads), and ``trailers``
    (raises)."""
    packed = any_pb2.Any()
    packed.Pack(detail)
    status = status_pb2.Status(code=error.code.value[0], message=error.message, details=[packed])
    context.set_trailing_metadata(
        (
            *(context.trailing_metadata() or ()),  # x-request-id
            (DETAILS_KEY, status.SerializeToString()),
            *trailers,
        )
    )
    context.abort(error.code, error.message)


class _Outcome:
    """Status code and timing of one RPC, logged once when it ends; the caller's trace
    (``traceparent`` metadata) on its log lines, as its latency sample's exemplar and (unary
    RPCs) on the events it writes; with tracing on, its server span (for unary RPCs the
    current span, so the spans of its work are its children)."""

    def __init__(
        self, method: str, request: Any, context: grpc.ServicerContext, *, current: bool
    ) -> None:
        self.service, _, self.method = method[1:].rpartition("/")
        metadata = context.invocation_metadata()
        parent, self.caller = tracing.extract(metadata)
        fields = _request_fields(request)
        rpc_id = request_id(metadata)
        context.set_trailing_metadata(((REQUEST_ID_HEADER, rpc_id),))
        self.span = tracing.server_span(
            method, parent, {f"router.{name}": value for name, value in fields.items()}
        )
        self.token = tracing.activate(self.span) if self.span is not None and current else None
        traced = self.caller
        if self.span is not None and self.span.is_recording():
            traced = tracing.TraceContext.of(self.span.get_span_context())
            fields["span_id"] = traced.span_id  # the router's own span
        if traced is not None:
            fields["trace_id"] = traced.trace_id
        if self.caller is not None:
            fields["parent_span_id"] = self.caller.span_id
        traceparent = "" if traced is None else traced.traceparent
        self.bound = tracing.bind_request_trace(traceparent) if current else None
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(method=method, x_request_id=rpc_id, **fields)
        self.code = grpc.StatusCode.OK
        self.details = ""
        """The status message the client got (a stream ended from outside: what ended it)."""
        self.cause = ""
        """What the log adds to it (``RouterError.cause``: never sent to the client)."""
        self.level: int | None = None
        """``rpc_finished``'s level when not the code's (``LEVELS``)."""
        self.quiet = method in QUIET_METHODS
        self.started = time.perf_counter()
        self.ended: float | None = None
        """When the call ended, where that was before the handler returned (a stream)."""

    def fail(self, error: BaseException, context: grpc.ServicerContext) -> None:
        """Abort the RPC with the status that ``error`` maps to (raises)."""
        if isinstance(error, RouterError):
            self.code, self.details, self.level = error.code, error.message, error.level
            self.cause = error.cause
            if isinstance(error, StoreUnavailableError):
                metrics.STORE_ERRORS.inc()
            if isinstance(error, ResourceExhaustedError) and error.retry_after_s is not None:
                _abort_with_retry(context, error, error.retry_after_s)
            if isinstance(error, InvalidArgumentError):  # the field, for any client
                violation = error_details_pb2.BadRequest.FieldViolation(
                    field=error.field, description=error.problem
                )
                bad = error_details_pb2.BadRequest(field_violations=[violation])
                _abort_with_detail(context, error, bad)
            context.abort(error.code, error.message)
        self.code, self.details = grpc.StatusCode.INTERNAL, "internal error; see the server log"
        log.error("rpc_crashed", exc_info=error)
        if self.span is not None:
            self.span.record_exception(error)
        context.abort(self.code, self.details)

    def answered(self, context: grpc.ServicerContext) -> None:
        """The handler returned: record the code and message it set on ``context``, if any."""
        code = _set_code(context)
        if code is not None:
            self.code = code
            details = getattr(context, "details", None)  # grpcio's, as code()
            message = details() if callable(details) else None
            if isinstance(message, bytes):
                self.details = message.decode("utf-8", "replace")

    def ended_from_outside(self, end: CallEnd, streams: Streams) -> None:
        """The stream ended with no error of the server's, as ``end`` saw it: gRPC cut it
        because the server stopped and its grace period was over (its client got
        UNAVAILABLE), the client's deadline passed, or the client cancelled, whichever came
        first; its duration runs to then. Logged at info."""
        at, self.ended = end.when()
        if streams.cut(at):
            self.code, self.details = grpc.StatusCode.UNAVAILABLE, "cut by the server's stop"
        elif end.past_deadline(at):
            self.code = grpc.StatusCode.DEADLINE_EXCEEDED
            self.details = "the client's deadline passed"
        else:
            self.code, self.details = grpc.StatusCode.CANCELLED, "cancelled by the client"
        self.level = logging.INFO

    def finish(self) -> None:
        """Write the canonical line and the latency metric; end the span."""
        seconds = (self.ended or time.perf_counter()) - self.started
        traced = tracing.sampled_trace(self.span, self.caller)
        exemplar = None if traced is None else {"trace_id": traced}
        metrics.RPC_SECONDS.labels(self.service, self.method, self.code.name).observe(
            seconds, exemplar
        )
        level = LEVELS.get(self.code, logging.INFO) if self.level is None else self.level
        if self.quiet and self.code == grpc.StatusCode.OK:
            level = logging.DEBUG
        fields: dict[str, object] = {
            "code": self.code.name,
            "duration_ms": round(seconds * 1000, 3),
        }
        if self.details:
            fields["details"] = printable(self.details, DETAILS_CHARS)
        if self.cause:
            fields["cause"] = printable(self.cause, DETAILS_CHARS)
        log.log(level, "rpc_finished", **fields)
        if self.bound is not None:
            tracing.unbind_request_trace(self.bound)
        if self.token is not None:
            tracing.deactivate(self.token)
        if self.span is not None:
            tracing.end_server_span(self.span, self.code)


class Streams:
    """The server streams open through the ``ErrorInterceptor`` of a replica's listeners,
    and the replica's stop as they see it: a stream still open when the stop's grace period
    is over is cut by gRPC (its client gets UNAVAILABLE) and recorded so, and ``wait_closed``
    lets the stop wait for the streams' lines."""

    def __init__(self) -> None:
        self._open = 0
        self._changed = threading.Condition()
        self._cut_at = math.inf
        self.draining = threading.Event()
        """Set when the server stops: streams end by themselves (``StoppingError``)."""

    def stopping(self, grace_s: float) -> None:
        """The server stops now: streams are asked to end, and what is still open in
        ``grace_s`` is cut."""
        self._cut_at = time.monotonic() + grace_s
        self.draining.set()

    def cut(self, at: float) -> bool:
        """Whether the stop's grace period was over at ``at`` (``time.monotonic``)."""
        return at >= self._cut_at

    def opened(self) -> None:
        """A stream started."""
        with self._changed:
            self._open += 1

    def closed(self) -> None:
        """A stream ended and its line is written."""
        with self._changed:
            self._open -= 1
            self._changed.notify_all()

    def wait_closed(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for every stream to end; whether they all did."""
        with self._changed:
            return self._changed.wait_for(lambda: self._open == 0, timeout_s)


class CallEnd:
    """When a server stream's call ended (gRPC's termination callback), which its handler
    may notice only later (Watch, after a blocking read of up to a second): what ended it
    is read from that time, not from when the handler noticed."""

    DEADLINE_SLACK_S = 0.005
    """An end this close before the deadline is the deadline's (the clocks are read apart)."""

    def __init__(self, context: grpc.ServicerContext) -> None:
        """Watch ``context``'s call from now on."""
        self._ended: tuple[float, float] | None = None
        left = context.time_remaining()
        self._deadline = math.inf if left is None else time.monotonic() + left
        context.add_callback(self._end)

    def _end(self) -> None:
        self._ended = (time.monotonic(), time.perf_counter())

    def when(self) -> tuple[float, float]:
        """When the call ended (``time.monotonic``, ``time.perf_counter``); now if gRPC has
        not said yet."""
        return self._ended or (time.monotonic(), time.perf_counter())

    def past_deadline(self, at: float) -> bool:
        """Whether the client's deadline had passed at ``at`` (``time.monotonic``)."""
        return at >= self._deadline - self.DEADLINE_SLACK_S


def _set_code(context: grpc.ServicerContext) -> grpc.StatusCode | None:
    """The status code a handler set on ``context`` without raising (``set_code``, as the
    health service's Check of an unknown service does), where grpcio's context tells it
    (``code()``, missing from the typed stubs); ``None`` when none was set."""
    code = getattr(context, "code", None)
    value = code() if callable(code) else None
    return value if isinstance(value, grpc.StatusCode) else None


class UnaryInterceptor(grpc.ServerInterceptor):
    """Wraps the unary handler of each method it ``applies`` to with ``wrap`` (same
    serializers); stream handlers and other methods pass through unchanged."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or handler.unary_unary is None or not self.applies(method):
            return handler
        return grpc.unary_unary_rpc_method_handler(
            self.wrap(method, handler.unary_unary),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def applies(self, method: str) -> bool:
        """Whether ``method`` (``/package.Service/Method``) is wrapped; all by default."""
        return True

    def wrap(self, method: str, inner: Handler) -> Handler:
        """The handler to run instead of ``inner``."""
        raise NotImplementedError


class ErrorInterceptor(grpc.ServerInterceptor):
    """Turns ``RouterError`` into its status code, anything else into INTERNAL (logged with a
    traceback), a body that does not parse into INVALID_ARGUMENT, and logs ``rpc_finished``
    with method, code, status message and duration for every RPC, at the level its code
    calls for (``LEVELS``). Install it first (outermost)."""

    def __init__(self, streams: Streams | None = None) -> None:
        """Count the server streams in ``streams`` (shared by a replica's listeners)."""
        self.streams = Streams() if streams is None else streams

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        started = time.perf_counter()
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None:  # gRPC answers UNIMPLEMENTED, which no handler sees
            _unimplemented(handler_call_details, started)
            return handler
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _unary(method, handler.unary_unary),
                request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _stream(method, handler.unary_stream, self.streams),
                request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        return handler


def _unimplemented(details: grpc.HandlerCallDetails, started: float) -> None:
    """Record a call to a method no handler serves (its path as the client sent it, clipped
    on the log line; labelled by name only if it is one of ``KNOWN_METHODS``)."""
    seconds = time.perf_counter() - started
    path = details.method
    service, method = KNOWN_METHODS.get(path, UNKNOWN)
    code = grpc.StatusCode.UNIMPLEMENTED
    metrics.RPC_SECONDS.labels(service, method, code.name).observe(seconds)
    log.log(
        LEVELS.get(code, logging.INFO),
        "rpc_finished",
        method=printable(str(path), PATH_CHARS),
        x_request_id=request_id(details.invocation_metadata),
        code=code.name,
        duration_ms=round(seconds * 1000, 3),
        details="Method not found!",  # grpcio's words to the client
    )


def _unary(method: str, inner: Handler) -> Handler:
    def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
        outcome = _Outcome(method, request, context, current=True)
        try:
            if isinstance(request, Undecodable):
                raise request.error()
            response = inner(request, context)
            outcome.answered(context)
            return response
        except Exception as error:  # mapped to a status, never swallowed
            outcome.fail(error, context)
        finally:
            outcome.finish()

    return wrapped


def _stream(
    method: str, inner: Handler, streams: Streams
) -> Callable[[Any, grpc.ServicerContext], Iterator[Any]]:
    def wrapped(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        # A stream's span is not made current: its generator may be closed from another
        # thread, and its long-polling reads are not worth a span each.
        outcome = _Outcome(method, request, context, current=False)
        end = CallEnd(context)
        streams.opened()
        try:
            if isinstance(request, Undecodable):
                raise request.error()
            yield from inner(request, context)
            if context.is_active():
                outcome.answered(context)
            else:  # the handler stopped because the call had ended (Watch's loop)
                outcome.ended_from_outside(end, streams)
        except GeneratorExit:  # the call ended while a message was being sent
            outcome.ended_from_outside(end, streams)
            raise
        except RouterError as error:
            if context.is_active():  # mapped to a status, never swallowed
                outcome.fail(error, context)
            else:  # the call had ended first: its client saw that end, not this error
                outcome.ended_from_outside(end, streams)
        except Exception as error:  # a crash: INTERNAL, logged with its trace
            outcome.fail(error, context)
        finally:
            outcome.finish()
            streams.closed()

    return wrapped
