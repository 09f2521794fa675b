"""Where an Assign+Complete pair's CPU goes, layer by layer, in one process.

    .venv/bin/python -m tests.benchmarks.profile_layers [--agents 1000] [--pairs 300] [--rounds 3]
        [--history 0] [--pause-ms 0]

Starts a private redis-server, registers N available agents (as ``profile_assign``: chat
capacity 4, ``billing`` levels 1-10) and times Assign+Complete pairs (a chat call needing
``billing >= 3``; nothing queued) through four layers, one after the other, in rounds:

- **routing**: the ``Assigner`` and the Redis store directly (candidate read, decision, commit,
  finish: ``profile_assign``'s pairs);
- **API**: ``RoutingServicer.Assign`` and ``Complete`` called with protobuf requests (what the
  API adds: request checks and conversions, the reply messages, metrics);
- **gRPC**: the same two RPCs over a real channel to the service running in this process
  (interceptors, the server's threads and the channel, client side included);
- **two no-op RPCs**: two health Checks over that channel (the gRPC floor, client included).

Prints this process's CPU and wall time per pair for each layer (median over rounds, each
round's CPU alongside) and what each adds to the one before: what a pair costs a replica
beyond the routing work, without the other processes and client threads of ``bench_assign``.
Bounded: ``--pairs`` per layer and round, after a warm-up of 30.

``--history N`` first runs N routing pairs untimed (with a progress bar): each leaves a
finished work span in its agent's occupancy window, as a service that has run for a while
carries them (1,000 chat agents finishing 20 items an hour each hold 20,000 spans in the
default hour). A decision reads every span in the window for the agents' occupancy, so
this is how a pair's cost grows with the service's recent history.

``--pause-ms P`` also times every layer with the process idle for P ms after each pair, as
a replica sees its requests at moderate load (150 pairs/s: about 6.7 ms apart), right after
its back-to-back pairs in the same round. The table then adds the CPU per pair so paced and
its ratio to back to back: the same work costs more CPU when it starts on a processor that
sat idle (on a shared VM the idle core's caches and branch history go to other work), which
back-to-back loops never see.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tqdm import tqdm

from router import local_redis, logs
from router.assigner import Assigner
from router.redis_store import RedisStore
from router.routing_api import RoutingServicer
from router.server import create_server
from router.settings import Settings
from router.v1 import routing_pb2, routing_pb2_grpc
from tests.benchmarks.bench_assign import assign_request
from tests.benchmarks.profile_assign import assign_pair, chat_team

TENANT = "layers"
WARM_UP = 30
HISTORY_KEYS = 10**9
"""``--history`` pairs are numbered from here (the timed ones from 0)."""


def complete_request(reply: routing_pb2.AssignResponse) -> routing_pb2.CompleteRequest:
    """The Complete of ``reply``'s assignment."""
    if reply.result != routing_pb2.AssignResponse.RESULT_ASSIGNED:
        raise RuntimeError("not assigned: every agent should have room")
    return routing_pb2.CompleteRequest(
        tenant=TENANT,
        assignment_id=reply.assignment.assignment_id,
        fencing_token=reply.assignment.fencing_token,
    )


class _Context:
    """What the servicer reads of a ``grpc.ServicerContext`` on these two RPCs (nothing)."""


@dataclass(frozen=True, slots=True)
class Round:
    """One layer's figures in one round, per pair (ms)."""

    cpu: float
    """This process's CPU, pairs back to back."""
    wall: float
    """Wall time, pairs back to back."""
    paced: float | None = None
    """This process's CPU with the pause after each pair (``None``: not timed paced)."""


def measure(
    layers: Sequence[tuple[str, Callable[[str], object]]],
    pairs: int,
    rounds: int,
    pause_s: float = 0.0,
) -> dict[str, list[Round]]:
    """Each layer's ``Round`` in each round (paced too when ``pause_s`` > 0, right after the
    back-to-back pairs); every pair has keys of its own."""
    keys = (f"k{n}" for n in itertools.count())
    spent: dict[str, list[Round]] = {name: [] for name, _ in layers}
    for _ in range(rounds):
        for name, pair in layers:
            for _ in range(WARM_UP):
                pair(next(keys))
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(pairs):
                pair(next(keys))
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            paced = None
            if pause_s > 0:
                paced = 0.0
                for _ in range(pairs):
                    started = time.process_time()
                    pair(next(keys))
                    paced += time.process_time() - started
                    time.sleep(pause_s)
                paced = paced / pairs * 1000
            spent[name].append(Round(cpu / pairs * 1000, wall / pairs * 1000, paced))
    return spent


