"""The NetworkPolicy overlay lets the controller reach Alertmanager's API (silences, issue #16), and only it."""

from __future__ import annotations

from typing import Any

import yaml

from tests.packaging.helpers import REPO

NETWORKPOLICY = REPO / "deploy" / "overlays" / "networkpolicy" / "networkpolicy.yaml"


def _egress() -> list[dict[str, Any]]:
    doc = yaml.safe_load(NETWORKPOLICY.read_text())
    assert doc["kind"] == "NetworkPolicy"
    assert "Egress" in doc["spec"]["policyTypes"]
    return list(doc["spec"]["egress"])


def test_egress_to_alertmanager_api_in_monitoring() -> None:
    rules = [
        r
        for r in _egress()
        if any(
            peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name") == "monitoring"
            for peer in r.get("to", [])
        )
    ]
    assert len(rules) == 1, rules
    rule = rules[0]
    assert rule["ports"] == [{"protocol": "TCP", "port": 9093}]
    (peer,) = rule["to"]
    assert peer["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "alertmanager"}


def test_no_other_rule_opens_9093() -> None:
    opening = [r for r in _egress() if any(p.get("port") == 9093 for p in r.get("ports", []))]
    assert len(opening) == 1
