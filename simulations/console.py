"""What the commands print: short, aligned text tables of KPIs and replay figures."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from simulations import report


def pct(value: Any) -> str:
    """A fraction as a percentage (an em dash when undefined)."""
    return report.pct(value)


def table(rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned first column, right-aligned others, a rule under the header row."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def kpi_table(kpis: Mapping[str, Any]) -> str:
    """The short per-channel table ``run`` and ``replay`` print (with an ``expired`` column
    when the policy sets a queue time limit)."""
    overall = kpis.get("overall", {})
    expiring = "expired" in overall
    rows = [["channel", "offered", "answered", "abandoned", "service level", "ASA", "p90 wait"]]
    if expiring:
        rows[0].insert(4, "expired")
    groups = [*kpis.get("channels", {}).items(), ("overall", overall)]
    for name, f in groups:
        row = [
            str(name),
            str(f.get("offered", 0)),
            str(f.get("answered", 0)),
            str(f.get("abandoned", 0)),
            pct(f.get("service_level")),
            report.seconds(f.get("asa_s")),
            report.seconds(f.get("wait_p90_s")),
        ]
        if expiring:
            row.insert(4, str(f.get("expired", 0)))
        rows.append(row)
    fair = kpis.get("fairness", {})
    top = kpis.get("top_performers", {})
    tail = (
        f"occupancy {pct(fair.get('occupancy_mean'))} ± {pct(fair.get('occupancy_std'))}, "
        f"Gini {report.fmt(fair.get('occupancy_gini'), '')}"
    )
    if top:
        tail += (
            f"; top performers take {pct(top.get('share_of_calls'))} of calls, "
            f"peak occupancy {pct(top.get('peak_occupancy'))}"
        )
    return table(rows) + "\n" + tail


def compare_table(compare: Mapping[str, Any]) -> str:
    """KPIs down, policies across: mean ± half-width of the 95 % interval (a range cut to the
    KPI's limits where it would cross them); then, with two policies or more, each one's
    paired difference from the baseline (the first), better or worse only where its
    interval excludes zero; then the comparison's warnings (``notes``: every call from
    trace files, say)."""
    policies = list(compare["policies"])
    rows = [["KPI", *policies]]
    for metric in compare["metrics"].values():
        bounds = report.limits(metric)
        cells = [report.interval(metric["policies"][p], metric["unit"], bounds) for p in policies]
        rows.append([metric["label"], *cells])
    seeds = len(compare["seeds"])
    if seeds < 2:
        text = table(rows) + "\n(one seed: the means of one run each, no confidence interval)"
    else:
        text = table(rows) + f"\n(mean ± 95 % confidence interval over {seeds} seeds)"
    paired = _paired_table(compare, policies)
    text = text if paired is None else f"{text}\n\n{paired}"
    warnings = [f"warning: {note}" for note in compare.get("notes", ())]
    return "\n".join([text, *warnings])


def _paired_table(compare: Mapping[str, Any], policies: Sequence[str]) -> str | None:
    """Each policy minus the baseline per KPI (``None``: one policy, or no differences)."""
    baseline = compare.get("baseline", policies[0])
    others = [p for p in policies if p != baseline]
    metrics = list(compare["metrics"].values())
    if not others or not any("vs_baseline" in m for m in metrics):
        return None
    rows = [[f"vs {baseline}", *others]]
    for metric in metrics:
        versus = metric.get("vs_baseline", {})
        rows.append(
            [
                metric["label"],
                *(report.difference(versus.get(p, {}), metric["unit"]) for p in others),
            ]
        )
    if len(compare.get("seeds", ())) < 2:  # no interval from one seed
        return table(rows) + f"\n(policy minus {baseline} on the same callers, one seed)"
    return table(rows) + (
        f"\n(policy minus {baseline} seed by seed, on the same callers: mean and 95 % "
        "interval; better or worse where the interval excludes 0, else no clear difference)"
    )


def policy_notes_text(summary: Mapping[str, Any]) -> list[str]:
    """The lines saying what the time compression of the policy clamped or rounded
    (``policy_notes``), under a heading; none when it changed nothing."""
    notes = summary.get("policy_notes") or []
    if not notes:
        return []
    head = (
        f"policy on the service at x{summary['speed']:g}: durations divided by the speed, "
        f"{len(notes)} changed to fit the service's limits:"
    )
    return [head, *(f"  {note}" for note in notes)]


def service_stats_text(summary: Mapping[str, Any]) -> list[str]:
    """The service's own GetStats at the end (``service_stats``), labelled as its real-time
    view, apart from the KPIs; none when it could not be read."""
    stats = summary.get("service_stats") or {}
    if not stats:
        return []
    channels = [
        f"  {name}: service level {pct(c.get('service_level_15m'))}, {c['answered_15m']} "
        f"answered, {c['abandoned_15m']} abandoned after 5 s, {c['expired_15m']} expired"
        for name, c in stats.get("channels", {}).items()
    ]
    head = (
        "the service's own GetStats at the end, its real-time view (not time-compressed: "
        "the last 15 real minutes, a 5 s abandon grace and SLA targets in real seconds; "
        f"not the simulated day's KPIs above): {stats.get('queued', 0)} queued"
    )
    return [head, *channels]


def replay_text(summary: Mapping[str, Any]) -> str:
    """The printed part of a replay summary: calls, latencies, errors, what the policy's
    time compression clamped (before the KPIs it bears on), the KPIs, and apart from them
    the service's own real-time figures."""
    req = summary["requests"]
    calls = summary["calls"]
    rows = [["RPC", "requests", "p50 ms", "p90 ms", "p99 ms", "max ms"]]
    for method, lat in req["latency_ms"].items():
        rows.append(
            [method, str(lat["n"]), *(f"{lat[k]:.1f}" for k in ("p50", "p90", "p99", "max"))]
        )
    errors = ", ".join(f"{k} {v}" for k, v in req["errors_by_code"].items()) or "none"
    expected = ", ".join(f"{k} {v}" for k, v in req["expected_failures"].items())
    if expected:
        errors += f" (plus races the client expects: {expected})"
    expired = f"{calls['expired']} expired, " if calls.get("expired") else ""
    lost = calls.get("abandoned_or_expired_after_answer", 0)
    later = f" ({lost} of them abandoned or expired after a hand-back)" if lost else ""
    lines = [
        f"replayed {calls['sent']} calls on tenant {summary['tenant']} at x{summary['speed']:g} "
        f"in {summary['wall_s']:.1f} s: {calls['answered']} answered{later}, "
        f"{calls['abandoned']} abandoned, {expired}{calls['cut']} cut by the drain limit",
        table(rows),
        f"errors: {errors}; retries: {sum(req['retries'].values())}",
        *policy_notes_text(summary),
        kpi_table(summary["kpis"]),
        *service_stats_text(summary),
    ]
    return "\n".join(lines)
