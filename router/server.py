"""Server assembly: servicers, interceptors, health, reflection, graceful stop."""

from __future__ import annotations

from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from router.admin_api import AgentAdminServicer, PolicyServicer
from router.assigner import Assigner
from router.deadline import DeadlineInterceptor
from router.dispatcher import Dispatcher
from router.interceptors import ErrorInterceptor
from router.probe import StoreProbe
from router.routing_api import RoutingServicer
from router.settings import Settings
from router.store import Store
from router.v1 import admin_pb2, admin_pb2_grpc, routing_pb2, routing_pb2_grpc

SERVICE_NAMES = (
    routing_pb2.DESCRIPTOR.services_by_name["RoutingService"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["AgentAdminService"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["PolicyService"].full_name,
)
MAX_MESSAGE_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class RunningServer:
    """A started server, the port it listens on and its health servicer."""

    server: grpc.Server
    port: int
    health: health.HealthServicer
    dispatcher: Dispatcher
    probe: StoreProbe

    def stop(self, grace_s: float) -> None:
        """Report NOT_SERVING, let in-flight RPCs finish for up to ``grace_s``, then stop the
        dispatcher (queued calls stay in the store for the other replicas)."""
        self.probe.stop()
        self.health.enter_graceful_shutdown()
        self.server.stop(grace_s).wait()
        self.dispatcher.stop()


def create_server(settings: Settings, store: Store) -> RunningServer:
    """Build and start the gRPC server on ``settings.host:settings.port`` (0 picks a port)."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="rpc"),
        interceptors=[ErrorInterceptor(), DeadlineInterceptor()],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", 4 * MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ],
    )
    dispatcher = Dispatcher(
        store, batch_size=settings.dispatch_batch, tick_s=settings.dispatch_tick_s
    )
    assigner = Assigner(store, max_replans=settings.max_replans, dispatcher=dispatcher)
    routing_pb2_grpc.add_RoutingServiceServicer_to_server(
        RoutingServicer(store, assigner, dispatcher.wake), server
    )
    admin_pb2_grpc.add_AgentAdminServiceServicer_to_server(
        AgentAdminServicer(store, dispatcher.wake), server
    )
    admin_pb2_grpc.add_PolicyServiceServicer_to_server(
        PolicyServicer(store, dispatcher.wake), server
    )
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    port = server.add_insecure_port(f"{settings.host}:{settings.port}")
    if port == 0:
        raise OSError(f"cannot listen on {settings.host}:{settings.port}")
    server.start()
    dispatcher.start()
    names = ("", *SERVICE_NAMES)
    for name in names:
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    probe = StoreProbe(store, health_servicer, names, interval_s=settings.health_interval_s)
    probe.check()
    probe.start()
    return RunningServer(server, port, health_servicer, dispatcher, probe)
