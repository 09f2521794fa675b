"""The Grafana dashboard and the alert rules parse, and only use series the router exports.

``docs/grafana-dashboard.json`` and ``docs/alerts.yaml`` name metrics by string; a renamed or
removed metric in ``router.metrics`` would leave a panel empty or an alert silently never
firing, and a rule file with one expression Prometheus cannot parse is refused whole. These
tests parse every expression with a PromQL parser (``promql-parser``, the Rust parser the
GreptimeDB and other Prometheus-compatible stores use), read the names and label names the
router's registry really exposes, and check every expression against them.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.utils import floatToGoString

from router import metrics, tracing
from router.assigner import Outcome
from router.domain import Channel, Strategy

DOCS = Path(__file__).resolve().parents[2] / "docs"
DASHBOARD = DOCS / "grafana-dashboard.json"
ALERTS = DOCS / "alerts.yaml"
PROMTOOL = shutil.which("promtool")
"""Prometheus's rule checker and rule unit-test runner, where installed (CI installs it)."""

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


def check_syntax(expr: str, where: str) -> None:
    """``expr`` is PromQL, once Grafana's interval variables stand for a duration (the
    other variables sit inside label values, where any text parses)."""
    promql = re.sub(r"\$__(?:rate_)?interval\b", "5m", expr)
    try:
        promql_parser.parse(promql)
    except ValueError as err:
        raise AssertionError(f"{where}: {err} in {expr!r}") from err


def check_expression(expr: str, where: str, recorded: frozenset[str] = frozenset()) -> None:
    """``expr`` parses, every series it reads is exported (or one of the ``recorded``
    series, which carry no labels), and every label it uses exists on one (Grafana's
    ``label_values(selector, label)`` too)."""
    extra: set[str] = set()
    variable = re.fullmatch(r"\s*label_values\((.*),\s*([a-zA-Z_]\w*)\s*\)\s*", expr)
    if variable:
        expr, extra = variable.group(1), {variable.group(2)}
    check_syntax(expr, where)
    known = exported() | dict.fromkeys(recorded, frozenset[str]())
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
    metrics.RPC_SECONDS.labels("probe.v1.Probe", "Run", "OK").observe(0.001)
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
    """The RPC latency panels (quantiles of the latency buckets) ask Prometheus for
    exemplars: the traces the service puts on its latency buckets (``router/tracing.py``)
    show as points linked to the trace. (The latency budget panel reads one bucket as a
    ratio: an exemplar there would mark no latency.)"""
    dashboard = json.loads(DASHBOARD.read_text())
    latency = [
        target
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
        if "router_rpc_duration_seconds_bucket" in target["expr"]
        and "histogram_quantile" in target["expr"]
    ]
    assert len(latency) == 3
    assert all(target.get("exemplar") is True for target in latency)


def test_the_error_panels_leave_out_the_streams_endings() -> None:
    """A Watch counts CANCELLED, DEADLINE_EXCEEDED or UNAVAILABLE when its client or a
    stop ends it: the panels of non-OK answers count unary RPCs only (every selector of
    ``router_rpc_duration_seconds_count`` in them, the ratio's denominator too)."""
    dashboard = json.loads(DASHBOARD.read_text())
    errors = [
        target["expr"]
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
        if 'code!="OK"' in target["expr"]
    ]
    assert len(errors) == 2
    for expr in errors:
        selectors = re.findall(r"router_rpc_duration_seconds_count\{([^}]*)\}", expr)
        assert selectors
        assert all('method!="Watch"' in selector for selector in selectors), expr


def alert_rules() -> list[dict[str, Any]]:
    """Every rule of the rule file, alerts and recording rules, in file order."""
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    for group in groups:
        assert group["name"]
        assert group["rules"]
    return [rule for group in groups for rule in group["rules"]]


