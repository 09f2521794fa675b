"""Scenarios: who works when, what arrives, how long it takes, and the routing policy.

``load_scenario(path)`` reads a YAML (``.yaml``/``.yml``) or JSON (``.json``) file and returns
a validated, frozen ``Scenario`` (``simulations.model``). Any mistake raises
``ScenarioError`` whose message starts with the path of the bad field, for example
``agents[3].skills.billing: level 11 is not in 1..10`` or
``arrivals[0].handle.distribution: 'gamma' is not one of exponential, lognormal, fixed``.
Unknown fields are errors too (with a "did you mean" hint), so a typo never passes silently.

Times are simulated seconds from the start (2026-01-05 00:00 UTC, a Monday), written as a
number of seconds, ``"HH:MM[:SS]"`` (day 0) or ``"1d 08:00"`` (day 1). Shifts, breaks and rate
profiles are times of day and repeat daily. Durations are numbers of seconds (``*_s``).

The smallest scenario, a single-skill pool (an M/M/c queue, or M/M/c+M with patience)::

    pool: {agents: 20, rate_per_hour: 340, mean_handle_s: 180, mean_patience_s: 300}
    duration_s: 28800

Every top-level field (defaults in brackets)::

    name            [file stem]       shown in kpis.json
    description     [""]
    duration_s      [86400]           calls arrive in [0, duration_s)
    warmup_s        [0]               KPIs count calls arriving from warmup_s on
    drain_s         [7200]            after duration_s, run until nothing waits or is in
                                      progress, for at most drain_s more seconds
    seed            [1]               default seed for tools (simulate() takes one explicitly)
    timeline_bucket_s [900]           width of the kpis.json timeline buckets
    arrival_scale   [1.0]             multiplies every stream's rate (what-if volume)
    policy          [service defaults] router.domain.Policy fields: strategy, weights{skill,
                                      performance, region, previous_agent, idle, load},
                                      max_occupancy, occupancy_window_s, channel_capacity{ch},
                                      channel_units{ch}, top_k, performance_prior,
                                      performance_prior_weight, performance_half_life_s,
                                      idle_horizon_s, wrap_up_s{ch}, max_wait_s{ch} (queue
                                      time limit: a call still waiting that long leaves the
                                      queue as expired; 0 to 30 days, 0: none),
                                      expected_handle_s{ch} [rate-weighted mean handle time
                                      of the channel's streams, else the mean of its
                                      calls in the scenario's traces], sla_at_risk,
                                      escalation_priority_boost,
                                      widening[{after_s, level_drop, teams, any_region}],
                                      aging_s_per_priority, reclaim_on_absence,
                                      reclaim_channels; for live replays only (the offline
                                      simulator accepts at once and never misses a
                                      heartbeat): heartbeat_timeout_s, offer_timeout_s{ch},
                                      max_missed_offers, callback_threshold_s, max_queue,
                                      escalation_group
    sla             [voice 20 s, chat 60 s, whatsapp 300 s, social 3600 s, email 86400 s;
                     goal 0.8]        {channel: {target_s, goal}} or {channel: target_s}
    handle          [none]            {channel: distribution}: default handle time per channel
    arrivals        (required unless pool) list of streams or {trace: file}
    teams           [none]            {team: {agent fields}}: defaults for the team's agents
    agents          (required unless pool) list of agent groups
    pool            [none]            the single-skill shorthand (alone with arrivals/agents)
    sick_leave      [none]            {fraction, seed [1], teams [all]}: that share of agents,
                                      picked by a hash of their id, is absent all simulation
                                      (a sick_leave absence from 0 to a week past the
                                      horizon: nobody is back for the run's last instant)
    variants        [none]            {name: {top-level fields}}: named overrides, chosen with
                                      load_scenario(path, variant=name) or "file.yaml#name"
    x-<anything>    ignored           a place for YAML anchors (&day) reused below

An arrival stream::

    name            [<channel>-<index>]
    channel         (required)        voice, chat, email, whatsapp, social
    rate_per_hour   (required)        base Poisson rate
    profile         [flat 1.0]        {"HH:MM": multiplier} (piecewise constant from each
                                      time, daily) or a list of n multipliers for n equal
                                      slots of the day (24: hourly)
    handle          [handle.<channel>] distribution: a number (exponential with that mean) or
                                      {distribution: exponential|lognormal|fixed, mean_s, sd_s}
    patience        [never abandons]  distribution of how long a caller waits before hanging up
    skills          [none]            required skills {skill: min_level} or [skill, ...]
    preferred_skills [none]           [skill, ...]
    language, region [""]             the call's language and the customer's region
    priority        [0]               0..10
    team            [""]              only this team's agents (until widening adds overflow)
    region_required [false]           only agents of the call's region (until widening)
    mix             [one call type]   [{weight [1], skills, preferred_skills, language, region,
                                      priority}]: call types drawn by weight; each inherits
                                      the stream's own values of those fields

An agent group (``teams`` entries take the same fields from ``region`` on)::

    id | id_prefix   [team or "agent"] one agent's id, or ids <prefix>-001, <prefix>-002, ...
    count           [1]
    team            [""]              must be a key of teams when teams is given
    region, timezone [""]             timezone: IANA name (region/time-zone affinity)
    languages       [none]            [en, pt-br, ...]
    skills          [none]            {skill: level 1..10}
    channels        [every channel at the policy default capacity]
                                      {channel: items at once} or [channel, ...] (defaults);
                                      unlisted channels are not served
    max_occupancy   [policy's]        rolling occupancy cap in (0, 1]
    shift           [always on duty]  {start, end} times of day (end < start: night shift)
    breaks          [none]            [{start, duration_s, spread_s [0]}] daily, taken when
                                      inside the shift; spread_s staggers a group's agents
                                      evenly over that many seconds after start
    absences        [none]            [{start, end, kind}] absolute times; kind vacation,
                                      sick_leave, training, other
    quality         [0.7]             true quality in [0, 1] (simulations.outcomes), or
                                      [low, high]: drawn per agent from a hash of its id
    speed           [1.0]             handle time is divided by it (1.25: 25 % faster), or
                                      [low, high] as for quality
    top_performer   [false]           flags the agent in the top-performer KPIs; when no agent
                                      is flagged, the top 10 % by quality are the top performers
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

from router.domain import AbsenceKind, Channel, Policy, SkillRequirement, frozen_map
from simulations import fields as f
from simulations.fields import DAY_S, MAX_DURATION_S, MAX_RATE_PER_HOUR, ScenarioError
from simulations.model import (
    AbsenceSpec,
    AgentSpec,
    CallType,
    Distribution,
    Scenario,
    Stream,
)
from simulations.policy_spec import read_policy, read_sla
from simulations.scenario_agents import read_agents, read_teams, unit_hash
from simulations.scenario_streams import read_arrivals, read_distribution, read_handle_defaults
from simulations.trace import read_trace

__all__ = ["Scenario", "ScenarioError", "load_scenario", "parse_scenario"]

TOP_FIELDS = (
    "name",
    "description",
    "duration_s",
    "warmup_s",
    "drain_s",
    "seed",
    "timeline_bucket_s",
    "arrival_scale",
    "policy",
    "sla",
    "handle",
    "arrivals",
    "teams",
    "agents",
    "pool",
    "sick_leave",
    "variants",
)
POOL_FIELDS = (
    "agents",
    "rate_per_hour",
    "mean_handle_s",
    "mean_patience_s",
    "channel",
    "skill",
)
POOL_SKILL = "general"


def load_scenario(path: str | Path, *, variant: str | None = None) -> Scenario:
    """Read and validate the scenario at ``path`` (YAML or JSON by suffix).

    ``variant`` applies one of the file's ``variants``; ``"file.yaml#name"`` does the same.
    Raises ``ScenarioError`` naming the bad field, or ``FileNotFoundError``.
    """
    file = Path(path)
    if not file.exists() and "#" in file.name and variant is None:
        stem, _, variant = file.name.rpartition("#")
        file = file.with_name(stem)
    if not file.exists():
        raise FileNotFoundError(str(file))
    raw = f.read_document(file)
    return parse_scenario(raw, name=file.stem, base=file.parent, variant=variant, source=file)


def parse_scenario(
    raw: object,
    *,
    name: str = "scenario",
    base: Path | None = None,
    variant: str | None = None,
    source: Path | None = None,
) -> Scenario:
    """Validate an already parsed document (``load_scenario`` without the file)."""
    # "x-..." keys hold YAML anchors for reuse (as in docker compose) and are ignored.
    top = f.mapping(raw, "")
    top = f.mapping({k: v for k, v in top.items() if not k.startswith("x-")}, "", TOP_FIELDS)
    variants = f.mapping(top.pop("variants", None) or {}, "variants")
    # Every variant's field names are checked, chosen or not: a typo never waits for the day
    # someone picks that variant.
    overrides = {
        key: f.mapping(value, f.child("variants", key), set(TOP_FIELDS) - {"variants"})
        for key, value in variants.items()
    }
    if variant:
        if variant not in variants:
            known = ", ".join(sorted(variants)) or "none"
            raise ScenarioError("variants", f"no variant {variant!r} (defined: {known})")
        top.update(overrides[variant])
    built = _build(top, name, base or Path.cwd())
    return dataclasses.replace(
        built,
        name=f"{built.name}:{variant}" if variant else built.name,
        variant=variant or "",
        variants=tuple(sorted(variants)),
        source=source,
    )


def _build(top: dict[str, object], default_name: str, base: Path) -> Scenario:
    name = f.string(top.get("name", default_name), "name", allow_empty=False)
    duration = f.number(top.get("duration_s", DAY_S), "duration_s", low=1, high=MAX_DURATION_S)
    warmup = f.number(top.get("warmup_s", 0), "warmup_s", low=0)
    if warmup >= duration:
        raise ScenarioError("warmup_s", f"must be shorter than duration_s ({duration:g})")
    policy, policy_fields = read_policy(top.get("policy"))
    policy = dataclasses.replace(policy, sla=read_sla(top.get("sla")))
    if "pool" in top:
        for other in ("arrivals", "agents", "teams", "handle"):
            if other in top:
                raise ScenarioError(other, "cannot be combined with pool (pool defines them)")
        agents, streams = _pool(top["pool"])
        traces: tuple[Path, ...] = ()
    else:
        for required in ("agents", "arrivals"):
            if required not in top:
                raise ScenarioError(required, "is required (or use the pool shorthand)")
        handle = read_handle_defaults(top.get("handle"))
        streams, traces = read_arrivals(top["arrivals"], "arrivals", handle, base)
        teams = read_teams(top.get("teams"))
        agents = read_agents(top["agents"], "agents", teams, policy.channel_capacity)
        if not agents:
            raise ScenarioError("agents", "must list at least one agent")
        _check_coverage(streams, agents)
    horizon = duration + f.number(top.get("drain_s", 7200), "drain_s", low=0)
    if top.get("sick_leave") is not None:
        agents = _sick_leave(top["sick_leave"], agents, horizon)
    given = policy.expected_handle_s if "expected_handle_s" in policy_fields else {}
    recorded = _recorded_handle(traces, duration)
    policy = dataclasses.replace(
        policy, expected_handle_s=_expected_handle(streams, given, recorded)
    )
    return Scenario(
        name=name,
        description=f.string(top.get("description", ""), "description"),
        policy=policy,
        agents=agents,
        streams=streams,
        traces=traces,
        duration_s=duration,
        warmup_s=warmup,
        drain_s=horizon - duration,
        seed=f.integer(top.get("seed", 1), "seed", low=0),
        timeline_bucket_s=f.integer(
            top.get("timeline_bucket_s", 900), "timeline_bucket_s", low=60, high=DAY_S
        ),
        arrival_scale=f.number(top.get("arrival_scale", 1.0), "arrival_scale", low=0),
    )


def _pool(value: object) -> tuple[tuple[AgentSpec, ...], tuple[Stream, ...]]:
    """The single-skill shorthand: ``agents`` identical agents serving one stream."""
    raw = f.mapping(value, "pool", POOL_FIELDS)
    for key in ("agents", "rate_per_hour", "mean_handle_s"):
        if key not in raw:
            raise ScenarioError(f.child("pool", key), "is required")
    count = f.integer(raw["agents"], "pool.agents", low=1, high=100_000)
    chan = f.channel(raw.get("channel", "voice"), "pool.channel")
    skill = f.name(raw.get("skill", POOL_SKILL), "pool.skill", "skill")
    handle = read_distribution(raw["mean_handle_s"], "pool.mean_handle_s")
    patience: Distribution | None = None
    if raw.get("mean_patience_s") is not None:
        patience = read_distribution(raw["mean_patience_s"], "pool.mean_patience_s")
    capacity = frozen_map({c: (1 if c == chan else 0) for c in Channel})
    width = max(3, len(str(count)))
    agents = tuple(
        AgentSpec(
            agent_id=f"agent-{n:0{width}d}",
            skills=frozen_map({skill: 5}),
            capacity=capacity,
            quality=0.7,
        )
        for n in range(1, count + 1)
    )
    stream = Stream(
        name="pool",
        channel=chan,
        rate_per_hour=f.number(
            raw["rate_per_hour"], "pool.rate_per_hour", low=0, high=MAX_RATE_PER_HOUR
        ),
        profile=((0.0, 1.0),),
        mix=(CallType(1.0, skills=(SkillRequirement(skill, 1),)),),
        handle=handle,
        patience=patience,
    )
    return agents, (stream,)


def _check_coverage(streams: tuple[Stream, ...], agents: tuple[AgentSpec, ...]) -> None:
    """Catch typos: every skill, language, channel and team a stream asks for exists
    somewhere."""
    skills = {s for a in agents for s in a.skills}
    teams = {a.team for a in agents if a.team}
    languages = {lang for a in agents for lang in a.languages}
    channels = {c for a in agents for c, n in a.capacity.items() if n > 0}
    for i, stream in enumerate(streams):
        where = f.item("arrivals", i)
        if stream.channel not in channels:
            raise ScenarioError(
                f.child(where, "channel"), f"no agent serves {stream.channel.value}"
            )
        if stream.team and stream.team not in teams:
            raise ScenarioError(f.child(where, "team"), f"no agent is in team {stream.team!r}")
        for call_type in stream.mix:
            for req in call_type.skills:
                if req.skill not in skills:
                    raise ScenarioError(
                        f.child(f.child(where, "skills"), req.skill),
                        f"no agent has skill {req.skill!r}",
                    )
            if call_type.language and call_type.language not in languages:
                raise ScenarioError(
                    f.child(where, "language"), f"no agent speaks {call_type.language!r}"
                )


SICK_LEAVE_PAST_HORIZON_S = 7 * DAY_S
"""How far past the horizon a ``sick_leave`` absence runs: an absence ending at the horizon
would bring the agent back for the run's last instant (and a dispatch pass then)."""


