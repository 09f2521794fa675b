"""The Assign use case: snapshot -> pure decision -> atomic commit, or the queue.

This is the only place that strings store and engine together for a new call, so the
service and the live replay share it. Every attempt reads a fresh snapshot (agents the store
decoded before are reused only while their stored revision is unchanged), and the store's
commit re-checks the chosen agent before claiming.

The first attempt decides on ``Store.load_candidates``: one round trip that also says whether
the request id was seen, pruned by the routing index to the skilled agents who are AVAILABLE
with room. Every agent it leaves out is ineligible, so a call it places goes to the agent the
full snapshot would choose; its explanation counts the agents left out as ``NOT_AVAILABLE``
(exactly the first rule they fail) and ``AT_CAPACITY`` (their work in progress leaves no room
in their budget, whichever earlier rule might also refuse them). When that decision places
nobody, or calls already wait, the attempt re-reads the full snapshot (``load_snapshot``) and
goes on as without the index, so NO_AGENT and QUEUED answers, their explanations and wait
estimates do not depend on the index. A lost commit (another Assign filled the agent first)
re-plans on fresh candidates, which no longer list a full agent, so concurrent Assigns that
all chose the same best agent spread over the next best ones cheaply. If the candidates pick
an agent who already refused this call's commit, the index may be stale about them, and that
attempt decides on the full snapshot (the commit script is the authority), so a stale entry
costs one re-plan at most.

Fairness with a queue: when calls already wait, a new call does not jump them. It joins the
queue and the dispatcher runs one batch solve over everything waiting; the answer is then
whatever that solve gave the new call (ASSIGNED/OFFERED, or QUEUED with its position).
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import operator
import random
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import structlog

from router import deadline, metrics, tracing
from router.codec import encode_call
from router.domain import (
    AgentSnapshot,
    Assignment,
    AssignmentState,
    Call,
    CallRecord,
    CallStatus,
    Exclusion,
    Explanation,
    Placement,
    Snapshot,
    frozen_map,
)
from router.eligibility import eligible_until_ms
from router.engine import decide
from router.errors import (
    ContentionError,
    FailedPreconditionError,
    InvalidArgumentError,
    RouterError,
)
from router.forecast import agents_for, channel_position, estimated_wait_s
from router.store import Candidates, Claim, Committed, Conflict, Gone, Replayed, Store
from router.store_common import RATE_WINDOW_MS

log = structlog.get_logger(__name__)
_AGENT_ID = operator.attrgetter("profile.agent_id")

INLINE_DISPATCH_RESERVE_S = 0.05
"""An Assign that joined the queue runs the batch pass inline only with more time than this
left before its deadline (else the dispatcher's next wake-up or tick places the call)."""
ESTIMATE_READ = 100
"""Waiting calls read (in queue order) to place a queued call among its channel's; past
them, the channel's share of those read stands in (a queued answer reads no more than
that, however long the queue)."""
INLINE_DISPATCH_WAIT_S = 0.5
"""How long that pass waits for one of this replica's passes over the tenant that is running
(within the deadline's reserve); past it the call is left to the pass asked for after."""


class Outcome(StrEnum):
    """What an Assign did."""

    ASSIGNED = "assigned"
    OFFERED = "offered"
    QUEUED = "queued"
    NO_AGENT = "no_agent"


@dataclass(frozen=True, slots=True)
class AssignResult:
    """The answer to one Assign."""

    outcome: Outcome
    explanation: Explanation
    assignment: Assignment | None = None
    replayed: bool = False
    position: int = 0
    estimated_wait_s: float = 0.0
    callback_offered: bool = False
    attempts: int = 1


@dataclass(frozen=True, slots=True)
class _Request:
    """Who asks: the tenant, the Assign's idempotency key and the digest of its call."""

    tenant: str
    request_id: str
    call: Call
    digest: str
    """What this version records (``fingerprint``)."""
    no_queue: bool = False

    def earlier_digests(self) -> tuple[str, ...]:
        """The forms replicas of earlier versions recorded the same request in (kept 24 h),
        worked out only for a replay: the call as sent, its skills and attributes in the
        caller's order (before ``fingerprint`` put them in order); without the ``no_queue``
        choice (``legacy_fingerprint``)."""
        return (
            fingerprint(self.call, queue=not self.no_queue, as_sent=True),
            legacy_fingerprint(self.call),
        )


class Dispatching(Protocol):
    """The dispatcher as the assigner needs it: one batch pass for a tenant."""

    def run_once(self, tenant: str, *, wait_s: float | None = 0.0) -> object:
        """Place what can be placed now (after a pass of this replica's that is running,
        waiting up to ``wait_s`` for it)."""
        ...


DIGEST_PREFIX = "2:"
"""Marks the digests that hold ``no_queue`` (``fingerprint``); a stored one without it was
written before (``legacy_fingerprint``)."""


def fingerprint(call: Call, *, queue: bool = True, as_sent: bool = False) -> str:
    """A digest of everything the caller sent about ``call``, independent of the order of
    its fields, of its required and preferred skills and of its attributes (a retry may
    list them in another), and of ``no_queue`` (it changes what may be answered: never
    QUEUED). ``as_sent``: the lists in the caller's order, as earlier versions digested
    them (the same digest when they were in order)."""
    if not as_sent:
        call = dataclasses.replace(
            call,
            required_skills=tuple(sorted(call.required_skills, key=lambda r: r.skill)),
            preferred_skills=tuple(sorted(call.preferred_skills)),
            attributes=frozen_map(dict(sorted(call.attributes.items()))),
        )
    canonical = encode_call(dataclasses.replace(call, created_ms=0))
    choice = "queue" if queue else "no_queue"
    return DIGEST_PREFIX + hashlib.sha256(f"{canonical}\n{choice}".encode()).hexdigest()


def legacy_fingerprint(call: Call) -> str:
    """The digest of ``call`` replicas wrote before ``no_queue`` was part of it."""
    canonical = encode_call(dataclasses.replace(call, created_ms=0))
    return hashlib.sha256(canonical.encode()).hexdigest()


def deciding(kind: str, snapshot: Snapshot, calls: int) -> AbstractContextManager[object]:
    """Time a decision over ``snapshot`` for ``calls`` calls into the ``kind`` series
    (``single``: an Assign; ``batch``: a dispatcher solve); inside a traced request, also a
    ``decide`` span."""
    timer = metrics.SOLVER_SECONDS.labels(kind).time()
    if not tracing.enabled():
        return timer
    attributes = {
        "router.decision": kind,
        "router.strategy": snapshot.policy.strategy.value,
        "router.calls": calls,
        "router.agents": len(snapshot.agents),
    }
    spans = ExitStack()
    spans.enter_context(tracing.span("decide", attributes))
    spans.enter_context(timer)
    return spans


def rng_for(key: str) -> random.Random:
    """Randomised policies are seeded from the request, so a replayed trace is exact."""
    digest = hashlib.sha256(key.encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


class Assigner:
    """Routes new calls against a ``Store``."""

    def __init__(
        self, store: Store, *, max_replans: int = 5, dispatcher: Dispatching | None = None
    ) -> None:
        self._store = store
        self._max_replans = max_replans
        self._dispatcher = dispatcher

    def assign(
        self, tenant: str, request_id: str, call: Call, *, queue: bool = True
    ) -> AssignResult:
        """Assign ``call``, queue it, or (``queue=False``) say nobody can take it now."""
        req = _Request(tenant, request_id, call, fingerprint(call, queue=queue), no_queue=not queue)
        first = self._store.load_candidates(tenant, call, request_id)
        prior = self._store.find_request(tenant, request_id) if first.request_seen else None
        if prior is not None:
            return self._replay(req, prior)
        fast: Candidates | None = first
        refused: set[str] = set()
        for attempt in range(1, self._max_replans + 2):
            deadline.check(f"call {call.call_id}")
            if fast is None:  # a re-plan after a lost commit: the candidates again
                fast = self._store.load_candidates(tenant, call)
            quick = self._quick(req, call, fast, refused, queue=queue, attempt=attempt)
            fast = None
            if isinstance(quick, AssignResult):
                return quick
            if quick is not None:  # lost the commit race: re-plan
                continue
            snapshot = self._store.load_snapshot(tenant, call)
            placed = dataclasses.replace(call, created_ms=snapshot.now_ms)
            if snapshot.queued and queue:
                return self._enqueue(req, placed, snapshot=snapshot, explanation=None)
            with deciding("single", snapshot, 1):
                decision = decide(snapshot, [placed], rng=rng_for(f"{request_id}:{attempt}"))
            placement = decision.placements[0]
            if placement.agent_id is None:
                if not queue:
                    return AssignResult(Outcome.NO_AGENT, placement.explanation, attempts=attempt)
                return self._enqueue(
                    req, placed, snapshot=snapshot, explanation=placement.explanation
                )
            claimed = self._claim(req, placed, snapshot, placement, attempt)
            if isinstance(claimed, AssignResult):
                return claimed
            refused.add(placement.agent_id)
        raise ContentionError(
            f"call {call.call_id}: agents kept changing during {self._max_replans + 1} "
            "attempts; retry with the same request_id"
        )

    def _quick(
        self,
        req: _Request,
        call: Call,
        fast: Candidates,
        refused: set[str],
        *,
        queue: bool,
        attempt: int,
    ) -> AssignResult | Conflict | Gone | None:
        """An attempt on the pruned snapshot: the answer when it placed the call, the lost
        commit when the agent changed (its id joins ``refused``), ``None`` when the full
        snapshot must decide: nobody placed, calls already wait, or the choice is an agent
        who already refused this call's commit (the index may be stale about them)."""
        snapshot = fast.snapshot
        if snapshot.queued and queue:
            return None
        placed = dataclasses.replace(call, created_ms=snapshot.now_ms)
        with deciding("single", snapshot, 1):
            decision = decide(snapshot, [placed], rng=rng_for(f"{req.request_id}:{attempt}"))
        placement = decision.placements[0]
        agent_id = placement.agent_id
        if agent_id is None or agent_id in refused:
            return None
        explanation = with_pruned(placement.explanation, fast)
        placement = dataclasses.replace(placement, explanation=explanation)
        claimed = self._claim(req, placed, snapshot, placement, attempt)
        if not isinstance(claimed, AssignResult):
            refused.add(agent_id)
        return claimed

    def _claim(
        self, req: _Request, placed: Call, snapshot: Snapshot, placement: Placement, attempt: int
    ) -> AssignResult | Conflict | Gone:
        """Commit the placement (the store re-checks the agent): the answer, or why the
        commit was refused (re-plan)."""
        agent = _find(snapshot.agents, placement.agent_id)
        policy, channel = snapshot.policy, placed.channel
        claim = Claim(
            request_id=req.request_id,
            fingerprint=req.digest,
            call=placed,
            agent_id=agent.agent_id,
            expected_seq=agent.seq,
            units=policy.units_for(channel),
            heartbeat_timeout_s=policy.heartbeat_timeout_s,
            explanation=placement.explanation,
            offer_timeout_s=policy.offer_timeout_s.get(channel, 0),
            capacity=policy.capacity_for(agent.profile, channel),
            expected_version=agent.profile.version,
            policy_version=policy.version,
            until_ms=eligible_until_ms(
                agent.profile, snapshot.now_ms, policy.reserved_s_for(placed)
            ),
        )
        deadline.check(f"call {placed.call_id}")  # never commit what nobody will receive
        try:
            result = self._store.commit_assignment(req.tenant, claim)
        except InvalidArgumentError as err:
            return self._another_digest(req, err)
        if isinstance(result, Committed):
            metrics.CALL_WAIT.labels(req.tenant, channel.value).observe(0)
            return _placed(result.assignment, placement.explanation, attempt)
        if isinstance(result, Replayed):
            return self._replay_request(req)
        reason = result.reason if isinstance(result, Conflict) else result.status
        log.debug("assign_replanned", agent_id=agent.agent_id, reason=reason)
        metrics.RETRIES.labels("commit").inc()
        return result

    def _enqueue(
        self, req: _Request, call: Call, *, snapshot: Snapshot, explanation: Explanation | None
    ) -> AssignResult:
        deadline.check(f"call {call.call_id}")
        tenant, request_id = req.tenant, req.request_id
        try:
            queued = self._store.enqueue(
                tenant, request_id, req.digest, call, policy=snapshot.policy
            )
        except InvalidArgumentError as err:
            return self._another_digest(req, err)
        if isinstance(queued, Replayed):
            return self._replay_request(req)
        if self._dispatcher is not None and deadline.allows(INLINE_DISPATCH_RESERVE_S):
            left = deadline.remaining()
            wait_s = INLINE_DISPATCH_WAIT_S
            if left is not None:
                wait_s = min(wait_s, left - INLINE_DISPATCH_RESERVE_S)
            try:
                self._dispatcher.run_once(tenant, wait_s=wait_s)
            except RouterError as err:  # the call is safely queued; the tick will place it
                log.warning("inline_dispatch_failed", error=err.logged)
            queued = self._store.get_call(tenant, call.call_id)
        why = explanation or Explanation(snapshot.policy.strategy)
        return self.answer(tenant, queued, why, snapshot=snapshot)

    def answer(
        self,
        tenant: str,
        record: CallRecord,
        explanation: Explanation,
        *,
        replayed: bool = False,
        snapshot: Snapshot | None = None,
    ) -> AssignResult:
        """The Assign answer that describes ``record`` as it stands now."""
        assignment = record.assignment
        if record.status == CallStatus.QUEUED or assignment is None:
            wait = self.estimated_wait(tenant, record)
            policy = snapshot.policy if snapshot else self._store.get_policy(tenant)
            threshold = policy.callback_threshold_s
            return AssignResult(
                Outcome.QUEUED,
                explanation,
                replayed=replayed,
                position=record.position,
                estimated_wait_s=wait,
                callback_offered=bool(threshold) and wait > threshold,
            )
        return dataclasses.replace(
            _placed(assignment, assignment.explanation or explanation, 1), replayed=replayed
        )

    def estimated_wait(self, tenant: str, record: CallRecord) -> float:
        """Seconds until an agent takes a QUEUED call, from live service rates and its place
        among its channel's waiting calls (read now: after any pass this request ran)."""
        if record.status != CallStatus.QUEUED:
            return 0.0
        call = record.call
        view = self._store.load_queue(tenant, min(max(1, record.position), ESTIMATE_READ))
        snapshot = view.snapshot
        position = channel_position(view.calls, call.call_id, call.channel, record.position)
        completed = self._store.completions(tenant, snapshot.now_ms - RATE_WINDOW_MS)
        now, policy = snapshot.now_ms, snapshot.policy
        pool = agents_for(call, snapshot.agents, now, policy)
        return estimated_wait_s(position, call.channel, completed, pool, policy, now)

    def _another_digest(self, req: _Request, err: InvalidArgumentError) -> AssignResult:
        """The store found ``req``'s id recorded, meanwhile, with another digest than
        ``req.digest``: ``_replay`` decides, knowing every form a retry's digest may have
        been written in (the same request from a replica of another version)."""
        if err.field != "request_id":
            raise err
        prior = self._store.find_request(req.tenant, req.request_id)
        if prior is None:  # the record is there, its call is not: nothing to replay
            raise err
        return self._replay(req, prior)

    def _replay_request(self, req: _Request) -> AssignResult:
        prior = self._store.find_request(req.tenant, req.request_id)
        if prior is None:  # expired between the two reads: extremely unlikely, safe to retry
            raise ContentionError("the request record changed during the call; retry")
        return self._replay(req, prior)

    def _replay(self, req: _Request, prior: tuple[str, CallRecord]) -> AssignResult:
        tenant, (stored, record) = req.tenant, prior
        as_sent, legacy = req.earlier_digests() if stored != req.digest else ("", "")
        if stored.startswith(DIGEST_PREFIX):
            same = stored in (req.digest, as_sent)
        else:  # written before no_queue was part of the digest: a no_queue retry's answer
            waiting = record.status == CallStatus.QUEUED  # must not be QUEUED
            same = stored == legacy and not (req.no_queue and waiting)
        if not same:
            raise InvalidArgumentError(
                "request_id", "was already used for a different request; use a new request_id"
            )
        ended = _LEFT_THE_QUEUE.get(record.status)
        if ended:  # no answer the Assign gives says so
            raise FailedPreconditionError(f"call {record.call.call_id} {ended}")
        policy = self._store.get_policy(tenant)
        return self.answer(tenant, record, Explanation(policy.strategy), replayed=True)


_LEFT_THE_QUEUE: Mapping[CallStatus, str] = {
    CallStatus.ABANDONED: "was abandoned: the caller hung up before an agent took it",
    CallStatus.EXPIRED: (
        "expired: it waited its channel's max_wait without an agent; route it elsewhere "
        "or under a new call id"
    ),
}
"""Why a retried Assign of a call that left the queue unanswered is refused."""


def with_pruned(explanation: Explanation, fast: Candidates) -> Explanation:
    """``explanation`` with the agents ``load_candidates`` left out counted: not available
    as ``NOT_AVAILABLE``, without room as ``AT_CAPACITY`` (in declaration order, like
    ``eligibility.tally``)."""
    if not fast.not_available and not fast.no_room:
        return explanation
    counts = dict(explanation.excluded)
    counts[Exclusion.NOT_AVAILABLE] = counts.get(Exclusion.NOT_AVAILABLE, 0) + fast.not_available
    counts[Exclusion.AT_CAPACITY] = counts.get(Exclusion.AT_CAPACITY, 0) + fast.no_room
    ordered = {reason: counts[reason] for reason in Exclusion if counts.get(reason, 0) > 0}
    return dataclasses.replace(explanation, excluded=frozen_map(ordered))


def _placed(assignment: Assignment, explanation: Explanation, attempts: int) -> AssignResult:
    outcome = Outcome.OFFERED if assignment.state == AssignmentState.OFFERED else Outcome.ASSIGNED
    return AssignResult(outcome, explanation, assignment=assignment, attempts=attempts)


def _find(agents: Sequence[AgentSnapshot], agent_id: str | None) -> AgentSnapshot:
    """The agent ``agent_id`` of a snapshot: by bisection, as the stores list agents in id
    order, else by a scan."""
    at = bisect.bisect_left(agents, agent_id, key=_AGENT_ID)
    if at < len(agents) and agents[at].profile.agent_id == agent_id:
        return agents[at]
    return next(a for a in agents if a.profile.agent_id == agent_id)
