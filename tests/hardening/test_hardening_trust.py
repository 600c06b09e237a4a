"""Issue #13, "every guard holds on every path": attacks from outside, against the real standalone server.

Each test is one hole of the issue, shown over HTTP against the controller as
`trm-sre run --standalone` builds it (tests/hardening/support.py), with a
capture sink: what the attacker sends, and that nothing it should not cause
reaches the sink or the store.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from controller.app import PolicyFileError
from controller.engine.store import DB_FILENAME
from controller.schemas.alerts import label_fingerprint
from controller.schemas.decision import APPROVAL_REQUESTED, LAMBDA_TRIGGER, REMEDIATION_ESCALATED
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


TENANT_POLICY = """\
apiVersion: remediation.homelab.io/v1alpha1
kind: RemediationPolicy
metadata: {name: grab-all, namespace: team-a}
spec:
  match: {alertNames: [KubePodCrashLooping]}
  targetNamespaces: ["*"]
  allowedFunctions: [pod-restart]
  chain:
    - rules:
        - function: pod-restart
          parameters: {name: "{{ $labels.pod }}", namespace: "{{ $labels.namespace }}", type: pod}
  actions: {cooldownSeconds: 0}
"""


async def test_a_policy_file_in_team_a_targeting_everything_never_acts_on_kube_system(
    sink: CaptureSink, tmp_path: Path
) -> None:
    policies = write_policy(tmp_path / "policies", TENANT_POLICY)
    settings = server_settings(tmp_path / "state", token=TOKEN, sink=sink.url, policies=[policies])
    with pytest.raises(PolicyFileError, match=r"team-a/grab-all: spec\.targetNamespaces\[0\]"):
        await start_server(settings)

    # Scoped to its own namespace it loads, and still does not act on kube-system's alerts.
    write_policy(tmp_path / "policies", TENANT_POLICY.replace('["*"]', "[team-a]"))
    settings = server_settings(tmp_path / "state2", token=TOKEN, sink=sink.url, policies=[policies])
    server = await start_server(settings)
    try:
        async with server.client() as http:
            for namespace, pod in (("kube-system", "coredns-1"), ("team-a", "web-1")):
                alert = crashloop(pod, namespace=namespace)
                assert (await http.post("/alertmanager", json=alert)).status_code == 200
        await server.idle()
    finally:
        assert await server.stop() == 0
    triggers = [t.data() for t in sink.accepted_of(LAMBDA_TRIGGER)]
    assert [t["parameters"]["namespace"] for t in triggers] == ["team-a"]
    assert all(t["alert"]["labels"]["namespace"] != "kube-system" for t in triggers)
    assert sink.accepted_of(REMEDIATION_ESCALATED) == []  # the kube-system alert matched no policy at all


CRASHLOOP_ONLY = """\
apiVersion: remediation.homelab.io/v1alpha1
kind: RemediationPolicy
metadata: {name: crashloops, namespace: trm-sre}
spec:
  match: {alertNames: [KubePodCrashLooping]}
  targetNamespaces: ["*"]
  allowedFunctions: [pod-restart]
  chain:
    - rules:
        - function: pod-restart
          parameters: {name: "{{ $labels.pod }}", namespace: "{{ $labels.namespace }}", type: pod}
"""


def _store_bytes(server) -> int:
    """The store's live size (pages in use), read through a second connection as sqlite3 on the file would."""
    conn = sqlite3.connect(server.components.settings.state_dir / DB_FILENAME)
    try:
        pages = conn.execute("PRAGMA page_count").fetchone()[0] - conn.execute("PRAGMA freelist_count").fetchone()[0]
        return int(pages * conn.execute("PRAGMA page_size").fetchone()[0])
    finally:
        conn.close()


async def test_three_thousand_resends_of_an_unmatched_alert_do_not_grow_the_store(
    sink: CaptureSink, tmp_path: Path
) -> None:
    policies = write_policy(tmp_path / "policies", CRASHLOOP_ONLY)
    settings = server_settings(tmp_path / "state", token=TOKEN, sink=sink.url, policies=[policies])
    server = await start_server(settings)
    watchdog = crashloop("prometheus-0", annotations={"description": "x" * 1500})
    watchdog["alerts"][0]["labels"]["alertname"] = "Watchdog"
    try:
        async with server.client() as http:
            assert (await http.post("/alertmanager", json=watchdog)).status_code == 200
            await server.idle()
            before = _store_bytes(server)
            semaphore = asyncio.Semaphore(8)

            async def resend() -> int:
                async with semaphore:
                    return (await http.post("/alertmanager", json=watchdog)).status_code

            codes = await asyncio.gather(*(resend() for _ in range(3_000)))
        assert set(codes) == {200}
        await server.idle()
        grown = _store_bytes(server) - before
        assert grown < 1024 * 1024, f"the store grew by {grown} bytes"
        assert server.rows("incidents") == 1
        assert server.rows("alerts") == 1
    finally:
        assert await server.stop() == 0
    assert sink.requests == []


