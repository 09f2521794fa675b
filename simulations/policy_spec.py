"""The ``policy:`` and ``sla:`` sections of a scenario, read into a ``router.domain.Policy``.

Field names and meanings are those of ``router.domain.Policy`` (and of the service's
``UpdatePolicy``); every field is optional and defaults to the service default. Per-channel
maps are written ``{voice: 20, chat: 60}``. ``max_wait_s`` is the per-channel queue time
limit (0 to 30 days, 0: none): a call still waiting that long leaves the queue as expired, in
the simulator as in the service. Fields the simulator has no use for (heartbeats, offers,
callbacks, the queue length limit) are accepted so a policy copied from a running service
loads, and have no effect: agents heartbeat continuously and accept every assignment at once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from router.domain import (
    DEFAULT_SLA,
    Channel,
    Policy,
    SlaTarget,
    Strategy,
    Weights,
    WideningStep,
    frozen_map,
)
from router.policies import MAX_WAIT_S
from simulations import fields as f
from simulations.fields import ScenarioError

IGNORED = frozenset({"version"})
"""Accepted so a policy exported from a running service loads; the service sets it."""
LIVE_ONLY = frozenset(
    {
        "heartbeat_timeout_s",
        "offer_timeout_s",
        "max_missed_offers",
        "callback_threshold_s",
        "max_queue",
        "escalation_group",
    }
)
"""Read into the policy and used by a live replay; the offline simulator does not model them."""


def _channel_ints(low: int, high: int | None = None) -> Callable[[object, str], object]:
    def read(value: object, path: str) -> object:
        raw = f.mapping(value, path)
        return frozen_map(
            {
                f.channel(key, f.child(path, key)): f.integer(
                    val, f.child(path, key), low=low, high=high
                )
                for key, val in raw.items()
            }
        )

    return read


def _max_wait(value: object, path: str) -> object:
    """Per-channel queue time limits, as ``wrap_up_s``: whole seconds, 0 (none) up to the
    service's longest, 30 days."""
    limits: dict[Channel, int] = {}
    for key, val in f.mapping(value, path).items():
        where = f.child(path, key)
        channel = f.channel(key, where)
        seconds = f.integer(val, where, low=0)
        if seconds > MAX_WAIT_S:
            raise ScenarioError(
                where,
                f"{seconds} s is longer than the longest queue time limit, 30 days "
                f"({MAX_WAIT_S} s)",
            )
        limits[channel] = seconds
    return frozen_map(limits)


def _weights(value: object, path: str) -> object:
    names = [field.name for field in dataclasses.fields(Weights)]
    raw = f.mapping(value, path, names)
    return Weights(**{k: f.number(v, f.child(path, k), low=0) for k, v in raw.items()})


def _widening(value: object, path: str) -> object:
    steps: list[WideningStep] = []
    for i, entry in enumerate(f.sequence(value, path)):
        where = f.item(path, i)
        raw = f.mapping(entry, where, ("after_s", "level_drop", "teams", "any_region"))
        if "after_s" not in raw:
            raise ScenarioError(f.child(where, "after_s"), "is required")
        after = f.integer(raw["after_s"], f.child(where, "after_s"), low=0)
        if steps and after <= steps[-1].after_s:
            raise ScenarioError(f.child(where, "after_s"), "steps must have increasing after_s")
        teams = tuple(
            f.name(t, f.item(f.child(where, "teams"), j), "team")
            for j, t in enumerate(f.sequence(raw.get("teams", []), f.child(where, "teams")))
        )
        steps.append(
            WideningStep(
                after_s=after,
                level_drop=f.integer(raw.get("level_drop", 0), f.child(where, "level_drop"), low=0),
                teams=teams,
                any_region=f.boolean(raw.get("any_region", False), f.child(where, "any_region")),
            )
        )
    return tuple(steps)


def _channels(value: object, path: str) -> object:
    return frozenset(f.channel(v, f.item(path, i)) for i, v in enumerate(f.sequence(value, path)))


def _strategy(value: object, path: str) -> object:
    text = f.string(value, path).strip().lower()
    try:
        return Strategy(text)
    except ValueError:
        known = ", ".join(s.value for s in Strategy)
        raise ScenarioError(path, f"{value!r} is not a strategy ({known})") from None


READERS: Mapping[str, Callable[[object, str], object]] = {
    "strategy": _strategy,
    "weights": _weights,
    "max_occupancy": lambda v, p: f.number(v, p, low=0, high=1, low_open=True),
    "occupancy_window_s": lambda v, p: f.integer(v, p, low=0),
    "channel_capacity": _channel_ints(0),
    "channel_units": _channel_ints(0, 100),
    "top_k": lambda v, p: f.integer(v, p, low=0),
    "performance_prior": lambda v, p: f.number(v, p, low=0, high=1),
    "performance_prior_weight": lambda v, p: f.number(v, p, low=0),
    "performance_half_life_s": lambda v, p: f.integer(v, p, low=0),
    "idle_horizon_s": lambda v, p: f.integer(v, p, low=0),
    "wrap_up_s": _channel_ints(0),
    "max_wait_s": _max_wait,
    "expected_handle_s": _channel_ints(0),
    "sla_at_risk": lambda v, p: f.number(v, p, low=0, high=1, low_open=True),
    "escalation_priority_boost": lambda v, p: f.integer(v, p, low=0, high=10),
    "widening": _widening,
    "aging_s_per_priority": lambda v, p: f.integer(v, p, low=0),
    "reclaim_on_absence": f.boolean,
    "reclaim_channels": _channels,
    "heartbeat_timeout_s": lambda v, p: f.integer(v, p, low=0, high=86400),
    "offer_timeout_s": _channel_ints(0, 600),
    "max_missed_offers": lambda v, p: f.integer(v, p, low=0, high=100),
    "callback_threshold_s": lambda v, p: f.integer(v, p, low=0, high=86400),
    "max_queue": lambda v, p: f.integer(v, p, low=1, high=1_000_000),
    "escalation_group": lambda v, p: f.name(v, p, "escalation group"),
}


def read_policy(value: object, path: str = "policy") -> tuple[Policy, frozenset[str]]:
    """The ``policy`` mapping as a ``Policy``, and the names of the fields it set."""
    if value is None:
        return Policy(), frozenset()
    raw = f.mapping(value, path, set(READERS) | IGNORED)
    changes: dict[str, Any] = {
        key: READERS[key](val, f.child(path, key)) for key, val in raw.items() if key in READERS
    }
    return dataclasses.replace(Policy(), **changes), frozenset(raw)


def read_sla(value: object, path: str = "sla") -> Mapping[Channel, SlaTarget]:
    """Per-channel SLA targets over the service defaults: ``{voice: {target_s: 20, goal: 0.8}}``
    or just ``{voice: 20}`` (goal 0.8)."""
    targets = dict(DEFAULT_SLA)
    if value is None:
        return frozen_map(targets)
    for key, entry in f.mapping(value, path).items():
        where = f.child(path, key)
        chan = f.channel(key, where)
        if isinstance(entry, int | float) and not isinstance(entry, bool):
            targets[chan] = SlaTarget(f.integer(entry, where, low=1), 0.8)
            continue
        raw = f.mapping(entry, where, ("target_s", "goal"))
        if "target_s" not in raw:
            raise ScenarioError(f.child(where, "target_s"), "is required")
        targets[chan] = SlaTarget(
            f.integer(raw["target_s"], f.child(where, "target_s"), low=1),
            f.number(raw.get("goal", 0.8), f.child(where, "goal"), low=0, high=1),
        )
    return frozen_map(targets)
