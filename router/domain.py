"""Domain types shared by the engine, the stores, the service and the simulator.

Everything here is a frozen, slotted dataclass or a string enum: no protobuf, no Redis,
no clock. Times are integer milliseconds since the Unix epoch (``*_ms``); durations in
seconds are named ``*_s``. The service takes "now" from the store (Redis server time), the
simulator from its simulated clock, so the engine is a pure function of its inputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Channel(StrEnum):
    """The medium a call arrives on; capacity is budgeted per channel."""

    VOICE = "voice"
    CHAT = "chat"
    EMAIL = "email"
    WHATSAPP = "whatsapp"
    SOCIAL = "social"


class Presence(StrEnum):
    """What the agent said about themselves. Only ``AVAILABLE`` agents receive work."""

    AVAILABLE = "available"
    BUSY = "busy"
    BREAK = "break"
    AWAY = "away"
    OFFLINE = "offline"
    NOT_RESPONDING = "not_responding"
    """Set by the router after ``Policy.max_missed_offers`` missed offers in a row; the
    agent gets no work until they set AVAILABLE again."""


class AbsenceKind(StrEnum):
    """Why an agent is scheduled away."""

    VACATION = "vacation"
    SICK_LEAVE = "sick_leave"
    TRAINING = "training"
    OTHER = "other"


class Strategy(StrEnum):
    """Routing policy. ``BALANCED`` is ours; the others are industry baselines."""

    BALANCED = "balanced"
    LONGEST_IDLE = "longest_idle"
    ROUND_ROBIN = "round_robin"
    BEST_SKILL = "best_skill"
    RANDOM = "random"


class Exclusion(StrEnum):
    """Why the engine refused an agent for a call (the first failing hard rule wins)."""

    NOT_AVAILABLE = "not_available"
    HEARTBEAT_EXPIRED = "heartbeat_expired"
    SCHEDULED_ABSENCE = "scheduled_absence"
    MISSING_SKILL = "missing_skill"
    SKILL_TOO_LOW = "skill_too_low"
    LANGUAGE = "language"
    CHANNEL_NOT_SERVED = "channel_not_served"
    AT_CAPACITY = "at_capacity"
    OCCUPANCY_CAP = "occupancy_cap"
    SHIFT_ENDING = "shift_ending"
    """The call's expected handle time would outlast the agent's shift or reach into a
    scheduled absence."""
    DECLINED = "declined"
    """The agent already rejected, missed or released this call."""
    WRONG_TEAM = "wrong_team"
    """The call is for a team (or, after widening, overflow teams) the agent is not in."""
    REGION = "region"
    """The call requires the customer's region and the agent is elsewhere (until widened)."""


class CallStatus(StrEnum):
    """Lifecycle of a call as the store records it (see the README's state diagram)."""

    QUEUED = "queued"
    """Waiting for an agent (also after a reject, an offer timeout, a release or a reclaim,
    with its original age)."""
    OFFERED = "offered"
    """Offered to an agent who has not accepted yet."""
    ASSIGNED = "assigned"
    """An agent holds it (assigned directly, or an accepted offer)."""
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    """Withdrawn by the platform while an agent held it."""
    ABANDONED = "abandoned"
    """The customer hung up while it was queued or offered."""
    EXPIRED = "expired"
    """It waited its channel's ``Policy.max_wait_s`` without an agent and left the queue."""


class AssignmentState(StrEnum):
    """Lifecycle of one assignment (one call given to one agent)."""

    OFFERED = "offered"
    """Waiting for the agent's Accept; holds the agent's capacity until it expires."""
    ACTIVE = "active"
    COMPLETED = "completed"
    RELEASED = "released"
    """Handed back by the agent; the call went back to the queue."""
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    TIMED_OUT = "timed_out"
    """The offer expired unanswered."""
    RECLAIMED = "reclaimed"
    """Taken back because the agent became absent; the call went back to the queue."""


def frozen_map(items: Mapping[K, V] | None = None) -> Mapping[K, V]:
    """Return a read-only copy of ``items`` so frozen dataclasses stay immutable."""
    return MappingProxyType(dict(items or {}))


DEFAULT_CHANNEL_CAPACITY: Mapping[Channel, int] = frozen_map(
    {Channel.VOICE: 1, Channel.CHAT: 3, Channel.EMAIL: 5, Channel.WHATSAPP: 3, Channel.SOCIAL: 3}
)
"""Items an agent may hold at once per channel when neither agent nor policy says otherwise."""

