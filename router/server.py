"""Server assembly: servicers, interceptors, health, reflection, TLS, listeners, graceful stop.

Interceptors, outermost first: ``ErrorInterceptor`` (maps every error to its status, logs one
line per RPC), ``AccessInterceptor`` (tokens, roles, per-tenant rate limit: before any handler
work), ``DeadlineInterceptor`` (binds the client's deadline for the handler),
``AdmissionInterceptor`` (at most ``ROUTER_CONCURRENCY`` unary handlers at once; the rest
wait in line within their deadline).
"""

from __future__ import annotations

import os
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from router.admin_api import AgentAdminServicer, PolicyServicer
from router.admission import Admission, AdmissionInterceptor, StreamLimitInterceptor, StreamSlots
from router.assigner import Assigner
from router.auth import AccessInterceptor, TokensFileError, TokenTable
from router.deadline import DeadlineInterceptor
from router.dispatcher import Dispatcher
from router.interceptors import ErrorInterceptor, Streams
from router.probe import StoreProbe
from router.ratelimit import RateLimiter
from router.routing_api import WATCH_BLOCK_MS, RoutingServicer
from router.settings import Settings
from router.store import Store
from router.v1 import admin_pb2, admin_pb2_grpc, routing_pb2, routing_pb2_grpc

