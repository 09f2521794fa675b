"""Call traces: the calls of one simulated (or recorded) day, as CSV or JSON Lines.

A trace is the customer side of a simulation: when each call arrives, what it needs, how
long its work takes at speed 1.0 and how long the caller would wait. ``generate_trace``
draws it from a scenario's streams; ``read_trace``/``write_trace`` move it to and from files
(format by suffix: ``.csv``, or ``.jsonl``/``.ndjson``; UTF-8, a byte order mark allowed).
The simulator only ever consumes a trace, so a recorded day and a synthetic one are
interchangeable, and two policies simulated on the same seed see exactly the same calls.

Columns (CSV header, or the keys of each JSON object), in this order::

    arrival_s    seconds from the simulation start (3 decimals: millisecond clock)
    call_id      unique id
    channel      voice | chat | email | whatsapp | social
    skills       required skills "billing:5;tech:3" (name:min_level; empty: none); in JSONL
                 also an object {"billing": 5}
    language     required language tag, empty: any
    region       the customer's region, empty: unknown
    priority     0..10
    handle_s     work content in seconds at agent speed 1.0 (the agent takes handle_s / speed)
    patience_s   seconds the caller waits before hanging up; empty (JSON null): never

Optional trailing columns, written only when some call uses them::

    team              only this team's agents (until widening)
    region_required   1/true: only agents of the call's region (until widening)
    preferred_skills  "tech;sales"

Generation (``generate_trace``): each stream has its own ``random.Random`` seeded with
``"<seed>:<stream name>"``, so adding a stream never changes another's calls. Arrivals are a
Poisson process whose rate is piecewise constant (the stream's daily profile); inside each
constant piece, gaps are exponential and the piece boundary restarts the clock (exact by
memorylessness). For each call, in order: the gap, the call type (by weight), the handle
time, the patience; the draws are ``random()``'s, taken a block at a time through numpy
(``simulations.uniforms``), the same doubles in the same order. Call ids are ``<stream>-<n>``
(n from 000001). Trace files listed in the scenario are read and merged, their calls
arriving before ``duration_s`` (``calls_past_duration`` counts the others). The result is
sorted by ``(arrival_s, call_id)``.
"""

from __future__ import annotations

import bisect
import csv
import io
import json
import math
import operator
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate, pairwise, repeat
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from router.domain import SKILL_LEVEL_MAX, SKILL_LEVEL_MIN, Call, Channel, SkillRequirement
from simulations import fields as fl
from simulations.fields import DAY_S, ScenarioError, read_text
from simulations.model import Scenario, Stream, rounded_ms
from simulations.uniforms import Floats, Uniforms, math_map

COLUMNS = (
    "arrival_s",
    "call_id",
    "channel",
    "skills",
    "language",
    "region",
    "priority",
    "handle_s",
    "patience_s",
)
OPTIONAL_COLUMNS = ("team", "region_required", "preferred_skills")
ARRIVAL_ORDER = operator.attrgetter("arrival_s", "call_id")
"""A trace's order: by arrival, then call id."""


def in_arrival_order(calls: Sequence[TraceCall]) -> bool:
    """Whether ``calls`` are in ``ARRIVAL_ORDER``, checked pair by pair (no sort key per
    call for the garbage collector to track)."""
    return all(
        a.arrival_s < b.arrival_s or (a.arrival_s == b.arrival_s and a.call_id < b.call_id)
        for a, b in pairwise(calls)
    )


def arrival_ordered(calls: Sequence[TraceCall]) -> Sequence[TraceCall]:
    """``calls`` in ``ARRIVAL_ORDER``: the sequence itself when it is in that order already
    (as a generated trace is), else a sorted copy."""
    return calls if in_arrival_order(calls) else sorted(calls, key=ARRIVAL_ORDER)


