"""A policy's `.status` counters and Events, recorded in memory by the engine (no I/O).

`controller.operator.status` writes them to the cluster.

The pipeline decides in its own tasks (and possibly threads) and must never
wait for the Kubernetes API; the operator owns every write to a
RemediationPolicy. Two pieces sit between them:

- `PolicyStatusRecorder`: the pipeline calls `record()` (cheap, thread-safe,
  no I/O); `snapshot()` gives `.status.counters` and `.status.lastDecision`,
  `drain_events()` the Kubernetes Events to post.
- `PolicyStatusSync`: the one writer. The operator's watch handler tells it
  what each policy's validation status should be (`observe`); a single loop
  (`run`) writes whatever differs from the last known `.status` as one JSON
  merge patch per policy, then posts the pending Events. A failed write (the
  apiserver restarting, a network cut) is simply retried on the next tick; the
  Events wait in the recorder's bounded queue meanwhile.

Why not a kopf timer per policy: a timer makes kopf put a finalizer on every
policy (deletion then hangs whenever the operator is not running), and when
the status patch a timer returns fails after kopf's retries, kopf ends that
timer for good, so the counters would silently stop moving after an apiserver
outage.

Counters survive an operator restart: on first sight of a policy the operator
`seed()`s the recorder with the counters already in its `.status`, and the
recorder adds to them. Events are bounded per policy: under an alert storm the
oldest pending events are dropped and counted, never queued without limit.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from controller.schemas.decision import Decision

log = logging.getLogger(__name__)


RecordKind = Literal["matched", "trigger", "escalation", "dry_run", "dead_letter", "approval_requested"]

# Record kind -> the counter it bumps in `.status.counters` (the CRD's field names).
COUNTER_OF: dict[str, str] = {
    "matched": "alertsMatched",
    "trigger": "triggers",
    "escalation": "escalations",
    "dry_run": "dryRunDecisions",
    "dead_letter": "deadLetters",
    "approval_requested": "approvalsRequested",
}
COUNTER_NAMES: tuple[str, ...] = tuple(COUNTER_OF.values())

# Record kind -> (Event type, Event reason). "matched" is only counted: an Event
# per matching alert would double every other Event for no new information.
EVENT_OF: dict[str, tuple[str, str]] = {
    "trigger": ("Normal", "Triggered"),
    "escalation": ("Warning", "Escalated"),
    "dry_run": ("Normal", "DryRun"),
    "dead_letter": ("Warning", "DeadLettered"),
    "approval_requested": ("Normal", "ApprovalRequested"),
}

#: Events kept per policy between two flushes; older ones are dropped (and counted) beyond this.
MAX_PENDING_EVENTS = 50


@dataclass(frozen=True)
class PolicyEvent:
    """One Kubernetes Event to post on a policy."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass
class _PolicyRecord:
    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTER_NAMES, 0))
    last_decision: dict[str, Any] | None = None
    events: deque[PolicyEvent] = field(default_factory=lambda: deque(maxlen=MAX_PENDING_EVENTS))
    dropped_events: int = 0
    seeded: bool = False
    outcomes: dict[str, dict[str, Any]] | None = None  # per function, from the store (controller.engine.outcomes)
    paused_condition: dict[str, Any] | None = None  # the FunctionPaused condition, once outcomes exist


def rfc3339(moment: datetime) -> str:
    """Kubernetes' timestamp format (`date-time`, UTC, second precision, `Z`)."""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def last_decision_of(decision: Decision, kind: RecordKind) -> dict[str, Any]:
    """`.status.lastDecision` for a decision; absent values are left out, as the CRD has no nulls."""
    entry: dict[str, Any] = {
        "time": rfc3339(decision.created_at),
        "alertname": decision.alertname,
        "function": decision.function,
        "stage": decision.stage,
        "confidence": decision.confidence,
        "outcome": kind,
        "decisionId": decision.id,
    }
    return {k: v for k, v in entry.items() if v is not None}


def default_message(decision: Decision, kind: RecordKind) -> str:
    """A one-line Event message: what was decided, by which stage, for which alert."""
    if decision.function:
        params = ", ".join(f"{k}={v}" for k, v in sorted(decision.parameters.items()))
        what = f"{decision.function}({params})"
        if decision.stage:
            what += f" by {decision.stage}"
        if decision.confidence is not None:
            what += f" at confidence {decision.confidence:.2f}"
    else:
        what = "no function"
    text = f"{kind.replace('_', ' ')}: alert {decision.alertname or '?'} -> {what}; decision {decision.id}"
    if decision.reasoning and kind == "escalation":
        text += f"; {decision.reasoning}"
    return text


