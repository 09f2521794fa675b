"""Compare routing policies on one scenario: policies x seeds, mean and 95 % CI per KPI.

Every policy runs on the same seeds, so the same callers arrive with the same needs, handle
times and patience under each policy (common random numbers): differences between
policies come from the routing, not from luck of the draw. So each policy is compared with
the first one listed (the baseline) seed by seed: the mean of its per-seed differences with
a 95 % t interval, and a verdict (better or worse) only when that interval excludes zero.
The paired interval removes the luck the policies share, so a difference can be clear even
when the two policies' own intervals overlap. Runs are sequential and deterministic,
seed by seed (every policy on a seed before the next seed), so Ctrl-C keeps whole seeds:
``ComparisonInterrupted`` carries the comparison over the seeds every policy finished.
``compare.json`` holds every run's KPIs and the aggregate, and ``notes``: a warning when
every call comes from trace files (each seed replays the same calls; ``arrival_notes``).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from simulations.scenario import Scenario
from simulations.simulator import simulate

# --- statistics ------------------------------------------------------------------------------

_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip
"""t_{0.975, df} for df = 1..30: the two-sided 95 % quantiles of Student's t (no scipy)."""
_T975_TAIL = ((30, 2.042), (40, 2.021), (60, 2.000), (120, 1.980), (math.inf, 1.960))
"""Beyond 30 the quantile is nearly linear in 1/df; interpolating between these points is
within 0.001 of the exact value."""


