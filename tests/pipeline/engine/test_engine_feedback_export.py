"""`trm-sre export-feedback` on a state dir a real engine run wrote: the labels, what gives none, and redaction.

The engine decides real alerts (static annotations, rules), humans approve and reject (with and without a
correction), outcomes are evaluated on a fake clock; then the CLI reads the store as an operator would.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from controller.schemas.alerts import AlertEvent
from controller.schemas.decision import decision_id
from controller.tools import cli
from models.evaluate import load_dataset
from models.feedback import load_feedback
from tests.pipeline.engine.builders import RESTART_RULES, Engine, FakeClock, alert_dict, payload, policy
from tests.pipeline.sink import CaptureSink

VERIFY = {"cooldownSeconds": 0, "verify": {"windowSeconds": 60, "recurrenceSeconds": 120}}
ANNOTATED_SUMMARY = "Pod job-1 on ip-10-0-0-1.corp.internal is crash looping, ticket INC4711 by zorblax"
LIVE = "KubePodNotReady"


def _alert(pod: str, **kw: Any) -> dict[str, Any]:
    return alert_dict(pod, starts_at=f"2026-05-01T10:{len(pod):02d}:00Z", **kw)


async def _pending(engine: Engine, event: AlertEvent) -> str:
    with engine.store.reading() as tx:
        (approval,) = tx.pending_approvals_for_incident(event.incident_key)
    return approval.id


async def _answer(engine: Engine, event: AlertEvent, approve: bool, correction: Any = None) -> None:
    if correction is not None:
        correction = engine.pipeline.check_correction(correction)
    await engine.pipeline.answer_approval(await _pending(engine, event), approve, "alice", correction)


@pytest.fixture
async def state(make_engine, sink: CaptureSink) -> tuple[Path, dict[str, str]]:
    """A store with one decision of each kind; returns the state dir and decision ids by name."""
    clock = FakeClock()
    approval = policy(
        chain=[{"staticAnnotation": {}}, *RESTART_RULES],
        actions=VERIFY | {"requireApproval": True, "approvalTimeoutSeconds": 3600},
    )
    live = policy("live", chain=RESTART_RULES, actions=VERIFY, alert_names=(LIVE,))
    engine = await make_engine([approval, live], sink=sink.url, clock=clock)
    engine.pipeline.outcomes._interval_s = 3600.0  # evaluated by hand below
    annotated = {
        "lambda_function": "pod-check-status",
        "lambda_parameters": '{"name": "job-1", "namespace": "shop"}',
        "summary": ANNOTATED_SUMMARY,
        "internal_note": "call bob on +1 555 0100",
    }
    alerts = {
        "approved": _alert("api-1"),
        "corrected": _alert("web-1"),
        "corrected-none": _alert("db-1"),
        "ineffective": _alert("cache-1"),
        "rejected": _alert("queue-1"),
        "annotated": _alert("job-1", annotations=annotated),
        "live": _alert("live-1", alertname=LIVE),
    }
    alerts["annotated"]["labels"]["instance"] = "10.1.2.3:8080"
    events = {name: payload(a)[0] for name, a in alerts.items()}
    await engine.ingest(list(events.values()))
    await engine.settle()
    await _answer(engine, events["approved"], True)
    await _answer(engine, events["ineffective"], True)
    await _answer(engine, events["corrected"], False, ("pod-check-status", {"name": "web-1", "namespace": "shop"}))
    await _answer(engine, events["corrected-none"], False, (None, {}))
    await _answer(engine, events["rejected"], False)
    await _answer(engine, events["annotated"], True)
    await engine.settle()
    clock.advance(5)
    for name in ("approved", "live", "annotated"):
        await engine.ingest(payload(alerts[name] | {"status": "resolved", "endsAt": "2026-05-01T10:30:00Z"}))
    clock.advance(121)
    assert await engine.pipeline.outcomes.evaluate() == 4  # approved, live, annotated: verified; cache: ineffective
    ids = {
        name: decision_id(e.incident_key, "shop/live" if name == "live" else "shop/restart")
        for name, e in events.items()
    }
    return engine.state_dir, ids


def _export(state_dir: Path, out: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> dict[str, Any]:
    argv = ["export-feedback", "--state-dir", str(state_dir), "--since", "3650d", "--out", str(out), *extra]
    assert cli.main(argv) == 0
    summary: dict[str, Any] = json.loads(capsys.readouterr().out)
    return summary


async def test_export_gives_the_labels_the_evidence_supports(state, tmp_path: Path, capsys) -> None:
    state_dir, ids = state
    out = tmp_path / "feedback.jsonl"
    summary = _export(state_dir, out, capsys)
    rows = load_feedback(out)
    assert len(load_dataset(out)) == len(rows)  # `trm-sre eval FILE` reads it too
    by_id = {r["provenance"]["decision_id"]: r for r in rows}
    got = {
        name: (by_id[did]["provenance"]["source"], by_id[did]["expected"]) for name, did in ids.items() if did in by_id
    }
    assert got == {
        "approved": (
            "approval",
            {"lambda_function": "pod-restart", "parameters": {"name": "api-1", "namespace": "shop", "type": "pod"}},
        ),
        "corrected": (
            "correction",
            {"lambda_function": "pod-check-status", "parameters": {"name": "web-1", "namespace": "shop"}},
        ),
        "corrected-none": ("correction", {"lambda_function": None, "parameters": {}}),
        "annotated": (
            "annotation",
            {"lambda_function": "pod-check-status", "parameters": {"name": "job-1", "namespace": "shop"}},
        ),
        "live": (
            "outcome",
            {"lambda_function": "pod-restart", "parameters": {"name": "live-1", "namespace": "shop", "type": "pod"}},
        ),
    }
    # The ineffective restart is no "none" label (nor any other): it only says the restart did not help.
    assert ids["ineffective"] not in by_id and ids["rejected"] not in by_id
    assert summary["skipped"] == {
        "outcome ineffective: says only that pod-restart did not help": 1,
        "rejected without a correction": 1,
    }
    assert summary["by_source"] == {"annotation": 1, "approval": 1, "correction": 2, "outcome": 1}
    assert by_id[ids["approved"]]["target"] == {
        "lambda_function": "pod-restart",
        "pointers": {"name": "pod", "namespace": "namespace"},
        "enums": {"type": "pod"},
    }
    for row in rows:  # the time holdout sorts on it; provenance never names the human
        assert row["timestamp"].startswith("2027-") and "alice" not in json.dumps(row)


async def test_export_redacts_by_default_and_keeps_what_the_model_copies(state, tmp_path: Path, capsys) -> None:
    state_dir, ids = state
    redacted = {r["provenance"]["decision_id"]: r for r in _load(state_dir, tmp_path / "r.jsonl", capsys)}
    plain = {r["provenance"]["decision_id"]: r for r in _load(state_dir, tmp_path / "p.jsonl", capsys, "--no-redact")}
    alert = redacted[ids["annotated"]]["alert"]
    # The label itself never stays in the alert; free text keeps only public vocabulary words; other annotations go.
    assert set(alert["annotations"]) == {"summary"}
    # (numbers become 0; "corp", "ticket" and the name "zorblax" are not words of the public vocabulary)
    assert alert["annotations"]["summary"] == "pod job 0 on ip 0 0 0 0 internal is crash looping inc 0 by"
    assert alert["labels"]["instance"].startswith("r-") and "10.1.2.3" not in json.dumps(alert)
    assert alert["generatorURL"] == ""  # the fixture's URL has no expression
    # What the parameters are copied from stays, so the pointers still resolve.
    assert alert["labels"]["pod"] == "job-1" and alert["labels"]["namespace"] == "shop"
    assert redacted[ids["annotated"]]["target"]["pointers"] == {"name": "pod", "namespace": "namespace"}
    # --no-redact keeps everything as stored but the label annotations.
    raw = plain[ids["annotated"]]["alert"]
    assert raw["annotations"] == {"summary": ANNOTATED_SUMMARY, "internal_note": "call bob on +1 555 0100"}
    assert raw["labels"]["instance"] == "10.1.2.3:8080"


def _load(state_dir: Path, out: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> list[dict[str, Any]]:
    _export(state_dir, out, capsys, *extra)
    return load_feedback(out)
