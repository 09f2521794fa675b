"""The routing gRPC servicer: what helpdesk platforms call for each piece of work.

No try/except for status mapping here: errors raised below are mapped by
``router.interceptors.ErrorInterceptor``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

import grpc

from router import convert, metrics, tracing
from router.assigner import Assigner, AssignResult, Outcome
from router.dispatcher import outage_grace_s
from router.domain import Assignment, AssignmentState, CallStatus, Channel
from router.domain import Outcome as CallOutcome
from router.errors import (
    ContentionError,
    InvalidArgumentError,
    PolicyChangedError,
    StoppingError,
)
from router.interceptors import bind_call
from router.stats_api import stats_to_pb
from router.store import EVENT_TYPES, Finished, KnownPolicy, Store
from router.v1 import routing_pb2, routing_pb2_grpc
from router.v1 import types_pb2 as pb
from scoring import performance

MAX_HANDLE_S = 7 * 86400
WATCH_BLOCK_MS = 1000
WATCH_BATCH = 200
MAX_WATCH_TYPES = 32
POLICY_ATTEMPTS = 3
"""Accept's, Complete's and Release's tries when the policy changes under them (then
ABORTED: retry)."""
_T = TypeVar("_T")
U64_MAX = 2**64 - 1
_EVENT_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")  # not \d: it takes any Unicode digit
_RESULTS = {
    Outcome.ASSIGNED: routing_pb2.AssignResponse.RESULT_ASSIGNED,
    Outcome.OFFERED: routing_pb2.AssignResponse.RESULT_OFFERED,
    Outcome.QUEUED: routing_pb2.AssignResponse.RESULT_QUEUED,
    Outcome.NO_AGENT: routing_pb2.AssignResponse.RESULT_NO_AGENT,
}


def _token(value: int) -> int:
    if value <= 0:
        raise InvalidArgumentError(
            "fencing_token", "must be the assignment's token (a positive number)"
        )
    return value


class RoutingServicer(routing_pb2_grpc.RoutingServiceServicer):
    """Assign, Accept, Reject, Complete, Release, Cancel, RequestCallback, GetCall, GetStats,
    Watch. Whatever frees capacity while calls wait wakes the dispatcher for the tenant."""

    def __init__(
        self,
        store: Store,
        assigner: Assigner,
        wake: Callable[[str], None],
        draining: threading.Event | None = None,
    ) -> None:
        """``draining``: set when the server stops (``Streams.draining``); a Watch then
        ends within a second instead of holding the stop for its grace period."""
        self._store = store
        self._assigner = assigner
        self._wake = wake
        self._draining = draining or threading.Event()

    def Assign(  # noqa: N802  # gRPC method names are CamelCase
        self, request: routing_pb2.AssignRequest, context: grpc.ServicerContext
    ) -> routing_pb2.AssignResponse:
        """See ``proto/router/v1/routing.proto``."""
        tenant = convert.tenant(request.tenant)
        request_id = convert.identifier("request_id", request.request_id)
        if not request.HasField("call"):
            raise InvalidArgumentError("call", "is required")
        call = convert.call_from_pb(request.call)
        result = self._assigner.assign(tenant, request_id, call, queue=not request.no_queue)
        if not result.replayed:  # a retry's answer is the first one's, counted then
            metrics.ASSIGNMENTS.labels(
                tenant, result.outcome.value, result.explanation.strategy.value
            ).inc()
        if tracing.enabled():
            tracing.annotate(_assign_attributes(result))
        return _assign_response(result)

    def Accept(  # noqa: N802
        self, request: routing_pb2.AcceptRequest, context: grpc.ServicerContext
    ) -> routing_pb2.AcceptResponse:
        """See ``proto/router/v1/routing.proto``."""
        tenant = convert.tenant(request.tenant)
        assignment_id = convert.identifier("assignment_id", request.assignment_id)
        accepted = self._accept(tenant, assignment_id, _token(request.fencing_token))
        bind_call(accepted.call_id)
        return routing_pb2.AcceptResponse(assignment=convert.assignment_to_pb(accepted))

    def _accept(self, tenant: str, assignment_id: str, token: int) -> Assignment:
        """Accept the offer under the tenant's policy (its reclaim rule, heartbeat timeout
        and SLA targets: ``_under_policy``)."""

        def accept(known: KnownPolicy) -> Assignment:
            # After an outage, as the dispatcher, let lapsed heartbeats be: a sign of life.
            grace = self._store.unavailable_within(outage_grace_s(known.policy), tenant)
            return self._store.accept_offer(
                tenant,
                assignment_id,
                token,
                policy=known.policy,
                heartbeat_grace=grace,
                policy_tag=known.tag,
            )

        return self._under_policy(tenant, assignment_id, accept)

    def _under_policy(
        self, tenant: str, assignment_id: str, step: Callable[[KnownPolicy], _T]
    ) -> _T:
        """``step`` under the policy this replica knows, so nothing is read first; if the
        policy changed meanwhile (the store refuses the step: ``PolicyChangedError``), read
        it again and retry, ``POLICY_ATTEMPTS`` times in all."""
        for attempt in range(POLICY_ATTEMPTS):
            try:
                return step(self._store.known_policy(tenant, fresh=attempt > 0))
            except PolicyChangedError:
                metrics.RETRIES.labels("policy").inc()
        raise ContentionError(
            f"assignment {assignment_id}: the policy kept changing; retry with the same token"
        )

    def Reject(  # noqa: N802
        self, request: routing_pb2.RejectRequest, context: grpc.ServicerContext
    ) -> routing_pb2.RejectResponse:
        """See ``proto/router/v1/routing.proto``."""
        tenant = convert.tenant(request.tenant)
        assignment_id = convert.identifier("assignment_id", request.assignment_id)
        convert.text("reason", request.reason, max_len=convert.MAX_NAME)
        policy = self._store.get_policy(tenant)
        rejected = self._store.decline_offer(
            tenant, assignment_id, _token(request.fencing_token), timed_out=False, policy=policy
        )
        bind_call(rejected.call_id)
        self._wake(tenant)
        return routing_pb2.RejectResponse(assignment=convert.assignment_to_pb(rejected))

    def Complete(  # noqa: N802
        self, request: routing_pb2.CompleteRequest, context: grpc.ServicerContext
    ) -> routing_pb2.CompleteResponse:
        """See ``proto/router/v1/routing.proto``."""
        tenant = convert.tenant(request.tenant)
        assignment_id = convert.identifier("assignment_id", request.assignment_id)
        token = _token(request.fencing_token)
        outcome = request.outcome
        if not 0 <= outcome.csat <= 5:
            raise InvalidArgumentError("outcome.csat", f"{outcome.csat} is not in 0..5")
        handle_s = convert.duration_seconds("outcome.handle_time", outcome.handle_time)
        if not 0 <= handle_s <= MAX_HANDLE_S:
            raise InvalidArgumentError("outcome.handle_time", "must be between 0 and 7 days")
        ended = CallOutcome(
            handle_time_s=handle_s,
            csat=outcome.csat,
            resolved=outcome.resolved if outcome.HasField("resolved") else None,
        )
        finished = self._finish(tenant, assignment_id, token, ended)
        bind_call(finished.assignment.call_id)
        if finished.calls_waiting:  # else the freed slot has no call to take
            self._wake(tenant)
        return routing_pb2.CompleteResponse(
            assignment=convert.assignment_to_pb(finished.assignment)
        )

    def _finish(
        self, tenant: str, assignment_id: str, token: int, outcome: CallOutcome | None
    ) -> Finished:
        """End the assignment, COMPLETED with ``outcome`` (its value and wrap-up given for
        every channel: the store applies the assignment's channel's) or RELEASED without,
        under the tenant's policy (``_under_policy``)."""
        end = AssignmentState.RELEASED if outcome is None else AssignmentState.COMPLETED

        def finish(known: KnownPolicy) -> Finished:
            policy = known.policy
            terms = None
            if outcome is not None:
                terms = {
                    channel: (
                        performance.outcome_value(
                            outcome, target_handle_s=policy.expected_handle_s.get(channel, 0)
                        ),
                        policy.wrap_up_s.get(channel, 0),
                    )
                    for channel in Channel
                }
            return self._store.finish_assignment(
                tenant,
                assignment_id,
                token,
                end,
                half_life_s=policy.performance_half_life_s,
                policy=policy,
                channel_terms=terms,
                policy_tag=known.tag,
            )

        return self._under_policy(tenant, assignment_id, finish)

    def Release(  # noqa: N802
        self, request: routing_pb2.ReleaseRequest, context: grpc.ServicerContext
    ) -> routing_pb2.ReleaseResponse:
        """See ``proto/router/v1/routing.proto``."""
        tenant = convert.tenant(request.tenant)
        assignment_id = convert.identifier("assignment_id", request.assignment_id)
        convert.text("reason", request.reason, max_len=convert.MAX_NAME)
        released = self._finish(tenant, assignment_id, _token(request.fencing_token), None)
        bind_call(released.assignment.call_id)
        if released.calls_waiting:  # the released call itself, at least
            self._wake(tenant)
        return routing_pb2.ReleaseResponse(assignment=convert.assignment_to_pb(released.assignment))

    def Cancel(  # noqa: N802
        self, request: routing_pb2.CancelRequest, context: grpc.ServicerContext
    ) -> routing_pb2.CancelResponse:
        """See ``proto/router/v1/routing.proto``."""
        tenant = convert.tenant(request.tenant)
        call_id = convert.identifier("call_id", request.call_id)
        convert.text("reason", request.reason, max_len=convert.MAX_NAME)
        record = self._store.cancel_call(tenant, call_id)
        self._wake(tenant)
        now = self._store.now_ms()
        return routing_pb2.CancelResponse(call=convert.call_record_to_pb(record, now))

    def RequestCallback(  # noqa: N802
        self, request: routing_pb2.RequestCallbackRequest, context: grpc.ServicerContext
    ) -> routing_pb2.RequestCallbackResponse:
        """See ``proto/router/v1/routing.proto``."""
        tenant = convert.tenant(request.tenant)
        call_id = convert.identifier("call_id", request.call_id)
        record = self._store.request_callback(tenant, call_id)
        wait = self._assigner.estimated_wait(tenant, record)
        call = convert.call_record_to_pb(record, self._store.now_ms(), estimated_wait_s=wait)
        return routing_pb2.RequestCallbackResponse(call=call)

    def GetCall(  # noqa: N802
        self, request: routing_pb2.GetCallRequest, context: grpc.ServicerContext
    ) -> routing_pb2.GetCallResponse:
        """See ``proto/router/v1/routing.proto``."""
        tenant = convert.tenant(request.tenant)
        call_id = convert.identifier("call_id", request.call_id)
        record, timeline = self._store.call_with_timeline(tenant, call_id)
        wait = None
        if record.status == CallStatus.QUEUED:
            wait = self._assigner.estimated_wait(tenant, record)
        info = convert.call_record_to_pb(
            record, self._store.now_ms(), estimated_wait_s=wait, timeline=timeline
        )
        return routing_pb2.GetCallResponse(call=info)

    def GetStats(  # noqa: N802
        self, request: routing_pb2.GetStatsRequest, context: grpc.ServicerContext
    ) -> routing_pb2.GetStatsResponse:
        """See ``proto/router/v1/routing.proto``."""
        return stats_to_pb(self._store, convert.tenant(request.tenant))

    def Watch(  # noqa: N802
        self, request: routing_pb2.WatchRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.Event]:
        """See ``proto/router/v1/routing.proto``."""
        tenant = convert.tenant(request.tenant)
        cursor = _watch_cursor(request.after_event_id)
        types = _watch_filter(request)
        if not cursor:
            cursor = self._store.last_event_id(tenant)
        # The headers go out now, before the first event: a client that waits for them
        # sees every event made after (and knows where its stream starts, to resume there).
        context.send_initial_metadata(((convert.WATCH_CURSOR_HEADER, cursor),))
        while context.is_active():
            if self._draining.is_set():
                raise StoppingError(
                    "this replica is stopping: watch again, after the last event id received,"
                    " to resume on another"
                )
            events = self._store.read_events(
                tenant, cursor, limit=WATCH_BATCH, block_ms=WATCH_BLOCK_MS
            )
            for event in events:
                cursor = event.event_id
                if request.call_id and event.call_id != request.call_id:
                    continue
                if request.agent_id and event.agent_id != request.agent_id:
                    continue
                if types and event.type not in types:
                    continue
                yield convert.event_to_pb(event)


