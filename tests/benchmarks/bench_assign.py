"""Assign end to end (real gRPC, real redis-server) against a no-op RPC on the same server.

    .venv/bin/python -m tests.benchmarks.bench_assign [--agents 100,1000] [--calls 400]

Starts a private redis-server and the service in this process, registers N available agents
(chat capacity 4 each), then for each N: sequential latency of Assign+Complete pairs and of
the health Check (the no-op baseline) over the same channel, and the throughput of 8 client
threads for a few seconds. Prints medians and ratios; bounded in calls and time.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections.abc import Callable

import grpc
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from router import local_redis, logs
from router.redis_store import RedisStore
from router.server import create_server
from router.settings import Settings
from router.v1 import admin_pb2, admin_pb2_grpc, routing_pb2, routing_pb2_grpc
from router.v1 import types_pb2 as pb

TENANT = "bench"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _timed(fn: Callable[[], object], count: int) -> list[float]:
    out = []
    for _ in range(count):
        started = time.perf_counter()
        fn()
        out.append((time.perf_counter() - started) * 1000)
    return out


def _throughput(fn: Callable[[int], object], seconds: float, threads: int = 8) -> float:
    done = [0] * threads
    stop = time.monotonic() + seconds

    def worker(index: int) -> None:
        i = 0
        while time.monotonic() < stop:
            fn(index * 1_000_000 + i)
            i += 1
        done[index] = i

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return sum(done) / seconds


def run(agents: int, calls: int, seconds: float, url: str) -> None:
    """Benchmark one team size."""
    redis.Redis.from_url(url).flushall()
    store = RedisStore.from_url(url)
    running = create_server(Settings(port=0, workers=16, metrics_port=0), store)
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    admin = admin_pb2_grpc.AgentAdminServiceStub(channel)
    routing = routing_pb2_grpc.RoutingServiceStub(channel)
    health = health_pb2_grpc.HealthStub(channel)
    for i in range(agents):
        admin.CreateAgent(
            admin_pb2.CreateAgentRequest(
                tenant=TENANT,
                agent=pb.Agent(
                    agent_id=f"a{i:05d}",
                    skills={"billing": 1 + i % 10, f"s{i % 7}": 5},
                    capacity=[pb.ChannelCapacity(channel=pb.CHANNEL_CHAT, max_items=4)],
                ),
            )
        )
        admin.SetPresence(
            admin_pb2.SetPresenceRequest(
                tenant=TENANT, agent_id=f"a{i:05d}", presence=pb.PRESENCE_AVAILABLE
            )
        )

    def cycle(n: int) -> None:
        reply = routing.Assign(
            routing_pb2.AssignRequest(
                tenant=TENANT,
                request_id=f"r{agents}-{n}",
                call=pb.Call(
                    call_id=f"c{agents}-{n}",
                    channel=pb.CHANNEL_CHAT,
                    required_skills=[pb.SkillRequirement(skill="billing", min_level=3)],
                ),
                no_queue=True,
            )
        )
        if reply.result == routing_pb2.AssignResponse.RESULT_ASSIGNED:
            routing.Complete(
                routing_pb2.CompleteRequest(
                    tenant=TENANT,
                    assignment_id=reply.assignment.assignment_id,
                    fencing_token=reply.assignment.fencing_token,
                )
            )

    counter = iter(range(10**9))
    assign_only: list[float] = []

    def assign_then_complete() -> None:
        n = next(counter)
        started = time.perf_counter()
        reply = routing.Assign(
            routing_pb2.AssignRequest(
                tenant=TENANT,
                request_id=f"s{agents}-{n}",
                call=pb.Call(
                    call_id=f"s{agents}-{n}",
                    channel=pb.CHANNEL_CHAT,
                    required_skills=[pb.SkillRequirement(skill="billing", min_level=3)],
                ),
                no_queue=True,
            )
        )
        assign_only.append((time.perf_counter() - started) * 1000)
        if reply.result != routing_pb2.AssignResponse.RESULT_ASSIGNED:
            raise RuntimeError(f"not assigned: {reply}")
        routing.Complete(
            routing_pb2.CompleteRequest(
                tenant=TENANT,
                assignment_id=reply.assignment.assignment_id,
                fencing_token=reply.assignment.fencing_token,
            )
        )

    def noop(_: int = 0) -> None:
        health.Check(health_pb2.HealthCheckRequest())  # type: ignore[attr-defined]  # untyped stub

    _timed(noop, 50)  # warm up
    _timed(assign_then_complete, 20)
    assign_only.clear()
    baseline = _timed(noop, calls)
    _timed(assign_then_complete, calls)
    noop_rate = _throughput(noop, seconds)
    cycle_rate = _throughput(cycle, seconds)
    b50, a50 = statistics.median(baseline), statistics.median(assign_only)
    print(
        f"agents={agents:>6}  no-op p50 {b50:6.2f} ms p99 {_percentile(baseline, 0.99):6.2f} ms"
        f" | Assign p50 {a50:6.2f} ms p99 {_percentile(assign_only, 0.99):6.2f} ms"
        f" max {max(assign_only):6.2f} ms ({a50 / b50:4.1f}x no-op)"
        f" | 8 threads: no-op {noop_rate:7.0f}/s, Assign+Complete {cycle_rate:6.0f} pairs/s"
        f" ({2 * cycle_rate / noop_rate:4.2f} of no-op RPC rate)"
    )
    channel.close()
    running.stop(0)


def main() -> None:
    """Parse arguments and run each team size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", default="100,1000", help="team sizes, comma-separated")
    parser.add_argument("--calls", type=int, default=400, help="sequential samples per RPC")
    parser.add_argument("--seconds", type=float, default=3.0, help="throughput phase length")
    args = parser.parse_args()
    logs.silence()
    server = local_redis.start()
    try:
        for size in (int(a) for a in args.agents.split(",")):
            run(size, args.calls, args.seconds, server.url)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
