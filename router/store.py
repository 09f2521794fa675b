"""The state-store contract: what the service and the simulator need from live state.

Two implementations: ``router.redis_store.RedisStore`` (production, shared by every replica)
and ``router.memory_store.MemoryStore`` (simulator, zero-setup local run). One contract test
suite (``tests/integration/test_store_contract.py``) runs against both.

Rules every implementation keeps:
- A method either applies all of its writes or none of them.
- ``now_ms`` is the store's clock (Redis server time), so every replica agrees on time.
- Errors are ``router.errors`` classes, never driver exceptions
  (connection problems become ``StoreUnavailableError``).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeAlias

from router.domain import (
    AgentProfile,
    AgentSnapshot,
    Assignment,
    AssignmentState,
    Call,
    CallRecord,
    Channel,
    Explanation,
    Policy,
    Presence,
    Snapshot,
    frozen_map,
)
from router.errors import RouterError
from router.ordering import order_key


@dataclass(frozen=True, slots=True)
class AgentQuery:
    """Filters for ``list_agents``; empty fields match everything."""

    skill: str = ""
    team: str = ""
    region: str = ""
    presence: Presence | None = None


@dataclass(frozen=True, slots=True)
class Claim:
    """What ``commit_assignment`` needs to give ``call`` to ``agent_id`` atomically."""

    request_id: str
    """The Assign's idempotency key; empty when the dispatcher places a queued call."""
    fingerprint: str
    """Digest of the request; the same ``request_id`` with another fingerprint is refused."""
    call: Call
    agent_id: str
    expected_seq: int
    """The agent's ``seq`` in the snapshot the decision was made on (strict mode)."""
    units: int
    """Budget units the call takes from the agent."""
    heartbeat_timeout_s: int
    """Re-checked against store time at commit; 0 disables the check."""
    explanation: Explanation
    offer_timeout_s: int = 0
    """> 0: the assignment starts OFFERED and expires after this long; 0: ACTIVE at once."""
    from_queue: bool = False
    """The call is QUEUED (dispatcher): the commit takes it off the queue, and the call
    must still be QUEUED, else ``Gone``."""
    capacity: int = 0
    """0: strict mode, any change to the agent since the snapshot (``seq``) is a conflict.
    > 0: capacity mode, used by the service: the agent's profile ``version`` must equal
    ``expected_version`` and the agent must still have room for the call (fewer than
    ``capacity`` items on the channel holding a slot, and ``units`` left in the budget).
    Concurrent claims on one multi-slot agent then all succeed while there is room, and
    the hard rules are still re-checked atomically (occupancy is measured on past work,
    which a concurrent claim does not change)."""
    expected_version: int = 0
    """The agent's profile version in the snapshot (capacity mode)."""
    policy_version: int = -1
    """The version of the policy the decision read (0: none stored), which gave the claim its
    capacity, units and offer time-out: another stored policy makes the commit a
    ``Conflict``. -1: not compared."""
    until_ms: int = 0
    """The latest store time the commit may happen at (``eligibility.eligible_until_ms``:
    later, the work would start into the agent's next absence or past their shift's end),
    else a ``Conflict``; 0: no bound."""


@dataclass(frozen=True, slots=True)
class Committed:
    """The claim was applied."""

    assignment: Assignment


ChannelTerms: TypeAlias = tuple[float | None, int]
"""What completing work on one channel folds in: (outcome value or ``None``, wrap-up seconds)."""


@dataclass(frozen=True, slots=True)
class KnownPolicy:
    """The tenant's policy as this reader last read it (``Store.known_policy``)."""

    policy: Policy
    tag: str
    """Identifies the stored policy it was read from: ``finish_assignment`` refuses a tag
    that no longer matches (``PolicyChangedError``)."""


@dataclass(frozen=True, slots=True)
class Finished:
    """What ``finish_assignment`` did."""

    assignment: Assignment
    """The assignment as it ended."""
    calls_waiting: int
    """Calls in the tenant's queue right after, in the same atomic step (a released call
    included): with none, the freed capacity has no call to take, and the dispatcher need
    not look."""


