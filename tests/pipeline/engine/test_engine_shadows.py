"""Shadow mode end to end through the engine (SQLite, a real loopback HTTP sink): shadows never emit, their
agreement with the best ground truth is counted, the natural-resolution baseline of dry runs, and
`trm-sre eval --from-store` on the state directory the run left behind.

(The pure comparison rules: tests/unit/test_shadow_compare.py; both stores: tests/pipeline/store/test_shadow_sql.py.)
"""

from __future__ import annotations

import io
import json
from typing import Any

from controller.schemas.decision import LAMBDA_TRIGGER, shadow_decision_id
from controller.tools.cli import main as cli_main
from controller.tools.explain import read_stored_decision, render_history
from controller.tools.shadow_eval import main as eval_main
from tests.pipeline.engine.builders import RESTART_RULES, FakeClock, alert_dict, payload, policy
from tests.pipeline.sink import CaptureSink

NONE = {"lambda_function": "none"}

# The shadow's rules: check-* pods get pod-check-status, cart-* and web-* pods pod-restart, others nothing.
SHADOW_RULES: list[dict[str, Any]] = [
    {
        "rules": [
            {
                "match": {"matchers": [{"label": "pod", "op": "=~", "value": "check-.*"}]},
                "function": "pod-check-status",
                "parameters": {"name": "{{ $labels.pod }}", "namespace": "{{ $labels.namespace }}"},
            },
            {
                "match": {"matchers": [{"label": "pod", "op": "=~", "value": "(cart|web)-.*"}]},
                "function": "pod-restart",
                "parameters": {"name": "{{ $labels.pod }}", "namespace": "{{ $labels.namespace }}", "type": "pod"},
            },
        ]
    }
]
LIVE_CHAIN = [{"staticAnnotation": {}}, *RESTART_RULES]
VERIFY = {"cooldownSeconds": 0, "verify": {"windowSeconds": 60, "recurrenceSeconds": 30}}


def shadow_policy(name: str = "restart-shadow", **kwargs: Any) -> Any:
    live = policy(name, chain=SHADOW_RULES, **kwargs)
    return live.model_copy(update={"spec": live.spec.model_copy(update={"mode": "Shadow"})})


