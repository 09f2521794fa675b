"""Retries of an Assign (the same ``request_id``): the digest holds the call (its lists in
order) and the ``no_queue`` choice, and records written before the choice was part of it, or
with the lists in the caller's order (kept 24 h), are still recognised. In-memory store, the
real assigner and dispatcher."""

from __future__ import annotations

import dataclasses

import pytest

from router.assigner import DIGEST_PREFIX, Assigner, Outcome, fingerprint, legacy_fingerprint
from router.dispatcher import Dispatcher
from router.domain import (
    AgentProfile,
    AssignmentState,
    Call,
    Channel,
    Policy,
    Presence,
    SkillRequirement,
    frozen_map,
)
from router.errors import InvalidArgumentError
from router.memory_store import MemoryStore
from router.store import Candidates
from tests.helpers import FakeClock

T = "acme"
CALL = Call("c1", Channel.VOICE, (SkillRequirement("billing", 1),))


def _tenant() -> tuple[MemoryStore, Assigner, Dispatcher]:
    """One voice agent, busy with another call."""
    store = MemoryStore(FakeClock())
    dispatcher = Dispatcher(store, owner="me")
    assigner = Assigner(store, dispatcher=dispatcher)
    store.create_agent(T, AgentProfile("a", skills=frozen_map({"billing": 5})))
    store.set_presence(T, "a", Presence.AVAILABLE)
    held = assigner.assign(T, "r0", Call("c0", Channel.VOICE, (SkillRequirement("billing", 1),)))
    assert held.assignment is not None
    return store, assigner, dispatcher


def _free(store: MemoryStore, assigner: Assigner, dispatcher: Dispatcher) -> None:
    """The agent finishes c0; the dispatcher gives them the waiting call."""
    record = store.get_call(T, "c0")
    assert record.assignment is not None
    store.finish_assignment(
        T, record.assignment.assignment_id, record.assignment.token, AssignmentState.COMPLETED
    )
    dispatcher.run_tick(T)
    assert store.get_call(T, "c1").assignment is not None


def test_the_other_no_queue_choice_is_another_request_even_once_placed() -> None:
    """A request queued, then placed by the dispatcher: its retry with ``no_queue`` is
    INVALID_ARGUMENT before and after the placement (the choice is in the digest); with
    the same choice it replays."""
    store, assigner, dispatcher = _tenant()
    assert assigner.assign(T, "r1", CALL).outcome == Outcome.QUEUED
    with pytest.raises(InvalidArgumentError, match="request_id"):
        assigner.assign(T, "r1", CALL, queue=False)
    _free(store, assigner, dispatcher)
    with pytest.raises(InvalidArgumentError, match="request_id"):
        assigner.assign(T, "r1", CALL, queue=False)
    again = assigner.assign(T, "r1", CALL)
    assert (again.outcome, again.replayed) == (Outcome.ASSIGNED, True)
    assert fingerprint(CALL).startswith(DIGEST_PREFIX)
    assert fingerprint(CALL) != fingerprint(CALL, queue=False)


def test_a_record_from_before_the_choice_still_replays() -> None:
    """A record written before ``no_queue`` was part of the digest (as an older replica
    wrote it, in a rolling upgrade): a retry either way replays it, but a ``no_queue``
    retry only once the call no longer waits (never answered QUEUED)."""
    store, assigner, dispatcher = _tenant()
    store.enqueue(T, "r1", legacy_fingerprint(CALL), CALL, policy=store.get_policy(T))
    again = assigner.assign(T, "r1", CALL)
    assert (again.outcome, again.replayed) == (Outcome.QUEUED, True)
    with pytest.raises(InvalidArgumentError, match="request_id"):
        assigner.assign(T, "r1", CALL, queue=False)
    _free(store, assigner, dispatcher)
    placed = assigner.assign(T, "r1", CALL, queue=False)
    assert (placed.outcome, placed.replayed) == (Outcome.ASSIGNED, True)


