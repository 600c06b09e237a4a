"""The operator against a real apiserver: index, status, Events, edits, deletes, restarts and disconnects."""

from __future__ import annotations

import pytest

from controller.engine.policy_stats import PolicyStatusRecorder
from controller.schemas.decision import Decision
from tests.envtest.controlplane import ControlPlane
from tests.operator.support import (
    Kube,
    RunningOperator,
    policy_manifest,
    simple_spec,
    start_operator,
    wait_for,
)

pytestmark = pytest.mark.envtest


def decision(kube: Kube, name: str, n: int = 1, **fields: object) -> Decision:
    base: dict[str, object] = {
        "id": f"dec-{n}",
        "incident_key": f"fp{n}@2026-03-01T12:00:00Z",
        "fingerprint": f"fp{n}",
        "alertname": "KubePodCrashLooping",
        "policy": f"{kube.namespace}/{name}",
        "outcome": "trigger",
        "function": "pod-restart",
        "parameters": {"name": "cart-1", "namespace": "shop", "type": "pod"},
        "stage": "trm",
        "confidence": 0.93,
    }
    base.update(fields)
    return Decision(**base)  # type: ignore[arg-type]


def reasons(kube: Kube, name: str) -> list[str]:
    return [e["reason"] for e in kube.events(name)]


def test_new_policy_is_indexed_and_gets_status_and_an_event(kube: Kube, operator: RunningOperator) -> None:
    kube.apply(policy_manifest("crashloops", simple_spec()))
    key = f"{kube.namespace}/crashloops"
    policy = wait_for("the policy in the index", lambda: operator.index.get(key))
    assert policy.generation == 1 and policy.spec.allowed_functions == ("pod-restart",)
    ready = wait_for("Ready=True", lambda: (c := kube.ready("crashloops")) and c["status"] == "True" and c)
    assert ready["reason"] == "Indexed" and ready["observedGeneration"] == 1
    status = kube.policy_status("crashloops")
    assert (status["observedGeneration"], status["mode"], status["allowedFunctionCount"]) == (1, "active", 1)
    wait_for("an Indexed event", lambda: "Indexed" in reasons(kube, "crashloops"))
    # The operator writes nothing but .status: no finalizer, no kopf annotations.
    meta = kube.get_policy("crashloops")["metadata"]  # type: ignore[index]
    assert "finalizers" not in meta
    assert [a for a in meta.get("annotations", {}) if not a.startswith("kubectl.kubernetes.io/")] == []


def test_edit_reindexes_and_bumps_observed_generation(kube: Kube, operator: RunningOperator) -> None:
    kube.apply(policy_manifest("edited", simple_spec()))
    key = f"{kube.namespace}/edited"
    wait_for("generation 1 indexed", lambda: operator.index.get(key))
    version = operator.index.version
    kube.patch_spec("edited", {"priority": 7, "actions": {"dryRun": True}})
    policy = wait_for("generation 2 indexed", lambda: (p := operator.index.get(key)) and p.generation == 2 and p)
    assert policy.spec.priority == 7 and policy.spec.actions.dry_run is True
    assert operator.index.version > version
    status = wait_for(
        "observedGeneration 2", lambda: (s := kube.policy_status("edited")).get("observedGeneration") == 2 and s
    )
    assert status["mode"] == "dry-run"
    assert next(c for c in status["conditions"] if c["type"] == "Ready")["observedGeneration"] == 2


def test_delete_removes_the_policy_from_the_index(kube: Kube, operator: RunningOperator) -> None:
    kube.apply(policy_manifest("doomed", simple_spec()))
    key = f"{kube.namespace}/doomed"
    wait_for("indexed", lambda: operator.index.get(key))
    kube.delete_policy("doomed", wait=True)  # no finalizer: gone at once
    assert kube.get_policy("doomed") is None
    wait_for("removed from the index", lambda: operator.index.get(key) is None)


