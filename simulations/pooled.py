"""The pooled shortcut: a day in which any free agent may take any call, first come first served.

When every agent is on duty all day with one slot on the calls' channel, every call may go
to every agent, and nothing the clock alone changes can refuse an agent (no shifts, breaks or
absences, no occupancy window, no widening or SLA boosts), the engine's rules reduce to "a
free agent takes the longest-waiting call". Calls are then answered in queue order (arrival,
then call id: one priority, one channel): each at its arrival if an agent is free, else when
the first busy agent frees, unless its patience runs out first. The strategy only says which
of the free agents: under ``LONGEST_IDLE`` the one free the longest, under ``ROUND_ROBIN``
the one that took a call the longest ago, ties by agent id, as ``router.baselines`` orders
them. That is two heaps of agents (working, by when they free; free, by the strategy's key)
and one step per call, as queueing simulators do it.

``run`` returns what the event loop of ``simulations.simulator`` would record (a
``simulations.call_log.CallLog``: each call's answer, end and agent, the events the loop
would have handled, the queue length at every change, the end of the run; and each agent's
busy intervals); ``qualifies`` says whether a day is
such a day. ``tests/simulation/test_pooled.py`` checks the two give byte-identical results.

Event accounting mirrors the loop: one shift start per agent at 0; an arrival, a completion,
a wrap-up end and an abandonment timer per call (the timer also for calls answered before
it fires); the loop handles every event up to the horizon, and stops at the first event at
or after the end of arrivals once nothing waits and nobody holds work.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass

from router.domain import (
    AGENT_UNIT_BUDGET,
    Call,
    Channel,
    Policy,
    SkillRequirement,
    Strategy,
)
from router.eligibility import check
from scoring.match import skill_fit
from simulations import outcomes
from simulations.call_log import CallLog
from simulations.model import SIM_EPOCH_MS, Scenario
from simulations.trace import TraceCall
from simulations.workforce import SimAgent


@dataclass(slots=True)
class PooledDay:
    """What the event loop would have recorded."""

    calls: CallLog
    busy: dict[str, list[tuple[int, int, int]]]
    """Per agent: finished items ``(start, end, units)``, wrap-up included."""
    held: dict[str, list[tuple[int, int]]]
    """Per agent: items still held at the end ``(start, units)``."""


def qualifies(
    scenario: Scenario, policy: Policy, trace: Sequence[TraceCall], *, escalate: bool
) -> bool:
    """Whether ``run`` gives exactly what the event loop gives (see the module docstring)."""
    if not trace or not _policy_allows(policy, escalate=escalate):
        return False
    channel, priority = trace[0].channel, trace[0].priority
    if any(tc.channel != channel or tc.priority != priority for tc in trace):
        return False
    return _agents_allow(scenario, policy, channel) and _every_agent_fits(scenario, policy, trace)


def _policy_allows(policy: Policy, *, escalate: bool) -> bool:
    """Longest-idle or round-robin, and no rule that changes with the clock alone."""
    return (
        policy.strategy in {Strategy.LONGEST_IDLE, Strategy.ROUND_ROBIN}
        and not policy.widening
        and not (escalate and policy.escalation_priority_boost > 0)
        and policy.occupancy_window_s <= 0
    )


def _agents_allow(scenario: Scenario, policy: Policy, channel: Channel) -> bool:
    """Every agent on duty all day with one slot on ``channel``."""
    units = policy.units_for(channel)
    return (
        bool(scenario.agents)
        and 0 < units <= AGENT_UNIT_BUDGET
        and all(
            spec.shift is None
            and not spec.breaks
            and not spec.absences
            and spec.capacity.get(channel) == 1
            for spec in scenario.agents
        )
    )


def _every_agent_fits(scenario: Scenario, policy: Policy, trace: Sequence[TraceCall]) -> bool:
    """Every agent, idle and present, passes every hard rule for every kind of call."""
    kinds = {(tc.skills, tc.language, tc.region, tc.team, tc.region_required) for tc in trace}
    snapshots = []
    for spec in scenario.agents:
        agent = SimAgent(spec)
        agent.on_shift = True
        snapshots.append(agent.snapshot(SIM_EPOCH_MS, 0))
    for skills, language, region, team, region_required in kinds:
        call = Call(
            call_id="pooled",
            channel=trace[0].channel,
            required_skills=tuple(SkillRequirement(s, level) for s, level in skills),
            language=language,
            region=region,
            team=team,
            region_required=region_required,
            created_ms=SIM_EPOCH_MS,
        )
        if any(check(call, snap, SIM_EPOCH_MS, policy, occupancy=0.0) for snap in snapshots):
            return False
    return True


def run(scenario: Scenario, policy: Policy, trace: Sequence[TraceCall]) -> PooledDay:
    """The day of a scenario that ``qualifies`` (``trace`` in arrival order)."""
    return _Pool(scenario, policy, trace).run()


class _Pool:
    """One pooled day: the agents' two heaps and the log."""

    def __init__(self, scenario: Scenario, policy: Policy, trace: Sequence[TraceCall]) -> None:
        self.trace = trace
        self.specs = specs = scenario.agents
        self.duration_ms = _ms(scenario.duration_s)
        self.horizon_ms = _ms(scenario.horizon_s)
        channel = trace[0].channel
        self.units = policy.units_for(channel)
        self.wrap_ms = policy.wrap_up_s.get(channel, 0) * 1000
        self.day = PooledDay(
            calls=CallLog.empty([SIM_EPOCH_MS + round(tc.arrival_s * 1000) for tc in trace]),
            busy={spec.agent_id: [] for spec in specs},
            held={spec.agent_id: [] for spec in specs},
        )
        self.log = self.day.calls
        self.by_start = policy.strategy == Strategy.ROUND_ROBIN
        """Free agents go by when they last took a call (else by when they last freed)."""
        self.ready = [(0, spec.agent_id, k) for k, spec in enumerate(specs)]  # alike: by id
        """Free agents: ``(the strategy's key, agent id, position)``, the engine's order."""
        heapq.heapify(self.ready)
        self.working: list[tuple[int, str, int]] = []
        """Agents holding work that ends before the horizon: ``(free at, id, position)``."""
        self.clock = SIM_EPOCH_MS
        """When the latest call was answered (calls are answered in queue order)."""
        self.last_start = [0] * len(specs)
        """When each agent last took a call."""
        self.times: list[int] = [SIM_EPOCH_MS] * len(specs)
        """The time of every event the loop would queue (the shift starts first)."""
        self.changes: list[tuple[int, int]] = []
        """(time, +1 a call arrived / -1 it was answered or hung up)."""
        self.last_exit = SIM_EPOCH_MS
        """When the last call left (answered and released, or hung up), or past the horizon
        if one was still there."""
        self._fits: dict[tuple[object, ...], tuple[float, float]] = {}

    def run(self) -> PooledDay:
        log, trace = self.log, self.trace
        created = log.created
        for i in sorted(range(len(trace)), key=lambda i: (created[i], trace[i].call_id)):
            if created[i] <= self.horizon_ms:
                self._serve(i)
        # The loop handles events up to the horizon, and past the last exit only before the
        # end of arrivals (an abandonment timer of a call answered meanwhile).
        last, duration_ms = self.last_exit, self.duration_ms
        handled = [t for t in self.times if t <= self.horizon_ms and (t <= last or t < duration_ms)]
        log.events = len(handled)
        log.end_ms = max(max(handled, default=SIM_EPOCH_MS), duration_ms)
        log.queue_trace = _queue_trace(self.changes)
        return self.day

    def _stays(self) -> None:
        """A call is still there at the end of the run."""
        self.last_exit = self.horizon_ms + 1

    def _serve(self, i: int) -> None:
        """Call ``i`` (every call before it in queue order served): answered by the agent
        free first, or hung up before that agent frees."""
        day, log, tc, horizon_ms = self.day, self.log, self.trace[i], self.horizon_ms
        arrival = log.created[i]
        self.times.append(arrival)
        self.changes.append((arrival, 1))
        self.last_exit = max(self.last_exit, arrival)
        gives_up = None if tc.patience_s is None else arrival + round(tc.patience_s * 1000)
        if gives_up is not None:
            self.times.append(gives_up)
        earliest = self._earliest(arrival)
        if gives_up is not None and earliest >= gives_up:
            if gives_up > horizon_ms:
                self._stays()
                return
            log.abandoned[i], log.ended[i] = True, gives_up
            self.changes.append((gives_up, -1))
            self.last_exit = max(self.last_exit, gives_up)
            return
        if earliest > horizon_ms:
            self._stays()
            return
        start = int(earliest)
        agent_id, k = self._take(start)
        log.answered[i], log.agent_of[i] = start, agent_id
        self.changes.append((start, -1))
        spec = self.specs[k]
        handle = max(1, round(tc.handle_s * 1000 / spec.speed))
        done = start + handle
        self.times.append(done)
        release = done + self.wrap_ms
        if done <= horizon_ms:
            log.ended[i], log.handled_ms[i] = done, handle
            log.fit[i], log.quality[i] = self._fit(tc, k)
            if self.wrap_ms > 0:
                self.times.append(release)
        if release > horizon_ms:
            day.held[agent_id].append((start, self.units))
            self._stays()
            return
        day.busy[agent_id].append((start, release, self.units))
        self.last_exit = max(self.last_exit, release)
        heapq.heappush(self.working, (release, agent_id, k))

    def _earliest(self, arrival: int) -> float:
        """When a call arriving at ``arrival`` can be answered (every call before it in
        queue order answered or gone): at once if an agent is free, else when the first
        busy agent frees (never, if all hold work past the horizon). An agent still free was
        free by the latest answer, not before (a call waiting then would have taken it), so
        a call that arrived before that answer is answered with it."""
        if self.ready:
            return max(arrival, self.clock)
        if self.working:
            return max(arrival, self.working[0][0])
        return math.inf

    def _take(self, start: int) -> tuple[str, int]:
        """The agent the strategy picks among those free at ``start``."""
        working, ready = self.working, self.ready
        while working and working[0][0] <= start:
            release, agent_id, k = heapq.heappop(working)
            key = self.last_start[k] if self.by_start else release
            heapq.heappush(ready, (key, agent_id, k))
        _, agent_id, k = heapq.heappop(ready)
        self.clock = start
        self.last_start[k] = start
        return agent_id, k

    def _fit(self, tc: TraceCall, k: int) -> tuple[float, float]:
        """Skill fit and effective quality of agent ``k`` on ``tc`` (once per kind)."""
        key = (tc.skills, tc.preferred_skills, k)
        found = self._fits.get(key)
        if found is None:
            call = Call(
                call_id=tc.call_id,
                channel=tc.channel,
                required_skills=tuple(SkillRequirement(s, level) for s, level in tc.skills),
                preferred_skills=tc.preferred_skills,
            )
            spec = self.specs[k]
            fit = skill_fit(call, spec.skills)
            found = self._fits[key] = (fit, outcomes.effective_quality(spec.quality, fit))
        return found


def _queue_trace(changes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``(time, calls waiting)`` after each millisecond with a change."""
    changes.sort()
    out: list[tuple[int, int]] = []
    size = 0
    for at, delta in changes:
        size += delta
        if out and out[-1][0] == at:
            out[-1] = (at, size)
        else:
            out.append((at, size))
    return out


def _ms(seconds: float) -> int:
    """Simulated seconds as epoch milliseconds."""
    return SIM_EPOCH_MS + round(seconds * 1000)
