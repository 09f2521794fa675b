"""Calls drawn a block at a time are the calls of one ``random()`` per draw, bit for bit.

The reference below is the trace generator as its module docstring states it: per piece of
the profile, per call, one ``rng.random()`` for the gap, one for the type, the handle time's
and the patience's through ``Distribution.draw``, every time rounded by ``round(x, 3)``.
"""

from __future__ import annotations

import dataclasses
import math
import random
from pathlib import Path

import numpy as np
import pytest

from router.domain import Channel, SkillRequirement
from simulations import trace as trace_module
from simulations.fields import DAY_S
from simulations.model import CallType, Distribution, Stream
from simulations.scenario import load_scenario
from simulations.trace import TraceCall, generate_trace
from simulations.uniforms import Uniforms

SCENARIOS = Path(__file__).resolve().parents[2] / "simulations" / "scenarios"


def reference_calls(stream: Stream, duration_s: float, scale: float, seed: int) -> list[TraceCall]:
    """``stream``'s calls, one ``random()`` per draw."""
    rng = random.Random(f"{seed}:{stream.name}")
    total = sum(t.weight for t in stream.mix)
    starts = [start for start, _ in stream.profile]
    out: list[TraceCall] = []
    for day in range(math.ceil(duration_s / DAY_S)):
        for i, (start, mult) in enumerate(stream.profile):
            seg_start = day * DAY_S + start
            seg_end = min(day * DAY_S + ([*starts[1:], DAY_S])[i], duration_s)
            rate = stream.rate_per_hour * mult * scale / 3600.0
            if rate <= 0 or seg_start >= seg_end:
                continue
            t = seg_start
            while True:
                t += -math.log(1.0 - rng.random()) / rate
                if t >= seg_end:
                    break
                pick = rng.random() * total
                kind = stream.mix[-1]
                for candidate in stream.mix:
                    if pick < candidate.weight:
                        kind = candidate
                        break
                    pick -= candidate.weight
                handle = max(round(stream.handle.draw(rng), 3), 0.001)
                patience = None
                if stream.patience is not None:
                    patience = max(round(stream.patience.draw(rng), 3), 0.001)
                out.append(
                    TraceCall(
                        arrival_s=round(t, 3),
                        call_id=f"{stream.name}-{len(out) + 1:06d}",
                        channel=stream.channel,
                        skills=tuple((r.skill, r.min_level) for r in kind.skills),
                        language=kind.language,
                        region=kind.region,
                        priority=kind.priority,
                        handle_s=handle,
                        patience_s=patience,
                        team=stream.team,
                        region_required=stream.region_required,
                        preferred_skills=kind.preferred_skills,
                    )
                )
    return out


def _same_calls(got: list[TraceCall], want: list[TraceCall]) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert a == b, (a, b)
        assert math.copysign(1.0, a.arrival_s) == math.copysign(1.0, b.arrival_s)


MIX = (
    CallType(3.0, (SkillRequirement("billing", 3),), language="en", priority=2),
    CallType(0.25, (SkillRequirement("tech", 5),), ("sales",), region="eu-west"),
    CallType(1.5, (), language="pt", priority=7),
)

