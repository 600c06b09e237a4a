"""Published alert rules -> labelled firing alerts, by the policy table (`models.policy`).

A rule (name, PromQL expression, static labels, annotations) is given a *situation* from what
its expression measures (the metric names and matchers; the alert name only breaks ties), then
instantiated as Alertmanager would deliver it: the label set the expression keeps (its outer
`by (...)` clause, else the labels of its metric, plus `group_left` joins and `=` matchers),
realistic values, the rule's static labels, routing/external labels, annotations rendered from
their Go templates, and `generatorURL` carrying the query-escaped expression. The expected
decision is then `policy.decide(situation, labels)`, validated by the catalog.
"""

from __future__ import annotations

import random
import re
from typing import Any
from urllib.parse import quote

from models import policy
from runbooks import Catalog

_METRIC = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*\"((?:[^\"\\]|\\.)*)\"")
_BY = re.compile(r"\b(by|without)\s*\(([^)]*)\)")
_JOIN = re.compile(r"\bgroup_(?:left|right)\s*\(([^)]*)\)")
_LABEL_REPLACE = re.compile(r"label_replace\s*\([^,]+,\s*\"([a-zA-Z_][a-zA-Z0-9_]*)\"")
_AGG_START = re.compile(r"^\(*\s*(sum|max|min|avg|count|topk|bottomk|group|count_values|quantile|stddev)\b")
_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "sum",
    "max",
    "min",
    "avg",
    "count",
    "rate",
    "irate",
    "increase",
    "delta",
    "idelta",
    "deriv",
    "predict_linear",
    "abs",
    "absent",
    "absent_over_time",
    "histogram_quantile",
    "label_replace",
    "label_join",
    "time",
    "vector",
    "scalar",
    "clamp_min",
    "clamp_max",
    "changes",
    "resets",
    "topk",
    "bottomk",
    "group",
    "avg_over_time",
    "max_over_time",
    "min_over_time",
    "sum_over_time",
    "count_over_time",
    "last_over_time",
    "quantile_over_time",
    "stddev",
    "round",
    "ceil",
    "floor",
    "sort",
    "sort_desc",
    "timestamp",
    "day_of_week",
    "hour",
    "minute",
    "inf",
    "nan",
    "le",
    "e",
    "quantile",
    "count_values",
    "stddev_over_time",
    "present_over_time",
    "exp",
    "ln",
    "log2",
    "sgn",
}


def metrics_of(expr: str) -> list[str]:
    """Metric names of a PromQL expression, in order (functions, keywords and label names excluded)."""
    out: list[str] = []
    stripped = re.sub(r"\{[^}]*\}", "{}", expr)
    stripped = re.sub(r"\"(?:[^\"\\]|\\.)*\"", '""', stripped)
    stripped = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", stripped)
    stripped = re.sub(r"\[[^\]]*\]", "", stripped)
    for m in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", stripped):
        name, call = m.group(1), m.group(2)
        if call or name in _KEYWORDS or name.lower() in _KEYWORDS:
            continue
        if name not in out:
            out.append(name)
    return out


def matchers_of(expr: str) -> list[tuple[str, str, str]]:
    out = []
    for block in re.findall(r"\{([^}]*)\}", expr):
        out += _MATCHER.findall(block)
    return out


