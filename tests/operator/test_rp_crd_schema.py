"""The CRD and the pydantic PolicySpec describe the same object, and every sample is a valid policy.

No apiserver needed: these compare the two schemas as data, so a field added
to one and not the other fails here before it can surprise a user.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import pytest
import yaml

from controller.decision.policy_checks import check_policy
from controller.engine.policy_stats import COUNTER_NAMES, RecordKind, last_decision_of
from controller.schemas.policy import PolicySpec
from runbooks import default_catalog

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD = yaml.safe_load((REPO_ROOT / "crds" / "remediationpolicy.yaml").read_text())
VERSION = CRD["spec"]["versions"][0]
ROOT = VERSION["schema"]["openAPIV3Schema"]
SPEC = ROOT["properties"]["spec"]
STATUS = ROOT["properties"]["status"]
SAMPLES = sorted((REPO_ROOT / "deploy" / "samples").glob("*.yaml"))
BOUNDS = ("minimum", "maximum", "minLength", "maxLength", "minItems", "maxItems", "pattern")

# Bounds only the CRD sets. The apiserver needs length and item limits to
# estimate CEL costs and to keep objects small; pydantic has none of these yet
# (standalone mode accepts what the cluster would refuse). Listed so that any
# other difference fails, and so that they can move into policy.py.
CRD_ONLY = {
    ("spec.match.alertNames", "maxItems"),
    ("spec.match.alertNames[]", "maxLength"),
    ("spec.match.alertNameRegex", "maxLength"),
    ("spec.match.matchers", "maxItems"),
    ("spec.match.severities", "maxItems"),
    ("spec.match.severities[]", "maxLength"),
    ("spec.targetNamespaces", "maxItems"),
    ("spec.allowedFunctions[]", "minLength"),
    ("spec.allowedFunctions[]", "maxLength"),
    ("spec.chain[].rules[].match.alertNames", "maxItems"),
    ("spec.chain[].rules[].match.alertNames[]", "maxLength"),
    ("spec.chain[].rules[].match.alertNameRegex", "maxLength"),
    ("spec.chain[].rules[].match.matchers", "maxItems"),
    ("spec.chain[].rules[].match.severities", "maxItems"),
    ("spec.chain[].rules[].match.severities[]", "maxLength"),
    ("spec.chain[].rules[].parameters{}", "maxLength"),
}


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Follow $ref and drop pydantic's `anyOf [X, null]` for optional fields."""
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        assert len(options) == 1, node
        node = {**{k: v for k, v in node.items() if k != "anyOf"}, **options[0]}
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _resolve(node, defs)
    return node


def _compare(
    crd: dict[str, Any], py: dict[str, Any], path: str, defs: dict[str, Any], found: list[str], crd_only: set
) -> None:
    py = _resolve(py, defs)
    where = path or "spec"
    if "type" in py:
        assert crd.get("type") == py["type"], f"{where}: type {crd.get('type')} != {py['type']}"
    if "enum" in py:
        assert crd.get("enum") == py["enum"], f"{where}: enum {crd.get('enum')} != {py['enum']}"
    for bound in BOUNDS:
        if bound in py:
            assert crd.get(bound) == py[bound], f"{where}: {bound} {crd.get(bound)} != {py[bound]}"
        elif bound in crd:
            crd_only.add((where, bound))
    default = py.get("default")
    if default not in (None, [], {}) and not isinstance(default, dict):
        assert crd.get("default") == default, f"{where}: default {crd.get('default')!r} != {default!r}"
    if "default" in crd and not isinstance(crd["default"], dict):
        assert crd["default"] == default, f"{where}: CRD default {crd['default']!r} but pydantic {default!r}"
    if isinstance(default, dict):
        assert crd.get("default") == {}, f"{where}: an optional object defaults to {{}} so its fields' defaults apply"
    if py.get("type") == "object" and "properties" in py:
        assert set(crd.get("properties", {})) == set(py["properties"]), f"{where}: properties differ"
        assert set(crd.get("required", [])) == set(py.get("required", [])), f"{where}: required differs"
        for name, sub in py["properties"].items():
            found.append(f"{path}.{name}" if path else name)
            _compare(crd["properties"][name], sub, f"{where}.{name}", defs, found, crd_only)
    elif py.get("type") == "object" and isinstance(py.get("additionalProperties"), dict):
        _compare(crd["additionalProperties"], py["additionalProperties"], f"{where}{{}}", defs, found, crd_only)
    elif py.get("type") == "array":
        _compare(crd["items"], py["items"], f"{where}[]", defs, found, crd_only)


def test_crd_spec_schema_mirrors_the_pydantic_model_recursively() -> None:
    py = PolicySpec.model_json_schema(by_alias=True)
    found: list[str] = []
    crd_only: set = set()
    _compare(SPEC, py, "", py["$defs"], found, crd_only)
    assert len(found) > 40  # the walk really went down into stages, rules and matchers
    assert crd_only == CRD_ONLY