def test_alert_rules_parse_and_use_exported_metrics() -> None:
    """Prometheus rule-file shape; every alert named, labelled, explained, on real series;
    every recorded series named by the ``level:metric:operations`` convention, recorded
    before its use and used by an alert."""
    seen: set[str] = set()
    recorded: set[str] = set()
    used: set[str] = set()
    for rule in alert_rules():
        if "record" in rule:
            name = rule["record"]
            assert set(rule) == {"record", "expr"}, name
            assert re.fullmatch(r"router:[a-z_]+:[a-z0-9_]+", name), name
            assert name not in recorded, f"{name} recorded twice"
            check_expression(rule["expr"], f"record {name}")
            recorded.add(name)
            continue
        name = rule["alert"]
        assert name not in seen, f"alert {name} defined twice"
        seen.add(name)
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, name
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        assert rule["annotations"]["summary"], name
        assert re.fullmatch(r"\d+[smh]", rule.get("for", "0s")), name
        check_expression(rule["expr"], f"alert {name}", frozenset(recorded))
        used |= series_in(rule["expr"]) & recorded
    assert recorded == used, f"recorded but never alerted on: {sorted(recorded - used)}"
    assert {"RouterNotServing", "RouterRedisErrors", "RouterAssignLatencyHigh"} <= seen
    assert {"RouterSlaBreachRateHigh", "RouterQueueLongestWaitHigh"} <= seen
    assert {"RouterAssignErrorBudgetBurn", "RouterAssignLatencyBudgetBurn"} <= seen


