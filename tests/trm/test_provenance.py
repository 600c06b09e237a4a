"""Every real rule that reaches training is in models/datasets/provenance.json, and held-out data never overlaps it."""

from __future__ import annotations

import ast
import json
from pathlib import Path

from models.sources.build import PROVENANCE, RULES_DIR, SOURCES_DIR, SPLIT, canonical, fname

ROOT = Path(__file__).resolve().parents[2]


def _provenance() -> dict:
    return json.loads(PROVENANCE.read_text())


def _literal_generator_names() -> set[str]:
    """Alert names written into the generator: the curated names of models/data/situations.json, read as text
    (not through the generator's code), plus any CamelCase alert-name-looking literal of the generator's modules."""
    table = json.loads((ROOT / "models" / "data" / "situations.json").read_text())["situations"]
    names = {n for s in table.values() for n in s["curated"]}
    for module in ("data.py", "builders.py", "builders_negative.py", "sources/training.py"):
        tree = ast.parse((ROOT / "models" / module).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and _looks_like_alert_name(node.value):
                names.add(node.value)
    return names


def _looks_like_alert_name(text: str) -> bool:
    """KubePodCrashLooping-like: one token, CamelCase, ends in a known condition word."""
    return (
        text.isalnum()
        and text[:1].isupper()
        and sum(c.isupper() for c in text) >= 3
        and text.endswith(("Looping", "NotReady", "FillingUp", "Failed", "Failure", "Mismatch", "Pending", "Killed"))
    )


def _provenance_names() -> set[str]:
    p = _provenance()
    names = {n for s in p["sources"] for f in s["files"] for n in f["alert_names"]}
    return names | {g["alert_name"] for g in p["generator_names"]}


def test_every_literal_alert_name_of_the_generator_is_in_the_provenance_file() -> None:
    literal = _literal_generator_names()
    assert len(literal) > 300  # the parser found the situation table
    missing = sorted(literal - _provenance_names())
    assert not missing, f"alert names in models/data.py missing from provenance.json: {missing[:20]}"


def test_data_files_hold_no_alert_names_outside_the_provenance_file() -> None:
    """models/data/*.json hold expressions and words, not alert names; the real rules used are all listed."""
    known = _provenance_names()
    for path in sorted(RULES_DIR.glob("*.json")):
        data = json.loads(path.read_text())
        assert SPLIT.get(data["repository"]) in ("train", "calibration"), path
        assert {r["alert"] for r in data["rules"]} <= known, path
    expressions = json.loads((ROOT / "models" / "data" / "expressions.json").read_text())
    assert set(expressions) == {"about", "by_situation"}


def test_each_repository_has_one_role_and_train_sources_are_listed_with_their_commit() -> None:
    p = _provenance()
    listed = {s["repository"]: s for s in p["sources"]}
    for repo, role in SPLIT.items():
        assert role in ("train", "calibration", "heldout")
        if role == "heldout":
            assert repo not in listed
        else:
            assert listed[repo]["role"] == role and len(listed[repo]["commit"]) == 40
            assert (RULES_DIR / f"{fname(repo)}.json").is_file()


def test_heldout_datasets_are_disjoint_from_the_provenance_file() -> None:
    seen = {canonical(n) for n in _provenance_names()}
    files = sorted(SOURCES_DIR.glob("*.jsonl"))
    assert files
    n_heldout = 0
    for path in files:
        for line in path.read_text().splitlines():
            row = json.loads(line)
            assert row["role"] == SPLIT[row["source"]] and row["role"] in ("heldout", "calibration")
            if row["role"] == "heldout":
                n_heldout += 1
                assert canonical(row["rule"]) not in seen, (path.name, row["rule"])
                assert canonical(row["alert"]["labels"]["alertname"]) not in seen
    assert n_heldout > 1000


def test_committed_datasets_stay_small() -> None:
    total = sum(p.stat().st_size for p in (ROOT / "models" / "datasets").rglob("*") if p.is_file())
    assert total < 9_000_000, total  # a few MB: synthetic splits are regenerated, not stored whole
