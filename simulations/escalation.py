"""SLA escalation of waiting calls, as ``router.dispatcher`` does it, from live counters.

A waiting call is *at risk* when (``router.forecast.sla_state``)::

    waited > target  or  waited >= sla_at_risk * target  or  waited + estimated_wait > target

with ``router.forecast.estimated_wait_s`` for the call's position in the store's queue
order. The first time, its priority rises by ``escalation_priority_boost``
(``router.store_common.boosted``); while at risk it is decided as
``router.dispatcher.widen_for_risk`` widens it (one widening step ahead).

The estimated wait uses the forecast's formula with counters the simulator keeps instead of
a scan of every agent: free slots of available agents, staffed slots of available agents,
completions on the channel in the last 15 minutes.

Deviations from the service, all small: the free slots include agents at their occupancy
cap (the forecast leaves them out; counting them would mean an occupancy per free agent per
pass); the mark is sticky (the service recomputes it each pass and widens only while it
holds); and a call is only examined in passes that could place it (the service examines the
whole queue every second).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

from router.domain import Channel, Policy
from router.forecast import FALLBACK_HANDLE_S
from router.ordering import origin_ms
from router.store_common import boosted
from router.widening import applied_steps
from simulations.waiting import Waiting, WaitingQueue
from simulations.workforce import Workforce

HISTORY_WINDOW_MS = 15 * 60 * 1000
"""Completions counted for the forecast's observed service rate (the dispatcher's window)."""


def overdue_threshold(policy: Policy, channel: Channel) -> int | None:
    """Smallest wait (ms) at which ``router.ordering.overdue`` holds on ``channel``."""
    target = policy.sla_for(channel)
    if target is None or target.target_s <= 0:
        return None
    target_ms = target.target_s * 1000
    return min(target_ms + 1, math.ceil(policy.sla_at_risk * target_ms))


class SlaWatch:
    """Escalation state and the forecast's counters for one run."""

    def __init__(
        self,
        policy: Policy,
        workforce: Workforce,
        queue: WaitingQueue,
        *,
        enabled: bool,
    ) -> None:
        self.policy = policy
        self.workforce = workforce
        self.queue = queue
        self.enabled = enabled and (policy.escalation_priority_boost > 0 or bool(policy.widening))
        """Escalation can change a decision (a boost reorders, a risk jump widens)."""
        self.boost_ms = policy.escalation_priority_boost * policy.aging_s_per_priority * 1000
        """How much earlier in the queue order a boost can move a call."""
        self.overdue_ms = {c: overdue_threshold(policy, c) for c in Channel}
        self._done: dict[Channel, deque[int]] = {c: deque() for c in Channel}

    def completed(self, channel: Channel, now: int) -> None:
        """A call on ``channel`` was completed at ``now`` (the forecast's history)."""
        self._done[channel].append(now)

    def escalate(self, waiting: Waiting, now: int) -> None:
        """Mark ``waiting`` at risk (and boost it once) if it is; a marked call stays so."""
        if waiting.at_risk:
            return
        policy, call = self.policy, waiting.call
        target = policy.sla_for(call.channel)
        if target is None or target.target_s <= 0:
            return
        target_ms = target.target_s * 1000
        waited = now - origin_ms(call)
        at_risk = waited > target_ms or waited >= policy.sla_at_risk * target_ms
        if not at_risk:
            position = self.queue.position(waiting)
            at_risk = self._wait_exceeds(position, call.channel, target_ms - waited, now)
        if at_risk:
            waiting.at_risk = True
            priority = boosted(call.priority, policy.escalation_priority_boost)
            if priority != call.priority:
                self.queue.reprioritise(waiting, priority)

    def next_widening(self, members: Sequence[Waiting], now: int) -> float:
        """When one of ``members`` next widens (a step, or the SLA-risk jump), after now."""
        policy = self.policy
        if not policy.widening:
            return math.inf
        soonest = math.inf
        for waiting in members:
            origin = origin_ms(waiting.call)
            natural = applied_steps(waiting.call, now, policy)
            if natural < len(policy.widening):
                at = origin + policy.widening[natural].after_s * 1000
                if at > now:
                    soonest = min(soonest, at)
            threshold = self.overdue_ms[waiting.call.channel]
            if self.enabled and not waiting.at_risk and threshold is not None:
                at = origin + threshold
                if at > now:
                    soonest = min(soonest, at)
        return soonest

    def _wait_exceeds(self, position: int, channel: Channel, slack_ms: float, now: int) -> bool:
        """Whether the forecast's estimated wait at ``position`` exceeds ``slack_ms``."""
        ahead = position - self.workforce.free_total[channel]
        return ahead > 0 and ahead / self._service_rate(channel, now) * 1000 > slack_ms

    def _service_rate(self, channel: Channel, now: int) -> float:
        """The forecast's rate: observed completions, or the staffed slots' throughput."""
        handle_s = self.policy.expected_handle_s.get(channel, 0) or FALLBACK_HANDLE_S
        fallback = max(1, self.workforce.staffed_slots[channel]) / handle_s
        done = self._done[channel]
        while done and done[0] < now - HISTORY_WINDOW_MS:
            done.popleft()
        return max(len(done) / (HISTORY_WINDOW_MS / 1000), fallback)
