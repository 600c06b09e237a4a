"""What the operator checks beyond the CRD, and how it turns a policy into index entries, status and Events.

The handlers are called directly here with kopf's Body and a fake status
writer (no apiserver); tests/operator/test_rp_operator_envtest.py runs them for real.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

import kopf
import pytest

from controller.decision.policy_checks import (
    REASON_INVALID_REGEX,
    REASON_INVALID_SPEC,
    REASON_UNKNOWN_FUNCTION,
    REASON_UNKNOWN_PARAMETER,
    check_policy,
)
from controller.decision.policy_index import PolicyIndex
from controller.engine.policy_stats import PolicyEvent, PolicyStatusRecorder
from controller.operator.handlers import PolicyHandlers, validation_status
from controller.operator.status import (
    ObjectGone,
    ObjectRef,
    PolicyStatusSync,
    WriteRefused,
    apply_merge_patch,
    merge_patch_for,
    status_changes,
)
from controller.schemas.decision import Decision
from runbooks import default_catalog

CATALOG = default_catalog()
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
T1 = datetime(2026, 3, 1, 12, 5, tzinfo=UTC)


def spec(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "match": {"alertNames": ["KubePodCrashLooping"]},
        "allowedFunctions": ["pod-restart", "pod-check-status"],
        "chain": [
            {"trm": {"minConfidence": 0.8}},
            {"rules": [{"function": "pod-restart", "parameters": {"name": "{{ $labels.pod }}", "type": "pod"}}]},
        ],
    }
    base.update(overrides)
    return base


def rules(*items: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"rules": list(items)}]


def problems(spec_: Any) -> list[tuple[str, str]]:
    result = check_policy("ns", "p", 3, spec_, CATALOG)
    assert result.policy is None
    return [(p.reason, p.field) for p in result.problems]


def test_a_valid_spec_becomes_an_indexable_policy() -> None:
    result = check_policy("ns", "p", 3, spec(), CATALOG)
    assert result.problems == ()
    assert result.policy is not None
    assert (result.policy.key, result.policy.generation) == ("ns/p", 3)
    assert result.policy.spec.chain[0].trm is not None


@pytest.mark.parametrize(
    ("spec_", "expected"),
    [
        pytest.param(
            spec(allowedFunctions=["pod-restart", "pod-nuke"]),
            [(REASON_UNKNOWN_FUNCTION, "spec.allowedFunctions[1]")],
            id="unknown-allowed-function",
        ),
        pytest.param(
            spec(allowedFunctions=["pod-nuke"], chain=rules({"function": "pod-nuke"})),
            [
                (REASON_UNKNOWN_FUNCTION, "spec.allowedFunctions[0]"),
                (REASON_UNKNOWN_FUNCTION, "spec.chain[0].rules[0].function"),
            ],
            id="unknown-rule-function",
        ),
        pytest.param(
            spec(chain=rules({"function": "scale-deployment"})),
            [(REASON_INVALID_SPEC, "spec.chain[0].rules[0].function")],
            id="rule-function-not-allowed",
        ),
        pytest.param(
            spec(chain=rules({"function": "pod-restart", "parameters": {"pod": "{{ $labels.pod }}"}})),
            [(REASON_UNKNOWN_PARAMETER, "spec.chain[0].rules[0].parameters.pod")],
            id="unknown-parameter",
        ),
        pytest.param(
            spec(chain=rules({"function": "pod-restart", "parameters": {"type": "node"}})),
            [(REASON_INVALID_SPEC, "spec.chain[0].rules[0].parameters.type")],
            id="literal-outside-enum",
        ),
        pytest.param(
            spec(chain=rules({"function": "pod-restart", "parameters": {"name": "{{ $labels.pod "}})),
            [(REASON_INVALID_SPEC, "spec.chain[0].rules[0].parameters.name")],
            id="unclosed-template",
        ),
        pytest.param(
            spec(chain=rules({"function": "pod-restart", "parameters": {"name": "{{ $env.HOME }}"}})),
            [(REASON_INVALID_SPEC, "spec.chain[0].rules[0].parameters.name")],
            id="template-reads-no-alert-field",
        ),
        pytest.param(
            spec(match={"alertNameRegex": "Kube(Pod"}),
            [(REASON_INVALID_REGEX, "spec.match.alertNameRegex")],
            id="bad-alertname-regex",
        ),
        pytest.param(
            spec(
                chain=rules(
                    {"function": "pod-restart", "match": {"matchers": [{"label": "ns", "op": "!~", "value": "[a-"}]}}
                )
            ),
            [(REASON_INVALID_REGEX, "spec.chain[0].rules[0].match.matchers[0].value")],
            id="bad-rule-matcher-regex",
        ),
        pytest.param(
            spec(chain=[{"trm": {}, "staticAnnotation": {}}]),
            [(REASON_INVALID_SPEC, "spec.chain[0]")],
            id="two-stage-types",
        ),
        pytest.param(
            spec(chain=[{"trm": {"minConfidence": 1.5}}]),
            [(REASON_INVALID_SPEC, "spec.chain[0].trm.minConfidence")],
            id="confidence-out-of-range",
        ),
        pytest.param(spec(chian=[]), [(REASON_INVALID_SPEC, "spec.chian")], id="typo-field"),
        pytest.param("not an object", [(REASON_INVALID_SPEC, "spec")], id="spec-not-an-object"),
    ],
)
def test_problems_name_their_reason_and_field(spec_: Any, expected: list[tuple[str, str]]) -> None:
    assert problems(spec_) == expected


def test_every_problem_is_reported_at_once() -> None:
    bad = spec(
        allowedFunctions=["pod-restart", "nope"],
        match={"alertNameRegex": "("},
        chain=[{"rules": [{"function": "pod-restart", "parameters": {"replicas": "3"}}]}, {"trm": {"maxSteps": 0}}],
    )
    reasons = {reason for reason, _ in problems(bad)}
    assert reasons == {REASON_INVALID_REGEX, REASON_UNKNOWN_FUNCTION, REASON_UNKNOWN_PARAMETER, REASON_INVALID_SPEC}


def test_an_invalid_chain_item_does_not_also_report_an_empty_chain() -> None:
    # pydantic would add "chain should have at least 1 item" for a chain whose only item is invalid.
    assert problems(spec(chain=[{"trm": {}, "staticAnnotation": {}}])) == [(REASON_INVALID_SPEC, "spec.chain[0]")]


def test_ready_condition_keeps_its_transition_time_until_the_status_flips() -> None:
    good = check_policy("ns", "p", 1, spec(), CATALOG)
    first = validation_status(good, spec(), 1, {}, T0)
    assert first["conditions"][0]["lastTransitionTime"] == "2026-03-01T12:00:00Z"
    assert (first["mode"], first["allowedFunctionCount"], first["observedGeneration"]) == ("active", 2, 1)
    again = validation_status(good, spec(), 2, first, T1)
    assert again["conditions"][0]["lastTransitionTime"] == "2026-03-01T12:00:00Z"
    assert again["conditions"][0]["observedGeneration"] == 2
    bad_spec = spec(allowedFunctions=["nope"])
    bad = validation_status(check_policy("ns", "p", 3, bad_spec, CATALOG), bad_spec, 3, again, T1)
    ready = bad["conditions"][0]
    assert (ready["status"], ready["reason"], ready["lastTransitionTime"]) == (
        "False",
        REASON_UNKNOWN_FUNCTION,
        "2026-03-01T12:05:00Z",
    )
    assert "spec.allowedFunctions[0]" in ready["message"]


def test_status_patch_is_empty_when_nothing_changed_and_removes_vanished_keys() -> None:
    current = {"mode": "active", "lastDecision": {"function": "pod-restart", "outcome": "trigger"}}
    assert status_changes(current, {"mode": "active"}) == {}
    assert status_changes(current, {"mode": None}) == {"mode": None}
    assert status_changes({}, {"mode": None}) == {}
    patch = status_changes(current, {"lastDecision": {"outcome": "escalation"}})
    assert patch == {"lastDecision": {"function": None, "outcome": "escalation"}}
    assert apply_merge_patch(current, patch) == {"mode": "active", "lastDecision": {"outcome": "escalation"}}
    assert merge_patch_for([1, 2], [1, 2]) is ...


# --------------------------------------------------------------------------
# The handlers and the status sync, with a fake writer
# --------------------------------------------------------------------------


class FakeWriter:
    """Records what would be written; can be told to fail like an unreachable apiserver."""

    def __init__(self) -> None:
        self.status: dict[str, dict[str, Any]] = {}
        self.patches: list[dict[str, Any]] = []
        self.events: list[PolicyEvent] = []
        self.down = False
        self.gone: set[str] = set()
        self.refused: set[str] = set()
        self.attempts = 0

    async def patch_status(self, ref: ObjectRef, patch: dict[str, Any]) -> None:
        self.attempts += 1
        if ref.key in self.refused:
            raise WriteRefused("422 Unprocessable Entity")
        if self.down:
            raise ConnectionError("apiserver unreachable")
        if ref.key in self.gone:
            raise ObjectGone(ref.key)
        self.patches.append(patch)
        self.status[ref.key] = apply_merge_patch(self.status.get(ref.key, {}), patch)

    async def post_event(self, ref: ObjectRef, event: PolicyEvent) -> None:
        if self.down:
            raise ConnectionError("apiserver unreachable")
        self.events.append(event)


def body(
    spec_: Any, generation: int = 1, status: dict[str, Any] | None = None, name: str = "p", **meta: Any
) -> kopf.Body:
    raw = {
        "apiVersion": "remediation.homelab.io/v1alpha1",
        "kind": "RemediationPolicy",
        "metadata": {"namespace": "ns", "name": name, "generation": generation, "uid": f"u-{name}", **meta},
        "spec": spec_,
    }
    if status is not None:
        raw["status"] = status
    return kopf.Body(raw)


@pytest.fixture
def writer() -> FakeWriter:
    return FakeWriter()


@pytest.fixture
def handlers(writer: FakeWriter) -> PolicyHandlers:
    recorder = PolicyStatusRecorder()
    sync = PolicyStatusSync(recorder, writer, interval=3600)
    return PolicyHandlers(index=PolicyIndex(), recorder=recorder, catalog=CATALOG, sync=sync, clock=lambda: T0)


def handle(handlers: PolicyHandlers, b: kopf.Body, event_type: str | None = "ADDED") -> None:
    event = {"type": event_type, "object": dict(b)}
    asyncio.run(handlers.on_policy_event(event=event, body=b, logger=logging.getLogger("test")))


def flush(handlers: PolicyHandlers) -> None:
    asyncio.run(handlers.sync.flush())


def test_a_new_policy_is_indexed_and_its_status_written_once(handlers: PolicyHandlers, writer: FakeWriter) -> None:
    handle(handlers, body(spec()))
    assert handlers.index.get("ns/p") is not None
    flush(handlers)
    status = writer.status["ns/p"]
    assert status["conditions"][0]["reason"] == "Indexed" and status["mode"] == "active"
    assert status["counters"] == dict.fromkeys(status["counters"], 0)
    assert [e.reason for e in writer.events] == ["Indexed"]
    # The write comes back as a watch event: nothing more to write or announce.
    handle(handlers, body(spec(), status=status), "MODIFIED")
    flush(handlers)
    assert len(writer.patches) == 1 and len(writer.events) == 1


def test_a_change_seen_before_its_status_is_written_is_announced_once(
    handlers: PolicyHandlers, writer: FakeWriter
) -> None:
    handle(handlers, body(spec()))
    handle(handlers, body(spec(), labels={"team": "sre"}), "MODIFIED")  # our status not visible yet
    flush(handlers)
    assert len(writer.events) == 1


def test_an_edit_rewrites_only_what_changed(handlers: PolicyHandlers, writer: FakeWriter) -> None:
    handle(handlers, body(spec()))
    flush(handlers)
    handle(handlers, body(spec(actions={"dryRun": True}), generation=2, status=writer.status["ns/p"]), "MODIFIED")
    flush(handlers)
    assert set(writer.patches[-1]) == {"observedGeneration", "mode", "conditions"}
    assert writer.status["ns/p"]["mode"] == "dry-run"
    assert (
        writer.status["ns/p"]["conditions"][0]["lastTransitionTime"] == "2026-03-01T12:00:00Z"
    )  # still True: no transition


def test_invalid_policy_is_dropped_from_the_index_with_a_warning(handlers: PolicyHandlers, writer: FakeWriter) -> None:
    handle(handlers, body(spec()))
    flush(handlers)
    handle(handlers, body(spec(allowedFunctions=["nope"]), generation=2, status=writer.status["ns/p"]), "MODIFIED")
    flush(handlers)
    assert handlers.index.get("ns/p") is None
    assert writer.status["ns/p"]["conditions"][0]["status"] == "False"
    assert (writer.events[-1].type, writer.events[-1].reason) == ("Warning", REASON_UNKNOWN_FUNCTION)


def test_deletion_removes_the_policy_and_its_recorded_state(handlers: PolicyHandlers, writer: FakeWriter) -> None:
    handle(handlers, body(spec()))
    handle(handlers, body(spec(), deletionTimestamp="2026-03-01T12:00:00Z", finalizers=["x"]), "MODIFIED")
    assert handlers.index.get("ns/p") is None
    handle(handlers, body(spec()), "DELETED")
    assert handlers.index.get("ns/p") is None and len(handlers.index) == 0
    flush(handlers)
    assert writer.patches == [] and handlers.sync.backlog() == 0


def test_recorded_decisions_reach_status_and_events(handlers: PolicyHandlers, writer: FakeWriter) -> None:
    decision = Decision(
        id="d1",
        incident_key="f@t",
        fingerprint="f",
        alertname="KubePodCrashLooping",
        policy="ns/p",
        outcome="trigger",
        function="pod-restart",
        parameters={"name": "x"},
        stage="rules",
        confidence=None,
    )
    handlers.recorder.record("ns/p", decision, "matched")  # recorded before the operator saw the policy
    handle(handlers, body(spec(), status={"counters": {"triggers": 4, "alertsMatched": 9}}))
    handlers.recorder.record("ns/p", decision, "trigger")
    flush(handlers)
    status = writer.status["ns/p"]
    assert status["counters"]["triggers"] == 5  # seeded from .status, then added to
    assert status["counters"]["alertsMatched"] == 10
    assert status["lastDecision"]["decisionId"] == "d1" and "confidence" not in status["lastDecision"]
    assert [e.reason for e in writer.events] == ["Indexed", "Triggered"]
    flush(handlers)  # nothing new: nothing written, nothing posted
    assert len(writer.patches) == 1 and len(writer.events) == 2


def test_a_failed_write_is_retried_and_its_events_wait(handlers: PolicyHandlers, writer: FakeWriter) -> None:
    handle(handlers, body(spec()))
    writer.down = True
    decision = Decision(
        id="d1",
        incident_key="f@t",
        fingerprint="f",
        alertname="A",
        policy="ns/p",
        outcome="trigger",
        function="pod-restart",
    )
    handlers.recorder.record("ns/p", decision, "trigger")
    flush(handlers)
    flush(handlers)
    assert writer.patches == [] and handlers.sync.write_failures == 2 and handlers.sync.backlog() == 1
    writer.down = False
    flush(handlers)
    assert writer.status["ns/p"]["counters"]["triggers"] == 1
    assert [e.reason for e in writer.events] == ["Indexed", "Triggered"]
    assert handlers.sync.backlog() == 0


def test_a_policy_gone_from_the_cluster_is_no_longer_written(handlers: PolicyHandlers, writer: FakeWriter) -> None:
    handle(handlers, body(spec()))
    writer.gone.add("ns/p")
    flush(handlers)
    assert handlers.sync.backlog() == 0 and handlers.sync.write_failures == 0


def test_an_unavailable_api_ends_the_round_but_a_refused_write_does_not(
    handlers: PolicyHandlers, writer: FakeWriter
) -> None:
    for name in ("a", "b", "c"):
        handle(handlers, body(spec(), name=name))
    writer.down = True
    flush(handlers)
    assert writer.attempts == 1  # the other two would only wait out their own timeouts
    writer.down = False
    writer.refused.add("ns/a")
    flush(handlers)
    assert writer.attempts == 4 and set(writer.status) == {"ns/b", "ns/c"}
    assert handlers.sync.write_failures == 2 and handlers.sync.backlog() == 1
