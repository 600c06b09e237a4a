"""The source split, the provenance file, and the per-source datasets of real alert rules.

    python -m models.sources.build --rules /tmp/rules      # from `models.sources.collect` output

Sources (public repositories) are split BY REPOSITORY into three roles, never two at once:
  train       their rules are instantiated into the training data (and may be copied into the generator)
  calibration held out from training; fits the confidence temperature
  heldout     never used to train or calibrate: the generalization numbers of the model card

Writes
  models/datasets/rules/<owner>__<name>.json   the rules of train and calibration sources (data only, provenance kept)
  models/datasets/sources/<owner>__<name>.jsonl firing alerts of the calibration and held-out sources, with `source`
  models/datasets/provenance.json              every real rule that reaches training or calibration, and every
                                                literal alert name of the generator with where it came from

A held-out rule whose canonical name appears in the provenance file is left out of its held-out
dataset (counted in `excluded_seen_names`), so held-out numbers are on names the model never saw.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Any

from models.sources.rules import labelled_row
from runbooks import default_catalog

HERE = Path(__file__).resolve().parent.parent
RULES_DIR = HERE / "datasets" / "rules"
SOURCES_DIR = HERE / "datasets" / "sources"
PROVENANCE = HERE / "datasets" / "provenance.json"

SPLIT: dict[str, str] = {
    "prometheus-operator/kube-prometheus": "train",
    "samber/awesome-prometheus-alerts": "train",
    "nlamirault/monitoring-mixins": "train",
    "billimek/k8s-gitops": "train",
    "prometheus-community/helm-charts": "train",
    "cloudnative-pg/cloudnative-pg": "train",
    "xUnholy/k8s-gitops": "train",
    "openshift/cluster-monitoring-operator": "calibration",
    "bjw-s/home-ops": "calibration",
    "giantswarm/prometheus-rules": "heldout",
    "sapcc/helm-charts": "heldout",
    "kubermatic/kubermatic": "heldout",
    "gardener/gardener": "heldout",
    "onedr0p/home-ops": "heldout",
    "mintel/kube-monitoring-mixins": "heldout",
}
MAX_ALERTS_PER_SOURCE = 700


def canonical(name: str) -> str:
    return "".join(c for c in name.lower() if c.isalnum())


def fname(repo: str) -> str:
    return repo.replace("/", "__")


def load_rules(directory: Path, repo: str) -> dict[str, Any]:
    return json.loads((directory / f"{fname(repo)}.json").read_text())


def generator_names() -> list[str]:
    """Every literal alert name of the generator (the curated names of the situation table)."""
    from models import data as datagen

    return sorted({n for s in datagen.SITUATIONS for n in s.curated})


def instances_per_rule(n_rules: int) -> int:
    return max(1, min(4, MAX_ALERTS_PER_SOURCE // max(1, n_rules)))


def source_rows(data: dict[str, Any], seed: int, exclude: set[str]) -> tuple[list[dict[str, Any]], int]:
    catalog = default_catalog()
    rng = random.Random(f"trm-sre:source:{seed}:{data['repository']}")
    rules = [r for r in data["rules"] if canonical(r["alert"]) not in exclude]
    k = instances_per_rule(len(rules))
    rows = [labelled_row(r, rng, catalog, data["repository"]) for r in rules for _ in range(k)]
    return rows, len(data["rules"]) - len(rules)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.sources.build", description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=Path, required=True, help="output dir of models.sources.collect")
    args = parser.parse_args(argv)
    RULES_DIR.mkdir(parents=True, exist_ok=True)
    SOURCES_DIR.mkdir(parents=True, exist_ok=True)
    all_rules = {repo: load_rules(args.rules, repo) for repo in SPLIT}

    provenance: dict[str, Any] = {"about": __doc__.split("\n\n")[1].strip(), "sources": [], "generator_names": []}
    seen: set[str] = set()
    for repo, role in SPLIT.items():
        if role == "heldout":
            continue
        data = all_rules[repo]
        (RULES_DIR / f"{fname(repo)}.json").write_text(
            json.dumps(data, separators=(",", ":"), ensure_ascii=False) + "\n"
        )
        by_path: dict[str, list[str]] = {}
        for r in data["rules"]:
            by_path.setdefault(r["path"], []).append(r["alert"])
            seen.add(canonical(r["alert"]))
        provenance["sources"].append(
            {
                "repository": repo,
                "url": f"https://github.com/{repo}",
                "commit": data["commit"],
                "role": role,
                "files": [{"path": p, "alert_names": sorted(set(n))} for p, n in sorted(by_path.items())],
            }
        )
    # Names of the generator: where each was seen (a name found in no collected rule was written for the generator).
    index: dict[str, list[str]] = {}
    for repo, data in all_rules.items():
        for r in data["rules"]:
            index.setdefault(canonical(r["alert"]), [])
            if repo not in index[canonical(r["alert"])]:
                index[canonical(r["alert"])].append(repo)
    for name in generator_names():
        found = index.get(canonical(name), [])
        provenance["generator_names"].append(
            {"alert_name": name, "seen_in": found or ["trm-sre (written for the generator)"]}
        )
        seen.add(canonical(name))
    # Held-out sources: where their evaluation alerts come from (their rules never reach training or the generator).
    provenance["heldout_sources"] = [
        {"repository": repo, "url": f"https://github.com/{repo}", "commit": all_rules[repo]["commit"]}
        for repo, role in SPLIT.items()
        if role == "heldout"
    ]
    PROVENANCE.write_text(json.dumps(provenance, indent=1, ensure_ascii=False) + "\n")

    for repo, role in SPLIT.items():
        if role == "train":
            continue
        rows, excluded = source_rows(all_rules[repo], 0, seen if role == "heldout" else set())
        path = SOURCES_DIR / f"{fname(repo)}.jsonl"
        for r in rows:
            r["role"] = role
        path.write_text("".join(json.dumps(r, separators=(",", ":"), ensure_ascii=False) + "\n" for r in rows))
        acts = sum(r["expected"]["lambda_function"] is not None for r in rows)
        print(
            f"{role:11s} {repo}: {len(rows)} alerts ({acts} expect an action) "
            f"from {len(all_rules[repo]['rules']) - excluded} rules,"
            f" {excluded} rules left out (name seen in training), {path.stat().st_size / 1e6:.2f} MB",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
