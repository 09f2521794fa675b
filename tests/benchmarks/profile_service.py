"""Where the service's CPU goes under gRPC load: a yappi profile of every service thread.

    .venv/bin/python -m tests.benchmarks.profile_service [--agents 1000] [--pairs 300]
        [--threads 1] [--top 30]

Starts a private redis-server and the service in this process (default settings, no metrics
port) under yappi's CPU clock, which follows every thread (gRPC handlers, the dispatcher, the
health probe), unlike ``profile_assign`` (one thread, no gRPC). The clients run in a separate
process, ``--threads`` of them with a connection each, doing Assign+Complete pairs as
``bench_assign`` does; the profile is cleared after a warm-up. Prints the service's CPU time
per pair, the functions with the most CPU time of their own, and the project's functions by
CPU time including what they call. yappi slows the code it profiles (about 2x, more for
small functions): read shares, not absolute times.
"""

from __future__ import annotations

import argparse
import multiprocessing
import threading
import time

import grpc
import yappi  # type: ignore[import-untyped]  # no stubs

from router import local_redis, logs
from router.redis_store import RedisStore
from router.server import create_server
from router.settings import Settings
from router.v1 import routing_pb2_grpc
from tests.benchmarks.bench_assign import assign_pair
from tests.benchmarks.profile_assign import chat_team

TENANT = "bench"
OWN_CODE = ("/router/", "/scoring/")


def clients(port: int, pairs: int, threads: int, prefix: str) -> None:
    """``pairs`` Assign+Complete pairs from ``threads`` threads, one connection each."""
    per_thread = max(1, pairs // threads)

    def work(n: int) -> None:
        with grpc.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
        ) as channel:
            routing = routing_pb2_grpc.RoutingServiceStub(channel)
            for i in range(per_thread):
                assign_pair(routing, f"{prefix}-{n}-{i}", TENANT)

    running = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for thread in running:
        thread.start()
    for thread in running:
        thread.join()


def _load(port: int, pairs: int, threads: int, prefix: str) -> float:
    """Run the clients in their own process; the wall time they took."""
    started = time.perf_counter()
    process = multiprocessing.get_context("spawn").Process(
        target=clients, args=(port, pairs, threads, prefix)
    )
    process.start()
    process.join()
    if process.exitcode != 0:
        raise RuntimeError(f"the client process failed ({process.exitcode})")
    return time.perf_counter() - started


def _print(stats: yappi.YFuncStats, pairs: int, top: int) -> None:
    rows = [(s.tsub, s.ttot, s.ncall, s.full_name) for s in stats]
    total = sum(tsub for tsub, *_ in rows)
    print(f"service CPU {total:.2f} s for {pairs} pairs: {total / pairs * 1000:.2f} ms per pair\n")
    print("| own CPU | share | calls | function |\n|---:|---:|---:|---|")
    for tsub, _, ncall, name in sorted(rows, reverse=True)[:top]:
        print(f"| {tsub:.3f} s | {tsub / total:5.1%} | {ncall} | `{name}` |")
    print("\n| CPU incl. callees | per pair | calls | project function |\n|---:|---:|---:|---|")
    own = [r for r in rows if any(part in r[3] for part in OWN_CODE)]
    for _, ttot, ncall, name in sorted(own, key=lambda r: r[1], reverse=True)[:top]:
        print(f"| {ttot:.3f} s | {ttot / pairs * 1000:.2f} ms | {ncall} | `{name}` |")


def main() -> None:
    """Parse arguments, profile, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=1000, help="available agents")
    parser.add_argument("--pairs", type=int, default=300, help="profiled Assign+Complete pairs")
    parser.add_argument("--threads", type=int, default=1, help="client threads (connections)")
    parser.add_argument("--top", type=int, default=30, help="rows per table")
    args = parser.parse_args()
    logs.silence()
    redis_server = local_redis.start()
    try:
        store = RedisStore.from_url(redis_server.url)
        chat_team(store, TENANT, args.agents)
        yappi.set_clock_type("cpu")
        yappi.start()
        running = create_server(
            Settings(port=0, metrics_port=0), RedisStore.from_url(redis_server.url)
        )
        try:
            _load(running.port, 50, 1, "warm")
            yappi.clear_stats()
            took = _load(running.port, args.pairs, args.threads, "run")
            yappi.stop()
            print(
                f"agents={args.agents} pairs={args.pairs} threads={args.threads}: "
                f"{args.pairs / took:.0f} pairs/s under the profiler"
            )
            _print(yappi.get_func_stats(), args.pairs, args.top)
        finally:
            running.stop(0)
    finally:
        redis_server.stop()


if __name__ == "__main__":
    main()
