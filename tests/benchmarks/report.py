"""The benchmarks' HTML report: every target of the performance work next to its figures.

    .venv/bin/python -m tests.benchmarks.report bench-results/ [--out bench-results/report.html]

Reads the JSON documents that ``bench_assign``, ``bench_solver``, ``bench_simulator``,
``bench_admin`` and ``bench_tracing`` write with ``--json`` (``make bench`` and ``make
bench-quick`` write them to ``bench-results/``), and writes one self-contained page: a
verdict per target (met when every full-size figure measured for it meets it; a quick run's
figures are shown, not judged), a chart per target with each figure against the target
line, the Assign latency at each offered load, the solver's time per cell, tables of the
Assign, admin and tracing figures at every size, and the runs behind them (command line,
time, machine, commit).
"""

from __future__ import annotations

import argparse
import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.ticker import NullFormatter, ScalarFormatter

from simulations.plots import BLUE, GREEN, GREY, ORANGE, PALETTE, RED, figure, png, style
from simulations.report import img
from tests.benchmarks import bench_simulator, bench_solver, results

Row = dict[str, Any]
"""A record with its document's ``bench``, ``argv``, ``quick`` and place (``run``)."""


@dataclass(frozen=True, slots=True)
class Target:
    """One target: the figures that count for it and the bound they must meet."""

    name: str
    bound: float
    unit: str
    at_least: bool
    """The figure must be at least ``bound`` (else below it)."""
    matches: Callable[[Row], bool]
    value: Callable[[Row], float]
    label: Callable[[Row], str]
    limits: str = ""
    """What limits the figure (BENCHMARKS.md has the measurements behind it)."""

    def met(self, value: float) -> bool:
        """Whether ``value`` meets the target."""
        return value >= self.bound if self.at_least else value < self.bound

    def bound_text(self) -> str:
        """The bound as the targets are written: ``≥ 0.5``, ``< 10 ms``."""
        return f"{'≥' if self.at_least else '<'} {self.bound:g}{self.unit}"


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _deployed(row: Row) -> bool:
    """The service ran as its own process (``--server process``), as deployed: the runs
    with the service in the load generator's process share one interpreter with it, and
    show the clients' cost as much as the service's."""
    return row.get("server") == "process"


def _setup(row: Row) -> str:
    replicas = row.get("replicas", 1)
    where = "own process" if row.get("server") == "process" else "in the client's process"
    return f"{replicas} replica{'s' if replicas != 1 else ''}, {where}"


def _solver(calls: int, agents: int, bound_ms: float) -> Target:
    """The solver's p99 for ``calls`` waiting calls and ``agents`` agents."""
    return Target(
        f"Solver, {calls:,} calls x {agents:,} agents, p99",
        bound_ms,
        " ms",
        at_least=False,
        matches=lambda r: r["kind"] == "decision" and (r["calls"], r["agents"]) == (calls, agents),
        value=lambda r: r["p99_ms"],
        label=lambda r: _count(r["repeats"], "run"),
        limits="numpy's per-operation overhead"
        if agents <= 1000
        else "The flow model's size (calls x eligible agents).",
    )


def _simulator(policy: str, bound: float) -> Target:
    """Our simulator's calls/s with ``policy`` over Ciw's."""
    return Target(
        f"Simulator, {policy} ÷ Ciw's calls/s",
        bound,
        "x",
        at_least=True,
        matches=lambda r: r["kind"] == "vs_ciw" and r["simulator"] == f"ours: {policy}",
        value=lambda r: r["ratio_to_ciw"],
        label=lambda r: _count(r["repeats"], "repeat"),
        limits="Object creation per call and the collector's walks over them"
        + ("." if policy == "longest-idle" else ", and the balanced choice per call."),
    )


