"""Load: rolling occupancy, free slots and the convex load cost the solver balances with.

Occupancy is the unit-weighted share of an agent's budget that was busy over the rolling
window ``[now - window_s, now]``::

    busy      = sum(units * overlap(span, window))       finished spans (agent.recent)
              + sum(units * (now - max(start, window_start)))   work in progress (agent.active)
    occupancy = busy / (window_s * 1000 * AGENT_UNIT_BUDGET)     clamped to [0, 1]

so one voice call (100 units) for the whole window is 1.0, and one chat (25 units) is 0.25.

Free slots on a channel are bounded by both the channel capacity and the unit budget::

    free_slots = min(capacity - load(channel), (AGENT_UNIT_BUDGET - units_used) // units)

The marginal cost of the k-th extra item (k = 1, 2, ...) given the units already in use,
with ``u`` the utilisation fraction of the budget and ``d = units / AGENT_UNIT_BUDGET``::

    u_before = (units_used + (k - 1) * units) / AGENT_UNIT_BUDGET
    u_after  = u_before + d
    r        = min(1, occupancy / cap)                    (1 when cap <= 0)
    cost_k   = w_load * ((u_after ** 2 - u_before ** 2) + d * r ** 2)

``u_after ** 2 - u_before ** 2 = 2 * d * u_before + d ** 2`` grows by ``2 * d ** 2`` per slot,
so with ``w_load > 0`` the costs are strictly increasing in k: the total load cost is convex
and a min-cost flow with one unit-capacity arc per slot takes the slots in order, which makes
the flow model exact. The occupancy term charges an agent who has been busy lately (relative
to their own cap) for each item, in proportion to the item's share of the budget, so equally
good agents share the work and top performers are not drained up to their cap first.

``AgentTable`` holds the time- and policy-independent inputs of many agents as numpy columns
for the vectorised decision (``router.eligibility.AgentColumns``, ``scoring.match.ScoreColumns``);
each agent's row is memoised on its snapshot object, which the Redis agent cache reuses while
the agent is unchanged, so a decision walks only the agents that changed since the last one.
``AgentTable.occupancy`` is ``occupancy`` for all of them at once, float for float; a table
patched from the last one carries each agent's busy time as a line exact up to the agent's
next breakpoint, so a decision reads only the spans of the agents that changed or whose
line ran out, not every span in the window.
"""

from __future__ import annotations

import operator
import struct
import threading
from array import array
from collections.abc import Callable, Sequence
from itertools import compress, repeat
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from router.domain import (
    AGENT_UNIT_BUDGET,
    AgentProfile,
    AgentSnapshot,
    Channel,
    Policy,
    Presence,
)


def occupancy(agent: AgentSnapshot, now_ms: int, window_s: int) -> float:
    """Unit-weighted busy share of ``agent``'s budget over the last ``window_s`` seconds."""
    if window_s <= 0:
        return 0.0
    window_ms = window_s * 1000
    window_start = now_ms - window_ms
    busy = 0
    # min() and max() spelled out as comparisons (integers): this runs per agent and pass.
    for span in agent.recent:
        end, start = span.end_ms, span.start_ms
        overlap = (end if end < now_ms else now_ms) - (
            start if start > window_start else window_start
        )
        if overlap > 0:
            busy += overlap * span.units
    for work in agent.active:
        start = work.start_ms
        running = now_ms - (start if start > window_start else window_start)
        if running > 0:
            busy += running * work.units
    share = busy / (window_ms * AGENT_UNIT_BUDGET)
    if not share > 0.0:  # min(1.0, max(0.0, share)), NaN and -0.0 included
        return 0.0
    return share if share < 1.0 else 1.0


def free_slots(agent: AgentSnapshot, channel: Channel, policy: Policy) -> int:
    """Items of ``channel`` the agent could still take now (channel capacity and unit budget)."""
    by_capacity = policy.capacity_for(agent.profile, channel) - agent.load(channel)
    units = policy.units_for(channel)
    if units <= 0:
        # A free channel (0 units) is bounded by its item capacity alone.
        return max(0, by_capacity)
    by_budget = (AGENT_UNIT_BUDGET - agent.units_used) // units
    return max(0, min(by_capacity, by_budget))


