"""`/events` accepts Knative Eventing's OIDC tokens, checked by a real kube-apiserver (TokenReview).

Claims (docs/api.md "Authentication", docs/hardening.md):
- with `--events-audience`, a ServiceAccount token requested for that audience
  (as Knative's broker filter requests one for a Trigger's subscriber) from an
  allowed subject is accepted on `/events` (a binary-mode CloudEvent, SDK 2.x);
- a token for another audience, from another ServiceAccount, with a broken
  signature, or of a ServiceAccount deleted since, is refused with the same
  generic 401 as a wrong static token; the static token still works;
- many events with one token cost one TokenReview (it is remembered briefly);
- when the apiserver cannot be asked, the answer is 503 + Retry-After (Knative
  retries), never 401 and never an acceptance; nothing is stored.

Tokens are minted with the TokenRequest API (`kubectl create token --audience`),
as Knative's token provider does. The controller runs in-process (standalone
policies, its TokenReview client on the admin kubeconfig); that the deployed
ClusterRole grants exactly `create tokenreviews` is measured in
test_hardening_rbac_audit.py.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from pathlib import Path
from typing import Any

import httpx
import pytest
from cloudevents.core.bindings.http import to_binary_event
from cloudevents.core.v1.event import CloudEvent

from controller.edge.config import KnativeOIDC
from controller.schemas.alerts import ALERT_FIRED
from tests.envtest.controlplane import ControlPlane, free_port, write_kubeconfig
from tests.hardening.support import StartServer, crashloop
from tests.pipeline.sink import CaptureSink

pytestmark = pytest.mark.envtest

TOKEN = "knative-" + secrets.token_hex(12)
AUDIENCE = "trm-sre.trm-sre.svc"


def _event(pod: str, event_id: str | None = None) -> tuple[bytes, dict[str, str]]:
    """A binary-mode io.homelab.prometheus.alert.fired CloudEvent, as a Trigger delivers it."""
    attributes = {
        "type": ALERT_FIRED,
        "source": "/apis/v1/namespaces/monitoring/alertmanager",
        "id": event_id or f"ev-{pod}",
        "datacontenttype": "application/json",
    }
    message = to_binary_event(CloudEvent(attributes=attributes, data=crashloop(pod)["alerts"][0]))
    return message.body, dict(message.headers)


def _mint(cp: ControlPlane, namespace: str, account: str, audience: str | None = AUDIENCE) -> str:
    args = ["create", "token", account, "-n", namespace, "--duration", "10m"]
    if audience is not None:
        args += ["--audience", audience]
    return cp.kubectl(*args).stdout.strip()


class Cluster:
    """A namespace with the Trigger's ServiceAccount (allowed) and another one (not)."""

    def __init__(self, cp: ControlPlane, namespace: str) -> None:
        self.cp = cp
        self.namespace = namespace
        self.sender = "trm-sre-alert-fired-oidc-eventing.knative.dev-trigger"  # Knative's name for the Trigger's SA
        self.other = "mt-broker-ingress"
        for account in (self.sender, self.other):
            cp.kubectl("create", "serviceaccount", account, "-n", namespace)

    def subject(self, account: str) -> str:
        return f"system:serviceaccount:{self.namespace}:{account}"

    def token(self, account: str | None = None, audience: str | None = AUDIENCE) -> str:
        return _mint(self.cp, self.namespace, account or self.sender, audience)


@pytest.fixture
def cluster(kubeconfig_env: ControlPlane, namespace: str) -> Cluster:
    return Cluster(kubeconfig_env, namespace)


async def _start(controller: StartServer, cluster: Cluster, sink: CaptureSink) -> Any:
    return await controller(
        token=TOKEN,
        sink=sink.url,
        knative=KnativeOIDC(audience=AUDIENCE, allowed_subjects=(cluster.subject(cluster.sender),)),
    )


async def _post(server: Any, token: str | None, pod: str) -> httpx.Response:
    body, headers = _event(pod)
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        return await http.post("/events", content=body, headers=headers)


def _reviews(server: Any, result: str) -> float:
    value = server.components.metrics.registry.get_sample_value("agent_sre_token_reviews_total", {"result": result})
    return value or 0.0


