"""The ``teams:`` and ``agents:`` parts of a scenario (see ``simulations.scenario`` for the
whole format)."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import zoneinfo
from collections.abc import Callable, Mapping

from router.domain import AbsenceKind, Channel, frozen_map
from simulations import fields as f
from simulations.fields import DAY_S, ScenarioError
from simulations.model import AbsenceSpec, AgentSpec

PROFILE_FIELDS = (
    "region",
    "timezone",
    "languages",
    "skills",
    "channels",
    "max_occupancy",
    "shift",
    "breaks",
    "absences",
    "quality",
    "speed",
    "top_performer",
)
"""Fields a team sets for its agents and an agent group may override."""

GROUP_FIELDS = ("id", "id_prefix", "count", "team", *PROFILE_FIELDS)

At = Callable[[str], str]
"""Field name -> the path where the field was written (the group, or the team it inherits)."""


@functools.cache
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def unit_hash(*parts: str) -> float:
    """A deterministic number in [0, 1) from ``parts`` (independent of PYTHONHASHSEED)."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def read_teams(value: object, path: str = "teams") -> dict[str, dict[str, object]]:
    """``teams: {name: {<profile fields>}}``: defaults for the agents of each team."""
    if value is None:
        return {}
    teams: dict[str, dict[str, object]] = {}
    for key, entry in f.mapping(value, path).items():
        where = f.child(path, key)
        team = f.name(key, where, "team name")
        teams[team] = f.mapping(entry or {}, where, PROFILE_FIELDS)
    return teams


def read_agents(
    value: object,
    path: str,
    teams: Mapping[str, Mapping[str, object]],
    default_capacity: Mapping[Channel, int],
) -> tuple[AgentSpec, ...]:
    """The ``agents`` list of agent groups, expanded into one ``AgentSpec`` per agent."""
    specs: list[AgentSpec] = []
    taken: dict[str, str] = {}
    numbering: dict[str, int] = {}
    for i, entry in enumerate(f.sequence(value, path)):
        where = f.item(path, i)
        raw = f.mapping(entry, where, GROUP_FIELDS)
        team = f.name(raw["team"], f.child(where, "team"), "team") if raw.get("team") else ""
        if team and teams and team not in teams:
            raise ScenarioError(f.child(where, "team"), f"unknown team {team!r}")
        count = f.integer(raw.get("count", 1), f.child(where, "count"), low=1, high=100_000)
        if "id" in raw and count != 1:
            raise ScenarioError(f.child(where, "id"), "a group with count > 1 takes id_prefix")
        inherited = dict(teams.get(team, {}))
        merged = {**inherited, **{k: v for k, v in raw.items() if k in PROFILE_FIELDS}}
        origin = {k: (where if k in raw else f.child("teams", team)) for k in merged}

        def at(key: str, origin: dict[str, str] = origin, where: str = where) -> str:
            return f.child(origin.get(key, where), key)

        template = _template(merged, at, default_capacity)
        rules = _breaks(merged.get("breaks"), at("breaks"))
        if "id" in raw:
            ids = [f.identifier(raw["id"], f.child(where, "id"))]
        else:
            prefix_raw = raw.get("id_prefix", team or "agent")
            prefix = f.identifier(prefix_raw, f.child(where, "id_prefix"))
            start = numbering.get(prefix, 0)
            width = max(3, len(str(start + count)))
            ids = [f"{prefix}-{n:0{width}d}" for n in range(start + 1, start + count + 1)]
            numbering[prefix] = start + count
        for k, agent_id in enumerate(ids):
            if agent_id in taken:
                raise ScenarioError(
                    f.child(where, "id" if "id" in raw else "id_prefix"),
                    f"agent id {agent_id!r} is already used by {taken[agent_id]}",
                )
            taken[agent_id] = where
            quality = _per_agent(merged.get("quality", 0.7), at, agent_id, "quality", low=0, high=1)
            speed = _per_agent(merged.get("speed", 1.0), at, agent_id, "speed", low=0.05, high=20)
            specs.append(
                dataclasses.replace(
                    template,
                    agent_id=agent_id,
                    team=team,
                    quality=quality,
                    speed=speed,
                    breaks=staggered(rules, k, len(ids)),
                )
            )
    return tuple(specs)


def _template(
    merged: Mapping[str, object], at: At, default_capacity: Mapping[Channel, int]
) -> AgentSpec:
    """The fields shared by every agent of a group, validated (id, quality, speed to come)."""
    skills: dict[str, int] = {}
    if "skills" in merged:
        raw = f.mapping(merged["skills"], at("skills"))
        for key, val in raw.items():
            where = f.child(at("skills"), key)
            skills[f.name(key, where, "skill")] = f.skill_level(val, where)
    languages: set[str] = set()
    if "languages" in merged:
        items = f.sequence(merged["languages"], at("languages"))
        languages = {f.language(v, f.item(at("languages"), i)) for i, v in enumerate(items)}
    region = f.name(merged["region"], at("region"), "region") if merged.get("region") else ""
    zone = f.string(merged.get("timezone", ""), at("timezone")) if "timezone" in merged else ""
    if zone and zone not in _zones():
        raise ScenarioError(at("timezone"), f"{zone!r} is not an IANA time zone")
    cap = None
    if merged.get("max_occupancy") is not None:
        cap = f.number(merged["max_occupancy"], at("max_occupancy"), low=0, high=1, low_open=True)
    return AgentSpec(
        agent_id="",
        skills=frozen_map(dict(sorted(skills.items()))),
        languages=frozenset(languages),
        region=region,
        timezone=zone,
        capacity=_capacity(merged.get("channels"), at("channels"), default_capacity),
        max_occupancy=cap,
        shift=_shift(merged.get("shift"), at("shift")),
        absences=_absences(merged.get("absences"), at("absences")),
        top_performer=f.boolean(merged.get("top_performer", False), at("top_performer")),
    )


