"""Protobuf <-> domain, validating on the way in.

Protobuf stays at the edge: servicers call ``*_from_pb`` (which raise ``InvalidArgumentError``
naming the offending field) and ``*_to_pb``. Nothing else imports ``*_pb2``.
"""

from __future__ import annotations

import functools
import re
import zoneinfo
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from router.domain import (
    SKILL_LEVEL_MAX,
    SKILL_LEVEL_MIN,
    Absence,
    AbsenceKind,
    AgentProfile,
    AgentSnapshot,
    Assignment,
    AssignmentState,
    Call,
    CallRecord,
    CallStatus,
    Channel,
    Exclusion,
    Explanation,
    Policy,
    Presence,
    SkillRequirement,
    Strategy,
    frozen_map,
)
from router.eligibility import is_present
from router.errors import InvalidArgumentError
from router.store import Event
from router.v1 import types_pb2 as pb
from scoring import performance
from scoring.load import occupancy

MAX_ID = 128
MAX_TENANT = 64
MAX_NAME = 200
MAX_LABEL = 64
MAX_SKILLS = 50
MAX_CALL_SKILLS = 20
MAX_LANGUAGES = 20
MAX_ATTRIBUTES = 32
MAX_ATTRIBUTE_VALUE = 512
MAX_CAPACITY = 50
MAX_ABSENCE_MS = 366 * 24 * 3600 * 1000
MAX_PRIORITY = 10
MAX_HANDLE_S = 7 * 86400
MAX_TIMEZONE = 64
MAX_LANGUAGE = 35
MAX_SHOWN = 64
"""Longest slice of a rejected value echoed in an error message."""
MIN_TIME_S = 0
"""Earliest accepted Timestamp: 1970-01-01T00:00:00Z."""
MAX_TIME_S = 253_402_300_799
"""Latest accepted Timestamp: 9999-12-31T23:59:59Z (the protobuf Timestamp range)."""
MAX_DURATION_S = 315_576_000_000
"""Longest Duration protobuf defines (10,000 years); ranges per field are tighter."""

WATCH_CURSOR_HEADER = "router-watch-cursor"
"""The response header (initial metadata) a Watch sends before any event: the cursor its
stream starts after (the newest event when it opened "from now"); see routing.proto."""

