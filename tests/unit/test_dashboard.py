"""The Grafana dashboard and the alert rules only use series the router exports.

``docs/grafana-dashboard.json`` and ``docs/alerts.yaml`` name metrics by string; a renamed or
removed metric in ``router.metrics`` would leave a panel empty or an alert silently never
firing. These tests read the names, and the label names, the router's registry really
exposes, and check every expression against them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import Counter, Gauge, Histogram

from router import metrics

DOCS = Path(__file__).resolve().parents[2] / "docs"
DASHBOARD = DOCS / "grafana-dashboard.json"
ALERTS = DOCS / "alerts.yaml"

EXTERNAL: dict[str, frozenset[str]] = {
    "up": frozenset(),
    "probe_success": frozenset(),
}
"""Series from Prometheus itself (``up``) and the blackbox exporter's gRPC health probe
(``probe_success``), which the docs name as such."""
TARGET_LABELS = frozenset({"job", "instance"})
"""Labels Prometheus adds to every scraped series."""

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_MATCHERS = re.compile(r"\{([^}]*)\}")
_RANGE = re.compile(r"\[[^\]]*\]")
PROMQL_WORDS = frozenset(
    {
        "sum",
        "max",
        "min",
        "avg",
        "count",
        "rate",
        "irate",
        "increase",
        "histogram_quantile",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "abs",
        "clamp_min",
        "topk",
    }
)


def exported() -> dict[str, frozenset[str]]:
    """Every sample name the router's registry can expose -> its label names."""
    names: dict[str, frozenset[str]] = dict(EXTERNAL)
    for value in vars(metrics).values():
        if not isinstance(value, Counter | Gauge | Histogram | metrics.CollectorPauses):
            continue
        families = list(value.describe())
        assert len(families) == 1
        family = families[0]
        assert family.name.startswith("router_"), family.name
        if isinstance(value, metrics.CollectorPauses):
            labels = frozenset({"generation"})
        else:
            labels = frozenset(getattr(value, "_labelnames", ()))
        if isinstance(value, Counter):
            names[f"{family.name}_total"] = labels
        elif isinstance(value, Histogram | metrics.CollectorPauses):
            for suffix in ("_count", "_sum"):
                names[family.name + suffix] = labels
            names[f"{family.name}_bucket"] = labels | {"le"}
        else:
            names[family.name] = labels
    for family in metrics.PROCESS.collect():  # the standard process_* series, as written
        for sample in family.samples:
            names[sample.name] = frozenset(sample.labels)
    return names


def exported_families() -> dict[str, str]:
    """Metric objects of ``router.metrics`` -> their family name."""
    return {
        attribute: next(iter(value.describe())).name
        for attribute, value in vars(metrics).items()
        if isinstance(value, Counter | Gauge | Histogram | metrics.CollectorPauses)
    }