STREAMS = {
    "one type, exponential, no patience": Stream(
        "voice", Channel.VOICE, 340.0, ((0.0, 1.0),), (CallType(1.0),),
        Distribution("exponential", 180.0),
    ),
    "three types, lognormal, exponential patience, a profile with a closed piece": Stream(
        "chat", Channel.CHAT, 900.0, ((0.0, 0.0), (7 * 3600.0, 1.4), (12 * 3600.0, 0.6),
                                     (21 * 3600.0, 0.0)), MIX,
        Distribution("lognormal", 330.0, 200.0), Distribution("exponential", 90.0),
        team="billing", region_required=True,
    ),
    "fixed handle, lognormal patience, tiny weights": Stream(
        "email", Channel.EMAIL, 60.0, ((0.0, 1.0), (3600.0, 3.0)),
        (CallType(1e-9), CallType(2.0), CallType(1e-9)),
        Distribution("fixed", 0.0004), Distribution("lognormal", 0.5, 3.0),
    ),
    "a busy stream, fixed patience": Stream(
        "whatsapp", Channel.WHATSAPP, 2_000.0, ((0.0, 1.0), (1800.0, 2.5)), MIX,
        Distribution("exponential", 30.0), Distribution("fixed", 45.0),
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(STREAMS))
@pytest.mark.parametrize(("duration_s", "scale"), [(DAY_S, 1.0), (2.5 * DAY_S, 0.7), (5000, 3)])
def test_a_stream_draws_the_calls_of_one_random_per_draw(
    name: str, duration_s: float, scale: float
) -> None:
    stream = STREAMS[name]
    if stream.rate_per_hour > 1000:
        duration_s = min(duration_s, 7200)  # the busy stream: two hours are enough
    for seed in (1, 2, 3):
        _same_calls(
            trace_module._stream_calls(stream, duration_s, scale, seed),
            reference_calls(stream, duration_s, scale, seed),
        )


@pytest.mark.parametrize("size", [1, 2, 7])
def test_the_calls_do_not_depend_on_the_block_size(
    size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Blocks too small for their piece: each piece takes several, and the calls are the
    same (a block that ends exactly on the piece's end included)."""
    monkeypatch.setattr(trace_module, "block_calls", lambda _expected: size)
    for name in sorted(STREAMS):
        stream = STREAMS[name]
        duration_s = 3600 if stream.rate_per_hour > 1000 else DAY_S
        _same_calls(
            trace_module._stream_calls(stream, duration_s, 1.0, 5),
            reference_calls(stream, duration_s, 1.0, 5),
        )


def test_the_bundled_scenarios_draw_the_same_calls() -> None:
    for path in sorted(SCENARIOS.glob("*.yaml")):
        scenario = load_scenario(path)
        for seed in (1, 4):
            want = [
                call
                for stream in scenario.streams
                for call in reference_calls(
                    stream, scenario.duration_s, scenario.arrival_scale, seed
                )
            ]
            want.sort(key=trace_module.ARRIVAL_ORDER)
            _same_calls(generate_trace(scenario, seed), want)


def test_uniforms_are_randoms_doubles_and_rewind_to_any_count() -> None:
    rng = random.Random("7:voice")
    for _ in range(1000):  # past the first block of the generator's state
        rng.random()
    uniforms = Uniforms(rng)
    mark = uniforms.mark()
    first = uniforms.take(5000).tolist()
    assert first == [rng.random() for _ in range(5000)]
    uniforms.rewind(mark, 1234)
    assert uniforms.take(10).tolist() == first[1234:1244]
    uniforms.rewind(mark, 0)
    assert uniforms.take(3).tolist() == first[:3]


@pytest.mark.parametrize(
    "distribution",
    [
        Distribution("fixed", 42.5),
        Distribution("exponential", 180.0),
        Distribution("exponential", 1e-6),
        Distribution("lognormal", 330.0, 200.0),
        Distribution("lognormal", 0.5, 30.0),
    ],
)
def test_draws_from_uniforms_are_draw_bit_for_bit(distribution: Distribution) -> None:
    rng = random.Random(11)
    width = distribution.uniforms
    rows = np.array([[rng.random() for _ in range(width)] for _ in range(20_000)]).reshape(
        20_000, width
    )
    replay = iter(rows.ravel().tolist())

    class Replayed(random.Random):
        def random(self) -> float:
            return float(next(replay))

    again = Replayed()
    want = [distribution.draw(again) for _ in range(20_000)]
    assert distribution.draws(rows).tolist() == want


def test_a_call_type_is_picked_as_a_scan_of_the_mix_picks_it() -> None:
    """Uniforms whose pick lands exactly on a weight's edge, or past the total by rounding,
    pick what the scan picks: the first type whose weight exceeds what is left."""
    weights = [1.0, 1.0, 0.5, 1e-9]
    total = sum(weights)
    uniforms = [0.0, 0.25, 1 / total, 2 / total, 2.5 / total, math.nextafter(1.0, 0.0), 0.9999]
    uniforms += [random.Random(9).random() for _ in range(5000)]

    def scan(u: float) -> int:
        pick = u * total
        for k, weight in enumerate(weights):
            if pick < weight:
                return k
            pick -= weight
        return len(weights) - 1

    assert trace_module._types(np.array(uniforms), weights).tolist() == [scan(u) for u in uniforms]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_one_streams_calls_come_in_arrival_order_with_ids_of_their_own(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What lets ``generate_trace`` skip its checks for a lone stream: on a stream busy
    enough that many calls share a millisecond, the drawn calls are already in
    ``ARRIVAL_ORDER`` and no id repeats; with the checks run anyway, the trace is the same."""
    busy = Stream(
        "busy", Channel.CHAT, 300_000.0, ((0.0, 1.0),), MIX, Distribution("exponential", 60.0)
    )
    scenario = load_scenario(SCENARIOS / "erlang_check.yaml")
    scenario = dataclasses.replace(scenario, streams=(busy,), duration_s=600.0)
    calls = generate_trace(scenario, seed)
    assert len(calls) > 40_000
    assert len({c.arrival_s for c in calls}) < len(calls) - 1000  # many share a millisecond
    assert trace_module.in_arrival_order(calls)
    assert len({c.call_id for c in calls}) == len(calls)
    monkeypatch.setattr(trace_module, "ONE_STREAM_ORDERED", 0)
    assert generate_trace(scenario, seed) == calls