def t_quantile_95(df: int) -> float:
    """The two-sided 95 % quantile of Student's t with ``df`` (>= 1) degrees of freedom."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    for (lo_df, lo_t), (hi_df, hi_t) in itertools.pairwise(_T975_TAIL):
        if df <= hi_df:
            x_hi = 0.0 if math.isinf(hi_df) else 1 / hi_df
            return hi_t + (lo_t - hi_t) * (1 / df - x_hi) / (1 / lo_df - x_hi)
    return 1.960  # pragma: no cover - the last tail point is infinite


@dataclass(frozen=True, slots=True)
class Summary:
    """Mean of ``n`` runs with a 95 % confidence interval ``[ci_low, ci_high]``.

    With one run the interval collapses to the mean (no spread to estimate); with none
    (the KPI was undefined in every run) everything is NaN.
    """

    n: int
    mean: float
    std: float
    """Sample standard deviation (``ddof=1``)."""
    half_width: float
    ci_low: float
    ci_high: float

    def as_dict(self) -> dict[str, float | int | None]:
        """JSON-ready form (NaN becomes ``null``)."""
        return {
            "n": self.n,
            "mean": _finite(self.mean),
            "std": _finite(self.std),
            "half_width": _finite(self.half_width),
            "ci_low": _finite(self.ci_low),
            "ci_high": _finite(self.ci_high),
        }


def summarize(values: Iterable[float | None]) -> Summary:
    """Mean and t-based 95 % CI of ``values``; ``None`` and NaN (undefined KPIs) are dropped."""
    clean = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    n = len(clean)
    if n == 0:
        return Summary(0, math.nan, math.nan, math.nan, math.nan, math.nan)
    mean = math.fsum(clean) / n
    if n == 1:  # one run says nothing of the spread: no interval (not a zero-width one)
        return Summary(1, mean, math.nan, math.nan, math.nan, math.nan)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in clean) / (n - 1))
    half = t_quantile_95(n - 1) * std / math.sqrt(n)
    return Summary(n, mean, std, half, mean - half, mean + half)


def _finite(value: float) -> float | None:
    """``value``, or ``None`` for NaN and the infinities (JSON has neither)."""
    return value if math.isfinite(value) else None


def verdict(paired: Summary, better: str) -> str | None:
    """What a paired difference (policy minus baseline) says: ``better`` or ``worse`` (by
    ``better``, the KPI's good direction; ``higher`` or ``lower`` for a KPI with none) when
    its interval excludes 0, else ``no clear difference``; ``None`` without an interval
    (fewer than two seeds)."""
    if paired.n < 2 or math.isnan(paired.half_width):
        return None
    if paired.ci_low > 0:
        direction = "higher"
    elif paired.ci_high < 0:
        direction = "lower"
    else:
        return "no clear difference"
    if not better:
        return direction
    return "better" if direction == better else "worse"


# --- which KPIs are compared -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Metric:
    """One KPI to compare, found at ``path`` (dotted) in ``kpis.json``."""

    path: str
    label: str
    unit: str
    """``%`` (a fraction shown as a percentage), ``s`` or ``""``."""
    better: str
    """``higher``, ``lower`` or ``""`` when neither is better in itself."""
    bounds: tuple[float, float] | None = None
    """The values the KPI can take; ``None``: by its unit (``%`` 0..1, ``s`` from 0)."""

    def limits(self) -> tuple[float, float]:
        """The lowest and highest value the KPI can take (infinite where unbounded)."""
        if self.bounds is not None:
            return self.bounds
        return {"%": (0.0, 1.0), "s": (0.0, math.inf)}.get(self.unit, (-math.inf, math.inf))

    def value(self, kpis: Mapping[str, Any]) -> float | None:
        """The KPI in one run's ``kpis`` (``None`` when absent or undefined)."""
        node: Any = kpis
        for part in self.path.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return None
            node = node[part]
        if isinstance(node, bool) or not isinstance(node, int | float):
            return None
        return float(node)


HEADLINE_METRICS = (
    Metric("overall.service_level", "Service level", "%", "higher"),
    Metric("overall.asa_s", "Average speed of answer", "s", "lower"),
    Metric("overall.abandon_rate", "Abandonment", "%", "lower"),
    Metric("overall.expire_rate", "Expired (queue time limit)", "%", "lower"),
    Metric("overall.wait_p90_s", "Wait, 90th percentile", "s", "lower"),
    Metric("fairness.occupancy_mean", "Occupancy, mean", "%", ""),
    Metric("fairness.occupancy_std", "Occupancy spread (std)", "%", "lower"),
    Metric("fairness.occupancy_gini", "Occupancy Gini", "", "lower", (0.0, 1.0)),
    Metric("fairness.handled_gini", "Calls-per-agent Gini", "", "lower", (0.0, 1.0)),
    Metric("top_performers.share_of_calls", "Top performers' share of calls", "%", ""),
    Metric("top_performers.peak_occupancy", "Top performers' peak occupancy", "%", "lower"),
    Metric("quality.skill_match_mean", "Skill match", "", "higher", (0.0, 1.0)),
    Metric("quality.estimated_csat", "Estimated CSAT (1-5)", "", "higher", (1.0, 5.0)),
)
"""KPIs every comparison reports, in display order (per-channel service levels come first);
one no run has (the expiries of a policy with no queue time limit) is left out."""


def channel_metrics(runs: Sequence[Mapping[str, Any]]) -> tuple[Metric, ...]:
    """A service-level metric per channel seen in any run, in first-seen order."""
    seen: dict[str, None] = {}
    for kpis in runs:
        for name in kpis.get("channels", {}):
            seen.setdefault(str(name), None)
    return tuple(
        Metric(f"channels.{name}.service_level", f"Service level, {name}", "%", "higher")
        for name in seen
    )


# --- running ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Run:
    """The KPIs of one simulation run."""

    policy: str
    seed: int
    kpis: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Comparison:
    """Every run of a comparison and the per-policy summaries."""

    scenario: str
    policies: tuple[str, ...]
    seeds: tuple[int, ...]
    runs: tuple[Run, ...]
    metrics: tuple[Metric, ...] = field(default=())
    notes: tuple[str, ...] = ()
    """Warnings on what the intervals cover (``arrival_notes``), printed with the tables."""

    def summary(self, metric: Metric, policy: str) -> Summary:
        """Mean and CI of ``metric`` over the seeds of ``policy``."""
        return summarize(metric.value(run.kpis) for run in self.runs if run.policy == policy)

    def paired(self, metric: Metric, policy: str) -> Summary:
        """Mean and CI of ``policy``'s per-seed difference from the baseline (the first
        policy) in ``metric``, over the seeds where both have a value."""
        values = {(run.policy, run.seed): metric.value(run.kpis) for run in self.runs}
        diffs = []
        for seed in self.seeds:
            mine, base = values.get((policy, seed)), values.get((self.policies[0], seed))
            if mine is not None and base is not None:
                diffs.append(mine - base)
        return summarize(diffs)

    def _versus(self, metric: Metric) -> dict[str, dict[str, Any]]:
        """Every other policy's paired difference from the baseline, with its verdict."""
        out: dict[str, dict[str, Any]] = {}
        for policy in self.policies[1:]:
            paired = self.paired(metric, policy)
            out[policy] = {**paired.as_dict(), "verdict": verdict(paired, metric.better)}
        return out

    def to_json(self) -> dict[str, Any]:
        """The content of ``compare.json``."""
        return {
            "scenario": self.scenario,
            "policies": list(self.policies),
            "seeds": list(self.seeds),
            "confidence": 0.95,
            "interval": "Student t on the per-seed values (common random numbers across policies)",
            "baseline": self.policies[0],
            "notes": list(self.notes),
            "paired": (
                "vs_baseline: each policy's per-seed difference from the baseline, its mean "
                "and Student t interval; verdict better or worse only when it excludes 0"
            ),
            "metrics": {
                m.path: {
                    "label": m.label,
                    "unit": m.unit,
                    "better": m.better,
                    "range": [_finite(v) for v in m.limits()],
                    "policies": {p: self.summary(m, p).as_dict() for p in self.policies},
                    "vs_baseline": self._versus(m),
                }
                for m in self.metrics
            },
            "runs": [
                {
                    "policy": run.policy,
                    "seed": run.seed,
                    "values": {m.path: m.value(run.kpis) for m in self.metrics},
                }
                for run in self.runs
            ],
        }

    def write(self, path: Path) -> Path:
        """Write ``compare.json`` (NaN-free, so any JSON reader takes it)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2, allow_nan=False) + "\n")
        return path


class ComparisonInterrupted(KeyboardInterrupt):
    """Ctrl-C during a comparison, after ``done`` of the ``planned`` runs: ``partial`` is
    the comparison over the seeds every policy finished (none, if none was)."""

    def __init__(self, partial: Comparison, done: int, planned: int) -> None:
        """The comparison of the seeds finished, and how many runs were."""
        super().__init__(f"after {done} of {planned} runs")
        self.partial = partial
        self.done = done
        self.planned = planned


def arrival_notes(scenario: Scenario) -> tuple[str, ...]:
    """A warning when every call of ``scenario`` comes from trace files (no stream draws
    any): each seed then replays the same calls, so the intervals cover only what is drawn
    per seed (the routing's random choices, the calls' outcomes), not how traffic varies
    from day to day; none otherwise."""
    drawn = any(
        stream.rate_per_hour * scenario.arrival_scale > 0
        and any(mult > 0 for _, mult in stream.profile)
        for stream in scenario.streams
    )
    if drawn or not scenario.traces:
        return ()
    files = ", ".join(path.name for path in scenario.traces)
    return (
        f"every call comes from trace files ({files}): each seed replays the same calls, "
        "so the 95 % intervals cover only what is drawn per seed (the routing's random "
        "choices, the calls' outcomes), not how traffic varies from day to day",
    )


Simulate = Callable[[Scenario, int, str], Mapping[str, Any]]
"""``(scenario, seed, policy) -> kpis``; the real simulator unless a test swaps it."""


def _simulate(scenario: Scenario, seed: int, policy: str) -> Mapping[str, Any]:
    kpis: Mapping[str, Any] = simulate(scenario, seed=seed, policy=policy).kpis
    return kpis


def run_comparison(
    scenario: Scenario,
    policies: Sequence[str],
    seeds: Sequence[int],
    *,
    progress: bool = False,
    simulate_fn: Simulate = _simulate,
) -> Comparison:
    """Run every policy on every seed, one after the other (with a progress bar), seed by
    seed; Ctrl-C raises ``ComparisonInterrupted`` with the seeds every policy finished."""
    if not policies:
        raise ValueError("policies: give at least one policy")
    if not seeds:
        raise ValueError("seeds: give at least one seed")
    jobs = [(policy, seed) for seed in seeds for policy in policies]
    runs: list[Run] = []
    try:
        with tqdm(total=len(jobs), desc="compare", unit="run", disable=not progress) as bar:
            for policy, seed in jobs:
                bar.set_postfix_str(f"{policy} seed {seed}")
                runs.append(Run(policy, seed, simulate_fn(scenario, seed, policy)))
                bar.update()
    except KeyboardInterrupt:
        whole = len(runs) // len(policies)
        partial = _compared(scenario, policies, seeds[:whole], runs[: whole * len(policies)])
        raise ComparisonInterrupted(partial, len(runs), len(jobs)) from None
    return _compared(scenario, policies, seeds, runs)


def _compared(
    scenario: Scenario, policies: Sequence[str], seeds: Sequence[int], runs: Sequence[Run]
) -> Comparison:
    """The comparison of ``runs`` (every policy on each of ``seeds``), listed policy by
    policy, over the KPIs some run has."""
    order = {policy: index for index, policy in enumerate(policies)}
    listed = sorted(runs, key=lambda run: order[run.policy])  # stable: seeds stay in order
    kpis = [run.kpis for run in listed]
    per_channel = channel_metrics(kpis)
    # With one channel its service level is the overall one: listing both says it twice.
    metrics = (*(per_channel if len(per_channel) > 1 else ()), *HEADLINE_METRICS)
    present = tuple(m for m in metrics if any(m.value(k) is not None for k in kpis))
    return Comparison(
        scenario.name,
        tuple(policies),
        tuple(seeds),
        tuple(listed),
        present,
        arrival_notes(scenario),
    )
