"""The CRD in a real apiserver: samples are accepted, broken policies are refused with a message naming the field."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from tests.envtest.controlplane import ControlPlane
from tests.operator.support import SAMPLES_DIR, Kube, policy_manifest, simple_spec

pytestmark = pytest.mark.envtest

SAMPLES = sorted(SAMPLES_DIR.glob("*.yaml"))


def test_every_sample_is_accepted_under_strict_field_validation(kube: Kube) -> None:
    res = kube.run("apply", "-n", kube.namespace, "--validate=strict", "-f", str(SAMPLES_DIR))
    names = {yaml.safe_load(p.read_text())["metadata"]["name"] for p in SAMPLES}
    assert names == {line.split()[0].split("/", 1)[1] for line in res.stdout.splitlines()}
    listed = json.loads(kube.run("get", "rp", "-n", kube.namespace, "-o", "json").stdout)["items"]
    assert {item["metadata"]["name"] for item in listed} == names


def test_defaults_from_the_schema_are_filled_in(kube: Kube) -> None:
    kube.apply(policy_manifest("defaults", {"allowedFunctions": ["pod-restart"], "chain": [{"trm": {}}]}))
    spec = kube.get_policy("defaults")["spec"]  # type: ignore[index]
    assert spec["chain"][0]["trm"] == {"minConfidence": 0.8, "maxSteps": 8, "timeoutMs": 200}
    assert spec["actions"] == {
        "dryRun": False, "cooldownSeconds": 300, "maxTriggersPerWindow": 20, "windowSeconds": 600,
        "requireApproval": False, "onResolved": "cancelPending",
    }
    assert spec["priority"] == 0 and spec["match"] == {}


def test_kubectl_explain_teaches_the_chain(control_plane: ControlPlane, crd: str) -> None:
    out = control_plane.kubectl("explain", "remediationpolicy.spec.chain").stdout
    assert "The fallback chain, tried in order" in out
    for stage in ("staticAnnotation", "trm", "functionCalling", "rules"):
        assert stage in out
    deeper = control_plane.kubectl("explain", "rp.spec.chain.trm.minConfidence").stdout
    assert "confidence is below this" in deeper


def test_short_names_and_category_resolve(control_plane: ControlPlane, crd: str) -> None:
    for name in ("rp", "rempol", "trm-sre"):
        control_plane.kubectl("get", name, "-A")


def _fc(**fields: Any) -> dict[str, Any]:
    return simple_spec(chain=[{"functionCalling": {"endpoint": "http://ollama:11434", **fields}}])


# (id, spec, substrings the apiserver's message must contain: the field, and the problem)
INVALID: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    ("empty-chain", simple_spec(chain=[]), ("spec.chain", "at least 1 items")),
    ("two-stage-types", simple_spec(chain=[{"trm": {}, "staticAnnotation": {}}]),
     ("spec.chain[0]", "exactly one of staticAnnotation, trm, functionCalling, rules")),
    ("no-stage-type", simple_spec(chain=[{}]), ("spec.chain[0]", "exactly one of")),
    ("confidence-1.5", simple_spec(chain=[{"trm": {"minConfidence": 1.5}}]),
     ("spec.chain[0].trm.minConfidence", "less than or equal to 1")),
    ("negative-cooldown", simple_spec(actions={"cooldownSeconds": -1}),
     ("spec.actions.cooldownSeconds", "greater than or equal to 0")),
    ("unknown-api", _fc(api="anthropic"), ("spec.chain[0].functionCalling.api", "Unsupported value", "ollama")),
    ("approval-without-timeout", simple_spec(actions={"requireApproval": True}),
     ("spec.actions.approvalTimeoutSeconds", "requireApproval needs approvalTimeoutSeconds")),
    ("typo-top-level", {**simple_spec(), "chian": []}, ('unknown field "spec.chian"',)),
    ("typo-in-stage", simple_spec(chain=[{"trm": {"minConfidense": 0.9}}]), ('unknown field "spec.chain[0].trm.minConfidense"',)),
    ("missing-allowed-functions", {k: v for k, v in simple_spec().items() if k != "allowedFunctions"},
     ("spec.allowedFunctions", "Required value")),
    ("empty-allowed-functions", simple_spec(allowedFunctions=[]), ("spec.allowedFunctions", "at least 1 items")),
    ("duplicate-allowed-function", simple_spec(allowedFunctions=["pod-restart", "pod-restart"]),
     ("spec.allowedFunctions[1]", "Duplicate value")),
    ("empty-rules-stage", simple_spec(chain=[{"rules": []}]), ("spec.chain[0].rules", "at least 1 items")),
    ("rule-without-function", simple_spec(chain=[{"rules": [{"parameters": {}}]}]),
     ("spec.chain[0].rules[0].function", "Required value")),
    ("rule-function-not-allowed", simple_spec(chain=[{"rules": [{"function": "scale-deployment"}]}]),
     ("spec.chain", "must also be listed in spec.allowedFunctions")),
    ("max-steps-0", simple_spec(chain=[{"trm": {"maxSteps": 0}}]), ("spec.chain[0].trm.maxSteps", "greater than or equal to 1")),
    ("endpoint-scheme", _fc(endpoint="ftp://ollama:11434"), ("spec.chain[0].functionCalling.endpoint", "should match", "https?")),
    ("endpoint-missing", simple_spec(chain=[{"functionCalling": {"model": "x"}}]),
     ("spec.chain[0].functionCalling.endpoint", "Required value")),
    ("sink-scheme", simple_spec(actions={"sink": "broker.default"}), ("spec.actions.sink", "should match")),
    ("matcher-op", simple_spec(match={"matchers": [{"label": "a", "op": "==", "value": "b"}]}),
     ("spec.match.matchers[0].op", "Unsupported value")),
    ("priority-too-high", simple_spec(priority=5000), ("spec.priority", "less than or equal to 1000")),
    ("target-namespace-not-a-name", simple_spec(targetNamespaces=["Shop_NS"]), ("spec.targetNamespaces[0]", "should match")),
    ("on-resolved", simple_spec(actions={"onResolved": "delete"}), ("spec.actions.onResolved", "Unsupported value")),
    ("chain-too-long", simple_spec(chain=[{"trm": {}}] * 9), ("spec.chain", "at most 8 items")),
]


@pytest.mark.parametrize(("spec", "expected"), [pytest.param(s, e, id=i) for i, s, e in INVALID])
def test_apiserver_refuses_invalid_policy_naming_the_problem(kube: Kube, spec: dict[str, Any], expected: tuple[str, ...]) -> None:
    res = kube.apply(policy_manifest("invalid", spec), check=False)
    assert res.returncode != 0, f"accepted: {res.stdout}"
    for text in expected:
        assert text in res.stderr, f"{text!r} not in: {res.stderr}"
    assert kube.get_policy("invalid") is None


def test_a_policy_without_spec_is_refused(kube: Kube) -> None:
    manifest = yaml.safe_dump({"apiVersion": "remediation.homelab.io/v1alpha1", "kind": "RemediationPolicy", "metadata": {"name": "x"}})
    res = kube.apply(manifest, check=False)
    assert res.returncode != 0 and "spec: Required value" in res.stderr


def test_unknown_fields_are_refused_by_default_and_only_dropped_when_validation_is_off(kube: Kube) -> None:
    manifest = policy_manifest("typo", {**simple_spec(), "alowedFunctions": ["x"]})
    # kubectl's default is strict server-side field validation: no flag needed.
    default = kube.apply(manifest, check=False)
    assert default.returncode != 0 and 'unknown field "spec.alowedFunctions"' in default.stderr
    # Only an explicit --validate=false (fieldValidation=Ignore) gets through, and then the
    # apiserver prunes the unknown field rather than storing it: the schema has no
    # preserve-unknown-fields anywhere.
    kube.apply(manifest, "--validate=false")
    assert "alowedFunctions" not in kube.get_policy("typo")["spec"]  # type: ignore[index]
