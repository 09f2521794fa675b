"""How a handled call turns out, from who handled it: the ground truth the router never sees.

Each agent has a true ``quality`` q in [0, 1] (``AgentSpec.quality``). A call handled with
skill fit ``s`` (``scoring.match.skill_fit``: mean required level / 10, 1 when nothing is
required) has the effective quality::

    e = q * (0.8 + 0.2 * s)          a strong agent on a skill they barely hold does worse

and its outcome is drawn from two uniforms ``u1, u2`` that belong to the call (a hash of the
seed and the call id: the same call gets the same luck whoever handles it, so policies are
compared on common random numbers)::

    resolved = u1 < e
    csat     = clamp(round(1 + 4 e + 0.8 * Phi^-1(u2)), 1, 5)

The simulator reports ``outcome_value`` of this outcome (with the actual handle time) to the
agent's performance score exactly as ``Complete`` does in the service, so the balanced policy
learns who is good. The KPIs use the expectations instead of the draws (less noise):
``estimated_resolution = mean(e)``, ``estimated_csat = mean(1 + 4 e)`` over answered calls.
"""

from __future__ import annotations

import hashlib
import struct
from statistics import NormalDist
from typing import overload

from router.domain import Outcome
from simulations.uniforms import Floats

_NORMAL = NormalDist()
CSAT_SPREAD = 0.8
"""Standard deviation of a survey answer around its expectation, in CSAT points."""
SKILL_SHARE = 0.2
"""How much of the effective quality depends on the skill fit."""


def effective_quality(quality: float, skill_fit: float) -> float:
    """``e``: the resolution probability of this agent on this call."""
    return quality * ((1.0 - SKILL_SHARE) + SKILL_SHARE * skill_fit)


@overload
def expected_csat(effective: float) -> float: ...
@overload
def expected_csat(effective: Floats) -> Floats: ...
def expected_csat(effective: float | Floats) -> float | Floats:
    """Mean CSAT (1..5) of calls handled at effective quality ``effective`` (or of each of
    an array of them, value for value)."""
    return 1.0 + 4.0 * effective


_TWO_WORDS = struct.Struct(">QQ")
_SCALE = 2.0**64


def call_uniforms(seed: int, call_id: str) -> tuple[float, float]:
    """Two uniforms in (0, 1) that belong to ``call_id`` under ``seed``."""
    digest = hashlib.blake2b(f"{seed}\x1f{call_id}".encode(), digest_size=16).digest()
    high, low = _TWO_WORDS.unpack(digest)  # the digest's two halves as big-endian integers
    return (high + 0.5) / _SCALE, (low + 0.5) / _SCALE


def draw_outcome(effective: float, handle_s: float, u1: float, u2: float) -> Outcome:
    """The surveyed outcome of one call (see the module docstring)."""
    return Outcome(handle_time_s=handle_s, csat=draw_csat(effective, u2), resolved=u1 < effective)


def draw_csat(effective: float, u2: float) -> int:
    """``draw_outcome``'s CSAT (its resolution is ``u1 < effective``)."""
    csat = round(expected_csat(effective) + CSAT_SPREAD * _NORMAL.inv_cdf(u2))
    return 1 if csat < 1 else (csat if csat < 5 else 5)  # min(5, max(1, csat)), no calls
