"""The industry baselines, one call at a time, for comparison with ``BALANCED``.

Calls are taken in queue order (priority descending, then oldest first, then call id); each
goes to one eligible agent picked by the strategy's key, ties broken by agent id:

- ``LONGEST_IDLE``  smallest ``last_free_ms`` (the industry default)
- ``ROUND_ROBIN``   smallest ``last_assigned_ms``
- ``BEST_SKILL``    highest skill fit, then highest performance (ignores load: this is the
                    policy that overloads top performers, within the hard rules)
- ``RANDOM``        ``rng.choice`` over the eligible agents in agent-id order

Every placement updates the board, so an agent takes at most its free slots in a batch and
both routing clocks move to "now" (the next call goes to the next agent in line).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from router.board import Board, explain
from router.domain import AgentSnapshot, Call, Placement, Strategy
from scoring.match import PERFORMANCE, SKILL, ScoreCard

Key = Callable[[AgentSnapshot, ScoreCard], tuple[float | int | str, ...]]


def queue_order(calls: Sequence[Call]) -> list[int]:
    """Indexes of ``calls`` in service order: priority descending, oldest first, then id."""
    return sorted(
        range(len(calls)),
        key=lambda i: (-calls[i].priority, calls[i].created_ms, calls[i].call_id),
    )


_KEYS: dict[Strategy, Key] = {
    Strategy.LONGEST_IDLE: lambda agent, _: (agent.last_free_ms, agent.agent_id),
    Strategy.ROUND_ROBIN: lambda agent, _: (agent.last_assigned_ms, agent.agent_id),
    Strategy.BEST_SKILL: lambda agent, card: (
        -card.values[SKILL],
        -card.values[PERFORMANCE],
        agent.agent_id,
    ),
}


def plan_sequential(
    board: Board, calls: Sequence[Call], strategy: Strategy, rng: random.Random
) -> list[Placement]:
    """Place ``calls`` one at a time with a baseline ``strategy``; placements in input order."""
    placements: list[Placement | None] = [None] * len(calls)
    for index in queue_order(calls):
        call = calls[index]
        screening = board.screen(call)
        cards = {agent.agent_id: board.card(call, agent.agent_id) for agent in screening.eligible}
        chosen: str | None = None
        if screening.eligible:
            if strategy == Strategy.RANDOM:
                chosen = rng.choice(screening.eligible).agent_id
            else:
                key = _KEYS[strategy]
                chosen = min(
                    screening.eligible, key=lambda agent: key(agent, cards[agent.agent_id])
                ).agent_id
            board.place(call, chosen)
        parts = cards[chosen].parts if chosen is not None else {}
        ranking = [(agent_id, card.total) for agent_id, card in cards.items()]
        placements[index] = Placement(
            call_id=call.call_id,
            agent_id=chosen,
            explanation=explain(strategy, screening, chosen, parts, ranking),
        )
    return [placement for placement in placements if placement is not None]
