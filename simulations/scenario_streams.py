"""The ``arrivals:``, ``handle:`` and ``pool:`` arrival parts of a scenario (see
``simulations.scenario`` for the whole format)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

from router.domain import Channel, SkillRequirement
from simulations import fields as f
from simulations.fields import DAY_S, MAX_RATE_PER_HOUR, MAX_TIME_S, ScenarioError
from simulations.model import CallType, Distribution, Stream

DISTRIBUTIONS = ("exponential", "lognormal", "fixed")
_CALL_FIELDS = ("skills", "preferred_skills", "language", "region", "priority")
STREAM_FIELDS = (
    "name",
    "channel",
    "rate_per_hour",
    "profile",
    "mix",
    "handle",
    "patience",
    "team",
    "region_required",
    *_CALL_FIELDS,
)


def read_distribution(value: object, path: str) -> Distribution:
    """``300`` (exponential, mean 300 s) or ``{distribution, mean_s, sd_s}``."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return Distribution("exponential", f.number(value, path, low=0, low_open=True))
    raw = f.mapping(value, path, ("distribution", "mean_s", "sd_s"))
    kind = f.string(raw.get("distribution", "exponential"), f.child(path, "distribution"))
    if kind not in DISTRIBUTIONS:
        raise ScenarioError(
            f.child(path, "distribution"), f"{kind!r} is not one of {', '.join(DISTRIBUTIONS)}"
        )
    if "mean_s" not in raw:
        raise ScenarioError(f.child(path, "mean_s"), "is required")
    mean = f.number(raw["mean_s"], f.child(path, "mean_s"), low=0, low_open=True, high=MAX_TIME_S)
    sd = 0.0
    if kind == "lognormal":
        if "sd_s" not in raw:
            raise ScenarioError(f.child(path, "sd_s"), "is required for a lognormal distribution")
        sd = f.number(raw["sd_s"], f.child(path, "sd_s"), low=0, low_open=True, high=MAX_TIME_S)
    elif "sd_s" in raw:
        raise ScenarioError(f.child(path, "sd_s"), f"only a lognormal has sd_s, not {kind}")
    return Distribution(kind, mean, sd)


def read_handle_defaults(value: object, path: str = "handle") -> dict[Channel, Distribution]:
    """Top-level ``handle: {voice: ..., chat: ...}``: per-channel handle-time defaults."""
    if value is None:
        return {}
    return {
        f.channel(key, f.child(path, key)): read_distribution(val, f.child(path, key))
        for key, val in f.mapping(value, path).items()
    }


def read_required_skills(value: object, path: str) -> tuple[SkillRequirement, ...]:
    """``{billing: 5, tech: 3}`` (minimum levels) or ``[billing, tech]`` (level 1)."""
    if isinstance(value, list):
        names = [f.name(v, f.item(path, i), "skill") for i, v in enumerate(value)]
        return tuple(SkillRequirement(n) for n in sorted(set(names)))
    raw = f.mapping(value, path)
    reqs = {
        f.name(k, f.child(path, k), "skill"): f.skill_level(v, f.child(path, k))
        for k, v in raw.items()
    }
    return tuple(SkillRequirement(k, reqs[k]) for k in sorted(reqs))


def read_profile(value: object, path: str) -> tuple[tuple[float, float], ...]:
    """``{"08:00": 1.0, "12:00": 0.6}`` or a list of n multipliers splitting the day into n
    equal slots (24: hourly). Breakpoints are sorted; before the first, the last one's value
    holds (the profile repeats daily)."""
    if value is None:
        return ((0.0, 1.0),)
    points: list[tuple[float, float]] = []
    if isinstance(value, list):
        if not value or DAY_S % len(value):
            raise ScenarioError(path, "a list profile needs n values with n dividing 86400 (24)")
        slot = DAY_S / len(value)
        points = [(i * slot, f.number(v, f.item(path, i), low=0)) for i, v in enumerate(value)]
    else:
        for key, val in f.mapping(value, path).items():
            where = f.child(path, key)
            start = f.time_of_day(key, where)
            if start >= DAY_S:
                raise ScenarioError(where, "profile times must be before 24:00")
            points.append((start, f.number(val, where, low=0)))
        if not points:
            raise ScenarioError(path, "must list at least one time")
        points.sort()
    if points[0][0] > 0:
        points.insert(0, (0.0, points[-1][1]))
    return tuple(points)