def _per_agent(
    value: object, at: At, agent_id: str, what: str, *, low: float, high: float
) -> float:
    """A number, or ``[low, high]``: drawn per agent, uniformly, from a hash of its id."""
    path = at(what)
    if isinstance(value, list):
        if len(value) != 2:
            raise ScenarioError(path, "a range is [low, high]")
        lo = f.number(value[0], f.item(path, 0), low=low, high=high)
        hi = f.number(value[1], f.item(path, 1), low=low, high=high)
        if hi < lo:
            raise ScenarioError(path, f"range [{lo:g}, {hi:g}] is empty")
        return round(lo + (hi - lo) * unit_hash(what, agent_id), 6)
    if what == "speed":
        return f.number(value, path, low=low, high=high, low_open=True)
    return f.number(value, path, low=low, high=high)


def _capacity(
    value: object, path: str, default_capacity: Mapping[Channel, int]
) -> Mapping[Channel, int]:
    """``{voice: 1, chat: 3}`` or ``[voice, chat]`` (policy defaults); unlisted channels get 0.
    Absent: every channel at the policy default."""
    if value is None:
        return frozen_map({c: default_capacity.get(c, 0) for c in Channel})
    capacity = dict.fromkeys(Channel, 0)
    if isinstance(value, list):
        for i, v in enumerate(value):
            chan = f.channel(v, f.item(path, i))
            capacity[chan] = default_capacity.get(chan, 0)
    else:
        for key, v in f.mapping(value, path).items():
            where = f.child(path, key)
            capacity[f.channel(key, where)] = f.integer(v, where, low=0, high=100)
    if not any(capacity.values()):
        raise ScenarioError(path, "the agent serves no channel")
    return frozen_map(capacity)


def _shift(value: object, path: str) -> tuple[float, float] | None:
    if value is None:
        return None
    raw = f.mapping(value, path, ("start", "end"))
    for key in ("start", "end"):
        if key not in raw:
            raise ScenarioError(f.child(path, key), "is required")
    start = f.time_of_day(raw["start"], f.child(path, "start"))
    end = f.time_of_day(raw["end"], f.child(path, "end"))
    if end == start:
        raise ScenarioError(path, "a shift cannot be empty (start == end)")
    if end < start:  # a night shift ends the next day
        end += DAY_S
    if start >= DAY_S:
        start, end = start - DAY_S, end - DAY_S
    return (start, end)


BreakRule = tuple[float, float, float]
"""(start, duration, spread) of a daily break, as written."""


def _breaks(value: object, path: str) -> tuple[BreakRule, ...]:
    if value is None:
        return ()
    out: list[BreakRule] = []
    for i, entry in enumerate(f.sequence(value, path)):
        where = f.item(path, i)
        raw = f.mapping(entry, where, ("start", "duration_s", "spread_s"))
        for key in ("start", "duration_s"):
            if key not in raw:
                raise ScenarioError(f.child(where, key), "is required")
        start = f.time_of_day(raw["start"], f.child(where, "start"))
        duration = f.number(raw["duration_s"], f.child(where, "duration_s"), low=1, high=DAY_S)
        spread = f.number(raw.get("spread_s", 0), f.child(where, "spread_s"), low=0, high=DAY_S)
        out.append((start, duration, spread))
    return tuple(out)


def staggered(rules: tuple[BreakRule, ...], k: int, count: int) -> tuple[tuple[float, float], ...]:
    """The breaks of the ``k``-th of ``count`` agents of a group: each rule's start moved by
    ``spread * k / count``, on whole minutes, so a team does not leave all at once."""
    breaks = []
    for start, duration, spread in rules:
        shift = round(spread * k / count / 60) * 60 if count > 1 else 0
        breaks.append(((start + shift) % DAY_S, duration))
    return tuple(sorted(breaks))


def _absences(value: object, path: str) -> tuple[AbsenceSpec, ...]:
    if value is None:
        return ()
    out: list[AbsenceSpec] = []
    for i, entry in enumerate(f.sequence(value, path)):
        where = f.item(path, i)
        raw = f.mapping(entry, where, ("start", "end", "kind"))
        for key in ("start", "end"):
            if key not in raw:
                raise ScenarioError(f.child(where, key), "is required")
        start = f.time_point(raw["start"], f.child(where, "start"))
        end = f.time_point(raw["end"], f.child(where, "end"))
        if end <= start:
            raise ScenarioError(f.child(where, "end"), "must be after start")
        kind_text = f.string(raw.get("kind", "other"), f.child(where, "kind")).lower()
        try:
            kind = AbsenceKind(kind_text)
        except ValueError:
            known = ", ".join(k.value for k in AbsenceKind)
            raise ScenarioError(
                f.child(where, "kind"), f"{kind_text!r} is not one of {known}"
            ) from None
        out.append(AbsenceSpec(start, end, kind))
    return tuple(sorted(out, key=lambda a: (a.start_s, a.end_s)))
