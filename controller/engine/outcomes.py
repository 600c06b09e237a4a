"""Did it work? One outcome per delivered trigger, and a circuit breaker per (policy, function).

Each trigger the engine commits (or a human approves) gets a pending outcome
in the same transaction (`record_trigger`), keyed by its decision id, so a
re-commit or a replay can never give it a second one. A loop (`run`, a
singleton on a shared store) then judges every open outcome from what the
store already knows, with timestamps only (so a late loop judges the same):

- `failed`: the lambda answered io.knative.lambda.response.error for it, or
  its trigger was dead-lettered;
- `superseded`: the policy changed (a new generation) or was deleted before
  the outcome was known: whoever changed it took over;
- `unknown`: no signal: the incident is no longer in the store, or the
  trigger was never delivered by the end of the window. Never counted as a
  success or a failure, and it neither opens nor closes a circuit;
- `ineffective`: the incident had not resolved by `verify.windowSeconds`
  after the trigger;
- `recurred`: it resolved, then a new incident of the same alert on the same
  target was decided within `verify.recurrenceSeconds` of the resolution;
- `verified`: it resolved within the window and did not recur.

The target is the workload the function acted on (`workload_target`), not
the object named in its parameters: a Pod restarted by `pod-restart` is
replaced by a new Pod with another name, so a crash loop coming back on the
replacement is a recurrence on the same Deployment.

Circuit breaker (`spec.actions.circuitBreaker`): `failures` consecutive
failed / ineffective / recurred outcomes of one function under one policy,
within `windowSeconds` of the first of them, open its circuit. While open,
that function's proposals under that policy escalate with a reason naming
the circuit (`controller.engine.guards`); after `cooldownSeconds` it is
half-open: the next proposal needs an approval; a verified outcome closes
it, another bad one opens it again. The state is in the store, so it
survives restarts and is shared by replicas.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from controller.decision.policy_index import PolicyIndex
from controller.engine.lifecycle import Lifecycle
from controller.engine.policy_stats import PolicyEvent, PolicyStatusRecorder
from controller.engine.store import StoreBackend, StoreError
from controller.engine.store.outcomes_sql import (
    FINAL_STATES,
    CircuitRow,
    OpenOutcome,
    OutcomeRow,
    OutcomeSql,
    ensure_schema,
)
from controller.observability.metrics import Metrics
from controller.schemas.alerts import AlertEvent
from controller.schemas.decision import LAMBDA_TRIGGER, Decision
from controller.schemas.policy import CircuitBreaker, Policy

log = logging.getLogger(__name__)

BAD = frozenset({"failed", "ineffective", "recurred"})
#: Sightings older than this are deleted (longer than any recurrenceSeconds allowed).
SIGHTING_TTL_S = 8 * 86_400
CIRCUIT = "circuit breaker"
PAUSED = "FunctionPaused"

#: `<deployment>-<pod-template-hash>-<suffix>`: a ReplicaSet's pod; `<statefulset>-<ordinal>`.
_REPLICASET_POD = re.compile(
    r"^(?P<owner>[a-z0-9]([-a-z0-9]*[a-z0-9])?)-[bcdfghjklmnpqrstvwxz2456789]{6,10}-[a-z0-9]{5}$"
)
_JOB_OR_DS_POD = re.compile(r"^(?P<owner>[a-z0-9]([-a-z0-9]*[a-z0-9])?)-[a-z0-9]{5}$")


def pod_owner(pod: str) -> str:
    """The workload a pod's name says it belongs to: a ReplicaSet pod's Deployment, else the pod itself."""
    match = _REPLICASET_POD.match(pod)
    return match.group("owner") if match else pod


def workload_target(function: str | None, parameters: dict[str, Any], labels: dict[str, str]) -> str:
    """What a function acted on, as `namespace/kind/name` (see docs/operations.md, "Outcomes").

    - `pod-restart`, `pod-check-status` with `type: pod` (or no type): the pod's owner, derived from its name
      (a ReplicaSet pod `cart-7f9c6d5b8-x2k4q` -> `deployment/cart`); a name that is no ReplicaSet pod's stays
      `pod/<name>`. With `type: deployment`: `deployment/<name>`.
    - `scale-deployment`: `deployment/<name>`; `check-pvc-status`: `pvc/<name>`; the `flux-reconcile-*`
      functions: their Flux object (`gitrepository/`, `helmrelease/`, `kustomization/<name>`).
    - No function (an escalation) or another function: from the alert's labels: `deployment`, else the
      `pod`'s owner, else `statefulset`, `daemonset`, `job`, else the alertname's scope (`namespace/-/-`).
    """
    namespace = str(parameters.get("namespace") or labels.get("namespace") or "")
    name = str(parameters.get("name") or "")
    if function in ("pod-restart", "pod-check-status") and name:
        if parameters.get("type") == "deployment":
            return f"{namespace}/deployment/{name}"
        owner = pod_owner(name)
        return f"{namespace}/deployment/{owner}" if owner != name else f"{namespace}/pod/{name}"
    if function == "scale-deployment" and name:
        return f"{namespace}/deployment/{name}"
    if function == "check-pvc-status" and name:
        return f"{namespace}/pvc/{name}"
    if function and function.startswith("flux-reconcile-") and name:
        return f"{namespace}/{function.removeprefix('flux-reconcile-')}/{name}"
    return labels_target(labels)


def labels_target(labels: dict[str, str]) -> str:
    namespace = labels.get("namespace", "")
    if labels.get("deployment"):
        return f"{namespace}/deployment/{labels['deployment']}"
    if labels.get("pod"):
        owner = pod_owner(labels["pod"])
        return f"{namespace}/deployment/{owner}" if owner != labels["pod"] else f"{namespace}/pod/{owner}"
    for kind in ("statefulset", "daemonset", "job_name", "persistentvolumeclaim"):
        if labels.get(kind):
            return f"{namespace}/{kind.removesuffix('_name')}/{labels[kind]}"
    return f"{namespace}/-/-"


# --------------------------------------------------------------------------
# The circuit: pure transitions
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class CircuitView:
    """A circuit as a guard sees it now."""

    state: str  # closed | open | half-open
    reason: str
    until: float | None = None  # open: when it becomes half-open


def circuit_view(row: CircuitRow | None, config: CircuitBreaker, now: float) -> CircuitView:
    if row is None or row.state != "open" or row.opened_at is None:
        return CircuitView("closed", "")
    until = row.opened_at + config.cooldown_seconds
    return CircuitView("open" if now < until else "half-open", row.reason, until)


def next_circuit(
    row: CircuitRow | None, policy: str, function: str, outcome: str, config: CircuitBreaker, now: float
) -> tuple[CircuitRow | None, str | None]:
    """The circuit after an outcome, and what happened to it (opened | closed | None); None row: unchanged."""
    current = row or CircuitRow(policy, function, "closed", 0, None, None, "", None, now)
    if outcome == "verified":
        if current.state == "closed" and current.failures == 0:
            return None, None
        closed = replace(current, state="closed", failures=0, first_failure_at=None, opened_at=None, updated_at=now)
        return closed, ("closed" if current.state == "open" else None)
    if outcome not in BAD:
        return None, None  # unknown, superseded: no signal either way
    if current.state == "open":  # a half-open trial (or a late one) failed: open again, for a new cooldown
        reason = f"{CIRCUIT} open for {function} under policy {policy}: {outcome} again after it opened"
        return replace(current, failures=current.failures + 1, opened_at=now, reason=reason, updated_at=now), "opened"
    in_window = current.first_failure_at is not None and now - current.first_failure_at <= config.window_seconds
    failures = current.failures + 1 if in_window else 1
    first = current.first_failure_at if in_window else now
    if failures >= config.failures:
        reason = (
            f"{CIRCUIT} open for {function} under policy {policy}: {failures} consecutive failed, ineffective"
            f" or recurred outcomes within {config.window_seconds}s (limit {config.failures}), the last {outcome}"
        )
        return replace(
            current,
            state="open",
            failures=failures,
            first_failure_at=first,
            opened_at=now,
            reason=reason,
            updated_at=now,
        ), "opened"
    return replace(current, failures=failures, first_failure_at=first, updated_at=now), None


def judge(item: OpenOutcome, policy: Policy | None, index_complete: bool, now: float) -> tuple[str, dict[str, Any]]:
    """What an open outcome is now: a final state, `resolved` (waiting out the recurrence time) or `pending`.

    Recurrence is looked up by the caller (it needs the store); see the module docstring for the order.
    """
    o = item.outcome
    if item.lambda_result == "error":
        return "failed", {"signal": "the lambda answered with an error"}
    if item.trigger_state == "dead":
        return "failed", {"signal": "the trigger was dead-lettered"}
    if index_complete and (policy is None or policy.generation != o.policy_generation):
        why = "deleted" if policy is None else f"changed (generation {o.policy_generation} -> {policy.generation})"
        return "superseded", {"signal": f"policy {o.policy} was {why} before the outcome was known"}
    if not item.incident_known:
        return "unknown", {"signal": "the incident is no longer in the store"}
    window_end = o.triggered_at + o.window_seconds
    resolved = o.resolved_at if o.resolved_at is not None else item.incident_resolved_at
    if resolved is not None and resolved <= window_end:
        return "resolved", {"resolvedAt": max(resolved, o.triggered_at)}
    if now < window_end:
        return "pending", {}
    if item.trigger_state not in (None, "delivered"):
        return "unknown", {"signal": f"the trigger was not delivered by the end of the window ({item.trigger_state})"}
    evidence: dict[str, Any] = {"signal": f"still firing {o.window_seconds}s after the trigger"}
    if resolved is not None:
        evidence["resolvedAt"] = _iso(resolved)
    return "ineffective", evidence


# --------------------------------------------------------------------------
# The engine part
# --------------------------------------------------------------------------

EVENT_REASON = {
    "recurred": ("Warning", "RemediationRecurred"),
    "ineffective": ("Warning", "RemediationIneffective"),
    "failed": ("Warning", "RemediationFailed"),
    "unknown": ("Normal", "RemediationOutcomeUnknown"),
    "superseded": ("Normal", "RemediationSuperseded"),
}


@dataclass(frozen=True)
class _Finished:
    outcome: OutcomeRow
    state: str
    evidence: dict[str, Any]
    circuit: CircuitRow | None
    circuit_change: str | None


class Outcomes:
    """Records triggers, judges their outcomes, keeps the circuits; see the module docstring."""

    def __init__(
        self,
        store: StoreBackend,
        index: PolicyIndex,
        recorder: PolicyStatusRecorder,
        metrics: Metrics,
        lifecycle: Lifecycle,
        clock: Callable[[], float],
        *,
        interval_s: float = 1.0,
        index_complete: Callable[[], bool] = lambda: True,
    ) -> None:
        self._store = store
        self._index = index
        self._recorder = recorder
        self._metrics = metrics
        self._lifecycle = lifecycle
        self._clock = clock
        self._interval_s = interval_s
        self._index_complete = index_complete
        self._schema_ready = False

    def ensure_schema(self) -> None:
        if not self._schema_ready:
            ensure_schema(self._store)
            self._schema_ready = True

    # inside the engine's own transactions

    @staticmethod
    def record_trigger(tx: Any, decision: Decision, policy: Policy, event: AlertEvent | None, now: float) -> None:
        """In the transaction that commits a trigger: its pending outcome (once per decision)."""
        if not decision.function:
            return
        labels = event.alert.labels if event is not None else {}
        verify = policy.spec.actions.verify
        OutcomeSql(tx).insert_outcome(
            OutcomeRow(
                decision_id=decision.id,
                incident_key=decision.incident_key,
                policy=policy.key,
                policy_generation=policy.generation,
                function=decision.function,
                alertname=decision.alertname,
                target=workload_target(decision.function, decision.parameters, labels),
                triggered_at=now,
                window_seconds=verify.window_seconds,
                recurrence_seconds=verify.recurrence_seconds,
                state="pending",
                resolved_at=None,
                finished_at=None,
                evidence={},
            )
        )

    @staticmethod
    def record_sighting(tx: Any, decision: Decision, event: AlertEvent, now: float) -> None:
        """In the transaction that commits any decision: where a recurrence will be looked for."""
        target = workload_target(decision.function, decision.parameters, event.alert.labels)
        OutcomeSql(tx).insert_sighting(decision.incident_key, decision.alertname, target, now)

    @staticmethod
    def circuit(tx: Any, policy: Policy, function: str | None, now: float) -> CircuitView:
        """The circuit of `function` under `policy`, read in the decision's transaction."""
        if not function:
            return CircuitView("closed", "")
        return circuit_view(OutcomeSql(tx).circuit(policy.key, function), policy.spec.actions.circuit_breaker, now)

    # the loop

    async def run(self) -> None:
        """Judge open outcomes every `interval_s` until cancelled (a singleton on a shared store)."""
        while True:
            try:
                await self.evaluate()
            except StoreError as exc:
                log.warning("cannot evaluate outcomes (will retry): %s", exc)
            await asyncio.sleep(self._interval_s)

    async def run_status(self) -> None:
        """On a shared store, every replica: refresh the outcome counts its status writer may write."""
        while True:
            try:
                await self.refresh_status()
            except StoreError as exc:
                log.warning("cannot read outcome counts (will retry): %s", exc)
            await asyncio.sleep(self._interval_s)

    async def evaluate(self) -> int:
        """One pass: judge every open outcome; returns how many got their final state."""
        finished = await asyncio.to_thread(self._evaluate)
        for done in finished:
            self._after(done)
        await self.refresh_status()
        return len(finished)

    def _evaluate(self) -> list[_Finished]:
        self.ensure_schema()
        now = self._clock()
        complete = self._index_complete()
        finished: list[_Finished] = []
        with self._store.reading() as tx:
            open_ = OutcomeSql(tx).open_outcomes(LAMBDA_TRIGGER)
        for item in open_:
            policy = self._index.get(item.outcome.policy)
            state, evidence = judge(item, policy, complete, now)
            if state == "pending":
                continue
            with self._store.transaction(durable=False) as tx:
                sql = OutcomeSql(tx)
                o = item.outcome
                if state == "resolved":
                    resolved_at = o.resolved_at if o.resolved_at is not None else float(evidence["resolvedAt"])
                    if o.state == "pending":
                        sql.mark_resolved(o.decision_id, resolved_at)
                    state, evidence = self._after_resolution(sql, o, resolved_at, now)
                    if state == "resolved":
                        continue
                evidence = {**evidence, "target": o.target}
                if not sql.finish(o.decision_id, state, now, evidence):
                    continue
                circuit, change = None, None
                if policy is not None:
                    config = policy.spec.actions.circuit_breaker
                    circuit, change = next_circuit(
                        sql.circuit(o.policy, o.function), o.policy, o.function, state, config, now
                    )
                    if circuit is not None:
                        sql.put_circuit(circuit)
                finished.append(_Finished(o, state, evidence, circuit, change))
        if finished:
            with self._store.transaction(durable=False) as tx:
                OutcomeSql(tx).sweep_sightings(now - SIGHTING_TTL_S)
        return finished

    @staticmethod
    def _after_resolution(sql: OutcomeSql, o: OutcomeRow, resolved_at: float, now: float) -> tuple[str, dict[str, Any]]:
        until = resolved_at + o.recurrence_seconds
        evidence: dict[str, Any] = {"resolvedAt": _iso(resolved_at)}
        again = sql.recurrence(o.alertname, o.target, o.incident_key, resolved_at, until)
        if again is not None:
            return "recurred", {**evidence, "recurredIncident": again[0], "recurredAt": _iso(again[1])}
        if now >= until:
            return "verified", {**evidence, "signal": f"resolved and quiet for {o.recurrence_seconds}s"}
        return "resolved", evidence

    def _after(self, done: _Finished) -> None:
        o = done.outcome
        self._metrics.remediation_outcomes.labels(policy=o.policy, function=o.function, outcome=done.state).inc()
        log.info(
            "remediation outcome",
            extra={"decision": o.decision_id, "policy": o.policy, "function": o.function, "outcome": done.state},
        )
        if done.state in EVENT_REASON:
            kind, reason = EVENT_REASON[done.state]
            message = (
                f"{o.function} on {o.target} for alert {o.alertname}: {done.state}"
                f" ({done.evidence.get('signal', '')}); decision {o.decision_id}"
            )
            self._recorder.post(o.policy, PolicyEvent(kind, reason, message[:1000]))  # type: ignore[arg-type]
        if done.circuit_change == "opened" and done.circuit is not None:
            self._recorder.post(o.policy, PolicyEvent("Warning", "CircuitOpened", done.circuit.reason[:1000]))
            log.warning("circuit opened", extra={"policy": o.policy, "function": o.function})
        elif done.circuit_change == "closed":
            message = f"{CIRCUIT} closed for {o.function}: a verified outcome (decision {o.decision_id})"
            self._recorder.post(o.policy, PolicyEvent("Normal", "CircuitClosed", message))

    async def refresh_status(self) -> None:
        """Per policy and function: outcome counts, success rate and circuit, into the recorder (from the store)."""
        summary = await asyncio.to_thread(self.summary)
        for policy_key, functions in summary.items():
            paused = sorted(f for f, s in functions.items() if s.get("circuit", "closed") != "closed")
            self._recorder.set_outcomes(policy_key, functions, paused)

    def summary(self) -> dict[str, dict[str, dict[str, Any]]]:
        self.ensure_schema()
        now = self._clock()
        with self._store.reading() as tx:
            sql = OutcomeSql(tx)
            counts, circuits = sql.counts(), sql.circuits()
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for policy, function, state, n in counts:
            out.setdefault(policy, {}).setdefault(function, dict.fromkeys(FINAL_STATES, 0))[state] = n
        for row in circuits:
            policy = self._index.get(row.policy)
            config = policy.spec.actions.circuit_breaker if policy is not None else CircuitBreaker()
            entry = out.setdefault(row.policy, {}).setdefault(row.function, dict.fromkeys(FINAL_STATES, 0))
            entry["circuit"] = circuit_view(row, config, now).state
        for functions in out.values():
            for entry in functions.values():
                entry.setdefault("circuit", "closed")
                judged = sum(entry[s] for s in ("verified", *BAD))
                if judged:
                    entry["successRate"] = f"{entry['verified'] / judged:.2f}"
        return out

    # by hand

    def reset_circuit(self, policy_key: str, function: str, token: str) -> bool:
        """Close a circuit by hand (the reset annotation), once per annotation value; True if it was reset."""
        self.ensure_schema()
        now = self._clock()
        with self._store.transaction() as tx:
            sql = OutcomeSql(tx)
            row = sql.circuit(policy_key, function)
            if row is not None and row.reset_token == token:
                return False
            base = row or CircuitRow(policy_key, function, "closed", 0, None, None, "", None, now)
            sql.put_circuit(
                replace(
                    base,
                    state="closed",
                    failures=0,
                    first_failure_at=None,
                    opened_at=None,
                    reason="",
                    reset_token=token,
                    updated_at=now,
                )
            )
        message = f"{CIRCUIT} for {function} reset by hand (annotation value {token!r})"
        self._recorder.post(policy_key, PolicyEvent("Normal", "CircuitReset", message))
        return True

    def verification(self, decision_id: str) -> dict[str, Any] | None:
        """`verification` of `GET /decisions/{id}`: state, timestamps, evidence; None if it triggered nothing."""
        self.ensure_schema()
        return verification_of(self._store, decision_id)


def verification_of(store: StoreBackend, decision_id: str) -> dict[str, Any] | None:
    """A decision's outcome as `GET /decisions/{id}` and `trm-sre explain` show it (None: no trigger, no outcome)."""
    with store.reading() as tx:
        o = OutcomeSql(tx).outcome(decision_id)
    if o is None:
        return None
    return {
        "state": o.state,
        "target": o.target,
        "function": o.function,
        "triggeredAt": _iso(o.triggered_at),
        "windowEndsAt": _iso(o.triggered_at + o.window_seconds),
        "resolvedAt": _iso(o.resolved_at) if o.resolved_at is not None else None,
        "recurrenceEndsAt": _iso(o.resolved_at + o.recurrence_seconds) if o.resolved_at is not None else None,
        "finishedAt": _iso(o.finished_at) if o.finished_at is not None else None,
        "evidence": o.evidence,
    }


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


__all__ = ["Outcomes", "circuit_view", "next_circuit", "verification_of", "workload_target"]
