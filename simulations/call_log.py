"""What happened to each call of a simulated day: the simulator's raw outcome.

Both ways of running a day fill one (``simulations.simulator``'s event loop and
``simulations.pooled``), and ``simulations.simulator`` turns it into records and KPIs. Per
call, in trace order, in epoch milliseconds of the simulated clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class QueueTrace:
    """Calls waiting after each millisecond the queue changed, as two columns of ints (no
    tuple per change for the garbage collector to track)."""

    times: list[int] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)

    def record(self, at: int, size: int) -> None:
        """``size`` calls wait after a change at ``at`` (not before the last one recorded)."""
        if self.times and self.times[-1] == at:
            self.sizes[-1] = size
        else:
            self.times.append(at)
            self.sizes.append(size)


@dataclass(slots=True)
class CallLog:
    """Per call (trace order) and for the run as a whole."""

    created: list[int]
    """When each call arrived."""
    answered: list[int | None]
    """When an agent first took it."""
    ended: list[int | None]
    """When it was completed, hung up or expired."""
    handled_ms: list[int | None]
    """How long the completing agent worked on it (wrap-up excluded)."""
    agent_of: list[str]
    """Who holds or completed it ("" if nobody)."""
    abandoned: list[bool]
    fit: list[float | None]
    """``scoring.match.skill_fit`` of the completing agent."""
    quality: list[float | None]
    """Effective quality of the handling (``simulations.outcomes``)."""
    reclaimed: list[int]
    """Times it was taken back from an agent who left."""
    expired: list[bool] = field(default_factory=list)
    """Whether it left the queue at its channel's queue time limit (``Policy.max_wait_s``);
    empty when the policy sets none (no call can expire)."""
    events: int = 0
    """Events the run handled."""
    queue: QueueTrace = field(default_factory=QueueTrace)
    """Calls waiting after every millisecond the queue changed."""
    end_ms: int = 0
    """Where the run stopped: busy and staffed time end here."""

    @staticmethod
    def empty(created: list[int], *, expiring: bool = False) -> CallLog:
        """A log of calls arriving at ``created`` that nothing has happened to yet
        (``expiring``: the policy sets a queue time limit, so ``expired`` is kept)."""
        n = len(created)
        return CallLog(
            created=created,
            answered=[None] * n,
            ended=[None] * n,
            handled_ms=[None] * n,
            agent_of=[""] * n,
            abandoned=[False] * n,
            fit=[None] * n,
            quality=[None] * n,
            reclaimed=[0] * n,
            expired=[False] * n if expiring else [],
        )
