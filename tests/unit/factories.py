"""Builders shared by the decision-core unit tests: agents, calls and one-shot decisions."""

from __future__ import annotations

import random

from router.domain import (
    Absence,
    ActiveWork,
    AgentProfile,
    AgentSnapshot,
    Call,
    Channel,
    Decision,
    PerformanceStats,
    Policy,
    Presence,
    SkillRequirement,
    Snapshot,
    WorkSpan,
    frozen_map,
)
from router.engine import decide

NOW = 1_700_000_000_000
"""2023-11-14T22:13:20Z."""
HOUR_MS = 3_600_000
MINUTE_MS = 60_000


def make_agent(
    agent_id: str,
    *,
    skills: dict[str, int] | None = None,
    languages: frozenset[str] = frozenset({"en"}),
    presence: Presence = Presence.AVAILABLE,
    heartbeat_ms: int = NOW,
    active: tuple[ActiveWork, ...] = (),
    recent: tuple[WorkSpan, ...] = (),
    performance: PerformanceStats | None = None,
    last_free_ms: int = NOW - 60_000,
    last_assigned_ms: int = NOW - 60_000,
    capacity: dict[Channel, int] | None = None,
    max_occupancy: float | None = None,
    absences: tuple[Absence, ...] = (),
    team: str = "",
    region: str = "",
    shift_end_ms: int = 0,
) -> AgentSnapshot:
    """An agent who passes every hard rule for ``make_call`` unless told otherwise."""
    return AgentSnapshot(
        profile=AgentProfile(
            agent_id=agent_id,
            team=team,
            skills=frozen_map({"billing": 5} if skills is None else skills),
            languages=languages,
            region=region,
            capacity=frozen_map(capacity or {}),
            max_occupancy=max_occupancy,
            absences=absences,
            shift_end_ms=shift_end_ms,
        ),
        presence=presence,
        heartbeat_ms=heartbeat_ms,
        active=active,
        recent=recent,
        performance=performance or PerformanceStats(),
        last_free_ms=last_free_ms,
        last_assigned_ms=last_assigned_ms,
    )


def make_call(
    call_id: str,
    channel: Channel = Channel.VOICE,
    *,
    min_level: int = 3,
    language: str = "en",
    priority: int = 0,
    preferred_agent_id: str = "",
    created_ms: int = NOW - 1000,
    enqueued_ms: int = 0,
    team: str = "",
    region: str = "",
    region_required: bool = False,
    expected_handle_s: int = 0,
    excluded_agents: tuple[str, ...] = (),
) -> Call:
    """A call needing ``billing`` at ``min_level`` in ``language``."""
    return Call(
        call_id=call_id,
        channel=channel,
        required_skills=(SkillRequirement("billing", min_level),),
        language=language,
        region=region,
        priority=priority,
        preferred_agent_id=preferred_agent_id,
        team=team,
        region_required=region_required,
        expected_handle_s=expected_handle_s,
        created_ms=created_ms,
        enqueued_ms=enqueued_ms,
        excluded_agents=excluded_agents,
    )


def work(channel: Channel, units: int, start_ms: int = NOW - 60_000) -> ActiveWork:
    """An item in progress."""
    return ActiveWork(
        assignment_id=f"w-{channel}-{start_ms}", channel=channel, units=units, start_ms=start_ms
    )


def stats(value: float, count: int) -> PerformanceStats:
    """Performance sums of ``count`` outcomes worth ``value``, as of now."""
    return PerformanceStats(weighted_sum=value * count, weight=float(count), updated_ms=NOW)


def run(
    agents: list[AgentSnapshot],
    calls: list[Call],
    policy: Policy | None = None,
    *,
    seed: int = 7,
    unindexed: int = 0,
    now_ms: int = NOW,
) -> Decision:
    """Decide ``calls`` on ``agents`` at ``now_ms``."""
    snapshot = Snapshot(
        now_ms=now_ms,
        policy=policy or Policy(),
        agents=tuple(agents),
        unindexed_missing_skill=unindexed,
    )
    return decide(snapshot, calls, rng=random.Random(seed))


def chosen(decision: Decision) -> list[str | None]:
    """Agent per placement, in call order."""
    return [placement.agent_id for placement in decision.placements]


def placed(decision: Decision) -> list[str]:
    """The agents given a call, sorted (unplaced calls left out)."""
    return sorted(agent for agent in chosen(decision) if agent is not None)