def _walk(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = [(path, node)]
    for name, sub in (node.get("properties") or {}).items():
        out += _walk(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        out += _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        out += _walk(node["additionalProperties"], f"{path}{{}}")
    return out


def test_no_field_of_spec_or_status_lets_unknown_fields_through() -> None:
    for path, node in _walk(ROOT):
        assert "x-kubernetes-preserve-unknown-fields" not in node, path


def test_every_spec_and_status_field_is_documented_for_kubectl_explain() -> None:
    missing = [path for path, node in _walk(SPEC, "spec") + _walk(STATUS, "status") if not node.get("description")]
    # Map values ({}) and list items of plain strings describe themselves through their parent.
    missing = [p for p in missing if not (p.endswith("{}") or (p.endswith("[]") and "properties" not in _node(p)))]
    assert missing == []


def _node(path: str) -> dict[str, Any]:
    return dict(_walk(SPEC, "spec") + _walk(STATUS, "status"))[path]


def test_crd_names_scope_and_printer_columns() -> None:
    names = CRD["spec"]["names"]
    assert CRD["metadata"]["name"] == "remediationpolicies.remediation.homelab.io"
    assert (names["kind"], names["shortNames"], names["categories"]) == (
        "RemediationPolicy",
        ["rp", "rempol"],
        ["trm-sre"],
    )
    assert CRD["spec"]["scope"] == "Namespaced"
    assert [v["name"] for v in CRD["spec"]["versions"]] == ["v1alpha1"]
    assert VERSION["served"] and VERSION["storage"] and VERSION["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in VERSION["additionalPrinterColumns"]}
    assert columns == {
        "Mode": ".status.mode",
        "Functions": ".status.allowedFunctionCount",
        "Triggers": ".status.counters.triggers",
        "Last-Decision": ".status.lastDecision.time",
        "Ready": '.status.conditions[?(@.type=="Ready")].status',
        "Age": ".metadata.creationTimestamp",
    }


def test_status_schema_matches_what_the_recorder_writes() -> None:
    from datetime import UTC, datetime

    from controller.schemas.decision import Decision

    props = STATUS["properties"]
    assert set(props) == {
        "observedGeneration",
        "mode",
        "allowedFunctionCount",
        "conditions",
        "counters",
        "lastDecision",
        "outcomes",
    }
    assert set(props["counters"]["properties"]) == set(COUNTER_NAMES)
    from controller.engine.store.outcomes_sql import FINAL_STATES

    per_function = props["outcomes"]["additionalProperties"]["properties"]
    assert set(per_function) == {*FINAL_STATES, "successRate", "circuit"}
    assert props["lastDecision"]["properties"]["outcome"]["enum"] == list(get_args(RecordKind))
    decision = Decision(
        id="d",
        incident_key="k",
        fingerprint="f",
        alertname="A",
        policy="ns/p",
        outcome="trigger",
        function="pod-restart",
        stage="rules",
        confidence=1.0,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    assert set(last_decision_of(decision, "trigger")) == set(props["lastDecision"]["properties"])
    assert set(props["conditions"]["items"]["properties"]) == {
        "type",
        "status",
        "reason",
        "message",
        "lastTransitionTime",
        "observedGeneration",
    }


@pytest.mark.parametrize("sample", SAMPLES, ids=[p.name for p in SAMPLES])
def test_sample_is_a_valid_policy_for_pydantic_and_the_operator(sample: Path) -> None:
    docs = [d for d in yaml.safe_load_all(sample.read_text()) if d]
    assert docs, f"{sample} holds no object"
    text = sample.read_text()
    assert text.lstrip().startswith("#"), f"{sample.name} must open with a comment saying what it is for"
    for doc in docs:
        assert doc["apiVersion"] == "remediation.homelab.io/v1alpha1" and doc["kind"] == "RemediationPolicy"
        assert "namespace" not in doc["metadata"], "samples are applied with -n; they must not pin a namespace"
        PolicySpec.model_validate(doc["spec"])
        result = check_policy("samples", doc["metadata"]["name"], 1, doc["spec"], default_catalog())
        assert result.policy is not None, [str(p) for p in result.problems]


def test_samples_cover_the_documented_cases() -> None:
    specs = {p.stem: yaml.safe_load(p.read_text())["spec"] for p in SAMPLES}
    assert {"flux", "pods", "storage", "approval", "function-calling"} <= set(specs)
    assert specs["flux"]["targetNamespaces"] == ["*"]
    pods_trm = [s["trm"] for s in specs["pods"]["chain"] if "trm" in s]
    assert pods_trm and pods_trm[0]["minConfidence"] == 0.8 and "rules" in specs["pods"]["chain"][-1]
    assert specs["storage"]["actions"]["dryRun"] is True and specs["storage"]["allowedFunctions"] == [
        "check-pvc-status"
    ]
    assert specs["approval"]["actions"]["requireApproval"] is True
    calling = [s["functionCalling"] for s in specs["function-calling"]["chain"] if "functionCalling" in s]
    assert calling and calling[0]["api"] == "ollama" and calling[0]["model"] == "functiongemma"
    fallbacks = [v for p in SAMPLES for v in _templates(yaml.safe_load(p.read_text())["spec"]) if "|" in v]
    assert any('"flux-system"' in v for v in fallbacks)


def _templates(spec: dict[str, Any]) -> list[str]:
    return [
        v for stage in spec["chain"] for rule in stage.get("rules", ()) for v in rule.get("parameters", {}).values()
    ]
