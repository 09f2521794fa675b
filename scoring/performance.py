"""Performance score: outcomes of finished calls, decayed over time, shrunk toward a prior.

Three steps, each a pure function:

1. ``outcome_value`` turns one ``Outcome`` into a value in [0, 1], the weighted mean of the
   parts the outcome carries (a part that is unknown is left out, not counted as 0)::

       csat      (csat - 1) / 4               for csat 1..5      weight 0.5
       resolved  1 if resolved else 0         when known         weight 0.3
       handle    min(1, target / handle_s)    when both > 0      weight 0.2

   ``target / handle_s`` is 1 at or below the target and falls smoothly above it (twice the
   target gives 0.5). An outcome with none of the parts carries no signal: the function
   returns ``None`` and the caller folds nothing (an empty survey must not drag an agent
   toward any value).

2. ``fold`` adds one value to the agent's decayed sums. Outcomes lose half their weight every
   ``half_life_s``::

       factor       = 2 ** (-(now_ms - updated_ms) / 1000 / half_life_s)
                      (1 when updated_ms == 0 or half_life_s <= 0)
       weighted_sum = weighted_sum * factor + value
       weight       = weight * factor + 1
       updated_ms   = now_ms

   The Redis store re-implements exactly this formula in Lua; change both or neither.

3. ``score`` decays the sums to ``now_ms`` (same factor, nothing added) and applies Bayesian
   shrinkage toward the policy prior, so a handful of outcomes cannot make a star or a
   failure::

       score = (prior * prior_weight + weighted_sum * factor)
               / (prior_weight + weight * factor)

   With the default prior 0.6 and prior weight 5, three perfect outcomes give
   (3 + 3) / (5 + 3) = 0.75, and twenty give 0.92.
"""

from __future__ import annotations

from itertools import repeat

import numpy as np
import numpy.typing as npt

from router.domain import Outcome, PerformanceStats, Policy

CSAT_MIN = 1
CSAT_MAX = 5

# Satisfaction is what the customer felt, resolution what the business needs, handle time
# mostly a cost: weigh them in that order.
CSAT_WEIGHT = 0.5
RESOLVED_WEIGHT = 0.3
HANDLE_WEIGHT = 0.2


def outcome_value(outcome: Outcome, target_handle_s: float) -> float | None:
    """Value of one finished call in [0, 1], or ``None`` when the outcome says nothing.

    See the module docstring for the parts and their weights. ``target_handle_s <= 0``
    disables the handle-time part (no target configured).
    """
    return value_of(outcome.csat, outcome.resolved, outcome.handle_time_s, target_handle_s)


def value_of(
    csat: int, resolved: bool | None, handle_time_s: float, target_handle_s: float
) -> float | None:
    """``outcome_value`` of an outcome's fields (no ``Outcome`` built: the simulator folds
    one per call)."""
    total = 0.0
    weight = 0.0
    if CSAT_MIN <= csat <= CSAT_MAX:
        total += CSAT_WEIGHT * (csat - CSAT_MIN) / (CSAT_MAX - CSAT_MIN)
        weight += CSAT_WEIGHT
    if resolved is not None:
        total += RESOLVED_WEIGHT * (1.0 if resolved else 0.0)
        weight += RESOLVED_WEIGHT
    if handle_time_s > 0 and target_handle_s > 0:
        ratio = target_handle_s / handle_time_s
        total += HANDLE_WEIGHT * (ratio if ratio < 1.0 else 1.0)  # min(1.0, ratio)
        weight += HANDLE_WEIGHT
    if weight == 0.0:
        return None
    return total / weight


def decay_factor(updated_ms: int, now_ms: int, half_life_s: int) -> float:
    """Weight left at ``now_ms`` of an outcome folded at ``updated_ms`` (1 when undecayed)."""
    if updated_ms == 0 or half_life_s <= 0:
        return 1.0
    return float(2.0 ** (-(now_ms - updated_ms) / 1000 / half_life_s))


def fold(stats: PerformanceStats, value: float, now_ms: int, half_life_s: int) -> PerformanceStats:
    """Decay ``stats`` to ``now_ms`` and add one outcome ``value`` (the Lua script's formula)."""
    weighted_sum, weight = fold_sums(
        stats.weighted_sum, stats.weight, stats.updated_ms, value, now_ms, half_life_s=half_life_s
    )
    return PerformanceStats(weighted_sum=weighted_sum, weight=weight, updated_ms=now_ms)


def fold_sums(
    weighted_sum: float,
    weight: float,
    updated_ms: int,
    value: float,
    now_ms: int,
    *,
    half_life_s: int,
) -> tuple[float, float]:
    """``fold`` on the sums' fields: the new weighted sum and weight (updated at ``now_ms``)."""
    factor = decay_factor(updated_ms, now_ms, half_life_s)
    return weighted_sum * factor + value, weight * factor + 1.0


def score(stats: PerformanceStats, now_ms: int, policy: Policy) -> float:
    """Shrunk, decayed performance in [0, 1]; the policy prior for an agent with no outcomes."""
    return score_of(stats.weighted_sum, stats.weight, stats.updated_ms, now_ms, policy)


def score_of(
    weighted_sum: float, weight: float, updated_ms: int, now_ms: int, policy: Policy
) -> float:
    """``score`` on the sums' fields (no ``PerformanceStats`` needed: the simulator scores a
    few free agents per call)."""
    factor = decay_factor(updated_ms, now_ms, policy.performance_half_life_s)
    prior_weight = policy.performance_prior_weight
    if not prior_weight > 0.0:  # max(0.0, prior_weight), NaN and -0.0 included
        prior_weight = 0.0
    denominator = prior_weight + weight * factor
    if denominator <= 0.0:
        return _clamp(policy.performance_prior)
    numerator = policy.performance_prior * prior_weight + weighted_sum * factor
    return _clamp(numerator / denominator)


def _clamp(value: float) -> float:
    """Keep a score inside [0, 1] whatever the stored sums say: ``min(1.0, max(0.0, value))``
    as comparisons (once per agent scored), NaN and -0.0 included."""
    if not value > 0.0:
        return 0.0
    return value if value < 1.0 else 1.0


def score_array(
    weighted_sum: npt.NDArray[np.float64],
    weight: npt.NDArray[np.float64],
    updated_ms: npt.NDArray[np.int64],
    now_ms: int,
    policy: Policy,
) -> npt.NDArray[np.float64]:
    """``score`` for many agents at once (the stats' columns), the very same floats.

    Every step is the scalar one elementwise in float64; the power itself is Python's
    ``2.0 ** x`` per agent, so no vectorised ``pow`` can round differently.
    """
    n = len(updated_ms)
    factor = np.ones(n)
    half_life_s = policy.performance_half_life_s
    if half_life_s > 0:
        decays = updated_ms != 0
        exponents = (-(now_ms - updated_ms[decays])) / 1000 / half_life_s
        # The builtin pow is ``2.0 ** exponent``, mapped in C.
        factor[decays] = list(map(pow, repeat(2.0), exponents.tolist()))
    prior_weight = max(0.0, policy.performance_prior_weight)
    denominator = prior_weight + weight * factor
    numerator = policy.performance_prior * prior_weight + weighted_sum * factor
    with np.errstate(divide="ignore", invalid="ignore"):
        values = _clamp_array(numerator / denominator)
    return np.where(denominator <= 0.0, _clamp(policy.performance_prior), values)


def _clamp_array(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """``_clamp`` elementwise, as Python's ``min`` and ``max`` pick (NaN and -0.0 included)."""
    values = np.where(values > 0.0, values, 0.0)
    return np.where(values < 1.0, values, 1.0)
