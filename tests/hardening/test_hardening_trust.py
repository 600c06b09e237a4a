"""Issue #13, "every guard holds on every path": attacks from outside, against the real standalone server.

Each test is one hole of the issue, shown over HTTP against the controller as
`trm-sre run --standalone` builds it (tests/hardening/support.py), with a
capture sink: what the attacker sends, and that nothing it should not cause
reaches the sink or the store.
"""

from __future__ import annotations

from pathlib import Path

from controller.schemas.decision import APPROVAL_REQUESTED, LAMBDA_TRIGGER
from tests.hardening.support import crashloop, start_server, write_policy
from tests.pipeline.sink import CaptureSink
from tests.support.controllers import server_settings

TOKEN = "trust-webhook-token"
APPROVER = "trust-approver-token"

APPROVAL_POLICY = """\
apiVersion: remediation.homelab.io/v1alpha1
kind: RemediationPolicy
metadata: {name: needs-approval, namespace: shop}
spec:
  match: {alertNames: [KubePodCrashLooping]}
  allowedFunctions: [pod-restart]
  chain:
    - rules:
        - function: pod-restart
          parameters: {name: "{{ $labels.pod }}", namespace: "{{ $labels.namespace }}", type: pod}
  actions: {requireApproval: true, approvalTimeoutSeconds: 3600, dryRun: DRY_RUN}
"""


async def _pending_approval(http, sink: CaptureSink) -> str:
    assert (await http.post("/alertmanager", json=crashloop())).status_code == 200
    assert await sink.wait_for_async(lambda s: len(s.accepted_of(APPROVAL_REQUESTED)) == 1)
    return sink.accepted_of(APPROVAL_REQUESTED)[0].data()["approval_id"]


async def test_the_webhook_token_cannot_approve(sink: CaptureSink, tmp_path: Path) -> None:
    policies = write_policy(tmp_path / "policies", APPROVAL_POLICY.replace("DRY_RUN", "false"))
    settings = server_settings(
        tmp_path / "state", token=TOKEN, approver_token=APPROVER, sink=sink.url, policies=[policies]
    )
    server = await start_server(settings)
    try:
        async with server.client() as http:
            approval_id = await _pending_approval(http, sink)
            refused = await http.post(f"/approvals/{approval_id}", json={"decision": "approve", "actor": "root"})
            assert refused.status_code == 403
        await server.idle()
        assert sink.accepted_of(LAMBDA_TRIGGER) == []
    finally:
        assert await server.stop() == 0


async def test_after_the_policy_switched_to_dry_run_approving_sends_nothing(sink: CaptureSink, tmp_path: Path) -> None:
    state = tmp_path / "state"
    policies = write_policy(tmp_path / "policies", APPROVAL_POLICY.replace("DRY_RUN", "false"))
    settings = server_settings(state, token=TOKEN, approver_token=APPROVER, sink=sink.url, policies=[policies])
    server = await start_server(settings)
    try:
        async with server.client() as http:
            approval_id = await _pending_approval(http, sink)
    finally:
        assert await server.stop() == 0

    # The operator edits the policy file to dry run and restarts; the approval is still pending in the store.
    write_policy(tmp_path / "policies", APPROVAL_POLICY.replace("DRY_RUN", "true"))
    settings = server_settings(state, token=TOKEN, approver_token=APPROVER, sink=sink.url, policies=[policies])
    server = await start_server(settings)
    try:
        async with server.client(token=APPROVER) as approver:
            answer = await approver.post(f"/approvals/{approval_id}", json={"decision": "approve"})
        assert answer.status_code == 409, answer.text
        assert answer.json()["state"] == "cancelled"
        assert "dry run" in answer.json()["reason"]
        await server.idle()
    finally:
        assert await server.stop() == 0
    assert sink.accepted_of(LAMBDA_TRIGGER) == []
