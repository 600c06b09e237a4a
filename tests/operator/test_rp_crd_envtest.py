"""The CRD in a real apiserver: samples are accepted, broken policies are refused with a message naming the field."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from tests.envtest.controlplane import ControlPlane
from tests.operator.support import CRD_FILE, SAMPLES_DIR, Kube, policy_manifest, simple_spec, wait_for

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
        "dryRun": False,
        "cooldownSeconds": 300,
        "maxTriggersPerWindow": 20,
        "windowSeconds": 600,
        "requireApproval": False,
        "onResolved": "cancelPending",
        "verify": {"windowSeconds": 900, "recurrenceSeconds": 1800},
        "circuitBreaker": {"failures": 3, "windowSeconds": 3600, "cooldownSeconds": 1800},
        "silence": {"enabled": False, "maxSeconds": 3600, "severities": ["warning", "critical"]},
    }
    assert spec["priority"] == 0 and spec["match"] == {}


def _crd_doc() -> dict[str, Any]:
    return yaml.safe_load(CRD_FILE.read_text(encoding="utf-8"))


def _schema_at(path: str) -> dict[str, Any]:
    """The CRD's schema node at a dotted path, stepping into list items as `kubectl explain` does."""
    node = _crd_doc()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for name in path.split("."):
        node = node["properties"][name]
        if node.get("type") == "array" and "properties" in node.get("items", {}):
            node = {**node["items"], "description": node.get("description", "")}
    return node


def _flat(text: str) -> str:
    return " ".join(text.split())


def _explain(control_plane: ControlPlane, *args: str) -> str:
    """`kubectl explain`, once the apiserver publishes the CRD's OpenAPI (a moment after Established)."""

    def attempt() -> str | None:
        res = control_plane.kubectl("explain", *args, check=False)
        if res.returncode != 0 and "couldn't find resource" not in res.stderr:
            raise AssertionError(f"kubectl explain {' '.join(args)} failed: {res.stderr}")
        return res.stdout if res.returncode == 0 else None

    return wait_for(f"kubectl explain {' '.join(args)}", attempt)


# Every object in the schema with fields of its own.
EXPLAINED = [
    "spec",
    "spec.match",
    "spec.match.matchers",
    "spec.chain",
    "spec.chain.trm",
    "spec.chain.functionCalling",
    "spec.chain.functionCalling.secretRef",
    "spec.chain.rules",
    "spec.chain.rules.match",
    "spec.actions",
    "status",
    "status.conditions",
    "status.counters",
    "status.lastDecision",
]


@pytest.mark.parametrize("path", EXPLAINED)
def test_kubectl_explain_shows_every_field_with_its_description(
    control_plane: ControlPlane, crd: str, path: str
) -> None:
    """`kubectl explain` serves the CRD's own text: each field's name, type, description, enum and required mark."""
    plural = _crd_doc()["spec"]["names"]["plural"]
    out = _explain(control_plane, f"{plural}.{path}")
    flat = _flat(out)
    node = _schema_at(path)
    assert _flat(node["description"]) in flat, f"{path}: its own description is missing:\n{out}"
    required = set(node.get("required") or ())
    for name, child in node["properties"].items():
        line = re.search(rf"^  {re.escape(name)}\t<(?P<type>[^>]+)>(?P<req> -required-)?$", out, re.MULTILINE)
        assert line, f"{path}.{name} is not listed:\n{out}"
        assert bool(line["req"]) == (name in required), f"{path}.{name}: required mark"
        assert _flat(child["description"]) in flat, f"{path}.{name}: description missing:\n{out}"
        if "enum" in child:
            # kubectl prints the first four values, then "....".
            shown = ", ".join(str(v) for v in child["enum"][:4]) + (", ...." if len(child["enum"]) > 4 else "")
            assert f"enum: {shown}" in flat, f"{path}.{name}: enum missing"


def test_kubectl_explain_reaches_leaves_through_a_short_name(control_plane: ControlPlane, crd: str) -> None:
    short = _crd_doc()["spec"]["names"]["shortNames"][0]
    for path in ("spec.chain.trm.minConfidence", "spec.actions.onResolved", "status.lastDecision.decisionId"):
        out = _explain(control_plane, f"{short}.{path}")
        assert _flat(_schema_at(path)["description"]) in _flat(out), path
    recursive = _explain(control_plane, f"{short}.spec", "--recursive")
    for name in ("staticAnnotation", "functionCalling", "secretRef", "alertNameRegex", "maxTriggersPerWindow"):
        assert re.search(rf"^\s+{name}\t<", recursive, re.MULTILINE), name


