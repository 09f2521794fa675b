"""Routing policy: protobuf <-> domain with validation of every field.

``UpdatePolicy`` names the fields it changes in a field mask (``weights.<name>`` for one
weight). Inside ``channels``, each listed channel keeps its current value for any field left
unset (0 / no duration / no ``default_capacity``), so a client can change one setting of one
channel.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from google.protobuf.duration_pb2 import Duration

from router.convert import (
    CHANNELS,
    STRATEGIES,
    channel_to_pb,
    duration,
    duration_seconds,
    enum_value,
    shown,
    text,
    whole_seconds,
)
from router.domain import (
    AGENT_UNIT_BUDGET,
    Channel,
    Policy,
    SlaTarget,
    Weights,
    WideningStep,
    frozen_map,
)
from router.errors import InvalidArgumentError
from router.v1 import types_pb2 as pb

MAX_WEIGHT = 100.0
MAX_WIDENING_STEPS = 10
WEEK_S = 7 * 86400
MAX_WAIT_S = 30 * 86400
"""Longest queue time limit (``ChannelSetting.max_wait``)."""

# mask path -> (domain field, lowest, highest) in seconds
_DURATIONS: Mapping[str, tuple[str, int, int]] = {
    "occupancy_window": ("occupancy_window_s", 60, 86400),
    "heartbeat_timeout": ("heartbeat_timeout_s", 0, 3600),
    "performance_half_life": ("performance_half_life_s", 3600, 365 * 86400),
    "idle_horizon": ("idle_horizon_s", 1, 86400),
    "aging_per_priority": ("aging_s_per_priority", 0, 3600),
    "callback_threshold": ("callback_threshold_s", 0, 86400),
}
# mask path -> (lowest, highest, lowest excluded?)
_NUMBERS: Mapping[str, tuple[float, float, bool]] = {
    "max_occupancy": (0.0, 1.0, True),  # a cap of 0 would route nothing
    "top_k": (1, 1000, False),
    "performance_prior": (0, 1, False),
    "performance_prior_weight": (0, 1000, False),
    "sla_at_risk": (0.0, 1.0, True),
    "escalation_priority_boost": (0, 10, False),
    "max_missed_offers": (0, 100, False),
    "max_queue": (1, 1_000_000, False),
}
_INTEGERS = {"top_k", "escalation_priority_boost", "max_missed_offers", "max_queue"}


def _bounded(field: str, value: float, low: float, high: float, *, open_low: bool = False) -> float:
    if math.isnan(value) or value > high or value < low or (open_low and value == low):
        bracket = "(" if open_low else "["
        raise InvalidArgumentError(field, f"{value} is not in {bracket}{low:g}, {high:g}]")
    return value


def _duration_s(field: str, value: Duration, low: float, high: float) -> int:
    return whole_seconds(field, _bounded(field, duration_seconds(field, value), low, high))


_WEIGHT_NAMES = tuple(f.name for f in dataclasses.fields(Weights))


def _weights(msg: pb.Weights, current: Weights, names: Iterable[str] = _WEIGHT_NAMES) -> Weights:
    """``current`` with the weights ``names`` (all six by default) as ``msg`` gives them."""
    values = {
        name: _bounded(f"policy.weights.{name}", getattr(msg, name), 0.0, MAX_WEIGHT)
        for name in names
    }
    return dataclasses.replace(current, **values)


def _channel(item: pb.ChannelSetting, where: str, current: Policy) -> dict[str, Any]:
    """One channel's settings; unset fields keep their current value."""
    channel = enum_value(f"{where}.channel", item.channel, CHANNELS)
    sla = current.sla_for(channel) or SlaTarget(20)
    out: dict[str, Any] = {
        "channel": channel,
        "capacity": current.channel_capacity.get(channel, 0),
        "units": current.units_for(channel),
        "offer": current.offer_timeout_s.get(channel, 0),
        "wrap": current.wrap_up_s.get(channel, 0),
        "max_wait": current.max_wait_s.get(channel, 0),
        "handle": current.expected_handle_s.get(channel, 300),
        "sla": sla,
    }
    if item.HasField("default_capacity"):
        capacity = _bounded(f"{where}.default_capacity", item.default_capacity, 0, 50)
        out["capacity"] = int(capacity)
    if item.units:
        out["units"] = int(_bounded(f"{where}.units", item.units, 1, AGENT_UNIT_BUDGET))
    if item.HasField("offer_timeout"):
        out["offer"] = _duration_s(f"{where}.offer_timeout", item.offer_timeout, 0, 600)
    if item.HasField("wrap_up"):
        out["wrap"] = _duration_s(f"{where}.wrap_up", item.wrap_up, 0, 3600)
    if item.HasField("max_wait"):
        out["max_wait"] = _duration_s(f"{where}.max_wait", item.max_wait, 0, MAX_WAIT_S)
    if item.HasField("expected_handle_time"):
        handle = item.expected_handle_time
        out["handle"] = _duration_s(f"{where}.expected_handle_time", handle, 1, WEEK_S)
    target, goal = sla.target_s, sla.goal
    if item.HasField("sla_target"):
        target = _duration_s(f"{where}.sla_target", item.sla_target, 1, WEEK_S)
    if item.sla_goal:
        goal = _bounded(f"{where}.sla_goal", item.sla_goal, 0.0, 1.0, open_low=True)
    out["sla"] = SlaTarget(target, goal)
    return out