def test_unknown_function_is_not_indexed_and_gets_ready_false_and_a_warning(
    kube: Kube, operator: RunningOperator
) -> None:
    spec = simple_spec(allowedFunctions=["pod-restart", "pod-delete"])
    kube.apply(policy_manifest("unknown-fn", spec))
    ready = wait_for("Ready=False", lambda: (c := kube.ready("unknown-fn")) and c["status"] == "False" and c)
    assert ready["reason"] == "UnknownFunction"
    assert "spec.allowedFunctions[1]" in ready["message"] and "'pod-delete'" in ready["message"]
    warning = wait_for("a Warning event", lambda: [e for e in kube.events("unknown-fn") if e["type"] == "Warning"])
    assert warning[0]["reason"] == "UnknownFunction" and "spec.allowedFunctions[1]" in warning[0]["message"]
    assert operator.index.get(f"{kube.namespace}/unknown-fn") is None
    # Fixing it indexes it; breaking it again takes it out.
    kube.patch_spec("unknown-fn", {"allowedFunctions": ["pod-restart"]})
    wait_for("indexed after the fix", lambda: operator.index.get(f"{kube.namespace}/unknown-fn"))
    wait_for("Ready=True", lambda: (c := kube.ready("unknown-fn")) and c["status"] == "True")
    kube.patch_spec("unknown-fn", {"match": {"alertNameRegex": "Kube(Pod"}})
    ready = wait_for("Ready=False again", lambda: (c := kube.ready("unknown-fn")) and c["status"] == "False" and c)
    assert ready["reason"] == "InvalidRegex" and "spec.match.alertNameRegex" in ready["message"]
    assert operator.index.get(f"{kube.namespace}/unknown-fn") is None


def test_unknown_rule_parameter_is_reported_with_its_field(kube: Kube, operator: RunningOperator) -> None:
    spec = simple_spec(chain=[{"rules": [{"function": "pod-restart", "parameters": {"podName": "{{ $labels.pod }}"}}]}])
    kube.apply(policy_manifest("bad-param", spec))
    ready = wait_for("Ready=False", lambda: (c := kube.ready("bad-param")) and c["status"] == "False" and c)
    assert ready["reason"] == "UnknownParameter"
    assert "spec.chain[0].rules[0].parameters.podName" in ready["message"]


def test_unreachable_function_calling_endpoint_is_not_a_reason_to_reject(kube: Kube, operator: RunningOperator) -> None:
    spec = simple_spec(chain=[{"functionCalling": {"endpoint": "http://127.0.0.1:9/nowhere", "timeoutMs": 100}}])
    kube.apply(policy_manifest("offline-llm", spec))
    wait_for("indexed", lambda: operator.index.get(f"{kube.namespace}/offline-llm"))
    wait_for("Ready=True", lambda: (c := kube.ready("offline-llm")) and c["status"] == "True")


def test_recorded_decisions_show_up_in_status_and_events(kube: Kube, operator: RunningOperator) -> None:
    kube.apply(policy_manifest("busy", simple_spec()))
    key = f"{kube.namespace}/busy"
    wait_for("indexed", lambda: operator.index.get(key))
    first = decision(kube, "busy", 1)
    operator.recorder.record(key, first, "matched")
    operator.recorder.record(key, first, "trigger")
    escalated = decision(
        kube,
        "busy",
        2,
        outcome="escalate",
        function=None,
        parameters={},
        stage=None,
        confidence=None,
        reasoning="no stage proposed an allowed function",
    )
    operator.recorder.record(key, escalated, "matched")
    operator.recorder.record(key, escalated, "escalation")
    operator.recorder.record(key, first, "dead_letter", "sink refused the trigger 6 times")

    def flushed() -> dict | None:
        status = kube.policy_status("busy")
        return status if status.get("counters", {}).get("deadLetters") == 1 else None

    status = wait_for("counters in .status", flushed)
    assert status["counters"] == {
        "alertsMatched": 2,
        "triggers": 1,
        "escalations": 1,
        "dryRunDecisions": 0,
        "deadLetters": 1,
        "approvalsRequested": 0,
    }
    last = status["lastDecision"]
    assert last["decisionId"] == "dec-1" and last["outcome"] == "dead_letter" and last["function"] == "pod-restart"
    events = wait_for(
        "decision events",
        lambda: (r := reasons(kube, "busy")) and {"Triggered", "Escalated", "DeadLettered"} <= set(r) and r,
    )
    assert "Indexed" in events
    by_reason = {e["reason"]: e for e in kube.events("busy")}
    assert by_reason["Escalated"]["type"] == "Warning" and "no stage proposed" in by_reason["Escalated"]["message"]
    assert by_reason["DeadLettered"]["message"] == "sink refused the trigger 6 times"
    # The printer columns read the same status.
    table = kube.run("get", "rp", "busy", "-n", kube.namespace).stdout.split("\n")
    assert table[0].split()[:6] == ["NAME", "MODE", "FUNCTIONS", "TRIGGERS", "LAST-DECISION", "READY"]
    assert table[1].split()[1:4] == ["active", "1", "1"] and table[1].split()[5] == "True"
    # An escalation recorded last drops the function from lastDecision (no stale field left behind).
    operator.recorder.record(key, escalated, "escalation")
    wait_for("escalation as last decision", lambda: kube.policy_status("busy")["lastDecision"]["decisionId"] == "dec-2")
    assert "function" not in kube.policy_status("busy")["lastDecision"]


