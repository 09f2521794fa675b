"""What one tenant's slow requests cost another's on the same replica: request-slot fairness.

    .venv/bin/python -m tests.benchmarks.bench_fairness [--calls 1500] [--skills 20]
        [--viewers 4] [--seconds 10] [--slots 2]

A private redis-server and one service process (``python -m router``, ``--slots`` request
slots: ``ROUTER_CONCURRENCY``). Tenant ``acme`` has ``--calls`` waiting emails nobody can
take, each needing ``--skills`` skills of its own, so each ``GetStats`` of acme reads and
counts them all (hundreds of milliseconds); ``--viewers`` client threads poll it without a
pause for ``--seconds``. Meanwhile tenant ``beta`` reads one agent (``GetAgent``, a
millisecond of work) every 50 ms. Prints acme's median GetStats time and beta's GetAgent
latency (p50, p90, max): what beta's request waits for a slot behind acme's.

Only the public API is used, so the same file measures an earlier checkout
(``PYTHONPATH=<checkout>``) for a paired comparison.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import threading
import time
from collections.abc import Sequence

import grpc

from router.domain import Call, Channel, Policy, SkillRequirement
from router.redis_store import RedisStore
from router.v1 import admin_pb2, admin_pb2_grpc, routing_pb2, routing_pb2_grpc
from router.v1 import types_pb2 as pb
from tests.benchmarks.bench_assign import serving
from tests.benchmarks.tables import print_on_redis

BUSY, QUIET = "acme", "beta"


def _fill(url: str, calls: int, skills: int) -> None:
    """``calls`` waiting emails of ``BUSY``, each needing ``skills`` skills of its own, and one
    agent of ``QUIET``."""
    store = RedisStore.from_url(url)
    policy = Policy()
    for i in range(calls):
        needs = tuple(SkillRequirement(f"s{i}-{j}", 1) for j in range(skills))
        store.enqueue(BUSY, f"r{i}", "fp", Call(f"c{i}", Channel.EMAIL, needs), policy=policy)


def _quantile(sorted_ms: Sequence[float], share: float) -> float:
    return sorted_ms[min(len(sorted_ms) - 1, int(share * len(sorted_ms)))]


def row(url: str, args: argparse.Namespace) -> str:
    """The table's one row."""
    _fill(url, args.calls, args.skills)
    env = {"ROUTER_CONCURRENCY": str(args.slots)}
    with serving(url, "process", env=env) as (ports, _, _):
        target = f"127.0.0.1:{ports[0]}"
        with grpc.insecure_channel(target) as channel:
            admin = admin_pb2_grpc.AgentAdminServiceStub(channel)
            admin.CreateAgent(
                admin_pb2.CreateAgentRequest(tenant=QUIET, agent=pb.Agent(agent_id="b1"))
            )
            stop = time.monotonic() + args.seconds
            stats_ms: list[float] = []

            def view() -> None:
                with grpc.insecure_channel(target) as own:
                    routing = routing_pb2_grpc.RoutingServiceStub(own)
                    while time.monotonic() < stop:
                        began = time.perf_counter()
                        routing.GetStats(routing_pb2.GetStatsRequest(tenant=BUSY), timeout=60)
                        stats_ms.append((time.perf_counter() - began) * 1000)

            viewers = [threading.Thread(target=view) for _ in range(args.viewers)]
            for viewer in viewers:
                viewer.start()
            took: list[float] = []
            request = admin_pb2.GetAgentRequest(tenant=QUIET, agent_id="b1")
            while time.monotonic() < stop:
                began = time.perf_counter()
                admin.GetAgent(request, timeout=60)
                took.append((time.perf_counter() - began) * 1000)
                time.sleep(0.05)
            for viewer in viewers:
                viewer.join()
    took.sort()
    beta = " | ".join(f"{_quantile(took, share):.1f} ms" for share in (0.5, 0.9, 1.0))
    stats = statistics.median(stats_ms) if stats_ms else float("nan")
    return f"| {args.calls:,} | {args.viewers} | {stats:.1f} ms | {beta} |"


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments and print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=1500, help="acme's waiting calls")
    parser.add_argument("--skills", type=int, default=20, help="skills each call needs")
    parser.add_argument("--viewers", type=int, default=4, help="acme's GetStats threads")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long they poll")
    parser.add_argument("--slots", type=int, default=2, help="ROUTER_CONCURRENCY")
    args = parser.parse_args(argv)
    header = (
        "| acme's waiting calls | acme's viewers | acme GetStats (median)"
        " | beta GetAgent p50 | p90 | max |",
        "|---:|---:|---:|---:|---:|---:|",
    )
    print_on_redis(header, [functools.partial(row, args=args)])


if __name__ == "__main__":
    main()
