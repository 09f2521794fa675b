"""The validated scenario: frozen dataclasses the simulator and the trace generator read.

``simulations.scenario.load_scenario`` builds these from a YAML or JSON file (the format is
documented there and in ``simulations/README.md``). Times are seconds of simulated clock
since the simulation start (``SIM_EPOCH_MS``, a Monday 00:00 UTC), durations are seconds.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from router.domain import (
    AbsenceKind,
    Channel,
    Policy,
    SkillRequirement,
    Strategy,
    frozen_map,
)
from simulations.uniforms import Floats, math_map

SIM_EPOCH_MS = 1_767_571_200_000
"""2026-01-05T00:00:00Z (a Monday): simulated time 0. Fixed, so time-zone affinity and every
"now" the engine sees are the same on every run."""


def epoch_ms(seconds: float) -> int:
    """Simulated seconds as epoch milliseconds of the simulated clock."""
    return SIM_EPOCH_MS + round(seconds * 1000)


def epochs_ms(seconds: Iterable[float]) -> list[int]:
    """``epoch_ms`` of each value, on one array."""
    return rounded_ints(np.fromiter(seconds, float) * 1000.0, SIM_EPOCH_MS)


_INT_RANGE = 2.0**62
"""``rounded_ints`` rounds on arrays below this (``int64`` holds it and an offset)."""


def rounded_ints(values: Floats, offset: int = 0) -> list[int]:
    """``offset + round(v)`` of each value (``np.rint`` rounds halves to even, as ``round``
    does); ``round`` itself answers (or refuses) if any is not finite or out of the array's
    integer range."""
    if not (np.abs(values) < _INT_RANGE).all():  # NaN too
        return [offset + round(v) for v in values.tolist()]
    whole: list[int] = (np.rint(values).astype(np.int64) + offset).tolist()
    return whole


_FAST_BELOW = 2.0**32
"""``rounded_ms`` rounds the product itself below this (its error is under 2**-21 there)."""


def rounded_ms(seconds: Floats) -> Floats:
    """``round(x, 3)`` of each value, bit for bit, without its decimal conversion (drawn
    times are rounded to the millisecond clock, three per call). ``round(x, 3)`` is the
    double nearest to ``N / 1000``, N the exact ``x * 1000`` rounded half to even; ``r /
    1000`` (a correctly rounded division) is that double when ``r``, the floating-point
    product rounded to an integer, is N: whenever the product is further from a half than
    its own rounding error. Else, and for negative, huge or non-finite values, ``round``
    answers, value by value."""
    with np.errstate(over="ignore", invalid="ignore"):  # infinities: not quick, round's
        scaled = seconds * 1000.0
        whole = np.rint(scaled)  # half to even, as round
        error = scaled - whole
    # Not -0.0 (round keeps it) nor 0.0: both go to round.
    quick = (scaled > 0.0) & (scaled < _FAST_BELOW) & (error > -0.499999) & (error < 0.499999)
    out = whole / 1000.0
    for i in np.flatnonzero(~quick).tolist():
        out[i] = round(float(seconds[i]), 3)
    return out


DAY_S = 86_400


def queue_limits_ms(policy: Policy) -> dict[Channel, int]:
    """Per channel with a queue time limit (``Policy.max_wait_s`` > 0), that limit in
    milliseconds: a call still waiting that long (``router.ordering.limit_from_ms``: after
    it arrived, or after an agent who held it gave it back) leaves the queue as expired.
    Empty when the policy sets none."""
    return {channel: limit * 1000 for channel, limit in policy.max_wait_s.items() if limit > 0}


@dataclass(frozen=True, slots=True)
class Distribution:
    """A positive random duration in seconds.

    ``exponential`` (mean ``mean_s``), ``lognormal`` (mean ``mean_s``, standard deviation
    ``sd_s``) or ``fixed`` (always ``mean_s``). Draws use only ``rng.random()`` (inverse CDF and
    Box-Muller), whose sequence Python guarantees for a given seed, so traces are stable
    across Python versions.
    """

    kind: str
    mean_s: float
    sd_s: float = 0.0

    @property
    def uniforms(self) -> int:
        """How many ``rng.random()`` draws one sample takes."""
        return {"fixed": 0, "exponential": 1}.get(self.kind, 2)

    def draws(self, uniforms: Floats) -> Floats:
        """One sample per row of ``uniforms`` (``self.uniforms`` columns): what ``draw`` gives
        when ``rng.random()`` returns that row, bit for bit."""
        if self.kind == "fixed":
            return np.full(len(uniforms), self.mean_s)
        if self.kind == "exponential":
            return -self.mean_s * math_map(math.log, 1.0 - uniforms[:, 0])
        sigma2 = math.log1p((self.sd_s / self.mean_s) ** 2)
        mu = math.log(self.mean_s) - sigma2 / 2
        normal = np.sqrt(-2.0 * math_map(math.log, 1.0 - uniforms[:, 0])) * math_map(
            math.cos, 2.0 * math.pi * uniforms[:, 1]
        )  # standard_normal, correctly rounded square roots alike
        return math_map(math.exp, mu + math.sqrt(sigma2) * normal)

    def draw(self, rng: random.Random) -> float:
        """One sample, in seconds."""
        if self.kind == "fixed":
            return self.mean_s
        if self.kind == "exponential":
            return -self.mean_s * math.log(1.0 - rng.random())
        # lognormal with the given mean and standard deviation
        sigma2 = math.log1p((self.sd_s / self.mean_s) ** 2)
        mu = math.log(self.mean_s) - sigma2 / 2
        return math.exp(mu + math.sqrt(sigma2) * standard_normal(rng))


def standard_normal(rng: random.Random) -> float:
    """A standard normal sample by Box-Muller from two ``rng.random()`` draws."""
    u1 = 1.0 - rng.random()  # in (0, 1]: log is finite
    u2 = rng.random()
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


@dataclass(frozen=True, slots=True)
class CallType:
    """One kind of call in a stream's mix, drawn with probability proportional to ``weight``."""

    weight: float
    skills: tuple[SkillRequirement, ...] = ()
    preferred_skills: tuple[str, ...] = ()
    language: str = ""
    region: str = ""
    priority: int = 0


