"""Self-contained HTML reports: one for a run (``kpis.json`` + ``records.csv``), one for a
policy comparison (``compare.json``).

Everything is inline (CSS, charts as base64 PNGs), so the file can be mailed or attached to
a ticket and opens anywhere without a network. Every section says in one line what it
means for the floor, so a manager can read it without knowing the KPIs' definitions.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from router.domain import DEFAULT_SLA, Policy
from simulations import plots

SlaTargets = Mapping[str, tuple[float, float]]
"""Channel -> (target seconds, goal fraction), e.g. ``{"voice": (20, 0.8)}``."""

DEFAULT_TARGETS: SlaTargets = {ch.value: (t.target_s, t.goal) for ch, t in DEFAULT_SLA.items()}

_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2430;
 margin:0;background:#f5f6f8}
main{max-width:1180px;margin:0 auto;padding:24px}
h1{font-size:26px;margin:0 0 4px}h2{font-size:19px;margin:0 0 4px}
.sub{color:#5b6472;margin:0 0 20px}
section{background:#fff;border-radius:10px;padding:18px 20px;margin:0 0 18px;
 box-shadow:0 1px 2px rgba(0,0,0,.06)}
.what{color:#3d4654;margin:2px 0 12px;font-style:italic}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(190px,1fr));gap:12px}
.card{border:1px solid #e3e5e8;border-radius:8px;padding:10px 12px;background:#fff}
.card .label{font-size:12px;color:#5b6472;text-transform:uppercase;letter-spacing:.03em}
.card .value{font-size:26px;font-weight:600;margin:2px 0}
.card .note{font-size:12px;color:#5b6472}
.good{border-left:5px solid #2e8b57}.bad{border-left:5px solid #c0392b}
.neutral{border-left:5px solid #8a8f98}
img{max-width:100%;height:auto;display:block;margin:6px 0}
table{border-collapse:collapse;width:100%;font-size:14px}
th,td{padding:6px 8px;border-bottom:1px solid #e3e5e8;text-align:right}
th:first-child,td:first-child{text-align:left}
td.better{font-weight:700;color:#1f6f43}td.worse{font-weight:700;color:#c0392b}
.small{font-size:12px;color:#5b6472}
"""


# --- formatting ------------------------------------------------------------------------------


def _num(value: Any) -> float | None:
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return None if math.isnan(float(value)) else float(value)


def pct(value: Any, digits: int = 1) -> str:
    """``0.823`` -> ``82.3 %``; unknown -> an em dash."""
    v = _num(value)
    return "—" if v is None else f"{v * 100:.{digits}f} %"


def seconds(value: Any) -> str:
    """A duration in the unit a person would use: ``12 s``, ``3.5 min``, ``2.1 h``."""
    v = _num(value)
    if v is None:
        return "—"
    if math.isinf(v):
        return "never" if v > 0 else "—"
    if v >= 2 * 3600:
        return f"{v / 3600:.1f} h"
    if v >= 120:
        return f"{v / 60:.1f} min"
    return f"{v:.1f} s" if v < 10 else f"{v:.0f} s"


def fmt(value: Any, unit: str) -> str:
    """A KPI value in its unit: ``%`` (fraction), ``s`` (duration) or a plain number."""
    if unit == "%":
        return pct(value)
    if unit == "s":
        return seconds(value)
    v = _num(value)
    return "—" if v is None else f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"


def limits(metric: Mapping[str, Any]) -> tuple[float, float]:
    """The values a compared KPI can take: its ``range`` in compare.json (``null``: no
    bound), else by its unit (``%`` 0..1, ``s`` from 0)."""
    given = metric.get("range")
    if isinstance(given, Sequence) and len(given) == 2:
        low, high = _num(given[0]), _num(given[1])
        return (-math.inf if low is None else low, math.inf if high is None else high)
    return {"%": (0.0, 1.0), "s": (0.0, math.inf)}.get(
        metric.get("unit", ""), (-math.inf, math.inf)
    )