# ------------------------------------------------------------------------------------------------
# Situation of a rule: what its expression measures
# ------------------------------------------------------------------------------------------------
def situation_of(rule: dict[str, Any]) -> str:
    expr, name = rule["expr"], rule["alert"]
    ms = metrics_of(expr)
    matchers = matchers_of(expr)
    mvals = {k: v for k, op, v in matchers if op in ("=", "=~")}
    low = (name + " " + " ".join(rule.get("annotations", {}).values())).lower()

    def has(*prefixes: str) -> bool:
        return any(m.startswith(p) for m in ms for p in prefixes)

    if has("gotk_", "flux_") or "customresource_kind" in mvals or "toolkit.fluxcd.io" in expr:
        if has("gotk_suspend") or mvals.get("suspended") == "true" or "suspend" in low:
            return "flux-suspended"
        kind = mvals.get("kind") or mvals.get("customresource_kind") or ""
        kinds = [k for k in re.split(r"[|()]", kind) if k]
        if kinds and all(k not in policy.FLUX_ACTION_KINDS for k in kinds):
            return "flux-other-kind"
        if len(kinds) == 1:
            return {
                "Kustomization": "flux-kustomization",
                "HelmRelease": "flux-helmrelease",
                "GitRepository": "flux-gitrepository",
            }[kinds[0]]
        return "flux-generic"
    if has("kube_horizontalpodautoscaler"):
        return "hpa"
    if has("kube_statefulset"):
        return "statefulset"
    if has("kube_daemonset"):
        return "daemonset"
    if has("kube_job", "kube_cronjob"):
        return "job"
    if has("kubelet_volume_stats"):
        return "pvc-filling"
    if has("kube_persistentvolume"):
        return "pvc-other"
    if has(
        "kube_pod_container_status_restarts_total",
        "kube_pod_container_status_last_terminated_reason",
        "kube_pod_container_status_terminated_reason",
        "container_oom_events_total",
    ):
        return "pod-crash"
    if has("kube_pod_container_status_waiting_reason", "kube_pod_init_container_status_waiting_reason"):
        reason = mvals.get("reason", "")
        return "pod-crash" if reason == "CrashLoopBackOff" else "pod-waiting"
    if has(
        "kube_pod_status_ready",
        "kube_pod_status_phase",
        "kube_pod_container_status_waiting",
        "kube_pod_init_container_status",
        "kube_pod_container_status_ready",
        "kube_pod_status_unschedulable",
        "kube_pod_status_scheduled",
    ):
        phase = mvals.get("phase", "")
        if phase and all(p in ("Running", "Succeeded") for p in re.split(r"[|]", phase)):
            return "application"
        return "pod-waiting"
    if has("kube_deployment_status", "kube_deployment_spec_replicas", "kube_deployment_metadata_generation"):
        return "deployment-stuck"
    if has("kube_resourcequota", "kube_limitrange"):
        return "quota"
    if has("container_cpu", "container_memory", "kube_pod_container_resource", "container_fs", "container_network"):
        return "container-resources"
    if has("kube_node", "kubelet_", "kubelet"):
        return "node"
    if has("node_"):
        return "host"
    if has("apiserver_", "etcd_", "scheduler_", "coredns_", "kube_proxy", "workqueue_", "rest_client"):
        return "control-plane"
    if has("certmanager_", "x509_", "ssl_", "probe_ssl"):
        return "certificate"
    if has("prometheus_", "alertmanager_", "up", "scrape_", "thanos_", "loki_", "grafana_", "vector", "promtail_"):
        return "monitoring-internals"
    if re.search(r"watchdog|infoinhibitor|deadmansswitch", name.lower()):
        return "meta"
    return "application"


# ------------------------------------------------------------------------------------------------
# Instantiation: the labels a firing alert of this rule carries
# ------------------------------------------------------------------------------------------------
_NATURAL: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("kube_pod_container_", ("namespace", "pod", "container", "uid")),
    ("kube_pod_init_container_", ("namespace", "pod", "container", "uid")),
    ("kube_pod_", ("namespace", "pod", "uid")),
    ("kube_deployment_", ("namespace", "deployment")),
    ("kube_statefulset_", ("namespace", "statefulset")),
    ("kube_daemonset_", ("namespace", "daemonset")),
    ("kube_job_", ("namespace", "job_name")),
    ("kube_cronjob_", ("namespace", "cronjob")),
    ("kube_horizontalpodautoscaler_", ("namespace", "horizontalpodautoscaler")),
    ("kube_persistentvolumeclaim_", ("namespace", "persistentvolumeclaim")),
    ("kube_persistentvolume_", ("persistentvolume",)),
    ("kube_node_", ("node",)),
    (
        "kubelet_volume_stats_",
        ("namespace", "persistentvolumeclaim", "node", "instance", "job", "metrics_path", "service", "endpoint"),
    ),
    (
        "gotk_resource_info",
        (
            "customresource_kind",
            "customresource_group",
            "customresource_version",
            "name",
            "exported_namespace",
            "ready",
            "suspended",
        ),
    ),
    ("gotk_", ("kind", "name", "exported_namespace", "namespace", "type", "status", "job", "instance", "pod")),
    ("container_", ("namespace", "pod", "container", "name", "id", "image", "node", "instance", "job", "metrics_path")),
    ("node_", ("instance", "job", "pod", "namespace", "node")),
)
_KSM = ("job", "instance", "service", "endpoint")
ROUTING_LABELS = (
    ("cluster", ["prod-eu", "gke-main", "homelab", "k8s-prod-01", "staging"]),
    ("cluster_id", ["a1b2c", "t8x2k", "mc-golem"]),
    ("prometheus", ["monitoring/k8s", "monitoring/kube-prometheus-stack-prometheus"]),
    ("prometheus_replica", ["prometheus-k8s-0", "prometheus-k8s-1"]),
    ("team", ["sre", "platform", "payments", "atlas", "phoenix"]),
    ("env", ["prod", "dev", "staging"]),
    ("region", ["eu-west-1", "us-east-1", "eu-de-1"]),
    ("owner", ["team-atlas", "sre"]),
    ("area", ["kaas", "platform", "managedservices"]),
    ("topic", ["workloadcluster", "storage", "kubernetes"]),
    ("cancel_if_outside_working_hours", ["true", "false"]),
    ("inhibit_cluster_not_ready", ["true"]),
    ("support_group", ["containers", "compute-storage-api"]),
    ("service_tier", ["k8s", "1"]),
    ("tier", ["os", "k8s"]),
    ("installation", ["golem", "gauss"]),
    ("pipeline", ["stable", "testing"]),
    ("provider", ["aws", "capa", "vsphere"]),
    ("customer", ["acme"]),
    ("label_team", ["payments", "search"]),
    ("label_app_kubernetes_io_name", ["api", "web"]),
    ("label_app_kubernetes_io_part_of", ["shop", "platform"]),
    ("organization", ["giantswarm", "acme"]),
    ("receiver", ["default", "pagerduty"]),
    ("source", ["prometheus", "vmalert"]),
    ("playbook", ["https://example.com/pb"]),
)


