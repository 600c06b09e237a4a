"""The Grafana dashboard and the PrometheusRule reference only metrics the
controller exports, their PromQL parses, and every alert's runbook_url points
at an existing paragraph of docs/operations.md.

KNOWN_METRICS is the list the controller exports today (controller/observability/metrics.py
as series names: counters with `_total`, histograms with `_bucket`). A test
later may swap it for the names scraped from a live `/metrics`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.packaging.helpers import REPO, promql_check

DASHBOARD = REPO / "deploy" / "grafana" / "trm-sre-dashboard.json"
RULES = REPO / "deploy" / "prometheus" / "prometheusrule.yaml"
OPERATIONS = REPO / "docs" / "operations.md"

KNOWN_METRICS = frozenset(
    {
        "agent_sre_alerts_received_total",
        "agent_sre_decisions_total",
        "agent_sre_stage_duration_seconds_bucket",
        "agent_sre_trm_confidence_score_bucket",
        "agent_sre_triggers_total",
        "agent_sre_outbox_depth",
        "agent_sre_dedup_hits_total",
        "agent_sre_approvals_pending",
        "agent_sre_trm_model_loaded",
        "agent_sre_http_requests_total",
        "agent_reasoning_requests_total",
        "agent_reasoning_duration_seconds_bucket",
        "agent_sre_trm_batch_size_bucket",
        "agent_sre_store_rows_swept_total",
        "agent_sre_token_reviews_total",
        "agent_reasoning_steps_bucket",
        "agent_reasoning_confidence_bucket",
        "agent_reasoning_gpu_utilization",
    }
)

# Grafana's interval variables are not PromQL; any valid duration stands in for them.
_GRAFANA_DURATIONS = re.compile(r"\$(__rate_interval|__interval|__range)\b|\$\{(__rate_interval|__interval|__range)\}")
_LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*[A-Za-z_][A-Za-z0-9_]*\)$")

# Names that can follow a metric-like identifier in PromQL without being metrics.
_PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "and",
    "or",
    "unless",
    "atan2",
    "inf",
    "nan",
    "start",
    "end",
}


def dashboard_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target and every templating query."""

    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    for panel in panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r} target {target['refId']}", _GRAFANA_DURATIONS.sub("5m", target["expr"])
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        found = _LABEL_VALUES.match(query.strip())
        assert found, f"variable {variable['name']}: only label_values(selector, label) queries are checked"
        yield f"variable {variable['name']}", found["selector"]


def rule_queries(doc: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for group in doc["spec"]["groups"]:
        for rule in group["rules"]:
            yield f"rule {rule.get('alert') or rule.get('record')}", rule["expr"]


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression, without a parser (checked against the real one below).

    Strings, label matchers, ranges and grouping clauses are removed first;
    what remains that looks like an identifier and is not a function call or
    a keyword is a metric name.
    """
    text = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', '""', expr)
    text = re.sub(r"\{[^{}]*\}", " ", text)
    text = re.sub(r"\[[^\[\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.$:])([A-Za-z_:][\w:]*)(\s*\()?", text):
        name, call = match.group(1), match.group(2)
        if call or name in _PROMQL_WORDS:
            continue
        names.add(name)
    return names


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


@pytest.fixture(scope="module")
def rules() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return loaded


def all_queries(dashboard: dict[str, Any], rules: dict[str, Any]) -> list[tuple[str, str]]:
    return [*dashboard_queries(dashboard), *rule_queries(rules)]


# --------------------------------------------------------------------------
# Metric names
# --------------------------------------------------------------------------


def test_dashboard_references_only_known_metrics(dashboard: dict[str, Any]) -> None:
    unknown = {where: sorted(metric_names(expr) - KNOWN_METRICS) for where, expr in dashboard_queries(dashboard)}
    assert {k: v for k, v in unknown.items() if v} == {}


def test_dashboard_shows_every_known_metric(dashboard: dict[str, Any]) -> None:
    used = set().union(*(metric_names(expr) for _, expr in dashboard_queries(dashboard)))
    assert sorted(KNOWN_METRICS - used) == []


def test_rules_reference_only_known_metrics(rules: dict[str, Any]) -> None:
    unknown = {where: sorted(metric_names(expr) - KNOWN_METRICS) for where, expr in rule_queries(rules)}
    assert {k: v for k, v in unknown.items() if v} == {}


def test_metric_name_extraction_finds_what_it_should() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, stage) (rate(a_bucket{stage!="trm", x=~"b|c"}[5m]))) > 0.2 '
        'and on (job) b_total offset 5m or vector(1) unless {__name__="ignored_by_this_helper"} / c:rate5m'
    )
    assert metric_names(expr) == {"a_bucket", "b_total", "c:rate5m"}


# --------------------------------------------------------------------------
# Dashboard shape
# --------------------------------------------------------------------------


def test_dashboard_panels_are_well_formed(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "trm-sre" and dashboard["title"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["targets"], f"panel {panel['title']!r} has no query"
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel.get("description"), f"panel {panel['title']!r} needs a description"


def test_dashboard_covers_the_operational_questions(dashboard: dict[str, Any]) -> None:
    titles = " | ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in (
        "alerts received",
        "decisions by stage and outcome",
        "trm confidence",
        "triggers by result",
        "outbox depth",
        "stage latency p50",
        "stage latency p99",
        "approvals pending",
        "dedup hits",
    ):
        assert topic in titles, topic
    results = " ".join(t["expr"] for p in dashboard["panels"] for t in p.get("targets", []))
    assert "sum by (result) (rate(agent_sre_triggers_total" in results  # sent/failed/retried/dead_lettered


# --------------------------------------------------------------------------
# PrometheusRule shape and runbooks
# --------------------------------------------------------------------------


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lowercase, punctuation dropped, spaces to hyphens."""
    anchors = set()
    for line in markdown.splitlines():
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            text = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower())
            anchors.add(text.replace(" ", "-"))
        anchors.update(re.findall(r'<a (?:name|id)="([^"]+)"', line))
    return anchors


