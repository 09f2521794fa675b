"""Rules both stores share, so ``MemoryStore`` and ``RedisStore`` behave identically.

Retention constants, the tenant check, the page-token and event-id encodings, the
``list_agents`` filter, the age and wait rules of queued calls and the exact wording of every
store error. (The performance fold is
``scoring.performance.fold``; the Lua scripts repeat its formula operation for operation.)
Nothing here touches Redis or a clock.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import operator
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import islice

from router import metrics
from router.domain import (
    ActiveWork,
    AgentProfile,
    AgentSnapshot,
    AssignmentState,
    Channel,
    Policy,
    WorkSpan,
)
from router.errors import (
    ContentionError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    OutOfRangeError,
    ResourceExhaustedError,
    VersionConflictError,
)
from router.store import AgentQuery, HistoryEntry

REQUEST_TTL_MS = 24 * 3600 * 1000
"""How long an idempotency record (``request_id`` -> fingerprint and call id) is kept."""

RECORD_TTL_MS = 7 * 24 * 3600 * 1000
"""How long an ended assignment and a finished call (completed, cancelled, abandoned) and its
timeline are kept after their last change. Longer than ``REQUEST_TTL_MS``, so a replayable
request always finds its call. Calls that are still alive never expire."""

HISTORY_MS = 2 * 3600 * 1000
"""Answered/abandoned/completed entries are kept this long (live statistics look back 2 h)."""
RATE_WINDOW_MS = 15 * 60 * 1000
"""The window ``completions`` counts in (``forecast.RATE_WINDOW_S``: the service rate)."""

TIMELINE_MAX = 200
"""Events kept in one call's timeline (the latest ones)."""

WORK_RETENTION_MS = 24 * 3600 * 1000
"""Finished work spans are kept this long (the longest occupancy window a policy may use).
Agent reads outside ``load_snapshot`` report the spans of this window as ``recent``."""

EVENTS_MAXLEN = 100_000
"""Approximate length cap of each tenant's event stream."""

MAX_CAS_ATTEMPTS = 5
"""Re-reads of an unconditional (``expected_version == 0``) update before ``ContentionError``."""

ENDINGS = frozenset(
    {AssignmentState.COMPLETED, AssignmentState.RELEASED, AssignmentState.CANCELLED}
)
"""How ``finish_assignment`` may end an ACTIVE assignment."""

EVENTS_START = (0, 0)
"""``read_events`` from "0" means "from the oldest event still kept": never out of range."""

_PAGE_TOKEN_PREFIX = "agent:"
_EVENT_ID = re.compile(r"^(\d{1,20})(?:-(\d{1,20}))?$")
U64_MAX = 2**64 - 1


def count_abandoned(tenant: str, channel: Channel, waited_ms: int) -> None:
    """A Cancel abandoned a waiting call after ``waited_ms``: the abandoned wait histogram
    (both stores, once per call: only the Cancel that changed the call counts)."""
    metrics.CALL_ABANDONED.labels(tenant, channel.value).observe(waited_ms / 1000)


def count_completions(
    history: Iterable[HistoryEntry], since_ms: int, now_ms: int | None = None
) -> Mapping[Channel, int]:
    """``completed`` history entries per channel (every channel listed) at ``since_ms`` or
    later (and at ``now_ms`` or earlier when given): ``Store.completions`` from a history."""
    done = Counter(
        entry.channel
        for entry in history
        if entry.kind == "completed"
        and entry.at_ms >= since_ms
        and (now_ms is None or entry.at_ms <= now_ms)
    )
    return {channel: done[channel] for channel in Channel}


def count_breached(tenant: str) -> None:
    """An accepted offer's call had waited past its SLA target (flagged then: the
    dispatcher flags waiting calls only)."""
    metrics.SLA_EVENTS.labels(tenant, "breached").inc()


def sla_targets_ms(policy: Policy) -> str:
    """The policy's SLA targets as ``accept_offer.lua`` reads them: JSON, ms per channel."""
    return json.dumps(
        {str(channel): target.target_s * 1000 for channel, target in policy.sla.items()},
        separators=(",", ":"),
    )


def check_tenant(tenant: str) -> None:
    """Refuse a tenant that would break the key schema: it becomes the Redis Cluster hash tag
    (``{tenant}``) of every key, so it must be non-empty and free of braces. (The service
    validates tenants more strictly; this guards direct users such as the simulator.)"""
    if not tenant or "{" in tenant or "}" in tenant:
        raise InvalidArgumentError("tenant", "must be non-empty and contain no braces")


def check_ending(
    end: AssignmentState,
    outcome_value: float | None,
    channel_terms: Mapping[Channel, tuple[float | None, int]] | None = None,
) -> None:
    """Validate the arguments of ``finish_assignment``."""
    if end not in ENDINGS:
        raise InvalidArgumentError("end", "must be COMPLETED, RELEASED or CANCELLED")
    values = [outcome_value, *(value for value, _ in (channel_terms or {}).values())]
    if any(value is not None and not math.isfinite(value) for value in values):
        raise InvalidArgumentError("outcome_value", "must be a finite number")