_ID = re.compile(r"[A-Za-z0-9._:@-]+")
_TENANT = re.compile(r"[A-Za-z0-9._-]+")
_SKILL = re.compile(r"[a-z0-9_.-]+")
_LANGUAGE = re.compile(r"[a-z]{2,3}(-[a-z0-9]{1,8})*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
"""C0 and C1 control characters, DEL, and the Unicode line and paragraph separators."""
_NOT_ZONES = frozenset({"localtime", "Factory"})
"""Names ``zoneinfo`` lists that are not real IANA zones (a host file, a placeholder)."""

T = TypeVar("T")
K = TypeVar("K")

CHANNELS: Mapping[pb.Channel.ValueType, Channel] = {
    pb.CHANNEL_VOICE: Channel.VOICE,
    pb.CHANNEL_CHAT: Channel.CHAT,
    pb.CHANNEL_EMAIL: Channel.EMAIL,
    pb.CHANNEL_WHATSAPP: Channel.WHATSAPP,
    pb.CHANNEL_SOCIAL: Channel.SOCIAL,
}
PRESENCES: Mapping[pb.Presence.ValueType, Presence] = {
    pb.PRESENCE_AVAILABLE: Presence.AVAILABLE,
    pb.PRESENCE_BUSY: Presence.BUSY,
    pb.PRESENCE_BREAK: Presence.BREAK,
    pb.PRESENCE_AWAY: Presence.AWAY,
    pb.PRESENCE_OFFLINE: Presence.OFFLINE,
    pb.PRESENCE_NOT_RESPONDING: Presence.NOT_RESPONDING,
}
ABSENCE_KINDS: Mapping[pb.AbsenceKind.ValueType, AbsenceKind] = {
    pb.ABSENCE_KIND_VACATION: AbsenceKind.VACATION,
    pb.ABSENCE_KIND_SICK_LEAVE: AbsenceKind.SICK_LEAVE,
    pb.ABSENCE_KIND_TRAINING: AbsenceKind.TRAINING,
    pb.ABSENCE_KIND_OTHER: AbsenceKind.OTHER,
}
STRATEGIES: Mapping[pb.Strategy.ValueType, Strategy] = {
    pb.STRATEGY_BALANCED: Strategy.BALANCED,
    pb.STRATEGY_LONGEST_IDLE: Strategy.LONGEST_IDLE,
    pb.STRATEGY_ROUND_ROBIN: Strategy.ROUND_ROBIN,
    pb.STRATEGY_BEST_SKILL: Strategy.BEST_SKILL,
    pb.STRATEGY_RANDOM: Strategy.RANDOM,
}
EXCLUSIONS: Mapping[Exclusion, pb.ExclusionReason.ValueType] = {
    Exclusion.NOT_AVAILABLE: pb.EXCLUSION_REASON_NOT_AVAILABLE,
    Exclusion.HEARTBEAT_EXPIRED: pb.EXCLUSION_REASON_HEARTBEAT_EXPIRED,
    Exclusion.SCHEDULED_ABSENCE: pb.EXCLUSION_REASON_SCHEDULED_ABSENCE,
    Exclusion.MISSING_SKILL: pb.EXCLUSION_REASON_MISSING_SKILL,
    Exclusion.SKILL_TOO_LOW: pb.EXCLUSION_REASON_SKILL_TOO_LOW,
    Exclusion.LANGUAGE: pb.EXCLUSION_REASON_LANGUAGE,
    Exclusion.CHANNEL_NOT_SERVED: pb.EXCLUSION_REASON_CHANNEL_NOT_SERVED,
    Exclusion.AT_CAPACITY: pb.EXCLUSION_REASON_AT_CAPACITY,
    Exclusion.OCCUPANCY_CAP: pb.EXCLUSION_REASON_OCCUPANCY_CAP,
    Exclusion.SHIFT_ENDING: pb.EXCLUSION_REASON_SHIFT_ENDING,
    Exclusion.DECLINED: pb.EXCLUSION_REASON_DECLINED,
    Exclusion.WRONG_TEAM: pb.EXCLUSION_REASON_WRONG_TEAM,
    Exclusion.REGION: pb.EXCLUSION_REASON_REGION,
}
ASSIGNMENT_STATES: Mapping[AssignmentState, pb.AssignmentState.ValueType] = {
    AssignmentState.ACTIVE: pb.ASSIGNMENT_STATE_ACTIVE,
    AssignmentState.COMPLETED: pb.ASSIGNMENT_STATE_COMPLETED,
    AssignmentState.RELEASED: pb.ASSIGNMENT_STATE_RELEASED,
    AssignmentState.CANCELLED: pb.ASSIGNMENT_STATE_CANCELLED,
    AssignmentState.OFFERED: pb.ASSIGNMENT_STATE_OFFERED,
    AssignmentState.REJECTED: pb.ASSIGNMENT_STATE_REJECTED,
    AssignmentState.TIMED_OUT: pb.ASSIGNMENT_STATE_TIMED_OUT,
    AssignmentState.RECLAIMED: pb.ASSIGNMENT_STATE_RECLAIMED,
}
CALL_STATUSES: Mapping[CallStatus, pb.CallStatus.ValueType] = {
    CallStatus.QUEUED: pb.CALL_STATUS_QUEUED,
    CallStatus.OFFERED: pb.CALL_STATUS_OFFERED,
    CallStatus.ASSIGNED: pb.CALL_STATUS_ASSIGNED,
    CallStatus.COMPLETED: pb.CALL_STATUS_COMPLETED,
    CallStatus.CANCELLED: pb.CALL_STATUS_CANCELLED,
    CallStatus.ABANDONED: pb.CALL_STATUS_ABANDONED,
    CallStatus.EXPIRED: pb.CALL_STATUS_EXPIRED,
}


def _invert(table: Mapping[K, T]) -> Mapping[T, K]:
    return {value: key for key, value in table.items()}


# The tables above read the other way (domain value -> wire value), built once.
_CHANNEL_CODES = _invert(CHANNELS)
_PRESENCE_CODES = _invert(PRESENCES)
_ABSENCE_KIND_CODES = _invert(ABSENCE_KINDS)
_STRATEGY_CODES = _invert(STRATEGIES)


# --- scalar checks ---------------------------------------------------------------------------


def shown(value: str, limit: int = MAX_SHOWN) -> str:
    """A rejected value as an error message may quote it: at most ``limit`` characters,
    control and non-ASCII characters escaped, so errors never echo huge or unprintable
    input (gRPC refuses status messages over 16 KiB)."""
    clipped = ascii(value[:limit])
    return f"{clipped}..." if len(value) > limit else clipped


def _key(value: str) -> str:
    """A map key or mask path as part of a field path, clipped and escaped like ``shown``."""
    return shown(value)[1:-1] if len(value) <= MAX_SHOWN else shown(value)


def enum_value(field: str, number: int, table: Mapping[Any, T]) -> T:
    """Map a protobuf enum number; UNSPECIFIED (0) and unknown numbers are refused."""
    if number == 0:
        raise InvalidArgumentError(field, "is required")
    if number not in table:
        raise InvalidArgumentError(field, f"unknown value {number}")
    return table[number]


def identifier(field: str, value: str, *, max_len: int = MAX_ID) -> str:
    """A required id: 1..max_len characters of letters, digits and ``._:@-``."""
    if not value:
        raise InvalidArgumentError(field, "is required")
    if len(value) > max_len:
        raise InvalidArgumentError(field, f"is longer than {max_len} characters")
    if not _ID.fullmatch(value):
        raise InvalidArgumentError(field, "may contain only letters, digits and ._:@-")
    return value


def tenant(value: str) -> str:
    """Validate the tenant name used as the Redis hash tag."""
    if not value:
        raise InvalidArgumentError("tenant", "is required")
    if len(value) > MAX_TENANT or not _TENANT.fullmatch(value):
        raise InvalidArgumentError("tenant", "must be 1-64 letters, digits or ._-")
    return value


def text(field: str, value: str, *, max_len: int) -> str:
    """Optional free text without control characters."""
    if len(value) > max_len:
        raise InvalidArgumentError(field, f"is longer than {max_len} characters")
    if _CONTROL.search(value):
        raise InvalidArgumentError(field, "contains control characters")
    return value


def skill_name(field: str, value: str) -> str:
    """Skill names are case-insensitive and stored lower-case (ASCII only: ``str.lower``
    would turn the Kelvin sign into ``k``); surrounding spaces are dropped."""
    name = value.strip(" ")
    if not name:
        raise InvalidArgumentError(field, "skill name is required")
    if len(name) > MAX_LABEL or not name.isascii() or not _SKILL.fullmatch(name.lower()):
        raise InvalidArgumentError(field, "skill names are 1-64 of a-z, 0-9 and _.-")
    return name.lower()


def skill_level(field: str, value: int) -> int:
    """Levels are 1..10."""
    if not SKILL_LEVEL_MIN <= value <= SKILL_LEVEL_MAX:
        raise InvalidArgumentError(field, f"level {value} is not in 1..10")
    return value


def language(field: str, value: str) -> str:
    """A BCP-47-like tag, stored lower-case (``en``, ``pt-br``)."""
    tag = value.strip(" ")
    if len(tag) > MAX_LANGUAGE or not tag.isascii() or not _LANGUAGE.fullmatch(tag.lower()):
        raise InvalidArgumentError(
            field, f"{shown(value)} is not a language tag such as en or pt-br"
        )
    return tag.lower()


@functools.cache
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones()) - _NOT_ZONES


