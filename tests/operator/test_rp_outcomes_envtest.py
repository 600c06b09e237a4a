"""Outcomes and circuit breakers in a policy's `.status` and Events, against a real kube-apiserver.

An engine (SQLite, a fake clock) shares its policy index and status recorder
with a running operator, as in the app: the operator indexes the policy from
the cluster, the engine triggers and judges the outcome, the operator's
status writer puts the counts, the circuit and the FunctionPaused condition
in `.status` (strict schema: an unknown field would be refused) and posts
the Events; the reset annotation closes the circuit.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from controller.decision.chain import StageClients
from controller.decision.policy_index import PolicyIndex
from controller.engine.config import EngineSettings
from controller.engine.pipeline import Pipeline
from controller.engine.policy_stats import PolicyStatusRecorder
from controller.engine.store import Store
from controller.observability.metrics import Metrics
from runbooks import default_catalog
from tests.envtest.controlplane import ControlPlane
from tests.operator.support import Kube, policy_manifest, start_operator, wait_for
from tests.pipeline.engine.builders import FAST, FakeClock, alert_dict, payload

pytestmark = pytest.mark.envtest


def _spec() -> dict[str, Any]:
    return {
        "match": {"alertNames": ["KubePodCrashLooping"]},
        "allowedFunctions": ["pod-restart"],
        "chain": [
            {
                "rules": [
                    {
                        "function": "pod-restart",
                        "parameters": {
                            "name": "{{ $labels.pod }}",
                            "namespace": "{{ $labels.namespace }}",
                            "type": "pod",
                        },
                    }
                ]
            }
        ],
        "actions": {
            "cooldownSeconds": 0,
            "verify": {"windowSeconds": 60, "recurrenceSeconds": 60},
            "circuitBreaker": {"failures": 1, "windowSeconds": 3600, "cooldownSeconds": 3600},
        },
    }


def _reasons(kube: Kube, name: str) -> list[str]:
    return [e["reason"] for e in kube.events(name)]


def _paused(kube: Kube, name: str) -> dict[str, Any] | None:
    for condition in kube.policy_status(name).get("conditions") or ():
        if condition.get("type") == "FunctionPaused":
            return condition
    return None


async def test_outcomes_and_the_circuit_in_status_and_events(
    control_plane: ControlPlane, kube: Kube, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    index, recorder, clock = PolicyIndex(), PolicyStatusRecorder(), FakeClock()
    store = Store.open(tmp_path / "state")
    settings = EngineSettings.model_validate({**FAST.model_dump(), "outcome_interval_s": 3600.0})
    pipeline = Pipeline(settings, store, index, default_catalog(), StageClients(), recorder, Metrics(), clock=clock)
    op = start_operator(
        control_plane.kubeconfig,
        monkeypatch,
        namespaces=[kube.namespace],
        recorder=recorder,
        index=index,
        reset_circuit=pipeline.outcomes.reset_circuit,
    )
    await pipeline.start()
    try:
        kube.apply(policy_manifest("restarts", _spec()))
        key = f"{kube.namespace}/restarts"
        wait_for("indexed", lambda: index.get(key))

        await pipeline.ingest(payload(alert_dict("cart-7f9c6d5b8-x2k4q", namespace=kube.namespace)))
        assert await pipeline.wait_idle(20)
        clock.advance(61)
        assert await pipeline.outcomes.evaluate() == 1  # ineffective: the circuit opens (failures: 1)

        def outcomes_written() -> dict[str, Any] | None:
            outcomes = kube.policy_status("restarts").get("outcomes")
            return outcomes if outcomes and outcomes.get("pod-restart", {}).get("circuit") == "open" else None

        outcomes = wait_for("outcomes in .status", outcomes_written)
        assert outcomes["pod-restart"] == {
            "verified": 0,
            "recurred": 0,
            "ineffective": 1,
            "failed": 0,
            "unknown": 0,
            "superseded": 0,
            "successRate": "0.00",
            "circuit": "open",
        }
        paused = wait_for("FunctionPaused", lambda: _paused(kube, "restarts"))
        assert (paused["status"], paused["reason"]) == ("True", "CircuitOpen")
        assert "pod-restart" in paused["message"]
        assert kube.ready("restarts")["status"] == "True"  # the Ready condition is kept beside it
        wait_for(
            "outcome and circuit Events",
            lambda: {"RemediationIneffective", "CircuitOpened"} <= set(_reasons(kube, "restarts")),
        )
        by_reason = {e["reason"]: e for e in kube.events("restarts")}
        assert by_reason["CircuitOpened"]["type"] == "Warning"
        assert "circuit breaker open for pod-restart" in by_reason["CircuitOpened"]["message"]
        assert f"{kube.namespace}/deployment/cart" in by_reason["RemediationIneffective"]["message"]

        # The reset annotation closes it (once for this value), and the status follows.
        kube.run(
            "annotate",
            "remediationpolicy",
            "restarts",
            "-n",
            kube.namespace,
            "remediation.homelab.io/reset-circuit=pod-restart",
        )
        wait_for("CircuitReset", lambda: "CircuitReset" in _reasons(kube, "restarts"))
        await pipeline.outcomes.refresh_status()
        wait_for(
            "circuit closed in .status",
            lambda: kube.policy_status("restarts")["outcomes"]["pod-restart"]["circuit"] == "closed",
        )
        paused = wait_for(
            "FunctionPaused False", lambda: (c := _paused(kube, "restarts")) and c["status"] == "False" and c
        )
        assert paused["reason"] == "CircuitsClosed"
        annotations = json.loads(kube.run("get", "rp", "restarts", "-n", kube.namespace, "-o", "json").stdout)[
            "metadata"
        ]["annotations"]
        assert annotations["remediation.homelab.io/reset-circuit"] == "pod-restart"  # left alone: nothing written
        assert _reasons(kube, "restarts").count("CircuitReset") == 1
    finally:
        await pipeline.stop(drain_timeout_s=0)
        kube.run("delete", "remediationpolicies", "--all", "-n", kube.namespace, "--timeout=30s", check=False)
        op.shutdown()
        store.close()
