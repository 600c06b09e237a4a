"""The labelling policy is one declared table; the generator's labels come from it."""

from __future__ import annotations

import random

from models import data as datagen
from models import policy


def test_every_situation_of_the_generator_has_exactly_one_row() -> None:
    rows = [r.situation for r in policy.POLICY]
    assert len(rows) == len(set(rows))
    assert {s.key for s in datagen.SITUATIONS} == set(rows)
    table = policy.markdown_table().splitlines()
    assert len(table) == 2 + len(rows)


def test_hand_checked_decisions(catalog) -> None:
    d = policy.decide
    assert d("pod-crash", {"pod": "a-1", "namespace": "x"}) == policy.Target(
        "pod-restart", {"name": "pod", "namespace": "namespace"}, {"type": "pod"}
    )
    assert d("pod-crash", {"namespace": "x", "deployment": "a"}).function is None  # no pod label
    assert d("deployment-stuck", {"deployment": "a", "namespace": "x", "replicas": "3"}).function == "scale-deployment"
    assert d("deployment-load", {"deployment": "a", "namespace": "x"}).function is None  # no replica target
    assert d("pvc-filling", {"namespace": "x"}) == policy.Target("check-pvc-status", {"namespace": "namespace"})
    assert d("flux-generic", {"customresource_kind": "HelmChart", "name": "a"}).function is None
    t = d("flux-kustomization", {"name": "apps", "exported_namespace": "web", "namespace": "flux-system"})
    assert t == policy.Target("flux-reconcile-kustomization", {"name": "name", "namespace": "exported_namespace"})
    assert d("flux-suspended", {"kind": "Kustomization", "name": "a"}).function is None
    assert d("node", {"pod": "a", "namespace": "b"}).function is None
    e = policy.expected_decision(
        d("pod-crash", {"pod": "x; rm -rf /", "namespace": "a"}), {"pod": "x; rm -rf /", "namespace": "a"}, catalog
    )
    assert e == {"lambda_function": None, "parameters": {}}


def test_committed_synthetic_rows_carry_the_tables_decision(catalog) -> None:
    """The committed splits were labelled by the table (a stale file after a policy change fails here)."""
    for row in datagen.iter_jsonl(datagen.DATASETS_DIR / "test-heldout-names.jsonl"):
        labels = row["alert"]["labels"]
        target = policy.decide(row["situation"], labels)
        assert row["target"] == {"lambda_function": target.function, "pointers": target.pointers, "enums": target.enums}
        assert row["expected"] == policy.expected_decision(target, labels, catalog)


def test_builders_make_labels_only() -> None:
    rng = random.Random(5)
    for sit in datagen.SITUATIONS:
        draft = sit.build(rng)
        assert not hasattr(draft, "target") and isinstance(draft.labels, dict)


def test_the_runbooks_when_fields_drive_the_flux_map_and_check_the_families(catalog) -> None:
    assert policy.flux_functions(catalog) == {
        "Kustomization": "flux-reconcile-kustomization",
        "HelmRelease": "flux-reconcile-helmrelease",
        "GitRepository": "flux-reconcile-gitrepository",
    }
    policy.check_against_catalog(catalog)  # raises when a row's function does not list the row's family
    bad = policy.Rule("pvc-filling", "pod-restart", "x", family="storage")
    original = policy.POLICY
    try:
        policy.POLICY = (bad,)
        import pytest

        with pytest.raises(ValueError, match="alert family 'storage'"):
            policy.check_against_catalog(catalog)
    finally:
        policy.POLICY = original