def timezone(field: str, value: str) -> str:
    """Empty, or an IANA time zone name."""
    if value and (len(value) > MAX_TIMEZONE or value not in _zones()):
        raise InvalidArgumentError(field, f"{shown(value)} is not an IANA time zone")
    return value


def ms_from_timestamp(ts: Timestamp) -> int:
    """Epoch milliseconds of a Timestamp."""
    return ts.seconds * 1000 + ts.nanos // 1_000_000


def instant(field: str, ts: Timestamp) -> int:
    """Epoch milliseconds of a client's Timestamp, which must lie in 1970-01-01..9999-12-31
    with nanos in 0..999,999,999 (so it converts back to a Timestamp in every response)."""
    if not 0 <= ts.nanos <= 999_999_999:
        raise InvalidArgumentError(field, f"nanos {ts.nanos} is not in 0..999999999")
    if not MIN_TIME_S <= ts.seconds <= MAX_TIME_S:
        raise InvalidArgumentError(field, "must be between 1970-01-01 and 9999-12-31")
    return ms_from_timestamp(ts)


def shift_end(msg: pb.Agent) -> int:
    """``agent.shift_end`` in epoch ms, 0 when unset (so a set one must come after 0 ms)."""
    if not msg.HasField("shift_end"):
        return 0
    end = instant("agent.shift_end", msg.shift_end)
    if end <= 0:
        raise InvalidArgumentError(
            "agent.shift_end", "must be after 1970-01-01T00:00:00.000Z (leave it unset for none)"
        )
    return end