def interval(summary: Mapping[str, Any], unit: str, bounds: tuple[float, float]) -> str:
    """A mean and its interval: ``mean ± half-width``, or, when the interval crosses the
    ``bounds`` the KPI lives in, ``mean (low to high)`` with the interval cut to them."""
    mean, half = _num(summary.get("mean")), _num(summary.get("half_width"))
    text = fmt(mean, unit)
    if mean is None or half is None or half <= 0:
        return text
    low, high = mean - half, mean + half
    if low >= bounds[0] and high <= bounds[1]:
        return f"{text} ± {fmt(half, unit)}"
    return f"{text} ({fmt(max(low, bounds[0]), unit)} to {fmt(min(high, bounds[1]), unit)})"


def signed(value: Any, unit: str) -> str:
    """A difference with its sign: ``+2.1 pts`` (percentage points), ``-3.5 s``, ``+0.012``."""
    v = _num(value)
    if v is None:
        return "—"
    if unit == "%":
        return f"{v * 100:+.1f} pts"
    if unit == "s":
        return f"{'-' if v < 0 else '+'}{seconds(abs(v))}"
    return f"{v:+.3f}" if abs(v) < 10 else f"{v:+.1f}"


def difference(paired: Mapping[str, Any], unit: str) -> str:
    """A paired difference from the baseline with its interval and, when the interval
    excludes zero, its verdict: ``+2.1 pts (+0.5 pts to +3.7 pts), better``; the same on
    every seed: ``+0.0 pts on every seed``."""
    text = signed(paired.get("mean"), unit)
    low, high = _num(paired.get("ci_low")), _num(paired.get("ci_high"))
    if low is not None and high is not None:
        same = _num(paired.get("half_width")) == 0
        text += " on every seed" if same else f" ({signed(low, unit)} to {signed(high, unit)})"
    if paired.get("verdict") not in {None, "no clear difference"}:
        text += f", {paired['verdict']}"
    return text


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def img(png: bytes, alt: str) -> str:
    """An ``<img>`` carrying ``png`` inline (the page stays one self-contained file)."""
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _card(label: str, value: str, note: str = "", tone: str = "neutral") -> str:
    return (
        f'<div class="card {tone}"><div class="label">{_e(label)}</div>'
        f'<div class="value">{_e(value)}</div><div class="note">{_e(note)}</div></div>'
    )


def _section(title: str, what: str, body: str) -> str:
    return f'<section><h2>{_e(title)}</h2><p class="what">{_e(what)}</p>{body}</section>'


def _page(title: str, subtitle: str, sections: Sequence[str]) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body><main>"
        f'<h1>{_e(title)}</h1><p class="sub">{_e(subtitle)}</p>'
        + "".join(sections)
        + "</main></body></html>\n"
    )


# --- run report ------------------------------------------------------------------------------


def read_records(path: Path) -> list[dict[str, str]]:
    """The rows of ``records.csv`` as strings (parsed where used)."""
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _truthy(text: str | None) -> bool:
    return (text or "").strip().lower() in {"1", "true", "yes", "y", "t"}


def _float(text: str | None) -> float | None:
    try:
        value = float(text) if text not in (None, "") else None
    except ValueError:
        return None
    return None if value is None or math.isnan(value) else value


def targets_for(channels: Sequence[str], sla: SlaTargets | None) -> SlaTargets:
    """SLA targets for ``channels``: the given ones, else the router's defaults."""
    given = sla or {}
    return {ch: given.get(ch) or DEFAULT_TARGETS.get(ch, (0.0, 0.8)) for ch in channels}


