"""The one error tree. Each class carries the gRPC status code it maps to.

Servicers and stores raise these; one interceptor (``router.interceptors``) turns them into
statuses. "No agent free" is a result, never an error. Codes follow ``google.rpc.Code`` retry
semantics: ABORTED and UNAVAILABLE are safe to retry, the others need a changed request.
"""

from __future__ import annotations

import logging

import grpc


class RouterError(Exception):
    """Base class: a client-visible failure with a status code and a message."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    level: int | None = None
    """The level of the RPC's ``rpc_finished`` line when not its code's
    (``interceptors.LEVELS``)."""

    def __init__(self, message: str, *, cause: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.cause = cause
        """What the server's log adds to ``message`` and the client never sees (a driver's
        error text: addresses, key names)."""

    @property
    def logged(self) -> str:
        """``message``, with ``cause`` when there is one: what a log line says."""
        return f"{self.message} ({self.cause})" if self.cause else self.message


class InvalidArgumentError(RouterError):
    """The request is malformed; the message names the field (``agent.skills["x"]: ...``)."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class NotFoundError(RouterError):
    """The named agent, assignment, call or absence does not exist in this tenant."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExistsError(RouterError):
    """Creating something that already exists (an agent id taken in the tenant)."""

    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPreconditionError(RouterError):
    """The system is not in the state the request needs (wrong fencing token, call finished)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class VersionConflictError(RouterError):
    """Optimistic concurrency: the caller's version is stale. Re-read and retry."""

    code = grpc.StatusCode.ABORTED


class ContentionError(RouterError):
    """Too many concurrent changes to re-plan within the bounded number of attempts."""

    code = grpc.StatusCode.ABORTED


class PolicyChangedError(ContentionError):
    """The tenant's policy changed since the caller read it: read it again and retry (what
    ``Complete`` does; a client sees ABORTED only if it keeps changing)."""


class StoreUnavailableError(RouterError):
    """The state store cannot be reached or timed out; safe to retry."""

    code = grpc.StatusCode.UNAVAILABLE


class StoppingError(RouterError):
    """The replica is stopping: a stream it ends at once, so the stop need not wait out its
    grace period for it; the client resumes on another replica (a Watch from its last event
    id). A deploy, not a fault: logged at info, not counted as a store error."""

    code = grpc.StatusCode.UNAVAILABLE
    level = logging.INFO


class ResourceExhaustedError(RouterError):
    """A quota is used up (the tenant's queue is full, a rate limit). Retry later.

    With ``retry_after_s`` the status carries ``google.rpc.RetryInfo`` in its rich details
    and a ``retry-after`` trailer (whole seconds, rounded up). ``own_quota``: the caller's
    own allowance (its rate limit, its streams), a refusal logged at info like the caller's
    other mistakes, not the server's capacity (logged at warning)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(
        self, message: str, *, retry_after_s: float | None = None, own_quota: bool = False
    ) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.level = logging.INFO if own_quota else None


class UnauthenticatedError(RouterError):
    """No credentials, or credentials the service does not know. The message never repeats
    what the caller sent."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDeniedError(RouterError):
    """Known caller, but the tenant or the method is outside what its token grants; the
    message names what is missing."""

    code = grpc.StatusCode.PERMISSION_DENIED


class OutOfRangeError(RouterError):
    """A cursor points before what is still kept (events trimmed from the stream)."""

    code = grpc.StatusCode.OUT_OF_RANGE