class PolicyStatusRecorder:
    """Thread-safe, in-memory counters, last decision and pending Events per policy (`namespace/name`)."""

    def __init__(self, max_pending_events: int = MAX_PENDING_EVENTS) -> None:
        self._lock = threading.Lock()
        self._records: dict[str, _PolicyRecord] = {}
        self._max_pending_events = max_pending_events

    def _record_for(self, policy_key: str) -> _PolicyRecord:
        record = self._records.get(policy_key)
        if record is None:
            record = _PolicyRecord(events=deque(maxlen=self._max_pending_events))
            self._records[policy_key] = record
        return record

    def record(self, policy_key: str, decision: Decision, kind: RecordKind, message: str = "") -> None:
        """Count what happened to `decision` under the policy, remember it as the last, queue its Event."""
        if kind not in COUNTER_OF:
            raise ValueError(f"unknown record kind {kind!r}; expected one of {', '.join(COUNTER_OF)}")
        event = None
        if kind in EVENT_OF:
            event_type, reason = EVENT_OF[kind]
            event = PolicyEvent(event_type, reason, message or default_message(decision, kind))  # type: ignore[arg-type]
        last = last_decision_of(decision, kind)
        with self._lock:
            record = self._record_for(policy_key)
            record.counters[COUNTER_OF[kind]] += 1
            record.last_decision = last
            if event is not None:
                if len(record.events) == record.events.maxlen:
                    record.dropped_events += 1
                record.events.append(event)

    def seed(self, policy_key: str, counters: dict[str, Any] | None, last_decision: dict[str, Any] | None) -> None:
        """Start from what `.status` already holds (once per policy), so a restart does not zero the counters.

        Whatever was recorded before the seed is added on top; a later call is ignored.
        """
        with self._lock:
            record = self._record_for(policy_key)
            if record.seeded:
                return
            record.seeded = True
            for name in COUNTER_NAMES:
                value = (counters or {}).get(name)
                if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                    record.counters[name] += value
            if record.last_decision is None and last_decision:
                record.last_decision = dict(last_decision)

    def post(self, policy_key: str, event: PolicyEvent) -> None:
        """Queue an Event that counts nothing (an outcome, a circuit change)."""
        with self._lock:
            record = self._record_for(policy_key)
            if len(record.events) == record.events.maxlen:
                record.dropped_events += 1
            record.events.append(event)

    def set_outcomes(self, policy_key: str, outcomes: dict[str, dict[str, Any]], paused: list[str]) -> None:
        """`.status.outcomes` and the FunctionPaused condition, as the store says (replaced, not added to)."""
        status = "True" if paused else "False"
        with self._lock:
            record = self._record_for(policy_key)
            record.outcomes = {f: dict(v) for f, v in outcomes.items()}
            previous = record.paused_condition
            if previous is None or previous["status"] != status or previous.get("_paused") != paused:
                changed = previous is None or previous["status"] != status
                record.paused_condition = {
                    "type": "FunctionPaused",
                    "status": status,
                    "reason": "CircuitOpen" if paused else "CircuitsClosed",
                    "message": (
                        f"circuit breaker open or half-open for: {', '.join(paused)}"
                        if paused
                        else "no function's circuit breaker is open"
                    ),
                    "lastTransitionTime": rfc3339(datetime.now(UTC)) if changed else previous["lastTransitionTime"],  # type: ignore[index]
                    "_paused": list(paused),
                }

    def conditions(self, policy_key: str) -> list[dict[str, Any]]:
        """Conditions the engine owns (FunctionPaused), merged into `.status.conditions` by the writer."""
        with self._lock:
            record = self._records.get(policy_key)
            condition = record.paused_condition if record else None
        return [] if condition is None else [{k: v for k, v in condition.items() if not k.startswith("_")}]

    def is_seeded(self, policy_key: str) -> bool:
        with self._lock:
            record = self._records.get(policy_key)
            return record is not None and record.seeded

    def snapshot(self, policy_key: str) -> dict[str, Any]:
        """`{"counters": {...}, "lastDecision": {...}}` as written to `.status` (no lastDecision until one exists)."""
        with self._lock:
            record = self._records.get(policy_key)
            counters = dict(record.counters) if record else dict.fromkeys(COUNTER_NAMES, 0)
            last = dict(record.last_decision) if record and record.last_decision else None
            outcomes = {f: dict(v) for f, v in record.outcomes.items()} if record and record.outcomes else None
        out: dict[str, Any] = {"counters": counters}
        if last is not None:
            out["lastDecision"] = last
        if outcomes is not None:
            out["outcomes"] = outcomes
        return out

    def drain_events(self, policy_key: str) -> list[PolicyEvent]:
        """Take the pending Events (oldest first); a summary Event says how many were dropped, if any."""
        with self._lock:
            record = self._records.get(policy_key)
            if record is None or (not record.events and not record.dropped_events):
                return []
            events = list(record.events)
            dropped, record.dropped_events = record.dropped_events, 0
            record.events.clear()
        if dropped:
            summary = f"{dropped} older decision events were not posted (storm)"
            events.insert(0, PolicyEvent("Warning", "EventsDropped", summary))
        return events

    def forget(self, policy_key: str) -> None:
        """Drop everything about a deleted policy, so one re-created under the same name starts from zero."""
        with self._lock:
            self._records.pop(policy_key, None)


# --------------------------------------------------------------------------
# Writing: the merge patch that brings .status up to date, and the one writer
# --------------------------------------------------------------------------