def test_a_requests_digests_do_not_change_with_the_code() -> None:
    """A retry may reach a replica of another version (a rolling upgrade), which compares
    its digest with the stored one: the digests of a request stay what every version since
    ``no_queue`` joined them wrote (a field added to the call's JSON would change them)."""
    assert fingerprint(CALL) == (
        "2:7f71a153289857cb97d009406a8721cc9073b53a2bab5cfda286fc61c7653f0c"
    )
    assert fingerprint(CALL, queue=False) == (
        "2:25bf2bcef049fac07f3a33467ca76c5230844b1d6f4c2bd2b400ee34326abc8f"
    )
    assert legacy_fingerprint(CALL) == (
        "567fb5a59ac2368a1111fed1ef6dbe73c7cef9e4288b2378607efe462306f4fc"
    )


TWO_SKILLS = Call(
    "c1",
    Channel.VOICE,
    (SkillRequirement("sales", 1), SkillRequirement("billing", 1)),
    preferred_skills=("vip", "french"),
    attributes=frozen_map({"tier": "gold", "crm": "42"}),
)
REORDERED = dataclasses.replace(
    TWO_SKILLS,
    required_skills=TWO_SKILLS.required_skills[::-1],
    preferred_skills=TWO_SKILLS.preferred_skills[::-1],
    attributes=frozen_map(dict(list(TWO_SKILLS.attributes.items())[::-1])),
)


def test_a_retry_listing_skills_and_attributes_in_another_order_replays() -> None:
    """A platform that rebuilds its request from a set or a map may list the required and
    preferred skills and the attributes in another order on a retry: the same request, so
    it replays (it was INVALID_ARGUMENT); another level is another request."""
    store, assigner, _ = _tenant()
    store.create_agent(T, AgentProfile("b", skills=frozen_map({"billing": 5, "sales": 5})))
    store.set_presence(T, "b", Presence.AVAILABLE)
    first = assigner.assign(T, "r1", TWO_SKILLS)
    again = assigner.assign(T, "r1", REORDERED)
    assert (again.outcome, again.replayed) == (first.outcome, True)
    assert again.assignment == first.assignment
    other = (*REORDERED.required_skills[:1], SkillRequirement("sales", 2))
    with pytest.raises(InvalidArgumentError, match="request_id"):
        assigner.assign(T, "r1", dataclasses.replace(REORDERED, required_skills=other))


def test_a_record_with_the_callers_order_still_replays() -> None:
    """A record an earlier version wrote with the digest of the call as sent (its lists in
    the caller's order) replays for a retry in that order; a call already in order has the
    one digest either way (the pinned digests above)."""
    store, assigner, _ = _tenant()
    as_sent = fingerprint(TWO_SKILLS, as_sent=True)
    assert as_sent != fingerprint(TWO_SKILLS)
    assert fingerprint(CALL, as_sent=True) == fingerprint(CALL)
    store.enqueue(T, "r1", as_sent, TWO_SKILLS, policy=store.get_policy(T))
    again = assigner.assign(T, "r1", TWO_SKILLS)
    assert (again.outcome, again.replayed) == (Outcome.QUEUED, True)


class _Racing(MemoryStore):
    """A store whose candidate read never sees the request's record, as when a retry's
    first read comes before the original's write (concurrent attempts)."""

    def load_candidates(self, tenant: str, call: Call, request_id: str = "") -> Candidates:
        found = super().load_candidates(tenant, call, request_id)
        return dataclasses.replace(found, request_seen=False)


def test_a_concurrent_retry_meeting_a_record_in_the_callers_order_replays() -> None:
    """The store's own check meets the record only at the commit (or the queueing): it
    compares one digest, so it hands the decision to the replay, which knows them all; a
    record in the caller's order (an earlier version's) replays, another call is still
    INVALID_ARGUMENT."""
    store = _Racing(FakeClock())
    assigner = Assigner(store)
    store.create_agent(T, AgentProfile("b", skills=frozen_map({"billing": 5, "sales": 5})))
    store.set_presence(T, "b", Presence.AVAILABLE)
    store.enqueue(T, "r1", fingerprint(TWO_SKILLS, as_sent=True), TWO_SKILLS, policy=Policy())
    again = assigner.assign(T, "r1", TWO_SKILLS)
    assert (again.outcome, again.replayed) == (Outcome.QUEUED, True)
    with pytest.raises(InvalidArgumentError, match="request_id"):
        assigner.assign(T, "r1", dataclasses.replace(TWO_SKILLS, priority=3))