TARGETS = (
    Target(
        "Assign saturation throughput ÷ no-op RPC rate, 1,000 agents, the service as deployed",
        0.5,
        "",
        at_least=True,
        matches=lambda r: _deployed(r) and r["kind"] == "saturation" and r["agents"] == 1000,
        value=lambda r: r["ratio_to_noop"],
        label=_setup,
        limits="A pair (two RPCs) costs the service 13-16 no-op RPCs' worth of CPU, its routing"
        " alone six or seven; a faster machine or server moves both sides alike.",
    ),
    Target(
        "Assign p99 at 300 Assign+Complete pairs/s, 1,000 agents, the service as deployed",
        10.0,
        " ms",
        at_least=False,
        matches=lambda r: (
            _deployed(r)
            and r["kind"] == "fixed_load"
            and r["agents"] == 1000
            and r["offered_per_s"] == 300
        ),
        value=lambda r: r["p99_ms"],
        label=_setup,
        limits="The slowest 1 % queue in bursts when the 2 cores near full; the service's CPU"
        " per pair, about half of it the routing.",
    ),
    # The benchmarks' own targets, which they print their verdicts against.
    *(_solver(calls, agents, bound) for (calls, agents), bound in bench_solver.TARGETS.items()),
    *(
        _simulator(tool.removeprefix("ours: "), bound)
        for tool, bound in bench_simulator.TARGETS.items()
    ),
    Target(
        "The 1,000-agent day, wall time",
        bench_simulator.DAY_TARGET_S,
        " s",
        at_least=False,
        matches=lambda r: r["kind"] == "day",
        value=lambda r: r["wall_s"],
        label=lambda r: f"{r['calls']:,} calls",
        limits="The event loop's per-event work (shortlists, eligibility passes).",
    ),
)


def rows_of(documents: Sequence[dict[str, Any]]) -> list[Row]:
    """Every record, with its document's ``bench``, ``argv``, ``quick`` and place in
    ``documents`` (``run``, from 1: the runs table's order)."""
    return [
        {
            **record,
            "bench": document["bench"],
            "argv": document["argv"],
            "quick": document["quick"],
            "run": run,
        }
        for run, document in enumerate(documents, 1)
        for record in document["records"]
    ]


def verdict(target: Target, rows: Sequence[Row]) -> str:
    """``met``, ``missed``, ``mixed`` (some figures meet it) or ``not measured``, from the
    full-size figures; ``smoke run only`` when only quick runs measured it."""
    matching = [r for r in rows if target.matches(r)]
    met = [target.met(target.value(r)) for r in matching if not r["quick"]]
    if not met:
        return "smoke run only" if matching else "not measured"
    return "met" if all(met) else "missed" if not any(met) else "mixed"