@dataclass(frozen=True, slots=True)
class Stream:
    """A Poisson arrival stream with an intraday rate profile.

    The rate at time ``t`` is ``rate_per_hour * multiplier(t mod 1 day) * arrival_scale``;
    ``profile`` lists ``(seconds after midnight, multiplier)`` breakpoints, sorted, the first at
    0: the multiplier holds from each breakpoint to the next (piecewise constant, daily).
    """

    name: str
    channel: Channel
    rate_per_hour: float
    profile: tuple[tuple[float, float], ...]
    mix: tuple[CallType, ...]
    handle: Distribution
    patience: Distribution | None = None
    """``None``: callers never hang up."""
    team: str = ""
    region_required: bool = False

    def multiplier(self, time_of_day_s: float) -> float:
        """The profile multiplier at ``time_of_day_s`` seconds after midnight."""
        value = self.profile[0][1]
        for start, mult in self.profile:
            if start > time_of_day_s:
                break
            value = mult
        return value


@dataclass(frozen=True, slots=True)
class AbsenceSpec:
    """A scheduled absence ``[start_s, end_s)`` of simulated time."""

    start_s: float
    end_s: float
    kind: AbsenceKind = AbsenceKind.OTHER


@dataclass(frozen=True, slots=True)
class AgentSpec:
    """One simulated agent: what the router knows (profile) and the truth it does not."""

    agent_id: str
    team: str = ""
    skills: Mapping[str, int] = dataclasses.field(default_factory=frozen_map)
    languages: frozenset[str] = frozenset()
    region: str = ""
    timezone: str = ""
    capacity: Mapping[Channel, int] = dataclasses.field(default_factory=frozen_map)
    """Items at once per channel; every channel is listed (0: not served)."""
    max_occupancy: float | None = None
    shift: tuple[float, float] | None = None
    """Daily ``(start, end)`` in seconds after midnight (``end`` may be past 86400 for a night
    shift); ``None``: on duty for the whole simulation."""
    breaks: tuple[tuple[float, float], ...] = ()
    """Daily ``(start, duration)`` in seconds; only breaks inside a shift are taken."""
    absences: tuple[AbsenceSpec, ...] = ()
    quality: float = 0.7
    """True quality in [0, 1]: the probability a call is resolved (see ``simulations.outcomes``)."""
    speed: float = 1.0
    """Handle-time factor: a call takes ``handle_s / speed`` (1.25 is 25 % faster)."""
    top_performer: bool = False


@dataclass(frozen=True, slots=True)
class Scenario:
    """A validated scenario. Build it with ``simulations.scenario.load_scenario``."""

    name: str
    policy: Policy
    agents: tuple[AgentSpec, ...]
    streams: tuple[Stream, ...] = ()
    traces: tuple[Path, ...] = ()
    """Recorded trace files (CSV or JSONL) whose calls are replayed alongside the streams."""
    duration_s: float = DAY_S
    """Calls arrive in ``[0, duration_s)``."""
    warmup_s: float = 0.0
    """KPIs count calls arriving at or after ``warmup_s`` only."""
    drain_s: float = 7200.0
    """After ``duration_s`` the simulation runs until no call waits and no work is in progress,
    or for at most ``drain_s`` more seconds."""
    seed: int = 1
    """Default seed (``simulate`` takes the seed as an argument; tools use this one when none
    is given)."""
    timeline_bucket_s: int = 900
    arrival_scale: float = 1.0
    description: str = ""
    variant: str = ""
    """The variant applied at load (``""``: the base scenario)."""
    variants: tuple[str, ...] = ()
    """Variants the file defines."""
    source: Path | None = None

    def with_policy(self, policy: Policy | Strategy | str) -> Scenario:
        """This scenario under another policy, or under its own policy with another strategy."""
        if isinstance(policy, Policy):
            return dataclasses.replace(self, policy=policy)
        return dataclasses.replace(
            self, policy=dataclasses.replace(self.policy, strategy=Strategy(policy))
        )

    @property
    def horizon_s(self) -> float:
        """The latest simulated time: ``duration_s + drain_s``."""
        return self.duration_s + self.drain_s

    def agent(self, agent_id: str) -> AgentSpec:
        """The agent with ``agent_id`` (``KeyError`` if none)."""
        for spec in self.agents:
            if spec.agent_id == agent_id:
                return spec
        raise KeyError(agent_id)