@dataclass(frozen=True, slots=True)
class Conflict:
    """The agent changed since the snapshot (seq, presence, heartbeat, deletion): re-plan."""

    reason: str


@dataclass(frozen=True, slots=True)
class Replayed:
    """``request_id`` was already used with the same fingerprint: answer from
    ``find_request`` (the call's current state), never assign again."""


@dataclass(frozen=True, slots=True)
class Gone:
    """A queued call is no longer waiting (abandoned, or placed by another dispatcher)."""

    status: str


CommitResult: TypeAlias = Committed | Conflict | Replayed | Gone


@dataclass(frozen=True, slots=True)
class QueueView:
    """What the dispatcher needs for one batch solve."""

    snapshot: Snapshot
    """Policy, store time and every agent of the tenant (no skill pruning)."""
    calls: tuple[Call, ...]
    """The first waiting calls in queue order (with ``enqueued_ms``, boosted ``priority``
    and ``excluded_agents`` filled in)."""
    depth: int
    """All queued calls of the tenant (may exceed ``len(calls)``)."""
    offers_due: bool = False
    """An offer's expiry has passed (store time): ``expired_offers`` has work to time out."""
    traces: Mapping[str, str] = field(default_factory=frozen_map)
    """Call id -> the W3C ``traceparent`` of the request that created the call, for those of
    ``calls`` created inside a trace (``tracing.bind_request_trace``)."""
    agents_rev: str = ""
    """The agents' change-log head the snapshot's agents are as of (every change to an
    agent moves it; a heartbeat does not), "" where the store keeps none: ``open_pass``'s
    ``quiet_at``."""


@dataclass(frozen=True, slots=True)
class Waiting:
    """A queued call as the queue time limit sees it (``Store.due_waits``)."""

    call_id: str
    channel: Channel
    since_ms: int
    """When its wait toward the limit began (``ordering.limit_from_ms``)."""
    trace: str = ""
    """The ``traceparent`` of the request that created it, if any."""


NONE_QUIET: Mapping[str, str] = frozen_map({})
"""``open_passes``' ``quiet_at`` when no tenant's last full pass was quiet."""


