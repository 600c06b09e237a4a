"""A decision's history as the `/decisions/{id}` document (the API serves it, `trm-sre explain` prints it)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from controller.observability.tracing import trace_id_of
from controller.schemas.decision import Decision


def rfc3339(ts: float | None) -> str | None:
    """UNIX seconds as RFC 3339 UTC with microseconds (None stays None)."""
    return None if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def history_as_json(history: dict[str, Any]) -> dict[str, Any]:
    """The store's rows as the `/decisions/{id}` document: times in RFC 3339, JSON columns parsed."""
    row = history["decision"]
    decision = Decision.model_validate_json(row["body"])
    incident = history["incident"] or {}
    approval = history["approval"]
    return {
        "id": decision.id,
        "incident_key": decision.incident_key,
        "policy": decision.policy,
        "policy_generation": row["policy_generation"],
        "mode": row["mode"],
        "outcome": decision.outcome,
        "state": row["state"],
        "reason": row["reason"],
        "function": decision.function,
        "parameters": decision.parameters,
        "stage": decision.stage,
        "confidence": decision.confidence,
        "reasoning": decision.reasoning,
        "trace": [t.model_dump(mode="json") for t in decision.trace],
        # The OpenTelemetry trace of the decision (None when tracing was off when it was decided).
        "trace_id": trace_id_of(decision.traceparent),
        "traceparent": decision.traceparent,
        "decided_at": rfc3339(row["created_at"]),
        "updated_at": rfc3339(row["updated_at"]),
        "result": row["result"],
        "incident": {
            "fingerprint": incident.get("fingerprint"),
            "alertname": incident.get("alertname"),
            "starts_at": incident.get("starts_at"),
            "first_seen": rfc3339(incident.get("first_seen")),
            "resend_count": incident.get("duplicates", 0),
            "resolved": incident.get("resolved_at") is not None,
            "resolved_at": rfc3339(incident.get("resolved_at")),
        },
        "alerts": [
            {"status": a["status"], "source": a["source"], "received_at": rfc3339(a["received_at"])}
            for a in history["alerts"]
        ],
        "deliveries": [
            {
                "event_id": o["event_id"],
                "type": o["type"],
                "state": o["state"],
                "sink": o["sink"],
                "attempts": o["attempts"],
                "last_status": o["last_status"],
                "last_error": o["last_error"],
                "created_at": rfc3339(o["created_at"]),
                "delivered_at": rfc3339(o["delivered_at"]),
            }
            for o in history["outbox"]
        ],
        "approval": None
        if approval is None
        else {
            "id": approval["id"],
            "state": approval["state"],
            "requested_at": rfc3339(approval["requested_at"]),
            "expires_at": rfc3339(approval["expires_at"]),
            "resolved_at": rfc3339(approval["resolved_at"]),
            "actor": approval["actor"],
        },
        "responses": [
            {"success": bool(r["success"]), "data": json.loads(r["data"]), "received_at": rfc3339(r["received_at"])}
            for r in history["responses"]
        ],
    }