async def test_a_token_for_the_audience_from_the_allowed_subject_is_accepted(
    controller: StartServer, cluster: Cluster, sink: CaptureSink
) -> None:
    server = await _start(controller, cluster, sink)
    response = await _post(server, cluster.token(), "oidc-ok")
    assert response.status_code == 202, response.text
    assert response.json()["result"]["accepted"] == 1
    assert server.rows("alerts") == 1
    assert _reviews(server, "accepted") == 1


async def test_tokens_that_are_not_the_allowed_senders_get_the_generic_401(
    controller: StartServer, cluster: Cluster, sink: CaptureSink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server = await _start(controller, cluster, sink)
    good = cluster.token()
    header, payload, signature = good.split(".")
    tampered = f"{header}.{payload}.{signature[:-4]}{'AAAA' if signature[-4:] != 'AAAA' else 'BBBB'}"
    # Refusals are logged at most once per 10 s (issue #13.6): the first, which names the subject, is the one shown.
    refused = {
        "other-subject": cluster.token(cluster.other),
        "other-audience": cluster.token(audience="https://kubernetes.default.svc"),
        "apiserver-default-audience": cluster.token(audience=None),
        "tampered-signature": tampered,
        "garbage-jwt": "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl",
        "wrong-static": TOKEN[:-1],
    }
    for case, token in refused.items():
        response = await _post(server, token, f"oidc-{case}")
        assert response.status_code == 401, (case, response.text)
        assert response.json() == {"detail": "unauthorized"}, case
        assert response.headers["www-authenticate"] == "Bearer", case
    assert server.rows("alerts") == 0
    # Each JWT-shaped token was put to the apiserver, and each was turned down there or by our checks.
    assert _reviews(server, "rejected") == 5 and _reviews(server, "accepted") == 0
    # The static token still works on /events.
    assert (await _post(server, TOKEN, "oidc-static")).status_code == 202
    # The log says who was refused and why, and never shows a token.
    assert cluster.subject(cluster.other) in caplog.text
    for token in refused.values():
        for piece in token.split("."):
            assert piece not in caplog.text


async def test_a_token_of_a_deleted_service_account_is_refused(
    controller: StartServer, cluster: Cluster, sink: CaptureSink
) -> None:
    server = await _start(controller, cluster, sink)
    token = cluster.token()
    cluster.cp.kubectl("delete", "serviceaccount", cluster.sender, "-n", cluster.namespace)
    response = await _post(server, token, "oidc-deleted")
    assert response.status_code == 401, response.text


async def test_many_events_with_one_token_cost_one_token_review(
    controller: StartServer, cluster: Cluster, sink: CaptureSink
) -> None:
    server = await _start(controller, cluster, sink)
    token = cluster.token()
    sequential = [await _post(server, token, f"oidc-seq-{i}") for i in range(5)]
    concurrent = await asyncio.gather(*(_post(server, token, f"oidc-par-{i}") for i in range(15)))
    assert [r.status_code for r in [*sequential, *concurrent]] == [202] * 20
    assert _reviews(server, "accepted") == 1
    assert _reviews(server, "rejected") == 0 and _reviews(server, "error") == 0
    # A second token of the same sender is a second review, then remembered too.
    second = cluster.token()
    for i in range(3):
        assert (await _post(server, second, f"oidc-second-{i}")).status_code == 202
    assert _reviews(server, "accepted") == 2


async def test_an_unreachable_apiserver_is_503_with_retry_after(
    controller: StartServer, cluster: Cluster, sink: CaptureSink, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = cluster.token()
    # The controller's kubeconfig names an apiserver that is not there (a closed port).
    closed = write_kubeconfig(
        tmp_path / "closed.kubeconfig",
        server=f"https://127.0.0.1:{free_port()}",
        ca_file=cluster.cp.ca_file,
        user="admin",
        token=cluster.cp.admin_token,
    )
    monkeypatch.setenv("KUBECONFIG", str(closed))
    server = await _start(controller, cluster, sink)
    for attempt in range(2):  # an error is never remembered: both ask (and fail) again
        response = await _post(server, token, f"oidc-down-{attempt}")
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "5"
        assert "retry later" in response.json()["detail"]
    assert _reviews(server, "error") == 2
    assert server.rows("alerts") == 0
    # The static token does not depend on the apiserver.
    assert (await _post(server, TOKEN, "oidc-down-static")).status_code == 202
