"""What Redis keeps per call: bytes of each kind of key after Assign+Complete pairs.

    .venv/bin/python -m tests.benchmarks.bench_records [--pairs 2000] [--attributes 0,32]

A private redis-server, 50 available chat agents; for each ``--attributes`` count, that many
Assign+Complete pairs of chat calls carrying that many attributes of 512 characters, on a
tenant of their own. Prints per kind of key (the tenant's ``call:*``, ``asg:*``,
``timeline:*``, ``req:*`` ...) its ``MEMORY USAGE`` per call and its time to live: what
README's "State in Redis" sizes ``maxmemory`` from.
"""

from __future__ import annotations

import argparse
import functools
import re
from collections import Counter
from collections.abc import Sequence

import redis

from router.assigner import Assigner
from router.domain import AssignmentState, Call, Channel, SkillRequirement
from router.redis_store import RedisStore
from tests.benchmarks.profile_assign import chat_team
from tests.benchmarks.tables import print_on_redis

_KIND = re.compile(r"^rt:v1:\{[^}]*\}:(.+?)(:[^:]*)?$")


def _pairs(store: RedisStore, tenant: str, pairs: int, attributes: int) -> None:
    assigner = Assigner(store)
    extra = {f"k{i}": "v" * 512 for i in range(attributes)}
    need = (SkillRequirement("billing", 3),)
    for n in range(pairs):
        call = Call(f"c{n}", Channel.CHAT, need, attributes=extra)
        placed = assigner.assign(tenant, f"r{n}", call, queue=False).assignment
        if placed is None:
            raise RuntimeError("not assigned: every agent should have room")
        store.finish_assignment(
            tenant, placed.assignment_id, placed.token, AssignmentState.COMPLETED
        )


def rows(url: str, pairs: int, attributes: int) -> str:
    """The table's rows for one attribute count (the kinds of key, biggest first)."""
    tenant = f"a{attributes}"
    client = redis.Redis.from_url(url, decode_responses=True)
    store = RedisStore(client)
    chat_team(store, tenant, 50)
    _pairs(store, tenant, pairs, attributes)
    size: Counter[str] = Counter()
    ttl: dict[str, int] = {}
    keys = set(client.scan_iter(match=f"rt:v1:{{{tenant}}}:*", count=1000))  # SCAN repeats
    for key in sorted(keys):
        found = _KIND.match(key)
        kind = found[1] if found and found[2] else key.split(":", 3)[-1]
        size[kind] += int(client.memory_usage(key, samples=0) or 0)  # every element
        ttl[kind] = int(client.pttl(key))
    client.close()
    lines = []
    for kind, total in size.most_common():
        kept = f"{ttl[kind] / 3_600_000:.0f} h" if ttl[kind] > 0 else "-"
        lines.append(f"| {attributes} | `{kind}` | {total / pairs:,.0f} | {kept} |")
    lines.append(f"| {attributes} | all | {sum(size.values()) / pairs:,.0f} | - |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments and print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=int, default=2000, help="Assign+Complete pairs")
    parser.add_argument("--attributes", default="0,32", help="attributes per call, comma-separated")
    args = parser.parse_args(argv)
    header = ("| attributes | key | bytes per call | kept |", "|---:|---|---:|---|")
    counts = [int(a) for a in args.attributes.split(",")]
    print_on_redis(
        header, (functools.partial(rows, pairs=args.pairs, attributes=a) for a in counts)
    )


if __name__ == "__main__":
    main()
