"""The report's charts, drawn with matplotlib's Agg renderer and returned as PNG bytes.

No pyplot: each chart is its own ``Figure`` on a ``FigureCanvasAgg``, so nothing global is
touched (safe in threads and tests, no display needed) and nothing leaks between charts.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

BLUE = "#2f6db5"
ORANGE = "#e08a1e"
RED = "#c0392b"
GREEN = "#2e8b57"
GREY = "#8a8f98"
PURPLE = "#8e44ad"
PALETTE = ("#2f6db5", "#e08a1e", "#2e8b57", "#8e44ad", "#c0392b", "#16a085", "#7f8c8d")
DPI = 96


def figure(width: float, height: float) -> Figure:
    """A chart of ``width`` x ``height`` inches on its own Agg canvas (no pyplot)."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def png(fig: Figure) -> bytes:
    """``fig`` as PNG bytes."""
    buffer = io.BytesIO()
    # No "Software" tag: the report must not carry any URL, not even inside an image.
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def style(ax: Axes) -> None:
    """The reports' axes: no top or right spine, a light horizontal grid behind the data."""
    ax.spines["top"].set_visible(False)
    ax.spines["right"].set_visible(False)
    ax.grid(axis="y", color="#e3e5e8", linewidth=0.8)
    ax.set_axisbelow(True)


def _duration_unit(max_s: float) -> tuple[float, str]:
    """Divisor and unit label that keep a wait axis readable."""
    if max_s >= 3 * 3600:
        return 3600.0, "hours"
    if max_s >= 3 * 60:
        return 60.0, "minutes"
    return 1.0, "seconds"


@dataclass(frozen=True, slots=True)
class ChannelWaits:
    """Waits of one channel's calls, in seconds."""

    channel: str
    answered: Sequence[float]
    abandoned: Sequence[float]
    """How long abandoning callers waited before hanging up."""
    target_s: float | None
    """The channel's SLA target (a dashed line), if known."""
    expired: Sequence[float] = ()
    """How long the calls that reached the queue time limit waited (until it)."""
    waiting: Sequence[float] = ()
    """How long the calls never answered, abandoned or expired had waited at the end."""


def _wait_series(
    ch: ChannelWaits, scale: tuple[float, float], expiring: bool, waiting: bool
) -> tuple[list[list[float]], list[str], list[str], str]:
    """The stacked series of one channel's histogram (waits divided by ``scale``'s unit and
    clipped at its top), their colours and labels, and the panel's title: answered and
    abandoned, then expired (``expiring``) and still waiting (``waiting``) when any panel
    has some."""
    div, clip = scale
    kinds = [(ch.answered, BLUE, "answered"), (ch.abandoned, ORANGE, "abandoned")]
    if expiring:
        kinds.append((ch.expired, PURPLE, "expired"))
    if waiting:
        kinds.append((ch.waiting, GREY, "still waiting"))
    series = [[min(w / div, clip) for w in waits] for waits, _, _ in kinds]
    counts = ", ".join(f"{len(waits)} {label}" for waits, _, label in kinds)
    return series, [c for _, c, _ in kinds], [label for _, _, label in kinds], counts


def wait_distribution(channels: Sequence[ChannelWaits]) -> bytes:
    """One histogram per channel: answered waits, abandoned waits, expired waits (where a
    queue time limit ended any), the waits so far of calls still waiting at the end (where
    any was), and the SLA target. The green line is the share of all the channel's calls
    answered within each wait."""
    cols = min(len(channels), 3)
    rows = math.ceil(len(channels) / cols)
    expiring = any(ch.expired for ch in channels)
    waiting = any(ch.waiting for ch in channels)
    fig = figure(4.2 * cols, 2.9 * rows)
    for i, ch in enumerate(channels):
        ax = fig.add_subplot(rows, cols, i + 1)
        style(ax)
        every = [*ch.answered, *ch.abandoned, *ch.expired, *ch.waiting]
        top = max([*every, (ch.target_s or 0) * 2, 1.0])
        # The tail beyond the 99th percentile would squash the histogram into one bar.
        if len(every) >= 20:
            top = max(sorted(every)[int(0.99 * (len(every) - 1))], (ch.target_s or 0) * 1.5, 1.0)
        div, unit = _duration_unit(top)
        bins = [top / div * k / 30 for k in range(31)]
        clip = top / div
        series, colors, labels, counts = _wait_series(ch, (div, clip), expiring, waiting)
        title = f"{ch.channel} ({counts}"
        ax.hist(series, bins=bins, stacked=True, color=colors, label=labels)
        if ch.target_s:
            ax.axvline(
                ch.target_s / div, color=RED, linestyle="--", linewidth=1.4, label="SLA target"
            )
        ax.set_title(f"{title})", fontsize="medium" if expiring or waiting else None)
        ax.set_xlabel(f"wait ({unit}; last bar includes longer waits)")
        ax.set_ylabel("calls")
        # Cumulative share of all calls answered within x: at the red line it reads as the
        # service level, wherever most waits are 0 and the bars say little.
        total = len(every)
        if total:
            xs = [0.0, *sorted(min(w / div, clip) for w in ch.answered)]
            ys = [0.0, *((k + 1) * 100 / total for k in range(len(ch.answered)))]
            share = ax.twinx()
            share.step(
                [*xs, clip],
                [*ys, ys[-1]],
                where="post",
                color=GREEN,
                linewidth=1.4,
                label="% answered within",
            )
            share.set_ylim(0, 102)
            share.set_ylabel("% of calls answered within", color=GREEN)
            share.spines["top"].set_visible(False)
        if i == 0:
            handles, labels = ax.get_legend_handles_labels()
            if total:
                more, extra = share.get_legend_handles_labels()
                handles, labels = handles + more, labels + extra
            ax.legend(handles, labels, frameon=False, fontsize=8, loc="center right")
    return png(fig)


