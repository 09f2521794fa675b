"""The pooled shortcut: a day in which any free agent may take any call, first come first served.

When every agent has one slot on the calls' channel, every call may go to every agent, and
nothing the clock alone changes can refuse an agent at its desk (no occupancy window, no
widening or SLA boosts), the engine's rules reduce to "a free agent takes the
longest-waiting call". Calls are then answered in queue order (arrival, then call id: one
priority, one channel): each at its arrival if an agent is free, else when the first busy
agent frees, unless its patience or the channel's queue time limit (``max_wait_s``, from
its arrival) runs out first: it then hangs up or expires, whichever comes first (a hang-up
in the limit's very millisecond comes first). The strategy only says which of the
free agents: under ``LONGEST_IDLE`` the one free the longest, under ``ROUND_ROBIN`` the one
that took a call the longest ago, ties by agent id, as ``router.baselines`` orders them.
That is two heaps of agents (working, by when they free; free, by the strategy's key) and
one step per call, as queueing simulators do it. Under ``LONGEST_IDLE`` with no agent ever
away, the agent a call gets is the one free first, free or working alike, so one heap of
all the agents serves: the whole day is then one local loop.

Time off shift, breaks and scheduled absences are spans away from routing: a break from its
start; the end of a shift and an absence from the moment either falls within the expected
handle time (the engine's rule 10, ``router.eligibility.shift_reason``); each until the
agent is back (the break's or absence's end, the next shift's start). Spans must lie apart
(none touching the next) and the channel's work must not be taken back from an agent who
leaves (``reclaim_channels``). A free agent leaves the free ones as its span begins; one
finishing work inside a span stays away; either is back at the span's end, its idle clock
restarted there, as the loop's presence change restarts it.

Under ``BALANCED`` (no region part the clock moves: no agent has a time zone, or region
weighs nothing) the free agents are a plain list, and the choice
(``simulations.pool_choice``) is the one the event loop's passes (``simulations.passes``)
make at that millisecond:

- one free agent takes the first waiting call in queue order;
- a lone waiting call goes to the free agent of least integer cost, ties by
  ``router.balanced.tie_key``: ``router.balanced``'s cost of the agent's soft score
  (``scoring.match``: skill and region fixed per kind of call and agent, performance
  decayed to now, idle time since the agent last freed) plus the load cost of its first
  slot, among the ``top_k`` best by net value;
- several waiting calls meeting several free agents in one millisecond: the first calls of
  each queue (``simulations.waiting.bucket_key``), as many as there are free agents, go to
  ``router.balanced.place_batch`` (the engine's flow) with the very candidates
  ``router.balanced`` builds; it places the first calls in queue order.

Each call's outcome (``simulations.outcomes``) is folded into its agent's performance sums
as of its completion time, as the loop's completion does, once the call is answered: a score
is read only while the agent is free, which is after that completion.

``run`` returns what the event loop of ``simulations.simulator`` would record (a
``simulations.call_log.CallLog``: each call's answer, end and agent, the events the loop
would have handled, the queue length at every change, the end of the run; and each agent's
busy intervals); ``qualifies`` says whether a day is
such a day. ``tests/simulation/test_pooled.py`` checks the two give byte-identical results.

Event accounting mirrors the loop: every presence change it schedules (shift starts and
ends, both ends of every break and absence); an arrival, a completion, a wrap-up end, an
abandonment timer and, with a queue time limit, an expiry timer per call (the timers also
for calls answered before they fire); the loop
handles every event up to the horizon, and stops at the first event at or after the end of
arrivals once nothing waits and nobody holds work. Each agent's available intervals follow
from the presence changes handled.
"""

from __future__ import annotations

import heapq
import math
import operator
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from itertools import pairwise

import numpy as np
from tqdm import tqdm

from router.domain import AGENT_UNIT_BUDGET, Channel, Policy, Strategy
from router.eligibility import check
from scoring.match import skill_fit
from simulations import outcomes
from simulations.call_log import CallLog, QueueTrace
from simulations.model import (
    SIM_EPOCH_MS,
    AgentSpec,
    Scenario,
    epoch_ms,
    epochs_ms,
    queue_limits_ms,
    rounded_ints,
)
from simulations.pool_choice import BalancedChoice
from simulations.trace import TraceCall, as_call
from simulations.workforce import SimAgent, breaks_within, presence_changes, shift_windows

