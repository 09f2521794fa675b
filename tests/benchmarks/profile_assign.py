"""Where an Assign's time goes: a pyinstrument profile of Assign+Complete pairs in process.

    .venv/bin/python -m tests.benchmarks.profile_assign [--agents 1000] [--pairs 300]

Starts a private redis-server, registers N available agents (as ``bench_assign``: chat
capacity 4, ``billing`` levels 1-10), then runs ``--pairs`` Assign+Complete pairs through the
``Assigner`` and the Redis store directly (no gRPC, so the tree shows the routing work:
candidate read, decision, commit, finish) under pyinstrument, after a short warm-up and as
many pairs unprofiled. Prints the CPU and wall time per pair unprofiled, then the CPU per
pair of each step (the candidates read, the decision, the commit, the Complete's finish, the
request's digest, the rest), timed around those calls in another run of as many pairs
(without a profiler: each step's own clock reads only), then the time per pair profiled and
the call tree.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from pyinstrument import Profiler

from router import assigner as assigner_module
from router import local_redis, logs
from router.assigner import Assigner
from router.domain import (
    AgentProfile,
    AssignmentState,
    Call,
    Channel,
    Presence,
    SkillRequirement,
)
from router.redis_store import RedisStore

TENANT = "profile"


def chat_team(store: RedisStore, tenant: str, agents: int) -> None:
    """``agents`` available agents with 4 chat slots and billing levels 1-10 in turn."""
    for i in range(agents):
        agent_id = f"a{i:05d}"
        profile = AgentProfile(agent_id, skills={"billing": 1 + i % 10}, capacity={Channel.CHAT: 4})
        store.create_agent(tenant, profile)
        store.set_presence(tenant, agent_id, Presence.AVAILABLE)


def assign_pair(assigner: Assigner, store: RedisStore, tenant: str, n: int) -> float:
    """Assign chat call ``c<n>`` (``billing >= 3``), then Complete it: the Assign's ms."""
    call = Call(f"c{n}", Channel.CHAT, required_skills=(SkillRequirement("billing", 3),))
    started = time.perf_counter()
    assignment = assigner.assign(tenant, f"r{n}", call, queue=False).assignment
    took = (time.perf_counter() - started) * 1000
    if assignment is None:
        raise RuntimeError("not assigned: every agent should have room")
    store.finish_assignment(
        tenant, assignment.assignment_id, assignment.token, AssignmentState.COMPLETED
    )
    return took


STEPS = (
    ("candidates read", "load_candidates"),
    ("decision", "decide"),
    ("commit", "commit_assignment"),
    ("finish (Complete)", "finish_assignment"),
    ("request digest", "fingerprint"),
)
"""Each step's name, and the store method or ``router.assigner`` function it times."""


@contextmanager
def timed_steps(store: RedisStore) -> Iterator[defaultdict[str, float]]:
    """CPU seconds spent in each of ``STEPS`` while inside (by name); the functions are
    put back on exit."""
    spent: defaultdict[str, float] = defaultdict(float)
    saved: list[tuple[object, str, Any]] = []

    def timing(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.process_time()
            try:
                return function(*args, **kwargs)
            finally:
                spent[name] += time.process_time() - started

        return timed

    for name, attribute in STEPS:
        owner: object = store if hasattr(store, attribute) else assigner_module
        saved.append((owner, attribute, getattr(owner, attribute)))
        setattr(owner, attribute, timing(name, getattr(owner, attribute)))
    try:
        yield spent
    finally:
        for owner, attribute, function in saved:
            if owner is store:
                delattr(store, attribute)  # the class's method again
            else:
                setattr(owner, attribute, function)


def step_table(spent: defaultdict[str, float], total_s: float, pairs: int) -> str:
    """``spent`` per pair as a table, with the rest of ``total_s`` last."""
    rows = [(name, spent[name]) for name, _ in STEPS] + [("rest", total_s - sum(spent.values()))]
    lines = ["| step | CPU per pair | share |", "|---|---:|---:|"]
    for name, seconds in rows:
        share = seconds / total_s * 100 if total_s else 0.0
        lines.append(f"| {name} | {seconds / pairs * 1000:.3f} ms | {share:.0f} % |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments (``argv``, else the command line), set up, profile, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=1000, help="team size")
    parser.add_argument("--pairs", type=int, default=300, help="Assign+Complete pairs profiled")
    args = parser.parse_args(argv)
    logs.silence()
    server = local_redis.start()
    try:
        store = RedisStore.from_url(server.url)
        chat_team(store, TENANT, args.agents)
        assigner = Assigner(store)

        def pair(n: int) -> None:
            assign_pair(assigner, store, TENANT, n)

        for n in range(30):  # warm the caches
            pair(n)
        # The same number of pairs without the profiler first: this process's CPU per pair
        # (the routing work without gRPC; Redis' own work is in redis-server) and the wall
        # time, which adds the Redis round trips.
        started, cpu = time.perf_counter(), time.process_time()
        for n in range(30, 30 + args.pairs):
            pair(n)
        wall_ms = (time.perf_counter() - started) / args.pairs * 1000
        cpu_ms = (time.process_time() - cpu) / args.pairs * 1000
        print(
            f"agents={args.agents} pairs={args.pairs}: {cpu_ms:.2f} ms of CPU, {wall_ms:.2f} ms"
            " of wall time per pair (unprofiled)"
        )
        first = 30 + args.pairs
        with timed_steps(store) as spent:
            cpu = time.process_time()
            for n in range(first, first + args.pairs):
                pair(n)
            total_s = time.process_time() - cpu
        print(f"CPU per pair by step ({args.pairs} pairs, unprofiled):")
        print(step_table(spent, total_s, args.pairs))
        first += args.pairs
        profiler = Profiler(interval=0.0005)
        started = time.perf_counter()
        profiler.start()
        for n in range(first, first + args.pairs):
            pair(n)
        profiler.stop()
        per_pair = (time.perf_counter() - started) / args.pairs * 1000
        print(f"agents={args.agents} pairs={args.pairs}: {per_pair:.2f} ms per pair (profiled)")
        print(profiler.output_text(unicode=False, color=False))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