DEFAULT_CHANNEL_UNITS: Mapping[Channel, int] = frozen_map(
    {
        Channel.VOICE: 100,
        Channel.CHAT: 25,
        Channel.EMAIL: 20,
        Channel.WHATSAPP: 25,
        Channel.SOCIAL: 25,
    }
)
"""Units one item consumes from an agent's budget of ``AGENT_UNIT_BUDGET`` units."""

DEFAULT_EXPECTED_HANDLE_S: Mapping[Channel, int] = frozen_map(
    {
        Channel.VOICE: 300,
        Channel.CHAT: 600,
        Channel.EMAIL: 1800,
        Channel.WHATSAPP: 900,
        Channel.SOCIAL: 900,
    }
)
"""Expected handle time per channel: the shift-end rule and the handle-time part of an
outcome's value use it."""

NO_SECONDS: Mapping[Channel, int] = frozen_map(dict.fromkeys(Channel, 0))
"""Zero seconds on every channel (no offers, no wrap-up: the defaults)."""

AGENT_UNIT_BUDGET = 100
"""Every agent has 100 units to share across channels: one voice call, or four chats, ..."""

SKILL_LEVEL_MIN = 1
SKILL_LEVEL_MAX = 10


@dataclass(frozen=True, slots=True)
class Absence:
    """A scheduled absence: the agent gets no work in ``[start_ms, end_ms)``."""

    absence_id: str
    kind: AbsenceKind
    start_ms: int
    end_ms: int
    note: str = ""

    def covers(self, now_ms: int) -> bool:
        """True while ``now_ms`` lies inside the absence."""
        return self.start_ms <= now_ms < self.end_ms


@dataclass(frozen=True, slots=True)
class AgentProfile:
    """What an admin manages about an agent. Versioned for optimistic concurrency."""

    agent_id: str
    name: str = ""
    team: str = ""
    skills: Mapping[str, int] = field(default_factory=frozen_map)
    """Skill name -> level 1..10."""
    languages: frozenset[str] = frozenset()
    """Lower-case language tags (``en``, ``pt-br``); with none, only calls that need no
    language reach the agent."""
    region: str = ""
    timezone: str = ""
    """IANA time zone (``Europe/Lisbon``); empty when unknown."""
    capacity: Mapping[Channel, int] = field(default_factory=frozen_map)
    """Items at once per channel; a missing channel uses the policy default, 0 refuses it."""
    max_occupancy: float | None = None
    """Rolling occupancy cap in (0, 1]; ``None`` uses the policy's cap."""
    absences: tuple[Absence, ...] = ()
    shift_end_ms: int = 0
    """When the agent's current shift ends (0: unknown). Work expected to outlast it is not
    routed to them, and offered work is reclaimed when it comes."""
    version: int = 0
    """Incremented by the store on every profile write; 0 means never stored."""
    derived: tuple[object, ...] = field(default=(), init=False, repr=False, compare=False)
    """What ``scoring.load`` derived from this profile, kept on it so that it lives and
    dies with the object; not part of its value (``replace`` starts it empty)."""

    def back_from_absence_ms(self, now_ms: int) -> int:
        """The end of the latest absence over by ``now_ms`` (0 when none is): an agent
        holding nothing has been idle since then at most, as when presence becomes
        AVAILABLE (time away is not idle time)."""
        return max((a.end_ms for a in self.absences if a.end_ms <= now_ms), default=0)


@dataclass(frozen=True, slots=True)
class ActiveWork:
    """An assignment the agent is working on now."""

    assignment_id: str
    channel: Channel
    units: int
    start_ms: int
    offered: bool = False
    """Still an offer (not accepted yet)."""
    wrap_until_ms: int = 0
    """Non-zero once the work is done: the agent is in wrap-up and the slot stays taken
    until then. Work with ``0 < wrap_until_ms <= now`` no longer counts."""

    def holds(self, now_ms: int) -> bool:
        """Whether this work takes capacity at ``now_ms``."""
        return self.wrap_until_ms == 0 or self.wrap_until_ms > now_ms


@dataclass(frozen=True, slots=True)
class WorkSpan:
    """A finished piece of work, kept while it overlaps the occupancy window."""

    start_ms: int
    end_ms: int
    units: int