def timeline(
    bucket_s: float,
    *,
    arrivals: Sequence[float | None],
    queue_max: Sequence[float | None],
    service_level: Sequence[float | None],
    occupancy_mean: Sequence[float | None],
    goal: float | None,
    warmup_s: float = 0.0,
    first_bucket: int = 0,
) -> bytes:
    """Two panels over the day: demand (arrivals, longest queue) and results (SL, occupancy).
    The series start at bucket ``first_bucket`` (the x axis stays in hours from 00:00)."""
    hours = [(first_bucket + k + 0.5) * bucket_s / 3600 for k in range(len(arrivals))]
    width = bucket_s / 3600 * 0.9
    fig = figure(11, 5.6)
    top, bottom = fig.subplots(2, 1, sharex=True)
    style(top)
    top.bar(hours, [v or 0 for v in arrivals], width=width, color="#b8cde8", label="arrivals")
    top.set_ylabel("calls arriving per bucket")
    twin = top.twinx()
    twin.plot(hours, [_nan(v) for v in queue_max], color=ORANGE, marker=".", label="queue peak")
    twin.set_ylabel("calls waiting (peak)")
    twin.spines["top"].set_visible(False)
    handles = top.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    top.legend(handles=handles, frameon=False, loc="upper left", fontsize=8)
    top.set_title("Demand: arrivals and the longest queue")
    style(bottom)
    sl = [_nan(v) for v in service_level]
    occ = [_nan(v) for v in occupancy_mean]
    bottom.plot(hours, [v * 100 for v in sl], color=BLUE, marker="o", ms=3, label="service level")
    bottom.plot(hours, [v * 100 for v in occ], color=GREY, linestyle="-.", label="mean occupancy")
    if goal is not None:
        bottom.axhline(goal * 100, color=RED, linestyle="--", linewidth=1.2, label="SL goal")
    bottom.set_ylim(0, 105)
    bottom.set_ylabel("%")
    bottom.set_xlabel("time (hours from 00:00 of the first day)")
    start_h = first_bucket * bucket_s / 3600
    if warmup_s / 3600 > start_h:
        for ax in (top, bottom):
            ax.axvspan(start_h, warmup_s / 3600, color="#eceef1", zorder=0)
        middle = (start_h + warmup_s / 3600) / 2
        bottom.text(middle, 30, "warm-up,\nnot counted", ha="center", fontsize=8, color=GREY)
    bottom.legend(frameon=False, loc="lower right", fontsize=8, ncols=3)
    bottom.set_title("Results: service level and occupancy")
    return png(fig)


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def per_agent(
    agent_ids: Sequence[str],
    values: Sequence[float],
    top: Sequence[bool],
    *,
    ylabel: str,
    percent: bool,
    cap: float | None = None,
    peaks: Sequence[float] | None = None,
) -> bytes:
    """Bars per agent, highest first; top performers in orange; an optional cap line and
    peak markers (rolling-window occupancy peaks)."""
    order = sorted(range(len(values)), key=lambda i: (-values[i], agent_ids[i]))
    scale = 100.0 if percent else 1.0
    n = len(order)
    fig = figure(min(14.0, max(7.0, 0.16 * n + 3)), 3.6)
    ax = fig.add_subplot()
    style(ax)
    xs = list(range(n))
    colors = [ORANGE if top[i] else BLUE for i in order]
    ax.bar(xs, [values[i] * scale for i in order], color=colors, width=0.8)
    if peaks is not None:
        ax.scatter(
            xs,
            [peaks[i] * scale for i in order],
            marker="_",
            s=80,
            color="#222",
            zorder=3,
            label="peak (rolling window)",
        )
    if cap is not None:
        ax.axhline(cap * scale, color=RED, linestyle="--", linewidth=1.2, label="occupancy cap")
    if n <= 40:
        ax.set_xticks(xs, [agent_ids[i] for i in order], rotation=70, fontsize=7)
    else:
        ax.set_xticks([])
        ax.set_xlabel(f"{n} agents, highest first")
    ax.set_ylabel(ylabel)
    ax.bar([0], [0], color=ORANGE, label="top performer")
    ax.bar([0], [0], color=BLUE, label="other agents")
    ax.legend(frameon=False, fontsize=8, loc="lower left", bbox_to_anchor=(0, 1), ncols=4)
    if percent:
        ax.set_ylim(0, max(105.0, *(v * scale * 1.05 for v in [*values, *(peaks or [])])))
    return png(fig)