def _sick_leave(
    value: object, agents: tuple[AgentSpec, ...], horizon_s: float
) -> tuple[AgentSpec, ...]:
    raw = f.mapping(value, "sick_leave", ("fraction", "seed", "teams"))
    if "fraction" not in raw:
        raise ScenarioError("sick_leave.fraction", "is required")
    fraction = f.number(raw["fraction"], "sick_leave.fraction", low=0, high=1)
    seed = f.integer(raw.get("seed", 1), "sick_leave.seed", low=0)
    teams: set[str] = set()
    if raw.get("teams") is not None:
        items = f.sequence(raw["teams"], "sick_leave.teams")
        teams = {f.name(t, f.item("sick_leave.teams", i), "team") for i, t in enumerate(items)}
        unknown = teams - {a.team for a in agents}
        if unknown:
            raise ScenarioError("sick_leave.teams", f"no agents in {', '.join(sorted(unknown))}")
    pool = [a for a in agents if not teams or a.team in teams]
    ranked = sorted(pool, key=lambda a: (unit_hash(str(seed), "sick", a.agent_id), a.agent_id))
    sick = {a.agent_id for a in ranked[: round(fraction * len(pool))]}
    absence = AbsenceSpec(0.0, horizon_s + SICK_LEAVE_PAST_HORIZON_S, AbsenceKind.SICK_LEAVE)
    return tuple(
        dataclasses.replace(a, absences=(absence, *a.absences)) if a.agent_id in sick else a
        for a in agents
    )


