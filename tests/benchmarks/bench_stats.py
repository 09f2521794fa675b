"""What GetStats costs a busy tenant: two hours of history read in full, or read forward.

    .venv/bin/python -m tests.benchmarks.bench_stats [--rates 1,10] [--reads 9]

A private redis-server; for each rate (answered calls per second, sustained for the two hours
GetStats looks back), the tenant's history holds an ``answered`` and a ``completed`` entry
per call (written straight into the ZSET, in the scripts' member format). GetStats'
response is built in process (``stats_api.stats_to_pb``: the queue, the agents, the history
and the computation), ``--reads`` times each way, in the same run:

- **full**: a new store for each read, so it reads and decodes the whole history (what every
  GetStats cost before the replica mirrored it);
- **forward**: one store throughout, a second's worth of calls written between reads, so
  each read brings its mirror up to date with those only (``router.history_mirror``).

Prints the medians and their ratio; bounded by ``--reads`` per cell.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Sequence

import redis

from router import stats_api
from router.redis_schema import Keys
from router.redis_store import RedisStore
from router.stats import HISTORY_READ_MS
from tests.benchmarks.tables import print_on_redis

TENANT = "busy"
_BATCH = 5_000


def fill(client: redis.Redis, now_ms: int, calls: int, span_ms: int, first: int = 0) -> int:
    """``calls`` answered (and completed) calls spread evenly over the ``span_ms`` up to
    ``now_ms`` (0: all at ``now_ms``), numbered from ``first``; the next free number."""
    history = Keys(TENANT).history
    pipe = client.pipeline(transaction=False)
    for i in range(calls):
        at = now_ms - span_ms + (i + 1) * span_ms // calls
        n = first + i
        for j, (kind, value) in enumerate((("answered", n % 60_000), ("completed", 300_000))):
            member = f"{at:020d}-{2 * n + j:020d}|{kind}|voice|{value}|c{n}"
            pipe.zadd(history, {member: at})
        if i % _BATCH == _BATCH - 1:
            pipe.execute()
    pipe.execute()
    return first + calls


def _median_ms(samples: Sequence[float]) -> float:
    return statistics.median(samples) * 1000


def row(url: str, rate: int, reads: int) -> str:
    """One rate's table row."""
    client = redis.Redis.from_url(url, decode_responses=True)
    client.flushall()
    now = RedisStore(client).now_ms()
    written = fill(client, now, rate * HISTORY_READ_MS // 1000, HISTORY_READ_MS)
    full = []
    for _ in range(reads):
        started = time.perf_counter()
        stats_api.stats_to_pb(RedisStore(client), TENANT)
        full.append(time.perf_counter() - started)
    store = RedisStore(client)
    stats_api.stats_to_pb(store, TENANT)  # the mirror's first, full read
    forward = []
    for _ in range(reads):
        written = fill(client, store.now_ms(), rate, 0, written)  # a second's calls
        started = time.perf_counter()
        stats_api.stats_to_pb(store, TENANT)
        forward.append(time.perf_counter() - started)
    entries = client.zcard(Keys(TENANT).history)
    client.close()
    a, b = _median_ms(full), _median_ms(forward)
    return f"| {rate} | {entries:,} | {a:,.1f} ms | {b:,.1f} ms | {a / b:.1f}x |"


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments and print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rates", default="1,10", help="answered calls per second, comma-separated"
    )
    parser.add_argument("--reads", type=int, default=9, help="GetStats timed per cell and way")
    args = parser.parse_args(argv)
    header = (
        "| calls/s | history entries | GetStats, full read | read forward | ratio |",
        "|---:|---:|---:|---:|---:|",
    )
    rates = [int(r) for r in args.rates.split(",")]
    print_on_redis(header, (functools.partial(row, rate=r, reads=args.reads) for r in rates))


if __name__ == "__main__":
    main()
