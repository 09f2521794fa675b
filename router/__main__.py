"""``python -m router``: run the routing service. ``--help`` lists every setting.

``python -m router token --tenant acme --role helpdesk`` mints an API token instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import signal
import sys
import textwrap
import threading
from collections.abc import Sequence
from typing import Any

import structlog

from router import auth, local_redis, logs, metrics, tracing
from router.memory_store import MemoryStore
from router.redis_store import RedisStore
from router.server import RunningServer, create_server
from router.settings import Settings, SettingsError, descriptions, env_name
from router.store import Store

DESCRIPTION = """\
Agent-routing engine: a gRPC service that decides which human agent takes each call, chat,
WhatsApp message or email, with an OR-Tools balancing model over live agent state.

Services on the port: router.v1.RoutingService (Assign, Accept, Reject, Complete, Release,
Cancel, RequestCallback, GetCall, GetStats, Watch), router.v1.AgentAdminService,
router.v1.PolicyService, grpc.health.v1.Health and server reflection
(try: grpcurl -plaintext 127.0.0.1:50051 list).

State: with REDIS_URL set, that Redis (shared by every replica). Without it, a private
redis-server is started if one is installed, else the in-memory store is used (one process,
state lost on exit). The first log line says which.

Security (SECURITY.md): TLS and mutual TLS (ROUTER_TLS_*), per-tenant API tokens with roles
(ROUTER_TOKENS_FILE; mint one with `python -m router token --help`), per-tenant rate limits,
and a separate admin listener (ROUTER_ADMIN_PORT).
"""

TOKEN_DESCRIPTION = """\
Mint an API token for one tenant and role. Prints the token once (hand it to the client,
which sends it as 'authorization: Bearer <token>') and the line to add to the tokens file
(ROUTER_TOKENS_FILE), which holds only the token's SHA-256 digest. Send SIGHUP to running
replicas (or restart them) to pick up the new line.

roles:
  viewer    read-only: GetCall, GetStats, Watch, GetAgent, ListAgents, GetPolicy
  helpdesk  all of router.v1.RoutingService (Assign, Accept, Reject, Complete, Release,
            Cancel, RequestCallback, GetCall, GetStats, Watch)
  admin     everything: RoutingService, AgentAdminService and PolicyService

example:
  python -m router token --tenant acme --role helpdesk --name acme-crm
