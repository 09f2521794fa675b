"""How many RPC handlers run Python at once: the rest wait in line, within their deadline.

A replica is one Python process: its handlers share one interpreter lock, so a handler thread
beyond the machine's cores adds switching, not throughput (measured in BENCHMARKS.md: with 8
client threads, 16 handler threads against a limit of 1-2 cost ~20 % more CPU per
Assign+Complete pair). The server keeps enough worker threads for long-lived ``Watch``
streams; ``AdmissionInterceptor`` lets at most ``ROUTER_CONCURRENCY`` unary handlers of the
router's services run at a time. A request that cannot get a slot before its deadline ends
with DEADLINE_EXCEEDED having done nothing. Health checks and reflection never wait, so a
busy replica still answers its probes.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import grpc

from router import deadline, metrics
from router.auth import OPEN_SERVICES
from router.interceptors import Handler, UnaryInterceptor


class Admission:
    """A counting gate of ``limit`` slots."""

    def __init__(self, limit: int) -> None:
        """At most ``limit`` (>= 1) holders at once."""
        if limit < 1:
            raise ValueError(f"admission limit {limit} is below 1")
        self.limit = limit
        self._slots = threading.BoundedSemaphore(limit)

    def enter(self, method: str) -> None:
        """Take a slot, waiting in line at most until the current RPC's deadline
        (``router.deadline``); ``DeadlineExceededError`` when it passes first."""
        if self._slots.acquire(blocking=False):
            return
        started = time.perf_counter()
        left = deadline.remaining()
        taken = self._slots.acquire(timeout=None if left is None else max(0.0, left))
        metrics.ADMISSION_WAIT_SECONDS.observe(time.perf_counter() - started)
        if not taken:
            raise deadline.DeadlineExceededError(
                f"{method}: the deadline passed while waiting for one of this replica's "
                f"{self.limit} request slots (ROUTER_CONCURRENCY); nothing was done"
            )

    def leave(self) -> None:
        """Give the slot back."""
        self._slots.release()


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
        admission.enter(method)
        try:
            return inner(request, context)
        finally:
            admission.leave()

    return wrapped
