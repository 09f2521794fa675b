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


class _CountingCondition(threading.Condition):
    """A condition that counts the waits begun on it."""

    def __init__(self) -> None:
        super().__init__()
        self.waits = 0

    def wait(self, timeout: float | None = None) -> bool:
        self.waits += 1
        return super().wait(timeout)


def test_a_slot_given_back_wakes_one_request_in_line() -> None:
    """Five requests wait for the one slot: each slot given back lets the next one in and
    wakes no other (waking the whole line sends all but one back to sleep); every request
    gets its turn."""
    admission = Admission(1)
    changed = admission._changed = _CountingCondition()
    admission.enter("/holder")
    entered: list[int] = []
    proceed = threading.Event()

    def request(number: int) -> None:
        with deadline.scope(30):
            admission.enter(f"/r{number}")
        entered.append(number)
        proceed.wait(30)
        admission.leave()

    threads = [threading.Thread(target=request, args=(n,)) for n in range(5)]
    for thread in threads:
        thread.start()
    until = time.monotonic() + 10
    while changed.waits < 5 and time.monotonic() < until:
        time.sleep(0.01)
    assert changed.waits == 5
    admission.leave()
    while not entered and time.monotonic() < until:
        time.sleep(0.01)
    time.sleep(0.2)  # time for any other woken request to wait again
    assert len(entered) == 1
    assert changed.waits == 5  # the four others slept on
    proceed.set()
    for thread in threads:
        thread.join(10)
    assert sorted(entered) == [0, 1, 2, 3, 4]


def test_a_request_whose_deadline_passes_as_it_is_woken_takes_the_slot() -> None:
    """A request woken by a slot given back just as its deadline passes takes the slot
    rather than giving up (and with it the only wake-up), so the line never stalls."""
    admission = Admission(1)
    admission.enter("/holder")
    changed = admission._changed
    outcome: list[str] = []

    def late() -> None:
        with deadline.scope(0.05):
            admission.enter("/late")
        outcome.append("entered")
        admission.leave()

    with changed:  # the request's deadline passes while the holder leaves, lock held
        waiter = threading.Thread(target=late)
        waiter.start()
        until = time.monotonic() + 10
        while not changed._waiters and time.monotonic() < until:  # type: ignore[attr-defined]
            changed.wait(0.001)  # lets the request in until it waits for a slot
        time.sleep(0.2)  # its 50 ms run out; it cannot return without the lock
        admission._free += 1
        changed.notify()
    waiter.join(5)
    assert outcome == ["entered"]


def test_slots_are_at_least_one() -> None:
    """A limit below one is refused."""
    with pytest.raises(ValueError, match="below 1"):
        Admission(0)
