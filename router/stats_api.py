"""GetStats: read what live statistics need from the store, compute them, convert to protobuf."""

from __future__ import annotations

from router.convert import PRESENCES, channel_to_pb, duration, timestamp
from router.domain import CallRecord, CallStatus, Channel
from router.stats import HISTORY_READ_MS, live_stats
from router.store import Store
from router.v1 import routing_pb2

MAX_QUEUE_READ = 10_000
MAX_SKILLS = 1_000
"""Skills a GetStats answer lists (the deepest); the rest are counted in ``skills_omitted``."""
MAX_AGENTS = 10_000
"""Agents a GetStats answer lists (in id order); the rest are counted in ``agents_omitted``.
With ``MAX_SKILLS``, the answer stays far under the 4 MiB a gRPC client takes by default
(skill names are at most 64 characters, agent ids 128)."""


def stats_to_pb(store: Store, tenant: str) -> routing_pb2.GetStatsResponse:
    """The tenant's live statistics (see ``router.stats``) as a GetStats response."""
    view = store.load_queue(tenant, MAX_QUEUE_READ)
    snapshot = view.snapshot
    now = snapshot.now_ms
    history = store.history(tenant, now - HISTORY_READ_MS)
    records = [CallRecord(call, CallStatus.QUEUED, None, now) for call in view.calls]
    stats = live_stats(records, snapshot.agents, history, snapshot.policy, now)
    depths = sorted(stats.queue_depth_by_skill.items(), key=lambda item: (-item[1], item[0]))
    agents = sorted(snapshot.agents, key=lambda agent: agent.agent_id)
    response = routing_pb2.GetStatsResponse(
        as_of=timestamp(now),
        queued=view.depth,
        longest_wait=duration(stats.longest_wait_ms / 1000),
        skills=[
            routing_pb2.SkillDepth(skill=skill, queued=count)
            for skill, count in depths[:MAX_SKILLS]
        ],
        presence=[
            routing_pb2.PresenceCount(presence=number, agents=stats.agents_by_presence[presence])
            for number, presence in PRESENCES.items()
        ],
        agents=[
            routing_pb2.AgentOccupancy(
                agent_id=agent.agent_id,
                occupancy=round(stats.occupancy[agent.agent_id], 4),
                units_used=agent.units_used,
            )
            for agent in agents[:MAX_AGENTS]
        ],
        skills_omitted=max(0, len(depths) - MAX_SKILLS),
        agents_omitted=max(0, len(agents) - MAX_AGENTS),
    )
    for channel in Channel:
        item = routing_pb2.ChannelStats(
            channel=channel_to_pb(channel),
            queued=stats.queue_depth_by_channel[channel],
            longest_wait=duration(stats.longest_wait_ms_by_channel[channel] / 1000),
            average_speed_of_answer_15m=duration(stats.average_answer_s_15m[channel] or 0.0),
            answered_15m=stats.answered_15m_by_channel[channel],
            abandoned_15m=stats.abandoned_15m_by_channel[channel],
            abandoned_60m=stats.abandoned_60m_by_channel[channel],
            expired_15m=stats.expired_15m_by_channel[channel],
            expired_60m=stats.expired_60m_by_channel[channel],
        )
        level_15, level_60 = stats.service_level_15m[channel], stats.service_level_60m[channel]
        if level_15 is not None:
            item.service_level_15m = level_15
        if level_60 is not None:
            item.service_level_60m = level_60
        response.channels.append(item)
    return response