def test_short_names_and_categories_list_the_policies(kube: Kube) -> None:
    names = _crd_doc()["spec"]["names"]
    assert names["shortNames"] and names["categories"]
    kube.apply(policy_manifest("listed", simple_spec()))
    expected = [f"{names['kind'].lower()}.{_crd_doc()['spec']['group']}/listed"]
    for resource in (*names["shortNames"], *names["categories"], names["plural"], names["singular"]):
        assert kube.run("get", resource, "-n", kube.namespace, "-o", "name").stdout.split() == expected, resource


def test_printer_columns_show_the_status(kube: Kube) -> None:
    """`kubectl get rp` shows each additionalPrinterColumn of the CRD, filled from a status the subresource wrote."""
    kube.apply(
        policy_manifest(
            "columns", simple_spec(allowedFunctions=["pod-restart", "pod-check-status"], actions={"dryRun": True})
        )
    )
    decided = datetime.now(UTC) - timedelta(hours=30, minutes=10)  # kubectl prints 30h anywhere in [30h, 31h)
    status = {
        "observedGeneration": 1,
        "mode": "dry-run",
        "allowedFunctionCount": 2,
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Indexed",
                "message": "indexed generation 1",
                "lastTransitionTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "observedGeneration": 1,
            }
        ],
        "counters": {
            "alertsMatched": 9,
            "triggers": 7,
            "escalations": 1,
            "dryRunDecisions": 0,
            "deadLetters": 0,
            "approvalsRequested": 0,
        },
        "lastDecision": {
            "time": decided.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "alertname": "KubePodCrashLooping",
            "function": "pod-restart",
            "stage": "trm",
            "confidence": 0.97,
            "outcome": "dry_run",
            "decisionId": "d-1",
        },
    }
    kube.run(
        "patch",
        "rp",
        "columns",
        "-n",
        kube.namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )
    assert kube.policy_status("columns")["counters"]["triggers"] == 7  # the status subresource kept it
    header, row = kube.run("get", "rp", "columns", "-n", kube.namespace).stdout.splitlines()
    columns = _crd_doc()["spec"]["versions"][0]["additionalPrinterColumns"]
    assert header.split() == ["NAME", *(c["name"].upper() for c in columns)]
    shown = dict(zip(header.split(), row.split(), strict=True))
    expected = {
        "NAME": "columns",
        "MODE": "dry-run",
        "FUNCTIONS": "2",
        "TRIGGERS": "7",
        "LAST-DECISION": "30h",
        "READY": "True",
    }
    assert {k: shown[k] for k in expected} == expected
    assert re.fullmatch(r"\d+s|\d+m(\d+s)?", shown["AGE"]), shown["AGE"]
    # Without a status the status columns are blank, never an error: only NAME and AGE show.
    kube.apply(policy_manifest("fresh", simple_spec()))
    fresh = kube.run("get", "rp", "fresh", "-n", kube.namespace, "--no-headers").stdout.split()
    assert fresh[0] == "fresh" and len(fresh) == 2


def _fc(**fields: Any) -> dict[str, Any]:
    return simple_spec(chain=[{"functionCalling": {"endpoint": "http://ollama:11434", **fields}}])