def duration_seconds(field: str, d: Duration) -> float:
    """Seconds of a client's Duration, checked against the protobuf rules (at most 10,000
    years, nanos within a second and of the same sign as seconds)."""
    if not -999_999_999 <= d.nanos <= 999_999_999 or (d.seconds * d.nanos < 0):
        raise InvalidArgumentError(field, "is not a valid Duration (nanos out of range)")
    if not -MAX_DURATION_S <= d.seconds <= MAX_DURATION_S:
        raise InvalidArgumentError(field, "is not a valid Duration (over 10,000 years)")
    return seconds(d)


def timestamp(ms: int) -> Timestamp:
    """A Timestamp from epoch milliseconds."""
    ts = Timestamp()
    ts.FromMilliseconds(ms)
    return ts


def whole_seconds(field: str, value: float) -> int:
    """``value`` seconds rounded to whole seconds, as durations are kept; a positive value
    that would round to 0 (which means off, or the default) is refused."""
    whole = round(value)
    if whole == 0 and value > 0:
        raise InvalidArgumentError(
            field, f"{value:g} s would round to 0 s (off or the default): use 0 or at least 1 s"
        )
    return whole


def seconds(d: Duration) -> float:
    """A Duration in seconds."""
    return d.seconds + d.nanos / 1e9


def duration(s: float) -> Duration:
    """A Duration from seconds."""
    d = Duration()
    d.FromNanoseconds(round(s * 1e9))
    return d


# --- calls -----------------------------------------------------------------------------------


def call_from_pb(msg: pb.Call, field: str = "call") -> Call:
    """Validate and convert a call."""
    if len(msg.required_skills) > MAX_CALL_SKILLS:
        raise InvalidArgumentError(f"{field}.required_skills", f"more than {MAX_CALL_SKILLS}")
    if len(msg.preferred_skills) > MAX_CALL_SKILLS:
        raise InvalidArgumentError(f"{field}.preferred_skills", f"more than {MAX_CALL_SKILLS}")
    required: dict[str, SkillRequirement] = {}
    for i, req in enumerate(msg.required_skills):
        where = f"{field}.required_skills[{i}]"
        name = skill_name(f"{where}.skill", req.skill)
        if name in required:
            raise InvalidArgumentError(f"{where}.skill", f"{name!r} is listed twice")
        level = skill_level(f"{where}.min_level", req.min_level or SKILL_LEVEL_MIN)
        required[name] = SkillRequirement(name, level)
    preferred = tuple(
        dict.fromkeys(
            skill_name(f"{field}.preferred_skills[{i}]", s)
            for i, s in enumerate(msg.preferred_skills)
        )
    )
    if not 0 <= msg.priority <= MAX_PRIORITY:
        raise InvalidArgumentError(f"{field}.priority", f"{msg.priority} is not in 0..10")
    if len(msg.attributes) > MAX_ATTRIBUTES:
        raise InvalidArgumentError(f"{field}.attributes", f"more than {MAX_ATTRIBUTES} entries")
    for key, value in msg.attributes.items():
        if not key or len(key) > MAX_LABEL or _CONTROL.search(key):
            raise InvalidArgumentError(
                f"{field}.attributes", f"key {shown(key)} is not 1-64 characters without controls"
            )
        text(f"{field}.attributes[{_key(key)}]", value, max_len=MAX_ATTRIBUTE_VALUE)
    return Call(
        call_id=identifier(f"{field}.call_id", msg.call_id),
        channel=enum_value(f"{field}.channel", msg.channel, CHANNELS),
        required_skills=tuple(required.values()),
        preferred_skills=preferred,
        language=language(f"{field}.language", msg.language) if msg.language else "",
        region=text(f"{field}.region", msg.region, max_len=MAX_LABEL),
        timezone=timezone(f"{field}.timezone", msg.timezone),
        priority=msg.priority,
        preferred_agent_id=(
            identifier(f"{field}.preferred_agent_id", msg.preferred_agent_id)
            if msg.preferred_agent_id
            else ""
        ),
        attributes=frozen_map(dict(sorted(msg.attributes.items()))),
        team=text(f"{field}.team", msg.team, max_len=MAX_LABEL),
        region_required=_region_required(field, msg),
        expected_handle_s=_handle_seconds(f"{field}.expected_handle_time", msg),
    )