@dataclass(slots=True)
class TraceCall:
    """One call of a trace (see the module docstring for the fields).

    Not frozen, though nothing changes one once built (``dataclasses.replace`` makes a new
    one): the simulator builds one per call, and a frozen dataclass's constructor, which sets
    each field through ``object.__setattr__``, costs several times as much.
    """

    arrival_s: float
    call_id: str
    channel: Channel
    skills: tuple[tuple[str, int], ...] = ()
    language: str = ""
    region: str = ""
    priority: int = 0
    handle_s: float = 300.0
    patience_s: float | None = None
    team: str = ""
    region_required: bool = False
    preferred_skills: tuple[str, ...] = ()


def as_call(tc: TraceCall) -> Call:
    """``tc``'s needs as an engine ``Call`` (skills, language, region, team), without a time
    zone or an arrival time: what scoring and screening read of a kind of call."""
    return Call(
        call_id=tc.call_id,
        channel=tc.channel,
        required_skills=tuple(SkillRequirement(s, level) for s, level in tc.skills),
        preferred_skills=tc.preferred_skills,
        language=tc.language,
        region=tc.region,
        team=tc.team,
        region_required=tc.region_required,
    )


# --- generation ------------------------------------------------------------------------------


ONE_STREAM_ORDERED = 10**6
"""Below this many calls, a stream's ids (``<stream>-<n>``, n zero-padded to six digits)
sort as their numbers do: its calls, drawn in arrival order, are in ``ARRIVAL_ORDER``."""


def generate_trace(scenario: Scenario, seed: int) -> list[TraceCall]:
    """The calls of ``scenario`` for ``seed``: its streams' draws plus its trace files."""
    calls: list[TraceCall] = []
    for stream in scenario.streams:
        calls.extend(_stream_calls(stream, scenario.duration_s, scenario.arrival_scale, seed))
    if len(scenario.streams) == 1 and not scenario.traces and len(calls) < ONE_STREAM_ORDERED:
        return calls  # one stream's ids are its own, and its calls come in arrival order
    for path in scenario.traces:
        calls.extend(c for c in read_trace(path) if c.arrival_s < scenario.duration_s)
    seen: set[str] = set()
    for call in calls:
        if call.call_id in seen:
            raise ScenarioError("arrivals", f"call id {call.call_id!r} appears twice")
        seen.add(call.call_id)
    if not in_arrival_order(calls):  # one stream's calls are, as drawn
        calls.sort(key=ARRIVAL_ORDER)
    return calls


def calls_past_duration(scenario: Scenario) -> list[tuple[Path, int]]:
    """Per trace file of ``scenario``, how many of its calls arrive at or after its
    ``duration_s`` (files with none left out): ``generate_trace`` takes only the calls of
    ``[0, duration_s)``, so a recording of several days in a one-day scenario is cut to
    its first day, which the commands say (``python -m simulations``)."""
    counts = []
    for path in scenario.traces:
        late = sum(1 for call in read_trace(path) if call.arrival_s >= scenario.duration_s)
        if late:
            counts.append((path, late))
    return counts


def _last_ms(duration_s: float) -> float:
    """The last millisecond of the clock before ``duration_s``."""
    return (math.ceil(duration_s * 1000) - 1) / 1000