def marginal_cost(
    units_used: int, units: int, k: int, *, occupancy: float, cap: float, weight: float
) -> float:
    """Cost of the ``k``-th extra item (k >= 1) of ``units`` on top of ``units_used``."""
    share = units / AGENT_UNIT_BUDGET
    before = (units_used + (k - 1) * units) / AGENT_UNIT_BUDGET
    after = before + share
    ratio = 1.0 if cap <= 0 else min(1.0, max(0.0, occupancy / cap))
    return weight * ((after * after - before * before) + share * ratio * ratio)


def slot_costs(
    units_used: int, units: int, slots: int, *, occupancy: float, cap: float, weight: float
) -> tuple[float, ...]:
    """Marginal costs of the next ``slots`` items, non-decreasing (see the module docstring)."""
    return tuple(
        marginal_cost(units_used, units, k, occupancy=occupancy, cap=cap, weight=weight)
        for k in range(1, slots + 1)
    )


def slot_cost_matrix(
    units_used: npt.NDArray[np.int64],
    units: int,
    width: int,
    *,
    occupancy: npt.NDArray[np.float64],
    cap: npt.NDArray[np.float64],
    weight: float,
) -> npt.NDArray[np.float64]:
    """``marginal_cost`` of items ``k = 1..width`` for many agents at once, shape (agents, width).

    Row ``i`` is agent ``i``'s ``slot_costs`` (padded to ``width``); every value is the float
    ``marginal_cost`` returns, operation for operation (tests compare them bit for bit).
    """
    share = units / AGENT_UNIT_BUDGET
    steps = np.arange(width, dtype=np.int64) * units
    before = (units_used[:, None] + steps[None, :]) / AGENT_UNIT_BUDGET
    after = before + share
    with np.errstate(divide="ignore", invalid="ignore"):
        raw = occupancy / cap
    ratio = np.where(cap <= 0, 1.0, np.minimum(1.0, np.maximum(0.0, raw)))
    occupancy_term = share * ratio * ratio
    return weight * ((after * after - before * before) + occupancy_term[:, None])


# --- Per-agent rows, memoised on the snapshot object -----------------------------------------

CHANNELS: tuple[Channel, ...] = tuple(Channel)
"""Channels in declaration order: the order of the per-channel columns of ``AgentTable``."""
_CHANNEL_POSITION = {channel: k for k, channel in enumerate(CHANNELS)}

ABSENT = -(2**62)
"""Value of an integer column the agent leaves unset (a capacity its profile does not name)."""
_FOREVER = int(np.iinfo(np.int64).max)
"""End of work in progress as a span: ``min(end, now)`` is then ``now``."""

# Integer columns of a row, in this order: the snapshot's, then its profile's.
I_AVAILABLE = 0
I_HEARTBEAT = 1
I_UNITS = 2
I_UPDATED = 3
I_FREE_SINCE = 4
I_ACTIVE = 5
I_SPANS = 6
I_ABSENCES = 7
I_SHIFT_END = 8
I_SKILLS = 9
I_ZONE = 10
I_HAS_CAP = 11
I_REGION = 12
I_TEAM = 13
I_LANGUAGES = 14
I_CAPACITY = 15
"""First of ``len(CHANNELS)`` capacity columns (``ABSENT`` when the profile names none)."""
I_LOAD = I_CAPACITY + len(CHANNELS)
"""First of ``len(CHANNELS)`` load columns (items held per channel)."""
INT_WIDTH = I_LOAD + len(CHANNELS)
# Float columns of a row.
F_WEIGHTED_SUM = 0
F_WEIGHT = 1
F_MAX_OCCUPANCY = 2
FLOAT_WIDTH = 3

MAX_CODES = 100_000
"""Codes handed out (skill names, zones, regions, teams, language sets) past which the memo
starts a new generation, so that names no longer used do not pile up (a row of an earlier
generation only gets recomputed)."""

Row = tuple[object, bytes, bytes, bytes, bytes, bytes, str]
"""(the generation's tag, int columns, float columns, spans (start, end, units), skills
(code, level), absences (start, end), agent id)."""