def _region_required(field: str, msg: pb.Call) -> bool:
    if msg.region_required and not msg.region:
        raise InvalidArgumentError(f"{field}.region", "is required when region_required is set")
    return msg.region_required


def _handle_seconds(field: str, msg: pb.Call) -> int:
    if not msg.HasField("expected_handle_time"):
        return 0
    value = duration_seconds(field, msg.expected_handle_time)
    if not 0 <= value <= MAX_HANDLE_S:
        raise InvalidArgumentError(field, "must be between 0 and 7 days")
    return whole_seconds(field, value)


def call_to_pb(call: Call) -> pb.Call:
    """Convert a call for a response."""
    msg = pb.Call(
        call_id=call.call_id,
        channel=_CHANNEL_CODES[call.channel],
        required_skills=[
            pb.SkillRequirement(skill=r.skill, min_level=r.min_level) for r in call.required_skills
        ],
        preferred_skills=list(call.preferred_skills),
        language=call.language,
        region=call.region,
        timezone=call.timezone,
        priority=call.priority,
        preferred_agent_id=call.preferred_agent_id,
        attributes=dict(call.attributes),
        team=call.team,
        region_required=call.region_required,
    )
    if call.expected_handle_s:
        msg.expected_handle_time.CopyFrom(duration(call.expected_handle_s))
    return msg


def explanation_to_pb(explanation: Explanation) -> pb.Explanation:
    """Convert an explanation, exclusions in a stable order."""
    return pb.Explanation(
        strategy=_STRATEGY_CODES[explanation.strategy],
        candidates=explanation.candidates,
        excluded=[
            pb.Exclusion(reason=EXCLUSIONS[reason], count=count)
            for reason, count in sorted(explanation.excluded.items())
            if count
        ],
        score_parts=[
            pb.ScorePart(name=name, value=value) for name, value in explanation.score_parts.items()
        ],
        score=explanation.score,
        runner_up_agent_id=explanation.runner_up_agent_id,
        runner_up_score=explanation.runner_up_score,
        widening_step=explanation.widening_step,
    )


def assignment_to_pb(assignment: Assignment) -> pb.Assignment:
    """Convert an assignment."""
    msg = pb.Assignment(
        assignment_id=assignment.assignment_id,
        call_id=assignment.call_id,
        agent_id=assignment.agent_id,
        channel=_CHANNEL_CODES[assignment.channel],
        fencing_token=assignment.token,
        state=ASSIGNMENT_STATES[assignment.state],
        created_at=timestamp(assignment.created_ms),
    )
    if assignment.ended_ms:
        msg.ended_at.CopyFrom(timestamp(assignment.ended_ms))
    if assignment.explanation is not None:
        msg.explanation.CopyFrom(explanation_to_pb(assignment.explanation))
    if assignment.offer_expires_ms and assignment.state == AssignmentState.OFFERED:
        msg.offer_expires_at.CopyFrom(timestamp(assignment.offer_expires_ms))
    return msg


def call_record_to_pb(
    record: CallRecord,
    now_ms: int,
    *,
    estimated_wait_s: float | None = None,
    timeline: Iterable[Event] = (),
) -> pb.CallInfo:
    """Convert a stored call; ``waited`` runs until ``now_ms`` while the call waits."""
    call = record.call
    origin = call.enqueued_ms or call.created_ms
    waiting = record.status in (CallStatus.QUEUED, CallStatus.OFFERED)
    msg = pb.CallInfo(
        call=call_to_pb(call),
        status=CALL_STATUSES[record.status],
        updated_at=timestamp(record.updated_ms),
        position=record.position,
        callback_requested=record.callback_requested,
        sla_at_risk=record.sla_at_risk,
        sla_breached=record.sla_breached,
        timeline=[event_to_pb(e) for e in timeline],
    )
    if origin:
        if waiting:
            end = now_ms
        elif record.status in _LEFT_WAITING:  # the wait ended with the call
            end = record.updated_ms
        else:
            end = record.assignment.created_ms if record.assignment else 0
        msg.waited.CopyFrom(duration(max(0, end - origin) / 1000))
    if record.assignment is not None:
        msg.assignment.CopyFrom(assignment_to_pb(record.assignment))
    if estimated_wait_s is not None:
        msg.estimated_wait.CopyFrom(duration(estimated_wait_s))
    return msg