"""


def shown_default(value: object) -> str:
    """A setting's default as its variable would be set to it (the README's table says the
    same): ``1``/``0`` for on/off, ``auto`` when the service decides, ``empty`` for none."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if value is None:
        return "auto"
    if value == "":
        return "empty"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _epilog() -> str:
    lines = ["settings (environment variables; the flags above override them):"]
    meaning = descriptions()
    for f in dataclasses.fields(Settings):
        lines.append(f"  {env_name(f.name)} (default {shown_default(f.default)})")
        lines.extend(
            textwrap.wrap(
                meaning.get(f.name, ""), width=92, initial_indent=" " * 6, subsequent_indent=" " * 6
            )
        )
    lines.append("")
    lines.append("examples:")
    lines.append("  python -m router                         # 127.0.0.1:50051, private redis")
    lines.append(
        "  REDIS_URL=redis://10.0.0.5:6379/0 ROUTER_TLS_CERT=cert.pem ROUTER_TLS_KEY=key.pem \\"
    )
    lines.append("    ROUTER_TOKENS_FILE=tokens.yaml python -m router --host 0.0.0.0")
    lines.append("  python -m router token --tenant acme --role helpdesk")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m router",
        description=DESCRIPTION,
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", help="listen address (ROUTER_HOST)")
    parser.add_argument("--port", type=int, help="listen port, 0 = any free (ROUTER_PORT)")
    parser.add_argument("--redis-url", help="shared Redis URL (REDIS_URL)")
    commands = parser.add_subparsers(dest="command", title="commands", metavar="{token}")
    token = commands.add_parser(
        "token",
        help="mint an API token (see: python -m router token --help)",
        description=TOKEN_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    token.add_argument("--tenant", required=True, help="the tenant the token may act for")
    token.add_argument(
        "--role", required=True, choices=sorted(auth.ROLES), help="what the token may call"
    )
    token.add_argument(
        "--name", default="", help="label in the tokens file and the logs (default tenant-role)"
    )
    token.add_argument(
        "--stdin",
        action="store_true",
        help="read an existing token from stdin (e.g. from a secret manager) instead of "
        "minting one; prints only the tokens-file line",
    )
    return parser


def _settings(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Settings:
    try:
        settings = Settings.from_env()
        overrides = {
            key: getattr(args, key)
            for key in ("host", "port", "redis_url")
            if getattr(args, key) is not None
        }
        settings = dataclasses.replace(settings, **overrides)
        if settings.tracing:
            tracing.exporter_protocol()  # an unsupported OTLP transport stops start-up here
        return settings
    except SettingsError as err:
        parser.error(str(err))


def _token(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``python -m router token``: print a new token and its tokens-file line."""
    try:
        auth.check_entry_fields(args.tenant, args.role, args.name)
    except auth.TokensFileError as err:
        parser.error(str(err))
    if args.stdin:
        token = sys.stdin.readline().strip()
        if not token:
            parser.error("--stdin: no token on standard input")
        print(auth.entry_line(token, args.tenant, args.role, args.name))
        return 0
    token = auth.mint()
    print("token (shown once: give it to the client, keep it in your secret store):")
    print(f"  {token}")
    print("add this line under 'tokens:' in the tokens file (ROUTER_TOKENS_FILE):")
    print(auth.entry_line(token, args.tenant, args.role, args.name))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run until SIGTERM or SIGINT, then stop gracefully (SIGHUP re-reads the tokens
    file). ``token`` mints an API token instead."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "token":
        return _token(parser, args)
    settings = _settings(parser, args)
    logs.configure(level=settings.log_level, json=settings.log_json)
    log = structlog.get_logger("router")
    if settings.tracing:
        tracing.configure()
    try:
        running, private = _start(settings, log)
    except SettingsError as err:  # what the environment asked for cannot be done
        tracing.shutdown(0)
        parser.error(str(err))
    # What start-up built (modules, the server, the store) lives as long as the process: keep
    # it out of the collector's full passes, which would otherwise walk it every time, with
    # every thread stopped (each pass is an Assign's tail latency).
    gc.collect()
    gc.freeze()
    log.info(
        "server_started",
        frozen_objects=gc.get_freeze_count(),
        host=settings.host,
        port=running.port,
        admin_host=settings.admin_host if running.admin_port else settings.host,
        admin_port=running.admin_port or running.port,
        tls=settings.tls,
        mutual_tls=bool(settings.tls_client_ca),
        metrics_port=settings.metrics_port,
        tracing=settings.tracing,
    )
    signal.signal(signal.SIGHUP, lambda *_: running.reload_tokens())
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        stop.wait()
        log.info("server_stopping", grace_s=settings.grace_s)
        running.stop(settings.grace_s)
    finally:
        tracing.shutdown(settings.grace_s)  # the spans still pending, exported if it can
        if private is not None:
            private.stop()
    log.info("server_stopped")
    return 0


def _start(settings: Settings, log: Any) -> tuple[RunningServer, local_redis.LocalRedis | None]:
    """The store, the gRPC listeners and the metrics endpoint. ``SettingsError`` naming the
    variable when one cannot be had (a REDIS_URL that does not parse, an address that cannot
    be listened on); a private redis-server started here is stopped again then."""
    private: local_redis.LocalRedis | None = None
    retention_ms = settings.record_retention_s * 1000
    try:
        store: Store
        if settings.redis_url:
            try:
                store = RedisStore.from_url(
                    settings.redis_url,
                    timeout_s=settings.redis_timeout_s,
                    record_ttl_ms=retention_ms,
                )
            except ValueError as err:
                raise SettingsError(f"REDIS_URL: {err}") from err
            redacted = RedisStore.redact(settings.redis_url)
            log.info("store_selected", store="redis", redis_url=redacted)
        elif local_redis.available():
            private = local_redis.start()
            store = RedisStore.from_url(
                private.url, timeout_s=settings.redis_timeout_s, record_ttl_ms=retention_ms
            )
            log.info("store_selected", store="private-redis", redis_url=private.url)
        else:
            store = MemoryStore(record_ttl_ms=retention_ms)
            log.info("store_selected", store="memory", note="single process, state lost on exit")
        try:
            running = create_server(settings, store)
        except OSError as err:
            raise SettingsError(f"ROUTER_HOST, ROUTER_PORT or ROUTER_ADMIN_*: {err}") from err
        if settings.metrics_port:
            try:
                metrics.serve(settings.host, settings.metrics_port)
            except OSError as err:
                running.stop(0)
                where = f"{settings.host}:{settings.metrics_port}"
                raise SettingsError(
                    f"ROUTER_METRICS_PORT: cannot listen on {where}: {err}"
                ) from err
            metrics.GC_PAUSES.watch()
    except BaseException:
        if private is not None:
            private.stop()
        raise
    return running, private


if __name__ == "__main__":
    sys.exit(main())
