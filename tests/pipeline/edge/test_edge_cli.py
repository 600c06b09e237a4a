"""The CLI: refusing an open bind without a token, select, explain, catalog, help; JSON logs."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from controller.observability.logging import JsonFormatter, correlation
from controller.tools import cli, explain
from tests.pipeline.edge.servers import FIXTURES, EdgeServer, fixture_payload

REPO = Path(__file__).resolve().parents[3]


def run_cli(*args: str, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("TRM_SRE_WEBHOOK_TOKEN", "K_SINK")}
    environ.update({"PYTHONPATH": str(REPO), **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "controller", *args],
        cwd=REPO,
        env=environ,
        text=True,
        capture_output=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def test_run_refuses_a_non_loopback_bind_without_a_token(tmp_path: Path) -> None:
    result = run_cli("run", "--standalone", "--no-model", "--host", "0.0.0.0", "--state-dir", str(tmp_path))
    assert result.returncode == 2
    assert "refusing to listen on 0.0.0.0 without authentication" in result.stderr
    assert "TRM_SRE_WEBHOOK_TOKEN" in result.stderr
    assert not (tmp_path / "trm-sre.db").exists()  # refused before anything was opened


def test_run_exits_1_when_its_port_is_taken(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("run", "--standalone", "--no-model", "--port", str(port), "--state-dir", str(tmp_path))
    assert result.returncode == 1
    assert "the HTTP server could not start" in result.stderr


def test_run_reports_invalid_policy_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    result = run_cli("run", "--standalone", "--no-model", "--policies", str(bad), "--state-dir", str(tmp_path / "s"))
    assert result.returncode == 2
    assert "bad.yaml document 1" in result.stderr and "RemediationPolicy" in result.stderr


@pytest.mark.parametrize("command", [[], ["run"], ["select"], ["explain"], ["catalog"]])
def test_every_command_has_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: trm-sre" in capsys.readouterr().out


def test_select_prints_the_decision_for_an_alert_object(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    alert = fixture_payload("crashloop.json")["alerts"][0]
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(alert)))
    assert cli.main(["select", "--no-model"]) == 0
    decision = json.loads(capsys.readouterr().out)
    assert decision["function"] == "pod-restart"
    assert decision["stage"] == "rules"


def test_select_prints_one_decision_per_alert_of_a_payload(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO((FIXTURES / "group-mixed.json").read_text()))
    assert cli.main(["select", "--no-model"]) == 0
    decisions = json.loads(capsys.readouterr().out)
    assert len(decisions) == 3
    assert {d["function"] for d in decisions} == {"pod-check-status"}


def test_select_refuses_what_is_not_an_alert(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("[1, 2]"))
    assert cli.main(["select", "--no-model"]) == 2
    assert "expected a JSON object" in capsys.readouterr().err


def test_explain_an_alert_file_shows_every_stage(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["explain", str(FIXTURES / "static-annotation.json"), "--no-model"]) == 0
    out = capsys.readouterr().out
    assert "trigger flux-reconcile-gitrepository name=homelab namespace=flux-system (by staticAnnotation" in out
    assert "1. staticAnnotation" in out and "accepted" in out


async def test_explain_a_stored_decision_by_id(
    server: EdgeServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with server.client() as http:
        await http.post("/alertmanager", json=fixture_payload("crashloop.json"))
        await server.idle()
        answer = (
            await http.post("/reason", json={"context": {"alert": fixture_payload("crashloop.json")["alerts"][0]}})
        ).json()
    decision_id = json.loads(answer["answer"])["decision_id"]
    state_dir = server.components.settings.state_dir
    assert cli.main(["explain", decision_id, "--state-dir", str(state_dir)]) == 0
    out = capsys.readouterr().out
    assert f"decision {decision_id}" in out
    for stage in ("1. staticAnnotation", "2. trm", "3. rules"):
        assert stage in out
    assert "model not loaded" in out  # why the TRM stage handed over
    assert "io.homelab.agent-sre.lambda.trigger" in out and "delivered" in out
    assert "outcome:  pending on " in out and "waiting for the incident to resolve until" in out
    assert cli.main(["explain", "ffffffff", "--state-dir", str(state_dir)]) == 1
    assert "no decision ffffffff" in capsys.readouterr().err
    # and the same from the running server (in a thread: the server runs in this test's event loop)
    args = ["explain", decision_id, "--url", server.url, "--json"]
    assert await asyncio.to_thread(cli.main, args) == 2  # no token: refused
    assert "401" in capsys.readouterr().err
    monkeypatch.setenv("TRM_SRE_WEBHOOK_TOKEN", server.token or "")
    assert await asyncio.to_thread(cli.main, args) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["id"] == decision_id
    assert [t["stage"] for t in shown["trace"]] == ["staticAnnotation", "trm", "rules"]
    assert shown["verification"]["state"] == "pending" and shown["verification"]["finishedAt"] is None


def test_catalog_lists_every_function(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["catalog"]) == 0
    out = capsys.readouterr().out
    for name in (
        "check-pvc-status",
        "flux-reconcile-gitrepository",
        "flux-reconcile-helmrelease",
        "flux-reconcile-kustomization",
        "pod-check-status",
        "pod-restart",
        "scale-deployment",
    ):
        assert f"{name}  (risk:" in out
    assert cli.main(["catalog", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 7


def test_terminal_output_uses_tables(capsys: pytest.CaptureFixture[str]) -> None:
    from runbooks import default_catalog

    stored = {
        "id": "d1",
        "alertname": "A",
        "outcome": "escalate",
        "policy": "ns/p",
        "reasoning": "nothing fits",
        "trace": [{"stage": "rules", "outcome": "abstained", "reason": "no rule matched", "latency_ms": 0.2}],
    }
    out = io.StringIO()
    explain.render_decision(stored, out, rich=True)
    cli.render_catalog(default_catalog(), out, rich=True)
    text = out.getvalue()
    assert "escalate" in text and "abstained" in text
    assert text.count("│") > 10  # rich tables (wrapped to the width of a pretend terminal)


def test_logs_are_json_lines_with_the_correlation_id() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tests.edge.json")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with correlation("decision-123"):
            logger.info("decided %s", "pod-restart", extra={"policy": "shop/p"})
        logger.warning("outside")
    finally:
        logger.removeHandler(handler)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "decided pod-restart"
    assert first["correlation_id"] == "decision-123"
    assert first["policy"] == "shop/p"
    assert first["level"] == "info" and first["logger"] == "tests.edge.json"
    assert "correlation_id" not in second
