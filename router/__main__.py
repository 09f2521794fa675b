"""``python -m router``: run the routing service. ``--help`` lists every setting."""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import threading
from collections.abc import Sequence

import structlog

from router import local_redis, logs, metrics
from router.memory_store import MemoryStore
from router.redis_store import RedisStore
from router.server import create_server
from router.settings import Settings, SettingsError
from router.store import Store

DESCRIPTION = """\
Agent-routing engine: a gRPC service that decides which human agent takes each call, chat,
WhatsApp message or email, with an OR-Tools balancing model over live agent state.

Services on the port: router.v1.RoutingService (Assign, Complete, Release, Cancel, GetCall),
router.v1.AgentAdminService, router.v1.PolicyService, grpc.health.v1.Health and server
reflection (try: grpcurl -plaintext 127.0.0.1:50051 list).

State: with REDIS_URL set, that Redis (shared by every replica). Without it, a private
redis-server is started if one is installed, else the in-memory store is used (one process,
state lost on exit). The first log line says which.
"""


def _epilog() -> str:
    lines = ["settings (environment variables; the flags above override them):"]
    for f in dataclasses.fields(Settings):
        name = "REDIS_URL" if f.name == "redis_url" else f"ROUTER_{f.name.upper()}"
        lines.append(f"  {name:<24} default {f.default!r}")
    lines.append("")
    lines.append("examples:")
    lines.append("  python -m router                         # 127.0.0.1:50051, private redis")
    lines.append("  REDIS_URL=redis://10.0.0.5:6379/0 python -m router --host 0.0.0.0")
    return "\n".join(lines)


def _parse(argv: Sequence[str] | None) -> Settings:
    parser = argparse.ArgumentParser(
        prog="python -m router",
        description=DESCRIPTION,
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", help="listen address (ROUTER_HOST)")
    parser.add_argument("--port", type=int, help="listen port, 0 = any free (ROUTER_PORT)")
    parser.add_argument("--redis-url", help="shared Redis URL (REDIS_URL)")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        overrides = {k: v for k, v in vars(args).items() if v is not None}
        return dataclasses.replace(settings, **overrides)
    except SettingsError as err:
        parser.error(str(err))


def main(argv: Sequence[str] | None = None) -> int:
    """Run until SIGTERM or SIGINT, then stop gracefully."""
    settings = _parse(argv)
    logs.configure(level=settings.log_level, json=settings.log_json)
    log = structlog.get_logger("router")
    private: local_redis.LocalRedis | None = None
    store: Store
    if settings.redis_url:
        store = RedisStore.from_url(settings.redis_url, timeout_s=settings.redis_timeout_s)
        log.info("store_selected", store="redis", redis_url=RedisStore.redact(settings.redis_url))
    elif local_redis.available():
        private = local_redis.start()
        store = RedisStore.from_url(private.url, timeout_s=settings.redis_timeout_s)
        log.info("store_selected", store="private-redis", redis_url=private.url)
    else:
        store = MemoryStore()
        log.info("store_selected", store="memory", note="single process, state lost on exit")
    running = create_server(settings, store)
    if settings.metrics_port:
        metrics.serve(settings.host, settings.metrics_port)
    log.info(
        "server_started", host=settings.host, port=running.port, metrics_port=settings.metrics_port
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        stop.wait()
        log.info("server_stopping", grace_s=settings.grace_s)
        running.stop(settings.grace_s)
    finally:
        if private is not None:
            private.stop()
    log.info("server_stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
