"""Agent updates per second (real gRPC, real redis-server), alone and under Assign load.

    .venv/bin/python -m tests.benchmarks.bench_admin [--agents 200] [--seconds 3]

Starts a private redis-server and the service in this process (as ``bench_assign``), registers
N available agents (chat capacity 4 each), then runs three phases of ``--seconds`` each:

1. **admin alone**: ``--admin-threads`` clients each cycling UpdateAgent (field mask
   ``name``), SetPresence (BREAK, then AVAILABLE again) and PatchSkills (a skill no call
   needs) on their own agents;
2. **Assign alone**: ``--assign-threads`` clients doing Assign (chat, ``billing >= 3``,
   ``no_queue``) then Complete;
3. **both at once**.

Prints admin updates/s (by RPC and in total) and Assign p50/p99 and pairs/s, with and
without the other load. Bounded in time; client and server share one process and the cores,
so compare the phases of one run, not absolute figures across machines.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc
import redis
from google.protobuf import field_mask_pb2

from router import local_redis, logs
from router.redis_store import RedisStore
from router.server import create_server
from router.settings import Settings
from router.v1 import admin_pb2, admin_pb2_grpc, routing_pb2_grpc
from router.v1 import types_pb2 as pb
from tests.benchmarks import bench_assign, results
from tests.benchmarks.bench_assign import _percentile

TENANT = "bench-admin"
KINDS = ("UpdateAgent", "SetPresence", "PatchSkills")


@dataclass(slots=True)
class Phase:
    """What one phase measured."""

    seconds: float
    updates: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    update_ms: list[float] = field(default_factory=list)
    assign_ms: list[float] = field(default_factory=list)
    pairs: int = 0
    errors: int = 0

    @property
    def updates_per_s(self) -> float:
        return sum(self.updates.values()) / self.seconds


class Bench:
    """One server, one channel, N agents."""

    def __init__(self, agents: int, url: str) -> None:
        redis.Redis.from_url(url).flushall()
        self.running = create_server(
            Settings(port=0, workers=16, metrics_port=0), RedisStore.from_url(url)
        )
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.running.port}")
        self.admin = admin_pb2_grpc.AgentAdminServiceStub(self.channel)
        self.routing = routing_pb2_grpc.RoutingServiceStub(self.channel)
        self.agents = [f"a{i:05d}" for i in range(agents)]
        for i, agent_id in enumerate(self.agents):
            self.admin.CreateAgent(
                admin_pb2.CreateAgentRequest(
                    tenant=TENANT,
                    agent=pb.Agent(
                        agent_id=agent_id,
                        skills={"billing": 3 + i % 8, f"s{i % 7}": 5},
                        capacity=[pb.ChannelCapacity(channel=pb.CHANNEL_CHAT, max_items=4)],
                    ),
                )
            )
            self.admin.SetPresence(
                admin_pb2.SetPresenceRequest(
                    tenant=TENANT, agent_id=agent_id, presence=pb.PRESENCE_AVAILABLE
                )
            )
        self.counter = iter(range(10**9))
        self.lock = threading.Lock()

    def close(self) -> None:
        self.channel.close()
        self.running.stop(0)

    # --- the two kinds of client ------------------------------------------------------------

    def update(self, kind: str, agent_id: str, n: int) -> None:
        """One admin write of ``kind`` on ``agent_id`` (``n`` varies the value)."""
        if kind == "UpdateAgent":
            self.admin.UpdateAgent(
                admin_pb2.UpdateAgentRequest(
                    tenant=TENANT,
                    agent=pb.Agent(agent_id=agent_id, name=f"Agent {agent_id} #{n}"),
                    update_mask=field_mask_pb2.FieldMask(paths=["name"]),
                )
            )
        elif kind == "SetPresence":
            presence = pb.PRESENCE_BREAK if n % 2 == 0 else pb.PRESENCE_AVAILABLE
            self.admin.SetPresence(
                admin_pb2.SetPresenceRequest(tenant=TENANT, agent_id=agent_id, presence=presence)
            )
        else:
            self.admin.PatchSkills(
                admin_pb2.PatchSkillsRequest(
                    tenant=TENANT,
                    agent_id=agent_id,
                    set=[admin_pb2.SkillLevel(skill="admin_bench", level=1 + n % 10)],
                )
            )

    def assign_pair(self) -> float:
        """Assign then Complete; returns the Assign latency in ms."""
        with self.lock:
            n = next(self.counter)
        return bench_assign.assign_pair(self.routing, f"c{n}", TENANT)[0]

    def phase(self, seconds: float, admin_threads: int, assign_threads: int) -> Phase:
        """Run the given clients for ``seconds``; every thread stops at the deadline."""
        result = Phase(seconds)
        stop = time.monotonic() + seconds
        # each admin thread owns a slice of the agents, so two writers never race on one
        owned = (
            [self.agents[i::admin_threads] for i in range(admin_threads)] if admin_threads else []
        )

        def admin_worker(index: int) -> None:
            mine, n = owned[index], 0
            counts = dict.fromkeys(KINDS, 0)
            latencies: list[float] = []
            while time.monotonic() < stop:
                kind = KINDS[n % len(KINDS)]
                # SetPresence goes BREAK then AVAILABLE on the same agent: n // 3 alternates
                agent_id = mine[(n // 6) % len(mine)]
                started = time.perf_counter()
                try:
                    self.update(kind, agent_id, n // 3)
                except grpc.RpcError:
                    with self.lock:
                        result.errors += 1
                else:
                    latencies.append((time.perf_counter() - started) * 1000)
                    counts[kind] += 1
                n += 1
            # leave every agent available for the next phase
            for agent_id in mine:
                self.update("SetPresence", agent_id, 1)
            with self.lock:
                for kind, count in counts.items():
                    result.updates[kind] += count
                result.update_ms.extend(latencies)

        def assign_worker(_: int) -> None:
            latencies: list[float] = []
            while time.monotonic() < stop:
                try:
                    latencies.append(self.assign_pair())
                except grpc.RpcError:
                    with self.lock:
                        result.errors += 1
            with self.lock:
                result.assign_ms.extend(latencies)
                result.pairs += len(latencies)

        threads = [
            *(threading.Thread(target=admin_worker, args=(i,)) for i in range(admin_threads)),
            *(threading.Thread(target=assign_worker, args=(i,)) for i in range(assign_threads)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return result


def _stat(values: list[float], q: float | None) -> float | None:
    """The median (``q`` None) or the ``q`` percentile of ``values``; ``None`` if empty."""
    if not values:
        return None
    return statistics.median(values) if q is None else _percentile(values, q)


def _ms(values: list[float], q: float | None) -> str:
    value = _stat(values, q)
    return "-" if value is None else f"{value:.1f} ms"


def _per_s(phase: Phase, kind: str) -> str:
    return f"{phase.updates[kind] / phase.seconds:,.0f}" if phase.update_ms else "-"


def report(agents: int, phases: dict[str, Phase]) -> str:
    """A markdown table of the phases."""
    lines = [
        f"agents={agents}",
        "",
        "| phase | updates/s | UpdateAgent/s | SetPresence/s | PatchSkills/s | update p50 "
        "| update p99 | Assign p50 | Assign p99 | Assign+Complete pairs/s | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, phase in phases.items():
        updates = f"{phase.updates_per_s:,.0f}" if phase.update_ms else "-"
        pairs = f"{phase.pairs / phase.seconds:,.0f}" if phase.assign_ms else "-"
        lines.append(
            f"| {name} | {updates} | {_per_s(phase, 'UpdateAgent')} "
            f"| {_per_s(phase, 'SetPresence')} | {_per_s(phase, 'PatchSkills')} "
            f"| {_ms(phase.update_ms, None)} "
            f"| {_ms(phase.update_ms, 0.99)} | {_ms(phase.assign_ms, None)} "
            f"| {_ms(phase.assign_ms, 0.99)} | {pairs} | {phase.errors} |"
        )
    alone, both = phases["admin alone"], phases["admin + Assign"]
    assign_alone = phases["Assign alone"]
    if alone.updates_per_s and assign_alone.assign_ms and both.assign_ms:
        lines.append("")
        lines.append(
            f"Under Assign load admin updates run at {both.updates_per_s / alone.updates_per_s:.2f}"
            f" of their rate alone; Assign p99 moves from {_ms(assign_alone.assign_ms, 0.99)} "
            f"to {_ms(both.assign_ms, 0.99)} with the admin writes."
        )
    return "\n".join(lines)


def records(agents: int, phases: dict[str, Phase]) -> list[results.Record]:
    """The table's rows as records (``None`` where a phase has no such figure)."""
    return [
        {
            "kind": "admin",
            "agents": agents,
            "phase": name,
            "seconds": phase.seconds,
            "updates_per_s": phase.updates_per_s if phase.update_ms else None,
            "pairs_per_s": phase.pairs / phase.seconds if phase.assign_ms else None,
            "update_p50_ms": _stat(phase.update_ms, None),
            "update_p99_ms": _stat(phase.update_ms, 0.99),
            "assign_p50_ms": _stat(phase.assign_ms, None),
            "assign_p99_ms": _stat(phase.assign_ms, 0.99),
            "errors": phase.errors,
        }
        for name, phase in phases.items()
    ]


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments (``argv``, else the command line), run the three phases per team
    size, print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", default="200", help="team sizes, comma-separated")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each phase")
    parser.add_argument("--admin-threads", type=int, default=4, help="admin client threads")
    parser.add_argument("--assign-threads", type=int, default=4, help="Assign client threads")
    parser.add_argument("--quick", action="store_true", help="100 agents, 1 s phases")
    results.add_option(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.agents, args.seconds = "100", 1.0
    if args.admin_threads < 1 or args.assign_threads < 1 or args.seconds <= 0:
        parser.error("need at least one thread of each kind and --seconds > 0")
    logs.silence()
    server = local_redis.start()
    written: list[results.Record] = []
    try:
        for size in (int(a) for a in args.agents.split(",")):
            bench = Bench(size, server.url)
            try:
                bench.phase(min(1.0, args.seconds), args.admin_threads, args.assign_threads)
                phases = {
                    "admin alone": bench.phase(args.seconds, args.admin_threads, 0),
                    "Assign alone": bench.phase(args.seconds, 0, args.assign_threads),
                    "admin + Assign": bench.phase(
                        args.seconds, args.admin_threads, args.assign_threads
                    ),
                }
            finally:
                bench.close()
            print(report(size, phases), flush=True)
            print()
            written += records(size, phases)
    finally:
        server.stop()
    results.write(args.json, "bench_admin", argv, written, quick=args.quick)


if __name__ == "__main__":
    main()
