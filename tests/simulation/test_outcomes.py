"""``simulations.outcomes``: each call's uniforms and surveyed outcome are fixed by the seed
and the call id alone, so the event loop, the pooled shortcut and a replay draw the same."""

from __future__ import annotations

import hashlib

import pytest

from simulations import outcomes


def _uniforms_as_defined(seed: int, call_id: str) -> tuple[float, float]:
    """The definition: BLAKE2b-128 of ``seed␟call_id``, each half a big-endian integer, plus
    one half, over 2**64."""
    digest = hashlib.blake2b(f"{seed}\x1f{call_id}".encode(), digest_size=16).digest()
    return (
        (int.from_bytes(digest[:8], "big") + 0.5) / 2.0**64,
        (int.from_bytes(digest[8:], "big") + 0.5) / 2.0**64,
    )


@pytest.mark.parametrize("seed", [0, 1, 7, 2**40])
def test_call_uniforms_are_the_definition_to_the_last_bit(seed: int) -> None:
    for n in range(500):
        call_id = f"c{n:06d}" if n % 3 else f"réplica-{n}"
        got = outcomes.call_uniforms(seed, call_id)
        assert got == _uniforms_as_defined(seed, call_id), call_id
        assert all(0.0 < u < 1.0 for u in got)


def test_draw_outcome_is_its_csat_and_resolution() -> None:
    """``draw_outcome`` carries ``draw_csat`` (1..5) and ``u1 < effective``."""
    for n in range(300):
        u1, u2 = outcomes.call_uniforms(3, f"c{n}")
        effective = (n % 11) / 10
        outcome = outcomes.draw_outcome(effective, 120.0, u1, u2)
        assert outcome.csat == outcomes.draw_csat(effective, u2)
        assert 1 <= outcome.csat <= 5
        assert outcome.resolved == (u1 < effective)
        assert outcome.handle_time_s == 120.0
