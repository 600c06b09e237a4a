"""Labels from the store: what the humans, the rule authors and the outcomes said the right call was.

`labels_since(store, since)` reads every decision made since `since` and gives at most one label per
decision, from the strongest evidence it has, in this order:

1. `correction`: a human rejected the proposal and said what the right call was (a function and its
   parameters, or none: "no action was right").
2. `annotation`: the alert carried `lambda_function` / `lambda_parameters` and the staticAnnotation
   stage accepted that call (valid for the runbook, allowed by the policy); `lambda_function: none`
   is the author saying no action is right.
3. `approval`: a human approved the call and its outcome was `verified`.
4. `outcome`: the call ran without an approval step (an active policy) and its outcome was `verified`.

Everything else gives no label, and is counted by why:

- `ineffective` / `recurred` outcomes: they say the action taken did not help, which says nothing about
  what would have (another function, or none). They never become a "none" label, nor a label for another
  function; the dataset format has no "not this function" label, so they are skipped.
- `failed`, `unknown`, `superseded` or still-open outcomes, dry runs, escalations, expired approvals:
  no evidence either way.
- a rejection without a correction: "not this", with no "what instead"; its annotation (if any) is not
  used either, since a human overruled it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from controller.engine.store import StoreBackend, StoreError
from controller.engine.store.corrections_sql import CorrectionRow, CorrectionSql
from controller.engine.store.feedback_sql import DecidedIncident, FeedbackSql, FinishedOutcome
from controller.schemas.alerts import AlertEvent
from controller.schemas.decision import StageOutcome

LabelSource = Literal["correction", "annotation", "approval", "outcome"]


@dataclass(frozen=True)
class Label:
    """One labelled alert: the alert as the model saw it, the right call, and where that came from."""

    decision_id: str
    policy: str
    decided_at: float
    labelled_at: float
    alert: dict[str, Any]  # the Alertmanager alert object (AlertEvent.as_alert_dict)
    function: str | None
    parameters: dict[str, Any]
    source: LabelSource


@dataclass
class Labels:
    labels: list[Label] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # why decisions gave no label -> how many

    def skip(self, why: str) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + 1


def labels_since(store: StoreBackend, since: float) -> Labels:
    with store.reading() as tx:
        decided = FeedbackSql(tx).decided_since(since)
    outcomes = {o.decision_id: o for o in _optional(store, lambda tx: FeedbackSql(tx).finished_outcomes(since))}
    corrections = {c.decision_id: c for c in _optional(store, lambda tx: CorrectionSql(tx).since(since))}
    out = Labels()
    for incident in decided:
        _label(incident, outcomes.get(incident.decision.id), corrections.get(incident.decision.id), out)
    return out


def _optional(store: StoreBackend, read: Any) -> list[Any]:
    """Rows of a table a store from before it existed lacks (outcomes, corrections): none then."""
    try:
        with store.reading() as tx:
            return list(read(tx))
    except StoreError:
        return []


def _label(
    incident: DecidedIncident, outcome: FinishedOutcome | None, correction: CorrectionRow | None, out: Labels
) -> None:
    d = incident.decision
    if incident.alert_payload is None:
        out.skip("the firing alert is no longer in the store")
        return
    event = AlertEvent.model_validate_json(incident.alert_payload)
    alert = event.as_alert_dict()

    def emit(source: LabelSource, function: str | None, parameters: dict[str, Any], at: float | None) -> None:
        labelled_at = at if at is not None else incident.created_at
        out.labels.append(
            Label(d.id, d.policy, incident.created_at, labelled_at, alert, function, dict(parameters), source)
        )

    if correction is not None:
        emit("correction", correction.function, correction.parameters, correction.recorded_at)
        return
    if incident.approval_state == "rejected":
        out.skip("rejected without a correction")
        return
    annotation = _annotation_call(incident, event)
    if annotation is not None:
        emit("annotation", *annotation, incident.created_at)
        return
    state = outcome.state if outcome is not None else None
    if state == "verified" and d.function is not None:
        if incident.approval_state == "approved":
            emit("approval", d.function, d.parameters, outcome.finished_at if outcome else None)
        elif incident.mode == "active":
            emit("outcome", d.function, d.parameters, outcome.finished_at if outcome else None)
        else:
            out.skip(f"verified, but the {incident.mode} decision was not approved")
        return
    if state in ("ineffective", "recurred"):
        out.skip(f"outcome {state}: says only that {d.function} did not help")
    elif state is not None:
        out.skip(f"outcome {state}: no evidence")
    elif incident.approval_state == "approved":
        out.skip("approved, no final outcome yet")
    else:
        out.skip(f"{d.outcome} ({incident.state}): no human or outcome evidence")


def _annotation_call(incident: DecidedIncident, event: AlertEvent) -> tuple[str | None, dict[str, Any]] | None:
    """The alert's own lambda_function annotation, when the staticAnnotation stage accepted it (or it said none)."""
    if event.merged_annotations().get("lambda_function", "").strip().lower() in ("none", "null"):
        return None, {}  # the rule's author says no action is right
    for stage in incident.decision.trace:
        if stage.stage == "staticAnnotation" and stage.outcome == StageOutcome.ACCEPTED and stage.function:
            return stage.function, dict(stage.parameters)
    return None
