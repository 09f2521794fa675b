"""Health follows the state store: NOT_SERVING while Redis cannot be reached or refuses
writes (loading its data after a restart, at its memory limit, NOREPLICAS, MISCONF, a
replica), SERVING again as soon as it takes them, so load balancers and orchestrators route
around an outage. A replica starts NOT_SERVING and turns SERVING at its first probe that
finds the store taking writes (a start-up against a paused Redis is not SERVING while the
probe waits for it).

Stopping never waits for a probe in flight (it may be blocked for the store's timeout on a
paused or unreachable Redis): a lock orders "stopped" before any later health change, so a
probe that returns after ``stop`` cannot set SERVING over the graceful stop's NOT_SERVING."""

from __future__ import annotations

import threading
from typing import Protocol

import structlog
from grpc_health.v1 import health_pb2

from router.errors import RouterError
from router.store import Store

log = structlog.get_logger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Health(Protocol):
    """Where the probe sets each service's status (a ``HealthServicer``, or one per
    listener: ``server.ListenerHealth``)."""

    def set(self, service: str, status: int) -> None:
        """Set ``service``'s status (a ``HealthCheckResponse`` serving status)."""


class StoreProbe:
    """Asks the store whether it takes writes every ``interval_s`` and sets every service's
    health."""

    def __init__(
        self,
        store: Store,
        servicer: Health,
        names: tuple[str, ...],
        *,
        interval_s: float = 1.0,
    ) -> None:
        self._store = store
        self._servicer = servicer
        self._names = names
        self._interval_s = interval_s
        self._stopping = threading.Event()
        self._healthy: bool | None = None
        """The last probe's answer (None: none yet; the server starts NOT_SERVING)."""
        self._lock = threading.Lock()
        """Held while health is set, so ``stop`` cannot interleave with a change."""
        self._thread = threading.Thread(target=self._loop, name="store-probe", daemon=True)

    def start(self) -> None:
        """Probe in the background until ``stop``."""
        self._thread.start()

    def stop(self, wait_s: float = 0.0) -> None:
        """Stop probing (the server's graceful stop then sets NOT_SERVING for good). Returns
        at once: a probe still waiting on the store changes nothing after this; ``wait_s``
        > 0 also waits that long for the probe thread to end."""
        with self._lock:
            self._stopping.set()
        if wait_s > 0 and self._thread.is_alive():
            self._thread.join(wait_s)

    def check(self) -> bool:
        """One probe; updates health when the answer changed. Returns whether it is up."""
        try:
            self._store.check_writable()
            healthy = True
        except RouterError as err:
            healthy = False
            reason = err.logged
        with self._lock:
            if healthy == self._healthy or self._stopping.is_set():
                return healthy
            first, self._healthy = self._healthy is None, healthy
            for name in self._names:
                self._servicer.set(name, SERVING if healthy else NOT_SERVING)
            if not healthy:
                log.warning("store_unreachable", error=reason)
            elif not first:
                log.info("store_recovered")
        return healthy

    def _loop(self) -> None:
        while not self._stopping.wait(self._interval_s):
            self.check()
