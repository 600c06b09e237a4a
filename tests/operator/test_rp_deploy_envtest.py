"""deploy/: the kustomize base passes a server-side dry run, the overlays render, the pieces fit together."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.envtest.controlplane import ControlPlane
from tests.operator.support import REPO_ROOT, load_rendered

pytestmark = pytest.mark.envtest

DEPLOY = REPO_ROOT / "deploy"


def render(control_plane: ControlPlane, path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    docs = load_rendered(control_plane.kubectl("kustomize", str(path)).stdout)
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def container(objects: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    (only,) = objects["Deployment", "trm-sre"]["spec"]["template"]["spec"]["containers"]
    return only


def test_base_passes_a_server_side_dry_run(control_plane: ControlPlane, crd: str) -> None:
    # A dry run cannot create objects inside a namespace that does not exist yet: make it real,
    # and have Pod Security admission warn about anything the restricted profile forbids.
    control_plane.kubectl("create", "namespace", "trm-sre", check=False)
    control_plane.kubectl("label", "namespace", "trm-sre", "pod-security.kubernetes.io/warn=restricted", "--overwrite")
    res = control_plane.kubectl("apply", "--dry-run=server", "-k", str(DEPLOY / "base"))
    lines = res.stdout.splitlines()
    assert all(line.endswith("(server dry run)") for line in lines), res.stdout
    assert len(lines) == len(render(control_plane, DEPLOY / "base"))
    # No warnings ("would violate PodSecurity ..." would show here), except kubectl noting
    # that the namespace made above was not created by `apply`.
    warnings = [w for w in res.stderr.splitlines() if w.startswith("Warning") and "last-applied-configuration" not in w]
    assert warnings == []


def test_base_holds_the_expected_objects(control_plane: ControlPlane) -> None:
    objects = render(control_plane, DEPLOY / "base")
    assert set(objects) == {
        ("CustomResourceDefinition", "remediationpolicies.remediation.homelab.io"),
        ("Namespace", "trm-sre"),
        ("ServiceAccount", "trm-sre"),
        ("ClusterRole", "trm-sre-operator"),
        ("ClusterRoleBinding", "trm-sre-operator"),
        ("ClusterRole", "trm-sre-secret-reader"),
        ("RoleBinding", "trm-sre-secret-reader"),
        ("PersistentVolumeClaim", "trm-sre-state"),
        ("Deployment", "trm-sre"),
        ("Service", "trm-sre"),
    }
    for (kind, _), obj in objects.items():
        if kind not in ("CustomResourceDefinition", "Namespace", "ClusterRole", "ClusterRoleBinding"):
            assert obj["metadata"]["namespace"] == "trm-sre", kind


def test_operator_role_grants_no_workload_access_and_no_wildcards(control_plane: ControlPlane) -> None:
    role = render(control_plane, DEPLOY / "base")["ClusterRole", "trm-sre-operator"]
    granted = {
        (group, res): set(rule["verbs"])
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for res in rule["resources"]
    }
    assert granted == {
        ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
        ("remediation.homelab.io", "remediationpolicies"): {"list", "watch"},
        ("remediation.homelab.io", "remediationpolicies/status"): {"patch"},
        ("", "events"): {"create"},
        ("authentication.k8s.io", "tokenreviews"): {"create"},  # Knative's OIDC tokens on /events, approvers
        ("authorization.k8s.io", "subjectaccessreviews"): {"create"},  # may this user approve? (/approvals)
    }
    secret_reader = render(control_plane, DEPLOY / "base")["ClusterRole", "trm-sre-secret-reader"]
    assert secret_reader["rules"] == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]


def test_deployment_is_single_recreated_hardened_and_probed(control_plane: ControlPlane) -> None:
    objects = render(control_plane, DEPLOY / "base")
    deployment = objects["Deployment", "trm-sre"]
    spec, pod = deployment["spec"], deployment["spec"]["template"]["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    assert pod["serviceAccountName"] == "trm-sre"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    c = container(objects)
    assert c["image"] == "ghcr.io/homelab/trm-sre:0.1.0"
    assert c["command"] + c["args"][:9] == [
        "trm-sre",
        "run",
        "--host",
        "0.0.0.0",
        "--port",
        "8080",
        "--state-dir",
        "/var/lib/trm-sre",
        "--token-file",
        "/etc/trm-sre/token/token",
    ]
    assert c["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": 8080, "liveness": 8081}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "liveness"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["args"][-2:] == ["--liveness-port", "8081"]
    assert {"requests", "limits"} <= set(c["resources"])
    assert {e["name"] for e in c["env"]} == {"K_SINK", "HOME"}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert mounts == {"/var/lib/trm-sre": "state", "/tmp": "tmp", "/etc/trm-sre/token": "webhook-token"}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["state"]["persistentVolumeClaim"]["claimName"] == "trm-sre-state"
    assert "emptyDir" in volumes["tmp"]
    assert volumes["webhook-token"]["secret"]["secretName"] == "trm-sre-webhook-token"
    service = objects["Service", "trm-sre"]
    assert service["spec"]["ports"] == [{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}]
    assert service["spec"]["selector"] == spec["selector"]["matchLabels"]


def test_gpu_overlay_renders_with_a_gpu_and_cuda(control_plane: ControlPlane) -> None:
    objects = render(control_plane, DEPLOY / "overlays" / "gpu")
    c = container(objects)
    pod = objects["Deployment", "trm-sre"]["spec"]["template"]["spec"]
    assert c["args"][-2:] == ["--device", "cuda"]
    assert "--token-file" in c["args"]  # appended to, not replaced
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]


def test_knative_overlay_binds_the_sink_and_routes_alert_events(control_plane: ControlPlane) -> None:
    objects = render(control_plane, DEPLOY / "overlays" / "knative")
    binding = objects["SinkBinding", "trm-sre"]["spec"]
    assert binding["subject"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "trm-sre"}
    assert binding["sink"]["ref"] == {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": "default"}
    routed = {}
    for (kind, _), obj in objects.items():
        if kind == "Trigger":
            routed[obj["spec"]["filter"]["attributes"]["type"]] = obj["spec"]["subscriber"]
            assert obj["spec"]["broker"] == "default" and obj["metadata"]["namespace"] == "trm-sre"
    assert set(routed) == {"io.homelab.prometheus.alert.fired", "io.homelab.prometheus.alert.resolved"}
    for subscriber in routed.values():
        assert subscriber["ref"] == {"apiVersion": "v1", "kind": "Service", "name": "trm-sre"}
    env = {e["name"]: e.get("value") for e in container(objects)["env"]}
    assert "K_SINK" not in env  # the SinkBinding injects it
    # Knative's sender identity: each Trigger's token is for the controller's audience, and the controller
    # allows exactly the Triggers' ServiceAccounts (Knative names them <trigger>-oidc-<group>-<kind>).
    assert {subscriber["audience"] for subscriber in routed.values()} == {env["TRM_SRE_KNATIVE__AUDIENCE"]}
    triggers = [obj for (kind, _), obj in objects.items() if kind == "Trigger"]
    assert set(env["TRM_SRE_KNATIVE__ALLOWED_SUBJECTS"].split(",")) == {
        f"system:serviceaccount:{t['metadata']['namespace']}:{t['metadata']['name']}-oidc-eventing.knative.dev-trigger"
        for t in triggers
    }
    assert "--token-file" in container(objects)["args"]  # the static token stays (/alertmanager, /reason, ...)
    assert ("Broker", "default") in objects
    # Third-party kinds live only in the overlay.
    base_kinds = {kind for kind, _ in render(control_plane, DEPLOY / "base")}
    assert not base_kinds & {"SinkBinding", "Trigger", "Broker"}


def test_alertmanager_receiver_snippet_is_valid_alertmanager_config(alertmanager_bin_dir: Path, tmp_path: Path) -> None:
    snippet = yaml.safe_load((DEPLOY / "alertmanager" / "receiver.yaml").read_text())
    (webhook,) = snippet["receivers"][0]["webhook_configs"]
    assert webhook["send_resolved"] is True and webhook["max_alerts"] > 0
    assert webhook["http_config"]["authorization"]["credentials_file"].endswith("/token")
    assert webhook["url"].startswith("http://trm-sre.trm-sre.svc") and ":8080/" in webhook["url"]
    # Merged into a minimal full configuration, amtool (the real parser) accepts it.
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    webhook["http_config"]["authorization"]["credentials_file"] = str(token)
    config = {
        "route": {"receiver": "humans", **snippet["route"]},
        "receivers": [{"name": "humans"}, *snippet["receivers"]],
    }
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config))
    res = subprocess.run(
        [str(alertmanager_bin_dir / "amtool"), "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout
