"""What tracing costs the service: CPU per Assign+Complete pair with it off and on.

    .venv/bin/python -m tests.benchmarks.bench_tracing [--agents 1000] [--rate 150]
        [--seconds 6] [--rounds 3] [--ratio 0.1] [--quick] [--json PATH]

Starts a private redis-server, an OTLP trace receiver in this process (it keeps the spans
it is sent, to count them), and for each mode in turn the service as its own process
(``python -m router``, as ``bench_assign --server process`` does), then offers Assign+Complete
pairs at ``--rate`` per second for ``--seconds`` from one client and reads the service's CPU
time from ``/proc``. Modes: ``off``; ``on`` (``ROUTER_TRACING=1``, every request traced:
the default sampler keeps every request that comes without a trace); ``ratio`` (a
``--ratio`` share of them, ``OTEL_TRACES_SAMPLER=parentbased_traceidratio``). The modes
alternate within each round, and each round prints the ratio to ``off`` measured in it: the
machines are shared and noisy, compare within a round.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent import futures
from contextlib import contextmanager

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

from router import local_redis, logs
from router.redis_store import RedisStore
from router.v1 import routing_pb2_grpc
from tests.benchmarks import results
from tests.benchmarks.bench_assign import TENANT, assign_pair, serving
from tests.benchmarks.profile_assign import chat_team

MODES = ("off", "on", "ratio")


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP trace receiver that keeps what it is sent: (service name, span) pairs."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, trace_pb2.Span]] = []
        self._lock = threading.Lock()

    def Export(  # noqa: N802  # the OTLP method name
        self,
        request: trace_service_pb2.ExportTraceServiceRequest,
        context: grpc.ServicerContext,
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self.keep(request)
        return trace_service_pb2.ExportTraceServiceResponse()

    def keep(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        """Keep the spans of one export, over gRPC or HTTP."""
        with self._lock:
            for resource_spans in request.resource_spans:
                names = [
                    kv.value.string_value
                    for kv in resource_spans.resource.attributes
                    if kv.key == "service.name"
                ]
                for scope in resource_spans.scope_spans:
                    self.spans.extend((names[0] if names else "", s) for s in scope.spans)

    def named(self, name: str) -> list[tuple[str, trace_pb2.Span]]:
        """The spans called ``name`` received so far, with their service names."""
        with self._lock:
            return [(service, s) for service, s in self.spans if s.name == name]


@contextmanager
def receiving() -> Iterator[tuple[Receiver, int]]:
    """A ``Receiver`` listening on a free loopback port: (it, the port)."""
    receiver = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(  # type: ignore[no-untyped-call]
        receiver, server
    )  # the OTLP package's generated gRPC code has no type hints
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield receiver, port
    finally:
        server.stop(0)


def _label(mode: str, ratio: float) -> str:
    """How the report names ``mode``."""
    return {"on": "every request traced", "ratio": f"{ratio:g} of requests traced"}.get(mode, mode)


def mode_env(mode: str, receiver_port: int, ratio: float) -> dict[str, str]:
    """The variables that set tracing ``mode`` up (exporting to the receiver)."""
    if mode == "off":
        return {"ROUTER_TRACING": "0"}
    env = {
        "ROUTER_TRACING": "1",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver_port}",
        "OTEL_TRACES_SAMPLER": "parentbased_always_on",
    }
    if mode == "ratio":
        env["OTEL_TRACES_SAMPLER"] = "parentbased_traceidratio"
        env["OTEL_TRACES_SAMPLER_ARG"] = str(ratio)
    return env


def measure(redis_url: str, env: dict[str, str], *, rate: float, seconds: float, key: str) -> float:
    """Start the service with ``env`` (``bench_assign.serving``), warm it up, offer pairs at
    ``rate`` for ``seconds``: the service's CPU ms per pair."""
    with (
        serving(redis_url, "process", env=env) as (ports, cpu_s, _),
        grpc.insecure_channel(f"127.0.0.1:{ports[0]}") as channel,
    ):
        stub = routing_pb2_grpc.RoutingServiceStub(channel)
        for n in range(100):
            assign_pair(stub, f"{key}-warm-{n}", TENANT)
        before, started, done = cpu_s(), time.perf_counter(), 0
        while time.perf_counter() - started < seconds:
            wait = started + done / rate - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            assign_pair(stub, f"{key}-{done}", TENANT)
            done += 1
        spent = cpu_s() - before
    return spent / max(done, 1) * 1000


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments (``argv``, else the command line), run the rounds, print them."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Modes: off; on (every request traced); ratio (a --ratio share traced).",
    )
    parser.add_argument("--agents", type=int, default=1000, help="available agents")
    parser.add_argument("--rate", type=float, default=150.0, help="pairs offered per second")
    parser.add_argument("--seconds", type=float, default=6.0, help="length of each run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the three modes")
    parser.add_argument("--ratio", type=float, default=0.1, help="share traced in 'ratio'")
    parser.add_argument(
        "--quick", action="store_true", help="100 agents, 50 pairs/s, 0.5 s runs, one round"
    )
    results.add_option(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.agents, args.rate, args.seconds, args.rounds = 100, 50.0, 0.5, 1
    if args.agents < 1 or args.rate <= 0 or args.seconds <= 0 or args.rounds < 1:
        parser.error("--agents, --rate, --seconds and --rounds must be positive")
    if not 0 < args.ratio <= 1:
        parser.error("--ratio must be in (0, 1]")
    logs.silence()
    with receiving() as (receiver, receiver_port):
        written = run(args, receiver, receiver_port)
    results.write(args.json, "bench_tracing", argv, written, quick=args.quick)


def run(args: argparse.Namespace, receiver: Receiver, receiver_port: int) -> list[results.Record]:
    """The rounds, printed; their records."""
    server = local_redis.start()
    per_mode: dict[str, list[float]] = {mode: [] for mode in MODES}
    written: list[results.Record] = []
    try:
        chat_team(RedisStore.from_url(server.url), TENANT, args.agents)
        print(
            f"agents={args.agents}, {args.rate:g} pairs/s for {args.seconds:g} s, one client;"
            f" service CPU per Assign+Complete pair (ratio to off in the same round)"
        )
        for round_number in range(args.rounds):
            row = {}
            for mode in MODES:
                env = mode_env(mode, receiver_port, args.ratio)
                key = f"r{round_number}-{mode}"
                row[mode] = measure(server.url, env, rate=args.rate, seconds=args.seconds, key=key)
                per_mode[mode].append(row[mode])
            written += [
                {
                    "kind": "tracing",
                    "agents": args.agents,
                    "offered_per_s": args.rate,
                    "round": round_number + 1,
                    "mode": _label(mode, args.ratio),
                    "cpu_ms_per_pair": row[mode],
                    "ratio_to_off": row[mode] / row["off"],
                }
                for mode in MODES
            ]
            print(
                f"round {round_number + 1}: "
                + ", ".join(
                    f"{mode} {row[mode]:.2f} ms ({row[mode] / row['off']:.2f}x)" for mode in MODES
                ),
                flush=True,
            )
        medians = {mode: statistics.median(values) for mode, values in per_mode.items()}
        print(
            "median: "
            + ", ".join(
                f"{mode} {medians[mode]:.2f} ms ({medians[mode] / medians['off']:.2f}x)"
                for mode in MODES
            )
            + f"; spans received {len(receiver.spans):,}"
        )
    finally:
        server.stop()
    return written


if __name__ == "__main__":
    main()
