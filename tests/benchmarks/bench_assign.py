"""Assign end to end (real gRPC, real redis-server) against a no-op RPC on the same server.

    .venv/bin/python -m tests.benchmarks.bench_assign [--agents 100,1000,10000] [--calls 400]
        [--threads 8] [--rate 300 --rate-seconds 10] [--server thread|process] [--replicas 1]

Starts a private redis-server and the service (``--server thread``: in this process, sharing
its interpreter with the clients; ``process``: ``python -m router`` in its own process as it
is deployed, each client thread on its own connection; ``--replicas N`` starts N such
processes over the same Redis, as a scaled-out deployment on one host, and the client threads
take them in turn), registers N available agents (chat capacity 4 each, straight through the
store: setup is not measured), then for each N: sequential latency of Assign+Complete pairs
and of the health Check (the no-op baseline) over the same channel, and the throughput of
``--threads`` (8) client threads for a few seconds. With ``--server process`` the throughput
and fixed-load phases also print where the machine's CPU went: per no-op RPC and per pair in
the service processes, per pair in redis-server and in this process (the load generator), and
how many of the machine's cores that kept busy; the service's CPU split into user and kernel
time, with its threads' context switches per pair (each replica's ``/proc``: what handing
requests between threads and waiting on sockets and the interpreter lock costs); and the
service processes' full garbage collections meanwhile (their count and mean pause, from each
replica's ``/metrics``), the requests that waited for a request slot (``ROUTER_CONCURRENCY``)
and the share of Assigns the service itself answered within 5, 10 and 25 ms (its
``router_rpc_duration_seconds``: from a worker taking the request to the reply), so a tail
seen from the schedule can be told apart from the service's own time. Each saturation and
fixed-load line also prints ``calib``: a fixed pure-Python loop timed in this process just
before the phase (``bench_solver``'s), the shared VM's speed at that moment, so runs on a slow
and a fast moment can be told apart. With ``--rate``, also fixed offered loads
(``--rate 50,100,300``: one after the other): Assign+Complete pairs started on a fixed
schedule (open loop, 32 client threads) for ``--rate-seconds``; each Assign's latency counts
from its scheduled start, so a server that falls behind shows it. Every Assign carries a
request id of its own: a reused one would be answered as an idempotent replay, without a
decision, and the benchmark stops if that happens. Prints medians, p99, max and ratios;
bounded in calls and time (the sequential phase stops after ``--phase-limit`` seconds).
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import grpc
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from router import local_redis, logs
from router.domain import AgentProfile, Channel, Presence
from router.redis_store import RedisStore
from router.server import create_server
from router.settings import Settings
from router.v1 import routing_pb2, routing_pb2_grpc
from router.v1 import types_pb2 as pb
from tests.benchmarks import results
from tests.benchmarks.bench_solver import calibration

_SWITCHES = re.compile(r"^(?:non)?voluntary_ctxt_switches:\s+(\d+)$", re.M)
_FULL_PAUSES = re.compile(r'^router_gc_pause_seconds_(count|sum)\{generation="2"\} (\S+)$', re.M)
"""A replica's full garbage collections so far, and the seconds they took, in its /metrics."""
_ADMISSION_WAITS = re.compile(r"^router_admission_wait_seconds_(count|sum) (\S+)$", re.M)
"""The requests that waited for a request slot so far, and the seconds they waited."""
_RPC_BUCKETS = re.compile(r"^router_rpc_duration_seconds_bucket\{([^}]*)\} (\S+)$", re.M)
SERVICE_BOUNDS = ("0.005", "0.01", "0.025")
"""The service's own Assign latency buckets (s) each phase's line gives the share within."""

TENANT = "bench"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _timed(fn: Callable[[], object], count: int, limit_s: float = float("inf")) -> list[float]:
    out = []
    stop = time.monotonic() + limit_s
    for _ in range(count):
        started = time.perf_counter()
        fn()
        out.append((time.perf_counter() - started) * 1000)
        if time.monotonic() > stop:
            break
    return out


def _calib_ms() -> float:
    """The calibration loop's median time over three runs, ms (the machine's speed now)."""
    return statistics.median(_timed(calibration, 3))


