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
    assert d("pod-crash", {"pod": "a-1", "namespace": "x"}) == policy.Target("pod-restart", {"name": "pod", "namespace": "namespace"}, {"type": "pod"})
    assert d("pod-crash", {"namespace": "x", "deployment": "a"}).function is None            # no pod label
    assert d("deployment-stuck", {"deployment": "a", "namespace": "x", "replicas": "3"}).function == "scale-deployment"
    assert d("deployment-load", {"deployment": "a", "namespace": "x"}).function is None       # no replica target
    assert d("pvc-filling", {"namespace": "x"}) == policy.Target("check-pvc-status", {"namespace": "namespace"})
    assert d("flux-generic", {"customresource_kind": "HelmChart", "name": "a"}).function is None
    t = d("flux-kustomization", {"name": "apps", "exported_namespace": "web", "namespace": "flux-system"})
    assert t == policy.Target("flux-reconcile-kustomization", {"name": "name", "namespace": "exported_namespace"})
    assert d("flux-suspended", {"kind": "Kustomization", "name": "a"}).function is None
    assert d("node", {"pod": "a", "namespace": "b"}).function is None
    e = policy.expected_decision(d("pod-crash", {"pod": "x; rm -rf /", "namespace": "a"}), {"pod": "x; rm -rf /", "namespace": "a"}, catalog)
    assert e == {"lambda_function": None, "parameters": {}}


def test_the_builders_labels_get_the_same_decision_as_their_former_targets(catalog) -> None:
    """The builders still carry the targets they were written with; the table must agree with all of them."""
    rng = random.Random(5)
    for sit in datagen.SITUATIONS:
        for _ in range(150):
            draft = sit.build(rng)
            a = policy.expected_decision(draft.target, draft.labels, catalog)
            b = policy.expected_decision(policy.decide(sit.key, draft.labels), draft.labels, catalog)
            assert a == b, (sit.key, draft.labels)


def test_the_runbooks_when_fields_drive_the_flux_map_and_check_the_families(catalog) -> None:
    assert policy.flux_functions(catalog) == {"Kustomization": "flux-reconcile-kustomization",
                                              "HelmRelease": "flux-reconcile-helmrelease",
                                              "GitRepository": "flux-reconcile-gitrepository"}
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
