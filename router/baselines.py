"""The industry baselines, one call at a time, for comparison with ``BALANCED``.

Calls are taken in queue order (``router.ordering.queue_order``: overdue calls first, then by
the aging key ``origin - priority * aging_s_per_priority``, voice before other channels, then
call id), the same order ``BALANCED`` favours; each goes to one eligible agent picked by the
strategy's key, ties broken by agent id:

- ``LONGEST_IDLE``  idle the longest: smallest ``max(last_free_ms, last_assigned_ms)`` and,
                    for an agent holding nothing, the end of its latest scheduled absence over
                    (the industry default; an agent given a call is not idle any more, even
                    with slots left, so chats spread like calls; nor is time away idle time:
                    an absence's end restarts the clock as becoming AVAILABLE does)
- ``ROUND_ROBIN``   smallest ``last_assigned_ms``
- ``BEST_SKILL``    highest skill fit, then highest performance (ignores load: this is the
                    policy that overloads top performers, within the hard rules)
- ``RANDOM``        ``rng.choice`` over the eligible agents in agent-id order

Every placement updates the board, so an agent takes at most its free slots in a batch, and
both routing clocks move to "now" with the placement's order in the batch as a tie-break, so
the next call goes to the next agent in line.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence

from router.board import Board, explain
from router.domain import AgentSnapshot, Call, Placement, Strategy
from router.ordering import queue_order
from scoring.match import PART_NAMES, PERFORMANCE, SKILL

Key = Callable[[AgentSnapshot, tuple[float, ...]], tuple[float | int | str, ...]]
"""Sort key of an eligible agent from the agent and its unweighted part values."""

_SKILL = PART_NAMES.index(SKILL)
_PERFORMANCE = PART_NAMES.index(PERFORMANCE)


def _key(strategy: Strategy, board: Board) -> Key:
    """Sort key of an eligible agent under ``strategy`` (smallest first)."""
    if strategy == Strategy.LONGEST_IDLE:
        now_ms = board.now_ms
        return lambda agent, _: (
            max(
                agent.last_free_ms,
                agent.last_assigned_ms,
                0 if agent.active else agent.profile.back_from_absence_ms(now_ms),
            ),
            board.placed_rank(agent.agent_id),
            agent.agent_id,
        )
    if strategy == Strategy.ROUND_ROBIN:
        return lambda agent, _: (
            agent.last_assigned_ms,
            board.placed_rank(agent.agent_id),
            agent.agent_id,
        )
    if strategy == Strategy.BEST_SKILL:
        return lambda agent, values: (-values[_SKILL], -values[_PERFORMANCE], agent.agent_id)
    raise ValueError(f"{strategy} is not a sequential baseline")


def plan_sequential(
    board: Board, calls: Sequence[Call], strategy: Strategy, rng: random.Random
) -> list[Placement]:
    """Place ``calls`` one at a time with a baseline ``strategy``; placements in input order."""
    placements: list[Placement | None] = [None] * len(calls)
    for index in queue_order(calls, board.now_ms, board.policy):
        call = calls[index]
        screening = board.screen(call)
        values = {
            agent.agent_id: board.values(call, agent.agent_id) for agent in screening.eligible
        }
        chosen: str | None = None
        parts: Mapping[str, float] = {}
        if screening.eligible:
            if strategy == Strategy.RANDOM:
                chosen = rng.choice(screening.eligible).agent_id
            else:
                key = _key(strategy, board)
                chosen = min(
                    screening.eligible, key=lambda agent: key(agent, values[agent.agent_id])
                ).agent_id
            # The card before the placement: placing resets the agent's idle part.
            parts = board.card(call, chosen).parts
            board.place(call, chosen)
        ranking = [(agent_id, board.total_of(vals)) for agent_id, vals in values.items()]
        placements[index] = Placement(
            call_id=call.call_id,
            agent_id=chosen,
            explanation=explain(strategy, screening, chosen, parts, ranking),
        )
    return [placement for placement in placements if placement is not None]
