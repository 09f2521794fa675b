"""How many RPC handlers run Python at once: the rest wait in line, within their deadline.

A replica is one Python process: its handlers share one interpreter lock, so a handler
thread beyond the machine's cores mostly adds switching (BENCHMARKS.md: with 8 clients, 16
slots against 2 cost 3-27 % more service CPU per Assign+Complete pair in four paired runs).
The server keeps enough worker threads for long-lived ``Watch`` streams;
``AdmissionInterceptor`` lets at most ``ROUTER_CONCURRENCY`` unary handlers of the router's
services run at a time. A request that cannot get a slot before its deadline ends with
DEADLINE_EXCEEDED having done nothing. While Redis does not answer (the last request to give
its slot back failed with UNAVAILABLE), requests in line fail fast with UNAVAILABLE instead
of queueing behind requests that wait out the Redis timeout; the next request that gets a
slot tries Redis again. Health checks and reflection never wait, so a busy replica still
answers its probes.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from router import deadline, metrics
from router.auth import OPEN_SERVICES
from router.errors import ResourceExhaustedError, StoreUnavailableError
from router.interceptors import Handler, UnaryInterceptor


class _Ticket:
    """A request waiting in line: woken alone (its own condition, on the gate's lock) when
    a slot is handed to it."""

    __slots__ = ("granted", "woken")

    def __init__(self, lock: threading.Lock) -> None:
        self.granted = False
        self.woken = threading.Condition(lock)


class Admission:
    """A counting gate of ``limit`` slots, fair between tenants, that fails its line fast
    while the store is down.

    A slot given back goes straight to a request in line (never to a newcomer): to the
    first in line of the waiting tenant that holds the fewest slots, ties in turn (round
    robin). So a tenant sending many or slow requests holds at most the slots nobody else
    waits for, and another tenant's request waits for one slot to free, not for the first
    tenant's whole line."""

    def __init__(self, limit: int) -> None:
        """At most ``limit`` (>= 1) holders at once."""
        if limit < 1:
            raise ValueError(f"admission limit {limit} is below 1")
        self.limit = limit
        self._free = limit
        self._store_down = False
        self._lock = threading.Lock()
        self._line: dict[str, deque[_Ticket]] = {}
        """Per tenant with requests in line, its tickets in arrival order; the tenants in
        the order they began waiting."""
        self._held: Counter[str] = Counter()

    def enter(self, method: str, tenant: str = "") -> None:
        """Take a slot for a request of ``tenant``, waiting in line at most until the
        current RPC's deadline (``router.deadline``): ``DeadlineExceededError`` when it
        passes first, ``StoreUnavailableError`` when a holder finds the store down
        meanwhile."""
        with self._lock:
            if self._free and not self._line:
                self._free -= 1
                self._held[tenant] += 1
                return
            ticket = _Ticket(self._lock)
            self._line.setdefault(tenant, deque()).append(ticket)
            started = time.perf_counter()
            left = deadline.remaining()
            until = None if left is None else time.monotonic() + max(0.0, left)
            try:
                while not ticket.granted:  # a slot handed over wins over a deadline passed
                    if self._store_down:
                        self._drop(tenant, ticket)
                        raise StoreUnavailableError(
                            f"{method}: the state store is not answering this replica; "
                            "nothing was done, retry"
                        )
                    wait = None if until is None else until - time.monotonic()
                    if wait is not None and wait <= 0:
                        self._drop(tenant, ticket)
                        raise deadline.DeadlineExceededError(
                            f"{method}: the deadline passed while waiting for one of this "
                            f"replica's {self.limit} request slots (ROUTER_CONCURRENCY); "
                            "nothing was done"
                        )
                    ticket.woken.wait(wait)
            finally:
                metrics.ADMISSION_WAIT_SECONDS.observe(time.perf_counter() - started)

    def leave(self, tenant: str = "", *, store_down: bool = False) -> None:
        """Give back ``tenant``'s slot; ``store_down``: the request found the store
        unreachable (the line then fails fast until a request gives its slot back
        without)."""
        with self._lock:
            self._free += 1
            self._held[tenant] -= 1
            if not self._held[tenant]:
                del self._held[tenant]
            self._store_down = store_down
            if store_down:  # the whole line fails fast
                for tickets in self._line.values():
                    for ticket in tickets:
                        ticket.woken.notify()
            else:
                self._serve()

    def _serve(self) -> None:
        """Hand each free slot to the first request of the waiting tenant holding the fewest
        slots (among equals, the one served longest ago: round robin), and wake that request
        alone."""
        while self._free and self._line:
            tenant = min(self._line, key=self._held.__getitem__)  # the first of ties
            tickets = self._line[tenant]
            ticket = tickets.popleft()
            del self._line[tenant]
            if tickets:  # its next request waits behind the other tenants' first ones
                self._line[tenant] = tickets
            self._free -= 1
            self._held[tenant] += 1
            ticket.granted = True
            ticket.woken.notify()

    def _drop(self, tenant: str, ticket: _Ticket) -> None:
        """Take a request that gives up out of the line (a slot left free while the store
        was down goes to the next request, once the line is no longer failing)."""
        tickets = self._line[tenant]
        tickets.remove(ticket)
        if not tickets:
            del self._line[tenant]
        if not self._store_down:
            self._serve()


class AdmissionInterceptor(UnaryInterceptor):
    """Runs each unary handler of the router's services inside an ``Admission`` slot
    (streams such as Watch mostly wait for events: they take none). Install it after
    ``DeadlineInterceptor`` (inner), so the wait is bounded by the RPC's deadline, and after
    authentication and rate limiting, so refused calls take no slot."""

    def __init__(self, admission: Admission) -> None:
        """Gate handlers with ``admission``."""
        self._admission = admission

    def applies(self, method: str) -> bool:
        """Every method but those of the standard services (health, reflection)."""
        return method.split("/")[1] not in OPEN_SERVICES

    def wrap(self, method: str, inner: Handler) -> Handler:
        """``inner`` inside a slot."""
        return _gated(self._admission, method, inner)


def _gated(admission: Admission, method: str, inner: Handler) -> Handler:
    def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
        tenant = str(getattr(request, "tenant", ""))
        admission.enter(method, tenant)
        down = False
        try:
            return inner(request, context)
        except StoreUnavailableError:
            down = True
            raise
        finally:
            admission.leave(tenant, store_down=down)

    return wrapped


class StreamSlots:
    """Server streams open at once on a replica. A stream (``Watch``, the health ``Watch``,
    reflection) holds a worker thread for as long as it lasts, so at most half the workers
    serve streams, at most a quarter one tenant's ``Watch`` streams and at most an eighth
    (at least one each) the streams anyone may open without a token: the other half of the
    workers always answers unary RPCs, and no tenant or anonymous client can take the
    others' streams. A stream past a limit is refused with RESOURCE_EXHAUSTED at once."""

    def __init__(self, workers: int) -> None:
        """Limits from the server's ``workers`` (``ROUTER_WORKERS``)."""
        self.total = max(1, workers // 2)
        self.per_tenant = max(1, workers // 4)
        self.anonymous = max(1, workers // 8)
        self._lock = threading.Lock()
        self._open = 0
        self._by: dict[str | None, int] = {}
        """Open streams per tenant; ``None``: those of services open to anyone."""

    def enter(self, tenant: str | None) -> None:
        """Take a slot for a stream of ``tenant`` (``None``: a service open to anyone), else
        ``ResourceExhaustedError``."""
        limit = self.anonymous if tenant is None else self.per_tenant
        whose = "without a token" if tenant is None else f"of tenant {tenant}"
        with self._lock:
            if self._open >= self.total:
                raise ResourceExhaustedError(
                    f"{self.total} streams are open on this replica (half its workers); "
                    "retry later or on another replica",
                    retry_after_s=1.0,
                )
            if self._by.get(tenant, 0) >= limit:
                raise ResourceExhaustedError(
                    f"{limit} streams {whose} are open on this replica; close one first",
                    retry_after_s=1.0,
                    own_quota=True,
                )
            self._open += 1
            self._by[tenant] = self._by.get(tenant, 0) + 1

    def leave(self, tenant: str | None) -> None:
        """Give back the slot ``enter`` took."""
        with self._lock:
            self._open -= 1
            left = self._by[tenant] - 1
            if left:
                self._by[tenant] = left
            else:
                del self._by[tenant]


class StreamLimitInterceptor(grpc.ServerInterceptor):
    """Counts every server stream against ``StreamSlots``. Install it inside
    ``AccessInterceptor`` (a refused caller takes no slot) and ``ErrorInterceptor`` (which
    maps the refusal of a server-streaming RPC; a bidirectional one, reflection, is aborted
    here)."""

    def __init__(self, slots: StreamSlots) -> None:
        """Count against ``slots``."""
        self._slots = slots

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return handler
        anonymous = handler_call_details.method.split("/")[1] in OPEN_SERVICES
        slots = self._slots
        if handler.unary_stream is not None:
            inner = handler.unary_stream

            def counted(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                tenant = None if anonymous else str(getattr(request, "tenant", ""))
                slots.enter(tenant)
                try:
                    yield from inner(request, context)
                finally:
                    slots.leave(tenant)

            return grpc.unary_stream_rpc_method_handler(
                counted,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream is not None:
            both = handler.stream_stream

            def counted_both(
                requests: Iterator[Any], context: grpc.ServicerContext
            ) -> Iterator[Any]:
                try:
                    slots.enter(None)
                except ResourceExhaustedError as err:
                    context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, err.message)
                try:
                    yield from both(requests, context)
                finally:
                    slots.leave(None)

            return grpc.stream_stream_rpc_method_handler(
                counted_both,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler
