"""Thread-safe bookkeeping of a replay's RPCs: latency per method and errors by status code."""

from __future__ import annotations

import math
import threading
from collections import Counter, defaultdict
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation between order statistics
    (numpy's default); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def latency_summary(values_ms: Sequence[float]) -> dict[str, float | int | None]:
    """Count, p50, p90, p99, max and mean of latencies in milliseconds (``None`` if empty)."""
    if not values_ms:
        return {"n": 0, "p50": None, "p90": None, "p99": None, "max": None, "mean": None}
    return {
        "n": len(values_ms),
        "p50": round(percentile(values_ms, 50), 3),
        "p90": round(percentile(values_ms, 90), 3),
        "p99": round(percentile(values_ms, 99), 3),
        "max": round(max(values_ms), 3),
        "mean": round(math.fsum(values_ms) / len(values_ms), 3),
    }


class RpcStats:
    """Latency (ms) of every RPC attempt per method, and failures per method and status code.

    A retried attempt counts as a request and, if it failed, as an error with its code, so
    the report shows what the service really answered; ``retries`` counts the retries.
    Failures the caller expects in a race (an Accept just after the caller hung up) are
    counted apart as ``expected`` so they do not read as service errors.
    """

    def __init__(self) -> None:
        """Start empty."""
        self._lock = threading.Lock()
        self._latency: defaultdict[str, list[float]] = defaultdict(list)
        self._errors: Counter[tuple[str, str]] = Counter()
        self._expected: Counter[tuple[str, str]] = Counter()
        self._retries: Counter[str] = Counter()
        self._lags: list[float] = []

    def record(
        self, method: str, elapsed_s: float, code: str | None = None, *, expected: bool = False
    ) -> None:
        """One attempt of ``method`` that took ``elapsed_s``; ``code`` names its failure,
        ``expected`` marks a failure that a race makes normal."""
        with self._lock:
            self._latency[method].append(elapsed_s * 1000)
            if code is not None:
                (self._expected if expected else self._errors)[(method, code)] += 1

    def retried(self, method: str) -> None:
        """A failed attempt of ``method`` is being retried."""
        with self._lock:
            self._retries[method] += 1

    def lag(self, late_s: float) -> None:
        """How late (s) an action started after it was due (client saturation shows here)."""
        with self._lock:
            self._lags.append(max(0.0, late_s) * 1000)

    @property
    def requests(self) -> int:
        """RPC attempts so far."""
        with self._lock:
            return sum(len(v) for v in self._latency.values())

    @property
    def errors(self) -> int:
        """Failed attempts so far."""
        with self._lock:
            return sum(self._errors.values())

    def to_json(self) -> dict[str, object]:
        """Requests and latency per method, errors by method and code, scheduling lag."""
        with self._lock:
            by_method = {m: len(v) for m, v in sorted(self._latency.items())}
            errors: dict[str, dict[str, int]] = {}
            for (method, code), count in sorted(self._errors.items()):
                errors.setdefault(method, {})[code] = count
            codes: Counter[str] = Counter()
            for (_, code), count in self._errors.items():
                codes[code] += count
            return {
                "requests": sum(by_method.values()),
                "requests_by_method": by_method,
                "errors": sum(self._errors.values()),
                "errors_by_code": dict(sorted(codes.items())),
                "errors_by_method": errors,
                "expected_failures": {
                    f"{m} {c}": n for (m, c), n in sorted(self._expected.items())
                },
                "retries": dict(sorted(self._retries.items())),
                "latency_ms": {m: latency_summary(v) for m, v in sorted(self._latency.items())},
                "schedule_lag_ms": latency_summary(self._lags),
            }
