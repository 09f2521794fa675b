"""Prometheus metrics of one router replica, served on ``ROUTER_METRICS_PORT``.

Every series is per replica; sum over replicas in Prometheus. Names follow the Prometheus
conventions (``_seconds``, ``_total``). Tenants appear as a label where an operator reads
per tenant (Assign answers, the dispatcher's placements, time-outs, reclaims and SLA marks,
the queue gauges, the call wait histograms); RPC and Redis metrics stay low-cardinality.
"""

from __future__ import annotations

import gc
import time
from bisect import bisect_left
from collections.abc import Iterator
from itertools import accumulate
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.core import HistogramMetricFamily

REGISTRY = CollectorRegistry(auto_describe=True)
"""The router's own registry (not the process-global one), so tests can read it."""

PROCESS = ProcessCollector(registry=REGISTRY)
"""The standard ``process_*`` series of the replica (from ``/proc``, on Linux): CPU seconds,
resident and virtual memory, open and maximum file descriptors, start time. A replica runs on
one interpreter, so its CPU tops out near one core, and Assign's latency tail grows as it
(or the host) nears full; past that, add a replica (BENCHMARKS.md)."""

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
"""Bucket bounds (seconds) of the latency histograms; the Assign latency objective of
``docs/alerts.yaml`` (250 ms) is one of them."""

