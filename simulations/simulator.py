"""The offline simulator: a small explicit event loop around the service's own ``decide``.

``simulate(scenario, seed=...)`` draws the scenario's calls (``simulations.trace``), plays
them against its agents on a simulated clock, and returns a ``SimulationResult`` with one
record per call, the agents' busy intervals and the KPIs (``simulations.kpis``). Same
scenario, policy and seed: byte-identical ``kpis.json`` and ``records.csv``.

Loop (SimPy/Ciw style): a heap of ``(time_ms, order, seq, event)`` plus the sorted trace;
every event at one millisecond is applied, then, if capacity may have freed or a call
arrived, one dispatch pass runs. Event order within a millisecond: completions, wrap-up
ends, presence changes (shifts, breaks, absences), abandonments, arrivals, wake-ups.

What mirrors the service (``router.assigner``, ``router.dispatcher``, ``router.memory_*``):

- a new call queues; a dispatch pass then places waiting calls on free capacity with
  ``router.engine.decide`` (the service's Assign decides a lone call directly; with an empty
  queue the pass below sees just that call, which is the same decision);
- each pass first escalates SLA risk like the dispatcher: a call is at risk once it has
  waited ``sla_at_risk`` of its target or its waited time plus ``router.forecast``'s
  estimated wait passes the target (same formula, fed from counters kept incrementally);
  an at-risk call's priority rises by ``escalation_priority_boost`` once
  (``store_common.boosted``) and it is decided as ``router.dispatcher.widen_for_risk``
  widens it. Differences: the mark is sticky, and only calls that could be placed in this
  pass are examined (the service looks at every queued call each second);
- completion frees the slot after the channel's wrap-up; the outcome (``simulations.outcomes``)
  is folded into the agent's performance with ``scoring.performance``, as ``Complete`` does;
- presence: shifts, breaks and scheduled absences; agents who leave keep working on what
  they hold, except work on ``reclaim_channels``, which is reclaimed (re-queued with its
  original age, never offered to them again) when ``reclaim_on_absence`` is set;
- heartbeats are continuous and offers are accepted at once (``offer_timeout_s`` ignored).

Keeping each decision small (the engine's cost grows with agents and calls per decision):

- only agents that are *capable* (channel, skills, language) and *free* are passed: the
  others fail a hard rule anyway, so placements are unchanged;
- inside each bucket of identical requirements, only the first ``S`` calls in the engine's
  queue order are passed, ``S`` being the free slots of the bucket's capable agents (plus
  calls an escalation could lift into the first ``S``). Calls with identical eligibility are
  served in queue order by every strategy, so a later one is placed only if an earlier one
  was; for the baselines this is exact, for ``BALANCED`` it can differ only in cost ties.
  With widening steps, calls of one bucket differ in how widened they are, so ``S`` is
  applied per widening step and the whole bucket is examined;
- two fast paths skip the solve when the answer does not depend on the strategy: one call
  and one agent (place it if ``router.eligibility.check`` passes), and one agent with one
  free slot and calls of one channel (the first call in ``router.ordering.queue_order`` it is
  eligible for, which is what the flow and every baseline choose);
- rules that change with time alone (the rolling-occupancy cap, widening steps, SLA risk)
  get a wake-up at the moment they change instead of the service's 1 s tick.
"""

from __future__ import annotations

import heapq
import math
import random
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from router import eligibility
from router.dispatcher import widen_for_risk
from router.domain import (
    ActiveWork,
    AgentSnapshot,
    Call,
    Channel,
    Decision,
    Exclusion,
    Policy,
    SkillRequirement,
    Snapshot,
    Strategy,
    WorkSpan,
)
from router.engine import decide
from router.forecast import FALLBACK_HANDLE_S
from router.ordering import origin_ms, queue_order
from router.store_common import boosted
from router.widening import applied_steps
from scoring import performance
from scoring.load import occupancy
from scoring.match import skill_fit
from simulations import outcomes
from simulations.kpis import compute_kpis, write_outputs
from simulations.model import DAY_S, SIM_EPOCH_MS, Scenario
from simulations.trace import TraceCall, generate_trace
from simulations.waiting import Bucket, Waiting, WaitingQueue
from simulations.workforce import SimAgent, Work, Workforce

COMPLETE, WRAP_END, PRESENCE, ABANDON, ARRIVAL, WAKE = range(6)
SHIFT_START, SHIFT_END, BREAK_START, BREAK_END, ABSENCE_START, ABSENCE_END = range(6)
HISTORY_WINDOW_MS = 15 * 60 * 1000
"""Completions counted for the forecast's observed service rate (the dispatcher's window)."""


@dataclass(frozen=True, slots=True)
class CallResult:
    """What happened to one call (one row of ``records.csv``; times in simulated seconds)."""

    call_id: str
    channel: Channel
    arrival_s: float
    answered_s: float | None
    """When an agent first took the call (``None``: never)."""
    wait_s: float
    """Until answered, abandoned, or the end of the simulation."""
    abandoned: bool
    agent_id: str
    """Who completed it (empty if nobody did)."""
    handle_s: float | None
    """Actual handle time of the completing agent (wrap-up excluded)."""
    end_s: float | None
    skill_match: float | None
    """``scoring.match.skill_fit`` of the completing agent for the call."""
    within_sla: bool
    priority: int
    quality: float | None = None
    """Effective quality ``e`` of the handling (``simulations.outcomes``)."""
    reclaimed: int = 0
    """Times the call was taken back from an agent who left."""