_LEFT_WAITING = frozenset({CallStatus.ABANDONED, CallStatus.EXPIRED})
"""Calls that ended while they waited (queued or offered): their wait ran until then."""


def event_to_pb(event: Event) -> pb.Event:
    """Convert a stream event."""
    return pb.Event(
        event_id=event.event_id,
        type=event.type,
        time=timestamp(event.ts_ms),
        call_id=event.call_id,
        agent_id=event.agent_id,
        data=dict(event.data),
    )


# --- agents ----------------------------------------------------------------------------------


def skills_from_pb(field: str, skills: Mapping[str, int]) -> dict[str, int]:
    """Validate an agent's skill map."""
    if len(skills) > MAX_SKILLS:
        raise InvalidArgumentError(field, f"more than {MAX_SKILLS} skills")
    out: dict[str, int] = {}
    for raw, level in skills.items():
        name = skill_name(f"{field}[{_key(raw)}]", raw)
        if name in out:
            raise InvalidArgumentError(f"{field}[{_key(raw)}]", f"{name!r} is listed twice")
        out[name] = skill_level(f"{field}[{name}]", level)
    return dict(sorted(out.items()))


def languages_from_pb(field: str, values: Sequence[str]) -> frozenset[str]:
    """Validate language tags (at most ``MAX_LANGUAGES``)."""
    if len(values) > MAX_LANGUAGES:
        raise InvalidArgumentError(field, f"more than {MAX_LANGUAGES} languages")
    return frozenset(language(f"{field}[{i}]", v) for i, v in enumerate(values))


def capacity_from_pb(field: str, values: Iterable[pb.ChannelCapacity]) -> dict[Channel, int]:
    """Validate per-channel capacities (each channel at most once, 0..50 items)."""
    out: dict[Channel, int] = {}
    for i, item in enumerate(values):
        channel = enum_value(f"{field}[{i}].channel", item.channel, CHANNELS)
        if channel in out:
            raise InvalidArgumentError(f"{field}[{i}].channel", f"{channel} is listed twice")
        if not 0 <= item.max_items <= MAX_CAPACITY:
            raise InvalidArgumentError(
                f"{field}[{i}].max_items", f"{item.max_items} is not in 0..{MAX_CAPACITY}"
            )
        out[channel] = item.max_items
    return out


def occupancy_cap(field: str, value: float) -> float:
    """An occupancy cap in (0, 1]."""
    if not 0 < value <= 1:
        raise InvalidArgumentError(field, f"{value} is not in (0, 1]")
    return value


AGENT_FIELDS = (
    "name",
    "team",
    "skills",
    "languages",
    "region",
    "timezone",
    "capacity",
    "max_occupancy",
    "shift_end",
)


def agent_fields_from_pb(msg: pb.Agent, paths: Iterable[str]) -> dict[str, object]:
    """Validated values of the editable agent fields named in ``paths``."""
    values: dict[str, object] = {}
    for path in paths:
        if path == "name":
            values[path] = text("agent.name", msg.name, max_len=MAX_NAME)
        elif path == "team":
            values[path] = text("agent.team", msg.team, max_len=MAX_LABEL)
        elif path == "skills":
            values[path] = frozen_map(skills_from_pb("agent.skills", msg.skills))
        elif path == "languages":
            values[path] = languages_from_pb("agent.languages", msg.languages)
        elif path == "region":
            values[path] = text("agent.region", msg.region, max_len=MAX_LABEL)
        elif path == "timezone":
            values[path] = timezone("agent.timezone", msg.timezone)
        elif path == "capacity":
            values[path] = frozen_map(capacity_from_pb("agent.capacity", msg.capacity))
        elif path == "max_occupancy":
            values[path] = (
                occupancy_cap("agent.max_occupancy", msg.max_occupancy)
                if msg.HasField("max_occupancy")
                else None
            )
        elif path == "shift_end":
            values["shift_end_ms"] = shift_end(msg)
        else:
            raise InvalidArgumentError(
                "update_mask", f"{shown(path)} is not an editable agent field"
            )
    return values


