"""The offline simulator: a small explicit event loop around the service's own ``decide``.

``simulate(scenario, seed=...)`` draws the scenario's calls (``simulations.trace``), plays
them against its agents on a simulated clock, and returns a ``SimulationResult`` with one
record per call, the agents' busy intervals and the KPIs (``simulations.kpis``). Same
scenario, policy and seed: byte-identical ``kpis.json`` and ``records.csv``.

Loop (SimPy/Ciw style): a heap of ``(time_ms, order, seq, event)`` plus the sorted trace;
every event at one millisecond is applied, then, if capacity may have freed or a call
arrived, one dispatch pass runs. Event order within a millisecond: completions, wrap-up
ends, presence changes (shifts, breaks, absences), abandonments, expiries, arrivals,
wake-ups.

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
- presence: shifts, breaks and scheduled absences; agents who leave (a shift's end, an
  absence's start) keep working on what they hold, except work on ``reclaim_channels``,
  which is reclaimed (re-queued with its original age, never offered to them again) when
  ``reclaim_on_absence`` is set; an agent on a break keeps it all, as the service keeps
  accepted work with an agent on ``BREAK`` (``router.eligibility.gone_reason``);
- a queue time limit (``max_wait_s`` of the call's channel) takes a call still waiting that
  long after it arrived off the queue as expired, before the pass of that millisecond (the
  dispatcher expires calls before it places any; it does so at its passes, within about a
  tick of the limit, the simulator at the limit itself); a call taken back from an agent who
  held it (a reclaim) keeps its age but counts toward the limit again from then, as the
  service does. A caller who hangs up in the very millisecond of the limit abandons;
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

A day on which the engine's rules reduce to "a free agent takes the longest-waiting call"
(``LONGEST_IDLE``, ``ROUND_ROBIN`` or ``BALANCED``; every agent with one slot on the calls'
one channel and fit for every call, its shifts, breaks and absences apart from one another;
one priority; no occupancy window, widening or SLA boosts; for ``BALANCED`` no region part
the clock moves; an Erlang check is such a day) skips the loop:
``simulations.pooled`` serves the calls in order from the free and the working agents, with
the very same result (``tests/simulation/test_pooled.py``).
"""

from __future__ import annotations

import heapq
import math
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from itertools import chain, compress, repeat
from operator import is_not
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from router.domain import (
    NO_SECONDS,
    ActiveWork,
    Call,
    Channel,
    Policy,
    SkillRequirement,
    Strategy,
    WorkSpan,
    frozen_map,
)
from router.ordering import limit_from_ms, origin_ms
from scoring import performance
from scoring.match import skill_fit
from simulations import outcomes, pooled
from simulations.call_log import CallLog, QueueTrace
from simulations.kpis import QueueLevels, busy_items, compute_kpis, write_outputs
from simulations.model import SIM_EPOCH_MS, AgentSpec, Scenario, epoch_ms, queue_limits_ms
from simulations.passes import Dispatcher
from simulations.trace import TraceCall, arrival_ordered, generate_trace
from simulations.waiting import Waiting, WaitingQueue
from simulations.workforce import (
    ABSENCE_START,
    SHIFT_END,
    SimAgent,
    Work,
    Workforce,
    presence_changes,
)

COMPLETE, WRAP_END, PRESENCE, ABANDON, EXPIRE, ARRIVAL, WAKE = range(7)
HISTORY_WINDOW_MS = 15 * 60 * 1000
"""Completions counted for the forecast's observed service rate (the dispatcher's window)."""

LEAVING = frozenset({SHIFT_END, ABSENCE_START})
"""Presence changes that take back accepted work on ``reclaim_channels`` (a break does not)."""


@dataclass(slots=True)
class CallResult:
    """What happened to one call (one row of ``records.csv``; times in simulated seconds).

    Not frozen, though nothing changes one once ``call_records`` returns it (it marks the
    expired calls after building every record, so a day without a queue time limit pays
    nothing for them): one is built per call, and a frozen dataclass's constructor (each
    field through ``object.__setattr__``) costs several times as much.
    """

    call_id: str
    channel: Channel
    arrival_s: float
    answered_s: float | None
    """When an agent first took the call (``None``: never)."""
    wait_s: float
    """Until answered, abandoned, expired, or the end of the simulation."""
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
    expired: bool = False
    """It left the queue at its channel's queue time limit (``Policy.max_wait_s``)."""


