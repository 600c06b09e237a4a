"""AlertMatch semantics (as Alertmanager's), shared by policies and rules."""

from __future__ import annotations

import pytest

from controller.decision import matching
from controller.decision.matching import CompiledMatch, alert_matches, compile_match
from controller.schemas.policy import AlertMatch

LABELS = {"alertname": "KubePodCrashLooping", "namespace": "shop", "pod": "cart-7f9", "severity": "warning"}


def m(**spec: object) -> AlertMatch:
    return AlertMatch.model_validate(spec)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({}, True),
        ({"alertNames": ["KubePodCrashLooping"]}, True),
        ({"alertNames": ["KubePodNotReady", "KubePodCrashLooping"]}, True),
        ({"alertNames": ["KubePodCrash"]}, False),
        ({"alertNameRegex": "KubePod.*"}, True),
        ({"alertNameRegex": "Crash"}, False),  # anchored: fullmatch, not search
        ({"alertNameRegex": ".*Crash.*"}, True),
        ({"alertNameRegex": "kubepodcrashlooping"}, False),
        ({"severities": ["warning", "critical"]}, True),
        ({"severities": ["critical"]}, False),
        ({"severities": ["Warning"]}, False),
        ({"matchers": [{"label": "namespace", "value": "shop"}]}, True),
        ({"matchers": [{"label": "namespace", "op": "=", "value": "web"}]}, False),
        ({"matchers": [{"label": "namespace", "op": "!=", "value": "web"}]}, True),
        ({"matchers": [{"label": "namespace", "op": "=~", "value": "sh.*"}]}, True),
        ({"matchers": [{"label": "namespace", "op": "=~", "value": "h"}]}, False),
        ({"matchers": [{"label": "namespace", "op": "!~", "value": "kube-.*"}]}, True),
        ({"matchers": [{"label": "deployment", "op": "=", "value": ""}]}, True),  # missing label = ""
        ({"matchers": [{"label": "deployment", "op": "!=", "value": ""}]}, False),
        ({"matchers": [{"label": "deployment", "op": "=~", "value": ".+"}]}, False),
        ({"matchers": [{"label": "deployment", "op": "!~", "value": ".+"}]}, True),
        ({"alertNames": ["KubePodCrashLooping"], "severities": ["critical"]}, False),  # every criterion must hold
        (
            {
                "alertNames": ["KubePodCrashLooping"],
                "alertNameRegex": "Kube.*",
                "severities": ["warning"],
                "matchers": [{"label": "pod", "op": "=~", "value": "cart-.*"}],
            },
            True,
        ),
    ],
)
def test_match_semantics_follow_alertmanager(spec: dict, expected: bool) -> None:
    assert alert_matches(m(**spec), LABELS) is expected
    assert CompiledMatch.of(m(**spec)).matches(LABELS) is expected


def test_specificity_counts_every_criterion() -> None:
    spec = m(alertNames=["a", "b"], alertNameRegex="x", severities=["warning"], matchers=[{"label": "a", "value": "b"}])
    assert compile_match(spec).specificity == 5
    assert compile_match(m()).specificity == 0


def test_regexes_are_compiled_once_per_pattern() -> None:
    matching.compile_anchored.cache_clear()
    for _ in range(50):
        CompiledMatch.of(
            m(
                alertNameRegex="Kube(Pod|Deployment).*",
                matchers=[{"label": "namespace", "op": "=~", "value": "shop|web"}],
            )
        )
    info = matching.compile_anchored.cache_info()
    assert info.misses == 2
    assert info.hits == 98


def test_fingerprints_are_derived_from_the_labels_exactly_as_alertmanager_does() -> None:
    # Issue #13.9: the fixtures are real Alertmanager payloads; their fingerprints are model.LabelSet.Fingerprint()
    # (FNV-1a 64 over sorted names and values, 0xff-separated), and the incident key derives the same value.
    import json
    from pathlib import Path

    from controller.schemas.alerts import Alert, label_fingerprint

    fixtures = sorted((Path(__file__).resolve().parents[2] / "fixtures" / "alerts").glob("*.json"))
    seen = 0
    for path in fixtures:
        for raw in json.loads(path.read_text()).get("alerts", []):
            assert label_fingerprint(raw["labels"]) == raw["fingerprint"], path.name
            forged = {**raw, "fingerprint": "0123456789abcdef"}
            assert Alert.model_validate(forged).effective_fingerprint() == raw["fingerprint"]
            seen += 1
    assert seen >= 5
    assert label_fingerprint({}) == "cbf29ce484222325"  # prometheus/common: emptyLabelSignature