@dataclass(frozen=True, slots=True)
class PerformanceStats:
    """Exponentially decayed sums of outcome values, as of ``updated_ms``.

    ``weighted_sum`` is the decayed sum of outcome values (each in [0, 1]) and ``weight`` the
    decayed count; see ``scoring.performance`` for how they become a score.
    """

    weighted_sum: float = 0.0
    weight: float = 0.0
    updated_ms: int = 0


@dataclass(frozen=True, slots=True)
class AgentSnapshot:
    """One agent as the engine sees it: profile plus live state, read in one consistent pass."""

    profile: AgentProfile
    presence: Presence = Presence.OFFLINE
    presence_reason: str = ""
    presence_since_ms: int = 0
    heartbeat_ms: int = 0
    active: tuple[ActiveWork, ...] = ()
    recent: tuple[WorkSpan, ...] = ()
    performance: PerformanceStats = PerformanceStats()
    last_free_ms: int = 0
    """When the agent last finished work or became available (longest-idle reference)."""
    last_assigned_ms: int = 0
    """When the agent last received work (round-robin reference)."""
    missed_offers: int = 0
    """Offers missed in a row (reset by an accept or by becoming AVAILABLE)."""
    seq: int = 0
    """Live-state sequence number; every presence, load or profile change increments it.
    A commit re-checks it so a decision made on a stale view is re-planned, never applied."""
    derived: tuple[object, ...] = field(default=(), init=False, repr=False, compare=False)
    """What ``scoring.load`` derived from this snapshot (its packed row), kept on it so that
    it lives and dies with the object; not part of its value (``replace`` starts it empty)."""

    @property
    def agent_id(self) -> str:
        """Shortcut for ``profile.agent_id``."""
        return self.profile.agent_id

    def load(self, channel: Channel) -> int:
        """Items taking capacity on ``channel`` (stores put only work that still holds
        capacity, wrap-up included, in a snapshot)."""
        return sum(1 for work in self.active if work.channel == channel)

    @property
    def units_used(self) -> int:
        """Units of the budget taken by work in progress."""
        return sum(work.units for work in self.active)


@dataclass(frozen=True, slots=True)
class SlaTarget:
    """Answer ``goal`` (a fraction) of calls within ``target_s`` seconds."""

    target_s: int
    goal: float = 0.8


DEFAULT_SLA: Mapping[Channel, SlaTarget] = frozen_map(
    {
        Channel.VOICE: SlaTarget(20, 0.8),
        Channel.CHAT: SlaTarget(60, 0.8),
        Channel.EMAIL: SlaTarget(86400, 0.9),
        Channel.WHATSAPP: SlaTarget(300, 0.8),
        Channel.SOCIAL: SlaTarget(3600, 0.8),
    }
)
"""Industry-typical targets: voice 80 % in 20 s, chat 60 s, email first reply in 24 h."""


@dataclass(frozen=True, slots=True)
class WideningStep:
    """After a call has waited ``after_s``, accept more agents (bullseye routing)."""

    after_s: int
    level_drop: int = 0
    """Lower every required skill level by this much (never below 1)."""
    teams: tuple[str, ...] = ()
    """Overflow teams whose agents may now take calls bound to a team."""
    any_region: bool = False
    """Drop the call's hard region requirement."""


@dataclass(frozen=True, slots=True)
class Weights:
    """Weights of the soft objective (see ``scoring.match``). All must be >= 0."""

    skill: float = 3.0
    performance: float = 2.0
    region: float = 1.0
    previous_agent: float = 1.5
    idle: float = 1.0
    load: float = 2.0