def test_the_alert_rules_pass_promtools_checks_and_their_unit_tests() -> None:
    """Prometheus's own checker accepts the rule file, and ``docs/alerts.test.yaml`` runs:
    each burn-rate alert fires on the burns it is for, at the times it should, with its
    text, and not on a burn within budget, a spent spike or no traffic. Skipped where
    promtool is not installed, unless ``ROUTER_REQUIRE_PROMTOOL`` is set (CI sets it)."""
    if PROMTOOL is None:
        if os.environ.get("ROUTER_REQUIRE_PROMTOOL"):
            pytest.fail("ROUTER_REQUIRE_PROMTOOL is set and promtool is not installed")
        pytest.skip("promtool not installed (Debian: apt-get install prometheus)")
    for command in (
        ("check", "rules", ALERTS.name),
        ("test", "rules", "alerts.test.yaml"),
        ("test", "rules", "alerts.minute.test.yaml"),
    ):
        done = subprocess.run(
            [PROMTOOL, *command],
            cwd=DOCS,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr


def slo_expressions() -> list[str]:
    """The Assign service-level expressions: the recording rules and the dashboard's
    burn-rate panels."""
    dashboard = json.loads(DASHBOARD.read_text())
    found = [rule["expr"] for rule in alert_rules() if "record" in rule]
    found += [
        target["expr"]
        for panel in panels(dashboard)
        if "budget burn" in panel["title"]
        for target in panel.get("targets", [])
    ]
    return found


def test_the_service_levels_count_what_the_router_counts_as_its_own_errors() -> None:
    """The availability objective's errors are the codes the router's spans mark failed
    (``tracing.SERVER_ERRORS``: the server's errors, not the caller's); the latency
    objective reads the 250 ms bucket."""
    expressions = slo_expressions()
    assert len(expressions) == 18  # 2 x 5 windows recorded, 2 x 4 on the dashboard
    errors = {code.name for code in tracing.SERVER_ERRORS}
    for expr in expressions:
        for codes in re.findall(r'code=~"([^"]+)"', expr):
            assert set(codes.split("|")) == errors, expr
    assert sum('code=~"' in expr for expr in expressions) == 9
    assert sum('le="0.25"' in expr for expr in expressions) == 9


def bucket_bounds() -> dict[str, set[str]]:
    """Each histogram's ``_bucket`` series -> its ``le`` values as the client writes them
    (``20.0``, not ``20``; Prometheus 3 stores them so too)."""
    written: Callable[[float], str] = floatToGoString  # the client's own formatter (untyped)
    return {
        f"{next(iter(value.describe())).name}_bucket": set(map(written, value._upper_bounds))
        for value in vars(metrics).values()
        if isinstance(value, Histogram)
    }


def test_every_bucket_an_expression_reads_exists() -> None:
    """A ``le`` matcher names a bound of its histogram, written as the client writes it:
    ``le="20"`` would match no series, and a service level over it would read as 0."""
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [rule["expr"] for rule in alert_rules()]
    expressions += [t["expr"] for p in panels(dashboard) for t in p.get("targets", [])]
    bounds = bucket_bounds()
    read = [
        (series, bound, expr)
        for expr in expressions
        for series, bound in re.findall(r'(router_\w+_bucket)\{[^}]*\ble="([^"]+)"', expr)
    ]
    assert {series for series, _, _ in read} == {
        "router_rpc_duration_seconds_bucket",
        "router_call_wait_seconds_bucket",
        "router_call_abandoned_wait_seconds_bucket",
    }
    for series, bound, expr in read:
        assert bound in bounds[series], f"{series} has no bucket le={bound!r}: {expr}"


def test_the_documented_series_per_tenant_are_what_the_registry_makes() -> None:
    """docs/observability.md's figure of series per tenant (and per replica for 100 tenants)
    is what the metrics with a ``tenant`` label make for one tenant with every other label
    value used (channels, Assign results, strategies, SLA kinds)."""
    tenant = "cardinality-probe"
    values = {
        "tenant": [tenant],
        "channel": [channel.value for channel in Channel],
        "result": [outcome.value for outcome in Outcome],
        "strategy": [strategy.value for strategy in Strategy],
        "kind": ["at_risk", "breached"],
    }
    per_tenant = [
        value
        for value in vars(metrics).values()
        if isinstance(value, Counter | Gauge | Histogram)
        and "tenant" in getattr(value, "_labelnames", ())
    ]
    assert len(per_tenant) == 10
    for metric in per_tenant:
        names = metric._labelnames
        for labels in itertools.product(*(values[name] for name in names)):
            metric.labels(*labels)
    made = sum(
        sample.labels.get("tenant") == tenant
        for family in metrics.REGISTRY.collect()
        for sample in family.samples
    )
    text = " ".join((DOCS / "observability.md").read_text().split())
    documented = re.search(r"A tenant costs at most ([\d,]+) series", text)
    assert documented is not None
    assert int(documented.group(1).replace(",", "")) == made
    replica = re.search(r"at most ([\d,]+) series per replica for 100 tenants", text)
    assert replica is not None
    assert int(replica.group(1).replace(",", "")) == 100 * made


@pytest.mark.parametrize(
    ("expr", "bad"),
    [
        ("rate(router_no_such_metric_total[5m])", "router_no_such_metric_total"),
        ("sum by (tenant) (rate(router_dispatch_conflicts_total[5m]))", "tenant"),
        ("sum(rate(router_dispatch_placed_total[5m])", "unclosed left parenthesis"),
        ("rate(router_dispatch_placed_total[5 minutes])", "unexpected character inside brackets"),
        ("router:assign_errors:ratio_rate5m > 0.001", "router:assign_errors:ratio_rate5m"),
    ],
)
def test_a_drifted_expression_is_caught(expr: str, bad: str) -> None:
    """The checker itself: an unknown metric or label fails."""
    with pytest.raises(AssertionError, match=bad):
        check_expression(expr, "example")


@pytest.mark.parametrize(
    ("name", "label", "values"),
    [
        ("router_routing_index_reads_total", "mode", ("delta", "all", "reset")),
        (
            "router_store_retries_total",
            "reason",
            ("commit", "version", "call", "policy", "index", "route"),
        ),
        ("router_redis_errors_total", "kind", ("unavailable", "busy", "refused", "failed")),
    ],
)
def test_counters_of_known_labels_start_at_zero(
    name: str, label: str, values: tuple[str, ...]
) -> None:
    """Each is exported at 0 from the start (a fresh interpreter: nothing counted yet), so
    its first event is an increase to ``rate`` and ``increase`` (RouterRoutingIndexReset
    fires on a replica's first reset)."""
    script = (
        "import sys; from router import metrics; "
        f"print([metrics.REGISTRY.get_sample_value({name!r}, {{{label!r}: v}}) "
        f"for v in {values!r}])"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == repr([0.0] * len(values))
