"""The controller in cluster mode against a private test apiserver: RBAC from deploy/, policies, audit records."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from tests.envtest.controlplane import OPERATOR_USER, ControlPlane

REPO = Path(__file__).resolve().parents[2]
CRD_NAME = "remediationpolicies.remediation.homelab.io"
API_VERSION = "remediation.homelab.io/v1alpha1"


class _RenderedLoader(yaml.SafeLoader):
    """kustomize writes a bare `=` (YAML 1.2); PyYAML would read it as the obsolete "value" tag."""


_RenderedLoader.add_constructor("tag:yaml.org,2002:value", lambda loader, node: loader.construct_scalar(node))


def rendered(cp: ControlPlane, path: Path) -> list[dict[str, Any]]:
    """The objects of `kubectl kustomize path`."""
    return [d for d in yaml.load_all(cp.kubectl("kustomize", str(path)).stdout, Loader=_RenderedLoader) if d]


def base_rbac(cp: ControlPlane) -> list[dict[str, Any]]:
    """deploy/base's ClusterRoles and bindings, every binding also bound to the test's operator user."""
    docs = [
        d
        for d in rendered(cp, REPO / "deploy" / "base")
        if d["kind"] in ("ClusterRole", "ClusterRoleBinding", "RoleBinding")
    ]
    for doc in docs:
        if doc["kind"].endswith("Binding"):
            doc["subjects"].append({"kind": "User", "name": OPERATOR_USER, "apiGroup": "rbac.authorization.k8s.io"})
    return docs


def install_controller_rbac(cp: ControlPlane) -> None:
    cp.kubectl("apply", "-f", str(REPO / "crds" / "remediationpolicy.yaml"))
    cp.kubectl("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s")
    cp.kubectl("create", "namespace", "trm-sre")
    cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(base_rbac(cp)))


def cluster_roles(cp: ControlPlane) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in base_rbac(cp) if d["kind"] == "ClusterRole"}


@dataclass(frozen=True, order=True)
class Call:
    """One API request as RBAC sees it."""

    verb: str
    group: str
    resource: str
    subresource: str = ""

    def __str__(self) -> str:
        resource = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        return f"{self.verb} {self.group or 'core'}/{resource}"


def granted(roles: Iterable[dict[str, Any]]) -> set[Call]:
    """Every (verb, group, resource, subresource) the roles' rules allow, spelled out (no wildcards expected)."""
    out: set[Call] = set()
    for role in roles:
        for rule in role["rules"]:
            assert "nonResourceURLs" not in rule
            for verb in rule["verbs"]:
                for group in rule["apiGroups"]:
                    for resource in rule["resources"]:
                        name, _, sub = resource.partition("/")
                        assert "*" not in (verb, group, name, sub), f"wildcard in {role['metadata']['name']}: {rule}"
                        out.add(Call(verb, group, name, sub))
    return out


def audit_time(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(event["requestReceivedTimestamp"]))


def calls_by(cp: ControlPlane, user: str, since: datetime | None = None) -> tuple[set[Call], list[dict[str, Any]]]:
    """The resource requests `user` made (after `since`), and the ones it was refused (403), from the audit log."""
    made: set[Call] = set()
    refused: list[dict[str, Any]] = []
    for event in cp.audit_events():
        if event.get("user", {}).get("username") != user or event.get("stage") != "ResponseComplete":
            continue
        if since is not None and audit_time(event) < since:
            continue
        ref = event.get("objectRef")
        if ref is None:
            continue  # discovery and version probes: non-resource URLs, granted to every user by system:discovery
        if event.get("responseStatus", {}).get("code") == 403:
            refused.append(event)
        made.add(Call(event["verb"], ref.get("apiGroup", ""), ref["resource"], ref.get("subresource", "")))
    return made, refused


def policy_manifest(name: str, namespace: str, spec: dict[str, Any]) -> str:
    return json.dumps(
        {
            "apiVersion": API_VERSION,
            "kind": "RemediationPolicy",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }
    )


def alert_body(alertname: str, pod: str) -> dict[str, Any]:
    """A webhook body with one firing alert `alertname` for `pod` in namespace shop."""
    alert = {
        "status": "firing",
        "startsAt": "2026-05-01T10:00:00Z",
        "annotations": {},
        "labels": {"alertname": alertname, "namespace": "shop", "pod": pod},
    }
    return {"version": "4", "status": "firing", "receiver": "trm-sre", "alerts": [alert]}


def policy_status(cp: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    res = cp.kubectl("get", "remediationpolicy", name, "-n", namespace, "-o", "json", check=False)
    if res.returncode != 0:
        return {}
    return dict(json.loads(res.stdout).get("status") or {})


def is_ready(cp: ControlPlane, namespace: str, name: str, generation: int | None = None) -> bool:
    status = policy_status(cp, namespace, name)
    for condition in status.get("conditions") or ():
        if condition.get("type") == "Ready" and condition.get("status") == "True":
            return generation is None or condition.get("observedGeneration") == generation
    return False


def events_for(cp: ControlPlane, namespace: str, name: str) -> list[dict[str, Any]]:
    res = cp.kubectl(
        "get",
        "events",
        "-n",
        namespace,
        "-o",
        "json",
        "--field-selector",
        f"involvedObject.name={name},involvedObject.kind=RemediationPolicy",
    )
    return list(json.loads(res.stdout)["items"])