def _stream_calls(stream: Stream, duration_s: float, scale: float, seed: int) -> list[TraceCall]:
    """``stream``'s calls for ``seed``. Each call takes, in order, the uniforms of its gap, its
    type, its handle time and its patience; a piece of the profile ends at the first gap that
    crosses its end. The uniforms are drawn a block of calls at a time (``Uniforms``: the very
    doubles of ``random()``), each piece's block sized to hold its calls almost always; a
    block past the piece's end is given back, so the next piece starts where ``random()``
    would."""
    uniforms = Uniforms(random.Random(f"{seed}:{stream.name}"))
    width = (
        2 + stream.handle.uniforms + (0 if stream.patience is None else stream.patience.uniforms)
    )
    blocks: list[Floats] = []
    """Each call's uniforms, one row per call, block by block."""
    arrivals: list[float] = []
    bounds = [start for start, _ in stream.profile]
    for day in range(math.ceil(duration_s / DAY_S)):
        for i, (start, mult) in enumerate(stream.profile):
            seg_start = day * DAY_S + start
            seg_end = min(
                day * DAY_S + (bounds[i + 1] if i + 1 < len(bounds) else DAY_S), duration_s
            )
            rate = stream.rate_per_hour * mult * scale / 3600.0
            if rate <= 0 or seg_start >= seg_end:
                continue
            t = seg_start
            while True:
                size = block_calls(rate * (seg_end - t))
                mark = uniforms.mark()
                block = uniforms.take(size * width).reshape(size, width)
                gaps = -math_map(math.log, 1.0 - block[:, 0]) / rate
                times = list(accumulate(gaps.tolist(), initial=t))[1:]  # t += gap, in turn
                inside = bisect.bisect_left(times, seg_end)
                arrivals.extend(times[:inside])
                if inside < size:  # the piece ends in this block
                    blocks.append(block[:inside])
                    uniforms.rewind(mark, inside * width + 1)  # its calls and the last gap
                    break
                blocks.append(block)
                t = times[-1]
    if not arrivals:
        return []
    drawn = np.concatenate(blocks)
    return _calls(stream, arrivals, drawn, duration_s)


def block_calls(expected: float) -> int:
    """How many calls' uniforms to draw at once for a piece where ``expected`` calls are
    still to come: more than arrive in all but about one piece in 30,000 (four standard
    deviations and a few), so a second block is rare. Any size gives the same calls."""
    return int(expected + 4 * math.sqrt(expected)) + 8


def _calls(
    stream: Stream, arrivals: list[float], drawn: Floats, duration_s: float
) -> list[TraceCall]:
    """The calls arriving at ``arrivals`` (before ``duration_s``) whose uniforms are the rows
    of ``drawn``."""
    handle_end = 2 + stream.handle.uniforms
    handles = rounded_ms(stream.handle.draws(drawn[:, 2:handle_end]))
    patience: Iterable[float | None] = repeat(None)
    if stream.patience is not None:
        waits = rounded_ms(stream.patience.draws(drawn[:, handle_end:]))
        patience = np.where(waits > 0.001, waits, 0.001).tolist()
    mix = stream.mix
    kinds = [
        (
            tuple((r.skill, r.min_level) for r in t.skills),
            t.language,
            t.region,
            t.priority,
            t.preferred_skills,
        )
        for t in mix
    ]
    """What each call type gives its calls (calls share the tuples: immutable)."""
    columns: Iterable[Iterable[Any]]
    if len(mix) == 1:
        columns = [repeat(value) for value in kinds[0]]
    else:
        picked = [kinds[k] for k in _types(drawn[:, 1], [t.weight for t in mix]).tolist()]
        columns = zip(*picked, strict=True)
    skills, language, region, priority, preferred = columns
    prefix = f"{stream.name}-"
    return list(
        map(
            TraceCall,  # positional, in field order
            # on the millisecond clock, and inside [0, duration_s) as read back: a draw in the
            # run's last half millisecond would round to its end
            np.minimum(rounded_ms(np.array(arrivals)), _last_ms(duration_s)).tolist(),
            [prefix + str(n).zfill(6) for n in range(1, len(arrivals) + 1)],  # f"{n:06d}"
            repeat(stream.channel),
            skills,
            language,
            region,
            priority,
            np.where(handles > 0.001, handles, 0.001).tolist(),  # at least 1 ms
            patience,
            repeat(stream.team),
            repeat(stream.region_required),
            preferred,
        )
    )


def _types(uniforms: Floats, weights: Sequence[float]) -> npt.NDArray[np.intp]:
    """The call type of each call from its uniform, as a scan of the mix would pick it:
    ``pick = u * total``; the first type whose weight exceeds what is left of ``pick``,
    each weight taken off in turn; the last type if none does."""
    left = uniforms * sum(weights)
    chosen = np.full(len(uniforms), len(weights) - 1)
    open_ = np.ones(len(uniforms), dtype=bool)
    for k, weight in enumerate(weights):
        hit = open_ & (left < weight)
        chosen[hit] = k
        open_ &= ~hit
        left = np.where(open_, left - weight, left)
    return chosen


