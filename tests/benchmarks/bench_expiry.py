"""What the queue time limit costs a long queue: a dispatcher tick, and queueing a call.

    .venv/bin/python -m tests.benchmarks.bench_expiry [--depths 2000,10000] [--ticks 9]

A private redis-server; for each depth, a tenant whose policy gives emails a day and chats a
minute in the queue, ``depth`` emails queued (nobody can take them: no agent) and then one
chat, queued a millisecond apart (the chat a minute and a second before the ticks run, so
past its limit, behind every email). Prints per depth:

- **queue µs/call**: the median time of ``Store.enqueue`` per call, in batches of 500 (the
  scripts keep the limit's index as they queue);
- **tick ms**: the median time of a dispatcher tick's pass (``Dispatcher.run_tick``) over
  ``--ticks`` ticks, the chat expired or not;
- **ticks to expire**: how many ticks it took the chat to expire (bounded by
  ``depth / 500 + 2``).

Only the store's and the dispatcher's public methods are used, so the same file times an
earlier checkout (``PYTHONPATH=<checkout>``) for a paired comparison.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Sequence
from dataclasses import replace

import redis

from router.dispatcher import Dispatcher
from router.domain import Call, Channel, Policy, frozen_map
from router.redis_store import RedisStore
from tests.benchmarks.tables import print_on_redis

TENANT = "long"
_BATCH = 500
_LIMITS = frozen_map({Channel.EMAIL: 86_400, Channel.CHAT: 60})


def _queue(store: RedisStore, depth: int, policy: Policy, now: list[int]) -> float:
    """``depth`` emails, then a chat, a millisecond apart on the store's clock ``now``; the
    median µs per call of the batches."""
    per_call = []
    for start in range(0, depth, _BATCH):
        count = min(_BATCH, depth - start)
        began = time.perf_counter()
        for i in range(start, start + count):
            now[0] += 1
            store.enqueue(TENANT, f"r{i}", "fp", Call(f"e{i}", Channel.EMAIL), policy=policy)
        per_call.append((time.perf_counter() - began) / count)
    now[0] += 1
    store.enqueue(TENANT, "r-chat", "fp", Call("chat", Channel.CHAT), policy=policy)
    return statistics.median(per_call) * 1e6


def row(url: str, depth: int, ticks: int) -> str:
    """One depth's table row."""
    client = redis.Redis.from_url(url, decode_responses=True)
    client.flushall()
    ticks_at = RedisStore(client).now_ms()
    now = [ticks_at - 61_000 - depth - 1]  # queued a millisecond apart, the chat 61 s ago
    store = RedisStore(client, clock=lambda: now[0])
    policy = Policy(max_wait_s=_LIMITS)
    stored = store.put_policy(TENANT, replace(policy, max_queue=max(policy.max_queue, depth + 1)))
    queue_us = _queue(store, depth, stored, now)
    now[0] = ticks_at
    dispatcher = Dispatcher(store, owner="bench")
    times, expired_at = [], 0
    for tick in range(1, max(ticks, depth // _BATCH + 2) + 1):
        began = time.perf_counter()
        report = dispatcher.run_tick(TENANT)
        times.append(time.perf_counter() - began)
        if report.expired and not expired_at:
            expired_at = tick
        if expired_at and len(times) >= ticks:
            break
    client.close()
    tick_ms = statistics.median(times) * 1000
    took = str(expired_at) if expired_at else "not within the bound"
    return f"| {depth:,} | {queue_us:,.0f} | {tick_ms:,.2f} | {took} |"


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments and print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--depths", default="2000,10000", help="queued emails, comma-separated")
    parser.add_argument("--ticks", type=int, default=9, help="ticks timed per depth (at least)")
    args = parser.parse_args(argv)
    header = (
        "| queued calls | queue µs/call | tick ms | ticks to expire |",
        "|---:|---:|---:|---:|",
    )
    depths = [int(d) for d in args.depths.split(",")]
    print_on_redis(header, (functools.partial(row, depth=d, ticks=args.ticks) for d in depths))


if __name__ == "__main__":
    main()