def _offered(
    fn: Callable[[int], float], rate: float, seconds: float
) -> tuple[list[float], float, int]:
    """Start ``fn(n)`` every ``1 / rate`` s for ``seconds`` (open loop); ``fn`` returns the
    latency that matters (ms, from its start). Returns each call's latency from its scheduled
    start (queueing delay included), the rate actually completed and how many calls were
    dropped because they could not start within ``seconds`` of their schedule (the server
    is saturated; this bounds the phase to about twice ``seconds``)."""
    total = int(rate * seconds)
    latencies: list[float] = []
    dropped = [0]
    begin = time.perf_counter()

    def one(n: int, due: float) -> None:
        late = time.perf_counter() - due
        if late > seconds:
            dropped[0] += 1
            return
        latencies.append(late * 1000 + fn(n))

    with ThreadPoolExecutor(max_workers=32) as pool:
        started = []
        for n in range(total):
            due = begin + n / rate
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            started.append(pool.submit(one, n, due))
    for future in started:
        future.result()  # a failed call fails the phase, never vanishes from its figures
    return latencies, len(latencies) / (time.perf_counter() - begin), dropped[0]


def _throughput(fn: Callable[[int], object], seconds: float, threads: int = 8) -> float:
    done = [0] * threads
    stop = time.monotonic() + seconds

    def worker(index: int) -> None:
        i = 0
        while time.monotonic() < stop:
            fn(index * 1_000_000 + i)
            i += 1
        done[index] = i

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return sum(done) / seconds


def assign_request(key: str, tenant: str = TENANT) -> routing_pb2.AssignRequest:
    """The benchmark's Assign: a chat call needing ``billing >= 3``, not queued (``no_queue``);
    ``key`` is its request and call id."""
    return routing_pb2.AssignRequest(
        tenant=tenant,
        request_id=key,
        call=pb.Call(
            call_id=key,
            channel=pb.CHANNEL_CHAT,
            required_skills=[pb.SkillRequirement(skill="billing", min_level=3)],
        ),
        no_queue=True,
    )


def assign_pair(
    routing: routing_pb2_grpc.RoutingServiceStub, key: str, tenant: str = TENANT
) -> tuple[float, bool]:
    """Assign a chat call needing ``billing >= 3`` (``no_queue``; ``key`` is its request
    and call id), then Complete it if it was assigned: the Assign's latency in ms, and
    whether it was assigned."""
    started = time.perf_counter()
    reply = routing.Assign(assign_request(key, tenant))
    took = (time.perf_counter() - started) * 1000
    if reply.replayed:  # a reused key measures the idempotent replay, not a decision
        raise RuntimeError(f"request {key} was answered as a replay: keys must be unique")
    assigned = reply.result == routing_pb2.AssignResponse.RESULT_ASSIGNED
    if assigned:
        routing.Complete(
            routing_pb2.CompleteRequest(
                tenant=tenant,
                assignment_id=reply.assignment.assignment_id,
                fencing_token=reply.assignment.fencing_token,
            )
        )
    return took, assigned


ServiceStats = Callable[[], tuple[float, ...]]
"""So far, over the service processes: their full garbage collections and the seconds those
took, their kernel CPU seconds, their threads' context switches, the requests that waited for
a request slot and the seconds they waited, and their answered Assigns (status OK) within
each of ``SERVICE_BOUNDS`` and in all (``NO_STATS`` long)."""
NO_STATS = (0.0,) * (6 + len(SERVICE_BOUNDS) + 1)


def _count_and_sum(pattern: re.Pattern[str], text: str) -> tuple[float, float]:
    """A histogram's ``_count`` and ``_sum`` in one ``/metrics`` text (``pattern`` captures
    the suffix and the value)."""
    totals = dict.fromkeys(("count", "sum"), 0.0)
    for suffix, value in pattern.findall(text):
        totals[suffix] += float(value)
    return totals["count"], totals["sum"]


def _assign_buckets(text: str) -> list[float]:
    """The OK Assigns of one ``/metrics`` text within each of ``SERVICE_BOUNDS`` and in all."""
    found: dict[str, float] = {}
    for labels, value in _RPC_BUCKETS.findall(text):
        if 'method="Assign"' in labels and 'code="OK"' in labels:
            bound = re.search(r'le="([^"]+)"', labels)
            if bound is not None:
                found[bound.group(1)] = float(value)
    return [found.get(bound, 0.0) for bound in (*SERVICE_BOUNDS, "+Inf")]


