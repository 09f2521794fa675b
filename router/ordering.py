"""Queue order: who is served first when there are more calls than free agents.

Every call has an age origin, ``enqueued_ms`` (when it first waited; it survives rejects,
timeouts and releases), else ``created_ms``. A call with neither has not waited at all::

    waited_ms  = max(0, now - origin)                         (0 when origin is 0)
    order_key  = origin - priority * policy.aging_s_per_priority * 1000     (lowest first)
    overdue    = target_s > 0 and (waited > target or waited >= policy.sla_at_risk * target)

so one priority level is worth ``aging_s_per_priority`` seconds of waiting: a call that has
waited longer than ``priority difference * aging_s_per_priority`` beats a more urgent newer
one, and every call moves up as it ages. ``target`` is the channel's SLA target
(``policy.sla_for``); ``overdue`` is ``forecast.sla_state`` with no estimated wait, the part of
SLA risk the engine can see on its own.

Service order inside one decision (``queue_order``)::

    (not overdue, order_key, channel rank (voice first: a caller on the line), call id)

Overdue calls come first, among them and among the rest by ``order_key``. The store keeps its
queue by the same ``order_key`` (``router.store.queue_score`` should delegate here).
"""

from __future__ import annotations

from collections.abc import Sequence

from router.domain import Call, Channel, Policy

CHANNEL_RANK = {channel: rank for rank, channel in enumerate(Channel)}
"""Tie-break between channels: voice (a caller on the line) first, then declaration order."""


def origin_ms(call: Call) -> int:
    """When the call's wait started: ``enqueued_ms``, else ``created_ms`` (0: unknown)."""
    return call.enqueued_ms or call.created_ms


def limit_from_ms(call: Call) -> int:
    """When the call's wait toward its channel's queue time limit began: when an agent
    last handed it back after holding it, else its age origin (0: unknown)."""
    return call.handed_back_ms or origin_ms(call)


def waited_ms(call: Call, now_ms: int) -> int:
    """How long the call has waited at ``now_ms`` (0 when it has no age origin)."""
    origin = origin_ms(call)
    return max(0, now_ms - origin) if origin else 0


def order_key(call: Call, policy: Policy, *, now_ms: int = 0) -> float:
    """Queue order key, lowest first (see the module docstring).

    A call with no age origin counts as arriving at ``now_ms`` (the default 0 keeps the
    store's plain formula); within a decision the engine passes its "now" so such a call
    is treated as brand new rather than as the oldest of all.
    """
    origin = origin_ms(call) or now_ms
    return float(origin - call.priority * policy.aging_s_per_priority * 1000)


def overdue(call: Call, now_ms: int, policy: Policy) -> bool:
    """True once the call has waited past its SLA target or ``sla_at_risk`` of it."""
    target = policy.sla_for(call.channel)
    if target is None or target.target_s <= 0:
        return False
    target_ms = target.target_s * 1000
    waited = waited_ms(call, now_ms)
    return waited > target_ms or waited >= policy.sla_at_risk * target_ms


def queue_order(calls: Sequence[Call], now_ms: int, policy: Policy) -> list[int]:
    """Indexes of ``calls`` in service order (see the module docstring)."""
    return sorted(
        range(len(calls)),
        key=lambda i: (
            not overdue(calls[i], now_ms, policy),
            order_key(calls[i], policy, now_ms=now_ms),
            CHANNEL_RANK[calls[i].channel],
            calls[i].call_id,
        ),
    )
