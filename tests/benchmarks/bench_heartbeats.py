"""What agents' heartbeats cost an Assign: Assign latency with K heartbeats between Assigns.

    .venv/bin/python -m tests.benchmarks.bench_heartbeats [--agents 1000,10000]
        [--beats 0,10,50] [--pairs 200]

In process, without gRPC (as ``profile_assign``): a private redis-server, N available agents
(chat capacity 4), and Assign+Complete pairs on one store (one replica) while a second store
(another replica) records K heartbeats of random agents before each pair. A heartbeat takes
no agent revision: the routing replica raises its cached agent's heartbeat from the
heartbeat log its first read returns. Prints the Assign's p50 and p99 per K, and the cost
per heartbeat against K = 0 in the same run. Bounded: ``--pairs`` pairs per cell.
"""

from __future__ import annotations

import argparse
import random
import statistics

from router import local_redis, logs
from router.assigner import Assigner
from router.redis_store import RedisStore
from tests.benchmarks.profile_assign import assign_pair, chat_team

TENANT = "beats"


def run(url: str, agents: int, beats: list[int], pairs: int) -> None:
    """One team size: a table row per heartbeat count."""
    store, other = RedisStore.from_url(url), RedisStore.from_url(url)
    tenant = f"{TENANT}{agents}"
    chat_team(store, tenant, agents)
    assigner, rng, counter = Assigner(store), random.Random(1), iter(range(10**9))

    def pair() -> float:
        return assign_pair(assigner, store, tenant, next(counter))

    for _ in range(30):  # warm the mirror and the caches
        pair()
    base = 0.0
    for count in beats:
        took = []
        for _ in range(pairs):
            for _ in range(count):
                other.heartbeat(tenant, f"a{rng.randrange(agents):05d}")
            took.append(pair())
        p50 = statistics.median(took)
        p99 = sorted(took)[min(len(took) - 1, int(0.99 * len(took)))]
        base = p50 if count == 0 else base
        extra = f"{(p50 - base) / count * 1000:6.0f} us per heartbeat" if count and base else ""
        print(
            f"| {agents:,} | {count} | {p50:.2f} ms | {p99:.2f} ms | {extra} |",
            flush=True,
        )


def main() -> None:
    """Parse arguments and run each team size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", default="1000,10000", help="team sizes, comma-separated")
    parser.add_argument("--beats", default="0,10,50", help="heartbeats between Assigns")
    parser.add_argument("--pairs", type=int, default=200, help="Assign+Complete pairs per cell")
    args = parser.parse_args()
    beats = [int(b) for b in args.beats.split(",")]
    logs.silence()
    server = local_redis.start()
    try:
        print("| agents | heartbeats between Assigns | Assign p50 | Assign p99 | vs none |")
        print("|---:|---:|---:|---:|---|")
        for size in (int(a) for a in args.agents.split(",")):
            run(server.url, size, beats, args.pairs)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
