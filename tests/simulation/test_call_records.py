"""A run's records are what the rules of ``call_records`` give, call by call.

The reference spells the rules out one call at a time, in epoch
milliseconds as ints; the logs are random mixes of every case: answered or not, hung up,
still waiting at the end, held but not completed, completed without an end, channels with
and without an SLA target, waits on a target's very edge.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from router.domain import Channel
from simulations.call_log import CallLog
from simulations.model import SIM_EPOCH_MS, AgentSpec
from simulations.simulator import CallResult, _agent_result, call_records
from simulations.trace import TraceCall

TARGETS = {Channel.VOICE: 20_000, Channel.CHAT: 60_000.0}
"""Email has no target."""


def reference(trace: list[TraceCall], log: CallLog) -> list[CallResult]:
    out = []
    epoch = SIM_EPOCH_MS
    for i, tc in enumerate(trace):
        arrival, answer, end = log.created[i], log.answered[i], log.ended[i]
        if answer is not None:
            wait = answer - arrival
        elif log.abandoned[i] and end is not None:
            wait = end - arrival
        else:
            wait = max(0, log.end_ms - arrival)
        target = TARGETS.get(tc.channel)
        done = bool(log.agent_of[i]) and log.handled_ms[i] is not None
        handled = log.handled_ms[i]
        out.append(
            CallResult(
                call_id=tc.call_id,
                channel=tc.channel,
                arrival_s=(arrival - epoch) / 1000,
                answered_s=None if answer is None else (answer - epoch) / 1000,
                wait_s=wait / 1000,
                abandoned=log.abandoned[i],
                agent_id=log.agent_of[i] if done else "",
                handle_s=handled / 1000 if done and handled is not None else None,
                end_s=(end - epoch) / 1000 if done and end is not None else None,
                skill_match=log.fit[i] if done else None,
                within_sla=answer is not None and (target is None or wait <= target),
                priority=tc.priority,
                quality=log.quality[i] if done else None,
                reclaimed=log.reclaimed[i],
            )
        )
    return out


def random_day(rng: random.Random, n: int) -> tuple[list[TraceCall], CallLog]:
    channels = [Channel.VOICE, Channel.CHAT, Channel.EMAIL]
    trace, created = [], []
    t = SIM_EPOCH_MS
    for k in range(n):
        t += rng.choice([0, 1, 7, 999, 12_345])
        created.append(t)
        trace.append(
            TraceCall(t / 1000, f"c-{k:06d}", rng.choice(channels), priority=rng.randrange(11))
        )
    log = CallLog.empty(created)
    log.end_ms = t + rng.choice([-5_000, 0, 40_000])  # calls may arrive after the end
    for i, arrival in enumerate(created):
        case = rng.randrange(6)
        wait = rng.choice([0, 1, 19_999, 20_000, 20_001, 59_999, 60_000, 60_001, 123_456])
        if case <= 2:  # answered
            log.answered[i] = arrival + wait
            log.agent_of[i] = rng.choice(["a1", "a2", "b7"])
            if case <= 1:  # completed (case 1: no end known)
                handled = rng.randrange(1, 900_000)
                log.handled_ms[i] = handled
                log.ended[i] = None if case == 1 else arrival + wait + handled
                log.fit[i] = rng.random()
                log.quality[i] = rng.random()
            else:  # held at the end: no handle time
                log.fit[i] = rng.random()  # set, yet not reported for an incomplete call
        elif case == 3:  # hung up
            log.abandoned[i], log.ended[i] = True, arrival + wait
        elif case == 4:  # marked abandoned, no end: waits until the end of the run
            log.abandoned[i] = True
        log.reclaimed[i] = rng.choice([0, 0, 1, 3])
    return trace, log


@pytest.mark.parametrize("seed", range(12))
def test_records_are_the_per_call_rules_applied_to_the_log(seed: int) -> None:
    rng = random.Random(seed)
    trace, log = random_day(rng, rng.choice([1, 5, 300, 2000]))
    got, want = call_records(trace, log, TARGETS), reference(trace, log)
    assert got == want
    for a, b in zip(got, want, strict=True):  # the very types, not just equal values
        for name in ("arrival_s", "answered_s", "wait_s", "handle_s", "end_s", "within_sla"):
            assert type(getattr(a, name)) is type(getattr(b, name)), name


def test_a_log_where_every_call_completed_keeps_its_columns() -> None:
    rng = random.Random(5)
    trace, log = random_day(rng, 50)
    for i, arrival in enumerate(log.created):
        log.answered[i], log.handled_ms[i], log.ended[i] = arrival + 3, 10, arrival + 13
        log.agent_of[i], log.abandoned[i] = "a1", False
    assert call_records(trace, log, TARGETS) == reference(trace, log)
    assert call_records([], CallLog.empty([]), TARGETS) == []
    assert math.isclose(call_records(trace, log, TARGETS)[0].wait_s, 0.003)


def reference_busy(
    busy_log: list[tuple[int, int, int]], held: list[tuple[int, int]], end_ms: int
) -> list[tuple[float, float, int]]:
    """An agent's busy items in seconds, held ones ending at ``end_ms``, sorted."""
    items = [*busy_log, *((start, end_ms, units) for start, units in held)]
    return sorted(((a - SIM_EPOCH_MS) / 1000, (b - SIM_EPOCH_MS) / 1000, u) for a, b, u in items)