async def test_a_shadow_policy_emits_nothing_and_its_agreement_is_counted(
    make_engine, sink: CaptureSink, tmp_path
) -> None:
    clock = FakeClock()
    live = policy(chain=LIVE_CHAIN, actions=VERIFY)
    # The shadow policy outranks the live one, and would emit anywhere it could: it must never be selected.
    shadow = shadow_policy(actions={"cooldownSeconds": 0})
    shadow = shadow.model_copy(update={"spec": shadow.spec.model_copy(update={"priority": 1000})})
    engine = await make_engine([live, shadow], sink=sink.url, clock=clock, state_dir=tmp_path / "state")
    engine.pipeline.outcomes._interval_s = engine.pipeline.shadows._interval_s = 3600.0

    alerts = {
        "cart-1": alert_dict("cart-1"),  # live restarts it, it resolves: verified; the shadow agrees
        "check-1": alert_dict("check-1"),  # the shadow checks instead; live's restart stays ineffective
        "web-1": alert_dict("web-1", annotations=NONE),  # the author: no action; the shadow would restart
        "idle-1": alert_dict("idle-1", annotations=NONE),  # the author: no action; the shadow abstains too
        "web-2": alert_dict(  # the author names another pod: the shadow's parameters disagree
            "web-2",
            annotations={
                "lambda_function": "pod-restart",
                "lambda_parameters": json.dumps({"name": "web-2-other", "namespace": "shop", "type": "pod"}),
            },
        ),
    }
    events = {pod: payload(body)[0] for pod, body in alerts.items()}
    await engine.ingest(list(events.values()))
    await engine.settle()
    assert await sink.wait_for_async(lambda s: len(s.accepted_ids()) == 5)

    # Only the live policy's triggers went out: one per alert, none from the shadow policy.
    triggers = [r for r in sink.requests if r.ce_type == LAMBDA_TRIGGER]
    assert len(triggers) == 5
    assert {r.data()["policy"] for r in sink.requests} == {"shop/restart"}
    assert engine.sql("SELECT COUNT(*) FROM decisions WHERE policy = 'shop/restart-shadow'") == [(0,)]
    assert engine.sql("SELECT COUNT(*) FROM outcomes WHERE policy = 'shop/restart-shadow'") == [(0,)]
    assert engine.sql("SELECT COUNT(*) FROM cooldowns WHERE policy = 'shop/restart-shadow'") == [(0,)]
    recorded = engine.sql("SELECT stage, function, live_decision_id IS NOT NULL FROM shadow_decisions ORDER BY id")
    assert len(recorded) == 5 and all(live_id for *_, live_id in recorded)

    # Annotated alerts are final at once; the others wait for their live outcome.
    assert await engine.pipeline.shadows.evaluate() == 3
    clock.advance(40)
    await engine.ingest(payload(alert_dict("cart-1", status="resolved")))
    clock.advance(21)
    await engine.pipeline.outcomes.evaluate()  # check-1 ineffective; cart-1 resolved, waiting out its recurrence
    assert await engine.pipeline.shadows.evaluate() == 1
    clock.advance(10)
    await engine.pipeline.outcomes.evaluate()  # cart-1 verified
    assert await engine.pipeline.shadows.evaluate() == 1
    assert await engine.pipeline.shadows.evaluate() == 0  # final comparisons are never redone or recounted

    def counted(agreement: str, stage: str = "rules") -> float:
        return engine.metric(
            "agent_sre_shadow_decisions_total", policy="shop/restart-shadow", stage=stage, agreement=agreement
        )

    assert counted("agree") == 1  # cart-1, against its verified outcome
    assert counted("disagree_function") == 1  # check-1
    assert counted("shadow_only_action") == 1  # web-1: the risky case
    assert counted("both_abstain", stage="none") == 1  # idle-1: the shadow's chain escalated
    assert counted("disagree_parameters") == 1  # web-2
    rows = dict(
        engine.sql(
            "SELECT incident_key, truth_source || ':' || agreement || ':' || COALESCE(shadow_correct, '-')"
            " FROM shadow_decisions"
        )
    )
    by_pod = {pod: rows[event.incident_key] for pod, event in events.items()}
    assert by_pod == {
        "cart-1": "outcome:agree:1",
        "check-1": "outcome:disagree_function:-",  # live's restart failed; whether checking was right is unknown
        "web-1": "annotation:shadow_only_action:0",
        "idle-1": "annotation:both_abstain:-",
        "web-2": "annotation:disagree_parameters:0",
    }

    # The report a human reads, from the state directory this run left behind.
    out = io.StringIO()
    assert eval_main(["--from-store", "--state-dir", str(tmp_path / "state"), "--json"], out) == 0
    report = json.loads(out.getvalue())
    assert report["shadow"]["counts"] == {
        "agree": 1,
        "disagree_function": 1,
        "disagree_parameters": 1,
        "shadow_only_action": 1,
        "live_only_action": 0,
        "both_abstain": 1,
    }
    assert report["shadow"]["precision"] == {"actions": 4, "right": 1, "wrong": 2, "unjudged": 1, "precision": 0.3333}
    assert report["shadow"]["precision_vs_verified_outcomes"]["precision"] == 1.0
    restart = next(f for f in report["functions"] if f["function"] == "pod-restart")
    # Every live restart but cart-1's was still firing when its window ended.
    assert (restart["live"]["verified"], restart["live"]["ineffective"], restart["live"]["success_rate"]) == (1, 4, 0.2)