def _channels(msg: pb.Policy, current: Policy) -> dict[str, object]:
    tables: dict[str, dict[Channel, Any]] = {
        "channel_capacity": dict(current.channel_capacity),
        "channel_units": dict(current.channel_units),
        "offer_timeout_s": dict(current.offer_timeout_s),
        "wrap_up_s": dict(current.wrap_up_s),
        "max_wait_s": dict(current.max_wait_s),
        "expected_handle_s": dict(current.expected_handle_s),
        "sla": dict(current.sla),
    }
    seen: set[Channel] = set()
    for i, item in enumerate(msg.channels):
        where = f"policy.channels[{i}]"
        values = _channel(item, where, current)
        channel = values["channel"]
        if channel in seen:
            raise InvalidArgumentError(f"{where}.channel", f"{channel} is listed twice")
        seen.add(channel)
        for table, key in (
            ("channel_capacity", "capacity"),
            ("channel_units", "units"),
            ("offer_timeout_s", "offer"),
            ("wrap_up_s", "wrap"),
            ("max_wait_s", "max_wait"),
            ("expected_handle_s", "handle"),
            ("sla", "sla"),
        ):
            tables[table][channel] = values[key]
    return {name: frozen_map(table) for name, table in tables.items()}


def _widening(msg: pb.Policy) -> dict[str, object]:
    if len(msg.widening) > MAX_WIDENING_STEPS:
        raise InvalidArgumentError("policy.widening", f"at most {MAX_WIDENING_STEPS} steps")
    steps: list[WideningStep] = []
    for i, step in enumerate(msg.widening):
        where = f"policy.widening[{i}]"
        after = _duration_s(f"{where}.after", step.after, 1, WEEK_S)
        if steps and after <= steps[-1].after_s:
            raise InvalidArgumentError(
                f"{where}.after", "steps must come in increasing order (in whole seconds)"
            )
        if len(step.teams) > 20:
            raise InvalidArgumentError(f"{where}.teams", "at most 20 teams")
        teams = tuple(text(f"{where}.teams[{j}]", t, max_len=64) for j, t in enumerate(step.teams))
        steps.append(
            WideningStep(
                after_s=after,
                level_drop=int(_bounded(f"{where}.level_drop", step.level_drop, 0, 9)),
                teams=teams,
                any_region=step.any_region,
            )
        )
    return {"widening": tuple(steps)}


def _reclaim_channels(msg: pb.Policy) -> dict[str, object]:
    channels: set[Channel] = set()
    for i, number in enumerate(msg.reclaim_channels):
        channel = enum_value(f"policy.reclaim_channels[{i}]", number, CHANNELS)
        if channel in channels:
            raise InvalidArgumentError(
                f"policy.reclaim_channels[{i}]", f"{channel} is listed twice"
            )
        channels.add(channel)
    return {"reclaim_channels": frozenset(channels)}


_SPECIAL: Mapping[str, Callable[[pb.Policy, Policy], dict[str, object]]] = {
    "strategy": lambda m, _: {"strategy": enum_value("policy.strategy", m.strategy, STRATEGIES)},
    "weights": lambda m, current: {"weights": _weights(m.weights, current.weights)},
    "channels": _channels,
    "widening": lambda m, _: _widening(m),
    "reclaim_channels": lambda m, _: _reclaim_channels(m),
    "reclaim_on_absence": lambda m, _: {"reclaim_on_absence": m.reclaim_on_absence},
    "escalation_group": lambda m, _: {
        "escalation_group": text("policy.escalation_group", m.escalation_group, max_len=64)
    },
}