@dataclass(frozen=True, slots=True)
class Candidates:
    """``load_candidates``: the routing snapshot pruned to the agents who could take a call
    now, and whether the Assign's ``request_id`` was seen before."""

    snapshot: Snapshot
    """Policy, store time and queue depth as in ``load_snapshot``, but only the agents that
    hold every required skill, are AVAILABLE and whose work in progress or offered leaves
    room in their unit budget for one item of the call's channel (in agent-id order).
    Wrap-ups, heartbeats, absences and every other hard rule are left to the engine, so this
    is a superset of the eligible agents. ``unindexed_missing_skill`` as in ``load_snapshot``."""
    not_available: int
    """Skilled agents left out because their presence is not AVAILABLE."""
    no_room: int
    """Skilled AVAILABLE agents left out because their work in progress or offered leaves
    fewer units than one item of the call's channel takes."""
    request_seen: bool
    """``request_id`` has an idempotency record: ``find_request`` has the answer."""


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One finished wait or piece of work, kept two hours for live statistics."""

    kind: str
    """``answered`` (wait_ms = time to answer), ``abandoned`` or ``expired`` (wait_ms = time
    waited) or ``completed`` (wait_ms = handle time)."""
    channel: Channel
    at_ms: int
    wait_ms: int
    call_id: str


EVENT_TYPES = frozenset(
    {
        "QUEUED",
        "OFFERED",
        "ACCEPTED",
        "REJECTED",
        "OFFER_TIMED_OUT",
        "ASSIGNED",
        "COMPLETED",
        "RELEASED",
        "CANCELLED",
        "RECLAIMED",
        "ABANDONED",
        "EXPIRED",
        "SLA_AT_RISK",
        "SLA_BREACHED",
        "CALLBACK_REQUESTED",
        "PRESENCE_CHANGED",
        "AGENT_CREATED",
        "AGENT_UPDATED",
        "AGENT_DELETED",
        "POLICY_UPDATED",
    }
)
"""Every ``Event.type`` the stores write (the README's table of events)."""


@dataclass(frozen=True, slots=True)
class Event:
    """One state change, as appended to the tenant's event stream."""

    event_id: str
    """Stream id (``<ms>-<seq>``); resume after it."""
    type: str
    """Upper snake case: ``ASSIGNED``, ``COMPLETED``, ``PRESENCE_CHANGED``, ..."""
    ts_ms: int
    call_id: str = ""
    agent_id: str = ""
    data: Mapping[str, str] = field(default_factory=frozen_map)


class PassGrant(enum.Enum):
    """What ``Store.open_pass`` granted a dispatcher."""

    FULL = "full"
    """The lease, and the tenant's full pass of this tick (no other replica makes one)."""
    WAKE = "wake"
    """The lease, for a pass over waiting calls and expired offers."""
    IDLE = "idle"
    """No lease: no call waits, no offer's expiry has passed, and no full pass was granted."""
    QUIET = "quiet"
    """No lease, and this tick's full pass is the owner's but not needed: nothing is queued
    or offered, and no agent changed since the owner's last full pass found nothing to do;
    with agents holding work, also the policy unchanged and none of them yet able to have
    left with work that could move (``open_pass``'s ``quiet_at``)."""
    HELD = "held"
    """No lease: another owner holds it."""


class Store(Protocol):
    """Live agent state, assignments, calls, policy and events, per tenant."""

    def now_ms(self) -> int:
        """The store's clock in epoch milliseconds."""
        ...

    def unavailable_within(self, seconds: float, tenant: str) -> bool:
        """Whether a request of this replica found the store (of ``tenant``'s data)
        unavailable in the last ``seconds``: agents' heartbeats and answers to offers may have
        failed meanwhile."""
        ...

    def check_writable(self) -> None:
        """``StoreUnavailableError`` when the store would refuse a write now (the health
        probe: answering reads is not enough to serve)."""
        ...

    # --- agents -----------------------------------------------------------------------------

    def create_agent(self, tenant: str, profile: AgentProfile) -> AgentSnapshot:
        """Store a new agent (version 1, presence OFFLINE). ``AlreadyExistsError`` if taken."""
        ...

    def update_agent(
        self,
        tenant: str,
        agent_id: str,
        change: Callable[[AgentProfile], AgentProfile],
        expected_version: int = 0,
    ) -> AgentSnapshot:
        """Read-modify-write the profile under optimistic concurrency.

        ``expected_version > 0`` must equal the stored version, else ``VersionConflictError``.
        With 0 the store re-reads and re-applies ``change`` on a concurrent write (bounded,
        then ``ContentionError``). ``change`` may raise (validation); nothing is written then.
        The new profile gets ``version + 1``; indexes, ``seq`` and the event stream follow.
        """
        ...

    def delete_agent(self, tenant: str, agent_id: str, expected_version: int = 0) -> None:
        """Remove an agent. ``FailedPreconditionError`` while it holds active work."""
        ...

    def get_agent(self, tenant: str, agent_id: str) -> AgentSnapshot:
        """One agent with live state. ``NotFoundError`` if unknown."""
        ...

    def list_agents(
        self, tenant: str, query: AgentQuery, page_size: int, page_token: str = ""
    ) -> tuple[list[AgentSnapshot], str]:
        """Agents matching ``query`` in agent-id order; returns the page and the next token
        ("" at the end). ``InvalidArgumentError`` on a token this store did not issue."""
        ...

    def set_presence(
        self, tenant: str, agent_id: str, presence: Presence, reason: str = ""
    ) -> AgentSnapshot:
        """Change presence (also counts as a heartbeat). Becoming AVAILABLE while idle resets
        the longest-idle clock (``last_free_ms``). Bumps ``seq`` and appends an event."""
        ...

    def heartbeat(self, tenant: str, agent_id: str) -> int:
        """Record that the agent's desktop is alive; returns store time."""
        ...

    # --- policy -----------------------------------------------------------------------------

    def get_policy(self, tenant: str) -> Policy:
        """The tenant's policy, or ``Policy()`` (version 0) if none was stored."""
        ...

    def known_policy(self, tenant: str, *, fresh: bool = False) -> KnownPolicy:
        """The tenant's policy as this reader last read it, with its tag; read now if it
        never was, or when ``fresh``. It may be stale: a step given its tag checks."""
        ...

    def put_policy(
        self, tenant: str, policy: Policy, expected_version: int | None = None
    ) -> Policy:
        """Store a validated policy; returns it with the new version. With
        ``expected_version`` (0: none stored yet) the stored version must be that one, else
        ``VersionConflictError``; without, the latest write wins."""
        ...

    # --- routing ----------------------------------------------------------------------------

    def load_snapshot(self, tenant: str, call: Call) -> Snapshot:
        """Policy, store time and every agent that could take ``call`` (pruned by the skill
        index; the count pruned goes in ``unindexed_missing_skill``), in one round trip
        where the backend allows it. Only work that holds capacity at store time (in
        progress, offered, or in wrap-up) is in ``AgentSnapshot.active``."""
        ...

    def load_candidates(self, tenant: str, call: Call, request_id: str = "") -> Candidates:
        """The fast first read of an Assign: ``Candidates`` (from an index the writes keep
        exact, in one round trip plus one for the agents that changed since this process
        last read them, where the backend allows it). The decision on ``snapshot`` is the
        decision on ``load_snapshot`` for any call it places (the agents left out are not
        eligible); a call it cannot place needs ``load_snapshot`` for its explanation."""
        ...

    def queue_depth(self, tenant: str) -> int:
        """How many calls wait in the tenant's queue (one cheap read)."""
        ...

    def load_queue(self, tenant: str, limit: int, *, offset: int = 0) -> QueueView:
        """``limit`` queued calls in queue order, after the first ``offset``, and all agents,
        for a batch."""
        ...

    def due_waits(
        self, tenant: str, max_wait_s: Mapping[Channel, int], now_ms: int, limit: int
    ) -> list[Waiting]:
        """The queued calls that have reached their channel's queue time limit at ``now_ms``
        (``now_ms - since_ms >= max_wait_s[channel] * 1000``; none on a channel without a
        limit), wherever they are in the queue: up to ``limit`` of each channel, the
        channels in ``max_wait_s``'s order, each channel's by ``since_ms`` then call id;
        ``trace`` empty. The dispatcher's look for expiries past its batches; one read,
        whatever the queue's depth (an index by the start of each call's wait). An entry
        that replicas of an earlier version left for a call no longer waiting may come
        too, until ``expire_call`` is given it (and drops it)."""
        ...

    def find_request(self, tenant: str, request_id: str) -> tuple[str, CallRecord] | None:
        """The fingerprint recorded for ``request_id`` and the current state of its call, or
        ``None``. (An Assign is remembered 24 h, whether it assigned or queued.)"""
        ...

    def commit_assignment(self, tenant: str, claim: Claim) -> CommitResult:
        """Atomically: check ``request_id`` (if given) is unused, the call is new (or, with
        ``from_queue``, still QUEUED), re-check the agent (exists, ``seq`` unchanged or, in
        capacity mode, profile version unchanged and room left; AVAILABLE; heartbeat
        fresh), then mint assignment id and fencing token, record
        assignment (ACTIVE, or OFFERED with an expiry), call, idempotency record, an
        ``answered`` history entry when ACTIVE, and an ``ASSIGNED`` or ``OFFERED`` event.

        ``Replayed`` when ``request_id`` was used with the same fingerprint;
        ``InvalidArgumentError`` (field ``request_id``) for another fingerprint;
        ``FailedPreconditionError`` when a new call's id already exists; ``Gone`` when a
        queued call stopped waiting; ``Conflict`` when the agent changed.
        """
        ...

    def enqueue(
        self, tenant: str, request_id: str, fingerprint: str, call: Call, *, policy: Policy
    ) -> CallRecord | Replayed:
        """Queue a new call (nobody free, or others already waiting): status QUEUED, age
        from ``call.created_ms``, queue score from priority and age (see ``queue_score``),
        idempotency record, ``QUEUED`` event. Same request checks as ``commit_assignment``;
        ``ResourceExhaustedError`` once ``policy.max_queue`` calls wait."""
        ...

    def accept_offer(
        self,
        tenant: str,
        assignment_id: str,
        token: int,
        *,
        policy: Policy | None = None,
        heartbeat_grace: bool = False,
        policy_tag: str = "",
    ) -> Assignment:
        """OFFERED -> ACTIVE (``answered`` history, ``ACCEPTED`` event, missed offers reset;
        a call waited past ``policy``'s SLA target is flagged breached). Idempotent when
        already ACTIVE. ``FailedPreconditionError`` for a stale token, an expired offer, an
        assignment in another state or one never offered, and, when ``policy`` takes work
        back from agents who leave (``reclaim_on_absence``), for an agent who left since the
        offer was made (not available, inside a scheduled absence, past their shift's end,
        or, unless ``heartbeat_grace``, a heartbeat older than ``heartbeat_timeout_s``):
        nothing changes, the dispatcher takes the offer back. With a ``policy_tag``
        (``known_policy``'s, whose policy ``policy`` is), an offer still open is refused
        with ``PolicyChangedError``, nothing written, if the tenant's policy is no longer
        the one the tag names (another replica changed it: read it again). ``NotFoundError``
        if unknown."""
        ...

    def decline_offer(
        self,
        tenant: str,
        assignment_id: str,
        token: int,
        *,
        timed_out: bool,
        policy: Policy,
        count_missed: bool = True,
    ) -> Assignment:
        """OFFERED -> REJECTED (or TIMED_OUT): free the slot, put the call back in the queue
        with its original age and the agent in ``excluded_agents``; on a timeout (unless not
        ``count_missed``: the agent's answer may have failed with the store) count a missed
        offer and set the agent NOT_RESPONDING at ``policy.max_missed_offers``. Idempotent
        for the same outcome; errors as ``accept_offer``."""
        ...

    def expired_offers(self, tenant: str, limit: int = 100) -> list[Assignment]:
        """OFFERED assignments whose expiry has passed (store time), oldest first."""
        ...

    def call_traces(self, tenant: str, call_ids: Sequence[str]) -> Mapping[str, str]:
        """Call id -> the ``traceparent`` the call kept (the request that created it), for
        those of ``call_ids`` that kept one."""
        ...

    def finish_assignment(
        self,
        tenant: str,
        assignment_id: str,
        token: int,
        end: AssignmentState,
        *,
        outcome_value: float | None = None,
        half_life_s: int = 0,
        wrap_up_s: int = 0,
        policy: Policy | None = None,
        channel_terms: Mapping[Channel, ChannelTerms] | None = None,
        policy_tag: str = "",
    ) -> Finished:
        """End an ACTIVE assignment as COMPLETED, RELEASED or CANCELLED: free the agent's
        capacity (after ``wrap_up_s`` when COMPLETED), record the work span for occupancy,
        fold ``outcome_value`` into the agent's decayed performance sums (see
        ``scoring.performance.fold``), append a ``completed`` history entry and an event.
        COMPLETED/CANCELLED finish the call; RELEASED puts it back in the queue with its
        original age, the agent in ``excluded_agents`` (``policy`` gives the queue score).

        ``channel_terms`` replaces ``outcome_value`` and ``wrap_up_s`` with the entry for the
        assignment's channel, so a caller need not read the assignment first. With a
        ``policy_tag`` (``known_policy``'s), the step is refused with
        ``PolicyChangedError``, nothing written, if the tenant's policy is no longer the one
        the tag names; an assignment already ended is answered as usual.

        ``NotFoundError`` for an unknown assignment; ``FailedPreconditionError`` for a token
        that is not the assignment's (stale) or an assignment already ended another way.
        Ending it again the same way with the right token returns it unchanged (idempotent).
        Returns the assignment and the calls waiting right after.
        """
        ...

    def reclaim(
        self,
        tenant: str,
        agent_id: str,
        *,
        channels: frozenset[Channel],
        policy: Policy,
        seen: AgentSnapshot | None = None,
    ) -> list[Assignment]:
        """The agent left (offline, heartbeat lost, absence, shift end): end their OFFERED
        work, and ACTIVE work on ``channels``, as RECLAIMED; requeue each call with its
        original age and the agent excluded; ``RECLAIMED`` events. Returns what moved.
        With ``seen`` (the agent as the read that found them gone showed them), nothing
        moves once the agent changed since (its ``seq``: presence, profile, work; or its
        heartbeat): they may be back."""
        ...

    def cancel_call(self, tenant: str, call_id: str) -> CallRecord:
        """The customer hung up or the platform withdrew the call: QUEUED or OFFERED ->
        ABANDONED (off the queue, offer ended as CANCELLED, ``abandoned`` history);
        ASSIGNED -> CANCELLED (assignment ended as CANCELLED). Idempotent;
        ``FailedPreconditionError`` if completed; ``NotFoundError`` if unknown."""
        ...

    def expire_call(
        self,
        tenant: str,
        call_id: str,
        *,
        max_wait_s: int,
        policy_version: int,
        found: Waiting | None = None,
    ) -> bool:
        """A QUEUED call whose wait toward the queue time limit (in store time, from
        ``ordering.limit_from_ms``: its age origin, or when an agent last handed it back
        after holding it) has reached ``max_wait_s`` (> 0) leaves the queue as EXPIRED
        (``EXPIRED`` event with the limit, ``expired`` history with that wait). Returns
        whether this call expired it: False, writing nothing, when it is no longer queued,
        has not waited that long (the store's clock decides), or the stored policy is not
        version ``policy_version`` (the limit may have changed); ``NotFoundError`` if
        unknown. ``found``: the call as ``due_waits`` found it; a store with an index drops
        that entry whenever it no longer matches the call waiting (an entry an earlier
        version left), whatever the answer."""
        ...

    def mark_sla(self, tenant: str, call_id: str, *, breached: bool, policy: Policy) -> bool:
        """Flag a QUEUED call as SLA at risk (once: raise its priority by
        ``policy.escalation_priority_boost`` up to 10, re-score it in the queue, event
        ``SLA_AT_RISK`` naming ``policy.escalation_group``) or breached (once: event
        ``SLA_BREACHED``). Returns whether this call changed anything."""
        ...

    def request_callback(self, tenant: str, call_id: str) -> CallRecord:
        """A QUEUED caller asked to be called back: keep their place, flag the call, event
        ``CALLBACK_REQUESTED``. ``FailedPreconditionError`` unless QUEUED. Idempotent."""
        ...

    def get_call(self, tenant: str, call_id: str) -> CallRecord:
        """A call's status (with queue position while QUEUED) and current or last
        assignment. ``NotFoundError`` if unknown."""
        ...

    def get_assignment(self, tenant: str, assignment_id: str) -> Assignment:
        """One assignment as stored. ``NotFoundError`` if unknown (or expired)."""
        ...

    def last_event_id(self, tenant: str) -> str:
        """The id of the newest event ("0-0" when there is none): a cursor for "from now"."""
        ...

    def call_timeline(self, tenant: str, call_id: str) -> list[Event]:
        """Every event of the call in order (kept as long as the call record)."""
        ...

    def call_with_timeline(self, tenant: str, call_id: str) -> tuple[CallRecord, list[Event]]:
        """``get_call`` and ``call_timeline`` as of one moment (the timeline ends with the
        record's last change). ``NotFoundError`` if unknown."""
        ...

    def completions(self, tenant: str, since_ms: int) -> Mapping[Channel, int]:
        """Work completed per channel (every channel listed) at or after ``since_ms``, which is
        at most ``store_common.RATE_WINDOW_MS`` ago (what the stores keep of it): the
        service rate, without reading the history."""
        ...

    def history(self, tenant: str, since_ms: int) -> list[HistoryEntry]:
        """Answered, abandoned, expired and completed entries at or after ``since_ms`` (two
        hours kept), oldest first (those at one time in the order written)."""
        ...

    def tenants(self) -> list[str]:
        """Tenants that have agents or calls (for the dispatcher's tick)."""
        ...

    def acquire_lease(self, tenant: str, owner: str, ttl_ms: int) -> bool:
        """Take or extend the tenant's dispatcher lease (expires in store time)."""
        ...

    def open_pass(
        self, tenant: str, owner: str, ttl_ms: int, tick_ms: int, quiet_at: str = ""
    ) -> PassGrant:
        """Open a dispatcher pass in one atomic step (store time). ``HELD`` while another
        owner's lease is live. With ``tick_ms > 0`` the tenant's full pass: ``FULL`` (the
        lease taken, and the tick marked as ``owner``'s for ``tick_ms``) unless another
        owner marked it less than ``tick_ms`` ago; the owner that marked it gets it again
        at once, so one replica keeps the full passes while it ticks. Otherwise (a wake-up,
        or the tick taken by another owner): ``WAKE`` with the lease taken while a call
        waits or an offer's expiry has passed, else ``IDLE`` with nothing written.

        ``quiet_at``: what the owner's last full pass, which found nothing queued and
        nothing to do, rests on: the agents' change-log head it read
        (``QueueView.agents_rev``), and, while agents hold work,
        ``<head>|<until ms, 0: none>|<policy version>`` (``Dispatcher._note_quiet``). A full
        pass granted while nothing is queued or offered, the head still stands there and,
        with the longer form, store time is before ``until`` and the policy at that version,
        is ``QUIET`` instead (the tick marked, no lease). A store without such a head
        (``agents_rev`` always "") never answers ``QUIET``."""
        ...

    def open_passes(
        self,
        tenants: Sequence[str],
        owner: str,
        ttl_ms: int,
        tick_ms: int,
        quiet_at: Mapping[str, str] = NONE_QUIET,
    ) -> list[PassGrant | RouterError]:
        """What ``open_pass`` would grant each of ``tenants`` (with its ``quiet_at`` entry,
        if any), in one round trip where the store can (the dispatcher's tick), but only
        looking: the ticks are marked as ``open_pass`` marks them (and ``QUIET`` answered),
        and no lease is taken, so a ``FULL`` or ``WAKE`` answer means a pass is due, opened
        with ``open_pass`` just before it runs (other replicas are not kept from a tenant
        while the tick gets to it). Each tenant's answer, or the error its look met (the
        others' answers stand)."""
        ...

    def release_lease(self, tenant: str, owner: str) -> None:
        """Give the lease back if ``owner`` still holds it."""
        ...

    def read_events(
        self, tenant: str, after_id: str = "0", limit: int = 100, block_ms: int = 0
    ) -> list[Event]:
        """Events strictly after ``after_id`` in stream order; with ``block_ms > 0`` wait up
        to that long for the first one. ``after_id`` "$" means only new events.
        ``OutOfRangeError`` when events after ``after_id`` were already trimmed away, or when
        ``after_id`` is after the newest event the stream has made (not from this stream)."""
        ...


def queue_score(call: Call, policy: Policy) -> float:
    """Queue order key, lowest first (``router.ordering.order_key``): the call's age origin
    minus what its priority is worth. Older calls naturally move up."""
    return order_key(call, policy)