PROGRESS_STEP = 1000
"""Calls served between two moves of the progress bar."""
_ARRIVAL = operator.attrgetter("arrival_s")
_CHANNEL = operator.attrgetter("channel")
_HANDLE = operator.attrgetter("handle_s")
_PRIORITY = operator.attrgetter("priority")
_KIND = operator.attrgetter("skills", "language", "region", "team", "region_required")
"""What tells kinds of calls apart for the hard rules (``_fit_obstacle``)."""


@dataclass(slots=True)
class PooledDay:
    """What the event loop would have recorded."""

    calls: CallLog
    busy: dict[str, list[int]]
    """Per agent: finished items, wrap-up included, flat: ``start, end, units`` of each in
    turn."""
    held: dict[str, list[tuple[int, int]]]
    """Per agent: items still held at the end ``(start, units)``."""
    staffed: dict[str, list[list[int]]]
    """Per agent: available intervals ``[start, end]`` (``end`` -1 while open at the end)."""


def qualifies(
    scenario: Scenario, policy: Policy, trace: Sequence[TraceCall], *, escalate: bool
) -> bool:
    """Whether ``run`` gives exactly what the event loop gives (see the module docstring)."""
    return obstacle(scenario, policy, trace, escalate=escalate) is None


def obstacle(
    scenario: Scenario, policy: Policy, trace: Sequence[TraceCall], *, escalate: bool
) -> str | None:
    """Why this day needs the event loop, in words for the person running it (the first
    reason found); ``None`` when ``run`` gives exactly what the loop gives."""
    if not trace:
        return "no calls"
    reason = _policy_obstacle(policy, escalate=escalate)
    if reason is not None:
        return reason
    channels = sorted({channel.value for channel in set(map(_CHANNEL, trace))})
    if len(channels) > 1:
        return f"calls on {len(channels)} channels ({', '.join(channels)})"
    priorities = sorted(set(map(_PRIORITY, trace)))
    if len(priorities) > 1:
        return f"calls of {len(priorities)} priorities"
    if (
        policy.strategy == Strategy.BALANCED
        and policy.weights.region != 0
        and any(spec.timezone for spec in scenario.agents)
    ):
        return "agents in time zones, and the balanced score weighs the region"
    return _agents_obstacle(scenario, policy, trace[0].channel) or _fit_obstacle(
        scenario, policy, trace
    )


def _policy_obstacle(policy: Policy, *, escalate: bool) -> str | None:
    """Longest-idle, round-robin or balanced, and no rule that changes with the clock alone
    (every one of the policy's obstacles, joined)."""
    reasons = []
    if policy.strategy not in {Strategy.LONGEST_IDLE, Strategy.ROUND_ROBIN, Strategy.BALANCED}:
        reasons.append(f"the {policy.strategy.value} strategy")
    if policy.widening:
        reasons.append("widening steps")
    if escalate and policy.escalation_priority_boost > 0:
        reasons.append("SLA escalation boosts")
    if policy.occupancy_window_s > 0:
        reasons.append("a rolling-occupancy window")
    return "; ".join(reasons) or None


def _agents_obstacle(scenario: Scenario, policy: Policy, channel: Channel) -> str | None:
    """Every agent with one slot on ``channel``; its times off shift, breaks and absences
    apart from one another (each a stretch of time away, none touching the next), and no
    work taken back from an agent who leaves."""
    units = policy.units_for(channel)
    if not scenario.agents:
        return "no agents"
    if not 0 < units <= AGENT_UNIT_BUDGET:
        return f"{channel.value} items take {units} budget units"
    for spec in scenario.agents:
        slots = spec.capacity.get(channel, 0)
        if slots != 1:
            return f"agent {spec.agent_id} has {slots} slots on {channel.value}"
    handle_ms = policy.expected_handle_s.get(channel, 0) * 1000
    spans = [_unroutable(spec, scenario.horizon_s, handle_ms) for spec in scenario.agents]
    if any(spans) and policy.reclaim_on_absence and channel in policy.reclaim_channels:
        return f"{channel.value} work is taken back from agents who leave"
    for spec, agent_spans in zip(scenario.agents, spans, strict=True):
        if not _apart(agent_spans):
            return (
                f"agent {spec.agent_id}'s time off shift, breaks and absences touch or overlap "
                "(counting the expected handle time before a shift end or an absence)"
            )
    return None


