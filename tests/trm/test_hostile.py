"""Hostile input never crashes the selector, and a parameter failing validation is never emitted."""

from __future__ import annotations

import pytest

from models.selector import TRMSelector

SHELL = ["x; rm -rf /", "$(reboot)", "../../etc/passwd", "`id`", "a|b", "web\nnewline", "..", "-rf", "UPPER"]


def hostile_alerts() -> list:
    big = {f"label_{i}": f"value-{i}" for i in range(10_000)}
    return [
        {},
        {"labels": {}},
        {"labels": None, "annotations": None},
        "not a mapping",
        {"labels": big | {"alertname": "KubePodCrashLooping", "pod": "api-7d9f8c6b5-x2k4q", "namespace": "shop"}},
        {"labels": {"alertname": "KubePodCrashLooping", "pod": "api-1", "namespace": "shop"}, "annotations": {"description": "A" * 1_000_000}},
        {"labels": {"alertname": b"\xff\xfe KubePodCrashLooping", "pod": b"\xc3\x28bad", "namespace": "shop"}},
        {"labels": {"alertname": "KubePodCrashLooping", "pod": "caf\udce9", "namespace": "shop"}},
        {"labels": {"alertname": 12345, "pod": 7, "namespace": None, 3: ["list"], "x": {"nested": 1}}},
        {"labels": {"alertname": "DeploymentNeedsScaling", "deployment": "api", "namespace": "shop", "replicas": "99999999"}},
        {"labels": {"alertname": "DeploymentNeedsScaling", "deployment": "api", "namespace": "shop", "replicas": 3.7}},
    ] + [
        {"labels": {"alertname": name, key: value, "namespace": ns}}
        for value in SHELL
        for name, key, ns in (("KubePodCrashLooping", "pod", "shop"), ("FluxKustomizationNotReady", "name", value),
                              ("KubePersistentVolumeFillingUp", "persistentvolumeclaim", "shop"))
    ]


def _check(selector: TRMSelector, catalog) -> None:
    alerts = hostile_alerts()
    decisions = selector.select_batch(alerts) + [selector.select(a) for a in alerts]
    for d in decisions:
        assert 0.0 <= d.confidence <= 1.0
        if d.lambda_function is not None:
            assert catalog.validate_call(d.lambda_function, d.parameters) == d.parameters
            for v in d.parameters.values():
                assert not any(bad in str(v) for bad in (";", "$", "`", "|", "/", "\n", " ")), d


def test_hostile_inputs_with_a_tiny_model(tiny_model, catalog):
    _check(TRMSelector(tiny_model, catalog), catalog)


def test_hostile_inputs_with_the_committed_checkpoint(committed_selector, catalog):
    _check(committed_selector, catalog)
    d = committed_selector.select({"labels": {"alertname": "KubePodCrashLooping", "pod": "x; rm -rf /", "namespace": "shop"}})
    assert d.lambda_function is None


@pytest.mark.parametrize("bad", SHELL)
def test_invalid_values_become_abstentions(committed_selector, bad):
    d = committed_selector.select({"labels": {"alertname": "KubePodCrashLooping", "pod": bad, "namespace": "shop", "container": "c"}})
    assert d.lambda_function is None and d.parameters == {}