@dataclass(slots=True, eq=False)
class AgentResult:
    """One agent's day: when it was busy and when it was available (simulated seconds).
    Equal to another with the same fields, ``busy`` compared value for value."""

    agent_id: str
    busy: npt.NDArray[np.float64]
    """One read-only row ``(start_s, end_s, units)`` per item, wrap-up included (100 units:
    the whole agent), in that order (``busy_items``)."""
    staffed: list[tuple[float, float]]
    """Intervals during which the agent was available for work."""
    handled: int
    top_performer: bool
    quality: float
    speed: float

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AgentResult):
            return NotImplemented
        return all(
            np.array_equal(mine, theirs) if isinstance(mine, np.ndarray) else mine == theirs
            for mine, theirs in (
                (getattr(self, f.name), getattr(other, f.name)) for f in fields(self)
            )
        )

    __hash__ = None  # type: ignore[assignment]  # mutable, as a dataclass with eq


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
    queue_trace: QueueLevels = field(default_factory=QueueLevels)
    """Waiting calls after every change of the queue length."""
    wall_s: float = 0.0
    """Wall-clock seconds the run took (never written to kpis.json)."""
    kpis_s: float = 0.0
    """Of ``wall_s``, the seconds spent computing ``kpis`` (never written to kpis.json)."""
    engine: str = "event loop"
    """Which path ran: ``pooled shortcut``, or ``event loop (why)`` (never written to
    kpis.json: both paths give the same results)."""

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
    reference: bool = False,
    escalate: bool = True,
    shortcut: bool = True,
) -> SimulationResult:
    """Run ``scenario`` with ``seed`` (and ``policy``, else the scenario's).

    ``calls`` replays a given trace instead of generating one from the scenario and seed;
    ``progress`` shows a tqdm bar over simulated time, then says the KPIs are computed.
    ``reference`` runs the slow yardstick: every dispatch pass hands all waiting calls and
    all available agents to the engine (``simulations.passes``), which the fast passes must
    match. ``escalate=False`` switches
    SLA escalation off (no at-risk boosts or widening jumps): the fast passes examine at-risk
    calls in a different order than the yardstick, so the two agree call by call only without
    it (``simulations.escalation``). A day in which any free agent may take any call under
    ``LONGEST_IDLE``, ``ROUND_ROBIN`` or ``BALANCED`` is run by ``simulations.pooled`` instead
    of the event loop, with the same result; ``shortcut=False`` always runs the loop.
    """
    if policy is not None:
        scenario = scenario.with_policy(policy)
    # A generated trace is in arrival order already; a given one is checked (or sorted).
    ordered = arrival_ordered(list(calls)) if calls is not None else generate_trace(scenario, seed)
    started = time.perf_counter()
    if reference:
        why: str | None = "the reference passes"
    elif not shortcut:
        why = "the shortcut switched off"
    else:
        why = pooled.obstacle(scenario, scenario.policy, ordered, escalate=escalate)
    if why is None:
        day = pooled.run(scenario, scenario.policy, ordered, seed=seed, progress=progress)
        if progress:
            status("computing KPIs")
        result = _pooled_result(scenario, seed, ordered, day)
    else:
        sim = _Simulation(
            scenario, seed, ordered, progress=progress, reference=reference, escalate=escalate
        )
        result = sim.run()
    result.engine = _engine(why)
    result.wall_s = time.perf_counter() - started
    return result


def status(step: str) -> None:
    """Say on stderr which step of a run is under way (shown with the progress bars)."""
    print(f"{step}...", file=sys.stderr, flush=True)


def engine_of(scenario: Scenario, trace: Sequence[TraceCall]) -> str:
    """The engine ``simulate`` runs ``scenario``'s policy on with ``trace`` (by default):
    ``pooled shortcut``, or ``event loop (why)``."""
    ordered = arrival_ordered(trace)
    return _engine(pooled.obstacle(scenario, scenario.policy, ordered, escalate=True))


