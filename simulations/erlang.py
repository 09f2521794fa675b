"""Erlang C and Erlang A: exact figures for a single-skill pool, to validate the simulator.

Notation: arrival rate ``lam`` (calls per second), mean handle time ``h`` (so service rate
``mu = 1/h``), ``c`` agents, offered load ``a = lam * h`` Erlangs, target ``t`` seconds.

**Erlang C** (M/M/c, callers never hang up), with ``B`` the Erlang B blocking probability
from the recursion ``B_0 = 1, B_k = a B_{k-1} / (k + a B_{k-1})``::

    p_wait        = C = c B / (c - a (1 - B))              (a < c; else 1)
    service_level = P(wait <= t) = 1 - C exp(-(c - a) t / h)
    asa_s         = C h / (c - a)                          (mean wait over all calls)

**Erlang A** (M/M/c+M, Garnett, Mandelbaum & Reiman 2002: exponential patience, mean
``1/theta``). The number in system is a birth-death chain with birth rate ``lam`` and death
rate ``min(n, c) mu + max(0, n - c) theta``; it is solved numerically, truncated where the
stationary probabilities fall below 1e-300 of their peak (exact to double precision). An
arrival finding ``n >= c`` waits behind ``j = n - c`` callers; ahead of it the queue shrinks at
rate ``r_i = c mu + i theta`` (services and abandonments of those ahead, FCFS) while it
abandons at rate ``theta``::

    P_j      = prod_{i=0..j} r_i / (r_i + theta)           probability it is answered
    M_j      = (r_j / q_j) (P_{j-1} / q_j + M_{j-1})       E[wait; answered], q_j = r_j + theta
    p_wait        = sum_{n >= c} pi_n                      (PASTA)
    p_abandon     = sum_{n >= c} pi_n (1 - P_{n-c})        (= theta E[queue] / lam)
    service_level = sum_{n < c} pi_n + sum_{n >= c} pi_n P(answered within t | n - c)
    asa_s         = sum_{n >= c} pi_n M_{n-c} / P(answered)   (mean wait of answered calls)

``P(answered within t | j) = P_j * F_j(t)`` where ``F_j`` is the distribution of a pure-death
chain from ``j`` with rates ``q_i`` (the own-patience factor ``exp(-theta s)`` turns rates
``r_i`` into ``q_i``); ``F_j(t)`` for every ``j`` at once by uniformisation.

``service_level`` is the share of *all* offered calls answered within ``t`` (abandoned calls
count as misses), the same definition as the simulator's KPI.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

_TAIL = 1e-300
"""Relative stationary probability at which the Erlang A chain is truncated."""
_POISSON_EPS = 1e-13
"""Uniformisation stops when the Poisson weight left is below this."""


@dataclass(frozen=True, slots=True)
class ErlangFigures:
    """Steady-state figures of a single-skill pool."""

    p_wait: float
    """Probability an arriving call has to wait (all agents busy)."""
    service_level: float
    """Share of offered calls answered within the target."""
    asa_s: float
    """Average speed of answer: Erlang C over all calls (waits of 0 included; equal to the
    mean over answered calls, as none abandon), Erlang A over answered calls."""
    p_abandon: float = 0.0
    """Probability a call abandons (0 for Erlang C)."""


_MAX_STATES = 1_000_000
"""Longest Erlang A chain solved: a pool whose queue settles deeper is refused."""


def _check(arrival_rate: float, mean_handle_s: float, agents: int, target_s: float) -> None:
    """Refuse inputs the formulas have no figures for (NaN and infinities included)."""
    finite = all(map(math.isfinite, (arrival_rate, mean_handle_s, target_s)))
    if not (finite and arrival_rate >= 0 and mean_handle_s > 0 and agents >= 1 and target_s >= 0):
        raise ValueError(
            "need finite arrival_rate >= 0, mean_handle_s > 0, target_s >= 0 and agents >= 1"
        )


def erlang_b(load: float, agents: int) -> float:
    """Erlang B blocking probability for ``load`` Erlangs on ``agents`` servers."""
    b = 1.0
    for k in range(1, agents + 1):
        b = load * b / (k + load * b)
    return b


def erlang_c(
    arrival_rate: float, mean_handle_s: float, agents: int, target_s: float
) -> ErlangFigures:
    """Erlang C figures; ``arrival_rate`` in calls per second."""
    _check(arrival_rate, mean_handle_s, agents, target_s)
    load = arrival_rate * mean_handle_s
    if load >= agents:
        return ErlangFigures(p_wait=1.0, service_level=0.0, asa_s=math.inf)
    b = erlang_b(load, agents)
    c = agents * b / (agents - load * (1 - b))
    service_level = 1.0 - c * math.exp(-(agents - load) * target_s / mean_handle_s)
    return ErlangFigures(
        p_wait=c, service_level=service_level, asa_s=c * mean_handle_s / (agents - load)
    )


def erlang_a(
    arrival_rate: float, mean_handle_s: float, agents: int, target_s: float, mean_patience_s: float
) -> ErlangFigures:
    """Erlang A figures with exponential patience of mean ``mean_patience_s`` (``inf``:
    Erlang C)."""
    _check(arrival_rate, mean_handle_s, agents, target_s)
    if not mean_patience_s > 0:  # NaN too
        raise ValueError("mean_patience_s must be > 0")
    if math.isinf(mean_patience_s):
        return erlang_c(arrival_rate, mean_handle_s, agents, target_s)
    if arrival_rate == 0:
        return ErlangFigures(p_wait=0.0, service_level=1.0, asa_s=0.0, p_abandon=0.0)
    mu, theta, lam = 1.0 / mean_handle_s, 1.0 / mean_patience_s, arrival_rate
    # The chain's mode: where the death rate reaches the birth rate (past the agents, when
    # they cannot keep up, only abandonments close the gap).
    if agents + max(0.0, lam - agents * mu) / theta > _MAX_STATES:
        raise ValueError(
            f"{mean_patience_s:g} s is too long for a pool this overloaded: its queue would "
            f"settle more than {_MAX_STATES:,} calls deep"
        )
    pi = _stationary(lam, mu, theta, agents)
    queue_pi = pi[agents:]  # arrivals that wait, by the number ahead of them j = 0, 1, ...
    depth = len(queue_pi)
    ahead_rate = agents * mu + theta * np.arange(depth)  # r_j
    q = ahead_rate + theta
    answered_j = np.cumprod(ahead_rate / q)  # P_j
    waited_j = np.empty(depth)  # M_j
    prev_p, prev_m = 1.0, 0.0
    for j in range(depth):
        waited_j[j] = (ahead_rate[j] / q[j]) * (prev_p / q[j] + prev_m)
        prev_p, prev_m = answered_j[j], waited_j[j]
    p_wait = float(queue_pi.sum())
    p_answered = float(pi[:agents].sum() + (queue_pi * answered_j).sum())
    within = _death_chain_cdf(q, target_s)
    service_level = float(pi[:agents].sum() + (queue_pi * answered_j * within).sum())
    asa = float((queue_pi * waited_j).sum()) / p_answered if p_answered > 0 else math.inf
    return ErlangFigures(
        p_wait=p_wait,
        service_level=service_level,
        asa_s=asa,
        p_abandon=float((queue_pi * (1.0 - answered_j)).sum()),
    )


def _stationary(lam: float, mu: float, theta: float, agents: int) -> np.ndarray:
    """Stationary distribution of the Erlang A birth-death chain (truncated, normalised)."""
    logs = [0.0]
    peak = 0.0
    n = 0
    while True:
        n += 1
        if n > _MAX_STATES:  # a pool near full load: long patience lets the queue grow deep
            raise ValueError(
                f"{1 / theta:g} s is too long for a pool this loaded: its queue would reach "
                f"more than {_MAX_STATES:,} calls deep"
            )
        death = min(n, agents) * mu + max(0, n - agents) * theta
        logs.append(logs[-1] + math.log(lam) - math.log(death))
        peak = max(peak, logs[-1])
        if n > agents and death > lam and logs[-1] - peak < math.log(_TAIL):
            break
    values = np.exp(np.array(logs) - peak)
    normalised: np.ndarray = values / values.sum()
    return normalised


def _death_chain_cdf(rates: np.ndarray, t: float) -> np.ndarray:
    """``F_j(t)`` for every start ``j``: probability that a pure-death chain started at ``j``
    and leaving state ``i`` at rate ``rates[i]`` (state 0 leaves to absorption) is absorbed
    by time ``t``. Uniformisation: a Poisson mixture of the embedded chain's step counts."""
    if t <= 0:
        return np.zeros(len(rates))
    # Chernoff at s = min rate / 2: P(absorbed after t) <= 2**depth * exp(-min_rate * t / 2).
    if len(rates) * math.log(2) - float(rates.min()) * t / 2 < math.log(_POISSON_EPS):
        return np.ones(len(rates))
    uniform = float(rates.max())
    move = rates / uniform
    mean_steps = uniform * t
    absorbed = np.zeros(len(rates))  # after k steps
    log_weight = -mean_steps  # log Poisson(k = 0)
    total = np.zeros(len(rates))
    left = 1.0
    k = 0
    while left > _POISSON_EPS:
        weight = math.exp(log_weight)
        total += weight * absorbed
        left -= weight
        # one more step: from i, down one with probability move[i]
        shifted = np.concatenate(([1.0], absorbed[:-1]))
        absorbed = move * shifted + (1.0 - move) * absorbed
        k += 1
        log_weight += math.log(mean_steps) - math.log(k)
        if k > mean_steps + 50 * math.sqrt(mean_steps) + 200:
            break
    return np.clip(total + max(0.0, left) * absorbed, 0.0, 1.0)