async def test_two_hundred_stalled_connections_do_not_delay_a_normal_webhook(sink: CaptureSink, tmp_path: Path) -> None:
    settings = server_settings(tmp_path / "state", token=TOKEN, sink=sink.url)
    server = await start_server(settings)
    host, port = "127.0.0.1", int(server.url.rsplit(":", 1)[1])
    stalled: list[asyncio.StreamWriter] = []
    try:
        # Authenticated senders that send their headers and one byte of the body, then nothing.
        for _ in range(200):
            _, writer = await asyncio.open_connection(host, port)
            writer.write(
                (
                    "POST /alertmanager HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    f"Authorization: Bearer {TOKEN}\r\nContent-Length: 1000\r\n\r\n{{"
                ).encode()
            )
            await writer.drain()
            stalled.append(writer)
        # And some that never finish their headers.
        for _ in range(20):
            _, writer = await asyncio.open_connection(host, port)
            writer.write(b"POST /alertmanager HTTP/1.1\r\nHost: x\r\n")
            await writer.drain()
            stalled.append(writer)
        await asyncio.sleep(0.5)  # let the server take every one of them in

        async with server.client() as http:
            started = asyncio.get_running_loop().time()
            response = await http.post("/alertmanager", json=crashloop("normal-pod"))
            elapsed = asyncio.get_running_loop().time() - started
        assert response.status_code == 200, response.text
        assert elapsed < 2.0, f"a normal webhook took {elapsed:.2f} s behind 200 stalled connections"
    finally:
        for writer in stalled:
            writer.close()
        assert await server.stop() == 0


async def test_a_stalled_body_is_cut_off_by_its_deadline(sink: CaptureSink, tmp_path: Path) -> None:
    settings = server_settings(tmp_path / "state", token=TOKEN, sink=sink.url, body_timeout_s=0.5)
    server = await start_server(settings)
    host, port = "127.0.0.1", int(server.url.rsplit(":", 1)[1])
    try:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(
            (
                "POST /alertmanager HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Authorization: Bearer {TOKEN}\r\nContent-Length: 1000\r\n\r\n{{"
            ).encode()
        )
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 30)
        writer.close()
        assert status_line.startswith(b"HTTP/1.1 408"), status_line
    finally:
        assert await server.stop() == 0
    assert server.rows("alerts") == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("fingerprint", "f" * 3_000_000),
        ("fingerprint", "not-a-fingerprint"),
        ("fingerprint", "99FF9DC2E87DF20E"),
        ("fingerprint", "99ff9dc2e87df20e\n"),
        ("generatorURL", "http://x/" + "a" * 10_000),
        ("groupKey", "g" * 10_000),
        ("receiver", "r" * 2_000),
    ],
    ids=lambda v: v if len(str(v)) < 30 else f"{len(v)} chars",
)
async def test_sender_chosen_identity_fields_are_bounded(
    sink: CaptureSink, tmp_path: Path, field: str, value: str
) -> None:
    settings = server_settings(tmp_path / "state", token=TOKEN, sink=sink.url)
    server = await start_server(settings)
    payload = crashloop()
    if field in ("fingerprint", "generatorURL"):
        payload["alerts"][0][field] = value
    else:
        payload[field] = value
    try:
        async with server.client() as http:
            response = await http.post("/alertmanager", json=payload)
        assert response.status_code == 400, response.text[:200]
        assert server.rows("alerts") == 0 and server.rows("incidents") == 0
    finally:
        assert await server.stop() == 0


async def test_another_alerts_fingerprint_does_not_take_over_its_incident(sink: CaptureSink, tmp_path: Path) -> None:
    settings = server_settings(tmp_path / "state", token=TOKEN, sink=sink.url)
    server = await start_server(settings)
    victim = crashloop("victim-pod")
    victim_fp = label_fingerprint(victim["alerts"][0]["labels"])
    victim["alerts"][0]["fingerprint"] = victim_fp
    attacker = crashloop("attacker-pod")
    attacker["alerts"][0]["fingerprint"] = victim_fp  # same fingerprint and startsAt, other labels
    try:
        async with server.client() as http:
            assert (await http.post("/alertmanager", json=victim)).status_code == 200
            await server.idle()
            answer = await http.post("/alertmanager", json=attacker)
            await server.idle()
        assert answer.status_code == 200
        assert answer.json()["new_incidents"] == 1 and answer.json()["duplicates"] == 0
        assert server.rows("incidents") == 2
    finally:
        assert await server.stop() == 0
    pods = sorted(t.data()["parameters"]["name"] for t in sink.accepted_of(LAMBDA_TRIGGER))
    assert pods == ["attacker-pod", "victim-pod"]
