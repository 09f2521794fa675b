"""The deadline of the RPC being served, so server-side work stops when nobody waits for it.

``DeadlineInterceptor`` binds the client's deadline (``context.time_remaining()``) to a
context variable for the duration of each handler; code below the servicers reads it with
``remaining``/``check`` and needs no ``grpc.ServicerContext``. Outside an RPC (the
dispatcher's own thread, the simulator, tests) there is no deadline and nothing stops early.

What it bounds: ``Assigner.assign`` checks before every attempt (snapshot, solve, commit) and
never starts a commit after the deadline passed; an Assign's inline dispatch pass is skipped
when too little time is left (the call is already safely queued; the dispatcher's tick places
it) and stops committing between placements once the deadline passes. What it cannot bound:
one Redis command already sent (that is ``ROUTER_REDIS_TIMEOUT_S``), and a commit that started
in time but finished after the deadline. The latter is safe: the client sees
DEADLINE_EXCEEDED, retries with the same ``request_id`` and gets the committed answer.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import grpc

from router.errors import RouterError
from router.interceptors import Handler, UnaryInterceptor

NO_DEADLINE_S = 365 * 86400.0
"""``time_remaining()`` above this means the client set no deadline."""

_DEADLINE: ContextVar[float | None] = ContextVar("router_rpc_deadline", default=None)
"""``time.monotonic()`` at which the current RPC's client stops waiting; None: no deadline."""


class DeadlineExceededError(RouterError):
    """The client's deadline passed before the work could be done; nothing more was written
    (a commit already made stays and is replayed to a retry with the same request_id)."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


@contextmanager
def scope(remaining_s: float | None) -> Iterator[None]:
    """Bind a deadline ``remaining_s`` from now (``None``: none) for the enclosed work."""
    if remaining_s is not None and remaining_s >= NO_DEADLINE_S:
        remaining_s = None
    at = None if remaining_s is None else time.monotonic() + max(0.0, remaining_s)
    token = _DEADLINE.set(at)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def remaining() -> float | None:
    """Seconds left before the current RPC's deadline (may be negative), or ``None``."""
    at = _DEADLINE.get()
    return None if at is None else at - time.monotonic()


def allows(reserve_s: float) -> bool:
    """Whether more than ``reserve_s`` seconds are left (always true without a deadline)."""
    left = remaining()
    return left is None or left > reserve_s


def check(what: str) -> None:
    """Raise ``DeadlineExceededError`` if the current RPC's deadline has passed."""
    left = remaining()
    if left is not None and left <= 0:
        raise DeadlineExceededError(
            f"{what}: the deadline passed {-left:.3f}s ago; retry with the same request_id "
            "(an Assign may have been placed just before: the retry returns it)"
        )


class DeadlineInterceptor(UnaryInterceptor):
    """Binds each unary RPC's deadline for ``remaining``/``check``.
    Install it after ``ErrorInterceptor`` (inner), so ``DeadlineExceededError`` is mapped
    and logged like every other error."""

    def wrap(self, method: str, inner: Handler) -> Handler:
        """``inner`` with the RPC's deadline bound (streams such as Watch run until the
        client leaves: nothing to bound)."""
        return _unary(inner)


def _unary(inner: Handler) -> Handler:
    def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
        with scope(context.time_remaining()):
            return inner(request, context)

    return wrapped