_ProfilePart = tuple[object, tuple[int, ...], float, bytes, bytes]
"""(the generation's tag, its integer columns, its own occupancy cap or 0.0, skills,
absences)."""
_NO_LOADS = (0,) * len(CHANNELS)
_INT_ROW = struct.Struct(f"={INT_WIDTH}q")
_FLOAT_ROW = struct.Struct(f"={FLOAT_WIDTH}d")


def _pack(code: str, values: list[Any]) -> bytes:
    """``values`` as native int64 (``q``) or float64 (``d``) bytes."""
    try:
        return array(code, values).tobytes()
    except (TypeError, struct.error):
        # Not plain ints or floats (a float skill level, say): numpy converts as before.
        return np.array(values, np.int64 if code == "q" else np.float64).tobytes()


class Codes:
    """Small integer codes for the values of one field (skill names, zones, regions, ...).

    ``values[code]`` is the value a code stands for. Codes are handed out under a lock, so a
    value has one code whichever thread sees it first.
    """

    __slots__ = ("codes", "lock", "values")

    def __init__(self, lock: threading.Lock) -> None:
        self.codes: dict[object, int] = {}
        self.values: list[Any] = []
        self.lock = lock

    def code(self, value: object) -> int:
        """The code of ``value`` (a new one the first time it is seen)."""
        code = self.codes.get(value)
        if code is None:
            with self.lock:
                code = self.codes.get(value)
                if code is None:
                    self.values.append(value)
                    code = self.codes[value] = len(self.values) - 1
        return code


