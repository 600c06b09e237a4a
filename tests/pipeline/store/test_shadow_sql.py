"""Shadow decisions, their comparison and natural resolutions on both store backends, through a running engine.

The comparison joins the live decision, its approval, its correction and its outcome: the one query that
must mean the same on SQLite and PostgreSQL. The report `trm-sre eval --from-store` prints is built from the
same store (on PostgreSQL the `--store` URL path), and retention sweeps what is final.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from controller.engine.store import StoreBackend
from controller.engine.store.ledger_sweep import sweep_finished_ledgers
from controller.tools.shadow_eval import build_report
from tests.pipeline.engine.builders import RESTART_RULES, FakeClock, alert_dict, build_engine, payload, policy
from tests.pipeline.sink import CaptureSink

CHECK = {
    "rules": [
        {
            "function": "pod-check-status",
            "parameters": {"name": "{{ $labels.pod }}", "namespace": "{{ $labels.namespace }}"},
        }
    ]
}


async def test_shadow_comparison_and_natural_resolution(
    open_store: Callable[..., StoreBackend], tmp_path: Path
) -> None:
    clock = FakeClock()
    approve = policy(
        chain=[*RESTART_RULES, {**CHECK, "shadow": True}],
        actions={"requireApproval": True, "approvalTimeoutSeconds": 600},
    )
    dry = policy(
        "dry",
        alert_names=("KubeDeploymentReplicasMismatch",),
        actions={"dryRun": True, "verify": {"windowSeconds": 60, "recurrenceSeconds": 60}},
    )
    with CaptureSink() as sink:
        engine = build_engine(tmp_path / "state", [approve, dry], sink=sink.url, clock=clock, store=open_store())
        engine.pipeline.shadows._interval_s = 3600.0
        await engine.pipeline.start()
        try:
            corrected, approved = payload(alert_dict("api-1"))[0], payload(alert_dict("api-2"))[0]
            mismatch = [
                payload(alert_dict(pod, alertname="KubeDeploymentReplicasMismatch"))[0] for pod in ("x-1", "y-1")
            ]
            await engine.ingest([corrected, approved, *mismatch])
            await engine.settle()
            with engine.store.reading() as tx:
                one = tx.pending_approvals_for_incident(corrected.incident_key)[0]
                two = tx.pending_approvals_for_incident(approved.incident_key)[0]
            # "none was right" for the first; the second restart approved.
            assert (await engine.pipeline.answer_approval(one.id, False, "alice", (None, {})))[0] == "rejected"
            assert (await engine.pipeline.answer_approval(two.id, True, "bob"))[0] == "approved"
            clock.advance(10)
            await engine.ingest(
                payload(alert_dict("x-1", alertname="KubeDeploymentReplicasMismatch", status="resolved"))
            )
            assert await engine.pipeline.shadows.evaluate() == 3  # two comparisons, one natural resolution
            clock.advance(51)
            assert await engine.pipeline.shadows.evaluate() == 1  # y-1 still firing at its window's end
            assert await engine.pipeline.shadows.evaluate() == 0

            def counted(agreement: str) -> float:
                labels = {"policy": "shop/restart", "stage": "rules", "agreement": agreement}
                return engine.metric("agent_sre_shadow_decisions_total", **labels)

            assert (counted("shadow_only_action"), counted("disagree_function")) == (1, 1)
            report: dict[str, Any] = build_report(engine.store, None, 0.0)
            assert report["shadow"]["truth_sources"] == {"approval": 1, "correction": 1}
            assert report["shadow"]["precision"]["wrong"] == 2
            natural = {f["function"]: f["natural"] for f in report["functions"]}
            assert natural["pod-restart"] == {"resolved": 1, "still_firing": 1, "unknown": 0, "judged": 2, "rate": 0.5}
            # Retention: everything here is final; a cutoff after it sweeps both tables.
            swept = sweep_finished_ledgers(engine.store, cutoff=clock() + 1, limit=100)
            assert (swept["shadow_decisions"], swept["natural_resolutions"]) == (2, 2)
        finally:
            await engine.pipeline.stop(drain_timeout_s=0)
