"""The argument parser of ``python -m simulations`` (one sub-parser per command, each with
its own ``--help`` that says what it writes and shows an example)."""

from __future__ import annotations

import argparse

from router.domain import Strategy

POLICIES = tuple(s.value for s in Strategy)
SCENARIO_HELP = "scenario file (.yaml/.json); file.yaml#name picks one of its variants"
EXAMPLES = """\
examples:
  python -m simulations run simulations/scenarios/star_agents.yaml --policy best_skill
  python -m simulations compare simulations/scenarios/star_agents.yaml \\
      --policies balanced,longest_idle,best_skill --seeds 5
  python -m simulations trace simulations/scenarios/star_agents.yaml --seed 1 --out day.csv
  python -m simulations replay day.csv --scenario simulations/scenarios/star_agents.yaml \\
      --target 127.0.0.1:50051 --speed 120 --max-calls 500
  python -m simulations erlang --rate 180/h --aht 240 --agents 14 --target 20 --patience 120

Files go to out/<command>-<scenario>/ unless --out says otherwise; report.html is one
self-contained file that opens in any browser, offline.
exit codes: 0 ok, 1 the run failed (service unreachable, RPC errors in a replay),
            2 usage or scenario error (the message names the field) or an output that
            cannot be written (the message names the file; the figures are printed
            first all the same), 130 interrupted
"""
RUN_HELP = """\
Simulate the scenario under one policy with one seed: the service's own routing engine on a
simulated clock. Writes kpis.json (service level, waits, abandonment, expired calls when the
policy sets a queue time limit (max_wait_s), occupancy and fairness, top-performer load,
quality, a timeline), records.csv (one row per call) and report.html, and prints a KPI
table and the engine that ran: a day on which any free agent may take any call
(longest-idle, round-robin or balanced, one channel and priority, one slot per agent, no
occupancy window, widening or SLA boosts) runs on the pooled shortcut with the same result
several times faster; any other day says what keeps it on the event loop.

example:
  python -m simulations run simulations/scenarios/star_agents.yaml --policy best_skill --seed 3
"""
COMPARE_HELP = """\
Simulate every policy on every seed (the same callers under each policy) and aggregate each
KPI per policy: the mean and its 95 % confidence interval (Student t over the seeds). As the
callers are the same, each policy is also compared with the first one listed (the baseline)
seed by seed: the mean per-seed difference with its 95 % interval, better or worse only when
that interval excludes zero. Writes compare.json and report.html (the tables and bar charts
with the intervals as whiskers), and prints the tables and, per policy, the engine its runs
take (see run --help). When every call comes from trace files, each seed replays the same
calls and the intervals cover only what is drawn per seed, not traffic's variation: a
warning under the tables, in the report and in compare.json's notes says so.

The runs go seed by seed (every policy on a seed before the next one). Ctrl-C stops the
comparison and keeps what it finished: the tables are printed over the seeds every policy
finished, headed "INTERRUPTED after k of n runs", nothing is written (the folder keeps the
previous comparison whole) and the exit code is 130.

example:
  python -m simulations compare simulations/scenarios/star_agents.yaml --seeds 10
"""
TRACE_HELP = """\
Write the calls a scenario generates for a seed (arrival time, channel, skills, language,
region, priority, handle time, patience) as CSV or JSON Lines: for replay, or to edit.

example:
  python -m simulations trace simulations/scenarios/star_agents.yaml --seed 1 --out day.csv
"""
REPLAY_HELP = """\
Replay a trace against a running service over gRPC, time-compressed, as a load test: create
the scenario's agents with the shift ends and absences the simulator gives them, on the
service's clock at the calls' speed (presence follows their shifts, breaks and absences),
Assign every call at its arrival / speed, Accept offers, Complete after handle time / speed
with a simulated outcome, Cancel when the caller's patience runs out; one Watch stream
reports when queued calls get an agent.

The service's own durations (SLA targets, occupancy window, expected handle times, wrap-up,
widening steps) are divided by --speed so it lives in the same compressed time as the
callers, in whole seconds as the service keeps them (clamped where the API has limits; a
positive one that would round to 0 s, off for the service, rounded up to 1 s; printed
before the KPIs and listed in replay.json). Busy time counts the wrap-up the service
applied, scaled back. Queue waits are taken from the service's event times and scaled
back; RPC round trips count unscaled.

Writes replay.json (requests, errors by status code, latency p50/p90/p99/max per RPC,
event delivery lag, the KPIs of the service's real decisions, and the service's own
GetStats at the end, marked as its real-time view: not time-compressed, not the simulated
day's figures), plus kpis.json, records.csv and report.html in the same form as 'run'.
Bounded: --max-calls, --max-seconds of arrivals, then --drain-seconds for calls in
progress; a fresh tenant.

example:
  make run &   # a service on 127.0.0.1:50051
  python -m simulations replay simulations/scenarios/star_agents.yaml \\
      --target 127.0.0.1:50051 --speed 300 --max-calls 600
"""
ERLANG_HELP = """\
Steady-state figures of a single-skill pool: Erlang C (callers never hang up) and, with
--patience, Erlang A (exponential patience). P(wait), service level (answered within the
target / offered), average speed of answer, P(abandon).

example (10 agents, one call every 20 s, 3-minute calls):
  python -m simulations erlang --rate 0.05 --aht 180 --agents 10 --target 20
"""