def _watch_cursor(cursor: str) -> str:
    """Empty (from now), "0" (from the oldest kept) or a stream id within 64-bit parts."""
    if cursor and cursor != "0":
        if not _EVENT_ID.fullmatch(cursor):
            raise InvalidArgumentError("after_event_id", "must be an event id like 1700000000000-0")
        if any(int(part) > U64_MAX for part in cursor.split("-")):
            raise InvalidArgumentError("after_event_id", "is out of range")
    return cursor


def _watch_filter(request: routing_pb2.WatchRequest) -> set[str]:
    """Check the call, agent and type filters of a Watch; the wanted types."""
    if request.call_id:
        convert.identifier("call_id", request.call_id)
    if request.agent_id:
        convert.identifier("agent_id", request.agent_id)
    if len(request.types) > MAX_WATCH_TYPES:
        raise InvalidArgumentError("types", f"more than {MAX_WATCH_TYPES}")
    for i, name in enumerate(request.types):
        if name not in EVENT_TYPES:
            raise InvalidArgumentError(f"types[{i}]", f"{convert.shown(name)} is not an event type")
    return set(request.types)


def _assign_attributes(result: AssignResult) -> dict[str, str | int | bool]:
    """What an Assign's span records of its answer."""
    attributes: dict[str, str | int | bool] = {
        "router.result": result.outcome.value,
        "router.strategy": result.explanation.strategy.value,
        "router.attempts": result.attempts,
        "router.replayed": result.replayed,
    }
    if result.assignment is not None:
        attributes["router.assigned_agent_id"] = result.assignment.agent_id
    if result.outcome == Outcome.QUEUED:
        attributes["router.position"] = result.position
    return attributes


def _assign_response(result: AssignResult) -> routing_pb2.AssignResponse:
    response = routing_pb2.AssignResponse(
        result=_RESULTS[result.outcome],
        explanation=convert.explanation_to_pb(result.explanation),
        replayed=result.replayed,
        position=result.position,
        callback_offered=result.callback_offered,
    )
    if result.assignment is not None:
        response.assignment.CopyFrom(convert.assignment_to_pb(result.assignment))
    if result.outcome == Outcome.QUEUED:
        response.estimated_wait.CopyFrom(convert.duration(result.estimated_wait_s))
    return response