def _cards(kpis: Mapping[str, Any], targets: SlaTargets) -> str:
    cards: list[str] = []
    for name, figures in kpis.get("channels", {}).items():
        target_s, goal = targets.get(name, (0.0, 0.8))
        sl = _num(figures.get("service_level"))
        tone = "neutral" if sl is None else "good" if sl >= goal else "bad"
        note = f"goal {pct(goal, 0)} within {seconds(target_s)}; {figures.get('offered', 0)} calls"
        cards.append(_card(f"Service level · {name}", pct(sl), note, tone))
    overall = kpis.get("overall", {})
    cards.append(
        _card(
            "Average speed of answer",
            seconds(overall.get("asa_s")),
            f"90 % answered within {seconds(overall.get('wait_p90_s'))}",
        )
    )
    abandon = _num(overall.get("abandon_rate"))
    cards.append(
        _card(
            "Abandonment",
            pct(abandon),
            f"{overall.get('abandoned', 0)} callers hung up",
            "neutral" if abandon is None else "good" if abandon <= 0.05 else "bad",
        )
    )
    if "expired" in overall:  # the policy sets a queue time limit
        expire = _num(overall.get("expire_rate"))
        cards.append(
            _card(
                "Expired",
                pct(expire),
                f"{overall.get('expired', 0)} calls reached the queue time limit (a miss)",
                "neutral" if expire is None else "good" if expire <= 0.05 else "bad",
            )
        )
    fair = kpis.get("fairness", {})
    cards.append(
        _card(
            "Occupancy",
            pct(fair.get("occupancy_mean")),
            f"spread ± {pct(fair.get('occupancy_std'))} between agents",
        )
    )
    gini = _num(fair.get("occupancy_gini"))
    cards.append(
        _card(
            "Fairness (Gini of occupancy)",
            fmt(gini, ""),
            f"0 = perfectly even; calls-per-agent Gini {fmt(fair.get('handled_gini'), '')}",
            "neutral" if gini is None else "good" if gini <= 0.1 else "bad",
        )
    )
    top = kpis.get("top_performers", {})
    if top:
        cards.append(
            _card(
                "Top performers' share",
                pct(top.get("share_of_calls")),
                f"of all answered calls; mean occupancy {pct(top.get('mean_occupancy'))}",
            )
        )
        cards.append(
            _card(
                "Top performers' peak",
                pct(top.get("peak_occupancy")),
                "highest rolling-window occupancy of any top performer",
            )
        )
    quality = kpis.get("quality", {})
    if _num(quality.get("estimated_csat")) is not None:
        cards.append(
            _card(
                "Estimated CSAT",
                f"{_num(quality.get('estimated_csat')):.2f}",
                f"1-5 scale; skill match {fmt(quality.get('skill_match_mean'), '')}",
            )
        )
    return f'<div class="cards">{"".join(cards)}</div>'


def measured_window(kpis: Mapping[str, Any]) -> tuple[float, float]:
    """``[warmup_s, duration_s)``: the arrivals the KPIs count (all, when unknown)."""
    start = _num(kpis.get("warmup_s")) or 0.0
    end = _num(kpis.get("duration_s"))
    return start, math.inf if end is None else end


def _channel_waits(
    name: str, rows: Sequence[Mapping[str, str]], target: float | None
) -> plots.ChannelWaits:
    """The waits of ``rows`` (one channel's measured calls), each call drawn once by its
    first outcome as the KPIs count it: answered when it has an answer time (its wait runs
    to that answer), else abandoned, expired, or still waiting at the end."""
    answered: list[float] = []
    abandoned: list[float] = []
    expired: list[float] = []
    waiting: list[float] = []
    for row in rows:
        wait = _float(row.get("wait_s"))
        if wait is None:
            continue
        if _float(row.get("answered_s")) is not None:
            answered.append(wait)
        elif _truthy(row.get("abandoned")):
            abandoned.append(wait)
        elif _truthy(row.get("expired")):
            expired.append(wait)
        else:
            waiting.append(wait)
    return plots.ChannelWaits(name, answered, abandoned, target, expired, waiting)


def _wait_section(
    kpis: Mapping[str, Any], records: Sequence[Mapping[str, str]], targets: SlaTargets
) -> str:
    start, end = measured_window(kpis)
    measured = [r for r in records if start <= (_float(r.get("arrival_s")) or 0.0) < end]
    names = list(kpis.get("channels", {})) or sorted({r.get("channel", "") for r in measured})
    channels = [
        _channel_waits(
            name,
            [r for r in measured if r.get("channel") == name],
            targets.get(name, (0.0, 0.8))[0] or None,
        )
        for name in names
    ]
    if not any(ch.answered or ch.abandoned or ch.expired or ch.waiting for ch in channels):
        body = "<p>No calls were recorded.</p>"
    else:
        body = img(plots.wait_distribution(channels), "wait-time distribution per channel")
    overall = kpis.get("overall", {})
    what = (
        f"How long callers waited for an agent. Of the answered calls, half waited at most "
        f"{seconds(overall.get('wait_p50_s'))}, 90 % at most "
        f"{seconds(overall.get('wait_p90_s'))} and 99 % at most "
        f"{seconds(overall.get('wait_p99_s'))}. Bars right of the red line missed the target; "
        "the green line is the share of all calls answered within each wait. Calls arriving "
        "in the warm-up are left out, as in the KPIs."
    )
    return _section("Wait-time distribution", what, body)