def terms_for(
    channel: Channel,
    channel_terms: Mapping[Channel, tuple[float | None, int]] | None,
    outcome_value: float | None,
    wrap_up_s: int,
) -> tuple[float | None, int]:
    """The (outcome value, wrap-up seconds) ``finish_assignment`` applies to work on
    ``channel``: its entry in ``channel_terms``, else the plain arguments."""
    found = (channel_terms or {}).get(channel)
    return (outcome_value, wrap_up_s) if found is None else found


def check_positive(name: str, value: int) -> None:
    """Refuse a non-positive count or duration argument."""
    if value <= 0:
        raise InvalidArgumentError(name, "must be positive")


def check_lease(owner: str, ttl_ms: int, tick_ms: int = 0) -> None:
    """Refuse a lease or pass request without an owner, or with a bad duration."""
    check_positive("ttl_ms", ttl_ms)
    if tick_ms < 0:
        raise InvalidArgumentError("tick_ms", "must not be negative")
    if not owner:
        raise InvalidArgumentError("owner", "must be non-empty")


def age_origin(enqueued_ms: int, created_ms: int, now_ms: int) -> int:
    """Where a call's age (queue order, waits, SLA) counts from: when it first waited, else
    when it was created, else (neither known) when the store first saw it."""
    return enqueued_ms or created_ms or now_ms


def queue_score(origin_ms: int, priority: int, aging_s_per_priority: int) -> float:
    """``router.store.queue_score`` on stored values: the age origin minus what the priority
    is worth. The Lua scripts compute the same double."""
    return float(origin_ms - priority * aging_s_per_priority * 1000)


def boosted(priority: int, boost: int) -> int:
    """An at-risk call's new priority (never above 10)."""
    return min(10, priority + boost)


def split_work(
    works: Sequence[ActiveWork], now: int
) -> tuple[tuple[ActiveWork, ...], list[WorkSpan]]:
    """Work that holds capacity at ``now`` (in ``start_ms``, id order), and the spans of
    wrap-ups that have ended but were not yet moved to the ``work`` ZSET (they end at their
    ``wrap_until_ms``, exactly as the span written when they are moved)."""
    held = sorted((w for w in works if w.holds(now)), key=lambda w: (w.start_ms, w.assignment_id))
    ended = [WorkSpan(w.start_ms, w.wrap_until_ms, w.units) for w in works if not w.holds(now)]
    return tuple(held), ended


def span_order(span: WorkSpan) -> tuple[int, int, int]:
    """How both stores order ``recent``: by end, then start, then units (never by the random
    assignment id that leads the ZSET member)."""
    return span.end_ms, span.start_ms, span.units


_END = operator.attrgetter("end_ms")


def recent_spans(spans: Iterable[WorkSpan], cutoff: int) -> tuple[WorkSpan, ...]:
    """The ``spans`` ending at ``cutoff`` or later, in ``span_order``.

    Spans read from the ``work`` ZSET come by end already (its score), so when the ends
    strictly increase the spans are taken as they come: no sort key built per span, which
    for an agent with hundreds of spans cost more than the rest of decoding it. Equal ends
    or any other order are sorted."""
    kept = [span for span in spans if span.end_ms >= cutoff]
    ends = list(map(_END, kept))
    if all(map(operator.lt, ends, islice(ends, 1, None))):  # C-level pairwise check
        return tuple(kept)
    return tuple(sorted(kept, key=span_order))


def checked_change(
    change: Callable[[AgentProfile], AgentProfile], current: AgentProfile
) -> AgentProfile:
    """Apply an ``update_agent`` change; it may raise (validation), and may not rename."""
    changed = change(current)
    if changed.agent_id != current.agent_id:
        raise InvalidArgumentError("agent.agent_id", "cannot be changed")
    return changed


def encode_page_token(last_agent_id: str) -> str:
    """Opaque ``list_agents`` cursor: the last agent id returned, base64url-encoded."""
    raw = (_PAGE_TOKEN_PREFIX + last_agent_id).encode()
    return base64.urlsafe_b64encode(raw).decode("ascii")


def decode_page_token(token: str) -> str:
    """The agent id inside a page token; ``InvalidArgumentError`` if the token is not ours."""
    try:
        text = base64.urlsafe_b64decode(token.encode("ascii")).decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError) as exc:
        raise InvalidArgumentError("page_token", "not a token this service issued") from exc
    if not text.startswith(_PAGE_TOKEN_PREFIX) or len(text) == len(_PAGE_TOKEN_PREFIX):
        raise InvalidArgumentError("page_token", "not a token this service issued")
    return text[len(_PAGE_TOKEN_PREFIX) :]


