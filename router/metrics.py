"""Prometheus metrics of one router replica, served on ``ROUTER_METRICS_PORT``.

Every series is per replica; sum over replicas in Prometheus. Names follow the Prometheus
conventions (``_seconds``, ``_total``). Tenants appear as a label only on the queue gauges,
where an operator needs them; request metrics stay low-cardinality.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

REGISTRY = CollectorRegistry(auto_describe=True)
"""The router's own registry (not the process-global one), so tests can read it."""

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

RPC_SECONDS = Histogram(
    "router_rpc_duration_seconds",
    "Time to answer an RPC, by method and status code.",
    ("method", "code"),
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
ASSIGNMENTS = Counter(
    "router_assign_results_total",
    "Assign answers by result (assigned, offered, queued, no_agent) and strategy.",
    ("result", "strategy"),
    registry=REGISTRY,
)
SOLVER_SECONDS = Histogram(
    "router_decide_duration_seconds",
    "Time in the pure decision (eligibility, scoring, OR-Tools solve), by kind.",
    ("kind",),
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
ADMISSION_WAIT_SECONDS = Histogram(
    "router_admission_wait_seconds",
    "Time requests that found every request slot taken (ROUTER_CONCURRENCY) waited for one.",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
DISPATCH_PLACED = Counter(
    "router_dispatch_placed_total",
    "Queued calls the dispatcher placed.",
    registry=REGISTRY,
)
DISPATCH_CONFLICTS = Counter(
    "router_dispatch_conflicts_total",
    "Dispatcher commits that lost a race and were re-planned.",
    registry=REGISTRY,
)
OFFERS_TIMED_OUT = Counter(
    "router_offers_timed_out_total",
    "Offers that expired unanswered.",
    registry=REGISTRY,
)
RECLAIMED = Counter(
    "router_reclaimed_total",
    "Assignments taken back from agents who left.",
    registry=REGISTRY,
)
SLA_EVENTS = Counter(
    "router_sla_events_total",
    "Calls newly flagged SLA at risk or breached.",
    ("kind",),
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


def serve(host: str, port: int) -> None:
    """Expose ``/metrics`` over HTTP on ``host:port`` (a daemon thread)."""
    start_http_server(port, addr=host, registry=REGISTRY)