def _engine(why: str | None) -> str:
    return "pooled shortcut" if why is None else f"event loop ({why})"


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
        shortlist: bool = True,
    ) -> None:
        self.scenario = scenario
        self.seed = seed
        # The engine sees the scenario's policy with the rules the simulator does not model
        # switched off (heartbeats are continuous, assignments are accepted at once, so rule
        # 10 reserves no offer's wait: ``Policy.reserved_s_for``).
        self.policy = replace(scenario.policy, heartbeat_timeout_s=0, offer_timeout_s=NO_SECONDS)
        self.trace = list(trace)  # in arrival order (``ARRIVAL_ORDER``)
        self.progress = progress
        self.window_ms = self.policy.occupancy_window_s * 1000
        self.workforce = Workforce(scenario.agents, self.policy)
        self.queue = WaitingQueue(self.policy)
        self.dispatcher = Dispatcher(
            self.policy,
            self.workforce,
            self.queue,
            seed=seed,
            place=self._place,
            wake=self._wake,
            reference=reference,
            escalate=escalate,
            shortlist=shortlist,
        )
        self.heap: list[tuple[int, int, int, int, Any, Any]] = []
        self.seq = 0
        self.now = SIM_EPOCH_MS
        self.dirty = False
        """A call arrived or capacity freed: run a pass after this millisecond's events."""
        self.events = 0
        self.tokens = 0
        self.wake_at = math.inf
        self.held = 0
        """Items held by agents (in progress or in wrap-up)."""
        self.zones = _region_zones(scenario)
        self._requirements: dict[tuple[tuple[str, int], ...], tuple[SkillRequirement, ...]] = {}
        """Trace skills -> the calls' required skills, built once per kind (shared: immutable)."""
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
        self.limits_ms = queue_limits_ms(self.policy)
        """Channel -> its queue time limit in ms (only channels with one)."""
        self.expired = [False] * n if self.limits_ms else []
        self.queue_sizes = QueueTrace()

    # --- set-up ------------------------------------------------------------------------------

    def _domain_call(self, tc: TraceCall) -> Call:
        arrival = epoch_ms(tc.arrival_s)
        required = self._requirements.get(tc.skills)
        if required is None:
            required = tuple(SkillRequirement(s, lvl) for s, lvl in tc.skills)
            self._requirements[tc.skills] = required
        return Call(
            call_id=tc.call_id,
            channel=tc.channel,
            required_skills=required,
            preferred_skills=tc.preferred_skills,
            language=tc.language,
            region=tc.region,
            timezone=self.zones.get(tc.region, ""),
            priority=tc.priority,
            team=tc.team,
            region_required=tc.region_required,
            expected_handle_s=0,
            created_ms=arrival,
            attributes=_NO_ATTRIBUTES,
        )

    def _push(self, at: int, order: int, kind: int, a: Any = None, b: Any = None) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (at, order, self.seq, kind, a, b))

    def _schedule_presence(self) -> None:
        horizon = self.scenario.horizon_s
        for agent in self.workforce.agents.values():
            for at, kind, extra in presence_changes(agent.spec, horizon):
                self._push(at, PRESENCE, PRESENCE, agent, (kind, extra))

    # --- the loop ----------------------------------------------------------------------------

    def run(self) -> SimulationResult:
        self._schedule_presence()
        trace, calls, heap = self.trace, self.calls, self.heap
        n = len(trace)
        duration_ms = epoch_ms(self.scenario.duration_s)
        horizon_ms = epoch_ms(self.scenario.horizon_s)
        shown = SIM_EPOCH_MS
        nxt = 0
        with pooled.sim_time_bar(self.scenario.duration_s, self.progress) as bar:
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
                    self.dispatcher.run(self.now)
                if self.progress and self.now - shown >= 60_000:
                    bar.update(min(self.now, duration_ms) // 1000 - shown // 1000)
                    shown = min(self.now, duration_ms)
        if self.progress:
            status("computing KPIs")
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
        elif kind == EXPIRE:
            self._expire(a)
        elif kind == WAKE:
            self.wake_at = math.inf
            self.dispatcher.woke()
            self.dirty = True

    def _arrive(self, index: int) -> None:
        call = self.calls[index]
        self.dispatcher.new_call(self.queue.add(index, call))
        self._queue_changed()
        patience = self.trace[index].patience_s
        if patience is not None:
            self._push(call.created_ms + round(patience * 1000), ABANDON, ABANDON, index)
        if self.limits_ms:
            limit = self.limits_ms.get(call.channel)
            if limit is not None:
                self._push(call.created_ms + limit, EXPIRE, EXPIRE, index)
        self.dirty = True

    def _abandon(self, index: int) -> None:
        waiting = self.queue.by_index.get(index)
        if waiting is None:
            return
        self.queue.remove(waiting)
        self._queue_changed()
        self.abandoned[index] = True
        self.ended[index] = self.now

    def _expire(self, index: int) -> None:
        """The call's queue time limit: off the queue as expired, if it still waits (and the
        timer is not one set before a reclaim restarted its count)."""
        waiting = self.queue.by_index.get(index)
        if waiting is None:
            return
        call = self.calls[index]
        if self.now < limit_from_ms(call) + self.limits_ms[call.channel]:
            return
        self.queue.remove(waiting)
        self._queue_changed()
        self.expired[index] = True
        self.ended[index] = self.now

    def _queue_changed(self) -> None:
        self.queue_sizes.record(self.now, len(self.queue))

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
        self.dispatcher.sla.completed(call.channel, now)
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
        self.dispatcher.agent_changed(agent)

    def _release(self, agent: SimAgent, work: Work, end_ms: int) -> None:
        """The item stops holding capacity: record its span, free the slot."""
        del agent.work[work.index]
        agent.load[work.channel] -= 1
        agent.units_used -= work.units
        if end_ms > work.start_ms:
            agent.spans.append(WorkSpan(work.start_ms, end_ms, work.units))
            agent.busy_log.extend((work.start_ms, end_ms, work.units))
        self.held -= 1
        self.dispatcher.gained_room(agent)
        self.dirty = True

    # --- presence ----------------------------------------------------------------------------

    def _presence(self, agent: SimAgent, change: tuple[int, int]) -> None:
        kind, extra = change
        before = agent.available
        agent.change_presence(kind, extra)
        self.workforce.set_available(agent, before, self.now)
        after = agent.available
        if after and not before and not agent.work:
            agent.last_free_ms = self.now
        self._touch(agent)
        if after and not before:
            self.dispatcher.gained_room(agent)
            self.dirty = True
        elif kind in LEAVING and self.policy.reclaim_on_absence:  # a break keeps the work
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
                handed_back_ms=self.now,  # held by an agent: the limit counts again from now
            )
            self.reclaimed[index] += 1
            self.agent_of[index] = ""
            limit = self.limits_ms.get(call.channel) if self.limits_ms else None
            if limit is not None:
                self._push(self.now + limit, EXPIRE, EXPIRE, index)
            self.dispatcher.new_call(self.queue.add(index, self.calls[index]))
            self._queue_changed()
        if moved:
            self._touch(agent)

    def _wake(self, at: int) -> None:
        """Make sure a pass runs at ``at`` (one pending wake-up at most)."""
        if self.now < at < self.wake_at:
            self.wake_at = at
            self._push(at, WAKE, WAKE)

    # --- result ------------------------------------------------------------------------------

    def _result(self, end_ms: int) -> SimulationResult:
        agents = {
            agent.agent_id: _agent_result(
                agent.spec,
                busy_log=agent.busy_log,
                held=[(w.start_ms, w.units) for w in agent.work.values()],
                staffed_log=agent.staffed_log,
                handled=agent.handled,
                end_ms=end_ms,
            )
            for agent in self.workforce.agents.values()
        }
        log = CallLog(
            created=[call.created_ms for call in self.calls],
            answered=self.answered,
            ended=self.ended,
            handled_ms=self.handled_ms,
            agent_of=self.agent_of,
            abandoned=self.abandoned,
            fit=self.fit,
            quality=self.quality,
            reclaimed=self.reclaimed,
            expired=self.expired,
            events=self.events,
            queue=self.queue_sizes,
            end_ms=end_ms,
        )
        return _assemble(self.scenario, self.seed, self.trace, log, agents)


