"""The operator with only the RBAC of deploy/base: it works cluster-wide, and it can touch nothing else."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from controller.schemas.decision import Decision
from tests.envtest.controlplane import OPERATOR_USER, ControlPlane
from tests.operator.support import (
    REPO_ROOT,
    Kube,
    RunningOperator,
    load_rendered,
    policy_manifest,
    simple_spec,
    start_operator,
    strip_finalizers,
    wait_for,
)

pytestmark = pytest.mark.envtest


def base_rbac(control_plane: ControlPlane) -> list[dict[str, Any]]:
    """The RBAC objects of `kubectl kustomize deploy/base`, every binding also bound to the test user.

    The operator user of the test control plane stands in for the ServiceAccount
    (no token controller runs here); the ServiceAccount subjects are kept.
    """
    rendered = control_plane.kubectl("kustomize", str(REPO_ROOT / "deploy" / "base")).stdout
    docs = [d for d in load_rendered(rendered) if d["kind"] in ("ClusterRole", "ClusterRoleBinding", "RoleBinding")]
    for doc in docs:
        if doc["kind"].endswith("Binding"):
            assert {s["kind"] for s in doc["subjects"]} == {"ServiceAccount"}, (
                "deploy/base binds only its ServiceAccount"
            )
            doc["subjects"].append({"kind": "User", "name": OPERATOR_USER, "apiGroup": "rbac.authorization.k8s.io"})
    assert {d["kind"] for d in docs} == {"ClusterRole", "ClusterRoleBinding", "RoleBinding"}
    return docs


@pytest.fixture(scope="module")
def operator_rbac(control_plane: ControlPlane, crd: str) -> str:
    """deploy/base's ClusterRoles and bindings applied (the RoleBinding needs the trm-sre namespace)."""
    control_plane.kubectl("create", "namespace", "trm-sre", check=False)  # may exist from another test
    manifest = yaml.safe_dump_all(base_rbac(control_plane))
    control_plane.kubectl("apply", "-f", "-", input=manifest)
    return "trm-sre-operator"


def can_i(control_plane: ControlPlane, *args: str) -> bool:
    res = control_plane.kubectl("auth", "can-i", *args, kubeconfig=control_plane.operator_kubeconfig, check=False)
    return res.stdout.strip() == "yes"


@pytest.fixture
def least_privileged_operator(
    control_plane: ControlPlane, kube: Kube, operator_rbac: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[RunningOperator]:
    """The operator as the unprivileged user, cluster-wide, as deployed."""
    op = start_operator(control_plane.operator_kubeconfig, monkeypatch, namespaces=None)
    try:
        yield op
    finally:
        op.shutdown()
        strip_finalizers(control_plane, kube.namespace)


def test_operator_with_base_rbac_indexes_writes_status_and_posts_events(
    control_plane: ControlPlane,
    kube: Kube,
    least_privileged_operator: RunningOperator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    op = least_privileged_operator
    key = f"{kube.namespace}/rbac-checked"
    kube.apply(policy_manifest("rbac-checked", simple_spec()))
    wait_for("indexed", lambda: op.index.get(key))
    wait_for("Ready=True written by the operator", lambda: (c := kube.ready("rbac-checked")) and c["status"] == "True")
    decision = Decision(
        id="rbac-1",
        incident_key="fp@t",
        fingerprint="fp",
        alertname="KubePodCrashLooping",
        policy=key,
        outcome="trigger",
        function="pod-restart",
        parameters={"name": "a", "namespace": "shop"},
    )
    op.recorder.record(key, decision, "trigger")
    wait_for("counters written", lambda: kube.policy_status("rbac-checked").get("counters", {}).get("triggers") == 1)
    events = wait_for(
        "Events posted", lambda: {"Indexed", "Triggered"} <= {e["reason"] for e in kube.events("rbac-checked")}
    )
    assert events
    kube.delete_policy("rbac-checked")
    wait_for("delete seen", lambda: op.index.get(key) is None)
    # Nothing was refused along the way (kopf and the status writer only log a 403).
    refused = [r.getMessage() for r in caplog.records if "403" in r.getMessage() or "Forbidden" in r.getMessage()]
    assert refused == []
    assert op.probe()["index"]["statusWriteFailures"] == 0


def test_operator_user_can_do_what_the_operator_needs(control_plane: ControlPlane, operator_rbac: str) -> None:
    for verb_resource in (
        ("list", "remediationpolicies.remediation.homelab.io", "-A"),
        ("watch", "remediationpolicies.remediation.homelab.io", "-A"),
        ("patch", "remediationpolicies.remediation.homelab.io", "--subresource=status", "-n", "default"),
        ("create", "events", "-n", "default"),
        ("list", "customresourcedefinitions.apiextensions.k8s.io"),
        ("get", "secrets", "-n", "trm-sre"),
    ):
        assert can_i(control_plane, *verb_resource), verb_resource


@pytest.mark.parametrize(
    "verb_resource",
    [
        ("delete", "pods", "-n", "default"),
        ("create", "pods", "-n", "default"),
        ("patch", "deployments.apps", "-n", "default"),
        ("get", "secrets", "-n", "default"),
        ("list", "secrets", "-n", "trm-sre"),
        ("update", "remediationpolicies.remediation.homelab.io", "-n", "default"),
        ("patch", "remediationpolicies.remediation.homelab.io", "-n", "default"),
        ("delete", "remediationpolicies.remediation.homelab.io", "-n", "default"),
        ("create", "remediationpolicies.remediation.homelab.io", "-n", "default"),
        ("delete", "customresourcedefinitions.apiextensions.k8s.io"),
        ("patch", "kustomizations.kustomize.toolkit.fluxcd.io", "-n", "flux-system"),
        ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
    ],
    ids=lambda v: " ".join(a for a in v if not a.startswith("-") and a not in ("default", "trm-sre", "flux-system")),
)
def test_operator_user_is_refused_everything_else(
    control_plane: ControlPlane, operator_rbac: str, verb_resource: tuple[str, ...]
) -> None:
    assert not can_i(control_plane, *verb_resource)


def test_deleting_a_pod_as_the_operator_is_forbidden(control_plane: ControlPlane, operator_rbac: str) -> None:
    res = control_plane.kubectl(
        "delete", "pod", "x", "-n", "default", kubeconfig=control_plane.operator_kubeconfig, check=False
    )
    assert res.returncode != 0
    assert "Forbidden" in res.stderr and f'User "{OPERATOR_USER}" cannot delete resource "pods"' in res.stderr
