"""The decision core: which agent takes each call.

``decide`` is a pure function of its arguments. It imports no Redis, gRPC, protobuf, clock or
module-level randomness: "now" is ``snapshot.now_ms``, the policy is ``snapshot.policy`` and
randomness comes from the ``rng`` the caller seeds. The service and the simulator call it
alike, so a replay reproduces every decision.

Pipeline, per call::

    widening (router.widening)  ->  hard eligibility (router.eligibility)
        ->  soft score (scoring.match)
        ->  strategy: BALANCED min-cost flow (router.balanced) or a baseline (router.baselines)
        ->  Placement with an Explanation (candidates, exclusions, score parts, runner-up)

Calls are served in queue order (``router.ordering``: SLA-overdue first, then age with
``aging_s_per_priority`` seconds per priority level): when agents are scarce, the calls
earlier in that order are the ones placed.

Determinism: agents are ordered by agent id before anything else, calls by queue order and
id; ties are broken by agent id (within a batch flow, by the agent-id order of its arcs; for a
lone ``BALANCED`` call, by ``router.balanced.tie_key`` of call and agent id, so equally good
agents share the calls), so identical inputs give an identical ``Decision``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from router.balanced import plan_balanced
from router.baselines import plan_sequential
from router.board import Board
from router.domain import Call, Decision, Snapshot, Strategy


def decide(snapshot: Snapshot, calls: Sequence[Call], *, rng: random.Random) -> Decision:
    """Place ``calls`` on the snapshot's agents under ``snapshot.policy``.

    Returns one placement per call in the order given; a call nobody eligible can take gets
    ``agent_id=None`` (that is a result, not an error). ``rng`` is used only by ``RANDOM``.
    """
    board = Board(snapshot)
    strategy = snapshot.policy.strategy
    if strategy == Strategy.BALANCED:
        placements = plan_balanced(board, calls)
    else:
        placements = plan_sequential(board, calls, strategy, rng)
    return Decision(placements=tuple(placements))
