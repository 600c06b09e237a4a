"""Label builders of the generator: one per situation, realistic label values, no decisions.

A builder returns the labels of one alert of its situation (with the distractors and hostile
values seen in real alerts) and a few words for the annotation templates. What the policy does
with those labels is `models.policy.decide`; which words name the alert is models/data/situations.json.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"  # word lists and the situation table (package data)

# ----------------------------------------------------------------------------------------------
# Realistic label values
# ----------------------------------------------------------------------------------------------
_KUBE_ALNUM = "bcdfghjklmnpqrstvwxz2456789"  # the alphabet of ReplicaSet hashes and pod suffixes

_WORDS = json.loads((DATA_DIR / "words.json").read_text(encoding="utf-8"))
APPS: list[str] = _WORDS["apps"]
APP_SUFFIXES: list[str] = _WORDS["app_suffixes"]
NAMESPACES: list[str] = _WORDS["namespaces"]
FLUX_OBJECTS: list[str] = _WORDS["flux_objects"]
NODES: list[str] = _WORDS["nodes"]
_SHELL_VALUES: list[str] = _WORDS["shell_values"]

FLUX_NAMESPACES = ["flux-system"] * 6 + NAMESPACES


def _alnum(rng: random.Random, n: int, alphabet: str = _KUBE_ALNUM) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def app_name(rng: random.Random) -> str:
    """A workload name: usually a realistic app, sometimes an invented one (never memorisable)."""
    if rng.random() < 0.25:
        words = [_alnum(rng, rng.randint(3, 8), "abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(1, 3))]
        return "-".join(words)
    return rng.choice(APPS) + rng.choice(APP_SUFFIXES)


def namespace_name(rng: random.Random) -> str:
    if rng.random() < 0.15:
        return rng.choice(["team-", "ns-", "app-", "", "tenant-"]) + _alnum(
            rng, rng.randint(3, 9), "abcdefghijklmnopqrstuvwxyz0123456789"
        )
    return rng.choice(NAMESPACES)


def pod_name(rng: random.Random, owner: str | None = None, kind: str | None = None) -> str:
    """Pod names as controllers make them: Deployment (ReplicaSet hash + 5), StatefulSet ordinal, ..."""
    owner = owner or app_name(rng)
    kind = kind or rng.choices(["deployment", "statefulset", "daemonset", "job", "bare"], [60, 18, 10, 7, 5])[0]
    if kind == "deployment":
        return f"{owner}-{_alnum(rng, rng.choice([8, 9, 10]))}-{_alnum(rng, 5)}"
    if kind == "statefulset":
        return f"{owner}-{rng.randint(0, 5)}"
    if kind in ("daemonset", "job"):
        return f"{owner}-{_alnum(rng, 5)}"
    return owner


def pvc_name(rng: random.Random) -> str:
    app = app_name(rng)
    return rng.choice(
        [
            f"data-{app}-{rng.randint(0, 3)}",
            f"{app}-data",
            f"{app}-pvc",
            f"storage-{app}-{rng.randint(0, 2)}",
            f"prometheus-k8s-db-prometheus-k8s-{rng.randint(0, 1)}",
            f"{app}",
            f"export-{app}",
            f"datadir-{app}-{rng.randint(0, 2)}",
            f"pgdata-{app}-{rng.randint(1, 3)}",
            f"{app}-cache",
            f"alertmanager-main-db-alertmanager-main-{rng.randint(0, 2)}",
            f"www-{app}-{rng.randint(0, 2)}",
        ]
    )


def flux_object(rng: random.Random) -> str:
    if rng.random() < 0.3:
        return app_name(rng)
    return rng.choice(FLUX_OBJECTS)


def ip_port(rng: random.Random, port: int | None = None) -> str:
    octets = f"{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"  # drawn before the port, as before
    return f"10.{octets}:{port or rng.choice([8080, 9090, 9100, 8443, 10250, 443])}"


@dataclass(frozen=True)
class Draft:
    labels: dict[str, str]  # the alert's labels; the decision is models.policy's
    context: dict[str, str] = field(default_factory=dict)  # extra words for annotation templates


# ----------------------------------------------------------------------------------------------
# Label builders: one per situation family
# ----------------------------------------------------------------------------------------------
def _common(rng: random.Random, labels: dict[str, str], job: str | None = None) -> dict[str, str]:
    """Labels every alert tends to carry (severity, cluster, prometheus, ...): distractors."""
    if rng.random() < 0.85:
        labels["severity"] = rng.choice(["critical", "warning", "warning", "info", "page", "high", "none"])
    if rng.random() < 0.35:
        labels["cluster"] = rng.choice(["prod", "staging", "studio", "pro", "homelab", "eu-west-1", "gke-main"])
    if rng.random() < 0.4:
        labels["prometheus"] = rng.choice(
            ["monitoring/k8s", "monitoring/kube-prometheus-stack-prometheus", "observability/prometheus"]
        )
    if job and "job" not in labels and rng.random() < 0.85:
        labels["job"] = job
    for key, values in (
        ("team", ["sre", "platform", "payments", "data"]),
        ("env", ["prod", "dev", "staging"]),
        ("region", ["eu-west-1", "us-east-1"]),
        ("alertgroup", ["kubernetes-apps", "flux", "general.rules"]),
        ("prometheus_replica", ["prometheus-k8s-0", "prometheus-k8s-1"]),
        ("receiver", ["agent-sre", "default"]),
        ("rule_group", ["kubernetes-apps", "k8s.rules"]),
        ("source", ["prometheus", "vmalert"]),
    ):
        if rng.random() < 0.08:
            labels[key] = rng.choice(values)
    return labels


def _ksm_target(rng: random.Random, labels: dict[str, str], exporter_pod: float = 0.3) -> None:
    """Scrape labels of kube-state-metrics; with some probability its own pod (a distractor)."""
    if rng.random() < 0.5:
        labels["instance"] = ip_port(rng, 8080)
    if rng.random() < 0.35:
        labels["service"] = rng.choice(["kube-state-metrics", "kube-prometheus-stack-kube-state-metrics"])
        labels["endpoint"] = "http"
    if rng.random() < exporter_pod:
        labels["pod"] = pod_name(
            rng, rng.choice(["kube-state-metrics", "kube-prometheus-stack-kube-state-metrics"]), "deployment"
        )
        labels["container"] = "kube-state-metrics"


def _namespace_key(rng: random.Random, labels: dict[str, str], ns: str, p_missing: float = 0.03) -> str | None:
    """Put the workload namespace in `namespace` (usual), `exported_namespace` (rare) or nowhere."""
    r = rng.random()
    if r < p_missing:
        return None
    if r < p_missing + 0.04:
        labels["exported_namespace"] = ns
        return "exported_namespace"
    labels["namespace"] = ns
    return "namespace"


def _maybe_hostile(rng: random.Random, value: str, p: float = 0.015) -> str:
    return rng.choice(_SHELL_VALUES) if rng.random() < p else value


def build_pod_crash(rng: random.Random) -> Draft:
    ns, owner = namespace_name(rng), app_name(rng)
    pod = _maybe_hostile(rng, pod_name(rng, owner))
    container = owner.split("-")[0] if rng.random() < 0.7 else app_name(rng)
    labels: dict[str, str] = {}
    _namespace_key(rng, labels, ns)
    has_pod = rng.random() > 0.08
    if has_pod:
        labels["pod"] = pod
    if rng.random() < 0.8:
        labels["container"] = container
    if rng.random() < 0.25:  # cAdvisor-style OOM series: `name` and `id` are the container's, not ours
        labels["image"] = f"ghcr.io/example/{container}:v{rng.randint(1, 9)}.{rng.randint(0, 20)}"
        labels["name"] = f"k8s_{container}_{pod}_{ns}_{_alnum(rng, 8)}_0"
        labels["id"] = f"/kubepods/burstable/pod{_alnum(rng, 8)}/{_alnum(rng, 12)}"
        labels["job"], labels["metrics_path"] = "kubelet", "/metrics/cadvisor"
        if rng.random() < 0.5:
            labels["node"] = rng.choice(NODES)
    else:
        _ksm_target(rng, labels, exporter_pod=0.0)
        if rng.random() < 0.4:
            labels["reason"] = rng.choice(["CrashLoopBackOff", "OOMKilled", "Error", "CrashLoopBackOff"])
        if rng.random() < 0.2:
            labels["uid"] = f"{_alnum(rng, 8, '0123456789abcdef')}-{_alnum(rng, 4, '0123456789abcdef')}"
    if rng.random() < 0.12:
        labels[rng.choice(["created_by_name", "owner_name", "workload"])] = owner
    if rng.random() < 0.08:
        labels["deployment"] = owner
    _common(rng, labels, "kube-state-metrics")
    if not has_pod:
        return Draft(labels, {"owner": owner, "container": container})
    return Draft(labels, {"container": container})


def build_pod_waiting(rng: random.Random) -> Draft:
    ns, owner = namespace_name(rng), app_name(rng)
    pod = _maybe_hostile(rng, pod_name(rng, owner))
    labels: dict[str, str] = {}
    _namespace_key(rng, labels, ns)
    has_pod = rng.random() > 0.08
    if has_pod:
        labels["pod"] = pod
    if rng.random() < 0.5:
        labels["container"] = owner.split("-")[0]
    if rng.random() < 0.35:
        labels["reason"] = rng.choice(
            [
                "ImagePullBackOff",
                "ErrImagePull",
                "CreateContainerConfigError",
                "ContainerCreating",
                "InvalidImageName",
                "CreateContainerError",
            ]
        )
    if rng.random() < 0.25:
        labels["phase"] = rng.choice(["Pending", "Unknown", "Failed", "Pending"])
    if rng.random() < 0.15:
        labels["condition"] = rng.choice(["false", "unknown"])
    if rng.random() < 0.1:
        labels["node"] = rng.choice(NODES)
    _ksm_target(rng, labels, exporter_pod=0.0)
    if rng.random() < 0.1:
        labels[rng.choice(["created_by_name", "owner_name"])] = owner
    _common(rng, labels, "kube-state-metrics")
    return Draft(labels)


_REPLICA_TARGET_KEYS = ("replicas", "desired_replicas", "target_replicas", "expected")
_REPLICA_DISTRACTOR_KEYS = ("actual", "available_replicas", "current_replicas", "unavailable", "spec_replicas_observed")


def _deployment_labels(rng: random.Random, p_target: float) -> tuple[dict[str, str], str]:
    ns, dep = namespace_name(rng), _maybe_hostile(rng, app_name(rng), 0.01)
    labels: dict[str, str] = {}
    _namespace_key(rng, labels, ns)
    has_dep = rng.random() > 0.08
    if has_dep:
        labels["deployment"] = dep
    _ksm_target(rng, labels, exporter_pod=0.25)
    if rng.random() < 0.15:
        labels[rng.choice(_REPLICA_DISTRACTOR_KEYS)] = str(rng.randint(0, 5))
    target_key = None
    if rng.random() < p_target:
        target_key = rng.choice(_REPLICA_TARGET_KEYS)
        value = str(rng.choice([rng.randint(1, 12), rng.randint(0, 50), 3, 2]))
        if rng.random() < 0.05:
            value = rng.choice(["-1", "abc", "5000", "3.5", "", "many", "1e3"])
        labels[target_key] = value
    _common(rng, labels, "kube-state-metrics")
    return labels, dep


def build_deployment_stuck(rng: random.Random) -> Draft:
    labels, dep = _deployment_labels(rng, p_target=0.12)
    return Draft(labels, {"deployment": dep})


def _scale_builder(p_target: float) -> Callable[[random.Random], Draft]:
    """Alerts about a Deployment's load or size: scale only when the alert names a replica target."""

    def build(rng: random.Random) -> Draft:
        labels, dep = _deployment_labels(rng, p_target=p_target)
        return Draft(labels, {"deployment": dep, "replicas": labels.get("replicas", "")})

    return build


