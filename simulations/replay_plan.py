"""What a live replay sends and how hard: the team, the calls, the options, the policy.

Pure data and checks (no gRPC): the agents to create (``ReplayAgent``, from a scenario with
their shifts, breaks and absences as presence changes, and the shift ends and absences the
simulator puts in their profiles), the bounds (``ReplayOptions``), the loopback guard
(``check_target``), the time compression of the tenant's policy (``compress_policy``) and
the absences as the service is given them (``service_absences``). The calls are a trace's
``TraceCall``s.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from router import convert
from router.domain import Channel, Policy, SlaTarget, Strategy, WideningStep, frozen_map
from router.errors import InvalidArgumentError
from router.policies import MAX_WAIT_S, WEEK_S
from simulations.model import DAY_S, AbsenceSpec, AgentSpec, Scenario
from simulations.workforce import shift_windows


class ReplayError(Exception):
    """The replay cannot start (bad target or options, service unreachable)."""


class OptionError(ReplayError):
    """A ``ReplayOptions`` bound broken: ``field: problem``."""

    def __init__(self, field: str, problem: str) -> None:
        """The field (``speed``, ``max_calls``, ...) and what is wrong with its value."""
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


# --- inputs ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReplayAgent:
    """An agent to create on the service."""

    agent_id: str
    skills: Mapping[str, int]
    name: str = ""
    team: str = ""
    languages: tuple[str, ...] = ()
    region: str = ""
    timezone: str = ""
    capacity: Mapping[Channel, int] = field(default_factory=frozen_map)
    """Items at once per channel; missing channels use the policy default, 0 refuses."""
    max_occupancy: float | None = None
    speed: float = 1.0
    """Handle-time factor: the agent takes ``handle_s / speed`` on a call."""
    quality: float = 0.7
    """Probability a call is resolved; drives the simulated CSAT too."""
    top_performer: bool = False
    presence: tuple[tuple[float, str], ...] = ()
    """Presence changes ``(scenario second, available|break|away|offline)`` in time order,
    from shifts, breaks and absences; empty: available throughout."""
    shifts: tuple[tuple[float, float], ...] = ()
    """On-duty windows ``(start, end)`` in scenario seconds that end after the replay starts,
    in time order, as the simulator has them (``simulations.workforce.shift_windows``:
    touching ones merged, the last cut at the scenario's horizon). While a window lasts, its
    end is the agent's ``shift_end`` (the engine gives no work expected to outlast it);
    empty: no shift, no shift end."""
    absences: tuple[AbsenceSpec, ...] = ()
    """The scheduled absences not over when the replay starts (the simulator keeps every
    absence in the profile, so work expected to run into one is refused, as inside one)."""


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    """How hard and how long to push the service."""

    target: str
    tenant: str = ""
    """Empty: a fresh ``replay-<tag>`` tenant, so runs never see each other's state; else
    a name the service takes (``router.convert.tenant``: 1-64 letters, digits or ._-)."""
    speed: float = 60.0
    """Scenario seconds per real second."""
    max_calls: int = 2000
    max_seconds: float = 120.0
    """Real seconds during which arrivals are sent."""
    drain_s: float = 30.0
    """Real seconds after the last arrival for calls in progress to finish."""
    workers: int = 16
    rpc_timeout_s: float = 5.0
    heartbeat_s: float = 20.0
    seed: int = 1
    """Seeds the simulated outcomes (CSAT, resolution)."""
    strategy: Strategy | None = None
    """Overrides the policy's strategy."""
    compress_policy: bool = True
    allow_remote: bool = False

    def __post_init__(self) -> None:
        """Refuse bounds that make no sense and a tenant the service would refuse
        (``OptionError`` naming the field); NaN and infinite durations included."""
        if self.tenant:
            try:
                convert.tenant(self.tenant)
            except InvalidArgumentError as exc:
                raise OptionError("tenant", f"{self.tenant!r} {exc.problem}") from None
        checks = (
            ("speed", 0 < self.speed <= 100_000, f"{self.speed} is not in (0, 100000]"),
            ("max_calls", self.max_calls >= 1, f"{self.max_calls} must be >= 1"),
            (
                "max_seconds",
                0 < self.max_seconds < math.inf,
                f"{self.max_seconds} must be a finite number > 0",
            ),
            (
                "drain_s",
                0 <= self.drain_s < math.inf,
                f"{self.drain_s} must be a finite number >= 0",
            ),
            ("workers", 1 <= self.workers <= 256, f"{self.workers} is not in 1..256"),
            (
                "rpc_timeout_s",
                0 < self.rpc_timeout_s < math.inf,
                f"{self.rpc_timeout_s} must be a finite number > 0",
            ),
        )
        for name, ok, problem in checks:
            if not ok:
                raise OptionError(name, problem)


def check_target(target: str, *, allow_remote: bool, option: str = "target") -> None:
    """Refuse anything but a loopback ``host:port`` (port 1..65535) unless ``allow_remote``
    (a load test pointed at production by a typo is the accident this prevents); messages
    start with ``option``."""
    host, sep, port = target.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or not host:
        raise ReplayError(f"{option}: {target!r} is not HOST:PORT")
    if not 1 <= int(port) <= 65535:
        raise ReplayError(f"{option}: port {port} of {target!r} is not in 1..65535")
    host = host.removeprefix("[").removesuffix("]")
    if allow_remote or host.lower() in {"localhost", "ip6-localhost"}:
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ReplayError(
            f"{option}: {host} is not a loopback address; pass --allow-remote to load-test it"
        )


def compress_policy(
    policy: Policy, speed: float, channels: frozenset[Channel] | None = None
) -> tuple[Policy, list[str]]:
    """``policy`` with its durations divided by ``speed`` (clamped to what the API accepts),
    and a note for every value that had to be clamped (per-channel values only for
    ``channels``, the ones the trace uses). The service keeps whole seconds, where 0 turns
    a duration off (no wrap-up, no aging, no queue time limit): a positive value that would
    round to 0 s is rounded up to 1 s instead, always noted (``30s / 60 = 0.5s, rounded up
    to 1s``); 0 stays 0. Heartbeat and offer timeouts stay in real time: they are about the
    (real) client, not the simulated callers."""
    notes: list[str] = []

    def scale(
        name: str,
        value: float,
        low: int,
        high: int,
        *,
        keep_zero: bool = False,
        channel: Channel | None = None,
    ) -> int:
        if keep_zero and value == 0:
            return 0
        exact = value / speed
        out = min(high, max(low, round(exact)))
        noted = channel is None or channels is None or channel in channels
        if out == 0 and value > 0:  # 0 s would turn it off
            out = 1
            if noted:
                notes.append(
                    f"{name}: {value:g}s / {speed:g} = {exact:.3g}s, rounded up to 1s "
                    "(the service keeps whole seconds; 0s would turn it off)"
                )
        elif noted and abs(out - exact) > max(0.5, 0.25 * exact):
            notes.append(f"{name}: {value:g}s / {speed:g} = {exact:.3g}s, clamped to {out}s")
        return out

    widening: list[WideningStep] = []
    for i, step in enumerate(policy.widening):
        after = scale(f"widening[{i}].after", step.after_s, 1, WEEK_S)
        after = max(after, widening[-1].after_s + 1) if widening else after
        widening.append(dataclasses.replace(step, after_s=after))
    compressed = dataclasses.replace(
        policy,
        occupancy_window_s=scale("occupancy_window", policy.occupancy_window_s, 60, 86400),
        idle_horizon_s=scale("idle_horizon", policy.idle_horizon_s, 1, 86400),
        aging_s_per_priority=scale(
            "aging_per_priority", policy.aging_s_per_priority, 0, 3600, keep_zero=True
        ),
        callback_threshold_s=scale(
            "callback_threshold", policy.callback_threshold_s, 1, 86400, keep_zero=True
        ),
        wrap_up_s=frozen_map(
            {c: scale(f"{c}.wrap_up", v, 0, 3600, channel=c) for c, v in policy.wrap_up_s.items()}
        ),
        max_wait_s=frozen_map(
            {
                c: scale(f"{c}.max_wait", v, 1, MAX_WAIT_S, keep_zero=True, channel=c)
                for c, v in policy.max_wait_s.items()
            }
        ),
        expected_handle_s=frozen_map(
            {
                c: scale(f"{c}.expected_handle_time", v, 1, WEEK_S, channel=c)
                for c, v in policy.expected_handle_s.items()
            }
        ),
        sla=frozen_map(
            {
                c: SlaTarget(scale(f"{c}.sla_target", t.target_s, 1, WEEK_S, channel=c), t.goal)
                for c, t in policy.sla.items()
            }
        ),
        widening=tuple(widening),
    )
    for channel, offer_s in sorted(policy.offer_timeout_s.items()):
        if offer_s > 0 and (channels is None or channel in channels):
            notes.append(
                f"{channel}.offer_timeout: {offer_s}s stays real time, so work is kept "
                f"{offer_s}s ({offer_s * speed:g}s of the scenario) clear of a shift's end or "
                "an absence for an Accept, which the offline simulator (offers accepted at "
                "once) does not do"
            )
    return compressed, notes


# --- from a scenario -------------------------------------------------------------------------


def presence_schedule(
    agent: AgentSpec, start_s: float, end_s: float
) -> tuple[tuple[float, str], ...]:
    """When ``agent`` is available, on a break, away (absence) or off shift during
    ``[start_s, end_s]``: the first entry is the state at ``start_s``, then one entry per
    change. Daily shifts and breaks repeat; absences are absolute."""
    if agent.shift is None and not agent.breaks and not agent.absences:
        return ()
    first_day = int(start_s // DAY_S) - 1
    last_day = int(end_s // DAY_S) + 1
    shifts: list[tuple[float, float]] = []
    breaks: list[tuple[float, float]] = []
    for day in range(first_day, last_day + 1):
        base = day * DAY_S
        if agent.shift is not None:
            shifts.append((base + agent.shift[0], base + agent.shift[1]))
        breaks.extend((base + b, base + b + length) for b, length in agent.breaks)
    absences = [(a.start_s, a.end_s) for a in agent.absences]
    points = {start_s}
    for lo, hi in (*shifts, *breaks, *absences):
        points.update(p for p in (lo, hi) if start_s < p <= end_s)

    def inside(t: float, spans: list[tuple[float, float]]) -> bool:
        return any(lo <= t < hi for lo, hi in spans)

    def state(t: float) -> str:
        if agent.shift is not None and not inside(t, shifts):
            return "offline"
        if inside(t, absences):
            return "away"
        if inside(t, breaks) and (agent.shift is None or inside(t, shifts)):
            return "break"
        return "available"

    schedule: list[tuple[float, str]] = []
    for t in sorted(points):
        now = state(t)
        if not schedule or schedule[-1][1] != now:
            schedule.append((t, now))
    return tuple(schedule)


def agents_from_scenario(
    scenario: Scenario, start_s: float = 0.0, end_s: float | None = None
) -> list[ReplayAgent]:
    """The scenario's team as the replay creates it, with presence changes over the
    replayed window ``[start_s, end_s]`` (default: the whole scenario)."""
    end = scenario.horizon_s if end_s is None else end_s
    return [
        ReplayAgent(
            agent_id=spec.agent_id,
            skills=dict(spec.skills),
            name=spec.agent_id,
            team=spec.team,
            languages=tuple(sorted(spec.languages)),
            region=spec.region,
            timezone=spec.timezone,
            capacity=spec.capacity,
            max_occupancy=spec.max_occupancy,
            speed=spec.speed,
            quality=spec.quality,
            top_performer=spec.top_performer,
            presence=presence_schedule(spec, start_s, end),
            shifts=tuple(
                (lo, hi)
                for lo, hi in shift_windows(spec.shift, scenario.horizon_s)
                if spec.shift is not None and hi > start_s and lo <= end
            ),
            absences=tuple(a for a in spec.absences if a.end_s > start_s),
        )
        for spec in scenario.agents
    ]


def service_absences(
    absences: tuple[AbsenceSpec, ...], lo_s: float, hi_s: float
) -> tuple[AbsenceSpec, ...]:
    """``absences`` as the replay schedules them on the service: those overlapping
    ``[lo_s, hi_s)``, cut to it. A replay passes the scenario times of its service clock's
    reach (from a little before its first call to a week, the longest expected handle time
    the service takes, past its drain limit), so the cut changes no decision: an absence
    covering the run covers it either way, and one starting after it could stop no work
    routed in it. It keeps a long absence within what the API takes when ``speed`` is below 1
    (a year-long sick leave at x0.5 would last two years on the service's clock)."""
    return tuple(
        dataclasses.replace(a, start_s=max(a.start_s, lo_s), end_s=min(a.end_s, hi_s))
        for a in absences
        if a.end_s > lo_s and a.start_s < hi_s
    )