class _Memo:
    """One generation of the codes that rows refer to.

    A row is kept on its snapshot (``AgentSnapshot.derived``; a profile's share on
    ``AgentProfile.derived``), tagged with the generation it was computed in, so it lives
    and dies with the object and the memo keeps no snapshot alive. A row holds only bytes,
    a string and the tag (a plain ``object()``), so the garbage collector stops tracking it
    and a full collection walks only the snapshot. (A memo keyed by ``id`` held a weak
    reference and its callback per row: four more objects per agent for every full
    collection to walk. Before that it held the snapshots themselves, every one a busy
    service ever decided on.) Snapshots are frozen: a row computed once stays right for as
    long as the object lives. Threads may race to compute the same row; both results are
    equal.
    """

    __slots__ = ("languages", "lock", "regions", "skills", "tag", "teams", "zones")

    def __init__(self) -> None:
        self.tag = object()
        """Marks the rows of this generation (a row of another one is computed anew)."""
        self.lock = threading.Lock()
        self.skills = Codes(self.lock)
        self.zones = Codes(self.lock)
        self.regions = Codes(self.lock)
        """Lower-case regions."""
        self.teams = Codes(self.lock)
        self.languages = Codes(self.lock)
        """Language sets (``AgentProfile.languages``)."""

    def _profile_part(self, profile: AgentProfile) -> _ProfilePart:
        """Compute and memoise the profile's share of a row (snapshots of an agent whose
        profile did not change share the profile object)."""
        own_cap = profile.max_occupancy
        ints = (
            len(profile.absences),
            profile.shift_end_ms,
            len(profile.skills),
            self.zones.code(profile.timezone),
            0 if own_cap is None else 1,
            self.regions.code(profile.region.lower()),
            self.teams.code(profile.team),
            self.languages.code(profile.languages),
            *[profile.capacity.get(channel, ABSENT) for channel in CHANNELS],
        )
        skills = [
            value
            for name, level in profile.skills.items()
            for value in (self.skills.code(name), level)
        ]
        absences = [
            value for absence in profile.absences for value in (absence.start_ms, absence.end_ms)
        ]
        part: _ProfilePart = (
            self.tag,
            ints,
            0.0 if own_cap is None else own_cap,
            _pack("q", skills) if skills else b"",
            _pack("q", absences) if absences else b"",
        )
        _keep(profile, part)
        if self.codes() > MAX_CODES:
            _restart(self)
        return part

    def codes(self) -> int:
        """Codes handed out in this generation."""
        kinds = (self.skills, self.zones, self.regions, self.teams, self.languages)
        return sum(len(kind.values) for kind in kinds)

    def row(self, agent: AgentSnapshot) -> Row:
        """``agent``'s row: memoised on it in this generation, or computed and memoised."""
        row = cast(Row, agent.derived)
        return row if self.tag in row else self._compute(agent)

    def _compute(self, agent: AgentSnapshot) -> Row:
        """Compute and memoise ``agent``'s row."""
        profile = agent.profile
        part = cast(_ProfilePart, profile.derived)
        if self.tag not in part:
            part = self._profile_part(profile)
        active = agent.active
        stats = agent.performance
        free_since = agent.last_free_ms
        spans: list[int] = []
        for span in agent.recent:
            end = span.end_ms
            free_since = max(free_since, end)
            spans += (span.start_ms, end, span.units)
        units = 0
        if active:
            loads = [0] * len(CHANNELS)
            for work in active:
                units += work.units
                loads[_CHANNEL_POSITION[work.channel]] += 1
                spans += (work.start_ms, _FOREVER, work.units)
        try:
            packed = (
                _INT_ROW.pack(
                    1 if agent.presence == Presence.AVAILABLE else 0,
                    agent.heartbeat_ms,
                    units,
                    stats.updated_ms,
                    free_since,
                    len(active),
                    len(spans) // 3,
                    *part[1],
                    *(loads if active else _NO_LOADS),
                ),
                _FLOAT_ROW.pack(stats.weighted_sum, stats.weight, part[2]),
                array("q", spans).tobytes() if spans else b"",
            )
        except (TypeError, struct.error):
            # Not plain ints or floats somewhere: numpy converts them as the columns did.
            loads = [0] * len(CHANNELS)
            for work in active:
                loads[_CHANNEL_POSITION[work.channel]] += 1
            values = [
                1 if agent.presence == Presence.AVAILABLE else 0,
                agent.heartbeat_ms,
                units,
                stats.updated_ms,
                free_since,
                len(active),
                len(spans) // 3,
                *part[1],
                *loads,
            ]
            packed = (
                _pack("q", values),
                _pack("d", [stats.weighted_sum, stats.weight, part[2]]),
                _pack("q", spans) if spans else b"",
            )
        row: Row = (self.tag, *packed, part[3], part[4], profile.agent_id)
        _keep(agent, row)
        return row

    def rows(self, agents: Sequence[AgentSnapshot]) -> list[Row]:
        """The rows of ``agents``, computing those not memoised in this generation."""
        # C-level loops (map): most agents are hits in a warm memo. ``tag in row`` is an
        # identity check on the row's first element (an empty tuple: no row yet).
        rows = cast(list[Row], list(map(_DERIVED, agents)))
        for miss in false_at(list(map(operator.contains, rows, repeat(self.tag)))):
            rows[miss] = self._compute(agents[miss])
        return rows


def false_at(flags: list[bool]) -> list[int]:
    """The positions of the ``False`` entries of ``flags``, found by C-level ``list.index``
    calls: cheap when they are few among many (the agents that changed since the last
    decision), where a Python loop over every flag is not."""
    positions: list[int] = []
    start = 0
    for _ in range(flags.count(False)):
        start = flags.index(False, start)
        positions.append(start)
        start += 1
    return positions


def _keep(owner: AgentSnapshot | AgentProfile, derived: tuple[object, ...]) -> None:
    """Keep ``derived`` on its frozen ``owner`` (the one field not part of its value)."""
    object.__setattr__(owner, "derived", derived)


_MEMO = [_Memo()]
"""The current generation (one element, replaced when it fills up)."""


def _restart(memo: _Memo) -> None:
    """Start a new generation (the old one stays valid for tables already using it)."""
    if _MEMO[0] is memo:
        _MEMO[0] = _Memo()


_LAST: list[AgentTable | None] = [None]
"""The table built last: the next decision's agents are mostly the same snapshots (the agent
cache keeps an unchanged agent's object), so its columns are that table's, patched."""
_PATCH_SHARE = 8
"""Carry the last decision's columns (or index) over when at most one agent in this many
changed."""


_RUN = 256
"""Places ``differing`` compares as one pair of slices."""


