"""Live replay: send a trace to a running router over gRPC, time-compressed, as a load test.

What a helpdesk platform would do, at ``speed`` times real time:

1. put the tenant's policy in place (strategy, and every duration divided by ``speed`` so
   the service's own clocks - SLA targets, occupancy window, expected handle times, queue
   time limits - live in the same compressed time as the callers; values the API bounds are
   clamped and listed),
2. create the scenario's agents, set them AVAILABLE and keep their heartbeats going; give
   them the shift ends and scheduled absences the simulator puts in their profiles, on the
   service's clock at the same ``speed`` as the calls (``Replayer`` says how), and follow
   their shifts, breaks and absences with presence changes,
3. ``Assign`` each call at its arrival time / speed, ``Accept`` offers at once, ``Complete``
   answered calls after handle time / speed with a simulated outcome, and ``Cancel`` calls
   still waiting when the caller's patience / speed runs out (whichever of an Accept and the
   Cancel comes first, the other is not sent; see ``Replayer._patience``),
4. learn when queued calls get an agent from one ``Watch`` stream (ASSIGNED / OFFERED), when
   a call goes back to the queue (QUEUED after a hand-back, or after an offer declined,
   timed out or taken back from an agent who left before it was accepted: the call waits
   again until its next offer), and when the service takes one off the queue at its
   channel's queue time limit (EXPIRED: the call ends there, as an abandoned one does).

A call counts by its first outcome, as the offline simulator and the service's GetStats
count it: one an agent answered is answered from that first answer (its wait runs to it)
whatever happens next - handed back to the queue (the agent released it, or the service
reclaimed it from an agent who left), then answered again, abandoned or expired. Its
``outcome`` is what happened last.

Bounded on every side: at most ``max_calls`` calls, arrivals only during ``max_seconds``,
``drain_s`` more for the calls in progress (then queued calls are cancelled and active ones
completed, and counted as cut), a thread pool of ``workers``. Loopback targets only unless
``allow_remote``. Waits and handle times are measured on the client's monotonic clock and
scaled back by ``speed`` into scenario seconds.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import heapq
import itertools
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from google.protobuf import field_mask_pb2
from tqdm import tqdm

from router.admin_api import MAX_ABSENCES
from router.convert import (
    ABSENCE_KINDS,
    CHANNELS,
    MAX_ABSENCE_MS,
    WATCH_CURSOR_HEADER,
    duration,
    ms_from_timestamp,
    timestamp,
)
from router.domain import Call, Channel, Outcome, Policy, SkillRequirement
from router.policies import POLICY_FIELDS, WEEK_S, policy_to_pb
from router.v1 import admin_pb2, admin_pb2_grpc, routing_pb2, routing_pb2_grpc
from router.v1 import types_pb2 as pb
from scoring.match import skill_fit
from simulations.model import DAY_S, AbsenceSpec
from simulations.outcomes import call_uniforms, draw_outcome, effective_quality
from simulations.replay_plan import (
    ReplayAgent,
    ReplayError,
    ReplayOptions,
    compress_policy,
    service_absences,
)
from simulations.rpcstats import RpcStats, latency_summary
from simulations.trace import TraceCall

T = TypeVar("T")

RETRY_CODES = frozenset(
    {grpc.StatusCode.ABORTED, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
)
"""Codes worth retrying: every RPC the replay sends is idempotent (same request_id)."""
MAX_ATTEMPTS = 3
WATCHED = (
    "QUEUED", "ASSIGNED", "OFFERED", "ABANDONED", "EXPIRED", "CANCELLED", "COMPLETED",
    "REJECTED", "OFFER_TIMED_OUT", "RECLAIMED", "RELEASED", "PRESENCE_CHANGED",
)  # fmt: skip
_WITHDRAWN = frozenset({grpc.StatusCode.FAILED_PRECONDITION})
_UNANSWERED = frozenset({"abandoned", "expired"})
"""Outcomes of calls that ended while they waited in the queue: no agent held them at the
end (an agent may have answered one before it went back to the queue)."""
REQUEUED = frozenset({"REJECTED", "OFFER_TIMED_OUT", "RECLAIMED", "RELEASED"})
CLOCK_MARGIN_S = 60.0
"""Real seconds the absences sent reach before the replay's start and past its drain limit
(besides the week of look-ahead): room for the estimate of the service's clock and for the
end of the run."""
ABSENCE_PREFIX = "replay-"
"""Absence ids the replay mints (``replay-<tag>-<n>``): the ones it may cancel."""


# --- per-call state --------------------------------------------------------------------------


@dataclass
class _Live:
    """What the client knows about one call (guarded by the replayer's lock)."""

    call: TraceCall
    wire_id: str
    due: float
    sent: float | None = None
    answered: float | None = None
    """When the agent holding the call now got it; ``None`` while it waits."""
    first_answered: float | None = None
    """When an agent first got it (kept when it goes back to the queue)."""
    agent_id: str = ""
    active: tuple[str, int] | None = None
    """(assignment id, fencing token) while an agent holds it."""
    assignments: set[str] = field(default_factory=set)
    """Every assignment id seen for the call (offers and direct assignments)."""
    offers: set[str] = field(default_factory=set)
    accepting: int = 0
    """Accepts in flight: the caller does not hang up on an agent who picked up first."""
    waits_on: bool = False
    """The caller's patience ran out while an agent had the call (it went back to the queue
    after): the caller never hangs up (the simulator's hang-up timer fires once)."""
    ended: float | None = None
    outcome: str = ""
    """``completed``, ``abandoned``, ``expired`` (the service took it off the queue at its
    channel's queue time limit), ``cancelled`` (assigned just before the caller hung up),
    ``cut`` (ended by the drain limit) or ``error``; empty while in progress."""
    requeued: int = 0
    complete_failures: int = 0
    """Completes that failed for good (every retry of ``_rpc``): tried again later."""
    held: tuple[str, int] | None = None
    """(assignment id, token) a Complete never ended: completed at the end of the run."""
    queued: bool = False
    ending: bool = False
    """A Complete or Cancel is on its way: nothing else may end the call."""
    assign_latency: float = 0.0
    """Real seconds the Assign took: a caller answered at once waited this long."""
    queued_ms: int | None = None
    """Server time of the call's first QUEUED event."""
    queued_at: list[int] = field(default_factory=list)
    """Server time of every QUEUED event of the call: its arrival in the queue, if Assign
    queued it, and each return there (an offer declined, timed out or taken back, a
    hand-back)."""
    answered_ms: int | None = None
    """Server time of the ASSIGNED (or accepted OFFERED) event that first answered it (kept
    when it goes back to the queue and is answered again)."""
    expired_ms: int | None = None
    """Server time of its EXPIRED event."""
    placed_ms: dict[str, int] = field(default_factory=dict)
    """Assignment id -> server time the call was offered or given to that agent (it left
    the queue then)."""
    held_before: list[tuple[str, float, float]] = field(default_factory=list)
    """(agent id, answer, hand-back) of each agent who held the call and gave it back to the
    queue (released it, or had it reclaimed), on the client's clock."""
    ended_early: dict[str, float] = field(default_factory=dict)
    """Assignment id -> when an event ended it (back to the queue) before the replay knew
    it had begun: an Accept whose answer was still on its way."""


@dataclass(frozen=True, slots=True)
class ObservedCall:
    """How one call went, as the client saw it; times in scenario seconds (the client's
    monotonic clock mapped back through ``speed``)."""

    call: TraceCall
    wire_id: str
    """The call id the service knows (the trace's id behind the run's tag)."""
    outcome: str
    """``completed``, ``abandoned``, ``expired`` (taken off the queue by the service at its
    channel's queue time limit), ``cancelled`` (answered, then the caller hung up in the
    same instant), ``cut`` (ended by the drain limit), ``error`` or ``not_sent``."""
    queued: bool
    """Assign answered QUEUED: the call waited for the dispatcher."""
    sent_s: float | None
    wait_s: float | None
    """Until an agent first got it (answered calls, whatever happened next) or the caller
    hung up (abandoned ones). Time in the queue is measured on the service's clock (QUEUED
    to ASSIGNED/OFFERED event) and scaled by ``speed``; the Assign round trip is added
    unscaled, as the real delay it is (scaling a 10 ms RPC by x300 would invent a 3 s
    wait). An abandoned call waited its caller's patience (the Cancel's round trip and the
    timer's lateness, scaled, would count against the service). An expired call waited
    until the service's EXPIRED event, measured as an answered call's wait is."""
    handle_s: float | None
    """The answer of the agent who held the call at its end to the Complete, on the
    client's clock, scaled (completed or cut calls)."""
    ended_s: float | None
    """Completed, abandoned, expired or cut."""
    agent_id: str
    assignments: int
    """Distinct assignments the service made for the call (1 unless re-queued)."""
    requeued: int
    skill_match: float | None = None
    """``scoring.match.skill_fit`` of the call with its agent (answered calls)."""
    effective_quality: float | None = None
    """The agent's resolution probability on this call (``simulations.outcomes``)."""

    answered: bool = False
    """An agent got the call, whatever happened next: one handed back to the queue and then
    abandoned or expired is answered too (and abandoned or expired)."""
    last_answered_s: float | None = None
    """When the agent who held the call at its end got it (scenario seconds): the start of
    ``handle_s``. ``answered_s`` unless the call went back to the queue and was answered
    again (then ``answered_s`` plus the time between the two answers on the client's
    clock, scaled); ``None`` when no agent held it at its end."""
    handed_back: tuple[tuple[str, float, float], ...] = ()
    """(agent id, answer, hand-back) of each agent who held the call and gave it back to the
    queue (released it, or had it reclaimed), in scenario seconds on ``last_answered_s``'s
    clock: ``answered_s`` plus the time since the first answer on the client's clock,
    scaled."""
    queued_until_s: float | None = None
    """When the call first left the queue it waited in from its arrival (offered or given
    to an agent, hung up, expired or cut), on the service's clock (below); ``None`` when it
    did not wait from its arrival or the service's times are unknown."""
    waited_again: tuple[tuple[float, float], ...] = ()
    """(from, to) of each spell the call waited in the queue after it went back there: a
    hand-back, or an offer declined, timed out or taken back from an agent who left before
    it was accepted. From its QUEUED event until it was offered or given to an agent again,
    else until its caller's patience ran out (an abandoned call, as an abandoned call's
    wait is counted), else until it ended (expired, cut). Times on the service's clock,
    scaled by ``speed`` from the call's arrival there, which is ``sent_s`` plus the Assign's
    round trip (the instant an answered call's wait counts from)."""

    @property
    def answered_s(self) -> float | None:
        """When an agent first got the call (scenario seconds)."""
        if not self.answered or self.sent_s is None or self.wait_s is None:
            return None
        return self.sent_s + self.wait_s


@dataclass(frozen=True, slots=True)
class ReplayRun:
    """Everything a replay observed."""

    tenant: str
    options: ReplayOptions
    policy: Policy
    """The policy as the scenario states it (uncompressed, strategy override applied)."""
    agents: tuple[ReplayAgent, ...]
    calls: tuple[ObservedCall, ...]
    start_s: float
    """Scenario time of the first arrival (the replay's time zero)."""
    end_s: float
    """Scenario time when the last call ended."""
    rpc: Mapping[str, Any]
    policy_notes: tuple[str, ...]
    wall_s: float
    watch: Mapping[str, Any]
    service_stats: Mapping[str, Any]
    origin_ms: int = 0
    """The service's clock (epoch ms) at the replay's time zero: scenario second ``s`` is
    ``origin_ms + (s - start_s) / speed * 1000`` there (shift ends, absences)."""
    sent_policy: Policy | None = None
    """The policy the service was given: its durations divided by ``speed`` and made whole
    seconds (``compress_policy``), or as stated with ``--real-time-policy``; ``None``:
    unknown (``wrap_up_s`` then takes the stated policy's)."""

    def wrap_up_s(self, channel: Channel) -> float:
        """The wrap-up the service applied after a completed call on ``channel``, in
        scenario seconds: the sent policy's (real seconds on the service's clock) times
        ``speed``, which is not the stated one where compression rounded it (30 s at x60 is
        0.5 s, sent as 1 s: 60 s of the scenario)."""
        if self.sent_policy is None:
            return float(self.policy.wrap_up_s.get(channel, 0))
        return self.sent_policy.wrap_up_s.get(channel, 0) * self.options.speed


# --- the replayer ----------------------------------------------------------------------------


class _Scheduler:
    """A heap of (due, seq, action) run on a bounded thread pool when due."""

    def __init__(self, pool: ThreadPoolExecutor, stats: RpcStats) -> None:
        self._pool = pool
        self._stats = stats
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._cv = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="replay-scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def at(self, due: float, action: Callable[[], None]) -> None:
        with self._cv:
            heapq.heappush(self._heap, (due, next(self._seq), action))
            self._cv.notify()

    def stop(self) -> None:
        with self._cv:
            self._stopped = True
            self._cv.notify()
        if self._thread.ident is not None:
            self._thread.join()

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._stopped and (not self._heap or self._heap[0][0] > time.monotonic()):
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cv.wait(timeout)
                if self._stopped:
                    return
                due, _, action = heapq.heappop(self._heap)
            self._pool.submit(self._run, due, action)

    def _run(self, due: float, action: Callable[[], None]) -> None:
        self._stats.lag(time.monotonic() - due)
        action()


class Replayer:
    """One replay against one service. Use ``run()`` once.

    Agents are set up in two rounds. The first creates them (an existing one in a reused
    tenant is kept) and sets their starting presence. Then the replay's time zero is fixed
    on the client's monotonic clock and, through a Heartbeat's ``server_time``, on the
    service's clock, a little ahead (twice what the first round took per request, for the
    requests of the second), and the second round gives each agent what the simulator puts
    in its profile, at the calls' ``speed``: the end of its shift in force (``shift_end``,
    with UpdateAgent: the next one at each later shift start, before the agent comes back)
    and its absences (ScheduleAbsence, ``replay-<tag>-<n>``; those an earlier replay left
    on a reused tenant's agent are cancelled first). An absence is cut to the service
    clock's reach of the run (``service_absences``); more than the service keeps per agent
    (100), or one that would still last over 366 days, stops the run before anything is
    sent.
    """

    def __init__(
        self,
        channel: grpc.Channel,
        agents: Sequence[ReplayAgent],
        calls: Sequence[TraceCall],
        options: ReplayOptions,
        policy: Policy | None = None,
        *,
        admin_channel: grpc.Channel | None = None,
    ) -> None:
        """Prepare (nothing is sent until ``run``); the admin services go over
        ``admin_channel`` when they listen apart (``ROUTER_ADMIN_PORT``)."""
        self.options = options
        self.tag = secrets.token_hex(3)
        self.tenant = options.tenant or f"replay-{self.tag}"
        self.routing = routing_pb2_grpc.RoutingServiceStub(channel)
        self._last_error: dict[str, str] = {}
        """Method -> the code and message of its last failed attempt."""
        self._watch_stream: Any = None
        """The Watch stream open now (``_watch`` opens it again after a break)."""
        self.admin = admin_pb2_grpc.AgentAdminServiceStub(admin_channel or channel)
        self.policies = admin_pb2_grpc.PolicyServiceStub(admin_channel or channel)
        self.agents = list(agents)
        self._agent = {a.agent_id: a for a in self.agents}
        ordered = sorted(calls, key=lambda c: c.arrival_s)[: options.max_calls]
        self.calls = ordered
        self._first = ordered[0].arrival_s if ordered else 0.0
        self._t0 = time.monotonic()
        self.policy = policy or Policy()
        self.stats = RpcStats()
        self._lock = threading.Lock()
        self._live: dict[str, _Live] = {}
        self._by_wire: dict[str, _Live] = {}
        self._all_done = threading.Event()
        self._pending = 0
        self._synced = threading.Event()
        self._closing = threading.Event()
        """Set at the drain limit: no new calls, no retries, everything left is cut."""
        self._watch_events = 0
        self._watch_lag_ms: list[float] = []
        self._not_responding = 0
        self._progress: tqdm | None = None
        self._origin_ms = 0
        """The service's clock at ``_t0`` (set with it, before the agents' second round)."""
        self._existing: set[str] = set()
        """Agents a reused tenant already had (CreateAgent: ALREADY_EXISTS)."""
        self._absences: dict[str, tuple[AbsenceSpec, ...]] = {}
        """Per agent, the absences to schedule (``_plan_absences``)."""

    # -- RPC plumbing ----------------------------------------------------------------------

    def _rpc(
        self,
        method: str,
        fn: Callable[..., T],
        request: object,
        expected: frozenset[grpc.StatusCode] = frozenset(),
    ) -> T | None:
        """Call ``fn(request)`` with a deadline, retrying idempotent failures; record every
        attempt (failures with an ``expected`` code apart from errors). ``None`` when the
        call finally failed."""
        for attempt in range(MAX_ATTEMPTS):
            start = time.perf_counter()
            try:
                response = fn(request, timeout=self.options.rpc_timeout_s)
            except grpc.RpcError as exc:
                code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
                details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
                self._last_error[method] = f"{code.name}: {details}"
                elapsed = time.perf_counter() - start
                self.stats.record(method, elapsed, code.name, expected=code in expected)
                if (
                    code in RETRY_CODES
                    and attempt + 1 < MAX_ATTEMPTS
                    and not self._closing.is_set()
                ):
                    self.stats.retried(method)
                    time.sleep(0.02 * 2**attempt)
                    continue
                return None
            self.stats.record(method, time.perf_counter() - start)
            return response
        return None  # pragma: no cover - the loop always returns

    # -- setup -----------------------------------------------------------------------------

    def _stated_policy(self) -> Policy:
        if self.options.strategy is None:
            return self.policy
        return dataclasses.replace(self.policy, strategy=self.options.strategy)

    def _setup_policy(self) -> tuple[Policy, list[str]]:
        """Give the tenant the stated policy, compressed unless ``--real-time-policy``: the
        policy sent and the notes of what its compression clamped or rounded."""
        policy, notes = self._stated_policy(), list[str]()
        if self.options.compress_policy:
            used = frozenset(c.channel for c in self.calls)
            policy, notes = compress_policy(policy, self.options.speed, used)
        request = admin_pb2.UpdatePolicyRequest(
            tenant=self.tenant,
            policy=policy_to_pb(policy),
            update_mask=field_mask_pb2.FieldMask(paths=list(POLICY_FIELDS)),
        )
        if self._rpc("UpdatePolicy", self.policies.UpdatePolicy, request) is None:
            why = self._last_error.get("UpdatePolicy", "")
            hint = ""
            if why.startswith("UNIMPLEMENTED"):
                hint = (
                    "; the target serves no admin services (a router with ROUTER_ADMIN_PORT "
                    "serves them on that port only): name it with --admin-target"
                )
            raise ReplayError(f"UpdatePolicy failed ({why}){hint}")
        return policy, notes

    def _setup_agents(self) -> None:
        """Create every agent and set its starting presence, ``workers`` at a time."""
        failures = [f for f in self._each(self._setup_agent, self.agents) if f is not None]
        if failures:
            raise ReplayError(failures[0])

    def _each(self, fn: Callable[[ReplayAgent], T], agents: Sequence[ReplayAgent]) -> list[T]:
        """``fn`` over ``agents`` on the pool, in order."""
        return list(self._pool.map(fn, agents))

    def _setup_agent(self, agent: ReplayAgent) -> str | None:
        """Create one agent (an existing one in a reused tenant is fine); an error text."""
        msg = pb.Agent(
            agent_id=agent.agent_id,
            name=agent.name,
            team=agent.team,
            skills=dict(agent.skills),
            languages=list(agent.languages),
            region=agent.region,
            timezone=agent.timezone,
            capacity=[
                pb.ChannelCapacity(channel=CHANNEL_TO_PB[channel], max_items=items)
                for channel, items in agent.capacity.items()
            ],
        )
        if agent.max_occupancy is not None:
            msg.max_occupancy = agent.max_occupancy
        start = time.perf_counter()
        try:
            self.admin.CreateAgent(
                admin_pb2.CreateAgentRequest(tenant=self.tenant, agent=msg),
                timeout=self.options.rpc_timeout_s,
            )
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
            exists = code == grpc.StatusCode.ALREADY_EXISTS  # a reused --tenant keeps its team
            self.stats.record(
                "CreateAgent", time.perf_counter() - start, code.name, expected=exists
            )
            if not exists:
                return f"CreateAgent {agent.agent_id} failed: {exc}"
            with self._lock:
                self._existing.add(agent.agent_id)
        else:
            self.stats.record("CreateAgent", time.perf_counter() - start)
        self._presence(agent.agent_id, _initial(agent), "replay")
        return None

    def _plan_absences(self) -> dict[str, tuple[AbsenceSpec, ...]]:
        """Per agent, its absences cut to the reach of the service's clock in this run;
        ``ReplayError`` for what the service would refuse."""
        speed = self.options.speed
        reach_s = self.options.max_seconds + self.options.drain_s + CLOCK_MARGIN_S + WEEK_S
        lo = self._first - CLOCK_MARGIN_S * speed
        hi = self._first + reach_s * speed
        plan: dict[str, tuple[AbsenceSpec, ...]] = {}
        for agent in self.agents:
            absences = service_absences(agent.absences, lo, hi)
            if len(absences) > MAX_ABSENCES:
                raise ReplayError(
                    f"agent {agent.agent_id}: {len(absences)} absences fall within the replay; "
                    f"the service keeps at most {MAX_ABSENCES} per agent"
                )
            for a in absences:
                real_ms = (a.end_s - a.start_s) / speed * 1000
                if real_ms >= MAX_ABSENCE_MS:
                    raise ReplayError(
                        f"agent {agent.agent_id}: the absence from {a.start_s:g} s to "
                        f"{a.end_s:g} s would last {real_ms / 1000 / DAY_S:.0f} days on the "
                        f"service's clock at speed {speed:g}; the service takes at most 366 "
                        "(shorten --max-seconds or --drain-seconds)"
                    )
            plan[agent.agent_id] = absences
        return plan

    def _service_ms(self, scenario_s: float) -> int:
        """A scenario second on the service's clock (the calls' mapping, at ``speed``)."""
        return self._origin_ms + round((scenario_s - self._first) / self.options.speed * 1000)

    def _shifts_in_force(self, agent: ReplayAgent) -> list[tuple[float, float]]:
        """The agent's on-duty windows that end after the replay's first call: the first
        one's end is set with the second round, each later one's at its start."""
        return [(lo, hi) for lo, hi in agent.shifts if hi > self._first]

    def _start_clock(self, lead_s: float) -> None:
        """Fix the replay's time zero ``lead_s`` from now, on the client's monotonic clock
        and on the service's (a Heartbeat's ``server_time``, taken at the middle of its
        round trip)."""
        request = admin_pb2.HeartbeatRequest(tenant=self.tenant, agent_id=self.agents[0].agent_id)
        sent = time.monotonic()
        response = self._rpc("Heartbeat", self.admin.Heartbeat, request)
        got = time.monotonic()
        if response is None:
            why = self._last_error.get("Heartbeat", "")
            raise ReplayError(f"Heartbeat failed ({why}): the service's clock is unknown")
        self._t0 = got + lead_s
        middle = (sent + got) / 2
        self._origin_ms = ms_from_timestamp(response.server_time) + round(
            (self._t0 - middle) * 1000
        )

    def _second_round_requests(self, agent: ReplayAgent) -> int:
        """About how many requests ``_schedule_agent`` sends for ``agent``."""
        existed = agent.agent_id in self._existing
        shift = 1 if existed or self._shifts_in_force(agent) else 0
        return shift + len(self._absences[agent.agent_id]) + (2 if existed else 0)

    def _schedule_agents(self) -> None:
        """The second round: shift ends and absences, ``workers`` at a time."""
        failures = [f for f in self._each(self._schedule_agent, self.agents) if f is not None]
        if failures:
            raise ReplayError(failures[0])

    def _schedule_agent(self, agent: ReplayAgent) -> str | None:
        """Give one agent its shift end in force and its absences; an error text."""
        existed = agent.agent_id in self._existing
        if existed:
            failure = self._cancel_old_absences(agent.agent_id)
            if failure:
                return failure
        shifts = self._shifts_in_force(agent)
        if (shifts or existed) and not self._set_shift_end(
            agent.agent_id, shifts[0][1] if shifts else None
        ):
            why = self._last_error.get("UpdateAgent", "")
            return f"UpdateAgent {agent.agent_id} (shift_end) failed ({why})"
        for i, absence in enumerate(self._absences[agent.agent_id]):
            absence_id = f"{ABSENCE_PREFIX}{self.tag}-{i}"
            request = admin_pb2.ScheduleAbsenceRequest(
                tenant=self.tenant,
                agent_id=agent.agent_id,
                absence=pb.Absence(
                    absence_id=absence_id,
                    kind=ABSENCE_KIND_TO_PB[absence.kind],
                    start_time=timestamp(self._service_ms(absence.start_s)),
                    end_time=timestamp(self._service_ms(absence.end_s)),
                    note="replay",
                ),
            )
            if self._rpc("ScheduleAbsence", self.admin.ScheduleAbsence, request) is None:
                why = self._last_error.get("ScheduleAbsence", "")
                if absence_id not in self._absence_ids(agent.agent_id):  # a lost answer: kept
                    return f"ScheduleAbsence {agent.agent_id} failed ({why})"
        return None

    def _absence_ids(self, agent_id: str) -> set[str]:
        """The ids of the agent's absences on the service (none when it cannot be read)."""
        request = admin_pb2.GetAgentRequest(tenant=self.tenant, agent_id=agent_id)
        found = self._rpc("GetAgent", self.admin.GetAgent, request)
        return set() if found is None else {a.absence_id for a in found.absences}

    def _cancel_old_absences(self, agent_id: str) -> str | None:
        """Cancel the absences earlier replays scheduled for a reused tenant's agent (they
        would pile up to the service's limit); an error text."""
        request = admin_pb2.GetAgentRequest(tenant=self.tenant, agent_id=agent_id)
        found = self._rpc("GetAgent", self.admin.GetAgent, request)
        if found is None:
            return f"GetAgent {agent_id} failed ({self._last_error.get('GetAgent', '')})"
        for absence in found.absences:
            if absence.absence_id.startswith(ABSENCE_PREFIX):
                cancel = admin_pb2.CancelAbsenceRequest(
                    tenant=self.tenant, agent_id=agent_id, absence_id=absence.absence_id
                )
                self._rpc(
                    "CancelAbsence",
                    self.admin.CancelAbsence,
                    cancel,
                    frozenset({grpc.StatusCode.NOT_FOUND}),  # a retry after it went through
                )
        return None

    def _set_shift_end(self, agent_id: str, end_s: float | None) -> bool:
        """Set the agent's ``shift_end`` to scenario second ``end_s`` (``None``: clear it)."""
        msg = pb.Agent(agent_id=agent_id)
        if end_s is not None:
            msg.shift_end.CopyFrom(timestamp(self._service_ms(end_s)))
        request = admin_pb2.UpdateAgentRequest(
            tenant=self.tenant,
            agent=msg,
            update_mask=field_mask_pb2.FieldMask(paths=["shift_end"]),
        )
        return self._rpc("UpdateAgent", self.admin.UpdateAgent, request) is not None

    def _agent_change(self, agent_id: str, shift_end_s: float | None, presence: str) -> None:
        """A scheduled change: a new shift end first (so the agent never comes back with
        the last one), then the presence."""
        if shift_end_s is not None:
            self._set_shift_end(agent_id, shift_end_s)
        if presence:
            self._presence(agent_id, _PRESENCE[presence], "replay schedule")

    def _presence(self, agent_id: str, presence: pb.Presence.ValueType, reason: str) -> None:
        request = admin_pb2.SetPresenceRequest(
            tenant=self.tenant, agent_id=agent_id, presence=presence, reason=reason
        )
        self._rpc("SetPresence", self.admin.SetPresence, request)

    def _heartbeats(self, stop: threading.Event) -> None:
        while not stop.wait(self.options.heartbeat_s):
            for agent in self.agents:
                if stop.is_set():
                    return
                request = admin_pb2.HeartbeatRequest(tenant=self.tenant, agent_id=agent.agent_id)
                self._rpc("Heartbeat", self.admin.Heartbeat, request)

    # -- the event stream ------------------------------------------------------------------

    def _watch(self) -> None:
        """Follow the tenant's events until the replay closes. When the stream breaks (a
        Redis blip, a replica going away) the failure is counted and the stream resumes
        after the last event seen, as the API promises nothing is lost; a cursor the stream
        no longer keeps (OUT_OF_RANGE) resumes from now on."""
        after, pause = "", 0.1
        while not self._closing.is_set():
            request = routing_pb2.WatchRequest(
                tenant=self.tenant, types=list(WATCHED), after_event_id=after
            )
            stream = self.routing.Watch(request)
            with self._lock:
                self._watch_stream = stream
            if self._closing.is_set():  # closed while opening: run() cancelled the last one
                stream.cancel()
                return
            try:
                # The headers come before any event, naming where the stream starts: from
                # then on nothing is missed (a break before the first event resumes there).
                started = dict(stream.initial_metadata()).get(WATCH_CURSOR_HEADER)
                if isinstance(started, str) and started:
                    after = started
                    self._synced.set()
                for event in stream:
                    after, pause = event.event_id, 0.1
                    self._on_event(event, time.monotonic(), time.time())
            except grpc.RpcError as exc:
                code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
                if self._closing.is_set():
                    return
                self.stats.record("Watch", 0.0, code.name)
                if code == grpc.StatusCode.OUT_OF_RANGE:
                    after = ""
            self._closing.wait(pause)
            pause = min(2.0, pause * 2)

    def _sync_watch(self) -> None:
        """Wait until the stream is live (its headers came) before the first call."""
        if not self._synced.wait(10):
            raise ReplayError("Watch did not start within 10 s")

    def _on_event(self, event: pb.Event, now: float, wall: float) -> None:
        self._watch_events += 1
        if event.type == "PRESENCE_CHANGED":
            if event.data.get("presence") == "not_responding":
                self._not_responding += 1
            return
        self._watch_lag_ms.append(max(0.0, wall * 1000 - event.time.ToMilliseconds()))
        with self._lock:
            live = self._by_wire.get(event.call_id)
        if live is None:
            return
        asg_id = event.data.get("assignment_id", "")
        token = int(event.data.get("token", "0") or 0)
        server_ms = event.time.ToMilliseconds()
        if event.type == "QUEUED":
            with self._lock:
                live.queued_ms = live.queued_ms or server_ms
                live.queued_at.append(server_ms)
        elif event.type == "ASSIGNED":
            self._on_assigned(live, asg_id, token, event.agent_id, now, server_ms=server_ms)
        elif event.type == "OFFERED":
            self._on_offered(live, asg_id, token, server_ms)
        elif event.type in REQUEUED:
            self._on_requeued(live, asg_id, now)
        elif event.type == "EXPIRED":
            self._on_expired(live, now, server_ms)

    def _on_expired(self, live: _Live, now: float, server_ms: int) -> None:
        """The service took the call off the queue at its channel's queue time limit: it
        ends here (a Cancel on its way finds it expired; the caller's patience timer finds
        it ended), answered all the same if an agent had it before it went back to the
        queue."""
        with self._lock:
            live.expired_ms = server_ms
        self._finish(live, "expired", now)

    def _on_requeued(self, live: _Live, asg_id: str, now: float) -> None:
        """The call went back to the queue (reject, offer timeout, release, reclaim): it
        waits again, and the caller's patience (from the original arrival) applies again if
        it has not run out (the simulator's hang-up timer fires once, at arrival plus
        patience: a caller whose patience ran out while an agent had the call waits on).
        Its first answer is kept: it counts as answered from then, whatever happens next.
        An assignment the replay does not know yet (the Accept's answer overtaken by the
        event) is remembered, for ``_on_assigned`` to count as handed back already."""
        patience_due = self._patience_due(live)
        with self._lock:
            if live.outcome:
                return
            if live.active is None or live.active[0] != asg_id:
                if asg_id and asg_id not in live.assignments:
                    live.ended_early[asg_id] = now
                return
            if live.answered is not None:
                live.held_before.append((live.agent_id, live.answered, now))
            live.active, live.answered = None, None
            live.requeued += 1
            _spent_while_held(live, patience_due, now)
            if patience_due is None or live.waits_on:
                return
        self._sched.at(patience_due, lambda: self._patience(live))

    # -- call lifecycle --------------------------------------------------------------------

    def _assign(self, live: _Live) -> None:
        if self._closing.is_set():  # due long ago, stuck behind a saturated client: never sent
            self._finish(live, "cut")
            return
        call = live.call
        request = routing_pb2.AssignRequest(
            tenant=self.tenant,
            request_id=f"req-{live.wire_id}",
            call=pb.Call(
                call_id=live.wire_id,
                channel=CHANNEL_TO_PB[call.channel],
                required_skills=[
                    pb.SkillRequirement(skill=s, min_level=level) for s, level in call.skills
                ],
                preferred_skills=list(call.preferred_skills),
                language=call.language,
                region=call.region,
                priority=call.priority,
                team=call.team,
                region_required=call.region_required,
            ),
        )
        with self._lock:
            live.sent = time.monotonic()
        response = self._rpc("Assign", self.routing.Assign, request)
        now = time.monotonic()
        with self._lock:
            live.assign_latency = now - live.sent
        if response is None:
            self._finish(live, "error", now)
            return
        a = response.assignment
        created = a.created_at.ToMilliseconds()
        if response.result == routing_pb2.AssignResponse.RESULT_ASSIGNED:
            self._on_assigned(
                live, a.assignment_id, a.fencing_token, a.agent_id, now, server_ms=created
            )
        elif response.result == routing_pb2.AssignResponse.RESULT_OFFERED:
            self._on_offered(live, a.assignment_id, a.fencing_token, created)
        elif response.result == routing_pb2.AssignResponse.RESULT_QUEUED:
            with self._lock:
                live.queued = True
        if self._closing.is_set():  # answered after the drain limit: end it now
            with self._lock:
                done, active = bool(live.outcome), live.active
            if done:
                return
            if active is not None:
                self._complete(live, active[0], cut=True)
            elif not live.offers:
                self._cancel(live, "replay drain limit", cut=True)
            return
        patience_due = self._patience_due(live)
        if patience_due is not None:
            self._sched.at(max(now, patience_due), lambda: self._patience(live))

    def _patience_due(self, live: _Live) -> float | None:
        """When the caller hangs up if still waiting (``None``: never)."""
        if live.call.patience_s is None:
            return None
        return live.due + live.call.patience_s / self.options.speed

    def _on_offered(self, live: _Live, asg_id: str, token: int, server_ms: int) -> None:
        with self._lock:
            if asg_id in live.offers or live.outcome:
                return
            live.offers.add(asg_id)
            live.placed_ms[asg_id] = server_ms
            if live.ending:  # the caller hung up first (the Cancel is on its way): let it ring
                return
            live.accepting += 1
        self._pool.submit(self._accept, live, asg_id, token)

    def _accept(self, live: _Live, asg_id: str, token: int) -> None:
        request = routing_pb2.AcceptRequest(
            tenant=self.tenant, assignment_id=asg_id, fencing_token=token
        )
        try:
            # FAILED_PRECONDITION: the caller hung up while the offer was on its way, or
            # the agent left since (the dispatcher takes the offer back: RECLAIMED).
            response = self._rpc("Accept", self.routing.Accept, request, _WITHDRAWN)
            if response is not None:
                a = response.assignment
                offered = live.placed_ms.get(asg_id)
                self._on_assigned(
                    live, asg_id, token, a.agent_id, time.monotonic(), server_ms=offered
                )
        finally:
            with self._lock:
                live.accepting -= 1

    def _on_assigned(
        self,
        live: _Live,
        asg_id: str,
        token: int,
        agent_id: str,
        now: float,
        *,
        server_ms: int | None = None,
    ) -> None:
        patience_due = self._patience_due(live)
        with self._lock:
            if server_ms is not None:
                live.placed_ms.setdefault(asg_id, server_ms)
            if asg_id in live.assignments:
                return
            back = live.ended_early.pop(asg_id, None)
            if back is not None:  # already handed back: the agent no longer holds the call
                self._held_until(live, asg_id, (agent_id, min(now, back), back), server_ms)
                _spent_while_held(live, patience_due, back)
                return
            if live.outcome:
                return
            live.assignments.add(asg_id)
            live.active = (asg_id, token)
            live.agent_id = agent_id
            live.answered = now
            if live.first_answered is None:
                live.first_answered, live.answered_ms = now, server_ms
        agent = self._agent.get(agent_id)
        handle_s = live.call.handle_s / (agent.speed if agent else 1.0)
        due = now + handle_s / self.options.speed
        self._sched.at(due, lambda: self._complete(live, asg_id))

    @staticmethod
    def _held_until(
        live: _Live, asg_id: str, held: tuple[str, float, float], server_ms: int | None
    ) -> None:
        """Count an assignment the replay learnt of after it ended (the hand-back's event
        came first): ``held`` is (agent id, answer, hand-back), and the answer may be the
        call's first, even if the agent it went to next was learnt of before it. The agent
        holding the call now, if any, stays."""
        agent_id, answered, _ = held
        live.assignments.add(asg_id)
        live.held_before.append(held)
        live.requeued += 1
        if live.first_answered is None or answered < live.first_answered:
            live.first_answered, live.answered_ms = answered, server_ms
        if live.active is None:
            live.agent_id = agent_id

    def _complete(self, live: _Live, asg_id: str, *, cut: bool = False) -> None:
        with self._lock:
            if live.outcome or live.ending or live.active is None or live.active[0] != asg_id:
                return
            live.ending = True
            token = live.active[1]
        real = time.monotonic() - (live.answered or time.monotonic())
        # The service sees handle times in its own (compressed or real) time.
        handle = real if self.options.compress_policy else real * self.options.speed
        outcome = self._outcome(live, handle)
        request = routing_pb2.CompleteRequest(
            tenant=self.tenant,
            assignment_id=asg_id,
            fencing_token=token,
            outcome=pb.Outcome(
                handle_time=duration(handle), csat=outcome.csat, resolved=bool(outcome.resolved)
            ),
        )
        response = self._rpc("Complete", self.routing.Complete, request)
        if response is None and not self._closing.is_set() and live.complete_failures < 3:
            with self._lock:  # the service may be back in a moment (a Redis blip): again
                live.complete_failures += 1
                live.ending = False
                delay = 2.0 ** (live.complete_failures - 1)
            self._sched.at(time.monotonic() + delay, lambda: self._complete(live, asg_id, cut=cut))
            return
        if response is None:
            with self._lock:
                live.held = (asg_id, token)
        self._finish(live, "error" if response is None else "cut" if cut else "completed")

    def _release_held(self) -> None:
        """Complete what failed Completes left with their agents (the service back by the
        end of the run), so the replay leaves no call held on the service."""
        with self._lock:
            held = [(live, live.held) for live in self._live.values() if live.held is not None]
        for live, (asg_id, token) in held:
            request = routing_pb2.CompleteRequest(
                tenant=self.tenant, assignment_id=asg_id, fencing_token=token
            )
            if self._rpc("Complete", self.routing.Complete, request) is not None:
                with self._lock:
                    live.held = None

    def _quality(self, live: _Live) -> tuple[float, float]:
        """(skill fit, effective quality) of the call with its agent, as the simulator's
        ground truth defines them (``simulations.outcomes``)."""
        agent = self._agent.get(live.agent_id)
        call = Call(
            call_id=live.call.call_id,
            channel=live.call.channel,
            required_skills=tuple(SkillRequirement(s, lvl) for s, lvl in live.call.skills),
            preferred_skills=live.call.preferred_skills,
        )
        fit = skill_fit(call, agent.skills if agent else {})
        return fit, effective_quality(agent.quality if agent else 0.7, fit)

    def _outcome(self, live: _Live, handle_s: float) -> Outcome:
        """The surveyed outcome: the same luck per call as in the offline simulator."""
        u1, u2 = call_uniforms(self.options.seed, live.call.call_id)
        return draw_outcome(self._quality(live)[1], handle_s, u1, u2)

    def _patience(self, live: _Live) -> None:
        """The caller's patience ran out: they hang up (Cancel) if the call still waits, as
        in the simulator, unless an agent had it then (answered, or ``waits_on``) or the
        replay's agent picked up first (an Accept on its way: look again once it is
        answered). Whichever of the two the replay does first, the other is not sent: an
        offer read once the Cancel is decided is not accepted, so the Cancel's answer alone
        says whether the caller hung up on a waiting or ringing call (abandoned) or on one
        an agent held (answered, then cancelled), as GetStats counts it."""
        with self._lock:
            if live.outcome or live.ending or live.answered is not None or live.waits_on:
                return
            accepting = live.accepting > 0
            live.ending = not accepting  # from now on, no Accept
        if accepting:  # the agent is picking up right now: look again in a moment
            self._sched.at(time.monotonic() + 0.01, lambda: self._patience(live))
            return
        self._send_cancel(live, "caller hung up (replay)", cut=False)

    def _cancel(self, live: _Live, reason: str, *, cut: bool = False) -> None:
        with self._lock:
            if live.outcome or live.ending:
                return
            live.ending = True
        self._send_cancel(live, reason, cut=cut)

    def _send_cancel(self, live: _Live, reason: str, *, cut: bool) -> None:
        """Cancel the call (``live.ending`` set) and count it by the service's answer."""
        request = routing_pb2.CancelRequest(tenant=self.tenant, call_id=live.wire_id, reason=reason)
        response = self._rpc("Cancel", self.routing.Cancel, request)
        if response is None:
            self._finish(live, "error")
        elif response.call.status == pb.CALL_STATUS_ABANDONED:
            self._finish(live, "cut" if cut else "abandoned")
        elif response.call.status == pb.CALL_STATUS_EXPIRED:  # the service expired it first
            self._finish(live, "expired")
        else:  # assigned between our last look and the Cancel: the agent was freed by it
            asg = response.call.assignment
            made = asg.created_at.ToMilliseconds() if asg.HasField("created_at") else None
            now = time.monotonic()
            with self._lock:
                live.assignments.add(asg.assignment_id)
                live.agent_id = asg.agent_id or live.agent_id  # the holder now
                if made is not None:
                    live.placed_ms.setdefault(asg.assignment_id, made)
                live.answered = live.answered or now
                if live.first_answered is None:  # answered when the service assigned it,
                    # as when its ASSIGNED event is read before the Cancel's answer
                    live.first_answered, live.answered_ms = live.answered, made
            self._finish(live, "cut" if cut else "cancelled")

    def _finish(self, live: _Live, outcome: str, now: float | None = None) -> None:
        with self._lock:
            if live.outcome:
                return
            live.outcome = outcome
            live.ended = now or time.monotonic()
            live.active = None
            self._pending -= 1
            if self._progress is not None:
                self._progress.update()
            if self._pending == 0:
                self._all_done.set()

    # -- the run ---------------------------------------------------------------------------

    def run(self, *, progress: bool = False) -> ReplayRun:
        """Set up, replay, drain, clean up; return what was observed."""
        if not self.agents:
            raise ReplayError("the scenario has no agents")
        self._absences = self._plan_absences()
        started = time.monotonic()
        self._pool = ThreadPoolExecutor(self.options.workers, thread_name_prefix="replay")
        self._sched = _Scheduler(self._pool, self.stats)
        sent_policy, notes = self._setup_policy()
        watcher = threading.Thread(target=self._watch, daemon=True)
        watcher.start()
        stop_beats = threading.Event()
        beats = threading.Thread(target=self._heartbeats, args=(stop_beats,), daemon=True)
        try:
            created = time.monotonic()
            self._setup_agents()
            per_request = (time.monotonic() - created) / (2 * len(self.agents))
            self._sync_watch()
            second = sum(self._second_round_requests(a) for a in self.agents)
            self._start_clock(0.05 + 2 * per_request * second)
            self._schedule_agents()
            beats.start()
            stats = self._replay(progress)
        finally:
            self._closing.set()
            stop_beats.set()
            self._sched.stop()
            with self._lock:
                stream = self._watch_stream
            if stream is not None:
                stream.cancel()
            watcher.join(timeout=5)
            self._release_held()
            self._log_off()
            self._pool.shutdown(wait=True, cancel_futures=True)
            if beats.is_alive():
                beats.join(timeout=self.options.rpc_timeout_s * 2)
        calls = tuple(self._observed())
        ends = [c.ended_s for c in calls if c.ended_s is not None]
        return ReplayRun(
            tenant=self.tenant,
            options=self.options,
            policy=self._stated_policy(),
            agents=tuple(self.agents),
            calls=calls,
            start_s=self._first,
            end_s=max(ends, default=self._first),
            rpc=self.stats.to_json(),
            policy_notes=tuple(notes),
            wall_s=time.monotonic() - started,
            origin_ms=self._origin_ms,
            sent_policy=sent_policy,
            watch={
                "events": self._watch_events,
                "delivery_lag_ms": latency_summary(self._watch_lag_ms),
                "agents_not_responding": self._not_responding,
            },
            service_stats=stats,
        )

    def _replay(self, progress: bool) -> dict[str, Any]:
        speed = self.options.speed
        t0 = self._t0  # fixed by _start_clock
        first = self._first
        last_due = t0 + self.options.max_seconds
        to_send: list[_Live] = []
        for call in self.calls:
            due = t0 + (call.arrival_s - first) / speed
            if due > last_due:
                break
            wire = f"{self.tag}-{call.call_id}"
            live = _Live(call, wire, due)
            to_send.append(live)
        with self._lock:
            for live in to_send:
                self._live[live.call.call_id] = live
                self._by_wire[live.wire_id] = live
            self._pending = len(to_send)
            if not to_send:
                self._all_done.set()
        for agent in self.agents:
            changes: dict[float, tuple[float | None, str]] = {}
            for at_s, presence in agent.presence[1:]:
                changes[round(at_s, 3)] = (None, presence)
            for lo, hi in self._shifts_in_force(agent)[1:]:
                changes[round(lo, 3)] = (hi, changes.get(round(lo, 3), (None, ""))[1])
            for at_s, (shift_end_s, presence) in sorted(changes.items()):
                due = t0 + (at_s - first) / speed
                if due <= last_due + self.options.drain_s:
                    change = functools.partial(
                        self._agent_change, agent.agent_id, shift_end_s, presence
                    )
                    self._sched.at(due, change)
        self._sched.start()
        with tqdm(total=len(to_send), desc="replay", unit="call", disable=not progress) as bar:
            self._progress = bar
            for live in to_send:
                self._sched.at(live.due, lambda live=live: self._assign(live))  # type: ignore[misc]
            horizon = (to_send[-1].due if to_send else t0) + self.options.drain_s
            self._all_done.wait(max(0.0, horizon - time.monotonic()))
            self._closing.set()
            self._cut_remaining()
            self._all_done.wait(self.options.rpc_timeout_s * MAX_ATTEMPTS)
            self._progress = None
        return self._service_stats()

    def _log_off(self) -> None:
        """Set every agent OFFLINE (bounded: what is not done in 10 s is left)."""
        futures = [
            self._pool.submit(self._presence, a.agent_id, pb.PRESENCE_OFFLINE, "replay finished")
            for a in self.agents
        ]
        concurrent.futures.wait(futures, timeout=10)
        for future in futures:
            future.cancel()

    def _cut_remaining(self) -> None:
        """Past the drain limit: hang up on waiting calls, complete held ones."""
        with self._lock:
            open_calls = [live for live in self._live.values() if not live.outcome]
        for live in open_calls:
            with self._lock:
                active = live.active
            if active is not None:
                self._pool.submit(self._complete, live, active[0], cut=True)
            elif live.sent is not None:
                self._pool.submit(self._cancel, live, "replay drain limit", cut=True)
            else:
                self._finish(live, "cut")

    def _service_stats(self) -> dict[str, Any]:
        """The service's own view at the end (GetStats): occupancy per agent, SL."""
        response = self._rpc(
            "GetStats", self.routing.GetStats, routing_pb2.GetStatsRequest(tenant=self.tenant)
        )
        if response is None:
            return {}
        return {
            "queued": response.queued,
            "occupancy": {a.agent_id: round(a.occupancy, 4) for a in response.agents},
            "channels": {
                pb.Channel.Name(c.channel).removeprefix("CHANNEL_").lower(): {
                    "answered_15m": c.answered_15m,
                    "abandoned_15m": c.abandoned_15m,
                    "expired_15m": c.expired_15m,
                    "service_level_15m": (
                        round(c.service_level_15m, 4) if c.HasField("service_level_15m") else None
                    ),
                }
                for c in response.channels
                if c.answered_15m or c.abandoned_15m or c.expired_15m
            },
        }

    def _scenario_s(self, t: float | None) -> float | None:
        """A monotonic instant as scenario seconds."""
        if t is None:
            return None
        return self._first + (t - self._t0) * self.options.speed

    def _observed(self) -> Iterator[ObservedCall]:
        for call in self.calls:
            live = self._live.get(call.call_id)
            if live is None or live.sent is None:
                yield ObservedCall(call, "", "not_sent", False, None, None, None, None, "", 0, 0)
                continue
            first = live.first_answered
            answered = first is not None
            fit, quality = self._quality(live) if answered else (None, None)
            speed = self.options.speed
            arrival_ms, from_arrival = _arrival_ms(live)
            wait = self._wait(live, arrival_ms)
            sent_s = self._scenario_s(live.sent)
            # the first answer in scenario seconds: later instants count from it
            base = sent_s + wait if sent_s is not None and wait is not None else None
            handle = last = None
            held = live.answered  # by the agent who had the call at its end, if any
            if held is not None and first is not None and live.outcome not in _UNANSWERED:
                if live.ended is not None:
                    handle = (live.ended - held) * speed
                if base is not None:
                    last = base + (held - first) * speed
            queued_until, waited_again = self._queue_spells(live, arrival_ms, from_arrival)
            yield ObservedCall(
                call=call,
                wire_id=live.wire_id,
                outcome=live.outcome,
                queued=live.queued,
                sent_s=sent_s,
                wait_s=wait,
                handle_s=handle,
                ended_s=self._scenario_s(live.ended),
                agent_id=live.agent_id,
                assignments=len(live.assignments),
                requeued=live.requeued,
                skill_match=fit,
                effective_quality=quality,
                answered=answered,
                last_answered_s=last,
                handed_back=self._hand_backs(live, base),
                queued_until_s=queued_until,
                waited_again=waited_again,
            )

    def _wait(self, live: _Live, arrival_ms: int | None) -> float | None:
        """``ObservedCall.wait_s``: from the call's arrival on the service (``arrival_ms``)
        to its first answer, on the service's clock, scaled, plus the Assign's round trip."""
        speed, answered_ms = self.options.speed, live.answered_ms
        if live.first_answered is not None:
            if arrival_ms is not None and answered_ms is not None:
                return max(0, answered_ms - arrival_ms) / 1000 * speed + live.assign_latency
            # a missed event: the client's view (answered at once: the Assign's round trip)
            missed = (live.first_answered - (live.sent or 0.0)) * speed
            return live.assign_latency if not live.queued else missed
        if live.outcome == "abandoned" and live.call.patience_s is not None:
            # the caller hung up when their patience ran out, counted from the arrival
            # (the Cancel's round trip and the timer's lateness are not the caller's)
            return live.call.patience_s
        if live.outcome == "expired" and arrival_ms is not None and live.expired_ms:
            # in the queue until the service's EXPIRED event, as an answered call's wait
            return max(0, live.expired_ms - arrival_ms) / 1000 * speed + live.assign_latency
        if live.ended is not None and live.sent is not None:
            return (live.ended - live.sent) * speed
        return None

    def _queue_spells(
        self, live: _Live, arrival_ms: int | None, from_arrival: bool
    ) -> tuple[float | None, tuple[tuple[float, float], ...]]:
        """``ObservedCall.queued_until_s`` and ``waited_again``: the call waited from each
        QUEUED event (the first at its arrival, ``sent_s``, if ``from_arrival``) until its
        next offer or assignment, else until it ended. Service times count from
        ``arrival_ms``, the call's arrival there."""
        sent_s = self._scenario_s(live.sent)
        if sent_s is None or arrival_ms is None:
            return None, ()
        zero_s, speed = sent_s + live.assign_latency, self.options.speed

        def at(ms: int) -> float:
            return zero_s + (ms - arrival_ms) / 1000 * speed

        end: float | None
        if live.outcome == "abandoned" and live.call.patience_s is not None:
            end = sent_s + live.call.patience_s  # as the abandoned call's wait counts it
        elif live.outcome == "expired" and live.expired_ms is not None:
            end = at(live.expired_ms)
        else:
            end = self._scenario_s(live.ended)
        placed = sorted(live.placed_ms.values())
        first: float | None = None
        again: list[tuple[float, float]] = []
        for queued in sorted({*live.queued_at, *_given(live.queued_ms)}):
            left = next((ms for ms in placed if ms >= queued), None)
            until = at(left) if left is not None else end
            if from_arrival and queued == arrival_ms:
                first = until
            elif until is not None and until > at(queued):
                again.append((at(queued), until))
        return first, tuple(again)

    def _hand_backs(self, live: _Live, base: float | None) -> tuple[tuple[str, float, float], ...]:
        """``ObservedCall.handed_back`` of the call, its first answer at scenario second
        ``base``: each later instant on the client's clock counts from that answer, scaled."""
        first = live.first_answered
        if base is None or first is None or not live.held_before:
            return ()
        speed = self.options.speed

        def at(t: float) -> float:
            return base + (t - first) * speed

        held = sorted(live.held_before, key=lambda h: h[1:])
        return tuple((agent_id, at(lo), at(hi)) for agent_id, lo, hi in held)


def _spent_while_held(live: _Live, patience_due: float | None, back: float) -> None:
    """The call went back to the queue at ``back``: a caller whose patience ran out before
    (while an agent had the call) waits on, as in the simulator; the Accept's answer and
    the hand-back's event may come in either order."""
    if patience_due is not None and patience_due <= back:
        live.waits_on = True


def _given(value: int | None) -> tuple[int, ...]:
    return () if value is None else (value,)


def _arrival_ms(live: _Live) -> tuple[int | None, bool]:
    """When the call arrived on the service's clock, and whether it waited in the queue
    from then: its first QUEUED event if that came before any offer or assignment (Assign
    queued it), else its first offer or assignment (the Assign's: an offer that comes
    back, or a hand-back, puts it in the queue only later); ``None`` when unknown."""
    queued = sorted({*live.queued_at, *_given(live.queued_ms)})
    placed = min(live.placed_ms.values(), default=None)
    if live.queued or (queued and (placed is None or queued[0] <= placed)):
        return (queued[0] if queued else None), True
    return placed, False


CHANNEL_TO_PB = {channel: value for value, channel in CHANNELS.items()}
ABSENCE_KIND_TO_PB = {kind: value for value, kind in ABSENCE_KINDS.items()}
_PRESENCE = {
    "available": pb.PRESENCE_AVAILABLE,
    "break": pb.PRESENCE_BREAK,
    "away": pb.PRESENCE_AWAY,
    "offline": pb.PRESENCE_OFFLINE,
}


def _initial(agent: ReplayAgent) -> pb.Presence.ValueType:
    """The agent's presence when the replay starts."""
    return _PRESENCE[agent.presence[0][1]] if agent.presence else pb.PRESENCE_AVAILABLE
