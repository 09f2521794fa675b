"""The one place that maps errors to gRPC status codes, and writes one log line per RPC."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import structlog

from router import metrics
from router.errors import RouterError

log = structlog.get_logger("router.rpc")

Handler = Callable[[Any, grpc.ServicerContext], Any]


def _request_fields(request: Any) -> dict[str, str]:
    """Ids worth binding to the log context, read from the request if present."""
    fields: dict[str, str] = {}
    for name in ("tenant", "request_id", "agent_id", "assignment_id", "call_id", "reason"):
        value = getattr(request, name, "")
        if isinstance(value, str) and value:
            fields[name] = value[:200]
    call = getattr(request, "call", None)
    call_id = getattr(call, "call_id", "")
    if isinstance(call_id, str) and call_id:
        fields["call_id"] = call_id[:128]
    return fields


class _Outcome:
    """Status code and timing of one RPC, logged once when it ends."""

    def __init__(self, method: str, request: Any) -> None:
        self.method = method.rsplit("/", 1)[-1]
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(method=method, **_request_fields(request))
        self.code = grpc.StatusCode.OK
        self.started = time.perf_counter()

    def fail(self, error: BaseException, context: grpc.ServicerContext) -> None:
        """Abort the RPC with the status that ``error`` maps to (raises)."""
        if isinstance(error, RouterError):
            self.code = error.code
            context.abort(error.code, error.message)
        self.code = grpc.StatusCode.INTERNAL
        log.error("rpc_crashed", exc_info=error)
        context.abort(grpc.StatusCode.INTERNAL, "internal error; see the server log")

    def finish(self) -> None:
        """Write the canonical line and the latency metric."""
        seconds = time.perf_counter() - self.started
        metrics.RPC_SECONDS.labels(self.method, self.code.name).observe(seconds)
        if self.code == grpc.StatusCode.UNAVAILABLE:
            metrics.STORE_ERRORS.inc()
        log.info("rpc_finished", code=self.code.name, duration_ms=round(seconds * 1000, 3))


class ErrorInterceptor(grpc.ServerInterceptor):
    """Turns ``RouterError`` into its status code, anything else into INTERNAL (logged with a
    traceback), and logs ``rpc_finished`` with method, code and duration for every RPC."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _unary(method, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _stream(method, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


def _unary(method: str, inner: Handler) -> Handler:
    def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
        outcome = _Outcome(method, request)
        try:
            return inner(request, context)
        except Exception as error:  # mapped to a status, never swallowed
            outcome.fail(error, context)
        finally:
            outcome.finish()

    return wrapped


def _stream(method: str, inner: Handler) -> Callable[[Any, grpc.ServicerContext], Iterator[Any]]:
    def wrapped(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        outcome = _Outcome(method, request)
        try:
            yield from inner(request, context)
        except GeneratorExit:  # the client went away
            outcome.code = grpc.StatusCode.CANCELLED
            raise
        except Exception as error:  # mapped to a status, never swallowed
            outcome.fail(error, context)
        finally:
            outcome.finish()

    return wrapped
