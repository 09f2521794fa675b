"""The Assign use case: snapshot -> pure decision -> atomic commit, re-planned on a lost race.

This is the only place that strings store and engine together for a single call, so the
service and the live replay share it. It never decides from a cache: every attempt reads a
fresh snapshot, and the store's commit re-checks the chosen agent before claiming.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from dataclasses import dataclass

import structlog

from router.codec import encode_call
from router.domain import Assignment, Call, Explanation
from router.engine import decide
from router.errors import ContentionError, InvalidArgumentError
from router.store import Claim, Committed, Store

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class AssignResult:
    """An assignment (possibly replayed), or ``None`` with the reason nobody could take it."""

    assignment: Assignment | None
    explanation: Explanation
    replayed: bool = False
    attempts: int = 1


def fingerprint(call: Call) -> str:
    """A digest of everything the caller sent about ``call``, independent of field order."""
    canonical = encode_call(dataclasses.replace(call, created_ms=0))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _rng(request_id: str, attempt: int) -> random.Random:
    """Randomised policies are seeded from the request, so a replayed trace is exact."""
    digest = hashlib.sha256(f"{request_id}:{attempt}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


class Assigner:
    """Routes one call at a time against a ``Store``."""

    def __init__(self, store: Store, *, max_replans: int = 5) -> None:
        self._store = store
        self._max_replans = max_replans

    def assign(self, tenant: str, request_id: str, call: Call) -> AssignResult:
        """Assign ``call`` or explain why nobody can take it. See ``Store.commit_assignment``
        for the errors a conflicting request gets."""
        digest = fingerprint(call)
        prior = self._store.find_request(tenant, request_id)
        if prior is not None:
            return self._replay(prior[0], digest, prior[1])
        for attempt in range(1, self._max_replans + 2):
            snapshot = self._store.load_snapshot(tenant, call)
            placed = dataclasses.replace(call, created_ms=snapshot.now_ms)
            placement = decide(snapshot, [placed], rng=_rng(request_id, attempt)).placements[0]
            if placement.agent_id is None:
                return AssignResult(None, placement.explanation, attempts=attempt)
            agent = next(a for a in snapshot.agents if a.agent_id == placement.agent_id)
            claim = Claim(
                request_id=request_id,
                fingerprint=digest,
                call=placed,
                agent_id=agent.agent_id,
                expected_seq=agent.seq,
                units=snapshot.policy.units_for(call.channel),
                heartbeat_timeout_s=snapshot.policy.heartbeat_timeout_s,
                explanation=placement.explanation,
            )
            result = self._store.commit_assignment(tenant, claim)
            if isinstance(result, Committed):
                return AssignResult(
                    result.assignment,
                    result.assignment.explanation or placement.explanation,
                    replayed=result.replayed,
                    attempts=attempt,
                )
            log.debug("assign_replanned", agent_id=agent.agent_id, reason=result.reason)
        raise ContentionError(
            f"call {call.call_id}: agents kept changing during {self._max_replans + 1} "
            "attempts; retry with the same request_id"
        )

    @staticmethod
    def _replay(stored: str, digest: str, assignment: Assignment) -> AssignResult:
        if stored != digest:
            raise InvalidArgumentError(
                "request_id", "was already used for a different request; use a new request_id"
            )
        explanation = assignment.explanation
        assert explanation is not None, "stored assignments always carry their explanation"
        return AssignResult(assignment, explanation, replayed=True)
