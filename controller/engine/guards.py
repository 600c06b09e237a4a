"""What a policy's `actions` make of a decision: trigger, escalate, hold for approval, or hold back.

Pure functions over plain values: the pipeline reads the guard state (the
target's cooldown, the policy's trigger count in its window, whether the
incident already resolved) inside the same store transaction in which it
writes the plan, so two workers can never both pass the same cooldown.

The order of the guards, and why:

1. an incident that resolved before it was decided is not acted on when the
   policy says `onResolved: cancelPending` (the same reason a resolved alert
   cancels a pending approval);
2. `dryRun` records what would happen and consumes nothing (no cooldown, no
   budget), so switching dry-run off starts from a clean slate;
3. an escalation (no stage yielded) is always emitted: humans must hear
   about it, and it acts on nothing, so no guard applies;
4. the cooldown (per function + target) comes before the storm breaker: a
   repeat on a target just remediated is a duplicate, not part of a storm;
5. an open circuit breaker of (policy, function) (`circuitBreaker`:
   consecutive bad outcomes, `controller.engine.outcomes`) turns the
   trigger into an escalation whose reason names the circuit;
6. the storm breaker (`maxTriggersPerWindow` per `windowSeconds`, per
   policy) turns further triggers into escalations with reason
   "storm breaker";
7. `requireApproval` holds the trigger until a human approves it, and so
   does a half-open circuit (its cooldown is over: one try, approved);
   the cooldown starts when the trigger is finally emitted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel

from controller.schemas.decision import Decision
from controller.schemas.policy import Actions

DecisionState = Literal[
    "triggered",
    "escalated",
    "cooldown",
    "dry_run",
    "approval_pending",
    "approved",
    "rejected",
    "approval_expired",
    "approval_cancelled",
    "cancelled_resolved",
]
Emit = Literal["trigger", "escalation", "approval"]
RecorderKind = Literal["matched", "trigger", "escalation", "dry_run", "dead_letter", "approval_requested"]

STORM_BREAKER = "storm breaker"


@dataclass(frozen=True)
class GuardState:
    """What the store knows when the decision is committed."""

    now: float
    cooldown_until: float | None  # the decision's target is cooled down until then (None: never triggered)
    budget_used: int  # triggers (and approval requests) of this policy within its window
    incident_resolved: bool
    # The circuit of (policy, function) (controller.engine.outcomes): closed, open or half-open, and why.
    circuit: str = "closed"
    circuit_reason: str = ""


@dataclass(frozen=True)
class ActionPlan:
    """What to record and emit for one decision."""

    state: DecisionState
    reason: str
    emit: tuple[Emit, ...] = ()
    budgeted: bool = False  # counts toward the storm breaker
    cooldown_until: float | None = None  # start the target's cooldown (set when a trigger is emitted)
    approval_expires_at: float | None = None
    record: RecorderKind | None = None  # what the policy's status records besides "matched"
    action: str = ""  # the agent_sre_policy_actions_total label

    @property
    def escalation_reasons(self) -> list[str]:
        """Reasons an escalation carries besides the stages' own (the storm breaker's)."""
        return [self.reason] if self.action in ("storm_breaker", "circuit_breaker") else []


def plan_actions(decision: Decision, actions: Actions, guard: GuardState) -> ActionPlan:
    """Apply the policy's actions to a fresh decision (see the module docstring for the order)."""
    if guard.incident_resolved and actions.on_resolved == "cancelPending":
        return ActionPlan(
            "cancelled_resolved", "the alert resolved before the decision was made", action="cancelled_resolved"
        )
    if actions.dry_run:
        return ActionPlan("dry_run", _dry_run_reason(decision, actions, guard), record="dry_run", action="dry_run")
    if decision.outcome == "escalate":
        return ActionPlan(
            "escalated",
            decision.reasoning or "no stage yielded a valid decision",
            ("escalation",),
            record="escalation",
            action="escalation",
        )
    if _cooling_down(guard):
        return ActionPlan("cooldown", _cooldown_reason(decision, guard), action="cooldown")
    if guard.circuit == "open":
        return ActionPlan(
            "escalated",
            f"{guard.circuit_reason}; {decision.function} not triggered",
            ("escalation",),
            record="escalation",
            action="circuit_breaker",
        )
    if _storm(actions, guard):
        return ActionPlan(
            "escalated",
            _storm_reason(decision, actions, guard),
            ("escalation",),
            record="escalation",
            action="storm_breaker",
        )
    if actions.require_approval or guard.circuit == "half-open":
        # Half-open: the circuit's cooldown is over; one more try, but only with a human's approval.
        timeout = actions.approval_timeout_seconds or actions.circuit_breaker.cooldown_seconds
        return ActionPlan(
            "approval_pending",
            f"waiting for approval until {_iso(guard.now + timeout)}",
            ("approval",),
            budgeted=True,
            approval_expires_at=guard.now + timeout,
            record="approval_requested",
            action="approval_requested",
        )
    return ActionPlan(
        "triggered",
        f"{decision.function} triggered",
        ("trigger",),
        budgeted=True,
        cooldown_until=cooldown_end(actions.cooldown_seconds, guard.now),
        record="trigger",
        action="trigger",
    )


def cooldown_end(cooldown_seconds: int, now: float) -> float | None:
    return now + cooldown_seconds if cooldown_seconds > 0 else None


def _cooling_down(guard: GuardState) -> bool:
    return guard.cooldown_until is not None and guard.now < guard.cooldown_until


def _storm(actions: Actions, guard: GuardState) -> bool:
    return guard.budget_used >= actions.max_triggers_per_window


def _cooldown_reason(decision: Decision, guard: GuardState) -> str:
    return f"{decision.target} is cooling down until {_iso(guard.cooldown_until or guard.now)}"


def _storm_reason(decision: Decision, actions: Actions, guard: GuardState) -> str:
    return (
        f"{STORM_BREAKER}: {guard.budget_used} triggers of policy {decision.policy} within {actions.window_seconds}s"
        f" (limit {actions.max_triggers_per_window}); {decision.function} not triggered"
    )


def _dry_run_reason(decision: Decision, actions: Actions, guard: GuardState) -> str:
    if decision.outcome == "escalate":
        return "dry run: would escalate"
    if _cooling_down(guard):
        return f"dry run: would hold back, {_cooldown_reason(decision, guard)}"
    if guard.circuit == "open":
        return f"dry run: would escalate, {guard.circuit_reason}"
    if _storm(actions, guard):
        return f"dry run: would escalate, {_storm_reason(decision, actions, guard)}"
    verb = "request approval for" if actions.require_approval else "trigger"
    return f"dry run: would {verb} {decision.function} {decision.parameters}"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class ApprovalRequestData(BaseModel):
    """`data` of io.homelab.agent-sre.approval.requested: what a human approves or rejects."""

    approval_id: str
    correlation_id: str
    policy: str
    lambda_function: str
    parameters: dict[str, Any]
    alert: dict[str, Any]
    confidence: float | None
    reasoning: str
    expires_at: str