def _unroutable(spec: AgentSpec, horizon_s: float, handle_ms: int) -> list[tuple[int, int]]:
    """``(start, end)`` epoch ms during which the engine refuses ``spec`` for the day's calls
    whatever its work, in start order: off shift, and on shift from the moment the shift ends
    within the expected handle time (``router.eligibility.shift_reason``; a shift cut at the
    horizon ends there for the engine, but no presence change takes the agent off); its
    breaks; its scheduled absences from the moment one starts within that time."""
    lead = max(0, handle_ms - 1)  # refused from end - handle_ms + 1 on, gone from end on
    never = epoch_ms(horizon_s) + 1
    windows = shift_windows(spec.shift, horizon_s)
    spans: list[tuple[int, int]] = []
    if spec.shift is not None:
        leaves = SIM_EPOCH_MS  # off shift until the first window
        for lo, hi in windows:
            if epoch_ms(lo) > leaves:
                spans.append((leaves, epoch_ms(lo)))
            leaves = epoch_ms(hi) - lead if hi < horizon_s else epoch_ms(hi) - handle_ms + 1
        if leaves < never:
            spans.append((leaves, never))
    for lo, hi in windows:
        spans.extend(
            (epoch_ms(at), epoch_ms(at + length))
            for at, length in breaks_within(spec.breaks, lo, min(hi, horizon_s))
        )
    spans.extend((epoch_ms(a.start_s) - lead, epoch_ms(a.end_s)) for a in spec.absences)
    return sorted(spans)


def _apart(spans: Sequence[tuple[int, int]]) -> bool:
    """Each span lasts, and ends before the next one starts (sorted by start)."""
    return all(start < end for start, end in spans) and all(
        earlier[1] < later[0] for earlier, later in pairwise(spans)
    )


def _fit_obstacle(scenario: Scenario, policy: Policy, trace: Sequence[TraceCall]) -> str | None:
    """Every agent, idle and present, passes every hard rule for every kind of call."""
    kinds = dict(zip(map(_KIND, trace), trace, strict=True))
    snapshots = []
    for spec in scenario.agents:
        agent = SimAgent(spec)
        agent.on_shift = True
        agent.profile = replace(agent.profile, absences=())  # the pool keeps them away
        snapshots.append(agent.snapshot(SIM_EPOCH_MS, 0))
    for kind in sorted(kinds):
        call, skills = as_call(kinds[kind]), kind[0]
        for snap in snapshots:
            refused = check(call, snap, SIM_EPOCH_MS, policy, occupancy=0.0)
            if refused is not None:
                needs = ", ".join(f"{skill} {level}" for skill, level in skills) or "no skill"
                return (
                    f"agent {snap.agent_id} cannot take every call "
                    f"({refused.value} for calls needing {needs})"
                )
    return None


def run(
    scenario: Scenario,
    policy: Policy,
    trace: Sequence[TraceCall],
    *,
    seed: int,
    progress: bool = False,
) -> PooledDay:
    """The day of a scenario that ``qualifies`` (``trace`` in arrival order; ``seed`` draws
    the outcomes that move the balanced policy's performance scores; ``progress`` shows a
    tqdm bar over simulated time, as the event loop does)."""
    pool = _Pool(scenario, policy, trace, seed)
    with sim_time_bar(scenario.duration_s, progress) as bar:
        pool.bar = bar if progress else None
        return pool.run()


def sim_time_bar(duration_s: float, progress: bool) -> tqdm[None]:
    """The progress bar over a day's simulated seconds (the event loop's and this one's):
    closed, and cleared, when its ``with`` block ends, on Ctrl-C too."""
    return tqdm(
        total=round(duration_s),
        unit="sim s",
        disable=not progress,
        leave=False,
        dynamic_ncols=True,
    )