def parse_event_id(event_id: str) -> tuple[int, int]:
    """``"<ms>"`` or ``"<ms>-<n>"`` as a comparable pair; ``InvalidArgumentError`` otherwise."""
    match = _EVENT_ID.match(event_id)
    if match is None:
        raise InvalidArgumentError("after_id", "expected an event id like 1700000000000-0")
    ms, seq = int(match.group(1)), int(match.group(2) or 0)
    if ms > U64_MAX or seq > U64_MAX:
        raise InvalidArgumentError("after_id", "event id out of range")
    return ms, seq


def matches(query: AgentQuery, agent: AgentSnapshot) -> bool:
    """The ``list_agents`` filter: skill held (any level), team compared
    case-insensitively, region as routing compares it (both lower-cased), presence equal."""
    profile = agent.profile
    return (
        (not query.skill or query.skill in profile.skills)
        and (not query.team or profile.team.casefold() == query.team.casefold())
        and (not query.region or profile.region.lower() == query.region.lower())
        and (query.presence is None or agent.presence == query.presence)
    )


# --- the exact wording of store errors -------------------------------------------------------


def agent_not_found(agent_id: str) -> NotFoundError:
    """The agent does not exist."""
    return NotFoundError(f"agent {agent_id} not found")


def stale_version(what: str, expected: int, current: int) -> VersionConflictError:
    """``what`` (``agent <id>`` or ``policy``) moved past the caller's version."""
    return VersionConflictError(f"{what}: version {expected} is stale, current is {current}")


def contention(what: str) -> ContentionError:
    """Unconditional update lost the race ``MAX_CAS_ATTEMPTS`` times."""
    return ContentionError(f"{what}: too many concurrent updates, retry later")


def agent_busy(agent_id: str, active: int) -> FailedPreconditionError:
    """Deleting an agent that still holds work."""
    return FailedPreconditionError(
        f"agent {agent_id} holds {active} assignment(s) (offered, active or in wrap-up)"
    )


def call_assigned(call_id: str, assignment_id: str) -> FailedPreconditionError:
    """Committing a call that already has an active assignment."""
    return FailedPreconditionError(
        f"call {call_id} is already assigned (assignment {assignment_id})"
    )


def call_finished(call_id: str, status: str) -> FailedPreconditionError:
    """Committing a known call directly, cancelling a completed one, or asking a callback
    for a call that is not QUEUED."""
    return FailedPreconditionError(f"call {call_id} is {status}")


def call_not_found(call_id: str) -> NotFoundError:
    """The call is unknown (or its record expired)."""
    return NotFoundError(f"call {call_id} not found")


def assignment_not_found(assignment_id: str) -> NotFoundError:
    """The assignment is unknown (or its record expired)."""
    return NotFoundError(f"assignment {assignment_id} not found")


def queue_full(tenant: str, depth: int) -> ResourceExhaustedError:
    """``enqueue`` at ``Policy.max_queue``."""
    return ResourceExhaustedError(f"tenant {tenant}: the queue is full ({depth} calls)")


def offer_expired(assignment_id: str) -> FailedPreconditionError:
    """Accepting or rejecting an offer after its expiry."""
    return FailedPreconditionError(f"offer {assignment_id} has expired")


def agent_away(assignment_id: str, reason: str) -> FailedPreconditionError:
    """Accepting an offer for an agent who left since it was made (it is taken back)."""
    return FailedPreconditionError(
        f"offer {assignment_id} cannot be accepted: {reason} (the offer is taken back)"
    )


def not_an_offer(assignment_id: str) -> FailedPreconditionError:
    """Accepting an assignment that was made directly, never offered."""
    return FailedPreconditionError(f"assignment {assignment_id} was not an offer")


def not_active(assignment_id: str) -> FailedPreconditionError:
    """Finishing an offer that was never accepted."""
    return FailedPreconditionError(f"assignment {assignment_id} is offered, not accepted yet")


def events_trimmed(after_id: str) -> OutOfRangeError:
    """The cursor is older than the oldest event kept."""
    return OutOfRangeError(f"events after {after_id} were trimmed")


def events_ahead(after_id: str, newest: tuple[int, int]) -> OutOfRangeError:
    """The cursor is after the newest event the stream has made: not from this stream, or
    from one that was lost (a failover to a copy that missed the last writes)."""
    return OutOfRangeError(
        f"events after {after_id}: the newest is {newest[0]}-{newest[1]}; the cursor is not "
        'from this stream (lost events?): read the state again, then watch from "0" or now'
    )


def missed_reason(missed: int) -> str:
    """The presence reason of an agent set NOT_RESPONDING."""
    return f"missed {missed} offers"


def request_reused() -> InvalidArgumentError:
    """A ``request_id`` replayed with another fingerprint."""
    return InvalidArgumentError("request_id", "already used for a different request")


def stale_token(token: int, assignment_id: str) -> FailedPreconditionError:
    """The fencing token presented is not the assignment's."""
    return FailedPreconditionError(f"token {token} is stale for assignment {assignment_id}")


def already_ended(assignment_id: str, state: str) -> FailedPreconditionError:
    """Ending an assignment differently from how it already ended."""
    return FailedPreconditionError(f"assignment {assignment_id} is already {state}")
