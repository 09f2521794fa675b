"""Key names and record decoding of the Redis key schema (documented in ``router.redis_store``).

Pure string handling, no driver: ``Keys`` spells every key of one tenant; the ``*_from_*``
functions turn hash fields, ZSET members and stream entries back into domain types.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from router import codec
from router import store_common as rules
from router.domain import (
    ActiveWork,
    AgentSnapshot,
    Assignment,
    AssignmentState,
    Channel,
    PerformanceStats,
    Presence,
    WorkSpan,
    frozen_map,
)
from router.errors import RouterError
from router.store import Event

SCHEMA_VERSION = "v1"
ACTIVE_PREFIX = "a:"
"""Agent-hash fields ``a:<assignment_id>`` hold the agent's active assignments."""
EVENT_FIELDS = ("type", "ts", "call_id", "agent_id")
"""Stream fields every event carries; the others are the event's data."""


class Keys:
    """Every key of one tenant: ``rt:v1:{<tenant>}:...`` (one Redis Cluster slot)."""

    __slots__ = ("prefix",)

    def __init__(self, tenant: str) -> None:
        """Refuses a tenant that would break the hash tag."""
        rules.check_tenant(tenant)
        self.prefix = f"rt:{SCHEMA_VERSION}:{{{tenant}}}:"

    def agent(self, agent_id: str) -> str:
        """HASH: profile, version, live state and ``a:<assignment_id>`` fields."""
        return f"{self.prefix}agent:{agent_id}"

    def work(self, agent_id: str) -> str:
        """ZSET: finished work spans scored by end time."""
        return f"{self.prefix}work:{agent_id}"

    def skill(self, skill: str) -> str:
        """SET: ids of the agents holding ``skill``."""
        return f"{self.prefix}idx:skill:{skill}"

    def asg(self, assignment_id: str) -> str:
        """HASH: one assignment."""
        return f"{self.prefix}asg:{assignment_id}"

    def call(self, call_id: str) -> str:
        """HASH: a call's status and current or last assignment id."""
        return f"{self.prefix}call:{call_id}"

    def req(self, request_id: str) -> str:
        """HASH: idempotency record of an Assign request."""
        return f"{self.prefix}req:{request_id}"

    @property
    def agents(self) -> str:
        """ZSET: every agent id, score 0."""
        return f"{self.prefix}agents"

    @property
    def policy(self) -> str:
        """STRING: the policy JSON."""
        return f"{self.prefix}policy"

    @property
    def fence(self) -> str:
        """STRING: the fencing-token counter."""
        return f"{self.prefix}fence"

    @property
    def events(self) -> str:
        """STREAM: the tenant's events."""
        return f"{self.prefix}events"


def pairs(flat: Sequence[str]) -> dict[str, str]:
    """A flat ``HGETALL`` reply from Lua (``[field, value, ...]``) as a dict."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def span_from_member(member: str) -> tuple[int, WorkSpan]:
    """``<assignment_id>|<start>|<end>|<units>`` as (end, span)."""
    _, start, end, units = member.rsplit("|", 3)
    return int(end), WorkSpan(int(start), int(end), int(units))


def agent_from_hash(
    fields: Mapping[str, str], members: Sequence[str], cutoff: int | None
) -> AgentSnapshot:
    """An ``AgentSnapshot`` from the agent hash and its work members (spans ending before
    ``cutoff`` dropped; ``None`` keeps all)."""
    try:
        active = []
        for name, value in fields.items():
            if name.startswith(ACTIVE_PREFIX):
                channel, units, start = value.split("|")
                active.append(
                    ActiveWork(name[len(ACTIVE_PREFIX) :], Channel(channel), int(units), int(start))
                )
        active.sort(key=lambda w: (w.start_ms, w.assignment_id))
        spans = [span_from_member(m) for m in members]
        return AgentSnapshot(
            profile=codec.decode_profile(fields["profile"], int(fields["version"])),
            presence=Presence(fields["presence"]),
            presence_reason=fields.get("presence_reason", ""),
            presence_since_ms=int(fields.get("presence_since", 0)),
            heartbeat_ms=int(fields.get("heartbeat", 0)),
            active=tuple(active),
            recent=tuple(
                sorted(
                    (span for end, span in spans if cutoff is None or end >= cutoff),
                    key=rules.span_order,
                )
            ),
            performance=PerformanceStats(
                weighted_sum=float(fields.get("perf_sum", 0)),
                weight=float(fields.get("perf_weight", 0)),
                updated_ms=int(fields.get("perf_ts", 0)),
            ),
            last_free_ms=int(fields.get("last_free", 0)),
            last_assigned_ms=int(fields.get("last_assigned", 0)),
            seq=int(fields["seq"]),
        )
    except (KeyError, ValueError) as exc:
        raise RouterError(f"stored agent is unreadable: {exc!r}") from exc


def agent_from_view(view: Sequence[Sequence[str]]) -> AgentSnapshot:
    """The ``agent_view`` a Lua script returns: ``[flat HGETALL, work members]``."""
    return agent_from_hash(pairs(view[0]), view[1], None)


def assignment_from_hash(assignment_id: str, fields: Mapping[str, str]) -> Assignment:
    """An ``Assignment`` from its ``asg:<id>`` hash."""
    try:
        explanation = fields.get("explanation", "")
        return Assignment(
            assignment_id=assignment_id,
            call_id=fields["call_id"],
            agent_id=fields["agent_id"],
            channel=Channel(fields["channel"]),
            units=int(fields["units"]),
            token=int(fields["token"]),
            state=AssignmentState(fields["state"]),
            created_ms=int(fields["created"]),
            ended_ms=int(fields.get("ended", 0)),
            explanation=codec.decode_explanation(explanation) if explanation else None,
        )
    except (KeyError, ValueError) as exc:
        raise RouterError(f"stored assignment {assignment_id} is unreadable: {exc!r}") from exc


def event_from_entry(event_id: str, fields: Mapping[str, str]) -> Event:
    """An ``Event`` from one stream entry."""
    data = {name: value for name, value in fields.items() if name not in EVENT_FIELDS}
    return Event(
        event_id=event_id,
        type=fields.get("type", ""),
        ts_ms=int(fields.get("ts", 0)),
        call_id=fields.get("call_id", ""),
        agent_id=fields.get("agent_id", ""),
        data=frozen_map(data),
    )