@dataclass(frozen=True, slots=True)
class Policy:
    """Per-tenant routing policy. Validated by the service before the store accepts it."""

    strategy: Strategy = Strategy.BALANCED
    weights: Weights = Weights()
    max_occupancy: float = 0.85
    """Default rolling occupancy cap for agents that set none."""
    occupancy_window_s: int = 3600
    """Length of the rolling window occupancy is measured over."""
    channel_capacity: Mapping[Channel, int] = field(
        default_factory=lambda: DEFAULT_CHANNEL_CAPACITY
    )
    channel_units: Mapping[Channel, int] = field(default_factory=lambda: DEFAULT_CHANNEL_UNITS)
    heartbeat_timeout_s: int = 120
    """An agent whose last heartbeat is older than this is absent; 0 disables the rule."""
    top_k: int = 50
    """Candidates kept per call before the solve (best soft score first)."""
    performance_prior: float = 0.6
    """Score of an agent with no outcomes yet (the prior mean)."""
    performance_prior_weight: float = 5.0
    """How many outcomes' worth of weight the prior carries (shrinkage strength)."""
    performance_half_life_s: int = 14 * 24 * 3600
    """Outcomes lose half their weight after this long."""
    idle_horizon_s: int = 900
    """Idle time at which the fairness term saturates."""
    offer_timeout_s: Mapping[Channel, int] = field(default_factory=lambda: NO_SECONDS)
    """Per channel: 0 (or absent) assigns directly; > 0 offers first and waits this long for
    an Accept before the call goes back to the queue."""
    wrap_up_s: Mapping[Channel, int] = field(default_factory=lambda: NO_SECONDS)
    """Per channel: seconds after Complete before the agent's slot returns."""
    max_wait_s: Mapping[Channel, int] = field(default_factory=lambda: NO_SECONDS)
    """Per channel: a queued call that has waited this long without an agent
    (``ordering.limit_from_ms``: from its age origin, or from when an agent last handed it
    back after holding it) leaves the queue as EXPIRED (0 or absent: never)."""
    expected_handle_s: Mapping[Channel, int] = field(
        default_factory=lambda: DEFAULT_EXPECTED_HANDLE_S
    )
    sla: Mapping[Channel, SlaTarget] = field(default_factory=lambda: DEFAULT_SLA)
    sla_at_risk: float = 0.8
    """A waiting call is at risk once its predicted answer time (waited + estimated wait)
    passes the target, or it has waited this fraction of the target."""
    escalation_priority_boost: int = 2
    """Added to an at-risk call's priority (capped at 10)."""
    escalation_group: str = "supervisors"
    """Named in SLA_AT_RISK events for the supervisors' dashboards to notify."""
    widening: tuple[WideningStep, ...] = ()
    """Bullseye steps in increasing ``after_s``; an at-risk call jumps to the next one."""
    aging_s_per_priority: int = 60
    """Queue order: one priority level is worth this many seconds of waiting."""
    max_missed_offers: int = 3
    """Missed offers in a row before the agent becomes NOT_RESPONDING (0: never)."""
    callback_threshold_s: int = 300
    """Offer a callback when the estimated wait passes this (0: never)."""
    reclaim_on_absence: bool = True
    """Take back offers (and accepted work on ``reclaim_channels``) from agents who go
    offline, miss heartbeats, start an absence or reach their shift end."""
    reclaim_channels: frozenset[Channel] = frozenset({Channel.EMAIL, Channel.SOCIAL})
    """Channels whose accepted work can move to another agent when its holder leaves."""
    max_queue: int = 10_000
    """Queued calls per tenant before Assign answers RESOURCE_EXHAUSTED."""
    version: int = 0

    def capacity_for(self, profile: AgentProfile, channel: Channel) -> int:
        """Items ``profile`` may hold at once on ``channel`` (agent setting, else policy)."""
        if channel in profile.capacity:
            return profile.capacity[channel]
        return self.channel_capacity.get(channel, 0)

    def occupancy_cap_for(self, profile: AgentProfile) -> float:
        """The rolling occupancy cap that applies to ``profile``."""
        return self.max_occupancy if profile.max_occupancy is None else profile.max_occupancy

    def units_for(self, channel: Channel) -> int:
        """Budget units one item on ``channel`` takes."""
        return self.channel_units.get(channel, AGENT_UNIT_BUDGET)

    def handle_s_for(self, call: Call) -> int:
        """Seconds the call is expected to take (its own estimate, else the channel's)."""
        if call.expected_handle_s > 0:
            return call.expected_handle_s
        return self.expected_handle_s.get(call.channel, 0)

    def reserved_s_for(self, call: Call) -> int:
        """Seconds an agent must still be at work to be given the call (rule 10): its
        expected handle time, plus the channel's offer time-out where it is offered, since
        the agent may accept at the offer's last moment and only then start."""
        return self.handle_s_for(call) + self.offer_timeout_s.get(call.channel, 0)

    def sla_for(self, channel: Channel) -> SlaTarget | None:
        """The channel's SLA target, if any."""
        return self.sla.get(channel)