def _at(values: Sequence[Any], k: int) -> bool:
    return k < len(values) and bool(values[k])


def clock(at_s: float) -> str:
    """Simulated seconds as a time of day: ``07:45``, or ``1d 07:45`` on a later day."""
    day, rest = divmod(int(at_s), 86400)
    text = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}"
    return f"{day}d {text}" if day else text


def _timeline_section(kpis: Mapping[str, Any], targets: SlaTargets) -> str:
    tl = kpis.get("timeline", {})
    bucket = _num(tl.get("bucket_s"))
    arrivals = list(tl.get("arrivals", []))
    if not bucket or not arrivals:
        return _section("Service level through the day", "No timeline was recorded.", "")
    # One goal line: the goal most channels share (80 % for all but email by default).
    goals = Counter(goal for _, goal in targets.values()).most_common(1)
    goal = goals[0][0] if goals else None
    sl = [_num(v) for v in tl.get("service_level", [])]
    queue = list(tl.get("queue_max", []))
    occupancy = list(tl.get("occupancy_mean", []))
    # Skip the empty hours before anything happens (a centre opening at 07:00, a replay
    # of the afternoon): nothing arrives, nobody is logged in, nobody waits.
    first = next(
        (k for k in range(len(arrivals)) if arrivals[k] or _at(queue, k) or _at(occupancy, k)),
        0,
    )
    start, end = measured_window(kpis)  # the worst slice among those the KPIs measure
    worst = min(
        ((v, k) for k, v in enumerate(sl) if v is not None and start <= k * bucket < end),
        default=None,
        key=lambda p: p[0],
    )
    dip = (
        f" The worst {seconds(bucket)} starts at {clock(worst[1] * bucket)}, at "
        f"{pct(worst[0], 0)} answered in time."
        if worst
        else ""
    )
    png = plots.timeline(
        bucket,
        arrivals=arrivals[first:],
        queue_max=queue[first:],
        service_level=sl[first:],
        occupancy_mean=occupancy[first:],
        goal=goal,
        warmup_s=_num(kpis.get("warmup_s")) or 0.0,
        first_bucket=first,
    )
    what = (
        f"Each point is a {seconds(bucket)} slice: when demand peaks, queues build and the "
        f"service level dips below the goal line unless staffing follows.{dip}"
    )
    return _section("Service level through the day", what, img(png, "timeline"))


def applied_cap(policy: Policy) -> float | None:
    """The occupancy cap the engine applied to ``policy``'s day: none without an occupancy
    window (``occupancy_window_s`` 0 measures no occupancy, so caps nothing)."""
    return policy.max_occupancy if policy.occupancy_window_s > 0 else None


def _agent_sections(kpis: Mapping[str, Any], occupancy_cap: float | None) -> list[str]:
    agents: Mapping[str, Mapping[str, Any]] = kpis.get("agents", {})
    if not agents:
        return [_section("Agents", "No agent figures were recorded.", "")]
    ids = list(agents)
    top = [bool(agents[a].get("top_performer")) for a in ids]
    occupancy = [_num(agents[a].get("occupancy")) or 0.0 for a in ids]
    peaks = [_num(agents[a].get("peak_occupancy")) or 0.0 for a in ids]
    handled = [_num(agents[a].get("handled")) or 0.0 for a in ids]
    over = sum(1 for p in peaks if occupancy_cap is not None and p > occupancy_cap + 1e-9)
    cap_note = (
        f" {over} agent(s) peaked above the {pct(occupancy_cap, 0)} cap."
        if occupancy_cap is not None
        else ""
    )
    occ_png = plots.per_agent(
        ids,
        occupancy,
        top,
        ylabel="occupancy over the day (%)",
        percent=True,
        cap=occupancy_cap,
        peaks=peaks,
    )
    fair = kpis.get("fairness", {})
    occ = _section(
        "Occupancy per agent",
        "Share of logged-in time each agent spent on calls, busiest first; orange bars are top "
        f"performers, ticks their busiest rolling window. A flat profile is a fair floor "
        f"(spread ± {pct(fair.get('occupancy_std'))}).{cap_note}",
        img(occ_png, "occupancy per agent"),
    )
    calls_png = plots.per_agent(ids, handled, top, ylabel="calls handled", percent=False)
    share = kpis.get("top_performers", {}).get("share_of_calls")
    n_top = sum(top)
    calls = _section(
        "Calls per agent",
        f"How many calls each agent took. The {n_top} top performer(s) took {pct(share)} of "
        f"answered calls: more than their head-count share is expected, burnout is not.",
        img(calls_png, "calls per agent"),
    )
    return [occ, calls]