@dataclass(frozen=True, slots=True)
class Bar:
    """One policy's bar: mean and 95 % CI (``None`` when undefined)."""

    policy: str
    mean: float | None
    low: float | None
    high: float | None


def _errors(bars: Sequence[Bar], scale: float) -> tuple[list[float], list[list[float]]]:
    """Bar heights and whisker lengths. Every KPI compared is non-negative, so a lower
    interval end below 0 (a symmetric t interval on few seeds) is drawn at 0."""
    heights, below, above = [], [], []
    for b in bars:
        mean = b.mean or 0.0
        low = max(0.0, b.low if b.low is not None else mean)
        high = b.high if b.high is not None else mean
        heights.append(mean * scale)
        below.append(max(0.0, mean - low) * scale)
        above.append(max(0.0, high - mean) * scale)
    return heights, [below, above]


def grouped_bars(
    groups: Mapping[str, Sequence[Bar]], policies: Sequence[str], *, ylabel: str, percent: bool
) -> bytes:
    """Bars per group (e.g. channel), one colour per policy, with 95 % CI whiskers."""
    scale = 100.0 if percent else 1.0
    names = list(groups)
    fig = figure(max(7.0, 1.1 * len(names) * max(1, len(policies)) / 2 + 3), 3.8)
    ax = fig.add_subplot()
    style(ax)
    width = 0.8 / max(1, len(policies))
    for p_index, policy in enumerate(policies):
        bars = [next(b for b in groups[g] if b.policy == policy) for g in names]
        heights, err = _errors(bars, scale)
        xs = [g + (p_index - (len(policies) - 1) / 2) * width for g in range(len(names))]
        ax.bar(
            xs,
            heights,
            width=width,
            color=PALETTE[p_index % len(PALETTE)],
            label=policy,
            yerr=err,
            capsize=3,
            error_kw={"elinewidth": 1},
        )
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel(ylabel)
    if percent:
        ax.set_ylim(0, 105)
    ax.legend(
        frameon=False,
        fontsize=8,
        ncols=min(5, len(policies)),
        loc="lower left",
        bbox_to_anchor=(0, 1),
    )
    return png(fig)


@dataclass(frozen=True, slots=True)
class Panel:
    """One KPI across policies."""

    title: str
    unit: str
    percent: bool
    bars: Sequence[Bar]


def small_multiples(panels: Sequence[Panel], policies: Sequence[str]) -> bytes:
    """One small bar chart per KPI, one bar per policy, with 95 % CI whiskers."""
    cols = 3
    rows = max(1, math.ceil(len(panels) / cols))
    fig = figure(12, 2.7 * rows)
    colors = {p: PALETTE[i % len(PALETTE)] for i, p in enumerate(policies)}
    for i, panel in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        style(ax)
        scale = 100.0 if panel.percent else 1.0
        heights, err = _errors(panel.bars, scale)
        xs = list(range(len(panel.bars)))
        ax.bar(
            xs,
            heights,
            color=[colors[b.policy] for b in panel.bars],
            yerr=err,
            capsize=3,
            error_kw={"elinewidth": 1},
        )
        ax.set_xticks(xs, [b.policy for b in panel.bars], rotation=20, fontsize=8)
        unit = "%" if panel.percent else panel.unit
        ax.set_title(f"{panel.title} ({unit})" if unit else panel.title, fontsize=10)
    return png(fig)
