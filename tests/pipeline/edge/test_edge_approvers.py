"""Approvers in cluster mode (issue #13.3): a Kubernetes identity with `approve` on the policy, never the webhook token.

The TokenReview and SubjectAccessReview calls are replaced by fakes; the route,
the pipeline and the store are the real ones (the app is built over the running
server's pipeline and called in process).
"""

from __future__ import annotations

from pathlib import Path

import httpx

from controller.edge.api import ApiDeps, build_api
from controller.edge.approver_auth import Identity, KubernetesApprover
from controller.edge.config import BearerToken, Limits
from controller.edge.knative_auth import ReviewUnavailable
from controller.observability.metrics import Metrics
from controller.schemas.decision import APPROVAL_REQUESTED, LAMBDA_TRIGGER
from tests.pipeline.edge.servers import StartServer, fixture_payload
from tests.pipeline.edge.test_edge_api import APPROVAL_POLICY
from tests.pipeline.sink import CaptureSink

USERS = {"alice-token": Identity("alice", groups=("sre",)), "bob-token": Identity("bob")}


async def test_a_kubernetes_user_with_approve_on_the_policy_approves_under_their_own_name(
    start_server: StartServer, sink: CaptureSink, tmp_path: Path
) -> None:
    policy = tmp_path / "approval.yaml"
    policy.write_text(APPROVAL_POLICY)
    server = await start_server(token="t", sink=sink.url, policies=[policy])
    asked: list[tuple[str, str, str]] = []
    down = {"now": False}

    def review_token(token: str) -> Identity | None:
        if down["now"]:
            raise ReviewUnavailable("apiserver down")
        return USERS.get(token)

    def review_access(identity: Identity, namespace: str, name: str) -> bool:
        asked.append((identity.username, namespace, name))
        return identity.username == "alice" and identity.groups == ("sre",)

    deps = ApiDeps(
        pipeline=server.components.pipeline,
        metrics=Metrics(),
        token=BearerToken(value="t"),
        limits=Limits(),
        approvers=KubernetesApprover(review_token, review_access),
    )
    transport = httpx.ASGITransport(app=build_api(deps))
    async with server.client() as http:
        assert (await http.post("/alertmanager", json=fixture_payload("crashloop.json"))).status_code == 200
        assert await sink.wait_for_async(lambda s: len(s.accepted_of(APPROVAL_REQUESTED)) == 1)
    approval_id = sink.accepted_of(APPROVAL_REQUESTED)[0].data()["approval_id"]
    url = f"/approvals/{approval_id}"
    body = {"decision": "approve", "actor": "cluster-admin"}

    async with httpx.AsyncClient(transport=transport, base_url="http://trm-sre") as client:
        webhook = await client.post(url, json=body, headers={"Authorization": "Bearer t"})
        assert webhook.status_code == 403
        stranger = await client.post(url, json=body, headers={"Authorization": "Bearer nobody"})
        assert stranger.status_code == 401
        bob = await client.post(url, json=body, headers={"Authorization": "Bearer bob-token"})
        assert bob.status_code == 403
        down["now"] = True
        unavailable = await client.post(url, json=body, headers={"Authorization": "Bearer alice-token"})
        assert unavailable.status_code == 503 and unavailable.headers["retry-after"]
        down["now"] = False
        alice = await client.post(url, json=body, headers={"Authorization": "Bearer alice-token"})
        assert alice.status_code == 200, alice.text
        decision_id = sink.accepted_of(APPROVAL_REQUESTED)[0].headers["ce-correlationid"]
        history = (await client.get(f"/decisions/{decision_id}", headers={"Authorization": "Bearer t"})).json()

    assert asked == [("bob", "shop", "needs-approval"), ("alice", "shop", "needs-approval")]
    assert history["approval"]["actor"] == "alice"  # the reviewed identity, not the body's "cluster-admin"
    assert await sink.wait_for_async(lambda s: len(s.accepted_of(LAMBDA_TRIGGER)) == 1)