@contextmanager
def serving(
    url: str, mode: str, replicas: int = 1, env: Mapping[str, str] | None = None
) -> Iterator[tuple[list[int], Callable[[], float], ServiceStats]]:
    """The service over ``url``: (the ports of its ``replicas`` processes, the CPU seconds
    they used so far, ``ServiceStats`` from their ``/metrics`` and ``/proc``; in this process:
    one port, 0, and zeros). ``env`` adds variables to the processes' environment."""
    if mode == "thread":
        running = create_server(
            Settings(port=0, workers=16, metrics_port=0), RedisStore.from_url(url)
        )
        try:
            yield [running.port], lambda: 0.0, lambda: NO_STATS
        finally:
            running.stop(0)
        return
    ports: list[int] = []
    metrics_ports: list[int] = []
    servers: list[subprocess.Popen[bytes]] = []

    def ticks(*fields: int) -> int:
        """The sum over the service processes of ``/proc/PID/stat`` fields ``fields``."""
        total = 0
        for server in servers:
            with open(f"/proc/{server.pid}/stat") as stat:
                values = stat.read().rsplit(")", 1)[1].split()
            total += sum(int(values[field]) for field in fields)
        return total

    def cpu_s() -> float:
        return ticks(11, 12) / os.sysconf("SC_CLK_TCK")  # user + kernel

    def switches() -> int:
        total = 0
        for server in servers:
            for thread in os.listdir(f"/proc/{server.pid}/task"):
                try:
                    with open(f"/proc/{server.pid}/task/{thread}/status") as status:
                        total += sum(map(int, _SWITCHES.findall(status.read())))
                except (FileNotFoundError, ProcessLookupError):  # the thread ended meanwhile
                    continue
        return total

    def stats() -> tuple[float, ...]:
        # full collections, their seconds, slot waits, their seconds, Assigns per bound
        summed = [0.0] * (4 + len(SERVICE_BOUNDS) + 1)
        for port in metrics_ports:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
                text = reply.read().decode()
            found = [
                *_count_and_sum(_FULL_PAUSES, text),
                *_count_and_sum(_ADMISSION_WAITS, text),
                *_assign_buckets(text),
            ]
            summed = [a + b for a, b in zip(summed, found, strict=True)]
        count, seconds, *rest = summed
        kernel = ticks(12) / os.sysconf("SC_CLK_TCK")
        return count, seconds, kernel, float(switches()), *rest

    try:
        for _ in range(replicas):
            port, metrics_port = local_redis.free_port(), local_redis.free_port()
            variables = {
                **os.environ,
                **(env or {}),
                "REDIS_URL": url,
                "ROUTER_PORT": str(port),
                "ROUTER_METRICS_PORT": str(metrics_port),
                "ROUTER_LOG_LEVEL": "error",
            }
            servers.append(
                subprocess.Popen(
                    [sys.executable, "-m", "router"], env=variables, stderr=subprocess.DEVNULL
                )
            )
            ports.append(port)
            metrics_ports.append(metrics_port)
        for port in ports:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                grpc.channel_ready_future(channel).result(timeout=60)
        yield ports, cpu_s, stats
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            server.wait(30)


def run(
    agents: int,
    calls: int,
    seconds: float,
    url: str,
    *,
    args: argparse.Namespace,
    records: list[results.Record],
) -> None:
    """Benchmark one team size (its figures appended to ``records``)."""
    redis.Redis.from_url(url).flushall()
    store = RedisStore.from_url(url)
    for i in range(agents):
        store.create_agent(
            TENANT,
            AgentProfile(
                f"a{i:05d}",
                skills={"billing": 1 + i % 10, f"s{i % 7}": 5},
                capacity={Channel.CHAT: 4},
            ),
        )
        store.set_presence(TENANT, f"a{i:05d}", Presence.AVAILABLE)
    with (
        serving(url, args.server, args.replicas) as (ports, server_cpu_s, service_stats),
        redis.Redis.from_url(url) as client,
    ):
        clocks = CpuClocks(server_cpu_s, client, service_stats)
        measure(agents, calls, seconds, ports=ports, clocks=clocks, args=args, records=records)


