"""Key names and record decoding of the Redis key schema (documented in ``router.redis_store``).

Pure string handling, no driver: ``Keys`` spells every key of one tenant; the ``*_from_*``
functions turn hash fields, ZSET members, list items and stream entries back into domain types.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence

from router import codec
from router import store_common as rules
from router.domain import (
    ActiveWork,
    AgentSnapshot,
    Assignment,
    AssignmentState,
    Call,
    CallRecord,
    CallStatus,
    Channel,
    PerformanceStats,
    Presence,
    WorkSpan,
    frozen_map,
)
from router.errors import RouterError
from router.store import Event, HistoryEntry

SCHEMA_VERSION = "v1"
ACTIVE_PREFIX = "a:"
"""Agent-hash fields ``a:<assignment_id>`` hold the work that takes the agent's capacity."""
EVENT_FIELDS = ("type", "ts", "call_id", "agent_id")
"""Stream fields every event carries; the others are the event's data."""
TENANTS_KEY = f"rt:{SCHEMA_VERSION}:tenants"
"""SET of every tenant with agents or calls. The only key without a tenant hash tag; never
touched inside a script."""


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

    def timeline(self, call_id: str) -> str:
        """LIST: the call's events as JSON arrays."""
        return f"{self.prefix}timeline:{call_id}"

    @property
    def queue(self) -> str:
        """ZSET: queued call ids scored by ``queue_score``."""
        return f"{self.prefix}queue"

    @property
    def waits(self) -> str:
        """ZSET, scores 0: ``<channel>|<since, 15 digits>|<call id>`` per QUEUED call (the
        queue time limit's index: ``_lib.lua``'s ``wait_member``)."""
        return f"{self.prefix}queue:waits"

    @property
    def offers(self) -> str:
        """ZSET: OFFERED assignment ids scored by expiry."""
        return f"{self.prefix}offers"

    @property
    def history(self) -> str:
        """ZSET: answered/abandoned/completed entries scored by time."""
        return f"{self.prefix}history"

    @property
    def done_since(self) -> str:
        """STRING: when the ``done`` sets started counting (the first completion they held):
        until they cover a rate window, ``completions`` counts the history."""
        return f"{self.prefix}done:since"

    def done(self, channel: str) -> str:
        """ZSET: the channel's completions of the last ``RATE_WINDOW_MS`` (history keys scored
        by time): the service rate's count without reading the history."""
        return f"{self.prefix}done:{channel}"

    @property
    def lease(self) -> str:
        """STRING: the dispatcher lease, ``<expires_ms>|<owner>``."""
        return f"{self.prefix}lease:dispatch"

    @property
    def tick(self) -> str:
        """STRING: the tick marker, ``<expires_ms>|<owner>``: who makes the full pass."""
        return f"{self.prefix}lease:tick"

    @property
    def agents(self) -> str:
        """ZSET: every agent id, score 0."""
        return f"{self.prefix}agents"

    @property
    def ready(self) -> str:
        """ZSET: agents whose presence is AVAILABLE, scored by the units of their work in
        progress or offered (the routing index, kept by the scripts)."""
        return f"{self.prefix}idx:ready"

    @property
    def revs(self) -> str:
        """ZSET: agent id -> the ``rev`` of its hash (bumped on every change), deleted agents
        at the rev of their deletion; member ``""`` is the rev counter."""
        return f"{self.prefix}idx:revs"

    @property
    def gone(self) -> str:
        """ZSET: deleted agent id -> the rev of its deletion (its tombstone in ``revs``),
        pruned after a while; member ``""``: the highest rev pruned (the floor)."""
        return f"{self.prefix}idx:gone"

    @property
    def retired(self) -> str:
        """HASH: deleted agent id -> ``'<version>|<seq>'`` of its last life; an agent created
        again under the id continues from there (and takes the field away)."""
        return f"{self.prefix}idx:retired"

    @property
    def beats(self) -> str:
        """ZSET: agent id -> the time (ms) of its latest heartbeat (also in its hash)."""
        return f"{self.prefix}idx:beats"

    @property
    def beat_log(self) -> str:
        """ZSET: agent id -> the rev of its latest heartbeat (member ``""``: the counter), the
        heartbeats' own change log (a heartbeat takes no agent ``rev``)."""
        return f"{self.prefix}idx:beatlog"

    @property
    def legacy_revs(self) -> str:
        """HASH of routing index version 1 (``revs`` before it was a ZSET); deleted when the
        index is rebuilt."""
        return f"{self.prefix}idx:rev"

    @property
    def index_version(self) -> str:
        """STRING: the version of the routing index built for this tenant."""
        return f"{self.prefix}idx:version"

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


