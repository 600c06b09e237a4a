"""Least privilege, measured: deploy/'s RBAC against the API calls the controller really makes.

A private test apiserver writes an audit log (level Metadata). The whole
controller (`python -m controller run`, cluster mode: kopf operator + HTTP
API + pipeline in one process) runs as the unprivileged `trm-sre-operator`
user bound only to deploy/base's ClusterRoles, and goes through everything it
does in a cluster: list and watch policies cluster-wide, index a new policy,
re-index an edited one, write status, post Events, flush counters after a
trigger, read a functionCalling stage's token from its Secret (secretRef),
check a Knative Trigger's OIDC token on /events (TokenReview, with
--events-audience), and forget a deleted policy. Then, from the audit log:

- nothing missing: every call the user made is granted by the ClusterRoles,
  and none was refused (no 403);
- nothing extra: every (verb, group, resource) the ClusterRoles grant was
  used at least once.

Discovery requests (non-resource URLs such as /api, /apis) are left out: the
default `system:discovery` role grants them to every user.
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from cloudevents.core.bindings.http import to_binary_event
from cloudevents.core.v1.event import CloudEvent

from controller.schemas.alerts import ALERT_FIRED
from controller.schemas.decision import APPROVAL_REQUESTED, LAMBDA_TRIGGER
from tests.e2e.harness import cluster_controller, http, wait_until
from tests.envtest.controlplane import OPERATOR_USER, ControlPlane
from tests.hardening.cluster import (
    Call,
    alert_body,
    audit_time,
    calls_by,
    cluster_roles,
    events_for,
    granted,
    is_ready,
    policy_manifest,
)
from tests.hardening.support import FakeLLM
from tests.pipeline.sink import CaptureSink

pytestmark = [pytest.mark.envtest, pytest.mark.slow]

TOKEN = "rbac-" + secrets.token_hex(8)
LLM_TOKEN = "llm-" + secrets.token_hex(8)
# Knative's sender identity: the Trigger's ServiceAccount (Knative's naming) and the subscriber's audience.
EVENTS_AUDIENCE = "trm-sre.trm-sre.svc"
TRIGGER_SA = f"t{secrets.token_hex(3)}-oidc-eventing.knative.dev-trigger"


RULES_SPEC: dict[str, Any] = {
    "match": {"alertNames": ["KubePodCrashLooping"]},
    "targetNamespaces": ["shop"],
    "allowedFunctions": ["pod-restart"],
    "chain": [
        {
            "rules": [
                {
                    "function": "pod-restart",
                    "parameters": {"name": "{{ $labels.pod }}", "namespace": "{{ $labels.namespace }}"},
                }
            ]
        }
    ],
}


def _llm_spec(endpoint: str) -> dict[str, Any]:
    return {
        "match": {"alertNames": ["KubePodNotReady"]},
        "targetNamespaces": ["shop"],
        "allowedFunctions": ["pod-check-status"],
        "chain": [
            {
                "functionCalling": {
                    "endpoint": endpoint,
                    "api": "ollama",
                    "model": "m",
                    "timeoutMs": 20000,
                    "secretRef": {"name": "llm-token", "key": "token"},
                }
            }
        ],
    }


def test_the_controllers_rbac_is_exactly_what_it_uses(
    audited_control_plane: ControlPlane, sink: CaptureSink, tmp_path: Path
) -> None:
    cp = audited_control_plane
    started = datetime.now(UTC)
    # The controller's own namespace (its system namespace): only policies there may target shop (issue #13.10).
    namespace = "trm-sre"
    # The functionCalling stage's token, in the namespace where deploy/base binds the secret reader.
    cp.kubectl("create", "secret", "generic", "llm-token", "-n", "trm-sre", f"--from-literal=token={LLM_TOKEN}")
    answers = {"cart-llm": ("pod-check-status", {"name": "cart-llm", "namespace": "shop"})}

    with FakeLLM(answers, marker=r"cart-llm") as llm:
        proc = cluster_controller(cp.operator_kubeconfig, sink.url, TOKEN, tmp_path)
        proc.args += [
            "--events-audience",
            EVENTS_AUDIENCE,
            "--events-allowed-subject",
            f"system:serviceaccount:trm-sre:{TRIGGER_SA}",
        ]
        url = proc.start()
        try:
            wait_until("/readyz", lambda: http("GET", f"{url}/readyz")[0] == 200, 120, proc)

            # A new policy: indexed, status written, an Event posted.
            cp.kubectl("apply", "-f", "-", input=policy_manifest("restart", namespace, RULES_SPEC))
            wait_until("Ready=True", lambda: is_ready(cp, namespace, "restart", 1), 60, proc)
            # Edited: re-indexed, status rewritten for the new generation.
            edited = {**RULES_SPEC, "priority": 10}
            cp.kubectl("apply", "-f", "-", input=policy_manifest("restart", namespace, edited))
            wait_until("Ready=True for generation 2", lambda: is_ready(cp, namespace, "restart", 2), 60, proc)

            # A trigger: counters and lastDecision flushed into status, a Triggered Event.
            status, body = http("POST", f"{url}/alertmanager", alert_body("KubePodCrashLooping", "cart-1"), token=TOKEN)
            assert status == 200, body
            wait_until("the trigger", lambda: sink.accepted_of(LAMBDA_TRIGGER), 60, proc)
            wait_until(
                "a Triggered event",
                lambda: "Triggered" in {e["reason"] for e in events_for(cp, namespace, "restart")},
                60,
                proc,
            )

            # A functionCalling stage with a secretRef: the token is read from its Secret (get secrets).
            cp.kubectl("apply", "-f", "-", input=policy_manifest("ask-llm", "trm-sre", _llm_spec(llm.url)))
            wait_until("the LLM policy Ready", lambda: is_ready(cp, "trm-sre", "ask-llm"), 60, proc)
            status, body = http("POST", f"{url}/alertmanager", alert_body("KubePodNotReady", "cart-llm"), token=TOKEN)
            assert status == 200, body
            wait_until("the LLM's trigger", lambda: len(sink.accepted_of(LAMBDA_TRIGGER)) == 2, 60, proc)
            llm_trigger = sink.accepted_of(LAMBDA_TRIGGER)[1].data()
            assert llm_trigger["lambda_function"] == "pod-check-status"
            assert llm.requests == 1

            # A Knative Trigger's delivery with its OIDC token: checked with a TokenReview (create tokenreviews).
            cp.kubectl("create", "serviceaccount", TRIGGER_SA, "-n", "trm-sre")
            oidc = cp.kubectl(
                "create", "token", TRIGGER_SA, "-n", "trm-sre", "--audience", EVENTS_AUDIENCE
            ).stdout.strip()
            event = CloudEvent(
                attributes={
                    "type": ALERT_FIRED,
                    "source": "/rbac-audit",
                    "id": "oidc-1",
                    "datacontenttype": "application/json",
                },
                data=alert_body("KubePodCrashLooping", "cart-oidc")["alerts"][0],
            )
            message = to_binary_event(event)
            delivered = httpx.post(
                f"{url}/events",
                content=message.body,
                headers={**message.headers, "Authorization": f"Bearer {oidc}"},
                timeout=30,
            )
            assert delivered.status_code == 202, delivered.text

            # An approval answered by a Kubernetes user allowed to `approve` the policy: the bearer token is checked
            # with a TokenReview, the permission with a SubjectAccessReview (create subjectaccessreviews).
            approval_spec = {
                **RULES_SPEC,
                "match": {"alertNames": ["RbacApprovalProbe"]},
                "actions": {"requireApproval": True, "approvalTimeoutSeconds": 600},
            }
            cp.kubectl("apply", "-f", "-", input=policy_manifest("needs-approval", namespace, approval_spec))
            wait_until("the approval policy Ready", lambda: is_ready(cp, namespace, "needs-approval"), 60, proc)
            status, body = http("POST", f"{url}/alertmanager", alert_body("RbacApprovalProbe", "cart-ap"), token=TOKEN)
            assert status == 200, body
            wait_until("the approval request", lambda: sink.accepted_of(APPROVAL_REQUESTED), 60, proc)
            approval_id = sink.accepted_of(APPROVAL_REQUESTED)[0].data()["approval_id"]
            approver = f"approver-{secrets.token_hex(3)}"
            cp.kubectl("create", "serviceaccount", approver, "-n", namespace)
            rbac = f"""\
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: {approver}, namespace: {namespace}}}
rules: [{{apiGroups: [remediation.homelab.io], resources: [remediationpolicies], verbs: [approve]}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: {approver}, namespace: {namespace}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: {approver}}}
subjects: [{{kind: ServiceAccount, name: {approver}, namespace: {namespace}}}]
"""
            cp.kubectl("apply", "-f", "-", input=rbac)
            approver_token = cp.kubectl("create", "token", approver, "-n", namespace).stdout.strip()
            status, body = http("POST", f"{url}/approvals/{approval_id}", {"decision": "approve"}, token=TOKEN)
            assert status == 403, body  # the webhook token cannot approve
            status, body = http("POST", f"{url}/approvals/{approval_id}", {"decision": "approve"}, token=approver_token)
            assert (status, body["state"]) == (200, "approved"), body
            wait_until(
                "the approved trigger",
                lambda: any(t.data()["parameters"]["name"] == "cart-ap" for t in sink.accepted_of(LAMBDA_TRIGGER)),
                60,
                proc,
            )
            cp.kubectl("delete", "remediationpolicy", "needs-approval", "-n", namespace, "--timeout=60s")

            # Deleted: forgotten (nothing to write; the operator keeps no finalizer).
            cp.kubectl("delete", "remediationpolicy", "restart", "-n", namespace, "--timeout=60s")
            cp.kubectl("delete", "remediationpolicy", "ask-llm", "-n", "trm-sre", "--timeout=60s")
        finally:
            assert proc.stop() == 0, proc.log_tail()

    log = proc.log_text()
    assert "Forbidden" not in log and " 403" not in log, "the controller was refused something"

    made, refused = calls_by(cp, OPERATOR_USER, since=started)
    allowed = granted(cluster_roles(cp).values())
    print("calls made:", ", ".join(map(str, sorted(made))))
    print("granted:   ", ", ".join(map(str, sorted(allowed))))
    assert refused == [], [f"{e['verb']} {e['requestURI']}" for e in refused]
    missing = sorted(made - allowed)
    assert missing == [], f"calls the ClusterRoles do not grant: {', '.join(map(str, missing))}"
    unused = sorted(allowed - made)
    assert unused == [], (
        f"granted but never used (remove them, or document why they are needed): {', '.join(map(str, unused))}"
    )
    # The secret reader is bound in trm-sre only, and only `get` by name was used.
    secret_calls = [
        e
        for e in cp.audit_events()
        if e.get("user", {}).get("username") == OPERATOR_USER
        and (e.get("objectRef") or {}).get("resource") == "secrets"
        and audit_time(e) >= started
    ]
    assert {(e["verb"], e["objectRef"]["namespace"], e["objectRef"].get("name")) for e in secret_calls} == {
        ("get", "trm-sre", "llm-token")
    }
    assert Call("get", "", "secrets") in made


def test_the_audit_log_sees_a_refused_call(audited_control_plane: ControlPlane) -> None:
    """The measurement itself: a call the ClusterRoles do not grant shows up as made and refused."""
    cp = audited_control_plane
    started = datetime.now(UTC)
    cp.kubectl("get", "pods", "-n", "trm-sre", kubeconfig=cp.operator_kubeconfig, check=False)
    made, refused = calls_by(cp, OPERATOR_USER, since=started)
    assert Call("list", "", "pods") in made
    assert any((e.get("objectRef") or {}).get("resource") == "pods" for e in refused)
    assert json.dumps(refused)  # JSON-able, for the failure message above