def build_pvc(rng: random.Random) -> Draft:
    ns, pvc = namespace_name(rng), _maybe_hostile(rng, pvc_name(rng), 0.01)
    labels: dict[str, str] = {}
    _namespace_key(rng, labels, ns)
    r = rng.random()
    pvc_key = "persistentvolumeclaim" if r < 0.88 else ("pvc" if r < 0.94 else None)
    if pvc_key:
        labels[pvc_key] = pvc
    if rng.random() < 0.7:  # kubelet volume stats scrape labels
        labels["job"], labels["metrics_path"] = "kubelet", "/metrics"
        labels["instance"] = ip_port(rng, 10250)
        if rng.random() < 0.6:
            labels["node"] = rng.choice(NODES)
        if rng.random() < 0.4:
            labels["service"], labels["endpoint"] = "kubelet", "https-metrics"
    if rng.random() < 0.1:
        labels["persistentvolume"] = f"pvc-{_alnum(rng, 8, '0123456789abcdef')}-{_alnum(rng, 4, '0123456789abcdef')}"
    if rng.random() < 0.08:
        labels["storageclass"] = rng.choice(["standard", "longhorn", "gp3", "ceph-block", "local-path"])
    _common(rng, labels)
    return Draft(labels, {"pvc": pvc})


FLUX_ACTION_KINDS = {
    "Kustomization": "flux-reconcile-kustomization",
    "HelmRelease": "flux-reconcile-helmrelease",
    "GitRepository": "flux-reconcile-gitrepository",
}
FLUX_OTHER_KINDS = (
    "OCIRepository",
    "HelmRepository",
    "HelmChart",
    "Bucket",
    "ImageRepository",
    "ImagePolicy",
    "ImageUpdateAutomation",
    "Receiver",
    "Alert",
    "Provider",
)
FLUX_GROUPS = {
    "Kustomization": "kustomize.toolkit.fluxcd.io",
    "HelmRelease": "helm.toolkit.fluxcd.io",
    "GitRepository": "source.toolkit.fluxcd.io",
    "OCIRepository": "source.toolkit.fluxcd.io",
    "HelmRepository": "source.toolkit.fluxcd.io",
    "HelmChart": "source.toolkit.fluxcd.io",
    "Bucket": "source.toolkit.fluxcd.io",
    "ImageRepository": "image.toolkit.fluxcd.io",
    "ImagePolicy": "image.toolkit.fluxcd.io",
    "ImageUpdateAutomation": "image.toolkit.fluxcd.io",
    "Receiver": "notification.toolkit.fluxcd.io",
    "Alert": "notification.toolkit.fluxcd.io",
    "Provider": "notification.toolkit.fluxcd.io",
}
FLUX_CONTROLLERS = {
    "kustomize": "kustomize-controller",
    "helm": "helm-controller",
    "source": "source-controller",
    "image": "image-reflector-controller",
    "notification": "notification-controller",
}