@pytest.mark.parametrize("seed", range(8))
def test_an_agents_busy_items_in_seconds_and_in_order(seed: int) -> None:
    rng = random.Random(seed)
    epoch, end_ms = SIM_EPOCH_MS, SIM_EPOCH_MS + 86_400_000
    spec = AgentSpec(agent_id="a1")
    starts = sorted(epoch + rng.randrange(86_400_000) for _ in range(rng.randrange(1, 400)))
    if seed % 2:  # chats: items overlap, finish out of order, some start together
        starts += rng.sample(starts, len(starts) // 4)
        rng.shuffle(starts)
    busy_log = [(s, s + rng.randrange(1, 900_000), rng.choice((25, 100))) for s in starts]
    held = [(end_ms - rng.randrange(1, 600_000), 25) for _ in range(seed % 3)]
    flat = [ms for item in busy_log for ms in item]
    result = _agent_result(
        spec, busy_log=flat, held=held, staffed_log=[[epoch, -1]], handled=0, end_ms=end_ms
    )
    assert result.busy.dtype == np.float64
    assert result.busy.tolist() == [list(item) for item in reference_busy(busy_log, held, end_ms)]
    assert not result.busy.flags.writeable
    assert result.staffed == [(0.0, 86_400.0)]
    empty = _agent_result(spec, busy_log=[], held=[], staffed_log=[], handled=0, end_ms=end_ms)
    assert empty.busy.shape == (0, 3)
    assert not empty.busy.flags.writeable
    together = [epoch + 10, epoch + 50, 25, epoch + 10, epoch + 30, 25]  # the later first
    tied = _agent_result(spec, busy_log=together, held=[], staffed_log=[], handled=0, end_ms=end_ms)
    assert tied.busy.tolist() == [[0.01, 0.03, 25.0], [0.01, 0.05, 25.0]]


def test_agent_results_compare_by_value_busy_items_included() -> None:
    spec, end_ms = AgentSpec(agent_id="a1"), SIM_EPOCH_MS + 1_000
    items = [SIM_EPOCH_MS + 10, SIM_EPOCH_MS + 50, 25]

    def result(busy_log: list[int], handled: int = 1) -> object:
        return _agent_result(
            spec, busy_log=busy_log, held=[], staffed_log=[], handled=handled, end_ms=end_ms
        )

    assert result(items) == result(list(items))
    assert result(items) != result([*items[:2], 100])  # units
    assert result(items) != result([])
    assert result(items) != result(items, handled=2)
    assert result(items) != "a1"
    with pytest.raises(TypeError):
        hash(result(items))
