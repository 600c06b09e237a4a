"""Training data that looks like other people's rules: the TRAIN sources' real rules, and expressions.

- `real_rows(n, seed)`: firing alerts instantiated from the rules of the *train* sources only
  (models/datasets/rules, role train in `models.sources.build.SPLIT`), with the augmentations
  seen in the wild: env/product prefixes and suffixes on names, many routing/ownership labels,
  annotations rewritten with line breaks and `kubectl` hints. Rules that can act are oversampled (15x).
- `expression_for(situation, labels, rng)`: a PromQL expression for a synthetic alert, for its
  `generatorURL`: a written template of `models/data/expressions.json`, or the expression of a
  train-source rule of the same situation.
"""

from __future__ import annotations

import json
import random
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from models.sources.build import RULES_DIR, SPLIT, fname
from models.sources.rules import labelled_row, situation_of

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
ACTING = {
    "pod-crash",
    "pod-waiting",
    "deployment-stuck",
    "pvc-filling",
    "flux-generic",
    "flux-kustomization",
    "flux-helmrelease",
    "flux-gitrepository",
    "scale-request",
    "deployment-load",
}


@lru_cache(maxsize=1)
def train_rules() -> tuple[tuple[str, dict[str, Any]], ...]:
    out = []
    for repo, role in SPLIT.items():
        if role != "train":
            continue
        path = RULES_DIR / f"{fname(repo)}.json"
        if path.is_file():
            for r in json.loads(path.read_text())["rules"]:
                out.append((repo, r | {"situation": situation_of(r)}))
    return tuple(out)


@lru_cache(maxsize=1)
def templates() -> dict[str, list[str]]:
    return json.loads((DATA_DIR / "expressions.json").read_text())["by_situation"]


@lru_cache(maxsize=1)
def _real_expressions() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for _, r in train_rules():
        out.setdefault(r["situation"], []).append(r["expr"])
    return out


def expression_for(situation: str, labels: dict[str, Any], rng: random.Random) -> str:
    written = templates().get(situation, [])
    real = _real_expressions().get(situation, [])
    if situation.startswith("flux") and written:  # the kind in the expression must agree with the labels
        real = []
    pool = written if (written and (not real or rng.random() < 0.6)) else real
    if not pool:
        return "up == 0"
    expr = rng.choice(pool)
    kind = (
        labels.get("kind")
        or labels.get("customresource_kind")
        or {
            "flux-kustomization": "Kustomization",
            "flux-helmrelease": "HelmRelease",
            "flux-gitrepository": "GitRepository",
        }.get(situation, "HelmRepository")
    )
    ns = labels.get("namespace") or "default"
    return expr.replace("{kind}", str(kind)).replace("{ns}", str(ns))


_PREFIXES = (
    "Prod",
    "Staging",
    "WorkloadCluster",
    "ManagementCluster",
    "Platform",
    "Team",
    "MyApp",
    "Shop",
    "K8s",
    "Cluster",
    "Observability",
    "Edge",
    "Internal",
    "Customer",
    "Atlas",
    "Tenant",
    "Infra",
    "Homelab",
    "Core",
    "Payments",
)
_SUFFIXES = (
    "Critical",
    "Warning",
    "Prod",
    "Page",
    "Info",
    "TooLong",
    "Alert",
    "Detected",
    "Ticket",
    "Sev2",
    "EU",
    "Notify",
)


def augment_name(name: str, rng: random.Random) -> str:
    r = rng.random()
    if r < 0.25:
        name = rng.choice(_PREFIXES) + name
    elif r < 0.35:
        name = rng.choice(_PREFIXES).lower() + rng.choice(["_", "-", ":"]) + name
    if rng.random() < 0.25:
        name = name + rng.choice(_SUFFIXES)
    if rng.random() < 0.08:
        name = re.sub(r"(?<!^)(?=[A-Z][a-z])", "_", name).lower()
    return name


def augment_annotations(ann: dict[str, str], labels: dict[str, Any], rng: random.Random) -> dict[str, str]:
    out = dict(ann)
    if "description" in out and rng.random() < 0.3:
        ns, pod = labels.get("namespace", "default"), labels.get("pod") or labels.get("deployment") or "NAME"
        out["description"] += rng.choice(
            [
                f"\n\nTo investigate:\n  kubectl -n {ns} describe pod {pod}\n  kubectl -n {ns} logs {pod} --previous",
                f"\nCheck with `kubectl get events -n {ns}`.",
                "\nDashboard: https://grafana.example.com/d/abc123",
                "\n\nThis alert is routed to the on-call engineer of the owning team.",
            ]
        )
    if rng.random() < 0.2:
        out.pop("summary", None)
    if rng.random() < 0.1:
        out = {"message": out.get("description") or out.get("message") or out.get("summary", "")}
    return out


def real_rows(n: int, seed: int, catalog: Any) -> list[dict[str, Any]]:
    """`n` labelled alerts from the train sources' rules, acting rules drawn 15x as often."""
    rules = train_rules()
    if not rules:
        return []
    rng = random.Random(f"trm-sre:real:{seed}")
    weights = [15.0 if r["situation"] in ACTING else 1.0 for _, r in rules]
    out = []
    for _ in range(n):
        repo, rule = rng.choices(rules, weights)[0]
        if rng.random() < 0.6:
            rule = rule | {"alert": augment_name(rule["alert"], rng)}
        row = labelled_row(rule, rng, catalog, repo, routing=rng.choice([0.0, 0.35, 0.8, 1.5, 2.5]))
        row["alert"]["annotations"] = augment_annotations(row["alert"]["annotations"], row["alert"]["labels"], rng)
        if rng.random() < 0.12:  # alerts without the expression: the name, labels and text must carry it alone
            row["alert"]["generatorURL"] = ""
        out.append(row)
    return out