_WEIGHTS = frozenset(f"weights.{name}" for name in _WEIGHT_NAMES)
"""Paths that change one weight (``weights`` changes all six)."""

POLICY_FIELDS = (*_SPECIAL, *_DURATIONS, *_NUMBERS)


def set_paths(msg: pb.Policy) -> list[str]:
    """The paths of the fields ``msg`` sets (AIP-134's mask when none is given): each
    weight it sets on its own (``weights.skill``), so the weights it leaves out keep their
    values."""
    paths: list[str] = []
    for field, _ in msg.ListFields():
        if field.name == "weights":
            paths += [f"weights.{weight.name}" for weight, _ in msg.weights.ListFields()]
        elif field.name in POLICY_FIELDS:
            paths.append(field.name)
    return paths


def _changes(path: str, msg: pb.Policy, current: Policy) -> dict[str, object]:
    """Validated domain values for one ``update_mask`` path."""
    if path in _SPECIAL:
        return _SPECIAL[path](msg, current)
    if path in _WEIGHTS:
        name = path.removeprefix("weights.")
        return {"weights": _weights(msg.weights, current.weights, (name,))}
    if path in _DURATIONS:
        name, shortest, longest = _DURATIONS[path]
        return {name: _duration_s(f"policy.{path}", getattr(msg, path), shortest, longest)}
    if path in _NUMBERS:
        low, high, exclusive = _NUMBERS[path]
        value = _bounded(f"policy.{path}", getattr(msg, path), low, high, open_low=exclusive)
        return {path: int(value) if path in _INTEGERS else value}
    raise InvalidArgumentError("update_mask", f"{shown(path)} is not a policy field")


def policy_from_pb(msg: pb.Policy, paths: Iterable[str], current: Policy) -> Policy:
    """``current`` with the fields named in ``paths`` replaced by validated values of ``msg``,
    path by path (``weights.skill`` and ``weights.load`` both apply)."""
    policy = current
    for path in paths:
        changes = _changes(path, msg, policy)
        policy = dataclasses.replace(policy, **changes)  # type: ignore[arg-type]  # validated
    return policy


def _channel_to_pb(policy: Policy, channel: Channel) -> pb.ChannelSetting:
    msg = pb.ChannelSetting(
        channel=channel_to_pb(channel),
        default_capacity=policy.channel_capacity.get(channel, 0),
        units=policy.units_for(channel),
        offer_timeout=duration(policy.offer_timeout_s.get(channel, 0)),
        wrap_up=duration(policy.wrap_up_s.get(channel, 0)),
        max_wait=duration(policy.max_wait_s.get(channel, 0)),
        expected_handle_time=duration(policy.expected_handle_s.get(channel, 0)),
    )
    sla = policy.sla_for(channel)
    if sla is not None:
        msg.sla_target.CopyFrom(duration(sla.target_s))
        msg.sla_goal = sla.goal
    return msg


def policy_to_pb(policy: Policy) -> pb.Policy:
    """Convert a policy for a response; every channel is listed."""
    return pb.Policy(
        strategy={v: k for k, v in STRATEGIES.items()}[policy.strategy],
        weights=pb.Weights(**dataclasses.asdict(policy.weights)),
        max_occupancy=policy.max_occupancy,
        occupancy_window=duration(policy.occupancy_window_s),
        channels=[_channel_to_pb(policy, channel) for channel in Channel],
        heartbeat_timeout=duration(policy.heartbeat_timeout_s),
        top_k=policy.top_k,
        performance_prior=policy.performance_prior,
        performance_prior_weight=policy.performance_prior_weight,
        performance_half_life=duration(policy.performance_half_life_s),
        idle_horizon=duration(policy.idle_horizon_s),
        version=policy.version,
        sla_at_risk=policy.sla_at_risk,
        escalation_priority_boost=policy.escalation_priority_boost,
        escalation_group=policy.escalation_group,
        widening=[
            pb.WideningStep(
                after=duration(step.after_s),
                level_drop=step.level_drop,
                teams=list(step.teams),
                any_region=step.any_region,
            )
            for step in policy.widening
        ],
        aging_per_priority=duration(policy.aging_s_per_priority),
        max_missed_offers=policy.max_missed_offers,
        callback_threshold=duration(policy.callback_threshold_s),
        reclaim_on_absence=policy.reclaim_on_absence,
        reclaim_channels=sorted(channel_to_pb(c) for c in policy.reclaim_channels),
        max_queue=policy.max_queue,
    )