def _pooled_result(
    scenario: Scenario, seed: int, trace: Sequence[TraceCall], day: pooled.PooledDay
) -> SimulationResult:
    """The result of a day ``simulations.pooled`` ran."""
    log = day.calls
    handled = Counter(compress(log.agent_of, map(is_not, log.handled_ms, repeat(None))))
    agents = {
        spec.agent_id: _agent_result(
            spec,
            busy_log=day.busy[spec.agent_id],
            held=day.held[spec.agent_id],
            staffed_log=day.staffed[spec.agent_id],
            handled=handled[spec.agent_id],
            end_ms=day.calls.end_ms,
        )
        for spec in scenario.agents
    }
    return _assemble(scenario, seed, trace, day.calls, agents)


def _agent_result(
    spec: AgentSpec,
    *,
    busy_log: Sequence[int],
    held: Sequence[tuple[int, int]],
    staffed_log: Sequence[Sequence[int]],
    handled: int,
    end_ms: int,
) -> AgentResult:
    """One agent's day: finished items (``start, end, units`` of each, flat), items
    ``(start, units)`` still held at ``end_ms``, available intervals (an open one ends at
    -1) and calls completed."""
    busy = np.zeros((0, 3))
    if busy_log or held:  # ``_s`` of both ends, on arrays (ints below 2**53: the same division)
        items = [*busy_log, *chain.from_iterable((start, end_ms, units) for start, units in held)]
        flat = np.array(items, np.int64).reshape(-1, 3)
        busy = np.empty(flat.shape)
        busy[:, :2] = (flat[:, :2] - SIM_EPOCH_MS) / 1000
        busy[:, 2] = flat[:, 2]
        if not (np.diff(flat[:, 0]) > 0).all():  # else in order already
            busy = busy_items(busy)
    busy.flags.writeable = False
    staffed = [(_s(a), _s(end_ms if b < 0 else b)) for a, b in staffed_log]
    return AgentResult(
        agent_id=spec.agent_id,
        busy=busy,
        staffed=[(a, b) for a, b in staffed if b > a],
        handled=handled,
        top_performer=spec.top_performer,
        quality=spec.quality,
        speed=spec.speed,
    )