async def test_a_shadow_stage_is_compared_with_a_rejections_correction(make_engine, sink: CaptureSink) -> None:
    # The live chain asks for approval of a restart; a shadow stage proposes a status check beside it.
    chain = [
        *RESTART_RULES,
        {
            "shadow": True,
            "rules": [
                {
                    "function": "pod-check-status",
                    "parameters": {"name": "{{ $labels.pod }}", "namespace": "{{ $labels.namespace }}"},
                }
            ],
        },
    ]
    live = policy(chain=chain, actions={"requireApproval": True, "approvalTimeoutSeconds": 600})
    engine = await make_engine([live], sink=sink.url)
    engine.pipeline.shadows._interval_s = 3600.0
    first, second = payload(alert_dict("api-1"))[0], payload(alert_dict("api-2"))[0]
    await engine.ingest([first, second])
    await engine.settle()
    assert await engine.pipeline.shadows.evaluate() == 0  # approvals pending: nothing is final yet

    with engine.store.reading() as tx:
        one = tx.pending_approvals_for_incident(first.incident_key)[0]
        two = tx.pending_approvals_for_incident(second.incident_key)[0]
    check = ("pod-check-status", {"name": "api-1", "namespace": "shop"})
    assert (await engine.pipeline.answer_approval(one.id, False, "alice", check))[0] == "rejected"
    assert (await engine.pipeline.answer_approval(two.id, True, "bob"))[0] == "approved"
    assert await engine.pipeline.shadows.evaluate() == 2

    # The shadow stage emitted nothing: the only trigger is the approved restart (and the two approval requests).
    assert await sink.wait_for_async(lambda s: len(s.accepted_ids()) == 3)
    assert [r.data()["lambda_function"] for r in sink.requests if r.ce_type == LAMBDA_TRIGGER] == ["pod-restart"]

    def counted(agreement: str) -> float:
        return engine.metric(
            "agent_sre_shadow_decisions_total", policy="shop/restart", stage="rules", agreement=agreement
        )

    assert counted("agree") == 1  # the correction said: check its status
    assert counted("disagree_function") == 1  # the approved restart was right, the check was not
    rows = dict(engine.sql("SELECT id, truth_source || ':' || shadow_correct FROM shadow_decisions"))
    assert rows == {
        shadow_decision_id(first.incident_key, "shop/restart", 1): "correction:1",
        shadow_decision_id(second.incident_key, "shop/restart", 1): "approval:0",
    }
    # The live decision shows what its shadow stage would have done, and how that compared.
    shown = engine.pipeline.get_decision(one.decision_id)
    assert shown["correction"]["function"] == "pod-check-status"
    assert [(s["stage"], s["function"], s["agreement"], s["truth_source"]) for s in shown["shadows"]] == [
        ("rules", "pod-check-status", "agree", "correction")
    ]
    # `trm-sre explain --state-dir` reads the same from the store (WAL: beside the running engine) and prints it.
    stored = read_stored_decision(engine.state_dir, one.decision_id)
    assert stored is not None and stored["shadows"] == shown["shadows"]
    assert stored["correction"] == shown["correction"]
    text = io.StringIO()
    render_history(stored, text)
    assert "correction: pod-check-status" in text.getvalue()
    assert "shadow:   shop/restart rules: pod-check-status (agree by correction)" in text.getvalue()


async def test_dry_runs_record_whether_the_alert_resolved_with_no_action(
    make_engine, sink: CaptureSink, tmp_path, capsys
) -> None:
    clock = FakeClock()
    dry = policy(actions={"dryRun": True, "verify": {"windowSeconds": 60, "recurrenceSeconds": 30}})
    engine = await make_engine([dry], sink=sink.url, clock=clock, state_dir=tmp_path / "state")
    engine.pipeline.shadows._interval_s = 3600.0
    pods = ("a-1", "b-1", "c-1", "d-1")
    await engine.ingest([payload(alert_dict(pod))[0] for pod in pods])
    await engine.settle()
    clock.advance(20)
    await engine.ingest(payload(alert_dict("a-1", status="resolved"), alert_dict("b-1", status="resolved")))
    assert await engine.pipeline.shadows.evaluate() == 2  # resolved within the window: final at once
    clock.advance(41)
    await engine.ingest(payload(alert_dict("c-1", status="resolved")))  # too late: still firing at the window's end
    assert await engine.pipeline.shadows.evaluate() == 2
    assert sink.requests == []  # a dry run emits nothing

    def counted(result: str) -> float:
        return engine.metric(
            "agent_sre_natural_resolutions_total", policy="shop/restart", function="pod-restart", result=result
        )

    assert (counted("resolved"), counted("still_firing")) == (2, 2)
    assert cli_main(["eval", "--from-store", "--state-dir", str(tmp_path / "state"), "--policy", "shop/restart"]) == 0
    text = capsys.readouterr().out
    line = next(x for x in text.splitlines() if x.strip().startswith("pod-restart"))
    assert line.split() == ["pod-restart", "-", "(", "0)", "50.0%", "(", "4)", "-"], text
