"""Metrics broken down by alert family and by the repository a rule came from (`--by-family`, `--by-source`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from models.evaluate import compute_metrics, fmt, is_exact, load_dataset, run_selector
from models.progress import Progress

# Alert families: the situations of models/data.py grouped the way an operator thinks of alerts. A row whose
# situation is not listed here counts as "other"; one without a `situation` key as "unlabelled".
ALERT_FAMILIES: dict[str, tuple[str, ...]] = {
    "pods": ("pod-crash", "pod-waiting"),
    "deployments": ("deployment-stuck", "scale-request", "deployment-load"),
    "flux": (
        "flux-kustomization",
        "flux-helmrelease",
        "flux-gitrepository",
        "flux-generic",
        "flux-other-kind",
        "flux-suspended",
    ),
    "storage": ("pvc-filling", "pvc-other"),
    "other workloads": ("statefulset", "daemonset", "job", "hpa"),
    "resources and quotas": ("container-resources", "quota"),
    "nodes and hosts": ("node", "host"),
    "control plane and certificates": ("control-plane", "certificate"),
    "monitoring": ("monitoring-internals", "meta"),
    "applications": ("application",),
}
_FAMILY_OF = {situation: family for family, situations in ALERT_FAMILIES.items() for situation in situations}


def family_of(row: Mapping[str, Any]) -> str:
    situation = row.get("situation")
    return "unlabelled" if situation is None else _FAMILY_OF.get(str(situation), "other")


def family_breakdown(rows: Sequence[Mapping[str, Any]], predicted: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """compute_metrics per alert family (in ALERT_FAMILIES order, then "other", "unlabelled"), with raw counts."""
    groups: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(family_of(row), []).append(i)
    order = [*ALERT_FAMILIES, "other", "unlabelled"]
    table = []
    for family in sorted(groups, key=order.index):
        idx = groups[family]
        expected = [rows[i]["expected"] for i in idx]
        preds = [predicted[i] for i in idx]
        m = compute_metrics(expected, preds)
        fn_ok = [e.get("lambda_function") == p.get("lambda_function") for e, p in zip(expected, preds)]
        table.append(
            {
                "family": family,
                "situations": sorted({str(rows[i].get("situation")) for i in idx}),
                "n": m["n"],
                "n_expected_action": m["n_expected_action"],
                "exact": sum(is_exact(e, p) for e, p in zip(expected, preds)),
                "wrong_actions": sum(p.get("lambda_function") is not None and not ok for p, ok in zip(preds, fn_ok)),
                "wrong_parameters": sum(ok and not is_exact(e, p) for e, p, ok in zip(expected, preds, fn_ok)),
                **{
                    k: m[k]
                    for k in (
                        "exact_match",
                        "action_recall",
                        "abstain_recall",
                        "wrong_action_rate",
                        "wrong_parameters_rate",
                    )
                },
            }
        )
    return table


def family_markdown(table: Sequence[Mapping[str, Any]]) -> str:
    """The breakdown as a Markdown table (rates to 4 places; "—" where a family has no such examples)."""
    header = (
        "| family | situations | n | expect an action | exact_match | wrong actions | wrong parameters "
        "| action_recall | abstain_recall |"
    )
    lines = [header, "|---|---|---|---|---|---|---|---|---|"]
    for r in table:
        n_abstain = r["n"] - r["n_expected_action"]
        recall = fmt(r["action_recall"]) if r["n_expected_action"] else "—"
        abstain = fmt(r["abstain_recall"]) if n_abstain else "—"
        lines.append(
            f"| {r['family']} | {', '.join(r['situations'])} | {r['n']} | {r['n_expected_action']} "
            f"| {fmt(r['exact_match'])} ({r['exact']}) | {r['wrong_actions']} | {r['wrong_parameters']} "
            f"| {recall} | {abstain} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# By source: one row per public repository the alerts' rules came from (models/datasets/sources)
# ---------------------------------------------------------------------------------------------
SOURCE_COLUMNS = ("n", "expect_action", "action_recall", "abstain_recall", "wrong_action_rate", "exact_match", "ece")


def source_breakdown(rows: Sequence[Mapping[str, Any]], predicted: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Metrics per `source` (held-out sources first, then calibration), plus one pooled row per role.

    A row without `source` counts as source "unlabelled". Rates with an empty denominator are None.
    """
    groups: dict[tuple[str, str], list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault((str(r.get("role", "heldout")), str(r.get("source", "unlabelled"))), []).append(i)
    order = {"heldout": 0, "calibration": 1}
    out = []
    for role in sorted({k[0] for k in groups}, key=lambda x: (order.get(x, 2), x)):
        members = sorted(k for k in groups if k[0] == role)
        keys = members + ([(role, f"all {role} sources")] if len(members) > 1 else [])
        for key in keys:
            idx = groups[key] if key in groups else [i for m in members for i in groups[m]]
            exp = [rows[i]["expected"] for i in idx]
            m = compute_metrics(exp, [predicted[i] for i in idx])
            n_act = sum(e.get("lambda_function") is not None for e in exp)
            out.append(
                {
                    "source": key[1],
                    "role": role,
                    "n": len(idx),
                    "expect_action": n_act,
                    "action_recall": m["action_recall"] if n_act else None,
                    "abstain_recall": m["abstain_recall"] if n_act < len(idx) else None,
                    "wrong_action_rate": m["wrong_action_rate"],
                    "exact_match": m["exact_match"],
                    "ece": m["ece"],
                }
            )
    return out


def source_markdown(table: Sequence[Mapping[str, Any]]) -> str:
    lines = ["| source | role | " + " | ".join(SOURCE_COLUMNS) + " |", "|---|---|" + "---|" * len(SOURCE_COLUMNS)]
    for r in table:
        cells = [str(r[c]) if isinstance(r[c], int) else ("—" if r[c] is None else fmt(r[c])) for c in SOURCE_COLUMNS]
        name = f"**{r['source']}**" if r["source"].startswith("all ") else r["source"]
        lines.append(f"| {name} | {r['role']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def evaluate_by_source(dataset: Path, selector: Any, batch_size: int = 64, quiet: bool = True) -> dict[str, Any]:
    """The `--by-source` table for one selector on a dataset file or directory (default models/datasets/sources)."""
    rows = load_dataset(dataset)
    with Progress(len(rows), "eval by source", unit="alert", quiet=quiet) as bar:
        preds, _ = run_selector(selector, rows, batch_size, progress=bar)
    return {"dataset": str(dataset), "by_source": source_breakdown(rows, preds)}