def run_report_html(
    kpis: Mapping[str, Any],
    records: Sequence[Mapping[str, str]],
    *,
    sla: SlaTargets | None = None,
    occupancy_cap: float | None = 0.85,
) -> str:
    """The HTML of a run report (``sla``: per-channel targets; ``occupancy_cap``: the
    policy's cap drawn on the occupancy chart, ``None`` for no line)."""
    targets = targets_for(list(kpis.get("channels", {})), sla)
    overall = kpis.get("overall", {})
    title = f"Routing simulation · {kpis.get('scenario', 'scenario')}"
    subtitle = (
        f"policy {kpis.get('policy', '?')} · seed {kpis.get('seed', '?')} · "
        f"{seconds(kpis.get('duration_s'))} simulated · {overall.get('offered', 0)} calls, "
        f"{overall.get('answered', 0)} answered, {overall.get('abandoned', 0)} abandoned"
        + (f", {overall.get('expired', 0)} expired" if "expired" in overall else "")
    )
    headline = _section(
        "Headline",
        "Green meets its goal, red misses it. Service level is the share of calls answered "
        "within the channel's target time.",
        _cards(kpis, targets),
    )
    sections = [
        headline,
        _wait_section(kpis, records, targets),
        _timeline_section(kpis, targets),
        *_agent_sections(kpis, occupancy_cap),
    ]
    return _page(title, subtitle, sections)


def write_run_report(
    out_dir: Path, *, sla: SlaTargets | None = None, occupancy_cap: float | None = 0.85
) -> Path:
    """Read ``kpis.json`` and ``records.csv`` in ``out_dir``, write ``report.html`` there."""
    kpis = json.loads((out_dir / "kpis.json").read_text())
    records = read_records(out_dir / "records.csv")
    path = out_dir / "report.html"
    path.write_text(run_report_html(kpis, records, sla=sla, occupancy_cap=occupancy_cap))
    return path


# --- comparison report -----------------------------------------------------------------------


def _bars(metric: Mapping[str, Any], policies: Sequence[str]) -> list[plots.Bar]:
    """One bar per policy, its whisker the interval cut to the KPI's range."""
    low, high = limits(metric)
    out = []
    for policy in policies:
        s = metric["policies"].get(policy, {})
        ci_low, ci_high = _num(s.get("ci_low")), _num(s.get("ci_high"))
        out.append(
            plots.Bar(
                policy,
                _num(s.get("mean")),
                None if ci_low is None else max(ci_low, low),
                None if ci_high is None else min(ci_high, high),
            )
        )
    return out


def _mark(metric: Mapping[str, Any], policy: str) -> str:
    """``better`` or ``worse`` when the policy's paired difference from the baseline is
    clear of zero in the KPI's good direction or against it, else ``""``."""
    found = metric.get("vs_baseline", {}).get(policy, {}).get("verdict")
    return found if found in {"better", "worse"} else ""


_ARROWS = {"higher": " ↑", "lower": " ↓"}