def _assemble(
    scenario: Scenario,
    seed: int,
    trace: Sequence[TraceCall],
    log: CallLog,
    agents: dict[str, AgentResult],
) -> SimulationResult:
    """The records, agents and KPIs of a run from what happened to each call (in trace
    order, epoch milliseconds)."""
    policy = scenario.policy
    target_ms = {c: (t.target_s * 1000) for c, t in policy.sla.items()}
    records = call_records(trace, log, target_ms)
    at_s = (np.array(log.queue.times, dtype=float) - float(SIM_EPOCH_MS)) / 1000  # exact ms
    queue_trace = QueueLevels(at_s.tolist(), log.queue.sizes)
    started = time.perf_counter()
    kpis = compute_kpis(
        scenario=scenario,
        policy=policy,
        seed=seed,
        records=records,
        agents=agents,
        events=log.events,
        queue_trace=queue_trace,
    )
    kpis_s = time.perf_counter() - started
    return SimulationResult(
        scenario=scenario,
        policy=policy,
        seed=seed,
        records=records,
        agents=agents,
        events=log.events,
        kpis=kpis,
        end_s=_s(log.end_ms),
        queue_trace=queue_trace,
        kpis_s=kpis_s,
    )


def call_records(
    trace: Sequence[TraceCall], log: CallLog, target_ms: Mapping[Channel, float]
) -> list[CallResult]:
    """A record per call of ``log`` (``trace``'s calls; ``target_ms``: the SLA target of each
    channel that has one):

    - the wait: until answered; else until hung up or expired; else until the end of the
      run (at least zero);
    - a call is completed when someone holds it and its handle time is known: then its
      agent, handle time, end, skill fit and quality; else none of them;
    - within the SLA: answered, and waited no longer than its channel's target, if any.
    """
    end_ms, epoch = log.end_ms, SIM_EPOCH_MS
    records: list[CallResult] = []
    append = records.append
    for (
        tc,
        arrival,
        answer,
        end,
        handled_ms,
        holder,
        abandoned,
        fit_of,
        quality_of,
        reclaimed,
    ) in zip(
        trace,
        log.created,
        log.answered,
        log.ended,
        log.handled_ms,
        log.agent_of,
        log.abandoned,
        log.fit,
        log.quality,
        log.reclaimed,
        strict=True,
    ):
        if answer is not None:
            wait = answer - arrival
        elif abandoned and end is not None:
            wait = end - arrival
        else:
            wait = max(0, end_ms - arrival)
        target = target_ms.get(tc.channel)
        agent_id, fit, quality, handle_s, end_s = "", None, None, None, None
        if holder and handled_ms is not None:  # completed
            agent_id, fit, quality = holder, fit_of, quality_of
            handle_s = handled_ms / 1000
            end_s = None if end is None else (end - epoch) / 1000
        append(  # positional, in field order: quicker than keywords, once per call
            CallResult(
                tc.call_id,
                tc.channel,
                (arrival - epoch) / 1000,  # ``_s``, spelled out: three per call
                None if answer is None else (answer - epoch) / 1000,
                wait / 1000,
                abandoned,
                agent_id,
                handle_s,
                end_s,
                fit,
                answer is not None and (target is None or wait <= target),
                tc.priority,
                quality,
                reclaimed,
            )
        )
    if log.expired:  # a queue time limit: the calls that reached it, and until when they waited
        for i in compress(range(len(records)), log.expired):
            record, end = records[i], log.ended[i]
            record.expired = True
            if record.answered_s is None and end is not None:
                record.wait_s = (end - log.created[i]) / 1000
    return records


_NO_ATTRIBUTES: Mapping[str, str] = frozen_map()
"""Every simulated call's (empty) attributes: one read-only mapping for all."""


def _s(ms: int) -> float:
    """Epoch milliseconds as simulated seconds."""
    return (ms - SIM_EPOCH_MS) / 1000


def _region_zones(scenario: Scenario) -> dict[str, str]:
    """Region -> the time zone of its first agent that has one (the callers' zone)."""
    zones: dict[str, str] = {}
    for spec in scenario.agents:
        if spec.region and spec.timezone:
            zones.setdefault(spec.region, spec.timezone)
    return zones