def agent_from_pb(msg: pb.Agent) -> AgentProfile:
    """A new agent's profile from a CreateAgent request."""
    values = agent_fields_from_pb(msg, AGENT_FIELDS)
    return AgentProfile(agent_id=identifier("agent.agent_id", msg.agent_id), **values)  # type: ignore[arg-type]  # validated per field above


def absence_from_pb(msg: pb.Absence, absence_id: str, field: str = "absence") -> Absence:
    """Validate an absence: a kind, start < end, at most 366 days long."""
    kind = enum_value(f"{field}.kind", msg.kind, ABSENCE_KINDS)
    if not msg.HasField("start_time"):
        raise InvalidArgumentError(f"{field}.start_time", "is required")
    if not msg.HasField("end_time"):
        raise InvalidArgumentError(f"{field}.end_time", "is required")
    start = instant(f"{field}.start_time", msg.start_time)
    end = instant(f"{field}.end_time", msg.end_time)
    if end <= start:
        raise InvalidArgumentError(f"{field}.end_time", "must be after start_time")
    if end - start > MAX_ABSENCE_MS:
        raise InvalidArgumentError(f"{field}.end_time", "an absence lasts at most 366 days")
    return Absence(
        absence_id=absence_id,
        kind=kind,
        start_ms=start,
        end_ms=end,
        note=text(f"{field}.note", msg.note, max_len=MAX_NAME),
    )


def absence_to_pb(absence: Absence) -> pb.Absence:
    """Convert an absence."""
    return pb.Absence(
        absence_id=absence.absence_id,
        kind=_ABSENCE_KIND_CODES[absence.kind],
        start_time=timestamp(absence.start_ms),
        end_time=timestamp(absence.end_ms),
        note=absence.note,
    )


def presence_to_pb(presence: Presence) -> pb.Presence.ValueType:
    """The protobuf enum number of a presence."""
    return _PRESENCE_CODES[presence]


def channel_to_pb(channel: Channel) -> pb.Channel.ValueType:
    """The protobuf enum number of a channel."""
    return _CHANNEL_CODES[channel]


def profile_to_pb(profile: AgentProfile) -> pb.Agent:
    """The admin-managed part of an agent (status is filled by the servicer)."""
    msg = pb.Agent(
        agent_id=profile.agent_id,
        name=profile.name,
        team=profile.team,
        skills=dict(profile.skills),
        languages=sorted(profile.languages),
        region=profile.region,
        timezone=profile.timezone,
        capacity=[
            pb.ChannelCapacity(channel=channel_to_pb(ch), max_items=n)
            for ch, n in sorted(profile.capacity.items())
        ],
        absences=[absence_to_pb(a) for a in profile.absences],
        version=profile.version,
    )
    if profile.max_occupancy is not None:
        msg.max_occupancy = profile.max_occupancy
    if profile.shift_end_ms:
        msg.shift_end.CopyFrom(timestamp(profile.shift_end_ms))
    return msg


def agent_to_pb(agent: AgentSnapshot, policy: Policy, now_ms: int) -> pb.Agent:
    """An agent with its live status (load, occupancy, performance, routable) at ``now_ms``."""
    msg = profile_to_pb(agent.profile)
    status = msg.status
    status.presence = presence_to_pb(agent.presence)
    status.presence_reason = agent.presence_reason
    if agent.presence_since_ms:
        status.presence_since.CopyFrom(timestamp(agent.presence_since_ms))
    if agent.heartbeat_ms:
        status.last_heartbeat.CopyFrom(timestamp(agent.heartbeat_ms))
    loads: dict[pb.Channel.ValueType, int] = {}
    for work in agent.active:
        channel = channel_to_pb(work.channel)
        loads[channel] = loads.get(channel, 0) + 1
    status.load.extend(pb.ChannelCapacity(channel=c, max_items=n) for c, n in sorted(loads.items()))
    status.units_used = agent.units_used
    status.occupancy = round(occupancy(agent, now_ms, policy.occupancy_window_s), 4)
    status.performance_score = round(performance.score(agent.performance, now_ms, policy), 4)
    shift_over = 0 < agent.profile.shift_end_ms <= now_ms
    status.routable = is_present(agent, now_ms, policy) and not shift_over
    status.missed_offers = agent.missed_offers
    return msg