def differing(
    new: Sequence[object],
    old: Sequence[object],
    test: Callable[[Any, Any], bool] = operator.is_not,
) -> list[int]:
    """The places, in order, where ``test(new[i], old[i])`` holds, in the runs of ``_RUN``
    places whose slices compare unequal; ``new`` and ``old`` are of one length and mostly
    hold the very same objects (a decision's agents against the last one's, or their revs).

    A slice comparison is a C-level loop that takes the same object as equal without calling
    its ``__eq__``, so the runs where nothing changed cost a few nanoseconds a place, where a
    call of ``test`` per place costs tens. A run whose slices compare equal holds equal values
    at every place and is skipped: with ``operator.ne`` the answer is exactly the places of
    unequal values; with ``operator.is_not`` (the default) it is those places, plus any other
    object of equal value in the same runs. (A list's slice never equals a tuple's, so
    sequences of two types are tested at every place: the same answer, only slower.)"""
    places: list[int] = []
    for start in range(0, len(new), _RUN):
        stop = start + _RUN
        fresh, stale = new[start:stop], old[start:stop]
        if fresh != stale:
            places.extend(compress(range(start, stop), map(test, fresh, stale)))
    return places


def shared_runs(
    new: Sequence[str], old: Sequence[str], most: int
) -> list[tuple[int, int, int]] | None:
    """Runs ``(i, j, n)`` with ``new[i:i + n] == old[j:j + n]``, in order, found by merging
    the two sorted lists of distinct ids ``_RUN`` places at a time (slice comparisons, as in
    ``differing``); the items of ``new`` outside every run are not in ``old``. ``None`` when
    the merge meets more than ``most`` places that differ (an item in one list only), or the
    lengths differ by more: the lists are not worth aligning.

    Every run is an exact match whatever the order, so a caller copying ``old``'s aligned
    data over the runs is right even for unsorted lists; sorting only keeps the runs long."""
    if abs(len(new) - len(old)) > most:
        return None
    runs: list[tuple[int, int, int]] = []
    i = j = misses = 0
    while i < len(new) and j < len(old):
        n = min(_RUN, len(new) - i, len(old) - j)
        same = _same_prefix(new, old, i, j, n)
        if same:
            _add_run(runs, i, j, same)
            i, j = i + same, j + same
        if same < n:  # new[i] != old[j]: the smaller one is in its list only
            misses += 1
            if misses > most:
                return None
            if new[i] < old[j]:
                i += 1
            else:
                j += 1
    return runs


def _same_prefix(new: Sequence[str], old: Sequence[str], i: int, j: int, n: int) -> int:
    """How many places ``new[i:i + n]`` and ``old[j:j + n]`` agree on from their start (``n``
    if all), found by halving with slice comparisons."""
    if new[i : i + n] == old[j : j + n]:
        return n
    same, unequal = 0, n  # the first difference is in [same, unequal)
    while unequal - same > 1:
        half = (same + unequal) // 2
        if new[i + same : i + half] == old[j + same : j + half]:
            same = half
        else:
            unequal = half
    return same


def _add_run(runs: list[tuple[int, int, int]], i: int, j: int, n: int) -> None:
    """Append the run ``(i, j, n)``, joined to the last one where it goes on from it."""
    if runs:
        last_i, last_j, length = runs[-1]
        if last_i + length == i and last_j + length == j:
            runs[-1] = (last_i, last_j, length + n)
            return
    runs.append((i, j, n))


def few_changed(agents: Sequence[object], last: Sequence[object]) -> list[int] | None:
    """The places where ``agents`` holds another agent than ``last`` (of the same length,
    most of it the very same snapshots; an equal snapshot counts as the same: its row is),
    when at most one in ``_PATCH_SHARE`` does; ``None`` when the last decision's work is not
    worth carrying over (build anew)."""
    if len(agents) != len(last) or not agents:
        return None
    changed = differing(agents, last)
    return changed if len(changed) * _PATCH_SHARE <= len(agents) else None


_DERIVED = operator.attrgetter("derived")
_INTS = operator.itemgetter(1)
_FLOATS = operator.itemgetter(2)
_SPANS = operator.itemgetter(3)
_SKILLS = operator.itemgetter(4)
_ABSENCES = operator.itemgetter(5)
_ID = operator.itemgetter(6)


