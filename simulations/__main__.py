"""``python -m simulations``: run, compare, trace, replay and Erlang figures from the shell.

Exit codes: 0 done; 1 the work failed (service unreachable, RPC errors in a replay);
2 usage or scenario errors, with a message naming the field, or an output that cannot be
written, naming the file (never a traceback; a command prints its figures before it writes
its files, so a full disk loses none of them); 130 interrupted (Ctrl-C). Outputs are written
through ``simulations.outputs``: an interrupted run leaves the previous run's files whole.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import grpc

from router import logs
from router.domain import Strategy
from simulations import console, outputs, report
from simulations.cli import POLICIES, build_parser
from simulations.compare import Comparison, ComparisonInterrupted, run_comparison
from simulations.erlang import erlang_a, erlang_c
from simulations.kpis import write_outputs
from simulations.replay import Replayer
from simulations.replay_plan import (
    OptionError,
    ReplayError,
    ReplayOptions,
    agents_from_scenario,
    check_target,
)
from simulations.replay_report import replay_kpis, summarize_replay
from simulations.scenario import Scenario, ScenarioError, load_scenario
from simulations.simulator import engine_of, simulate, status
from simulations.trace import (
    ARRIVAL_ORDER,
    TraceCall,
    calls_past_duration,
    generate_trace,
    read_trace,
    write_trace,
)

SCENARIO_SUFFIXES = frozenset({".yaml", ".yml", ".json"})
TRACE_SUFFIXES = frozenset({".csv", ".jsonl", ".ndjson"})


class UsageError(Exception):
    """A bad argument or scenario: printed as ``error: ...`` with exit code 2."""


# --- shared helpers --------------------------------------------------------------------------


def _load(path: str) -> Scenario:
    """Load a scenario (``file.yaml#variant`` picks a variant); errors name the field."""
    try:
        return load_scenario(path)
    except FileNotFoundError:
        raise UsageError(f"scenario {path}: no such file") from None
    except (ScenarioError, OSError) as exc:
        raise UsageError(f"scenario {path}: {exc}") from None


def _load_arrivals(path: str) -> Scenario:
    """``_load`` for a command that runs the scenario's own arrivals: a warning on stderr
    names each trace file whose calls at or after ``duration_s`` are left out, and how
    many (a recording of several days in a one-day scenario is cut to its first day)."""
    scenario = _load(path)
    for trace, late in calls_past_duration(scenario):
        print(
            f"warning: {trace}: {late} {'call arrives' if late == 1 else 'calls arrive'} at "
            f"or after duration_s ({scenario.duration_s:g} s) and "
            f"{'is' if late == 1 else 'are'} left out; raise duration_s to take them",
            file=sys.stderr,
        )
    return scenario


def _seed(args: argparse.Namespace, scenario: Scenario) -> int:
    seed: int = scenario.seed if args.seed is None else args.seed
    return seed


def _policy(name: str, option: str = "--policy") -> str:
    """The policy ``name`` (``longest-idle`` spelled either way); errors name ``option``."""
    value = name.strip().lower().replace("-", "_")
    if value not in POLICIES:
        raise UsageError(f"{option}: {name!r} is not one of {', '.join(POLICIES)}")
    return value


_OUTPUTS = {
    "run": ("kpis.json", "records.csv", "report.html"),
    "compare": ("compare.json", "report.html"),
    "replay": ("replay.json", "kpis.json", "records.csv", "report.html"),
}
"""The files each command writes into its folder."""


def _out_dir(given: str | None, command: str, scenario: str) -> Path:
    """``given``, else ``out/<command>-<scenario name>`` (``small:busy`` -> ``small-busy``),
    checked as far as it can be before the work (a folder where one of its files goes
    included); created when the outputs are written."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", scenario).strip("-") or "scenario"
    path = Path(given) if given else Path("out") / f"{command}-{slug}"
    trouble = outputs.problem(path)
    if trouble:
        raise UsageError(f"--out: {trouble}")
    outputs.check_names(path, _OUTPUTS[command])
    return path


def _writing(out: Path, args: argparse.Namespace) -> None:
    """Say the outputs are being written (unless ``--quiet``)."""
    if not args.quiet:
        status(f"writing outputs to {out}")


# --- subcommands -----------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    """Simulate one policy on one seed; write kpis.json, records.csv, report.html."""
    scenario = _load_arrivals(args.scenario)
    policy = _policy(args.policy) if args.policy else None
    out = _out_dir(args.out, "run", scenario.name)
    seed = _seed(args, scenario)
    result = simulate(scenario, seed=seed, policy=policy, progress=not args.quiet)
    _show(console.kpi_table(result.kpis))  # before the files: a full disk keeps the figures
    _show(f"engine: {result.engine}, {result.wall_s:.1f} s")
    _writing(out, args)
    with outputs.staged(out) as stage:
        result.write(stage)
        report.write_run_report(
            stage, sla=scenario_sla(scenario), occupancy_cap=report.applied_cap(scenario.policy)
        )
    path = out / "report.html"
    _show(f"wrote {out / 'kpis.json'}, {out / 'records.csv'}, {path}")
    return 0


def _show(text: str) -> None:
    """Print ``text`` now. A reader that went away (``| head``) costs the rest of the
    printed text, never the files still to write: standard output goes to the null device
    from then on, without a traceback."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _span(seeds: Sequence[int]) -> str:
    """Consecutive seeds as ``3`` or ``1-4``."""
    return f"{seeds[0]}" if len(seeds) == 1 else f"{seeds[0]}-{seeds[-1]}"


def _print_comparison(scenario: Scenario, comparison: Comparison, heading: str = "") -> None:
    """Print ``heading`` (if any), a comparison's tables and, per policy, the engine its
    first seed takes (worked out first, so the text comes out at once)."""
    seed = comparison.seeds[0]
    trace = generate_trace(scenario, seed)
    engines = [
        f"engine, {name} (seed {seed}): {engine_of(scenario.with_policy(name), trace)}"
        for name in comparison.policies
    ]
    text = [heading] if heading else []
    _show("\n".join([*text, console.compare_table(comparison.to_json()), *engines]))


def cmd_compare(args: argparse.Namespace) -> int:
    """Simulate several policies on several seeds; write compare.json and report.html.
    Ctrl-C prints the tables of the seeds every policy finished and writes nothing."""
    scenario = _load_arrivals(args.scenario)
    policies = [_policy(p, "--policies") for p in args.policies.split(",") if p.strip()]
    if not policies:
        raise UsageError("--policies: give at least one policy")
    if len(set(policies)) != len(policies):
        raise UsageError("--policies: a policy is listed twice")
    if not 1 <= args.seeds <= 1000:
        raise UsageError(f"--seeds: {args.seeds} is not in 1..1000")
    out = _out_dir(args.out, "compare", scenario.name)
    first = scenario.seed if args.first_seed is None else args.first_seed
    seeds = list(range(first, first + args.seeds))
    try:
        comparison = run_comparison(scenario, policies, seeds, progress=not args.quiet)
    except ComparisonInterrupted as stop:  # Ctrl-C: the seeds finished, shown, not written
        if not stop.partial.seeds:
            raise KeyboardInterrupt(
                f"{stop}, no seed finished under every policy: nothing to compare, nothing written"
            ) from None
        done = stop.partial.seeds
        heading = (
            f"INTERRUPTED after {stop.done} of {stop.planned} runs: the tables cover "
            f"{'seed' if len(done) == 1 else 'seeds'} {_span(done)} of {_span(seeds)}, "
            "those every policy finished"
        )
        _print_comparison(scenario, stop.partial, heading)
        raise KeyboardInterrupt(f"{stop}, nothing written") from None
    _print_comparison(scenario, comparison)  # before the files, as for run
    _writing(out, args)
    with outputs.staged(out) as stage:
        comparison.write(stage / "compare.json")
        report.write_compare_report(stage)
    path = out / "report.html"
    _show(f"wrote {out / 'compare.json'}, {path}")
    return 0


def cmd_trace(args: argparse.Namespace) -> int:
    """Write the synthetic trace of a scenario and seed."""
    scenario = _load_arrivals(args.scenario)
    out = Path(args.out)
    if out.suffix.lower() not in TRACE_SUFFIXES:
        raise UsageError(f"--out: {args.out} must end in .csv or .jsonl")
    calls = generate_trace(scenario, args.seed)
    with outputs.staged_file(out) as stage:
        write_trace(stage, calls)
    _show(f"wrote {len(calls)} calls to {out}")
    return 0


def _replay_inputs(args: argparse.Namespace) -> tuple[Scenario, list[TraceCall]]:
    """The scenario (team and policy) and the calls: a scenario's own trace for the seed, or
    a trace file served by ``--scenario``'s team."""
    source = Path(args.source.partition("#")[0])
    if source.suffix.lower() in SCENARIO_SUFFIXES:
        if args.scenario:
            raise UsageError("--scenario: only with a trace file (a scenario brings its own team)")
        scenario = _load_arrivals(args.source)
        return scenario, generate_trace(scenario, _seed(args, scenario))
    if source.suffix.lower() not in TRACE_SUFFIXES:
        raise UsageError(f"TRACE_OR_SCENARIO: {source} is neither a scenario nor a trace file")
    if not args.scenario:
        raise UsageError(
            "--scenario: a trace has no agents; name the scenario whose team serves it"
        )
    scenario = _load(args.scenario)
    try:
        calls = read_trace(source)
    except FileNotFoundError:
        raise UsageError(f"trace: {source}: no such file") from None
    except ScenarioError as exc:
        raise UsageError(f"trace {source}: {exc}") from None
    return scenario, calls


REPLAY_FLAGS = {
    "tenant": "--tenant",
    "speed": "--speed",
    "max_calls": "--max-calls",
    "max_seconds": "--max-seconds",
    "drain_s": "--drain-seconds",
    "workers": "--workers",
}
"""``ReplayOptions`` fields -> the ``replay`` flags that set them."""


def _replay_options(args: argparse.Namespace, scenario: Scenario) -> ReplayOptions:
    """The replay's bounds from the flags; a bad one is a usage error naming its flag."""
    try:
        return ReplayOptions(
            target=args.target,
            tenant=args.tenant or "",
            speed=args.speed,
            max_calls=args.max_calls,
            max_seconds=args.max_seconds,
            drain_s=args.drain_seconds,
            workers=args.workers,
            seed=_seed(args, scenario),
            strategy=Strategy(_policy(args.policy)) if args.policy else None,
            compress_policy=not args.real_time_policy,
            allow_remote=args.allow_remote,
        )
    except OptionError as exc:
        raise UsageError(f"{REPLAY_FLAGS.get(exc.field, exc.field)}: {exc.problem}") from None


def cmd_replay(args: argparse.Namespace) -> int:
    """Send a trace to a running service; write replay.json (+ records.csv, report.html)."""
    try:
        check_target(args.target, allow_remote=args.allow_remote, option="--target")
        if args.admin_target:
            check_target(args.admin_target, allow_remote=args.allow_remote, option="--admin-target")
    except ReplayError as exc:
        raise UsageError(str(exc)) from None
    scenario, trace = _replay_inputs(args)
    if not trace:
        raise UsageError(f"{args.source}: no calls to replay")
    options = _replay_options(args, scenario)
    out = _out_dir(args.out, "replay", scenario.name)
    channel = grpc.insecure_channel(args.target)
    admin_channel = grpc.insecure_channel(args.admin_target) if args.admin_target else None
    try:
        try:
            grpc.channel_ready_future(channel).result(timeout=5)
        except grpc.FutureTimeoutError:
            print(f"error: no gRPC service answers at {args.target}", file=sys.stderr)
            return 1
        calls = sorted(trace, key=ARRIVAL_ORDER)[: options.max_calls]
        start = calls[0].arrival_s if calls else 0.0
        window = (options.max_seconds + options.drain_s) * options.speed
        replayer = Replayer(
            channel,
            agents_from_scenario(scenario, start, start + window),
            calls,
            options,
            policy=scenario.policy,
            admin_channel=admin_channel,
        )
        try:
            run = replayer.run(progress=not args.quiet)
        except ReplayError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    finally:
        channel.close()
        if admin_channel is not None:
            admin_channel.close()
    if not args.quiet:
        status("computing KPIs")
    kpis, records = replay_kpis(run, scenario)
    summary = summarize_replay(run, kpis)
    _show(console.replay_text(summary))  # before the files, as for run
    _writing(out, args)
    with outputs.staged(out) as stage:
        text = json.dumps(summary, indent=2, allow_nan=False) + "\n"
        (stage / "replay.json").write_text(text)
        write_outputs(stage, kpis, records)
        report.write_run_report(
            stage, sla=scenario_sla(scenario), occupancy_cap=report.applied_cap(scenario.policy)
        )
    path = out / "report.html"
    _show(f"wrote {out / 'replay.json'}, {out / 'kpis.json'}, {out / 'records.csv'}, {path}")
    failed = summary["requests"]["errors"] or summary["calls"]["failed"]
    return 1 if failed else 0


MAX_ERLANG_AGENTS = 100_000
"""The largest pool ``erlang`` solves (the recursions take a step per agent)."""


def _finite(option: str, value: float, *, zero: bool = False) -> None:
    """Refuse ``value`` of ``option`` unless it is a finite number > 0 (``zero``: >= 0)."""
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        raise UsageError(
            f"{option}: must be a finite number {'>=' if zero else '>'} 0, not {value:g}"
        )


def _erlang_inputs(args: argparse.Namespace) -> float:
    """Check every ``erlang`` option before anything is printed; the rate per second."""
    rate = parse_rate(args.rate)
    _finite("--aht", args.aht)
    if not 1 <= args.agents <= MAX_ERLANG_AGENTS:
        raise UsageError(
            f"--agents: must be a whole number in 1..{MAX_ERLANG_AGENTS}, not {args.agents}"
        )
    _finite("--target", args.target, zero=True)
    if args.patience is not None:
        _finite("--patience", args.patience)
    return rate


def cmd_erlang(args: argparse.Namespace) -> int:
    """Print Erlang C (and Erlang A with --patience) figures for one staffing level."""
    rate = _erlang_inputs(args)
    load = rate * args.aht
    c = erlang_c(rate, args.aht, args.agents, args.target)
    rows = [["model", "P(wait)", "service level", "ASA", "P(abandon)"]]
    rows.append(
        [
            "Erlang C",
            console.pct(c.p_wait),
            console.pct(c.service_level),
            report.seconds(c.asa_s),
            "—",
        ]
    )
    if args.patience is not None:
        try:
            a = erlang_a(rate, args.aht, args.agents, args.target, args.patience)
        except ValueError as exc:
            raise UsageError(f"--patience: {exc}") from None
        rows.append(
            [
                f"Erlang A (patience {args.patience:g} s)",
                console.pct(a.p_wait),
                console.pct(a.service_level),
                report.seconds(a.asa_s),
                console.pct(a.p_abandon),
            ]
        )
    _show(
        f"{rate * 3600:g} calls/h, AHT {args.aht:g} s: offered load {load:.2f} Erlang on "
        f"{args.agents} agents (utilisation {load / args.agents:.1%}), target {args.target:g} s"
    )
    _show(console.table(rows))
    if load >= args.agents:
        _show("note: load >= agents, so without abandonment the queue grows without bound")
    return 0


_RATE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e-?[0-9]+)?)\s*(?:/\s*(s|sec|min|m|h|hr|hour))?\s*$")
_PER = {None: 1.0, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "hr": 3600.0}