@dataclass(slots=True)
class AgentResult:
    """One agent's day: when it was busy and when it was available (simulated seconds)."""

    agent_id: str
    busy: list[tuple[float, float, int]]
    """``(start_s, end_s, units)`` per item, wrap-up included (100 units: the whole agent)."""
    staffed: list[tuple[float, float]]
    """Intervals during which the agent was available for work."""
    handled: int
    top_performer: bool
    quality: float
    speed: float


@dataclass(slots=True)
class SimulationResult:
    """The outcome of one run. ``kpis`` is exactly what ``write`` puts in ``kpis.json``."""

    scenario: Scenario
    policy: Policy
    seed: int
    records: list[CallResult]
    agents: dict[str, AgentResult]
    events: int
    kpis: dict[str, Any]
    end_s: float
    """Simulated time when the run stopped."""
    queue_trace: list[tuple[float, int]] = field(default_factory=list)
    """``(time_s, waiting calls)`` at every change of the queue length."""
    wall_s: float = 0.0
    """Wall-clock seconds the run took (never written to kpis.json)."""

    def write(self, out_dir: str | Path) -> None:
        """Write ``kpis.json`` and ``records.csv`` into ``out_dir`` (created if missing)."""
        write_outputs(Path(out_dir), self.kpis, self.records)


def simulate(
    scenario: Scenario,
    *,
    seed: int,
    policy: Policy | Strategy | str | None = None,
    progress: bool = False,
    calls: Sequence[TraceCall] | None = None,
) -> SimulationResult:
    """Run ``scenario`` with ``seed`` (and ``policy``, else the scenario's).

    ``calls`` replays a given trace instead of generating one from the scenario and seed;
    ``progress`` shows a tqdm bar over simulated time.
    """
    if policy is not None:
        scenario = scenario.with_policy(policy)
    trace = list(calls) if calls is not None else generate_trace(scenario, seed)
    started = time.perf_counter()
    sim = _Simulation(scenario, seed, trace, progress=progress)
    result = sim.run()
    result.wall_s = time.perf_counter() - started
    return result


class _Group:
    """Waiting calls of one bucket at one widening step: identical hard requirements."""

    __slots__ = ("bucket", "match", "members", "step")

    def __init__(self, bucket: Bucket, step: int, match: set[str]) -> None:
        self.bucket = bucket
        self.step = step
        self.match = match
        self.members: list[tuple[Waiting, Call]] = []
        """In queue order, at most as many as the capable agents have free slots."""


class _Refusals:
    """Free, capable agents the hard rules refused for one (bucket, widening step)."""

    __slots__ = ("agents", "expiry")

    def __init__(self) -> None:
        self.agents: set[str] = set()
        self.expiry: dict[str, float] = {}
        """Refusals that lapse at a known time (the occupancy cap)."""

    def add(self, agent_id: str, valid_until: float) -> None:
        self.agents.add(agent_id)
        if valid_until < math.inf:
            self.expiry[agent_id] = valid_until

    def forget(self, agent_id: str) -> None:
        self.agents.discard(agent_id)
        self.expiry.pop(agent_id, None)

    def expire(self, now: int) -> float:
        """Drop lapsed refusals; the earliest lapse still to come (``inf``: none)."""
        soonest = math.inf
        for agent_id, at in list(self.expiry.items()):
            if at <= now:
                self.forget(agent_id)
            else:
                soonest = min(soonest, at)
        return soonest