_Ints = npt.NDArray[np.int64]

_Busy = tuple[int, _Ints]
"""(window ms, a read-only ``(4, agents)`` array of ``SINCE``, ``BUSY``, ``SLOPE``, ``UNTIL``):
an agent's busy time at any ``now`` from ``since`` to ``until`` (both included) is
``busy + slope * (now - since)``."""
SINCE, BUSY, SLOPE, UNTIL = range(4)
_STALE = -(2**63)
"""``until`` of an agent whose line must be worked out again (every ``now`` is past it)."""
_LOOP_SPANS = 48
"""Lines of a few agents, with their spans this many at most, are worked out in a Python
loop (a few microseconds), more with numpy (a few dozen microseconds whatever the size)."""


def _spans_of(rows: Sequence[Row]) -> _Ints:
    """The rows' spans as one ``(start, end, units)`` array, row after row."""
    return np.frombuffer(b"".join(map(_SPANS, rows)), np.int64).reshape(-1, 3)


def _busy_parts(spans: _Ints, now_ms: int, window_ms: int) -> _Ints:
    """Each span's ``units * overlap`` with the window ``[now - window, now]``."""
    overlap = np.minimum(spans[:, 1], now_ms) - np.maximum(spans[:, 0], now_ms - window_ms)
    parts: _Ints = np.where(overlap > 0, overlap * spans[:, 2], 0)
    return parts


def _segment_sums(values: _Ints, counts: _Ints) -> _Ints:
    """Sums of consecutive runs of ``values``, ``counts`` long each (exact integers)."""
    sums = np.zeros(len(values) + 1, np.int64)
    np.cumsum(values, out=sums[1:])
    ends = np.cumsum(counts)
    total: _Ints = sums[ends] - sums[ends - counts]
    return total


def _busy_lines(spans: _Ints, counts: _Ints, now_ms: int, window_ms: int) -> _Ints:
    """The ``(4, agents)`` lines of agents with ``counts`` spans each, at ``now_ms``.

    A span's part ``units * max(0, min(end, t) - max(start, t - window))`` is linear in
    ``t`` between its breakpoints ``start``, ``end``, ``start + window`` and ``end +
    window``; an agent's busy time (their sum) is linear from ``now`` to its first
    breakpoint after ``now`` (``until``), with the slope ``busy(now + 1) - busy(now)``:
    integers, so the line gives the very sums ``_busy_parts`` would."""
    if len(spans) + len(counts) <= _LOOP_SPANS:
        return _busy_lines_looped(spans.ravel().tolist(), counts.tolist(), now_ms, window_ms)
    busy = _segment_sums(_busy_parts(spans, now_ms, window_ms), counts)
    later = _segment_sums(_busy_parts(spans, now_ms + 1, window_ms), counts)
    start, end = spans[:, 0], spans[:, 1]
    last = _FOREVER - window_ms  # a shift past this stays at _FOREVER
    points = np.stack(
        [start, end, np.minimum(start, last) + window_ms, np.minimum(end, last) + window_ms]
    )
    first = np.where(points > now_ms, points, _FOREVER).min(axis=0, initial=_FOREVER)
    until = np.full(len(counts), _FOREVER, np.int64)
    has = counts > 0
    if has.any():
        until[has] = np.minimum.reduceat(first, (np.cumsum(counts) - counts)[has])
    return np.stack([np.full(len(counts), now_ms, np.int64), busy, later - busy, until])


def _busy_lines_looped(spans: list[int], counts: list[int], now_ms: int, window_ms: int) -> _Ints:
    """``_busy_lines`` of a few agents and spans (flat ``start, end, units``), one by one."""
    lines: list[int] = []
    at = 0
    for count in counts:
        busy = later = 0
        until = _FOREVER
        for k in range(at, at + 3 * count, 3):
            start, end, units = spans[k], spans[k + 1], spans[k + 2]
            busy += units * max(0, min(end, now_ms) - max(start, now_ms - window_ms))
            later += units * max(0, min(end, now_ms + 1) - max(start, now_ms + 1 - window_ms))
            for point in (start, end, start + window_ms, end + window_ms):
                if now_ms < point < until:
                    until = point
        at += 3 * count
        lines += (now_ms, busy, later - busy, until)
    return np.array(lines, np.int64).reshape(-1, 4).T


