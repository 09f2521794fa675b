"""The one frozen Settings object. Loaded from the environment only in ``__main__``."""

from __future__ import annotations

import ast
import inspect
import itertools
import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, fields
from functools import cache
from pathlib import Path

from router import auth


class SettingsError(ValueError):
    """An environment variable has a value the service cannot use."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Service configuration. Every field maps to an ``ROUTER_*`` variable (``REDIS_URL`` too)."""

    host: str = "127.0.0.1"
    """Address to listen on (``ROUTER_HOST``). Use ``0.0.0.0`` only behind TLS/auth."""
    port: int = 50051
    """Port to listen on (``ROUTER_PORT``); 0 picks a free one."""
    redis_url: str = ""
    """The shared Redis (``REDIS_URL``). Empty: a private ``redis-server`` if installed, else
    the in-memory store (single process, state lost on exit)."""
    metrics_port: int = 9464
    """Port of the Prometheus ``/metrics`` endpoint on ``ROUTER_HOST``
    (``ROUTER_METRICS_PORT``); 0 disables it."""
    workers: int = 16
    """Threads serving RPCs (``ROUTER_WORKERS``); each ``Watch`` stream holds one."""
    concurrency: int = 0
    """Unary RPCs of the router's services running at once; the others wait in line within
    their deadline (``ROUTER_CONCURRENCY``). 0: the machine's cores. One Python process runs
    one thread at a time, so more only adds switching when Redis is near; raise it when
    Redis is far (handlers then mostly wait on the network)."""
    max_replans: int = 5
    """Re-plans of an Assign whose commit lost a race before ABORTED (``ROUTER_MAX_REPLANS``)."""
    redis_timeout_s: float = 2.0
    """Socket timeout of every Redis command (``ROUTER_REDIS_TIMEOUT_S``)."""
    record_retention_s: int = 604_800
    """How long a finished call's records (the call, its assignments, its timeline: what
    GetCall shows) are kept, in seconds, 3600 to 7776000 (90 days)
    (``ROUTER_RECORD_RETENTION_S``). Redis keeps about 2.8 KB a call for that long."""
    dispatch_tick_s: float = 1.0
    """Seconds between dispatcher passes over every tenant (offer timeouts, SLA checks,
    reclaiming, wrap-up ends); changes that free capacity trigger a pass at once
    (``ROUTER_DISPATCH_TICK_S``)."""
    dispatch_batch: int = 500
    """Queued calls per tenant in one batch solve (``ROUTER_DISPATCH_BATCH``)."""
    dispatch_lease_s: float = 10.0
    """Lifetime of a tenant's dispatcher lease, in Redis time (``ROUTER_DISPATCH_LEASE_S``).
    One replica at a time runs a tenant's dispatcher pass and releases the lease after it;
    if that replica dies mid-pass, the others wait this long before taking over (queued
    calls, offer timeouts and reclaiming wait with them). Keep it well above the longest
    batch solve: a pass that outlives its lease may overlap another replica's (still safe,
    every commit re-checks the agent, but wasted work)."""
    health_interval_s: float = 1.0
    """Seconds between probes of the state store; health is NOT_SERVING while it cannot be
    reached (``ROUTER_HEALTH_INTERVAL_S``)."""
    grace_s: float = 5.0
    """Seconds in-flight RPCs get to finish on SIGTERM (``ROUTER_GRACE_S``)."""
    log_level: str = "info"
    """The least severe lines logged: ``debug``, ``info``, ``warning`` or ``error``, in any
    case (``ROUTER_LOG_LEVEL``)."""
    log_json: bool | None = None
    """JSON log lines (``ROUTER_LOG_JSON=1/0``); default: JSON unless stderr is a terminal."""
    tracing: bool = False
    """Export OpenTelemetry spans of each RPC, its Redis round trips and its decisions over
    OTLP (``ROUTER_TRACING=1``), as the standard ``OTEL_*`` variables say: how
    (``OTEL_EXPORTER_OTLP_PROTOCOL``, grpc or http/protobuf, default grpc), where
    (``OTEL_EXPORTER_OTLP_ENDPOINT``, default http://localhost:4317), which traces
    (``OTEL_TRACES_SAMPLER``, default: the caller's choice, and every request that comes
    without one), under which name (``OTEL_SERVICE_NAME``, default agent-router). Off, the
    caller's trace id still goes on the log lines."""

    # --- security (see SECURITY.md) ----------------------------------------------------------
    tls_cert: str = ""
    """PEM certificate chain of the server (``ROUTER_TLS_CERT``); with ``ROUTER_TLS_KEY`` every
    listener speaks TLS only. Empty: plaintext."""
    tls_key: str = ""
    """PEM private key of ``ROUTER_TLS_CERT`` (``ROUTER_TLS_KEY``)."""
    tls_client_ca: str = ""
    """PEM CA bundle for client certificates (``ROUTER_TLS_CLIENT_CA``): mutual TLS, a
    client without a certificate signed by it cannot connect. Needs ``ROUTER_TLS_CERT`` and
    ``ROUTER_TLS_KEY``."""
    tokens_file: str = ""
    """YAML or JSON list of API token digests with tenant and role (``ROUTER_TOKENS_FILE``;
    see ``router.auth``; re-read on SIGHUP). Empty: no authentication, every caller may do
    everything (a warning is logged at start-up)."""
    admin_port: int = 0
    """Separate listener for AgentAdminService, PolicyService and reflection
    (``ROUTER_ADMIN_PORT``); the main port then answers UNIMPLEMENTED for them. 0: all on
    the main port."""
    admin_host: str = "127.0.0.1"
    """Address of the admin listener (``ROUTER_ADMIN_HOST``)."""
    rate_limit: float = 0.0
    """Requests per second each tenant may make to this replica (``ROUTER_RATE_LIMIT``);
    beyond it RESOURCE_EXHAUSTED with RetryInfo. Per replica: N replicas admit N times as
    much. 0: no limit."""
    rate_burst: int = 0
    """Requests a tenant may make at once after being idle (``ROUTER_RATE_BURST``);
    0: one second's worth of ``ROUTER_RATE_LIMIT``."""
    keepalive_time_s: float = 60.0
    """Seconds of silence after which the server pings a client to see it is still there
    (``ROUTER_KEEPALIVE_TIME_S``)."""
    keepalive_timeout_s: float = 20.0
    """Seconds the server waits for the ping's answer before closing the connection
    (``ROUTER_KEEPALIVE_TIMEOUT_S``)."""
    keepalive_permit_without_calls: bool = True
    """Whether clients may ping a connection that has no RPC in flight
    (``ROUTER_KEEPALIVE_PERMIT_WITHOUT_CALLS``); pings are still rate limited."""
    min_ping_interval_s: float = 10.0
    """The shortest interval between client pings the server accepts while it sends no
    data (``ROUTER_MIN_PING_INTERVAL_S``); faster pings are strikes."""
    max_ping_strikes: int = 2
    """Pings too early before the server closes the connection with GOAWAY
    ``too_many_pings`` (``ROUTER_MAX_PING_STRIKES``); 0: unlimited."""
    max_pings_without_data: int = 0
    """Keepalive pings the server sends while it sends no data
    (``ROUTER_MAX_PINGS_WITHOUT_DATA``); 0: unlimited, so idle Watch streams stay
    checked."""
    max_connection_idle_s: float = 600.0
    """A connection without RPCs for this long is closed gracefully (clients reconnect
    when needed) (``ROUTER_MAX_CONNECTION_IDLE_S``); 0: never."""
    max_connection_age_s: float = 0.0
    """Connections are closed gracefully after this long, so clients spread over new
    replicas (``ROUTER_MAX_CONNECTION_AGE_S``); 0: never. Watch clients resume with
    ``after_event_id``."""
    max_connection_age_grace_s: float = 30.0
    """Seconds RPCs in flight get after ``ROUTER_MAX_CONNECTION_AGE_S`` before the connection
    is cut (``ROUTER_MAX_CONNECTION_AGE_GRACE_S``)."""
    max_concurrent_streams: int = 100
    """RPCs at once on one connection (``ROUTER_MAX_CONCURRENT_STREAMS``)."""

    def __post_init__(self) -> None:
        self._check_listeners()
        if not 1 <= self.workers <= 1024:
            raise SettingsError(f"ROUTER_WORKERS: {self.workers} is not in 1..1024")
        if not 0 <= self.concurrency <= 1024:
            raise SettingsError(f"ROUTER_CONCURRENCY: {self.concurrency} is not in 0..1024")
        if not 0 <= self.max_replans <= 100:
            raise SettingsError(f"ROUTER_MAX_REPLANS: {self.max_replans} is not in 0..100")
        if not 0 < self.redis_timeout_s <= 60:
            raise SettingsError(f"ROUTER_REDIS_TIMEOUT_S: {self.redis_timeout_s} not in (0, 60]")
        if not 0.01 <= self.dispatch_tick_s <= 60:
            raise SettingsError(f"ROUTER_DISPATCH_TICK_S: {self.dispatch_tick_s} not in 0.01..60")
        if not 1 <= self.dispatch_batch <= 10_000:
            raise SettingsError(f"ROUTER_DISPATCH_BATCH: {self.dispatch_batch} not in 1..10000")
        if not 1 <= self.dispatch_lease_s <= 600:
            raise SettingsError(f"ROUTER_DISPATCH_LEASE_S: {self.dispatch_lease_s} not in 1..600")
        if not 0.05 <= self.health_interval_s <= 60:
            raise SettingsError(
                f"ROUTER_HEALTH_INTERVAL_S: {self.health_interval_s} is not in 0.05..60"
            )
        if not 0 <= self.grace_s <= 300:
            raise SettingsError(f"ROUTER_GRACE_S: {self.grace_s} is not in 0..300")
        if self.log_level.lower() not in {"debug", "info", "warning", "error"}:
            raise SettingsError(
                f"ROUTER_LOG_LEVEL: {self.log_level!r} is not a log level "
                "(debug, info, warning or error)"
            )
        # DEBUG or Debug means debug; the logging set-up takes lower case
        object.__setattr__(self, "log_level", self.log_level.lower())
        self._check_tls()
        if self.tokens_file:
            try:
                auth.load_tokens(self.tokens_file)
            except auth.TokensFileError as err:
                raise SettingsError(f"ROUTER_TOKENS_FILE: {err}") from None
        self._check_limits()

    def _check_tls(self) -> None:
        if bool(self.tls_cert) != bool(self.tls_key):
            raise SettingsError(
                "ROUTER_TLS_CERT and ROUTER_TLS_KEY: set both (TLS) or neither (plaintext)"
            )
        if self.tls_client_ca and not self.tls_cert:
            raise SettingsError(
                "ROUTER_TLS_CLIENT_CA: mutual TLS needs ROUTER_TLS_CERT and ROUTER_TLS_KEY"
            )
        for name, path, marker in (
            ("ROUTER_TLS_CERT", self.tls_cert, "CERTIFICATE-----"),
            ("ROUTER_TLS_KEY", self.tls_key, "PRIVATE KEY-----"),
            ("ROUTER_TLS_CLIENT_CA", self.tls_client_ca, "CERTIFICATE-----"),
        ):
            if path:
                _check_pem(name, path, marker)
        if self.tls_cert:
            _check_pair(self.tls_cert, self.tls_key)

    def _check_listeners(self) -> None:
        if not 0 <= self.port <= 65535:
            raise SettingsError(f"ROUTER_PORT: {self.port} is not a port number")
        if not 0 <= self.metrics_port <= 65535:
            raise SettingsError(f"ROUTER_METRICS_PORT: {self.metrics_port} is not a port number")
        if not 0 <= self.admin_port <= 65535:
            raise SettingsError(f"ROUTER_ADMIN_PORT: {self.admin_port} is not a port number")
        if not self.admin_host:
            raise SettingsError("ROUTER_ADMIN_HOST: must not be empty")
        if self.admin_port and self.admin_port == self.port:
            raise SettingsError(
                f"ROUTER_ADMIN_PORT: {self.admin_port} is also ROUTER_PORT; use another port, "
                "or 0 to serve the admin services on the main port"
            )
        if self.metrics_port and self.metrics_port in (self.port, self.admin_port):
            raise SettingsError(
                f"ROUTER_METRICS_PORT: {self.metrics_port} is also a gRPC listener's port; use "
                "another port, or 0 for no metrics endpoint"
            )

    def _check_limits(self) -> None:
        if not 3600 <= self.record_retention_s <= 90 * 86400:
            raise SettingsError(
                f"ROUTER_RECORD_RETENTION_S: {self.record_retention_s} not in 3600..7776000"
            )
        if not (self.rate_limit == 0 or 0.001 <= self.rate_limit <= 1_000_000):
            raise SettingsError(
                f"ROUTER_RATE_LIMIT: {self.rate_limit} is neither 0 (off) nor in 0.001..1000000"
            )
        if not 0 <= self.rate_burst <= 1_000_000:
            raise SettingsError(f"ROUTER_RATE_BURST: {self.rate_burst} is not in 0..1000000")
        for name, value, low, high in (
            ("KEEPALIVE_TIME_S", self.keepalive_time_s, 0.01, 86400),
            ("KEEPALIVE_TIMEOUT_S", self.keepalive_timeout_s, 0.01, 3600),
            ("MIN_PING_INTERVAL_S", self.min_ping_interval_s, 0, 86400),
            ("MAX_CONNECTION_IDLE_S", self.max_connection_idle_s, 0, 30 * 86400),
            ("MAX_CONNECTION_AGE_S", self.max_connection_age_s, 0, 30 * 86400),
            ("MAX_CONNECTION_AGE_GRACE_S", self.max_connection_age_grace_s, 0, 86400),
        ):
            if not low <= value <= high:
                raise SettingsError(f"ROUTER_{name}: {value} is not in {low:g}..{high:g}")
        for name, number, high in (
            ("MAX_PING_STRIKES", self.max_ping_strikes, 1000),
            ("MAX_PINGS_WITHOUT_DATA", self.max_pings_without_data, 1000),
            ("MAX_CONCURRENT_STREAMS", self.max_concurrent_streams, 100_000),
        ):
            if not 0 <= number <= high:
                raise SettingsError(f"ROUTER_{name}: {number} is not in 0..{high}")
        if self.max_concurrent_streams == 0:
            raise SettingsError("ROUTER_MAX_CONCURRENT_STREAMS: must be at least 1")

    @property
    def tls(self) -> bool:
        """Whether the listeners speak TLS."""
        return bool(self.tls_cert)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``env`` (default ``os.environ``); unknown values raise."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for f in fields(cls):
            name = env_name(f.name)
            raw = env.get(name)
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(name, raw, f.type)
        return cls(**values)  # type: ignore[arg-type]  # values were parsed per field type