class _Pool:
    """One pooled day: the agents' two heaps and the log."""

    bar: tqdm | None = None
    """The progress bar over simulated time, if one is shown."""

    def __init__(
        self, scenario: Scenario, policy: Policy, trace: Sequence[TraceCall], seed: int
    ) -> None:
        self.trace = trace
        self.specs = specs = scenario.agents
        self.duration_ms = epoch_ms(scenario.duration_s)
        self.horizon_ms = epoch_ms(scenario.horizon_s)
        channel = trace[0].channel
        self.units, self.wrap_ms, self.limit_ms = (
            policy.units_for(channel),
            policy.wrap_up_s.get(channel, 0) * 1000,
            queue_limits_ms(policy).get(channel, 0),  # the queue time limit (0: none)
        )
        self.day = PooledDay(
            calls=CallLog.empty(epochs_ms(map(_ARRIVAL, trace)), expiring=self.limit_ms > 0),
            busy={spec.agent_id: [] for spec in specs},
            held={spec.agent_id: [] for spec in specs},
            staffed={},
        )
        self.log = self.day.calls
        self.by_start = policy.strategy == Strategy.ROUND_ROBIN
        """Free agents go by when they last took a call (else by when they last freed)."""
        self.ready, self.free = list[tuple[int, str, int]](), dict[int, None]()
        """Free agents at their desk. ``ready``: ``(the strategy's key, agent id, position)``,
        a heap in the engine's order. Under ``BALANCED`` ``free`` holds them instead
        (positions, in the order they came free): the balanced choice scores each."""
        self.working: list[tuple[int, str, int]] = []
        """Agents holding work that ends before the horizon, or away: ``(free and back at
        the desk at, id, position)``."""
        self.clock = SIM_EPOCH_MS
        """When the latest call was answered (calls are answered in queue order)."""
        self.last_start = [0] * len(specs)
        """When each agent last took a call."""
        handle_ms = policy.expected_handle_s.get(channel, 0) * 1000
        self.away = [_unroutable(spec, scenario.horizon_s, handle_ms) for spec in specs]
        """Per agent: spans away from routing ``(start, end)``, apart from one another."""
        self.presence = [presence_changes(spec, scenario.horizon_s) for spec in specs]
        """Per agent: its presence changes, as the loop queues them."""
        self.next_away = [0] * len(specs)
        """Per agent: its first span not yet over."""
        self.leaving: list[tuple[int, int, int]] = []
        """Free agents' next span: ``(start, position, token)``; stale once the token moved."""
        self.token = [0] * len(specs)
        """Per agent: moves each time it enters or leaves ``ready`` or ``free`` (or takes a
        call)."""
        self.times = [at for changes in self.presence for at, _, _ in changes]
        """The time of every event the loop would queue (the presence changes first)."""
        self.changes: list[int] = []
        """Queue changes as ints (``_arrived``, ``_left``: no tuple per change)."""
        self.last_exit = SIM_EPOCH_MS
        """When the last call left (answered and released, hung up or expired), or past the
        horizon if one was still there."""
        self._fits: dict[tuple[object, ...], tuple[float, float]] = {}
        self.balance = (
            BalancedChoice(scenario, policy, trace, seed)
            if policy.strategy == Strategy.BALANCED
            else None
        )
        """The balanced policy's scores (``None``: the strategy's key orders ``ready``)."""
        self.order: list[int] = []
        """Calls in queue order (arrival, then call id)."""
        self.position = 0
        """Where in ``order`` the call being served is."""
        self.planned: dict[int, int] = {}
        """Calls a balanced pass placed together with an earlier one -> their agents."""
        for k, spec in enumerate(specs):
            back = self._back_at(k, SIM_EPOCH_MS)
            if back == SIM_EPOCH_MS:
                self._enter(k, back)
            else:
                heapq.heappush(self.working, (back, spec.agent_id, k))

    def run(self) -> PooledDay:
        log, trace = self.log, self.trace
        created = log.created
        self.order = _queue_order(created, trace)
        if any(self.away) or self.by_start:
            self._serve_each()
        else:
            self._serve_together()
        # The loop handles events up to the horizon, and past the last exit only before the
        # end of arrivals (an abandonment timer of a call answered meanwhile).
        last, duration_ms = self.last_exit, self.duration_ms
        times = np.asarray(self.times, np.int64)
        handled = times[(times <= self.horizon_ms) & ((times <= last) | (times < duration_ms))]
        log.events = len(handled)
        log.end_ms = max(int(handled.max()) if len(handled) else SIM_EPOCH_MS, duration_ms)
        log.queue = _queue_trace(self.changes)
        for spec, changes in zip(self.specs, self.presence, strict=True):
            self.day.staffed[spec.agent_id] = _staffed(
                spec,
                [
                    c
                    for c in changes
                    if c[0] <= self.horizon_ms and (c[0] <= last or c[0] < duration_ms)
                ],
            )
        return self.day

    def _serve_each(self) -> None:
        """Serve every call up to the horizon, in queue order, one ``_serve`` each."""
        created, horizon_ms = self.log.created, self.horizon_ms
        for position, i in enumerate(self._in_order()):
            if created[i] <= horizon_ms:
                self.position = position
                self._serve(i)

    def _serve_together(self) -> None:  # noqa: PLR0912, PLR0915  # one local loop a day
        """``_serve`` for every call of a day when agents are never away (an agent is back at
        its desk when its work ends), as one local loop. Same log, same order.

        - Longest-idle: the agent a call gets is always the least ``(free at, agent id)``
          among all the agents, free and working alike (the one free the longest if any is,
          else the first to free), so one heap of all of them serves, a ``heapreplace`` a
          call.
        - Balanced: the free (in the order they came free) and the working, a heap by when
          they free; ``_earliest``, ``_settle`` and ``_take`` taken inline, the choice
          ``_balanced``'s. The agents back by a call's answer join the free just before the
          choice (``_settle`` brings those back by its arrival in earlier, in the same order:
          nothing reads the free in between).
        """
        log, trace, specs, horizon_ms = self.log, self.trace, self.specs, self.horizon_ms
        created, answered, ended, handled_ms = log.created, log.answered, log.ended, log.handled_ms
        agent_of, abandoned, fit, quality = log.agent_of, log.abandoned, log.fit, log.quality
        expired, limit_ms, limit, expires = log.expired, self.limit_ms, self._limit, False
        times, changes, busy, held = self.times, self.changes, self.day.busy, self.day.held
        fits, units, wrap_ms = self._fits, self.units, self.wrap_ms
        balance, free, working = self.balance, self.free, self.working
        if balance is None:  # one heap: every agent is free at the start (none is ever away)
            working.extend(self.ready)
            heapq.heapify(working)
            self.ready = []
        choose, push, pop, replace_top = (
            self._balanced,
            heapq.heappush,
            heapq.heappop,
            heapq.heapreplace,
        )
        speeds = {spec.speed for spec in specs}
        handles = (  # each call's handle time at the one speed every agent works at
            _handles(trace, speeds.pop()) if len(speeds) == 1 else None
        )
        clock, last_exit, stays = self.clock, self.last_exit, False
        for position, i in enumerate(self._in_order()):
            arrival = created[i]
            if arrival > horizon_ms:
                continue
            tc = trace[i]
            last_exit = arrival if arrival > last_exit else last_exit  # max(), as below
            start = arrival if arrival >= clock else clock  # _earliest: now, if anyone is free
            if not free and (not working or working[0][0] > start):
                start = working[0][0] if working else horizon_ms + 1  # else when one frees
            patience = tc.patience_s
            leaves = None if patience is None else arrival + round(patience * 1000)
            if leaves is not None:
                times.append(leaves)
            if limit_ms:
                leaves, expires = limit(arrival, leaves)
            if leaves is not None and start >= leaves:
                if leaves > horizon_ms:
                    stays = True
                    continue
                (expired if expires else abandoned)[i] = True
                ended[i] = leaves
                changes.append(2 * leaves)  # _left
                last_exit = leaves if leaves > last_exit else last_exit
                continue
            if start > horizon_ms:
                stays = True
                continue
            if balance is None:
                _, agent_id, k = working[0]
            else:
                while working and working[0][0] <= start:  # _settle: those back by then
                    back, _, k = pop(working)
                    balance.freed(k, back)
                    free[k] = None
                self.position = position
                k = choose(start, i)
                agent_id = specs[k].agent_id
                del free[k]
            clock = start
            answered[i], agent_of[i] = start, agent_id
            changes.append(2 * start)  # _left
            if handles is None:
                handle = round(tc.handle_s * 1000 / specs[k].speed)
                handle = handle if handle > 1 else 1  # max(1, ...)
            else:
                handle = handles[i]
            done = start + handle
            times.append(done)
            release = done + wrap_ms
            if done <= horizon_ms:
                ended[i], handled_ms[i] = done, handle
                found = fits.get((tc.skills, tc.preferred_skills, k))
                if found is None:
                    found = self._fit(tc, k)
                fit[i], quality[i] = found
                if balance is not None:
                    balance.fold(k, tc.call_id, found[1], start, done)
                if wrap_ms > 0:
                    times.append(release)
            if release > horizon_ms:
                held[agent_id].append((start, units))
                if balance is None:
                    pop(working)
                stays = True
                continue
            busy[agent_id].extend((start, release, units))
            last_exit = release if release > last_exit else last_exit
            if balance is None:
                replace_top(working, (release, agent_id, k))
            else:
                push(working, (release, agent_id, k))
        self.clock, self.last_exit = clock, horizon_ms + 1 if stays else last_exit
        arrived = np.asarray(created, np.int64)  # every call up to the horizon arrives
        arrived = arrived[arrived <= horizon_ms]
        times.extend(arrived.tolist())
        changes.extend((2 * arrived + 1).tolist())  # _arrived: queue changes are sorted later

    def _in_order(self) -> Iterable[int]:
        """The calls in queue order; with a progress bar, one that moves it to each
        ``PROGRESS_STEP``-th call's arrival on the way."""
        bar = self.bar
        if bar is None:
            return self.order
        return self._moving(bar)

    def _moving(self, bar: tqdm) -> Iterator[int]:
        created, last = self.log.created, self.duration_ms
        shown = SIM_EPOCH_MS
        for n, i in enumerate(self.order):
            if n % PROGRESS_STEP == 0:
                at = min(created[i], last)
                if at > shown:
                    bar.update((at - SIM_EPOCH_MS) // 1000 - (shown - SIM_EPOCH_MS) // 1000)
                    shown = at
            yield i

    def _stays(self) -> None:
        """A call is still there at the end of the run."""
        self.last_exit = self.horizon_ms + 1

    def _serve(self, i: int) -> None:
        """Call ``i`` (every call before it in queue order served): answered by the agent
        free first, or hung up before that agent frees."""
        day, log, tc, horizon_ms = self.day, self.log, self.trace[i], self.horizon_ms
        arrival = log.created[i]
        self.times.append(arrival)
        self.changes.append(_arrived(arrival))
        last = self.last_exit  # max(), without the call: three times per call
        self.last_exit = arrival if arrival > last else last
        leaves = None if tc.patience_s is None else arrival + round(tc.patience_s * 1000)
        if leaves is not None:
            self.times.append(leaves)
        expires = False
        if self.limit_ms:
            leaves, expires = self._limit(arrival, leaves)
        earliest = self._earliest(arrival)
        if leaves is not None and earliest >= leaves:
            if leaves > horizon_ms:
                self._stays()
                return
            (log.expired if expires else log.abandoned)[i] = True
            log.ended[i] = leaves
            self.changes.append(_left(leaves))
            last = self.last_exit
            self.last_exit = leaves if leaves > last else last
            return
        if earliest > horizon_ms:
            self._stays()
            return
        start = int(earliest)
        agent_id, k = self._take(start, i)
        log.answered[i], log.agent_of[i] = start, agent_id
        self.changes.append(_left(start))
        spec = self.specs[k]
        handle = round(tc.handle_s * 1000 / spec.speed)
        handle = handle if handle > 1 else 1  # max(1, ...)
        done = start + handle
        self.times.append(done)
        release = done + self.wrap_ms
        if done <= horizon_ms:
            log.ended[i], log.handled_ms[i] = done, handle
            log.fit[i], quality = self._fit(tc, k)
            log.quality[i] = quality
            if self.balance is not None:
                self.balance.fold(k, tc.call_id, quality, start, done)
            if self.wrap_ms > 0:
                self.times.append(release)
        if release > horizon_ms:
            day.held[agent_id].append((start, self.units))
            self._stays()
            return
        day.busy[agent_id].extend((start, release, self.units))
        last = self.last_exit
        self.last_exit = release if release > last else last
        heapq.heappush(self.working, (self._back_at(k, release), agent_id, k))

    def _limit(self, arrival: int, gives_up: int | None) -> tuple[int, bool]:
        """A call arriving at ``arrival`` meets the queue time limit (its expiry timer is
        counted): when it leaves the queue unless answered first (the earlier of the limit
        and ``gives_up``, its caller's hang-up, if any), and whether it expires then (a
        hang-up in the limit's very millisecond comes first, as in the loop)."""
        expires = arrival + self.limit_ms
        self.times.append(expires)
        if gives_up is not None and gives_up <= expires:
            return gives_up, False
        return expires, True

    def _earliest(self, arrival: int) -> float:
        """When a call arriving at ``arrival`` can be answered (every call before it in
        queue order answered or gone): at once if an agent is free, else when the first
        busy agent frees (never, if all hold work past the horizon). An agent still free was
        free by the latest answer, not before (a call waiting then would have taken it), so
        a call that arrived before that answer is answered with it."""
        now = arrival if arrival >= self.clock else self.clock  # max(arrival, self.clock)
        self._settle(now)
        if self.ready or self.free:
            return now
        if self.working:
            return self.working[0][0]
        return math.inf

    def _take(self, start: int, i: int) -> tuple[str, int]:
        """The agent the strategy picks for call ``i`` among those free at ``start``."""
        self._settle(start)
        if self.balance is None:
            _, agent_id, k = heapq.heappop(self.ready)
        else:
            k = self._balanced(start, i)
            agent_id = self.specs[k].agent_id
            del self.free[k]
        self.token[k] += 1  # its next span away no longer takes it from the free
        self.clock = start
        self.last_start[k] = start
        return agent_id, k

    def _settle(self, now: int) -> None:
        """The free agents at ``now``'s pass: those back by ``now`` join the free, those
        whose span away has begun leave it until the span ends."""
        working, leaving, token = self.working, self.leaving, self.token
        while True:
            while working and working[0][0] <= now:
                back, _, k = heapq.heappop(working)
                self._enter(k, back)
            if not leaving or leaving[0][0] > now:
                return
            while leaving and leaving[0][0] <= now:
                _, k, stamp = heapq.heappop(leaving)
                if stamp == token[k]:
                    token[k] += 1
                    self._leave(k)

    def _enter(self, k: int, back: int) -> None:
        """Agent ``k`` is free and at its desk from ``back`` (its idle clock starts then)."""
        agent_id = self.specs[k].agent_id
        if self.balance is None:
            key = self.last_start[k] if self.by_start else back
            heapq.heappush(self.ready, (key, agent_id, k))
        else:
            self.balance.freed(k, back)
            self.free[k] = None
        spans = self.away[k]
        if spans:
            n = self.next_away[k]
            while n < len(spans) and spans[n][1] <= back:
                n += 1
            self.next_away[k] = n
            if n < len(spans):  # ``back`` is never inside a span: this one starts later
                heapq.heappush(self.leaving, (spans[n][0], k, self.token[k]))

    def _leave(self, k: int) -> None:
        """Free agent ``k`` goes away: out of ``ready`` (or ``free``) until its span ends."""
        if self.balance is None:
            ready = self.ready
            ready.remove(next(entry for entry in ready if entry[2] == k))
            heapq.heapify(ready)
        else:
            del self.free[k]
        span = self.away[k][self.next_away[k]]
        heapq.heappush(self.working, (span[1], self.specs[k].agent_id, k))

    def _back_at(self, k: int, free: int) -> int:
        """When agent ``k``, free from ``free`` on, is at its desk: then, or when the span
        away it is in ends (spans are apart, so that end is outside every span)."""
        spans = self.away[k]
        if not spans:
            return free
        n = self.next_away[k]
        while n < len(spans) and spans[n][1] <= free:
            n += 1
        self.next_away[k] = n
        if n < len(spans) and spans[n][0] <= free:
            return spans[n][1]
        return free

    def _balanced(self, start: int, i: int) -> int:
        """The agent the balanced pass at ``start`` gives call ``i``, as the event loop's
        passes (``simulations.passes``) decide it: one free agent takes the first call in
        queue order; one call goes to its cheapest agent; else the engine's flow places the
        first calls in queue order, as many as there are free agents, on all of them."""
        assert self.balance is not None
        free = list(self.free)
        planned = self.planned.pop(i, None)
        if planned is not None:
            return planned
        if len(free) == 1:
            return free[0]
        calls = self._pass_calls(start, i, len(free))
        kind_of, trace = self.balance.kind_of, self.trace
        if len(calls) == 1:
            return self.balance.lone(trace[i].call_id, kind_of[i], free, start)
        agents = self.balance.batch([(trace[j].call_id, kind_of[j]) for j in calls], free, start)
        # Every call may go to every agent: the flow places the first calls in queue order.
        first, *others = agents
        if first is None or None in others[: len(free) - 1]:
            raise RuntimeError("a balanced pass did not place the first calls in queue order")
        self.planned.update((j, k) for j, k in zip(calls[1:], others, strict=True) if k is not None)
        return first

    def _pass_calls(self, start: int, i: int, limit: int) -> list[int]:
        """Call ``i`` and the calls after it in queue order still waiting at ``start`` (the
        pass handles hang-ups and expiries first), at most ``limit`` of each queue (calls of
        one bucket, ``simulations.waiting.bucket_key``): what the pass offers the engine."""
        assert self.balance is not None
        order, created, trace, max_wait = self.order, self.log.created, self.trace, self.limit_ms
        after = self.position + 1
        if after == len(order) or created[order[after]] > start:
            return [i]  # the next call is not there yet: the usual case
        kind_of, bucket_of = self.balance.kind_of, self.balance.bucket
        taken = dict.fromkeys(set(bucket_of), 0)
        calls = [i]
        taken[bucket_of[kind_of[i]]] = 1
        full = int(limit == 1)
        for position in range(after, len(order)):
            j = order[position]
            if full == len(taken) or created[j] > start:
                break
            patience = trace[j].patience_s
            bucket = bucket_of[kind_of[j]]
            if (
                taken[bucket] < limit
                and (patience is None or created[j] + round(patience * 1000) > start)
                and (not max_wait or created[j] + max_wait > start)
            ):
                calls.append(j)
                taken[bucket] += 1
                full += taken[bucket] == limit
        return calls

    def _fit(self, tc: TraceCall, k: int) -> tuple[float, float]:
        """Skill fit and effective quality of agent ``k`` on ``tc`` (once per kind)."""
        key = (tc.skills, tc.preferred_skills, k)
        found = self._fits.get(key)
        if found is None:
            spec = self.specs[k]
            fit = skill_fit(as_call(tc), spec.skills)
            found = self._fits[key] = (fit, outcomes.effective_quality(spec.quality, fit))
        return found


def _staffed(spec: AgentSpec, changes: Sequence[tuple[int, int, int]]) -> list[list[int]]:
    """``spec``'s available intervals ``[start, end]`` (``end`` -1 if open) after the
    presence changes ``changes`` (in the loop's order), as the loop logs them."""
    agent = SimAgent(spec)
    for at, kind, extra in sorted(changes, key=lambda change: change[0]):  # stable: as queued
        before = agent.available
        agent.change_presence(kind, extra)
        if agent.available != before:
            agent.staffed(at, agent.available)
    return agent.staffed_log


def _arrived(at: int) -> int:
    """The queue change "a call arrived at ``at``" as an int: ``(at, +1)``, sorting after
    the calls that left in the same millisecond, as the tuple would."""
    return 2 * at + 1


def _left(at: int) -> int:
    """The queue change "a call was answered or hung up at ``at``": ``(at, -1)``."""
    return 2 * at


def _handles(trace: Sequence[TraceCall], speed: float) -> list[int]:
    """Each call's handle time in milliseconds at ``speed`` (at least 1), as ``_serve``
    rounds it."""
    handles = rounded_ints(np.fromiter(map(_HANDLE, trace), float, len(trace)) * 1000 / speed)
    return [h if h > 1 else 1 for h in handles]


def _queue_trace(changes: Sequence[int]) -> QueueTrace:
    """Calls waiting after each millisecond with a change (``_arrived``, ``_left``)."""
    if not changes:
        return QueueTrace()
    ordered = np.sort(np.asarray(changes, np.int64))
    at = ordered >> 1
    size = np.cumsum(2 * (ordered & 1) - 1)
    last = np.append(at[1:] != at[:-1], True)  # the last change of each millisecond
    return QueueTrace(at[last].tolist(), size[last].tolist())


def _queue_order(created: Sequence[int], trace: Sequence[TraceCall]) -> list[int]:
    """Call positions in queue order: by arrival millisecond, then call id. A trace is in
    arrival order already, and its order is kept unless rounding to the millisecond made
    two calls arrive together out of call-id order (no sort key per call when it is not)."""
    n = len(trace)
    steps = np.diff(np.asarray(created, np.int64))
    if (steps >= 0).all() and all(
        trace[i].call_id <= trace[i + 1].call_id for i in np.flatnonzero(steps == 0).tolist()
    ):
        return list(range(n))
    return sorted(range(n), key=lambda i: (created[i], trace[i].call_id))