# --- files -----------------------------------------------------------------------------------


def write_trace(path: str | Path, calls: Iterable[TraceCall]) -> None:
    """Write ``calls`` as CSV, or JSON Lines for a ``.jsonl``/``.ndjson`` suffix."""
    file = Path(path)
    rows = [_row(c) for c in calls]
    extras = [col for col in OPTIONAL_COLUMNS if any(r[col] for r in rows)]
    columns = [*COLUMNS, *extras]
    if _is_jsonl(file):
        lines = []
        for row in rows:
            record: dict[str, object] = {col: row[col] for col in columns}
            record["arrival_s"] = float(row["arrival_s"])
            record["priority"] = int(row["priority"])
            record["handle_s"] = float(row["handle_s"])
            record["patience_s"] = float(row["patience_s"]) if row["patience_s"] else None
            if "region_required" in record:
                record["region_required"] = row["region_required"] == "1"
            lines.append(json.dumps(record, separators=(", ", ": ")))
        file.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        return
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([row[col] for col in columns])
    file.write_text(buffer.getvalue(), encoding="utf-8")


def _row(call: TraceCall) -> dict[str, str]:
    return {
        "arrival_s": f"{call.arrival_s:.3f}",
        "call_id": call.call_id,
        "channel": call.channel.value,
        "skills": ";".join(f"{name}:{level}" for name, level in call.skills),
        "language": call.language,
        "region": call.region,
        "priority": str(call.priority),
        "handle_s": f"{call.handle_s:.3f}",
        "patience_s": "" if call.patience_s is None else f"{call.patience_s:.3f}",
        "team": call.team,
        "region_required": "1" if call.region_required else "",
        "preferred_skills": ";".join(call.preferred_skills),
    }


def read_trace(path: str | Path) -> list[TraceCall]:
    """Read a CSV or JSON Lines trace (by suffix), UTF-8 with or without a byte order mark
    (Excel's "CSV UTF-8" has one). Raises ``ScenarioError`` naming the line and column of a
    bad value, ``FileNotFoundError`` for a missing file."""
    file = Path(path)
    text = read_text(file, bom=True)
    rows: list[tuple[str, Mapping[str, object]]] = []
    if _is_jsonl(file):
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            where = f"{file.name}:{n}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ScenarioError(where, f"not valid JSON: {err.msg}") from err
            rows.append((where, fl.mapping(record, where)))
    else:
        rows = _csv_rows(file.name, text)
    calls = [_call(where, record) for where, record in rows]
    seen: set[str] = set()
    for (where, _), call in zip(rows, calls, strict=True):
        if call.call_id in seen:
            raise ScenarioError(f"{where}.call_id", f"duplicate call id {call.call_id!r}")
        seen.add(call.call_id)
    return calls


def _csv_rows(name: str, text: str) -> list[tuple[str, Mapping[str, object]]]:
    """The records of CSV ``text`` (file ``name``), each with where it ends
    (``name:line``), by the header's columns; a row with more or fewer fields than the
    header is refused naming its line and both counts (a short one would leave its last
    columns silently empty). Blank lines are skipped."""
    reader = csv.reader(io.StringIO(text))
    header = next(reader, [])
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise ScenarioError(f"{name}:1", f"missing columns: {', '.join(missing)}")
    rows: list[tuple[str, Mapping[str, object]]] = []
    for fields in reader:
        if not fields:
            continue
        where = f"{name}:{reader.line_num}"
        if len(fields) != len(header):
            raise ScenarioError(where, f"{len(fields)} fields where the header has {len(header)}")
        rows.append((where, dict(zip(header, fields, strict=True))))
    return rows