def table(spent: dict[str, list[Round]], pause_ms: float = 0.0) -> str:
    """The markdown table of ``measure``'s result (``pause_ms``: its pause, for the header)."""
    header = "| layer | CPU per pair | wall per pair | added CPU | CPU per round |"
    rule = "|---|---:|---:|---:|---:|"
    if pause_ms > 0:
        header += f" CPU per pair, {pause_ms:g} ms apart | paced ÷ back to back |"
        rule += "---:|---:|"
    lines = [header, rule]
    below = None
    for name, rounds in spent.items():
        cpu = statistics.median(each.cpu for each in rounds)
        wall = statistics.median(each.wall for each in rounds)
        added = "-" if below is None or name.startswith("two") else f"+{cpu - below:.2f} ms"
        each_round = " / ".join(f"{each.cpu:.2f}" for each in rounds)
        line = f"| {name} | {cpu:.2f} ms | {wall:.2f} ms | {added} | {each_round} |"
        paced = [each.paced for each in rounds if each.paced is not None]
        if paced:
            slow = statistics.median(paced)
            line += f" {slow:.2f} ms | {slow / cpu:.2f}x |"
        lines.append(line)
        below = cpu
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments (``argv``, else the command line), set up, measure, print."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--agents", type=int, default=1000, help="available agents")
    parser.add_argument("--pairs", type=int, default=300, help="timed pairs per layer and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over the four layers")
    parser.add_argument(
        "--history",
        type=int,
        default=0,
        help="untimed routing pairs run first: finished work in the agents' occupancy window",
    )
    parser.add_argument(
        "--pause-ms",
        type=float,
        default=0.0,
        help="also time each layer idle this long after every pair (moderate load; 0: not)",
    )
    args = parser.parse_args(argv)
    if args.agents < 1 or args.pairs < 1 or args.rounds < 1 or args.history < 0:
        parser.error("--agents, --pairs and --rounds must be at least 1, --history at least 0")
    if not 0 <= args.pause_ms <= 1000:
        parser.error("--pause-ms must be from 0 to 1000")
    logs.silence()
    server = local_redis.start()
    try:
        store = RedisStore.from_url(server.url)
        chat_team(store, TENANT, args.agents)
        assigner = Assigner(store)
        for n in tqdm(range(args.history), desc="history", unit="pair", disable=not args.history):
            assign_pair(assigner, store, TENANT, HISTORY_KEYS + n)
        api = RoutingServicer(store, assigner, lambda _tenant: None)
        context: grpc.ServicerContext = _Context()  # type: ignore[assignment]
        # The same store for every layer: one agent cache and routing-index mirror, kept
        # current by every layer's commits (a second store would first re-read the agents the
        # other layers changed, a cost of the measurement, not of gRPC).
        running = create_server(Settings(port=0, metrics_port=0), store)
        channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
        routing = routing_pb2_grpc.RoutingServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)

        def routed(key: str) -> None:
            assign_pair(assigner, store, TENANT, int(key[1:]))

        def through_api(key: str) -> None:
            reply = api.Assign(assign_request(key, TENANT), context)
            api.Complete(complete_request(reply), context)

        def through_grpc(key: str) -> None:
            routing.Complete(complete_request(routing.Assign(assign_request(key, TENANT))))

        def two_noops(_key: str) -> None:
            for _ in range(2):
                health.Check(health_pb2.HealthCheckRequest())  # type: ignore[attr-defined]

        try:
            spent = measure(
                [
                    ("routing (Assigner and store)", routed),
                    ("API (servicer, protobuf)", through_api),
                    ("gRPC (channel and server, in process)", through_grpc),
                    ("two no-op RPCs (health Check)", two_noops),
                ],
                args.pairs,
                args.rounds,
                args.pause_ms / 1000,
            )
        finally:
            channel.close()
            running.stop(0)
        print(
            f"agents={args.agents} pairs={args.pairs} rounds={args.rounds}"
            f" history={args.history}"
            + (f" pause={args.pause_ms:g} ms" if args.pause_ms > 0 else "")
            + ": this process's CPU and wall time per Assign+Complete pair"
        )
        print(table(spent, args.pause_ms))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
