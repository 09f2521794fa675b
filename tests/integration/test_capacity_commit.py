"""Capacity-mode commits (what the service sends): concurrent claims on one multi-slot agent
all succeed while it has room, and none ever overfills it. Runs on both stores."""

from __future__ import annotations

import dataclasses
import threading

from router.domain import Presence, frozen_map
from router.store import Claim, Committed, Conflict, Store
from tests.integration.conftest import StoreHarness
from tests.integration.test_store_contract import T, available, claim, make_call


def _capacity_claim(store: Store, call_id: str, agent_id: str, capacity: int = 2) -> Claim:
    """A service-style claim made on a snapshot read now."""
    agent = store.get_agent(T, agent_id)
    return dataclasses.replace(
        claim(make_call(call_id), agent_id, agent.seq),
        capacity=capacity,
        expected_version=agent.profile.version,
    )


def test_stale_seq_still_commits_while_the_agent_has_room(store: Store) -> None:
    """Two claims planned on the same snapshot of a two-chat agent both commit; a third is
    refused as full and writes nothing."""
    available(store, "a", "billing")
    first = _capacity_claim(store, "c1", "a")
    second = dataclasses.replace(first, call=make_call("c2"), request_id="req-c2")
    third = dataclasses.replace(first, call=make_call("c3"), request_id="req-c3")
    assert isinstance(store.commit_assignment(T, first), Committed)
    assert isinstance(store.commit_assignment(T, second), Committed)
    assert store.commit_assignment(T, third) == Conflict("agent full")
    assert len(store.get_agent(T, "a").active) == 2


def test_profile_change_conflicts_in_capacity_mode(harness: StoreHarness) -> None:
    """An admin edit since the snapshot (skills may be gone) forces a re-plan."""
    store = harness.store
    available(store, "a", "billing")
    planned = _capacity_claim(store, "c1", "a")
    store.update_agent(T, "a", lambda p: dataclasses.replace(p, skills=frozen_map({})))
    before = harness.dump()
    assert store.commit_assignment(T, planned) == Conflict("agent profile changed")
    assert harness.dump() == before


def test_presence_is_rechecked_in_capacity_mode(store: Store) -> None:
    """An agent who went on break after the snapshot gets nothing."""
    available(store, "a", "billing")
    planned = _capacity_claim(store, "c1", "a")
    store.set_presence(T, "a", Presence.BREAK)
    assert store.commit_assignment(T, planned) == Conflict("agent is break")


def test_concurrent_capacity_claims_never_overfill(store: Store) -> None:
    """Forty threads claim forty calls on one agent with two chat slots, all planned on the
    same snapshot: exactly two commit."""
    available(store, "a", "billing")
    base = _capacity_claim(store, "c0", "a")
    results: list[object] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        mine = dataclasses.replace(base, call=make_call(f"c{i}"), request_id=f"req-c{i}")
        result = store.commit_assignment(T, mine)
        with lock:
            results.append(result)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sum(isinstance(r, Committed) for r in results) == 2
    assert results.count(Conflict("agent full")) == 38