def env_name(field_name: str) -> str:
    """The environment variable of the ``Settings`` field ``field_name``."""
    return "REDIS_URL" if field_name == "redis_url" else f"ROUTER_{field_name.upper()}"


def _parse(name: str, raw: str, kind: object) -> object:
    """Parse one variable by the field's annotated type (annotations are strings here)."""
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind in {"bool", "bool | None"}:
            if raw.lower() in {"1", "true", "yes"}:
                return True
            if raw.lower() in {"0", "false", "no"}:
                return False
            raise ValueError(raw)
    except ValueError:
        raise SettingsError(f"{name}: {raw!r} is not a valid {kind}") from None
    return raw


def _check_pem(name: str, path: str, marker: str) -> None:
    """Raise ``SettingsError`` unless ``path`` is a readable PEM file containing ``marker``."""
    try:
        text = Path(path).read_text("ascii")
    except (OSError, UnicodeDecodeError) as err:
        raise SettingsError(f"{name}: cannot read {path}: {err}") from None
    if marker not in text:
        raise SettingsError(f"{name}: {path} holds no PEM '-----BEGIN ...{marker}' block")


def _check_pair(cert: str, key: str) -> None:
    """Raise ``SettingsError`` unless the key is the certificate's (and neither is
    encrypted, nor malformed): what gRPC would otherwise refuse only when listening, with a
    message that names neither file."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # key sizes and digests are gRPC's to judge
    try:
        context.load_cert_chain(cert, key, password=lambda: b"")
    except ssl.SSLError as err:
        problem = "the key is not the certificate's" if "MISMATCH" in str(err) else str(err)
        raise SettingsError(f"ROUTER_TLS_CERT and ROUTER_TLS_KEY: {problem}") from None


@cache
def descriptions() -> dict[str, str]:
    """Field name -> what the setting means, from the docstring under each ``Settings`` field
    (for ``--help``; the variable's own name and the markup dropped, the text as written)."""
    try:
        source = inspect.getsource(Settings)
    except (OSError, TypeError):  # no source shipped: --help lists names and defaults only
        return {}
    (definition,) = ast.parse(source).body
    assert isinstance(definition, ast.ClassDef)
    found: dict[str, str] = {}
    for field_node, doc_node in itertools.pairwise(definition.body):
        if not isinstance(field_node, ast.AnnAssign) or not isinstance(field_node.target, ast.Name):
            continue
        if not isinstance(doc_node, ast.Expr) or not isinstance(doc_node.value, ast.Constant):
            continue
        text = " ".join(str(doc_node.value.value).split())
        text = re.sub(r"\s*\(``[A-Z_]+``\)", "", text)  # the variable's own name
        found[field_node.target.id] = text.replace("``", "")
    return found
