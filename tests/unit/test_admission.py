"""``router.admission.Admission``: slots, waiting in line, and the deadline."""

from __future__ import annotations

import threading
import time

import pytest

from router import deadline
from router.admission import Admission
from router.errors import StoreUnavailableError


def test_a_request_waits_for_a_free_slot() -> None:
    """With one slot taken, the next request waits until it is given back."""
    admission = Admission(1)
    admission.enter("/a")
    entered = threading.Event()

    def second() -> None:
        admission.enter("/b")
        entered.set()
        admission.leave()

    waiter = threading.Thread(target=second)
    waiter.start()
    assert not entered.wait(0.2)
    admission.leave()
    assert entered.wait(5)
    waiter.join()


def test_waiting_ends_at_the_deadline_with_deadline_exceeded() -> None:
    """A request that cannot get a slot before its deadline is refused, naming the limit;
    the slot count is unchanged (the holder's leave frees the only one)."""
    admission = Admission(1)
    admission.enter("/a")
    started = time.monotonic()
    with deadline.scope(0.1), pytest.raises(deadline.DeadlineExceededError) as refused:
        admission.enter("/router.v1.RoutingService/Assign")
    assert 0.09 <= time.monotonic() - started < 2
    assert "ROUTER_CONCURRENCY" in refused.value.message
    assert "Assign" in refused.value.message
    admission.leave()
    with deadline.scope(0.1):
        admission.enter("/b")  # free again
    admission.leave()


def test_the_line_fails_fast_while_the_store_is_down() -> None:
    """A holder that found the store down gives its slot back marked so: the requests in
    line get UNAVAILABLE at once instead of waiting their turn; the next request that gets
    a slot tries the store again, and one that succeeds clears the mark."""
    admission = Admission(1)
    admission.enter("/a")
    outcome: list[str] = []

    def waiting() -> None:
        try:
            with deadline.scope(10):
                admission.enter("/router.v1.RoutingService/Assign")
            outcome.append("entered")
            admission.leave()
        except StoreUnavailableError as err:
            outcome.append(err.message)

    waiter = threading.Thread(target=waiting)
    waiter.start()
    time.sleep(0.1)
    started = time.monotonic()
    admission.leave(store_down=True)
    waiter.join(5)
    assert time.monotonic() - started < 1
    assert len(outcome) == 1
    assert "not answering" in outcome[0]
    admission.enter("/b")  # a free slot: it tries the store again
    admission.leave()  # and succeeded
    admission.enter("/c")
    second = threading.Thread(target=waiting)
    second.start()
    time.sleep(0.1)
    admission.leave()
    second.join(5)
    assert outcome[1:] == ["entered"]


def test_slots_are_at_least_one() -> None:
    """A limit below one is refused."""
    with pytest.raises(ValueError, match="below 1"):
        Admission(0)