def _table(compare: Mapping[str, Any], policies: Sequence[str]) -> str:
    head = "".join(f"<th>{_e(p)}</th>" for p in policies)
    rows = []
    for metric in compare["metrics"].values():
        bounds = limits(metric)
        cells = [
            f'<td class="{_mark(metric, p)}">'
            f"{_e(interval(metric['policies'].get(p, {}), metric['unit'], bounds))}</td>"
            for p in policies
        ]
        arrow = _ARROWS.get(metric.get("better", ""), "")
        rows.append(f"<tr><td>{_e(metric['label'])}{arrow}</td>{''.join(cells)}</tr>")
    return (
        f"<table><thead><tr><th>KPI (↑ higher is better, ↓ lower)</th>{head}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _paired_table(compare: Mapping[str, Any], others: Sequence[str]) -> str:
    head = "".join(f"<th>{_e(p)}</th>" for p in others)
    rows = []
    for metric in compare["metrics"].values():
        versus = metric.get("vs_baseline", {})
        cells = [
            f'<td class="{_mark(metric, p)}">{_e(difference(versus.get(p, {}), metric["unit"]))}'
            "</td>"
            for p in others
        ]
        arrow = _ARROWS.get(metric.get("better", ""), "")
        rows.append(f"<tr><td>{_e(metric['label'])}{arrow}</td>{''.join(cells)}</tr>")
    return (
        f"<table><thead><tr><th>KPI: policy minus baseline</th>{head}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _paired_section(compare: Mapping[str, Any], policies: Sequence[str]) -> str | None:
    """The differences from the baseline, seed by seed (none for one policy or a
    compare.json without them)."""
    baseline = compare.get("baseline", policies[0])
    others = [p for p in policies if p != baseline]
    if not others or not any("vs_baseline" in m for m in compare["metrics"].values()):
        return None
    return _section(
        f"Difference from {baseline}",
        f"Each policy minus {baseline} on the same seeds (the same callers), averaged, with "
        "the 95 % interval of that paired difference. It is a clear difference only when "
        "the interval excludes zero: then the policy is better or worse than the baseline "
        "(marked in both tables); an unmarked one may be luck, and more seeds may tell.",
        _paired_table(compare, others),
    )


def compare_report_html(compare: Mapping[str, Any]) -> str:
    """The HTML of a comparison report from the content of ``compare.json``."""
    policies = list(compare["policies"])
    seeds = list(compare["seeds"])
    metrics: Mapping[str, Mapping[str, Any]] = compare["metrics"]
    baseline = compare.get("baseline", policies[0])
    title = f"Routing policies compared · {compare.get('scenario', 'scenario')}"
    subtitle = (
        f"{len(policies)} policies x {len(seeds)} seeds ({', '.join(map(str, seeds))}); "
        "the same callers under every policy; ± is the 95 % confidence interval (shown as a "
        "range where it would cross the KPI's limits, such as 0 % or 100 %)"
    )
    table = _section(
        "Summary",
        f"Mean over the seeds with its 95 % interval. Green bold: better than {baseline} "
        f"(the first policy); red: worse - only where the paired difference below is clear "
        "of zero. Each policy ran on the same callers, so policies are compared seed by "
        "seed: two intervals that overlap can still hide a clear difference, and a higher "
        "mean alone can be luck.",
        _table(compare, policies),
    )
    paired = _paired_section(compare, policies)
    warnings = [
        _section("Warning", "What the intervals below do not cover.", f"<p>{_e(note)}</p>")
        for note in compare.get("notes", ())
    ]
    sections = [*warnings, table] if paired is None else [*warnings, table, paired]
    channel_sl = {
        path.split(".")[1]: _bars(m, policies)
        for path, m in metrics.items()
        if path.startswith("channels.") and path.endswith(".service_level")
    }
    if len(channel_sl) > 1:  # one channel: the overall service level panel says it all
        png = plots.grouped_bars(channel_sl, policies, ylabel="service level (%)", percent=True)
        sections.append(
            _section(
                "Service level by channel",
                "Share of calls answered within each channel's target, per policy; whiskers "
                "are 95 % intervals.",
                img(png, "service level by channel and policy"),
            )
        )
    panels = [
        plots.Panel(m["label"], m["unit"], m["unit"] == "%", _bars(m, policies))
        for path, m in metrics.items()
        if not path.startswith("channels.")
    ]
    if panels:
        sections.append(
            _section(
                "Every KPI by policy",
                "Speed (ASA, waits, abandonment), fairness (spread and Gini of occupancy) and "
                "top-performer load side by side: a policy that wins on speed by overloading "
                "a few agents shows here.",
                img(plots.small_multiples(panels, policies), "KPIs by policy"),
            )
        )
    return _page(title, subtitle, sections)


def write_compare_report(out_dir: Path) -> Path:
    """Read ``compare.json`` in ``out_dir`` and write ``report.html`` next to it."""
    compare = json.loads((out_dir / "compare.json").read_text())
    path = out_dir / "report.html"
    path.write_text(compare_report_html(compare))
    return path
