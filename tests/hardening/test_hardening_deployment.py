"""The deployment, hardened: Pod Security "restricted" enforced, and a NetworkPolicy example that the apiserver accepts.

- The Deployment (base and every overlay) passes a server-side dry run into
  a namespace labelled `pod-security.kubernetes.io/enforce=restricted`. A
  Deployment is only *warned* about by Pod Security admission (enforcement
  happens when its pods are created), so its pod template is also dry-run as
  a Pod, which is enforced; a pod that breaks the profile is refused there,
  proving the admission check is live in the test apiserver.
- deploy/overlays/networkpolicy adds a NetworkPolicy: ingress only from the
  monitoring namespace (Alertmanager) and knative-eventing (the broker) on
  8080, plus the kubelet's probes; egress only to DNS, the apiserver
  (443/6443), the sink (the broker) and the function-calling endpoint. It
  passes a server-side dry run with the rest of the overlay.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.envtest.controlplane import ControlPlane
from tests.hardening.cluster import rendered

pytestmark = pytest.mark.envtest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
OVERLAYS = ["base", "overlays/gpu", "overlays/knative", "overlays/networkpolicy"]


def _deployment(cp: ControlPlane, path: str) -> dict[str, Any]:
    (deployment,) = [d for d in rendered(cp, DEPLOY / path) if d["kind"] == "Deployment"]
    return deployment


@pytest.fixture
def restricted_namespace(control_plane: ControlPlane, namespace: str) -> str:
    control_plane.kubectl(
        "label",
        "namespace",
        namespace,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/enforce-version=latest",
        "pod-security.kubernetes.io/warn=restricted",
    )
    return namespace


def _dry_run(cp: ControlPlane, obj: dict[str, Any], namespace: str) -> Any:
    obj = copy.deepcopy(obj)
    obj["metadata"]["namespace"] = namespace
    return cp.kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(obj), check=False)


def _pod_from(deployment: dict[str, Any]) -> dict[str, Any]:
    template = deployment["spec"]["template"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "trm-sre-pss-probe", "labels": template["metadata"]["labels"]},
        "spec": template["spec"],
    }


@pytest.mark.parametrize("path", OVERLAYS)
def test_the_deployment_passes_a_dry_run_where_restricted_is_enforced(
    control_plane: ControlPlane, restricted_namespace: str, path: str
) -> None:
    deployment = _deployment(control_plane, path)
    runtime_class = deployment["spec"]["template"]["spec"].get("runtimeClassName")
    if runtime_class:  # a GPU node's cluster has the NVIDIA RuntimeClass; the pod admission checks it exists
        control_plane.kubectl(
            "apply",
            "-f",
            "-",
            input=json.dumps(
                {
                    "apiVersion": "node.k8s.io/v1",
                    "kind": "RuntimeClass",
                    "metadata": {"name": runtime_class},
                    "handler": runtime_class,
                }
            ),
        )
    res = _dry_run(control_plane, deployment, restricted_namespace)
    assert res.returncode == 0, res.stderr
    assert "(server dry run)" in res.stdout
    assert "violates PodSecurity" not in res.stderr and "Warning" not in res.stderr, res.stderr
    # What Pod Security enforces: the pod the Deployment would create.
    pod = _dry_run(control_plane, _pod_from(deployment), restricted_namespace)
    assert pod.returncode == 0, pod.stderr
    assert "Warning" not in pod.stderr, pod.stderr


@pytest.mark.parametrize(
    ("change", "violation"),
    [
        (lambda c, p: c["securityContext"].update({"allowPrivilegeEscalation": True}), "allowPrivilegeEscalation"),
        (lambda c, p: c["securityContext"].update({"capabilities": {"add": ["NET_ADMIN"]}}), "capabilities"),
        (lambda c, p: p["securityContext"].pop("seccompProfile"), "seccompProfile"),
        (lambda c, p: p.update({"hostNetwork": True}), "host namespaces"),
    ],
    ids=["privilege-escalation", "capabilities", "no-seccomp", "host-network"],
)
def test_a_pod_that_breaks_the_profile_is_refused_there(
    control_plane: ControlPlane, restricted_namespace: str, change: Any, violation: str
) -> None:
    """The control: Pod Security admission is live in the test apiserver, so the passes above mean something."""
    pod = _pod_from(_deployment(control_plane, "base"))
    spec = pod["spec"]
    change(spec["containers"][0], spec)
    res = _dry_run(control_plane, pod, restricted_namespace)
    assert res.returncode != 0
    assert "violates PodSecurity" in res.stderr and violation in res.stderr, res.stderr


# ----------------------------------------------------------------------------- NetworkPolicy


def _network_policy(cp: ControlPlane) -> dict[str, Any]:
    (policy,) = [d for d in rendered(cp, DEPLOY / "overlays" / "networkpolicy") if d["kind"] == "NetworkPolicy"]
    return policy


def test_the_networkpolicy_overlay_passes_a_server_side_dry_run(control_plane: ControlPlane) -> None:
    control_plane.kubectl("apply", "-f", str(REPO / "crds" / "remediationpolicy.yaml"))
    control_plane.kubectl("create", "namespace", "trm-sre", check=False)  # may exist from another test
    res = control_plane.kubectl("apply", "--dry-run=server", "-k", str(DEPLOY / "overlays" / "networkpolicy"))
    lines = res.stdout.splitlines()
    assert all(line.endswith("(server dry run)") for line in lines), res.stdout
    assert (
        "networkpolicy.networking.k8s.io/trm-sre created (server dry run)" in lines
        or "networkpolicy.networking.k8s.io/trm-sre configured (server dry run)" in lines
    ), res.stdout
    base = {(d["kind"], d["metadata"]["name"]) for d in rendered(control_plane, DEPLOY / "base")}
    overlay = {
        (d["kind"], d["metadata"]["name"]) for d in rendered(control_plane, DEPLOY / "overlays" / "networkpolicy")
    }
    assert overlay == base | {("NetworkPolicy", "trm-sre")}
    assert len(lines) == len(overlay)


def _ports(rule: dict[str, Any]) -> set[tuple[str, int]]:
    return {(p.get("protocol", "TCP"), p["port"]) for p in rule.get("ports") or []}


def _namespaces(rule: dict[str, Any], key: str) -> set[str]:
    return {
        peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        for peer in rule[key]
        if "namespaceSelector" in peer
    }


def test_the_networkpolicy_admits_only_alertmanager_the_broker_and_probes(control_plane: ControlPlane) -> None:
    policy = _network_policy(control_plane)
    spec = policy["spec"]
    deployment = _deployment(control_plane, "overlays/networkpolicy")
    assert policy["metadata"]["namespace"] == deployment["metadata"]["namespace"] == "trm-sre"
    assert spec["podSelector"]["matchLabels"] == deployment["spec"]["template"]["metadata"]["labels"]
    assert sorted(spec["policyTypes"]) == ["Egress", "Ingress"]
    by_namespace: dict[str, set[tuple[str, int]]] = {}
    for rule in spec["ingress"]:
        assert rule.get("from"), "an ingress rule without `from` admits everyone"
        assert _ports(rule) and _ports(rule) <= {("TCP", 8080), ("TCP", 8081)}, rule
        for namespace in _namespaces(rule, "from"):
            by_namespace.setdefault(namespace, set()).update(_ports(rule))
        for peer in rule["from"]:
            assert "podSelector" not in peer or "namespaceSelector" in peer, "a bare podSelector means this namespace"
            if "ipBlock" in peer:  # the kubelet's probes, from the nodes
                assert peer["ipBlock"]["cidr"] != "0.0.0.0/0"
    assert by_namespace == {"monitoring": {("TCP", 8080)}, "knative-eventing": {("TCP", 8080)}}
    probes = [rule for rule in spec["ingress"] if any("ipBlock" in peer for peer in rule["from"])]
    assert probes and _ports(probes[0]) == {("TCP", 8080), ("TCP", 8081)}
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert {p["containerPort"] for p in container["ports"]} == {8080, 8081}


def test_the_networkpolicy_lets_out_only_dns_the_apiserver_the_sink_the_llm_and_alertmanager(
    control_plane: ControlPlane,
) -> None:
    spec = _network_policy(control_plane)["spec"]
    for rule in spec["egress"]:
        assert rule.get("to") and rule.get("ports"), f"an egress rule without peers or ports opens everything: {rule}"
    dns = [r for r in spec["egress"] if ("UDP", 53) in _ports(r)]
    assert dns and _ports(dns[0]) == {("UDP", 53), ("TCP", 53)}
    assert _namespaces(dns[0], "to") == {"kube-system"}
    api = [r for r in spec["egress"] if ("TCP", 6443) in _ports(r)]
    assert api and _ports(api[0]) == {("TCP", 443), ("TCP", 6443)}
    sink = [r for r in spec["egress"] if _namespaces(r, "to") == {"knative-eventing"}]
    assert sink and _ports(sink[0]) <= {("TCP", 80), ("TCP", 8080)}
    llm = [r for r in spec["egress"] if ("TCP", 11434) in _ports(r)]
    assert llm, "the function-calling endpoint (Ollama 11434 / OpenAI-compatible) is reachable"
    alertmanager = [r for r in spec["egress"] if ("TCP", 9093) in _ports(r)]  # silences (issue #16)
    assert alertmanager and _namespaces(alertmanager[0], "to") == {"monitoring"}
    assert _ports(alertmanager[0]) == {("TCP", 9093)}
    assert len(spec["egress"]) == 5


def test_the_networkpolicy_example_is_valid_yaml_with_comments(control_plane: ControlPlane) -> None:
    text = (DEPLOY / "overlays" / "networkpolicy" / "networkpolicy.yaml").read_text()
    assert yaml.safe_load(text)["kind"] == "NetworkPolicy"
    for word in ("Alertmanager", "knative-eventing", "DNS", "6443", "Kubelet"):
        assert word in text