def test_prometheusrule_has_the_expected_shape(rules: dict[str, Any]) -> None:
    assert rules["apiVersion"] == "monitoring.coreos.com/v1" and rules["kind"] == "PrometheusRule"
    alerts = [rule for group in rules["spec"]["groups"] for rule in group["rules"]]
    names = [a["alert"] for a in alerts]
    assert len(names) == len(set(names))
    for alert in alerts:
        assert set(alert) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}, alert["alert"]
        assert re.fullmatch(r"TrmSre[A-Z][A-Za-z]+", alert["alert"])
        assert alert["labels"]["severity"] in ("info", "warning", "critical")
        assert {"summary", "description", "runbook_url"} <= set(alert["annotations"])
        if "for" in alert:
            assert re.fullmatch(r"\d+[smh]", alert["for"])
    # The six failure modes named in the issue are covered.
    for needed in (
        "TriggerDeliveryFailing",
        "TriggersDeadLettered",
        "OutboxBacklog",
        "ModelNotLoaded",
        "DecisionsMostlyEscalated",
        "HighDecisionLatency",
    ):
        assert f"TrmSre{needed}" in names


def test_every_runbook_url_points_at_a_paragraph_of_operations_md(rules: dict[str, Any]) -> None:
    anchors = _anchors(OPERATIONS.read_text(encoding="utf-8"))
    for group in rules["spec"]["groups"]:
        for rule in group["rules"]:
            url = rule["annotations"]["runbook_url"]
            assert url.split("#")[0].endswith("docs/operations.md"), url
            anchor = url.split("#", 1)[1]
            assert anchor == rule["alert"].lower(), url
            assert anchor in anchors, f"docs/operations.md has no heading for #{anchor}"


# --------------------------------------------------------------------------
# PromQL, with Prometheus' own parser
# --------------------------------------------------------------------------


@pytest.mark.envtest
@pytest.mark.timeout(900)
def test_every_query_parses_and_selects_only_known_metrics(
    promql_check_bin: Path, dashboard: dict[str, Any], rules: dict[str, Any]
) -> None:
    queries = all_queries(dashboard, rules)
    results = promql_check(promql_check_bin, [expr for _, expr in queries])
    errors = {where: r["error"] for (where, _), r in zip(queries, results, strict=True) if r["error"]}
    assert errors == {}
    for (where, expr), result in zip(queries, results, strict=True):
        assert set(result["metrics"]) <= KNOWN_METRICS, where
        # The parser and the helper above agree, so the helper's checks can be trusted without Go.
        assert set(result["metrics"]) == metric_names(expr), where


@pytest.mark.envtest
@pytest.mark.timeout(900)
def test_the_checker_reports_syntax_errors(promql_check_bin: Path) -> None:
    bad, good = promql_check(promql_check_bin, ["sum(rate(x_total[5m])", "up == 0"])
    assert "parse error" in bad["error"]
    assert good == {"expr": "up == 0", "error": "", "metrics": ["up"]}


def test_dashboard_links_a_decision_to_its_trace(dashboard: dict[str, Any]) -> None:
    """A decision's trace id (GET /decisions/{id}, trm-sre explain) opens its trace; latency exemplars too."""
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["traces"]["type"] == "datasource"
    assert variables["trace_id"]["type"] == "textbox"
    (link,) = [x for x in dashboard["links"] if x["title"] == "Trace of a decision"]
    assert "${trace_id}" in link["url"] and "${traces}" in link["url"] and link["url"].startswith("/explore?")
    latency = [p for p in dashboard["panels"] if p["title"].startswith("Stage latency")]
    assert latency and all(t.get("exemplar") is True for p in latency for t in p["targets"])
