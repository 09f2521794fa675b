"""What an idle tenant costs: the dispatcher's once-a-second full pass, and an idle service.

    .venv/bin/python -m tests.benchmarks.bench_idle [--agents 1000,10000] [--ticks 30]
        [--service-seconds 5] [--replicas 1,2] [--tenants 1] [--busy]

A private redis-server and, in each of ``--tenants`` tenants, N available agents (chat
capacity 4), nothing queued, the routing index built (as the first Assign builds it). Two
tables:

- The dispatcher's full pass (``Dispatcher.run_once``, which reads every agent to find work
  to reclaim), in process: its median when nothing changed since the last pass, against the
  median when one agent's heartbeat arrived before each pass (the agent lists must then be
  read again: what every pass cost before ``load_queue`` kept them), in the same run.
- An idle service (``python -m router``, 1 or more replica processes) over the same Redis:
  the CPU of all its replicas and redis-server's per second of wall time, measured over
  ``--service-seconds`` after a 3 s settle (0 skips it). One replica makes each tenant's
  full pass of a tick; the others' ticks check for work only.

Many small tenants: ``--agents 20 --tenants 100`` (the full-pass table times the first
tenant). ``--busy``: in each tenant one agent holds an email (work that moves if its holder
leaves), so no tenant is idle, but nothing waits. Bounded: ``--ticks`` passes per cell, one
service per team size and replica count.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import redis

from router import local_redis, logs
from router.assigner import Assigner
from router.dispatcher import Dispatcher
from router.domain import Call, Channel
from router.redis_store import RedisStore
from tests.benchmarks.bench_assign import CpuClocks, serving
from tests.benchmarks.profile_assign import chat_team

TENANT = "idle"


def _median_ms(fn: Callable[[], object], count: int, before: Callable[[], object]) -> float:
    took = []
    for _ in range(count):
        before()
        started = time.perf_counter()
        fn()
        took.append((time.perf_counter() - started) * 1000)
    return statistics.median(took)


def ticks(url: str, agents: int, count: int, tenants: int, *, busy: bool) -> str:
    """The full pass's table row for one team size (the team made in each tenant, one of
    them holding an email if ``busy``)."""
    store, other = RedisStore.from_url(url), RedisStore.from_url(url)
    for name in _tenants(tenants):
        chat_team(store, name, agents)
        store.load_candidates(name, Call("warm", Channel.CHAT))  # builds the routing index
        if busy:
            email = Call("email", Channel.EMAIL)
            if Assigner(store).assign(name, "email", email, queue=False).assignment is None:
                raise RuntimeError("the email was not assigned: every agent should have room")
    dispatcher = Dispatcher(store)
    dispatcher.run_once(TENANT)  # warms the decoded-agent cache

    def tick() -> None:
        dispatcher.run_once(TENANT)

    idle = _median_ms(tick, count, lambda: None)
    beaten = _median_ms(tick, count, lambda: other.heartbeat(TENANT, "a00000"))
    return f"| {agents:,} | {idle:.2f} ms | {beaten:.2f} ms | {idle / beaten:.2f} |"


def _tenants(count: int) -> list[str]:
    """The tenants' names: ``TENANT`` first."""
    return [TENANT, *(f"{TENANT}-{i}" for i in range(1, count))]


def service(url: str, agents: int, seconds: float, replicas: int) -> str:
    """The idle service's table row for one team size (the teams ``ticks`` left in Redis)."""
    with (
        serving(url, "process", replicas) as (_, service_cpu_s, _),
        redis.Redis.from_url(url) as client,
    ):
        clocks = CpuClocks(service_cpu_s, client)
        time.sleep(3)
        before = clocks.read()
        time.sleep(seconds)
        wall, cpu, redis_cpu, *_ = (b - a for a, b in zip(before, clocks.read(), strict=True))
    per_s = f"{cpu / wall * 1000:.1f} ms | {redis_cpu / wall * 1000:.1f} ms"
    return f"| {agents:,} | {replicas} | {per_s} |"


def main() -> None:
    """Parse arguments and print both tables."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--agents", default="1000,10000", help="team sizes, comma-separated")
    parser.add_argument("--ticks", type=int, default=30, help="full passes timed per cell")
    parser.add_argument(
        "--service-seconds", type=float, default=5.0, help="idle service window (0: skip)"
    )
    parser.add_argument(
        "--replicas", default="1,2", help="idle service replica counts, comma-separated"
    )
    parser.add_argument("--tenants", type=int, default=1, help="tenants, each with the team")
    parser.add_argument(
        "--busy", action="store_true", help="in each tenant one agent holds an email"
    )
    args = parser.parse_args()
    sizes = [int(a) for a in args.agents.split(",")]
    replicas = [int(r) for r in args.replicas.split(",")]
    logs.silence()
    server = local_redis.start()
    try:
        print("| agents | full pass, nothing changed | after a heartbeat | ratio |")
        print("|---:|---:|---:|---:|")
        idle_rows = []
        for size in sizes:
            with redis.Redis.from_url(server.url) as client:
                client.flushall()
            print(ticks(server.url, size, args.ticks, args.tenants, busy=args.busy), flush=True)
            if args.service_seconds > 0:
                for count in replicas:
                    idle_rows.append(service(server.url, size, args.service_seconds, count))
        if idle_rows:
            print()
            print(
                f"| agents per tenant ({args.tenants} tenants) | replicas"
                " | idle service CPU per s | redis-server CPU per s |"
            )
            print("|---:|---:|---:|---:|")
            print("\n".join(idle_rows))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