class AgentTable:
    """The time- and policy-independent per-agent inputs of a decision as numpy columns.

    Built from memoised rows: an agent snapshot reused between decisions (the Redis agent
    cache keeps the same object while the agent is unchanged) is walked once, not once per
    decision. Integer columns are exact; float columns hold the very floats of the snapshot.
    """

    __slots__ = (
        "_absences",
        "_busy",
        "_owners",
        "_patched",
        "_rows",
        "_skill_columns",
        "_skills",
        "_spans",
        "agents",
        "floats",
        "ids",
        "ints",
        "memo",
        "size",
    )

    def __init__(self, agents: Sequence[AgentSnapshot]) -> None:
        """Rows of ``agents``, in that order."""
        memo = self.memo = _MEMO[0]
        self.agents = agents = list(agents)
        self.size = n = len(agents)
        self._spans: npt.NDArray[np.int64] | None = None
        self._skills: npt.NDArray[np.int64] | None = None
        self._owners: npt.NDArray[np.intp] | None = None
        self._skill_columns: dict[str, tuple[npt.NDArray[np.bool_], npt.NDArray[np.int64]]] = {}
        self._busy: _Busy | None = None
        self._absences: tuple[npt.NDArray[np.intp], npt.NDArray[np.int64]] | None = None
        self._patched = False
        last = _LAST[0]
        if last is not None and last.memo is memo:
            changed = few_changed(agents, last.agents)
            if changed is not None:
                self._patch(last, changed)
                _LAST[0] = self
                return
        self._rows = rows = memo.rows(agents)
        self.ids: list[str] = list(map(_ID, rows))
        self.ints: npt.NDArray[np.int64] = np.frombuffer(
            b"".join(map(_INTS, rows)), np.int64
        ).reshape(n, INT_WIDTH)
        self.floats: npt.NDArray[np.float64] = np.frombuffer(
            b"".join(map(_FLOATS, rows)), np.float64
        ).reshape(n, FLOAT_WIDTH)
        _LAST[0] = self

    def _patch(self, last: AgentTable, changed: list[int]) -> None:
        """This table as a copy of ``last`` (the same number of agents, most of them the
        very same snapshots) with the rows of the agents at ``changed``."""
        memo = self.memo
        rows = list(last._rows)
        ids = list(last.ids)
        ints, floats = last.ints.copy(), last.floats.copy()
        columns = {
            name: (has.copy(), levels.copy())
            for name, (has, levels) in list(last._skill_columns.items())
        }
        for i in changed:
            row = memo.row(self.agents[i])
            rows[i], ids[i] = row, row[6]
            ints[i] = np.frombuffer(row[1], np.int64)
            floats[i] = np.frombuffer(row[2], np.float64)
            if columns:
                owned = np.frombuffer(row[4], np.int64).reshape(-1, 2)  # (code, level)
                levels_of = dict(zip(owned[:, 0].tolist(), owned[:, 1].tolist(), strict=True))
                for name, (has, levels) in columns.items():
                    level = levels_of.get(memo.skills.codes[name])
                    has[i], levels[i] = level is not None, level or 0
        self._rows, self.ids, self.ints, self.floats = rows, ids, ints, floats
        for has, levels in columns.values():
            has.flags.writeable = levels.flags.writeable = False
        self._skill_columns = columns
        self._patched = True
        busy = last._busy
        if busy is not None:  # the changed agents' busy time is worked out again
            lines = busy[1].copy()
            lines[UNTIL, changed] = _STALE
            lines.flags.writeable = False
            self._busy = (busy[0], lines)

    def channel(self, first: int, channel: Channel) -> npt.NDArray[np.int64]:
        """The per-channel column starting at ``first`` (``I_LOAD``, ``I_CAPACITY``)."""
        return self.ints[:, first + _CHANNEL_POSITION[channel]]

    def occupancy(self, now_ms: int, window_s: int) -> npt.NDArray[np.float64]:
        """``occupancy`` of every agent (the same floats).

        A table patched from the last one carries each agent's busy time as a line, exact
        up to the agent's next breakpoint (``_busy_lines``), and works it out again only
        for the agents that changed or whose line ran out: a few per decision, where every
        span of every agent is otherwise read again. Other tables read every span."""
        n = self.size
        if window_s <= 0:
            return np.zeros(n)
        window_ms = window_s * 1000
        counts = self.ints[:, I_SPANS]
        state = self._busy
        if state is not None and state[0] == window_ms:
            lines = state[1]
            stale = np.flatnonzero((now_ms < lines[SINCE]) | (now_ms > lines[UNTIL]))
            if len(stale):
                spans = _spans_of([self._rows[i] for i in stale.tolist()])
                lines = lines.copy()
                lines[:, stale] = _busy_lines(spans, counts[stale], now_ms, window_ms)
                lines.flags.writeable = False
                self._busy = (window_ms, lines)
            busy = lines[BUSY] + lines[SLOPE] * (now_ms - lines[SINCE])
        else:
            if self._spans is None:
                self._spans = _spans_of(self._rows)
            if self._patched:
                lines = _busy_lines(self._spans, counts, now_ms, window_ms)
                lines.flags.writeable = False
                self._busy = (window_ms, lines)
                busy = lines[BUSY]
            else:
                busy = _segment_sums(_busy_parts(self._spans, now_ms, window_ms), counts)
        denominator = window_ms * AGENT_UNIT_BUDGET
        if n and (int(np.abs(busy).max()) >= 2**53 or denominator >= 2**53):
            # Beyond exact float conversion: the scalar function, agent by agent.
            return np.array([occupancy(agent, now_ms, window_s) for agent in self.agents])
        share = busy / denominator
        # min(1.0, max(0.0, share)), as Python's min and max pick.
        share = np.where(share > 0.0, share, 0.0)
        return np.where(share < 1.0, share, 1.0)

    def skill(self, name: str) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int64]]:
        """(has skill ``name``, its level or 0) per agent, read-only: kept for the table's
        life and carried into the next table patched from this one."""
        cached = self._skill_columns.get(name)
        if cached is not None:
            return cached
        n = self.size
        has = np.zeros(n, np.bool_)
        levels = np.zeros(n, np.int64)
        code = self.memo.skills.codes.get(name)
        if code is None:
            return has, levels
        if self._skills is None:
            self._skills = np.frombuffer(b"".join(map(_SKILLS, self._rows)), np.int64).reshape(
                -1, 2
            )
            self._owners = np.repeat(np.arange(n), self.ints[:, I_SKILLS])
        skills, owners = self._skills, self._owners
        assert owners is not None
        match = skills[:, 0] == code
        has[owners[match]] = True
        levels[owners[match]] = skills[match, 1]
        has.flags.writeable = levels.flags.writeable = False
        self._skill_columns[name] = (has, levels)
        return has, levels

    def absences(self) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.int64]]:
        """(owner index, (start_ms, end_ms)) of every scheduled absence of the agents
        (read once per table)."""
        if self._absences is None:
            counts = self.ints[:, I_ABSENCES]
            owners = np.flatnonzero(counts)
            picked = [self._rows[i] for i in owners.tolist()]
            spans = np.frombuffer(b"".join(map(_ABSENCES, picked)), np.int64).reshape(-1, 2)
            owned = np.repeat(owners, counts[owners])
            owned.flags.writeable = spans.flags.writeable = False
            self._absences = (owned, spans)
        return self._absences

    def free_since(self, now_ms: int) -> npt.NDArray[np.int64]:
        """When each agent last became free as of ``now_ms``
        (``scoring.match.free_since``): the row's ``I_FREE_SINCE``, or the end of the
        agent's latest absence over by then where that is later."""
        free = self.ints[:, I_FREE_SINCE]
        if not free.size or not self.ints[:, I_ABSENCES].any():
            return free
        owners, spans = self.absences()
        over = spans[:, 1] <= now_ms
        free = free.copy()
        np.maximum.at(free, owners[over], spans[over, 1])
        return free
