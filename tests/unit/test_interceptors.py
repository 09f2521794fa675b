"""``router.interceptors.ErrorInterceptor`` on a stand-in servicer context: what it records
of each RPC's ending (the gRPC path itself is covered by the integration tests)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from router.deadline import DeadlineExceededError
from router.errors import (
    AlreadyExistsError,
    ContentionError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
    StoreUnavailableError,
)
from router.interceptors import ErrorInterceptor
from router.v1 import routing_pb2
from tests.helpers import log_lines

GET_CALL = "/router.v1.RoutingService/GetCall"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"


@dataclass
class CallDetails:
    """``grpc.HandlerCallDetails`` of one call."""

    method: str
    invocation_metadata: tuple[tuple[str, str | bytes], ...]


class Context:
    """What the interceptor uses of grpcio's servicer context; ``abort`` raises a bare
    ``Exception`` after setting the status, as grpcio's does."""

    def __init__(self, metadata: tuple[tuple[str, str], ...] = ()) -> None:
        self.metadata = metadata
        self.status: grpc.StatusCode | None = None
        self.message: bytes | None = None
        self.trailers: tuple[tuple[str, str | bytes], ...] | None = None

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.set_code(code)
        self.set_details(details)
        raise Exception()  # grpcio's own

    def set_code(self, code: grpc.StatusCode) -> None:
        self.status = code

    def set_details(self, details: str) -> None:
        self.message = details.encode()

    def code(self) -> grpc.StatusCode | None:
        return self.status

    def details(self) -> bytes | None:
        return self.message

    def set_trailing_metadata(self, metadata: tuple[tuple[str, str | bytes], ...]) -> None:
        self.trailers = metadata

    def trailing_metadata(self) -> tuple[tuple[str, str | bytes], ...] | None:
        return self.trailers


@pytest.fixture
def lines() -> Iterator[list[MutableMapping[str, Any]]]:
    """The log events written meanwhile, debug included, with their bound context."""
    with log_lines("debug") as entries:
        yield entries


def call(
    method: str, behaviour: Callable[[Any, Any], Any], context: Context | None = None
) -> Context:
    """Serve one unary RPC of ``method`` through ``ErrorInterceptor``, the handler doing
    ``behaviour(request, context)``; the context it ran with."""
    context = context or Context()
    handler: grpc.RpcMethodHandler[Any, Any] = grpc.unary_unary_rpc_method_handler(behaviour)
    details = CallDetails(method, context.metadata)
    wrapped = ErrorInterceptor().intercept_service(lambda _: handler, details)
    assert wrapped is not None
    assert wrapped.unary_unary is not None
    request = routing_pb2.GetCallRequest(tenant="acme", call_id="c1")
    with contextlib.suppress(Exception):  # the abort, as grpcio's raises it
        wrapped.unary_unary(request, context)  # type: ignore[arg-type]  # the stand-in
    return context


def finished(lines: list[MutableMapping[str, Any]]) -> MutableMapping[str, Any]:
    """The one ``rpc_finished`` line."""
    (line,) = [line for line in lines if line["event"] == "rpc_finished"]
    return line


def raising(error: Exception) -> Callable[[Any, Any], Any]:
    """A handler that raises ``error``."""

    def behaviour(request: Any, context: Any) -> Any:
        raise error

    return behaviour


@pytest.mark.parametrize(
    ("error", "code", "level"),
    [
        (InvalidArgumentError("call_id", "is required"), "INVALID_ARGUMENT", "info"),
        (NotFoundError("call c1 not found"), "NOT_FOUND", "info"),
        (FailedPreconditionError("assignment a1: stale token"), "FAILED_PRECONDITION", "info"),
        (AlreadyExistsError("agent ana exists"), "ALREADY_EXISTS", "info"),
        (StoreUnavailableError("redis unavailable: connection refused"), "UNAVAILABLE", "warning"),
        (DeadlineExceededError("assign: the deadline passed"), "DEADLINE_EXCEEDED", "warning"),
        (ContentionError("the policy kept changing"), "ABORTED", "warning"),
        (ResourceExhaustedError("tenant acme: queue full"), "RESOURCE_EXHAUSTED", "warning"),
        (
            ResourceExhaustedError("tenant acme: rate limit", retry_after_s=0.5, own_quota=True),
            "RESOURCE_EXHAUSTED",
            "info",
        ),
        (RuntimeError("a bug"), "INTERNAL", "error"),
    ],
)
def test_rpc_finished_is_at_the_level_its_code_calls_for_with_the_clients_message(
    lines: list[MutableMapping[str, Any]], error: Exception, code: str, level: str
) -> None:
    """The caller's mistakes at info (a refusal of the caller's own quota too: a client
    over its rate limit would fill a warning log), the server's failures and overload at
    warning (so ``ROUTER_LOG_LEVEL=warning`` keeps them, with the RPC's ids), a crash at
    error; each with the status message the client got."""
    context = call(GET_CALL, raising(error))
    line = finished(lines)
    assert (line["code"], line["log_level"]) == (code, level)
    assert line["call_id"] == "c1"
    assert context.message is not None
    assert line["details"] == context.message.decode()


def test_an_errors_cause_is_logged_and_never_sent(
    lines: list[MutableMapping[str, Any]],
) -> None:
    """A store error's driver text (the server's address, key names) is the line's
    ``cause``; the client's status message has only the kind of failure."""
    cause = "Error 111 connecting to 10.0.0.7:6379. Connection refused."
    error = StoreUnavailableError("redis unavailable: ConnectionError", cause=cause)
    context = call(GET_CALL, raising(error))
    line = finished(lines)
    assert context.message == b"redis unavailable: ConnectionError"
    assert (line["details"], line["cause"]) == ("redis unavailable: ConnectionError", cause)


def test_an_ok_has_no_message_and_only_the_health_checks_ok_is_at_debug(
    lines: list[MutableMapping[str, Any]],
) -> None:
    """Probes every few seconds would fill an info log; a health Check that answered
    anything else, and every other OK, stay at info."""
    call(GET_CALL, lambda request, context: routing_pb2.GetCallResponse())
    call(HEALTH_CHECK, lambda request, context: routing_pb2.GetCallResponse())

    def unknown_service(request: Any, context: Any) -> Any:
        context.set_code(grpc.StatusCode.NOT_FOUND)
        return routing_pb2.GetCallResponse()

    call(HEALTH_CHECK, unknown_service)
    found = [(line["code"], line["log_level"], "details" in line) for line in lines]
    assert found == [("OK", "info", False), ("OK", "debug", False), ("NOT_FOUND", "info", False)]


def test_the_logged_message_is_clipped_and_printable(
    lines: list[MutableMapping[str, Any]],
) -> None:
    """A message quoting what the caller sent stays one short, printable line."""
    call(GET_CALL, raising(NotFoundError("call " + "\n" * 10 + "x" * 500)))
    details = finished(lines)["details"]
    assert details == "call " + "?" * 10 + "x" * 185 + "..."
