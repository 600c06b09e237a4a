"""The runbook policy as a situation table, and a seeded generator of labelled alerts.

Why a generator and not a list: the model is judged on alert rules written by other
people (published rule packs it never saw), so it must learn the *words* of an alert
(subject: pod / deployment / statefulset / node...; condition: crash-looping / not ready /
filling up...; the Flux `kind`), not a list of names. Each situation therefore has
(1) curated real names (kube-prometheus mixins, kube-state-metrics rule packs, Flux,
exporters) and (2) parts (prefix, subject, condition, suffix) composed and cased at random.

Every generated example is an Alertmanager v4 alert plus:
- `expected`: the decision after `catalog.validate_call` (what the eval checks; None when
  the policy's call would be invalid, e.g. a missing namespace or a hostile pod name);
- `target`: the policy *before* validation, as label keys (what the model is trained on:
  which function, which label slot carries each parameter, which enum value).
Both come from ONE declared table, `models.policy.POLICY` (situation -> decision); the label
builders below only generate labels and text.

Splits are held out **by canonical alert name** (case/separators removed): a name's hash
puts it in exactly one of train / validation-heldout / test-heldout, and the generator
rejects names of the wrong bucket, so the held-out test names are never seen in training.

`python -m models.data` writes the JSONL splits to `models/datasets/`.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from models import policy
from models.sources.rules import ROUTING_LABELS
from models.sources.training import augment_annotations, augment_name, expression_for
from models.version import DATA_VERSION  # noqa: F401 - re-exported for older callers
from runbooks import Catalog, default_catalog

DATASETS_DIR = Path(__file__).resolve().parent / "datasets"

# Name buckets (percent of canonical names): test-heldout / validation-heldout / train.
TEST_NAME_PCT = 12
VAL_NAME_PCT = 8

# ----------------------------------------------------------------------------------------------
# Realistic label values
# ----------------------------------------------------------------------------------------------
_KUBE_ALNUM = "bcdfghjklmnpqrstvwxz2456789"  # the alphabet of ReplicaSet hashes and pod suffixes

APPS = """cart checkout api frontend web backend payments orders inventory catalog search auth
users gateway worker scheduler notifier mailer billing invoice ledger shipping recommender
ads reviews profile session cache proxy ingress-nginx traefik grafana loki tempo mimir
prometheus alertmanager thanos-query thanos-store kube-state-metrics node-exporter coredns
cert-manager external-dns argocd-server argocd-repo-server vault consul keycloak minio
redis postgres mysql mongodb kafka zookeeper rabbitmq elasticsearch kibana logstash fluentd
fluent-bit vector otel-collector jaeger nginx envoy istiod metrics-server velero harbor
gitea jenkins sonarqube nextcloud homepage podinfo whoami immich jellyfin paperless n8n
home-assistant uptime-kuma vaultwarden agent-sre knative-serving activator autoscaler
controller webhook operator image-reflector notification-controller sealed-secrets
kyverno falco trivy-operator longhorn-manager csi-attacher rook-ceph-mgr etcd-backup
report-generator ml-inference feature-store etl-runner batch-api events-api""".split()  # noqa: SIM905 - readable as prose

APP_SUFFIXES = ["", "", "", "", "-api", "-worker", "-server", "-svc", "-v2", "-web", "-app",
                "-consumer", "-producer", "-cron", "-backend", "-frontend", "-controller", "-main"]

NAMESPACES = """default kube-system monitoring observability flux-system argocd cert-manager
ingress-nginx shop payments prod staging dev qa web data databases db storage logging
tracing istio-system linkerd knative-serving knative-eventing ai ml ml-platform agent-sre
homelab media apps backend frontend platform infra security vault kafka redis postgres
team-a team-b team-checkout tenant-1 tenant-42 longhorn-system rook-ceph velero harbor
gitea ci jenkins tekton-pipelines keda kyverno falco sre-tools default-ns api""".split()  # noqa: SIM905

FLUX_OBJECTS = """apps infrastructure infra-controllers infra-configs flux-system cluster-apps
podinfo cert-manager ingress-nginx kube-prometheus-stack monitoring loki grafana tempo
homelab homepage agent-sre redis postgres-operator cloudnative-pg external-dns sealed-secrets
metallb cilium longhorn velero traefik tenants tenant-a platform crds config secrets
apps-staging apps-production infra-production renovate weave-gitops knative-serving
rabbitmq minio harbor immich nextcloud""".split()  # noqa: SIM905

FLUX_NAMESPACES = ["flux-system"] * 6 + NAMESPACES

NODES = ["node-1", "node-2", "worker-03", "ip-10-0-12-34.ec2.internal", "k8s-node-a7", "pi4-02",
         "gke-prod-pool-1-7c9d2e1f-x2k4", "aks-nodepool1-12345678-vmss000002", "control-plane-1",
         "homelab-nuc", "studio", "pro", "minikube", "kind-control-plane", "talos-worker-2"]

_SHELL_VALUES = ["cart; rm -rf /", "$(reboot)", "../../etc/passwd", "`id`", "a|b", "pod name",
                 "UPPERCASE-Pod", "x" * 300, "web\nnewline", "api&&curl evil", "-rf", "..", "a/b"]


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
        return rng.choice(["team-", "ns-", "app-", "", "tenant-"]) + _alnum(rng, rng.randint(3, 9), "abcdefghijklmnopqrstuvwxyz0123456789")
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
    return rng.choice([
        f"data-{app}-{rng.randint(0, 3)}", f"{app}-data", f"{app}-pvc", f"storage-{app}-{rng.randint(0, 2)}",
        f"prometheus-k8s-db-prometheus-k8s-{rng.randint(0, 1)}", f"{app}", f"export-{app}",
        f"datadir-{app}-{rng.randint(0, 2)}", f"pgdata-{app}-{rng.randint(1, 3)}", f"{app}-cache",
        f"alertmanager-main-db-alertmanager-main-{rng.randint(0, 2)}", f"www-{app}-{rng.randint(0, 2)}",
    ])


def flux_object(rng: random.Random) -> str:
    if rng.random() < 0.3:
        return app_name(rng)
    return rng.choice(FLUX_OBJECTS)


def ip_port(rng: random.Random, port: int | None = None) -> str:
    return f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}:{port or rng.choice([8080, 9090, 9100, 8443, 10250, 443])}"


# ----------------------------------------------------------------------------------------------
# Alert names: composition, casing, canonical form and name buckets
# ----------------------------------------------------------------------------------------------
def split_words(name: str) -> list[str]:
    """CamelCase / snake / kebab / spaced -> words ("KubePodCrashLooping" -> Kube Pod Crash Looping)."""
    out: list[str] = []
    for chunk in re.split(r"[^A-Za-z0-9]+", name):
        out += re.findall(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+", chunk)
    return out


def render_name(rng: random.Random, parts: Sequence[str]) -> str:
    """Join name parts with one of the casings real rule sets use (CamelCase dominates)."""
    words = [w for p in parts for w in ([p] if p.lower() == "k8s" else split_words(p))]
    style = rng.choices(["camel", "snake", "lower", "upper_snake", "kebab", "spaced", "lowercamel"],
                        [72, 7, 4, 5, 4, 5, 3])[0]
    if style == "camel":
        return "".join(p for p in parts)
    if style == "snake":
        return "_".join(w.lower() for w in words)
    if style == "lower":
        return "".join(w.lower() for w in words)
    if style == "upper_snake":
        return "_".join(w.upper() for w in words)
    if style == "kebab":
        return "-".join(w.lower() for w in words)
    if style == "spaced":
        return " ".join([words[0].capitalize()] + [w.lower() for w in words[1:]])
    joined = "".join(parts)
    return joined[0].lower() + joined[1:]


def canonical_name(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def name_bucket(name: str) -> str:
    """'test' / 'val' / 'train': fixed by the canonical name, so casing variants never leak."""
    h = zlib.crc32(("trm-sre-names:" + canonical_name(name)).encode()) % 100
    if h < TEST_NAME_PCT:
        return "test"
    if h < TEST_NAME_PCT + VAL_NAME_PCT:
        return "val"
    return "train"


K8S_PREFIX = ("Kube", "Kube", "Kubernetes", "Kubernetes", "K8s", "K8S", "", "", "", "Cluster")
SUFFIX = ("", "", "", "", "", "", "Critical", "Warning", "Alert", "Detected", "High", "Info", "Firing", "Prod")


@dataclass(frozen=True)
class Draft:
    labels: dict[str, str]                                  # the alert's labels; the decision is models.policy's
    context: dict[str, str] = field(default_factory=dict)  # extra words for annotation templates


@dataclass(frozen=True)
class Situation:
    """One row of the policy table: how such alerts are named, labelled, described, and decided."""

    key: str
    weight: float
    curated: tuple[str, ...]
    parts: tuple[tuple[str, ...], ...]  # alternatives per position, composed into a name
    build: Callable[[random.Random], Draft]
    summaries: tuple[str, ...] = ()
    descriptions: tuple[str, ...] = ()

    def name(self, rng: random.Random) -> str:
        if self.curated and (not self.parts or rng.random() < 0.45):
            name = rng.choice(self.curated)
            # Real rule packs re-case names too (snake_case exports, "Test" copies of rules).
            if rng.random() < 0.1:
                name = render_name(rng, split_words(name.replace("K8s", "Kubernetes")))
            return name
        return render_name(rng, [rng.choice(alts) for alts in self.parts if alts])


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
        labels["prometheus"] = rng.choice(["monitoring/k8s", "monitoring/kube-prometheus-stack-prometheus", "observability/prometheus"])
    if job and "job" not in labels and rng.random() < 0.85:
        labels["job"] = job
    for key, values in (("team", ["sre", "platform", "payments", "data"]), ("env", ["prod", "dev", "staging"]),
                        ("region", ["eu-west-1", "us-east-1"]), ("alertgroup", ["kubernetes-apps", "flux", "general.rules"]),
                        ("prometheus_replica", ["prometheus-k8s-0", "prometheus-k8s-1"]), ("receiver", ["agent-sre", "default"]),
                        ("rule_group", ["kubernetes-apps", "k8s.rules"]), ("source", ["prometheus", "vmalert"])):
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
        labels["pod"] = pod_name(rng, rng.choice(["kube-state-metrics", "kube-prometheus-stack-kube-state-metrics"]), "deployment")
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
        labels["reason"] = rng.choice(["ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError",
                                       "ContainerCreating", "InvalidImageName", "CreateContainerError"])
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


FLUX_ACTION_KINDS = {"Kustomization": "flux-reconcile-kustomization", "HelmRelease": "flux-reconcile-helmrelease",
                     "GitRepository": "flux-reconcile-gitrepository"}
FLUX_OTHER_KINDS = ("OCIRepository", "HelmRepository", "HelmChart", "Bucket", "ImageRepository",
                    "ImagePolicy", "ImageUpdateAutomation", "Receiver", "Alert", "Provider")
FLUX_GROUPS = {"Kustomization": "kustomize.toolkit.fluxcd.io", "HelmRelease": "helm.toolkit.fluxcd.io",
               "GitRepository": "source.toolkit.fluxcd.io", "OCIRepository": "source.toolkit.fluxcd.io",
               "HelmRepository": "source.toolkit.fluxcd.io", "HelmChart": "source.toolkit.fluxcd.io",
               "Bucket": "source.toolkit.fluxcd.io", "ImageRepository": "image.toolkit.fluxcd.io",
               "ImagePolicy": "image.toolkit.fluxcd.io", "ImageUpdateAutomation": "image.toolkit.fluxcd.io",
               "Receiver": "notification.toolkit.fluxcd.io", "Alert": "notification.toolkit.fluxcd.io",
               "Provider": "notification.toolkit.fluxcd.io"}
FLUX_CONTROLLERS = {"kustomize": "kustomize-controller", "helm": "helm-controller", "source": "source-controller",
                    "image": "image-reflector-controller", "notification": "notification-controller"}


def _flux_labels(rng: random.Random, kind: str, kind_label: bool) -> dict[str, str]:
    """Flux object labels in the two metric styles (gotk_reconcile_condition; kube-state-metrics gotk_resource_info)."""
    obj, obj_ns = _maybe_hostile(rng, flux_object(rng), 0.008), rng.choice(FLUX_NAMESPACES)
    labels: dict[str, str] = {}
    ksm_style = rng.random() < 0.4
    if kind_label:
        labels["customresource_kind" if ksm_style and rng.random() < 0.8 else "kind"] = kind
    r = rng.random()
    name_key = "name" if r < 0.8 else ({"Kustomization": "kustomization", "HelmRelease": "helmrelease",
                                         "GitRepository": "gitrepository"}.get(kind, "name") if r < 0.9
                                        else rng.choice(["exported_name", "resource_name"]))
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
            labels["customresource_group"], labels["customresource_version"] = group, rng.choice(["v1", "v2", "v1beta2"])
        if rng.random() < 0.5:
            labels["ready"] = rng.choice(["False", "Unknown"])
        if rng.random() < 0.3:
            labels["suspended"] = "false"
        if rng.random() < 0.3:
            labels["revision"] = rng.choice(["main@sha1:", "v1.2.3@sha256:", "6.5.0"]) + _alnum(rng, 8, "0123456789abcdef")
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


# --- builders of alerts we never act on ---------------------------------------------------------
def build_node(rng: random.Random) -> Draft:
    labels = {"node": rng.choice(NODES)} if rng.random() < 0.75 else {}
    if rng.random() < 0.6:
        labels["instance"] = rng.choice([ip_port(rng, 9100), rng.choice(NODES) + ":9100"])
    if rng.random() < 0.3:
        labels["condition"], labels["status"] = rng.choice(["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"]), rng.choice(["true", "false", "unknown"])
    if rng.random() < 0.3:  # node-exporter's own pod: a distractor
        labels["pod"], labels["namespace"] = pod_name(rng, "node-exporter", "daemonset"), "monitoring"
        labels["container"] = rng.choice(["node-exporter", "kube-rbac-proxy"])
    elif rng.random() < 0.2:
        labels["namespace"] = rng.choice(["monitoring", "kube-system"])
    if rng.random() < 0.2:
        labels["device"], labels["mountpoint"], labels["fstype"] = rng.choice(["/dev/sda1", "/dev/nvme0n1p2"]), rng.choice(["/", "/var", "/var/lib/kubelet"]), "ext4"
    _common(rng, labels, rng.choice(["node-exporter", "kubelet", "kube-state-metrics"]))
    return Draft(labels)


def build_host(rng: random.Random) -> Draft:
    labels = {"instance": rng.choice([ip_port(rng, 9100), "nas.local:9100", "router:9100"])}
    if rng.random() < 0.3:
        labels["nodename"] = rng.choice(NODES)
    if rng.random() < 0.2:
        labels["name"] = rng.choice(["nginx.service", "docker.service", "k3s.service", "sshd.service"])
    if rng.random() < 0.2:
        labels["device"], labels["mountpoint"] = rng.choice(["/dev/sda1", "/dev/md0", "eth0"]), rng.choice(["/", "/data", "/boot"])
    _common(rng, labels, rng.choice(["node-exporter", "node", "blackbox"]))
    return Draft(labels)


def build_control_plane(rng: random.Random) -> Draft:
    labels: dict[str, str] = {}
    if rng.random() < 0.5:
        labels["instance"] = ip_port(rng, rng.choice([6443, 10257, 10259, 2379, 10249]))
    if rng.random() < 0.3:
        labels["namespace"] = "kube-system"
        if rng.random() < 0.5:
            labels["pod"] = rng.choice(["kube-apiserver-", "etcd-", "kube-scheduler-", "kube-controller-manager-"]) + rng.choice(NODES)
    if rng.random() < 0.2:
        labels["verb"], labels["resource"] = rng.choice(["LIST", "GET", "WATCH"]), rng.choice(["pods", "nodes", "secrets"])
    if rng.random() < 0.15:
        labels["name"] = rng.choice(["v1beta1.metrics.k8s.io", "v1.custom.metrics.k8s.io"])
    _common(rng, labels, rng.choice(["apiserver", "kube-scheduler", "kube-controller-manager", "etcd", "kubelet", "kube-proxy", "coredns"]))
    return Draft(labels)


def build_certificate(rng: random.Random) -> Draft:
    labels: dict[str, str] = {}
    if rng.random() < 0.5:  # cert-manager: name + namespace, exactly what a Flux object looks like
        labels["name"] = rng.choice(["wildcard-tls", "api-cert", "ingress-tls", f"{app_name(rng)}-tls"])
        labels["namespace"] = namespace_name(rng)
        if rng.random() < 0.5:
            labels["condition"] = rng.choice(["False", "Unknown"])
        if rng.random() < 0.4:
            labels["issuer_name"], labels["issuer_kind"] = rng.choice(["letsencrypt-prod", "ca-issuer"]), "ClusterIssuer"
    else:
        labels["instance"] = rng.choice([ip_port(rng, 6443), "https://example.org", "api.example.com:443"])
    _common(rng, labels, rng.choice(["cert-manager", "apiserver", "blackbox", "kubelet", "ssl-exporter"]))
    return Draft(labels)


def build_monitoring_internals(rng: random.Random) -> Draft:
    comp = rng.choice(["prometheus-k8s", "alertmanager-main", "prometheus-operator", "thanos-ruler", "kube-prometheus-stack-prometheus"])
    labels = {"namespace": rng.choice(["monitoring", "observability", "prometheus"])}
    if rng.random() < 0.6:
        labels["pod"] = pod_name(rng, comp, "statefulset" if "operator" not in comp else "deployment")
        labels["container"] = rng.choice(["prometheus", "alertmanager", "config-reloader", "prometheus-operator"])
    if rng.random() < 0.5:
        labels["service"], labels["endpoint"], labels["instance"] = comp, rng.choice(["web", "http", "https"]), ip_port(rng, 9090)
    if rng.random() < 0.3:
        labels["controller"] = rng.choice(["prometheus", "alertmanager", "thanos"])
    if rng.random() < 0.2:
        labels["rule_group"] = "/etc/prometheus/rules/prometheus-k8s-rulefiles-0/monitoring-kube.yaml;kubernetes-apps"
    _common(rng, labels, comp)
    return Draft(labels)


def build_quota(rng: random.Random) -> Draft:
    labels: dict[str, str] = {}
    if rng.random() < 0.6:
        labels["namespace"] = namespace_name(rng)
        labels["resourcequota"] = rng.choice(["compute-resources", "default-quota", "object-counts"])
        labels["resource"] = rng.choice(["requests.cpu", "limits.memory", "pods", "count/deployments.apps"])
    _common(rng, labels, "kube-state-metrics")
    return Draft(labels)


def build_container_resources(rng: random.Random) -> Draft:
    """CPU throttling, memory near limit, high usage: pod-level but not ours (hard negatives with a pod)."""
    owner = app_name(rng)
    labels = {"namespace": namespace_name(rng), "pod": pod_name(rng, owner), "container": owner.split("-")[0]}
    if rng.random() < 0.1:
        del labels["pod"]
    if rng.random() < 0.3:
        labels["job"], labels["metrics_path"] = "kubelet", "/metrics/cadvisor"
    _common(rng, labels)
    return Draft(labels)


def _workload_builder(key: str, value: Callable[[random.Random], str]) -> Callable[[random.Random], Draft]:
    def build(rng: random.Random) -> Draft:
        labels = {"namespace": namespace_name(rng)}
        if rng.random() > 0.05:
            labels[key] = value(rng)
        _ksm_target(rng, labels, exporter_pod=0.25)
        if key == "job_name" and rng.random() < 0.3:
            labels["owner_kind"], labels["owner_name"] = "CronJob", labels.get(key, "x").rsplit("-", 1)[0]
        if rng.random() < 0.1:
            labels[rng.choice(_REPLICA_DISTRACTOR_KEYS)] = str(rng.randint(0, 5))
        _common(rng, labels, "kube-state-metrics")
        return Draft(labels)
    return build


def build_pvc_other(rng: random.Random) -> Draft:
    """PVC/PV alerts that are not "filling up" (pending, lost, errors): no remediation."""
    labels: dict[str, str] = {}
    if rng.random() < 0.6:
        labels["namespace"], labels["persistentvolumeclaim"] = namespace_name(rng), pvc_name(rng)
        labels["phase"] = rng.choice(["Pending", "Lost"])
    else:
        labels["persistentvolume"] = f"pvc-{_alnum(rng, 8, '0123456789abcdef')}"
        labels["phase"] = rng.choice(["Failed", "Pending"])
    _ksm_target(rng, labels, exporter_pod=0.2)
    _common(rng, labels, "kube-state-metrics")
    return Draft(labels)


def build_application(rng: random.Random) -> Draft:
    labels: dict[str, str] = {}
    if rng.random() < 0.7:
        labels["instance"] = rng.choice([ip_port(rng), f"{app_name(rng)}.{namespace_name(rng)}.svc:9187"])
    if rng.random() < 0.55:
        labels["namespace"] = namespace_name(rng)
    if rng.random() < 0.4:  # the exporter's (or app's) own pod: still not a crash-loop
        labels["pod"] = pod_name(rng)
    if rng.random() < 0.3:
        labels["service"] = app_name(rng)
    for key, values in (("datname", ["orders", "postgres", "app"]), ("queue", ["jobs", "emails"]),
                        ("topic", ["events", "payments"]), ("consumergroup", ["billing", "etl"]),
                        ("code", ["500", "503"]), ("method", ["GET", "POST"]), ("route", ["/api/v1/orders", "/healthz"]),
                        ("server", ["db-1", "redis-0"]), ("app", APPS), ("deployment", APPS), ("name", FLUX_OBJECTS)):
        if rng.random() < (0.06 if key in ("deployment", "name") else 0.12):
            labels[key] = rng.choice(values)
    _common(rng, labels, rng.choice(["postgres-exporter", "redis-exporter", "blackbox", "nginx", "app", "mysqld-exporter"]))
    return Draft(labels)


def build_meta(rng: random.Random) -> Draft:
    labels: dict[str, str] = {}
    if rng.random() < 0.4:
        labels["namespace"] = "monitoring"
    _common(rng, labels)
    labels["severity"] = rng.choice(["none", "info", "warning"])
    return Draft(labels)


# ----------------------------------------------------------------------------------------------
# The situation table
# ----------------------------------------------------------------------------------------------
def _apps_camel() -> tuple[str, ...]:
    return tuple(w.capitalize() for w in ["Postgres", "Redis", "Grafana", "Api", "Cart", "Argocd", "Loki", "Nginx", "Mysql", "App", "Service", "Workload", "Homepage"])


_S_POD = ("Pod", "Pod", "Pod", "Container", "Container", "Pods", "Containers", "", "Workload")
_CRASH = ("CrashLooping", "CrashLooping", "CrashLoop", "CrashLoopBackOff", "CrashLoopBackoff", "InCrashLoop",
          "RestartingTooOften", "RestartingTooMuch", "Restarting", "RestartsHigh", "HighRestarts", "FrequentRestarts",
          "FrequentlyRestarting", "TooManyRestarts", "RestartLoop", "Restarted", "RestartCountHigh", "Crashing", "Crashed",
          "OOMKilled", "OomKilled", "OOMKill", "OutOfMemoryKilled", "OomKiller", "KilledByOOM", "OOMKilledRecently", "MemoryKilled",
          "Oom", "OOMKilledContainer", "CrashLoopDetected")
_WAIT = ("NotReady", "NotReady", "NotHealthy", "Unhealthy", "Pending", "StuckPending", "PendingTooLong", "Waiting", "StuckWaiting",
         "ImagePullBackOff", "ImagePullBackoff", "ImagePullError", "ErrImagePull", "ImagePullFailure", "FailedToPullImage",
         "CreateContainerConfigError", "ConfigError", "CreateContainerError", "Unschedulable", "NotScheduled", "FailedScheduling",
         "InvalidImageName", "NotRunning", "NotStarted", "StuckContainerCreating", "Initializing", "NotReadyTooLong", "ContainerWaiting")
_S_DEP = ("Deployment", "Deployment", "Deployment", "Deploy", "Deployments", "DeploymentRollout", "Rollout")
_STUCK = ("ReplicasMismatch", "ReplicasMismatch", "ReplicasMismatched", "RolloutStuck", "RolloutStuck", "RolloutFailed",
          "NotAvailable", "Unavailable", "ReplicasUnavailable", "UnavailableReplicas", "NotFullyAvailable",
          "GenerationMismatch", "ProgressDeadlineExceeded", "Stuck", "Degraded", "Unhealthy", "AvailableReplicasLow",
          "ReplicasBelowDesired", "MissingReplicas", "NotReady", "RolloutNotProgressing", "ReplicasNotReady", "Down",
          "InsufficientReplicas", "PartiallyAvailable", "StuckRollout", "UpdateStuck", "UnderReplicated",
          "ReplicasBelowTarget", "ReplicaTargetNotMet")
_S_PVC = ("PersistentVolume", "PersistentVolume", "PersistentVolumeClaim", "Pvc", "PVC", "Persistentvolumeclaim", "Volume",
          "VolumeClaim", "PV", "Storage")
_FILL = ("FillingUp", "FillingUp", "InodesFillingUp", "AlmostFull", "Full", "FullInFourDays", "OutOfDiskSpace", "OutOfSpace",
         "SpaceLow", "LowSpace", "UsageHigh", "HighUsage", "InodesExhausted", "InodesLow", "RunningOutOfSpace",
         "FreeSpaceLow", "WillFillIn4h", "SpaceFillingUp", "DiskUsageHigh", "CapacityLow", "InodeUsageHigh", "NearlyFull",
         "UsageCritical", "LowFreeSpace", "FillingUpCritical", "OutOfInodes")
_FAIL = ("NotReady", "NotReady", "ReconciliationFailure", "ReconciliationFailed", "ReconcileFailed", "ReconcileError",
         "Failing", "Failed", "Failure", "NotReconciled", "OutOfSync", "Stalled", "ApplyFailed", "UpgradeFailed",
         "InstallFailed", "FetchFailed", "Degraded", "Unhealthy", "SyncFailed", "Error", "ReadyFalse", "NotReadyTooLong")
_FLUX_PREFIX = ("Flux", "Flux", "Flux", "FluxCD", "", "Gotk", "GitOps", "Flux2")


def _kind_parts(kind: str) -> tuple[tuple[str, ...], ...]:
    subj = {"Kustomization": ("Kustomization", "Kustomization", "Kustomize", "Ks"),
            "HelmRelease": ("HelmRelease", "HelmRelease", "Helm", "Release", "Hr"),
            "GitRepository": ("GitRepository", "GitRepository", "GitRepo", "Git", "GitSource", "Repository")}.get(kind, (kind,))
    return (_FLUX_PREFIX, subj, _FAIL, SUFFIX)


SITUATIONS: tuple[Situation, ...] = (
    # ---- actions ------------------------------------------------------------------------------
    Situation(
        "pod-crash", 12.0,
        ("KubePodCrashLooping", "KubernetesPodCrashLooping", "PodCrashLoopBackOff", "TestPodCrashLoopBackOff",
         "KubernetesContainerOomKiller", "ContainerOOMKilled", "PodOOMKilled", "KubePodOOMKilled", "PodRestartingTooMuch",
         "ContainerRestartingTooOften", "PodFrequentlyRestarting", "PodCrashLooping", "CrashLoopBackOff", "OOMKilled",
         "KubernetesPodRestartingTooMuch", "ContainerCrashLooping", "KubePodRestartsTooHigh", "PodRestartsHigh",
         "KubeContainerOOMKilled", "ContainerOomKilled", "PodInCrashLoopBackOff", "KubePodFrequentlyRestarting",
         "OOMKilledPod", "K8sPodCrashLoopBackOff", "ContainerTerminatedOOMKilled", "PodMemoryOOMKilled"),
        (K8S_PREFIX + _apps_camel(), _S_POD, _CRASH, SUFFIX),
        build_pod_crash,
        ("Pod is crash looping.", "Pod {namespace}/{pod} is crash looping", "Container {container} in {pod} was OOMKilled",
         "Kubernetes container oom killer (instance {instance})", "Pod restarting too often", "{pod} restarted {n} times"),
        ("Pod {namespace}/{pod} ({container}) is in waiting state (reason: \"CrashLoopBackOff\").",
         "Container {container} in pod {namespace}/{pod} has been OOMKilled {n} times in the last 10 minutes.",
         "Pod {namespace}/{pod} is restarting {n}.00 times / 10 minutes.",
         "Pod {pod} in namespace {namespace} has restarted {n} times in the last hour",
         "{container} was terminated with reason OOMKilled; memory limit reached."),
    ),
    Situation(
        "pod-waiting", 9.0,
        ("KubePodNotReady", "KubeContainerWaiting", "KubernetesPodNotHealthy", "PodPending", "ImagePullBackOff",
         "TestPodPending", "TestImagePullBackOff", "PodStuckPending", "KubePodPending", "PodImagePullError", "ErrImagePull",
         "ContainerCreateConfigError", "KubernetesPodPending", "PodNotReady", "ContainerWaiting", "PodUnschedulable",
         "KubePodNotScheduled", "KubeContainerNotReady", "PodNotHealthy", "ImagePullBackOffDetected",
         "KubernetesContainerWaiting", "PodStuckInContainerCreating", "KubePodImagePullBackOff", "PodNotRunning"),
        (K8S_PREFIX + _apps_camel(), _S_POD, _WAIT, SUFFIX),
        build_pod_waiting,
        ("Pod has been in a non-ready state for more than 15 minutes.", "Pod container waiting longer than 1 hour",
         "Pod {namespace}/{pod} is pending", "Image pull failing for {pod}", "Kubernetes Pod not healthy (instance {instance})"),
        ("Pod {namespace}/{pod} has been in a non-ready state for longer than 15 minutes.",
         "pod/{pod} in namespace {namespace} on container {container} has been in waiting state for longer than 1 hour. (reason: \"{reason}\")",
         "Pod {namespace}/{pod} has been in a non-running state for longer than 15 minutes.",
         "{pod} cannot pull its image: {reason}"),
    ),
    Situation(
        "deployment-stuck", 9.0,
        ("KubeDeploymentReplicasMismatch", "KubeDeploymentRolloutStuck", "KubeDeploymentGenerationMismatch",
         "KubernetesDeploymentReplicasMismatch", "KubernetesDeploymentGenerationMismatch", "TestDeploymentUnhealthy",
         "DeploymentReplicasMismatch", "DeploymentUnavailable", "KubeDeploymentUnavailable", "DeploymentRolloutStuck",
         "DeploymentNotAvailable", "DeploymentReplicasUnavailable", "KubernetesDeploymentUnavailable",
         "DeploymentProgressDeadlineExceeded", "DeploymentDegraded", "K8sDeploymentNotReady", "DeploymentDown",
         "KubeDeploymentNotReady", "DeploymentRolloutFailed", "DeploymentUnhealthy"),
        (K8S_PREFIX + _apps_camel(), _S_DEP, _STUCK, SUFFIX),
        build_deployment_stuck,
        ("Deployment has not matched the expected number of replicas.", "Deployment rollout is not progressing.",
         "Deployment generation mismatch due to possible roll-back", "Deployment {namespace}/{deployment} unavailable"),
        ("Deployment {namespace}/{deployment} has not matched the expected number of replicas for longer than 15 minutes.",
         "Rollout of deployment {namespace}/{deployment} is not progressing for longer than 15 minutes.",
         "Deployment generation for {namespace}/{deployment} does not match, this indicates that the Deployment has failed but has not been rolled back.",
         "Deployment {deployment} has {n} unavailable replicas"),
    ),
    Situation(
        "scale-request", 3.0,
        ("DeploymentNeedsScaling", "TestDeploymentNeedsScaling", "DeploymentScaleUpRequired", "ScaleDeploymentRequest",
         "DeploymentScaleTarget", "ScaleUpNeeded"),
        (("", "", "Kube", "Test") + _apps_camel(), ("Deployment", "Deployment", "Workload", "Deploy", ""),
         ("NeedsScaling", "ScaleUpRequired", "ScaleUpNeeded", "ScaleRequest", "ScaleTarget",
          "ScalingNeeded", "ScaleOut", "ScaleDownRequired", "ResizeRequest"), SUFFIX),
        _scale_builder(1.0),
        ("Deployment {namespace}/{deployment} needs scaling", "Scale {deployment} to {replicas} replicas"),
        ("Deployment {deployment} should run {replicas} replicas.",),
    ),
    Situation(
        "deployment-load", 3.5,
        ("TestHighCPUUsage", "HighCPUUsage", "DeploymentHighCpu", "DeploymentHighLoad", "HighRequestRate", "DeploymentOverloaded"),
        (("", "", "Kube", "Test") + _apps_camel(), ("Deployment", "Deployment", "Workload", "Deploy", ""),
         ("HighCPUUsage", "HighCpu", "HighLoad", "Overloaded", "HighRequestRate", "HighMemoryUsage",
          "HighTraffic", "Saturated"), SUFFIX),
        _scale_builder(0.5),
        ("High CPU usage on {deployment}", "{deployment} is overloaded"),
        ("CPU usage above 80% for 10 minutes on {deployment}.",),
    ),
    Situation(
        "pvc-filling", 8.0,
        ("KubePersistentVolumeFillingUp", "KubePersistentVolumeInodesFillingUp", "KubernetesVolumeOutOfDiskSpace",
         "KubernetesVolumeFullInFourDays", "PersistentVolumeFillingUpCritical", "TestPVCFillingUp", "PVCAlmostFull",
         "PersistentVolumeClaimFillingUp", "KubePersistentVolumeFullInFourDays", "PersistentVolumeUsageHigh",
         "PVCUsageHigh", "VolumeAlmostFull", "KubernetesPersistentVolumeFillingUp", "PersistentVolumeInodesFillingUp",
         "KubeletVolumeFillingUp", "PvcFull", "PVCRunningOutOfSpace", "PersistentVolumeSpaceLow"),
        (K8S_PREFIX + _apps_camel(), _S_PVC, _FILL, SUFFIX),
        build_pvc,
        ("PersistentVolume is filling up.", "PersistentVolumeInodes are filling up.", "Kubernetes Volume out of disk space (instance {instance})",
         "PVC {namespace}/{pvc} almost full"),
        ("The PersistentVolume claimed by {pvc} in Namespace {namespace} is only {n}.5% free.",
         "The PersistentVolume claimed by {pvc} in Namespace {namespace} only has {n}% free inodes.",
         "Based on recent sampling, the PersistentVolume claimed by {pvc} in Namespace {namespace} is expected to fill up within four days.",
         "Volume is almost full (< 10% left)"),
    ),
    Situation(
        "flux-generic", 10.0,
        ("ReconciliationFailure", "FluxReconciliationFailure", "FluxResourceNotReady", "FluxReconcileFailed",
         "GitOpsReconciliationFailure", "FluxObjectNotReady", "FluxResourceFailing", "GotkReconcileFailed",
         "FluxReconciliationFailed", "FluxCDResourceNotReady"),
        (_FLUX_PREFIX, ("", "Resource", "Object", "Reconciliation", "Reconcile", "Source", "Toolkit"), _FAIL, SUFFIX),
        build_flux_generic,
        ("{kind} {namespace}/{name} reconciliation has been failing for more than ten minutes.",
         "Flux resource not ready", "{kind} {name} is not ready"),
        ("{kind} {name} in {namespace} is not ready: {reason}", "Reconciliation of {kind} {namespace}/{name} failed."),
    ),
    Situation(
        "flux-kustomization", 4.0,
        ("FluxKustomizationNotReady", "FluxKustomizationFailed", "KustomizationNotReady", "FluxKustomizationFailing",
         "KustomizationReconciliationFailed", "FluxKustomizationStalled"),
        _kind_parts("Kustomization"), _flux_kind_builder("Kustomization"),
        ("Kustomization {namespace}/{name} is not ready", "Flux Kustomization {name} reconciliation failed"),
        ("Kustomization {name} in {namespace} has been failing to apply for 10 minutes.",),
    ),
    Situation(
        "flux-helmrelease", 4.0,
        ("HelmReleaseNotReady", "FluxHelmReleaseFailing", "FluxHelmReleaseNotReady", "HelmReleaseFailed",
         "FluxHelmReleaseUpgradeFailed", "HelmReleaseInstallFailed"),
        _kind_parts("HelmRelease"), _flux_kind_builder("HelmRelease"),
        ("HelmRelease {namespace}/{name} is not ready", "Helm release {name} failed"),
        ("HelmRelease {name} in {namespace} upgrade failed: {reason}",),
    ),
    Situation(
        "flux-gitrepository", 3.0,
        ("FluxGitRepositoryOutOfSync", "GitRepositoryNotReady", "FluxGitRepositoryNotReady", "FluxSourceGitFailed",
         "GitRepositoryFetchFailed", "FluxGitRepoFailing"),
        _kind_parts("GitRepository"), _flux_kind_builder("GitRepository"),
        ("GitRepository {namespace}/{name} is out of sync", "Git source {name} fetch failed"),
        ("GitRepository {name} in {namespace} failed to fetch the latest revision.",),
    ),
    # ---- no remediation -----------------------------------------------------------------------
    Situation(
        "flux-other-kind", 3.5,
        ("FluxOCIRepositoryNotReady", "HelmRepositoryNotReady", "FluxHelmRepositoryFailing", "FluxBucketNotReady",
         "ImageRepositoryReconciliationFailed", "FluxImageUpdateAutomationFailing", "HelmChartNotReady",
         "FluxImagePolicyFailed", "OCIRepositoryNotReady", "FluxReceiverNotReady"),
        (_FLUX_PREFIX, ("OCIRepository", "OciRepository", "HelmRepository", "HelmRepo", "HelmChart", "Bucket", "ImageRepository",
                        "ImagePolicy", "ImageUpdateAutomation", "Receiver", "Provider", "OCISource"), _FAIL, SUFFIX),
        lambda rng: _flux_kind_builder(rng.choice(FLUX_OTHER_KINDS))(rng),
        ("{kind} {namespace}/{name} is not ready",), ("Reconciliation of {kind} {name} failed.",),
    ),
    Situation(
        "flux-suspended", 1.5,
        ("FluxKustomizationSuspended", "FluxResourceSuspended", "FluxHelmReleaseSuspended", "FluxSuspendedTooLong"),
        (_FLUX_PREFIX, ("", "Resource", "Object", "Reconciliation"), ("Suspended", "SuspendedTooLong", "IsSuspended"), SUFFIX),
        build_flux_suspended, ("{kind} {name} is suspended",), (),
    ),
    Situation(
        "statefulset", 3.5,
        ("KubeStatefulSetReplicasMismatch", "KubeStatefulSetGenerationMismatch", "KubeStatefulSetUpdateNotRolledOut",
         "KubernetesStatefulsetDown", "KubernetesStatefulsetReplicasMismatch", "StatefulSetNotReady",
         "KubernetesStatefulsetGenerationMismatch", "KubernetesStatefulsetUpdateNotRolledOut", "StatefulSetDown"),
        (K8S_PREFIX, ("StatefulSet", "Statefulset", "Sts", "StatefulSets"), _STUCK + ("UpdateNotRolledOut",), SUFFIX),
        _workload_builder("statefulset", app_name),
        ("StatefulSet has not matched the expected number of replicas.", "StatefulSet update has not been rolled out."),
        ("StatefulSet {namespace}/{name} has not matched the expected number of replicas for longer than 15 minutes.",),
    ),
    Situation(
        "daemonset", 3.0,
        ("KubeDaemonSetRolloutStuck", "KubeDaemonSetNotScheduled", "KubeDaemonSetMisScheduled",
         "KubernetesDaemonsetRolloutStuck", "KubernetesDaemonsetMisscheduled", "DaemonSetUnavailable"),
        (K8S_PREFIX, ("DaemonSet", "Daemonset", "Ds", "DaemonSets"), _STUCK + ("NotScheduled", "MisScheduled", "Misscheduled"), SUFFIX),
        _workload_builder("daemonset", app_name),
        ("DaemonSet rollout is stuck.", "DaemonSet pods are not scheduled."),
        ("DaemonSet {namespace}/{name} has not finished or progressed for at least 15 minutes.",),
    ),
    Situation(
        "job", 3.0,
        ("KubeJobFailed", "KubeJobNotCompleted", "KubernetesJobFailed", "KubernetesCronjobSuspended",
         "KubernetesCronjobTooLong", "KubeJobCompletion", "KubernetesJobSlowCompletion", "CronJobFailed", "KubeCronJobRunning"),
        (K8S_PREFIX, ("Job", "CronJob", "Cronjob", "BatchJob"), ("Failed", "NotCompleted", "TooLong", "SlowCompletion", "Suspended",
                                                                    "Running", "Failing", "Stuck", "BackoffLimitExceeded", "DeadlineExceeded"), SUFFIX),
        _workload_builder("job_name", lambda rng: f"{app_name(rng)}-{rng.randint(27000000, 29999999)}"),
        ("Job failed to complete.", "Job did not complete in time"),
        ("Job {namespace}/{name} failed to complete. Removing failed job after investigation should clear this alert.",),
    ),
    Situation(
        "hpa", 2.5,
        ("KubeHpaMaxedOut", "KubeHpaReplicasMismatch", "KubernetesHpaScaleInability", "KubernetesHpaMetricsUnavailability",
         "KubernetesHpaScaleMaximum", "KubernetesHpaUnderutilized", "HPAScalingLimited", "HorizontalPodAutoscalerMaxedOut"),
        (K8S_PREFIX, ("Hpa", "HPA", "HorizontalPodAutoscaler", "Autoscaler"),
         ("MaxedOut", "ReplicasMismatch", "ScaleInability", "ScalingLimited", "MetricsUnavailable", "AtMaximum", "Underutilized",
          "ScaleMaximum", "CannotScale"), SUFFIX),
        _workload_builder("horizontalpodautoscaler", app_name),
        ("HPA is running at max replicas", "HPA has not matched desired number of replicas."),
        ("HPA {namespace}/{name} has been running at max replicas for longer than 15 minutes.",),
    ),
    Situation(
        "container-resources", 5.0,
        ("CPUThrottlingHigh", "KubernetesContainerCpuThrottling", "ContainerHighCpuUsage", "ContainerHighMemoryUsage",
         "ContainerMemoryNearLimit", "PodHighMemoryUsage", "ContainerCpuUsageHigh", "KubeContainerMemoryHigh",
         "ContainerHighThrottleRate", "PodCpuThrottled", "ContainerLowMemoryLimit", "KubernetesContainerHighMemory"),
        (K8S_PREFIX + ("", "Pod"), ("Container", "Pod", "CPU", "Cpu"),
         ("ThrottlingHigh", "CpuThrottling", "HighCpuUsage", "HighMemoryUsage", "MemoryNearLimit", "CpuUsageHigh", "MemoryHigh",
          "HighThrottleRate", "Throttled", "MemoryUsageHigh", "HighLatency", "SlowResponses", "NetworkErrors"), SUFFIX),
        build_container_resources,
        ("Processes experience elevated CPU throttling.", "Container memory usage above 90%"),
        ("{n}% throttling of CPU in namespace {namespace} for container {container} in pod {pod}.",),
    ),
    Situation(
        "node", 6.0,
        ("KubeNodeNotReady", "KubeNodeUnreachable", "KubeNodeReadinessFlapping", "KubeletTooManyPods", "NodeFilesystemSpaceFillingUp",
         "NodeFilesystemAlmostOutOfSpace", "NodeMemoryHighUtilization", "NodeClockSkewDetected", "NodeNetworkReceiveErrs",
         "KubernetesNodeNotReady", "KubernetesNodeMemoryPressure", "KubernetesNodeDiskPressure", "NodeCPUHighUsage",
         "NodeFilesystemFilesFillingUp", "NodeHighNumberConntrackEntriesUsed", "KubeNodePressure", "NodeRAIDDegraded",
         "KubeletDown", "NodeSystemdServiceFailed", "KubernetesNodeOutOfPodCapacity"),
        (K8S_PREFIX + ("Node",), ("Node", "Kubelet", "Nodes"),
         ("NotReady", "Unreachable", "MemoryPressure", "DiskPressure", "PIDPressure", "HighCpuLoad", "OutOfMemory",
          "FilesystemSpaceFillingUp", "FilesystemAlmostOutOfSpace", "ClockSkew", "NetworkReceiveErrs", "ReadinessFlapping",
          "TooManyPods", "Down", "Unhealthy", "RebootRequired"), SUFFIX),
        build_node,
        ("Node is not ready.", "Filesystem is predicted to run out of space within the next 24 hours."),
        ("{node} has been unready for more than 15 minutes.",),
    ),
    Situation(
        "host", 3.0,
        ("HostOutOfMemory", "HostHighCpuLoad", "HostOutOfDiskSpace", "HostSystemdServiceCrashed", "HostOomKillDetected",
         "HostDiskWillFillIn24Hours", "HostNetworkReceiveErrors", "HostMemoryUnderMemoryPressure", "HostUnusualDiskReadRate",
         "HostPhysicalComponentTooHot", "HostClockNotSynchronising", "HostRaidDiskFailure", "HostEdacUncorrectableErrorsDetected"),
        (("Host", "Server", "Machine", "Vm", "Nas", "Node"),
         ("OutOfMemory", "HighCpuLoad", "OutOfDiskSpace", "SystemdServiceCrashed", "OomKillDetected", "DiskWillFillIn24Hours",
          "ServiceCrashed", "Down", "HighTemperature", "SwapFillingUp", "Rebooted", "InodesFillingUp", "CrashLooping"), SUFFIX),
        build_host,
        ("Host out of memory (instance {instance})", "Host systemd service crashed (instance {instance})"),
        ("Node memory is filling up (< 10% left)\n  VALUE = {n}\n  LABELS = map[instance:{instance}]",),
    ),
    Situation(
        "control-plane", 4.0,
        ("KubeAPIDown", "KubeAPIErrorBudgetBurn", "KubeAPITerminatedRequests", "KubeControllerManagerDown", "KubeSchedulerDown",
         "KubeProxyDown", "KubeletPlegDurationHigh", "KubeletPodStartUpLatencyHigh", "KubeClientErrors", "KubeAggregatedAPIDown",
         "KubeAggregatedAPIErrors", "etcdMembersDown", "etcdNoLeader", "etcdHighCommitDurations", "etcdInsufficientMembers",
         "etcdHighNumberOfFailedGRPCRequests", "CoreDNSDown", "CoreDNSErrorsHigh", "KubernetesApiServerErrors", "KubeVersionMismatch",
         "KubeletClientCertificateRenewalErrors", "KubernetesApiClientErrors", "EtcdDatabaseQuotaLowSpace"),
        (K8S_PREFIX + ("etcd", "Etcd", "CoreDNS"), ("API", "Api", "ApiServer", "Scheduler", "ControllerManager", "Proxy", "Etcd", "Dns", "AggregatedAPI"),
         ("Down", "ErrorBudgetBurn", "Errors", "HighLatency", "TerminatedRequests", "NoLeader", "InsufficientMembers", "Unavailable",
          "HighCommitDurations", "RequestsSlow", "NotReady"), SUFFIX),
        build_control_plane,
        ("Target disappeared from Prometheus target discovery.", "The API server is burning too much error budget."),
        ("KubeAPI has disappeared from Prometheus target discovery.",),
    ),
    Situation(
        "certificate", 3.0,
        ("KubeClientCertificateExpiration", "KubeletServerCertificateExpiration", "CertManagerCertExpirySoon",
         "CertManagerCertNotReady", "CertManagerCertificateNotReady", "X509CertificateExpiringSoon", "SSLCertExpiringSoon",
         "BlackboxSslCertificateWillExpireSoon", "CertificateExpired", "CertManagerHittingRateLimits", "KubeletServerCertificateRenewalErrors"),
        (K8S_PREFIX + ("CertManager", "Blackbox", "X509", "Ssl"), ("Cert", "Certificate", "ClientCertificate", "SslCertificate", "Tls"),
         ("Expiration", "ExpirySoon", "ExpiringSoon", "NotReady", "Expired", "WillExpireSoon", "RenewalErrors", "RenewalFailed",
          "Invalid"), SUFFIX),
        build_certificate,
        ("Certificate is about to expire.", "The certificate {name} is not ready to serve traffic."),
        ("The certificate {name} in {namespace} expires in less than 7 days.",),
    ),
    Situation(
        "monitoring-internals", 5.0,
        ("PrometheusRuleFailures", "PrometheusNotConnectedToAlertmanagers", "PrometheusTSDBReloadsFailing",
         "PrometheusTSDBCompactionsFailing", "PrometheusNotIngestingSamples", "PrometheusDuplicateTimestamps",
         "PrometheusRemoteWriteBehind", "PrometheusTargetLimitHit", "PrometheusBadConfig", "PrometheusMissingRuleEvaluations",
         "PrometheusErrorSendingAlertsToAnyAlertmanager", "AlertmanagerFailedReload", "AlertmanagerMembersInconsistent",
         "AlertmanagerFailedToSendAlerts", "AlertmanagerClusterDown", "AlertmanagerConfigInconsistent",
         "PrometheusOperatorListErrors", "PrometheusOperatorWatchErrors", "PrometheusOperatorSyncFailed",
         "PrometheusOperatorReconcileErrors", "PrometheusOperatorNodeLookupErrors", "PrometheusOperatorNotReady",
         "PrometheusOperatorRejectedResources", "ConfigReloaderSidecarErrors", "TargetDown", "PrometheusTargetMissing",
         "PrometheusJobMissing", "PrometheusConfigurationReloadFailure", "PrometheusServiceDown",
         "ThanosCompactHalted", "LokiRequestErrors", "PrometheusKubernetesListWatchFailures"),
        (("Prometheus", "Alertmanager", "PrometheusOperator", "Thanos", "ConfigReloader", "VMAlert", "Loki"),
         ("RuleFailures", "NotConnectedToAlertmanagers", "ReloadsFailing", "CompactionsFailing", "NotIngestingSamples",
          "RemoteWriteBehind", "BadConfig", "FailedReload", "ClusterDown", "ReconcileErrors", "SyncFailed", "NotReady",
          "ListErrors", "WatchErrors", "TargetMissing", "SidecarErrors", "ConfigInconsistent",
          "RejectedResources", "Down", "Unavailable", "HighQueryLoad"), SUFFIX),
        build_monitoring_internals,
        ("Prometheus is failing rule evaluations.", "Errors while reconciling controller.", "Alertmanager cluster is down"),
        ("Prometheus {namespace}/{pod} has failed to evaluate {n} rules in the last 5m.",
         "Errors while reconciling {n} in {namespace} Namespace."),
    ),
    Situation(
        "quota", 2.5,
        ("KubeCPUOvercommit", "KubeMemoryOvercommit", "KubeCPUQuotaOvercommit", "KubeMemoryQuotaOvercommit",
         "KubeQuotaAlmostFull", "KubeQuotaFullyUsed", "KubeQuotaExceeded", "KubernetesResourceQuotaExceeded", "NamespaceQuotaNearlyFull"),
        (K8S_PREFIX, ("CPU", "Memory", "Quota", "ResourceQuota", "CPUQuota", "MemoryQuota", "Namespace"),
         ("Overcommit", "AlmostFull", "FullyUsed", "Exceeded", "NearlyFull", "Overcommitted"), SUFFIX),
        build_quota,
        ("Cluster has overcommitted CPU resource requests.", "Namespace quota is going to be full."),
        ("Namespace {namespace} is using {n}% of its {resource} quota.",),
    ),
    Situation(
        "pvc-other", 2.0,
        ("KubernetesPersistentvolumeclaimPending", "KubePersistentVolumeErrors", "KubernetesPersistentvolumeError",
         "PersistentVolumeClaimLost", "PVCPending", "KubePersistentVolumeClaimPending"),
        (K8S_PREFIX, ("PersistentVolumeClaim", "Persistentvolumeclaim", "PersistentVolume", "Pvc", "PV"),
         ("Pending", "Lost", "Errors", "Error", "Failed", "NotBound", "Unbound"), SUFFIX),
        build_pvc_other,
        ("PersistentVolumeClaim {namespace}/{persistentvolumeclaim} is pending", "PersistentVolume is having issues with provisioning."),
        ("The persistent volume {persistentvolume} has status {phase}.",),
    ),
    Situation(
        "application", 6.0,
        ("PostgresqlDown", "PostgresHighConnectionCount", "PostgresqlTooManyConnections", "MysqlDown", "MysqlTooManyConnections",
         "RedisDown", "RedisOutOfMemory", "RedisRejectedConnections", "RabbitmqNodeDown", "RabbitmqTooManyMessagesInQueue",
         "KafkaConsumersGroupLag", "ElasticsearchClusterRed", "ElasticsearchDiskOutOfSpace", "NginxHighHttp5xxErrorRate",
         "TraefikHighHttp5xxErrorRateService", "HighErrorRate", "HighLatency", "ApiHighLatency", "SlowRequests",
         "MinioDiskOffline", "BlackboxProbeFailed", "BlackboxSlowProbe", "EndpointDown", "ServiceUnavailable",
         "HttpErrorsHigh", "CeleryQueueBacklog", "MongodbReplicationLag", "PostgresqlReplicationLag", "DatabaseConnectionsHigh"),
        (("Postgresql", "Postgres", "Mysql", "Redis", "Rabbitmq", "Kafka", "Elasticsearch", "Nginx", "Traefik", "Api", "Http",
          "Minio", "Mongodb", "Blackbox", "Database", "Checkout", "Payments", "Queue", "Grpc", "Service"),
         ("Down", "TooManyConnections", "HighConnectionCount", "OutOfMemory", "ReplicationLag", "HighLatency", "Http5xxErrorRate",
          "ErrorRateHigh", "SlowQueries", "DiskOffline", "ProbeFailed", "ClusterRed", "ConsumersGroupLag", "QueueBacklog",
          "Unavailable", "HighErrorRate", "DeadlocksDetected", "SlowRequests", "SSLHandshakeErrors"), SUFFIX),
        build_application,
        ("{n}% of requests are failing", "Instance {instance} is down", "High latency on {service}"),
        ("Error rate above 5% for 10 minutes.\n  VALUE = {n}\n  LABELS = map[instance:{instance}]",),
    ),
    Situation(
        "meta", 2.0,
        ("Watchdog", "InfoInhibitor", "DeadMansSwitch", "DeadMansSnitch", "AlwaysFiring", "Heartbeat", "PrometheusAlertmanagerE2eDeadManSwitch"),
        (("", "Alertmanager", "Prometheus"), ("Watchdog", "Heartbeat", "DeadMansSwitch", "InfoInhibitor", "AlwaysFiring"), ("",)),
        build_meta,
        ("An alert that should always be firing to certify that Alertmanager is working properly.",
         "Info-level alert inhibition."),
        ("This is an alert meant to ensure that the entire alerting pipeline is functional.",),
    ),
)


# ----------------------------------------------------------------------------------------------
# Assembly: name + labels + rendered annotations -> an Alertmanager alert with expected decision
# ----------------------------------------------------------------------------------------------
class _Fill(dict):  # str.format_map that leaves unknown fields blank
    def __missing__(self, key: str) -> str:
        return ""


def _annotations(rng: random.Random, sit: Situation, labels: dict[str, str], context: dict[str, str], alertname: str) -> dict[str, str]:
    values = _Fill(labels) | context | {"n": str(rng.randint(2, 97))}
    values = _Fill(values)
    out: dict[str, str] = {}
    r = rng.random()
    if r < 0.08:
        return out
    if sit.summaries and rng.random() < 0.85:
        out["summary"] = rng.choice(sit.summaries).format_map(values)
    if sit.descriptions and rng.random() < 0.8:
        out["description" if rng.random() < 0.8 else "message"] = rng.choice(sit.descriptions).format_map(values)
    if rng.random() < 0.4:
        base = rng.choice(["https://runbooks.prometheus-operator.dev/runbooks/kubernetes/",
                           "https://github.com/example/runbooks/blob/main/", "https://wiki.example.com/alerts/"])
        out["runbook_url"] = base + alertname.lower()
    return out


def _alert(rng: random.Random, labels: dict[str, str], annotations: dict[str, str], expr: str = "up == 0") -> dict[str, Any]:
    t = f"2026-{rng.randint(1, 11):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}Z"
    return {
        "status": "firing",
        "labels": labels,
        "annotations": annotations,
        "startsAt": t,
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": rng.choice(["http://prometheus.monitoring.svc:9090", "http://prometheus-k8s-0:9090",
                                    "https://prometheus.example.com"]) + "/graph?g0.expr=" + quote(expr, safe="") + "&g0.tab=1",
        "fingerprint": _alnum(rng, 16, "0123456789abcdef"),
    }


def generate(n: int, seed: int, bucket: str, catalog: Catalog | None = None) -> list[dict[str, Any]]:
    """`n` labelled examples whose alert names all fall in name bucket `bucket` ('train'|'val'|'test')."""
    catalog = catalog or default_catalog()
    rng = random.Random(f"trm-sre:{seed}:{bucket}")
    weights = [s.weight for s in SITUATIONS]
    out: list[dict[str, Any]] = []
    while len(out) < n:
        sit = rng.choices(SITUATIONS, weights)[0]
        for _ in range(200):  # rejection-sample a name of the right bucket
            alertname = sit.name(rng)
            if name_bucket(alertname) == bucket:
                break
        else:
            continue
        draft = sit.build(rng)
        labels = {"alertname": alertname} | draft.labels
        if rng.random() < 0.5:  # label order carries no meaning
            items = list(labels.items())
            rng.shuffle(items)
            labels = dict(items)
        if rng.random() < 0.3:  # routing / ownership / external labels, sometimes many
            for key, values in rng.sample(ROUTING_LABELS, rng.randint(1, 8)):
                labels.setdefault(key, rng.choice(values))
        annotations = _annotations(rng, sit, labels, draft.context, alertname)
        if rng.random() < 0.25:
            annotations = augment_annotations(annotations, labels, rng)
        if rng.random() < 0.15:  # env/product prefixes and suffixes (the bucket is the base name's)
            labels["alertname"] = augment_name(alertname, rng)
        t = policy.decide(sit.key, labels)  # THE policy table (models/policy.py); builders only make labels and text
        out.append({
            "alert": _alert(rng, labels, annotations, expression_for(sit.key, labels, rng)),
            "expected": policy.expected_decision(t, labels, catalog),
            "target": {"lambda_function": t.function, "pointers": t.pointers, "enums": t.enums},
            "situation": sit.key,
        })
    return out


def iter_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(row, separators=(",", ":"), ensure_ascii=False) + "\n" for row in rows)


# What the committed files hold; training regenerates its (larger) train set from the same seed.
SPLITS = {
    # file name: (n, seed, name bucket)
    "train-sample.jsonl": (500, 1, "train"),
    "val.jsonl": (1000, 2, "val"),
    "test-random.jsonl": (1000, 3, "train"),
    "test-heldout-names.jsonl": (1500, 4, "test"),
}
TRAIN_SEED = 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.data", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DATASETS_DIR)
    args = parser.parse_args(argv)
    for fname, (n, seed, bucket) in SPLITS.items():
        rows = generate(n, seed, bucket)
        write_jsonl(args.out / fname, rows)
        n_none = sum(r["expected"]["lambda_function"] is None for r in rows)
        size = (args.out / fname).stat().st_size
        print(f"{fname}: {len(rows)} examples, {n_none / len(rows):.0%} no-remediation, {size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def segment_vocabulary() -> tuple[str, ...]:
    """Words of the situation table (parts, and curated names of the *train* name bucket only).

    The encoder uses them to split run-together names ("kubepodcrashlooping"); held-out test
    names contribute nothing, so the held-out split stays unseen.
    """
    words: set[str] = set()
    for sit in SITUATIONS:
        for alts in sit.parts:
            for part in alts:
                words.update(w.lower() for w in split_words(part))
        for name in sit.curated:
            if name_bucket(name) == "train":
                words.update(w.lower() for w in split_words(name))
    words.update(["pod", "pods", "container", "deployment", "persistent", "volume", "claim", "flux", "helm", "release",
                  "git", "repository", "kustomization", "restart", "restarts", "crash", "loop", "looping", "oom", "killed",
                  "memory", "ready", "not", "pending", "image", "pull", "back", "off", "filling", "up", "inodes", "space",
                  "kube", "kubernetes", "node", "stateful", "set", "daemon", "job", "cron", "hpa", "replicas", "mismatch"])
    return tuple(sorted(w for w in words if len(w) >= 2))