class CpuClocks:
    """CPU seconds used so far by the service processes, redis-server and this process,
    and the service processes' ``ServiceStats``."""

    def __init__(
        self,
        service_s: Callable[[], float],
        client: redis.Redis,
        service_stats: ServiceStats = lambda: NO_STATS,
    ) -> None:
        self._service_s = service_s
        self._redis = client
        self._service_stats = service_stats

    def read(self) -> tuple[float, ...]:
        """(wall clock, service, redis-server, this process, in seconds; then the service's
        ``ServiceStats``)."""
        info = self._redis.info("cpu")
        redis_s = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
        wall, service_s, here = time.perf_counter(), self._service_s(), time.process_time()
        return wall, service_s, redis_s, here, *self._service_stats()

    @staticmethod
    def budget(before: tuple[float, ...], after: tuple[float, ...], pairs: float) -> str:
        """Where the CPU went per pair between two ``read``s (the service's split into user
        and kernel time, with its context switches), the cores kept busy, the service's full
        collections meanwhile (count, mean pause), the requests that waited for a request
        slot (count, mean wait) and the share of the service's Assigns it answered within
        each of ``SERVICE_BOUNDS`` (its own time: from the request's arrival in a worker to
        the reply, queueing before that not included)."""
        wall, service, redis_s, here, full, paused, kernel, switches, waits, waited, *assigns = (
            b - a for a, b in zip(before, after, strict=True)
        )
        per = 1000 / max(pairs, 1)
        within = " / ".join(f"{share / max(assigns[-1], 1) * 100:.1f}" for share in assigns[:-1])
        bounds = " / ".join(f"{float(bound) * 1000:g}" for bound in SERVICE_BOUNDS)
        return (
            f"CPU per pair: service {service * per:.2f} ms (user {(service - kernel) * per:.2f},"
            f" kernel {kernel * per:.2f}; {switches / max(pairs, 1):.0f} context switches),"
            f" Redis {redis_s * per:.2f} ms, load generator {here * per:.2f} ms;"
            f" {(service + redis_s + here) / wall:.2f} of {os.cpu_count()} cores busy;"
            f" service full collections {full:.0f} ({paused / max(full, 1) * 1000:.1f} ms each);"
            f" request slot waits {waits:.0f} ({waited / max(waits, 1) * 1000:.1f} ms each);"
            f" service's own Assign time within {bounds} ms: {within} %"
        )