def test_counters_survive_an_operator_restart(
    control_plane: ControlPlane, kube: Kube, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = f"{kube.namespace}/kept"
    first = start_operator(control_plane.kubeconfig, monkeypatch, namespaces=[kube.namespace])
    try:
        kube.apply(policy_manifest("kept", simple_spec()))
        wait_for("indexed", lambda: first.index.get(key))
        for n in range(3):
            first.recorder.record(key, decision(kube, "kept", n), "trigger")
        wait_for("3 triggers in status", lambda: kube.policy_status("kept").get("counters", {}).get("triggers") == 3)
    finally:
        first.shutdown()
    second = start_operator(
        control_plane.kubeconfig, monkeypatch, namespaces=[kube.namespace], recorder=PolicyStatusRecorder()
    )
    try:
        wait_for("indexed again", lambda: second.index.get(key))
        second.recorder.record(key, decision(kube, "kept", 9), "trigger")
        wait_for("4 triggers in status", lambda: kube.policy_status("kept").get("counters", {}).get("triggers") == 4)
        # Nothing changed, so the restart posted no second Indexed event.
        assert reasons(kube, "kept").count("Indexed") == 1
    finally:
        control_plane.kubectl("delete", "rp", "--all", "-n", kube.namespace, "--timeout=30s", check=False)
        second.shutdown()


def test_liveness_endpoint_reports_the_index(kube: Kube, operator: RunningOperator) -> None:
    kube.apply(policy_manifest("probed", simple_spec()))
    wait_for("indexed", lambda: operator.index.get(f"{kube.namespace}/probed"))
    body = wait_for("the liveness endpoint", operator.probe)
    assert body["index"]["policies"] == 1
    assert body["index"]["statusWriteFailures"] == 0


def test_policies_in_unwatched_namespaces_are_ignored(
    control_plane: ControlPlane, kube: Kube, operator: RunningOperator
) -> None:
    other = Kube(control_plane, f"{kube.namespace}-other")
    control_plane.kubectl("create", "namespace", other.namespace)
    try:
        other.apply(policy_manifest("elsewhere", simple_spec()))
        kube.apply(policy_manifest("here", simple_spec()))
        wait_for("the watched one indexed", lambda: operator.index.get(f"{kube.namespace}/here"))
        assert operator.index.get(f"{other.namespace}/elsewhere") is None
        assert "status" not in other.get_policy("elsewhere")  # type: ignore[operator]
    finally:
        control_plane.kubectl("delete", "rp", "--all", "-n", other.namespace, "--wait=false", check=False)


@pytest.mark.slow
def test_operator_survives_an_apiserver_restart(
    control_plane: ControlPlane, kube: Kube, operator: RunningOperator
) -> None:
    key = f"{kube.namespace}/before"
    kube.apply(policy_manifest("before", simple_spec()))
    wait_for("indexed before the restart", lambda: operator.index.get(key))
    control_plane.restart_apiserver()
    # A decision recorded around the outage still reaches .status: the failed writes are retried.
    operator.recorder.record(key, decision(kube, "before"), "trigger")
    wait_for(
        "status written after the restart",
        lambda: kube.policy_status("before").get("counters", {}).get("triggers") == 1,
        timeout=180,
    )
    # The watch reconnected: new objects and deletions are still seen.
    kube.apply(policy_manifest("after", simple_spec()))
    wait_for("indexed after the restart", lambda: operator.index.get(f"{kube.namespace}/after"), timeout=180)
    kube.delete_policy("before")
    wait_for("delete seen after the restart", lambda: operator.index.get(key) is None, timeout=180)
    assert operator.alive()
