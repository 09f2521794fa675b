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


def _in_line(admission: Admission, count: int) -> None:
    """Wait (at most 10 s) until ``count`` requests wait in line."""
    until = time.monotonic() + 10
    while time.monotonic() < until:
        with admission._lock:
            if sum(len(tickets) for tickets in admission._line.values()) == count:
                return
        time.sleep(0.005)
    raise AssertionError(f"{count} requests never waited in line")


def test_a_slot_given_back_wakes_one_request_in_line() -> None:
    """Five requests wait for the one slot: each slot given back lets the next one in and
    the others wait on (each is woken alone, when its turn comes); every request gets its
    turn, in arrival order within a tenant."""
    admission = Admission(1)
    admission.enter("/holder")
    entered: list[int] = []
    proceed = threading.Event()

    def request(number: int) -> None:
        with deadline.scope(30):
            admission.enter(f"/r{number}")
        entered.append(number)
        proceed.wait(30)
        admission.leave()

    threads = []
    for number in range(5):
        threads.append(threading.Thread(target=request, args=(number,)))
        threads[-1].start()
        _in_line(admission, number + 1)
    admission.leave()
    _in_line(admission, 4)
    time.sleep(0.2)  # time for any other request to get in, were it woken
    assert entered == [0]
    proceed.set()
    for thread in threads:
        thread.join(10)
    assert entered == [0, 1, 2, 3, 4]


def test_tenants_in_line_take_the_slots_given_back_in_turn() -> None:
    """A tenant with a long line does not keep the others waiting behind it: slots given
    back go to the waiting tenant holding the fewest, in turn among equals. Here two slots,
    both held by acme, acme has three more requests in line when beta's one arrives: the
    first slot acme gives back goes to beta, then acme's line goes on."""
    admission = Admission(2)
    admission.enter("/slow", "acme")
    admission.enter("/slow", "acme")
    entered: list[str] = []
    lock = threading.Lock()

    def request(name: str, tenant: str) -> None:
        with deadline.scope(30):
            admission.enter(f"/{name}", tenant)
        with lock:
            entered.append(name)

    names = [("a1", "acme"), ("a2", "acme"), ("a3", "acme"), ("b1", "beta")]
    threads = []
    for count, (name, tenant) in enumerate(names, start=1):
        threads.append(threading.Thread(target=request, args=(name, tenant)))
        threads[-1].start()
        _in_line(admission, count)

    def next_in() -> str:
        """The request the slot just given back let in."""
        until = time.monotonic() + 10
        while len(entered) < count and time.monotonic() < until:
            time.sleep(0.005)
        return entered[count - 1]

    count = 1
    admission.leave("acme")  # acme then holds one, beta none: beta's turn
    assert next_in() == "b1"
    count = 2
    admission.leave("acme")  # acme holds none, beta one: acme's
    assert next_in() == "a1"
    count = 3
    admission.leave("beta")  # b1 done: acme's line goes on
    assert next_in() == "a2"
    count = 4
    admission.leave("acme")
    assert next_in() == "a3"
    for thread in threads:
        thread.join(10)


def test_a_request_whose_deadline_passes_as_it_is_handed_a_slot_takes_it() -> None:
    """A request handed a slot just as its deadline passes takes the slot rather than
    giving up (a slot handed over is the request's), so the line never stalls."""
    admission = Admission(1)
    admission.enter("/holder")
    outcome: list[str] = []

    def late() -> None:
        with deadline.scope(0.05):
            admission.enter("/late")
        outcome.append("entered")
        admission.leave()

    with admission._lock:  # the request's deadline passes while the holder leaves
        waiter = threading.Thread(target=late)
        waiter.start()
    _in_line(admission, 1)
    with admission._lock:
        time.sleep(0.2)  # its 50 ms run out; it cannot return without the lock
        admission._free += 1
        admission._held[""] -= 1
        admission._serve()
    waiter.join(5)
    assert outcome == ["entered"]


def test_slots_are_at_least_one() -> None:
    """A limit below one is refused."""
    with pytest.raises(ValueError, match="below 1"):
        Admission(0)