def _call(where: str, record: Mapping[str, object]) -> TraceCall:
    known = set(COLUMNS) | set(OPTIONAL_COLUMNS)
    unknown = [k for k in record if k not in known]
    if unknown:
        raise ScenarioError(f"{where}.{unknown[0]}", "unknown column")
    for col in ("arrival_s", "call_id", "channel", "handle_s"):
        if record.get(col) in (None, ""):
            raise ScenarioError(f"{where}.{col}", "is required")

    def at(col: str) -> str:
        return f"{where}.{col}"

    patience_raw = record.get("patience_s")
    patience = None
    if patience_raw not in (None, ""):
        patience = fl.number(_num(patience_raw, at("patience_s")), at("patience_s"), low=0)
    language = str(record.get("language") or "")
    region = str(record.get("region") or "")
    return TraceCall(
        arrival_s=fl.number(_num(record["arrival_s"], at("arrival_s")), at("arrival_s"), low=0),
        call_id=fl.identifier(str(record["call_id"]), at("call_id")),
        channel=fl.channel(record["channel"], at("channel")),
        skills=_skills(record.get("skills"), at("skills")),
        language=fl.language(language, at("language")) if language else "",
        region=fl.name(region, at("region"), "region") if region else "",
        priority=fl.integer(
            _num(record.get("priority") or 0, at("priority")), at("priority"), low=0, high=10
        ),
        handle_s=fl.number(
            _num(record["handle_s"], at("handle_s")), at("handle_s"), low=0, low_open=True
        ),
        patience_s=patience,
        team=fl.name(record["team"], at("team"), "team") if record.get("team") else "",
        region_required=_flag(record.get("region_required"), at("region_required")),
        preferred_skills=_names(record.get("preferred_skills"), at("preferred_skills")),
    )


def _num(value: object, path: str) -> object:
    """A CSV cell (a string) as a number; JSON numbers pass through."""
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            raise ScenarioError(path, f"{value!r} is not a number") from None
        return int(number) if number.is_integer() and "." not in value else number
    return value


def _skills(value: object, path: str) -> tuple[tuple[str, int], ...]:
    if value in (None, ""):
        return ()
    pairs: dict[str, int] = {}
    if isinstance(value, Mapping):
        for key, level in value.items():
            pairs[fl.name(key, f"{path}.{key}", "skill")] = fl.skill_level(level, f"{path}.{key}")
    else:
        for part in fl.string(value, path).split(";"):
            if not part.strip():
                continue
            skill, sep, level = part.partition(":")
            name = fl.name(skill.strip(), path, "skill")
            if not sep:
                pairs[name] = SKILL_LEVEL_MIN
                continue
            try:
                number = int(level)
            except ValueError:
                raise ScenarioError(f"{path}.{name}", f"level {level!r} is not a number") from None
            if not SKILL_LEVEL_MIN <= number <= SKILL_LEVEL_MAX:
                raise ScenarioError(f"{path}.{name}", f"level {number} is not in 1..10")
            pairs[name] = number
    return tuple(sorted(pairs.items()))


def _names(value: object, path: str) -> tuple[str, ...]:
    if value in (None, ""):
        return ()
    if isinstance(value, list):
        return tuple(fl.name(v, path, "skill") for v in value)
    return tuple(
        fl.name(v.strip(), path, "skill") for v in fl.string(value, path).split(";") if v.strip()
    )


def _flag(value: object, path: str) -> bool:
    if value in (None, ""):
        return False
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes"}:
        return True
    if text in {"0", "false", "no"}:
        return False
    raise ScenarioError(path, f"{value!r} is not a boolean (1/0, true/false)")


def _is_jsonl(path: Path) -> bool:
    return path.suffix.lower() in {".jsonl", ".ndjson"}


def calls_by_channel(calls: Sequence[TraceCall]) -> dict[Channel, int]:
    """How many calls of each channel a trace holds (a quick summary for tools)."""
    counts: dict[Channel, int] = {}
    for call in calls:
        counts[call.channel] = counts.get(call.channel, 0) + 1
    return counts
