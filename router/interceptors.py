"""The one place that maps errors to gRPC status codes, and writes one log line per RPC."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc
import structlog

from router.errors import RouterError

log = structlog.get_logger("router.rpc")

Handler = Callable[[Any, grpc.ServicerContext], Any]


def _request_fields(request: Any) -> dict[str, str]:
    """Ids worth binding to the log context, read from the request if present."""
    fields: dict[str, str] = {}
    for name in ("tenant", "request_id", "agent_id", "assignment_id", "call_id"):
        value = getattr(request, name, "")
        if isinstance(value, str) and value:
            fields[name] = value[:128]
    call = getattr(request, "call", None)
    call_id = getattr(call, "call_id", "")
    if isinstance(call_id, str) and call_id:
        fields["call_id"] = call_id[:128]
    return fields


class ErrorInterceptor(grpc.ServerInterceptor):
    """Turns ``RouterError`` into its status code, anything else into INTERNAL (logged with a
    traceback), and logs ``rpc_finished`` with method, code and duration for every unary RPC."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method
        inner: Handler = handler.unary_unary

        def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
            structlog.contextvars.clear_contextvars()
            structlog.contextvars.bind_contextvars(method=method, **_request_fields(request))
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                return inner(request, context)
            except RouterError as err:
                code = err.code
                context.abort(err.code, err.message)
            except Exception:
                code = grpc.StatusCode.INTERNAL
                log.exception("rpc_crashed")
                context.abort(grpc.StatusCode.INTERNAL, "internal error; see the server log")
            finally:
                log.info(
                    "rpc_finished",
                    code=code.name,
                    duration_ms=round((time.perf_counter() - started) * 1000, 3),
                )

        return grpc.unary_unary_rpc_method_handler(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
