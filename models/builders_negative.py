"""Label builders for the alerts the policy never acts on (nodes, hosts, the control plane, certificates, ...).

Like `models.builders`, they only make labels and text; which decision each situation gets is
`models.policy`'s table.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from models.builders import (
    _REPLICA_DISTRACTOR_KEYS,
    APPS,
    FLUX_OBJECTS,
    NODES,
    Draft,
    _alnum,
    _common,
    _ksm_target,
    app_name,
    ip_port,
    namespace_name,
    pod_name,
    pvc_name,
)


def build_node(rng: random.Random) -> Draft:
    labels = {"node": rng.choice(NODES)} if rng.random() < 0.75 else {}
    if rng.random() < 0.6:
        labels["instance"] = rng.choice([ip_port(rng, 9100), rng.choice(NODES) + ":9100"])
    if rng.random() < 0.3:
        labels["condition"], labels["status"] = (
            rng.choice(["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"]),
            rng.choice(["true", "false", "unknown"]),
        )
    if rng.random() < 0.3:  # node-exporter's own pod: a distractor
        labels["pod"], labels["namespace"] = pod_name(rng, "node-exporter", "daemonset"), "monitoring"
        labels["container"] = rng.choice(["node-exporter", "kube-rbac-proxy"])
    elif rng.random() < 0.2:
        labels["namespace"] = rng.choice(["monitoring", "kube-system"])
    if rng.random() < 0.2:
        labels["device"], labels["mountpoint"], labels["fstype"] = (
            rng.choice(["/dev/sda1", "/dev/nvme0n1p2"]),
            rng.choice(["/", "/var", "/var/lib/kubelet"]),
            "ext4",
        )
    _common(rng, labels, rng.choice(["node-exporter", "kubelet", "kube-state-metrics"]))
    return Draft(labels)


def build_host(rng: random.Random) -> Draft:
    labels = {"instance": rng.choice([ip_port(rng, 9100), "nas.local:9100", "router:9100"])}
    if rng.random() < 0.3:
        labels["nodename"] = rng.choice(NODES)
    if rng.random() < 0.2:
        labels["name"] = rng.choice(["nginx.service", "docker.service", "k3s.service", "sshd.service"])
    if rng.random() < 0.2:
        labels["device"], labels["mountpoint"] = (
            rng.choice(["/dev/sda1", "/dev/md0", "eth0"]),
            rng.choice(["/", "/data", "/boot"]),
        )
    _common(rng, labels, rng.choice(["node-exporter", "node", "blackbox"]))
    return Draft(labels)


def build_control_plane(rng: random.Random) -> Draft:
    labels: dict[str, str] = {}
    if rng.random() < 0.5:
        labels["instance"] = ip_port(rng, rng.choice([6443, 10257, 10259, 2379, 10249]))
    if rng.random() < 0.3:
        labels["namespace"] = "kube-system"
        if rng.random() < 0.5:
            labels["pod"] = rng.choice(
                ["kube-apiserver-", "etcd-", "kube-scheduler-", "kube-controller-manager-"]
            ) + rng.choice(NODES)
    if rng.random() < 0.2:
        labels["verb"], labels["resource"] = (
            rng.choice(["LIST", "GET", "WATCH"]),
            rng.choice(["pods", "nodes", "secrets"]),
        )
    if rng.random() < 0.15:
        labels["name"] = rng.choice(["v1beta1.metrics.k8s.io", "v1.custom.metrics.k8s.io"])
    _common(
        rng,
        labels,
        rng.choice(
            ["apiserver", "kube-scheduler", "kube-controller-manager", "etcd", "kubelet", "kube-proxy", "coredns"]
        ),
    )
    return Draft(labels)


def build_certificate(rng: random.Random) -> Draft:
    labels: dict[str, str] = {}
    if rng.random() < 0.5:  # cert-manager: name + namespace, exactly what a Flux object looks like
        labels["name"] = rng.choice(["wildcard-tls", "api-cert", "ingress-tls", f"{app_name(rng)}-tls"])
        labels["namespace"] = namespace_name(rng)
        if rng.random() < 0.5:
            labels["condition"] = rng.choice(["False", "Unknown"])
        if rng.random() < 0.4:
            labels["issuer_name"], labels["issuer_kind"] = (
                rng.choice(["letsencrypt-prod", "ca-issuer"]),
                "ClusterIssuer",
            )
    else:
        labels["instance"] = rng.choice([ip_port(rng, 6443), "https://example.org", "api.example.com:443"])
    _common(rng, labels, rng.choice(["cert-manager", "apiserver", "blackbox", "kubelet", "ssl-exporter"]))
    return Draft(labels)


def build_monitoring_internals(rng: random.Random) -> Draft:
    comp = rng.choice(
        [
            "prometheus-k8s",
            "alertmanager-main",
            "prometheus-operator",
            "thanos-ruler",
            "kube-prometheus-stack-prometheus",
        ]
    )
    labels = {"namespace": rng.choice(["monitoring", "observability", "prometheus"])}
    if rng.random() < 0.6:
        labels["pod"] = pod_name(rng, comp, "statefulset" if "operator" not in comp else "deployment")
        labels["container"] = rng.choice(["prometheus", "alertmanager", "config-reloader", "prometheus-operator"])
    if rng.random() < 0.5:
        labels["service"], labels["endpoint"], labels["instance"] = (
            comp,
            rng.choice(["web", "http", "https"]),
            ip_port(rng, 9090),
        )
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
    for key, values in (
        ("datname", ["orders", "postgres", "app"]),
        ("queue", ["jobs", "emails"]),
        ("topic", ["events", "payments"]),
        ("consumergroup", ["billing", "etl"]),
        ("code", ["500", "503"]),
        ("method", ["GET", "POST"]),
        ("route", ["/api/v1/orders", "/healthz"]),
        ("server", ["db-1", "redis-0"]),
        ("app", APPS),
        ("deployment", APPS),
        ("name", FLUX_OBJECTS),
    ):
        if rng.random() < (0.06 if key in ("deployment", "name") else 0.12):
            labels[key] = rng.choice(values)
    _common(
        rng, labels, rng.choice(["postgres-exporter", "redis-exporter", "blackbox", "nginx", "app", "mysqld-exporter"])
    )
    return Draft(labels)


def build_meta(rng: random.Random) -> Draft:
    labels: dict[str, str] = {}
    if rng.random() < 0.4:
        labels["namespace"] = "monitoring"
    _common(rng, labels)
    labels["severity"] = rng.choice(["none", "info", "warning"])
    return Draft(labels)