# (id, spec, substrings the apiserver's message must contain: the field, and the problem)
INVALID: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    ("empty-chain", simple_spec(chain=[]), ("spec.chain", "at least 1 items")),
    (
        "two-stage-types",
        simple_spec(chain=[{"trm": {}, "staticAnnotation": {}}]),
        ("spec.chain[0]", "exactly one of staticAnnotation, trm, functionCalling, rules"),
    ),
    ("no-stage-type", simple_spec(chain=[{}]), ("spec.chain[0]", "exactly one of")),
    (
        "confidence-1.5",
        simple_spec(chain=[{"trm": {"minConfidence": 1.5}}]),
        ("spec.chain[0].trm.minConfidence", "less than or equal to 1"),
    ),
    (
        "negative-cooldown",
        simple_spec(actions={"cooldownSeconds": -1}),
        ("spec.actions.cooldownSeconds", "greater than or equal to 0"),
    ),
    ("unknown-api", _fc(api="anthropic"), ("spec.chain[0].functionCalling.api", "Unsupported value", "ollama")),
    (
        "approval-without-timeout",
        simple_spec(actions={"requireApproval": True}),
        ("spec.actions.approvalTimeoutSeconds", "requireApproval needs approvalTimeoutSeconds"),
    ),
    ("typo-top-level", {**simple_spec(), "chian": []}, ('unknown field "spec.chian"',)),
    (
        "typo-in-stage",
        simple_spec(chain=[{"trm": {"minConfidense": 0.9}}]),
        ('unknown field "spec.chain[0].trm.minConfidense"',),
    ),
    (
        "missing-allowed-functions",
        {k: v for k, v in simple_spec().items() if k != "allowedFunctions"},
        ("spec.allowedFunctions", "Required value"),
    ),
    ("empty-allowed-functions", simple_spec(allowedFunctions=[]), ("spec.allowedFunctions", "at least 1 items")),
    (
        "duplicate-allowed-function",
        simple_spec(allowedFunctions=["pod-restart", "pod-restart"]),
        ("spec.allowedFunctions[1]", "Duplicate value"),
    ),
    ("empty-rules-stage", simple_spec(chain=[{"rules": []}]), ("spec.chain[0].rules", "at least 1 items")),
    (
        "rule-without-function",
        simple_spec(chain=[{"rules": [{"parameters": {}}]}]),
        ("spec.chain[0].rules[0].function", "Required value"),
    ),
    (
        "rule-function-not-allowed",
        simple_spec(chain=[{"rules": [{"function": "scale-deployment"}]}]),
        ("spec.chain", "must also be listed in spec.allowedFunctions"),
    ),
    (
        "max-steps-0",
        simple_spec(chain=[{"trm": {"maxSteps": 0}}]),
        ("spec.chain[0].trm.maxSteps", "greater than or equal to 1"),
    ),
    (
        "endpoint-scheme",
        _fc(endpoint="ftp://ollama:11434"),
        ("spec.chain[0].functionCalling.endpoint", "should match", "https?"),
    ),
    (
        "endpoint-missing",
        simple_spec(chain=[{"functionCalling": {"model": "x"}}]),
        ("spec.chain[0].functionCalling.endpoint", "Required value"),
    ),
    ("sink-scheme", simple_spec(actions={"sink": "broker.default"}), ("spec.actions.sink", "should match")),
    (
        "matcher-op",
        simple_spec(match={"matchers": [{"label": "a", "op": "==", "value": "b"}]}),
        ("spec.match.matchers[0].op", "Unsupported value"),
    ),
    ("priority-too-high", simple_spec(priority=5000), ("spec.priority", "less than or equal to 1000")),
    (
        "target-namespace-not-a-name",
        simple_spec(targetNamespaces=["Shop_NS"]),
        ("spec.targetNamespaces[0]", "should match"),
    ),
    ("on-resolved", simple_spec(actions={"onResolved": "delete"}), ("spec.actions.onResolved", "Unsupported value")),
    ("chain-too-long", simple_spec(chain=[{"trm": {}}] * 9), ("spec.chain", "at most 8 items")),
    (
        "live-chain-all-shadow",
        simple_spec(chain=[{"trm": {}, "shadow": True}]),
        ("spec.chain", "a Live policy needs at least one chain stage without shadow: true"),
    ),
    ("unknown-mode", simple_spec(mode="Dry"), ("spec.mode", "Unsupported value")),
]


@pytest.mark.parametrize(("spec", "expected"), [pytest.param(s, e, id=i) for i, s, e in INVALID])
def test_apiserver_refuses_invalid_policy_naming_the_problem(
    kube: Kube, spec: dict[str, Any], expected: tuple[str, ...]
) -> None:
    res = kube.apply(policy_manifest("invalid", spec), check=False)
    assert res.returncode != 0, f"accepted: {res.stdout}"
    for text in expected:
        assert text in res.stderr, f"{text!r} not in: {res.stderr}"
    assert kube.get_policy("invalid") is None


def test_a_policy_without_spec_is_refused(kube: Kube) -> None:
    manifest = yaml.safe_dump(
        {"apiVersion": "remediation.homelab.io/v1alpha1", "kind": "RemediationPolicy", "metadata": {"name": "x"}}
    )
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
