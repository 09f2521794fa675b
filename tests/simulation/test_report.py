"""The HTML reports: self-contained, every chart present, readable with missing figures."""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from router.domain import Policy
from simulations import plots, report
from simulations.compare import Comparison, Metric, Run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class Page(HTMLParser):
    """Collects what the tests look at: images, headings, and every attribute value."""

    def __init__(self, text: str) -> None:
        """Parse ``text`` at once."""
        super().__init__()
        self.images: list[dict[str, str]] = []
        self.headings: list[str] = []
        self.tags: list[str] = []
        self.attributes: list[str] = []
        self._heading = False
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Record the tag and its attributes."""
        self.tags.append(tag)
        values = {k: v or "" for k, v in attrs}
        self.attributes.extend(values.values())
        if tag == "img":
            self.images.append(values)
        self._heading = tag in {"h1", "h2"}

    def handle_endtag(self, tag: str) -> None:
        """Leave a heading."""
        if tag in {"h1", "h2"}:
            self._heading = False

    def handle_data(self, data: str) -> None:
        """Keep heading text."""
        if self._heading and data.strip():
            self.headings.append(data.strip())


def assert_self_contained(text: str) -> Page:
    """No external URL anywhere, no scripts or stylesheets to fetch, every image an inline
    PNG that decodes."""
    page = Page(text)
    assert text.startswith("<!DOCTYPE html>")
    assert not re.search(r"(?i)https?://|//[a-z0-9-]+\.[a-z]", text)
    assert "script" not in page.tags
    assert "link" not in page.tags
    for image in page.images:
        assert image["src"].startswith("data:image/png;base64,")
        assert base64.b64decode(image["src"].split(",", 1)[1]).startswith(PNG_MAGIC)
        assert image.get("alt")
    for value in page.attributes:
        assert not value.startswith(("http", "//", "/")), value
    return page


def _kpis(agents: int = 6) -> dict[str, Any]:
    channel = {
        "offered": 120,
        "answered": 110,
        "abandoned": 10,
        "abandon_rate": 10 / 120,
        "service_level": 0.78,
        "asa_s": 14.2,
        "wait_p50_s": 3.0,
        "wait_p90_s": 41.0,
        "wait_p99_s": 95.0,
        "sla_breaches": 26,
    }
    return {
        "scenario": "tiny <test>",
        "policy": "balanced",
        "seed": 3,
        "duration_s": 7200,
        "calls": 240,
        "events": 1000,
        "overall": channel,
        "channels": {"voice": channel, "chat": {**channel, "service_level": 0.93}},
        "agents": {
            f"a{i}": {
                "handled": 10 + i,
                "occupancy": 0.5 + 0.05 * i,
                "peak_occupancy": 0.6 + 0.05 * i,
                "top_performer": i == 0,
            }
            for i in range(agents)
        },
        "fairness": {
            "occupancy_mean": 0.62,
            "occupancy_std": 0.09,
            "occupancy_gini": 0.08,
            "handled_gini": 0.1,
        },
        "top_performers": {"share_of_calls": 0.2, "mean_occupancy": 0.5, "peak_occupancy": 0.6},
        "quality": {"skill_match_mean": 0.8, "estimated_csat": 4.1, "estimated_resolution": 0.7},
        "timeline": {
            "bucket_s": 900,
            "service_level": [0.9, None, 0.7, 0.8, 0.85, 0.6, 0.95, 1.0],
            "queue_max": [0, 0, 3, 5, 2, 8, 1, 0],
            "occupancy_mean": [0.3, 0.4, 0.7, 0.8, 0.6, 0.9, 0.5, 0.3],
            "arrivals": [10, 0, 40, 50, 30, 60, 20, 10],
        },
    }


def _records() -> list[dict[str, str]]:
    rows = []
    for i in range(60):
        abandoned = i % 10 == 0
        rows.append(
            {
                "call_id": f"c{i}",
                "channel": "voice" if i % 3 else "chat",
                "arrival_s": str(i * 60),
                "answered_s": "" if abandoned else str(i * 60 + i),
                "wait_s": str(float(i)),
                "abandoned": str(abandoned).lower(),
                "agent_id": "" if abandoned else f"a{i % 6}",
                "handle_s": "200",
                "end_s": str(i * 60 + 300),
                "skill_match": "0.8",
                "within_sla": str(i <= 20).lower(),
                "priority": "0",
            }
        )
    return rows


def test_run_report_has_every_chart_inline_and_no_external_url() -> None:
    """A run report: headline cards, four charts (waits, timeline, occupancy, calls per
    agent) as inline PNGs, a 'what this means' line per section, HTML-escaped names."""
    text = report.run_report_html(_kpis(), _records(), occupancy_cap=0.85)
    page = assert_self_contained(text)
    assert len(page.images) == 4
    assert page.headings[:2] == ["Routing simulation · tiny <test>", "Headline"]
    for title in (
        "Wait-time distribution",
        "Service level through the day",
        "Occupancy per agent",
        "Calls per agent",
    ):
        assert title in page.headings
    assert text.count('class="what"') == 5
    assert "tiny &lt;test&gt;" in text
    assert "78.0 %" in text  # voice service level card
    assert "goal 80 % within 20 s" in text


def test_run_report_from_files(tmp_path: Path) -> None:
    """``write_run_report`` reads kpis.json and records.csv from a run directory."""
    (tmp_path / "kpis.json").write_text(json.dumps(_kpis()))
    rows = _records()
    lines = [",".join(rows[0])] + [",".join(r.values()) for r in rows]
    (tmp_path / "records.csv").write_text("\n".join(lines) + "\n")
    path = report.write_run_report(tmp_path, sla={"voice": (30, 0.9)})
    text = path.read_text()
    assert_self_contained(text)
    assert "goal 90 % within 30 s" in text


def test_run_report_survives_an_empty_run() -> None:
    """No calls, no agents, undefined KPIs (null): still a page, with dashes, not a crash."""
    kpis = {
        "scenario": "empty",
        "overall": {"offered": 0, "service_level": None, "asa_s": None},
        "channels": {},
        "agents": {},
        "fairness": {},
        "timeline": {"bucket_s": 900, "arrivals": []},
    }
    page = assert_self_contained(report.run_report_html(kpis, []))
    assert page.images == []
    assert "Average speed of answer" in report.run_report_html(kpis, [])


def _compare() -> dict[str, Any]:
    values: dict[str, dict[str, list[float]]] = {
        "channels.voice.service_level": {
            "balanced": [0.8, 0.82, 0.85],
            "longest_idle": [0.7, 0.75, 0.72],
        },
        "channels.chat.service_level": {
            "balanced": [0.9, 0.92, 0.95],
            "longest_idle": [0.9, 0.91, 0.93],
        },
        "overall.asa_s": {"balanced": [10, 12, 11], "longest_idle": [15, 14, 19]},
        "fairness.occupancy_gini": {
            "balanced": [0.05, 0.06, 0.04],
            "longest_idle": [0.1, 0.12, 0.11],
        },
    }
    metrics = (
        Metric("channels.voice.service_level", "Service level, voice", "%", "higher"),
        Metric("channels.chat.service_level", "Service level, chat", "%", "higher"),
        Metric("overall.asa_s", "Average speed of answer", "s", "lower"),
        Metric("fairness.occupancy_gini", "Occupancy Gini", "", "lower", (0.0, 1.0)),
    )
    runs = []
    for policy in ("balanced", "longest_idle"):
        for k, seed in enumerate((1, 2, 3)):
            kpis: dict[str, Any] = {}
            for path, by_policy in values.items():
                node = kpis
                *parents, leaf = path.split(".")
                for part in parents:
                    node = node.setdefault(part, {})
                node[leaf] = by_policy[policy][k]
            runs.append(Run(policy, seed, kpis))
    comparison = Comparison("tiny", ("balanced", "longest_idle"), (1, 2, 3), tuple(runs), metrics)
    return comparison.to_json()


def test_compare_report_has_table_with_intervals_and_grouped_bars() -> None:
    """A comparison report: a table of mean ± CI (a policy marked only where its paired
    difference from the baseline is clear of zero: voice service level, not the ASA whose
    mean is worse but noisy), a table of those differences, a grouped bar chart of service
    level per channel and small multiples of the other KPIs, all inline."""
    text = report.compare_report_html(_compare())
    page = assert_self_contained(text)
    assert len(page.images) == 2
    assert "Service level by channel" in page.headings
    assert "Difference from balanced" in page.headings
    assert "±" in text
    assert '<td class="">82.3 %' in text  # the baseline
    assert '<td class="worse">72.3 %' in text
    assert '<td class="">16 s' in text  # 5 s slower on average, but not clearly


@pytest.mark.parametrize(
    ("value", "text"),
    [(None, "—"), (5.0, "5.0 s"), (42, "42 s"), (300, "5.0 min"), (7200, "2.0 h")],
)
def test_seconds_read_like_a_person_would_say_them(value: float | None, text: str) -> None:
    """Durations switch unit where a manager would."""
    assert report.seconds(value) == text


def test_the_report_draws_the_cap_the_engine_applied() -> None:
    """The policy's occupancy cap is drawn (and agents above it counted) only when the
    engine applies it: without an occupancy window it caps nothing."""
    assert report.applied_cap(Policy(max_occupancy=0.85)) == 0.85
    assert report.applied_cap(Policy(max_occupancy=0.85, occupancy_window_s=0)) is None


def _row(call: str, arrival: float, wait: float, **fields: str) -> dict[str, str]:
    """A voice record: answered after ``wait`` unless ``answered_s`` is given empty."""
    row = {
        "call_id": call,
        "channel": "voice",
        "arrival_s": str(arrival),
        "answered_s": str(arrival + wait),
        "wait_s": str(wait),
        "abandoned": "0",
        "agent_id": "a1",
        "handle_s": "100",
        "end_s": str(arrival + wait + 100),
        "skill_match": "1",
        "within_sla": str(int(wait <= 20)),
        "priority": "0",
        "expired": "0",
    }
    row.update(fields)
    return row


def test_the_wait_chart_counts_the_calls_the_kpis_count(monkeypatch: pytest.MonkeyPatch) -> None:
    """The wait histogram draws the measured calls only (arriving in [warmup_s, duration_s),
    as the KPIs count them) and as answered only those with an answer time: a call still
    waiting at the end is not drawn as answered."""
    never = {"answered_s": "", "agent_id": "", "handle_s": "", "end_s": "", "skill_match": ""}
    records = [
        _row("warm", 100, 5),  # warm-up: left out
        _row("ok", 700, 4),
        _row("late", 800, 45),
        _row("gone", 900, 30, abandoned="1", **never),
        _row("limit", 950, 60, expired="1", **never),
        _row("waiting", 1100, 300, **never),  # never answered, still waiting at the end
        _row("after", 1200, 2),  # arrives at duration_s: outside the window
    ]
    kpis = {**_kpis(), "warmup_s": 600, "duration_s": 1200, "channels": {"voice": {}}}
    drawn: list[plots.ChannelWaits] = []

    def capture(channels: list[plots.ChannelWaits]) -> bytes:
        drawn.extend(channels)
        return PNG_MAGIC

    monkeypatch.setattr(plots, "wait_distribution", capture)
    report.run_report_html(kpis, records)
    (voice,) = drawn
    assert sorted(voice.answered) == [4.0, 45.0]
    assert list(voice.abandoned) == [30.0]
    assert list(voice.expired) == [60.0]
    assert list(voice.waiting) == [300.0]


def test_the_worst_slice_is_one_the_kpis_measure() -> None:
    """The worst slice named under the timeline is the worst after the warm-up: a bad
    first quarter hour that the KPIs leave out is not it."""
    kpis = _kpis()
    kpis["warmup_s"] = 900
    kpis["timeline"]["service_level"] = [0.1, None, 0.7, 0.8, 0.85, 0.6, 0.95, 1.0]
    text = report.run_report_html(kpis, _records())
    assert "The worst 15.0 min starts at 01:15, at 60 % answered in time." in text