def _recorded_handle(traces: tuple[Path, ...], duration_s: float) -> dict[Channel, float]:
    """Per channel, the mean handle time of the trace files' calls the scenario takes
    (those arriving before ``duration_s``); channels with none left out."""
    totals: dict[Channel, float] = {}
    counts: dict[Channel, int] = {}
    for path in traces:
        for call in read_trace(path):
            if call.arrival_s < duration_s:
                totals[call.channel] = totals.get(call.channel, 0.0) + call.handle_s
                counts[call.channel] = counts.get(call.channel, 0) + 1
    return {chan: totals[chan] / n for chan, n in counts.items()}


def _expected_handle(
    streams: tuple[Stream, ...],
    given: Mapping[Channel, int],
    recorded: Mapping[Channel, float],
) -> Mapping[Channel, int]:
    """Per channel, the scenario's ``expected_handle_s`` for it, else the rate-weighted mean
    handle time of its streams, else the mean of its calls in the scenario's traces
    (``recorded``), else the service's default."""
    expected = dict(Policy().expected_handle_s)
    for chan in Channel:
        mine = [s for s in streams if s.channel == chan]
        total = sum(s.rate_per_hour for s in mine)
        if mine and total > 0:
            mean = sum(s.rate_per_hour * s.handle.mean_s for s in mine) / total
            expected[chan] = max(1, round(mean))
        elif chan in recorded:
            expected[chan] = max(1, round(recorded[chan]))
    expected.update(given)
    return frozen_map(expected)