def _sub(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, summary: str, text: str
) -> argparse.ArgumentParser:
    return sub.add_parser(
        name,
        help=summary,
        description=text,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def build_parser() -> argparse.ArgumentParser:
    """The parser; ``args.command`` names the command."""
    parser = argparse.ArgumentParser(
        prog="python -m simulations",
        description=(
            "Simulate the agent router offline (the same engine on a simulated clock) and "
            "replay traffic against a live service: 'run' one policy, 'compare' policies with "
            "confidence intervals, write a synthetic 'trace', 'replay' it over gRPC as a load "
            "test, or check a staffing level with 'erlang'. Each command has its own --help."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    policy = f"routing policy: {', '.join(POLICIES)} (default: the scenario's)"

    run = _sub(sub, "run", "simulate one policy: KPIs, per-call records, HTML report", RUN_HELP)
    run.add_argument("scenario", metavar="SCENARIO", help=SCENARIO_HELP)
    run.add_argument("--policy", help=policy)
    run.add_argument("--seed", type=int, help="random seed (default: the scenario's seed)")
    run.add_argument("--out", metavar="DIR", help="output directory (default out/run-<scenario>)")

    cmp = _sub(sub, "compare", "policies x seeds: mean and 95%% CI per KPI", COMPARE_HELP)
    cmp.add_argument("scenario", metavar="SCENARIO", help=SCENARIO_HELP)
    cmp.add_argument(
        "--policies",
        default="balanced,longest_idle,round_robin,best_skill",
        help="comma-separated policies, the first the baseline (default %(default)s)",
    )
    cmp.add_argument("--seeds", type=int, default=5, help="seeds per policy (default 5)")
    cmp.add_argument(
        "--first-seed", type=int, help="first of consecutive seeds (default: the scenario's)"
    )
    cmp.add_argument("--out", metavar="DIR", help="output directory (default out/compare-...)")

    trace = _sub(sub, "trace", "write a scenario's calls for a seed (csv/jsonl)", TRACE_HELP)
    trace.add_argument("scenario", metavar="SCENARIO", help=SCENARIO_HELP)
    trace.add_argument("--seed", type=int, required=True, help="random seed")
    trace.add_argument("--out", required=True, metavar="FILE", help="FILE.csv or FILE.jsonl")

    rep = _sub(sub, "replay", "send a trace to a running service over gRPC", REPLAY_HELP)
    rep.add_argument(
        "source",
        metavar="TRACE_OR_SCENARIO",
        help="a trace (.csv/.jsonl, with --scenario), or a scenario (its trace for --seed)",
    )
    rep.add_argument("--target", required=True, metavar="HOST:PORT", help="the service")
    rep.add_argument(
        "--admin-target",
        metavar="HOST:PORT",
        help="where its admin services listen, if apart (ROUTER_ADMIN_PORT; default: --target)",
    )
    rep.add_argument(
        "--scenario", help="the scenario whose agents and policy serve a trace (a trace only)"
    )
    rep.add_argument("--seed", type=int, help="trace and outcome seed (default: the scenario's)")
    rep.add_argument("--speed", type=float, default=60.0, help="x real time (default 60)")
    rep.add_argument("--max-calls", type=int, default=2000, help="at most N calls (default 2000)")
    rep.add_argument(
        "--max-seconds", type=float, default=120.0, help="real seconds of arrivals (default 120)"
    )
    rep.add_argument(
        "--drain-seconds", type=float, default=30.0, help="then up to S more (default 30)"
    )
    rep.add_argument("--workers", type=int, default=16, help="client threads (default 16)")
    rep.add_argument(
        "--tenant",
        help="tenant: 1-64 letters, digits or ._- (default: a fresh replay-<tag>)",
    )
    rep.add_argument("--policy", help=policy)
    rep.add_argument(
        "--real-time-policy",
        action="store_true",
        help="leave the policy's durations as they are (not divided by --speed)",
    )
    rep.add_argument("--allow-remote", action="store_true", help="allow a non-loopback target")
    rep.add_argument("--out", metavar="DIR", help="output directory (default out/replay-...)")

    erl = _sub(sub, "erlang", "Erlang C / Erlang A figures for a staffing level", ERLANG_HELP)
    erl.add_argument("--rate", required=True, help="arrivals: 0.05 (per s), 3/min or 180/h")
    erl.add_argument("--aht", type=float, required=True, help="average handle time, seconds")
    erl.add_argument("--agents", type=int, required=True, help="agents staffed")
    erl.add_argument("--target", type=float, default=20.0, help="SLA target, s (default 20)")
    erl.add_argument("--patience", type=float, help="mean patience, s: adds Erlang A")

    for command in (run, cmp, rep):
        command.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser
