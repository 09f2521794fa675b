"""Routing policy: protobuf <-> domain with validation of every field."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable

from router.convert import CHANNELS, STRATEGIES, channel_to_pb, duration, enum_value, seconds
from router.domain import AGENT_UNIT_BUDGET, Channel, Policy, Weights, frozen_map
from router.errors import InvalidArgumentError
from router.v1 import types_pb2 as pb

POLICY_FIELDS = (
    "strategy",
    "weights",
    "max_occupancy",
    "occupancy_window",
    "channels",
    "heartbeat_timeout",
    "top_k",
    "performance_prior",
    "performance_prior_weight",
    "performance_half_life",
    "idle_horizon",
)
MAX_WEIGHT = 100.0


def _bounded(field: str, value: float, low: float, high: float, *, open_low: bool = False) -> float:
    if math.isnan(value) or value > high or value < low or (open_low and value == low):  # NaN too
        bracket = "(" if open_low else "["
        raise InvalidArgumentError(field, f"{value} is not in {bracket}{low:g}, {high:g}]")
    return value


def _seconds(field: str, msg: pb.Policy, name: str, low: float, high: float) -> int:
    value = seconds(getattr(msg, name))
    _bounded(f"policy.{field}", value, low, high)
    return round(value)


def _weights(msg: pb.Weights) -> Weights:
    values = {
        f.name: _bounded(f"policy.weights.{f.name}", getattr(msg, f.name), 0.0, MAX_WEIGHT)
        for f in dataclasses.fields(Weights)
    }
    return Weights(**values)


def _channels(msg: pb.Policy, current: Policy) -> dict[str, object]:
    capacity = dict(current.channel_capacity)
    units = dict(current.channel_units)
    seen: set[Channel] = set()
    for i, item in enumerate(msg.channels):
        where = f"policy.channels[{i}]"
        channel = enum_value(f"{where}.channel", item.channel, CHANNELS)
        if channel in seen:
            raise InvalidArgumentError(f"{where}.channel", f"{channel} is listed twice")
        seen.add(channel)
        capacity[channel] = int(_bounded(f"{where}.default_capacity", item.default_capacity, 0, 50))
        units[channel] = int(_bounded(f"{where}.units", item.units, 1, AGENT_UNIT_BUDGET))
    return {"channel_capacity": frozen_map(capacity), "channel_units": frozen_map(units)}


def _changes(path: str, msg: pb.Policy, current: Policy) -> dict[str, object]:
    """Validated domain values for one ``update_mask`` path."""
    if path == "strategy":
        return {"strategy": enum_value("policy.strategy", msg.strategy, STRATEGIES)}
    if path == "weights":
        return {"weights": _weights(msg.weights)}
    if path == "channels":
        return _channels(msg, current)
    if path in _DURATIONS:
        name, low, high = _DURATIONS[path]
        return {name: _seconds(path, msg, path, low, high)}
    if path in _NUMBERS:
        lowest, highest = _NUMBERS[path]
        exclusive = path == "max_occupancy"  # a cap of 0 would route nothing
        value = _bounded(f"policy.{path}", getattr(msg, path), lowest, highest, open_low=exclusive)
        return {path: int(value) if path == "top_k" else value}
    raise InvalidArgumentError("update_mask", f"{path!r} is not a policy field")


# mask path -> (domain field, lowest, highest) in seconds
_DURATIONS = {
    "occupancy_window": ("occupancy_window_s", 60, 86400),
    "heartbeat_timeout": ("heartbeat_timeout_s", 0, 3600),
    "performance_half_life": ("performance_half_life_s", 3600, 365 * 86400),
    "idle_horizon": ("idle_horizon_s", 1, 86400),
}
# mask path -> (lowest, highest)
_NUMBERS: dict[str, tuple[float, float]] = {
    "max_occupancy": (0.0, 1.0),
    "top_k": (1, 1000),
    "performance_prior": (0, 1),
    "performance_prior_weight": (0, 1000),
}


def policy_from_pb(msg: pb.Policy, paths: Iterable[str], current: Policy) -> Policy:
    """``current`` with the fields named in ``paths`` replaced by validated values of ``msg``."""
    changes: dict[str, object] = {}
    for path in paths:
        changes.update(_changes(path, msg, current))
    return dataclasses.replace(current, **changes)  # type: ignore[arg-type]  # validated above


def policy_to_pb(policy: Policy) -> pb.Policy:
    """Convert a policy for a response; every channel is listed."""
    return pb.Policy(
        strategy={v: k for k, v in STRATEGIES.items()}[policy.strategy],
        weights=pb.Weights(**dataclasses.asdict(policy.weights)),
        max_occupancy=policy.max_occupancy,
        occupancy_window=duration(policy.occupancy_window_s),
        channels=[
            pb.ChannelSetting(
                channel=channel_to_pb(channel),
                default_capacity=policy.channel_capacity.get(channel, 0),
                units=policy.units_for(channel),
            )
            for channel in Channel
        ],
        heartbeat_timeout=duration(policy.heartbeat_timeout_s),
        top_k=policy.top_k,
        performance_prior=policy.performance_prior,
        performance_prior_weight=policy.performance_prior_weight,
        performance_half_life=duration(policy.performance_half_life_s),
        idle_horizon=duration(policy.idle_horizon_s),
        version=policy.version,
    )