def work_from_field(assignment_id: str, value: str) -> ActiveWork:
    """``<channel>|<units>|<start>|<offered 0/1>|<wrap_until>`` (the last two are absent in
    records written before offers and wrap-up existed)."""
    parts = value.split("|")
    offered, wrap_until = (parts[3], parts[4]) if len(parts) >= 5 else ("0", "0")
    return ActiveWork(
        assignment_id,
        Channel(parts[0]),
        int(parts[1]),
        int(parts[2]),
        offered=offered == "1",
        wrap_until_ms=int(wrap_until),
    )


def agent_work(
    fields: Mapping[str, str],
    members: Sequence[str],
    known: Mapping[str, WorkSpan] | None = None,
) -> tuple[list[ActiveWork], list[WorkSpan]]:
    """The agent's work items (its hash's ``active:`` fields) and finished spans (its work
    ``members``), decoded; a member found in ``known`` (members decoded before: a member
    names its assignment and its times, so it always decodes alike) is not decoded again."""
    try:
        works = [
            work_from_field(name[len(ACTIVE_PREFIX) :], value)
            for name, value in fields.items()
            if name.startswith(ACTIVE_PREFIX)
        ]
        found = known or {}
        return works, [found.get(m) or span_from_member(m)[1] for m in members]
    except (ValueError, IndexError) as exc:
        raise RouterError(f"stored agent is unreadable: {exc!r}") from exc


def agent_from_hash(
    fields: Mapping[str, str], members: Sequence[str], cutoff: int, now: int
) -> AgentSnapshot:
    """An ``AgentSnapshot`` at ``now`` from the agent hash and its work members (spans ending
    before ``cutoff`` dropped)."""
    return agent_from_work(fields, *agent_work(fields, members), cutoff, now)


def agent_from_work(
    fields: Mapping[str, str],
    works: Sequence[ActiveWork],
    finished: Sequence[WorkSpan],
    cutoff: int,
    now: int,
) -> AgentSnapshot:
    """``agent_from_hash`` from the hash and its decoded work (``agent_work``)."""
    try:
        active, spans = rules.split_work(works, now)
        spans += finished
        return AgentSnapshot(
            profile=codec.decode_profile(fields["profile"], int(fields["version"])),
            presence=Presence(fields["presence"]),
            presence_reason=fields.get("presence_reason", ""),
            presence_since_ms=int(fields.get("presence_since", 0)),
            heartbeat_ms=int(fields.get("heartbeat", 0)),
            active=active,
            recent=rules.recent_spans(spans, cutoff),
            performance=PerformanceStats(
                weighted_sum=float(fields.get("perf_sum", 0)),
                weight=float(fields.get("perf_weight", 0)),
                updated_ms=int(fields.get("perf_ts", 0)),
            ),
            last_free_ms=int(fields.get("last_free", 0)),
            last_assigned_ms=int(fields.get("last_assigned", 0)),
            missed_offers=int(fields.get("missed", 0)),
            seq=int(fields["seq"]),
        )
    except (KeyError, ValueError, IndexError) as exc:
        raise RouterError(f"stored agent is unreadable: {exc!r}") from exc


