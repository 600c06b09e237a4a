"""How a shadow decision is judged: the best ground truth available, and the agreement class. Pure.

Ground truth, best first (`ground_truth`):

1. `annotation`: the rule author's `lambda_function` / `lambda_parameters` on
   the alert (`lambda_function: none` says no action is right). Final at once.
2. A human's answer to the live decision's approval request: `approval`
   (approved: the live call was right), `correction` (rejected with the right
   call, or "none"), `rejection` (rejected without one: the live call was
   wrong, the right one unknown). Final once answered.
3. `outcome`: the live trigger's outcome. `verified`: the live call was
   right; `failed` / `ineffective` / `recurred`: it was wrong (the right call
   unknown). Final once the outcome is.
4. `live`: no ground truth, only the live decision (an escalation, a dry
   run, a cooldown, an expired approval, an `unknown` or `superseded`
   outcome, or no live policy at all). Final when nothing better can come:
   not while an approval is pending or an outcome is still being judged.

The agreement class compares the shadow's call with the reference call: the
ground truth's call, or the live call where the ground truth only says
whether the live call was right. `shadow_correct` says whether a shadow
*action* was right: the reference agrees and is known right (annotation,
approval, correction, verified); it was wrong when the reference is known
right and differs, or when it repeats a live call known to be wrong; None
when that cannot be told (no ground truth, a different call than a live
call that failed) and for abstentions. Parameters compare as strings, both
sides already cleaned by the runbook (defaults filled).
"""

from __future__ import annotations

from typing import Any

from controller.engine.store.shadow_sql import Call, Comparison, LiveFacts

BAD_OUTCOMES = frozenset({"failed", "ineffective", "recurred"})
NO_SIGNAL_OUTCOMES = frozenset({"unknown", "superseded"})


def _params(parameters: dict[str, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in parameters.items()}


def agreement(shadow: Call, reference: Call) -> str:
    """agree | disagree_function | disagree_parameters | shadow_only_action | live_only_action | both_abstain."""
    if shadow.function is None and reference.function is None:
        return "both_abstain"
    if shadow.function is None:
        return "live_only_action"
    if reference.function is None:
        return "shadow_only_action"  # the risky case: it would have acted where nothing was right
    if shadow.function != reference.function:
        return "disagree_function"
    if _params(shadow.parameters) != _params(reference.parameters):
        return "disagree_parameters"
    return "agree"


def live_call(live: LiveFacts) -> Call:
    """What the live chain proposed (a dry run's or a rejected proposal included); none for an escalation."""
    if live.decision_outcome == "trigger" and live.function:
        return Call(live.function, live.parameters)
    return Call(None, {})


def ground_truth(annotation: Call | None, live: LiveFacts) -> tuple[str, Call, bool | None, bool]:
    """(source, reference call, whether the reference is right: True / False (the live call, known wrong) /
    None (no ground truth), final)."""
    if annotation is not None:
        return "annotation", annotation, True, True
    call = live_call(live)
    if live.approval_state == "approved":
        return "approval", call, True, True
    if live.approval_state == "rejected":
        if live.correction is not None:
            return "correction", live.correction, True, True
        return "rejection", call, False, True
    if live.outcome_state == "verified":
        return "outcome", call, True, True
    if live.outcome_state in BAD_OUTCOMES:
        return "outcome", call, False, True
    if live.outcome_state in NO_SIGNAL_OUTCOMES:
        return "live", call, None, True
    waiting = live.approval_state == "pending" or live.outcome_state in ("pending", "resolved")
    return "live", call, None, not waiting


def compare(shadow: Call, annotation: Call | None, live: LiveFacts) -> Comparison:
    source, reference, reference_right, final = ground_truth(annotation, live)
    klass = agreement(shadow, reference)
    correct: bool | None = None
    if shadow.function is not None:
        if reference_right is True:
            correct = klass == "agree"
        elif reference_right is False and klass == "agree":
            correct = False  # it would have made the same call, and that call was wrong
    return Comparison(klass, source, reference, correct, final)
