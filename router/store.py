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

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, TypeAlias

from router.domain import (
    AgentProfile,
    AgentSnapshot,
    Assignment,
    AssignmentState,
    Call,
    CallRecord,
    Explanation,
    Policy,
    Presence,
    Snapshot,
    frozen_map,
)


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
    fingerprint: str
    """Digest of the request; the same ``request_id`` with another fingerprint is refused."""
    call: Call
    agent_id: str
    expected_seq: int
    """The agent's ``seq`` in the snapshot the decision was made on."""
    units: int
    """Budget units the call takes from the agent."""
    heartbeat_timeout_s: int
    """Re-checked against store time at commit; 0 disables the check."""
    explanation: Explanation


@dataclass(frozen=True, slots=True)
class Committed:
    """The claim was applied (or had been applied before under the same ``request_id``)."""

    assignment: Assignment
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class Conflict:
    """The agent changed since the snapshot (seq, presence, heartbeat, deletion): re-plan."""

    reason: str


CommitResult: TypeAlias = Committed | Conflict


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


class Store(Protocol):
    """Live agent state, assignments, calls, policy and events, per tenant."""

    def now_ms(self) -> int:
        """The store's clock in epoch milliseconds."""
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

    def put_policy(self, tenant: str, policy: Policy, expected_version: int = 0) -> Policy:
        """Store a validated policy; version checked like ``update_agent``; returns it with
        the new version."""
        ...

    # --- routing ----------------------------------------------------------------------------

    def load_snapshot(self, tenant: str, call: Call) -> Snapshot:
        """Policy, store time and every agent that could take ``call`` (pruned by the skill
        index; the count pruned goes in ``unindexed_missing_skill``), in one round trip
        where the backend allows it."""
        ...

    def find_request(self, tenant: str, request_id: str) -> tuple[str, Assignment] | None:
        """The fingerprint and assignment an earlier ``commit_assignment`` stored for
        ``request_id``, or ``None``."""
        ...

    def commit_assignment(self, tenant: str, claim: Claim) -> CommitResult:
        """Atomically: re-check the agent (exists, ``seq`` unchanged, AVAILABLE, heartbeat
        fresh), check the call is not already assigned/finished and ``request_id`` unused,
        then mint assignment id and fencing token, record assignment, call, idempotency
        record and an ``ASSIGNED`` event.

        Returns ``Committed(replayed=True)`` when ``request_id`` was already answered with the
        same fingerprint; raises ``InvalidArgumentError`` (field ``request_id``) for another
        fingerprint and ``FailedPreconditionError`` when the call is active or finished.
        """
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
    ) -> Assignment:
        """End an active assignment as COMPLETED, RELEASED or CANCELLED: free the agent's
        capacity, record the work span for occupancy, fold ``outcome_value`` into the
        agent's decayed performance sums (see ``scoring.performance.fold``), update the
        call and append an event.

        ``NotFoundError`` for an unknown assignment; ``FailedPreconditionError`` for a token
        that is not the assignment's (stale) or an assignment already ended another way.
        Ending it again the same way with the right token returns it unchanged (idempotent).
        """
        ...

    def cancel_call(self, tenant: str, call_id: str) -> CallRecord:
        """The customer hung up: end the active assignment (if any) as CANCELLED and mark
        the call CANCELLED. Idempotent; ``FailedPreconditionError`` if already completed."""
        ...

    def get_call(self, tenant: str, call_id: str) -> CallRecord:
        """A call's status and current or last assignment. ``NotFoundError`` if unknown."""
        ...

    def read_events(self, tenant: str, after_id: str = "0", limit: int = 100) -> list[Event]:
        """Events strictly after ``after_id`` in stream order (non-blocking)."""
        ...