def agent_from_view(view: Sequence[Sequence[str]]) -> AgentSnapshot:
    """The ``agent_view`` a Lua script returns: ``[flat HGETALL, work members, now]``."""
    now = int(str(view[2]))
    return agent_from_hash(pairs(view[0]), view[1], now - rules.WORK_RETENTION_MS, now)


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
            offer_expires_ms=int(fields.get("offer_expires", 0)),
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


def event_from_json(text: str) -> Event:
    """An ``Event`` from a timeline item: ``[id, type, ts, call_id, agent_id, k, v, ...]``."""
    try:
        item = [str(part) for part in json.loads(text)]
        data = dict(zip(item[5::2], item[6::2], strict=True))
        return Event(item[0], item[1], int(item[2]), item[3], item[4], frozen_map(data))
    except (ValueError, TypeError, IndexError) as exc:
        raise RouterError(f"stored timeline entry is unreadable: {exc!r}") from exc


_HISTORY_KINDS = {kind: kind for kind in ("answered", "abandoned", "expired", "completed")}
"""One string object per kind for every decoded entry (a mirror holds hundreds of
thousands)."""


def history_from_member(member: str, score: float) -> HistoryEntry:
    """``<padded event id>|<kind>|<channel>|<wait_ms>|<call_id>`` scored by time."""
    try:
        _, kind, channel, wait, call_id = member.split("|", 4)
        kind = _HISTORY_KINDS.get(kind, kind)
        return HistoryEntry(kind, Channel(channel), int(score), int(wait), call_id)
    except ValueError as exc:
        raise RouterError(f"stored history entry is unreadable: {exc!r}") from exc


def call_from_hash(fields: Mapping[str, str]) -> Call:
    """The call as it is now: the JSON it arrived with, plus its current priority, when it
    first waited and who declined it."""
    call = codec.decode_call(fields["call"])
    try:
        excluded = json.loads(fields.get("excluded", "[]")) or []
        return dataclasses.replace(
            call,
            priority=int(fields.get("priority", call.priority)),
            enqueued_ms=int(fields.get("enqueued", call.enqueued_ms)),
            excluded_agents=tuple(str(agent_id) for agent_id in excluded),
            handed_back_ms=int(fields.get("handed_back", 0)),
        )
    except (ValueError, TypeError) as exc:
        raise RouterError(f"stored call is unreadable: {exc!r}") from exc


def record_from_hash(
    fields: Mapping[str, str], asg: Mapping[str, str], rank: int | None
) -> CallRecord:
    """A ``CallRecord`` from the call hash, its assignment hash ({} if none) and its 0-based
    queue rank (``None`` when not queued)."""
    status = CallStatus(fields["status"])
    asg_id = fields.get("assignment_id", "")
    return CallRecord(
        call=call_from_hash(fields),
        status=status,
        assignment=assignment_from_hash(asg_id, asg) if asg_id and asg else None,
        updated_ms=int(fields["updated"]),
        position=rank + 1 if rank is not None and status == CallStatus.QUEUED else 0,
        callback_requested=fields.get("callback") == "1",
        sla_at_risk=fields.get("at_risk") == "1",
        sla_breached=fields.get("breached") == "1",
    )


def text(value: object) -> str:
    """A reply value as ``str`` (the client decodes responses)."""
    if not isinstance(value, str):
        raise RouterError("the redis client must be created with decode_responses=True")
    return value


def text_or_none(value: object) -> str | None:
    """A reply value as ``str``, ``None`` kept."""
    return None if value is None else text(value)


def texts(mapping: object) -> dict[str, str]:
    """A hash reply as ``dict[str, str]``."""
    if not isinstance(mapping, dict):
        raise RouterError(f"redis replied {type(mapping).__name__} where a hash was expected")
    return {text(name): text(value) for name, value in mapping.items()}
