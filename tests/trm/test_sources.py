"""Real rules: the expression read from generatorURL, situations from expressions, and the by-source table."""

from __future__ import annotations

import json
import random
from urllib.parse import quote

from models.breakdowns import source_breakdown, source_markdown
from models.encoding import expression_of, expression_parts
from models.evaluate import main
from models.sources.rules import instantiate, labelled_row, labels_kept, situation_of
from tests.trm.test_metrics import EXPECTED, PREDICTED

EXPR = (
    "sum by (namespace, pod) "
    '(increase(kube_pod_container_status_restarts_total{namespace=~"shop|web", job="kube-state-metrics"}[1h])) > 5'
)


def test_the_expression_comes_back_from_the_generator_url() -> None:
    alert = {"generatorURL": "http://prometheus:9090/graph?g0.expr=" + quote(EXPR, safe="") + "&g0.tab=1"}
    assert expression_of(alert) == EXPR
    metrics, functions, grouping, matchers = expression_parts(EXPR)
    assert metrics == ["kube_pod_container_status_restarts_total"]
    assert {"sum", "increase", "by"} <= set(functions) and grouping == ["namespace", "pod"]
    assert ("namespace", "=~", "shop|web") in matchers
    assert expression_of({"generatorURL": 7}) == "" and expression_of({}) == ""


def test_situations_and_label_sets_of_published_rule_shapes(catalog) -> None:
    rule = {
        "alert": "ShopContainerIsRestartingTooOften",
        "expr": EXPR,
        "labels": {"severity": "page", "team": "atlas"},
        "annotations": {"description": "{{ $labels.namespace }}/{{ $labels.pod }} restarts"},
    }
    assert situation_of(rule) == "pod-crash"
    assert labels_kept(EXPR) == ["namespace", "pod"]
    row = labelled_row(rule, random.Random(0), catalog, "example/repo")
    assert row["expected"]["lambda_function"] == "pod-restart"
    assert row["expected"]["parameters"]["name"] == row["alert"]["labels"]["pod"]
    assert row["alert"]["labels"]["pod"] in row["alert"]["annotations"]["description"]
    flux = {"alert": "X", "expr": 'gotk_resource_info{ready="False", customresource_kind="HelmRepository"} > 0'}
    assert situation_of(flux) == "flux-other-kind"
    pvc = {
        "alert": "FreeSpaceLow",
        "expr": "kubelet_volume_stats_available_bytes / kubelet_volume_stats_capacity_bytes < 0.1",
    }
    assert situation_of(pvc) == "pvc-filling"
    assert instantiate(pvc, random.Random(1))["labels"]["persistentvolumeclaim"]
    assert situation_of({"alert": "KubePodCrashLooping", "expr": "node_load1 > 4"}) == "host"  # the expression decides


def _rows() -> list[dict]:
    sources = ["a/one", "a/one", "b/two", "b/two", "c/cal", "c/cal"]
    roles = ["heldout"] * 4 + ["calibration"] * 2
    return [
        {"alert": {"labels": {"alertname": "A"}}, "expected": e, "source": s, "role": r}
        for e, s, r in zip(EXPECTED, sources, roles)
    ]


def test_by_source_table_counts_each_source_and_pools_each_role() -> None:
    table = {r["source"]: r for r in source_breakdown(_rows(), PREDICTED)}
    assert list(table) == ["a/one", "b/two", "all heldout sources", "c/cal"]
    one = table["a/one"]  # rows 1 (exact) and 2 (wrong name): both expect an action
    assert (one["n"], one["expect_action"], one["action_recall"], one["abstain_recall"]) == (2, 2, 0.5, None)
    two = table["b/two"]  # row 3 abstained on an action, row 4 correct abstention
    assert (two["action_recall"], two["abstain_recall"], two["wrong_action_rate"]) == (0.0, 1.0, 0.0)
    assert table["all heldout sources"]["n"] == 4 and table["c/cal"]["wrong_action_rate"] == 0.5
    md = source_markdown(list(table.values())).splitlines()
    assert md[0].startswith("| source | role | n |") and len(md) == 2 + len(table)


def test_eval_cli_by_source_on_a_directory(tmp_path, capsys) -> None:
    (tmp_path / "x.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows()))

    class Replay:
        def select_batch(self, alerts):
            return PREDICTED[: len(alerts)]

    rc = main(
        ["eval", str(tmp_path), "--selector", "replay", "--json", "--by-source", "--batch-size", "6"],
        extra_selectors={"replay": Replay},
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["source"] for r in out["by_source"]][:2] == ["a/one", "b/two"]