def labels_kept(expr: str) -> list[str]:
    """The label keys of the expression's result series (best effort)."""
    keys: list[str] = []
    m = _BY.search(expr)
    if re.match(r"^\(*\s*absent(_over_time)?\s*\(", expr):  # absent(): only the equality matchers survive
        keys = [k for k, op, _ in matchers_of(expr) if op == "=" and k != "__name__"]
    elif _AGG_START.search(expr) and m and m.group(1) == "by":
        keys = [k.strip() for k in m.group(2).split(",") if k.strip()]
    elif _AGG_START.search(expr) and not m:
        keys = []
    else:
        ms = metrics_of(expr)
        if ms:
            for prefix, natural in _NATURAL:
                if ms[0].startswith(prefix):
                    keys = list(natural) + (list(_KSM) if prefix.startswith("kube_") else [])
                    break
            else:
                keys = ["instance", "job"]
        for k, op, v in matchers_of(expr):
            if k != "__name__" and k not in keys and op in ("=", "=~"):
                keys.append(k)
        if m and m.group(1) == "without":
            drop = {k.strip() for k in m.group(2).split(",")}
            keys = [k for k in keys if k not in drop]
    for j in _JOIN.findall(expr):
        keys += [k.strip() for k in j.split(",") if k.strip() and k.strip() not in keys]
    keys += [k for k in _LABEL_REPLACE.findall(expr) if k not in keys]
    return [k for k in keys if k and k != "__name__"]


def _kube_id(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(n))


_APPS = [
    "api",
    "web",
    "checkout",
    "payments",
    "grafana",
    "loki",
    "postgres",
    "redis",
    "ingress-nginx",
    "cert-manager",
    "external-dns",
    "coredns",
    "app-operator",
    "chart-operator",
    "kyverno",
    "vault",
    "keycloak",
    "nextcloud",
    "home-assistant",
    "plex",
    "sonarr",
    "immich-server",
    "gitea",
    "harbor-core",
    "minio",
    "cilium-operator",
    "metrics-server",
    "argocd-repo-server",
    "thanos-query",
    "mimir-ingester",
]
_NAMESPACES = [
    "default",
    "monitoring",
    "kube-system",
    "giantswarm",
    "media",
    "home",
    "database",
    "shop",
    "flux-system",
    "observability",
    "ingress",
    "security",
    "apps",
    "team-a",
    "prod",
    "storage",
    "openshift-monitoring",
]


def _value(rng: random.Random, key: str, matcher: dict[str, str], ctx: dict[str, str]) -> str:
    if key in matcher:
        return matcher[key]
    if key in ctx:
        return ctx[key]
    app = ctx.setdefault("app", rng.choice(_APPS))
    if key in ("namespace", "exported_namespace"):
        return ctx.setdefault("ns", rng.choice(_NAMESPACES))
    if key in ("pod", "exported_pod"):
        return ctx.setdefault(
            "pod",
            f"{app}-{_kube_id(rng, rng.choice([9, 10]))}-{_kube_id(rng, 5)}"
            if rng.random() < 0.75
            else f"{app}-{rng.randint(0, 3)}",
        )
    if key in (
        "deployment",
        "statefulset",
        "daemonset",
        "container",
        "horizontalpodautoscaler",
        "created_by_name",
        "owner_name",
    ):
        return app
    if key in ("persistentvolumeclaim", "pvc"):
        return ctx.setdefault(
            "pvc", rng.choice(["data-", "storage-", "", "config-"]) + app + rng.choice(["-0", "", "-data", "-1"])
        )
    if key == "name":
        return ctx.setdefault(
            "obj", rng.choice(["apps", "infrastructure", "cluster-apps", app, "flux-system", f"{app}-config"])
        )
    if key in ("kind", "customresource_kind"):
        return ctx.setdefault(
            "kind",
            rng.choice(
                [
                    "Kustomization",
                    "HelmRelease",
                    "GitRepository",
                    "Kustomization",
                    "HelmRelease",
                    "HelmRepository",
                    "OCIRepository",
                    "HelmChart",
                ]
            ),
        )
    if key == "customresource_group":
        return "kustomize.toolkit.fluxcd.io"
    if key in ("node", "kubernetes_node", "exported_node"):
        return rng.choice(["worker-01", "ip-10-0-3-17.eu-west-1.compute.internal", "k8s-node-a7", "pi4-02"])
    if key == "instance":
        octets = (
            f"{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"  # drawn before the port, as before
        )
        return f"10.{octets}:{rng.choice([8080, 10250, 9100, 8443])}"
    if key == "job":
        return rng.choice(["kube-state-metrics", "kubelet", "node-exporter"])
    if key == "uid":
        return f"{_kube_id(rng, 8)}-{_kube_id(rng, 4)}-{_kube_id(rng, 4)}"
    if key in ("ready", "status"):
        return "False"
    if key == "type":
        return "Ready"
    if key == "reason":
        return rng.choice(["CrashLoopBackOff", "ImagePullBackOff", "OOMKilled", "Error"])
    if key == "phase":
        return rng.choice(["Pending", "Failed", "Unknown"])
    if key == "condition":
        return rng.choice(["false", "unknown", "true"])
    if key == "metrics_path":
        return "/metrics"
    if key in ("service", "endpoint"):
        return rng.choice(["kube-state-metrics", "http", "https-metrics", "kubelet"])
    return rng.choice(["true", "1", "main", "v1", app, "default", "http"])


