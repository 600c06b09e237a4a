"""The TRM stage with the real trained checkpoint shipped in models/checkpoints/trm."""

from __future__ import annotations

from controller.decision import StageClients, decide
from controller.schemas.decision import StageOutcome
from runbooks import default_catalog

from .helpers import fixture_events, policy


async def test_the_trm_stage_runs_the_real_model_on_the_crashloop_fixture() -> None:
    from models.selector import TRMSelector

    model = TRMSelector.load(catalog=default_catalog(), threads=1)
    [event] = fixture_events("crashloop.json")
    # A generous time limit: this checks the hand-over of the real model's output, not its speed.
    p = policy({"trm": {"minConfidence": 0.0, "maxSteps": 8, "timeoutMs": 60000}}, scope=("*",))
    decision = await decide(event, p, default_catalog(), StageClients(trm=model))
    [trace] = decision.trace
    assert trace.stage == "trm"
    assert trace.outcome in (StageOutcome.ACCEPTED, StageOutcome.ABSTAINED), trace.reason
    assert trace.raw_output and trace.confidence is not None
    if trace.outcome is StageOutcome.ACCEPTED:
        assert decision.function == "pod-restart"
        assert decision.parameters == {"name": "cart-7f9c6d5b8-x2k4q", "namespace": "shop", "type": "pod"}
