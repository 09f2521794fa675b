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


class CallStatus(StrEnum):
    """Lifecycle of a call as the store records it."""

    ASSIGNED = "assigned"
    RELEASED = "released"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class AssignmentState(StrEnum):
    """Lifecycle of one assignment (one call given to one agent)."""

    ACTIVE = "active"
    COMPLETED = "completed"
    RELEASED = "released"
    CANCELLED = "cancelled"


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
    version: int = 0
    """Incremented by the store on every profile write; 0 means never stored."""


@dataclass(frozen=True, slots=True)
class ActiveWork:
    """An assignment the agent is working on now."""

    assignment_id: str
    channel: Channel
    units: int
    start_ms: int


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
    seq: int = 0
    """Live-state sequence number; every presence, load or profile change increments it.
    A commit re-checks it so a decision made on a stale view is re-planned, never applied."""

    @property
    def agent_id(self) -> str:
        """Shortcut for ``profile.agent_id``."""
        return self.profile.agent_id

    def load(self, channel: Channel) -> int:
        """Items in progress on ``channel``."""
        return sum(1 for work in self.active if work.channel == channel)

    @property
    def units_used(self) -> int:
        """Units of the budget taken by work in progress."""
        return sum(work.units for work in self.active)


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
    created_ms: int = 0


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


@dataclass(frozen=True, slots=True)
class CallRecord:
    """A call's stored status, with its current or last assignment."""

    call: Call
    status: CallStatus
    assignment: Assignment | None
    updated_ms: int
