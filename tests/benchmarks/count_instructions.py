"""Instructions per Assign+Complete pair or per simulated call, counted under valgrind.

Figures machine noise leaves alone:

    .venv/bin/python -m tests.benchmarks.count_instructions [--agents 1000] [--history 100]
        [--pairs 200] [--rev REV ...]
    .venv/bin/python -m tests.benchmarks.count_instructions --simulator longest_idle
        [--days 3] [--hours 24] [--rev REV ...]

On a shared machine a change worth a few per cent hides in the noise of timed runs
(``profile_layers`` varies by 15 % from run to run on some days). This counts the
instructions the process executes instead (``valgrind --tool=callgrind``, which runs it
about 50 times slower): the same code on the same input executes nearly the same
instructions however busy the machine is (the counted processes run with a fixed hash seed
and numpy's BLAS on one thread, whose workers would otherwise spin for as long as the
machine's speed lets them, and be counted).

The routing workload is ``profile_assign``'s: a private redis-server, N available chat
agents, ``--history`` untimed pairs, then Assign+Complete pairs through the ``Assigner`` and
the Redis store, without the routing index's periodic full read (a once-a-minute backstop
that would land in the counted pairs of one run and not the other). It runs twice per
version, with no pairs and with ``--pairs``; the difference divided by ``--pairs`` is the
count per pair (start-up, imports and the team's set-up cancel out). redis-server's own
work is not counted.

``--simulator STRATEGY`` counts ``bench_simulator``'s M/M/20 queue instead (20 agents, 340
calls an hour, 180 s handle time, ``--hours`` of arrivals): ``simulate`` as the command line
runs it (drawing the calls, the run, the records and the KPIs) on ``--days`` seeds, after one
uncounted day; against the same process with no day counted, per simulated call.

Each ``--rev`` (any git revision) is counted from a temporary worktree, against the working
tree, in one run: a change's before and after. Instructions are not time (cache misses,
system calls and the kernel's work are not in them), so they complement timed benchmarks
rather than replace them. Needs valgrind (Debian: ``apt install valgrind``).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

WORKLOAD = """
import sys
from router import local_redis, logs
from router.assigner import Assigner
from router.domain import AgentProfile, AssignmentState, Call, Channel, Policy, Presence
from router.domain import SkillRequirement
from router.redis_store import RedisStore

agents, history, pairs = map(int, sys.argv[1:4])
logs.silence()
try:
    from router import index_mirror
except ImportError:  # a revision from before the routing index's mirror
    pass
else:
    # Its periodic full read (a backstop, once a minute) falls at whatever pair valgrind's
    # slowness puts it, in one run and not the other: with thousands of agents, a swing of
    # millions of instructions per pair. Only the first read, in the history, is kept.
    index_mirror.FULL_READ_EVERY_S = float("inf")
server = local_redis.start()
try:
    store = RedisStore.from_url(server.url)
    # No heartbeat timeout: under valgrind the set-up outlasts the default two minutes.
    store.put_policy("count", Policy(heartbeat_timeout_s=0))
    for i in range(agents):
        agent_id = f"a{i:05d}"
        profile = AgentProfile(agent_id, skills={"billing": 1 + i % 10}, capacity={Channel.CHAT: 4})
        store.create_agent("count", profile)
        store.set_presence("count", agent_id, Presence.AVAILABLE)
    assigner = Assigner(store)
    for n in range(history + pairs):
        call = Call(f"c{n}", Channel.CHAT, required_skills=(SkillRequirement("billing", 3),))
        assignment = assigner.assign("count", f"r{n}", call, queue=False).assignment
        if assignment is None:
            raise RuntimeError("not assigned: every agent should have room")
        store.finish_assignment(
            "count", assignment.assignment_id, assignment.token, AssignmentState.COMPLETED
        )
finally:
    server.stop()
"""
"""What is counted (only router APIs that older revisions have too): agents, history, pairs."""

SIMULATOR = """
import sys
from router import logs
from simulations.scenario import parse_scenario
from simulations.simulator import simulate

