"""The Helm chart (deploy/helm/trm-sre) lints, renders, is accepted by a real
kube-apiserver, and stays in step with the kustomize base (deploy/base): the
same CRD byte for byte, the same RBAC rules, the same hardened Deployment.

helm is built from source on first use (tests/envtest/build-helm.sh, several
minutes cold), so every test that renders the chart is marked `envtest`, with
a timeout that covers that first build (the project default is 600 s).
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest
import yaml

from runbooks import default_catalog
from tests.envtest.controlplane import ControlPlane
from tests.packaging.helpers import (
    BASE,
    CHART,
    REPO,
    by_kind,
    dump_all,
    helm,
    one,
    render_chart,
)

CRD = REPO / "crds" / "remediationpolicy.yaml"
CHART_CRD = CHART / "crds" / "remediationpolicy.yaml"

# Every option that changes the rendered objects, at once (ServiceMonitor left
# out: the test apiserver has no Prometheus operator CRDs).
ALL_OPTIONS = (
    "gpu.enabled=true",
    "policies.namespaces={shop,web}",
    "policies.secretReaderNamespaces={shop}",
    "sink.ceOverrides.cluster=homelab",
    "persistence.storageClass=fast",
    "persistence.keepOnUninstall=true",
    "starterPolicy.dryRun=false",
    "image.digest=sha256:" + "0" * 64,
    "extraArgs={--log-level,DEBUG}",
    "podAnnotations.team=sre",
)

# Three replicas on PostgreSQL: a rolling Deployment, a PodDisruptionBudget, the password from a Secret.
REPLICAS_ON_POSTGRESQL = (
    "replicaCount=3",
    "store.url=postgresql://trm@db-rw:5432/trm",
    "store.passwordSecret.name=db-app",
)


def normalized_rules(role: dict[str, Any]) -> list[tuple[tuple[str, ...], ...]]:
    """Rules as sorted tuples, so list order and YAML flow style do not matter."""
    return sorted(
        tuple(
            tuple(sorted(rule.get(key, [])))
            for key in ("apiGroups", "resources", "resourceNames", "verbs", "nonResourceURLs")
        )
        for rule in role["rules"]
    )


def base_docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((BASE / name).read_text(encoding="utf-8")) if d]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["controller"]
    return containers[0]


# --------------------------------------------------------------------------
# No helm needed
# --------------------------------------------------------------------------


def test_chart_crd_is_a_byte_identical_copy_of_the_crd() -> None:
    assert CHART_CRD.read_bytes() == CRD.read_bytes(), (
        f"{CHART_CRD.relative_to(REPO)} drifted from {CRD.relative_to(REPO)}: "
        f"cp {CRD.relative_to(REPO)} {CHART_CRD.relative_to(REPO)}"
    )


def test_chart_crds_folder_holds_only_the_crd() -> None:
    assert sorted(p.name for p in (CHART / "crds").iterdir()) == [CRD.name]


def test_starter_policy_allows_only_catalog_functions() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    allowed = values["starterPolicy"]["allowedFunctions"]
    assert allowed, "the starter policy must allow at least one function"
    assert set(allowed) <= set(default_catalog().names)


def test_chart_app_version_is_the_controller_version() -> None:
    from controller import __version__

    chart = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    assert chart["appVersion"] == __version__


# --------------------------------------------------------------------------
# helm lint / helm template
# --------------------------------------------------------------------------


@pytest.mark.envtest
@pytest.mark.timeout(1800)
def test_helm_lint_passes_strict(helm_bin: Path) -> None:
    helm(helm_bin, "lint", "--strict", str(CHART))
    helm(helm_bin, "lint", "--strict", str(CHART), "--set", ",".join(ALL_OPTIONS[:4]))


@pytest.mark.envtest
@pytest.mark.timeout(1800)
def test_rendered_rbac_rules_equal_the_kustomize_base(helm_bin: Path) -> None:
    rendered = render_chart(helm_bin)
    base = base_docs("rbac.yaml")
    for suffix in ("-operator", "-secret-reader"):
        assert normalized_rules(one(rendered, "ClusterRole", suffix)) == normalized_rules(
            one(base, "ClusterRole", suffix)
        ), f"ClusterRole *{suffix}: the chart's rules differ from deploy/base/rbac.yaml"
    # No other grants on either side: no Roles, no extra ClusterRoles.
    for docs in (rendered, base):
        assert len(by_kind(docs, "ClusterRole")) == 2
        assert by_kind(docs, "Role") == []
    # The same bindings: the operator role cluster-wide, the secret reader per namespace.
    for docs in (rendered, base):
        binding = one(docs, "ClusterRoleBinding", "-operator")
        assert binding["roleRef"]["name"].endswith("-operator")
        assert [s["kind"] for s in binding["subjects"]] == ["ServiceAccount"]
        reader = one(docs, "RoleBinding", "-secret-reader")
        assert reader["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": reader["roleRef"]["name"],
        }
        assert reader["roleRef"]["name"].endswith("-secret-reader")


@pytest.mark.envtest
@pytest.mark.timeout(1800)
@pytest.mark.parametrize(
    "options",
    [(), ALL_OPTIONS, ("model.enabled=false", "persistence.enabled=false")],
    ids=["defaults", "all-options", "no-model-no-persistence"],
)
def test_deployment_is_unprivileged_with_a_read_only_root(helm_bin: Path, options: tuple[str, ...]) -> None:
    deployment = one(render_chart(helm_bin, *options), "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532  # the image's user
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    ctx = container(deployment)["securityContext"]
    assert ctx["runAsNonRoot"] is True
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert not ctx.get("privileged")
    # The writable places the read-only image needs.
    mounts = {m["mountPath"] for m in container(deployment)["volumeMounts"]}
    assert {"/var/lib/trm-sre", "/tmp"} <= mounts


@pytest.mark.envtest
@pytest.mark.timeout(1800)
def test_deployment_mirrors_the_kustomize_base(helm_bin: Path) -> None:
    chart = container(one(render_chart(helm_bin), "Deployment"))
    base = container(one(base_docs("deployment.yaml"), "Deployment"))
    # The chart passes the base's arguments (in order), then its own (--log-level).
    assert chart["args"][: len(base["args"])] == base["args"]
    assert chart["command"] == base["command"]
    for key in (
        "ports",
        "startupProbe",
        "livenessProbe",
        "readinessProbe",
        "volumeMounts",
        "resources",
        "securityContext",
    ):
        assert chart[key] == base[key], f"container.{key} differs from deploy/base/deployment.yaml"
    assert {e["name"]: e.get("value") for e in chart["env"]} == {e["name"]: e.get("value") for e in base["env"]}


@pytest.mark.envtest
@pytest.mark.timeout(1800)
def test_values_reach_the_rendered_objects(helm_bin: Path) -> None:
    docs = render_chart(helm_bin, *ALL_OPTIONS, release="x", namespace="ops")
    deployment = one(docs, "Deployment")
    ctr = container(deployment)
    args = ctr["args"]
    # The starter policy lives in the release namespace, so it is watched too.
    namespaces = [args[i + 1] for i, a in enumerate(args) if a == "--namespace"]
    assert namespaces == ["shop", "web", "ops"]
    assert args[args.index("--device") + 1] == "cuda"
    assert args[-2:] == ["--log-level", "DEBUG"]
    assert ctr["image"] == "ghcr.io/homelab/trm-sre@sha256:" + "0" * 64
    assert ctr["resources"]["limits"] == {"memory": "4Gi", "nvidia.com/gpu": 1}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {t["key"] for t in pod["tolerations"]} == {"nvidia.com/gpu"}
    assert pod["runtimeClassName"] == "nvidia"
    assert ctr["startupProbe"]["failureThreshold"] * ctr["startupProbe"]["periodSeconds"] >= 300  # CUDA start-up
    env = {e["name"]: e["value"] for e in ctr["env"]}
    assert env["K_SINK"] == "http://broker-ingress.knative-eventing.svc.cluster.local/ops/default"
    assert yaml.safe_load(env["K_CE_OVERRIDES"]) == {"extensions": {"cluster": "homelab"}}
    assert {rb["metadata"]["namespace"] for rb in by_kind(docs, "RoleBinding")} == {"ops", "shop"}
    pvc = one(docs, "PersistentVolumeClaim")
    assert pvc["spec"]["storageClassName"] == "fast"
    assert pvc["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    policy = one(docs, "RemediationPolicy")
    assert policy["metadata"]["namespace"] == "ops"
    assert policy["spec"]["actions"]["dryRun"] is False


@pytest.mark.envtest
@pytest.mark.timeout(1800)
def test_optional_objects_follow_their_switches(helm_bin: Path) -> None:
    defaults = render_chart(helm_bin)
    assert one(defaults, "RemediationPolicy")["spec"]["actions"]["dryRun"] is True
    token = one(defaults, "Secret", "-webhook-token")
    assert len(token["data"]["token"]) > 64  # base64 of a 64-character random token

    bare = render_chart(
        helm_bin,
        "starterPolicy.enabled=false",
        "webhookToken.create=false",
        "persistence.enabled=false",
        "sink.url=",
        "model.enabled=false",
    )
    kinds = {d["kind"] for d in bare}
    assert not kinds & {"RemediationPolicy", "Secret", "PersistentVolumeClaim"}
    ctr = container(one(bare, "Deployment"))
    assert "K_SINK" not in {e["name"] for e in ctr["env"]}
    assert "--no-model" in ctr["args"] and "--namespace" not in ctr["args"]
    volumes = {v["name"]: v for v in one(bare, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["state"] == {"name": "state", "emptyDir": {}}

    existing = render_chart(
        helm_bin, "webhookToken.existingSecret=mine", "webhookToken.key=bearer", "persistence.existingClaim=old-state"
    )
    assert by_kind(existing, "Secret") == [] and by_kind(existing, "PersistentVolumeClaim") == []
    pod = one(existing, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["webhook-token"]["secret"]["secretName"] == "mine"
    assert volumes["state"]["persistentVolumeClaim"]["claimName"] == "old-state"
    assert "/etc/trm-sre/token/bearer" in container(one(existing, "Deployment"))["args"]

    monitored = render_chart(helm_bin, "serviceMonitor.enabled=true")
    monitor = one(monitored, "ServiceMonitor")
    service = one(monitored, "Service")
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()


@pytest.mark.envtest
@pytest.mark.timeout(1800)
def test_replicas_need_the_postgresql_store_and_get_a_pdb_and_rolling_updates(helm_bin: Path) -> None:
    with pytest.raises(AssertionError, match="replicaCount > 1 needs the PostgreSQL store"):
        render_chart(helm_bin, "replicaCount=3")
    with pytest.raises(AssertionError, match="replicaCount > 1 needs the PostgreSQL store"):
        render_chart(helm_bin, "replicaCount=2", "store.url=sqlite:///var/lib/trm-sre/x.db")
    url = "postgresql://trm@db-rw.db:5432/trm?sslmode=require"
    docs = render_chart(helm_bin, "replicaCount=3", f"store.url={url}", "store.passwordSecret.name=db-app")
    deployment = one(docs, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 3
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    ctr = container(deployment)
    assert ctr["args"][ctr["args"].index("--store") + 1] == url
    env = {e["name"]: e for e in ctr["env"]}
    assert env["PGPASSWORD"]["valueFrom"] == {"secretKeyRef": {"name": "db-app", "key": "password"}}
    assert env["TRM_SRE_STORE_POOL_SIZE"]["value"] == "10"
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == spec["selector"]["matchLabels"]
    # No SQLite volume: the state directory only holds the file sink's fallback.
    assert by_kind(docs, "PersistentVolumeClaim") == []
    volumes = {v["name"]: v for v in spec["template"]["spec"]["volumes"]}
    assert volumes["state"] == {"name": "state", "emptyDir": {}}
    # One replica on PostgreSQL: rolling, no PDB (it would block every drain).
    single = render_chart(helm_bin, f"store.url={url}")
    assert one(single, "Deployment")["spec"]["strategy"]["type"] == "RollingUpdate"
    assert by_kind(single, "PodDisruptionBudget") == []
    assert "PGPASSWORD" not in {e["name"] for e in container(one(single, "Deployment"))["env"]}


# --------------------------------------------------------------------------
# Against the real test apiserver
# --------------------------------------------------------------------------


def apply_crd(control_plane: ControlPlane) -> None:
    control_plane.kubectl(
        "apply", "--server-side", "--force-conflicts", "--field-manager=trm-sre-packaging-test", "-f", str(CHART_CRD)
    )
    control_plane.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "crd/remediationpolicies.remediation.homelab.io"
    )


@pytest.mark.envtest
@pytest.mark.timeout(1800)
@pytest.mark.parametrize(
    "options",
    [(), ALL_OPTIONS, REPLICAS_ON_POSTGRESQL],
    ids=["defaults", "all-options", "replicas-on-postgresql"],
)
def test_rendered_chart_passes_server_side_dry_run(
    helm_bin: Path, control_plane: ControlPlane, namespace: str, options: tuple[str, ...]
) -> None:
    apply_crd(control_plane)
    options = tuple(o.replace("{shop,web}", f"{{{namespace}}}").replace("{shop}", f"{{{namespace}}}") for o in options)
    docs = render_chart(helm_bin, *options, release="dry", namespace=namespace)
    res = control_plane.kubectl(
        "apply", "--server-side", "--dry-run=server", "--field-manager=helm", "-f", "-", input=dump_all(docs)
    )
    applied = [line for line in res.stdout.splitlines() if "(server dry run)" in line]
    assert len(applied) == len(docs), res.stdout


@pytest.mark.envtest
@pytest.mark.timeout(1800)
def test_rendered_rbac_grants_what_the_controller_needs_and_no_more(
    helm_bin: Path, control_plane: ControlPlane, namespace: str
) -> None:
    """Apply the chart's RBAC for real and ask the apiserver what its ServiceAccount may do."""
    apply_crd(control_plane)
    release = f"rbac-{secrets.token_hex(3)}"  # cluster-scoped names must not collide with other tests
    other = f"t-{secrets.token_hex(4)}"
    control_plane.kubectl("create", "namespace", other)
    docs = render_chart(helm_bin, release=release, namespace=namespace)
    rbac = [d for d in docs if d["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "RoleBinding")]
    manifest = dump_all(rbac)
    control_plane.kubectl("apply", "-f", "-", input=manifest)
    sa = f"system:serviceaccount:{namespace}:{one(docs, 'ServiceAccount')['metadata']['name']}"

    def can(*args: str) -> bool:
        res = control_plane.kubectl("auth", "can-i", f"--as={sa}", *args, check=False)
        assert res.stdout.strip() in ("yes", "no"), res.stderr
        return res.stdout.strip() == "yes"

    try:
        # kopf and the application.
        for verb in ("list", "watch"):
            assert can(verb, "remediationpolicies.remediation.homelab.io", "--all-namespaces")
        assert can("patch", "remediationpolicies.remediation.homelab.io", "--subresource=status", "-n", other)
        assert can("watch", "customresourcedefinitions.apiextensions.k8s.io")
        assert can("create", "events", "-n", other)
        assert can("create", "tokenreviews.authentication.k8s.io")  # Knative's OIDC tokens on /events
        assert can("create", "subjectaccessreviews.authorization.k8s.io")  # who may approve (verb approve on policies)
        assert can("get", "secrets", "-n", namespace)  # the secret reader, bound in the release namespace
        # Least privilege: never writes policies, never touches workloads or other Secrets.
        for verb in ("create", "update", "patch", "delete"):
            assert not can(verb, "remediationpolicies.remediation.homelab.io", "-n", other)
        assert not can("get", "secrets", "-n", other)
        assert not can("list", "secrets", "-n", namespace)
        assert not can("delete", "pods", "-n", other)
        assert not can("patch", "deployments.apps", "-n", other)
        assert not can("list", "namespaces")
        assert not can("create", "customresourcedefinitions.apiextensions.k8s.io")
    finally:
        control_plane.kubectl("delete", "--ignore-not-found", "-f", "-", input=manifest, check=False)


@pytest.mark.envtest
@pytest.mark.timeout(1800)
def test_gpu_share_kinds_and_the_cpu_default(helm_bin: Path) -> None:
    """A MIG profile or a time-sliced share is just another resource name; without gpu no GPU fields at all."""
    mig = render_chart(
        helm_bin, "gpu.enabled=true", "gpu.resourceName=nvidia.com/mig-1g.10gb", "gpu.runtimeClassName=", release="x"
    )
    deployment = one(mig, "Deployment")
    assert container(deployment)["resources"]["limits"] == {"memory": "4Gi", "nvidia.com/mig-1g.10gb": 1}
    assert "runtimeClassName" not in deployment["spec"]["template"]["spec"]
    cpu = one(render_chart(helm_bin, release="x"), "Deployment")
    pod, ctr = cpu["spec"]["template"]["spec"], container(cpu)
    assert "runtimeClassName" not in pod and "--device" not in ctr["args"]
    assert not any(k.startswith("nvidia.com/") for k in ctr["resources"].get("limits", {}))
    assert ctr["startupProbe"]["failureThreshold"] == 36