class _Simulation:
    """One run's state. Times are absolute epoch milliseconds of the simulated clock."""

    def __init__(
        self,
        scenario: Scenario,
        seed: int,
        trace: Sequence[TraceCall],
        *,
        progress: bool,
        reference: bool = False,
        escalate: bool = True,
    ) -> None:
        self.scenario = scenario
        self.reference = reference
        """Decide every pass over all waiting calls and all available agents, with no fast
        path or cache: slow, and the yardstick the tests compare the pruned passes with."""
        self.seed = seed
        # The engine sees the scenario's policy with the rules the simulator does not model
        # switched off (heartbeats are continuous, assignments are accepted at once).
        self.policy = replace(scenario.policy, heartbeat_timeout_s=0)
        self.trace = sorted(trace, key=lambda c: (c.arrival_s, c.call_id))
        self.progress = progress
        self.window_ms = self.policy.occupancy_window_s * 1000
        self.workforce = Workforce(scenario.agents, self.policy)
        self.queue = WaitingQueue(self.policy)
        self.heap: list[tuple[int, int, int, int, Any, Any]] = []
        self.seq = 0
        self.now = SIM_EPOCH_MS
        self.dirty = False
        self.events = 0
        self.tokens = 0
        self.passes = 0
        self.wake_at = math.inf
        self.held = 0
        """Items held by agents (in progress or in wrap-up)."""
        self.completions: dict[Channel, deque[int]] = {c: deque() for c in Channel}
        self.risk_on = escalate and (
            self.policy.escalation_priority_boost > 0 or bool(self.policy.widening)
        )
        self.boost_ms = (
            self.policy.escalation_priority_boost * self.policy.aging_s_per_priority * 1000
        )
        self.overdue_ms = {c: _overdue_threshold(self.policy, c) for c in Channel}
        self.zones = _region_zones(scenario)
        self.dummy_rng = random.Random(0)
        n = len(self.trace)
        self.calls = [self._domain_call(c) for c in self.trace]
        self.answered: list[int | None] = [None] * n
        self.ended: list[int | None] = [None] * n
        self.handled_ms: list[int | None] = [None] * n
        self.agent_of: list[str] = [""] * n
        self.abandoned = [False] * n
        self.fit: list[float | None] = [None] * n
        self.quality: list[float | None] = [None] * n
        self.reclaimed = [0] * n
        self.queue_trace: list[tuple[int, int]] = []
        self.batch_cache: dict[Channel, int] = {}
        self.refusals: dict[tuple[int, int], _Refusals] = {}
        """(bucket uid, widening step) -> agents the hard rules refused (see ``_eligible``)."""

    # --- set-up ------------------------------------------------------------------------------

    def _domain_call(self, tc: TraceCall) -> Call:
        arrival = SIM_EPOCH_MS + round(tc.arrival_s * 1000)
        return Call(
            call_id=tc.call_id,
            channel=tc.channel,
            required_skills=tuple(SkillRequirement(s, lvl) for s, lvl in tc.skills),
            preferred_skills=tc.preferred_skills,
            language=tc.language,
            region=tc.region,
            timezone=self.zones.get(tc.region, ""),
            priority=tc.priority,
            team=tc.team,
            region_required=tc.region_required,
            expected_handle_s=0,
            created_ms=arrival,
        )

    def _push(self, at: int, order: int, kind: int, a: Any = None, b: Any = None) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (at, order, self.seq, kind, a, b))

    def _schedule_presence(self) -> None:
        horizon = self.scenario.horizon_s
        for agent in self.workforce.agents.values():
            spec = agent.spec
            for lo, hi in _shift_windows(spec.shift, horizon):
                end_ms = 0 if spec.shift is None else _ms(hi)
                self._push(_ms(lo), PRESENCE, PRESENCE, agent, (SHIFT_START, end_ms))
                if hi < horizon:
                    self._push(_ms(hi), PRESENCE, PRESENCE, agent, (SHIFT_END, 0))
                for at, length in _breaks_within(spec.breaks, lo, min(hi, horizon)):
                    self._push(_ms(at), PRESENCE, PRESENCE, agent, (BREAK_START, 0))
                    self._push(_ms(at + length), PRESENCE, PRESENCE, agent, (BREAK_END, 0))
            for absence in spec.absences:
                if absence.start_s < horizon:
                    self._push(_ms(absence.start_s), PRESENCE, PRESENCE, agent, (ABSENCE_START, 0))
                    self._push(_ms(absence.end_s), PRESENCE, PRESENCE, agent, (ABSENCE_END, 0))

    # --- the loop ----------------------------------------------------------------------------

    def run(self) -> SimulationResult:
        self._schedule_presence()
        trace, calls, heap = self.trace, self.calls, self.heap
        n = len(trace)
        duration_ms = _ms(self.scenario.duration_s)
        horizon_ms = _ms(self.scenario.horizon_s)
        bar = tqdm(
            total=round(self.scenario.duration_s),
            unit="sim s",
            disable=not self.progress,
            leave=False,
            dynamic_ncols=True,
        )
        shown = SIM_EPOCH_MS
        nxt = 0
        while heap or nxt < n:
            arrival_ms = calls[nxt].created_ms if nxt < n else math.inf
            at = heap[0][0] if heap else math.inf
            if arrival_ms < at or (arrival_ms == at and heap[0][1] > ARRIVAL):
                at = int(arrival_ms)
            if at > horizon_ms:
                break
            if at >= duration_ms and nxt >= n and not self.queue and self.held == 0:
                break
            self.now = int(at)
            # every event of this millisecond, then one dispatch pass
            while True:
                top_now = bool(heap) and heap[0][0] == at
                arrival_now = nxt < n and calls[nxt].created_ms == at
                if top_now and (not arrival_now or heap[0][1] < ARRIVAL):
                    _, _, _, kind, a, b = heapq.heappop(heap)
                    self._handle(kind, a, b)
                elif arrival_now:
                    self._arrive(nxt)
                    nxt += 1
                else:
                    break
                self.events += 1
            if self.dirty:
                self.dirty = False
                self._dispatch()
            if self.progress and self.now - shown >= 60_000:
                bar.update(min(self.now, duration_ms) // 1000 - shown // 1000)
                shown = min(self.now, duration_ms)
        bar.close()
        return self._result(max(self.now, duration_ms))

    def _handle(self, kind: int, a: Any, b: Any) -> None:
        if kind == COMPLETE:
            self._complete(a, b)
        elif kind == WRAP_END:
            self._wrap_end(a, b)
        elif kind == PRESENCE:
            self._presence(a, b)
        elif kind == ABANDON:
            self._abandon(a)
        elif kind == WAKE:
            self.wake_at = math.inf
            self.dirty = True

    def _arrive(self, index: int) -> None:
        call = self.calls[index]
        self.queue.add(index, call)
        self._queue_changed()
        patience = self.trace[index].patience_s
        if patience is not None:
            self._push(call.created_ms + round(patience * 1000), ABANDON, ABANDON, index)
        self.dirty = True

    def _abandon(self, index: int) -> None:
        waiting = self.queue.by_index.get(index)
        if waiting is None:
            return
        self.queue.remove(waiting)
        self._queue_changed()
        self.abandoned[index] = True
        self.ended[index] = self.now

    def _queue_changed(self) -> None:
        size = len(self.queue)
        if self.queue_trace and self.queue_trace[-1][0] == self.now:
            self.queue_trace[-1] = (self.now, size)
        else:
            self.queue_trace.append((self.now, size))

    # --- work --------------------------------------------------------------------------------

    def _place(self, waiting: Waiting, agent_id: str) -> None:
        now, policy = self.now, self.policy
        self.queue.remove(waiting)
        self._queue_changed()
        agent = self.workforce.agents[agent_id]
        index = waiting.index
        tc, call = self.trace[index], self.calls[index]
        units = policy.units_for(call.channel)
        self.tokens += 1
        work = Work(index, call.channel, units, now, self.tokens)
        work.active = ActiveWork(call.call_id, call.channel, units, now)
        agent.work[index] = work
        agent.load[call.channel] += 1
        agent.units_used += units
        agent.last_assigned_ms = now
        self._touch(agent)
        self.held += 1
        if self.answered[index] is None:
            self.answered[index] = now
        self.agent_of[index] = agent_id
        handle_ms = max(1, round(tc.handle_s * 1000 / agent.spec.speed))
        self._push(now + handle_ms, COMPLETE, COMPLETE, agent, work)

    def _complete(self, agent: SimAgent, work: Work) -> None:
        if agent.work.get(work.index) is not work:
            return  # reclaimed meanwhile
        now, policy, index = self.now, self.policy, work.index
        call = self.calls[index]
        handle_s = (now - work.start_ms) / 1000
        self.ended[index] = now
        self.handled_ms[index] = now - work.start_ms
        fit = skill_fit(call, agent.spec.skills)
        quality = outcomes.effective_quality(agent.spec.quality, fit)
        self.fit[index], self.quality[index] = fit, quality
        u1, u2 = outcomes.call_uniforms(self.seed, call.call_id)
        value = performance.outcome_value(
            outcomes.draw_outcome(quality, handle_s, u1, u2),
            target_handle_s=policy.expected_handle_s.get(call.channel, 0),
        )
        if value is not None:
            agent.performance = performance.fold(
                agent.performance, value, now, policy.performance_half_life_s
            )
        agent.handled += 1
        done = self.completions[call.channel]
        done.append(now)
        wrap_s = policy.wrap_up_s.get(call.channel, 0)
        if wrap_s > 0 and work.active is not None:
            work.wrap_until_ms = now + wrap_s * 1000
            work.active = replace(work.active, wrap_until_ms=work.wrap_until_ms)
            self._push(work.wrap_until_ms, WRAP_END, WRAP_END, agent, work)
        else:
            self._release(agent, work, now)
        if not agent.in_progress():
            latest = max((w.wrap_until_ms for w in agent.work.values()), default=0)
            agent.last_free_ms = max(now, latest)
        self._touch(agent)

    def _wrap_end(self, agent: SimAgent, work: Work) -> None:
        if agent.work.get(work.index) is not work:
            return
        self._release(agent, work, self.now)
        self._touch(agent)

    def _touch(self, agent: SimAgent) -> None:
        """The agent changed: new snapshot and sequence number, re-indexed, and the cached
        refusals that rested on its old state forgotten."""
        agent.changed()
        self.workforce.refresh(agent)
        for key in agent.refused_in:
            refusals = self.refusals.get(key)
            if refusals is not None:
                refusals.forget(agent.agent_id)
        agent.refused_in.clear()

    def _release(self, agent: SimAgent, work: Work, end_ms: int) -> None:
        """The item stops holding capacity: record its span, free the slot."""
        del agent.work[work.index]
        agent.load[work.channel] -= 1
        agent.units_used -= work.units
        if end_ms > work.start_ms:
            agent.spans.append(WorkSpan(work.start_ms, end_ms, work.units))
            agent.busy_log.append((work.start_ms, end_ms, work.units))
        self.held -= 1
        self.dirty = True

    # --- presence ----------------------------------------------------------------------------

    def _presence(self, agent: SimAgent, change: tuple[int, int]) -> None:
        kind, extra = change
        before = agent.available
        if kind == SHIFT_START:
            agent.on_shift = True
            if agent.profile.shift_end_ms != extra:
                agent.profile = replace(agent.profile, shift_end_ms=extra)
        elif kind == SHIFT_END:
            agent.on_shift = False
        elif kind == BREAK_START:
            agent.on_break += 1
        elif kind == BREAK_END:
            agent.on_break -= 1
        elif kind == ABSENCE_START:
            agent.absent += 1
        else:
            agent.absent -= 1
        self.workforce.set_available(agent, before, self.now)
        after = agent.available
        if after and not before and not agent.work:
            agent.last_free_ms = self.now
        self._touch(agent)
        if after and not before:
            self.dirty = True
        elif before and not after and self.policy.reclaim_on_absence:
            self._reclaim(agent)

    def _reclaim(self, agent: SimAgent) -> None:
        """Take back the agent's work on reclaim channels (``router.dispatcher.must_reclaim``)."""
        channels = self.policy.reclaim_channels
        moved = [w for w in agent.work.values() if w.wrap_until_ms == 0 and w.channel in channels]
        for work in moved:
            self._release(agent, work, self.now)
            index = work.index
            call = self.calls[index]
            self.calls[index] = replace(
                call,
                enqueued_ms=origin_ms(call),
                excluded_agents=(*call.excluded_agents, agent.agent_id),
            )
            self.reclaimed[index] += 1
            self.agent_of[index] = ""
            self.queue.add(index, self.calls[index])
            self._queue_changed()
        if moved:
            self._touch(agent)

    # --- dispatch ----------------------------------------------------------------------------

    def _dispatch(self) -> None:
        """One pass: the waiting calls some eligible free agent could take, decided together.

        Per bucket of identical requirements with capable free agents: the calls that could
        be placed (``_window``), escalated, grouped by how far they are widened; per group the
        free agents that pass the hard rules (``_eligible``), and the first calls in queue
        order that those agents' free slots could take.
        """
        if not self.queue:
            return
        if self.reference:
            self._dispatch_all()
            return
        workforce = self.workforce
        self.batch_cache = {}
        groups: list[_Group] = []
        seen: list[Waiting] = []
        for bucket in list(self.queue.buckets.values()):
            match = workforce.matching(bucket.need)
            if match:
                groups.extend(self._groups(bucket, match, seen))
        if not groups:
            return
        wanted = sum(len(g.members) for g in groups)
        pairs: list[tuple[Waiting, Call]] = []
        agent_ids: set[str] = set()
        wake = math.inf
        for group in groups:
            eligible, until = self._eligible(group, wanted)
            wake = min(wake, until)
            if eligible:
                channel = group.bucket.channel
                slots = sum(workforce.agents[a].room[channel] for a in eligible)
                pairs.extend(group.members[:slots])
                agent_ids.update(eligible)
        if pairs:
            self._solve(pairs, agent_ids)
        # calls left waiting while agents are free: a widening step may open them up
        if self.policy.widening:
            left = [w for w in seen if w.index in self.queue.by_index]
            wake = min(wake, self._next_widening(left))
        if wake < math.inf:
            self._wake(int(wake))

    def _dispatch_all(self) -> None:
        """The reference pass: every waiting call on every available agent, one ``decide``."""
        now, policy = self.now, self.policy
        self.batch_cache = {}
        waiting = sorted(self.queue.by_index.values(), key=lambda w: (w.key, w.call.call_id))
        if self.risk_on:
            for w in waiting:
                if not w.at_risk:
                    self._escalate(w)
        pairs = [
            (w, widen_for_risk(w.call, now, policy) if w.at_risk and policy.widening else w.call)
            for w in waiting
        ]
        agents = [a for a in self.workforce.agents.values() if a.available]
        if not agents:
            return
        decision = self._decide(agents, [c for _, c in pairs])
        waiting_of = {call.call_id: w for w, call in pairs}
        for placement in decision.placements:
            if placement.agent_id is not None:
                self._place(waiting_of[placement.call_id], placement.agent_id)
        # time-driven rules: look again when one changes (the service ticks every second)
        if self.queue:
            soonest = self._next_widening([w for w in waiting if w.index in self.queue.by_index])
            for agent in agents:
                if policy.occupancy_window_s > 0:
                    release = self._release_at(agent)
                    if release > now:
                        soonest = min(soonest, release)
            if soonest < math.inf:
                self._wake(int(soonest))

    def _groups(self, bucket: Bucket, match: set[str], seen: list[Waiting]) -> list[_Group]:
        """The calls of ``bucket`` that free capacity could reach, as the engine must see them
        (escalated, widened), grouped by widening step, each in queue order. The calls
        looked at are appended to ``seen``."""
        now, policy, agents = self.now, self.policy, self.workforce.agents
        channel = bucket.channel
        # Every capable free agent has a slot: a bucket no longer than that needs no count.
        upper = len(bucket.items)
        if upper > len(match):
            upper = sum(agents[a].room[channel] for a in match)
        if policy.widening:
            window = [w for _, _, w in bucket.items]
        else:
            # Only the first `upper` calls in queue order can be placed. Store order differs
            # from queue order by overdue calls (first in the engine) and by escalation
            # boosts (at most boost_ms earlier): walk past both.
            margin = self.boost_ms if self.risk_on else 0
            threshold = self.overdue_ms[bucket.channel]
            cutoff = now - threshold if threshold is not None else -math.inf
            window = []
            for key, _, waiting in bucket.items:
                if len(window) >= upper:
                    last = window[upper - 1].key
                    if key > last + margin and key > cutoff:
                        break
                window.append(waiting)
        seen.extend(window)
        if self.risk_on:
            for waiting in window:
                if not waiting.at_risk:
                    self._escalate(waiting)
        calls = [
            widen_for_risk(w.call, now, policy) if w.at_risk and policy.widening else w.call
            for w in window
        ]
        by_step: dict[int, _Group] = {}
        for i in queue_order(calls, now, policy):
            step = applied_steps(calls[i], now, policy) if policy.widening else 0
            group = by_step.get(step)
            if group is None:
                group = by_step[step] = _Group(bucket, step, match)
            if len(group.members) < upper:
                group.members.append((window[i], calls[i]))
        return list(by_step.values())

    def _eligible(self, group: _Group, wanted: int) -> tuple[list[str], float]:
        """Free agents of ``group.match`` that pass ``router.eligibility.check`` for the
        group's calls, and when a refused one may pass again (occupancy falling).

        Refusals are cached per (bucket, step) until the agent changes: the rules that
        refuse a free, capable agent (team, region, levels, shift end, absence ahead) only
        change with the agent, except the occupancy cap, whose refusal expires when the
        agent's rolling occupancy falls under it. For the sequential baselines, agents are
        tried in the strategy's order and the search stops once ``wanted`` eligible agents
        (best-skill: free slots) are found: every call of the pass is placed within that
        prefix, as an agent given a call moves behind every agent not given one.
        """
        now, policy, workforce = self.now, self.policy, self.workforce
        channel = group.bucket.channel
        call = group.members[0][1]
        if call.excluded_agents:  # declines are per call: the engine applies them
            call = replace(call, excluded_agents=())
        key = (group.bucket.uid, group.step)
        refusals = self.refusals.get(key)
        if refusals is None:
            refusals = self.refusals[key] = _Refusals()
        until = refusals.expire(now)
        open_ids = group.match - refusals.agents if refusals.agents else group.match
        ordered = self._ranked(open_ids, call)
        enough = wanted if ordered is not None else math.inf
        by_slots = self.policy.strategy == Strategy.BEST_SKILL
        candidates = ordered if ordered is not None else iter(open_ids)
        eligible: list[str] = []
        found = 0
        for agent_id in candidates:
            agent = workforce.agents[agent_id]
            # the cap verdict is known: pass an occupancy on the same side of the cap
            busy = 0.0 if self._under_cap(agent) else 1.0
            snap = agent.snapshot(now, self.window_ms)
            reason = eligibility.check(call, snap, now, policy, occupancy=busy)
            if reason is None:
                eligible.append(agent_id)
                # best-skill keeps taking its first agent until full; the rotating
                # baselines move an agent to the back once it is given a call
                found += agent.room[channel] if by_slots else 1
                if found >= enough:
                    break
                continue
            valid = self._release_at(agent) if reason == Exclusion.OCCUPANCY_CAP else math.inf
            refusals.add(agent_id, valid)
            agent.refused_in.append(key)
            until = min(until, valid)
        return eligible, until

    def _ranked(self, agent_ids: set[str], call: Call) -> Iterator[str] | None:
        """``agent_ids`` in the order a sequential baseline prefers them for ``call``
        (``router.baselines``), lazily; ``None`` for balanced and random (they need all)."""
        strategy, agents = self.policy.strategy, self.workforce.agents
        keyed: list[tuple[Any, ...]]
        if strategy == Strategy.LONGEST_IDLE:
            keyed = [(agents[a].last_free_ms, a) for a in agent_ids]
        elif strategy == Strategy.ROUND_ROBIN:
            keyed = [(agents[a].last_assigned_ms, a) for a in agent_ids]
        elif strategy == Strategy.BEST_SKILL:
            now, policy = self.now, self.policy
            keyed = [
                (
                    -skill_fit(call, agents[a].spec.skills),
                    -performance.score(agents[a].performance, now, policy),
                    a,
                )
                for a in agent_ids
            ]
        else:
            return None
        heapq.heapify(keyed)
        return (heapq.heappop(keyed)[-1] for _ in range(len(keyed)))

    def _release_at(self, agent: SimAgent) -> float:
        """The first moment from now on at which the agent's rolling occupancy is under its
        cap (``inf`` if not within a window), computed once per agent state."""
        cached = agent.release
        # idle, occupancy only falls: a time in the past still means "under the cap now"
        if (
            cached is not None
            and cached[0] == agent.seq
            and (cached[1] >= self.now or not agent.work)
        ):
            return cached[1]
        now, window_s = self.now, self.policy.occupancy_window_s
        cap = self.policy.occupancy_cap_for(agent.profile)
        at = _release_time(agent.snapshot(now, self.window_ms), now, window_s, cap)
        agent.release = (agent.seq, at)
        return at

    def _next_widening(self, members: Sequence[Waiting]) -> float:
        """When one of ``members`` next widens (a step, or the SLA-risk jump), after now."""
        policy, now = self.policy, self.now
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
            risky = self.risk_on and not waiting.at_risk and threshold is not None
            if risky and threshold is not None and origin + threshold > now:
                soonest = min(soonest, origin + threshold)
        return soonest

    def _decide(self, agents: Sequence[SimAgent], calls: list[Call]) -> Decision:
        """``router.engine.decide`` on ``agents``' snapshots (a fresh seeded ``Random`` per
        pass for the random strategy, as the service seeds one per request)."""
        now, policy = self.now, self.policy
        self.passes += 1
        rng = self.dummy_rng
        if policy.strategy == Strategy.RANDOM:
            rng = random.Random(f"{self.seed}:{now}")
        snaps = tuple(a.snapshot(now, self.window_ms) for a in agents)
        return decide(Snapshot(now_ms=now, policy=policy, agents=snaps), calls, rng=rng)

    def _wake(self, at: int) -> None:
        """Make sure a pass runs at ``at`` (one pending wake-up at most)."""
        if self.now < at < self.wake_at:
            self.wake_at = at
            self._push(at, WAKE, WAKE)

    def _escalate(self, waiting: Waiting) -> None:
        """The dispatcher's SLA check (``router.forecast.sla_state``) for one waiting call."""
        now, policy = self.now, self.policy
        call = waiting.call
        target = policy.sla_for(call.channel)
        if target is None or target.target_s <= 0:
            return
        target_ms = target.target_s * 1000
        waited = now - origin_ms(call)
        at_risk = waited > target_ms or waited >= policy.sla_at_risk * target_ms
        if not at_risk:
            ewt_s = self._estimated_wait_s(
                self.queue.position(waiting), call.channel, target_ms - waited
            )
            at_risk = waited + ewt_s * 1000 > target_ms
        if at_risk:
            waiting.at_risk = True
            priority = boosted(call.priority, policy.escalation_priority_boost)
            if priority != call.priority:
                self.queue.reprioritise(waiting, priority)

    def _estimated_wait_s(self, position: int, channel: Channel, slack_ms: float) -> float:
        """``router.forecast.estimated_wait_s`` from the simulator's counters: free slots of
        available agents under their cap, staffed slots, completions in the last 15 min.

        The caller only asks whether it exceeds ``slack_ms``; when the bounds from the free
        slots without the cap answer that, a bound is returned and the exact figure (each
        free agent's occupancy) is not computed."""
        rate = self._service_rate(channel)
        upper = self.workforce.free_total[channel]
        low_s, high_s = max(0, position - upper) / rate, position / rate
        if low_s * 1000 > slack_ms or high_s * 1000 <= slack_ms:
            return low_s if low_s * 1000 > slack_ms else high_s
        return max(0, position - self._free_now(channel)) / rate

    def _service_rate(self, channel: Channel) -> float:
        """The forecast's rate: observed completions, or the staffed slots' throughput."""
        policy = self.policy
        handle_s = policy.expected_handle_s.get(channel, 0) or FALLBACK_HANDLE_S
        fallback = max(1, self.workforce.staffed_slots[channel]) / handle_s
        done = self.completions[channel]
        since = self.now - HISTORY_WINDOW_MS
        while done and done[0] < since:
            done.popleft()
        observed = len(done) / (HISTORY_WINDOW_MS / 1000)
        return max(observed, fallback)

    def _free_now(self, channel: Channel) -> int:
        """``router.forecast.free_now`` over the available agents (cached per pass)."""
        cached = self.batch_cache.get(channel)
        if cached is not None:
            return cached
        agents = self.workforce.agents
        free = 0
        for agent_id in self.workforce.free[channel]:
            agent = agents[agent_id]
            if self._under_cap(agent):
                free += agent.room[channel]
        self.batch_cache[channel] = free
        return free

    def _under_cap(self, agent: SimAgent) -> bool:
        """Rolling occupancy under the agent's cap now. An idle agent's occupancy only falls,
        so its answer is the time ``_release_at`` computes once per agent state."""
        if agent.work:
            snap = agent.snapshot(self.now, self.window_ms)
            busy = occupancy(snap, self.now, self.policy.occupancy_window_s)
            return busy < self.policy.occupancy_cap_for(agent.profile)
        return self.now >= self._release_at(agent)

    def _solve(self, pairs: list[tuple[Waiting, Call]], agent_ids: set[str]) -> int:
        """Decide ``pairs`` on ``agent_ids`` and apply the placements; returns how many."""
        now, policy, workforce = self.now, self.policy, self.workforce
        agents = [workforce.agents[a] for a in sorted(agent_ids)]
        calls = [call for _, call in pairs]
        if len(agents) == 1:
            agent = agents[0]
            channels = {c.channel for c in calls}
            if len(calls) == 1 or (
                len(channels) == 1 and agent.free_slots(calls[0].channel, policy) == 1
            ):
                snap = agent.snapshot(now, self.window_ms)
                for i in queue_order(calls, now, policy):
                    if eligibility.check(calls[i], snap, now, policy) is None:
                        self._place(pairs[i][0], agent.agent_id)
                        return 1
                return 0
        decision = self._decide(agents, calls)
        waiting_of = {call.call_id: waiting for waiting, call in pairs}
        placed = 0
        for placement in decision.placements:
            if placement.agent_id is not None:
                self._place(waiting_of[placement.call_id], placement.agent_id)
                placed += 1
        return placed

    # --- result ------------------------------------------------------------------------------

    def _result(self, end_ms: int) -> SimulationResult:
        scenario, policy = self.scenario, self.policy
        target_ms = {c: (t.target_s * 1000) for c, t in policy.sla.items()}
        records: list[CallResult] = []
        for i, tc in enumerate(self.trace):
            arrival = self.calls[i].created_ms
            answered = self.answered[i]
            ended = self.ended[i]
            if answered is not None:
                wait = answered - arrival
            elif self.abandoned[i] and ended is not None:
                wait = ended - arrival
            else:
                wait = max(0, end_ms - arrival)
            completed = bool(self.agent_of[i]) and self.handled_ms[i] is not None
            target = target_ms.get(tc.channel)
            records.append(
                CallResult(
                    call_id=tc.call_id,
                    channel=tc.channel,
                    arrival_s=_s(arrival),
                    answered_s=None if answered is None else _s(answered),
                    wait_s=wait / 1000,
                    abandoned=self.abandoned[i],
                    agent_id=self.agent_of[i] if completed else "",
                    handle_s=(self.handled_ms[i] or 0) / 1000 if completed else None,
                    end_s=None if ended is None or not completed else _s(ended),
                    skill_match=self.fit[i] if completed else None,
                    within_sla=answered is not None and (target is None or wait <= target),
                    priority=tc.priority,
                    quality=self.quality[i] if completed else None,
                    reclaimed=self.reclaimed[i],
                )
            )
        agents: dict[str, AgentResult] = {}
        for agent in self.workforce.agents.values():
            busy = [(_s(a), _s(b), u) for a, b, u in agent.busy_log]
            busy.extend((_s(w.start_ms), _s(end_ms), w.units) for w in agent.work.values())
            staffed = [(_s(a), _s(end_ms if b < 0 else b)) for a, b in agent.staffed_log]
            agents[agent.agent_id] = AgentResult(
                agent_id=agent.agent_id,
                busy=sorted(busy),
                staffed=[(a, b) for a, b in staffed if b > a],
                handled=agent.handled,
                top_performer=agent.spec.top_performer,
                quality=agent.spec.quality,
                speed=agent.spec.speed,
            )
        queue_trace = [(_s(t), size) for t, size in self.queue_trace]
        end_s = _s(end_ms)
        kpis = compute_kpis(
            scenario=scenario,
            policy=scenario.policy,
            seed=self.seed,
            records=records,
            agents=agents,
            events=self.events,
            queue_trace=queue_trace,
        )
        return SimulationResult(
            scenario=scenario,
            policy=scenario.policy,
            seed=self.seed,
            records=records,
            agents=agents,
            events=self.events,
            kpis=kpis,
            end_s=end_s,
            queue_trace=queue_trace,
        )


def _ms(seconds: float) -> int:
    """Simulated seconds as epoch milliseconds."""
    return SIM_EPOCH_MS + round(seconds * 1000)


def _s(ms: int) -> float:
    """Epoch milliseconds as simulated seconds."""
    return (ms - SIM_EPOCH_MS) / 1000


def _shift_windows(shift: tuple[float, float] | None, horizon: float) -> list[tuple[float, float]]:
    """On-duty intervals in ``[0, horizon]`` of a daily ``shift`` (touching ones merged)."""
    if shift is None:
        return [(0.0, horizon)]
    windows: list[tuple[float, float]] = []
    for day in range(-1, int(horizon // DAY_S) + 2):
        lo = max(day * DAY_S + shift[0], 0.0)
        hi = min(day * DAY_S + shift[1], horizon)
        if hi <= lo:
            continue
        if windows and windows[-1][1] >= lo:
            windows[-1] = (windows[-1][0], hi)
        else:
            windows.append((lo, hi))
    return windows


def _breaks_within(
    breaks: tuple[tuple[float, float], ...], lo: float, hi: float
) -> list[tuple[float, float]]:
    """The daily ``breaks`` (start, length) that start inside ``[lo, hi)``."""
    found: list[tuple[float, float]] = []
    for day in range(int(lo // DAY_S) - 1, int(hi // DAY_S) + 1):
        for start, length in breaks:
            at = day * DAY_S + start
            if lo <= at < hi:
                found.append((at, length))
    return sorted(found)


def _overdue_threshold(policy: Policy, channel: Channel) -> int | None:
    """Smallest wait (ms) at which ``router.ordering.overdue`` holds on ``channel``."""
    target = policy.sla_for(channel)
    if target is None or target.target_s <= 0:
        return None
    target_ms = target.target_s * 1000
    return min(target_ms + 1, math.ceil(policy.sla_at_risk * target_ms))


def _release_time(snap: AgentSnapshot, now: int, window_s: int, cap: float) -> float:
    """First millisecond ``>= now`` at which ``scoring.load.occupancy`` is under ``cap``
    (``inf`` if none within a window: work in hand keeps it up until it ends).

    Occupancy is piecewise linear in time, with breakpoints where a span or an item's start
    enters or leaves the window: find the first breakpoint under the cap, then bisect the
    linear (so monotone) piece before it."""
    if window_s <= 0 or occupancy(snap, now, window_s) < cap:
        return now
    window_ms = window_s * 1000
    points = {now + window_ms}
    for span in snap.recent:
        points.update((span.start_ms + window_ms, span.end_ms + window_ms))
    for work in snap.active:
        points.add(work.start_ms + window_ms)
    lo = now
    for point in sorted(p for p in points if now < p <= now + window_ms):
        if occupancy(snap, point, window_s) < cap:
            hi = point
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if occupancy(snap, mid, window_s) < cap:
                    hi = mid
                else:
                    lo = mid
            return hi
        lo = point
    return math.inf


def _region_zones(scenario: Scenario) -> dict[str, str]:
    """Region -> the time zone of its first agent that has one (the callers' zone)."""
    zones: dict[str, str] = {}
    for spec in scenario.agents:
        if spec.region and spec.timezone:
            zones.setdefault(spec.region, spec.timezone)
    return zones