strategy, hours, days = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
logs.silence()
raw = {  # bench_simulator's M/M/20 queue (Erlang's model: no cap, no escalation)
    "pool": {"agents": 20, "rate_per_hour": 340, "mean_handle_s": 180},
    "duration_s": hours * 3600,
    "warmup_s": min(3600.0, hours * 900),
    "drain_s": hours * 3600,
    "policy": {"strategy": strategy, "occupancy_window_s": 0, "escalation_priority_boost": 0},
    "sla": {"voice": 20},
}
scenario = parse_scenario(raw, name="mmc-" + strategy)
simulate(scenario, seed=1)  # first-call costs, in both runs: not counted
print(sum(len(simulate(scenario, seed=seed).records) for seed in range(2, 2 + days)))
"""
"""What is counted per simulated call: strategy, hours of arrivals, days (seeds)."""

STRATEGIES = ("longest_idle", "balanced", "round_robin")
"""The strategies the M/M/20 queue runs on the pooled shortcut (as ``bench_simulator``)."""

_COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")


def count(root: Path, script: str, *args: object) -> tuple[int, str]:
    """Instructions of one run of ``script`` with ``args`` against the code in ``root``, and
    what it printed."""
    env = {
        **os.environ,
        "PYTHONPATH": str(root),
        "PYTHONMALLOC": "malloc",
        "PYTHONHASHSEED": "0",
        # numpy's BLAS starts a worker thread per core, whose spinning after a call depends
        # on the machine's speed, not the code's work: callgrind would count it too.
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
    }
    done = subprocess.run(  # fixed arguments: this interpreter and valgrind
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            "-c",
            script,
            *map(str, args),
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    found = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"the counted run failed ({done.returncode}): {done.stderr[-2000:]}")
    return int(found.group(1)), done.stdout


def per_pair(root: Path, agents: int, history: int, pairs: int) -> float:
    """Instructions per pair of the code in ``root`` (two runs: without and with the pairs)."""
    with_pairs, _ = count(root, WORKLOAD, agents, history, pairs)
    without, _ = count(root, WORKLOAD, agents, history, 0)
    return (with_pairs - without) / pairs


def per_call(root: Path, strategy: str, hours: float, days: int) -> float:
    """Instructions per simulated call of the code in ``root`` (two runs: without and with
    the counted days)."""
    with_days, printed = count(root, SIMULATOR, strategy, hours, days)
    without, _ = count(root, SIMULATOR, strategy, hours, 0)
    return (with_days - without) / int(printed.split()[-1])


def is_commit(rev: str) -> bool:
    """Whether git resolves ``rev`` to a commit of this repository."""
    found = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
        cwd=ROOT,
        capture_output=True,
        check=False,
    )
    return found.returncode == 0


def worktree(rev: str, into: Path) -> Path:
    """A detached worktree of ``rev`` under ``into``."""
    path = into / _name(rev)
    subprocess.run(  # fixed git arguments
        ["git", "worktree", "add", "--detach", "--quiet", str(path), rev],
        cwd=ROOT,
        check=True,
    )
    return path


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments (``argv``, else the command line), count, print a table."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--agents", type=int, default=1000, help="available agents")
    parser.add_argument("--history", type=int, default=100, help="untimed pairs run first")
    parser.add_argument("--pairs", type=int, default=200, help="counted pairs")
    parser.add_argument(
        "--simulator",
        choices=STRATEGIES,
        help="count simulated calls of the M/M/20 queue under this strategy, not pairs",
    )
    parser.add_argument("--days", type=int, default=3, help="--simulator: counted days (seeds)")
    parser.add_argument("--hours", type=float, default=24, help="--simulator: hours of arrivals")
    parser.add_argument(
        "--rev", action="append", default=[], help="also count this git revision (repeatable)"
    )
    args = parser.parse_args(argv)
    if args.agents < 1 or args.pairs < 1 or args.history < 0:
        parser.error("--agents and --pairs must be at least 1, --history at least 0")
    if args.days < 1 or not 0 < args.hours < math.inf:
        parser.error("--days must be at least 1 and --hours a positive number")
    if shutil.which("valgrind") is None:
        parser.error("valgrind is not installed (Debian: apt install valgrind)")
    for rev in args.rev:
        if not is_commit(rev):
            parser.error(f"--rev {rev}: not a commit of this repository")
    measure: Callable[[Path], float]
    if args.simulator is None:
        measure = partial(per_pair, agents=args.agents, history=args.history, pairs=args.pairs)
        unit = "pair"
        print(
            f"agents={args.agents} history={args.history} pairs={args.pairs}:"
            " instructions per Assign+Complete pair (routing process, valgrind callgrind)"
        )
    else:
        measure = partial(per_call, strategy=args.simulator, hours=args.hours, days=args.days)
        unit = "call"
        print(
            f"M/M/20 queue, {args.simulator}, {args.hours:g} h of arrivals, {args.days} day(s):"
            " instructions per simulated call (simulate, valgrind callgrind)"
        )
    print(f"| code | instructions per {unit} | ratio to the working tree |")
    print("|---|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="count-") as tmp:
        counted: list[tuple[str, float]] = []
        try:
            for rev in args.rev:
                counted.append((rev, measure(worktree(rev, Path(tmp)))))
        finally:
            for rev in args.rev:
                subprocess.run(  # fixed git arguments
                    ["git", "worktree", "remove", "--force", str(Path(tmp) / _name(rev))],
                    cwd=ROOT,
                    check=False,
                    capture_output=True,
                )
        mine = measure(ROOT)
        for name, value in [*counted, ("working tree", mine)]:
            print(f"| {name} | {value:,.0f} | {value / mine:.3f} |")


def _name(rev: str) -> str:
    return re.sub(r"[^\w.-]", "_", rev)


if __name__ == "__main__":
    main()
