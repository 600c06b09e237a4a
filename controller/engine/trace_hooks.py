"""The engine's tracing hooks (controller.observability.tracing does the OpenTelemetry work).

One trace per incident decision: the ingest span (the HTTP request, its parent
the caller's `traceparent` if it sent one) is kept with the queued work, and
the worker's `decision` span continues that trace with the policy match, the
chain's stages (recorded from the Decision's own trace: the decision core
does no I/O), the guards, the commit of the decision with its outbox, and
later each delivery. The decision keeps its span's `traceparent`, so every
event it emits carries it and a re-sent alert's ingest span links to it.
Everything here does nothing when tracing is off.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from opentelemetry.trace import SpanKind

from controller.engine.store import RecordedAlert, Store
from controller.engine.work_queue import WorkItem
from controller.observability import tracing
from controller.schemas.decision import Decision

# The TRM stage reports its recursion steps at the start of its reason ("6 steps; ...").
_TRM_STEPS = re.compile(r"^(\d+) steps; ")


@contextmanager
def decision_span(work: WorkItem) -> Iterator[None]:
    """The worker's span for one queued alert, a child of the span that stored it (when known)."""
    if not tracing.enabled():
        yield
        return
    event = work.event
    with tracing.span(
        "decision",
        parent=work.trace_parent,
        kind=SpanKind.CONSUMER,
        attributes={
            "trm_sre.incident": event.incident_key,
            "trm_sre.alertname": event.alert.alertname,
            "trm_sre.alert.source": event.source,
            "trm_sre.commit_retry": work.commit_failures,
        },
    ):
        yield


def steps_in(reason: str) -> int | None:
    """The TRM recursion steps a TRM stage's reason reports, or None."""
    match = _TRM_STEPS.match(reason)
    return int(match.group(1)) if match else None


def trm_steps(decision: Decision) -> dict[int, int]:
    """TRM recursion steps by stage index, from the stages' reasons."""
    steps: dict[int, int] = {}
    for stage in decision.trace:
        found = steps_in(stage.reason) if stage.stage == "trm" else None
        if found is not None:
            steps[stage.index] = found
    return steps


def stamp(decision: Decision) -> Decision:
    """The decision with the current span's traceparent (unchanged when tracing is off)."""
    traceparent = tracing.carrier().get("traceparent")
    if traceparent is None:
        return decision
    tracing.set_attributes(
        {
            "trm_sre.decision.id": decision.id,
            "trm_sre.policy": decision.policy,
            "trm_sre.decision.outcome": decision.outcome,
            "trm_sre.decision.stage": decision.stage,
            "trm_sre.decision.function": decision.function,
            "trm_sre.decision.confidence": decision.confidence,
        }
    )
    return decision.model_copy(update={"traceparent": traceparent})


def link_resends(store: Store, records: Sequence[RecordedAlert]) -> int:
    """Runs in a thread, inside the ingest span: link it to the trace of each re-sent incident's decision."""
    if not tracing.enabled():
        return 0
    keys = {r.event.incident_key for r in records if r.kind == "duplicate"}
    linked = 0
    if not keys:
        return 0
    with store.reading() as tx:
        for key in sorted(keys):
            decision_id = tx.decision_id_for_incident(key)
            row = tx.decision(decision_id) if decision_id is not None else None
            if row is not None and tracing.add_link(
                row.decision.traceparent, {"trm_sre.link": "resend", "trm_sre.incident": key}
            ):
                linked += 1
    return linked