def series_in(expr: str) -> set[str]:
    """Metric names an expression reads (identifiers outside strings, label matchers,
    grouping clauses and ranges that are not PromQL words or Grafana variables)."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub("{}", text)
    text = _GROUPING.sub(" ", text)
    text = _RANGE.sub("", text)
    text = re.sub(r"\$\w+", "", text)
    return {
        token
        for token in _NAME.findall(text)
        if token not in PROMQL_WORDS and not re.fullmatch(r"[0-9eE]+", token)
    }


def labels_in(expr: str) -> set[str]:
    """Label names an expression matches on or groups by."""
    text = _STRING.sub('""', expr)
    found: set[str] = set()
    for group in _GROUPING.findall(text):
        found.update(name.strip() for name in group.split(",") if name.strip())
    for matchers in _MATCHERS.findall(text):
        found.update(m.group(1) for m in re.finditer(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", matchers))
    return found


def check_expression(expr: str, where: str) -> None:
    """Every series ``expr`` reads is exported, and every label it uses exists on one
    (Grafana's ``label_values(selector, label)`` too)."""
    extra: set[str] = set()
    variable = re.fullmatch(r"\s*label_values\((.*),\s*([a-zA-Z_]\w*)\s*\)\s*", expr)
    if variable:
        expr, extra = variable.group(1), {variable.group(2)}
    known = exported()
    used = series_in(expr)
    assert used, f"{where}: no metric in {expr!r}"
    unknown = used - set(known)
    assert not unknown, f"{where}: {sorted(unknown)} not exported by router.metrics"
    labels = set(TARGET_LABELS)
    for name in used:
        labels |= known[name]
    stray = (labels_in(expr) | extra) - labels
    assert not stray, f"{where}: labels {sorted(stray)} not on {sorted(used)}"


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def test_exported_names_cover_the_registry() -> None:
    """The name scheme above matches what the registry really writes."""
    metrics.RPC_SECONDS.labels("Probe", "OK").observe(0.001)
    written = {
        sample.name
        for family in metrics.REGISTRY.collect()
        for sample in family.samples
        if not sample.name.endswith("_created")
    }
    assert written <= set(exported())
    assert "router_rpc_duration_seconds_bucket" in written


def test_dashboard_imports_with_a_prometheus_input() -> None:
    """Importable: a ``DS_PROMETHEUS`` input, every panel and target on it, unique ids."""
    dashboard = json.loads(DASHBOARD.read_text())
    inputs = {i["name"]: i for i in dashboard["__inputs"]}
    assert inputs["DS_PROMETHEUS"]["pluginId"] == "prometheus"
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids))
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert panel.get("description"), f"{panel['title']}: explain the panel"


def test_every_dashboard_expression_uses_exported_metrics() -> None:
    """Panel queries and template variables name only series and labels the router has."""
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            check_expression(target["expr"], f"panel {panel['title']!r}")
    for variable in dashboard["templating"]["list"]:
        check_expression(variable["query"]["query"], f"variable {variable['name']}")


def test_dashboard_covers_every_router_metric() -> None:
    """Each metric of ``router.metrics`` is on some panel."""
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = " ".join(t["expr"] for p in panels(dashboard) for t in p.get("targets", []))
    used = series_in(exprs)
    missing = {
        name
        for name, family in exported_families().items()
        if not any(series.startswith(family) for series in used)
    }
    assert not missing, f"no panel shows {sorted(missing)}"


def test_rpc_latency_panels_show_the_trace_exemplars() -> None:
    """The RPC latency panels ask Prometheus for exemplars: the traces the service puts on
    its latency buckets (``router/tracing.py``) show as points linked to the trace."""
    dashboard = json.loads(DASHBOARD.read_text())
    latency = [
        target
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
        if "router_rpc_duration_seconds_bucket" in target["expr"]
    ]
    assert latency
    assert all(target.get("exemplar") is True for target in latency)


def test_alert_rules_parse_and_use_exported_metrics() -> None:
    """Prometheus rule-file shape; every alert named, labelled, explained, on real series."""
    rules = yaml.safe_load(ALERTS.read_text())
    seen: set[str] = set()
    for group in rules["groups"]:
        assert group["name"]
        assert group["rules"]
        for rule in group["rules"]:
            name = rule["alert"]
            assert name not in seen, f"alert {name} defined twice"
            seen.add(name)
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, name
            assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
            assert rule["annotations"]["summary"], name
            assert re.fullmatch(r"\d+[smh]", rule.get("for", "0s")), name
            check_expression(rule["expr"], f"alert {name}")
    assert {"RouterNotServing", "RouterRedisErrors", "RouterAssignLatencyHigh"} <= seen
    assert {"RouterSlaBreachRateHigh", "RouterQueueLongestWaitHigh"} <= seen


@pytest.mark.parametrize(
    ("expr", "bad"),
    [
        ("rate(router_no_such_metric_total[5m])", "router_no_such_metric_total"),
        ("sum by (tenant) (rate(router_dispatch_placed_total[5m]))", "tenant"),
    ],
)
def test_a_drifted_expression_is_caught(expr: str, bad: str) -> None:
    """The checker itself: an unknown metric or label fails."""
    with pytest.raises(AssertionError, match=bad):
        check_expression(expr, "example")