@dataclass(frozen=True, slots=True)
class SkillRequirement:
    """A skill the call needs, at ``min_level`` or better."""

    skill: str
    min_level: int = SKILL_LEVEL_MIN


@dataclass(frozen=True, slots=True)
class Call:
    """A piece of work to route: a phone call, chat, WhatsApp conversation, post or email."""

    call_id: str
    channel: Channel
    required_skills: tuple[SkillRequirement, ...] = ()
    preferred_skills: tuple[str, ...] = ()
    language: str = ""
    """Required language tag; empty means any."""
    region: str = ""
    timezone: str = ""
    priority: int = 0
    """0 (normal) .. 10 (most urgent)."""
    preferred_agent_id: str = ""
    """The customer's previous agent, favoured by the soft score."""
    attributes: Mapping[str, str] = field(default_factory=frozen_map)
    team: str = ""
    """Only agents of this team (or of a widening step's overflow teams); empty: any."""
    region_required: bool = False
    """Only agents in ``region`` until a widening step says ``any_region``."""
    expected_handle_s: int = 0
    """The platform's estimate of the work (0: the policy's per-channel default)."""
    created_ms: int = 0
    enqueued_ms: int = 0
    """When the call first waited (its age survives rejects, timeouts and releases);
    0 while it never waited. Aging, widening and SLA count from here."""
    excluded_agents: tuple[str, ...] = ()
    """Agents who rejected, missed or released this call: never offered it again."""
    handed_back_ms: int = 0
    """When an agent last handed it back to the queue after holding it (a Release, or
    accepted work reclaimed); 0: never. The queue time limit counts from here, else from
    the age origin (``ordering.limit_from_ms``)."""


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why the engine placed a call where it did (or could not place it)."""

    strategy: Strategy
    candidates: int = 0
    """Agents that passed every hard rule."""
    excluded: Mapping[Exclusion, int] = field(default_factory=frozen_map)
    """How many agents each hard rule refused."""
    score_parts: Mapping[str, float] = field(default_factory=frozen_map)
    """The chosen agent's weighted score parts (name -> contribution)."""
    score: float = 0.0
    runner_up_agent_id: str = ""
    runner_up_score: float = 0.0
    widening_step: int = 0
    """How many widening steps applied (0: none)."""


@dataclass(frozen=True, slots=True)
class Placement:
    """The engine's answer for one call: an agent, or ``None`` when nobody eligible is free."""

    call_id: str
    agent_id: str | None
    explanation: Explanation


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the engine may look at for one decision."""

    now_ms: int
    policy: Policy
    agents: tuple[AgentSnapshot, ...]
    unindexed_missing_skill: int = 0
    """Agents the store skipped because its skill index showed a required skill missing;
    reported in explanations as ``MISSING_SKILL`` exclusions."""
    queued: int = 0
    """Calls waiting in the tenant's queue when the snapshot was read (``load_snapshot``)."""


@dataclass(frozen=True, slots=True)
class Decision:
    """One placement per call, in the order the calls were given."""

    placements: tuple[Placement, ...]


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a completed call went; feeds the agent's performance score."""

    handle_time_s: float = 0.0
    csat: int = 0
    """Customer satisfaction 1..5, or 0 when not surveyed."""
    resolved: bool | None = None
    """First-contact resolution; ``None`` when unknown."""


@dataclass(frozen=True, slots=True)
class Assignment:
    """One call given to one agent, as stored."""

    assignment_id: str
    call_id: str
    agent_id: str
    channel: Channel
    units: int
    token: int
    """Fencing token: strictly increasing per tenant; release/complete must present it."""
    state: AssignmentState
    created_ms: int
    ended_ms: int = 0
    explanation: Explanation | None = None
    offer_expires_ms: int = 0
    """While OFFERED: when the offer times out."""


@dataclass(frozen=True, slots=True)
class CallRecord:
    """A call's stored status, with its current or last assignment."""

    call: Call
    status: CallStatus
    assignment: Assignment | None
    updated_ms: int
    position: int = 0
    """1-based place in the queue while QUEUED (0 otherwise)."""
    callback_requested: bool = False
    sla_at_risk: bool = False
    sla_breached: bool = False
