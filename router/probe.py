"""Health follows the state store: NOT_SERVING while Redis cannot be reached, SERVING again
as soon as it answers, so load balancers and orchestrators route around an outage."""

from __future__ import annotations

import threading

import structlog
from grpc_health.v1 import health, health_pb2

from router.errors import RouterError
from router.store import Store

log = structlog.get_logger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class StoreProbe:
    """Reads the store's clock every ``interval_s`` and sets every service's health."""

    def __init__(
        self,
        store: Store,
        servicer: health.HealthServicer,
        names: tuple[str, ...],
        *,
        interval_s: float = 1.0,
    ) -> None:
        self._store = store
        self._servicer = servicer
        self._names = names
        self._interval_s = interval_s
        self._stopping = threading.Event()
        self._healthy = True
        self._thread = threading.Thread(target=self._loop, name="store-probe", daemon=True)

    def start(self) -> None:
        """Probe in the background until ``stop``."""
        self._thread.start()

    def stop(self) -> None:
        """Stop probing (the server's graceful stop then sets NOT_SERVING for good)."""
        self._stopping.set()
        self._thread.join(self._interval_s + 5)

    def check(self) -> bool:
        """One probe; updates health when the answer changed. Returns whether it is up."""
        try:
            self._store.now_ms()
            healthy = True
        except RouterError as err:
            healthy = False
            reason = err.message
        if healthy != self._healthy and not self._stopping.is_set():
            self._healthy = healthy
            for name in self._names:
                self._servicer.set(name, SERVING if healthy else NOT_SERVING)
            if healthy:
                log.info("store_recovered")
            else:
                log.warning("store_unreachable", error=reason)
        return healthy

    def _loop(self) -> None:
        while not self._stopping.wait(self._interval_s):
            self.check()