def _flux_labels(rng: random.Random, kind: str, kind_label: bool) -> dict[str, str]:
    """Flux object labels in the two metric styles (gotk_reconcile_condition; kube-state-metrics gotk_resource_info)."""
    obj, obj_ns = _maybe_hostile(rng, flux_object(rng), 0.008), rng.choice(FLUX_NAMESPACES)
    labels: dict[str, str] = {}
    ksm_style = rng.random() < 0.4
    if kind_label:
        labels["customresource_kind" if ksm_style and rng.random() < 0.8 else "kind"] = kind
    r = rng.random()
    name_key = (
        "name"
        if r < 0.8
        else (
            {"Kustomization": "kustomization", "HelmRelease": "helmrelease", "GitRepository": "gitrepository"}.get(
                kind, "name"
            )
            if r < 0.9
            else rng.choice(["exported_name", "resource_name"])
        )
    )
    labels[name_key] = obj
    r = rng.random()
    if r < 0.45:  # scraped in flux-system / monitoring: the object's namespace moves to exported_namespace
        labels["exported_namespace"] = obj_ns
        labels["namespace"] = rng.choice(["flux-system", "flux-system", "monitoring"])
    elif r < 0.80:
        labels["namespace"] = obj_ns
    elif r < 0.88:
        labels["exported_namespace"] = obj_ns
    # else: no namespace at all: the runbook's default (flux-system) applies
    group = FLUX_GROUPS.get(kind, "source.toolkit.fluxcd.io")
    if ksm_style:
        labels["job"] = "kube-state-metrics"
        if rng.random() < 0.6:
            labels["customresource_group"], labels["customresource_version"] = (
                group,
                rng.choice(["v1", "v2", "v1beta2"]),
            )
        if rng.random() < 0.5:
            labels["ready"] = rng.choice(["False", "Unknown"])
        if rng.random() < 0.3:
            labels["suspended"] = "false"
        if rng.random() < 0.3:
            labels["revision"] = rng.choice(["main@sha1:", "v1.2.3@sha256:", "6.5.0"]) + _alnum(
                rng, 8, "0123456789abcdef"
            )
    else:
        controller = FLUX_CONTROLLERS[group.split(".")[0]]
        if rng.random() < 0.6:
            labels["type"], labels["status"] = "Ready", rng.choice(["False", "Unknown"])
        if rng.random() < 0.4:
            labels["pod"] = pod_name(rng, controller, "deployment")  # the controller's pod: not ours to restart
            labels["container"] = "manager"
        if rng.random() < 0.5:
            labels["job"] = rng.choice([f"flux-system/{controller}", controller, "flux-system/flux-system"])
            labels["instance"] = ip_port(rng, 8080)
        if rng.random() < 0.2:
            labels["endpoint"] = "http-prom"
    _common(rng, labels)
    return labels


def build_flux_generic(rng: random.Random) -> Draft:
    """A kind-agnostic Flux alert (ReconciliationFailure, FluxResourceNotReady): the kind label decides."""
    kind = rng.choice(list(FLUX_ACTION_KINDS) * 4 + list(FLUX_OTHER_KINDS) * 1)
    return Draft(_flux_labels(rng, kind, kind_label=True), {"kind": kind})


def _flux_kind_builder(kind: str) -> Callable[[random.Random], Draft]:
    def build(rng: random.Random) -> Draft:
        return Draft(_flux_labels(rng, kind, kind_label=rng.random() < 0.5), {"kind": kind})

    return build


def build_flux_suspended(rng: random.Random) -> Draft:
    return Draft(_flux_labels(rng, rng.choice(list(FLUX_ACTION_KINDS)), kind_label=rng.random() < 0.5))
