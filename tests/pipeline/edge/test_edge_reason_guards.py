"""`/reason` says what would really happen now (issue #13.4), obeys the alert limits (#13.8), has no side effects."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

from controller.engine.store import DB_FILENAME
from controller.schemas.decision import LAMBDA_TRIGGER
from tests.hardening.support import FakeLLM
from tests.pipeline.edge.servers import StartServer, fixture_payload
from tests.pipeline.sink import CaptureSink

POLICY = """\
apiVersion: remediation.homelab.io/v1alpha1
kind: RemediationPolicy
metadata: {name: restart, namespace: shop}
spec:
  match: {alertNames: [KubePodCrashLooping]}
  allowedFunctions: [pod-restart]
  chain:
    - rules:
        - function: pod-restart
          parameters: {name: "{{ $labels.pod }}", namespace: "{{ $labels.namespace }}", type: pod}
  actions: ACTIONS
"""


def _alert(pod: str = "cart-7f9c6d5b8-x2k4q") -> dict[str, Any]:
    alert = fixture_payload("crashloop.json")["alerts"][0]
    alert["labels"]["pod"] = pod
    alert["fingerprint"] = ""
    return alert


async def _reason(server, alert: dict[str, Any]) -> dict[str, Any]:
    async with server.client() as http:
        response = await http.post("/reason", json={"context": {"alert": alert}, "task_type": "remediation"})
    assert response.status_code == 200, response.text
    return json.loads(response.json()["answer"])


def _row_counts(state_dir: Path) -> dict[str, int]:
    conn = sqlite3.connect(state_dir / DB_FILENAME)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {t: conn.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in tables}
    finally:
        conn.close()


async def _server(start_server: StartServer, tmp_path: Path, sink: CaptureSink, actions: str):
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.replace("ACTIONS", actions))
    return await start_server(token="t", sink=sink.url, policies=[policy])


async def test_reason_says_trigger_only_when_the_pipeline_would_trigger(
    start_server: StartServer, sink: CaptureSink, tmp_path: Path
) -> None:
    server = await _server(start_server, tmp_path, sink, "{cooldownSeconds: 600}")
    answer = await _reason(server, _alert())
    assert (answer["outcome"], answer["guard"], answer["lambda_function"]) == ("trigger", "trigger", "pod-restart")
    async with server.client() as http:
        payload = fixture_payload("crashloop.json")
        payload["alerts"] = [_alert()]
        assert (await http.post("/alertmanager", json=payload)).status_code == 200
    assert await sink.wait_for_async(lambda s: len(s.accepted_of(LAMBDA_TRIGGER)) == 1)
    again = await _reason(server, _alert())
    assert (again["outcome"], again["guard"]) == ("cooldown", "cooldown")
    assert again["lambda_function"] == "pod-restart" and again["parameters"]["name"] == "cart-7f9c6d5b8-x2k4q"
    assert "cooling down" in again["guard_reason"]


async def test_reason_says_dry_run(start_server: StartServer, sink: CaptureSink, tmp_path: Path) -> None:
    server = await _server(start_server, tmp_path, sink, "{dryRun: true}")
    answer = await _reason(server, _alert())
    assert (answer["outcome"], answer["lambda_function"]) == ("dry_run", "pod-restart")


async def test_reason_says_approval_required(start_server: StartServer, sink: CaptureSink, tmp_path: Path) -> None:
    server = await _server(start_server, tmp_path, sink, "{requireApproval: true, approvalTimeoutSeconds: 600}")
    answer = await _reason(server, _alert())
    assert (answer["outcome"], answer["lambda_function"]) == ("approval_required", "pod-restart")


async def test_reason_says_storm_breaker(start_server: StartServer, sink: CaptureSink, tmp_path: Path) -> None:
    server = await _server(start_server, tmp_path, sink, "{maxTriggersPerWindow: 1, windowSeconds: 600}")
    async with server.client() as http:
        payload = fixture_payload("crashloop.json")
        payload["alerts"] = [_alert("other-pod")]
        assert (await http.post("/alertmanager", json=payload)).status_code == 200
    assert await sink.wait_for_async(lambda s: len(s.accepted_of(LAMBDA_TRIGGER)) == 1)
    answer = await _reason(server, _alert())
    assert (answer["outcome"], answer["lambda_function"]) == ("storm_breaker", "pod-restart")


async def test_reason_has_no_side_effects(start_server: StartServer, sink: CaptureSink, tmp_path: Path) -> None:
    server = await _server(start_server, tmp_path, sink, "{cooldownSeconds: 600}")
    state_dir = server.components.settings.state_dir
    before = _row_counts(state_dir)
    for pod in ("cart-1", "cart-2"):
        assert (await _reason(server, _alert(pod)))["outcome"] == "trigger"
    async with server.client() as http:
        watchdog = await http.post("/reason", json={"context": {"labels": {"alertname": "Watchdog"}}})
    assert watchdog.status_code == 200
    await server.idle()
    assert _row_counts(state_dir) == before  # nothing stored, in any table
    assert sink.requests == []  # nothing sent
    assert not server.components.settings.triggers_file.exists()


async def test_reason_obeys_the_label_limits(start_server: StartServer, sink: CaptureSink, tmp_path: Path) -> None:
    server = await _server(start_server, tmp_path, sink, "{}")
    labels = {"alertname": "KubePodCrashLooping", **{f"l{i}": "v" for i in range(5_000)}}
    async with server.client() as http:
        response = await http.post("/reason", json={"context": {"labels": labels}})
        long_value = await http.post("/reason", json={"context": {"labels": {"alertname": "A", "x": "v" * 5_000}}})
    assert response.status_code == 400 and "labels" in response.json()["detail"]
    assert long_value.status_code == 400


LLM_POLICY = """\
apiVersion: remediation.homelab.io/v1alpha1
kind: RemediationPolicy
metadata: {name: ask, namespace: shop}
spec:
  match: {alertNames: [KubePodCrashLooping]}
  allowedFunctions: [pod-restart]
  chain:
    - functionCalling: {endpoint: "LLM_URL", api: ollama, model: m, timeoutMs: 20000}
"""


async def test_repeated_reason_calls_run_the_chain_once(
    start_server: StartServer, sink: CaptureSink, tmp_path: Path
) -> None:
    # Issue #13.8: the same alert asked about again (or at the same time) does not run the chain again.
    answers = {"cart-asked": ("pod-restart", {"name": "cart-asked", "namespace": "shop", "type": "pod"})}
    with FakeLLM(answers, marker=r"cart-asked") as llm:
        policy = tmp_path / "policy.yaml"
        policy.write_text(LLM_POLICY.replace("LLM_URL", llm.url))
        server = await start_server(token="t", sink=sink.url, policies=[policy])
        together = await asyncio.gather(*(_reason(server, _alert("cart-asked")) for _ in range(5)))
        again = [await _reason(server, _alert("cart-asked")) for _ in range(5)]
        assert llm.requests == 1
    assert {a["lambda_function"] for a in [*together, *again]} == {"pod-restart"}
    assert {a["outcome"] for a in [*together, *again]} == {"trigger"}
