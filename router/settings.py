"""The one frozen Settings object. Loaded from the environment only in ``__main__``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields


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
    """``REDIS_URL``: the shared Redis. Empty: a private ``redis-server`` if installed, else
    the in-memory store (single process, state lost on exit)."""
    metrics_port: int = 9464
    """Port of the Prometheus ``/metrics`` endpoint on ``host`` (``ROUTER_METRICS_PORT``);
    0 disables it."""
    workers: int = 16
    """Threads serving RPCs (``ROUTER_WORKERS``)."""
    max_replans: int = 5
    """Re-plans of an Assign whose commit lost a race before ABORTED (``ROUTER_MAX_REPLANS``)."""
    redis_timeout_s: float = 2.0
    """Socket timeout of every Redis command (``ROUTER_REDIS_TIMEOUT_S``)."""
    dispatch_tick_s: float = 1.0
    """Seconds between dispatcher passes over every tenant (offer timeouts, SLA checks,
    reclaiming, wrap-up ends); changes that free capacity trigger a pass at once
    (``ROUTER_DISPATCH_TICK_S``)."""
    dispatch_batch: int = 500
    """Queued calls per tenant in one batch solve (``ROUTER_DISPATCH_BATCH``)."""
    health_interval_s: float = 1.0
    """Seconds between probes of the state store; health is NOT_SERVING while it cannot be
    reached (``ROUTER_HEALTH_INTERVAL_S``)."""
    grace_s: float = 5.0
    """Seconds in-flight RPCs get to finish on SIGTERM (``ROUTER_GRACE_S``)."""
    log_level: str = "info"
    """``debug``, ``info``, ``warning`` or ``error`` (``ROUTER_LOG_LEVEL``)."""
    log_json: bool | None = None
    """JSON log lines (``ROUTER_LOG_JSON=1/0``); default: JSON unless stderr is a terminal."""

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise SettingsError(f"ROUTER_PORT: {self.port} is not a port number")
        if not 0 <= self.metrics_port <= 65535:
            raise SettingsError(f"ROUTER_METRICS_PORT: {self.metrics_port} is not a port number")
        if not 1 <= self.workers <= 1024:
            raise SettingsError(f"ROUTER_WORKERS: {self.workers} is not in 1..1024")
        if not 0 <= self.max_replans <= 100:
            raise SettingsError(f"ROUTER_MAX_REPLANS: {self.max_replans} is not in 0..100")
        if not 0 < self.redis_timeout_s <= 60:
            raise SettingsError(f"ROUTER_REDIS_TIMEOUT_S: {self.redis_timeout_s} not in (0, 60]")
        if not 0.01 <= self.dispatch_tick_s <= 60:
            raise SettingsError(f"ROUTER_DISPATCH_TICK_S: {self.dispatch_tick_s} not in 0.01..60")
        if not 1 <= self.dispatch_batch <= 10_000:
            raise SettingsError(f"ROUTER_DISPATCH_BATCH: {self.dispatch_batch} not in 1..10000")
        if not 0.05 <= self.health_interval_s <= 60:
            raise SettingsError(
                f"ROUTER_HEALTH_INTERVAL_S: {self.health_interval_s} is not in 0.05..60"
            )
        if not 0 <= self.grace_s <= 300:
            raise SettingsError(f"ROUTER_GRACE_S: {self.grace_s} is not in 0..300")
        if self.log_level not in {"debug", "info", "warning", "error"}:
            raise SettingsError(f"ROUTER_LOG_LEVEL: {self.log_level!r} is not a log level")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``env`` (default ``os.environ``); unknown values raise."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for f in fields(cls):
            name = "REDIS_URL" if f.name == "redis_url" else f"ROUTER_{f.name.upper()}"
            raw = env.get(name)
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(name, raw, f.type)
        return cls(**values)  # type: ignore[arg-type]  # values were parsed per field type


def _parse(name: str, raw: str, kind: object) -> object:
    """Parse one variable by the field's annotated type (annotations are strings here)."""
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "bool | None":
            if raw.lower() in {"1", "true", "yes"}:
                return True
            if raw.lower() in {"0", "false", "no"}:
                return False
            raise ValueError(raw)
    except ValueError:
        raise SettingsError(f"{name}: {raw!r} is not a valid {kind}") from None
    return raw