def parse_rate(text: str) -> float:
    """Arrivals per second from ``0.05``, ``0.05/s``, ``3/min`` or ``180/h``."""
    match = _RATE.match(text.lower())
    if not match:
        raise UsageError(f"--rate: {text!r} is not a rate like 0.05, 3/min or 180/h")
    value = float(match.group(1)) / _PER.get(match.group(2), 3600.0)
    if not math.isfinite(value) or value <= 0:
        raise UsageError(f"--rate: must be a finite rate > 0, not {text!r}")
    return value


# --- scenario adapters -----------------------------------------------------------------------


def scenario_sla(scenario: Scenario) -> report.SlaTargets:
    """Per-channel (target s, goal) of the scenario."""
    return {ch.value: (t.target_s, t.goal) for ch, t in scenario.policy.sla.items()}


COMMANDS: Mapping[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run,
    "compare": cmd_compare,
    "trace": cmd_trace,
    "replay": cmd_replay,
    "erlang": cmd_erlang,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, run the command, map errors to exit codes."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logs.silence()
    handler = COMMANDS[args.command]
    started = time.monotonic()
    try:
        code = handler(args)
    # ScenarioError: a trace read late; OutputError: a file that could not be written
    except (UsageError, ScenarioError, outputs.OutputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # progress bars are closed (cleared) by now
        why = str(exc)  # Ctrl-C's own is empty; ours say what is left (outputs.Interrupted)
        print(f"interrupted; {why}" if why else "interrupted", file=sys.stderr)
        return 130
    if args.command in {"run", "compare", "replay"} and not args.quiet:
        print(f"({time.monotonic() - started:.1f} s)", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