ROUTING_SERVICE = routing_pb2.DESCRIPTOR.services_by_name["RoutingService"].full_name
ADMIN_SERVICES = (
    admin_pb2.DESCRIPTOR.services_by_name["AgentAdminService"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["PolicyService"].full_name,
)
SERVICE_NAMES = (ROUTING_SERVICE, *ADMIN_SERVICES)
MAX_MESSAGE_BYTES = 1 << 20
LOOPBACK = frozenset({"127.0.0.1", "::1", "[::1]", "localhost"})
STREAM_END_S = 2 * WATCH_BLOCK_MS / 1000
"""How long a stop waits, after the grace period, for the streams it cut to write their
lines (a Watch notices the end of its call after its blocking read, within a second)."""

log = structlog.get_logger("router.server")


class ListenerHealth:
    """The health services of a replica's listeners, each answering for the services its
    listener serves (and ``""``, the listener itself): a check of a service it does not
    serve is NOT_FOUND there, not SERVING for calls that would be UNIMPLEMENTED."""

    def __init__(self, *served: tuple[health.HealthServicer, tuple[str, ...]]) -> None:
        self._served = served

    def set(self, service: str, status: int) -> None:
        """``service``'s status on every listener that serves it."""
        for servicer, names in self._served:
            if service in names:
                servicer.set(service, status)

    def enter_graceful_shutdown(self) -> None:
        """NOT_SERVING for good on every listener."""
        for servicer, _ in self._served:
            servicer.enter_graceful_shutdown()


@dataclass(frozen=True, slots=True)
class RunningServer:
    """A started server, the port it listens on and its health servicer; with a separate
    admin listener, that server and its port too."""

    server: grpc.Server
    port: int
    health: ListenerHealth
    dispatcher: Dispatcher
    probe: StoreProbe
    admin_server: grpc.Server | None = None
    admin_port: int = 0
    """The admin listener's port; 0 when the admin services are on ``port``."""
    tokens: TokenTable | None = field(default=None)
    admission: Admission | None = field(default=None)
    """The request slots every unary handler of the router's services runs in."""
    streams: Streams = field(default_factory=Streams)
    """The server streams open on the listeners."""

    def stop(self, grace_s: float) -> None:
        """Report NOT_SERVING, let in-flight RPCs finish for up to ``grace_s`` on every
        listener (streams still open then are cut: their clients get UNAVAILABLE, and their
        lines say so, written within ``STREAM_END_S``), then stop the dispatcher (queued
        calls stay in the store for the other replicas)."""
        self.probe.stop()
        self.health.enter_graceful_shutdown()
        self.streams.stopping(grace_s)
        stopping = [self.server.stop(grace_s)]
        if self.admin_server is not None:
            stopping.append(self.admin_server.stop(grace_s))
        for done in stopping:
            done.wait()
        self.streams.wait_closed(STREAM_END_S)
        self.dispatcher.stop()

    def reload_tokens(self) -> None:
        """Re-read the tokens file (SIGHUP); a file that does not parse leaves the tokens
        in force unchanged and logs why."""
        if self.tokens is None:
            log.warning("tokens_not_reloaded", reason="no ROUTER_TOKENS_FILE at start-up")
            return
        try:
            count = self.tokens.reload()
        except TokensFileError as err:
            log.error("tokens_reload_failed", error=str(err), note="previous tokens kept")
            return
        log.info("tokens_reloaded", tokens=count)


def server_options(settings: Settings) -> list[tuple[str, Any]]:
    """gRPC server options: message size and the keepalive / connection limits."""

    def ms(seconds: float) -> int:
        return round(seconds * 1000)

    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", 4 * MAX_MESSAGE_BYTES),
        ("grpc.so_reuseport", 0),
        ("grpc.keepalive_time_ms", ms(settings.keepalive_time_s)),
        ("grpc.keepalive_timeout_ms", ms(settings.keepalive_timeout_s)),
        ("grpc.keepalive_permit_without_calls", int(settings.keepalive_permit_without_calls)),
        ("grpc.http2.min_ping_interval_without_data_ms", ms(settings.min_ping_interval_s)),
        ("grpc.http2.max_ping_strikes", settings.max_ping_strikes),
        ("grpc.http2.max_pings_without_data", settings.max_pings_without_data),
        ("grpc.max_concurrent_streams", settings.max_concurrent_streams),
    ]
    if settings.max_connection_idle_s:
        options.append(("grpc.max_connection_idle_ms", ms(settings.max_connection_idle_s)))
    if settings.max_connection_age_s:
        options.append(("grpc.max_connection_age_ms", ms(settings.max_connection_age_s)))
        options.append(
            ("grpc.max_connection_age_grace_ms", ms(settings.max_connection_age_grace_s))
        )
    return options


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials from the PEM files (client certificates required when a client CA is
    set), or ``None`` for plaintext."""
    if not settings.tls:
        return None
    key = Path(settings.tls_key).read_bytes()
    chain = Path(settings.tls_cert).read_bytes()
    client_ca = Path(settings.tls_client_ca).read_bytes() if settings.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def _listen(
    server: grpc.Server, host: str, port: int, credentials: grpc.ServerCredentials | None
) -> int:
    address = f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"
    try:
        bound = (
            server.add_insecure_port(address)
            if credentials is None
            else server.add_secure_port(address, credentials)
        )
    except RuntimeError as err:  # grpcio raises where older versions returned 0
        raise OSError(f"cannot listen on {address}: {err}") from err
    if bound == 0:
        raise OSError(f"cannot listen on {address}")
    return bound


def _warn_about_exposure(settings: Settings, tokens: TokenTable | None) -> None:
    if tokens is None:
        log.warning(
            "auth_disabled",
            note="no ROUTER_TOKENS_FILE: every caller may call every RPC of every tenant",
        )
    else:
        log.info("auth_enabled", tokens=len(tokens))
    exposed = settings.host not in LOOPBACK or (
        settings.admin_port and settings.admin_host not in LOOPBACK
    )
    if exposed and not settings.tls:
        log.warning(
            "tls_disabled",
            note="listening beyond loopback without TLS: requests and tokens travel in clear",
        )


def create_server(settings: Settings, store: Store) -> RunningServer:
    """Build and start the gRPC server on ``settings.host:settings.port`` (0 picks a port),
    and the admin listener on ``admin_host:admin_port`` when that is set."""
    tokens = TokenTable.from_file(settings.tokens_file) if settings.tokens_file else None
    limiter = RateLimiter(settings.rate_limit, settings.rate_burst) if settings.rate_limit else None
    _warn_about_exposure(settings, tokens)
    admission = Admission(settings.concurrency or os.cpu_count() or 1)
    options = server_options(settings)
    credentials = server_credentials(settings)
    streams = Streams()

    def new_server() -> grpc.Server:
        interceptors = [
            ErrorInterceptor(streams),
            AccessInterceptor(tokens, limiter),
            StreamLimitInterceptor(StreamSlots(settings.workers)),  # this server's workers
            DeadlineInterceptor(),
            AdmissionInterceptor(admission),
        ]
        return grpc.server(
            futures.ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="rpc"),
            interceptors=interceptors,
            options=options,
        )

    server = new_server()
    admin_server = new_server() if settings.admin_port else None
    admin_target = admin_server or server
    dispatcher = Dispatcher(
        store,
        batch_size=settings.dispatch_batch,
        tick_s=settings.dispatch_tick_s,
        lease_ms=round(settings.dispatch_lease_s * 1000),
    )
    assigner = Assigner(store, max_replans=settings.max_replans, dispatcher=dispatcher)
    routing_pb2_grpc.add_RoutingServiceServicer_to_server(
        RoutingServicer(store, assigner, dispatcher.wake, streams.draining), server
    )
    admin_pb2_grpc.add_AgentAdminServiceServicer_to_server(
        AgentAdminServicer(store, dispatcher.wake), admin_target
    )
    admin_pb2_grpc.add_PolicyServiceServicer_to_server(
        PolicyServicer(store, dispatcher.wake), admin_target
    )
    main_health = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(main_health, server)
    reflected: tuple[str, ...]
    if admin_server is None:
        reflected = (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME)
        health_servicer = ListenerHealth((main_health, ("", *SERVICE_NAMES)))
    else:
        admin_health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(admin_health, admin_server)
        reflected = (*ADMIN_SERVICES, health.SERVICE_NAME, reflection.SERVICE_NAME)
        health_servicer = ListenerHealth(
            (main_health, ("", ROUTING_SERVICE)), (admin_health, ("", *ADMIN_SERVICES))
        )
    reflection.enable_server_reflection(reflected, admin_target)
    names = ("", *SERVICE_NAMES)
    for name in names:  # until the first probe finds the store taking writes
        health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    port = _listen(server, settings.host, settings.port, credentials)
    admin_port = 0
    if admin_server is not None:
        admin_port = _listen(admin_server, settings.admin_host, settings.admin_port, credentials)
    server.start()
    if admin_server is not None:
        admin_server.start()
    dispatcher.start()
    probe = StoreProbe(store, health_servicer, names, interval_s=settings.health_interval_s)
    probe.check()
    probe.start()
    return RunningServer(
        server,
        port,
        health_servicer,
        dispatcher,
        probe,
        admin_server,
        admin_port,
        tokens,
        admission,
        streams,
    )
