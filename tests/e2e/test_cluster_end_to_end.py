"""The whole controller in cluster mode against a real kube-apiserver (envtest).

kubectl applies the CRD, the controller's RBAC (bound to the unprivileged
`trm-sre-operator` user, so the test also proves the ClusterRole is enough)
and a policy; `python -m controller run` runs the kopf operator and the HTTP
API in one process with K_SINK pointing at a capture sink. One Alertmanager
payload yields exactly one trigger; five re-sends and the resolved
notification add none; the policy's status counts it.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any

import pytest

from controller.schemas.decision import LAMBDA_TRIGGER
from tests.e2e.harness import (
    REPO,
    cluster_controller,
    crashloop_payload,
    http,
    wait_until,
)
from tests.envtest.controlplane import OPERATOR_USER, ControlPlane
from tests.pipeline.sink import CaptureSink

pytestmark = [pytest.mark.envtest, pytest.mark.slow]

TOKEN = "e2e-" + secrets.token_hex(8)

POLICY = """\
apiVersion: remediation.homelab.io/v1alpha1
kind: RemediationPolicy
metadata: {{name: restart-crashloops, namespace: {namespace}}}
spec:
  priority: 1000
  match:
    alertNames: [KubePodCrashLooping]
    matchers: [{{label: pod, op: "=", value: {pod}}}]
  targetNamespaces: [shop]
  allowedFunctions: [pod-restart]
  chain:
    - staticAnnotation: {{}}
    - rules:
        - function: pod-restart
          parameters: {{name: "{{{{ $labels.pod }}}}", namespace: "{{{{ $labels.namespace }}}}", type: pod}}
  actions: {{cooldownSeconds: 600}}
"""

OPERATOR_BINDING = f"""\
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: trm-sre-operator-e2e-user}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: trm-sre-operator}}
subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: {OPERATOR_USER}}}]
"""


@pytest.fixture(scope="module")
def cluster(control_plane: ControlPlane) -> ControlPlane:
    """The CRD and the controller's RBAC, as `kubectl apply` installs them."""
    control_plane.kubectl("apply", "-f", str(REPO / "crds" / "remediationpolicy.yaml"))
    control_plane.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "crd/remediationpolicies.remediation.homelab.io"
    )
    control_plane.kubectl("apply", "-f", "-", input="apiVersion: v1\nkind: Namespace\nmetadata: {name: trm-sre}\n")
    control_plane.kubectl("apply", "-f", str(REPO / "deploy" / "base" / "rbac.yaml"))
    control_plane.kubectl("apply", "-f", "-", input=OPERATOR_BINDING)
    return control_plane


def policy_status(cluster: ControlPlane, namespace: str) -> dict[str, Any]:
    out = cluster.kubectl("get", "remediationpolicy", "restart-crashloops", "-n", namespace, "-o", "json").stdout
    status: dict[str, Any] = json.loads(out).get("status") or {}
    return status


def is_ready(status: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def test_one_incident_one_trigger_and_the_policy_status_counts_it(
    cluster: ControlPlane, namespace: str, sink: CaptureSink, tmp_path: Path
) -> None:
    pod = f"cart-{secrets.token_hex(3)}"
    cluster.kubectl("apply", "-f", "-", input=POLICY.format(namespace=namespace, pod=pod))
    # Cluster-wide, as deployed (a fresh namespace and a matcher on a unique pod keep other tests'
    # policies out of this one's way).
    proc = cluster_controller(cluster.operator_kubeconfig, sink.url, TOKEN, tmp_path)
    proc.args += ["--system-namespace", namespace]  # its policy targets shop: only the system namespace may
    proc.start()
    url = proc.url
    try:
        wait_until("/readyz", lambda: http("GET", f"{url}/readyz")[0] == 200, 120, proc)
        wait_until("the policy indexed (Ready=True)", lambda: is_ready(policy_status(cluster, namespace)), 120, proc)

        payload = crashloop_payload(pod)
        status, body = http("POST", f"{url}/alertmanager", payload, token=TOKEN)
        assert (status, body) == (200, {"accepted": 1, "new_incidents": 1, "duplicates": 0, "resolved": 0})
        wait_until("the trigger", lambda: sink.accepted_of(LAMBDA_TRIGGER), 60, proc)
        (trigger,) = sink.accepted_of(LAMBDA_TRIGGER)
        data = trigger.data()
        assert data["lambda_function"] == "pod-restart"
        assert data["parameters"] == {"name": pod, "namespace": "shop", "type": "pod"}
        assert data["policy"] == f"{namespace}/restart-crashloops"
        decision_id = trigger.headers["ce-correlationid"]

        # Alertmanager re-sends the group (group_interval, repeat_interval, retries): nothing new.
        for _ in range(5):
            status, body = http("POST", f"{url}/alertmanager", payload, token=TOKEN)
            assert (status, body["duplicates"], body["new_incidents"]) == (200, 1, 0)

        # The incident resolves: recorded against it, and still no trigger.
        resolved = json.loads(json.dumps(payload))
        resolved["status"] = "resolved"
        for alert in resolved["alerts"]:
            alert["status"] = "resolved"
            alert["endsAt"] = "2026-05-01T10:30:00Z"
        status, body = http("POST", f"{url}/alertmanager", resolved, token=TOKEN)
        assert (status, body["resolved"]) == (200, 1)
        status, decision = http("GET", f"{url}/decisions/{decision_id}", token=TOKEN)
        assert status == 200
        assert decision["incident"]["resolved"] is True
        assert decision["incident"]["resend_count"] == 5
        assert [a["status"] for a in decision["alerts"]] == ["firing", "resolved"]
        assert [t["stage"] for t in decision["trace"]] == ["staticAnnotation", "rules"]

        # The operator writes what the pipeline recorded into the policy's status.
        def counted() -> bool:
            status = policy_status(cluster, namespace)
            last = status.get("lastDecision") or {}
            return (status.get("counters") or {}).get("triggers") == 1 and last.get("decisionId") == decision_id

        wait_until("status.counters and status.lastDecision", counted, 60, proc)
        final = policy_status(cluster, namespace)
        assert final["counters"]["alertsMatched"] == 1
        assert final["lastDecision"]["function"] == "pod-restart"
        assert final["lastDecision"]["outcome"] == "trigger"

        time.sleep(2)  # a late duplicate would have arrived by now
        assert len(sink.accepted_of(LAMBDA_TRIGGER)) == 1
    finally:
        assert proc.stop() == 0, proc.log_tail()