def measure(
    agents: int,
    calls: int,
    seconds: float,
    *,
    ports: list[int],
    clocks: CpuClocks,
    args: argparse.Namespace,
    records: list[results.Record],
) -> None:
    """The phases against the server processes on ``ports`` (the sequential ones against the
    first); each printed line's figures appended to ``records``."""
    channel = grpc.insecure_channel(f"127.0.0.1:{ports[0]}")
    # One connection per client thread when the server is its own process (as many
    # clients would be), the replicas in turn; one shared channel when it shares this process.
    own = args.server == "process"
    channels = [
        grpc.insecure_channel(
            f"127.0.0.1:{ports[n % len(ports)]}", options=[("grpc.use_local_subchannel_pool", 1)]
        )
        if own
        else channel
        for n in range(max(args.threads, 1))
    ]
    stubs = [
        (routing_pb2_grpc.RoutingServiceStub(c), health_pb2_grpc.HealthStub(c)) for c in channels
    ]
    routing = stubs[0][0]  # the sequential phases: Assign and no-op on one connection

    counter = iter(range(10**9))
    assign_only: list[float] = []

    def cycle(n: int) -> None:
        assign_pair(stubs[n // 1_000_000 % len(stubs)][0], f"c{agents}-{n}")

    def assign_then_complete() -> None:
        took, assigned = assign_pair(routing, f"s{agents}-{next(counter)}")
        assign_only.append(took)
        if not assigned:
            raise RuntimeError("not assigned: every agent should have room")

    def noop(n: int = 0) -> None:
        stub = stubs[n // 1_000_000 % len(stubs)][1]
        stub.Check(health_pb2.HealthCheckRequest())  # type: ignore[attr-defined]  # untyped stub

    def timed_pair(phase: int, n: int) -> float:
        """One Assign+Complete of fixed-rate phase ``phase``; the Assign's latency in ms."""
        return assign_pair(stubs[n % len(stubs)][0], f"o{agents}-{phase}-{n}")[0]

    _timed(noop, 50)  # warm up
    _timed(assign_then_complete, 20)
    assign_only.clear()
    baseline = _timed(noop, calls)
    _timed(assign_then_complete, calls, args.phase_limit)
    calib = _calib_ms()
    before = clocks.read()
    noop_rate = _throughput(noop, seconds, args.threads)
    after_noop = clocks.read()
    noop_ms = (after_noop[1] - before[1]) / max(noop_rate * seconds, 1) * 1000
    before = after_noop
    cycle_rate = _throughput(cycle, seconds, args.threads)
    spent = CpuClocks.budget(before, clocks.read(), cycle_rate * seconds)
    b50, a50 = statistics.median(baseline), statistics.median(assign_only)
    label = f"agents={agents:>6}" + (f" replicas={len(ports)}" if len(ports) > 1 else "")
    print(
        f"{label}  no-op p50 {b50:6.2f} ms p99 {_percentile(baseline, 0.99):6.2f} ms"
        f" | Assign p50 {a50:6.2f} ms p99 {_percentile(assign_only, 0.99):6.2f} ms"
        f" max {max(assign_only):6.2f} ms ({a50 / b50:4.1f}x no-op, n={len(assign_only)})"
        f" | calib {calib:.1f} ms | {args.threads} threads: no-op {noop_rate:7.0f}/s,"
        f" Assign+Complete {cycle_rate:6.0f} pairs/s"
        f" ({2 * cycle_rate / noop_rate:4.2f} of no-op RPC rate)"
        + (f"; service CPU per no-op {noop_ms:.2f} ms; {spent}" if own else ""),
        flush=True,
    )
    setup = {"agents": agents, "replicas": len(ports), "server": args.server}
    records.append(
        {
            "kind": "saturation",
            **setup,
            "threads": args.threads,
            "noop_per_s": noop_rate,
            "pairs_per_s": cycle_rate,
            "ratio_to_noop": 2 * cycle_rate / noop_rate,
            "noop_p50_ms": b50,
            "assign_p50_ms": a50,
            "assign_p99_ms": _percentile(assign_only, 0.99),
            "calib_ms": calib,
        }
    )
    for phase, rate in enumerate(args.rate):
        calib = _calib_ms()
        before = clocks.read()
        offered, done, dropped = _offered(
            functools.partial(timed_pair, phase), rate, args.rate_seconds
        )
        spent = CpuClocks.budget(before, clocks.read(), len(offered))
        print(
            f"{label}  offered {rate:.0f} Assign+Complete/s for"
            f" {args.rate_seconds:.0f} s: completed {done:6.1f}/s, dropped {dropped}"
            f" | Assign from schedule: p50 {statistics.median(offered):7.2f} ms"
            f" p99 {_percentile(offered, 0.99):7.2f} ms max {max(offered):7.2f} ms"
            f" | calib {calib:.1f} ms" + (f" | {spent}" if own else ""),
            flush=True,
        )
        records.append(
            {
                "kind": "fixed_load",
                **setup,
                "offered_per_s": rate,
                "seconds": args.rate_seconds,
                "completed_per_s": done,
                "dropped": dropped,
                "p50_ms": statistics.median(offered),
                "p99_ms": _percentile(offered, 0.99),
                "max_ms": max(offered),
                "calib_ms": calib,
            }
        )
    for opened in {id(c): c for c in [channel, *channels]}.values():
        opened.close()


def _rates(text: str) -> list[float]:
    """``--rate``: positive numbers, comma-separated (``0`` alone: none)."""
    rates = [float(part) for part in text.split(",")]
    if rates == [0.0]:
        return []
    if any(rate <= 0 for rate in rates):
        raise argparse.ArgumentTypeError(f"rates must be positive: {text}")
    return rates


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments (``argv``, else the command line) and run each team size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", default="100,1000", help="team sizes, comma-separated")
    parser.add_argument("--calls", type=int, default=400, help="sequential samples per RPC")
    parser.add_argument("--seconds", type=float, default=3.0, help="throughput phase length")
    parser.add_argument(
        "--threads", type=int, default=8, help="client threads of the throughput phase"
    )
    parser.add_argument(
        "--phase-limit", type=float, default=30.0, help="longest sequential Assign phase, s"
    )
    parser.add_argument(
        "--rate",
        type=_rates,
        default=[],
        help="fixed offered loads, Assign+Complete/s, comma-separated, each for --rate-seconds"
        " (none by default)",
    )
    parser.add_argument("--rate-seconds", type=float, default=10.0, help="fixed-load duration")
    parser.add_argument(
        "--server",
        choices=("thread", "process"),
        default="thread",
        help="the service in this process (thread) or as its own process (process)",
    )
    parser.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="with --server process: service processes over the same Redis (default 1)",
    )
    results.add_option(parser)
    args = parser.parse_args(argv)
    if args.replicas < 1 or (args.replicas > 1 and args.server != "process"):
        parser.error("--replicas needs --server process and is at least 1")
    logs.silence()
    server = local_redis.start()
    records: list[results.Record] = []
    try:
        for size in (int(a) for a in args.agents.split(",")):
            run(size, args.calls, args.seconds, server.url, args=args, records=records)
    finally:
        server.stop()
    quick = min(args.seconds, args.rate_seconds if args.rate else args.seconds) < 2
    results.write(args.json, "bench_assign", argv, records, quick=quick)


if __name__ == "__main__":
    main()