def target_chart(target: Target, rows: Sequence[Row]) -> str:
    """Each figure of ``target`` as a bar (green: meets it, red: not, grey: a quick run's),
    the bound as a dashed line."""
    picked = [r for r in rows if target.matches(r)]
    fig = figure(6.4, 0.5 + 0.35 * max(len(picked), 1))
    ax = fig.add_subplot()
    values = [target.value(r) for r in picked]
    labels = [
        f"run {r['run']}: {target.label(r)}{' (quick)' if r['quick'] else ''}" for r in picked
    ]
    ax.barh(
        range(len(values)),
        values,
        color=[
            GREY if r["quick"] else GREEN if target.met(v) else RED
            for r, v in zip(picked, values, strict=True)
        ],
        height=0.6,
    )
    ax.set_yticks(range(len(values)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.axvline(target.bound, color=GREY, linestyle="--", linewidth=1.2)
    ax.set_xlabel(f"{target.name} (target {target.bound_text()})", fontsize=8)
    ax.set_xlim(0, max([*values, target.bound]) * 1.15)
    style(ax)
    return img(png(fig), target.name)


def latency_chart(rows: Sequence[Row]) -> str | None:
    """Assign p50 and p99 at each offered load, a line per run, team size and setup."""
    loads = [r for r in rows if r["kind"] == "fixed_load"]
    if not loads:
        return None
    fig = figure(6.4, 3.2)
    ax = fig.add_subplot()
    series: dict[str, list[Row]] = {}
    for r in loads:
        series.setdefault(f"run {r['run']}: {r['agents']:,} agents, {_setup(r)}", []).append(r)
    for k, (name, points) in enumerate(series.items()):
        points.sort(key=lambda r: r["offered_per_s"])
        x = [r["offered_per_s"] for r in points]
        colour = PALETTE[k % len(PALETTE)]
        ax.plot(x, [r["p99_ms"] for r in points], marker="o", color=colour, label=f"p99, {name}")
        ax.plot(
            x,
            [r["p50_ms"] for r in points],
            marker=".",
            linestyle=":",
            color=colour,
            label=f"p50, {name}",
        )
    ax.axhline(10, color=GREY, linestyle="--", linewidth=1.2)
    ax.set_xlabel("offered Assign+Complete pairs/s", fontsize=8)
    ax.set_ylabel("Assign latency, ms", fontsize=8)
    ax.set_ylim(0, max([10.0, *(r["p99_ms"] for r in loads)]) * 1.1)
    ax.legend(fontsize=7)
    style(ax)
    return img(png(fig), "Assign latency by offered load")


def solver_chart(rows: Sequence[Row]) -> str | None:
    """The solver's median and p99 per cell (calls x agents), log scale."""
    cells = sorted(
        (r for r in rows if r["kind"] == "decision"), key=lambda r: (r["calls"], r["agents"])
    )
    if not cells:
        return None
    fig = figure(6.4, 3.0)
    ax = fig.add_subplot()
    names = [f"{r['calls']:,}x{r['agents']:,}" for r in cells]
    at = range(len(cells))
    ax.bar([i - 0.2 for i in at], [r["median_ms"] for r in cells], 0.4, color=BLUE, label="median")
    ax.bar([i + 0.2 for i in at], [r["p99_ms"] for r in cells], 0.4, color=ORANGE, label="p99")
    for i, r in enumerate(cells):
        if r.get("target_p99_ms"):
            ax.hlines(r["target_p99_ms"], i - 0.45, i + 0.45, colors=GREY, linestyles="--")
    ax.set_xticks(list(at), names, fontsize=7, rotation=45)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylabel("decision time, ms", fontsize=8)
    ax.legend(fontsize=7)
    style(ax)
    return img(png(fig), "the solver's time per cell")


Column = tuple[str, str]
"""A table column: its heading and the record's key that fills it (``setup``: replicas and
where the service ran)."""

_RUN_AND_SIZE: tuple[Column, ...] = (("run", "run"), ("agents", "agents"))

TABLES: tuple[tuple[str, str, tuple[Column, ...]], ...] = (
    (
        "Assign saturation by team size (8 client threads)",
        "saturation",
        (
            *_RUN_AND_SIZE,
            ("setup", "setup"),
            ("no-op RPCs/s", "noop_per_s"),
            ("Assign+Complete pairs/s", "pairs_per_s"),
            ("÷ no-op RPC rate", "ratio_to_noop"),
            ("sequential no-op p50, ms", "noop_p50_ms"),
            ("sequential Assign p50, ms", "assign_p50_ms"),
            ("sequential Assign p99, ms", "assign_p99_ms"),
        ),
    ),
    (
        "Assign at fixed offered loads",
        "fixed_load",
        (
            *_RUN_AND_SIZE,
            ("setup", "setup"),
            ("offered pairs/s", "offered_per_s"),
            ("completed pairs/s", "completed_per_s"),
            ("dropped", "dropped"),
            ("p50, ms", "p50_ms"),
            ("p99, ms", "p99_ms"),
            ("max, ms", "max_ms"),
        ),
    ),
    (
        "Tracing's cost: the service's CPU per pair, tracing off and on, in rounds",
        "tracing",
        (
            *_RUN_AND_SIZE,
            ("offered pairs/s", "offered_per_s"),
            ("round", "round"),
            ("tracing", "mode"),
            ("service CPU per pair, ms", "cpu_ms_per_pair"),
            ("÷ off, same round", "ratio_to_off"),
        ),
    ),
    (
        "Admin writes under Assign load",
        "admin",
        (
            *_RUN_AND_SIZE,
            ("phase", "phase"),
            ("updates/s", "updates_per_s"),
            ("update p99, ms", "update_p99_ms"),
            ("Assign+Complete pairs/s", "pairs_per_s"),
            ("Assign p99, ms", "assign_p99_ms"),
            ("errors", "errors"),
        ),
    ),
)
"""The figures without a target of their own, a table per kind of record."""


def _number(value: object, digits: int) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}" if abs(value) < 1000 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _cell(row: Row, key: str, heading: str) -> str:
    """A table cell's text (``-`` where a document lacks the figure; rates without
    decimals)."""
    value = _setup(row) if key == "setup" else row.get(key)
    return _number(value, 0 if heading.endswith("/s") else 2)


def tables(rows: Sequence[Row]) -> str:
    """``TABLES`` for the kinds of records present."""
    out = []
    for title, kind, columns in TABLES:
        picked = [r for r in rows if r["kind"] == kind]
        if not picked:
            continue
        head = "".join(f"<th>{_e(name)}</th>" for name, _ in columns)
        body = "".join(
            "<tr>"
            + "".join(f"<td>{_e(_cell(r, key, name))}</td>" for name, key in columns)
            + "</tr>"
            for r in picked
        )
        out.append(f"<h3>{_e(title)}</h3><table><tr>{head}</tr>{body}</table>")
    return "".join(out)


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _figures(target: Target, rows: Sequence[Row]) -> str:
    values = [
        f"{target.value(r):.3g}{target.unit} ({target.label(r)}{', quick' if r['quick'] else ''})"
        for r in rows
        if target.matches(r)
    ]
    return "; ".join(values) or "-"


_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:72rem}
table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ddd;padding:.3rem .6rem;
text-align:left;font-size:.9rem;vertical-align:top}th{background:#f4f5f7}
.met{color:#2e8b57;font-weight:600}.missed{color:#c0392b;font-weight:600}
.mixed{color:#e08a1e;font-weight:600}.sub{color:#666}code{font-size:.85rem}
"""


def page(documents: Sequence[dict[str, Any]]) -> str:
    """The whole report for ``documents``."""
    rows = rows_of(documents)
    table = "".join(
        f"<tr><td>{_e(t.name)}</td><td>{_e(t.bound_text())}</td>"
        f"<td>{_e(_figures(t, rows))}</td><td>{_e(t.limits)}</td>"
        f'<td class="{verdict(t, rows).split()[0]}">{_e(verdict(t, rows))}</td></tr>'
        for t in TARGETS
    )
    charts = "".join(
        f"<h3>{_e(t.name)}</h3>{target_chart(t, rows)}"
        for t in TARGETS
        if any(t.matches(r) for r in rows)
    )
    extra = [
        ("Assign latency by offered load (dashed: 10 ms)", latency_chart(rows)),
        ("The solver per cell (dashed: the targets)", solver_chart(rows)),
    ]
    charts += "".join(f"<h3>{_e(title)}</h3>{img}" for title, img in extra if img)
    runs = "".join(
        f"<tr><td>{run}</td><td>{_e(d['bench'])}</td>"
        f"<td><code>{_e(' '.join(d['argv']))}</code></td>"
        f"<td>{_e(d['finished'])}{' (quick)' if d['quick'] else ''}</td>"
        f"<td>{_e(_machine(d['machine']))}</td>"
        f"<td>{_e(d['machine'].get('commit') or '-')}</td></tr>"
        for run, d in enumerate(documents, 1)
    )
    newest = max((d["finished"] for d in documents), default="-")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>Benchmarks</title><style>{_CSS}</style></head><body>"
        f'<h1>Benchmarks against the performance targets</h1><p class="sub">Latest run '
        f"{_e(newest)} UTC. A target is met when every full-size figure measured for it meets it "
        "(a quick run's figures are shown, not judged). "
        "Times on a shared machine drift: compare figures of one run, and see "
        "BENCHMARKS.md for what limits each one.</p>"
        "<table><tr><th>target</th><th>bound</th><th>figures</th><th>what limits it</th>"
        "<th>verdict</th></tr>"
        f"{table}</table><h2>Charts</h2>{charts}<h2>Figures</h2>{tables(rows)}<h2>Runs</h2>"
        "<table><tr><th>run</th><th>benchmark</th><th>arguments</th><th>finished</th><th>machine</th>"
        f"<th>commit</th></tr>{runs}</table></body></html>\n"
    )


def _machine(machine: dict[str, Any]) -> str:
    libraries = ", ".join(f"{k} {v}" for k, v in machine.get("libraries", {}).items())
    return (
        f"{machine.get('processor', '?')}, {machine.get('cores', '?')} cores, Python "
        f"{machine.get('python', '?')}; {libraries}"
    )


def _inputs(paths: Sequence[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        found.extend(sorted(path.glob("*.json")) if path.is_dir() else [path])
    return found


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments, read the documents, write the page."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "inputs", nargs="+", type=Path, help="JSON documents (--json), or folders of them"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("bench-results/report.html"), help="the page to write"
    )
    args = parser.parse_args(argv)
    missing = [str(path) for path in args.inputs if not path.exists()]
    if missing:
        parser.error(f"not found: {', '.join(missing)}")
    paths = _inputs(args.inputs)
    if not paths:
        parser.error("no JSON documents found")
    documents = results.read(paths)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(page(documents))
    rows = rows_of(documents)
    for target in TARGETS:
        print(f"{verdict(target, rows):>14}  {target.name} ({target.bound_text()})")
    print(f"wrote {args.out} from {len(documents)} documents")


if __name__ == "__main__":
    main()