RPC_SECONDS = Histogram(
    "router_rpc_duration_seconds",
    "Time to answer an RPC, by gRPC service, method and status code.",
    ("service", "method", "code"),
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
ASSIGNMENTS = Counter(
    "router_assign_results_total",
    "Assign answers per tenant by result (assigned, offered, queued, no_agent) and strategy.",
    ("tenant", "result", "strategy"),
    registry=REGISTRY,
)
SOLVER_SECONDS = Histogram(
    "router_decide_duration_seconds",
    "Time in the pure decision (eligibility, scoring, OR-Tools solve), by kind.",
    ("kind",),
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
ADMISSION_WAIT_SECONDS = Histogram(
    "router_admission_wait_seconds",
    "Time requests that found every request slot taken (ROUTER_CONCURRENCY) waited for one.",
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
DISPATCH_PLACED = Counter(
    "router_dispatch_placed_total",
    "Queued calls the dispatcher placed, per tenant.",
    ("tenant",),
    registry=REGISTRY,
)
DISPATCH_CONFLICTS = Counter(
    "router_dispatch_conflicts_total",
    "Dispatcher commits that lost a race and were re-planned.",
    registry=REGISTRY,
)
OFFERS_TIMED_OUT = Counter(
    "router_offers_timed_out_total",
    "Offers that expired unanswered, per tenant.",
    ("tenant",),
    registry=REGISTRY,
)
RECLAIMED = Counter(
    "router_reclaimed_total",
    "Assignments taken back from agents who left, per tenant.",
    ("tenant",),
    registry=REGISTRY,
)
SLA_EVENTS = Counter(
    "router_sla_events_total",
    "Calls newly flagged SLA at risk or breached, per tenant.",
    ("tenant", "kind"),
    registry=REGISTRY,
)
INDEX_READS = Counter(
    "router_routing_index_reads_total",
    "Reads of the routing index by load_candidates, by mode: delta (only the agents changed "
    "since this replica's mirror was current), all (the whole index: a new or minute-old "
    "mirror, or one too far behind) and reset (the rev counter was behind the mirror: a "
    "Redis failover to a node whose clock lags, or keys rewritten).",
    ("mode",),
    registry=REGISTRY,
)
HISTORY_READS = Counter(
    "router_history_reads_total",
    "Reads of a tenant's history (GetStats; the service rate of a tenant whose completions "
    "are not counted apart yet: none since an upgrade, or none at all), by mode: delta "
    "(only the entries written since this replica's mirror was current) and "
    "all (the whole two hours: a tenant this replica had not read, or whose history Redis "
    "no longer agreed with, e.g. after a failover).",
    ("mode",),
    registry=REGISTRY,
)
WAIT_BUCKETS = (0.01, 1, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600, 14400, 86400)
"""Bucket bounds (seconds) of ``router_call_wait_seconds``: the targets contact centres use
(20 s, 30 s, 60 s for voice and chat; hours for email) are bounds, and the first, 10 ms,
holds the calls placed at once (so their quantiles read as 0, not as half a second)."""
CALL_WAIT = Histogram(
    "router_call_wait_seconds",
    "How long calls waited before each placement with an agent (assigned, or offered), per "
    "tenant and channel, on the store's clock: 0 for a call an Assign placed at once; a call "
    "placed again after going back to the queue (rejected, missed, released, reclaimed) "
    "counts again, with its whole wait. The share within a target is the placements' "
    "service level (GetStats' counts each answered call once and abandoned calls too).",
    ("tenant", "channel"),
    buckets=WAIT_BUCKETS,
    registry=REGISTRY,
)
CALL_ABANDONED = Histogram(
    "router_call_abandoned_wait_seconds",
    "How long calls waited before they were abandoned (a Cancel of a queued or offered call: "
    "the caller hung up), per tenant and channel, on the store's clock; each call once. The "
    "count is the abandoned calls; count minus the 5 s bucket, those abandoned after 5 s, "
    "which GetStats' service level counts against the target.",
    ("tenant", "channel"),
    buckets=WAIT_BUCKETS,
    registry=REGISTRY,
)
CALLS_EXPIRED = Counter(
    "router_calls_expired_total",
    "Calls that waited their channel's queue time limit (policy max_wait) without an agent "
    "and left the queue as EXPIRED, per tenant and channel.",
    ("tenant", "channel"),
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "router_queue_depth",
    "Calls waiting, per tenant, as of the last dispatcher pass.",
    ("tenant",),
    registry=REGISTRY,
)
LONGEST_WAIT = Gauge(
    "router_queue_longest_wait_seconds",
    "Longest current wait, per tenant, as of the last dispatcher pass.",
    ("tenant",),
    registry=REGISTRY,
)
STORE_ERRORS = Counter(
    "router_store_unavailable_total",
    "RPCs answered UNAVAILABLE because the state store could not be reached.",
    registry=REGISTRY,
)
RETRIES = Counter(
    "router_store_retries_total",
    "Store writes tried again after a concurrent change, by reason: commit (an Assign's "
    "agent changed before its commit: the call is decided again), version (an agent or the "
    "policy changed between an admin write's read and its write), call (a call moved on "
    "between a Cancel's read and its write), policy (the policy changed under a Complete or "
    "Release), index (the routing index was rebuilt first), route (a Redis Cluster "
    "transaction sent again after MOVED, ASK or a lost node).",
    ("reason",),
    registry=REGISTRY,
)
REDIS_ERRORS = Counter(
    "router_redis_errors_total",
    "Redis calls that failed, by kind: unavailable (connection lost or refused, timeout, "
    "read-only replica, cluster down, out of memory), busy (a long script running), refused "
    "(an error reply), failed (any other driver error).",
    ("kind",),
    registry=REGISTRY,
)

# The counters whose labels are a known set start at 0: a series born at 1 on its first event
# shows no increase to rate() and increase(), so an alert would miss exactly that event.
for _mode in ("delta", "all", "reset"):
    INDEX_READS.labels(_mode)
for _reason in ("commit", "version", "call", "policy", "index", "route"):
    RETRIES.labels(_reason)
for _kind in ("unavailable", "busy", "refused", "failed"):
    REDIS_ERRORS.labels(_kind)


class CollectorPauses:
    """``router_gc_pause_seconds``: how long each garbage collection stopped every thread.

    ``watch`` adds a ``gc.callbacks`` hook that times each collection into plain lists,
    which are read when ``/metrics`` is scraped: a collection can start inside any code,
    a metric's own (non-reentrant) lock included, so the hook must not take one. The
    collector runs one collection at a time, holding the interpreter's lock, so the lists
    change one collection at a time too.
    """

    NAME = "router_gc_pause_seconds"
    HELP = (
        "Time each garbage collection stopped every thread of the replica, by generation "
        "(2: a full collection, which walks every object the replica keeps)."
    )
    BOUNDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)

    def __init__(self) -> None:
        self.counts = [[0] * (len(self.BOUNDS) + 1) for _ in range(3)]
        """Per generation: collections per bucket (not cumulative), the last one +Inf."""
        self.sums = [0.0] * 3
        self._started = 0.0
        self.watching = False

    def watch(self) -> None:
        """Start timing this process's collections (once; later calls do nothing)."""
        if not self.watching:
            self.watching = True
            gc.callbacks.append(self._timed)

    def _timed(self, phase: str, info: dict[str, Any]) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._started = now
            return
        generation, took = info["generation"], now - self._started
        self.counts[generation][bisect_left(self.BOUNDS, took)] += 1
        self.sums[generation] += took

    def describe(self) -> Iterator[HistogramMetricFamily]:
        """The family without samples (the registry's name check)."""
        yield HistogramMetricFamily(self.NAME, self.HELP, labels=("generation",))

    def collect(self) -> Iterator[HistogramMetricFamily]:
        """The histogram as of now."""
        family = HistogramMetricFamily(self.NAME, self.HELP, labels=("generation",))
        for generation in range(3):
            cumulative = list(accumulate(list(self.counts[generation])))
            bounds = [str(bound) for bound in self.BOUNDS] + ["+Inf"]
            family.add_metric(
                [str(generation)],
                list(zip(bounds, cumulative, strict=True)),
                self.sums[generation],
            )
        yield family


GC_PAUSES = CollectorPauses()
REGISTRY.register(GC_PAUSES)


def serve(host: str, port: int) -> None:
    """Expose ``/metrics`` over HTTP on ``host:port`` (a daemon thread)."""
    start_http_server(port, addr=host, registry=REGISTRY)