def _call_fields(raw: Mapping[str, object], path: str, base: CallType) -> CallType:
    """``base`` with the call fields present in ``raw`` (a stream or a mix entry), validated
    at ``path``."""
    out = base
    if "skills" in raw:
        skills = read_required_skills(raw["skills"], f.child(path, "skills"))
        out = dataclasses.replace(out, skills=skills)
    if "preferred_skills" in raw:
        where = f.child(path, "preferred_skills")
        items = f.sequence(raw["preferred_skills"], where)
        preferred = tuple(f.name(v, f.item(where, i), "skill") for i, v in enumerate(items))
        out = dataclasses.replace(out, preferred_skills=preferred)
    if raw.get("language"):
        out = dataclasses.replace(
            out, language=f.language(raw["language"], f.child(path, "language"))
        )
    if raw.get("region"):
        out = dataclasses.replace(
            out, region=f.name(raw["region"], f.child(path, "region"), "region")
        )
    if "priority" in raw:
        priority = f.integer(raw["priority"], f.child(path, "priority"), low=0, high=10)
        out = dataclasses.replace(out, priority=priority)
    return out


def read_stream(
    value: object, path: str, handle_defaults: Mapping[Channel, Distribution]
) -> Stream:
    """One generated arrival stream (see the module docstring of ``simulations.scenario``)."""
    raw = f.mapping(value, path, STREAM_FIELDS)
    for key in ("channel", "rate_per_hour"):
        if key not in raw:
            raise ScenarioError(f.child(path, key), "is required")
    chan = f.channel(raw["channel"], f.child(path, "channel"))
    name = ""
    if raw.get("name"):
        name = f.name(raw["name"], f.child(path, "name"), "stream name")
    if "handle" in raw:
        handle = read_distribution(raw["handle"], f.child(path, "handle"))
    elif chan in handle_defaults:
        handle = handle_defaults[chan]
    else:
        raise ScenarioError(
            f.child(path, "handle"), f"is required (or set handle.{chan.value} at the top level)"
        )
    patience = None
    if raw.get("patience") is not None:
        patience = read_distribution(raw["patience"], f.child(path, "patience"))
    defaults = _call_fields(raw, path, CallType(weight=1.0))
    if "mix" in raw:
        entries = f.sequence(raw["mix"], f.child(path, "mix"))
        if not entries:
            raise ScenarioError(f.child(path, "mix"), "must list at least one call type")
        types: list[CallType] = []
        for i, entry in enumerate(entries):
            where = f.item(f.child(path, "mix"), i)
            fields = f.mapping(entry, where, ("weight", *_CALL_FIELDS))
            weight = f.number(fields.get("weight", 1.0), f.child(where, "weight"), low=0)
            entry_type = _call_fields(fields, where, defaults)
            types.append(dataclasses.replace(entry_type, weight=weight))
        if not any(t.weight > 0 for t in types):
            raise ScenarioError(f.child(path, "mix"), "at least one weight must be positive")
        mix = tuple(types)
    else:
        mix = (defaults,)
    team = f.name(raw["team"], f.child(path, "team"), "team") if raw.get("team") else ""
    return Stream(
        name=name,
        channel=chan,
        rate_per_hour=f.number(
            raw["rate_per_hour"], f.child(path, "rate_per_hour"), low=0, high=MAX_RATE_PER_HOUR
        ),
        profile=read_profile(raw.get("profile"), f.child(path, "profile")),
        mix=mix,
        handle=handle,
        patience=patience,
        team=team,
        region_required=f.boolean(
            raw.get("region_required", False), f.child(path, "region_required")
        ),
    )


def read_arrivals(
    value: object, path: str, handle_defaults: Mapping[Channel, Distribution], base: Path
) -> tuple[tuple[Stream, ...], tuple[Path, ...]]:
    """The ``arrivals`` list: generated streams and ``{trace: file}`` entries (relative paths
    are relative to the scenario file)."""
    streams: list[Stream] = []
    traces: list[Path] = []
    for i, entry in enumerate(f.sequence(value, path)):
        where = f.item(path, i)
        if isinstance(entry, Mapping) and "trace" in entry:
            raw = f.mapping(entry, where, ("trace",))
            trace = Path(f.string(raw["trace"], f.child(where, "trace"), allow_empty=False))
            trace = trace if trace.is_absolute() else base / trace
            if not trace.is_file():
                raise ScenarioError(f.child(where, "trace"), f"no such file: {trace}")
            traces.append(trace)
            continue
        stream = read_stream(entry, where, handle_defaults)
        if not stream.name:
            stream = dataclasses.replace(stream, name=f"{stream.channel.value}-{i}")
        if any(s.name == stream.name for s in streams):
            raise ScenarioError(f.child(where, "name"), f"duplicate stream name {stream.name!r}")
        streams.append(stream)
    return tuple(streams), tuple(traces)
