"""Printed tables whose rows are measured on a private redis-server."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from router import local_redis, logs


def print_on_redis(header: Sequence[str], rows: Iterable[Callable[[str], str]]) -> None:
    """Print ``header``'s lines, then each row as ``rows`` make it given the URL of a
    redis-server started for the table (logs silenced) and stopped after it, also on error."""
    logs.silence()
    server = local_redis.start()
    try:
        for line in header:
            print(line)
        for row in rows:
            print(row(server.url), flush=True)
    finally:
        server.stop()