_TEMPLATE = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)


def render(text: str, labels: dict[str, str], rng: random.Random) -> str:
    def sub(m: re.Match[str]) -> str:
        inner = m.group(1)
        lab = re.search(
            r"\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)|index \$labels \"([^\"]+)\"|\.Labels\.([a-zA-Z_]\w*)", inner
        )
        if lab:
            return str(labels.get(next(g for g in lab.groups() if g), "<no value>"))
        if "$value" in inner or ".Value" in inner:
            v = rng.choice([rng.randint(1, 99), round(rng.uniform(0, 100), 2), 0.93])
            return f"{v:.0%}" if "Percentage" in inner and isinstance(v, float) and v < 1 else str(v)
        if "externalLabels" in inner:
            return "prod"
        return ""

    return _TEMPLATE.sub(sub, text)


def instantiate(rule: dict[str, Any], rng: random.Random, routing: float = 0.35) -> dict[str, Any]:
    """One firing Alertmanager alert of `rule`, with realistic values and extra routing labels."""
    expr = rule["expr"]
    matcher = {k: v for k, op, v in matchers_of(expr) if op == "=" and v}
    for k, op, v in matchers_of(expr):
        if op == "=~" and k not in matcher:
            alts = [a for a in v.split("|") if re.fullmatch(r"[A-Za-z0-9_.:/-]+", a)]
            if alts and ".*" not in v:
                matcher[k] = rng.choice(alts)
    ctx: dict[str, str] = {}
    labels: dict[str, Any] = {"alertname": rule["alert"]}
    for key in labels_kept(expr):
        labels[key] = _value(rng, key, matcher, ctx)
    for k, v in rule.get("labels", {}).items():
        labels[k] = render(str(v), labels, rng)
    if "severity" not in labels and rng.random() < 0.7:
        labels["severity"] = rng.choice(["warning", "critical", "info"])
    for key, values in ROUTING_LABELS:
        if key not in labels and rng.random() < routing * (0.6 if key in ("cluster", "prometheus") else 0.15):
            labels[key] = rng.choice(values)
    annotations = {k: render(str(v), labels, rng) for k, v in rule.get("annotations", {}).items()}
    host = rng.choice(
        ["http://prometheus-k8s-0:9090", "http://prometheus.monitoring.svc:9090", "https://prometheus.example.com"]
    )
    t = f"2026-{rng.randint(1, 11):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00Z"
    return {
        "status": "firing",
        "labels": labels,
        "annotations": annotations,
        "startsAt": t,
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": f"{host}/graph?g0.expr={quote(expr, safe='')}&g0.tab=1",
        "fingerprint": "".join(rng.choice("0123456789abcdef") for _ in range(16)),
    }


def labelled_row(
    rule: dict[str, Any], rng: random.Random, catalog: Catalog, source: str, routing: float = 0.35
) -> dict[str, Any]:
    alert = instantiate(rule, rng, routing)
    situation = rule.get("situation") or situation_of(rule)
    target = policy.decide(situation, alert["labels"])
    return {
        "alert": alert,
        "expected": policy.expected_decision(target, alert["labels"], catalog),
        "target": {"lambda_function": target.function, "pointers": target.pointers, "enums": target.enums},
        "situation": situation,
        "source": source,
        "rule": rule["alert"],
    }
